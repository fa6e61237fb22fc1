//! Who may do what in a room: the permission table, in Discord's spirit.
//!
//! Roles rank `owner > admin > moderator > member`. A user who is not a
//! member has no role; for actions aimed at someone, "no role" ranks below
//! `member` (for example the author of a message who has since left).
//!
//! | action                               | member | moderator | admin | owner |
//! |--------------------------------------|:------:|:---------:|:-----:|:-----:|
//! | read history, search                 |   ✓    |     ✓     |   ✓   |   ✓   |
//! | post (unless muted)                  |   ✓    |     ✓     |   ✓   |   ✓   |
//! | edit own messages                    |   ✓    |     ✓     |   ✓   |   ✓   |
//! | edit others' messages                |   ✗    |     ✗     |   ✗   |   ✗   |
//! | delete own messages                  |   ✓    |     ✓     |   ✓   |   ✓   |
//! | delete others' messages              |   ✗    |    ✓ᵗ     |  ✓ᵗ   |  ✓ᵗ   |
//! | mute / unmute                        |   ✗    |    ✓ᵗ     |  ✓ᵗ   |  ✓ᵗ   |
//! | kick                                 |   ✗    |    ✓ᵗ     |  ✓ᵗ   |  ✓ᵗ   |
//! | ban / unban                          |   ✗    |     ✗     |  ✓ᵗ   |  ✓ᵗ   |
//! | invite (add someone to the room)     |   ✗    |     ✓     |   ✓   |   ✓   |
//! | change settings (name, topic, slow mode, public/private) | ✗ | ✗ | ✓ | ✓ |
//! | view the audit log                   |   ✗    |     ✗     |   ✓   |   ✓   |
//! | make someone member or moderator     |   ✗    |     ✗     |  ✓ᵗ   |  ✓ᵗ   |
//! | make someone admin                   |   ✗    |     ✗     |   ✗   |  ✓ᵗ   |
//! | transfer ownership                   |   ✗    |     ✗     |   ✗   |  ✓ᵗ   |
//! | delete the room                      |   ✗    |     ✗     |   ✗   |   ✓   |
//!
//! ᵗ only on a target of strictly lower role: **nobody acts on someone of
//! equal or higher role**, so the owner is untouchable, admins cannot touch
//! each other, and nobody mutes, kicks, bans or re-roles themselves.
//!
//! Further rules, enforced by the handlers rather than the table:
//! - Nobody edits someone else's text, whatever their role: a message says
//!   what its author wrote, or it is deleted (a tombstone). Moderators remove,
//!   they never rewrite.
//! - Anyone may join a public room unless banned; a private room is entered
//!   only by invitation. Non-members may read a public room's history; a
//!   private room does not exist for them (404).
//! - Anyone but the owner may leave; the owner transfers ownership (the old
//!   owner becomes admin) or deletes the room.
//! - Muted members read but do not post until the mute ends. Banned users
//!   lose their membership, cannot read, join or be invited until it ends.
//! - Moderators and above are exempt from slow mode (as in Discord).
//! - Direct-message rooms have two members and no owner: nobody changes their
//!   settings, roles or membership; they cannot be left or deleted.
//! - Instance admins may read any room's audit log; otherwise they have only
//!   the rights of their room role.
//!
//! The same table lives in `controlplane/PERMISSIONS.md`; [`allowed`] is the
//! only implementation, and its unit test spells out every combination.

use serde::{Deserialize, Serialize};

use crate::db::{now_ms, Database};
use crate::error::ApiError;

/// A member's role in a room, in rank order (`Member` lowest).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and posts.
    Member,
    /// Also deletes others' messages, mutes, kicks and invites.
    Moderator,
    /// Also bans, changes settings, assigns member and moderator roles.
    Admin,
    /// Also assigns admins, transfers ownership, deletes the room.
    Owner,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Role::Member, Role::Moderator, Role::Admin, Role::Owner];

    /// The stored and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

/// Something a member may try to do; see the table in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read history and search.
    Read,
    /// Post a message.
    Post,
    /// Edit one's own message.
    EditOwn,
    /// Edit someone else's message: nobody may.
    EditOthers,
    /// Delete one's own message.
    DeleteOwn,
    /// Delete someone else's message (target: the author's role).
    DeleteOthers,
    /// Mute or unmute someone.
    Mute,
    /// Remove someone's membership (they may rejoin a public room).
    Kick,
    /// Ban or unban someone.
    Ban,
    /// Add someone to the room.
    Invite,
    /// Change name, topic, slow mode, public/private.
    ChangeSettings,
    /// Read the room's audit log.
    ViewAuditLog,
    /// Give someone the member role (demote).
    AssignMember,
    /// Give someone the moderator role.
    AssignModerator,
    /// Give someone the admin role.
    AssignAdmin,
    /// Make someone the owner (the actor becomes admin).
    TransferOwnership,
    /// Delete the room and its history.
    DeleteRoom,
}

