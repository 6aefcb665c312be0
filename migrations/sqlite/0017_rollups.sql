-- Log rollups (#18; docs/architecture.md "Data model"): per-minute, hourly
-- and daily aggregates of the request logs, kept at ingest in the same
-- transaction as the raw rows (controlplane/src/logs/rollup.rs) and only
-- for the records inserted then, so a record shipped twice counts once.
-- Stats read them instead of scanning request_logs, and they outlive the
-- raw rows (--rollup-retention-days, 90 by default).
--
-- One row per level (bucket_s: 60, 3600 or 86400), bucket start and
-- dimensions: model, provider, the answering target (provider and
-- upstream_model), key, end user, outcome and whether the request failed
-- (status >= 400, cancelled or an error message: the stats' errors).
-- `dims` is the first 16 bytes of the SHA-256 of the dimensions, so the
-- key stays small whatever the names' lengths. The sketches are
-- HdrHistograms (V2 encoding, 2 significant digits) of latency_ms and
-- ttfb_ms, merged when a batch adds to the row.
CREATE TABLE log_rollups (
    bucket_s INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    dims BLOB NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    key_name TEXT NOT NULL,
    end_user TEXT NOT NULL,
    outcome TEXT NOT NULL,
    failed INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors_4xx INTEGER NOT NULL,
    errors_5xx INTEGER NOT NULL,
    cancels INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost REAL NOT NULL,
    latency_sketch BLOB NOT NULL,
    ttfb_sketch BLOB NOT NULL,
    PRIMARY KEY (bucket_s, start_ms, dims)
);

-- Rollups hold every record with time_ms >= complete_from_ms. A database
-- with request logs stored before this migration starts them at the next
-- minute (stats over earlier times read the raw rows until retention has
-- removed them); a new database at 0.
CREATE TABLE log_rollup_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    complete_from_ms INTEGER NOT NULL
);
INSERT INTO log_rollup_state (id, complete_from_ms)
SELECT 1, CASE WHEN EXISTS (SELECT 1 FROM request_logs)
    THEN (CAST(strftime('%s', 'now') AS INTEGER) / 60 + 1) * 60000 ELSE 0 END;
