//! What the numbers were measured on: CPUs, their model, the kernel, memory.

use serde::{Deserialize, Serialize};

/// The machine a report was made on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineDescription {
    /// Online CPUs (`nproc`).
    pub nproc: usize,
    /// The first `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// `MemTotal` of `/proc/meminfo`, in KiB.
    pub memory_total_kib: u64,
}

impl MachineDescription {
    /// Reads the description from `/proc`; unknown fields read as
    /// `unknown` or 0 rather than failing a benchmark.
    pub fn read() -> MachineDescription {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        MachineDescription {
            nproc: std::thread::available_parallelism().map_or(0, |n_cpus| n_cpus.get()),
            cpu_model: parse_cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            kernel: non_empty(kernel.trim()),
            memory_total_kib: parse_memory_total_kib(&meminfo).unwrap_or(0),
        }
    }
}

fn non_empty(text: &str) -> String {
    if text.is_empty() {
        "unknown".into()
    } else {
        text.into()
    }
}

fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "model name")
        .map(|(_, value)| value.trim().to_string())
}

fn parse_memory_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_and_memory_are_read_from_proc_text() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n";
        assert_eq!(
            parse_cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R)")
        );
        assert_eq!(
            parse_memory_total_kib("MemTotal:       24576000 kB\n"),
            Some(24_576_000)
        );
    }

    #[test]
    fn this_machine_describes_itself() {
        let machine = MachineDescription::read();
        assert!(machine.nproc >= 1);
        assert_ne!(machine.kernel, "unknown");
    }
}
