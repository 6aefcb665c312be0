-- Who sent a request (#17): RequestLog.origin is '' for a client,
-- 'replay' for an admin's replay of another log and 'playground' for the
-- dashboard's playground; RequestLog.replay_of is the id of the log a
-- replay sends again. Rows stored before keep ''.
--
-- request_logs is partitioned by day: the columns and the index are added
-- to every partition, and partitions created later by
-- llmgw_ensure_log_day (PARTITION OF) have them too. A constant default
-- rewrites no rows.
ALTER TABLE request_logs ADD COLUMN origin TEXT NOT NULL DEFAULT '';
ALTER TABLE request_logs ADD COLUMN replay_of TEXT NOT NULL DEFAULT '';
-- A log's replays (ListLogs' replay_of filter): only replays are indexed.
CREATE INDEX request_logs_replay_of ON request_logs (replay_of, time_ms) WHERE replay_of <> '';
