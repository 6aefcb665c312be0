-- Large request bodies stored once by content (#18, bytes per row): a
-- request body of 16 KiB or more is cut into content-defined pieces
-- (controlplane/src/logs/pieces.rs), each stored once a UTC day here,
-- keyed by the day and the first 16 bytes of its SHA-256; the details
-- block holds the hashes in place of the bytes (all but the body's last
-- piece, which stays in the block). Body retention deletes a
-- day's pieces once that day's last details block is gone (retention.rs).
-- A rowid table: pieces are kilobytes, too large for WITHOUT ROWID.
CREATE TABLE request_log_pieces (
    day_ms INTEGER NOT NULL,
    hash BLOB NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (day_ms, hash)
);
