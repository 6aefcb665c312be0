-- Why the upstream stopped, exactly as it said it (RequestLog.stop_reason
-- in proto/llmgw/v1/logs.proto), e.g. "end_turn", "pause_turn",
-- "MAX_TOKENS", "tool_calls". Rows stored before keep ''.
--
-- request_logs is partitioned by day: a column added to the parent is
-- added to every partition, and partitions created later by
-- llmgw_ensure_log_day (PARTITION OF) have it too. A constant default
-- rewrites no rows.
ALTER TABLE request_logs ADD COLUMN stop_reason TEXT NOT NULL DEFAULT '';
