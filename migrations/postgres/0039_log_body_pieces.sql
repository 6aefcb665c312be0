-- Large request bodies stored once by content (#18, bytes per row). An
-- agent sends its system prompt, its tools and the conversation so far on
-- every turn; a details block compresses what its own records repeat, but
-- every block stored them again. Ingest now cuts a request body of 16 KiB
-- or more into content-defined pieces (controlplane/src/logs/pieces.rs),
-- stores each piece of a UTC day once here, keyed by the day and the
-- first 16 bytes of its SHA-256, and puts the hashes in the block in
-- place of the bytes.
--
-- Partitioned by day like the details: body retention drops a day's
-- pieces with that day's details (retention.rs). `data` is zstd already:
-- EXTERNAL keeps PostgreSQL from compressing it again when it goes out of
-- line, as for the details (migration 0024).
CREATE TABLE request_log_pieces (
    day_ms BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (day_ms, hash)
) PARTITION BY RANGE (day_ms);
ALTER TABLE request_log_pieces ALTER COLUMN data SET STORAGE EXTERNAL;

-- A pieces partition for each day that has details now.
DO $$
DECLARE
    suffix TEXT;
    start_ms BIGINT;
BEGIN
    FOR suffix IN
        SELECT substr(c.relname::TEXT, length('request_log_details_p') + 1)
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'request_log_details'
    LOOP
        CONTINUE WHEN suffix !~ '^[0-9]{8}$';
        start_ms := (extract(epoch FROM (to_date(suffix, 'YYYYMMDD')::TIMESTAMP AT TIME ZONE 'UTC')) * 1000)::BIGINT;
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF request_log_pieces FOR VALUES FROM (%s) TO (%s)',
            'request_log_pieces_p' || suffix, start_ms, start_ms + 86400000);
    END LOOP;
END
$$;

-- The function of migration 0036, with the pieces as a fourth parent,
-- locked beside the details (retention drops them together).
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
       AND to_regclass('request_log_details_p' || suffix) IS NOT NULL
       AND to_regclass('request_log_pieces_p' || suffix) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('llmgw_log_partitions'));
    caller_timeout := current_setting('lock_timeout');
    -- pg_settings gives the value in milliseconds; 0 is no timeout.
    IF (SELECT setting::BIGINT FROM pg_settings WHERE name = 'lock_timeout')
       NOT BETWEEN 1 AND 200 THEN
        PERFORM set_config('lock_timeout', '200ms', true);
    END IF;
    LOCK TABLE ONLY request_attempts, ONLY request_log_details, ONLY request_log_pieces,
        ONLY request_logs IN SHARE UPDATE EXCLUSIVE MODE;
    PERFORM set_config('lock_timeout', caller_timeout, true);
    FOREACH parent IN ARRAY ARRAY['request_logs', 'request_attempts', 'request_log_details',
                                  'request_log_pieces'] LOOP
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
