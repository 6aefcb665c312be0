-- A request id is stored as its UUID's 16 bytes instead of 36 characters
-- (#18, bytes per row): request_logs.id and request_attempts.request_id
-- become BYTEA, as request_log_details.id has been since 0024. The id is
-- in the summary row and in its primary key (id, time_ms), so each record
-- takes about 40 bytes less (docs/benchmarks.md "Bytes per row"), and the
-- key compares 16 bytes with memcmp instead of text under a collation.
-- The control plane binds and reads ids in this form
-- (controlplane/src/logs/row.rs `stored_id`, `id_text`); the API still
-- speaks the canonical text.
--
-- Ingest has stored canonical UUIDs only; any other id is kept as its
-- UTF-8 bytes rather than failing the migration.
--
-- ALTER COLUMN ... TYPE rewrites every day partition of both tables and
-- rebuilds their indexes under an exclusive lock, as 0030 did (docs/
-- deploy.md, upgrade notes): about 40 of PostgreSQL's shared locks per
-- day of logs, held until it commits, so it checks first that the lock
-- table has room and otherwise stops, changing nothing, with what to
-- raise (migration 0034 has committed by then: the message says to start
-- this version again).
DO $$
DECLARE
    days BIGINT;
    backends BIGINT := current_setting('max_connections')::BIGINT
        + current_setting('autovacuum_max_workers')::BIGINT + 1
        + current_setting('max_worker_processes')::BIGINT
        + current_setting('max_wal_senders')::BIGINT
        + current_setting('max_prepared_transactions')::BIGINT;
    room BIGINT := current_setting('max_locks_per_transaction')::BIGINT * backends;
    needed BIGINT;
BEGIN
    SELECT COUNT(*) INTO days FROM pg_inherits WHERE inhparent = 'request_logs'::regclass;
    -- Measured: 363 locks for 9 days (about 40 a day).
    needed := (days + 2) * 40;
    IF needed > room THEN
        RAISE EXCEPTION 'migration 0035 rewrites request_logs and request_attempts in one '
            'transaction and needs about % of PostgreSQL''s shared locks for their % day '
            'partitions, but max_locks_per_transaction (%) gives room for % with this server''s '
            'backends. Raise max_locks_per_transaction to % (twice what it needs) and restart '
            'PostgreSQL, then start this version of the control plane again: this migration '
            'changed nothing, but 0034 before it is applied, so an older version will not start '
            'on this database (docs/deploy.md, upgrade notes).',
            needed, days, current_setting('max_locks_per_transaction'), room,
            (2 * needed) / backends + 1;
    END IF;
END
$$;

ALTER TABLE request_logs ALTER COLUMN id TYPE BYTEA USING CASE
    WHEN id ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
        THEN decode(replace(id, '-', ''), 'hex')
    ELSE convert_to(id, 'UTF8')
END;
ALTER TABLE request_attempts ALTER COLUMN request_id TYPE BYTEA USING CASE
    WHEN request_id ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
        THEN decode(replace(request_id, '-', ''), 'hex')
    ELSE convert_to(request_id, 'UTF8')
END;
