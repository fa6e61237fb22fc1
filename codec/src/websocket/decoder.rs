//! Frame decoding and message assembly (RFC 6455 §5).
//!
//! [`MessageDecoder`] is a sans-IO state machine: the driver appends what it
//! reads to a `BytesMut` and calls [`MessageDecoder::decode`] until it returns
//! `Ok(None)`. Every rule of §5 that a receiver must enforce is checked here,
//! and each violation maps to the close code the RFC asks for
//! ([`ProtocolError::close_code`]).
//!
//! Memory: a message that arrives in one frame (the common case) is unmasked
//! in the read buffer and handed out as a slice of it, with no copy. Only
//! fragmented messages are copied, into one assembly buffer that never grows
//! past [`DecoderLimits::message_bytes_max`]. Limits are checked from the
//! header alone, before any payload is buffered.
//!
//! Architecture Invariant: the decoder never consumes part of a frame. A
//! frame is taken from the buffer whole or not at all, so a decoder that
//! returns `Ok(None)` has lost nothing.

use bytes::{Buf, Bytes, BytesMut};
use veza_proto::close_code;

use super::frame::{
    Opcode, CONTROL_PAYLOAD_BYTES_MAX, FIN_BIT, LENGTH_7_BIT_MAX, LENGTH_CODE_16_BIT,
    LENGTH_CODE_64_BIT, LENGTH_CODE_BITS, MASK_BIT, OPCODE_BITS, RESERVED_BITS,
};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// The smallest assembly buffer worth allocating for a fragmented message;
/// smaller fragments would otherwise cause a reallocation each.
const ASSEMBLY_BYTES_MIN: usize = 1024;

/// Which end of the connection the decoder reads for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads what a client sends: every frame MUST be masked.
    Server,
    /// Reads what a server sends: no frame may be masked.
    Client,
}

/// Size limits, checked as soon as a frame header is read.
#[derive(Debug, Clone, Copy)]
pub struct DecoderLimits {
    /// The largest payload one data frame may declare.
    pub frame_payload_bytes_max: usize,
    /// The largest data message, summed over its fragments.
    pub message_bytes_max: usize,
}

/// A complete message, or a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; answer with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer starts or answers the closing handshake.
    Close {
        /// The status code, `None` if the close frame had no payload.
        code: Option<u16>,
        /// The reason, valid UTF-8 (empty when absent).
        reason: Bytes,
    },
}

/// A violation of RFC 6455 by the peer. Answer it with a close frame carrying
/// [`ProtocolError::close_code`] and [`ProtocolError::reason`], then close.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A server received a frame without a mask (§5.1).
    #[error("client frame is not masked")]
    UnmaskedClientFrame,
    /// A client received a masked frame (§5.1).
    #[error("server frame is masked")]
    MaskedServerFrame,
    /// RSV1, RSV2 or RSV3 set although no extension was negotiated (§5.2).
    #[error("reserved bits are set but no extension was negotiated")]
    ReservedBitsSet,
    /// Opcode 3–7 or 11–15 (§5.2).
    #[error("reserved opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A control frame declared more than 125 payload bytes (§5.5).
    #[error("control frame declares {0} payload bytes, more than 125")]
    ControlFrameTooLong(usize),
    /// A control frame without FIN (§5.5).
    #[error("control frame is fragmented")]
    FragmentedControlFrame,
    /// A continuation frame with no fragmented message in progress (§5.4).
    #[error("continuation frame without a message to continue")]
    ContinuationWithoutStart,
    /// A text or binary frame while a fragmented message is in progress (§5.4).
    #[error("new data frame while a fragmented message is in progress")]
    DataFrameDuringFragmentedMessage,
    /// A payload length not in its shortest form (§5.2: "the minimal number
    /// of bytes MUST be used").
    #[error("payload length is not in its shortest form")]
    NonMinimalLength,
    /// A 64-bit payload length with its most significant bit set (§5.2).
    #[error("64-bit payload length has its most significant bit set")]
    PayloadLengthHighBitSet,
    /// A text message that is not valid UTF-8 (§8.1).
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// A close payload of one byte, or a code not allowed on the wire (§7.4).
    #[error("close payload is one byte or carries a code not allowed on the wire")]
    InvalidClosePayload,
    /// A close reason that is not valid UTF-8 (§5.5.1).
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReasonUtf8,
    /// A data frame declared a payload over the frame limit.
    #[error("frame declares {payload_bytes} payload bytes, over the limit of {max}")]
    FrameTooLarge {
        /// The declared payload length.
        payload_bytes: u64,
        /// [`DecoderLimits::frame_payload_bytes_max`].
        max: usize,
    },
    /// A message would grow over the message limit.
    #[error("message would reach {message_bytes} bytes, over the limit of {max}")]
    MessageTooLarge {
        /// The message length with the offending frame included.
        message_bytes: u64,
        /// [`DecoderLimits::message_bytes_max`].
        max: usize,
    },
}

