//! The owner shard's side of a live stream: the source's ingest (Ogg Opus
//! re-paged, or raw PCM through the DSP chain and the Opus ladder), the
//! renditions' header pages and recent pages, fan-out of each page to the
//! listener shards, and the grace period after the source drops.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use veza_codec::dsp::{DspChain, DspConfig};
use veza_codec::ogg::{DemuxEvent, DemuxLimits, OggOpusDemuxer, OggOpusPager, OpusHead, OpusTags};
use veza_codec::opus_ladder::OpusLadder;
use veza_codec::pcm::L16Decoder;

use super::{
    send, unix_now_ms, JoinAccepted, LiveMessage, RenditionStats, SourceFormat, SourceRef,
    SourceRefusal, SourceStart, StreamInfo, StreamStats,
};
use crate::metrics::LimitKind;
use crate::shard::Shard;

/// Samples per channel in one 20 ms Opus frame at 48 kHz.
const FRAME_SAMPLES: u32 = 960;

/// The streams a shard owns.
#[derive(Default)]
pub struct OwnedStreams {
    streams: RefCell<HashMap<Arc<str>, Rc<RefCell<OwnedStream>>>>,
}

impl OwnedStreams {
    fn get(&self, name: &str) -> Option<Rc<RefCell<OwnedStream>>> {
        self.streams.borrow().get(name).cloned()
    }

    /// Streams owned now.
    pub fn len(&self) -> usize {
        self.streams.borrow().len()
    }