impl Action {
    /// Every action, in table order.
    pub const ALL: [Action; 17] = [
        Action::Read,
        Action::Post,
        Action::EditOwn,
        Action::EditOthers,
        Action::DeleteOwn,
        Action::DeleteOthers,
        Action::Mute,
        Action::Kick,
        Action::Ban,
        Action::Invite,
        Action::ChangeSettings,
        Action::ViewAuditLog,
        Action::AssignMember,
        Action::AssignModerator,
        Action::AssignAdmin,
        Action::TransferOwnership,
        Action::DeleteRoom,
    ];

    /// The action that gives someone `role`.
    pub fn assign(role: Role) -> Action {
        match role {
            Role::Member => Action::AssignMember,
            Role::Moderator => Action::AssignModerator,
            Role::Admin => Action::AssignAdmin,
            Role::Owner => Action::TransferOwnership,
        }
    }
}

/// Whether a member with `actor` role may do `action` to someone whose role
/// is `target` (`None`: no target, or a target who is not a member).
///
/// This is the permission table of the module docs and its only
/// implementation. Actions without a target ignore `target`.
pub fn allowed(actor: Role, action: Action, target: Option<Role>) -> bool {
    // The lowest role that may do the action at all, and whether the action
    // is aimed at someone (and so needs the actor to outrank them).
    let (lowest_role, aimed_at_someone) = match action {
        Action::Read | Action::Post | Action::EditOwn | Action::DeleteOwn => (Role::Member, false),
        Action::EditOthers => return false,
        Action::DeleteOthers | Action::Mute | Action::Kick => (Role::Moderator, true),
        Action::Invite => (Role::Moderator, false),
        Action::Ban | Action::AssignMember | Action::AssignModerator => (Role::Admin, true),
        Action::ChangeSettings | Action::ViewAuditLog => (Role::Admin, false),
        Action::AssignAdmin | Action::TransferOwnership => (Role::Owner, true),
        Action::DeleteRoom => (Role::Owner, false),
    };
    if actor < lowest_role {
        return false;
    }
    if !aimed_at_someone {
        return true;
    }
    match target {
        None => true,
        Some(target) => actor > target,
    }
}

/// What a user may do in a room right now, for the data plane's cache.
///
/// A cached value must be dropped on `MembershipChanged`, `ModerationChanged`
/// or `RoomChanged` for the room (pushed over the control protocol); mutes
/// and bans also end by themselves, so compare `muted_until_ms` with the
/// clock ([`RoomRights::may_post_at`]) rather than caching a yes/no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRights {
    /// False when there is no such room (every other field is then "no").
    pub room_exists: bool,
    /// The user's role; `None` when not a member.
    pub role: Option<Role>,
    /// May subscribe and read history: members, and anyone for a public
    /// room, unless banned.
    pub can_read: bool,
    /// The role allows posting (members, not banned). Mutes are separate:
    /// see `muted_until_ms` and [`RoomRights::may_post_at`].
    pub can_post: bool,
    /// May delete messages of authors of lower role (or who left).
    pub can_delete_others: bool,
    /// May mute and kick members of lower role.
    pub can_moderate: bool,
    /// Unix ms when the user's mute ends (`i64::MAX`: until lifted); `None`
    /// when not muted at lookup time.
    pub muted_until_ms: Option<i64>,
    /// Banned at lookup time.
    pub banned: bool,
    /// Slow mode that applies to this user: the room's, or 0 for moderators
    /// and above, who are exempt.
    pub slow_mode_seconds: i64,
}

impl RoomRights {
    /// Rights of a user in a room that does not exist.
    pub fn nothing() -> Self {
        Self {
            room_exists: false,
            role: None,
            can_read: false,
            can_post: false,
            can_delete_others: false,
            can_moderate: false,
            muted_until_ms: None,
            banned: false,
            slow_mode_seconds: 0,
        }
    }

    /// Whether a send at `now_ms` is allowed: the role may post and any mute
    /// has ended.
    pub fn may_post_at(&self, now_ms: i64) -> bool {
        self.can_post
            && self
                .muted_until_ms
                .is_none_or(|until_ms| until_ms <= now_ms)
    }
}

/// Stored `until_ms` of a mute or ban that has no end.
pub(crate) const FOREVER_MS: i64 = i64::MAX;