impl ProtocolError {
    /// The close code to send: 1007 for bad UTF-8, 1009 for a frame or
    /// message over the limits, 1002 for every other protocol violation.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReasonUtf8 => {
                close_code::INVALID_PAYLOAD
            }
            ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. } => {
                close_code::MESSAGE_TOO_BIG
            }
            _ => close_code::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the close frame (at most 100 bytes, ASCII).
    pub fn reason(&self) -> &'static str {
        match self {
            ProtocolError::UnmaskedClientFrame => "client frame not masked",
            ProtocolError::MaskedServerFrame => "server frame masked",
            ProtocolError::ReservedBitsSet => "reserved bits set",
            ProtocolError::UnknownOpcode(_) => "reserved opcode",
            ProtocolError::ControlFrameTooLong(_) => "control frame over 125 bytes",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::ContinuationWithoutStart => "continuation without a started message",
            ProtocolError::DataFrameDuringFragmentedMessage => {
                "data frame inside a fragmented message"
            }
            ProtocolError::NonMinimalLength => "payload length not minimal",
            ProtocolError::PayloadLengthHighBitSet => "payload length high bit set",
            ProtocolError::InvalidUtf8 => "invalid UTF-8 in text message",
            ProtocolError::InvalidClosePayload => "invalid close payload",
            ProtocolError::InvalidCloseReasonUtf8 => "invalid UTF-8 in close reason",
            ProtocolError::FrameTooLarge { .. } => "frame too large",
            ProtocolError::MessageTooLarge { .. } => "message too large",
        }
    }
}

/// The kind of a data message, fixed by its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Text,
    Binary,
}

/// A frame header that passed every check that needs no payload.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    header_bytes: usize,
    payload_bytes: usize,
}

impl FrameHeader {
    /// Whether the frame is one piece of a multi-frame data message.
    /// Control frames are always whole (FIN is checked first).
    fn is_fragment(&self) -> bool {
        self.opcode == Opcode::Continuation || !self.fin
    }

    fn frame_bytes(&self) -> usize {
        // Saturating: a limit of `usize::MAX` means "no limit", and a buffer
        // can never hold `usize::MAX` bytes, so such a frame just waits.
        self.header_bytes.saturating_add(self.payload_bytes)
    }
}

enum HeaderRead {
    /// The header itself is not complete; at least this many bytes are missing.
    Incomplete {
        bytes_missing: usize,
    },
    Complete(FrameHeader),
}

/// Decodes frames into messages, enforcing RFC 6455 §5 and the size limits.
#[derive(Debug)]
pub struct MessageDecoder {
    role: Role,
    limits: DecoderLimits,
    /// The kind of the fragmented message in progress, if any.
    fragmented_kind: Option<DataKind>,
    /// The fragments of that message so far, unmasked. Its capacity never
    /// exceeds `limits.message_bytes_max`.
    assembly: BytesMut,
    /// UTF-8 state of a fragmented text message.
    utf8: Utf8Validator,
    /// The error that ended this connection's stream, returned again forever.
    poison: Option<ProtocolError>,
}

