-- Fewer request-log indexes (#18, bytes per row): with the rollups
-- answering stats, the lists, `logs get`, follow, export, retention and
-- replay need the time index, the primary key, model, provider and key
-- with time, and the partial indexes on end user, trace id and replay.
--
-- - status_time and outcome_time become one partial index over the rows
--   that are not a plain success: a failure (the FAILED test of
--   controlplane/src/logs/sql.rs) or an outcome other than ok. A list of
--   errors, of 4xx/5xx statuses or of a failed outcome repeats the
--   predicate word for word (sql.rs, NOT_OK), which is what lets both
--   engines use a partial index; it walks the failures newest first.
--   Lists of successes by status or outcome read the time index: most
--   rows are successes, so 50 are found near the top.
-- - latency goes: a latency sort or filter comes with a time range (the
--   time index bounds the rows read), as sorts by TTFB, tokens or cost
--   always have.
DROP INDEX IF EXISTS request_logs_status_time;
DROP INDEX IF EXISTS request_logs_outcome_time;
DROP INDEX IF EXISTS request_logs_latency;
CREATE INDEX request_logs_failed_time ON request_logs (time_ms)
    WHERE (status >= 400 OR cancelled <> 0 OR error <> '' OR outcome NOT IN ('', 'ok'));
