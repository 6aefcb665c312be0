-- Rollup cubes (#18; docs/architecture.md "Log rollups"): the rollups are
-- kept several times over, each by its own set of dimensions (a grouping
-- set), so that stats read a cube whose rows grow with the answer's
-- dimensions instead of the one keyed by every dimension, whose rows grow
-- with keys times users times models (controlplane/src/logs/rollup.rs,
-- CUBES). `cube` is part of the key: 0 `full` (every dimension: all rows
-- of migration 0017), 1 `total` (none), 2 `model` (model, provider and
-- upstream_model), 3 `key`, 4 `user`; each also keeps outcome and failed.
-- A dimension a cube does not keep is stored as ''.
ALTER TABLE log_rollups ADD COLUMN cube BIGINT NOT NULL DEFAULT 0;
ALTER TABLE log_rollups ALTER COLUMN cube DROP DEFAULT;
ALTER TABLE log_rollups DROP CONSTRAINT log_rollups_pkey;
ALTER TABLE log_rollups ADD PRIMARY KEY (cube, bucket_s, start_ms, dims);

-- Each cube holds every record with time_ms >= complete_from_ms, and
-- replaces log_rollup_state: `full` keeps its start; the new cubes start
-- at 0 on a database with no logs and no rollups yet, else at the next
-- minute (stats over earlier times read `full` for them). A cube without
-- a row here is neither written nor read.
CREATE TABLE log_rollup_cubes (
    cube BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    complete_from_ms BIGINT NOT NULL
);
INSERT INTO log_rollup_cubes (cube, name, complete_from_ms)
SELECT 0, 'full', COALESCE((SELECT complete_from_ms FROM log_rollup_state WHERE id = 1), 0);
INSERT INTO log_rollup_cubes (cube, name, complete_from_ms)
SELECT c.cube, c.name,
    -- The next minute, or after the last minute `full` holds if that is
    -- later (records a data plane stamped ahead of this clock).
    CASE WHEN EXISTS (SELECT 1 FROM request_logs) OR EXISTS (SELECT 1 FROM log_rollups)
    THEN GREATEST((floor(extract(epoch FROM clock_timestamp()))::BIGINT / 60 + 1) * 60000,
                  COALESCE((SELECT MAX(start_ms) + 60000 FROM log_rollups WHERE bucket_s = 60), 0))
    ELSE 0 END
FROM (VALUES (1, 'total'), (2, 'model'), (3, 'key'), (4, 'user')) AS c (cube, name);
DROP TABLE log_rollup_state;
