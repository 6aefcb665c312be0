-- Exact costs (#16; docs/architecture.md "Data model"): a request's cost in
-- nano-US dollars (1e-9 USD) as an integer, as the data plane computes it,
-- so that sums are exact. `cost` (a float) stays, for older readers.
--
-- request_logs.cost_nanos is NULL on rows stored before this migration:
-- readers take `cost` to the nearest nano-dollar there (sql.rs COST_NANOS),
-- which spares rewriting every stored row. The same holds for log_rollups:
-- a row's first addition after it fills the exact sum in (rollup.rs).
ALTER TABLE request_logs ADD COLUMN cost_nanos INTEGER;
ALTER TABLE log_rollups ADD COLUMN cost_nanos INTEGER;
