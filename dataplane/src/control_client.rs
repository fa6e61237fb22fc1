//! The data plane's side of the control protocol (`veza_proto::control`):
//! one connection per shard to the control plane, on the shard's own monoio
//! runtime, so nothing crosses threads.
//!
//! What it does:
//! - connects to `control.address` (`unix:/path` or `tcp:ip:port`),
//!   sends `Hello`, checks `Welcome`;
//! - fetches signing keys, runtime settings and revocations, keeps them in
//!   shard-local state, and only then reports the shard connected
//!   ([`ControlStatus::connected`], which `/ready` reads);
//! - matches responses to requests by id, each request bounded by
//!   `control.request_timeout_ms` and their number by
//!   `control.requests_in_flight_max`;
//! - applies pushes (settings, keys, revocations; `Resync` refetches all
//!   three) and hands every push to registered handlers;
//! - when the connection ends, fails the requests in flight with
//!   [`ControlError::Disconnected`] and reconnects with exponential backoff
//!   and jitter (`control.reconnect_delay_ms_min` doubling up to
//!   `control.reconnect_delay_ms_max`).
//!
//! With `control.address` empty (the default) there is no control plane:
//! requests answer [`ControlError::NotConfigured`] and `/ready` ignores the
//! control plane.
//!
//! Architecture Invariant: nothing here blocks the shard. Connects, reads,
//! writes and timers all go through monoio; the socket is shut down with
//! `shutdown(2)`, which does not block.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::poll_fn;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use veza_proto::access_token::{AccessTokenClaims, TokenError};
use veza_proto::control::handshake::{check_welcome, hello};
use veza_proto::control::{
    ClientFrame, FrameEncoder, MessageChange, Push, Request, RequestBody, RequestErrorCode,
    ResponseBody, ResponseResult, Revocation, RoomRights, RuntimeSettings, ServerFrame,
    ServerFrameDecoder, SigningKey, StoredMessage,
};

use crate::config::ControlConfig;
use crate::local_event::LocalNotify;

/// Bytes reserved per read of the control connection.
const READ_RESERVE_BYTES: usize = 64 * 1024;

/// Revocations are pruned of expired entries whenever the set passes this
/// size, so the set holds at most what is revoked and unexpired plus this.
const REVOCATIONS_PRUNE_THRESHOLD: usize = 4096;

/// Where the control plane listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddress {
    /// A Unix socket path.
    Unix(std::path::PathBuf),
    /// A TCP address (an IP literal: resolving a host name would block).
    Tcp(std::net::SocketAddr),
}

impl ControlAddress {
    /// Parses `unix:/path` or `tcp:ip:port`; `None` for the empty string.
    pub fn parse(text: &str) -> Result<Option<ControlAddress>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() || path.len() > 107 {
                return Err("a Unix socket path must be 1 to 107 bytes".into());
            }
            return Ok(Some(ControlAddress::Unix(path.into())));
        }
        if let Some(address) = text.strip_prefix("tcp:") {
            let address = address.replace("localhost:", "127.0.0.1:");
            return address
                .parse()
                .map(|address| Some(ControlAddress::Tcp(address)))
                .map_err(|_| {
                    "tcp: needs an IP address and a port, e.g. tcp:127.0.0.1:8082".into()
                });
        }
        Err("must be empty, unix:/path or tcp:ip:port".into())
    }
}

/// Why a control request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// `control.address` is empty: there is no control plane.
    #[error("no control plane is configured")]
    NotConfigured,
    /// The control plane is not connected right now; retry after
    /// [`ControlClient::wait_until_connected`].
    #[error("the control plane is not connected")]
    NotConnected,
    /// `control.requests_in_flight_max` requests are already waiting.
    #[error("too many control requests in flight")]
    Overloaded,
    /// No answer within `control.request_timeout_ms`. A batch may or may not
    /// have been committed; sending it again is safe (changes are keyed by
    /// room and seq).
    #[error("the control plane did not answer in time")]
    Timeout,
    /// The connection ended before the answer came.
    #[error("the control connection ended before the answer")]
    Disconnected,
    /// The control plane answered with an error.
    #[error("the control plane refused: {code:?}: {message}")]
    Refused {
        /// Its code.
        code: RequestErrorCode,
        /// Its explanation.
        message: String,
    },
    /// The answer did not match the request (a bug on one side).
    #[error("the control plane answered with the wrong kind of response")]
    UnexpectedResponse,
}

/// Why an access token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessTokenError {
    /// The token itself is bad (malformed, unknown key, signature, time).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token is valid but was revoked.
    #[error("the token was revoked")]
    Revoked,
}

impl AccessTokenError {
    /// A stable name, for error bodies and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            AccessTokenError::Token(error) => error.name(),
            AccessTokenError::Revoked => "token_revoked",
        }
    }
}

