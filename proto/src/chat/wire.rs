//! The primitive wire types of the chat protocol: big-endian integers,
//! `bool`, `string` (u16 length), `text` (u32 length) and `list<T>` (u16
//! count), written with [`BufMut`] and read by [`WireReader`].
//!
//! Written by hand rather than with a serialisation library because the
//! layout is the public, language-neutral contract documented in
//! `PROTOCOL.md`; no library produces exactly it.

use bytes::{BufMut, BytesMut};

/// Why a frame's bytes could not be read; becomes `DecodeError::detail`.
pub(crate) type Detail = &'static str;

/// Reads wire values from one frame, front to back, never past its end.
pub(crate) struct WireReader<'a> {
    remaining: &'a [u8],
}

impl<'a> WireReader<'a> {
    /// A reader positioned at the start of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { remaining: bytes }
    }

    /// Fails unless every byte was read: trailing bytes are malformed.
    pub(crate) fn finish(self) -> Result<(), Detail> {
        if self.remaining.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes after the frame")
        }
    }

    fn take(&mut self, length_bytes: usize, what: Detail) -> Result<&'a [u8], Detail> {
        if self.remaining.len() < length_bytes {
            return Err(what);
        }
        let (taken, rest) = self.remaining.split_at(length_bytes);
        self.remaining = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: Detail) -> Result<[u8; N], Detail> {
        let taken = self.take(N, what)?;
        let mut array = [0; N];
        array.copy_from_slice(taken);
        Ok(array)
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, Detail> {
        Ok(self.array::<1>("frame ends inside a u8")?[0])
    }

    /// A big-endian u16.
    pub(crate) fn u16(&mut self) -> Result<u16, Detail> {
        Ok(u16::from_be_bytes(self.array("frame ends inside a u16")?))
    }

    /// A big-endian u32.
    pub(crate) fn u32(&mut self) -> Result<u32, Detail> {
        Ok(u32::from_be_bytes(self.array("frame ends inside a u32")?))
    }

    /// A big-endian u64.
    pub(crate) fn u64(&mut self) -> Result<u64, Detail> {
        Ok(u64::from_be_bytes(self.array("frame ends inside a u64")?))
    }

    /// A big-endian two's complement i64.
    pub(crate) fn i64(&mut self) -> Result<i64, Detail> {
        Ok(i64::from_be_bytes(self.array("frame ends inside an i64")?))
    }

    /// A `bool`: exactly 0 or 1.
    pub(crate) fn bool(&mut self) -> Result<bool, Detail> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("a bool is neither 0 nor 1"),
        }
    }

    /// A `string`: u16 byte length, then UTF-8.
    pub(crate) fn string(&mut self) -> Result<String, Detail> {
        let length_bytes = usize::from(self.u16()?);
        self.utf8(
            length_bytes,
            "a string is longer than the rest of the frame",
        )
    }

    /// A `text`: u32 byte length, then UTF-8.
    pub(crate) fn text(&mut self) -> Result<String, Detail> {
        // Saturating: on a 16-bit target a huge length simply does not fit.
        let length_bytes = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        self.utf8(length_bytes, "a text is longer than the rest of the frame")
    }

    fn utf8(&mut self, length_bytes: usize, what: Detail) -> Result<String, Detail> {
        let bytes = self.take(length_bytes, what)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => Err("a string is not valid UTF-8"),
        }
    }

    /// A `list<T>`: u16 count, then the items read by `read_item`, each of
    /// which takes at least `item_bytes_min` bytes.
    pub(crate) fn list<T>(
        &mut self,
        item_bytes_min: usize,
        mut read_item: impl FnMut(&mut Self) -> Result<T, Detail>,
    ) -> Result<Vec<T>, Detail> {
        debug_assert!(item_bytes_min > 0, "every list item takes bytes");
        let count = usize::from(self.u16()?);
        // Checked before allocating, so a lying count cannot make us reserve
        // memory the frame could never fill.
        if count.saturating_mul(item_bytes_min) > self.remaining.len() {
            return Err("a list's count is larger than the rest of the frame");
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(read_item(self)?);
        }
        Ok(items)
    }

    /// A `list<i64>`.
    pub(crate) fn i64_list(&mut self) -> Result<Vec<i64>, Detail> {
        self.list(8, Self::i64)
    }
}

/// Writes a `bool`.
pub(crate) fn put_bool(out: &mut BytesMut, value: bool) {
    out.put_u8(u8::from(value));
}

/// Writes a `string`.
///
/// # Panics
///
/// If `value` is longer than 65 535 bytes: the caller enforces the protocol's
/// limits before encoding, so a longer string is a programmer error.
pub(crate) fn put_string(out: &mut BytesMut, value: &str) {
    let length_bytes = u16::try_from(value.len()).expect("a string fits in 65535 bytes");
    out.put_u16(length_bytes);
    out.put_slice(value.as_bytes());
}

/// Writes a `text`.
///
/// # Panics
///
/// If `value` is longer than `u32::MAX` bytes (a programmer error).
pub(crate) fn put_text(out: &mut BytesMut, value: &str) {
    let length_bytes = u32::try_from(value.len()).expect("a text fits in u32::MAX bytes");
    out.put_u32(length_bytes);
    out.put_slice(value.as_bytes());
}

/// Writes a `list<T>`'s count.
///
/// # Panics
///
/// If there are more than 65 535 items (a programmer error).
pub(crate) fn put_list_count(out: &mut BytesMut, count: usize) {
    out.put_u16(u16::try_from(count).expect("a list has at most 65535 items"));
}

/// Writes a `list<i64>`.
pub(crate) fn put_i64_list(out: &mut BytesMut, values: &[i64]) {
    put_list_count(out, values.len());
    for value in values {
        out.put_i64(*value);
    }
}
