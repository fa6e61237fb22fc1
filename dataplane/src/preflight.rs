//! Start-up checks of the machine against the configuration: io_uring
//! availability, RLIMIT_NOFILE and RLIMIT_MEMLOCK, somaxconn, the CPU
//! affinity mask, transparent huge pages. The data plane logs them at start;
//! `veza-dataplane --preflight` prints them with the fix for each (and
//! `tuning/preflight.sh` runs that).
//!
//! Each check reads only `/proc`, `/sys` and `getrlimit`; none changes anything.

use std::fmt;

use crate::config::Config;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Fine.
    Pass,
    /// Works, but not as well as it could.
    Warn,
    /// Will not work as configured.
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        })
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name, e.g. `nofile`.
    pub name: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// What was found.
    pub finding: String,
    /// How to fix it (empty on pass).
    pub fix: String,
}

impl Check {
    fn new(
        name: &'static str,
        verdict: Verdict,
        finding: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name,
            verdict,
            finding: finding.into(),
            fix: fix.into(),
        }
    }
}

/// Facts read from the machine, separated from the judging so the judging is
/// testable with any facts.
#[derive(Debug, Clone, Default)]
pub struct MachineFacts {
    /// `kernel.io_uring_disabled`: 0 allowed, 1 restricted to a group, 2 disabled.
    pub io_uring_disabled: Option<u32>,
    /// `Seccomp:` of /proc/self/status: 0 none, 1 strict, 2 filter.
    pub seccomp_mode: Option<u32>,
    /// Whether an io_uring instance could be created and probed.
    pub io_uring_probe_ok: bool,
    /// Soft RLIMIT_NOFILE.
    pub nofile_soft: u64,
    /// Soft RLIMIT_MEMLOCK in bytes (u64::MAX = unlimited).
    pub memlock_soft_bytes: u64,
    /// `net.core.somaxconn`.
    pub somaxconn: Option<u64>,
    /// CPUs in the affinity mask.
    pub affinity_cpus: usize,
    /// Online CPUs.
    pub online_cpus: usize,
    /// The bracketed mode of /sys/kernel/mm/transparent_hugepage/enabled.
    pub transparent_hugepages: Option<String>,
}

impl MachineFacts {
    /// Reads the facts of this machine and process.
    pub fn read() -> Self {
        let read_number =
            |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
        let seccomp_mode = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("Seccomp:"))
                    .and_then(|value| value.trim().parse().ok())
            });
        let transparent_hugepages =
            std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
                .ok()
                .and_then(|text| {
                    let start = text.find('[')?;
                    let end = text[start..].find(']')? + start;
                    Some(text[start + 1..end].to_string())
                });
        Self {
            io_uring_disabled: read_number("/proc/sys/kernel/io_uring_disabled").map(|v| v as u32),
            seccomp_mode,
            io_uring_probe_ok: monoio::utils::detect_uring(),
            nofile_soft: rlimit(libc::RLIMIT_NOFILE),
            memlock_soft_bytes: rlimit(libc::RLIMIT_MEMLOCK),
            somaxconn: read_number("/proc/sys/net/core/somaxconn"),
            affinity_cpus: crate::shard::affinity_cpus().len(),
            online_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            transparent_hugepages,
        }
    }
}

fn rlimit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return 0;
    }
    limit.rlim_cur
}

/// File descriptors a shard needs beyond its connections: listener, doorbell,
/// io_uring, timers, logs.
const FDS_PER_SHARD_OVERHEAD: u64 = 16;

/// Judges `facts` against `config`.
pub fn evaluate(config: &Config, facts: &MachineFacts) -> Vec<Check> {
    let shard_count = if config.server.shards == 0 {
        facts.affinity_cpus.max(1)
    } else {
        config.server.shards
    } as u64;
    vec![
        check_io_uring(facts),
        check_nofile(config, facts, shard_count),
        check_memlock(facts),
        check_somaxconn(config, facts),
        check_affinity(facts, shard_count),
        check_transparent_hugepages(facts),
    ]
}

