//! Presence: each user's status is aggregated on one shard
//! ([`super::owner_of_user`]) over all of the user's connections, wherever
//! they are: DoNotDisturb if any connection set it, else Online if any is
//! online, else Idle if any is idle, else Offline (no connection, or every
//! connection set Offline to appear invisible). A change is published as an
//! ephemeral `Presence` event into every room the user's connections are
//! subscribed to; a newly subscribed room gets the current status.
//!
//! The same shard knows where the user's connections are, so it also
//! routes mention notifications to them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use veza_proto::chat::{PresenceStatus, ServerFrame};

use super::{owner_of_room, ChatMessage, ConnRef, PresenceInput, RoomCommand, RoomInput};
use crate::shard::Shard;

/// One user's connections and rooms, on their presence shard.
#[derive(Default)]
struct UserPresence {
    connections: HashMap<ConnRef, PresenceStatus>,
    /// Subscriptions per room over all the user's connections.
    rooms: HashMap<i64, u32>,
    published: Option<PresenceStatus>,
}

impl UserPresence {
    fn aggregate(&self) -> PresenceStatus {
        aggregate(self.connections.values().copied())
    }
}

/// The user's status from their connections' statuses.
pub fn aggregate(statuses: impl IntoIterator<Item = PresenceStatus>) -> PresenceStatus {
    let mut best = PresenceStatus::Offline;
    for status in statuses {
        best = match (best, status) {
            (_, PresenceStatus::DoNotDisturb) | (PresenceStatus::DoNotDisturb, _) => {
                PresenceStatus::DoNotDisturb
            }
            (_, PresenceStatus::Online) | (PresenceStatus::Online, _) => PresenceStatus::Online,
            (_, PresenceStatus::Idle) | (PresenceStatus::Idle, _) => PresenceStatus::Idle,
            _ => PresenceStatus::Offline,
        };
    }
    best
}

/// The users whose presence this shard aggregates.
#[derive(Default)]
pub struct PresenceTable {
    users: RefCell<HashMap<i64, UserPresence>>,
}

/// Handles a presence input for `user_id` (this shard is its presence shard).
pub fn handle(shard: &Rc<Shard>, user_id: i64, input: PresenceInput) {
    let mut publish_to: Vec<i64> = Vec::new();
    let mut status_to_publish = None;
    let mut mention_shards: Vec<u16> = Vec::new();
    let mention_frame;
    {
        let mut users = shard.chat.presence.users.borrow_mut();
        let user = users.entry(user_id).or_default();
        let before = user.published;
        match input {
            PresenceInput::Connected { conn } => {
                user.connections.insert(conn, PresenceStatus::Online);
                mention_frame = None;
            }
            PresenceInput::Status { conn, status } => {
                if let Some(current) = user.connections.get_mut(&conn) {
                    *current = status;
                }
                mention_frame = None;
            }
            PresenceInput::Disconnected { conn } => {
                user.connections.remove(&conn);
                mention_frame = None;
            }
            PresenceInput::RoomJoined { room_id } => {
                let count = user.rooms.entry(room_id).or_insert(0);
                *count += 1;
                if *count == 1 {
                    if let Some(status) = user.published.filter(|s| *s != PresenceStatus::Offline) {
                        publish_one(shard, user_id, room_id, status);
                    }
                }
                mention_frame = None;
            }
            PresenceInput::RoomLeft { room_id } => {
                if let Some(count) = user.rooms.get_mut(&room_id) {
                    *count -= 1;
                    if *count == 0 {
                        user.rooms.remove(&room_id);
                    }
                }
                mention_frame = None;
            }
            PresenceInput::Mention { frame } => {
                for conn in user.connections.keys() {
                    if !mention_shards.contains(&conn.shard) {
                        mention_shards.push(conn.shard);
                    }
                }
                mention_frame = Some(frame);
            }
        }
        let now = user.aggregate();
        let changed = match before {
            None => now != PresenceStatus::Offline,
            Some(before) => before != now,
        };
        if changed {
            user.published = Some(now);
            status_to_publish = Some(now);
            publish_to.extend(user.rooms.keys().copied());
        }
        if user.connections.is_empty() && user.rooms.is_empty() {
            users.remove(&user_id);
        }
    }
    if let Some(status) = status_to_publish {
        for room_id in publish_to {
            publish_one(shard, user_id, room_id, status);
        }
    }
    if let Some(frame) = mention_frame {
        for destination in mention_shards {
            super::send(
                shard,
                destination as usize,
                ChatMessage::ToUser {
                    user_id,
                    frame: frame.clone(),
                },
            );
        }
    }
}

fn publish_one(shard: &Rc<Shard>, user_id: i64, room_id: i64, status: PresenceStatus) {
    let frame = super::frame(&ServerFrame::Presence {
        room_id,
        user_id,
        status,
    });
    super::send(
        shard,
        owner_of_room(room_id, shard.process.shard_count()),
        ChatMessage::Room(Box::new(RoomInput {
            room_id,
            from: None,
            user_id,
            command: RoomCommand::PublishEphemeral { frame },
        })),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use PresenceStatus::*;

    #[test]
    fn aggregate_prefers_do_not_disturb_then_online_then_idle() {
        assert_eq!(aggregate([]), Offline);
        assert_eq!(aggregate([Offline]), Offline);
        assert_eq!(aggregate([Idle, Offline]), Idle);
        assert_eq!(aggregate([Idle, Online]), Online);
        assert_eq!(aggregate([Online, DoNotDisturb, Idle]), DoNotDisturb);
        assert_eq!(aggregate([Offline, Offline]), Offline);
    }
}
