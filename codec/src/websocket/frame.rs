//! Frame opcodes and frame encoding (RFC 6455 §5.2).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! ```
//!
//! Decoding lives in [`super::decoder`]; this module only writes frames.

use bytes::{BufMut, Bytes, BytesMut};

use super::mask::apply_mask;

/// The largest frame header: 2 fixed bytes, 8 bytes of extended length and
/// 4 bytes of mask key.
pub const FRAME_HEADER_BYTES_MAX: usize = 14;

/// The largest payload a control frame (close, ping, pong) may carry
/// (RFC 6455 §5.5).
pub const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;

/// Payload lengths up to this fit in the 7-bit length field.
pub(crate) const LENGTH_7_BIT_MAX: u64 = 125;
/// Length code announcing a 16-bit extended length.
pub(crate) const LENGTH_CODE_16_BIT: u8 = 126;
/// Length code announcing a 64-bit extended length.
pub(crate) const LENGTH_CODE_64_BIT: u8 = 127;

/// First header byte: set on the last frame of a message.
pub(crate) const FIN_BIT: u8 = 0b1000_0000;
/// First header byte: RSV1–3, reserved for extensions.
pub(crate) const RESERVED_BITS: u8 = 0b0111_0000;
/// First header byte: the opcode.
pub(crate) const OPCODE_BITS: u8 = 0b0000_1111;
/// Second header byte: set when a mask key follows the length.
pub(crate) const MASK_BIT: u8 = 0b1000_0000;
/// Second header byte: the 7-bit length or length code.
pub(crate) const LENGTH_CODE_BITS: u8 = 0b0111_1111;

/// A frame opcode. Values 3–7 and 11–15 are reserved and have no variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// `0x0`: a later fragment of a fragmented data message.
    Continuation,
    /// `0x1`: the first (or only) frame of a UTF-8 text message.
    Text,
    /// `0x2`: the first (or only) frame of a binary message.
    Binary,
    /// `0x8`: the closing handshake.
    Close,
    /// `0x9`: a ping; the peer answers with a pong carrying the same payload.
    Ping,
    /// `0xA`: a pong, solicited or not.
    Pong,
}

impl Opcode {
    /// The opcode for a 4-bit wire value, or `None` if the value is reserved.
    pub fn from_u8(value: u8) -> Option<Opcode> {
        match value {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong): such frames may
    /// not be fragmented and carry at most 125 bytes.
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// The size of the header [`encode_frame_header`] writes for these arguments.
pub fn frame_header_bytes(payload_bytes: usize, masked: bool) -> usize {
    let length_field_bytes = match payload_bytes as u64 {
        0..=LENGTH_7_BIT_MAX => 0,
        126..=0xFFFF => 2,
        _ => 8,
    };
    2 + length_field_bytes + if masked { 4 } else { 0 }
}

/// Encodes a frame header (FIN + opcode, length in the shortest form,
/// optional mask key) into `out` (appends).
///
/// The reserved bits are always zero: Veza negotiates no extensions.
pub fn encode_frame_header(
    out: &mut BytesMut,
    fin: bool,
    opcode: Opcode,
    payload_bytes: usize,
    mask: Option<[u8; 4]>,
) {
    debug_assert!(
        !opcode.is_control() || (fin && payload_bytes <= CONTROL_PAYLOAD_BYTES_MAX),
        "control frames are never fragmented and carry at most 125 bytes"
    );
    out.reserve(frame_header_bytes(payload_bytes, mask.is_some()));
    out.put_u8(if fin { FIN_BIT } else { 0 } | opcode.as_u8());
    let mask_bit = if mask.is_some() { MASK_BIT } else { 0 };
    let payload_bytes = payload_bytes as u64;
    if payload_bytes <= LENGTH_7_BIT_MAX {
        out.put_u8(mask_bit | payload_bytes as u8);
    } else if let Ok(payload_bytes) = u16::try_from(payload_bytes) {
        out.put_u8(mask_bit | LENGTH_CODE_16_BIT);
        out.put_u16(payload_bytes);
    } else {
        out.put_u8(mask_bit | LENGTH_CODE_64_BIT);
        out.put_u64(payload_bytes);
    }
    if let Some(mask) = mask {
        out.put_slice(&mask);
    }
}

/// Convenience: a whole unmasked (server-to-client) frame as one `Bytes`.
///
/// One allocation sized for header and payload, one copy of the payload.
pub fn encode_frame(fin: bool, opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(frame_header_bytes(payload.len(), false) + payload.len());
    encode_frame_header(&mut out, fin, opcode, payload.len(), None);
    out.put_slice(payload);
    out.freeze()
}

/// Convenience: a whole masked (client-to-server) frame (copies and masks
/// the payload).
pub fn encode_masked_frame(fin: bool, opcode: Opcode, payload: &[u8], mask: [u8; 4]) -> Bytes {
    let mut out = BytesMut::with_capacity(frame_header_bytes(payload.len(), true) + payload.len());
    encode_frame_header(&mut out, fin, opcode, payload.len(), Some(mask));
    let payload_start = out.len();
    out.put_slice(payload);
    apply_mask(&mut out[payload_start..], mask, 0);
    out.freeze()
}

/// Close frame payload: 2-byte big-endian code + UTF-8 reason, the reason
/// truncated at a char boundary so the payload is at most 125 bytes.
///
/// `code` must be one that may be sent (see
/// [`veza_proto::close_code::is_valid_on_wire`]); the peer would answer
/// anything else with a protocol error.
pub fn close_payload(code: u16, reason: &str) -> Bytes {
    debug_assert!(
        veza_proto::close_code::is_valid_on_wire(code),
        "close code {code} may not be sent"
    );
    let reason_bytes_max = CONTROL_PAYLOAD_BYTES_MAX - 2;
    let mut reason_bytes = reason.len().min(reason_bytes_max);
    // A reason cut inside a character would make the peer fail the
    // connection with 1007, so back up to the start of that character.
    while !reason.is_char_boundary(reason_bytes) {
        reason_bytes -= 1;
    }
    let mut out = BytesMut::with_capacity(2 + reason_bytes);
    out.put_u16(code);
    out.put_slice(&reason.as_bytes()[..reason_bytes]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses whitespace-separated hex bytes, as RFC 6455 prints them.
    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|byte| u8::from_str_radix(byte, 16).expect("test hex is valid"))
            .collect()
    }

    fn check(encoded: Bytes, expected_hex: &str) {
        assert_eq!(&encoded[..], &hex(expected_hex)[..]);
    }

    #[test]
    fn encodes_the_rfc_6455_section_5_7_examples() {
        check(
            encode_frame(true, Opcode::Text, b"Hello"),
            "81 05 48 65 6c 6c 6f",
        );
        check(
            encode_masked_frame(true, Opcode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d]),
            "81 85 37 fa 21 3d 7f 9f 4d 51 58",
        );
        check(encode_frame(false, Opcode::Text, b"Hel"), "01 03 48 65 6c");
        check(
            encode_frame(true, Opcode::Continuation, b"lo"),
            "80 02 6c 6f",
        );
        check(
            encode_frame(true, Opcode::Ping, b"Hello"),
            "89 05 48 65 6c 6c 6f",
        );
        check(
            encode_masked_frame(true, Opcode::Pong, b"Hello", [0x37, 0xfa, 0x21, 0x3d]),
            "8a 85 37 fa 21 3d 7f 9f 4d 51 58",
        );
    }

