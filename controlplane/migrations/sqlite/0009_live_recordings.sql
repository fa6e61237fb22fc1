-- Recordings of live broadcasts: the highest rendition of a broadcast, as
-- Ogg Opus pages the data plane sends in chunks. Times are unix
-- milliseconds. A stream's recordings go with it (ON DELETE CASCADE; the
-- control plane removes the files when it deletes the stream): they are
-- reachable only through the stream, and a finished recording that should
-- outlive it becomes a track (which belongs to the owner, not the stream).
CREATE TABLE live_recordings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id INTEGER NOT NULL REFERENCES live_streams (id) ON DELETE CASCADE,
    -- Chosen by the data plane: the broadcast's start time in unix ms.
    recording_id INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    -- Set when the recording completes.
    ended_at_ms INTEGER,
    -- When the last chunk was appended (stale recordings are found by it).
    updated_at_ms INTEGER NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    chunks INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'recording'
        CHECK (status IN ('recording', 'complete', 'interrupted')),
    -- Relative to server.data_dir: recordings/{stream_id}/{recording_id}.opus
    -- once complete, with .part appended before.
    path TEXT NOT NULL,
    UNIQUE (stream_id, recording_id)
);
CREATE INDEX live_recordings_by_status ON live_recordings (status, updated_at_ms);
