//! What `live-listeners` reports: one row per server, Veza over the peer,
//! the targets with met / not met, the tables and the JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::load_generator::latency::LatencySummary;
use crate::report::{finite_ratio, MachineDescription, VEZA_SERVER};

/// Target: this many listeners with no stall and no eviction.
pub const TARGET_LISTENERS: usize = 10_000;

/// Target: server RSS per listener at most this, bytes.
pub const TARGET_RSS_BYTES_PER_LISTENER: f64 = 8192.0;

/// Target: time to first byte, P99, at most this, µs.
pub const TARGET_TTFB_P99_US: u64 = 10_000;

/// Target: Veza's server CPU per listener at most this share of the peer's.
pub const TARGET_CPU_SHARE_OF_PEER: f64 = 0.5;

/// One target against one measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetCheck {
    /// The target, in words.
    pub target: String,
    /// What was measured, in words.
    pub measured: String,
    /// Whether it was met; `None` when the run cannot tell.
    pub met: Option<bool>,
}

/// One server under one listener ramp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveRunReport {
    /// `veza` or `icecast2`.
    pub server: String,
    /// Data-plane shards; the CPUs icecast2 is pinned to are as many.
    pub shards: usize,
    /// The CPUs the server was pinned to.
    pub server_cpus: String,
    /// The CPUs of the listener processes and the source (empty: unpinned).
    pub client_cpus: String,
    /// Listener processes.
    pub client_processes: usize,
    /// The source command line (password hidden).
    pub source_command: String,
    /// The source's bitrate, kb/s.
    pub bitrate_kbps: u32,
    /// What listeners request.
    pub listener_path: String,
    /// Server settings that shape the comparison (icecast2: queue and
    /// burst sizes).
    pub server_settings: BTreeMap<String, String>,
    /// Listeners asked for.
    pub listeners_requested: usize,
    /// New listeners per second.
    pub ramp_per_second: f64,
    /// Seconds listened after the last listener's start.
    pub hold_secs: f64,
    /// Audio a player buffers before playing, ms.
    pub playout_start_ms: u64,
    /// Listeners answered `200 audio/ogg`.
    pub listeners_connected: usize,
    /// Connect start → first response byte.
    pub ttfb: LatencySummary,
    /// Connect start → first complete audio page.
    pub time_to_first_audio: LatencySummary,
    /// How late the clients started connecting against the timetable (the
    /// load generator's lag, not the server's).
    pub schedule_lag: LatencySummary,
    /// Times a listener's buffer ran dry.
    pub stalls: u64,
    /// Listeners with at least one stall.
    pub listeners_with_stall: usize,
    /// Rebuffering time after stalls, ms, all listeners.
    pub stalled_ms: f64,
    /// Listeners whose buffer never filled enough to play.
    pub never_played: usize,
    /// Granule discontinuities.
    pub discontinuities: u64,
    /// Listeners the server ended: closed, reset, or a non-200 status.
    pub evictions: usize,
    /// Those by kind.
    pub eviction_counts: BTreeMap<String, usize>,
    /// Listeners that failed on the client side or got a broken answer.
    pub errors: usize,
    /// Those by kind.
    pub error_counts: BTreeMap<String, usize>,
    /// The first eviction or error, as text.
    pub first_failure: Option<String>,
    /// Bytes received by all listeners.
    pub bytes_received: u64,
    /// Ogg pages received by all listeners.
    pub pages_received: u64,
    /// Sum of the seconds each listener was connected.
    pub listener_secs: f64,
    /// The measured window (before the first listener → end), seconds.
    pub window_secs: f64,
    /// Server CPU seconds over the window.
    pub server_cpu_secs: f64,
    /// Server CPU seconds per second with the source and no listener
    /// (sampled over a quiet second before the window).
    pub server_cpu_secs_per_sec_idle: f64,
    /// `server_cpu_secs / listener_secs`.
    pub cpu_secs_per_listener_sec: Option<f64>,
    /// The same with the idle rate over the window subtracted: the
    /// listeners' own cost (the targets use this one).
    pub cpu_secs_per_listener_sec_net: Option<f64>,
    /// Server RSS before the first listener, KiB.
    pub server_rss_before_kib: u64,
    /// Server RSS at the end of the window, listeners still connected, KiB.
    pub server_rss_end_kib: u64,
    /// Highest server RSS sampled (every 250 ms) during the window, KiB.
    pub server_rss_peak_kib: u64,
    /// (RSS end − RSS before) ÷ listeners connected, bytes.
    pub rss_bytes_per_listener: Option<f64>,
    /// Veza's control plane CPU seconds over the window.
    pub control_plane_cpu_secs: Option<f64>,
    /// Veza's control plane RSS at the end, KiB.
    pub control_plane_rss_end_kib: Option<u64>,
    /// The listener processes' CPU seconds.
    pub load_generator_cpu_secs: f64,
    /// The targets for this run.
    pub targets: Vec<TargetCheck>,
}

