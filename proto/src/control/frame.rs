//! Framing: each frame is a `u32` big-endian length followed by that many
//! bytes of one rkyv archive (of a [`super::ClientFrame`] or a
//! [`super::ServerFrame`]).
//!
//! ```text
//! +----------------+-----------------------------------------+
//! | length: u32 BE | rkyv archive, `length` bytes            |
//! +----------------+-----------------------------------------+
//! ```
//!
//! The length counts the archive only, not the prefix; it is at least 1 and
//! at most the receiver's `frame_bytes_max`. The archive is validated with
//! bytecheck (`rkyv::access`) on an aligned copy before anything reads it,
//! so a malformed or hostile frame becomes a [`FrameError`], never undefined
//! behaviour or a panic. Both ends are built from this crate, so they agree
//! on rkyv's format (little-endian, 32-bit relative pointers, aligned).
//!
//! Sans-IO: the driver appends what it reads to a `BytesMut` and calls
//! [`FrameDecoder::decode`] until it returns `Ok(None)`; it writes what
//! [`FrameEncoder::encode`] appends to its output buffer.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use super::message::{ErrorFrame, ProtocolErrorCode};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The default bound on one frame's archive (`frame_bytes_max`): 16 MiB.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;

/// The largest `frame_bytes_max` a configuration may set: what the length
/// prefix can express.
pub const FRAME_BYTES_MAX_LIMIT: usize = u32::MAX as usize;

/// A scratch buffer that grew past this for one large frame is released
/// afterwards, so one 16 MiB frame does not pin 16 MiB per connection.
const SCRATCH_BYTES_KEPT_MAX: usize = 1024 * 1024;

/// Why a frame could not be decoded or encoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is over `frame_bytes_max`. Nothing was consumed.
    #[error("frame of {length_bytes} bytes is over the limit of {frame_bytes_max} bytes")]
    TooLarge {
        /// The announced (or, when encoding, actual) archive length.
        length_bytes: usize,
        /// The bound.
        frame_bytes_max: usize,
    },
    /// The frame's bytes are not a valid archive of the expected type. The
    /// frame was consumed.
    #[error("malformed frame: {reason}")]
    Malformed {
        /// What validation said.
        reason: String,
    },
    /// A value could not be serialised (it should not happen: a bug).
    #[error("cannot encode frame: {reason}")]
    Unencodable {
        /// What serialisation said.
        reason: String,
    },
}

impl FrameError {
    /// The code of the [`ErrorFrame`] that answers this error.
    pub fn protocol_error_code(&self) -> ProtocolErrorCode {
        match self {
            FrameError::TooLarge { .. } => ProtocolErrorCode::FrameTooLarge,
            FrameError::Malformed { .. } | FrameError::Unencodable { .. } => {
                ProtocolErrorCode::MalformedFrame
            }
        }
    }

    /// The error frame a receiver sends before closing.
    pub fn to_error_frame(&self) -> ErrorFrame {
        ErrorFrame {
            code: self.protocol_error_code(),
            message: self.to_string(),
        }
    }
}

/// Decodes frames of type `T` from a byte stream.
pub struct FrameDecoder<T> {
    frame_bytes_max: usize,
    /// The archive is copied here so that it is aligned for rkyv; reused.
    aligned: AlignedVec,
    frame_type: PhantomData<fn() -> T>,
}

impl<T> FrameDecoder<T>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    /// A decoder refusing frames over `frame_bytes_max` bytes.
    pub fn new(frame_bytes_max: usize) -> Self {
        assert!(frame_bytes_max > 0 && frame_bytes_max <= FRAME_BYTES_MAX_LIMIT);
        Self {
            frame_bytes_max,
            aligned: AlignedVec::new(),
            frame_type: PhantomData,
        }
    }

    /// The bound this decoder enforces.
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    /// Takes the next complete frame from `buffer`: `Ok(None)` when more bytes
    /// are needed (nothing consumed). A frame is consumed whole or not at all.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<T>, FrameError> {
        let Some(prefix) = buffer.get(..LENGTH_PREFIX_BYTES) else {
            return Ok(None);
        };
        let length_bytes =
            u32::from_be_bytes(prefix.try_into().expect("prefix is 4 bytes")) as usize;
        if length_bytes > self.frame_bytes_max {
            return Err(FrameError::TooLarge {
                length_bytes,
                frame_bytes_max: self.frame_bytes_max,
            });
        }
        if buffer.len() < LENGTH_PREFIX_BYTES + length_bytes {
            return Ok(None);
        }
        buffer.advance(LENGTH_PREFIX_BYTES);
        let archive = buffer.split_to(length_bytes);
        if length_bytes == 0 {
            return Err(FrameError::Malformed {
                reason: "empty frame".into(),
            });
        }
        self.aligned.clear();
        self.aligned.extend_from_slice(&archive);
        let decoded = rkyv::access::<T::Archived, rancor::Error>(&self.aligned)
            .and_then(rkyv::deserialize::<T, rancor::Error>)
            .map_err(|error| FrameError::Malformed {
                reason: error.to_string(),
            });
        if self.aligned.capacity() > SCRATCH_BYTES_KEPT_MAX {
            self.aligned = AlignedVec::new();
        }
        decoded.map(Some)
    }
}

/// Encodes frames; keeps one scratch buffer for serialisation.
pub struct FrameEncoder {
    frame_bytes_max: usize,
    scratch: AlignedVec,
}

impl FrameEncoder {
    /// An encoder refusing to produce frames over `frame_bytes_max` bytes
    /// (the peer would refuse them).
    pub fn new(frame_bytes_max: usize) -> Self {
        assert!(frame_bytes_max > 0 && frame_bytes_max <= FRAME_BYTES_MAX_LIMIT);
        Self {
            frame_bytes_max,
            scratch: AlignedVec::new(),
        }
    }

    /// Appends `frame`, length prefix first, to `out`. On error nothing is
    /// appended.
    pub fn encode<T>(&mut self, frame: &T, out: &mut BytesMut) -> Result<(), FrameError>
    where
        T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let result = rkyv::api::high::to_bytes_in::<_, rancor::Error>(frame, scratch);
        let scratch = match result {
            Ok(scratch) => scratch,
            Err(error) => {
                return Err(FrameError::Unencodable {
                    reason: error.to_string(),
                })
            }
        };
        let length_bytes = scratch.len();
        let outcome = if length_bytes > self.frame_bytes_max {
            Err(FrameError::TooLarge {
                length_bytes,
                frame_bytes_max: self.frame_bytes_max,
            })
        } else {
            debug_assert!(length_bytes > 0, "an archive is never empty");
            out.reserve(LENGTH_PREFIX_BYTES + length_bytes);
            out.put_u32(length_bytes as u32);
            out.extend_from_slice(&scratch);
            Ok(())
        };
        if scratch.capacity() <= SCRATCH_BYTES_KEPT_MAX {
            self.scratch = scratch;
        }
        outcome
    }

    /// Encodes `frame` into a buffer of its own.
    pub fn encode_to_bytes<T>(&mut self, frame: &T) -> Result<Bytes, FrameError>
    where
        T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    {
        let mut out = BytesMut::new();
        self.encode(frame, &mut out)?;
        Ok(out.freeze())
    }
}
