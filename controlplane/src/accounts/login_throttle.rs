//! Login throttling: per account and per client IP, after
//! `login_failures_free` consecutive failures each further attempt must wait
//! a delay that doubles from `login_delay_base_ms` up to
//! `login_delay_max_ms`. Attempts inside the delay are refused (429) without
//! checking the password, so guessing costs the attacker time, not us CPU.
//!
//! An attempt is admitted ([`LoginThrottle::check`], [`LoginThrottle::begin`])
//! before the password is checked and then reported: failed, released (not
//! a failure), or the key removed (success resets an account).
//!
//! Pure state handed the time, kept in memory: a restart forgets it, which
//! costs an attacker a restart of our process per few guesses. Bounded by
//! `throttle_entries_max` keys; past it the entry touched longest ago goes.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// The knobs, from `[auth]`.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleConfig {
    /// Failures allowed before delays start.
    pub failures_free: u32,
    /// First delay.
    pub delay_base_ms: u64,
    /// Longest delay.
    pub delay_max_ms: u64,
    /// Idle time after which an entry is forgotten.
    pub forget_ms: u64,
    /// Entries kept.
    pub entries_max: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    /// Attempts admitted whose outcome is not known yet. Counted against
    /// the free failures, so that parallel guesses cannot all slip through
    /// before the first one fails.
    pending: u32,
    last_failure_ms: i64,
    blocked_until_ms: i64,
    /// Position in `LoginThrottle::by_age`.
    touch_sequence: u64,
}

/// One throttled key, for the admin view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleEntryView {
    /// `account:<user id>`, `login:<name>` or `ip:<address>`.
    pub key: String,
    /// Consecutive failures.
    pub failures: u32,
    /// Unix ms of the last failure.
    pub last_failure_ms: i64,
    /// Unix ms until which attempts are refused; none when not blocked.
    pub blocked_until_ms: Option<i64>,
}

/// The throttle table.
#[derive(Debug)]
pub struct LoginThrottle {
    config: ThrottleConfig,
    entries: HashMap<String, Entry>,
    /// Touch sequence → key, oldest first, for eviction.
    by_age: BTreeMap<u64, String>,
    next_sequence: u64,
}

/// The key of an account that exists.
pub fn account_key(user_id: i64) -> String {
    format!("account:{user_id}")
}

/// The key of a login name that matches no account, so unknown names are
/// throttled like known ones (and timing does not tell them apart).
pub fn unknown_login_key(login: &str) -> String {
    format!("login:{}", login.to_lowercase())
}

/// The key of a client address. IPv6 clients get a /64 each (one customer
/// usually holds a whole /64, and could otherwise rotate through it).
pub fn ip_key(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let segments = v6.segments();
                let prefix = std::net::Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                );
                format!("ip:{prefix}/64")
            }
        },
    }
}

impl LoginThrottle {
    /// An empty table.
    pub fn new(config: ThrottleConfig) -> Self {
        assert!(config.entries_max > 0 && config.delay_base_ms <= config.delay_max_ms);
        Self {
            config,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            next_sequence: 0,
        }
    }

    /// Ok when `key` may attempt a login now; otherwise the milliseconds to
    /// wait.
    pub fn check(&mut self, key: &str, now_ms: i64) -> Result<(), u64> {
        let Some(entry) = self.entries.get(key) else {
            return Ok(());
        };
        if self.is_forgotten(entry, now_ms) {
            self.remove(key);
            return Ok(());
        }
        if now_ms < entry.blocked_until_ms {
            return Err((entry.blocked_until_ms - now_ms) as u64);
        }
        if entry.pending > 0 && entry.failures + entry.pending >= self.config.failures_free {
            // Out of free attempts: one at a time.
            return Err(self.config.delay_base_ms);
        }
        Ok(())
    }

    /// Starts an attempt by `key` (after [`Self::check`] allowed it). Its
    /// outcome is then reported with [`Self::fail`] or [`Self::release`].
    pub fn begin(&mut self, key: &str) {
        if !self.entries.contains_key(key) && self.entries.len() >= self.config.entries_max {
            self.evict_oldest();
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let entry = self.entries.entry(key.to_string()).or_insert(Entry {
            failures: 0,
            pending: 0,
            last_failure_ms: 0,
            blocked_until_ms: 0,
            touch_sequence: sequence,
        });
        self.by_age.remove(&entry.touch_sequence);
        self.by_age.insert(sequence, key.to_string());
        entry.touch_sequence = sequence;
        entry.pending = entry.pending.saturating_add(1);
        debug_assert_eq!(self.entries.len(), self.by_age.len());
        debug_assert!(self.entries.len() <= self.config.entries_max);
    }

    /// The attempt by `key` failed: one more consecutive failure, and past
    /// the free ones a delay before the next attempt.
    pub fn fail(&mut self, key: &str, now_ms: i64) {
        let Some(entry) = self.entries.get_mut(key) else {
            return; // Evicted meanwhile: the table stays bounded instead.
        };
        entry.pending = entry.pending.saturating_sub(1);
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure_ms = now_ms;
        if entry.failures >= self.config.failures_free {
            let delay_ms = delay_after(&self.config, entry.failures);
            entry.blocked_until_ms = now_ms.saturating_add(delay_ms as i64);
        }
    }

    /// The attempt by `key` was not a failure (nor a success that resets the
    /// key): it no longer counts.
    pub fn release(&mut self, key: &str) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        entry.pending = entry.pending.saturating_sub(1);
        if entry.pending == 0 && entry.failures == 0 {
            self.remove(key);
        }
    }

