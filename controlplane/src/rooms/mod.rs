//! Rooms, membership and roles, moderation, message storage and search, and
//! the runtime settings that data planes apply live.
//!
//! Codemap:
//! - [`permissions`]: the permission table ([`permissions::allowed`]), and
//!   [`permissions::rights`], what a user may do in a room (the data plane
//!   caches it). Also `controlplane/PERMISSIONS.md`.
//! - `room`: create, list, get, update and delete rooms; direct messages.
//! - `membership`: join, invite, leave, member lists, role changes.
//! - `moderation`: mutes, kicks, bans and the audit log.
//! - [`messages`]: the message store the control protocol persists batches
//!   into ([`messages::persist_batch`]) and reads history from; REST history
//!   and read markers.
//! - `search`: full-text search, FTS5 on SQLite and tsvector on PostgreSQL.
//! - [`settings`]: versioned runtime settings and their admin endpoints.
//!
//! Architecture Invariant: every change that a data plane must act on is
//! published on the [`crate::events::EventHub`] after its transaction commits,
//! never before (a data plane that re-reads on the push sees the change).
//!
//! Architecture Invariant: the message store trusts the data plane for
//! ordering (it assigns `seq`) and for permission checks at send time, but a
//! batch never fails because of its content: changes naming a room or user
//! that no longer exists, edits by someone other than the author, and
//! repeats are skipped, so one bad change cannot wedge the persistence queue.

use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use veza_codec::config_layers;

use crate::config::ConfigError;
use crate::state::AppState;

mod membership;
pub mod messages;
mod moderation;
pub mod permissions;
pub(crate) mod request;
pub(crate) mod responses;
mod room;
mod search;
pub mod seq_reservation;
pub mod settings;

/// `[chat]`: bounds of rooms, moderation, pages and search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Longest room name, in characters.
    pub room_name_chars_max: usize,
    /// Longest room topic, in characters.
    pub room_topic_chars_max: usize,
    /// Rooms one user may own; past it, creating a room answers 409.
    pub rooms_owned_per_user_max: i64,
    /// Members in one room; past it, join and invite answer 409.
    pub room_members_max: i64,
    /// Longest slow mode a room may set (Discord's limit is 6 hours).
    pub slow_mode_seconds_max: i64,
    /// Longest reason given for a mute, kick or ban, in characters.
    pub moderation_reason_chars_max: usize,
    /// Longest timed mute or ban; longer ones are given without a duration.
    pub moderation_duration_seconds_max: i64,
    /// Items in a page of rooms, members or audit entries when the request
    /// gives no `limit`.
    pub page_items_default: i64,
    /// Most items in a page of rooms, members or audit entries.
    pub page_items_max: i64,
    /// Messages in a history page when the request gives no `limit` (the
    /// most is the runtime setting `history_page_max`).
    pub history_page_default: i64,
    /// Longest search query, in characters.
    pub search_query_chars_max: usize,
    /// Most words in a search query.
    pub search_terms_max: usize,
    /// Most results of one search.
    pub search_results_max: i64,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            room_name_chars_max: 100,
            room_topic_chars_max: 1024,
            rooms_owned_per_user_max: 100,
            room_members_max: 10_000,
            slow_mode_seconds_max: 21_600,
            moderation_reason_chars_max: 512,
            moderation_duration_seconds_max: 31_536_000,
            page_items_default: 50,
            page_items_max: 100,
            history_page_default: 50,
            search_query_chars_max: 256,
            search_terms_max: 16,
            search_results_max: 50,
        }
    }
}

impl ChatConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&str, i64, i64, i64); 13] = [
            (
                "chat.room_name_chars_max",
                self.room_name_chars_max as i64,
                1,
                1000,
            ),
            (
                "chat.room_topic_chars_max",
                self.room_topic_chars_max as i64,
                0,
                65_536,
            ),
            (
                "chat.rooms_owned_per_user_max",
                self.rooms_owned_per_user_max,
                1,
                1_000_000,
            ),
            (
                "chat.room_members_max",
                self.room_members_max,
                2,
                10_000_000,
            ),
            (
                "chat.slow_mode_seconds_max",
                self.slow_mode_seconds_max,
                0,
                604_800,
            ),
            (
                "chat.moderation_reason_chars_max",
                self.moderation_reason_chars_max as i64,
                0,
                65_536,
            ),
            (
                "chat.moderation_duration_seconds_max",
                self.moderation_duration_seconds_max,
                1,
                3_153_600_000,
            ),
            ("chat.page_items_max", self.page_items_max, 1, 10_000),
            (
                "chat.page_items_default",
                self.page_items_default,
                1,
                self.page_items_max,
            ),
            (
                "chat.history_page_default",
                self.history_page_default,
                1,
                10_000,
            ),
            (
                "chat.search_query_chars_max",
                self.search_query_chars_max as i64,
                1,
                4096,
            ),
            (
                "chat.search_terms_max",
                self.search_terms_max as i64,
                1,
                256,
            ),
            ("chat.search_results_max", self.search_results_max, 1, 1000),
        ];
        for (key, value, low, high) in checks {
            if value < low || value > high {
                return Err(config_layers::invalid(
                    key,
                    &format!("must be between {low} and {high}"),
                )
                .into());
            }
        }
        Ok(())
    }
}

/// The rooms, messages and settings routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(room::router())
        .merge(membership::router())
        .merge(moderation::router())
        .merge(messages::router())
        .merge(search::router())
        .merge(settings::router())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_chat_config_is_valid_and_bad_values_name_their_key() {
        ChatConfig::default().validate().unwrap();
        let config = ChatConfig {
            page_items_max: 0,
            ..ChatConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("chat.page_items_max"), "{error}");
    }
}
