//! CPU time and memory read from `/proc`: one process's, and the whole
//! machine's, so a report can say how much CPU the server, the load
//! generator and everything else used over the same window.

use std::fmt;

/// A process's CPU time and memory at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU seconds since the process started, all threads.
    pub cpu_secs: f64,
    /// Resident set size in KiB.
    pub rss_kib: u64,
}

/// The machine's CPU time at one instant, summed over all CPUs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineSample {
    /// user + nice + system seconds: time charged to tasks.
    pub task_secs: f64,
    /// irq + softirq seconds: time charged to no task. Loopback TCP does
    /// much of its receive work in softirq.
    pub interrupt_secs: f64,
    /// steal seconds: time the hypervisor gave this VM's CPUs to others.
    pub steal_secs: f64,
}

/// `/proc` held something unexpected or could not be read.
#[derive(Debug)]
pub struct ProcError(String);

impl fmt::Display for ProcError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for ProcError {}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|error| ProcError(format!("read {path}: {error}")))
}

/// Samples process `pid` (`/proc/PID/stat` and `/proc/PID/status`).
pub fn process_sample(pid: u32) -> Result<ProcessSample, ProcError> {
    let stat = read(&format!("/proc/{pid}/stat"))?;
    let status = read(&format!("/proc/{pid}/status"))?;
    let cpu_ticks = parse_cpu_ticks(&stat)?;
    Ok(ProcessSample {
        cpu_secs: cpu_ticks as f64 / clock_ticks_per_second(),
        rss_kib: parse_rss_kib(&status)?,
    })
}

/// Samples the machine (`/proc/stat`, the `cpu` line).
pub fn machine_sample() -> Result<MachineSample, ProcError> {
    parse_machine_sample(&read("/proc/stat")?)
}

/// `utime + stime` in clock ticks, from the text of `/proc/PID/stat`.
pub fn parse_cpu_ticks(stat: &str) -> Result<u64, ProcError> {
    // The command name (field 2) may hold spaces and parentheses; every
    // later field follows the last ')'. Field 3 (state) is index 0 there,
    // so utime (field 14) is index 11 and stime (field 15) index 12.
    let after_name = stat
        .rfind(')')
        .map(|paren_idx| &stat[paren_idx + 1..])
        .ok_or_else(|| ProcError("stat without ')'".into()))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |field_idx: usize| -> Result<u64, ProcError> {
        fields
            .get(field_idx)
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| ProcError(format!("stat field {}", field_idx + 3)))
    };
    Ok(field(11)? + field(12)?)
}

/// `VmRSS` in KiB, from the text of `/proc/PID/status`.
pub fn parse_rss_kib(status: &str) -> Result<u64, ProcError> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| ProcError("status without VmRSS".into()))
}

fn parse_machine_sample(proc_stat: &str) -> Result<MachineSample, ProcError> {
    let ticks: Vec<u64> = proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))
        .ok_or_else(|| ProcError("/proc/stat without a cpu line".into()))?
        .split_whitespace()
        .map(|field| {
            field
                .parse()
                .map_err(|_| ProcError(format!("/proc/stat field {field}")))
        })
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal ...
    let tick = |field_idx: usize| ticks.get(field_idx).copied().unwrap_or(0) as f64;
    let per_second = clock_ticks_per_second();
    Ok(MachineSample {
        task_secs: (tick(0) + tick(1) + tick(2)) / per_second,
        interrupt_secs: (tick(5) + tick(6)) / per_second,
        steal_secs: tick(7) / per_second,
    })
}

/// `sysconf(_SC_CLK_TCK)`: the unit of every tick count in `/proc`.
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(ticks > 0, "_SC_CLK_TCK is always positive on Linux");
    ticks as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat).unwrap(), 325);
    }

    #[test]
    fn rss_is_read_in_kib() {
        let status = "Name:\tveza\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status).unwrap(), 5120);
        assert!(parse_rss_kib("Name:\tzombie\n").is_err());
    }

    #[test]
    fn machine_time_splits_tasks_from_interrupts() {
        let proc_stat = "cpu  100 20 30 5000 1 7 13 4 0 0\ncpu0 50 10 15 2500 0 3 6 0 0 0\n";
        let sample = parse_machine_sample(proc_stat).unwrap();
        let per_second = clock_ticks_per_second();
        assert_eq!(sample.task_secs, 150.0 / per_second);
        assert_eq!(sample.interrupt_secs, 20.0 / per_second);
        assert_eq!(sample.steal_secs, 4.0 / per_second);
    }

    #[test]
    fn this_process_can_sample_itself() {
        let sample = process_sample(std::process::id()).unwrap();
        assert!(sample.cpu_secs >= 0.0 && sample.rss_kib > 0);
        assert!(machine_sample().unwrap().task_secs > 0.0);
    }
}
