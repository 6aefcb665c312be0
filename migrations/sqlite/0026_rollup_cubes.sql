-- Rollup cubes (#18; docs/architecture.md "Log rollups"): the rollups are
-- kept several times over, each by its own set of dimensions (a grouping
-- set), so that stats read a cube whose rows grow with the answer's
-- dimensions instead of the one keyed by every dimension, whose rows grow
-- with keys times users times models (controlplane/src/logs/rollup.rs,
-- CUBES). `cube` is part of the key: 0 `full` (every dimension: all rows
-- of migration 0017), 1 `total` (none), 2 `model` (model, provider and
-- upstream_model), 3 `key`, 4 `user`; each also keeps outcome and failed.
-- A dimension a cube does not keep is stored as ''. SQLite cannot change a
-- primary key in place: the table is copied.
CREATE TABLE log_rollups_cubes (
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
    cost_nanos INTEGER,
    cube INTEGER NOT NULL,
    PRIMARY KEY (cube, bucket_s, start_ms, dims)
);
INSERT INTO log_rollups_cubes (bucket_s, start_ms, dims, model, provider,
    upstream_model, key_name, end_user, outcome, failed, requests, errors_4xx,
    errors_5xx, cancels, input_tokens, output_tokens, cache_read_tokens,
    cache_creation_tokens, reasoning_tokens, cost, latency_sketch, ttfb_sketch,
    cost_nanos, cube)
SELECT bucket_s, start_ms, dims, model, provider, upstream_model, key_name,
    end_user, outcome, failed, requests, errors_4xx, errors_5xx, cancels,
    input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
    reasoning_tokens, cost, latency_sketch, ttfb_sketch, cost_nanos, 0
FROM log_rollups;
DROP TABLE log_rollups;
ALTER TABLE log_rollups_cubes RENAME TO log_rollups;

-- Each cube holds every record with time_ms >= complete_from_ms, and
-- replaces log_rollup_state: `full` keeps its start; the new cubes start
-- at 0 on a database with no logs and no rollups yet, else at the next
-- minute (stats over earlier times read `full` for them). A cube without
-- a row here is neither written nor read.
CREATE TABLE log_rollup_cubes (
    cube INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    complete_from_ms INTEGER NOT NULL
);
INSERT INTO log_rollup_cubes (cube, name, complete_from_ms)
SELECT 0, 'full', COALESCE((SELECT complete_from_ms FROM log_rollup_state WHERE id = 1), 0);
INSERT INTO log_rollup_cubes (cube, name, complete_from_ms)
SELECT c.column1, c.column2,
    -- The next minute, or after the last minute `full` holds if that is
    -- later (records a data plane stamped ahead of this clock).
    CASE WHEN EXISTS (SELECT 1 FROM request_logs) OR EXISTS (SELECT 1 FROM log_rollups)
    THEN max((CAST(strftime('%s', 'now') AS INTEGER) / 60 + 1) * 60000,
             COALESCE((SELECT MAX(start_ms) + 60000 FROM log_rollups WHERE bucket_s = 60), 0))
    ELSE 0 END
FROM (VALUES (1, 'total'), (2, 'model'), (3, 'key'), (4, 'user')) AS c;
DROP TABLE log_rollup_state;
