//! What the uploaded file is, and its decoders. Every decoder yields
//! blocks of interleaved **stereo** `f32` at the source's sample rate
//! (mono duplicated, channels past the second dropped).
//!
//! Recognition goes: Ogg whose first page carries `OpusHead` → libopus
//! (symphonia 0.5 cannot decode Opus); magic numbers of formats we know but
//! do not decode (MP4/M4A, AIFF, ADTS AAC, WMA, …) →
//! [`MediaError::UnsupportedCodec`] naming them; then symphonia's probe.
//! A probe that fails on a file starting like WAV, FLAC, Ogg or MP3 is
//! [`MediaError::Truncated`] (an I/O error: the header breaks off) or
//! [`MediaError::UnsupportedCodec`] (a feature symphonia refuses); any other
//! file is [`MediaError::NotAudio`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{self, CodecType, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use veza_codec::ogg::{
    parse_page, DemuxEvent, DemuxLimits, OggOpusDemuxer, OpusHead, GRANULE_POSITION_NONE,
    OPUS_HEAD_MAGIC, PACKET_SAMPLES_MAX, PAGE_BYTES_MAX,
};

use super::MediaError;

/// Bytes read from the file at a time on the Ogg Opus path.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Malformed packets skipped (symphonia's advice) before the stream is
/// taken for broken.
const DECODE_ERRORS_MAX: u32 = 16;

/// The sample rates accepted from a container.
const SAMPLE_RATE_HZ_RANGE: std::ops::RangeInclusive<u32> = 8_000..=384_000;

/// What a decoder knows before decoding.
#[derive(Debug, Clone, Copy)]
pub(super) struct SourceInfo {
    pub sample_rate_hz: u32,
    /// The frame count the container claims, if it states one.
    pub claimed_frame_count: Option<u64>,
}

/// An open input, decoding block by block.
pub(super) enum Decoder {
    Symphonia(Box<SymphoniaDecoder>),
    OggOpus(Box<OggOpusDecoder>),
}

impl Decoder {
    /// Recognises the file and readies its decoder.
    pub fn open(path: &Path) -> Result<Self, MediaError> {
        let mut file = File::open(path)?;
        let file_bytes = file.metadata()?.len();
        let mut head = vec![0; PAGE_BYTES_MAX.min(file_bytes as usize)];
        file.read_exact(&mut head)?;
        file.seek(SeekFrom::Start(0))?;
        if file_bytes == 0 {
            return Err(MediaError::NotAudio);
        }
        if starts_ogg_opus(&head) {
            return Ok(Decoder::OggOpus(Box::new(OggOpusDecoder::open(
                file, file_bytes,
            )?)));
        }
        if let Some(format) = unsupported_format(&head) {
            return Err(MediaError::UnsupportedCodec(format.into()));
        }
        let extension = path.extension().and_then(|extension| extension.to_str());
        SymphoniaDecoder::open(file, file_bytes, extension, looks_like_audio(&head))
            .map(|decoder| Decoder::Symphonia(Box::new(decoder)))
    }

    pub fn info(&self) -> SourceInfo {
        match self {
            Decoder::Symphonia(decoder) => decoder.info,
            Decoder::OggOpus(decoder) => decoder.info,
        }
    }

    /// Replaces `out` with the next block (interleaved stereo); `Ok(false)`
    /// at the end of the audio, whether clean or not (see
    /// [`Decoder::damage`]).
    pub fn next_block(&mut self, out: &mut Vec<f32>) -> Result<bool, MediaError> {
        out.clear();
        match self {
            Decoder::Symphonia(decoder) => decoder.next_block(out),
            Decoder::OggOpus(decoder) => decoder.next_block(out),
        }
    }

    /// Why decoding stopped before the end of the file, if it did.
    pub fn damage(&self) -> Option<&str> {
        match self {
            Decoder::Symphonia(decoder) => decoder.damage.as_deref(),
            Decoder::OggOpus(decoder) => decoder.damage.as_deref(),
        }
    }

