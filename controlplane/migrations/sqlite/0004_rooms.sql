-- Rooms, membership with roles, mutes, bans and the moderation audit log.
-- Times are unix milliseconds; booleans 0/1; an until_ms of NULL means "until
-- lifted" (mutes) or "for ever" (bans).
CREATE TABLE rooms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('room', 'dm')),
    name TEXT NOT NULL,
    topic TEXT NOT NULL DEFAULT '',
    is_public INTEGER NOT NULL CHECK (is_public IN (0, 1)),
    slow_mode_seconds INTEGER NOT NULL DEFAULT 0 CHECK (slow_mode_seconds >= 0),
    -- "<smaller user id>:<larger user id>" for a direct-message room, so the
    -- pair has exactly one.
    dm_key TEXT UNIQUE,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX rooms_public_by_id ON rooms (is_public, kind, id);

CREATE TABLE room_members (
    room_id INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'moderator', 'member')),
    joined_at_ms INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_by_user ON room_members (user_id, room_id);
CREATE INDEX room_members_by_role ON room_members (user_id, role);

CREATE TABLE room_mutes (
    room_id INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    until_ms INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    muted_by INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

CREATE TABLE room_bans (
    room_id INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    until_ms INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    banned_by INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

CREATE TABLE room_audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    actor_id INTEGER REFERENCES users (id) ON DELETE SET NULL,
    action TEXT NOT NULL,
    target_user_id INTEGER REFERENCES users (id) ON DELETE SET NULL,
    reason TEXT NOT NULL DEFAULT '',
    -- A JSON object with what the action changed (e.g. {"from":"member","to":"moderator"}).
    detail TEXT NOT NULL DEFAULT '{}',
    expires_at_ms INTEGER,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX room_audit_log_by_room ON room_audit_log (room_id, id);