    /// Whether the shard owns no stream.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One rendition of a stream: its pager, header pages and recent pages.
struct Rendition {
    bitrate_kbps: u32,
    /// `None` until a pass-through source's OpusHead arrived.
    pager: Option<OggOpusPager>,
    header_pages: Bytes,
    recent: VecDeque<Bytes>,
    recent_bytes: usize,
    /// Shards with listeners of this rendition.
    listener_shards: Vec<u16>,
    /// Set on the highest rendition of a recorded broadcast.
    recorder: Option<super::recording::SharedRecorder>,
}

impl Rendition {
    fn new(bitrate_kbps: u32) -> Self {
        Self {
            bitrate_kbps,
            pager: None,
            header_pages: Bytes::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
            listener_shards: Vec::new(),
            recorder: None,
        }
    }
}

/// How the source's body becomes packets.
enum Ingest {
    /// Ogg Opus, validated; its packets are re-paged unchanged.
    OggOpus {
        demuxer: OggOpusDemuxer,
        /// The stream's channel count, fixed by its first OpusHead.
        channel_count: Option<u8>,
    },
    /// Raw PCM through the DSP chain and the ladder.
    Pcm {
        decoder: L16Decoder,
        chain: Box<DspChain>,
        ladder: Box<OpusLadder>,
        channel_count: u8,
        samples: Vec<f32>,
    },
}

/// A stream this shard owns.
struct OwnedStream {
    name: Arc<str>,
    stats: Arc<StreamStats>,
    source: Option<SourceRef>,
    format: SourceFormat,
    ingest: Ingest,
    renditions: Vec<Rendition>,
    /// Joins that came before a pass-through stream's headers.
    waiting_joins: Vec<(Option<u32>, u16)>,
    /// Bumped on every source change; a grace task whose generation is
    /// stale stops.
    generation: u64,
}

fn refusal(status: u16, error: &'static str, detail: impl Into<String>) -> SourceRefusal {
    SourceRefusal {
        status,
        error,
        detail: detail.into(),
    }
}

/// A source asks to broadcast.
pub fn on_source_start(shard: &Rc<Shard>, start: SourceStart) {
    let reply_to = start.source.shard as usize;
    let source = start.source;
    let result = start_source(shard, start);
    send(
        shard,
        reply_to,
        LiveMessage::SourceStartReply { source, result },
    );
}

fn start_source(shard: &Rc<Shard>, start: SourceStart) -> Result<Arc<StreamStats>, SourceRefusal> {
    let owned = &shard.live.owned;
    if let Some(existing) = owned.get(&start.stream) {
        let mut stream = existing.borrow_mut();
        if stream.source.is_some() {
            return Err(refusal(
                409,
                "source_conflict",
                "a source is already broadcasting on this stream",
            ));
        }
        if stream.format != start.format {
            return Err(refusal(
                409,
                "format_mismatch",
                format!(
                    "the stream is live as {}; a returning source must send the same format",
                    content_type_of(stream.format)
                ),
            ));
        }
        // The source returns within the grace period: same stream, same
        // pagers, continuous granules.
        if let Ingest::OggOpus { demuxer, .. } = &mut stream.ingest {
            *demuxer = new_demuxer(shard);
        }
        stream.source = Some(start.source);
        stream.generation += 1;
        apply_ice(&stream.stats, &start);
        mark_source_connected(&stream.stats);
        stream
            .stats
            .source_connections
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(stream = %stream.name, "live source returned");
        return Ok(stream.stats.clone());
    }
    let config = &shard.process.config.live;
    if owned.len() >= config.streams_per_shard_max {
        shard.metrics.limit_hit(LimitKind::LiveStreamsPerShard);
        return Err(refusal(
            503,
            "too_many_streams",
            "this server broadcasts live.streams_per_shard_max streams on this shard already",
        ));
    }
    let (ingest, bitrates) = new_ingest(shard, &start)?;
    let stats = Arc::new(new_stats(&start, &bitrates));
    let mut stream = OwnedStream {
        name: start.stream.clone(),
        stats: stats.clone(),
        source: Some(start.source),
        format: start.format,
        ingest,
        renditions: bitrates
            .iter()
            .map(|&bitrate| Rendition::new(bitrate))
            .collect(),
        waiting_joins: Vec::new(),
        generation: 0,
    };
    if let Ingest::Pcm {
        ladder,
        channel_count,
        ..
    } = &stream.ingest
    {
        let head = OpusHead {
            version: 1,
            channel_count: *channel_count,
            pre_skip: ladder.pre_skip(),
            input_sample_rate: 48_000,
            output_gain_q8: 0,
            mapping_family: 0,
            mapping: Vec::new(),
        };
        let page_samples = page_duration_samples(shard);
        for (index, rendition) in stream.renditions.iter_mut().enumerate() {
            let pager = OggOpusPager::new(
                serial_for(&start.stream, index),
                &head,
                &our_tags(&start.grant.title),
                page_samples,
            );
            rendition.header_pages = pager.header_pages();
            rendition.pager = Some(pager);
        }
    }
    if start.grant.recording_enabled && shard.control.is_configured() {
        let highest = bitrates
            .iter()
            .enumerate()
            .max_by_key(|(_, &bitrate)| bitrate)
            .map_or(0, |(index, _)| index);
        stream.renditions[highest].recorder = Some(super::recording::Recorder::start(
            shard,
            &start.stream,
            start.grant.stream_id,
            stats.started_at_ms,
        ));
    }
    stream
        .stats
        .source_connections
        .fetch_add(1, Ordering::Relaxed);
    shard.process.live_directory.insert(stats.clone());
    owned
        .streams
        .borrow_mut()
        .insert(start.stream.clone(), Rc::new(RefCell::new(stream)));
    tracing::info!(stream = %start.stream, format = content_type_of(start.format), "live stream started");
    Ok(stats)
}

fn new_demuxer(shard: &Shard) -> OggOpusDemuxer {
    OggOpusDemuxer::new(DemuxLimits {
        packet_bytes_max: shard.process.config.live.packet_bytes_max,
    })
}

fn new_ingest(shard: &Shard, start: &SourceStart) -> Result<(Ingest, Vec<u32>), SourceRefusal> {
    match start.format {
        SourceFormat::OggOpus => Ok((
            Ingest::OggOpus {
                demuxer: new_demuxer(shard),
                channel_count: None,
            },
            vec![start.ice.bitrate_kbps.unwrap_or(0)],
        )),
        SourceFormat::Pcm { channel_count } => {
            let dsp_config: DspConfig = if start.grant.dsp_config_json.trim().is_empty() {
                DspConfig::default()
            } else {
                serde_json::from_str(&start.grant.dsp_config_json).map_err(|error| {
                    refusal(
                        422,
                        "invalid_dsp_config",
                        format!("the stream's DSP settings are invalid: {error}"),
                    )
                })?
            };
            let chain = DspChain::new(&dsp_config, 48_000, channel_count).map_err(|error| {
                refusal(
                    422,
                    "invalid_dsp_config",
                    format!("the stream's DSP settings are invalid: {error}"),
                )
            })?;
            let bitrates = shard.process.config.live.ladder_bitrates_kbps.clone();
            let ladder = OpusLadder::new(&bitrates, channel_count).map_err(|error| {
                refusal(
                    500,
                    "encoder_failed",
                    format!("the Opus encoder failed: {error}"),
                )
            })?;
            Ok((
                Ingest::Pcm {
                    decoder: L16Decoder::new(channel_count),
                    chain: Box::new(chain),
                    ladder: Box::new(ladder),
                    channel_count,
                    samples: Vec::with_capacity(48_000),
                },
                bitrates,
            ))
        }
    }
}

fn new_stats(start: &SourceStart, bitrates: &[u32]) -> StreamStats {
    let stats = StreamStats {
        name: start.stream.clone(),
        stream_id: start.grant.stream_id,
        info: Mutex::new(StreamInfo {
            title: start.grant.title.clone(),
            ..StreamInfo::default()
        }),
        source_content_type: Mutex::new(content_type_of(start.format).to_owned()),
        source_connected: AtomicBool::new(false),
        source_connected_at_ms: AtomicI64::new(0),
        started_at_ms: unix_now_ms(),
        source_connections: AtomicU64::new(0),
        renditions: bitrates
            .iter()
            .map(|&bitrate| RenditionStats {
                bitrate_kbps: AtomicU64::new(bitrate as u64),
                listeners: AtomicI64::new(0),
            })
            .collect(),
        peak_listeners: AtomicU64::new(0),
        listener_connections: AtomicU64::new(0),
        bytes_out: AtomicU64::new(0),
        skips: AtomicU64::new(0),
        evictions: AtomicU64::new(0),
        pages: AtomicU64::new(0),
    };
    apply_ice(&stats, start);
    mark_source_connected(&stats);
    stats
}

fn apply_ice(stats: &StreamStats, start: &SourceStart) {
    let mut info = stats
        .info
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    if let Some(name) = &start.ice.name {
        info.title = name.clone();
    }
    if let Some(description) = &start.ice.description {
        info.description = description.clone();
    }
    if let Some(genre) = &start.ice.genre {
        info.genre = genre.clone();
    }
    info.public = start.ice.public.unwrap_or(false);
}

fn mark_source_connected(stats: &StreamStats) {
    stats.source_connected.store(true, Ordering::Relaxed);
    stats
        .source_connected_at_ms
        .store(unix_now_ms(), Ordering::Relaxed);
}

/// `Content-Type` of a source format, for status and errors.
pub fn content_type_of(format: SourceFormat) -> &'static str {
    match format {
        SourceFormat::OggOpus => "audio/ogg",
        SourceFormat::Pcm { .. } => "audio/L16",
    }
}