    /// How far through the file decoding is, 0 to 1.
    pub fn progress(&self) -> f32 {
        let (read, total) = match self {
            Decoder::Symphonia(decoder) => (
                decoder.bytes_read.load(Ordering::Relaxed),
                decoder.file_bytes,
            ),
            Decoder::OggOpus(decoder) => (decoder.bytes_read, decoder.file_bytes),
        };
        (read as f64 / total.max(1) as f64).min(1.0) as f32
    }
}

fn starts_ogg_opus(head: &[u8]) -> bool {
    matches!(parse_page(head), Ok(Some((page, _))) if page.body.starts_with(OPUS_HEAD_MAGIC))
}

/// Formats recognised by their magic number that we do not decode.
fn unsupported_format(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(4, b"ftyp") {
        Some("MP4/M4A (AAC or ALAC)")
    } else if at(0, b"FORM") && (at(8, b"AIFF") || at(8, b"AIFC")) {
        Some("AIFF")
    } else if at(0, b"caff") {
        Some("Core Audio Format")
    } else if at(0, b"wvpk") {
        Some("WavPack")
    } else if at(0, b"MAC ") {
        Some("Monkey's Audio")
    } else if at(0, b"#!AMR") {
        Some("AMR")
    } else if at(0, &[0x30, 0x26, 0xb2, 0x75, 0x8e, 0x66, 0xcf, 0x11]) {
        Some("Windows Media Audio")
    } else if at(0, b"MThd") {
        Some("MIDI")
    } else if head.len() >= 2 && head[0] == 0xff && head[1] & 0xf6 == 0xf0 {
        // An MPEG sync word with layer bits 00: ADTS, i.e. raw AAC (MP3
        // frames have layer bits 01).
        Some("AAC (ADTS)")
    } else {
        None
    }
}

/// Whether the file starts like a format symphonia decodes, so that a
/// failed probe means a damaged file rather than some other file.
fn looks_like_audio(head: &[u8]) -> bool {
    head.starts_with(b"RIFF")
        || head.starts_with(b"RIFX")
        || head.starts_with(b"fLaC")
        || head.starts_with(b"OggS")
        || head.starts_with(b"ID3")
        || (head.len() >= 2 && head[0] == 0xff && head[1] & 0xe0 == 0xe0)
}

/// Duplicates mono, keeps the first two channels of anything wider.
fn push_stereo(interleaved: &[f32], channel_count: usize, out: &mut Vec<f32>) {
    match channel_count {
        1 => out.extend(interleaved.iter().flat_map(|&sample| [sample, sample])),
        2 => out.extend_from_slice(interleaved),
        _ => out.extend(
            interleaved
                .chunks_exact(channel_count)
                .flat_map(|frame| [frame[0], frame[1]]),
        ),
    }
}

/// A `File` that counts how far symphonia has read, for progress.
struct CountingFile {
    file: File,
    position: Arc<AtomicU64>,
    file_bytes: u64,
}

impl Read for CountingFile {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let n_read = self.file.read(buffer)?;
        self.position.fetch_add(n_read as u64, Ordering::Relaxed);
        Ok(n_read)
    }
}

impl Seek for CountingFile {
    fn seek(&mut self, position: SeekFrom) -> std::io::Result<u64> {
        let offset = self.file.seek(position)?;
        self.position.store(offset, Ordering::Relaxed);
        Ok(offset)
    }
}

impl MediaSource for CountingFile {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.file_bytes)
    }
}

/// WAV, FLAC, MP3 and Ogg Vorbis through symphonia.
pub(super) struct SymphoniaDecoder {
    reader: Box<dyn FormatReader>,
    decoder: Box<dyn codecs::Decoder>,
    track_id: u32,
    info: SourceInfo,
    samples: Option<SampleBuffer<f32>>,
    decode_error_count: u32,
    damage: Option<String>,
    bytes_read: Arc<AtomicU64>,
    file_bytes: u64,
}

