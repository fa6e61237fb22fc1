-- Runtime settings (rate limits, limits, slow-mode default) that data planes
-- apply without a restart. Every change is a new row; the highest version is
-- current, and the rows before it are the history.
CREATE TABLE runtime_settings (
    version INTEGER PRIMARY KEY CHECK (version > 0),
    -- JSON object of rooms::settings::RuntimeSettings.
    settings TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    updated_by INTEGER REFERENCES users (id) ON DELETE SET NULL
);
