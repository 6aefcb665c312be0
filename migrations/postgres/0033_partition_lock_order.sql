-- Creating a day's partitions takes its parents' locks all at once, in
-- one statement, before it creates anything (docs/architecture.md "Logs:
-- acknowledged shipping", where partitions are created).
--
-- CREATE TABLE ... PARTITION OF takes an ACCESS EXCLUSIVE lock on the
-- parent. Created one after the other, the function held request_logs
-- while it built that partition and then waited for request_attempts. A
-- reader that had already read request_attempts in the same transaction
-- or statement (a request's attempts, a count of both) and went on to
-- request_logs waited for the function in turn: a deadlock, which
-- PostgreSQL breaks after deadlock_timeout (1 s) by failing one of them,
-- the reader as often as not.
--
-- Now the three locks are taken by one LOCK TABLE ONLY statement (ONLY:
-- the parents, not each day under them), which waits at most 200 ms for
-- each, well under deadlock_timeout: the function holds a lock only while
-- it waits for the next, taken microseconds apart, so while a reader
-- holds one of the parents the function gives up its locks first and the
-- reader goes on. Its callers try again after a pause
-- (logs::retention::ensure_day). The order is the one in which
-- retention's partition drop takes the same parents (attempts, details,
-- logs), so that the two never wait for each other in a circle either.
-- The timeout is set for the LOCK statement alone, only when the caller's
-- is longer (or none), and then put back, so a caller's own transaction
-- keeps its setting.
CREATE OR REPLACE FUNCTION llmgw_ensure_log_day(t_ms BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    day_ms BIGINT := (t_ms / 86400000) * 86400000;
    suffix TEXT := to_char(to_timestamp(day_ms / 1000) AT TIME ZONE 'UTC', 'YYYYMMDD');
    caller_timeout TEXT;
BEGIN
    IF to_regclass('request_logs_p' || suffix) IS NOT NULL
       AND to_regclass('request_attempts_p' || suffix) IS NOT NULL
       AND to_regclass('request_log_details_p' || suffix) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('llmgw_log_partitions'));
    caller_timeout := current_setting('lock_timeout');
    -- pg_settings gives the value in milliseconds; 0 is no timeout.
    IF (SELECT setting::BIGINT FROM pg_settings WHERE name = 'lock_timeout')
       NOT BETWEEN 1 AND 200 THEN
        PERFORM set_config('lock_timeout', '200ms', true);
    END IF;
    LOCK TABLE ONLY request_attempts, request_log_details, request_logs
        IN ACCESS EXCLUSIVE MODE;
    PERFORM set_config('lock_timeout', caller_timeout, true);
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF request_logs FOR VALUES FROM (%s) TO (%s)',
        'request_logs_p' || suffix, day_ms, day_ms + 86400000);
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF request_attempts FOR VALUES FROM (%s) TO (%s)',
        'request_attempts_p' || suffix, day_ms, day_ms + 86400000);
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF request_log_details FOR VALUES FROM (%s) TO (%s)',
        'request_log_details_p' || suffix, day_ms, day_ms + 86400000);
END
$$;
