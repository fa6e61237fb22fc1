//! Stored tracks on demand (DESIGN.md §4): `GET`/`HEAD
//! /v1/tracks/{id}/audio?br=` and `/v1/tracks/{id}/waveform`.
//!
//! How a request is answered, all on the shard that accepted it:
//! 1. The track's metadata comes from this shard's cache ([`MetaCache`],
//!    bounded, with a TTL, dropped on `TrackChanged`) or from the control
//!    plane (`LookupTrack`); requests for a track whose lookup is in flight
//!    wait for that answer instead of sending their own.
//! 2. Access is decided without a round trip ([`access`]): public, the
//!    unlisted link's secret, the owner's bearer token, or a signed URL
//!    verified with the control plane's signing keys.
//! 3. The rendition nearest `?br=` (default [`DEFAULT_BITRATE_KBPS`]) is
//!    taken from the shard's open files ([`open_files`]) or opened under
//!    `tracks.media_dir` (the relative path is checked first), and
//!    `veza_codec::http1::range` plans the answer: 200, 206, 304 or 416.
//! 4. A body already in the page cache goes to the socket with `sendfile`
//!    ([`zero_copy`]); any other is read and written one pooled buffer at a
//!    time ([`send`]). The connection driver hands the socket over for it.
//! 5. A GET whose body starts at byte 0 counts one play; each shard reports
//!    its counts every `tracks.plays_report_interval_ms` (`RecordPlays`),
//!    keeping them for the next report when that fails, and sends what is
//!    left once more at shutdown, after the connections drained.

pub mod access;
pub mod config;
pub mod open_files;
pub mod send;
pub mod zero_copy;

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use veza_codec::http1::range::{plan, Conditions, Representation};
use veza_codec::http1::{write_response_head_with_fields, HttpDate, RequestHead, ResponseHead};
use veza_proto::control::{Push, RequestErrorCode, TrackMeta, TrackPlays, TrackVisibility};

pub use config::TracksConfig;

use crate::control_client::ControlError;
use crate::metrics::{LimitKind, ShardMetrics};
use crate::routes::{Response, Routed};
use crate::shard::Shard;
use access::{Access, Credentials, SignedUrl};
use open_files::{OpenFile, OpenFileCache};
use send::{LentBuffer, ReadBufferPool, SendOutcome};

/// The rendition served without `?br=` (the nearest one).
pub const DEFAULT_BITRATE_KBPS: u32 = 96;

/// Digits a track id may have (i64 has 19; ids are positive).
const TRACK_ID_DIGITS_MAX: usize = 18;

/// One shard's track state.
pub struct TracksShard {
    /// Metadata by track id.
    pub cache: Rc<RefCell<MetaCache>>,
    /// Open files by relative path.
    pub open_files: Rc<RefCell<OpenFileCache>>,
    /// Read buffers for downloads.
    pub buffers: Rc<ReadBufferPool>,
    /// Plays counted since the last report, by track id.
    pub plays: RefCell<HashMap<i64, u64>>,
    /// Metadata lookups on their way to the control plane, by track id:
    /// concurrent requests for one uncached track share one lookup.
    lookups: RefCell<HashMap<i64, Rc<Lookup>>>,
}

/// One lookup in flight and, once it ends, its outcome for the requests
/// that waited for it.
#[derive(Default)]
struct Lookup {
    done: crate::local_event::LocalEvent,
    outcome: RefCell<Option<LookupOutcome>>,
}

/// What a lookup found, shareable among its waiters.
#[derive(Clone)]
enum LookupOutcome {
    Found(Rc<TrackMeta>),
    NotFound,
    Unavailable,
}

/// Ends a lookup when the request that made it finishes or is dropped
/// (its client went away): waiters wake, and with no outcome they look the
/// track up themselves.
struct LookupGuard<'a> {
    shard: &'a Shard,
    track_id: i64,
    lookup: Rc<Lookup>,
}

