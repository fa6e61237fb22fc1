//! What a run needs before load and checks after it: a database (a SQLite
//! data directory, or a fresh database on a PostgreSQL server, throw-away or
//! given), a user and its rooms created through the REST API, and the
//! durability check through the control protocol.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sqlx::Connection as _;

use crate::proc_stat::process_sample;

use super::protocol_client::{ControlConnection, ProtocolClientError};
use super::workload::RoomProgress;

/// The benchmark user's password: long enough for the password policy and
/// unrelated to the user name.
const PASSWORD: &str = "tuba-glockenspiel-7-harp";

/// Why setting up or checking a run failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A REST call did not answer as expected.
    #[error("{step}: HTTP {status}: {body}")]
    Rest {
        /// What was being done.
        step: &'static str,
        /// The status, 0 when there was no answer.
        status: u16,
        /// The body or the transport error.
        body: String,
    },
    /// Creating or dropping a PostgreSQL database failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
    /// The throw-away PostgreSQL server could not be started.
    #[error("starting PostgreSQL with {script}: {reason}")]
    PostgresServer {
        /// The script that was run.
        script: String,
        /// What went wrong.
        reason: String,
    },
    /// The durability check could not talk to the control plane.
    #[error("durability check: {0}")]
    Protocol(#[from] ProtocolClientError),
    /// A step did not finish in time.
    #[error("{step} did not finish within {timeout:?}")]
    Timeout {
        /// What was being done.
        step: &'static str,
        /// The bound.
        timeout: std::time::Duration,
    },
}

/// How long one setup or check step (all REST calls, one database
/// statement, the whole durability check) may take.
pub const STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `future` to completion unless it takes longer than [`STEP_TIMEOUT`].
pub async fn bounded<T>(
    step: &'static str,
    future: impl std::future::Future<Output = Result<T, SetupError>>,
) -> Result<T, SetupError> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| SetupError::Timeout {
            step,
            timeout: STEP_TIMEOUT,
        })?
}

/// The user and rooms a run persists into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Population {
    /// The author of every message.
    pub user_id: i64,
    /// One room per connection.
    pub room_ids: Vec<i64>,
}

/// Registers one user (the first account, so the instance admin), logs in,
/// and creates `n_rooms` public rooms, all through the REST API at
/// `base_url`.
pub async fn populate(base_url: &str, n_rooms: usize) -> Result<Population, SetupError> {
    let http = reqwest::Client::builder()
        .timeout(STEP_TIMEOUT)
        .build()
        .map_err(|error| SetupError::Rest {
            step: "build the HTTP client",
            status: 0,
            body: error.to_string(),
        })?;
    let account = rest(
        "register",
        201,
        http.post(format!("{base_url}/v1/accounts")).json(&json!({
            "username": "bench",
            "email": "bench@example.org",
            "password": PASSWORD,
        })),
    )
    .await?;
    let session = rest(
        "log in",
        200,
        http.post(format!("{base_url}/v1/sessions"))
            .json(&json!({"login": "bench", "password": PASSWORD})),
    )
    .await?;
    let token = session["access_token"].as_str().unwrap_or_default();
    let mut room_ids = Vec::with_capacity(n_rooms);
    for room_idx in 0..n_rooms {
        let room = rest(
            "create room",
            201,
            http.post(format!("{base_url}/v1/rooms"))
                .bearer_auth(token)
                .json(&json!({"name": format!("bench-{room_idx}"), "is_public": true})),
        )
        .await?;
        room_ids.push(id_of(&room, "create room")?);
    }
    Ok(Population {
        user_id: id_of(&account, "register")?,
        room_ids,
    })
}

