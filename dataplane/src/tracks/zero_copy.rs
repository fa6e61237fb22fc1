//! Zero-copy bodies (`tracks.zero_copy`): `sendfile(2)` hands page-cache
//! pages to the socket, as nginx's `sendfile on` does, so a range costs no
//! copy into user space and none back out. Only for ranges already in the
//! page cache: `sendfile` reads synchronously, and a cold read would stall
//! every connection of the shard, so [`is_resident`] (`cachestat(2)`) picks
//! this path and a cold range takes the buffered io_uring reads of
//! [`super::send`], which also warm the cache for the next request.
//!
//! The head goes out with `MSG_MORE`, so head and body leave in the same
//! segments (nginx corks the socket with `tcp_nopush` for this). A full
//! send buffer waits for writability through the runtime, bounded by the
//! write timeout.
//!
//! `sendfile` needs a non-blocking socket. The epoll driver's are; the
//! io_uring driver keeps sockets blocking, so the first zero-copy answer of
//! a connection switches its socket, once. That is safe for the HTTP
//! connection, whose io_uring operations are `Recv` and `Send`: they ignore
//! `O_NONBLOCK` and wait by poll as before. Operations that do not
//! (`Writev`, used by WebSocket and live writers) never see the switched
//! mode: the connection driver switches the socket back before it hands it
//! over ([`set_non_blocking`]).

use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::send::SendOutcome;
use crate::metrics::ShardMetrics;

/// Bytes one `sendfile` call may send before the shard turns to its other
/// connections (a fast reader of a large file would otherwise hold it).
const SENDFILE_CALL_BYTES_MAX: usize = 512 * 1024;

/// `cachestat(2)` (Linux 6.5): the same number on every architecture that
/// uses the unified syscall table.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
const SYS_CACHESTAT: libc::c_long = 451;

/// Set once `cachestat` is found missing (an older kernel, or a seccomp
/// filter): ranges are then assumed resident, as nginx assumes.
static CACHESTAT_MISSING: AtomicBool = AtomicBool::new(false);

#[repr(C)]
struct CachestatRange {
    offset: u64,
    length: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    cached_pages: u64,
    dirty_pages: u64,
    writeback_pages: u64,
    evicted_pages: u64,
    recently_evicted_pages: u64,
}

fn page_bytes() -> u64 {
    static PAGE_BYTES: OnceLock<u64> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE_BYTES.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        bytes if bytes > 0 => bytes as u64,
        _ => 4096,
    })
}

/// Whether every page of `range` of the file `fd` is in the page cache.
/// `None`: the kernel cannot tell (no `cachestat`).
pub fn is_resident(fd: RawFd, range: Range<u64>) -> Option<bool> {
    if range.is_empty() {
        return Some(true);
    }
    if CACHESTAT_MISSING.load(Ordering::Relaxed) {
        return None;
    }
    cachestat(fd, range)
}

#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
fn cachestat(fd: RawFd, range: Range<u64>) -> Option<bool> {
    let query = CachestatRange {
        offset: range.start,
        length: range.end - range.start,
    };
    let mut stat = Cachestat::default();
    // SAFETY: both pointers are valid for the call; the kernel writes only
    // `stat`, whose layout is `struct cachestat`.
    let result = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd as libc::c_uint,
            &query as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0 as libc::c_uint,
        )
    };
    if result != 0 {
        let error = io::Error::last_os_error();
        if matches!(
            error.raw_os_error(),
            Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::EOPNOTSUPP)
        ) {
            CACHESTAT_MISSING.store(true, Ordering::Relaxed);
            tracing::info!(%error, "cachestat(2) is unavailable; zero-copy sends assume files are cached");
        }
        return None;
    }
    let page = page_bytes();
    let pages = (range.end - 1) / page - range.start / page + 1;
    Some(stat.cached_pages >= pages)
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
fn cachestat(_fd: RawFd, _range: Range<u64>) -> Option<bool> {
    CACHESTAT_MISSING.store(true, Ordering::Relaxed);
    None
}

