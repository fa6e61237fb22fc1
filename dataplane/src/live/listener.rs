//! A listener shard's side: local renditions (headers and recent pages
//! copied from the owner once, shared `Bytes`), the listener connections,
//! and the lagging-listener policy.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;
use veza_codec::http1::write_error_response;

use super::{owner_of_stream, send, JoinAccepted, LiveMessage, StreamStats};
use crate::config::LaggingListenerPolicy;
use crate::local_event::LocalNotify;
use crate::metrics::{LimitKind, ShardMetrics};
use crate::send_queue::{run_writer, Outbound, PushError};
use crate::shard::Shard;

/// One rendition heard on this shard.
struct LocalRendition {
    header_pages: Bytes,
    recent: VecDeque<Bytes>,
    recent_bytes: usize,
    listeners: Vec<Rc<Outbound>>,
    stats: Arc<StreamStats>,
}

/// What a shard knows of a stream its listeners hear.
struct LocalStream {
    bitrates_kbps: Vec<u32>,
}

/// A listener waiting for the owner's answer.
#[derive(Default)]
struct PendingJoin {
    /// `Some(None)`: not live; `Some(Some(rendition))`: joined.
    outcome: RefCell<Option<Option<u8>>>,
    done: LocalNotify,
}

/// The renditions this shard's listeners hear, and joins in flight.
#[derive(Default)]
pub struct LocalRenditions {
    renditions: RefCell<HashMap<(Arc<str>, u8), LocalRendition>>,
    streams: RefCell<HashMap<Arc<str>, LocalStream>>,
    pending: RefCell<HashMap<(Arc<str>, Option<u32>), Vec<Rc<PendingJoin>>>>,
}

/// A `GET` or `HEAD` of `/v1/live/{stream}`.
pub struct ListenRequest {
    /// The stream.
    pub stream: Arc<str>,
    /// `?br=`.
    pub bitrate_kbps: Option<u32>,
    /// `HEAD`: headers only.
    pub is_head: bool,
}

/// Serves one listener until it or the stream ends.
pub async fn serve(shard: Rc<Shard>, socket: TcpStream, key: usize, request: ListenRequest) {
    let Some(rendition) = join(&shard, &request).await else {
        write_not_live(&shard, socket, &request).await;
        return;
    };
    let config = &shard.process.config.live;
    let outbound = Outbound::new(config.listener_queue_bytes_max);
    let registered = {
        let mut renditions = shard.live.listening.renditions.borrow_mut();
        match renditions.get_mut(&(request.stream.clone(), rendition)) {
            Some(local) => {
                let head = response_head(
                    &shard,
                    &local.stats,
                    bitrate_of(&shard, &request.stream, rendition),
                );
                let mut parts = vec![head];
                if !request.is_head {
                    parts.push(local.header_pages.clone());
                    parts.extend(burst(&local.recent, config.burst_bytes));
                }
                // The bound was validated to hold a burst and the headers.
                let _ = outbound.push(&parts);
                if request.is_head {
                    outbound.finish();
                    None
                } else {
                    local.listeners.push(outbound.clone());
                    local.stats.count_listener(rendition, 1);
                    Some(local.stats.clone())
                }
            }
            // The stream ended between the reply and now.
            None => {
                drop(renditions);
                write_not_live(&shard, socket, &request).await;
                return;
            }
        }
    };
    shard.update_connection(
        key,
        crate::shard::ConnectionHandle::LiveListener(outbound.clone()),
    );
    let metrics = shard.metrics.clone();
    let (_socket, _exit) = run_writer(socket, outbound.clone(), move |bytes| {
        ShardMetrics::add(&metrics.bytes_sent_total, bytes as u64)
    })
    .await;
    if let Some(stats) = registered {
        stats.count_listener(rendition, -1);
        leave(&shard, &request.stream, rendition, &outbound);
    }
}

fn bitrate_of(shard: &Shard, stream: &str, rendition: u8) -> u32 {
    shard
        .live
        .listening
        .streams
        .borrow()
        .get(stream)
        .and_then(|local| local.bitrates_kbps.get(rendition as usize).copied())
        .unwrap_or(0)
}

/// The recent pages a new listener gets: the newest ones holding at least
/// `burst_bytes` (or all there are), whole pages only.
fn burst(recent: &VecDeque<Bytes>, burst_bytes: usize) -> Vec<Bytes> {
    let mut total = 0;
    let mut start = recent.len();
    while start > 0 && total < burst_bytes {
        start -= 1;
        total += recent[start].len();
    }
    recent.iter().skip(start).cloned().collect()
}

