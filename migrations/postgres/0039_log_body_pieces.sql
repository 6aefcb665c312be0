-- Large request bodies stored once by content (#18, bytes per row). An
-- agent sends its system prompt, its tools and the conversation so far on
-- every turn; a details block compresses what its own records repeat, but
-- every block stored them again. Ingest now cuts a request body of 16 KiB
-- or more into content-defined pieces (controlplane/src/logs/pieces.rs),
-- stores each piece of a UTC day once here, keyed by the day and the
-- first 16 bytes of its SHA-256, and puts the hashes in the block in
-- place of the bytes (all but the body's last piece, which stays).
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

-- A day's partition is made when ingest first stores a piece of that day
-- (most days of most deployments have no body this long, and an empty
-- partition still costs its key's and its TOAST index's first pages),
-- created beside the parent and attached, like the days of migration
-- 0036, in a short transaction of its own before the batch's.
CREATE OR REPLACE FUNCTION llmgw_ensure_pieces_day(t_ms BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    day_ms BIGINT := (t_ms / 86400000) * 86400000;
    child TEXT := 'request_log_pieces_p'
        || to_char(to_timestamp(day_ms / 1000) AT TIME ZONE 'UTC', 'YYYYMMDD');
    caller_timeout TEXT;
BEGIN
    IF to_regclass(child) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('llmgw_log_partitions'));
    caller_timeout := current_setting('lock_timeout');
    -- pg_settings gives the value in milliseconds; 0 is no timeout.
    IF (SELECT setting::BIGINT FROM pg_settings WHERE name = 'lock_timeout')
       NOT BETWEEN 1 AND 200 THEN
        PERFORM set_config('lock_timeout', '200ms', true);
    END IF;
    LOCK TABLE ONLY request_log_pieces IN SHARE UPDATE EXCLUSIVE MODE;
    PERFORM set_config('lock_timeout', caller_timeout, true);
    IF to_regclass(child) IS NULL THEN
        EXECUTE format('CREATE TABLE %I (LIKE request_log_pieces INCLUDING ALL EXCLUDING INDEXES)', child);
        EXECUTE format(
            'ALTER TABLE request_log_pieces ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
            child, day_ms, day_ms + 86400000);
    ELSIF NOT EXISTS (SELECT 1 FROM pg_inherits
                      WHERE inhrelid = to_regclass(child)
                        AND inhparent = 'request_log_pieces'::regclass) THEN
        RAISE EXCEPTION 'table % exists but is not a partition of request_log_pieces: rename or drop it', child;
    END IF;
END
$$;
