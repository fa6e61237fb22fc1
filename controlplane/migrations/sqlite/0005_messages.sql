-- Chat messages, persisted in batches sent by the data plane, which assigns
-- each room's sequence numbers. A delete keeps the row as a tombstone (body
-- cleared); an edit keeps the replaced text in message_revisions.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL CHECK (seq > 0),
    author_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The sender's idempotency key; NULL when none was given.
    client_nonce TEXT,
    body TEXT NOT NULL,
    thread_parent_seq INTEGER,
    -- JSON array of mentioned user ids.
    mentions TEXT NOT NULL DEFAULT '[]',
    created_at_ms INTEGER NOT NULL,
    edited_at_ms INTEGER,
    deleted_at_ms INTEGER,
    deleted_by INTEGER,
    UNIQUE (room_id, seq),
    UNIQUE (room_id, author_id, client_nonce)
);
CREATE INDEX messages_thread ON messages (room_id, thread_parent_seq, seq);

-- Each row is the text an edit replaced: revision 1 is the original body.
CREATE TABLE message_revisions (
    room_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    body TEXT NOT NULL,
    editor_id INTEGER NOT NULL,
    edited_at_ms INTEGER NOT NULL,
    PRIMARY KEY (room_id, seq, revision),
    UNIQUE (room_id, seq, edited_at_ms),
    FOREIGN KEY (room_id, seq) REFERENCES messages (room_id, seq) ON DELETE CASCADE
);

CREATE TABLE message_reactions (
    -- Insertion order: emoji are listed in the order they were first used.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (room_id, seq, user_id, emoji),
    FOREIGN KEY (room_id, seq) REFERENCES messages (room_id, seq) ON DELETE CASCADE
);

-- The last seq each member has read; it only moves forward.
CREATE TABLE read_markers (
    room_id INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