/// Finds or asks for the rendition `request` wants; `None`: not live.
async fn join(shard: &Rc<Shard>, request: &ListenRequest) -> Option<u8> {
    let listening = &shard.live.listening;
    let wanted = request
        .bitrate_kbps
        .unwrap_or(shard.process.config.live.default_bitrate_kbps);
    let known = listening
        .streams
        .borrow()
        .get(&request.stream)
        .map(|local| super::stream::nearest_rendition(&local.bitrates_kbps, wanted) as u8);
    if let Some(rendition) = known {
        if listening
            .renditions
            .borrow()
            .contains_key(&(request.stream.clone(), rendition))
        {
            return Some(rendition);
        }
    }
    let pending = Rc::new(PendingJoin::default());
    let key = (request.stream.clone(), request.bitrate_kbps);
    let first = {
        let mut waiting = listening.pending.borrow_mut();
        let list = waiting.entry(key).or_default();
        list.push(pending.clone());
        list.len() == 1
    };
    if first {
        let owner = owner_of_stream(&request.stream, shard.process.shard_count());
        send(
            shard,
            owner,
            LiveMessage::Join {
                stream: request.stream.clone(),
                bitrate_kbps: request.bitrate_kbps,
                shard: shard.idx as u16,
            },
        );
    }
    loop {
        if let Some(outcome) = *pending.outcome.borrow() {
            return outcome;
        }
        pending.done.wait().await;
    }
}

/// The owner answered a join.
pub fn on_join_reply(
    shard: &Rc<Shard>,
    name: Arc<str>,
    bitrate_kbps: Option<u32>,
    accepted: Option<Box<JoinAccepted>>,
) {
    let listening = &shard.live.listening;
    let outcome = accepted.map(|accepted| {
        let rendition = accepted.rendition;
        listening.streams.borrow_mut().insert(
            name.clone(),
            LocalStream {
                bitrates_kbps: accepted.bitrates_kbps.clone(),
            },
        );
        let mut renditions = listening.renditions.borrow_mut();
        renditions
            .entry((name.clone(), rendition))
            .or_insert_with(|| {
                let recent: VecDeque<Bytes> = accepted.recent_pages.into_iter().collect();
                LocalRendition {
                    header_pages: accepted.header_pages,
                    recent_bytes: recent.iter().map(Bytes::len).sum(),
                    recent,
                    listeners: Vec::new(),
                    stats: accepted.stats,
                }
            });
        rendition
    });
    let waiters = listening
        .pending
        .borrow_mut()
        .remove(&(name, bitrate_kbps))
        .unwrap_or_default();
    for waiter in waiters {
        *waiter.outcome.borrow_mut() = Some(outcome);
        waiter.done.notify();
    }
}

/// A new page of a rendition heard here.
pub fn on_page(shard: &Rc<Shard>, name: &Arc<str>, rendition: u8, page: Bytes) {
    let mut renditions = shard.live.listening.renditions.borrow_mut();
    let Some(local) = renditions.get_mut(&(name.clone(), rendition)) else {
        return;
    };
    let config = &shard.process.config.live;
    local.recent_bytes += page.len();
    local.recent.push_back(page.clone());
    while local.recent_bytes > config.recent_pages_bytes_max && local.recent.len() > 1 {
        let oldest = local.recent.pop_front().expect("not empty");
        local.recent_bytes -= oldest.len();
    }
    let mut delivered: u64 = 0;
    let parts = [page];
    for outbound in &local.listeners {
        match outbound.push(&parts) {
            Ok(()) => delivered += 1,
            Err(PushError::Closed) => {}
            Err(PushError::Overflow) => {
                shard.metrics.limit_hit(LimitKind::LiveListenerQueue);
                match config.lagging_listener_policy {
                    LaggingListenerPolicy::Skip => {
                        outbound.skip_queued();
                        local.stats.skips.fetch_add(1, Ordering::Relaxed);
                        if outbound.push(&parts).is_ok() {
                            delivered += 1;
                        }
                    }
                    LaggingListenerPolicy::Disconnect => {
                        local.stats.evictions.fetch_add(1, Ordering::Relaxed);
                        outbound.push_final(&[], true);
                    }
                }
            }
        }
    }
    local
        .stats
        .bytes_out
        .fetch_add(delivered * parts[0].len() as u64, Ordering::Relaxed);
}

/// A listener's connection ended.
fn leave(shard: &Rc<Shard>, name: &Arc<str>, rendition: u8, outbound: &Rc<Outbound>) {
    let key = (name.clone(), rendition);
    let now_empty = {
        let mut renditions = shard.live.listening.renditions.borrow_mut();
        let Some(local) = renditions.get_mut(&key) else {
            return;
        };
        local.listeners.retain(|other| !Rc::ptr_eq(other, outbound));
        if local.listeners.is_empty() {
            renditions.remove(&key);
            true
        } else {
            false
        }
    };
    if now_empty {
        let owner = owner_of_stream(name, shard.process.shard_count());
        send(
            shard,
            owner,
            LiveMessage::Left {
                stream: name.clone(),
                rendition,
                shard: shard.idx as u16,
            },
        );
    }
}

