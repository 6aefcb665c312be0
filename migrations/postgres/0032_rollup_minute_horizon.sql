-- The minute rows' horizon (#18; docs/architecture.md "Log rollups",
-- "Minute rows go earlier"): per-minute rollups are the bulk of
-- log_rollups (a minute row per cube and dimensions that had a request
-- that minute, which with a few hundred keys is about one per request in
-- the `full` and `key` cubes), yet stats need them only near the ends of
-- a range and for series of minutes. They are kept for
-- --rollup-minute-retention-days; hours and days for
-- --rollup-retention-days.
--
-- A row here says that the rollups of level `bucket_s` hold every bucket
-- starting at or after kept_from_ms (a UTC day's start), so that the
-- stats planner reads that level only from there on, and earlier times
-- from the hours (or the raw rows, for less than an hour). Retention only
-- moves it forward; earlier_from_ms is where it was before its last move,
-- at moved_at_ms. Rows behind the horizon are deleted only once it has
-- been in force for an hour (behind earlier_from_ms until then), so a
-- stats plan made with the horizon of a moment before still finds its
-- rows. Without a row, a level holds every bucket since its cube started.
CREATE TABLE log_rollup_levels (
    bucket_s BIGINT PRIMARY KEY,
    kept_from_ms BIGINT NOT NULL,
    earlier_from_ms BIGINT NOT NULL,
    moved_at_ms BIGINT NOT NULL
);