fn page_duration_samples(shard: &Shard) -> u32 {
    shard.process.config.live.page_duration_ms * 48
}

/// A serial number per rendition that differs between streams and restarts.
fn serial_for(stream: &str, rendition: usize) -> u32 {
    let mut hash = (unix_now_ms() as u64) ^ ((rendition as u64) << 56);
    for byte in stream.bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (hash ^ (hash >> 32)) as u32
}

fn our_tags(title: &str) -> OpusTags {
    let mut comments = Vec::new();
    if !title.is_empty() {
        comments.push(format!("TITLE={title}"));
    }
    OpusTags {
        vendor: "Veza".to_owned(),
        comments,
    }
}

/// Body bytes of the current source.
pub fn on_source_data(shard: &Rc<Shard>, name: &str, source: SourceRef, data: Bytes) {
    let Some(stream) = shard.live.owned.get(name) else {
        return;
    };
    let outcome = {
        let mut stream = stream.borrow_mut();
        if stream.source != Some(source) {
            return;
        }
        ingest(shard, &mut stream, &data)
    };
    let reply = match outcome {
        Ok(()) => LiveMessage::SourceProcessed {
            source,
            bytes: data.len(),
        },
        Err(refusal) => {
            tracing::info!(stream = name, error = refusal.error, detail = %refusal.detail, "live source refused");
            source_gone(shard, &stream, source);
            LiveMessage::SourceFailed { source, refusal }
        }
    };
    send(shard, source.shard as usize, reply);
}

