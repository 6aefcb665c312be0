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
    bucket_s BIGINT NOT NULL,
    start_ms BIGINT NOT NULL,
    dims BYTEA NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    key_name TEXT NOT NULL,
    end_user TEXT NOT NULL,
    outcome TEXT NOT NULL,
    failed BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    errors_4xx BIGINT NOT NULL,
    errors_5xx BIGINT NOT NULL,
    cancels BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_creation_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    latency_sketch BYTEA NOT NULL,
    ttfb_sketch BYTEA NOT NULL,
    PRIMARY KEY (bucket_s, start_ms, dims)
);

-- Rollups hold every record with time_ms >= complete_from_ms. A database
-- with request logs stored before this migration starts them at the next
-- minute (stats over earlier times read the raw rows until retention has
-- removed them); a new database at 0.
CREATE TABLE log_rollup_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    complete_from_ms BIGINT NOT NULL
);
INSERT INTO log_rollup_state (id, complete_from_ms)
SELECT 1, CASE WHEN EXISTS (SELECT 1 FROM request_logs)
    THEN (floor(extract(epoch FROM clock_timestamp()))::BIGINT / 60 + 1) * 60000 ELSE 0 END;