impl SymphoniaDecoder {
    fn open(
        file: File,
        file_bytes: u64,
        extension: Option<&str>,
        looks_like_audio: bool,
    ) -> Result<Self, MediaError> {
        let bytes_read = Arc::new(AtomicU64::new(0));
        let source = CountingFile {
            file,
            position: Arc::clone(&bytes_read),
            file_bytes,
        };
        let stream = MediaSourceStream::new(Box::new(source), Default::default());
        let mut hint = Hint::new();
        if let Some(extension) = extension {
            hint.with_extension(extension);
        }
        let format_options = FormatOptions {
            enable_gapless: true,
            ..Default::default()
        };
        let probed = symphonia::default::get_probe()
            .format(&hint, stream, &format_options, &MetadataOptions::default())
            .map_err(|error| match error {
                _ if !looks_like_audio => MediaError::NotAudio,
                SymphoniaError::IoError(_) => MediaError::Truncated,
                SymphoniaError::Unsupported(feature) => {
                    MediaError::UnsupportedCodec(feature.into())
                }
                other => MediaError::Decode(other.to_string()),
            })?;
        let reader = probed.format;
        let track = reader
            .default_track()
            .filter(|track| track.codec_params.codec != codecs::CODEC_TYPE_NULL)
            .ok_or(MediaError::NotAudio)?;
        let params = &track.codec_params;
        let decoder = symphonia::default::get_codecs()
            .make(params, &DecoderOptions::default())
            .map_err(|_| MediaError::UnsupportedCodec(codec_name(params.codec)))?;
        let sample_rate_hz = params
            .sample_rate
            .filter(|rate| SAMPLE_RATE_HZ_RANGE.contains(rate))
            .ok_or_else(|| {
                MediaError::UnsupportedCodec("a sample rate outside 8–384 kHz".into())
            })?;
        Ok(Self {
            track_id: track.id,
            info: SourceInfo {
                sample_rate_hz,
                claimed_frame_count: params.n_frames,
            },
            reader,
            decoder,
            samples: None,
            decode_error_count: 0,
            damage: None,
            bytes_read,
            file_bytes,
        })
    }

    fn next_block(&mut self, out: &mut Vec<f32>) -> Result<bool, MediaError> {
        loop {
            let packet = match self.reader.next_packet() {
                Ok(packet) => packet,
                // symphonia 0.5 ends every stream with UnexpectedEof; a cut
                // file shows as fewer frames than claimed (see `reader`).
                Err(SymphoniaError::IoError(error))
                    if error.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    return Ok(false)
                }
                // A chained stream with new parameters: the first link only.
                Err(SymphoniaError::ResetRequired) => return Ok(false),
                Err(error) => {
                    self.damage = Some(error.to_string());
                    return Ok(false);
                }
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            match self.decoder.decode(&packet) {
                Ok(decoded) if decoded.frames() == 0 => continue,
                Ok(decoded) => {
                    let spec = *decoded.spec();
                    let capacity = decoded.capacity() as u64;
                    let samples = match &mut self.samples {
                        Some(samples)
                            if samples.capacity() >= decoded.capacity() * spec.channels.count() =>
                        {
                            samples
                        }
                        slot => slot.insert(SampleBuffer::new(capacity, spec)),
                    };
                    samples.copy_interleaved_ref(decoded);
                    push_stereo(samples.samples(), spec.channels.count(), out);
                    return Ok(true);
                }
                Err(SymphoniaError::DecodeError(message)) => {
                    self.decode_error_count += 1;
                    if self.decode_error_count > DECODE_ERRORS_MAX {
                        self.damage = Some(format!("too many malformed packets ({message})"));
                        return Ok(false);
                    }
                }
                Err(SymphoniaError::IoError(error)) => {
                    self.damage = Some(error.to_string());
                    return Ok(false);
                }
                Err(error) => return Err(MediaError::Decode(error.to_string())),
            }
        }
    }
}

