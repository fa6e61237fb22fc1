//! Stress test of the cross-shard mesh: every shard sends to every other
//! shard through small rings (so rings fill up often), and every message must
//! arrive exactly once, in order per pair, on both monoio drivers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use monoio::io::AsyncReadRent;
use veza_dataplane::ring_mesh::{self, MeshEndpoint, MeshShared};

const SHARD_COUNT: usize = 4;
const MESSAGES_PER_PAIR: u64 = 300_000;
const RING_CAPACITY: usize = 512;
const SEND_BURST_MAX: u64 = 700;

fn encode(source: usize, sequence: u64) -> u64 {
    ((source as u64) << 48) | sequence
}

#[derive(Default)]
struct ShardReport {
    received_per_source: Vec<u64>,
    full_events: u64,
    doorbell_sleeps: u64,
}

async fn run_shard(mut endpoint: MeshEndpoint<u64>, shared: Arc<MeshShared<u64>>) -> ShardReport {
    let me = endpoint.shard_idx();
    let doorbell = shared.doorbell(me).take_reader().unwrap();
    let mut doorbell = monoio::net::UnixStream::from_std(doorbell).unwrap();
    let mut scratch = vec![0u8; 64];
    let mut sent = [0u64; SHARD_COUNT];
    let mut report = ShardReport {
        received_per_source: vec![0; SHARD_COUNT],
        ..ShardReport::default()
    };
    sent[me] = MESSAGES_PER_PAIR;
    report.received_per_source[me] = MESSAGES_PER_PAIR;
    loop {
        let mut blocked_by_full_ring = false;
        for destination in (0..SHARD_COUNT).filter(|&d| d != me) {
            let burst_end = (sent[destination] + SEND_BURST_MAX).min(MESSAGES_PER_PAIR);
            while sent[destination] < burst_end {
                match endpoint.send(destination, encode(me, sent[destination])) {
                    Ok(()) => sent[destination] += 1,
                    Err(full) => {
                        assert_eq!(
                            full.message,
                            encode(me, sent[destination]),
                            "the refused message comes back"
                        );
                        report.full_events += 1;
                        blocked_by_full_ring = true;
                        break;
                    }
                }
            }
        }
        endpoint.flush();
        let received = &mut report.received_per_source;
        let handled = endpoint.drain(256, |source, message| {
            assert_eq!(
                message >> 48,
                source as u64,
                "message from the ring of its sender"
            );
            assert_eq!(
                message & 0xFFFF_FFFF_FFFF,
                received[source],
                "in order per pair, none lost"
            );
            received[source] += 1;
        });
        let all_sent = sent.iter().all(|&count| count == MESSAGES_PER_PAIR);
        let all_received = received.iter().all(|&count| count == MESSAGES_PER_PAIR);
        if all_sent && all_received {
            return report;
        }
        if handled > 0 {
            continue;
        }
        if !all_sent && blocked_by_full_ring {
            // A full ring is the receiver's to drain; back off briefly.
            monoio::time::sleep(Duration::from_micros(50)).await;
        } else if all_sent && endpoint.prepare_to_sleep() {
            report.doorbell_sleeps += 1;
            let (result, returned) = doorbell.read(scratch).await;
            scratch = returned;
            result.unwrap();
            endpoint.woke_up();
        }
    }
}

fn stress(force_legacy: bool) {
    let (shared, endpoints) = ring_mesh::build::<u64>(SHARD_COUNT, RING_CAPACITY).unwrap();
    let threads: Vec<_> = endpoints
        .into_iter()
        .map(|endpoint| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                if force_legacy {
                    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()
                        .unwrap()
                        .block_on(run_shard(endpoint, shared))
                } else {
                    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                        .enable_timer()
                        .build()
                        .unwrap()
                        .block_on(run_shard(endpoint, shared))
                }
            })
        })
        .collect();
    let reports: Vec<ShardReport> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for report in &reports {
        assert!(report
            .received_per_source
            .iter()
            .all(|&n| n == MESSAGES_PER_PAIR));
    }
    let mut full_total = 0;
    for from in 0..SHARD_COUNT {
        for to in (0..SHARD_COUNT).filter(|&to| to != from) {
            let counters = shared.ring_counters(from, to);
            assert_eq!(
                counters.sent_total.load(Ordering::Relaxed),
                MESSAGES_PER_PAIR
            );
            assert_eq!(shared.ring_depth(from, to), 0, "every ring drained");
            full_total += counters.full_total.load(Ordering::Relaxed);
        }
    }
    let full_events: u64 = reports.iter().map(|r| r.full_events).sum();
    assert_eq!(
        full_total, full_events,
        "every full-ring refusal is counted"
    );
    assert!(
        full_events > 0,
        "rings this small must fill up during the run"
    );
}

#[test]
fn millions_of_messages_cross_every_pair_in_order_on_io_uring() {
    stress(false);
}

#[test]
fn millions_of_messages_cross_every_pair_in_order_on_epoll() {
    stress(true);
}
