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
    /// Pages already fanned out here, for bursts (bounded by
    /// `live.recent_pages_bytes_max`).
    recent: VecDeque<Bytes>,
    recent_bytes: usize,
    listeners: slab::Slab<Rc<Outbound>>,
    stats: Arc<StreamStats>,
    /// Pages waiting for the fan-out task, oldest first.
    fanout_queue: VecDeque<Bytes>,
    /// A fan-out task is running for this rendition.
    fanout_running: bool,
    /// The stream ended: listeners finish once the queue is fanned out.
    ended: bool,
}

type SharedRendition = Rc<RefCell<LocalRendition>>;

/// Joins in flight are keyed by stream and the `?br=` asked for.
type JoinKey = (Arc<str>, Option<u32>);

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
    renditions: RefCell<HashMap<(Arc<str>, u8), SharedRendition>>,
    streams: RefCell<HashMap<Arc<str>, LocalStream>>,
    pending: RefCell<HashMap<JoinKey, Vec<Rc<PendingJoin>>>>,
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
    let key_in_map = (request.stream.clone(), rendition);
    let Some(shared) = shard
        .live
        .listening
        .renditions
        .borrow()
        .get(&key_in_map)
        .cloned()
    else {
        // The stream ended between the reply and now.
        write_not_live(&shard, socket, &request).await;
        return;
    };
    let listener_key = {
        let mut local = shared.borrow_mut();
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
        if request.is_head || local.ended {
            outbound.finish();
            None
        } else {
            local.stats.count_listener(rendition, 1);
            Some(local.listeners.insert(outbound.clone()))
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
    if let Some(listener_key) = listener_key {
        leave(&shard, &key_in_map, &shared, listener_key);
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
                Rc::new(RefCell::new(LocalRendition {
                    header_pages: accepted.header_pages,
                    recent_bytes: recent.iter().map(Bytes::len).sum(),
                    recent,
                    listeners: slab::Slab::new(),
                    stats: accepted.stats,
                    fanout_queue: VecDeque::new(),
                    fanout_running: false,
                    ended: false,
                }))
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

/// A new page of a rendition heard here: queued for the rendition's
/// fan-out task, which keeps pages in order.
pub fn on_page(shard: &Rc<Shard>, name: &Arc<str>, rendition: u8, page: Bytes) {
    let Some(shared) = shard
        .live
        .listening
        .renditions
        .borrow()
        .get(&(name.clone(), rendition))
        .cloned()
    else {
        return;
    };
    let mut local = shared.borrow_mut();
    local.fanout_queue.push_back(page);
    if !local.fanout_running {
        local.fanout_running = true;
        drop(local);
        monoio::spawn(run_fanout(shard.clone(), shared));
    }
}

/// Queues each waiting page on every listener, `live.fanout_batch_max`
/// listeners at a time with a pause for I/O between batches, so a page for
/// thousands of listeners does not hold the shard for one long loop turn
/// (new listeners and sources are served between batches).
///
/// A page joins the recent pages (the next listener's burst) when its
/// fan-out starts, and the fan-out goes to the listeners present at that
/// moment: a listener gets every page exactly once, from its burst or from
/// here.
async fn run_fanout(shard: Rc<Shard>, shared: SharedRendition) {
    let config = &shard.process.config.live;
    let batch = config.fanout_batch_max;
    loop {
        let (page, listeners, stats) = {
            let mut local = shared.borrow_mut();
            let Some(page) = local.fanout_queue.pop_front() else {
                local.fanout_running = false;
                if local.ended {
                    for (_, outbound) in local.listeners.iter() {
                        outbound.finish();
                    }
                }
                return;
            };
            local.recent_bytes += page.len();
            local.recent.push_back(page.clone());
            while local.recent_bytes > config.recent_pages_bytes_max && local.recent.len() > 1 {
                let oldest = local.recent.pop_front().expect("not empty");
                local.recent_bytes -= oldest.len();
            }
            let listeners: Vec<Rc<Outbound>> = local
                .listeners
                .iter()
                .map(|(_, outbound)| outbound.clone())
                .collect();
            (page, listeners, local.stats.clone())
        };
        for (index, chunk) in listeners.chunks(batch).enumerate() {
            if index > 0 {
                // A timer, unlike a yield, lets the runtime poll for I/O.
                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            deliver(&shard, chunk, &page, &stats);
        }
    }
}

/// Queues `page` on each listener, applying the lagging-listener policy.
fn deliver(shard: &Shard, listeners: &[Rc<Outbound>], page: &Bytes, stats: &StreamStats) {
    let policy = shard.process.config.live.lagging_listener_policy;
    let parts = std::slice::from_ref(page);
    let mut delivered: u64 = 0;
    for outbound in listeners {
        match outbound.push(parts) {
            Ok(()) => delivered += 1,
            Err(PushError::Closed) => {}
            Err(PushError::Overflow) => {
                shard.metrics.limit_hit(LimitKind::LiveListenerQueue);
                match policy {
                    LaggingListenerPolicy::Skip => {
                        outbound.skip_queued();
                        stats.skips.fetch_add(1, Ordering::Relaxed);
                        if outbound.push(parts).is_ok() {
                            delivered += 1;
                        }
                    }
                    LaggingListenerPolicy::Disconnect => {
                        stats.evictions.fetch_add(1, Ordering::Relaxed);
                        outbound.push_final(&[], true);
                    }
                }
            }
        }
    }
    stats
        .bytes_out
        .fetch_add(delivered * page.len() as u64, Ordering::Relaxed);
}

/// A listener's connection ended.
fn leave(
    shard: &Rc<Shard>,
    key_in_map: &(Arc<str>, u8),
    shared: &SharedRendition,
    listener_key: usize,
) {
    let now_empty = {
        let mut local = shared.borrow_mut();
        local.stats.count_listener(key_in_map.1, -1);
        local.listeners.try_remove(listener_key);
        local.listeners.is_empty() && !local.ended
    };
    if !now_empty {
        return;
    }
    {
        let mut renditions = shard.live.listening.renditions.borrow_mut();
        match renditions.get(key_in_map) {
            Some(current) if Rc::ptr_eq(current, shared) => {
                renditions.remove(key_in_map);
            }
            _ => return,
        }
    }
    let (name, rendition) = key_in_map;
    let owner = owner_of_stream(name, shard.process.shard_count());
    send(
        shard,
        owner,
        LiveMessage::Left {
            stream: name.clone(),
            rendition: *rendition,
            shard: shard.idx as u16,
        },
    );
}

/// The stream ended: listeners get what is queued, then the end of the body.
pub fn on_ended(shard: &Rc<Shard>, name: &Arc<str>) {
    let listening = &shard.live.listening;
    listening.streams.borrow_mut().remove(name);
    let ended: Vec<SharedRendition> = {
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
    for shared in ended {
        let mut local = shared.borrow_mut();
        local.ended = true;
        // A running fan-out finishes the listeners after the last page
        // (the EOS page) is queued on them.
        if !local.fanout_running {
            for (_, outbound) in local.listeners.iter() {
                outbound.finish();
            }
        }
    }
    let waiting: Vec<Rc<PendingJoin>> = {
        let mut pending = listening.pending.borrow_mut();
        let keys: Vec<JoinKey> = pending
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
    for shared in shard.live.listening.renditions.borrow().values() {
        for (_, outbound) in shared.borrow().listeners.iter() {
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
