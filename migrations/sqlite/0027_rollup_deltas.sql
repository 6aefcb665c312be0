-- Rollup deltas (#18; docs/architecture.md "Log rollups"): what each
-- ingest batch adds to the rollups, appended in the batch's transaction
-- (only for the records it inserted, so a resent record counts once) and
-- folded into log_rollups by a background compaction
-- (controlplane/src/logs/deltas.rs), which deletes the deltas
-- it folds in the same transaction as its upserts.
--
-- Before, each batch upserted the rollup rows itself, at three levels, and
-- held the locks of the rows every batch shares (the small cubes' minutes,
-- hours and days, the day's spend) until it committed: concurrent batches
-- waited on each other. A delta is a plain insert, at the minute level
-- only, and locks nothing another batch writes.
--
-- One row per cube, minute and dimensions of a batch; the columns are
-- log_rollups' (without the level and the hash of the dimensions, which
-- compaction computes). Stats read log_rollups and the deltas not yet
-- folded in, in one statement, so an answer never counts a delta twice or
-- not at all.
CREATE TABLE log_rollup_deltas (
    seq INTEGER PRIMARY KEY,
    cube INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
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
    cost_nanos INTEGER NOT NULL,
    latency_sketch BLOB NOT NULL,
    ttfb_sketch BLOB NOT NULL
);
