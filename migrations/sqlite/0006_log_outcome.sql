-- How each request ended (RequestLog.outcome in proto/llmgw/v1/logs.proto),
-- stored by name: "ok", "upstream_error", "interrupted", "timeout",
-- "cancelled_by_client", "cancelled_by_admin" or "refused". Rows stored
-- before keep '' (unspecified). Indexed with time for `llmgw logs --outcome`.
ALTER TABLE request_logs ADD COLUMN outcome TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS request_logs_outcome_time ON request_logs (outcome, time_ms);
