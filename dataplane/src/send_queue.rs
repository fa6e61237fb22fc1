//! A connection's outbound side: a queue bounded in bytes, drained by one
//! writer task that coalesces everything queued during a loop turn into one
//! vectored write.
//!
//! Frames are `Bytes`, so a broadcast framed once is queued by reference on
//! every subscriber; the writer hands the kernel iovecs pointing at those
//! shared buffers, never copying them.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use monoio::buf::IoVecBuf;
use monoio::io::AsyncWriteRent;

use crate::local_event::LocalNotify;

/// Buffers handed to one `writev`. Linux's IOV_MAX is 1024; a smaller batch
/// keeps one write's latency bounded while still coalescing a turn's frames.
pub const IOVECS_PER_WRITE_MAX: usize = 256;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// Queuing would pass the byte bound: the caller closes the connection.
    Overflow,
    /// The queue no longer takes data (closing or closed).
    Closed,
}

/// Where the outbound side is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundState {
    /// Taking frames.
    Open,
    /// A final frame was queued; nothing more is taken.
    Closing,
    /// The writer stopped (everything written, or the socket failed).
    Closed,
}

/// The bounded queue of one connection.
pub struct Outbound {
    queue: RefCell<VecDeque<Bytes>>,
    /// Bytes in `queue` plus those of the batch being written.
    queued_bytes: Cell<usize>,
    /// Bytes of the batch the writer has handed to the kernel (part of
    /// `queued_bytes` until the write completes).
    in_flight_bytes: Cell<usize>,
    queued_bytes_max: usize,
    state: Cell<OutboundState>,
    /// Set when the writer should stop after the queue is empty.
    finish_requested: Cell<bool>,
    /// The queue's first buffer is the unwritten rest of one a short write
    /// interrupted.
    front_is_partial: Cell<bool>,
    wake_writer: LocalNotify,
    /// Woken when the writer stops.
    pub writer_stopped: LocalNotify,
}

impl Outbound {
    /// A queue holding at most `queued_bytes_max` bytes.
    pub fn new(queued_bytes_max: usize) -> Rc<Self> {
        Rc::new(Self {
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            in_flight_bytes: Cell::new(0),
            queued_bytes_max,
            state: Cell::new(OutboundState::Open),
            finish_requested: Cell::new(false),
            front_is_partial: Cell::new(false),
            wake_writer: LocalNotify::default(),
            writer_stopped: LocalNotify::default(),
        })
    }

    /// Queues the parts of one frame (header and payload), all or nothing.
    pub fn push(&self, parts: &[Bytes]) -> Result<(), PushError> {
        if self.state.get() != OutboundState::Open {
            return Err(PushError::Closed);
        }
        let frame_bytes: usize = parts.iter().map(Bytes::len).sum();
        if self.queued_bytes.get() + frame_bytes > self.queued_bytes_max {
            return Err(PushError::Overflow);
        }
        self.enqueue(parts, frame_bytes);
        Ok(())
    }

    /// Queues a final frame (a close frame), ignoring the byte bound so the
    /// peer learns why, and takes nothing after it. Returns false if a final
    /// frame was already queued.
    pub fn push_final(&self, parts: &[Bytes], drop_queued: bool) -> bool {
        if self.state.get() != OutboundState::Open {
            return false;
        }
        if drop_queued {
            // What is being written stays counted: its write completes
            // (and is subtracted) after this.
            self.queue.borrow_mut().clear();
            self.queued_bytes.set(self.in_flight_bytes.get());
        }
        let frame_bytes = parts.iter().map(Bytes::len).sum();
        self.enqueue(parts, frame_bytes);
        self.state.set(OutboundState::Closing);
        self.finish_requested.set(true);
        true
    }

