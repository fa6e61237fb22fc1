-- Social features around tracks (SoundCloud-like): likes, reposts, follows,
-- playlists and timed comments. Times are unix milliseconds. Every row goes
-- with the track or user it names (ON DELETE CASCADE), so deleting a track or
-- a user needs nothing from this area.

-- A user's like of a track; newest first by id.
CREATE TABLE track_likes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    track_id INTEGER NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (user_id, track_id)
);
CREATE INDEX track_likes_by_user ON track_likes (user_id, id);
CREATE INDEX track_likes_by_track ON track_likes (track_id);

-- A user's repost of a track: it shows in the feeds of the user's followers.
CREATE TABLE track_reposts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    track_id INTEGER NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (user_id, track_id)
);
CREATE INDEX track_reposts_by_track ON track_reposts (track_id);

-- follower_user_id follows followee_user_id; never oneself.
CREATE TABLE follows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    follower_user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    followee_user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (follower_user_id, followee_user_id),
    CHECK (follower_user_id <> followee_user_id)
);
CREATE INDEX follows_by_follower ON follows (follower_user_id, id);
CREATE INDEX follows_by_followee ON follows (followee_user_id, id);

CREATE TABLE playlists (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    visibility TEXT NOT NULL DEFAULT 'public'
        CHECK (visibility IN ('public', 'unlisted', 'private')),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX playlists_by_owner ON playlists (owner_user_id, id);

-- The ordered items of a playlist: positions are 0..n-1 after every change
-- the API makes (it rewrites the list in one transaction); a deleted track
-- leaves a gap that the next change closes, so readers order by position
-- and never assume contiguity. A track is in a playlist at most once.
CREATE TABLE playlist_items (
    playlist_id INTEGER NOT NULL REFERENCES playlists (id) ON DELETE CASCADE,
    position INTEGER NOT NULL CHECK (position >= 0),
    track_id INTEGER NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
    added_at_ms INTEGER NOT NULL,
    PRIMARY KEY (playlist_id, position),
    UNIQUE (playlist_id, track_id)
);
CREATE INDEX playlist_items_by_track ON playlist_items (track_id);

-- A comment at a moment of a track (0 <= timestamp_ms <= the track's
-- duration, checked by the API against the processed duration).
CREATE TABLE track_comments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    track_id INTEGER NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL CHECK (timestamp_ms >= 0),
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX track_comments_by_timestamp ON track_comments (track_id, timestamp_ms, id);
CREATE INDEX track_comments_by_id ON track_comments (track_id, id);
CREATE INDEX track_comments_by_user ON track_comments (user_id);