/// Looks up `user_id`'s rights in `room_id` (one query).
pub async fn rights(db: &Database, room_id: i64, user_id: i64) -> Result<RoomRights, sqlx::Error> {
    Ok(access(db, room_id, user_id).await?.rights)
}

/// A user's rights with what the REST handlers also need to know about the
/// room.
#[derive(Debug, Clone)]
pub(crate) struct RoomAccess {
    /// What the user may do.
    pub rights: RoomRights,
    /// A direct-message room.
    pub is_dm: bool,
    /// Until when the user is banned (`FOREVER_MS`: for ever), if banned.
    pub banned_until_ms: Option<i64>,
}

/// kind, is_public, slow_mode_seconds, role, mute end, ban end.
type AccessRow = (String, i64, i64, Option<String>, Option<i64>, Option<i64>);

/// Looks up the room and `user_id`'s standing in it (one query).
pub(crate) async fn access(
    db: &Database,
    room_id: i64,
    user_id: i64,
) -> Result<RoomAccess, sqlx::Error> {
    let row: Option<AccessRow> = sqlx::query_as(
        "SELECT r.kind, r.is_public, r.slow_mode_seconds, \
               (SELECT m.role FROM room_members m WHERE m.room_id = r.id AND m.user_id = $2), \
               (SELECT COALESCE(u.until_ms, 9223372036854775807) FROM room_mutes u \
                  WHERE u.room_id = r.id AND u.user_id = $2), \
               (SELECT COALESCE(b.until_ms, 9223372036854775807) FROM room_bans b \
                  WHERE b.room_id = r.id AND b.user_id = $2) \
             FROM rooms r WHERE r.id = $1",
    )
    .bind(room_id)
    .bind(user_id)
    .fetch_optional(&db.pool)
    .await?;
    let Some((kind, is_public, slow_mode_seconds, role, muted_until_ms, banned_until_ms)) = row
    else {
        return Ok(RoomAccess {
            rights: RoomRights::nothing(),
            is_dm: false,
            banned_until_ms: None,
        });
    };
    let now = now_ms();
    let role = role.as_deref().and_then(Role::parse);
    let banned_until_ms = banned_until_ms.filter(|until_ms| *until_ms > now);
    let banned = banned_until_ms.is_some();
    let is_dm = kind == super::room::KIND_DM;
    let publicly_readable = kind == super::room::KIND_ROOM && is_public != 0;
    let moderator_or_above = role.is_some_and(|role| role >= Role::Moderator);
    let rights = RoomRights {
        room_exists: true,
        role,
        can_read: !banned && (role.is_some() || publicly_readable),
        can_post: !banned && role.is_some(),
        can_delete_others: !banned
            && role.is_some_and(|role| allowed(role, Action::DeleteOthers, None)),
        can_moderate: !banned && role.is_some_and(|role| allowed(role, Action::Kick, None)),
        muted_until_ms: muted_until_ms.filter(|until_ms| *until_ms > now),
        banned,
        slow_mode_seconds: if moderator_or_above {
            0
        } else {
            slow_mode_seconds
        },
    };
    Ok(RoomAccess {
        rights,
        is_dm,
        banned_until_ms,
    })
}

impl RoomAccess {
    /// Ok when the user may read the room. A private room the user is not in
    /// does not exist for them (404, so room ids reveal nothing); a banned
    /// user is told so (403).
    pub fn require_readable(&self) -> Result<(), ApiError> {
        if !self.rights.room_exists {
            return Err(ApiError::not_found("no such room"));
        }
        if self.rights.banned {
            return Err(ApiError::forbidden(self.banned_detail()));
        }
        if !self.rights.can_read {
            return Err(ApiError::not_found("no such room"));
        }
        Ok(())
    }

    /// The user's role, when they may read the room and are a member.
    pub fn require_member(&self) -> Result<Role, ApiError> {
        self.require_readable()?;
        self.rights
            .role
            .ok_or_else(|| ApiError::forbidden("only members of the room may do this"))
    }

    /// The user's role, when the permission table lets it do `action` to
    /// someone of role `target`.
    pub fn require(&self, action: Action, target: Option<Role>) -> Result<Role, ApiError> {
        let role = self.require_member()?;
        if self.is_dm
            && !matches!(
                action,
                Action::Read | Action::Post | Action::EditOwn | Action::DeleteOwn
            )
        {
            return Err(ApiError::forbidden(
                "direct-message rooms have no settings, roles, invitations or moderation",
            ));
        }
        if allowed(role, action, target) {
            return Ok(role);
        }
        let detail = match target {
            Some(target) if target >= role && allowed(role, action, None) => format!(
                "a {} may not act on a {} (nobody acts on an equal or higher role)",
                role.as_str(),
                target.as_str()
            ),
            _ => format!("a {} may not do this (see PERMISSIONS.md)", role.as_str()),
        };
        Err(ApiError::forbidden(detail))
    }

