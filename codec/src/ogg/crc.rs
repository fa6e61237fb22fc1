//! Ogg's CRC-32 (RFC 3533 §6): polynomial 0x04c11db7, bits not reflected,
//! initial value 0, no final XOR. This is not the zlib CRC (which reflects
//! and inverts), so no common crate computes it; it is written here by hand.
//!
//! Every live page is checked once on ingest and every outgoing page is
//! summed once, so the bulk path reads eight bytes per step (slice-by-8)
//! with eight 256-entry tables built at compile time. [`crc32_bytewise`]
//! is the one-table reference that tests hold the fast path to.

/// The generator polynomial, most significant bit first.
const POLYNOMIAL: u32 = 0x04c1_1db7;

/// `TABLES[0]` is the classic byte-at-a-time table; `TABLES[k][b]` is the
/// CRC contribution of byte `b` followed by `k` zero bytes, which lets
/// slice-by-8 fold eight input bytes with eight independent lookups.
const TABLES: [[u32; 256]; 8] = build_tables();

const fn build_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut byte = 0;
    while byte < 256 {
        let mut remainder = (byte as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            remainder = if remainder & 0x8000_0000 != 0 {
                (remainder << 1) ^ POLYNOMIAL
            } else {
                remainder << 1
            };
            bit += 1;
        }
        tables[0][byte] = remainder;
        byte += 1;
    }
    let mut table_idx = 1;
    while table_idx < 8 {
        let mut byte = 0;
        while byte < 256 {
            let previous = tables[table_idx - 1][byte];
            tables[table_idx][byte] = (previous << 8) ^ tables[0][(previous >> 24) as usize];
            byte += 1;
        }
        table_idx += 1;
    }
    tables
}

/// The Ogg CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

/// Continues a CRC over more bytes: `crc32_update(crc32(a), b)` equals the
/// CRC of `a` followed by `b`. The page parser uses it to sum a page with
/// its CRC field taken as zero without copying the page.
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut crc = crc;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let high = crc ^ u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        crc = TABLES[7][(high >> 24) as usize]
            ^ TABLES[6][((high >> 16) & 0xff) as usize]
            ^ TABLES[5][((high >> 8) & 0xff) as usize]
            ^ TABLES[4][(high & 0xff) as usize]
            ^ TABLES[3][chunk[4] as usize]
            ^ TABLES[2][chunk[5] as usize]
            ^ TABLES[1][chunk[6] as usize]
            ^ TABLES[0][chunk[7] as usize];
    }
    crc32_bytewise_update(crc, chunks.remainder())
}

/// The reference implementation, one table lookup per byte.
pub fn crc32_bytewise(data: &[u8]) -> u32 {
    crc32_bytewise_update(0, data)
}

fn crc32_bytewise_update(crc: u32, data: &[u8]) -> u32 {
    data.iter().fold(crc, |crc, &byte| {
        (crc << 8) ^ TABLES[0][((crc >> 24) as u8 ^ byte) as usize]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32/CKSUM (same polynomial, init 0) has check value 0x765e7680 for
    /// "123456789" after its final XOR with 0xffffffff; Ogg skips that XOR.
    #[test]
    fn check_string_matches_the_published_cksum_value_without_final_xor() {
        assert_eq!(crc32(b"123456789"), 0x765e_7680 ^ 0xffff_ffff);
        assert_eq!(crc32_bytewise(b"123456789"), 0x765e_7680 ^ 0xffff_ffff);
    }

    #[test]
    fn empty_input_has_crc_zero() {
        assert_eq!(crc32(&[]), 0);
    }

    #[test]
    fn slice_by_8_agrees_with_the_bytewise_reference_at_every_length() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 151 + 7) as u8).collect();
        for length in 0..data.len() {
            assert_eq!(
                crc32(&data[..length]),
                crc32_bytewise(&data[..length]),
                "length {length}"
            );
        }
    }

    #[test]
    fn update_continues_a_crc_across_a_split() {
        let data = b"OggS page bytes split anywhere";
        for split in 0..data.len() {
            let (first, second) = data.split_at(split);
            assert_eq!(crc32_update(crc32(first), second), crc32(data));
        }
    }
}