/// Sets or clears `O_NONBLOCK` on `fd`; `FIONBIO` flips the one flag
/// without reading the others first.
pub fn set_non_blocking(fd: RawFd, on: bool) -> io::Result<()> {
    let mut value = libc::c_int::from(on);
    // SAFETY: FIONBIO reads one int, which outlives the call.
    if unsafe { libc::ioctl(fd, libc::FIONBIO, &mut value) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `out` (queued answers and this answer's head) and then `range`
/// of `file` with `sendfile`. [`SendOutcome::Unsupported`] when the head
/// went out but the kernel cannot `sendfile` this file: the caller sends
/// the body the buffered way. `non_blocking` says whether the socket is in
/// non-blocking mode; a blocking one (the io_uring driver's) is switched
/// and stays switched (see the module notes).
pub async fn send_head_and_range(
    stream: &mut TcpStream,
    non_blocking: &mut bool,
    out: &mut BytesMut,
    file: &monoio::fs::File,
    range: Range<u64>,
    write_timeout: Duration,
    metrics: &ShardMetrics,
) -> SendOutcome {
    let socket = stream.as_raw_fd();
    if !out.is_empty() {
        let more = if range.is_empty() { 0 } else { libc::MSG_MORE };
        // SAFETY: `out` is valid for its length during the call.
        let sent = unsafe {
            libc::send(
                socket,
                out.as_ptr().cast(),
                out.len(),
                more | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        let sent = match sent {
            sent if sent >= 0 => sent as usize,
            _ => match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => 0,
                _ => return SendOutcome::ClientGone,
            },
        };
        ShardMetrics::add(&metrics.bytes_sent_total, sent as u64);
        let _ = out.split_to(sent);
        if !out.is_empty() {
            // The send buffer is full: the rest waits like any write.
            let rest_bytes = out.len() as u64;
            match monoio::time::timeout(write_timeout, stream.write_all(std::mem::take(out))).await
            {
                Ok((Ok(_), mut returned)) => {
                    returned.clear();
                    *out = returned;
                }
                _ => return SendOutcome::ClientGone,
            }
            ShardMetrics::add(&metrics.bytes_sent_total, rest_bytes);
        }
    }
    out.clear();
    let mut position = range.start;
    if !*non_blocking {
        if set_non_blocking(socket, true).is_err() {
            return SendOutcome::ClientGone;
        }
        *non_blocking = true;
    }
    while position < range.end {
        let wanted = ((range.end - position) as usize).min(SENDFILE_CALL_BYTES_MAX);
        let mut offset = position as libc::off_t;
        // SAFETY: both descriptors are open for the call; `offset` is ours.
        let sent = unsafe { libc::sendfile(socket, file.as_raw_fd(), &mut offset, wanted) };
        if sent > 0 {
            position += sent as u64;
            ShardMetrics::add(&metrics.bytes_sent_total, sent as u64);
            if sent as usize == SENDFILE_CALL_BYTES_MAX && position < range.end {
                crate::local_event::yield_now().await;
            }
            continue;
        }
        if sent == 0 {
            return SendOutcome::FileFailed(format!(
                "the file ended at byte {position}, before {}",
                range.end
            ));
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EAGAIN) => {
                let ready = monoio::time::timeout(write_timeout, stream.writable(false)).await;
                if !matches!(ready, Ok(Ok(()))) {
                    return SendOutcome::ClientGone;
                }
            }
            Some(libc::EINTR) => {}
            Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) => {
                return SendOutcome::ClientGone
            }
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) if position == range.start => {
                return SendOutcome::Unsupported
            }
            _ => return SendOutcome::FileFailed(format!("sendfile at {position} failed: {error}")),
        }
    }
    SendOutcome::Complete
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_read_file_is_resident_and_ranges_count_whole_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&vec![7u8; 64 * 1024])
            .unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).unwrap();
        let fd = file.as_raw_fd();
        match is_resident(fd, 0..64 * 1024) {
            // A kernel without cachestat: nothing more to check here.
            None => assert!(CACHESTAT_MISSING.load(Ordering::Relaxed)),
            Some(resident) => {
                assert!(resident, "a file just written and read is cached");
                assert_eq!(is_resident(fd, 4095..4097), Some(true));
                // Past the end of the file nothing is cached.
                assert_eq!(is_resident(fd, 64 * 1024..128 * 1024), Some(false));
            }
        }
        assert_eq!(is_resident(fd, 5..5), Some(true), "an empty range");
    }
}
