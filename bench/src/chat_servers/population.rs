//! The world a chat benchmark runs in, created through the control plane's
//! REST API before the data plane starts: the instance admin (the first
//! account), `n_users` users each logged in once (one access token per user,
//! shared by all of that user's connections), `n_rooms` public rooms, the
//! memberships the connections need, and runtime settings without rate
//! limits.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures_util::{StreamExt as _, TryStreamExt as _};

use crate::chat_client::ChatClient;
use crate::control_api::{ControlApi, RuntimeSettings, Session, BENCH_PASSWORD};

use super::ChatServersError;

/// REST calls in flight at once while populating.
const REST_CONCURRENCY: usize = 16;

/// Logins in flight at once. The control plane's login throttle counts an
/// attempt in flight against the client address's free failures
/// (`auth.login_failures_free`, 5 by default) until it succeeds, so a sixth
/// concurrent login from 127.0.0.1 is refused with 429 although none
/// failed.
const LOGIN_CONCURRENCY: usize = 4;

/// Logins refused with 429 are retried this many times, a second apart.
const LOGIN_RETRIES_MAX: usize = 5;

/// Rooms one user may own (the control plane's default
/// `chat.rooms_owned_per_user_max`).
pub const ROOMS_OWNED_PER_USER_MAX: usize = 100;

/// The instance admin's user name.
pub const ADMIN_USERNAME: &str = "bench-admin";

/// What to create.
#[derive(Debug, Clone, PartialEq)]
pub struct PopulationPlan {
    /// Users besides the admin.
    pub n_users: usize,
    /// Public rooms.
    pub n_rooms: usize,
    /// `(user_idx, room_idx)` pairs to join.
    pub memberships: BTreeSet<(usize, usize)>,
    /// The runtime settings to apply.
    pub settings: RuntimeSettings,
}

impl PopulationPlan {
    /// Whether every room can get an owner under the per-user limit.
    pub fn can_own_every_room(&self) -> bool {
        self.n_rooms <= ROOMS_OWNED_PER_USER_MAX * (self.n_users + 1)
    }
}

/// What was created.
#[derive(Debug, Clone)]
pub struct Population {
    /// The instance admin.
    pub admin: Session,
    /// The users, by index.
    pub users: Vec<Session>,
    /// The rooms' ids, by index.
    pub room_ids: Vec<i64>,
}

/// The user name of benchmark user `user_idx`.
pub fn username(user_idx: usize) -> String {
    format!("bench{user_idx}")
}

/// Creates everything `plan` asks for, in order: admin, settings, users,
/// rooms (owned by the admin, then by users, at most
/// [`ROOMS_OWNED_PER_USER_MAX`] each), memberships.
pub async fn populate(
    api: &ControlApi,
    plan: &PopulationPlan,
) -> Result<Population, ChatServersError> {
    assert!(plan.can_own_every_room(), "validated by the scenario");
    let admin = api.register_and_login(ADMIN_USERNAME).await?;
    api.update_runtime_settings(&admin.access_token, &plan.settings)
        .await?;
    futures_util::stream::iter(0..plan.n_users)
        .map(|user_idx| async move {
            let name = username(user_idx);
            let email = format!("{name}@example.org");
            api.register(&name, &email, BENCH_PASSWORD).await
        })
        .buffer_unordered(REST_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let users: Vec<Session> = futures_util::stream::iter(0..plan.n_users)
        .map(|user_idx| log_in(api, username(user_idx)))
        .buffered(LOGIN_CONCURRENCY)
        .try_collect()
        .await?;
    let owners: Vec<&Session> = std::iter::once(&admin).chain(users.iter()).collect();
    let room_ids: Vec<i64> = futures_util::stream::iter(0..plan.n_rooms)
        .map(|room_idx| {
            let owner = owners[room_idx / ROOMS_OWNED_PER_USER_MAX];
            async move {
                api.create_room(&owner.access_token, &format!("bench-{room_idx}"), true)
                    .await
            }
        })
        .buffered(REST_CONCURRENCY)
        .try_collect()
        .await?;
    futures_util::stream::iter(plan.memberships.iter())
        .map(|&(user_idx, room_idx)| {
            let (token, room_id) = (&users[user_idx].access_token, room_ids[room_idx]);
            async move { api.join_room(token, room_id).await }
        })
        .buffer_unordered(REST_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(Population {
        admin,
        users,
        room_ids,
    })
}

/// Logs `name` in, retrying while the login throttle answers 429.
async fn log_in(api: &ControlApi, name: String) -> Result<Session, ChatServersError> {
    let mut attempt = 0;
    // Bounded by LOGIN_RETRIES_MAX.
    loop {
        match api.login(&name, BENCH_PASSWORD).await {
            Err(error) if error.status() == Some(429) && attempt < LOGIN_RETRIES_MAX => {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            outcome => return Ok(outcome?),
        }
    }
}

/// Waits until `probes` fresh authenticated connections all report
/// `message_bytes_max` as the settings say, proof that the data plane
/// applies the settings (they arrive as one value, so the rate limits came
/// with it).
pub async fn wait_until_settings_applied(
    chat_url: &str,
    token: &str,
    message_bytes_max: u32,
    probes: usize,
    timeout: Duration,
) -> Result<(), ChatServersError> {
    let deadline = Instant::now() + timeout;
    let probe_ip: IpAddr = "127.0.0.1".parse().expect("a literal address");
    // Bounded by the deadline.
    loop {
        let mut applied = 0;
        for _ in 0..probes {
            let mut client = ChatClient::connect_from(chat_url, probe_ip).await?;
            let authenticated = client.authenticate(token, Duration::from_secs(10)).await?;
            applied += usize::from(authenticated.message_bytes_max == message_bytes_max);
            let _ = client.close(1000, Duration::from_secs(1)).await;
        }
        if applied == probes {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ChatServersError::SettingsNotApplied(timeout));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_need_enough_owners() {
        let plan = |n_users, n_rooms| PopulationPlan {
            n_users,
            n_rooms,
            memberships: BTreeSet::new(),
            settings: RuntimeSettings::default(),
        };
        assert!(plan(0, 100).can_own_every_room());
        assert!(!plan(0, 101).can_own_every_room());
        assert!(plan(1, 200).can_own_every_room());
        assert_eq!(username(7), "bench7");
    }
}
