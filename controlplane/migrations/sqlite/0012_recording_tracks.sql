-- A finished live recording becomes a track of the stream's owner: the
-- track it became. No foreign key on purpose: deleting that track must not
-- make the recording look new (and be imported again).
ALTER TABLE live_recordings ADD COLUMN track_id INTEGER;
