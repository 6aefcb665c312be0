-- A request's one attempt in its own row (#18, "Bytes per row"): most
-- requests have a single attempt that repeats the record's provider,
-- upstream model, status and error, and a row of request_attempts (with
-- its primary key index) cost about 237 bytes a request to say only its
-- latency and when it was sent. Such an attempt is now kept as those two
-- numbers here (controlplane/src/logs/row.rs `inline_attempt`); NULL
-- when the attempts are in request_attempts (several, or one that differs
-- from the record), or there were none. Rows stored before keep theirs in
-- request_attempts. Adding NULL columns rewrites no row.
ALTER TABLE request_logs ADD COLUMN attempt_latency_ms BIGINT;
ALTER TABLE request_logs ADD COLUMN attempt_offset_ms BIGINT;