/// A readable name for a codec symphonia recognised but cannot decode.
fn codec_name(codec: CodecType) -> String {
    let name = match codec {
        codecs::CODEC_TYPE_AAC => "AAC",
        codecs::CODEC_TYPE_ALAC => "ALAC",
        codecs::CODEC_TYPE_OPUS => "Opus",
        codecs::CODEC_TYPE_MP1 => "MPEG layer 1",
        codecs::CODEC_TYPE_MP2 => "MPEG layer 2",
        codecs::CODEC_TYPE_SPEEX => "Speex",
        codecs::CODEC_TYPE_ADPCM_IMA_WAV | codecs::CODEC_TYPE_ADPCM_MS => "ADPCM",
        _ => return format!("codec {codec}"),
    };
    name.into()
}

/// Ogg Opus through the codec crate's demuxer and libopus, honouring the
/// pre-skip, the output gain and (from the last page's granule position)
/// end trimming. Chained files: the first link only.
pub(super) struct OggOpusDecoder {
    file: File,
    demuxer: OggOpusDemuxer,
    decoder: opus::Decoder,
    channel_count: usize,
    /// Decoded samples per channel still to drop (RFC 7845 §4.2).
    pre_skip_remaining: usize,
    /// The output gain of the `OpusHead`, as an amplitude.
    gain: f32,
    /// Frames still to output, from the last page's granule position.
    frames_remaining: Option<u64>,
    info: SourceInfo,
    read_buffer: Vec<u8>,
    pcm: Vec<f32>,
    bytes_read: u64,
    file_bytes: u64,
    has_audio: bool,
    damage: Option<String>,
}

impl OggOpusDecoder {
    fn open(mut file: File, file_bytes: u64) -> Result<Self, MediaError> {
        let last_granule = last_granule_of_first_stream(&mut file, file_bytes)?;
        let (demuxer, head, bytes_read) = Self::headers(&mut file, file_bytes)?;
        if head.mapping_family != 0 {
            return Err(MediaError::UnsupportedCodec(
                "multichannel Opus (mapping family other than 0)".into(),
            ));
        }
        let channels = match head.channel_count {
            1 => opus::Channels::Mono,
            _ => opus::Channels::Stereo,
        };
        let decoder = opus::Decoder::new(48_000, channels)
            .map_err(|error| MediaError::Decode(format!("libopus: {error}")))?;
        let pre_skip = u64::from(head.pre_skip);
        let claimed = last_granule
            .filter(|&granule| granule != GRANULE_POSITION_NONE && granule >= pre_skip)
            .map(|granule| granule - pre_skip);
        Ok(Self {
            file,
            demuxer,
            decoder,
            channel_count: usize::from(head.channel_count),
            pre_skip_remaining: usize::from(head.pre_skip),
            gain: 10f32.powf(f32::from(head.output_gain_q8) / 256.0 / 20.0),
            frames_remaining: claimed,
            info: SourceInfo {
                sample_rate_hz: 48_000,
                claimed_frame_count: claimed,
            },
            read_buffer: vec![0; READ_CHUNK_BYTES],
            pcm: vec![0.0; PACKET_SAMPLES_MAX as usize * 2],
            bytes_read,
            file_bytes,
            has_audio: false,
            damage: None,
        })
    }

    /// Reads until `OpusHead` and `OpusTags` are through the demuxer.
    fn headers(
        file: &mut File,
        file_bytes: u64,
    ) -> Result<(OggOpusDemuxer, OpusHead, u64), MediaError> {
        let mut demuxer = OggOpusDemuxer::new(DemuxLimits::default());
        let mut buffer = vec![0; READ_CHUNK_BYTES];
        let mut bytes_read = 0;
        let mut head = None;
        loop {
            match demuxer.next_event() {
                Ok(Some(DemuxEvent::Head(parsed))) => head = Some(parsed),
                Ok(Some(DemuxEvent::Tags(_))) => {
                    let head = head.ok_or(MediaError::Truncated)?;
                    return Ok((demuxer, head, bytes_read));
                }
                Ok(Some(_)) => return Err(MediaError::Truncated),
                Ok(None) => {
                    let n_read = file.read(&mut buffer)?;
                    if n_read == 0 || bytes_read >= file_bytes {
                        return Err(MediaError::Truncated);
                    }
                    bytes_read += n_read as u64;
                    demuxer.push(&buffer[..n_read]);
                }
                Err(error) => return Err(MediaError::Decode(error.detail())),
            }
        }
    }