async fn rest(
    step: &'static str,
    expected_status: u16,
    request: reqwest::RequestBuilder,
) -> Result<Value, SetupError> {
    let response = request.send().await.map_err(|error| SetupError::Rest {
        step,
        status: 0,
        body: error.to_string(),
    })?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    if status != expected_status {
        return Err(SetupError::Rest {
            step,
            status,
            body: text,
        });
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn id_of(value: &Value, step: &'static str) -> Result<i64, SetupError> {
    value["id"].as_i64().ok_or_else(|| SetupError::Rest {
        step,
        status: 0,
        body: format!("no id in {value}"),
    })
}

/// What the durability check found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DurabilityCheck {
    /// Rooms that had at least one acknowledged batch.
    pub rooms_checked: usize,
    /// Of those, rooms whose last acknowledged seq reads back through
    /// `FetchHistory`.
    pub rooms_with_last_acknowledged_seq: usize,
    /// Messages acknowledged over the whole run, warm-up included.
    pub messages_acknowledged_total: u64,
    /// The sum over rooms of the last acknowledged seq. Seqs start at 1 and
    /// have no gaps, so this equals the total when no batch was lost.
    pub last_acknowledged_seqs_sum: u64,
    /// Every checked room has its last seq, and the two counts agree.
    pub passed: bool,
}

/// Reads back the last acknowledged seq of every room through the control
/// protocol, on a connection of its own, after the load has stopped.
pub async fn check_durability(
    socket_path: &Path,
    rooms: &[RoomProgress],
) -> Result<DurabilityCheck, SetupError> {
    let shard_count = u32::try_from(rooms.len().max(1)).unwrap_or(u32::MAX);
    let mut connection =
        ControlConnection::connect(socket_path, "veza-bench-check", 0, shard_count).await?;
    let mut check = DurabilityCheck::default();
    for room in rooms {
        check.messages_acknowledged_total += room.messages_acknowledged_total;
        check.last_acknowledged_seqs_sum += room.last_acknowledged_seq as u64;
        if room.last_acknowledged_seq == 0 {
            continue;
        }
        check.rooms_checked += 1;
        let page = connection
            .fetch_history_before(room.room_id, room.last_acknowledged_seq + 1, 1)
            .await?;
        if page
            .last()
            .is_some_and(|message| message.seq == room.last_acknowledged_seq)
        {
            check.rooms_with_last_acknowledged_seq += 1;
        }
    }
    check.passed = check.rooms_checked > 0
        && check.rooms_with_last_acknowledged_seq == check.rooms_checked
        && check.messages_acknowledged_total == check.last_acknowledged_seqs_sum;
    Ok(check)
}

/// A PostgreSQL server started for this benchmark by
/// `scripts/postgres-test-server.sh`, pinned with `taskset`; stopped and
/// removed when dropped.
#[derive(Debug)]
pub struct ThrowAwayPostgres {
    script: PathBuf,
    directory: tempfile::TempDir,
    admin_url: String,
    postmaster_pid: Option<u32>,
}

impl ThrowAwayPostgres {
    /// Starts the server with `taskset -c <cpus>`: the postmaster and every
    /// backend it forks inherit the mask.
    pub fn start(script: &Path, cpus: &str) -> Result<ThrowAwayPostgres, SetupError> {
        let failed = |reason: String| SetupError::PostgresServer {
            script: script.display().to_string(),
            reason,
        };
        let directory = tempfile::Builder::new()
            .prefix("veza-bench-postgres-")
            .tempdir()
            .map_err(|error| failed(error.to_string()))?;
        let output = Command::new("taskset")
            .args(["-c", cpus, "bash"])
            .arg(script)
            .arg("start")
            .arg(directory.path())
            .output()
            .map_err(|error| failed(error.to_string()))?;
        let admin_url = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !output.status.success() || !admin_url.starts_with("postgres://") {
            return Err(failed(String::from_utf8_lossy(&output.stderr).into_owned()));
        }
        let pid_file = directory.path().join("data").join("postmaster.pid");
        let postmaster_pid = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok());
        Ok(ThrowAwayPostgres {
            script: script.to_path_buf(),
            directory,
            admin_url,
            postmaster_pid,
        })
    }

    /// The URL of its `postgres` database, as its superuser.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// CPU seconds per process of the server (the postmaster and its
    /// children), now; empty when the postmaster's PID is unknown.
    pub fn cpu_secs_by_pid(&self) -> HashMap<u32, f64> {
        let Some(postmaster_pid) = self.postmaster_pid else {
            return HashMap::new();
        };
        let mut pids = children_of(postmaster_pid);
        pids.push(postmaster_pid);
        pids.into_iter()
            .filter_map(|pid| Some((pid, process_sample(pid).ok()?.cpu_secs)))
            .collect()
    }
}

impl Drop for ThrowAwayPostgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(self.directory.path())
            .output();
    }
}

/// The PIDs whose parent is `parent_pid` (field 4 of `/proc/PID/stat`).
fn children_of(parent_pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parent_pid_of(&stat))
                == Some(parent_pid)
        })
        .collect()
}

fn parent_pid_of(stat: &str) -> Option<u32> {
    // After the command name's closing parenthesis: state, then ppid.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds the processes of `after` used since `before`; a process
/// that started in between counts from zero. A backend that exited in
/// between is missed: the control plane's pool keeps its connections open.
pub fn cpu_secs_between(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, cpu_secs)| (cpu_secs - before.get(pid).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

/// Creates database `name` on the server at `admin_url` and returns its URL.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, SetupError> {
    let mut connection = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    let (base, _) = admin_url.rsplit_once('/').unwrap_or((admin_url, ""));
    Ok(format!("{base}/{name}"))
}

/// Drops database `name` (after the control plane has stopped).
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), SetupError> {
    let mut connection = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_pid_is_read_past_a_command_name_with_spaces() {
        assert_eq!(
            parent_pid_of("812 (postgres: bench (x)) S 811 812 812 0 -1"),
            Some(811)
        );
        assert_eq!(parent_pid_of("garbage"), None);
    }

    #[test]
    fn cpu_between_samples_counts_new_processes_from_zero() {
        let before = HashMap::from([(1, 2.0), (2, 1.0)]);
        let after = HashMap::from([(1, 2.5), (3, 0.25)]);
        assert_eq!(cpu_secs_between(&before, &after), 0.75);
    }
}