/// One shard's control connection as other threads see it: atomics written
/// by the shard, read by `/ready` and `/metrics` on any shard.
#[derive(Default)]
pub struct ControlStatus {
    /// Handshake done and keys, settings and revocations fetched.
    pub connected: AtomicBool,
    /// The runtime settings version in force on the shard (0: none yet).
    pub config_version: AtomicI64,
    /// Connections established (the first one included).
    pub connects_total: AtomicU64,
    /// Connection attempts that failed or sessions that ended.
    pub disconnects_total: AtomicU64,
    /// Requests sent.
    pub requests_total: AtomicU64,
    /// Requests that got no answer in time.
    pub request_timeouts_total: AtomicU64,
    /// Pushes received.
    pub pushes_total: AtomicU64,
    /// Signing keys held.
    pub signing_keys: AtomicU64,
    /// Revoked tokens held.
    pub revocations: AtomicU64,
}

/// Renders every shard's control series in Prometheus text.
pub fn render_metrics(statuses: &[Arc<ControlStatus>], out: &mut String) {
    type Read = fn(&ControlStatus) -> i64;
    let series: [(&str, &str, &str, Read); 9] = [
        (
            "veza_control_connected",
            "gauge",
            "1 when the shard's control connection is up and synchronised.",
            |s| s.connected.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_control_config_version",
            "gauge",
            "The runtime settings version in force on the shard.",
            |s| s.config_version.load(Ordering::Relaxed),
        ),
        (
            "veza_control_connects_total",
            "counter",
            "Control connections established.",
            |s| s.connects_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_control_disconnects_total",
            "counter",
            "Control connection attempts that failed or sessions that ended.",
            |s| s.disconnects_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_control_requests_total",
            "counter",
            "Control requests sent.",
            |s| s.requests_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_control_request_timeouts_total",
            "counter",
            "Control requests without an answer in time.",
            |s| s.request_timeouts_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_control_pushes_total",
            "counter",
            "Pushes received from the control plane.",
            |s| s.pushes_total.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_control_signing_keys",
            "gauge",
            "Token signing keys held.",
            |s| s.signing_keys.load(Ordering::Relaxed) as i64,
        ),
        (
            "veza_control_revocations",
            "gauge",
            "Revoked tokens held.",
            |s| s.revocations.load(Ordering::Relaxed) as i64,
        ),
    ];
    for (name, kind, help, read) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (shard_idx, status) in statuses.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard_idx}\"}} {}", read(status));
        }
    }
}

/// A one-shot slot for one response, on one shard.
#[derive(Default)]
struct ResponseSlot {
    result: RefCell<Option<Result<ResponseBody, ControlError>>>,
    waker: RefCell<Option<Waker>>,
}