/// The stream ended: listeners get what is queued, then the end of the body.
pub fn on_ended(shard: &Rc<Shard>, name: &Arc<str>) {
    let listening = &shard.live.listening;
    listening.streams.borrow_mut().remove(name);
    let ended: Vec<LocalRendition> = {
        let mut renditions = listening.renditions.borrow_mut();
        let keys: Vec<(Arc<str>, u8)> = renditions
            .keys()
            .filter(|(stream, _)| stream == name)
            .cloned()
            .collect();
        keys.iter()
            .filter_map(|key| renditions.remove(key))
            .collect()
    };
    for local in ended {
        for outbound in local.listeners {
            outbound.finish();
        }
    }
    let waiting: Vec<Rc<PendingJoin>> = {
        let mut pending = listening.pending.borrow_mut();
        let keys: Vec<(Arc<str>, Option<u32>)> = pending
            .keys()
            .filter(|(stream, _)| stream == name)
            .cloned()
            .collect();
        keys.iter()
            .filter_map(|key| pending.remove(key))
            .flatten()
            .collect()
    };
    for waiter in waiting {
        *waiter.outcome.borrow_mut() = Some(None);
        waiter.done.notify();
    }
}

/// Shutdown: every listener gets what is queued, then EOF.
pub fn finish_all(shard: &Shard) {
    for local in shard.live.listening.renditions.borrow().values() {
        for outbound in &local.listeners {
            outbound.finish();
        }
    }
}

/// The response head of a listener: `audio/ogg`, delimited by the
/// connection's close (like Icecast), with the `icy-*` headers players show.
fn response_head(shard: &Shard, stats: &StreamStats, bitrate_kbps: u32) -> Bytes {
    let info = stats
        .info
        .lock()
        .map(|info| info.clone())
        .unwrap_or_default();
    let mut head = String::with_capacity(512);
    head.push_str("HTTP/1.1 200 OK\r\nContent-Type: audio/ogg\r\n");
    head.push_str("Cache-Control: no-cache, no-store\r\nConnection: close\r\n");
    head.push_str("Access-Control-Allow-Origin: *\r\n");
    push_header(&mut head, "icy-name", &info.title);
    push_header(&mut head, "icy-description", &info.description);
    push_header(&mut head, "icy-genre", &info.genre);
    head.push_str(if info.public {
        "icy-pub: 1\r\n"
    } else {
        "icy-pub: 0\r\n"
    });
    if bitrate_kbps > 0 {
        head.push_str(&format!(
            "icy-br: {bitrate_kbps}\r\nX-Veza-Bitrate: {bitrate_kbps}\r\n"
        ));
    }
    head.push_str("Date: ");
    head.push_str(shard.date().as_str());
    head.push_str("\r\n\r\n");
    Bytes::from(head)
}

/// Writes `name: value` unless the value is empty; control characters
/// (which could split the header) are dropped.
fn push_header(head: &mut String, name: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    head.push_str(name);
    head.push_str(": ");
    head.extend(value.chars().filter(|c| !c.is_control()));
    head.push_str("\r\n");
}

async fn write_not_live(shard: &Shard, socket: TcpStream, request: &ListenRequest) {
    let mut out = BytesMut::with_capacity(256);
    {
        let date = shard.date();
        let detail = format!("no source is broadcasting on stream {}", request.stream);
        write_error_response(
            404,
            "stream_offline",
            &detail,
            false,
            !request.is_head,
            &[],
            date.as_str(),
            &mut out,
        );
    }
    let outbound = Outbound::new(out.len());
    let _ = outbound.push(&[out.freeze()]);
    outbound.finish();
    let _ = run_writer(socket, outbound, |_| {}).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_whole_pages_covering_at_least_the_burst_size() {
        let recent: VecDeque<Bytes> = [100, 200, 300, 400]
            .into_iter()
            .map(|size| Bytes::from(vec![0u8; size]))
            .collect();
        let sizes = |pages: Vec<Bytes>| pages.iter().map(Bytes::len).collect::<Vec<_>>();
        assert_eq!(sizes(burst(&recent, 350)), vec![400]);
        assert_eq!(sizes(burst(&recent, 401)), vec![300, 400]);
        assert_eq!(sizes(burst(&recent, 10_000)), vec![100, 200, 300, 400]);
        assert!(burst(&VecDeque::new(), 100).is_empty());
    }
}
