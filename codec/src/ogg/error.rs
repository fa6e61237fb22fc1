//! The one error type of the Ogg module, shared by the page parser, the
//! Opus header parsers and the demuxer so that the data plane has a single
//! `match` to turn a refused live source into a `400` body.

/// Why a stream of bytes is not an acceptable Ogg Opus stream.
///
/// Every variant is reachable from peer input except [`OggError::PageTooLarge`],
/// which guards [`super::write_page`] against a caller that hands it more
/// than one page can hold.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum OggError {
    /// The bytes where a page should start are not the capture pattern
    /// `OggS`: the stream is not Ogg, or garbage was sent between pages.
    #[error("capture pattern \"OggS\" missing")]
    NotOgg,
    /// The page header declares a stream structure version other than 0.
    #[error("unsupported Ogg stream structure version {0}")]
    UnsupportedVersion(u8),
    /// The page's header type sets bits that RFC 3533 does not define.
    #[error("page header type {0:#04x} sets undefined bits")]
    BadHeaderType(u8),
    /// The CRC-32 stored in the page does not match its contents.
    #[error("CRC mismatch on page {sequence}")]
    CrcMismatch {
        /// The page sequence number, as read from the damaged page.
        sequence: u32,
    },
    /// The packets handed to [`super::write_page`] need more than 255
    /// lacing values.
    #[error("packets do not fit in one page")]
    PageTooLarge,
    /// The first packet of a logical stream is not an `OpusHead`: the
    /// stream carries another codec (Vorbis, FLAC, Speex, a video, ...).
    #[error("beginning-of-stream packet is not OpusHead")]
    NotOpus,
    /// The `OpusHead` packet is malformed or describes a layout we refuse.
    #[error("bad OpusHead: {0}")]
    BadOpusHead(&'static str),
    /// The `OpusTags` packet is malformed.
    #[error("bad OpusTags: {0}")]
    BadOpusTags(&'static str),
    /// An audio packet violates RFC 6716 §3 (framing and duration).
    #[error("bad Opus packet: {0}")]
    BadOpusPacket(&'static str),
    /// A packet grew past [`super::DemuxLimits::packet_bytes_max`].
    #[error("packet of at least {bytes} bytes exceeds the limit")]
    PacketTooLarge {
        /// How many bytes of the packet had arrived when the limit was hit.
        bytes: usize,
    },
    /// A page of a second logical stream arrived while one is open: the
    /// source multiplexes streams (audio with video, two audio tracks).
    #[error("a second logical stream is multiplexed into the source")]
    MultiplexedStream,
    /// A page or packet arrived where the Ogg Opus structure forbids it.
    #[error("unexpected page: {0}")]
    UnexpectedPage(&'static str),
}

impl OggError {
    /// A human sentence for the JSON body of the `400` the data plane
    /// answers a refused source with. It names the problem in terms a
    /// broadcaster can act on (which encoder setting or which codec).
    pub fn detail(&self) -> String {
        match self {
            OggError::NotOgg => {
                "The stream is not Ogg: a page does not start with \"OggS\".".to_string()
            }
            OggError::UnsupportedVersion(version) => {
                format!("The Ogg page declares stream structure version {version}; only version 0 exists.")
            }
            OggError::BadHeaderType(header_type) => {
                format!("The Ogg page header type {header_type:#04x} sets undefined bits.")
            }
            OggError::CrcMismatch { sequence } => {
                format!("Ogg page {sequence} failed its CRC check: the stream is damaged.")
            }
            OggError::PageTooLarge => "The packets do not fit in one Ogg page.".to_string(),
            OggError::NotOpus => {
                "The Ogg stream does not carry Opus audio; send Ogg Opus (audio/ogg; codecs=opus).".to_string()
            }
            OggError::BadOpusHead(reason) => format!("The OpusHead header is invalid: {reason}."),
            OggError::BadOpusTags(reason) => format!("The OpusTags header is invalid: {reason}."),
            OggError::BadOpusPacket(reason) => format!("An Opus audio packet is invalid: {reason}."),
            OggError::PacketTooLarge { bytes } => {
                format!("An Ogg packet reached {bytes} bytes, more than this server accepts.")
            }
            OggError::MultiplexedStream => {
                "The Ogg stream multiplexes several logical streams; send a single Opus audio stream.".to_string()
            }
            OggError::UnexpectedPage(reason) => {
                format!("The Ogg Opus stream is out of order: {reason}.")
            }
        }
    }
}
