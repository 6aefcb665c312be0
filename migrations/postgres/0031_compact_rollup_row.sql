-- A narrower log_rollups row (#18, bytes per row), as 0030 did for
-- request_logs. The rollups grew by migrations too (cost_nanos in 0021,
-- cube in 0026), and where traffic is thin for its number of keys nearly
-- every record makes minute and hour rows of its own, so a rollup row
-- costs about as much as a record: on the log_volume corpus (200,000
-- records over 7 days) the table held 875,000 rows, about 1,550 bytes a
-- record.
-- This migration rebuilds it with the fixed-width columns first, widest
-- first, then the key's hash, the names and the sketches:
--
-- - the bucket start, counters, tokens and costs stay 8 bytes (a day row
--   of a busy deployment counts beyond 32 bits);
-- - the level (bucket_s: 60, 3600 or 86400) becomes INTEGER, and the cube
--   (0 to 4) and the failure flag SMALLINT.
--
-- A row goes from 224 to 193 bytes of heap on that corpus, and the primary
-- key's entries from 56 to 48 bytes (docs/benchmarks.md "Bytes per row").
-- Queries are unchanged: the control plane binds and reads i64, which
-- PostgreSQL casts on insert and compares across integer widths in the
-- primary key. log_rollup_deltas, which compaction empties every second,
-- keeps its columns.
--
-- The rebuild copies every rollup row under an exclusive lock, so ingest
-- (whose deltas compaction cannot fold meanwhile) and stats wait for it:
-- see docs/deploy.md's upgrade notes.

ALTER TABLE log_rollups RENAME TO log_rollups_wide;
ALTER TABLE log_rollups_wide DROP CONSTRAINT log_rollups_pkey;

CREATE TABLE log_rollups (
    start_ms BIGINT NOT NULL,
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
    cost_nanos BIGINT,
    bucket_s INTEGER NOT NULL,
    cube SMALLINT NOT NULL,
    failed SMALLINT NOT NULL,
    dims BYTEA NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    key_name TEXT NOT NULL,
    end_user TEXT NOT NULL,
    outcome TEXT NOT NULL,
    latency_sketch BYTEA NOT NULL,
    ttfb_sketch BYTEA NOT NULL
);

INSERT INTO log_rollups (
    start_ms, requests, errors_4xx, errors_5xx, cancels, input_tokens,
    output_tokens, cache_read_tokens, cache_creation_tokens, reasoning_tokens,
    cost, cost_nanos, bucket_s, cube, failed, dims, model, provider,
    upstream_model, key_name, end_user, outcome, latency_sketch, ttfb_sketch)
SELECT
    start_ms, requests, errors_4xx, errors_5xx, cancels, input_tokens,
    output_tokens, cache_read_tokens, cache_creation_tokens, reasoning_tokens,
    cost, cost_nanos, bucket_s, cube, LEAST(failed, 1), dims, model, provider,
    upstream_model, key_name, end_user, outcome, latency_sketch, ttfb_sketch
FROM log_rollups_wide;

DROP TABLE log_rollups_wide;

-- Built over the copied rows, which fills its pages.
ALTER TABLE log_rollups ADD CONSTRAINT log_rollups_pkey PRIMARY KEY (cube, bucket_s, start_ms, dims);
