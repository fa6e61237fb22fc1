//! Recording a broadcast: the owner shard collects the whole pages of the
//! stream's highest rendition (headers first) into chunks and sends them to
//! the control plane one at a time, in order, retrying with backoff while it
//! is away. The control plane writes the file and, with the last chunk
//! (after the EOS page), makes it durable; the tracks issue turns a finished
//! recording into a track.
//!
//! Bounded: at most `live.recording_buffer_bytes_max` bytes wait per
//! stream; past it the recording is abandoned and counted, and the broadcast
//! goes on unaffected.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use veza_proto::control::RequestErrorCode;

use crate::control_client::ControlError;
use crate::local_event::LocalNotify;
use crate::metrics::LimitKind;
use crate::shard::Shard;

/// First delay before retrying a chunk the control plane did not take.
const RETRY_DELAY_MIN: Duration = Duration::from_millis(100);
/// Longest delay between retries.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(5);

/// One chunk waiting to be stored.
struct Chunk {
    idx: u32,
    data: Bytes,
    last: bool,
}

/// A broadcast being recorded.
pub struct Recorder {
    stream_name: Rc<str>,
    stream_id: i64,
    recording_id: i64,
    /// Pages not yet in a chunk.
    pending: BytesMut,
    /// Chunks not yet stored, oldest first.
    chunks: VecDeque<Chunk>,
    /// Bytes in `pending` and `chunks`.
    held_bytes: usize,
    next_chunk_idx: u32,
    started: bool,
    finished: bool,
    abandoned: bool,
    wake: Rc<LocalNotify>,
}

/// A recorder shared by its stream and its sending task.
pub type SharedRecorder = Rc<RefCell<Recorder>>;

impl Recorder {
    /// Starts recording and spawns the task that stores the chunks.
    pub fn start(
        shard: &Rc<Shard>,
        stream_name: &str,
        stream_id: i64,
        recording_id: i64,
    ) -> SharedRecorder {
        let recorder = Rc::new(RefCell::new(Recorder {
            stream_name: stream_name.into(),
            stream_id,
            recording_id,
            pending: BytesMut::new(),
            chunks: VecDeque::new(),
            held_bytes: 0,
            next_chunk_idx: 0,
            started: false,
            finished: false,
            abandoned: false,
            wake: Rc::new(LocalNotify::default()),
        }));
        tracing::info!(
            stream = stream_name,
            recording_id,
            "recording the broadcast"
        );
        monoio::spawn(run(shard.clone(), recorder.clone()));
        recorder
    }

    /// Adds one emitted page (the header pages go first, once).
    pub fn add_page(&mut self, shard: &Shard, header_pages: &Bytes, page: &Bytes) {
        if self.abandoned || self.finished {
            return;
        }
        if !self.started {
            self.started = true;
            self.append(shard, header_pages);
        }
        self.append(shard, page);
        if self.pending.len() >= shard.process.config.live.recording_chunk_bytes {
            self.seal(false);
        }
    }

    fn append(&mut self, shard: &Shard, bytes: &[u8]) {
        let bound = shard.process.config.live.recording_buffer_bytes_max;
        if self.held_bytes + bytes.len() > bound {
            shard.metrics.limit_hit(LimitKind::LiveRecordingBuffer);
            tracing::warn!(stream = %self.stream_name, recording_id = self.recording_id, "recording abandoned: live.recording_buffer_bytes_max bytes wait for the control plane");
            self.abandon();
            return;
        }
        self.pending.extend_from_slice(bytes);
        self.held_bytes += bytes.len();
    }

    /// Ends the recording after the stream's last (EOS) page.
    pub fn finish(&mut self) {
        if self.abandoned || self.finished || !self.started {
            self.finished = true;
            self.wake.notify();
            return;
        }
        self.seal(true);
        self.finished = true;
    }

    fn seal(&mut self, last: bool) {
        let data = self.pending.split().freeze();
        self.chunks.push_back(Chunk {
            idx: self.next_chunk_idx,
            data,
            last,
        });
        self.next_chunk_idx += 1;
        self.wake.notify();
    }

    fn abandon(&mut self) {
        self.abandoned = true;
        self.pending.clear();
        self.chunks.clear();
        self.held_bytes = 0;
        self.wake.notify();
    }
}

/// Stores the recorder's chunks in order until the last one is stored or
/// the recording is abandoned.
async fn run(shard: Rc<Shard>, recorder: SharedRecorder) {
    let wake = recorder.borrow().wake.clone();
    let mut delay = RETRY_DELAY_MIN;
    loop {
        let next = {
            let recorder = recorder.borrow();
            if recorder.abandoned {
                return;
            }
            match recorder.chunks.front() {
                Some(chunk) => Some((
                    recorder.stream_id,
                    recorder.recording_id,
                    chunk.idx,
                    chunk.data.clone(),
                    chunk.last,
                )),
                None if recorder.finished => return,
                None => None,
            }
        };
        let Some((stream_id, recording_id, idx, data, last)) = next else {
            wake.wait().await;
            continue;
        };
        let stored = shard
            .control
            .append_recording(stream_id, recording_id, idx, data.to_vec(), last)
            .await;
        let retry = {
            let mut state = recorder.borrow_mut();
            match stored {
                Ok(bytes_total) => {
                    delay = RETRY_DELAY_MIN;
                    if let Some(chunk) = state.chunks.pop_front() {
                        state.held_bytes -= chunk.data.len();
                    }
                    if last {
                        tracing::info!(stream = %state.stream_name, recording_id, bytes_total, "recording stored");
                        return;
                    }
                    false
                }
                Err(ControlError::Refused {
                    code: RequestErrorCode::BadRequest | RequestErrorCode::NotFound,
                    message,
                }) => {
                    tracing::warn!(stream = %state.stream_name, recording_id, %message, "recording refused by the control plane");
                    state.abandon();
                    return;
                }
                Err(error) => {
                    tracing::debug!(stream = %state.stream_name, recording_id, %error, "recording chunk not stored yet; retrying");
                    true
                }
            }
        };
        if retry {
            monoio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_DELAY_MAX);
        }
    }
}