    /// Forgets `key` (after a successful login, or by an admin). Whether it
    /// was there.
    pub fn remove(&mut self, key: &str) -> bool {
        match self.entries.remove(key) {
            Some(entry) => {
                self.by_age.remove(&entry.touch_sequence);
                true
            }
            None => false,
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.by_age.clear();
    }

    /// Entries held (some may be stale until touched).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The live entries, most recently failed first, at most `limit`.
    pub fn snapshot(&self, now_ms: i64, limit: usize) -> Vec<ThrottleEntryView> {
        self.by_age
            .values()
            .rev()
            .filter_map(|key| {
                let entry = &self.entries[key];
                let live = entry.failures > 0 && !self.is_forgotten(entry, now_ms);
                live.then(|| ThrottleEntryView {
                    key: key.clone(),
                    failures: entry.failures,
                    last_failure_ms: entry.last_failure_ms,
                    blocked_until_ms: (entry.blocked_until_ms > now_ms)
                        .then_some(entry.blocked_until_ms),
                })
            })
            .take(limit)
            .collect()
    }

    fn is_forgotten(&self, entry: &Entry, now_ms: i64) -> bool {
        entry.pending == 0
            && now_ms.saturating_sub(entry.last_failure_ms) >= self.config.forget_ms as i64
            && now_ms >= entry.blocked_until_ms
    }

    fn evict_oldest(&mut self) {
        if let Some((_, key)) = self.by_age.pop_first() {
            self.entries.remove(&key);
        }
    }
}

/// The delay imposed after the `failures`-th consecutive failure.
fn delay_after(config: &ThrottleConfig, failures: u32) -> u64 {
    debug_assert!(failures >= config.failures_free);
    let doublings = (failures - config.failures_free).min(40);
    config
        .delay_base_ms
        .saturating_mul(1u64 << doublings)
        .min(config.delay_max_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(entries_max: usize) -> LoginThrottle {
        LoginThrottle::new(ThrottleConfig {
            failures_free: 3,
            delay_base_ms: 100,
            delay_max_ms: 350,
            forget_ms: 10_000,
            entries_max,
        })
    }

    fn attempt_and_fail(throttle: &mut LoginThrottle, key: &str, now: i64) {
        throttle.check(key, now).unwrap();
        throttle.begin(key);
        throttle.fail(key, now);
    }

    #[test]
    fn delays_start_after_the_free_failures_and_double_up_to_the_cap() {
        let mut throttle = throttle(16);
        let mut now = 1_000;
        for _ in 0..2 {
            attempt_and_fail(&mut throttle, "k", now);
            assert_eq!(throttle.check("k", now), Ok(()));
        }
        let mut delays = Vec::new();
        for _ in 0..4 {
            attempt_and_fail(&mut throttle, "k", now);
            let wait = throttle.check("k", now).unwrap_err();
            delays.push(wait);
            assert_eq!(throttle.check("k", now + wait as i64 - 1), Err(1));
            now += wait as i64;
            assert_eq!(throttle.check("k", now), Ok(()));
        }
        assert_eq!(delays, [100, 200, 350, 350]);
    }

    #[test]
    fn parallel_attempts_count_against_the_free_failures() {
        let mut throttle = throttle(16);
        for _ in 0..3 {
            assert_eq!(throttle.check("k", 0), Ok(()));
            throttle.begin("k");
        }
        assert_eq!(throttle.check("k", 0), Err(100));
        throttle.release("k");
        throttle.release("k");
        throttle.release("k");
        assert_eq!(throttle.len(), 0, "released attempts leave nothing behind");
    }

    #[test]
    fn removing_a_key_resets_it_and_idle_entries_are_forgotten() {
        let mut throttle = throttle(16);
        for _ in 0..3 {
            attempt_and_fail(&mut throttle, "k", 0);
        }
        assert!(throttle.check("k", 0).is_err());
        assert!(throttle.remove("k"));
        assert_eq!(throttle.check("k", 0), Ok(()));
        for _ in 0..3 {
            attempt_and_fail(&mut throttle, "k", 0);
        }
        assert_eq!(throttle.snapshot(0, 10).len(), 1);
        assert_eq!(throttle.check("k", 10_000), Ok(()));
        assert_eq!(throttle.len(), 0);
    }

    #[test]
    fn a_released_attempt_keeps_earlier_failures_and_their_delay() {
        let mut throttle = throttle(16);
        for _ in 0..3 {
            attempt_and_fail(&mut throttle, "k", 0);
        }
        assert_eq!(throttle.check("k", 100), Ok(()));
        throttle.begin("k");
        throttle.release("k");
        assert_eq!(
            throttle.check("k", 100),
            Ok(()),
            "no new delay from a non-failure"
        );
        assert_eq!(throttle.snapshot(100, 10)[0].failures, 3);
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_oldest_entry() {
        let mut throttle = throttle(2);
        attempt_and_fail(&mut throttle, "a", 0);
        attempt_and_fail(&mut throttle, "b", 1);
        attempt_and_fail(&mut throttle, "a", 2);
        attempt_and_fail(&mut throttle, "c", 3);
        assert_eq!(throttle.len(), 2);
        let keys: Vec<String> = throttle
            .snapshot(4, 10)
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["c", "a"]);
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_eq!(ip_key(a), "ip:2001:db8:1:2::/64");
        assert_eq!(ip_key("::ffff:10.0.0.1".parse().unwrap()), "ip:10.0.0.1");
    }
}
