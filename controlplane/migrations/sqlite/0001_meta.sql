-- Facts about this database: its instance id and when it was created.
CREATE TABLE veza_meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