impl MessageDecoder {
    /// A decoder at the start of a stream.
    pub fn new(role: Role, limits: DecoderLimits) -> Self {
        Self {
            role,
            limits,
            fragmented_kind: None,
            assembly: BytesMut::new(),
            utf8: Utf8Validator::new(),
            poison: None,
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> DecoderLimits {
        self.limits
    }

    /// Consumes bytes from the front of `buffer` and returns the next complete
    /// message, `Ok(None)` if more bytes are needed (the buffer keeps the
    /// partial frame; nothing is lost).
    ///
    /// Control frames (ping, pong, close) may arrive between the fragments of
    /// a data message and are returned at once. A message in a single frame
    /// is `buffer.split_to(..).freeze()` after unmasking in place: no copy.
    /// Once the caller drops such messages, `BytesMut::reserve` on the buffer
    /// can reuse their memory.
    ///
    /// After a close message the peer should send nothing more; the decoder
    /// does not enforce this, the driver stops reading.
    ///
    /// After an error the decoder is poisoned: every later call returns the
    /// same error.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        if let Some(error) = &self.poison {
            return Err(error.clone());
        }
        let result = self.decode_frames(buffer);
        if let Err(error) = &result {
            self.poison = Some(error.clone());
            // The stream is over: give back the memory of a half-built message.
            self.assembly = BytesMut::new();
            self.fragmented_kind = None;
        }
        result
    }

    /// How many more bytes the frame at the front of `buffer` needs at least,
    /// so the caller can reserve read-buffer space: the rest of the header
    /// while it is incomplete, then the rest of header and payload. 0 when
    /// the frame is complete or cannot be decoded.
    pub fn bytes_needed_hint(&self, buffer: &BytesMut) -> usize {
        if self.poison.is_some() {
            return 0;
        }
        match self.read_header(buffer) {
            Ok(HeaderRead::Incomplete { bytes_missing }) => bytes_missing,
            Ok(HeaderRead::Complete(header)) => header.frame_bytes().saturating_sub(buffer.len()),
            Err(_) => 0,
        }
    }

    /// Takes whole frames until one completes a message. The loop is bounded
    /// by the buffer: every turn consumes a frame of at least two bytes.
    fn decode_frames(&mut self, buffer: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        loop {
            let header = match self.read_header(buffer)? {
                HeaderRead::Incomplete { .. } => return Ok(None),
                HeaderRead::Complete(header) => header,
            };
            if buffer.len() < header.frame_bytes() {
                return Ok(None);
            }
            if !header.is_fragment() {
                buffer.advance(header.header_bytes);
                let mut payload = buffer.split_to(header.payload_bytes);
                if let Some(mask) = header.mask {
                    apply_mask(&mut payload, mask, 0);
                }
                return whole_frame_message(header.opcode, payload.freeze()).map(Some);
            }
            let kind = self.take_fragment(&header, buffer)?;
            if header.fin {
                return self.finish_fragmented(kind).map(Some);
            }
        }
    }

    /// Unmasks a fragment in the read buffer, checks its UTF-8, appends it to
    /// the assembly buffer and consumes it. Returns the message kind.
    fn take_fragment(
        &mut self,
        header: &FrameHeader,
        buffer: &mut BytesMut,
    ) -> Result<DataKind, ProtocolError> {
        let kind = match (header.opcode, self.fragmented_kind) {
            (Opcode::Text, _) => DataKind::Text,
            (Opcode::Binary, _) => DataKind::Binary,
            (_, Some(kind)) => kind,
            // `read_header` refuses a continuation without a started message.
            (_, None) => return Err(ProtocolError::ContinuationWithoutStart),
        };
        self.fragmented_kind = Some(kind);
        let payload = &mut buffer[header.header_bytes..header.frame_bytes()];
        if let Some(mask) = header.mask {
            apply_mask(payload, mask, 0);
        }
        if kind == DataKind::Text {
            self.utf8
                .feed(payload)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.reserve_assembly(payload.len());
        self.assembly.extend_from_slice(payload);
        buffer.advance(header.frame_bytes());
        Ok(kind)
    }

    /// Makes room for `additional_bytes` in the assembly buffer, growing it by
    /// doubling but never past the message limit. (`BytesMut::reserve` may
    /// round up past it, so growth is done by hand.)
    fn reserve_assembly(&mut self, additional_bytes: usize) {
        let required_bytes = self.assembly.len() + additional_bytes;
        if required_bytes <= self.assembly.capacity() {
            return;
        }
        // `read_header` refused any fragment that would pass the limit.
        debug_assert!(required_bytes <= self.limits.message_bytes_max);
        let capacity_bytes = self
            .assembly
            .capacity()
            .saturating_mul(2)
            .max(ASSEMBLY_BYTES_MIN)
            .min(self.limits.message_bytes_max)
            .max(required_bytes);
        let mut grown = BytesMut::with_capacity(capacity_bytes);
        grown.extend_from_slice(&self.assembly);
        self.assembly = grown;
    }

    fn finish_fragmented(&mut self, kind: DataKind) -> Result<Message, ProtocolError> {
        self.fragmented_kind = None;
        // `split` leaves the spare capacity behind for the next message.
        let payload = self.assembly.split().freeze();
        match kind {
            DataKind::Text => {
                self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Message::Text(payload))
            }
            DataKind::Binary => Ok(Message::Binary(payload)),
        }
    }