/// Veza over the peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveRatioReport {
    /// The peer.
    pub peer: String,
    /// Listeners of both runs.
    pub listeners: usize,
    /// Net CPU seconds per listener-second, Veza over peer.
    pub veza_over_peer_cpu_per_listener_sec: Option<f64>,
    /// RSS per listener, Veza over peer.
    pub veza_over_peer_rss_per_listener: Option<f64>,
    /// TTFB P99, Veza over peer.
    pub veza_over_peer_ttfb_p99: Option<f64>,
    /// Time to first audio P99, Veza over peer.
    pub veza_over_peer_first_audio_p99: Option<f64>,
    /// The CPU target.
    pub target: TargetCheck,
}

/// A whole invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveListenersReport {
    /// `live-listeners`.
    pub scenario: String,
    /// The command line.
    pub command_line: Vec<String>,
    /// The machine.
    pub machine: MachineDescription,
    /// One row per server run.
    pub runs: Vec<LiveRunReport>,
    /// Veza over each peer run with the same listeners.
    pub ratios: Vec<LiveRatioReport>,
}

impl LiveListenersReport {
    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json + "\n")
    }
}

/// The per-run targets.
pub fn run_targets(run: &LiveRunReport) -> Vec<TargetCheck> {
    let clean = run.stalls == 0 && run.evictions == 0 && run.errors == 0;
    let listeners = TargetCheck {
        target: format!("{TARGET_LISTENERS} listeners, 0 stalls, 0 evictions"),
        measured: format!(
            "{} listeners, {} stalls, {} evictions, {} errors",
            run.listeners_connected, run.stalls, run.evictions, run.errors
        ),
        met: Some(run.listeners_connected >= TARGET_LISTENERS && clean),
    };
    let rss = TargetCheck {
        target: format!("RSS per listener <= {TARGET_RSS_BYTES_PER_LISTENER} B"),
        measured: run
            .rss_bytes_per_listener
            .map_or_else(|| "-".into(), |bytes| format!("{bytes:.0} B")),
        met: run
            .rss_bytes_per_listener
            .map(|bytes| bytes <= TARGET_RSS_BYTES_PER_LISTENER),
    };
    let ttfb = TargetCheck {
        target: format!("TTFB P99 <= {} ms", TARGET_TTFB_P99_US / 1000),
        measured: format!("{:.2} ms", run.ttfb.p99_us as f64 / 1000.0),
        met: (run.listeners_connected > 0).then_some(run.ttfb.p99_us <= TARGET_TTFB_P99_US),
    };
    vec![listeners, rss, ttfb]
}

/// Pairs each peer run with the Veza run of the same listeners.
pub fn ratios(runs: &[LiveRunReport]) -> Vec<LiveRatioReport> {
    let veza_runs: Vec<&LiveRunReport> = runs
        .iter()
        .filter(|run| run.server == VEZA_SERVER)
        .collect();
    runs.iter()
        .filter(|run| run.server != VEZA_SERVER)
        .filter_map(|peer| {
            let veza = veza_runs
                .iter()
                .find(|veza| veza.listeners_requested == peer.listeners_requested)?;
            let cpu_ratio = finite_ratio(
                veza.cpu_secs_per_listener_sec_net,
                peer.cpu_secs_per_listener_sec_net,
            );
            let p99 = |run: &LiveRunReport| Some(run.ttfb.p99_us as f64);
            let audio_p99 = |run: &LiveRunReport| Some(run.time_to_first_audio.p99_us as f64);
            Some(LiveRatioReport {
                peer: peer.server.clone(),
                listeners: peer.listeners_requested,
                veza_over_peer_cpu_per_listener_sec: cpu_ratio,
                veza_over_peer_rss_per_listener: finite_ratio(
                    veza.rss_bytes_per_listener,
                    peer.rss_bytes_per_listener,
                ),
                veza_over_peer_ttfb_p99: finite_ratio(p99(veza), p99(peer)),
                veza_over_peer_first_audio_p99: finite_ratio(audio_p99(veza), audio_p99(peer)),
                target: TargetCheck {
                    target: format!(
                        "Veza CPU per listener <= {TARGET_CPU_SHARE_OF_PEER} x {}'s",
                        peer.server
                    ),
                    measured: cpu_ratio.map_or_else(|| "-".into(), |ratio| format!("{ratio:.2} x")),
                    met: cpu_ratio.map(|ratio| ratio <= TARGET_CPU_SHARE_OF_PEER),
                },
            })
        })
        .collect()
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |value| format!("{value:.decimals$}"))
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

