//! Sending a file's bytes: a bounded pool of read buffers per shard, and
//! the loop that reads a chunk with monoio's file API (`read_at`: an
//! io_uring read on io_uring, `pread` on the legacy driver) and writes it
//! to the socket before reading the next, so a download never holds more
//! than one buffer of the file.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::ops::Range;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::metrics::{LimitKind, ShardMetrics};

/// A shard's read buffers: at most `buffers_max` exist; when all are lent
/// out, borrowers wait (bounded by the caller) instead of allocating.
pub struct ReadBufferPool {
    free: RefCell<Vec<Vec<u8>>>,
    allocated: Cell<usize>,
    buffers_max: usize,
    buffer_bytes: usize,
    waiters: RefCell<Vec<Waker>>,
}

/// A buffer lent by the pool; it goes back when dropped. A buffer lost
/// with a cancelled I/O operation frees its slot, so a later borrower may
/// allocate a new one.
pub struct LentBuffer {
    pool: Rc<ReadBufferPool>,
    buffer: Option<Vec<u8>>,
}

impl ReadBufferPool {
    /// A pool of up to `buffers_max` buffers of `buffer_bytes`, allocated
    /// on first use.
    pub fn new(buffers_max: usize, buffer_bytes: usize) -> Rc<Self> {
        assert!(buffers_max > 0 && buffer_bytes > 0);
        Rc::new(Self {
            free: RefCell::new(Vec::new()),
            allocated: Cell::new(0),
            buffers_max,
            buffer_bytes,
            waiters: RefCell::new(Vec::new()),
        })
    }

    /// Buffers lent out right now.
    pub fn lent(&self) -> usize {
        self.allocated.get() - self.free.borrow().len()
    }

    fn try_take(self: &Rc<Self>) -> Option<LentBuffer> {
        let buffer = match self.free.borrow_mut().pop() {
            Some(buffer) => buffer,
            None if self.allocated.get() < self.buffers_max => {
                self.allocated.set(self.allocated.get() + 1);
                Vec::with_capacity(self.buffer_bytes)
            }
            None => return None,
        };
        Some(LentBuffer {
            pool: self.clone(),
            buffer: Some(buffer),
        })
    }

    /// Lends a buffer, waiting at most `wait_max` for one to come back
    /// (each wait is counted as a hit of `tracks.read_buffers_per_shard`).
    pub async fn lend(
        self: &Rc<Self>,
        wait_max: Duration,
        metrics: &ShardMetrics,
    ) -> Option<LentBuffer> {
        if let Some(lent) = self.try_take() {
            return Some(lent);
        }
        metrics.limit_hit(LimitKind::TracksReadBuffers);
        let waiting = poll_fn(|context| match self.try_take() {
            Some(lent) => Poll::Ready(lent),
            None => {
                self.waiters.borrow_mut().push(context.waker().clone());
                Poll::Pending
            }
        });
        monoio::time::timeout(wait_max, waiting).await.ok()
    }

    fn give_back(&self, buffer: Option<Vec<u8>>) {
        match buffer {
            Some(mut buffer) => {
                buffer.clear();
                self.free.borrow_mut().push(buffer);
            }
            None => self.allocated.set(self.allocated.get() - 1),
        }
        // Every waiter tries again; the losers register again. Waking all
        // means a waiter that timed out cannot swallow the wake-up.
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

impl Drop for LentBuffer {
    fn drop(&mut self) {
        self.pool.give_back(self.buffer.take());
    }
}

/// How sending a file's bytes ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Every byte of the range was written.
    Complete,
    /// The client stopped reading for `write_timeout` or went away.
    ClientGone,
    /// The file could not be read or is shorter than announced.
    FileFailed(String),
    /// `sendfile` cannot send this file; nothing of the body was sent.
    Unsupported,
}

/// Reads `range` of `file` chunk by chunk into `lent` and writes each chunk
/// to `stream`. Each write may take at most `write_timeout`.
pub async fn send_range(
    file: &monoio::fs::File,
    range: Range<u64>,
    stream: &mut TcpStream,
    lent: &mut LentBuffer,
    write_timeout: Duration,
    metrics: &ShardMetrics,
) -> SendOutcome {
    let mut position = range.start;
    while position < range.end {
        let Some(mut buffer) = lent.buffer.take() else {
            return SendOutcome::ClientGone;
        };
        buffer.clear();
        let wanted = (range.end - position).min(buffer.capacity() as u64) as usize;
        let (read, slice) = file.read_at(buffer.slice_mut(0..wanted), position).await;
        buffer = slice.into_inner();
        match read {
            Ok(0) => {
                lent.buffer = Some(buffer);
                return SendOutcome::FileFailed(format!(
                    "the file ended at byte {position}, before {}",
                    range.end
                ));
            }
            Ok(_) => {}
            Err(error) => {
                lent.buffer = Some(buffer);
                return SendOutcome::FileFailed(format!("read at {position} failed: {error}"));
            }
        }
        let chunk_bytes = buffer.len();
        // On a timeout the buffer goes with the cancelled write and the
        // pool's slot is freed when `lent` drops.
        match monoio::time::timeout(write_timeout, stream.write_all(buffer)).await {
            Ok((Ok(_), returned)) => lent.buffer = Some(returned),
            Ok((Err(_), returned)) => {
                lent.buffer = Some(returned);
                return SendOutcome::ClientGone;
            }
            Err(_) => return SendOutcome::ClientGone,
        }
        ShardMetrics::add(&metrics.bytes_sent_total, chunk_bytes as u64);
        position += chunk_bytes as u64;
    }
    SendOutcome::Complete
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_lends_at_most_its_buffers_and_waiters_get_returned_ones() {
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        runtime.block_on(async {
            let metrics = ShardMetrics::default();
            let pool = ReadBufferPool::new(2, 4096);
            let wait = Duration::from_millis(50);
            let first = pool.lend(wait, &metrics).await.unwrap();
            let _second = pool.lend(wait, &metrics).await.unwrap();
            assert_eq!(pool.lent(), 2);
            assert!(pool.lend(wait, &metrics).await.is_none(), "no third buffer");
            assert_eq!(metrics.limit_hits(LimitKind::TracksReadBuffers), 1);
            let waiter_pool = pool.clone();
            let waiter = monoio::spawn(async move {
                let metrics = ShardMetrics::default();
                waiter_pool
                    .lend(Duration::from_secs(5), &metrics)
                    .await
                    .is_some()
            });
            monoio::time::sleep(Duration::from_millis(10)).await;
            drop(first);
            assert!(waiter.await, "the waiter gets the returned buffer");
            assert_eq!(
                pool.allocated.get(),
                2,
                "nothing was allocated past the bound"
            );
        });
    }

    #[test]
    fn a_lost_buffer_frees_its_slot() {
        let pool = ReadBufferPool::new(1, 4096);
        let mut lent = pool.try_take().unwrap();
        lent.buffer = None;
        drop(lent);
        assert_eq!(pool.allocated.get(), 0);
        assert!(pool.try_take().is_some());
    }
}