    fn next_block(&mut self, out: &mut Vec<f32>) -> Result<bool, MediaError> {
        loop {
            if self.frames_remaining == Some(0) {
                return Ok(false);
            }
            match self.demuxer.next_event() {
                Ok(Some(DemuxEvent::Audio { packet, .. })) => {
                    if self.decode_packet(&packet, out)? {
                        return Ok(true);
                    }
                }
                // The end of the first logical stream; chained links after
                // it are not decoded.
                Ok(Some(_)) => return Ok(false),
                Ok(None) => {
                    let n_read = self.file.read(&mut self.read_buffer)?;
                    if n_read == 0 {
                        return Ok(false);
                    }
                    self.bytes_read += n_read as u64;
                    self.demuxer.push(&self.read_buffer[..n_read]);
                }
                Err(error) if self.has_audio => {
                    self.damage = Some(error.detail());
                    return Ok(false);
                }
                Err(_) => return Err(MediaError::Truncated),
            }
        }
    }

    /// Decodes one packet into `out`; false when all of it was pre-skip.
    fn decode_packet(&mut self, packet: &[u8], out: &mut Vec<f32>) -> Result<bool, MediaError> {
        let frames = match self.decoder.decode_float(packet, &mut self.pcm, false) {
            Ok(frames) => frames,
            Err(error) if self.has_audio => {
                self.damage = Some(format!("libopus: {error}"));
                self.frames_remaining = Some(0);
                return Ok(false);
            }
            Err(error) => return Err(MediaError::Decode(format!("libopus: {error}"))),
        };
        let skipped = self.pre_skip_remaining.min(frames);
        self.pre_skip_remaining -= skipped;
        let mut kept = frames - skipped;
        if let Some(remaining) = &mut self.frames_remaining {
            kept = kept.min(*remaining as usize);
            *remaining -= kept as u64;
        }
        if kept == 0 {
            return Ok(false);
        }
        let channels = self.channel_count;
        let samples = &mut self.pcm[skipped * channels..(skipped + kept) * channels];
        if self.gain != 1.0 {
            samples.iter_mut().for_each(|sample| *sample *= self.gain);
        }
        push_stereo(samples, channels, out);
        self.has_audio = true;
        Ok(true)
    }
}

/// The granule position of the last page of the first page's stream, found
/// in the file's last two [`PAGE_BYTES_MAX`]: it gives the claimed length
/// and the end trimming. Leaves `file` at the start.
fn last_granule_of_first_stream(
    file: &mut File,
    file_bytes: u64,
) -> Result<Option<u64>, MediaError> {
    let mut first = vec![0; PAGE_BYTES_MAX.min(file_bytes as usize)];
    file.read_exact(&mut first)?;
    let serial = match parse_page(&first) {
        Ok(Some((page, _))) => page.serial,
        _ => return Err(MediaError::Truncated),
    };
    let tail_start = file_bytes.saturating_sub(2 * PAGE_BYTES_MAX as u64);
    file.seek(SeekFrom::Start(tail_start))?;
    let mut tail = Vec::with_capacity(2 * PAGE_BYTES_MAX);
    file.read_to_end(&mut tail)?;
    file.seek(SeekFrom::Start(0))?;
    // Walk forward over every complete page of our stream in the tail: the
    // last one wins. A capture pattern inside a packet fails the CRC.
    let mut last_granule = None;
    let mut offset = 0;
    while let Some(found) = find_capture(&tail[offset..]) {
        let start = offset + found;
        match parse_page(&tail[start..]) {
            Ok(Some((page, page_bytes))) => {
                if page.serial == serial && page.granule_position != GRANULE_POSITION_NONE {
                    last_granule = Some(page.granule_position);
                }
                offset = start + page_bytes;
            }
            _ => offset = start + 1,
        }
    }
    Ok(last_granule)
}

fn find_capture(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|window| window == b"OggS")
}