fn check_io_uring(facts: &MachineFacts) -> Check {
    let forced_legacy = std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
        .is_ok_and(|value| matches!(value.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    if facts.io_uring_probe_ok {
        return Check::new(
            "io_uring",
            Verdict::Pass,
            "io_uring available; shards use it",
            "",
        );
    }
    let why = if forced_legacy {
        "MONOIO_FORCE_LEGACY_DRIVER is set".to_string()
    } else if facts.io_uring_disabled.unwrap_or(0) > 0 {
        format!(
            "kernel.io_uring_disabled = {}",
            facts.io_uring_disabled.unwrap_or(0)
        )
    } else if facts.seccomp_mode.unwrap_or(0) > 0 {
        "a seccomp filter blocks io_uring_setup (the default container profile does)".to_string()
    } else {
        "the kernel lacks io_uring or the needed opcodes".to_string()
    };
    Check::new(
        "io_uring",
        Verdict::Warn,
        format!("io_uring unavailable ({why}); shards run the epoll driver"),
        "sysctl -w kernel.io_uring_disabled=0, or run the container with deploy/seccomp-io-uring.json",
    )
}

fn check_nofile(config: &Config, facts: &MachineFacts, shard_count: u64) -> Check {
    let kept_files = if config.tracks.is_enabled() {
        config.tracks.open_files_max as u64
    } else {
        0
    };
    let needed = shard_count
        * (config.limits.connections_per_shard_max as u64 + kept_files + FDS_PER_SHARD_OVERHEAD);
    let finding = format!(
        "RLIMIT_NOFILE {} for {} shards x ({} connections + {kept_files} kept track files) (needs {needed})",
        facts.nofile_soft, shard_count, config.limits.connections_per_shard_max
    );
    if facts.nofile_soft >= needed {
        Check::new("nofile", Verdict::Pass, finding, "")
    } else {
        Check::new(
            "nofile",
            Verdict::Warn,
            finding,
            format!("ulimit -n {needed} (LimitNOFILE= in the systemd unit), or lower limits.connections_per_shard_max or tracks.open_files_max"),
        )
    }
}

fn check_memlock(facts: &MachineFacts) -> Check {
    // Kernels since 5.12 charge io_uring rings to the memory cgroup instead;
    // older ones need about 64 KiB per ring of 1024 entries.
    const MEMLOCK_BYTES_MIN: u64 = 8 << 20;
    let shown = if facts.memlock_soft_bytes == u64::MAX {
        "unlimited".to_string()
    } else {
        format!("{} KiB", facts.memlock_soft_bytes / 1024)
    };
    if facts.memlock_soft_bytes >= MEMLOCK_BYTES_MIN {
        Check::new(
            "memlock",
            Verdict::Pass,
            format!("RLIMIT_MEMLOCK {shown}"),
            "",
        )
    } else {
        Check::new(
            "memlock",
            Verdict::Warn,
            format!("RLIMIT_MEMLOCK {shown}; kernels before 5.12 may refuse io_uring rings"),
            "ulimit -l unlimited (LimitMEMLOCK=infinity in the systemd unit)",
        )
    }
}

fn check_somaxconn(config: &Config, facts: &MachineFacts) -> Check {
    let backlog = u64::from(config.server.accept_backlog);
    match facts.somaxconn {
        Some(somaxconn) if somaxconn >= backlog => Check::new(
            "somaxconn",
            Verdict::Pass,
            format!("net.core.somaxconn {somaxconn} >= server.accept_backlog {backlog}"),
            "",
        ),
        Some(somaxconn) => Check::new(
            "somaxconn",
            Verdict::Warn,
            format!("net.core.somaxconn {somaxconn} caps server.accept_backlog {backlog}"),
            format!("sysctl -w net.core.somaxconn={backlog} (tuning/apply.sh)"),
        ),
        None => Check::new(
            "somaxconn",
            Verdict::Warn,
            "net.core.somaxconn unreadable",
            "check /proc/sys/net/core/somaxconn",
        ),
    }
}

fn check_affinity(facts: &MachineFacts, shard_count: u64) -> Check {
    let finding = format!(
        "{} shards on {} CPUs in the affinity mask ({} online)",
        shard_count, facts.affinity_cpus, facts.online_cpus
    );
    if shard_count <= facts.affinity_cpus as u64 {
        Check::new("cpus", Verdict::Pass, finding, "")
    } else {
        Check::new(
            "cpus",
            Verdict::Warn,
            finding,
            "set server.shards to at most the CPUs in the mask (0 = one per CPU), or widen the mask (taskset, CPUAffinity=)",
        )
    }
}

fn check_transparent_hugepages(facts: &MachineFacts) -> Check {
    match facts.transparent_hugepages.as_deref() {
        Some("always") => Check::new(
            "transparent_hugepages",
            Verdict::Warn,
            "transparent huge pages: always (khugepaged compaction can stall a shard)",
            "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (tuning/apply.sh)",
        ),
        Some(mode) => Check::new(
            "transparent_hugepages",
            Verdict::Pass,
            format!("transparent huge pages: {mode}"),
            "",
        ),
        None => Check::new(
            "transparent_hugepages",
            Verdict::Pass,
            "transparent huge pages: not available",
            "",
        ),
    }
}

/// Logs every check (at start).
pub fn log_checks(checks: &[Check]) {
    for check in checks {
        match check.verdict {
            Verdict::Pass => {
                tracing::info!(check = check.name, finding = %check.finding, "preflight pass")
            }
            Verdict::Warn => {
                tracing::warn!(check = check.name, finding = %check.finding, fix = %check.fix, "preflight warn")
            }
            Verdict::Fail => {
                tracing::error!(check = check.name, finding = %check.finding, fix = %check.fix, "preflight fail")
            }
        }
    }
}

/// Prints the checks for a person, one per line, with fixes.
pub fn print_checks(checks: &[Check]) {
    for check in checks {
        println!("{:<5} {:<22} {}", check.verdict, check.name, check.finding);
        if !check.fix.is_empty() {
            println!("      {:<22} fix: {}", "", check.fix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> MachineFacts {
        MachineFacts {
            io_uring_disabled: Some(0),
            seccomp_mode: Some(0),
            io_uring_probe_ok: true,
            nofile_soft: 1 << 20,
            memlock_soft_bytes: u64::MAX,
            somaxconn: Some(65535),
            affinity_cpus: 4,
            online_cpus: 4,
            transparent_hugepages: Some("madvise".into()),
        }
    }

    fn verdict_of(checks: &[Check], name: &str) -> Verdict {
        checks
            .iter()
            .find(|check| check.name == name)
            .unwrap()
            .verdict
    }

    #[test]
    fn a_healthy_machine_passes_every_check() {
        let checks = evaluate(&Config::default(), &healthy());
        assert!(
            checks.iter().all(|check| check.verdict == Verdict::Pass),
            "{checks:?}"
        );
    }

    #[test]
    fn kept_track_files_count_against_the_open_files_limit() {
        let mut config = Config::default();
        let mut facts = healthy();
        facts.nofile_soft =
            4 * (config.limits.connections_per_shard_max as u64 + FDS_PER_SHARD_OVERHEAD + 10);
        assert_eq!(check_nofile(&config, &facts, 4).verdict, Verdict::Pass);
        config.tracks.media_dir = "/srv/veza/media".into();
        let check = check_nofile(&config, &facts, 4);
        assert_eq!(check.verdict, Verdict::Warn, "{check:?}");
        assert!(check.fix.contains("tracks.open_files_max"));
    }

    #[test]
    fn each_shortfall_warns_with_a_fix() {
        type Spoil = fn(&mut MachineFacts);
        let cases: [(&str, Spoil); 5] = [
            ("nofile", |facts| facts.nofile_soft = 1024),
            ("memlock", |facts| facts.memlock_soft_bytes = 64 * 1024),
            ("somaxconn", |facts| facts.somaxconn = Some(128)),
            ("transparent_hugepages", |facts| {
                facts.transparent_hugepages = Some("always".into())
            }),
            ("io_uring", |facts| {
                facts.io_uring_probe_ok = false;
                facts.io_uring_disabled = Some(2);
            }),
        ];
        for (name, spoil) in cases {
            let mut facts = healthy();
            spoil(&mut facts);
            let checks = evaluate(&Config::default(), &facts);
            assert_eq!(verdict_of(&checks, name), Verdict::Warn, "{name}");
            let check = checks.iter().find(|check| check.name == name).unwrap();
            assert!(!check.fix.is_empty(), "{name} must say how to fix it");
        }
    }

    #[test]
    fn more_shards_than_cpus_warns() {
        let mut config = Config::default();
        config.server.shards = 8;
        let checks = evaluate(&config, &healthy());
        assert_eq!(verdict_of(&checks, "cpus"), Verdict::Warn);
    }
}
