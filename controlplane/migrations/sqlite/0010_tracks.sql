-- Tracks: uploaded audio, processed off the request path into an Ogg Opus
-- ladder and a waveform. Times are unix milliseconds. Files live under
-- tracks.media_dir (originals/{id} until the track is deleted or fails;
-- tracks/{id}/{bitrate}.opus and tracks/{id}/waveform.json once ready);
-- paths stored here are relative to it.
CREATE TABLE tracks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    -- A JSON array of strings.
    tags TEXT NOT NULL DEFAULT '[]',
    visibility TEXT NOT NULL DEFAULT 'public'
        CHECK (visibility IN ('public', 'unlisted', 'private')),
    -- Carried by an unlisted track's link (?s=); made at upload, never rotated.
    link_secret TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'processing', 'ready', 'failed')),
    failure_reason TEXT,
    -- Per mille, 0 to 1000.
    progress INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1000),
    duration_ms INTEGER,
    -- Integrated loudness of the original (EBU R128), LUFS.
    loudness_lufs REAL,
    waveform_path TEXT,
    play_count INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX tracks_by_owner ON tracks (owner_user_id, id);
CREATE INDEX tracks_by_status ON tracks (status, id);
CREATE INDEX tracks_by_visibility ON tracks (visibility, id);

CREATE TABLE track_renditions (
    track_id INTEGER NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
    bitrate_kbps INTEGER NOT NULL,
    -- tracks/{track_id}/{bitrate_kbps}.opus
    relative_path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    -- Quoted strong entity tag: "{track_id}-{bitrate}-{size}-{modified_ms}".
    etag TEXT NOT NULL,
    modified_at_ms INTEGER NOT NULL,
    PRIMARY KEY (track_id, bitrate_kbps)
);
