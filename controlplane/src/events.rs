//! Changes that data planes must hear about at once. Areas publish a
//! [`ControlEvent`] when they commit such a change; the control server turns
//! each into a push on every connected data plane.

use tokio::sync::broadcast;

/// A committed change that data planes act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    /// The runtime settings changed to this version.
    ConfigChanged {
        /// The new settings version.
        version: i64,
    },
    /// A signing key was added or retired.
    SigningKeysChanged,
    /// Access tokens with these ids (`jti`) are revoked until they expire.
    TokensRevoked {
        /// Revoked token ids.
        token_ids: Vec<String>,
        /// Their user.
        user_id: i64,
        /// Unix milliseconds when the last of them expires.
        expires_at_ms: i64,
    },
    /// A user's membership or role in a room changed (join, leave, kick, role).
    MembershipChanged {
        /// The room.
        room_id: i64,
        /// The user.
        user_id: i64,
    },
    /// A user was muted or banned in a room (or that ended).
    ModerationChanged {
        /// The room.
        room_id: i64,
        /// The user.
        user_id: i64,
    },
    /// A room's settings changed or it was deleted.
    RoomChanged {
        /// The room.
        room_id: i64,
    },
    /// A track turned ready, changed (visibility, metadata) or was deleted.
    TrackChanged {
        /// The track.
        track_id: i64,
    },
}

/// Events buffered for a slow subscriber before it is told it lagged (and
/// resynchronises by fetching state again).
pub const EVENT_BACKLOG_MAX: usize = 4096;

/// The broadcast hub of control events.
#[derive(Clone, Debug)]
pub struct EventHub {
    sender: broadcast::Sender<ControlEvent>,
}

impl Default for EventHub {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(EVENT_BACKLOG_MAX);
        Self { sender }
    }
}

impl EventHub {
    /// Publishes a committed change. Nobody listening is fine.
    pub fn publish(&self, event: ControlEvent) {
        let _ = self.sender.send(event);
    }

    /// A new subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<ControlEvent> {
        self.sender.subscribe()
    }
}