    /// Reads and checks the frame header at the front of `bytes`. Fails as
    /// soon as the bytes present show a violation, before the rest arrives.
    fn read_header(&self, bytes: &[u8]) -> Result<HeaderRead, ProtocolError> {
        let &[first, second, ..] = bytes else {
            return Ok(HeaderRead::Incomplete {
                bytes_missing: 2 - bytes.len(),
            });
        };
        if first & RESERVED_BITS != 0 {
            return Err(ProtocolError::ReservedBitsSet);
        }
        let opcode_value = first & OPCODE_BITS;
        let opcode =
            Opcode::from_u8(opcode_value).ok_or(ProtocolError::UnknownOpcode(opcode_value))?;
        let fin = first & FIN_BIT != 0;
        if opcode.is_control() && !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        self.check_sequence(opcode)?;
        let masked = second & MASK_BIT != 0;
        self.check_masking(masked)?;

        let length_code = second & LENGTH_CODE_BITS;
        let length_field_bytes = match length_code {
            LENGTH_CODE_16_BIT => 2,
            LENGTH_CODE_64_BIT => 8,
            _ => 0,
        };
        let mask_start = 2 + length_field_bytes;
        let header_bytes = mask_start + if masked { 4 } else { 0 };
        if bytes.len() < mask_start {
            return Ok(HeaderRead::Incomplete {
                bytes_missing: header_bytes - bytes.len(),
            });
        }
        let declared_bytes = read_payload_length(length_code, &bytes[2..mask_start])?;
        let payload_bytes = self.check_payload_length(opcode, declared_bytes)?;
        let Some(mask_bytes) = bytes.get(mask_start..header_bytes) else {
            return Ok(HeaderRead::Incomplete {
                bytes_missing: header_bytes - bytes.len(),
            });
        };
        let mask = masked.then(|| [mask_bytes[0], mask_bytes[1], mask_bytes[2], mask_bytes[3]]);
        Ok(HeaderRead::Complete(FrameHeader {
            fin,
            opcode,
            mask,
            header_bytes,
            payload_bytes,
        }))
    }

    /// Fragmentation rules of §5.4.
    fn check_sequence(&self, opcode: Opcode) -> Result<(), ProtocolError> {
        match (opcode, self.fragmented_kind) {
            (Opcode::Continuation, None) => Err(ProtocolError::ContinuationWithoutStart),
            (Opcode::Text | Opcode::Binary, Some(_)) => {
                Err(ProtocolError::DataFrameDuringFragmentedMessage)
            }
            _ => Ok(()),
        }
    }

    /// Masking rules of §5.1.
    fn check_masking(&self, masked: bool) -> Result<(), ProtocolError> {
        match (self.role, masked) {
            (Role::Server, false) => Err(ProtocolError::UnmaskedClientFrame),
            (Role::Client, true) => Err(ProtocolError::MaskedServerFrame),
            _ => Ok(()),
        }
    }

