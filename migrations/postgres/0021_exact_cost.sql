-- Exact costs (#16; docs/architecture.md "Data model"): a request's cost in
-- nano-US dollars (1e-9 USD) as an integer, as the data plane computes it,
-- so that sums are exact. `cost` (a float) stays, for older readers.
--
-- request_logs.cost_nanos is NULL on rows stored before this migration
-- (adding a column without a default rewrites no partition): readers take
-- `cost` to the nearest nano-dollar there (sql.rs COST_NANOS). The same
-- holds for log_rollups, which may hold millions of minute rows: a row's
-- first addition after this fills its exact sum in (rollup.rs).
ALTER TABLE request_logs ADD COLUMN cost_nanos BIGINT;
ALTER TABLE log_rollups ADD COLUMN cost_nanos BIGINT;