    fn enqueue(&self, parts: &[Bytes], frame_bytes: usize) {
        let mut queue = self.queue.borrow_mut();
        queue.extend(parts.iter().filter(|part| !part.is_empty()).cloned());
        self.queued_bytes.set(self.queued_bytes.get() + frame_bytes);
        drop(queue);
        self.wake_writer.notify();
    }

    /// Asks the writer to stop once everything queued is written.
    pub fn finish(&self) {
        if self.state.get() == OutboundState::Open {
            self.state.set(OutboundState::Closing);
        }
        self.finish_requested.set(true);
        self.wake_writer.notify();
    }

    /// Drops every queued buffer that has not started going out, keeping the
    /// unwritten rest of a buffer a short write interrupted (so the stream
    /// stays aligned on buffer boundaries: for a live listener, pages).
    /// Returns the bytes dropped.
    pub fn skip_queued(&self) -> usize {
        let mut queue = self.queue.borrow_mut();
        let keep_front = usize::from(self.front_is_partial.get()).min(queue.len());
        let dropped: usize = queue.drain(keep_front..).map(|buffer| buffer.len()).sum();
        self.queued_bytes.set(self.queued_bytes.get() - dropped);
        dropped
    }

    /// The current state.
    pub fn state(&self) -> OutboundState {
        self.state.get()
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }

    /// Moves up to [`IOVECS_PER_WRITE_MAX`] queued buffers into `batch`.
    fn take_batch(&self, batch: &mut WriteBatch) {
        let mut queue = self.queue.borrow_mut();
        let count = queue.len().min(IOVECS_PER_WRITE_MAX);
        batch.buffers.extend(queue.drain(..count));
        self.front_is_partial.set(false);
        self.in_flight_bytes.set(batch.total_bytes());
    }

    /// Puts back what a short write left, in order, ahead of newer frames.
    fn restore_unwritten(&self, batch: &mut WriteBatch, mut written: usize) {
        self.queued_bytes.set(self.queued_bytes.get() - written);
        self.in_flight_bytes.set(0);
        let mut unwritten = Vec::new();
        for mut buffer in batch.buffers.drain(..) {
            if written >= buffer.len() {
                written -= buffer.len();
                continue;
            }
            if written > 0 {
                self.front_is_partial.set(true);
            }
            buffer.advance(written);
            written = 0;
            unwritten.push(buffer);
        }
        let mut queue = self.queue.borrow_mut();
        for buffer in unwritten.into_iter().rev() {
            queue.push_front(buffer);
        }
    }
}

/// Owned buffers plus their iovecs, reused across writes so a write costs no
/// allocation once the vectors have grown.
#[derive(Default)]
pub struct WriteBatch {
    buffers: Vec<Bytes>,
    iovecs: Vec<libc::iovec>,
}

impl WriteBatch {
    fn prepare(&mut self) {
        self.iovecs.clear();
        self.iovecs
            .extend(self.buffers.iter().map(|buffer| libc::iovec {
                iov_base: buffer.as_ptr() as *mut libc::c_void,
                iov_len: buffer.len(),
            }));
    }

    fn total_bytes(&self) -> usize {
        self.buffers.iter().map(Bytes::len).sum()
    }
}

// SAFETY: the iovecs point into `buffers`, whose `Bytes` keep their memory
// alive and unmoved while the batch is owned by the runtime; neither vector
// is touched between `prepare` and the write's completion.
unsafe impl IoVecBuf for WriteBatch {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iovecs.len()
    }
}

/// What the writer reports when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterExit {
    /// Everything queued was written.
    Drained,
    /// The socket failed.
    Failed,
}

/// Drains `outbound` into `writer` until asked to finish. Each wake-up takes
/// everything queued so far, so frames queued in one loop turn go out in one
/// `writev`. `on_written(bytes)` feeds the metrics.
pub async fn run_writer<W: AsyncWriteRent>(
    writer: W,
    outbound: Rc<Outbound>,
    on_written: impl Fn(usize),
) -> (W, WriterExit) {
    run_writer_with(writer, outbound, None, on_written).await
}

