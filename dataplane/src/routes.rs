//! The data plane's HTTP endpoints.
//!
//! | path | methods | what |
//! |---|---|---|
//! | `/health` | GET, HEAD | the process is alive |
//! | `/ready` | GET, HEAD | every shard serves, none is stalled and, when one is configured, every shard is connected to the control plane (503 otherwise) |
//! | `/metrics` | GET, HEAD | Prometheus text, per-shard series merged on scrape |
//! | `/v1/echo` | GET (WebSocket upgrade), POST (echoes the body) | conformance and benchmarks |
//! | `/v1/chat` | GET (WebSocket upgrade, subprotocol `veza.v1`) | chat (`proto/PROTOCOL.md`) |
//! | `/v1/live` | GET | every live stream's status (JSON) |
//! | `/v1/live/{stream}` | PUT, SOURCE (a source), GET, HEAD (a listener) | live audio; handed over before routing (`http_connection`) |
//! | `/v1/live/{stream}/status` | GET | one stream's status (JSON) |
//! | `/v1/live/{stream}/metadata` | POST `{"title"}` (stream key or owner token) | now-playing title |
//! | `/v1/tracks/{id}/audio?br=` | GET, HEAD | a stored track's rendition: Range, ETag, conditional requests, access rules (`tracks`) |
//! | `/v1/tracks/{id}/waveform` | GET, HEAD | its waveform JSON, same rules |
//! | `/admin/metadata?mount=&mode=updinfo&song=` | GET (basic auth, stream key) | Icecast's metadata update |
//! | `/debug/stall?ms=N` | POST, when `debug.endpoints_enabled` | blocks the shard on purpose |

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use veza_codec::http1::RequestHead;
use veza_codec::websocket::handshake::{validate_upgrade, Accepted};
use veza_proto::error_body::ErrorBody;

use crate::metrics::{render_prometheus, RingReport};
use crate::shard::Shard;
use crate::websocket_session::WebSocketKind;

/// Subprotocols `/v1/echo` offers, in preference order.
pub const ECHO_SUBPROTOCOLS: &[&str] = &["veza.echo"];

/// Longest stall `/debug/stall` will cause.
const DEBUG_STALL_MS_MAX: u64 = 10_000;

/// How long a scrape waits for other shards' histograms.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// A complete response.
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Content-Type.
    pub content_type: &'static str,
    /// Body (sent with Content-Length).
    pub body: Bytes,
    /// More headers.
    pub extra_headers: Vec<(&'static str, String)>,
    /// Close the connection after this response.
    pub close_connection: bool,
}

impl Response {
    fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.into(),
            extra_headers: Vec::new(),
            close_connection: false,
        }
    }

    /// An error with the standard JSON body.
    pub fn error(status: u16, error: &str, detail: &str) -> Self {
        Self::json(status, ErrorBody::new(error, detail).to_json())
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra_headers.push((name, value.into()));
        self
    }
}

/// What a request leads to.
pub enum Routed {
    /// Answer and carry on.
    Response(Response),
    /// Switch the connection to WebSocket.
    Upgrade(Accepted, WebSocketKind),
    /// A head, then a file's bytes streamed by the connection driver.
    File(Box<crate::tracks::FileResponse>),
}

fn method_not_allowed(allowed: &'static str) -> Routed {
    Routed::Response(
        Response::error(
            405,
            "method_not_allowed",
            &format!("allowed methods: {allowed}"),
        )
        .with_header("Allow", allowed),
    )
}

/// Routes one request.
pub async fn route(
    shard: &Rc<Shard>,
    head: &RequestHead,
    body: Bytes,
    peer: std::net::IpAddr,
) -> Routed {
    let method = head.method.as_str();
    let is_read = matches!(method, "GET" | "HEAD");
    match head.path() {
        "/health" if is_read => Routed::Response(Response::json(200, &b"{\"status\":\"ok\"}"[..])),
        "/ready" if is_read => Routed::Response(ready(shard)),
        "/metrics" if is_read => Routed::Response(metrics(shard).await),
        "/health" | "/ready" | "/metrics" => method_not_allowed("GET, HEAD"),
        "/v1/chat" => match method {
            "GET" => chat_upgrade(shard, head, peer),
            _ => method_not_allowed("GET"),
        },
        "/v1/live" => match method {
            "GET" => Routed::Response(Response::json(
                200,
                crate::live::status::status_document(&shard.process.live_directory.all()),
            )),
            _ => method_not_allowed("GET"),
        },
        "/admin/metadata" => match method {
            "GET" => Routed::Response(live_metadata_icecast(shard, head).await),
            _ => method_not_allowed("GET"),
        },
        path if path.starts_with("/v1/tracks/") => crate::tracks::route(shard, head, path).await,
        path if path.starts_with("/v1/live/") => {
            Routed::Response(live_stream_route(shard, head, &body, path).await)
        }
        "/v1/echo" => match method {
            "GET" => upgrade(head, ECHO_SUBPROTOCOLS, WebSocketKind::Echo),
            "POST" => Routed::Response(Response {
                status: 200,
                content_type: "application/octet-stream",
                body,
                extra_headers: Vec::new(),
                close_connection: false,
            }),
            _ => method_not_allowed("GET, POST"),
        },
        "/debug/stall" if shard.process.config.debug.endpoints_enabled => match method {
            "POST" => Routed::Response(debug_stall(head)),
            _ => method_not_allowed("POST"),
        },
        path => Routed::Response(Response::error(
            404,
            "not_found",
            &format!("no route for {path}"),
        )),
    }
}