impl LookupGuard<'_> {
    fn finish(self, outcome: LookupOutcome) {
        *self.lookup.outcome.borrow_mut() = Some(outcome);
    }
}

impl Drop for LookupGuard<'_> {
    fn drop(&mut self) {
        self.shard
            .tracks
            .lookups
            .borrow_mut()
            .remove(&self.track_id);
        self.lookup.done.set();
    }
}

impl TracksShard {
    /// Empty state bounded by `config`.
    pub fn new(config: &TracksConfig) -> Self {
        Self {
            cache: Rc::new(RefCell::new(MetaCache::new(
                config.meta_cache_entries_max,
                Duration::from_millis(config.meta_cache_ttl_ms),
            ))),
            open_files: Rc::new(RefCell::new(OpenFileCache::new(
                config.open_files_max,
                Duration::from_millis(config.open_files_ttl_ms),
            ))),
            buffers: ReadBufferPool::new(config.read_buffers_per_shard, config.read_buffer_bytes),
            plays: RefCell::default(),
            lookups: RefCell::default(),
        }
    }
}

/// Track metadata cached on one shard: at most `entries_max` entries, each
/// used for `ttl`. An invalidation bumps a generation, so a lookup that was
/// in flight when its track changed does not store the stale answer.
pub struct MetaCache {
    entries: HashMap<i64, (Rc<TrackMeta>, quanta::Instant)>,
    entries_max: usize,
    ttl: Duration,
    generation: u64,
}

impl MetaCache {
    /// An empty cache.
    pub fn new(entries_max: usize, ttl: Duration) -> Self {
        assert!(entries_max > 0);
        Self {
            entries: HashMap::new(),
            entries_max,
            ttl,
            generation: 0,
        }
    }

    /// The fresh entry of `track_id`, if any.
    pub fn get(&self, track_id: i64, now: quanta::Instant) -> Option<Rc<TrackMeta>> {
        let (meta, fetched_at) = self.entries.get(&track_id)?;
        (now.saturating_duration_since(*fetched_at) < self.ttl).then(|| meta.clone())
    }