fn ingest(shard: &Rc<Shard>, stream: &mut OwnedStream, data: &[u8]) -> Result<(), SourceRefusal> {
    let mut packets: Vec<(usize, Bytes, u32)> = Vec::new();
    match &mut stream.ingest {
        Ingest::OggOpus {
            demuxer,
            channel_count,
        } => {
            demuxer.push(data);
            loop {
                match demuxer.next_event() {
                    Ok(None) => break,
                    Ok(Some(DemuxEvent::Head(head))) => match *channel_count {
                        None => {
                            *channel_count = Some(head.channel_count);
                            let page_samples = page_duration_samples(shard);
                            let title = stream
                                .stats
                                .info
                                .lock()
                                .map(|info| info.title.clone())
                                .unwrap_or_default();
                            let pager = OggOpusPager::new(
                                serial_for(&stream.name, 0),
                                &head,
                                &our_tags(&title),
                                page_samples,
                            );
                            stream.renditions[0].header_pages = pager.header_pages();
                            stream.renditions[0].pager = Some(pager);
                        }
                        Some(channels) if channels != head.channel_count => {
                            return Err(refusal(
                                400,
                                "format_mismatch",
                                format!(
                                    "the stream has {channels} channels; this OpusHead has {}",
                                    head.channel_count
                                ),
                            ));
                        }
                        Some(_) => {}
                    },
                    Ok(Some(DemuxEvent::Tags(_) | DemuxEvent::EndOfStream)) => {}
                    Ok(Some(DemuxEvent::Audio { packet, samples })) => {
                        packets.push((0, packet, samples))
                    }
                    Err(error) => return Err(refusal(400, "invalid_ogg", error.detail())),
                }
            }
        }
        Ingest::Pcm {
            decoder,
            chain,
            ladder,
            samples,
            ..
        } => {
            samples.clear();
            decoder.decode(data, samples);
            chain.process(samples);
            ladder
                .push_pcm(samples, &mut |rendition, packet, packet_samples| {
                    packets.push((rendition, Bytes::copy_from_slice(packet), packet_samples))
                })
                .map_err(|error| {
                    refusal(
                        500,
                        "encoder_failed",
                        format!("the Opus encoder failed: {error}"),
                    )
                })?;
        }
    }
    for (rendition, packet, samples) in packets {
        push_packet(shard, stream, rendition, &packet, samples);
    }
    if !stream.waiting_joins.is_empty() && stream.renditions.iter().all(|r| r.pager.is_some()) {
        for (bitrate_kbps, listener_shard) in std::mem::take(&mut stream.waiting_joins) {
            answer_join(shard, stream, bitrate_kbps, listener_shard);
        }
    }
    Ok(())
}

fn push_packet(
    shard: &Rc<Shard>,
    stream: &mut OwnedStream,
    rendition_idx: usize,
    packet: &[u8],
    samples: u32,
) {
    let Some(rendition) = stream.renditions.get_mut(rendition_idx) else {
        return;
    };
    let Some(pager) = rendition.pager.as_mut() else {
        return;
    };
    if let Some(page) = pager.push_packet(packet, samples) {
        emit_page(
            shard,
            &stream.name,
            &stream.stats,
            rendition_idx,
            rendition,
            page,
        );
    }
}

