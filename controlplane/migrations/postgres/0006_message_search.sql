-- Full-text search over message bodies: a generated tsvector column with a
-- GIN index. The 'simple' configuration lowercases without stemming, like the
-- SQLite side's unicode61 tokenizer, so both databases find the same words.
-- A deleted message has an empty body and so no terms.
ALTER TABLE messages
    ADD COLUMN body_search tsvector GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED;
CREATE INDEX messages_body_search ON messages USING GIN (body_search);
