-- The W3C trace id of a request (RequestLog.trace_id in
-- proto/llmgw/v1/logs.proto): 32 lowercase hex digits, or '' when the
-- request was neither traced nor sent with a valid `traceparent`. Rows
-- stored before keep ''.
--
-- request_logs is partitioned by day: the column and the index are added
-- to every partition, and partitions created later by
-- llmgw_ensure_log_day (PARTITION OF) have them too. A constant default
-- rewrites no rows.
ALTER TABLE request_logs ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
-- Finding a trace's requests (llmgw logs --trace-id, the dashboard's Trace
-- filter): only rows that carry a trace id are indexed, so untraced
-- traffic pays nothing for it.
CREATE INDEX request_logs_trace_id_time ON request_logs (trace_id, time_ms) WHERE trace_id <> '';
