//! The live stream's per-second CPU cost on the owner shard: the DSP chain
//! (`veza_codec::dsp::DspChain`) and the Opus ladder
//! (`veza_codec::opus_ladder::OpusLadder`), on one second of stereo 48 kHz
//! audio per iteration (a deterministic mix of tones and noise).
//!
//! Budget: one live stream may cost at most 5% of one core, so
//! `live_chain/chain_and_ladder` must stay **under 50 ms per iteration**
//! (50 ms of CPU per second of audio). The other lines show where the time
//! goes.
//!
//! Group `live_chain` (throughput: 48 000 frames per iteration):
//! - `chain_vectorised`: `DspChain::process` with every stage on (EQ bands
//!   non-zero, compressor, loudness target, true-peak limiter);
//! - `chain_scalar`: `DspChain::process_scalar`, the reference path;
//! - `ladder_64_96_160`: `OpusLadder::push_pcm` at 64, 96 and 160 kb/s;
//! - `chain_and_ladder`: both, as the shard runs them.
//!
//! The chain works in place, so each iteration first copies the second of
//! input into a reused buffer (a 384 KB memcpy, tens of microseconds, about
//! a thousandth of the chain's time). The chain and ladder keep their state
//! across iterations, as they would on a stream.
//!
//! Run: `cargo bench -p veza-bench --bench live_chain` (add `-- --quick`
//! for a short run).

use std::f64::consts::TAU;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use veza_codec::dsp::{CompressorConfig, DspChain, DspConfig};
use veza_codec::opus_ladder::{OpusLadder, DEFAULT_BITRATES_KBPS};

const SAMPLE_RATE_HZ: u32 = 48_000;
const CHANNEL_COUNT: u8 = 2;
const FRAME_COUNT: usize = SAMPLE_RATE_HZ as usize;

/// One second of a loud stereo mix: a decaying kick, a chord, a hi-hat-like
/// tone and xorshift noise, different in each channel.
fn one_second_of_music() -> Vec<f32> {
    let mut state = 0x9e37_79b9u32;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        f64::from(state) / f64::from(u32::MAX) * 2.0 - 1.0
    };
    let mut samples = Vec::with_capacity(FRAME_COUNT * 2);
    for frame_idx in 0..FRAME_COUNT {
        let time_s = frame_idx as f64 / f64::from(SAMPLE_RATE_HZ);
        let kick = (-(time_s % 0.5) * 30.0).exp() * (TAU * 55.0 * time_s).sin();
        let chord: f64 = [220.0, 277.18, 329.63]
            .iter()
            .map(|frequency_hz| (TAU * frequency_hz * time_s).sin())
            .sum();
        let hat = 0.05 * (TAU * 7_040.0 * time_s).sin();
        for channel_idx in 0..2 {
            let spread = 1.0 + 0.2 * channel_idx as f64;
            let value = 0.5 * kick + 0.15 * chord + hat + 0.1 * spread * noise();
            samples.push(value as f32);
        }
    }
    samples
}

/// Every stage on, as a broadcaster with a "radio" preset would run it.
fn full_chain_config() -> DspConfig {
    let mut config = DspConfig {
        gain_db: 3.0,
        compressor: Some(CompressorConfig::default()),
        loudness_target_lufs: Some(-16.0),
        ..DspConfig::default()
    };
    config.eq.low_shelf_gain_db = 3.0;
    config.eq.mid_gain_db = -2.0;
    config.eq.high_shelf_gain_db = 2.0;
    config
}

fn new_chain() -> DspChain {
    DspChain::new(&full_chain_config(), SAMPLE_RATE_HZ, CHANNEL_COUNT).expect("valid chain")
}

fn new_ladder() -> OpusLadder {
    OpusLadder::new(&DEFAULT_BITRATES_KBPS, CHANNEL_COUNT).expect("valid ladder")
}

fn live_chain(criterion: &mut Criterion) {
    let input = one_second_of_music();
    let mut buffer = input.clone();
    let mut group = criterion.benchmark_group("live_chain");
    group.throughput(Throughput::Elements(FRAME_COUNT as u64));

    let mut chain = new_chain();
    group.bench_function("chain_vectorised", |bencher| {
        bencher.iter(|| {
            buffer.copy_from_slice(&input);
            chain.process(black_box(&mut buffer));
        })
    });
    let mut chain = new_chain();
    group.bench_function("chain_scalar", |bencher| {
        bencher.iter(|| {
            buffer.copy_from_slice(&input);
            chain.process_scalar(black_box(&mut buffer));
        })
    });
    let mut ladder = new_ladder();
    let mut packet_byte_count = 0usize;
    group.bench_function("ladder_64_96_160", |bencher| {
        bencher.iter(|| {
            ladder
                .push_pcm(black_box(&input), &mut |_, packet, _| {
                    packet_byte_count += packet.len()
                })
                .expect("encodes")
        })
    });
    let (mut chain, mut ladder) = (new_chain(), new_ladder());
    group.bench_function("chain_and_ladder", |bencher| {
        bencher.iter(|| {
            buffer.copy_from_slice(&input);
            chain.process(&mut buffer);
            ladder
                .push_pcm(&buffer, &mut |_, packet, _| {
                    packet_byte_count += packet.len()
                })
                .expect("encodes")
        })
    });
    group.finish();
    black_box(packet_byte_count);
}

fn main() {
    let mut criterion = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    live_chain(&mut criterion);
    criterion.final_summary();
}