    /// The generation to hand back to [`MetaCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Stores `meta` unless an invalidation happened since `generation`.
    /// Returns whether an entry was evicted to make room.
    pub fn insert(&mut self, meta: Rc<TrackMeta>, generation: u64, now: quanta::Instant) -> bool {
        if generation != self.generation {
            return false;
        }
        let mut evicted = false;
        if self.entries.len() >= self.entries_max && !self.entries.contains_key(&meta.track_id) {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (_, fetched_at)| now.saturating_duration_since(*fetched_at) < ttl);
            if self.entries.len() >= self.entries_max {
                // Any entry will do: the next request for it looks it up again.
                let victim = *self.entries.keys().next().expect("the cache is full");
                self.entries.remove(&victim);
                evicted = true;
            }
        }
        self.entries.insert(meta.track_id, (meta, now));
        evicted
    }

    /// Drops `track_id` (or everything, for `None`).
    pub fn invalidate(&mut self, track_id: Option<i64>) {
        self.generation += 1;
        match track_id {
            Some(track_id) => {
                self.entries.remove(&track_id);
            }
            None => self.entries.clear(),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Registers the push handler and starts the plays reporter of a shard.
pub fn start(shard: &Rc<Shard>) {
    let cache = shard.tracks.cache.clone();
    let open_files = shard.tracks.open_files.clone();
    let metrics = shard.metrics.clone();
    shard.control.on_push(Box::new(move |push| {
        let track_id = match push {
            Push::TrackChanged { track_id } => Some(*track_id),
            Push::Resync => None,
            _ => return,
        };
        cache.borrow_mut().invalidate(track_id);
        let mut open_files = open_files.borrow_mut();
        open_files.invalidate(track_id);
        metrics.tracks_open_files.store(
            open_files.len() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }));
    if shard.process.config.tracks.is_enabled() && shard.control.is_configured() {
        monoio::spawn(report_plays(shard.clone()));
    }
}

/// Counts one play of `track_id`, unless `tracks.plays_tracks_max` tracks
/// already wait for the next report.
pub fn count_play(shard: &Shard, track_id: i64) {
    merge_plays(shard, track_id, 1);
}

/// Sends the counted plays every `tracks.plays_report_interval_ms`; a
/// failed report is merged back and sent with the next one.
async fn report_plays(shard: Rc<Shard>) {
    let interval = Duration::from_millis(shard.process.config.tracks.plays_report_interval_ms);
    loop {
        monoio::time::sleep(interval).await;
        send_counted_plays(&shard).await;
    }
}

/// Sends the plays counted since the last report, once, at shutdown (after
/// the connections drained), so that a restart loses none; bounded by
/// `control.request_timeout_ms`.
pub async fn report_remaining_plays(shard: &Rc<Shard>) {
    if !shard.process.config.tracks.is_enabled() || !shard.control.is_configured() {
        return;
    }
    if shard.tracks.plays.borrow().is_empty() {
        return;
    }
    let limit = Duration::from_millis(shard.process.config.control.request_timeout_ms);
    if monoio::time::timeout(limit, send_counted_plays(shard))
        .await
        .is_err()
    {
        let tracks = shard.tracks.plays.borrow().len();
        tracing::warn!(
            shard = shard.idx,
            tracks,
            "plays counted since the last report were not reported before shutdown"
        );
    }
}

/// One report of the counted plays; on failure they are merged back.
async fn send_counted_plays(shard: &Rc<Shard>) {
    let counted = std::mem::take(&mut *shard.tracks.plays.borrow_mut());
    if counted.is_empty() {
        return;
    }
    let plays: Vec<TrackPlays> = counted
        .iter()
        .map(|(&track_id, &plays)| TrackPlays { track_id, plays })
        .collect();
    if let Err(error) = shard.control.record_plays(plays).await {
        tracing::warn!(shard = shard.idx, %error, tracks = counted.len(), "reporting plays failed; retrying with the next report");
        for (track_id, plays) in counted {
            merge_plays(shard, track_id, plays);
        }
    }
}

fn merge_plays(shard: &Shard, track_id: i64, plays: u64) {
    let mut counted = shard.tracks.plays.borrow_mut();
    let tracks_max = shard.process.config.tracks.plays_tracks_max;
    if counted.len() >= tracks_max && !counted.contains_key(&track_id) {
        shard.metrics.limit_hit(LimitKind::TracksPlaysTracks);
        return;
    }
    *counted.entry(track_id).or_insert(0) += plays;
}

/// What a track request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asset {
    Audio,
    Waveform,
}

/// A file answer: the head, and the file range the connection driver
/// sends after it.
pub struct FileResponse {
    status: u16,
    content_type: &'static str,
    /// `Content-Range`, for a 206.
    content_range: Option<String>,
    /// Public tracks get `tracks.cache_control_public`, others the private one.
    is_public: bool,
    file: Rc<OpenFile>,
    body: Range<u64>,
    source: BodySource,
    track_id: i64,
}

/// How a body is sent.
enum BodySource {
    /// HEAD: none is.
    None,
    /// `sendfile` from the page cache.
    ZeroCopy,
    /// io_uring reads into this buffer, each written before the next.
    Buffered(LentBuffer),
}

/// Routes `/v1/tracks/...`.
pub async fn route(shard: &Rc<Shard>, head: &RequestHead, path: &str) -> Routed {
    match answer(shard, head, path).await {
        Ok(file) => Routed::File(Box::new(file)),
        Err(response) => Routed::Response(response),
    }
}

async fn answer(
    shard: &Rc<Shard>,
    head: &RequestHead,
    path: &str,
) -> Result<FileResponse, Response> {
    let config = &shard.process.config.tracks;
    if !config.is_enabled() {
        return Err(Response::error(
            503,
            "tracks_unavailable",
            "this data plane does not serve tracks (tracks.media_dir is empty)",
        ));
    }
    let rest = &path["/v1/tracks/".len()..];
    let (id_text, asset_text) = rest.split_once('/').unwrap_or((rest, ""));
    let track_id = parse_track_id(id_text).ok_or_else(|| {
        Response::error(400, "invalid_track_id", "a track id is a positive integer")
    })?;
    let asset = match asset_text {
        "audio" => Asset::Audio,
        "waveform" => Asset::Waveform,
        _ => return Err(Response::error(404, "not_found", "no such endpoint")),
    };
    if !matches!(head.method.as_str(), "GET" | "HEAD") {
        return Err(crate::routes::method_not_allowed_response("GET, HEAD"));
    }
    let meta = track_meta(shard, track_id).await?;
    let query = TrackQuery::parse(head.query().unwrap_or(""));
    check_access(shard, head, &query, &meta)?;
    let (relative_path, rendition) = match asset {
        Asset::Audio => {
            let wanted = query
                .br
                .and_then(|value| value.parse().ok())
                .unwrap_or(DEFAULT_BITRATE_KBPS);
            let rendition = nearest_rendition(&meta, wanted).ok_or_else(track_not_found)?;
            (rendition.relative_path.as_str(), Some(rendition))
        }
        Asset::Waveform => (meta.waveform_relative_path.as_str(), None),
    };
    let file = open_file(shard, track_id, relative_path, rendition).await?;
    let representation = Representation {
        size_bytes: file.size_bytes,
        etag: &file.etag,
        last_modified_unix_s: file.last_modified_unix_s,
    };
    let conditions = Conditions {
        is_get: !head.is_head(),
        range: head.header("range"),
        if_none_match: head.header("if-none-match"),
        if_modified_since: head.header("if-modified-since"),
        if_range: head.header("if-range"),
    };
    let serve_plan = plan(&representation, &conditions);
    let is_public = meta.visibility == TrackVisibility::Public;
    let content_type = match asset {
        Asset::Audio => "audio/ogg",
        Asset::Waveform => "application/json",
    };
    if matches!(serve_plan.status, 304 | 416) {
        let mut response = Response::error(
            416,
            "range_not_satisfiable",
            "the range is past the end of the file",
        );
        if serve_plan.status == 304 {
            response.status = 304;
            response.body = bytes::Bytes::new();
            response.content_type = content_type;
        }
        response
            .extra_headers
            .push(("Cache-Control", cache_control(config, is_public).to_owned()));
        response.extra_headers.extend(file.fields.iter().cloned());
        response.extra_headers.extend(
            serve_plan
                .headers()
                .map(|(name, value)| (name, value.to_owned())),
        );
        return Err(response);
    }
    let source = if head.is_head() {
        BodySource::None
    } else if config.zero_copy && file.is_cached(serve_plan.body.clone()) {
        BodySource::ZeroCopy
    } else {
        BodySource::Buffered(lend_buffer(shard).await.ok_or_else(|| {
            Response::error(
                503,
                "tracks_busy",
                "every read buffer of this shard is in use; retry",
            )
            .with_header("Retry-After", "1")
        })?)
    };
    if asset == Asset::Audio && !head.is_head() && serve_plan.body.start == 0 {
        count_play(shard, track_id);
    }
    Ok(FileResponse {
        status: serve_plan.status,
        content_type,
        content_range: serve_plan.content_range,
        is_public,
        file,
        body: serve_plan.body,
        source,
        track_id,
    })
}

fn cache_control(config: &TracksConfig, is_public: bool) -> &str {
    if is_public {
        &config.cache_control_public
    } else {
        &config.cache_control_private
    }
}

/// A read buffer, waiting at most `tracks.read_buffer_wait_ms_max`.
async fn lend_buffer(shard: &Shard) -> Option<LentBuffer> {
    let wait = Duration::from_millis(shard.process.config.tracks.read_buffer_wait_ms_max);
    shard.tracks.buffers.lend(wait, &shard.metrics).await
}

/// Writes the head of `response` after whatever `out` holds, then its body
/// from the file. `non_blocking`: whether the socket is in non-blocking
/// mode (a zero-copy body switches it; see [`zero_copy`]). Returns false when the connection must end (the client
/// left, or the file failed mid-body and the response cannot be completed).
pub async fn send_file(
    shard: &Rc<Shard>,
    stream: &mut TcpStream,
    non_blocking: &mut bool,
    out: &mut BytesMut,
    mut response: FileResponse,
    keep_alive: bool,
    is_http_1_0: bool,
) -> bool {
    {
        let config = &shard.process.config.tracks;
        let mut headers: [(&str, &str); 3] = [("", ""); 3];
        let mut count = 0;
        for header in [
            Some(("Cache-Control", cache_control(config, response.is_public))),
            response
                .content_range
                .as_deref()
                .map(|value| ("Content-Range", value)),
            (keep_alive && is_http_1_0).then_some(("Connection", "keep-alive")),
        ]
        .into_iter()
        .flatten()
        {
            headers[count] = header;
            count += 1;
        }
        let date = shard.date();
        write_response_head_with_fields(
            &ResponseHead {
                status: response.status,
                content_type: Some(response.content_type),
                content_length: Some(response.body.end - response.body.start),
                keep_alive,
                extra_headers: &headers[..count],
                date: date.as_str(),
            },
            response.file.head_fields.as_bytes(),
            out,
        );
    }
    let write_timeout = Duration::from_millis(shard.process.config.limits.idle_timeout_ms);
    let body = response.body.clone();
    let mut lent = match std::mem::replace(&mut response.source, BodySource::None) {
        BodySource::ZeroCopy => {
            ShardMetrics::add(&shard.metrics.tracks_zero_copy_bodies_total, 1);
            let file = &response.file.file;
            match zero_copy::send_head_and_range(
                stream,
                non_blocking,
                out,
                file,
                body.clone(),
                write_timeout,
                &shard.metrics,
            )
            .await
            {
                SendOutcome::Unsupported => {
                    tracing::warn!(
                        shard = shard.idx,
                        track_id = response.track_id,
                        "sendfile cannot send this file; reading it instead"
                    );
                    match lend_buffer(shard).await {
                        Some(lent) => lent,
                        None => return false,
                    }
                }
                outcome => return finished(shard, &response, outcome),
            }
        }
        source => {
            if !flush_head(stream, out, &shard.metrics).await {
                return false;
            }
            match source {
                BodySource::Buffered(lent) => lent,
                _ => return true,
            }
        }
    };
    ShardMetrics::add(&shard.metrics.tracks_buffered_bodies_total, 1);
    let outcome = send::send_range(
        &response.file.file,
        body,
        stream,
        &mut lent,
        write_timeout,
        &shard.metrics,
    )
    .await;
    drop(lent);
    finished(shard, &response, outcome)
}

async fn flush_head(stream: &mut TcpStream, out: &mut BytesMut, metrics: &ShardMetrics) -> bool {
    let (written, returned) = stream.write_all(std::mem::take(out)).await;
    *out = returned;
    ShardMetrics::add(&metrics.bytes_sent_total, out.len() as u64);
    out.clear();
    written.is_ok()
}

/// Whether the connection goes on after a body ended with `outcome`.
fn finished(shard: &Shard, response: &FileResponse, outcome: SendOutcome) -> bool {
    match outcome {
        SendOutcome::Complete => true,
        SendOutcome::ClientGone | SendOutcome::Unsupported => false,
        SendOutcome::FileFailed(reason) => {
            tracing::error!(shard = shard.idx, track_id = response.track_id, path = %response.file.path.display(), %reason, "reading a track failed mid-body; closing the connection");
            false
        }
    }
}

fn parse_track_id(text: &str) -> Option<i64> {
    let valid = !text.is_empty()
        && text.len() <= TRACK_ID_DIGITS_MAX
        && text.bytes().all(|byte| byte.is_ascii_digit());
    valid
        .then(|| text.parse().ok())
        .flatten()
        .filter(|&id: &i64| id > 0)
}

/// The rendition whose bitrate is nearest `wanted_kbps` (the lower on a tie).
fn nearest_rendition(
    meta: &TrackMeta,
    wanted_kbps: u32,
) -> Option<&veza_proto::control::TrackRendition> {
    meta.renditions.iter().min_by_key(|rendition| {
        (
            rendition.bitrate_kbps.abs_diff(wanted_kbps),
            rendition.bitrate_kbps,
        )
    })
}

fn track_not_found() -> Response {
    Response::error(404, "track_not_found", "no such track, or it is not ready")
}

async fn track_meta(shard: &Rc<Shard>, track_id: i64) -> Result<Rc<TrackMeta>, Response> {
    loop {
        let now = quanta::Instant::now();
        if let Some(meta) = shard.tracks.cache.borrow().get(track_id, now) {
            return Ok(meta);
        }
        let in_flight = shard.tracks.lookups.borrow().get(&track_id).cloned();
        let outcome = match in_flight {
            Some(lookup) => {
                ShardMetrics::add(&shard.metrics.tracks_lookups_shared_total, 1);
                lookup.done.wait().await;
                let outcome = lookup.outcome.borrow().clone();
                match outcome {
                    Some(outcome) => outcome,
                    // The request that looked it up went away first.
                    None => continue,
                }
            }
            None => look_up(shard, track_id).await,
        };
        return match outcome {
            LookupOutcome::Found(meta) => Ok(meta),
            LookupOutcome::NotFound => Err(track_not_found()),
            LookupOutcome::Unavailable => Err(Response::error(
                503,
                "control_plane_unavailable",
                "track metadata cannot be looked up right now; retry",
            )
            .with_header("Retry-After", "1")),
        };
    }
}

/// Asks the control plane for `track_id`'s metadata and caches it; requests
/// for the same track that arrive meanwhile wait for this answer.
async fn look_up(shard: &Rc<Shard>, track_id: i64) -> LookupOutcome {
    let lookup = Rc::new(Lookup::default());
    shard
        .tracks
        .lookups
        .borrow_mut()
        .insert(track_id, lookup.clone());
    let guard = LookupGuard {
        shard,
        track_id,
        lookup,
    };
    let generation = shard.tracks.cache.borrow().generation();
    ShardMetrics::add(&shard.metrics.tracks_lookups_total, 1);
    let outcome = match shard.control.lookup_track(track_id).await {
        Ok(meta) => {
            let meta = Rc::new(meta);
            let evicted = shard.tracks.cache.borrow_mut().insert(
                meta.clone(),
                generation,
                quanta::Instant::now(),
            );
            if evicted {
                shard.metrics.limit_hit(LimitKind::TracksMetaCacheEntries);
            }
            LookupOutcome::Found(meta)
        }
        Err(ControlError::Refused {
            code: RequestErrorCode::NotFound,
            ..
        }) => LookupOutcome::NotFound,
        Err(error) => {
            tracing::warn!(shard = shard.idx, track_id, %error, "track lookup failed");
            LookupOutcome::Unavailable
        }
    };
    guard.finish(outcome.clone());
    outcome
}

fn check_access(
    shard: &Shard,
    head: &RequestHead,
    query: &TrackQuery<'_>,
    meta: &TrackMeta,
) -> Result<(), Response> {
    let token_user_id = head
        .header("authorization")
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|token| shard.control.verify_access_token(token.trim()).ok())
        .map(|claims| claims.uid);
    let decode = |value: Option<&str>| value.map(crate::routes::percent_decode);
    let signed_url = match (
        decode(query.exp).and_then(|exp| exp.parse().ok()),
        decode(query.kid),
        decode(query.sig),
    ) {
        (Some(expires_unix_s), Some(kid), Some(signature)) => Some(SignedUrl {
            expires_unix_s,
            kid,
            signature,
        }),
        _ => None,
    };
    let credentials = Credentials {
        link_secret: decode(query.s),
        token_user_id,
        signed_url,
    };
    let now_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    match access::decide(meta, &credentials, now_unix_s, |kid| {
        shard.control.signing_key(kid)
    }) {
        Access::Granted => Ok(()),
        Access::Hidden => Err(track_not_found()),
        Access::SignedUrlExpired => Err(Response::error(
            403,
            "signed_url_expired",
            "this signed URL has expired",
        )),
        Access::SignedUrlInvalid => Err(Response::error(
            403,
            "signed_url_invalid",
            "this signed URL's signature does not verify",
        )),
    }
}

/// The query parameters a track request reads, as sent (still
/// percent-encoded), each the first of its name; found in one pass.
#[derive(Debug, Default, PartialEq, Eq)]
struct TrackQuery<'a> {
    br: Option<&'a str>,
    s: Option<&'a str>,
    exp: Option<&'a str>,
    kid: Option<&'a str>,
    sig: Option<&'a str>,
}

