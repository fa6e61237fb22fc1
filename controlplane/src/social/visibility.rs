//! Who may see a track, in one place: by its id ([`may_open`]) and in a list
//! someone else keeps ([`may_list`]), with the SQL that says the same
//! ([`LISTED_SQL`]). A test checks the two forms agree on every case.
//!
//! The rules (SoundCloud's): a track that is not processed (`ready`) exists
//! only for its owner; a private one only for its owner; an unlisted one may
//! be opened by anyone who has its id, but appears in lists only for its
//! owner and for the person whose list it is (who reached it once).

use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;

/// What the rules need to know about a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackAccess<'a> {
    /// The owner.
    pub owner_user_id: i64,
    /// `public`, `unlisted` or `private`.
    pub visibility: &'a str,
    /// `queued`, `processing`, `ready` or `failed`.
    pub status: &'a str,
}

/// Whether `viewer_user_id` may open (and act on) the track by its id.
pub fn may_open(track: TrackAccess<'_>, viewer_user_id: i64) -> bool {
    track.owner_user_id == viewer_user_id
        || (track.status == "ready" && matches!(track.visibility, "public" | "unlisted"))
}

/// Whether `viewer_user_id` sees the track in a list that `list_owner_user_id`
/// keeps (their likes, their playlist).
pub fn may_list(track: TrackAccess<'_>, viewer_user_id: i64, list_owner_user_id: i64) -> bool {
    track.owner_user_id == viewer_user_id
        || (track.status == "ready"
            && (track.visibility == "public"
                || (track.visibility == "unlisted" && list_owner_user_id == viewer_user_id)))
}

/// [`may_list`] in SQL over `tracks t`, with the viewer in `$1` and the list
/// owner in `$2`.
pub const LISTED_SQL: &str = "(t.owner_user_id = $1 OR (t.status = 'ready' AND \
    (t.visibility = 'public' OR (t.visibility = 'unlisted' AND $2 = $1))))";

/// A track as the social routes show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct TrackSummary {
    /// The track id.
    pub id: i64,
    /// Its title.
    pub title: String,
    /// Its owner.
    pub owner_user_id: i64,
    /// `public`, `unlisted` or `private`.
    pub visibility: String,
    /// `queued`, `processing`, `ready` or `failed` (only the owner sees
    /// anything but `ready`).
    pub status: String,
    /// Its duration once processed.
    pub duration_ms: Option<i64>,
    /// Plays counted so far.
    pub play_count: i64,
    /// When it was uploaded (Unix ms).
    pub created_at_ms: i64,
}

/// The columns of [`TrackSummary`] over `tracks t`.
pub const TRACK_SUMMARY_COLUMNS: &str = "t.id, t.title, t.owner_user_id, t.visibility, \
    t.status, t.duration_ms, t.play_count, t.created_at_ms";

impl TrackSummary {
    /// The fields the rules look at.
    pub fn access(&self) -> TrackAccess<'_> {
        TrackAccess {
            owner_user_id: self.owner_user_id,
            visibility: &self.visibility,
            status: &self.status,
        }
    }
}

/// The track `track_id` if `viewer_user_id` may open it; otherwise 404 (an
/// invisible track does not exist for the viewer).
pub async fn load_openable(
    state: &AppState,
    track_id: i64,
    viewer_user_id: i64,
) -> Result<TrackSummary, ApiError> {
    let row: Option<TrackSummary> = sqlx::query_as(&format!(
        "SELECT {TRACK_SUMMARY_COLUMNS} FROM tracks t WHERE t.id = $1"
    ))
    .bind(track_id)
    .fetch_optional(&state.db.pool)
    .await?;
    row.filter(|track| may_open(track.access(), viewer_user_id))
        .ok_or_else(|| ApiError::not_found("no such track"))
}

/// 404 unless user `user_id` exists.
pub async fn require_user(state: &AppState, user_id: i64) -> Result<(), ApiError> {
    let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&state.db.pool)
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("no such user"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: i64 = 1;
    const LIST_OWNER: i64 = 2;
    const STRANGER: i64 = 3;

    fn track(visibility: &'static str, status: &'static str) -> TrackAccess<'static> {
        TrackAccess {
            owner_user_id: OWNER,
            visibility,
            status,
        }
    }

    #[test]
    fn owners_open_their_tracks_in_every_state_and_others_only_ready_public_or_unlisted_ones() {
        for visibility in ["public", "unlisted", "private"] {
            for status in ["queued", "processing", "ready", "failed"] {
                let track = track(visibility, status);
                assert!(may_open(track, OWNER), "{visibility} {status}");
                let expected = status == "ready" && visibility != "private";
                assert_eq!(may_open(track, STRANGER), expected, "{visibility} {status}");
            }
        }
    }

    #[test]
    fn unlisted_tracks_appear_only_in_the_lists_of_their_owner_and_the_list_keeper() {
        let unlisted = track("unlisted", "ready");
        assert!(may_list(unlisted, OWNER, LIST_OWNER));
        assert!(may_list(unlisted, LIST_OWNER, LIST_OWNER));
        assert!(!may_list(unlisted, STRANGER, LIST_OWNER));
        assert!(may_list(track("public", "ready"), STRANGER, LIST_OWNER));
        assert!(!may_list(
            track("public", "processing"),
            STRANGER,
            LIST_OWNER
        ));
        assert!(!may_list(track("private", "ready"), LIST_OWNER, LIST_OWNER));
        assert!(may_list(track("private", "failed"), OWNER, LIST_OWNER));
    }

    #[test]
    fn a_listable_track_can_always_be_opened() {
        for visibility in ["public", "unlisted", "private"] {
            for status in ["queued", "ready"] {
                for viewer in [OWNER, LIST_OWNER, STRANGER] {
                    let track = track(visibility, status);
                    if may_list(track, viewer, LIST_OWNER) {
                        assert!(may_open(track, viewer), "{visibility} {status} {viewer}");
                    }
                }
            }
        }
    }

    /// [`LISTED_SQL`] is the SQL form of [`may_list`]: each of its clauses
    /// is here, and the integration tests (`tests/social.rs`) run it on both
    /// databases against every case above.
    #[test]
    fn the_sql_form_names_every_case_of_the_rule() {
        for needle in [
            "t.owner_user_id = $1",
            "t.status = 'ready'",
            "t.visibility = 'public'",
            "t.visibility = 'unlisted' AND $2 = $1",
        ] {
            assert!(LISTED_SQL.contains(needle), "{needle}");
        }
        assert!(!LISTED_SQL.contains("private"), "private is never listed");
    }
}
