//! XOR masking of frame payloads (RFC 6455 §5.3).
//!
//! Every byte a client sends is masked, so the server unmasks every byte it
//! receives: this is the one loop in the codec that touches all payload
//! bytes. No crate serves it on our terms (in place, on a `BytesMut` we own,
//! with a running offset), so it is written here by hand, in tiers that must
//! all give the answer of [`apply_mask_scalar`], the byte-loop reference:
//!
//! - under 64 bytes (chat-sized messages), four bytes at a time through a
//!   `u32`, with no setup at all;
//! - on `x86_64`, SSE2 (part of the base `x86_64` instruction set, so always
//!   there) and, from 128 bytes, AVX2 (detected at run time; the standard
//!   library caches the answer, so the check is one relaxed atomic load);
//! - elsewhere, a portable word-at-a-time loop (`u64`).
//!
//! The vector and word tiers mask an unaligned prologue, then the aligned
//! middle a vector or word at a time, then the tail. Since a vector or word
//! is a multiple of four bytes, the mask phase after the prologue holds for
//! the whole middle and the tail.
//!
//! The thresholds come from measuring on an x86_64 with AVX2: below them the
//! aligned prologue and the detection cost more than the wider loads save.

/// Below this many bytes the `u32` loop beats any tier with a prologue.
const VECTOR_TIER_BYTES_MIN: usize = 64;

/// Below this many bytes AVX2's prologue and tail (up to 31 bytes each)
/// outweigh its wider vectors, so SSE2 does the job.
#[cfg(target_arch = "x86_64")]
const AVX2_TIER_BYTES_MIN: usize = 128;

/// Applies the XOR mask in place; `offset` is the position of `data[0]`
/// within the payload (mask key index = `(offset + i) % 4`).
///
/// Masking and unmasking are the same operation. The `offset` lets a caller
/// unmask a payload in pieces as it arrives.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mask = rotate_mask(mask, offset);
    if data.len() < VECTOR_TIER_BYTES_MIN {
        apply_mask_short(data, mask);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if data.len() >= AVX2_TIER_BYTES_MIN && std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2; we just asked it.
            unsafe { x86::apply_mask_avx2(data, mask) };
        } else {
            x86::apply_mask_sse2(data, mask);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    apply_mask_words(data, mask);
}

/// Applies the XOR mask in place one byte at a time. This is the reference
/// implementation the fast tiers are tested against.
pub fn apply_mask_scalar(data: &mut [u8], mask: [u8; 4], offset: usize) {
    // Reduce first so `phase + byte_idx` cannot overflow for any `offset`.
    let phase = offset % 4;
    for (byte_idx, byte) in data.iter_mut().enumerate() {
        *byte ^= mask[(phase + byte_idx) % 4];
    }
}

/// The mask as seen from a byte at `offset`: rotated so that key index 0
/// applies to that byte.
fn rotate_mask(mask: [u8; 4], offset: usize) -> [u8; 4] {
    let phase = offset % 4;
    [
        mask[phase],
        mask[(phase + 1) % 4],
        mask[(phase + 2) % 4],
        mask[(phase + 3) % 4],
    ]
}

/// Portable tier: eight bytes at a time through a `u64`.
///
/// Used on targets without a vector tier here; compiled and tested on all
/// targets so it cannot rot.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn apply_mask_words(data: &mut [u8], mask: [u8; 4]) {
    let prologue_bytes = data.as_ptr().align_offset(8).min(data.len());
    let (prologue, rest) = data.split_at_mut(prologue_bytes);
    apply_mask_scalar(prologue, mask, 0);
    let mask = rotate_mask(mask, prologue_bytes);
    let mask_word = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut words = rest.chunks_exact_mut(8);
    for word in &mut words {
        // `chunks_exact_mut(8)` yields exactly eight bytes, so the conversion
        // cannot fail; it compiles to a plain load.
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ mask_word).to_ne_bytes());
    }
    apply_mask_scalar(words.into_remainder(), mask, 0);
}