/// Keeps `page` among the recent pages and sends it to every listener shard.
fn emit_page(
    shard: &Rc<Shard>,
    name: &Arc<str>,
    stats: &StreamStats,
    rendition_idx: usize,
    rendition: &mut Rendition,
    page: Bytes,
) {
    let recent_max = shard.process.config.live.recent_pages_bytes_max;
    rendition.recent_bytes += page.len();
    rendition.recent.push_back(page.clone());
    while rendition.recent_bytes > recent_max && rendition.recent.len() > 1 {
        let oldest = rendition.recent.pop_front().expect("not empty");
        rendition.recent_bytes -= oldest.len();
    }
    stats.pages.fetch_add(1, Ordering::Relaxed);
    if let Some(recorder) = &rendition.recorder {
        recorder
            .borrow_mut()
            .add_page(shard, &rendition.header_pages, &page);
    }
    for &listener_shard in &rendition.listener_shards {
        send(
            shard,
            listener_shard as usize,
            LiveMessage::Page {
                stream: name.clone(),
                rendition: rendition_idx as u8,
                page: page.clone(),
            },
        );
    }
}

/// The source's body ended or its connection dropped.
pub fn on_source_end(shard: &Rc<Shard>, name: &str, source: SourceRef) {
    if let Some(stream) = shard.live.owned.get(name) {
        source_gone(shard, &stream, source);
    }
}

/// Starts the grace period if `source` is the stream's current source.
fn source_gone(shard: &Rc<Shard>, stream: &Rc<RefCell<OwnedStream>>, source: SourceRef) {
    let generation = {
        let mut stream = stream.borrow_mut();
        if stream.source != Some(source) {
            return;
        }
        stream.source = None;
        stream.generation += 1;
        stream
            .stats
            .source_connected
            .store(false, Ordering::Relaxed);
        tracing::info!(stream = %stream.name, grace_ms = shard.process.config.live.source_grace_ms, "live source gone; grace period");
        stream.generation
    };
    monoio::spawn(run_grace(shard.clone(), stream.clone(), generation));
}

/// Fills the stream with silence in real time while the source is away;
/// ends the stream when the grace period passes.
async fn run_grace(shard: Rc<Shard>, stream: Rc<RefCell<OwnedStream>>, generation: u64) {
    let started = quanta::Instant::now();
    let grace = Duration::from_millis(shard.process.config.live.source_grace_ms);
    let mut frames_sent: u64 = 0;
    loop {
        monoio::time::sleep(Duration::from_millis(20)).await;
        let mut owned = stream.borrow_mut();
        if owned.generation != generation {
            return;
        }
        let elapsed = started.elapsed();
        if elapsed >= grace || !has_headers(&owned) {
            drop(owned);
            end_stream(&shard, &stream);
            return;
        }
        let frames_due = (elapsed.as_millis() / 20) as u64;
        while frames_sent < frames_due {
            push_silence(&shard, &mut owned);
            frames_sent += 1;
        }
    }
}

fn has_headers(stream: &OwnedStream) -> bool {
    stream
        .renditions
        .iter()
        .all(|rendition| rendition.pager.is_some())
}

/// One 20 ms frame of silence on every rendition.
fn push_silence(shard: &Rc<Shard>, stream: &mut OwnedStream) {
    let mut packets: Vec<(usize, Bytes)> = Vec::new();
    match &mut stream.ingest {
        Ingest::OggOpus { channel_count, .. } => {
            // A CELT-only 20 ms fullband frame that decodes to silence
            // (TOC config 31, code 0; the stereo bit follows the stream).
            let toc = if *channel_count == Some(2) {
                0xfc
            } else {
                0xf8
            };
            packets.push((0, Bytes::from(vec![toc, 0xff, 0xfe])));
        }
        Ingest::Pcm { ladder, .. } => {
            let _ = ladder.push_silence_frame(&mut |rendition, packet, _| {
                packets.push((rendition, Bytes::copy_from_slice(packet)))
            });
        }
    }
    for (rendition, packet) in packets {
        push_packet(shard, stream, rendition, &packet, FRAME_SAMPLES);
    }
}

