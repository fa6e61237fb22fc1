//! The one-byte enumerations: a user's [`PresenceStatus`] and why the server
//! ended a subscription ([`RemovedReason`]).

/// A user's presence, as set with `SetPresence` and announced in `Presence`
/// events. One byte on the wire; any other value is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PresenceStatus {
    /// Connected and active.
    Online = 1,
    /// Connected but away from the keyboard.
    Idle = 2,
    /// Connected and not to be disturbed; wins over every other status.
    DoNotDisturb = 3,
    /// Not connected, or connected and invisible (a client may set it to
    /// appear offline).
    Offline = 4,
}

impl PresenceStatus {
    /// Every status, in wire-value order.
    pub const ALL: [PresenceStatus; 4] = [
        PresenceStatus::Online,
        PresenceStatus::Idle,
        PresenceStatus::DoNotDisturb,
        PresenceStatus::Offline,
    ];

    /// The status with wire value `value`, if there is one.
    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|status| *status as u8 == value)
    }

    /// The snake-case name, for logs and documents.
    pub fn name(self) -> &'static str {
        match self {
            PresenceStatus::Online => "online",
            PresenceStatus::Idle => "idle",
            PresenceStatus::DoNotDisturb => "do_not_disturb",
            PresenceStatus::Offline => "offline",
        }
    }
}

impl From<PresenceStatus> for u8 {
    fn from(status: PresenceStatus) -> u8 {
        status as u8
    }
}

/// Why the server ended a subscription (`Removed` event). One byte on the
/// wire; any other value is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RemovedReason {
    /// The user is no longer a member of the room, or may no longer read it.
    Kicked = 1,
    /// The user was banned from the room.
    Banned = 2,
    /// The room was deleted.
    RoomDeleted = 3,
}

impl RemovedReason {
    /// Every reason, in wire-value order.
    pub const ALL: [RemovedReason; 3] = [
        RemovedReason::Kicked,
        RemovedReason::Banned,
        RemovedReason::RoomDeleted,
    ];

    /// The reason with wire value `value`, if there is one.
    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| *reason as u8 == value)
    }

    /// The snake-case name, for logs and documents.
    pub fn name(self) -> &'static str {
        match self {
            RemovedReason::Kicked => "kicked",
            RemovedReason::Banned => "banned",
            RemovedReason::RoomDeleted => "room_deleted",
        }
    }
}

impl From<RemovedReason> for u8 {
    fn from(reason: RemovedReason) -> u8 {
        reason as u8
    }
}