impl ResponseSlot {
    fn fill(&self, result: Result<ResponseBody, ControlError>) {
        *self.result.borrow_mut() = Some(result);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    async fn wait(&self) -> Result<ResponseBody, ControlError> {
        poll_fn(|context| match self.result.borrow_mut().take() {
            Some(result) => Poll::Ready(result),
            None => {
                *self.waker.borrow_mut() = Some(context.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// The write side of one live session: frames queued by requests, written
/// by the session's writer task in one write per wake-up.
struct SessionOutbound {
    queued: RefCell<BytesMut>,
    wake_writer: LocalNotify,
    closed: Cell<bool>,
    fd: RawFd,
}

impl SessionOutbound {
    /// Ends the session: the writer stops and the reader sees end of stream.
    fn close(&self) {
        if !self.closed.replace(true) {
            // SAFETY: the fd belongs to the session's socket, which is still
            // open: both halves live until the session function returns, after
            // which this outbound is unreachable.
            unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
            self.wake_writer.notify();
        }
    }
}

/// What the control plane told this shard, kept on the shard.
#[derive(Default)]
struct Synchronised {
    signing_keys: HashMap<String, (ed25519_dalek::VerifyingKey, Option<i64>)>,
    config_version: i64,
    settings: RuntimeSettings,
    revocations: HashMap<String, i64>,
}

/// Waiters for the connected state.
#[derive(Default)]
struct ConnectedWaiters {
    wakers: RefCell<Vec<Waker>>,
}

/// A handler of pushes, registered by the chat layer.
pub type PushHandler = Box<dyn Fn(&Push)>;

/// One shard's control client. `!Send`: it lives on its shard.
pub struct ControlClient {
    shard_idx: usize,
    shard_count: usize,
    config: ControlConfig,
    address: Option<ControlAddress>,
    node_id: String,
    status: Arc<ControlStatus>,
    state: RefCell<Synchronised>,
    pending: RefCell<HashMap<u64, Rc<ResponseSlot>>>,
    next_request_id: Cell<u64>,
    session: RefCell<Option<Rc<SessionOutbound>>>,
    encoder: RefCell<FrameEncoder>,
    push_handlers: RefCell<Vec<PushHandler>>,
    connected_waiters: ConnectedWaiters,
}

impl ControlClient {
    /// The client of shard `shard_idx` of `shard_count`. `config` was
    /// validated, so its address parses.
    pub fn new(
        shard_idx: usize,
        shard_count: usize,
        config: &ControlConfig,
        status: Arc<ControlStatus>,
    ) -> Self {
        let address = ControlAddress::parse(&config.address).expect("validated");
        let node_id = if config.node_id.is_empty() {
            host_name()
        } else {
            config.node_id.clone()
        };
        Self {
            shard_idx,
            shard_count,
            encoder: RefCell::new(FrameEncoder::new(config.frame_bytes_max)),
            config: config.clone(),
            address,
            node_id,
            status,
            state: RefCell::default(),
            pending: RefCell::default(),
            next_request_id: Cell::new(1),
            session: RefCell::new(None),
            push_handlers: RefCell::default(),
            connected_waiters: ConnectedWaiters::default(),
        }
    }

    /// Whether a control plane is configured.
    pub fn is_configured(&self) -> bool {
        self.address.is_some()
    }

    /// Whether this shard's connection is up and synchronised.
    pub fn is_connected(&self) -> bool {
        self.status.connected.load(Ordering::Relaxed)
    }

    /// Waits until this shard is connected and synchronised. Never returns
    /// when no control plane is configured.
    pub async fn wait_until_connected(&self) {
        poll_fn(|context| {
            if self.is_connected() {
                return Poll::Ready(());
            }
            let mut wakers = self.connected_waiters.wakers.borrow_mut();
            if !wakers.iter().any(|waker| waker.will_wake(context.waker())) {
                wakers.push(context.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Registers a handler called with every push, after the client applied
    /// it to its own state.
    pub fn on_push(&self, handler: PushHandler) {
        self.push_handlers.borrow_mut().push(handler);
    }

    /// Persists `changes` in one transaction; resolves once the control plane
    /// has committed them.
    pub async fn persist_batch(&self, changes: Vec<MessageChange>) -> Result<(), ControlError> {
        match self.request(RequestBody::PersistBatch { changes }).await? {
            ResponseBody::BatchPersisted { .. } => Ok(()),
            _ => Err(ControlError::UnexpectedResponse),
        }
    }

    /// A page of `room_id`'s history, in ascending seq.
    pub async fn fetch_history(
        &self,
        room_id: i64,
        before_seq: Option<i64>,
        after_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, ControlError> {
        let body = RequestBody::FetchHistory {
            room_id,
            before_seq,
            after_seq,
            limit,
        };
        match self.request(body).await? {
            ResponseBody::History { messages } => Ok(messages),
            _ => Err(ControlError::UnexpectedResponse),
        }
    }

    /// Reserves the next `count` seqs of `room_id`, durably; returns the
    /// first and the last.
    pub async fn reserve_seqs(&self, room_id: i64, count: u32) -> Result<(i64, i64), ControlError> {
        match self
            .request(RequestBody::ReserveSeqs { room_id, count })
            .await?
        {
            ResponseBody::SeqsReserved { first, last } => Ok((first, last)),
            _ => Err(ControlError::UnexpectedResponse),
        }
    }

    /// Gives back the seqs after `head` of the reservation ending at
    /// `reserved` (the room is unloading).
    pub async fn release_seqs(
        &self,
        room_id: i64,
        reserved: i64,
        head: i64,
    ) -> Result<(), ControlError> {
        match self
            .request(RequestBody::ReleaseSeqs {
                room_id,
                reserved,
                head,
            })
            .await?
        {
            ResponseBody::SeqsReleased => Ok(()),
            _ => Err(ControlError::UnexpectedResponse),
        }
    }

    /// What `user_id` may do in `room_id`.
    pub async fn lookup_rights(
        &self,
        room_id: i64,
        user_id: i64,
    ) -> Result<RoomRights, ControlError> {
        match self
            .request(RequestBody::LookupRights { room_id, user_id })
            .await?
        {
            ResponseBody::Rights(rights) => Ok(rights),
            _ => Err(ControlError::UnexpectedResponse),
        }
    }

    /// Whether `credential` may broadcast on the live stream `stream_name`.
    pub async fn authorize_live_source(
        &self,
        stream_name: &str,
        credential: veza_proto::control::LiveCredential,
    ) -> Result<veza_proto::control::LiveSourceGrant, ControlError> {
        let body = RequestBody::AuthorizeLiveSource {
            stream_name: stream_name.to_owned(),
            credential,
        };
        match self.request(body).await? {
            ResponseBody::LiveSource(grant) => Ok(grant),
            _ => Err(ControlError::UnexpectedResponse),
        }
    }

    /// Appends a chunk of a broadcast's recording; resolves once the control
    /// plane wrote it (and, for the last one, made the recording durable).
    pub async fn append_recording(
        &self,
        stream_id: i64,
        recording_id: i64,
        chunk_idx: u32,
        data: Vec<u8>,
        last: bool,
    ) -> Result<u64, ControlError> {
        let body = RequestBody::AppendRecording {
            stream_id,
            recording_id,
            chunk_idx,
            data,
            last,
        };
        match self.request(body).await? {
            ResponseBody::RecordingStored { bytes_total } => Ok(bytes_total),
            _ => Err(ControlError::UnexpectedResponse),
        }
    }

    /// What the data plane needs to serve track `track_id`; `Refused` with
    /// `NotFound` when it does not exist or is not ready.
    pub async fn lookup_track(
        &self,
        track_id: i64,
    ) -> Result<veza_proto::control::TrackMeta, ControlError> {
        match self.request(RequestBody::LookupTrack { track_id }).await? {
            ResponseBody::Track(meta) => Ok(meta),
            _ => Err(ControlError::UnexpectedResponse),
        }
    }

    /// Reports plays counted on this shard; resolves once they are committed.
    pub async fn record_plays(
        &self,
        plays: Vec<veza_proto::control::TrackPlays>,
    ) -> Result<(), ControlError> {
        match self.request(RequestBody::RecordPlays { plays }).await? {
            ResponseBody::PlaysRecorded => Ok(()),
            _ => Err(ControlError::UnexpectedResponse),
        }
    }

    /// The public key `kid` of the control plane's signing keys, unless it
    /// is unknown or retired; for signatures other than access tokens
    /// (signed track URLs).
    pub fn signing_key(&self, kid: &str) -> Option<ed25519_dalek::VerifyingKey> {
        let state = self.state.borrow();
        let (key, valid_until_ms) = state.signing_keys.get(kid)?;
        match valid_until_ms {
            Some(until_ms) if *until_ms < unix_now_ms() => None,
            _ => Some(*key),
        }
    }

    /// Verifies an access token on the shard: signature with the pushed
    /// keys (a retired key only until its `valid_until_ms`), expiry, then the
    /// pushed revocations. No round trip.
    pub fn verify_access_token(&self, token: &str) -> Result<AccessTokenClaims, AccessTokenError> {
        let now_ms = unix_now_ms();
        let state = self.state.borrow();
        let claims = veza_proto::access_token::verify(
            token,
            |kid| {
                let (key, valid_until_ms) = state.signing_keys.get(kid)?;
                match valid_until_ms {
                    Some(until_ms) if *until_ms < now_ms => None,
                    _ => Some(*key),
                }
            },
            now_ms / 1000,
        )?;
        if state.revocations.contains_key(&claims.jti) {
            return Err(AccessTokenError::Revoked);
        }
        Ok(claims)
    }

    /// The version of the runtime settings in force (0 before the first
    /// fetch); cheap, for callers that cache what they derive from them.
    pub fn config_version(&self) -> i64 {
        self.state.borrow().config_version
    }

    /// Whether this shard holds at least one signing key (tokens can be verified).
    pub fn has_signing_keys(&self) -> bool {
        !self.state.borrow().signing_keys.is_empty()
    }

    /// The runtime settings in force and their version (0 before the first fetch).
    pub fn settings(&self) -> (i64, RuntimeSettings) {
        let state = self.state.borrow();
        (state.config_version, state.settings.clone())
    }

    /// Sends a request and waits for its answer.
    async fn request(&self, body: RequestBody) -> Result<ResponseBody, ControlError> {
        if !self.is_configured() {
            return Err(ControlError::NotConfigured);
        }
        let Some(session) = self.session.borrow().clone() else {
            return Err(ControlError::NotConnected);
        };
        if self.pending.borrow().len() >= self.config.requests_in_flight_max {
            return Err(ControlError::Overloaded);
        }
        let request_id = self.next_request_id.get();
        self.next_request_id.set(request_id + 1);
        let frame = ClientFrame::Request(Request { request_id, body });
        if let Err(error) = self
            .encoder
            .borrow_mut()
            .encode(&frame, &mut session.queued.borrow_mut())
        {
            return Err(ControlError::Refused {
                code: RequestErrorCode::BadRequest,
                message: error.to_string(),
            });
        }
        session.wake_writer.notify();
        let slot = Rc::new(ResponseSlot::default());
        self.pending.borrow_mut().insert(request_id, slot.clone());
        self.status.requests_total.fetch_add(1, Ordering::Relaxed);
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        let answer = match monoio::time::timeout(timeout, slot.wait()).await {
            Ok(answer) => answer,
            Err(_) => {
                self.pending.borrow_mut().remove(&request_id);
                self.status
                    .request_timeouts_total
                    .fetch_add(1, Ordering::Relaxed);
                Err(ControlError::Timeout)
            }
        };
        answer
    }

    fn set_connected(&self, connected: bool) {
        self.status.connected.store(connected, Ordering::Relaxed);
        if connected {
            for waker in self.connected_waiters.wakers.borrow_mut().drain(..) {
                waker.wake();
            }
        }
    }

    /// Answers a pending request.
    fn deliver(&self, request_id: u64, result: ResponseResult) {
        let Some(slot) = self.pending.borrow_mut().remove(&request_id) else {
            // Its caller timed out and left.
            return;
        };
        slot.fill(match result {
            ResponseResult::Ok(body) => Ok(body),
            ResponseResult::Err(error) => Err(ControlError::Refused {
                code: error.code,
                message: error.message,
            }),
        });
    }

    /// Fails every request in flight (the connection ended).
    fn fail_pending(&self) {
        let pending: Vec<_> = self.pending.borrow_mut().drain().collect();
        for (_, slot) in pending {
            slot.fill(Err(ControlError::Disconnected));
        }
    }

    fn apply_signing_keys(&self, keys: Vec<SigningKey>) {
        let mut verifying = HashMap::with_capacity(keys.len());
        for key in keys {
            match ed25519_dalek::VerifyingKey::from_bytes(&key.public_key) {
                Ok(public_key) => {
                    verifying.insert(key.kid, (public_key, key.valid_until_ms));
                }
                Err(_) => {
                    tracing::warn!(shard = self.shard_idx, kid = %key.kid, "control plane sent an invalid public key; ignored")
                }
            }
        }
        self.status
            .signing_keys
            .store(verifying.len() as u64, Ordering::Relaxed);
        self.state.borrow_mut().signing_keys = verifying;
    }

    fn apply_config(&self, version: i64, settings: RuntimeSettings) {
        let mut state = self.state.borrow_mut();
        // A push may overtake the answer of an earlier fetch: keep the newest.
        if version < state.config_version {
            return;
        }
        state.config_version = version;
        state.settings = settings;
        self.status.config_version.store(version, Ordering::Relaxed);
    }

    fn apply_revocations(&self, revocations: impl IntoIterator<Item = Revocation>, replace: bool) {
        let now_ms = unix_now_ms();
        let mut state = self.state.borrow_mut();
        if replace {
            state.revocations.clear();
        }
        for revocation in revocations {
            state
                .revocations
                .insert(revocation.token_id, revocation.expires_at_ms);
        }
        if state.revocations.len() > REVOCATIONS_PRUNE_THRESHOLD {
            state
                .revocations
                .retain(|_, expires_at_ms| *expires_at_ms >= now_ms);
        }
        self.status
            .revocations
            .store(state.revocations.len() as u64, Ordering::Relaxed);
    }

    /// Fetches keys, settings and revocations and applies them.
    async fn synchronise(&self) -> Result<(), ControlError> {
        let keys = match self.request(RequestBody::FetchSigningKeys).await? {
            ResponseBody::SigningKeys { keys } => keys,
            _ => return Err(ControlError::UnexpectedResponse),
        };
        self.apply_signing_keys(keys);
        match self.request(RequestBody::FetchConfig).await? {
            ResponseBody::Config { version, settings } => self.apply_config(version, settings),
            _ => return Err(ControlError::UnexpectedResponse),
        }
        match self.request(RequestBody::FetchRevocations).await? {
            ResponseBody::Revocations { revocations } => self.apply_revocations(revocations, true),
            _ => return Err(ControlError::UnexpectedResponse),
        }
        Ok(())
    }

    fn handle_push(self: &Rc<Self>, push: Push) {
        self.status.pushes_total.fetch_add(1, Ordering::Relaxed);
        match &push {
            Push::ConfigChanged { version, settings } => {
                tracing::info!(shard = self.shard_idx, version, "runtime settings changed");
                self.apply_config(*version, settings.clone());
            }
            Push::SigningKeysChanged { keys } => self.apply_signing_keys(keys.clone()),
            Push::TokensRevoked {
                token_ids,
                expires_at_ms,
                ..
            } => self.apply_revocations(
                token_ids.iter().map(|token_id| Revocation {
                    token_id: token_id.clone(),
                    expires_at_ms: *expires_at_ms,
                }),
                false,
            ),
            Push::Resync => {
                let client = self.clone();
                monoio::spawn(async move {
                    if let Err(error) = client.synchronise().await {
                        tracing::warn!(shard = client.shard_idx, %error, "resynchronisation failed; reconnecting");
                        if let Some(session) = client.session.borrow().as_ref() {
                            session.close();
                        }
                    }
                });
            }
            Push::MembershipChanged { .. }
            | Push::ModerationChanged { .. }
            | Push::RoomChanged { .. }
            | Push::TrackChanged { .. } => {}
        }
        for handler in self.push_handlers.borrow().iter() {
            handler(&push);
        }
    }
}

/// Runs the shard's control connection for the shard's whole life:
/// connect, serve, back off, reconnect.
pub async fn run(client: Rc<ControlClient>) {
    let Some(address) = client.address.clone() else {
        return;
    };
    let delay_min = Duration::from_millis(client.config.reconnect_delay_ms_min);
    let delay_max = Duration::from_millis(client.config.reconnect_delay_ms_max);
    let mut delay = delay_min;
    let mut jitter = Jitter::new(client.shard_idx);
    let mut failures_in_a_row: u64 = 0;
    let mut next_failure_logged: u64 = 1;
    loop {
        match serve_one_session(&client, &address).await {
            Ok(()) => {
                delay = delay_min;
                failures_in_a_row = 0;
                next_failure_logged = 1;
            }
            Err(reason) => {
                failures_in_a_row += 1;
                // The first failure and then every 20th, so a long outage
                // does not flood the log.
                if failures_in_a_row == next_failure_logged {
                    next_failure_logged += 20;
                    tracing::warn!(shard = client.shard_idx, address = ?address, failures_in_a_row, %reason, "control plane unreachable; retrying with backoff");
                }
            }
        }
        client
            .status
            .disconnects_total
            .fetch_add(1, Ordering::Relaxed);
        monoio::time::sleep(jitter.apply(delay)).await;
        delay = (delay * 2).min(delay_max);
    }
}

/// "Equal jitter": half the delay fixed, half random, so shards (and nodes)
/// that lost the control plane together do not reconnect in lockstep.
struct Jitter {
    state: u64,
}

impl Jitter {
    fn new(shard_idx: usize) -> Self {
        let seed =
            unix_now_ms() as u64 ^ (shard_idx as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self { state: seed | 1 }
    }

    fn apply(&mut self, delay: Duration) -> Duration {
        // xorshift64: plenty for spreading retries.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let half_ms = (delay.as_millis() as u64 / 2).max(1);
        Duration::from_millis(half_ms + self.state % (half_ms + 1))
    }
}

enum Connected {
    Unix(monoio::net::UnixStream),
    Tcp(monoio::net::TcpStream),
}

async fn connect(address: &ControlAddress, timeout: Duration) -> Result<Connected, String> {
    let connecting = async {
        match address {
            ControlAddress::Unix(path) => monoio::net::UnixStream::connect(path)
                .await
                .map(Connected::Unix),
            ControlAddress::Tcp(address) => monoio::net::TcpStream::connect_addr(*address)
                .await
                .map(Connected::Tcp),
        }
    };
    match monoio::time::timeout(timeout, connecting).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(error)) => Err(format!("connect failed: {error}")),
        Err(_) => Err(format!("connect timed out after {timeout:?}")),
    }
}

/// Connects, serves until the connection ends. `Ok` when the session was
/// established and synchronised (the backoff restarts from its minimum),
/// `Err` otherwise.
async fn serve_one_session(
    client: &Rc<ControlClient>,
    address: &ControlAddress,
) -> Result<(), String> {
    let connect_timeout = Duration::from_millis(client.config.connect_timeout_ms);
    match connect(address, connect_timeout).await? {
        Connected::Unix(stream) => {
            let fd = stream.as_raw_fd();
            serve_stream(client, stream, fd).await
        }
        Connected::Tcp(stream) => {
            let _ = stream.set_nodelay(true);
            let fd = stream.as_raw_fd();
            serve_stream(client, stream, fd).await
        }
    }
}

async fn serve_stream<S>(client: &Rc<ControlClient>, stream: S, fd: RawFd) -> Result<(), String>
where
    S: Splitable,
    S::OwnedRead: AsyncReadRent,
    S::OwnedWrite: monoio::io::AsyncWriteRent + 'static,
{
    let (mut reader, mut writer) = stream.into_split();
    let mut buffer = BytesMut::with_capacity(READ_RESERVE_BYTES);
    let mut decoder = ServerFrameDecoder::new(client.config.frame_bytes_max);
    handshake(client, &mut reader, &mut writer, &mut buffer, &mut decoder).await?;
    let session = Rc::new(SessionOutbound {
        queued: RefCell::new(BytesMut::new()),
        wake_writer: LocalNotify::default(),
        closed: Cell::new(false),
        fd,
    });
    *client.session.borrow_mut() = Some(session.clone());
    client.status.connects_total.fetch_add(1, Ordering::Relaxed);
    let writer_task = monoio::spawn(write_frames(writer, session.clone()));
    let synchroniser = client.clone();
    let sync_session = session.clone();
    let synchronised = Rc::new(Cell::new(false));
    let synchronised_flag = synchronised.clone();
    monoio::spawn(async move {
        match synchroniser.synchronise().await {
            Ok(()) if !sync_session.closed.get() => {
                tracing::info!(shard = synchroniser.shard_idx, "control plane connected");
                synchronised_flag.set(true);
                synchroniser.set_connected(true);
            }
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(shard = synchroniser.shard_idx, %error, "fetching keys, settings and revocations failed; reconnecting");
                sync_session.close();
            }
        }
    });
    let reason = read_frames(client, &mut reader, &mut buffer, &mut decoder).await;
    tracing::warn!(shard = client.shard_idx, %reason, "control connection ended");
    client.set_connected(false);
    *client.session.borrow_mut() = None;
    session.close();
    client.fail_pending();
    let _ = writer_task.await;
    // A session that never synchronised counts as a failed attempt, so a
    // control plane that accepts but cannot answer is retried with backoff.
    if synchronised.get() {
        Ok(())
    } else {
        Err(format!("the session ended before synchronising: {reason}"))
    }
}

async fn handshake<R, W>(
    client: &ControlClient,
    reader: &mut R,
    writer: &mut W,
    buffer: &mut BytesMut,
    decoder: &mut ServerFrameDecoder,
) -> Result<(), String>
where
    R: AsyncReadRent,
    W: monoio::io::AsyncWriteRent,
{
    let frame = ClientFrame::Hello(hello(
        &client.node_id,
        client.shard_idx as u32,
        client.shard_count as u32,
    ));
    let mut out = BytesMut::new();
    client
        .encoder
        .borrow_mut()
        .encode(&frame, &mut out)
        .map_err(|error| error.to_string())?;
    let (result, _) = writer.write_all(out).await;
    result.map_err(|error| format!("sending Hello failed: {error}"))?;
    let timeout = Duration::from_millis(client.config.request_timeout_ms);
    let answer = monoio::time::timeout(timeout, next_frame(reader, buffer, decoder)).await;
    match answer {
        Err(_) => Err("no Welcome in time".into()),
        Ok(Err(reason)) => Err(reason),
        Ok(Ok(ServerFrame::Welcome(welcome))) => {
            check_welcome(&welcome).map_err(|error| error.message)?;
            tracing::info!(shard = client.shard_idx, server_version = %welcome.server_version, "control handshake done");
            Ok(())
        }
        Ok(Ok(ServerFrame::Error(error))) => Err(format!(
            "control plane refused the handshake: {}: {}",
            error.code.name(),
            error.message
        )),
        Ok(Ok(_)) => {
            Err("the control plane answered Hello with something else than Welcome".into())
        }
    }
}

/// Reads and decodes the next frame.
async fn next_frame<R: AsyncReadRent>(
    reader: &mut R,
    buffer: &mut BytesMut,
    decoder: &mut ServerFrameDecoder,
) -> Result<ServerFrame, String> {
    loop {
        match decoder.decode(buffer) {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(error) => return Err(format!("the control plane sent a bad frame: {error}")),
        }
        buffer.reserve(READ_RESERVE_BYTES);
        let owned = std::mem::take(buffer);
        let (start, end) = (owned.len(), owned.capacity());
        let (result, slice) = reader.read(owned.slice_mut(start..end)).await;
        *buffer = slice.into_inner();
        match result {
            Ok(0) => return Err("the control plane closed the connection".into()),
            Ok(_) => {}
            Err(error) => return Err(format!("reading failed: {error}")),
        }
    }
}

/// Dispatches responses and pushes until the connection ends; returns why.
async fn read_frames<R: AsyncReadRent>(
    client: &Rc<ControlClient>,
    reader: &mut R,
    buffer: &mut BytesMut,
    decoder: &mut ServerFrameDecoder,
) -> String {
    loop {
        match next_frame(reader, buffer, decoder).await {
            Ok(ServerFrame::Response(response)) => {
                client.deliver(response.request_id, response.result)
            }
            Ok(ServerFrame::Push(push)) => client.handle_push(push),
            Ok(ServerFrame::Error(error)) => {
                return format!(
                    "the control plane closed with {}: {}",
                    error.code.name(),
                    error.message
                )
            }
            Ok(ServerFrame::Welcome(_)) => return "a second Welcome".into(),
            Err(reason) => return reason,
        }
    }
}

/// Writes whatever requests queued, one write per wake-up, until the
/// session closes.
async fn write_frames<W: monoio::io::AsyncWriteRent>(mut writer: W, session: Rc<SessionOutbound>) {
    let mut spare = BytesMut::new();
    loop {
        session.wake_writer.wait().await;
        if session.closed.get() {
            return;
        }
        let out = std::mem::replace(
            &mut *session.queued.borrow_mut(),
            std::mem::take(&mut spare),
        );
        if out.is_empty() {
            spare = out;
            continue;
        }
        let (result, mut returned) = writer.write_all(out).await;
        if result.is_err() {
            session.close();
            return;
        }
        returned.clear();
        spare = returned;
    }
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// The host name, the default node id.
fn host_name() -> String {
    let mut name = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length.
    let result = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
    if result != 0 {
        return "veza-dataplane".into();
    }
    let length = name
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(name.len());
    match std::str::from_utf8(&name[..length]) {
        Ok(text) if !text.is_empty() => text.chars().take(128).collect(),
        _ => "veza-dataplane".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_unix_and_tcp_and_refuse_the_rest() {
        assert_eq!(ControlAddress::parse("").unwrap(), None);
        assert_eq!(
            ControlAddress::parse("unix:/run/veza/control.sock").unwrap(),
            Some(ControlAddress::Unix("/run/veza/control.sock".into()))
        );
        assert_eq!(
            ControlAddress::parse("tcp:127.0.0.1:8082").unwrap(),
            Some(ControlAddress::Tcp("127.0.0.1:8082".parse().unwrap()))
        );
        assert_eq!(
            ControlAddress::parse("tcp:localhost:8082").unwrap(),
            Some(ControlAddress::Tcp("127.0.0.1:8082".parse().unwrap()))
        );
        for bad in ["unix:", "tcp:example.com:80", "http://x", "tcp:1.2.3.4"] {
            assert!(ControlAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_delay() {
        let mut jitter = Jitter::new(3);
        for delay_ms in [100u64, 800, 10_000] {
            for _ in 0..1000 {
                let jittered = jitter.apply(Duration::from_millis(delay_ms)).as_millis() as u64;
                assert!(
                    (delay_ms / 2..=delay_ms).contains(&jittered),
                    "{jittered} for {delay_ms}"
                );
            }
        }
    }

    #[test]
    fn metrics_name_every_shard() {
        let statuses = vec![
            Arc::new(ControlStatus::default()),
            Arc::new(ControlStatus::default()),
        ];
        statuses[1].connected.store(true, Ordering::Relaxed);
        statuses[1].config_version.store(7, Ordering::Relaxed);
        let mut out = String::new();
        render_metrics(&statuses, &mut out);
        assert!(out.contains("veza_control_connected{shard=\"0\"} 0"));
        assert!(out.contains("veza_control_connected{shard=\"1\"} 1"));
        assert!(out.contains("veza_control_config_version{shard=\"1\"} 7"));
    }

    fn signed_token(key: &ed25519_dalek::SigningKey, kid: &str, jti: &str) -> String {
        let now_seconds = unix_now_ms() / 1000;
        let claims = AccessTokenClaims {
            sub: "7".into(),
            uid: 7,
            name: "ada".into(),
            adm: false,
            sid: 1,
            jti: jti.into(),
            iat: now_seconds,
            exp: now_seconds + 300,
        };
        veza_proto::access_token::sign(&claims, kid, key)
    }

    #[test]
    fn tokens_verify_with_pushed_keys_until_revoked_or_the_key_retires() {
        let client = Rc::new(ControlClient::new(
            0,
            1,
            &ControlConfig::default(),
            Arc::default(),
        ));
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let public_key = key.verifying_key().to_bytes();
        let token = signed_token(&key, "k1", "token-1");
        assert_eq!(
            client.verify_access_token(&token),
            Err(AccessTokenError::Token(TokenError::UnknownKey)),
            "no keys yet"
        );
        client.handle_push(Push::SigningKeysChanged {
            keys: vec![SigningKey {
                kid: "k1".into(),
                public_key,
                valid_until_ms: None,
            }],
        });
        assert_eq!(client.verify_access_token(&token).unwrap().uid, 7);

        client.handle_push(Push::TokensRevoked {
            token_ids: vec!["token-1".into()],
            user_id: 7,
            expires_at_ms: unix_now_ms() + 300_000,
        });
        assert_eq!(
            client.verify_access_token(&token),
            Err(AccessTokenError::Revoked)
        );
        let other = signed_token(&key, "k1", "token-2");
        assert!(client.verify_access_token(&other).is_ok());

        client.handle_push(Push::SigningKeysChanged {
            keys: vec![SigningKey {
                kid: "k1".into(),
                public_key,
                valid_until_ms: Some(unix_now_ms() - 1),
            }],
        });
        assert_eq!(
            client.verify_access_token(&other),
            Err(AccessTokenError::Token(TokenError::UnknownKey)),
            "a retired key verifies nothing after its end"
        );
    }

    #[test]
    fn config_pushes_apply_in_version_order_and_reach_handlers() {
        let client = Rc::new(ControlClient::new(
            0,
            1,
            &ControlConfig::default(),
            Arc::default(),
        ));
        let seen = Rc::new(Cell::new(0));
        let counter = seen.clone();
        client.on_push(Box::new(move |_| counter.set(counter.get() + 1)));
        let settings = |burst| {
            RuntimeSettings::from_pairs([(
                "message_burst".to_owned(),
                veza_proto::control::SettingValue::Integer(burst),
            )])
        };
        client.handle_push(Push::ConfigChanged {
            version: 3,
            settings: settings(30),
        });
        client.handle_push(Push::ConfigChanged {
            version: 2,
            settings: settings(20),
        });
        let (version, current) = client.settings();
        assert_eq!(
            (version, current.integer("message_burst")),
            (3, Some(30)),
            "an older version never replaces a newer one"
        );
        assert_eq!(client.status.config_version.load(Ordering::Relaxed), 3);
        assert_eq!(seen.get(), 2, "handlers see every push");
    }

    #[test]
    fn an_unconfigured_client_refuses_requests_and_tokens() {
        let client = ControlClient::new(0, 1, &ControlConfig::default(), Arc::default());
        assert!(!client.is_configured());
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let answer = runtime.block_on(client.lookup_rights(1, 2));
        assert_eq!(answer, Err(ControlError::NotConfigured));
        assert!(matches!(
            client.verify_access_token("a.b.c"),
            Err(AccessTokenError::Token(_))
        ));
    }
}
