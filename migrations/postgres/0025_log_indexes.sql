-- Fewer bytes in the request-log indexes (#18, bytes per row). With the
-- rollups answering stats, the lists, `logs get`, follow, export,
-- retention and replay need the time index, the primary key, model,
-- provider and key with time, latency, and the partial indexes on end
-- user, trace id and replay. status_time and outcome_time indexed every
-- row, though their lists look for the few that failed: they become two
-- partial indexes over those rows only.
--
-- - request_logs_failed_time: the failures (the FAILED test of
--   controlplane/src/logs/sql.rs), newest first, with the status beside
--   the time so that a status range is tested in the index. Lists of
--   errors and of statuses from 400 use it. A filter repeats the
--   predicate word for word (sql.rs), which both engines need to use a
--   partial index with bound values. Lists of successes by status read
--   the time index: most rows are successes, so 50 are found near the top.
-- - request_logs_not_ok_outcome_time: outcomes other than ok (and other
--   than '', rows stored before 0006), for `--outcome timeout` and the
--   like. A list of ok outcomes reads the time index.
DROP INDEX IF EXISTS request_logs_status_time;
DROP INDEX IF EXISTS request_logs_outcome_time;
CREATE INDEX request_logs_failed_time ON request_logs (time_ms, status)
    WHERE (status >= 400 OR cancelled <> 0 OR error <> '');
CREATE INDEX request_logs_not_ok_outcome_time ON request_logs (outcome, time_ms)
    WHERE outcome NOT IN ('', 'ok');