fn ready(shard: &Shard) -> Response {
    let process = &shard.process;
    if process.shutting_down.load(Ordering::Relaxed) {
        return Response::error(503, "not_ready", "the server is shutting down");
    }
    if !process.all_shards_ready() {
        return Response::error(503, "not_ready", "a shard is not serving or is stalled");
    }
    if !process.control_connected_on_every_shard() {
        return Response::error(503, "not_ready", "control plane not connected");
    }
    Response::json(
        200,
        format!(
            "{{\"status\":\"ready\",\"shards\":{}}}",
            process.shard_count()
        ),
    )
}

async fn metrics(shard: &Shard) -> Response {
    let (loop_turn, missing) = shard.collect_loop_turn_histograms(SCRAPE_TIMEOUT).await;
    let process = &shard.process;
    let shard_count = process.shard_count();
    let mut rings = Vec::with_capacity(shard_count * shard_count);
    for from in 0..shard_count {
        for to in (0..shard_count).filter(|&to| to != from) {
            let counters = process.mesh.ring_counters(from, to);
            rings.push(RingReport {
                from,
                to,
                depth: process.mesh.ring_depth(from, to),
                full_total: counters.full_total.load(Ordering::Relaxed),
                sent_total: counters.sent_total.load(Ordering::Relaxed),
            });
        }
    }
    let mut text = render_prometheus(&process.shard_metrics, &rings, &loop_turn, &missing);
    crate::control_client::render_metrics(&process.control_status, &mut text);
    crate::live::status::render_prometheus(&process.live_directory.all(), &mut text);
    Response {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body: Bytes::from(text),
        extra_headers: Vec::new(),
        close_connection: false,
    }
}

/// The chat upgrade: subprotocol `veza.v1` required, new connections per IP
/// limited (429 with `Retry-After`).
/// `/v1/live/{stream}/status` and `/v1/live/{stream}/metadata` (the stream
/// itself is handed over before routing).
async fn live_stream_route(
    shard: &Rc<Shard>,
    head: &RequestHead,
    body: &[u8],
    path: &str,
) -> Response {
    let rest = &path["/v1/live/".len()..];
    let (name, action) = rest.split_once('/').unwrap_or((rest, ""));
    let method = head.method.as_str();
    match (action, method) {
        ("status", "GET") => match shard.process.live_directory.get(name) {
            Some(stats) => Response::json(
                200,
                serde_json::to_string(&crate::live::status::stream_status(&stats))
                    .unwrap_or_default(),
            ),
            None => stream_offline(name),
        },
        ("status", _) => method_not_allowed_response("GET"),
        ("metadata", "POST") => {
            #[derive(serde::Deserialize)]
            struct Metadata {
                title: String,
            }
            let Ok(metadata) = serde_json::from_slice::<Metadata>(body) else {
                return Response::error(
                    400,
                    "invalid_body",
                    "send a JSON object {\"title\": \"...\"}",
                );
            };
            update_metadata(shard, head, name, &metadata.title).await
        }
        ("metadata", _) => method_not_allowed_response("POST"),
        _ => Response::error(404, "not_found", "no such endpoint"),
    }
}

/// Icecast's `GET /admin/metadata?mount=/v1/live/{stream}&mode=updinfo&song=...`.
async fn live_metadata_icecast(shard: &Rc<Shard>, head: &RequestHead) -> Response {
    let query = head.query().unwrap_or("");
    let parameter = |wanted: &str| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == wanted).then(|| percent_decode(value))
        })
    };
    if parameter("mode").as_deref() != Some("updinfo") {
        return Response::error(400, "invalid_mode", "only mode=updinfo is supported");
    }
    let Some(mount) = parameter("mount") else {
        return Response::error(400, "missing_mount", "give mount=/v1/live/{stream}");
    };
    let name = mount
        .trim_start_matches("/v1/live/")
        .trim_start_matches('/')
        .to_owned();
    let song = parameter("song").unwrap_or_default();
    update_metadata(shard, head, &name, &song).await
}

