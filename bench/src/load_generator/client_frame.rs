//! Client frames for the load generator, on `veza_codec::websocket`.
//!
//! The codec's `encode_masked_frame` returns a fresh `Bytes` per frame; the
//! load generator instead appends frames to a reused write buffer with the
//! codec's header encoder and masking, so that it allocates nothing per
//! message (house rule 5). Replies are decoded by the codec's
//! `MessageDecoder` in the client role, which rejects masked server frames.

use bytes::{BufMut as _, BytesMut};
use veza_codec::websocket::{apply_mask, encode_frame_header, frame_header_bytes};
pub use veza_codec::websocket::{DecoderLimits, Message, MessageDecoder, Opcode, Role};

/// Appends one masked client frame to `out`: the header, then the payload
/// copied once and masked in place.
pub fn encode_masked_frame_into(
    out: &mut BytesMut,
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    mask: [u8; 4],
) {
    out.reserve(frame_header_bytes(payload.len(), true) + payload.len());
    encode_frame_header(out, fin, opcode, payload.len(), Some(mask));
    let payload_start = out.len();
    out.put_slice(payload);
    apply_mask(&mut out[payload_start..], mask, 0);
}

/// A decoder for the server's frames, with the same limit on frames and
/// messages.
pub fn server_frame_decoder(payload_bytes_max: usize) -> MessageDecoder {
    let limits = DecoderLimits {
        frame_payload_bytes_max: payload_bytes_max,
        message_bytes_max: payload_bytes_max,
    };
    MessageDecoder::new(Role::Client, limits)
}

#[cfg(test)]
mod tests {
    use veza_codec::websocket::encode_masked_frame;

    use super::*;

    fn check_masked_encoding(payload_bytes: usize, expected_header: &[u8]) {
        let payload: Vec<u8> = (0..payload_bytes).map(|byte_idx| byte_idx as u8).collect();
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = BytesMut::from(&b"earlier frame"[..]);
        encode_masked_frame_into(&mut out, true, Opcode::Binary, &payload, mask);
        let frame = out.split_off(b"earlier frame".len());
        assert_eq!(&frame[..expected_header.len()], expected_header);
        assert_eq!(
            &frame[expected_header.len()..expected_header.len() + 4],
            &mask
        );
        assert_eq!(
            frame,
            encode_masked_frame(true, Opcode::Binary, &payload, mask)
        );
    }

    #[test]
    fn masked_frames_match_the_codec_and_use_the_shortest_length() {
        check_masked_encoding(20, &[0x82, 0x80 | 20]);
        check_masked_encoding(125, &[0x82, 0x80 | 125]);
        check_masked_encoding(126, &[0x82, 0x80 | 126, 0, 126]);
        check_masked_encoding(16384, &[0x82, 0x80 | 126, 0x40, 0x00]);
        check_masked_encoding(65536, &[0x82, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn server_frames_decode_and_masked_server_frames_are_refused() {
        let mut decoder = server_frame_decoder(1 << 20);
        let mut buffer = BytesMut::from(&[0x82, 0x03, b'a', b'b'][..]);
        assert_eq!(decoder.decode(&mut buffer), Ok(None));
        buffer.extend_from_slice(b"c");
        assert_eq!(
            decoder.decode(&mut buffer),
            Ok(Some(Message::Binary("abc".into())))
        );
        let mut masked = BytesMut::new();
        encode_masked_frame_into(&mut masked, true, Opcode::Binary, b"x", [1, 2, 3, 4]);
        assert!(server_frame_decoder(1 << 20).decode(&mut masked).is_err());
    }
}