    /// Control frame length (§5.5) and the configured limits. Returns the
    /// payload length, which then fits a `usize`.
    fn check_payload_length(
        &self,
        opcode: Opcode,
        payload_bytes: u64,
    ) -> Result<usize, ProtocolError> {
        if opcode.is_control() {
            return match usize::try_from(payload_bytes) {
                Ok(payload_bytes) if payload_bytes <= CONTROL_PAYLOAD_BYTES_MAX => {
                    Ok(payload_bytes)
                }
                _ => Err(ProtocolError::ControlFrameTooLong(
                    usize::try_from(payload_bytes).unwrap_or(usize::MAX),
                )),
            };
        }
        let frame_max = self.limits.frame_payload_bytes_max;
        let Some(payload_bytes_in_limit) = usize::try_from(payload_bytes)
            .ok()
            .filter(|bytes| *bytes <= frame_max)
        else {
            return Err(ProtocolError::FrameTooLarge {
                payload_bytes,
                max: frame_max,
            });
        };
        let buffered_bytes = if opcode == Opcode::Continuation {
            self.assembly.len()
        } else {
            0
        };
        let message_max = self.limits.message_bytes_max;
        if buffered_bytes.saturating_add(payload_bytes_in_limit) > message_max {
            return Err(ProtocolError::MessageTooLarge {
                message_bytes: buffered_bytes as u64 + payload_bytes,
                max: message_max,
            });
        }
        Ok(payload_bytes_in_limit)
    }
}

/// The payload length from the 7-bit code and the extended length field,
/// which must be in its shortest form.
fn read_payload_length(length_code: u8, length_field: &[u8]) -> Result<u64, ProtocolError> {
    let payload_bytes = match length_code {
        LENGTH_CODE_16_BIT => {
            let mut big_endian = [0u8; 2];
            big_endian.copy_from_slice(length_field);
            u64::from(u16::from_be_bytes(big_endian))
        }
        LENGTH_CODE_64_BIT => {
            let mut big_endian = [0u8; 8];
            big_endian.copy_from_slice(length_field);
            let payload_bytes = u64::from_be_bytes(big_endian);
            if payload_bytes >> 63 != 0 {
                return Err(ProtocolError::PayloadLengthHighBitSet);
            }
            if payload_bytes <= u64::from(u16::MAX) {
                return Err(ProtocolError::NonMinimalLength);
            }
            payload_bytes
        }
        short_length => return Ok(u64::from(short_length)),
    };
    if payload_bytes <= LENGTH_7_BIT_MAX {
        return Err(ProtocolError::NonMinimalLength);
    }
    Ok(payload_bytes)
}

/// The message carried by a frame that is not a fragment: a control frame or
/// a data message in one frame.
fn whole_frame_message(opcode: Opcode, payload: Bytes) -> Result<Message, ProtocolError> {
    match opcode {
        Opcode::Text => match simdutf8::basic::from_utf8(&payload) {
            Ok(_) => Ok(Message::Text(payload)),
            Err(_) => Err(ProtocolError::InvalidUtf8),
        },
        Opcode::Binary => Ok(Message::Binary(payload)),
        Opcode::Ping => Ok(Message::Ping(payload)),
        Opcode::Pong => Ok(Message::Pong(payload)),
        Opcode::Close => close_message(payload),
        // Continuation frames always take the fragment path; answering with
        // the matching error keeps this total without a panic.
        Opcode::Continuation => Err(ProtocolError::ContinuationWithoutStart),
    }
}

/// Parses a close payload (§5.5.1, §7.4): empty, or a valid code and a UTF-8
/// reason.
fn close_message(payload: Bytes) -> Result<Message, ProtocolError> {
    let &[code_high, code_low, ..] = &payload[..] else {
        return if payload.is_empty() {
            Ok(Message::Close {
                code: None,
                reason: Bytes::new(),
            })
        } else {
            Err(ProtocolError::InvalidClosePayload)
        };
    };
    let code = u16::from_be_bytes([code_high, code_low]);
    if !close_code::is_valid_on_wire(code) {
        return Err(ProtocolError::InvalidClosePayload);
    }
    let reason = payload.slice(2..);
    if simdutf8::basic::from_utf8(&reason).is_err() {
        return Err(ProtocolError::InvalidCloseReasonUtf8);
    }
    Ok(Message::Close {
        code: Some(code),
        reason,
    })
}

#[cfg(test)]
mod tests;
