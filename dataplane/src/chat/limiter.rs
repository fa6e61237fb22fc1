//! Rate limits and the runtime settings they come from.
//!
//! The control plane's runtime settings (`messages_per_second`,
//! `message_burst`, `connections_per_ip_per_minute`, `message_bytes_max`,
//! `history_page_max`) are pushed to every shard and re-read here whenever
//! their version changes, so an admin's change applies to the next command.
//!
//! New connections per IP are limited per shard: each shard's bucket holds
//! `1/shards` of the per-minute allowance (the kernel spreads one client's
//! connections over the shards by a hash of the 4-tuple), which keeps the
//! accept path free of shared state.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;

use veza_proto::control::{RuntimeSettings, SettingValue};

use crate::control_client::ControlClient;

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last_refill: quanta::Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens.
    pub fn full(burst: f64) -> Self {
        Self {
            tokens: burst,
            last_refill: quanta::Instant::now(),
        }
    }

    /// Takes one token, or says in how many milliseconds one will be there.
    pub fn take(&mut self, rate: f64, burst: f64, now: quanta::Instant) -> Result<(), u32> {
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.last_refill = now;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait_seconds = (1.0 - self.tokens) / rate.max(f64::MIN_POSITIVE);
        Err((wait_seconds * 1000.0).ceil().clamp(1.0, u32::MAX as f64) as u32)
    }

    /// Whether the bucket has refilled completely (it can be forgotten).
    fn is_full(&self, rate: f64, burst: f64, now: quanta::Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.tokens + elapsed * rate >= burst
    }
}

/// The runtime settings the chat layer uses, with the control plane's
/// defaults for keys it has not sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSettings {
    /// Token bucket rate for sends, edits, deletes and reactions.
    pub messages_per_second: f64,
    /// Token bucket size.
    pub message_burst: f64,
    /// New chat connections per IP address per minute (whole process).
    pub connections_per_ip_per_minute: f64,
    /// Largest message body in bytes.
    pub message_bytes_max: usize,
    /// Most messages in one history page.
    pub history_page_max: u16,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            messages_per_second: 5.0,
            message_burst: 10.0,
            connections_per_ip_per_minute: 60.0,
            message_bytes_max: 4000,
            history_page_max: 100,
        }
    }
}

impl ChatSettings {
    /// Reads the settings; absent or mistyped keys keep their defaults.
    pub fn from_runtime(settings: &RuntimeSettings) -> Self {
        let defaults = Self::default();
        let number = |key: &str| match settings.get(key) {
            Some(SettingValue::Float(value)) => Some(*value),
            Some(SettingValue::Integer(value)) => Some(*value as f64),
            _ => None,
        };
        Self {
            messages_per_second: number("messages_per_second")
                .filter(|rate| *rate > 0.0)
                .unwrap_or(defaults.messages_per_second),
            message_burst: number("message_burst")
                .filter(|burst| *burst >= 1.0)
                .unwrap_or(defaults.message_burst),
            connections_per_ip_per_minute: number("connections_per_ip_per_minute")
                .filter(|limit| *limit >= 1.0)
                .unwrap_or(defaults.connections_per_ip_per_minute),
            message_bytes_max: settings
                .integer("message_bytes_max")
                .filter(|bytes| *bytes >= 1)
                .map_or(defaults.message_bytes_max, |bytes| bytes as usize),
            history_page_max: settings
                .integer("history_page_max")
                .filter(|limit| *limit >= 1)
                .map_or(defaults.history_page_max, |limit| {
                    limit.min(veza_proto::chat::HISTORY_LIMIT_MAX as i64) as u16
                }),
        }
    }
}

/// Entries the per-IP table keeps before forgetting refilled buckets.
const IP_BUCKETS_MAX: usize = 65_536;

/// A shard's view of the settings and its per-IP connection buckets.
#[derive(Default)]
pub struct ChatLimits {
    version: Cell<i64>,
    settings: RefCell<ChatSettings>,
    ip_buckets: RefCell<HashMap<IpAddr, TokenBucket>>,
}

impl ChatLimits {
    /// The settings in force, re-read when the control plane's version changed.
    pub fn settings(&self, control: &ControlClient) -> std::cell::Ref<'_, ChatSettings> {
        let version = control.config_version();
        if version != self.version.get() {
            let (version, runtime) = control.settings();
            *self.settings.borrow_mut() = ChatSettings::from_runtime(&runtime);
            self.version.set(version);
        }
        self.settings.borrow()
    }

    /// Admits a new chat connection from `ip`, or says in how many
    /// milliseconds one would be admitted.
    pub fn admit_connection(
        &self,
        control: &ControlClient,
        ip: IpAddr,
        shard_count: usize,
    ) -> Result<(), u32> {
        let per_minute = self.settings(control).connections_per_ip_per_minute;
        let burst = (per_minute / shard_count as f64).max(1.0);
        let rate = burst / 60.0;
        let now = quanta::Instant::now();
        let mut buckets = self.ip_buckets.borrow_mut();
        if buckets.len() >= IP_BUCKETS_MAX && !buckets.contains_key(&ip) {
            buckets.retain(|_, bucket| !bucket.is_full(rate, burst, now));
            if buckets.len() >= IP_BUCKETS_MAX {
                // Every entry is an active client: forgetting one at random
                // gives it a fresh bucket, which is the lesser harm.
                if let Some(forgotten) = buckets.keys().next().copied() {
                    buckets.remove(&forgotten);
                }
            }
        }
        buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::full(burst))
            .take(rate, burst, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let start = quanta::Instant::now();
        let mut bucket = TokenBucket {
            tokens: 3.0,
            last_refill: start,
        };
        for _ in 0..3 {
            assert_eq!(bucket.take(2.0, 3.0, start), Ok(()));
        }
        let wait = bucket.take(2.0, 3.0, start).unwrap_err();
        assert_eq!(wait, 500, "one token at 2/s takes 500 ms");
        let later = start + Duration::from_millis(500);
        assert_eq!(bucket.take(2.0, 3.0, later), Ok(()));
        assert!(bucket.take(2.0, 3.0, later).is_err());
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(2.0, 3.0, much_later), Ok(()));
        }
        assert!(
            bucket.take(2.0, 3.0, much_later).is_err(),
            "never above burst"
        );
    }

    #[test]
    fn settings_keep_defaults_for_absent_or_bad_keys() {
        let runtime = RuntimeSettings::from_pairs([
            ("messages_per_second".into(), SettingValue::Float(0.5)),
            ("message_burst".into(), SettingValue::Integer(3)),
            ("message_bytes_max".into(), SettingValue::Text("big".into())),
            ("history_page_max".into(), SettingValue::Integer(5000)),
        ]);
        let settings = ChatSettings::from_runtime(&runtime);
        assert_eq!(settings.messages_per_second, 0.5);
        assert_eq!(settings.message_burst, 3.0);
        assert_eq!(settings.message_bytes_max, 4000);
        assert_eq!(settings.history_page_max, 1000);
        assert_eq!(settings.connections_per_ip_per_minute, 60.0);
    }
}