async fn update_metadata(
    shard: &Rc<Shard>,
    head: &RequestHead,
    name: &str,
    title: &str,
) -> Response {
    if !crate::live::is_valid_stream_name(name) {
        return stream_offline(name);
    }
    if let Err(refusal) = crate::live::source::authorize(shard, name, head).await {
        let mut response = Response::error(refusal.status, refusal.error, &refusal.detail);
        if refusal.status == 401 {
            response = response.with_header("WWW-Authenticate", "Basic realm=\"Veza\"");
        }
        return response;
    }
    match shard.process.live_directory.get(name) {
        Some(stats) => {
            crate::live::status::set_now_playing(&stats, title);
            crate::live::status::announce_now_playing(shard, &stats.name, title);
            Response::json(200, &b"{\"status\":\"ok\"}"[..])
        }
        None => stream_offline(name),
    }
}

fn stream_offline(name: &str) -> Response {
    Response::error(
        404,
        "stream_offline",
        &format!("no source is broadcasting on stream {name}"),
    )
}

pub(crate) fn method_not_allowed_response(allowed: &'static str) -> Response {
    match method_not_allowed(allowed) {
        Routed::Response(response) => response,
        Routed::Upgrade(..) | Routed::File(_) => unreachable!("an error is a response"),
    }
}

/// Decodes `%XX` and `+` in a query value (invalid escapes stay as they are).
pub(crate) fn percent_decode(value: &str) -> String {
    let hex = |byte: u8| (byte as char).to_digit(16).map(|digit| digit as u8);
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let escaped = (byte == b'%' && index + 2 < bytes.len())
            .then(|| Some(hex(bytes[index + 1])? * 16 + hex(bytes[index + 2])?))
            .flatten();
        match (byte, escaped) {
            (_, Some(decoded)) => {
                out.push(decoded);
                index += 3;
                continue;
            }
            (b'+', None) => out.push(b' '),
            (other, None) => out.push(other),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn chat_upgrade(shard: &Shard, head: &RequestHead, peer: std::net::IpAddr) -> Routed {
    let offers_chat =
        head.header_has_token("sec-websocket-protocol", veza_proto::chat::SUBPROTOCOL);
    if !offers_chat {
        let mut response = Response::error(
            400,
            "subprotocol_required",
            "offer the WebSocket subprotocol veza.v1 (Sec-WebSocket-Protocol)",
        );
        response.close_connection = true;
        return Routed::Response(response);
    }
    if let Err(retry_after_ms) =
        shard
            .chat
            .limits
            .admit_connection(&shard.control, peer, shard.process.shard_count())
    {
        shard
            .metrics
            .limit_hit(crate::metrics::LimitKind::ConnectionsPerIp);
        let seconds = retry_after_ms.div_ceil(1000).max(1);
        let mut response = Response::error(
            429,
            "too_many_connections",
            "too many new connections from this address; retry later",
        )
        .with_header("Retry-After", seconds.to_string());
        response.close_connection = true;
        return Routed::Response(response);
    }
    upgrade(head, CHAT_SUBPROTOCOLS, WebSocketKind::Chat)
}

/// Subprotocols `/v1/chat` offers.
pub const CHAT_SUBPROTOCOLS: &[&str] = &[veza_proto::chat::SUBPROTOCOL];

fn upgrade(
    head: &RequestHead,
    subprotocols: &'static [&'static str],
    kind: WebSocketKind,
) -> Routed {
    match validate_upgrade(head, subprotocols) {
        Ok(accepted) => Routed::Upgrade(accepted, kind),
        Err(error) => {
            let mut response = Response::error(error.status(), error.error_name(), error.detail());
            for (name, value) in error.response_headers() {
                response = response.with_header(name, *value);
            }
            // A failed upgrade leaves the client unsure what the connection
            // is; start afresh.
            response.close_connection = true;
            Routed::Response(response)
        }
    }
}

fn debug_stall(head: &RequestHead) -> Response {
    let requested_ms = head
        .query()
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|value| value.parse::<u64>().ok());
    let Some(stall_ms) = requested_ms.filter(|&ms| ms <= DEBUG_STALL_MS_MAX) else {
        return Response::error(
            400,
            "bad_request",
            &format!("give ms=N with N at most {DEBUG_STALL_MS_MAX}"),
        );
    };
    // Deliberately blocking: this endpoint exists to test stall detection.
    std::thread::sleep(Duration::from_millis(stall_ms));
    Response::json(200, format!("{{\"stalled_ms\":{stall_ms}}}"))
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("Artist+-+Song%20%C3%A9"), "Artist - Song é");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%2Fv1%2Flive%2Fradio"), "/v1/live/radio");
    }
}