impl<'a> TrackQuery<'a> {
    fn parse(query: &'a str) -> Self {
        let mut found = Self::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "br" => &mut found.br,
                "s" => &mut found.s,
                "exp" => &mut found.exp,
                "kid" => &mut found.kid,
                "sig" => &mut found.sig,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        found
    }
}

/// The file at `relative_path` under the media directory: a kept one
/// opened for the same rendition, or one opened now (and kept).
async fn open_file(
    shard: &Shard,
    track_id: i64,
    relative_path: &str,
    rendition: Option<&veza_proto::control::TrackRendition>,
) -> Result<Rc<OpenFile>, Response> {
    let cache = &shard.tracks.open_files;
    let cache_etag = rendition.map_or("", |rendition| rendition.etag.as_str());
    if let Some(file) = cache
        .borrow()
        .get(relative_path, cache_etag, quanta::Instant::now())
    {
        return Ok(file);
    }
    let generation = cache.borrow().generation();
    let media_dir = Path::new(&shard.process.config.tracks.media_dir);
    let path = access::media_path(media_dir, relative_path).map_err(|error| {
        tracing::error!(shard = shard.idx, track_id, %error, "the control plane sent a media path outside the media directory");
        Response::error(500, "media_path_refused", "the track's stored path is invalid")
    })?;
    let file = monoio::fs::File::open(&path)
        .await
        .map_err(|error| file_error(&path, track_id, &error))?;
    let metadata = file
        .metadata()
        .await
        .map_err(|error| file_error(&path, track_id, &error))?;
    let size_bytes = metadata.len();
    let (etag, last_modified_unix_s) = match rendition {
        Some(rendition) => {
            if rendition.size_bytes != size_bytes {
                tracing::warn!(shard = shard.idx, track_id, path = %path.display(), announced = rendition.size_bytes, on_disk = size_bytes, "rendition size differs from its metadata; serving the file on disk");
            }
            (
                rendition.etag.clone(),
                rendition.modified_at_ms.div_euclid(1000),
            )
        }
        None => {
            let modified_unix_s = metadata
                .modified()
                .ok()
                .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |elapsed| elapsed.as_secs() as i64);
            (
                format!("\"{size_bytes:x}-{modified_unix_s:x}\""),
                modified_unix_s,
            )
        }
    };
    let mut fields = vec![
        ("Accept-Ranges", "bytes".to_owned()),
        ("ETag", etag.clone()),
        ("Last-Modified", http_date(last_modified_unix_s)),
    ];
    if rendition.is_some() {
        fields.push(("Vary", "Authorization".to_owned()));
    }
    let opened = Rc::new(OpenFile::new(
        file,
        path,
        size_bytes,
        etag,
        last_modified_unix_s,
        fields,
    ));
    let mut cache = cache.borrow_mut();
    if cache.insert(
        relative_path,
        track_id,
        cache_etag,
        opened.clone(),
        generation,
        quanta::Instant::now(),
    ) {
        shard.metrics.limit_hit(LimitKind::TracksOpenFiles);
    }
    shard
        .metrics
        .tracks_open_files
        .store(cache.len() as i64, std::sync::atomic::Ordering::Relaxed);
    Ok(opened)
}

