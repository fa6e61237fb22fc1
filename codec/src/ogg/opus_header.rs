//! The two Ogg Opus header packets (RFC 7845 §5): the identification header
//! `OpusHead` and the comment header `OpusTags`. Parsing checks every
//! length against the packet before it reads or allocates, so a header that
//! claims a million comments in forty bytes is refused, not believed.

use super::error::OggError;

/// Magic signature that starts the identification header.
pub const OPUS_HEAD_MAGIC: &[u8; 8] = b"OpusHead";
/// Magic signature that starts the comment header.
pub const OPUS_TAGS_MAGIC: &[u8; 8] = b"OpusTags";
/// Bytes of an `OpusHead` with mapping family 0 (no mapping table).
pub const OPUS_HEAD_BYTES_MIN: usize = 19;
/// The major version this parser understands: the upper four bits of the
/// version byte. Minor versions (the lower bits) are compatible (§5.1).
const VERSION_MAJOR_MASK: u8 = 0xf0;
/// Channels a mapping family 1 stream may have (Vorbis channel order).
const FAMILY_1_CHANNEL_COUNT_MAX: u8 = 8;
/// Bytes of the length prefix of the vendor string and of each comment.
const LENGTH_PREFIX_BYTES: usize = 4;

/// The identification header (RFC 7845 §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusHead {
    /// Encapsulation version; only major version 0 (0–15) is accepted.
    pub version: u8,
    /// Output channels, at least 1.
    pub channel_count: u8,
    /// 48 kHz samples to discard from the decoder output at the start.
    pub pre_skip: u16,
    /// Sample rate of the encoder's input, informational only; 0 if unknown.
    pub input_sample_rate: u32,
    /// Gain to apply to the decoded output, in Q7.8 dB.
    pub output_gain_q8: i16,
    /// 0: mono or stereo, one Opus stream; 1: Vorbis order, up to 8
    /// channels; 255: undefined order.
    pub mapping_family: u8,
    /// For a family other than 0: stream count, coupled stream count, then
    /// one mapping byte per channel. Empty for family 0.
    pub mapping: Vec<u8>,
}

impl OpusHead {
    /// Parses and validates an `OpusHead` packet.
    ///
    /// Bytes after the header are ignored, as §5.1 asks of readers so that
    /// later minor versions can extend it.
    pub fn parse(packet: &[u8]) -> Result<Self, OggError> {
        if !packet.starts_with(OPUS_HEAD_MAGIC) {
            return Err(OggError::NotOpus);
        }
        if packet.len() < OPUS_HEAD_BYTES_MIN {
            return Err(OggError::BadOpusHead("shorter than 19 bytes"));
        }
        let head = OpusHead {
            version: packet[8],
            channel_count: packet[9],
            pre_skip: u16::from_le_bytes([packet[10], packet[11]]),
            input_sample_rate: u32::from_le_bytes([packet[12], packet[13], packet[14], packet[15]]),
            output_gain_q8: i16::from_le_bytes([packet[16], packet[17]]),
            mapping_family: packet[18],
            mapping: Vec::new(),
        };
        if head.version & VERSION_MAJOR_MASK != 0 {
            return Err(OggError::BadOpusHead("unsupported major version"));
        }
        if head.channel_count == 0 {
            return Err(OggError::BadOpusHead("zero channels"));
        }
        if head.mapping_family == 0 {
            if head.channel_count > 2 {
                return Err(OggError::BadOpusHead(
                    "mapping family 0 allows only one or two channels",
                ));
            }
            return Ok(head);
        }
        let mapping = parse_mapping_table(&head, &packet[OPUS_HEAD_BYTES_MIN..])?;
        Ok(OpusHead { mapping, ..head })
    }

    /// Serialises the header as an `OpusHead` packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut packet = Vec::with_capacity(OPUS_HEAD_BYTES_MIN + self.mapping.len());
        packet.extend_from_slice(OPUS_HEAD_MAGIC);
        packet.push(self.version);
        packet.push(self.channel_count);
        packet.extend_from_slice(&self.pre_skip.to_le_bytes());
        packet.extend_from_slice(&self.input_sample_rate.to_le_bytes());
        packet.extend_from_slice(&self.output_gain_q8.to_le_bytes());
        packet.push(self.mapping_family);
        if self.mapping_family != 0 {
            packet.extend_from_slice(&self.mapping);
        }
        packet
    }
}

/// Reads the channel mapping table that follows the fixed header when the
/// mapping family is not 0 (§5.1.1).
fn parse_mapping_table(head: &OpusHead, table: &[u8]) -> Result<Vec<u8>, OggError> {
    if head.mapping_family == 1 && head.channel_count > FAMILY_1_CHANNEL_COUNT_MAX {
        return Err(OggError::BadOpusHead(
            "mapping family 1 allows at most eight channels",
        ));
    }
    let table_bytes = 2 + head.channel_count as usize;
    let Some(table) = table.get(..table_bytes) else {
        return Err(OggError::BadOpusHead("channel mapping table is truncated"));
    };
    let stream_count = table[0];
    let coupled_count = table[1];
    if stream_count == 0 {
        return Err(OggError::BadOpusHead("zero streams"));
    }
    if coupled_count > stream_count {
        return Err(OggError::BadOpusHead("more coupled streams than streams"));
    }
    let decoded_channel_count = stream_count as u16 + coupled_count as u16;
    if decoded_channel_count > 255 {
        return Err(OggError::BadOpusHead("more than 255 decoded channels"));
    }
    // 255 marks a silent channel; any other index must name a decoded channel.
    let mapping_is_valid = table[2..]
        .iter()
        .all(|&index| index == 255 || (index as u16) < decoded_channel_count);
    if !mapping_is_valid {
        return Err(OggError::BadOpusHead(
            "channel mapping names a missing stream",
        ));
    }
    Ok(table.to_vec())
}