/// The human tables: runs, latency, cost, targets and ratios.
pub fn render(runs: &[LiveRunReport], ratios: &[LiveRatioReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>6} {:>7} {:>6} {:>6} {:>6} {:>6} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "server", "lsnrs", "conn", "stalls", "s_lsnr", "evict", "errors", "MiB_recv",
        "ttfb50", "ttfb90", "ttfb99", "ttfb999", "ttfbmax", "audio50", "audio99"
    );
    for run in runs {
        let _ = writeln!(
            out,
            "{:<8} {:>6} {:>7} {:>6} {:>6} {:>6} {:>6} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.1} {:>9.1}",
            run.server, run.listeners_requested, run.listeners_connected, run.stalls,
            run.listeners_with_stall, run.evictions, run.errors,
            run.bytes_received as f64 / (1024.0 * 1024.0),
            ms(run.ttfb.p50_us), ms(run.ttfb.p90_us), ms(run.ttfb.p99_us), ms(run.ttfb.p999_us),
            ms(run.ttfb.max_us), ms(run.time_to_first_audio.p50_us), ms(run.time_to_first_audio.p99_us),
        );
    }
    let _ = writeln!(
        out,
        "(latencies in ms; audio = time to first audio page; s_lsnr = listeners with a stall)\n"
    );
    let _ = writeln!(
        out,
        "{:<8} {:>8} {:>7} {:>9} {:>13} {:>13} {:>9} {:>9} {:>9} {:>10} {:>8} {:>9}",
        "server",
        "window_s",
        "cpu_s",
        "idle_cpu%",
        "cpu_us/lsnr_s",
        "net_us/lsnr_s",
        "rss0_MiB",
        "rssend_MiB",
        "peak_MiB",
        "B/listener",
        "load_s",
        "lag99_ms"
    );
    for run in runs {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let us = |value: Option<f64>| optional(value.map(|secs| secs * 1e6), 1);
        let _ = writeln!(
            out,
            "{:<8} {:>8.1} {:>7.2} {:>9.1} {:>13} {:>13} {:>9.1} {:>9.1} {:>9.1} {:>10} {:>8.2} {:>9.1}",
            run.server, run.window_secs, run.server_cpu_secs, 100.0 * run.server_cpu_secs_per_sec_idle,
            us(run.cpu_secs_per_listener_sec), us(run.cpu_secs_per_listener_sec_net),
            mib(run.server_rss_before_kib), mib(run.server_rss_end_kib), mib(run.server_rss_peak_kib),
            optional(run.rss_bytes_per_listener, 0), run.load_generator_cpu_secs, ms(run.schedule_lag.p99_us),
        );
    }
    let _ = writeln!(out, "\nTargets (issue #5):");
    for run in runs {
        for check in &run.targets {
            let _ = writeln!(
                out,
                "  {:<8} {:<40} {:<44} {}",
                run.server,
                check.target,
                check.measured,
                verdict(check.met)
            );
        }
    }
    for ratio in ratios {
        let check = &ratio.target;
        let _ = writeln!(
            out,
            "  {:<8} {:<40} {:<44} {}",
            "veza",
            check.target,
            check.measured,
            verdict(check.met)
        );
    }
    if !ratios.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<8} {:>6} {:>16} {:>16} {:>14} {:>15}",
            "peer", "lsnrs", "veza/peer_cpu", "veza/peer_rss", "veza/peer_ttfb", "veza/peer_audio"
        );
        for ratio in ratios {
            let _ = writeln!(
                out,
                "{:<8} {:>6} {:>16} {:>16} {:>14} {:>15}",
                ratio.peer,
                ratio.listeners,
                optional(ratio.veza_over_peer_cpu_per_listener_sec, 2),
                optional(ratio.veza_over_peer_rss_per_listener, 2),
                optional(ratio.veza_over_peer_ttfb_p99, 2),
                optional(ratio.veza_over_peer_first_audio_p99, 2),
            );
        }
    }
    out
}