/// Short tier: four bytes at a time through a `u32`, for short payloads and
/// for the unaligned edges around the vectors of a vector tier (a byte loop
/// there would cost as much as the vectors on messages of a few hundred
/// bytes).
fn apply_mask_short(data: &mut [u8], mask: [u8; 4]) {
    let mask_word = u32::from_ne_bytes(mask);
    let mut words = data.chunks_exact_mut(4);
    for word in &mut words {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u32::from_ne_bytes(bytes) ^ mask_word).to_ne_bytes());
    }
    apply_mask_scalar(words.into_remainder(), mask, 0);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{apply_mask_short, rotate_mask};
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_set1_epi32, _mm256_xor_si256, _mm_set1_epi32, _mm_xor_si128,
    };

    /// SSE2 tier: sixteen bytes at a time. SSE2 is part of the `x86_64`
    /// baseline, so no detection is needed.
    pub(super) fn apply_mask_sse2(data: &mut [u8], mask: [u8; 4]) {
        // SAFETY: every bit pattern of 16 bytes is a valid `__m128i`, and
        // `align_to_mut` only puts correctly aligned, whole vectors in the
        // middle slice; the three slices do not overlap.
        let (prologue, vectors, tail) = unsafe { data.align_to_mut::<__m128i>() };
        apply_mask_short(prologue, mask);
        let mask = rotate_mask(mask, prologue.len());
        // SAFETY: the intrinsics only require SSE2, which every `x86_64` CPU
        // has; they touch no memory but their arguments.
        unsafe {
            let mask_vector = _mm_set1_epi32(i32::from_ne_bytes(mask));
            for vector in vectors.iter_mut() {
                *vector = _mm_xor_si128(*vector, mask_vector);
            }
        }
        apply_mask_short(tail, mask);
    }

    /// AVX2 tier: thirty-two bytes at a time.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 (check with `is_x86_feature_detected!`).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn apply_mask_avx2(data: &mut [u8], mask: [u8; 4]) {
        // SAFETY: as in `apply_mask_sse2`, with 32-byte vectors.
        let (prologue, vectors, tail) = unsafe { data.align_to_mut::<__m256i>() };
        apply_mask_short(prologue, mask);
        let mask = rotate_mask(mask, prologue.len());
        let mask_vector = _mm256_set1_epi32(i32::from_ne_bytes(mask));
        for vector in vectors.iter_mut() {
            *vector = _mm256_xor_si256(*vector, mask_vector);
        }
        apply_mask_short(tail, mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A masking tier, taking a mask already rotated for `data[0]`.
    type Tier = fn(&mut [u8], [u8; 4]);

    /// Every tier this machine can run, by name.
    fn tiers() -> Vec<(&'static str, Tier)> {
        let mut tiers: Vec<(&'static str, Tier)> = vec![
            ("dispatch", |data, mask| apply_mask(data, mask, 0)),
            ("words", apply_mask_words),
            ("short", apply_mask_short),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            tiers.push(("sse2", x86::apply_mask_sse2));
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 support was detected just above.
                tiers.push(("avx2", |data, mask| unsafe {
                    x86::apply_mask_avx2(data, mask)
                }));
            }
        }
        tiers
    }

    /// Masks `payload_bytes` bytes starting `alignment_bytes` into a buffer
    /// with every tier and with `apply_mask`, and expects the scalar answer.
    fn check(payload: &[u8], alignment_bytes: usize, mask: [u8; 4], offset: usize) {
        let mut expected = payload.to_vec();
        apply_mask_scalar(&mut expected, mask, offset);

        let mut backing = vec![0u8; alignment_bytes + payload.len()];
        let data = &mut backing[alignment_bytes..];
        data.copy_from_slice(payload);
        apply_mask(data, mask, offset);
        assert_eq!(data, &expected[..], "apply_mask, offset {offset}");

        for (name, tier) in tiers() {
            data.copy_from_slice(payload);
            tier(data, rotate_mask(mask, offset));
            assert_eq!(data, &expected[..], "tier {name}, offset {offset}");
        }
    }

    #[test]
    fn rfc_6455_example_masks_hello() {
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn masking_twice_restores_the_payload() {
        let original: Vec<u8> = (0..=255).collect();
        let mut data = original.clone();
        apply_mask(&mut data, [1, 2, 3, 4], 7);
        assert_ne!(data, original);
        apply_mask(&mut data, [1, 2, 3, 4], 7);
        assert_eq!(data, original);
    }

    #[test]
    fn masking_in_pieces_with_offsets_equals_masking_at_once() {
        let mask = [0xde, 0xad, 0xbe, 0xef];
        let original: Vec<u8> = (0..1000u32).map(|value| value as u8).collect();
        let mut at_once = original.clone();
        apply_mask(&mut at_once, mask, 0);

        let mut in_pieces = original.clone();
        let mut start = 0;
        for piece_bytes in [1, 3, 17, 64, 100, 5, 810] {
            apply_mask(&mut in_pieces[start..start + piece_bytes], mask, start);
            start += piece_bytes;
        }
        assert_eq!(start, original.len());
        assert_eq!(in_pieces, at_once);
    }

    #[test]
    fn every_tier_agrees_on_every_small_length_alignment_and_offset() {
        let payload: Vec<u8> = (0..200u32).map(|value| (value * 7) as u8).collect();
        for payload_bytes in 0..payload.len() {
            for alignment_bytes in 0..33 {
                for offset in 0..4 {
                    check(
                        &payload[..payload_bytes],
                        alignment_bytes,
                        [0x12, 0x34, 0x56, 0x78],
                        offset,
                    );
                }
            }
        }
    }

    #[test]
    fn huge_offsets_do_not_overflow() {
        check(&[1; 100], 3, [9, 8, 7, 6], usize::MAX);
        check(&[1; 100], 0, [9, 8, 7, 6], usize::MAX - 2);
    }

    proptest! {
        #[test]
        fn apply_mask_equals_the_scalar_reference(
            payload in proptest::collection::vec(any::<u8>(), 0..5000),
            alignment_bytes in 0usize..64,
            mask in any::<[u8; 4]>(),
            offset in any::<usize>(),
        ) {
            check(&payload, alignment_bytes, mask, offset);
        }
    }
}
