-- A day's partitions are created beside their parents and then attached,
-- which takes a SHARE UPDATE EXCLUSIVE lock on each parent instead of the
-- ACCESS EXCLUSIVE lock of CREATE TABLE ... PARTITION OF (#18).
--
-- Ingest inserts into request_logs, then request_attempts, then
-- request_log_details in each batch's transaction, holding each parent
-- (ROW EXCLUSIVE) until it commits. The function of migration 0033 took
-- the three parents ACCESS EXCLUSIVE in retention's order (attempts,
-- details, logs): holding request_attempts, it waited for request_logs
-- behind another control plane's or stream's open batch, which in turn
-- waited for request_attempts. The function's 200 ms lock timeout broke
-- that each time, and under steady ingest from two streams all 40 tries
-- of a new day failed (a 20-million-record backfill of bench/
-- log_volume.sh stopped after five minutes: "the control plane cannot
-- store logs right now"). The hourly pass that creates tomorrow's days
-- ahead of live traffic met the same under steady ingest, and a data
-- plane's spool of records from a day not created yet too.
--
-- ATTACH PARTITION needs only SHARE UPDATE EXCLUSIVE on the parent, which
-- conflicts with neither readers (ACCESS SHARE) nor ingest (ROW
-- EXCLUSIVE), only with retention's DROP of a day (ACCESS EXCLUSIVE), an
-- ANALYZE or VACUUM of the parent, DDL on it and another attach. Those
-- parent locks are still taken in one statement, in retention's order,
-- waiting at most 200 ms, and the callers try again after a pause
-- (controlplane/src/logs/retention.rs `ensure_day`). ONLY is written
-- before each name: in 0033's `LOCK TABLE ONLY a, b, c` it applied to the
-- first alone, and the statement locked every day partition of
-- request_log_details and request_logs too, ACCESS EXCLUSIVE, so each try
-- also waited for autovacuum on any day (which holds its partition SHARE
-- UPDATE EXCLUSIVE, nearly always one of them under steady ingest).
--
-- The new table is empty, so attaching checks no rows and builds its
-- indexes at once; it locks no other day.
--
-- The new table copies everything of its parent's but the indexes
-- (LIKE ... INCLUDING ALL EXCLUDING INDEXES: columns, defaults, NOT NULL
-- and CHECK constraints, per-column storage and compression); ATTACH then
-- adds the parent's indexes and primary key, named as PARTITION OF names
-- them. Creating and attaching are one transaction, so a partition that
-- exists is attached; while a day is incomplete, a table of one of its
-- names that is not a partition is an error.
CREATE OR REPLACE FUNCTION llmgw_ensure_log_day(t_ms BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    day_ms BIGINT := (t_ms / 86400000) * 86400000;
    suffix TEXT := to_char(to_timestamp(day_ms / 1000) AT TIME ZONE 'UTC', 'YYYYMMDD');
    caller_timeout TEXT;
    parent TEXT;
    child TEXT;
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
    LOCK TABLE ONLY request_attempts, ONLY request_log_details, ONLY request_logs
        IN SHARE UPDATE EXCLUSIVE MODE;
    PERFORM set_config('lock_timeout', caller_timeout, true);
    FOREACH parent IN ARRAY ARRAY['request_logs', 'request_attempts', 'request_log_details'] LOOP
        child := parent || '_p' || suffix;
        IF to_regclass(child) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING ALL EXCLUDING INDEXES)', child, parent);
            EXECUTE format(
                'ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                parent, child, day_ms, day_ms + 86400000);
        ELSIF NOT EXISTS (SELECT 1 FROM pg_inherits
                          WHERE inhrelid = to_regclass(child) AND inhparent = parent::regclass) THEN
            RAISE EXCEPTION 'table % exists but is not a partition of %: rename or drop it', child, parent;
        END IF;
    END LOOP;
END
$$;
