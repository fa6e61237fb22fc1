//! The social side of tracks (SoundCloud-like, issue #6): likes, reposts,
//! follows, playlists, comments at a moment of a track, per-track counts
//! and the feed of the people one follows.
//!
//! Codemap:
//! - [`visibility`]: who may see a track by its id and who may see it in a
//!   list, as pure functions and the matching SQL; every route goes through
//!   it.
//! - `marks`: likes and reposts (`PUT`/`DELETE /v1/tracks/{id}/like|repost`),
//!   a user's likes, and a track's counts (`/v1/tracks/{id}/stats`).
//! - `follows`: follow and unfollow, followers and following.
//! - `playlists`: playlists and their items; [`playlist_order`] holds the
//!   list operations (insert, remove, reorder) as pure functions.
//! - `comments`: timed comments.
//! - `feed`: uploads and reposts of the people the caller follows.
//! - [`page_cursor`]: the `(time, id)` cursor of the feed and of comments.
//!
//! Decisions (SoundCloud's behaviour where it has one):
//! - Only processed (`ready`) tracks exist for anyone but their owner: a
//!   queued, processing or failed track of someone else is 404, like a
//!   private one. Its owner may like it and put it in playlists; commenting
//!   needs its duration, so it waits for `ready` (409 `track_not_ready`), and
//!   reposting needs a public, ready track (422 otherwise).
//! - An unlisted track may be reached by its id (liked, commented, added to
//!   a playlist), but lists shown to others (likes, playlists, the feed) leave
//!   it out: only its owner, and the person whose list it is, see it there.
//! - Unknown and invisible tracks, playlists and users answer 404 (never 403,
//!   so private things do not leak); 403 is for acting on something one can
//!   see but does not own.
//!
//! Architecture Invariant: this area never deletes tracks or users and never
//! needs to be told about their deletion: every row references them with
//! `ON DELETE CASCADE`, and readers never assume a row they reference exists
//! (playlist positions may have gaps until the next change closes them).

use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use veza_codec::config_layers;

use crate::config::ConfigError;
use crate::state::AppState;

mod comments;
mod feed;
mod follows;
mod marks;
pub mod page_cursor;
pub mod playlist_order;
mod playlists;
mod responses;
pub mod visibility;

/// `[social]`: bounds of likes, follows, playlists, comments and pages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocialConfig {
    /// Items in a page (likes, followers, comments, feed) when the request
    /// gives no `limit`.
    pub page_items_default: i64,
    /// Most items in a page.
    pub page_items_max: i64,
    /// People one user may follow; past it, following answers 409. It also
    /// bounds the work of building a feed.
    pub following_per_user_max: i64,
    /// Playlists one user may own; past it, creating one answers 409.
    pub playlists_per_user_max: i64,
    /// Tracks in one playlist; past it, adding one answers 409.
    pub playlist_tracks_max: i64,
    /// Longest playlist title, in characters (at least 1 is needed).
    pub playlist_title_chars_max: usize,
    /// Longest playlist description, in characters.
    pub playlist_description_chars_max: usize,
    /// Longest comment, in characters (at least 1 is needed).
    pub comment_chars_max: usize,
}

impl Default for SocialConfig {
    fn default() -> Self {
        Self {
            page_items_default: 50,
            page_items_max: 100,
            following_per_user_max: 5_000,
            playlists_per_user_max: 500,
            playlist_tracks_max: 1_000,
            playlist_title_chars_max: 200,
            playlist_description_chars_max: 4_000,
            comment_chars_max: 1_000,
        }
    }
}

impl SocialConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&str, i64, i64, i64); 8] = [
            ("social.page_items_max", self.page_items_max, 1, 10_000),
            (
                "social.page_items_default",
                self.page_items_default,
                1,
                self.page_items_max,
            ),
            (
                "social.following_per_user_max",
                self.following_per_user_max,
                1,
                1_000_000,
            ),
            (
                "social.playlists_per_user_max",
                self.playlists_per_user_max,
                1,
                1_000_000,
            ),
            // A change rewrites the whole list in one transaction, so the
            // bound also bounds the work (and bind parameters) of a change.
            (
                "social.playlist_tracks_max",
                self.playlist_tracks_max,
                1,
                5_000,
            ),
            (
                "social.playlist_title_chars_max",
                self.playlist_title_chars_max as i64,
                1,
                4_096,
            ),
            (
                "social.playlist_description_chars_max",
                self.playlist_description_chars_max as i64,
                0,
                65_536,
            ),
            (
                "social.comment_chars_max",
                self.comment_chars_max as i64,
                1,
                65_536,
            ),
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

/// The social routes.
pub fn router() -> OpenApiRouter<AppState> {
    marks::router()
        .merge(follows::router())
        .merge(playlists::router())
        .merge(comments::router())
        .merge(feed::router())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_social_config_is_valid_and_bad_values_name_their_key() {
        SocialConfig::default().validate().unwrap();
        let config = SocialConfig {
            playlist_tracks_max: 0,
            ..SocialConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("social.playlist_tracks_max"), "{error}");
        let config = SocialConfig {
            page_items_default: 101,
            ..SocialConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("social.page_items_default"), "{error}");
    }
}
