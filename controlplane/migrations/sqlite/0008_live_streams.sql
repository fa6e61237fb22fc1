-- Live streams (Icecast-like broadcasts). Times are unix milliseconds;
-- booleans 0/1. Only the SHA-256 (lower-case hex) of a stream key is kept:
-- the key itself is shown once, at creation or rotation.
CREATE TABLE live_streams (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The name in /v1/live/{name}: ^[a-z0-9][a-z0-9_-]{0,63}$ (checked by the API).
    name TEXT NOT NULL UNIQUE,
    owner_user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    genre TEXT NOT NULL DEFAULT '',
    is_public INTEGER NOT NULL DEFAULT 1 CHECK (is_public IN (0, 1)),
    recording_enabled INTEGER NOT NULL DEFAULT 0 CHECK (recording_enabled IN (0, 1)),
    stream_key_hash TEXT NOT NULL,
    -- The DSP chain as a JSON object, validated by the data plane's codec;
    -- '' means the defaults.
    dsp_config_json TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX live_streams_by_owner ON live_streams (owner_user_id, id);
CREATE INDEX live_streams_public_by_id ON live_streams (is_public, id);
