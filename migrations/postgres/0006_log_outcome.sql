-- How each request ended (RequestLog.outcome in proto/llmgw/v1/logs.proto),
-- stored by name: "ok", "upstream_error", "interrupted", "timeout",
-- "cancelled_by_client", "cancelled_by_admin" or "refused". Rows stored
-- before keep '' (unspecified). Indexed with time for `llmgw logs --outcome`.
--
-- request_logs is partitioned by day: a column added to the parent is
-- added to every partition, and partitions created later by
-- llmgw_ensure_log_day (PARTITION OF) have it too. A constant default
-- rewrites no rows. An index on the partitioned parent is created on every
-- partition, present and future.
ALTER TABLE request_logs ADD COLUMN outcome TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS request_logs_outcome_time ON request_logs (outcome, time_ms);