    fn banned_detail(&self) -> String {
        match self.banned_until_ms {
            Some(FOREVER_MS) | None => "you are banned from this room".to_string(),
            Some(until_ms) => format!("you are banned from this room until {until_ms} (unix ms)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One action's grid: rows are the actor (member, moderator, admin,
    /// owner), columns the target (none, member, moderator, admin, owner);
    /// `y` allowed, `-` refused.
    fn check(action: Action, grid: [&str; 4]) {
        let targets = [
            None,
            Some(Role::Member),
            Some(Role::Moderator),
            Some(Role::Admin),
            Some(Role::Owner),
        ];
        for (actor, row) in Role::ALL.into_iter().zip(grid) {
            let cells: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cells.len(), targets.len(), "{action:?} row {row:?}");
            for (target, cell) in targets.into_iter().zip(cells) {
                let expected = match cell {
                    "y" => true,
                    "-" => false,
                    other => panic!("bad cell {other:?}"),
                };
                assert_eq!(
                    allowed(actor, action, target),
                    expected,
                    "{actor:?} {action:?} on {target:?}"
                );
            }
        }
    }

    #[test]
    fn every_role_action_and_target_follows_the_documented_table() {
        // target:          none member moderator admin owner
        let everyone = ["y y y y y", "y y y y y", "y y y y y", "y y y y y"];
        let nobody = ["- - - - -", "- - - - -", "- - - - -", "- - - - -"];
        let moderator_on_lower = ["- - - - -", "y y - - -", "y y y - -", "y y y y -"];
        let moderator_untargeted = ["- - - - -", "y y y y y", "y y y y y", "y y y y y"];
        let admin_on_lower = ["- - - - -", "- - - - -", "y y y - -", "y y y y -"];
        let admin_untargeted = ["- - - - -", "- - - - -", "y y y y y", "y y y y y"];
        let owner_on_lower = ["- - - - -", "- - - - -", "- - - - -", "y y y y -"];
        let owner_untargeted = ["- - - - -", "- - - - -", "- - - - -", "y y y y y"];
        let table = [
            (Action::Read, everyone),
            (Action::Post, everyone),
            (Action::EditOwn, everyone),
            (Action::EditOthers, nobody),
            (Action::DeleteOwn, everyone),
            (Action::DeleteOthers, moderator_on_lower),
            (Action::Mute, moderator_on_lower),
            (Action::Kick, moderator_on_lower),
            (Action::Ban, admin_on_lower),
            (Action::Invite, moderator_untargeted),
            (Action::ChangeSettings, admin_untargeted),
            (Action::ViewAuditLog, admin_untargeted),
            (Action::AssignMember, admin_on_lower),
            (Action::AssignModerator, admin_on_lower),
            (Action::AssignAdmin, owner_on_lower),
            (Action::TransferOwnership, owner_on_lower),
            (Action::DeleteRoom, owner_untargeted),
        ];
        assert_eq!(table.len(), Action::ALL.len(), "every action has a row");
        for ((action, grid), listed) in table.into_iter().zip(Action::ALL) {
            assert_eq!(action, listed, "table order follows Action::ALL");
            check(action, grid);
        }
    }

    #[test]
    fn nobody_acts_on_an_equal_or_higher_role() {
        for action in Action::ALL {
            for actor in Role::ALL {
                for target in Role::ALL.into_iter().filter(|target| *target >= actor) {
                    let aimed = matches!(
                        action,
                        Action::DeleteOthers
                            | Action::Mute
                            | Action::Kick
                            | Action::Ban
                            | Action::AssignMember
                            | Action::AssignModerator
                            | Action::AssignAdmin
                            | Action::TransferOwnership
                            | Action::EditOthers
                    );
                    if aimed {
                        assert!(
                            !allowed(actor, action, Some(target)),
                            "{actor:?} {action:?} {target:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("superuser"), None);
    }

    #[test]
    fn a_mute_blocks_posting_until_it_ends() {
        let rights = RoomRights {
            room_exists: true,
            role: Some(Role::Member),
            can_post: true,
            can_read: true,
            muted_until_ms: Some(1_000),
            ..RoomRights::nothing()
        };
        assert!(!rights.may_post_at(999));
        assert!(rights.may_post_at(1_000));
    }
}