/// The comment header (RFC 7845 §5.2): vendor string and `NAME=value`
/// comments, both UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpusTags {
    /// Identifies the encoder, e.g. `Lavf59.27.100` or `libopus 1.4`.
    pub vendor: String,
    /// User comments such as `TITLE=Live from the basement`.
    pub comments: Vec<String>,
}

impl OpusTags {
    /// Parses and validates an `OpusTags` packet.
    ///
    /// Every length is checked against the bytes that remain before it is
    /// used, so memory stays proportional to the packet. Bytes after the
    /// last comment (padding or binary data, §5.2) are ignored.
    pub fn parse(packet: &[u8]) -> Result<Self, OggError> {
        let Some(mut rest) = packet.strip_prefix(OPUS_TAGS_MAGIC.as_slice()) else {
            return Err(OggError::BadOpusTags("missing the OpusTags signature"));
        };
        let vendor = take_string(&mut rest, TagsField::Vendor)?;
        let comment_count = take_length(&mut rest, TagsField::CommentCount)?;
        // Each comment needs at least its length prefix, so a count the
        // packet cannot hold is refused before anything is allocated.
        if comment_count > rest.len() / LENGTH_PREFIX_BYTES {
            return Err(OggError::BadOpusTags("comment count exceeds the packet"));
        }
        let mut comments = Vec::with_capacity(comment_count);
        for _ in 0..comment_count {
            comments.push(take_string(&mut rest, TagsField::Comment)?);
        }
        Ok(OpusTags { vendor, comments })
    }

    /// Serialises the tags as an `OpusTags` packet.
    ///
    /// # Panics
    ///
    /// When a string or the comment count exceeds `u32::MAX`, which the
    /// format cannot express.
    pub fn encode(&self) -> Vec<u8> {
        let comment_bytes: usize = self
            .comments
            .iter()
            .map(|comment| LENGTH_PREFIX_BYTES + comment.len())
            .sum();
        let mut packet = Vec::with_capacity(
            OPUS_TAGS_MAGIC.len() + 2 * LENGTH_PREFIX_BYTES + self.vendor.len() + comment_bytes,
        );
        packet.extend_from_slice(OPUS_TAGS_MAGIC);
        put_length(&mut packet, self.vendor.len());
        packet.extend_from_slice(self.vendor.as_bytes());
        put_length(&mut packet, self.comments.len());
        for comment in &self.comments {
            put_length(&mut packet, comment.len());
            packet.extend_from_slice(comment.as_bytes());
        }
        packet
    }
}

fn put_length(packet: &mut Vec<u8>, length: usize) {
    let length = u32::try_from(length).expect("OpusTags lengths fit in 32 bits");
    packet.extend_from_slice(&length.to_le_bytes());
}

/// The length-prefixed fields of `OpusTags`, to name the one that is broken.
#[derive(Clone, Copy)]
enum TagsField {
    Vendor,
    CommentCount,
    Comment,
}

impl TagsField {
    fn truncated(self) -> OggError {
        OggError::BadOpusTags(match self {
            TagsField::Vendor => "vendor string length is truncated",
            TagsField::CommentCount => "comment count is truncated",
            TagsField::Comment => "comment length is truncated",
        })
    }

    fn too_long(self) -> OggError {
        OggError::BadOpusTags(match self {
            TagsField::Vendor => "vendor string length exceeds the packet",
            _ => "comment length exceeds the packet",
        })
    }

    fn not_utf8(self) -> OggError {
        OggError::BadOpusTags(match self {
            TagsField::Vendor => "vendor string is not UTF-8",
            _ => "comment is not UTF-8",
        })
    }
}

fn take_length(rest: &mut &[u8], field: TagsField) -> Result<usize, OggError> {
    let Some((prefix, tail)) = rest.split_first_chunk::<LENGTH_PREFIX_BYTES>() else {
        return Err(field.truncated());
    };
    *rest = tail;
    // Where usize is narrower than 32 bits a huge length saturates and then
    // fails the bounds check like any other length the packet cannot hold.
    Ok(usize::try_from(u32::from_le_bytes(*prefix)).unwrap_or(usize::MAX))
}

fn take_string(rest: &mut &[u8], field: TagsField) -> Result<String, OggError> {
    let length = take_length(rest, field)?;
    let Some(bytes) = rest.get(..length) else {
        return Err(field.too_long());
    };
    *rest = &rest[length..];
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_string()),
        Err(_) => Err(field.not_utf8()),
    }
}