/// [`run_writer`] for a socket whose descriptor is `socket_fd`: each batch
/// is first offered to the kernel with a non-blocking `sendmsg`, which at
/// chat rates (a small frame into an empty socket buffer) always succeeds
/// and saves the runtime's write operation and its completion. Only what
/// does not fit goes through `writer`, which waits for room.
pub async fn run_socket_writer<W: AsyncWriteRent>(
    writer: W,
    socket_fd: std::os::fd::RawFd,
    outbound: Rc<Outbound>,
    on_written: impl Fn(usize),
) -> (W, WriterExit) {
    run_writer_with(writer, outbound, Some(socket_fd), on_written).await
}

/// Writes `batch` with a non-blocking `sendmsg`; `None` when the socket had
/// no room (or failed: the runtime's write then reports it).
fn send_now(socket_fd: std::os::fd::RawFd, batch: &WriteBatch) -> Option<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = batch.iovecs.as_ptr() as *mut libc::iovec;
    message.msg_iovlen = batch.iovecs.len() as _;
    // SAFETY: the iovecs point into `batch.buffers`, alive for the call;
    // `socket_fd` is the caller's open socket.
    let sent =
        unsafe { libc::sendmsg(socket_fd, &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    usize::try_from(sent).ok().filter(|&sent| sent > 0)
}

async fn run_writer_with<W: AsyncWriteRent>(
    mut writer: W,
    outbound: Rc<Outbound>,
    socket_fd: Option<std::os::fd::RawFd>,
    on_written: impl Fn(usize),
) -> (W, WriterExit) {
    let mut batch = WriteBatch::default();
    let exit = loop {
        outbound.take_batch(&mut batch);
        if batch.buffers.is_empty() {
            if outbound.finish_requested.get() {
                break WriterExit::Drained;
            }
            outbound.wake_writer.wait().await;
            continue;
        }
        batch.prepare();
        let batch_bytes = batch.total_bytes();
        let sent_now = socket_fd.and_then(|fd| send_now(fd, &batch));
        let result = match sent_now {
            Some(sent) => Ok(sent),
            None => {
                let (result, returned) = writer.writev(batch).await;
                batch = returned;
                result
            }
        };
        match result {
            Ok(0) | Err(_) => break WriterExit::Failed,
            Ok(written) => {
                on_written(written);
                if written == batch_bytes {
                    outbound
                        .queued_bytes
                        .set(outbound.queued_bytes.get() - written);
                    outbound.in_flight_bytes.set(0);
                    batch.buffers.clear();
                } else {
                    outbound.restore_unwritten(&mut batch, written);
                }
            }
        }
    };
    batch.buffers.clear();
    outbound.state.set(OutboundState::Closed);
    outbound.queue.borrow_mut().clear();
    outbound.queued_bytes.set(0);
    outbound.writer_stopped.notify();
    (writer, exit)
}

/// Waits for the writer to stop, at most `timeout`. Returns whether it did.
pub async fn wait_writer_stopped(outbound: &Outbound, timeout: Duration) -> bool {
    if outbound.state() == OutboundState::Closed {
        return true;
    }
    monoio::time::timeout(timeout, outbound.writer_stopped.wait())
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn push_refuses_past_the_byte_bound_and_keeps_what_fit() {
        let outbound = Outbound::new(10);
        outbound.push(&[bytes("head"), bytes("body")]).unwrap();
        assert_eq!(outbound.push(&[bytes("abc")]), Err(PushError::Overflow));
        assert_eq!(outbound.queued_bytes(), 8);
    }

    #[test]
    fn final_frame_passes_the_bound_and_closes_the_queue() {
        let outbound = Outbound::new(4);
        outbound.push(&[bytes("abcd")]).unwrap();
        assert!(outbound.push_final(&[bytes("close!")], true));
        assert_eq!(
            outbound.queued_bytes(),
            6,
            "queued data was dropped for the close"
        );
        assert_eq!(outbound.push(&[bytes("x")]), Err(PushError::Closed));
        assert!(!outbound.push_final(&[bytes("again")], false));
    }

    #[test]
    fn an_overflow_close_during_a_write_keeps_the_write_counted() {
        let outbound = Outbound::new(100);
        outbound.push(&[bytes("hello"), bytes("world")]).unwrap();
        let mut batch = WriteBatch::default();
        outbound.take_batch(&mut batch);
        // The writer is in its writev when more is queued and the
        // connection overflows: the queued frame goes, the write stays.
        outbound.push(&[bytes("queued")]).unwrap();
        assert!(outbound.push_final(&[bytes("close")], true));
        assert_eq!(outbound.queued_bytes(), 10 + 5, "in flight + close");
        // The write completes short: 3 bytes; the rest goes back in front.
        outbound.restore_unwritten(&mut batch, 3);
        assert_eq!(outbound.queued_bytes(), 2 + 5 + 5);
        let rest: Vec<Bytes> = outbound.queue.borrow().iter().cloned().collect();
        assert_eq!(rest, vec![bytes("lo"), bytes("world"), bytes("close")]);
    }

    #[test]
    fn skipping_keeps_a_partly_written_buffer_and_drops_whole_ones() {
        let outbound = Outbound::new(100);
        outbound.push(&[bytes("page1"), bytes("page2")]).unwrap();
        let mut batch = WriteBatch::default();
        outbound.take_batch(&mut batch);
        outbound.push(&[bytes("page3")]).unwrap();
        outbound.restore_unwritten(&mut batch, 2);
        assert_eq!(outbound.skip_queued(), 10, "page2 and page3 go");
        let rest: Vec<Bytes> = outbound.queue.borrow().iter().cloned().collect();
        assert_eq!(rest, vec![bytes("ge1")], "the started page finishes");
        assert_eq!(outbound.queued_bytes(), 3);
        outbound.take_batch(&mut batch);
        assert_eq!(outbound.skip_queued(), 0);
    }

    #[test]
    fn short_write_puts_the_unwritten_tail_back_in_order() {
        let outbound = Outbound::new(100);
        outbound.push(&[bytes("hello"), bytes("world")]).unwrap();
        let mut batch = WriteBatch::default();
        outbound.take_batch(&mut batch);
        outbound.push(&[bytes("later")]).unwrap();
        outbound.restore_unwritten(&mut batch, 7);
        let rest: Vec<Bytes> = outbound.queue.borrow().iter().cloned().collect();
        assert_eq!(rest, vec![bytes("rld"), bytes("later")]);
        assert_eq!(outbound.queued_bytes(), 8);
    }

    #[test]
    fn writer_coalesces_queued_frames_into_one_vectored_write() {
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, server) = std::os::unix::net::UnixStream::pair().unwrap();
            server.set_nonblocking(true).unwrap();
            let server = monoio::net::UnixStream::from_std(server).unwrap();
            let outbound = Outbound::new(1 << 20);
            for index in 0..50u8 {
                outbound.push(&[Bytes::from(vec![index; 3])]).unwrap();
            }
            outbound.finish();
            let writes = Rc::new(Cell::new(0));
            let counted = writes.clone();
            let (_server, exit) = run_writer(server, outbound.clone(), move |_| {
                counted.set(counted.get() + 1)
            })
            .await;
            assert_eq!(exit, WriterExit::Drained);
            assert_eq!(writes.get(), 1, "50 queued frames go out in one writev");
            let mut received = vec![0u8; 150];
            use std::io::Read;
            (&client).read_exact(&mut received).unwrap();
            assert_eq!(&received[..6], &[0, 0, 0, 1, 1, 1]);
            assert_eq!(&received[147..], &[49, 49, 49]);
        });
    }
}