fn file_error(path: &Path, track_id: i64, error: &std::io::Error) -> Response {
    if error.kind() == std::io::ErrorKind::NotFound {
        // Deleted between the lookup and now; the TrackChanged push follows.
        tracing::warn!(track_id, path = %path.display(), "a track's file is missing");
        return track_not_found();
    }
    tracing::error!(track_id, path = %path.display(), %error, "a track's file cannot be read");
    Response::error(500, "track_unreadable", "the track's file cannot be read")
}

fn http_date(unix_s: i64) -> String {
    let mut date = HttpDate::new();
    date.update(unix_s.max(0) as u64);
    date.as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use veza_proto::control::TrackRendition;

    fn meta(track_id: i64, bitrates: &[u32]) -> TrackMeta {
        TrackMeta {
            track_id,
            owner_user_id: 1,
            visibility: TrackVisibility::Public,
            link_secret: String::new(),
            renditions: bitrates
                .iter()
                .map(|&bitrate_kbps| TrackRendition {
                    bitrate_kbps,
                    relative_path: format!("tracks/{track_id}/{bitrate_kbps}.opus"),
                    size_bytes: 1,
                    etag: "\"e\"".into(),
                    modified_at_ms: 0,
                })
                .collect(),
            waveform_relative_path: String::new(),
            duration_ms: 0,
        }
    }

    #[test]
    fn the_query_keeps_the_first_of_each_parameter_and_ignores_others() {
        assert_eq!(TrackQuery::parse(""), TrackQuery::default());
        let query = TrackQuery::parse("x=1&br=160&s=a%2Bb&br=64&exp=9&kid&sig=zz&&s=other");
        assert_eq!(
            query,
            TrackQuery {
                br: Some("160"),
                s: Some("a%2Bb"),
                exp: Some("9"),
                kid: Some(""),
                sig: Some("zz"),
            }
        );
    }

    #[test]
    fn track_ids_are_positive_integers() {
        assert_eq!(parse_track_id("42"), Some(42));
        for bad in [
            "",
            "0",
            "-1",
            "4x",
            "..",
            "%2e%2e",
            "1.0",
            "9999999999999999999",
            " 1",
        ] {
            assert_eq!(parse_track_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn br_picks_the_nearest_rendition_and_the_lower_on_a_tie() {
        let track = meta(1, &[64, 96, 160]);
        let pick = |wanted| nearest_rendition(&track, wanted).unwrap().bitrate_kbps;
        assert_eq!(pick(96), 96);
        assert_eq!(pick(0), 64);
        assert_eq!(pick(128), 96);
        assert_eq!(pick(129), 160);
        assert_eq!(pick(10_000), 160);
        assert!(nearest_rendition(&meta(1, &[]), 96).is_none());
    }

    #[test]
    fn the_cache_is_bounded_expires_and_ignores_answers_older_than_an_invalidation() {
        let start = quanta::Instant::now();
        let mut cache = MetaCache::new(2, Duration::from_secs(60));
        let generation = cache.generation();
        assert!(!cache.insert(Rc::new(meta(1, &[96])), generation, start));
        assert!(!cache.insert(Rc::new(meta(2, &[96])), generation, start));
        assert!(
            cache.insert(Rc::new(meta(3, &[96])), generation, start),
            "full: evicts"
        );
        assert_eq!(cache.len(), 2);
        assert!(cache.get(3, start).is_some());
        assert!(
            cache.get(3, start + Duration::from_secs(61)).is_none(),
            "expired"
        );

        let before_change = cache.generation();
        cache.invalidate(Some(3));
        assert!(cache.get(3, start).is_none());
        cache.insert(Rc::new(meta(3, &[96])), before_change, start);
        assert!(
            cache.get(3, start).is_none(),
            "a lookup older than the change is not stored"
        );
        cache.invalidate(None);
        assert!(cache.is_empty());
    }
}
