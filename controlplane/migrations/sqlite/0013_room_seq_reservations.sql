-- The last seq a data plane shard reserved for a room (control protocol
-- ReserveSeqs): seqs up to it may have been assigned and shown to clients
-- without being stored yet, so the next owner starts after it.
ALTER TABLE rooms ADD COLUMN seq_reserved INTEGER NOT NULL DEFAULT 0;
