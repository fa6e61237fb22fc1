//! The live source: one `ffmpeg` process encoding a 440 Hz sine to Ogg Opus
//! in real time (`-re`) and sending it with ffmpeg's Icecast protocol
//! (`PUT`, HTTP basic auth `source:<password>`, `Content-Type: audio/ogg`).
//! Both servers get the same command line; only the destination differs.
//! The process is stopped by its PID (SIGTERM, then SIGKILL) when dropped,
//! whatever the exit path.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::load_generator::client_threads::join_cpus;

/// The default encoder (Debian's `ffmpeg`, installed by scripts/setup.sh).
pub const DEFAULT_FFMPEG_BIN: &str = "/usr/bin/ffmpeg";

/// Ogg pages of 200 ms: five pages a second per listener.
pub const PAGE_DURATION_US: u64 = 200_000;

/// How long ffmpeg may take to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(3);

/// The encoder arguments, before the destination (the same for every
/// server).
pub fn encoder_args(bitrate_kbps: u32) -> Vec<String> {
    [
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000,aformat=channel_layouts=stereo",
        "-c:a",
        "libopus",
        "-b:a",
    ]
    .into_iter()
    .map(String::from)
    .chain([
        format!("{bitrate_kbps}k"),
        "-page_duration".into(),
        PAGE_DURATION_US.to_string(),
        "-f".into(),
        "ogg".into(),
        "-content_type".into(),
        "audio/ogg".into(),
    ])
    .collect()
}

/// `icecast://source:<password>@<address><mount>`.
pub fn icecast_destination(password: &str, address: std::net::SocketAddr, mount: &str) -> String {
    format!("icecast://source:{password}@{address}{mount}")
}

/// A running ffmpeg source.
#[derive(Debug)]
pub struct SourceProcess {
    child: Option<Child>,
    log_path: PathBuf,
}

impl SourceProcess {
    /// Starts `ffmpeg <encoder args> <destination>` on `cpus` (empty:
    /// unpinned), its stderr in `log_path`.
    pub fn start(
        ffmpeg: &Path,
        bitrate_kbps: u32,
        destination: &str,
        cpus: &[usize],
        log_path: &Path,
    ) -> std::io::Result<SourceProcess> {
        let log = File::create(log_path)?;
        let mut command = if cpus.is_empty() {
            Command::new(ffmpeg)
        } else {
            let mut taskset = Command::new("taskset");
            taskset.arg("-c").arg(join_cpus(cpus)).arg(ffmpeg);
            taskset
        };
        let child = command
            .args(encoder_args(bitrate_kbps))
            .arg(destination)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(SourceProcess {
            child: Some(child),
            log_path: log_path.to_path_buf(),
        })
    }

    /// `Err` with ffmpeg's log when it has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else {
            return Err("the source was stopped".into());
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "the ffmpeg source exited with {status}: {}",
                std::fs::read_to_string(&self.log_path)
                    .unwrap_or_default()
                    .trim()
            )),
            Err(error) => Err(format!("poll ffmpeg: {error}")),
        }
    }

    /// Stops ffmpeg by PID: SIGTERM, then SIGKILL past the deadline.
    pub fn stop(mut self) {
        self.stop_child();
    }

    fn stop_child(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill has no memory effects; the PID is our own child,
            // not yet reaped, so it names no other process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        // Bounded by the deadline.
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for SourceProcess {
    fn drop(&mut self) {
        self.stop_child();
    }
}

/// The command line as a report shows it, the password hidden.
pub fn command_line_for_report(bitrate_kbps: u32, destination: &str) -> String {
    let hidden = match (destination.find("://"), destination.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &destination[scheme_end + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!(
                "{}{user}:***{}",
                &destination[..scheme_end + 3],
                &destination[at..]
            )
        }
        _ => destination.to_string(),
    };
    let quoted: Vec<String> = encoder_args(bitrate_kbps)
        .into_iter()
        .map(|arg| {
            if arg.contains([',', '=']) {
                format!("\"{arg}\"")
            } else {
                arg
            }
        })
        .collect();
    format!("ffmpeg {} {hidden}", quoted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_shows_the_command_without_the_password() {
        let address = "127.0.0.1:8000".parse().unwrap();
        let destination = icecast_destination("s3cret", address, "/live.ogg");
        assert_eq!(
            destination,
            "icecast://source:s3cret@127.0.0.1:8000/live.ogg"
        );
        let line = command_line_for_report(64, &destination);
        assert!(
            line.ends_with("-content_type audio/ogg icecast://source:***@127.0.0.1:8000/live.ogg"),
            "{line}"
        );
        assert!(
            line.contains("-b:a 64k -page_duration 200000 -f ogg"),
            "{line}"
        );
        assert!(!line.contains("s3cret"));
    }
}