    #[test]
    fn lengths_use_the_shortest_form() {
        let cases: [(usize, &str); 6] = [
            (0, "82 00"),
            (125, "82 7d"),
            (126, "82 7e 00 7e"),
            (256, "82 7e 01 00"),
            (65535, "82 7e ff ff"),
            (65536, "82 7f 00 00 00 00 00 01 00 00"),
        ];
        for (payload_bytes, expected_header_hex) in cases {
            let payload = vec![0xAB; payload_bytes];
            let frame = encode_frame(true, Opcode::Binary, &payload);
            let expected_header = hex(expected_header_hex);
            assert_eq!(&frame[..expected_header.len()], &expected_header[..]);
            assert_eq!(&frame[expected_header.len()..], &payload[..]);
            assert_eq!(
                frame_header_bytes(payload_bytes, false),
                expected_header.len()
            );
        }
    }

    #[test]
    fn a_masked_header_is_never_longer_than_the_maximum() {
        let mut out = BytesMut::new();
        encode_frame_header(
            &mut out,
            false,
            Opcode::Binary,
            usize::MAX >> 1,
            Some([1, 2, 3, 4]),
        );
        assert_eq!(out.len(), FRAME_HEADER_BYTES_MAX);
        assert_eq!(out[1], MASK_BIT | LENGTH_CODE_64_BIT);
        assert_eq!(&out[10..], &[1, 2, 3, 4]);
    }

    #[test]
    fn opcodes_round_trip_and_reserved_values_have_none() {
        for value in 0u8..16 {
            match Opcode::from_u8(value) {
                Some(opcode) => assert_eq!(opcode.as_u8(), value),
                None => assert!(matches!(value, 3..=7 | 11..=15), "{value}"),
            }
        }
        assert!(Opcode::Close.is_control());
        assert!(Opcode::Ping.is_control());
        assert!(Opcode::Pong.is_control());
        assert!(!Opcode::Continuation.is_control());
        assert!(!Opcode::Text.is_control());
        assert!(!Opcode::Binary.is_control());
    }

    #[test]
    fn close_payload_is_code_then_reason() {
        assert_eq!(&close_payload(1000, "bye")[..], b"\x03\xe8bye");
        assert_eq!(&close_payload(4008, "")[..], b"\x0f\xa8");
    }

    #[test]
    fn close_payload_truncates_the_reason_at_a_char_boundary() {
        // 122 ASCII bytes then a 3-byte character: only 123 bytes fit, which
        // would cut the character, so it is dropped whole.
        let reason = format!("{}€tail", "a".repeat(122));
        let payload = close_payload(1001, &reason);
        assert_eq!(payload.len(), 2 + 122);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());

        let long_ascii = "x".repeat(500);
        assert_eq!(
            close_payload(1000, &long_ascii).len(),
            CONTROL_PAYLOAD_BYTES_MAX
        );
    }
}
