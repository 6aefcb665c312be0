-- Each attempt carries the time of its request, as on PostgreSQL, where
-- attempts are partitioned by it alongside their request logs. One set of
-- statements serves both databases.
ALTER TABLE request_attempts ADD COLUMN request_time_ms INTEGER NOT NULL DEFAULT 0;
UPDATE request_attempts
SET request_time_ms = COALESCE(
    (SELECT time_ms FROM request_logs WHERE request_logs.id = request_attempts.request_id), 0);