/// Ends the stream: the last page (EOS) to every listener shard, then
/// `Ended`; the stream leaves the directory.
fn end_stream(shard: &Rc<Shard>, stream: &Rc<RefCell<OwnedStream>>) {
    let mut owned = stream.borrow_mut();
    let name = owned.name.clone();
    let stats = owned.stats.clone();
    let mut listener_shards: Vec<u16> = Vec::new();
    for (index, rendition) in owned.renditions.iter_mut().enumerate() {
        if let Some(mut pager) = rendition.pager.take() {
            if let Some(page) = pager.flush() {
                emit_page(shard, &name, &stats, index, rendition, page);
            }
            let last = pager.finish();
            emit_page(shard, &name, &stats, index, rendition, last);
        }
        if let Some(recorder) = rendition.recorder.take() {
            recorder.borrow_mut().finish();
        }
        listener_shards.extend(&rendition.listener_shards);
    }
    for (_, listener_shard) in std::mem::take(&mut owned.waiting_joins) {
        listener_shards.push(listener_shard);
    }
    drop(owned);
    listener_shards.sort_unstable();
    listener_shards.dedup();
    for listener_shard in listener_shards {
        send(
            shard,
            listener_shard as usize,
            LiveMessage::Ended {
                stream: name.clone(),
            },
        );
    }
    shard.live.owned.streams.borrow_mut().remove(&name);
    shard.process.live_directory.remove(&name);
    tracing::info!(stream = %name, "live stream ended");
}

/// A listener shard asks for a rendition.
pub fn on_join(shard: &Rc<Shard>, name: Arc<str>, bitrate_kbps: Option<u32>, listener_shard: u16) {
    let Some(stream) = shard.live.owned.get(&name) else {
        send(
            shard,
            listener_shard as usize,
            LiveMessage::JoinReply {
                stream: name,
                bitrate_kbps,
                accepted: None,
            },
        );
        return;
    };
    let mut stream = stream.borrow_mut();
    if !has_headers(&stream) {
        stream.waiting_joins.push((bitrate_kbps, listener_shard));
        return;
    }
    answer_join(shard, &mut stream, bitrate_kbps, listener_shard);
}

fn answer_join(
    shard: &Rc<Shard>,
    stream: &mut OwnedStream,
    bitrate_kbps: Option<u32>,
    listener_shard: u16,
) {
    let bitrates: Vec<u32> = stream.renditions.iter().map(|r| r.bitrate_kbps).collect();
    let wanted = bitrate_kbps.unwrap_or(shard.process.config.live.default_bitrate_kbps);
    let rendition_idx = nearest_rendition(&bitrates, wanted);
    let rendition = &mut stream.renditions[rendition_idx];
    if !rendition.listener_shards.contains(&listener_shard) {
        rendition.listener_shards.push(listener_shard);
    }
    let accepted = JoinAccepted {
        rendition: rendition_idx as u8,
        bitrates_kbps: bitrates,
        header_pages: rendition.header_pages.clone(),
        recent_pages: rendition.recent.iter().cloned().collect(),
        stats: stream.stats.clone(),
    };
    send(
        shard,
        listener_shard as usize,
        LiveMessage::JoinReply {
            stream: stream.name.clone(),
            bitrate_kbps,
            accepted: Some(Box::new(accepted)),
        },
    );
}

/// The rendition whose bitrate is nearest `wanted` (the lower one on a tie).
pub fn nearest_rendition(bitrates_kbps: &[u32], wanted: u32) -> usize {
    bitrates_kbps
        .iter()
        .enumerate()
        .min_by_key(|(_, &bitrate)| (bitrate.abs_diff(wanted), bitrate))
        .map_or(0, |(index, _)| index)
}

/// A listener shard's last listener of a rendition left.
pub fn on_left(shard: &Rc<Shard>, name: &str, rendition: u8, listener_shard: u16) {
    if let Some(stream) = shard.live.owned.get(name) {
        if let Some(rendition) = stream.borrow_mut().renditions.get_mut(rendition as usize) {
            rendition
                .listener_shards
                .retain(|&shard_idx| shard_idx != listener_shard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_get_the_nearest_bitrate_and_the_lower_one_on_a_tie() {
        let ladder = [64, 96, 160];
        assert_eq!(nearest_rendition(&ladder, 96), 1);
        assert_eq!(nearest_rendition(&ladder, 100), 1);
        assert_eq!(nearest_rendition(&ladder, 128), 1, "tie between 96 and 160");
        assert_eq!(nearest_rendition(&ladder, 320), 2);
        assert_eq!(nearest_rendition(&ladder, 1), 0);
        assert_eq!(nearest_rendition(&[0], 96), 0, "a pass-through stream");
    }
}
