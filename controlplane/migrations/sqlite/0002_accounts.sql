-- Accounts and tokens. Times are Unix milliseconds; booleans are 0/1.

-- A user. `username_key` and `email_key` are the lower-cased forms that make
-- names and addresses unique regardless of case.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    username_key TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    totp_enabled INTEGER NOT NULL DEFAULT 0,
    totp_secret BLOB,
    totp_pending_secret BLOB,
    -- The last TOTP time step accepted; a code of this step or an earlier
    -- one is a replay.
    totp_last_step INTEGER,
    created_at_ms INTEGER NOT NULL
);

-- At most one row: the first registered user, who became the instance admin.
-- Claiming it with ON CONFLICT DO NOTHING settles concurrent first sign-ups.
CREATE TABLE instance_admin_claim (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    user_id INTEGER NOT NULL
);

-- Public halves of the access-token signing keys; the private halves are
-- files in <data_dir>/signing-keys/<kid>.key.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    public_key BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    retired_at_ms INTEGER
);

-- A login session: one refresh-token family.
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at_ms INTEGER NOT NULL,
    last_used_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    user_agent TEXT NOT NULL,
    ip TEXT NOT NULL,
    revoked_at_ms INTEGER,
    revoked_reason TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- Refresh tokens by SHA-256; a used one (rotated) presented again is reuse.
CREATE TABLE refresh_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at_ms INTEGER NOT NULL,
    used_at_ms INTEGER
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Access tokens issued per session, so that revoking a session can name
-- (and push) every token of it that has not expired yet.
CREATE TABLE access_tokens (
    jti TEXT PRIMARY KEY NOT NULL,
    session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX access_tokens_by_session ON access_tokens (session_id);
CREATE INDEX access_tokens_by_user ON access_tokens (user_id);
CREATE INDEX access_tokens_revoked ON access_tokens (revoked_at_ms, expires_at_ms);

-- One-time TOTP backup codes by SHA-256.
CREATE TABLE totp_backup_codes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash BLOB NOT NULL,
    used_at_ms INTEGER,
    UNIQUE (user_id, code_hash)
);

-- API keys for bots by SHA-256; `scopes` is space-separated.
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    last_used_at_ms INTEGER
);
CREATE INDEX api_keys_by_user ON api_keys (user_id);
