-- A narrower request_logs row (#18, bytes per row). The table grew one
-- ALTER TABLE ADD COLUMN at a time: 24 of its 50 columns were BIGINT,
-- among them flags that are 0 or 1, an HTTP status and counters that fit
-- in 32 bits, and PostgreSQL padded every BIGINT that followed a TEXT to
-- 8 bytes. This migration rebuilds the table with the fixed-width columns
-- first, widest first (no padding between them), then the texts:
--
-- - time, sequence, snapshot version and the costs stay 8 bytes;
-- - durations, tokens, audio milliseconds, characters, retries and images
--   become INTEGER (ingest refuses a record whose value would not fit:
--   controlplane/src/logs/ingest.rs `check`);
-- - the status and the six flags become SMALLINT.
--
-- On the log_volume corpus a row's heap goes from 458 to 316 bytes
-- (docs/benchmarks.md "Bytes per row"). Queries are unchanged: the
-- control plane reads every integer as i64 and binds i64, which
-- PostgreSQL casts on insert and compares across integer widths in the
-- indexes.
--
-- The rebuild copies every stored summary under an exclusive lock, as
-- 0003 did (7.8 s for a million rows on the 2-core machine of
-- docs/benchmarks.md): see docs/deploy.md's upgrade notes. It holds a
-- lock on each old and new partition and index until it commits, about 45
-- of PostgreSQL's shared lock table per day of logs, so it checks first
-- that the table has room and otherwise stops, changing nothing, with
-- what to raise. Values stored under ingest's older bounds (30 days,
-- 10^12 tokens) that do not fit the new columns are stored at the
-- column's largest value.

DO $$
DECLARE
    days BIGINT;
    -- The shared lock table's entries: max_locks_per_transaction for each
    -- backend PostgreSQL can start and each prepared transaction.
    backends BIGINT := current_setting('max_connections')::BIGINT
        + current_setting('autovacuum_max_workers')::BIGINT + 1
        + current_setting('max_worker_processes')::BIGINT
        + current_setting('max_wal_senders')::BIGINT
        + current_setting('max_prepared_transactions')::BIGINT;
    room BIGINT := current_setting('max_locks_per_transaction')::BIGINT * backends;
    needed BIGINT;
BEGIN
    SELECT COUNT(*) INTO days FROM pg_inherits WHERE inhparent = 'request_logs'::regclass;
    -- Measured with PostgreSQL 15's defaults (room for 7,808): 165 days
    -- migrated and 180 did not, about 45 locks a day, and other sessions
    -- hold some too.
    needed := (days + 2) * 48;
    IF needed > room THEN
        RAISE EXCEPTION 'migration 0030 rebuilds request_logs in one transaction and needs about % '
            'of PostgreSQL''s shared locks for its % day partitions, but max_locks_per_transaction '
            '(%) gives room for % with this server''s backends. Raise max_locks_per_transaction to '
            '% (twice what it needs) and restart PostgreSQL, then start the control plane again; '
            'nothing was changed (docs/deploy.md, upgrade notes).',
            needed, days, current_setting('max_locks_per_transaction'), room,
            (2 * needed) / backends + 1;
    END IF;
END
$$;

ALTER TABLE request_logs RENAME TO request_logs_wide;

-- The old table's indexes go first, so that the new ones (and their
-- partitions') take their names; the day partitions keep their names
-- (llmgw_ensure_log_day and retention find them by name), so the old ones
-- step aside.
DO $$
DECLARE
    r RECORD;
BEGIN
    FOR r IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = 'request_logs_wide'::regclass AND contype IN ('p', 'u')
    LOOP
        EXECUTE format('ALTER TABLE request_logs_wide DROP CONSTRAINT %I', r.conname);
    END LOOP;
    FOR r IN
        SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
        WHERE x.indrelid = 'request_logs_wide'::regclass
    LOOP
        EXECUTE format('DROP INDEX %I', r.relname);
    END LOOP;
    FOR r IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'request_logs_wide'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', r.relname, r.relname || '_wide');
    END LOOP;
END
$$;

CREATE TABLE request_logs (
    time_ms BIGINT NOT NULL,
    sequence BIGINT NOT NULL,
    snapshot_version BIGINT NOT NULL DEFAULT 0,
    cost DOUBLE PRECISION NOT NULL DEFAULT 0,
    cost_nanos BIGINT,
    latency_ms INTEGER NOT NULL DEFAULT 0,
    ttfb_ms INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    audio_milliseconds INTEGER NOT NULL DEFAULT 0,
    characters INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    images INTEGER NOT NULL DEFAULT 0,
    attempt_latency_ms INTEGER,
    attempt_offset_ms INTEGER,
    status SMALLINT NOT NULL,
    stream SMALLINT NOT NULL DEFAULT 0,
    cancelled SMALLINT NOT NULL DEFAULT 0,
    translated SMALLINT NOT NULL DEFAULT 0,
    request_body_truncated SMALLINT NOT NULL DEFAULT 0,
    response_body_truncated SMALLINT NOT NULL DEFAULT 0,
    upstream_request_body_truncated SMALLINT NOT NULL DEFAULT 0,
    id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    key_name TEXT NOT NULL DEFAULT '',
    client_ip TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    protocol TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    upstream_model TEXT NOT NULL DEFAULT '',
    upstream_protocol TEXT NOT NULL DEFAULT '',
    usage_source TEXT NOT NULL DEFAULT 'none',
    count_source TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    dropped_fields TEXT NOT NULL DEFAULT '[]',
    outcome TEXT NOT NULL DEFAULT '',
    stop_reason TEXT NOT NULL DEFAULT '',
    end_user TEXT NOT NULL DEFAULT '',
    limited_by TEXT NOT NULL DEFAULT '',
    trace_id TEXT NOT NULL DEFAULT '',
    origin TEXT NOT NULL DEFAULT '',
    replay_of TEXT NOT NULL DEFAULT '',
    image_size TEXT NOT NULL DEFAULT '',
    image_quality TEXT NOT NULL DEFAULT '',
    audio_source TEXT NOT NULL DEFAULT ''
) PARTITION BY RANGE (time_ms);

SELECT llmgw_ensure_log_day(day)
FROM (SELECT DISTINCT (time_ms / 86400000) * 86400000 AS day FROM request_logs_wide) AS days;
SELECT llmgw_ensure_log_day((extract(epoch FROM now()) * 1000)::BIGINT);

INSERT INTO request_logs (
    time_ms, sequence, snapshot_version, cost, cost_nanos,
    latency_ms, ttfb_ms, input_tokens, output_tokens, cache_read_tokens,
    cache_creation_tokens, reasoning_tokens, audio_milliseconds, characters,
    retries, images, attempt_latency_ms, attempt_offset_ms,
    status, stream, cancelled, translated, request_body_truncated,
    response_body_truncated, upstream_request_body_truncated,
    id, node_id, key_name, client_ip, user_agent, protocol, path, model,
    provider, upstream_model, upstream_protocol, usage_source, count_source,
    error, dropped_fields, outcome, stop_reason, end_user, limited_by,
    trace_id, origin, replay_of, image_size, image_quality, audio_source)
SELECT
    time_ms, sequence, snapshot_version, cost, cost_nanos,
    LEAST(latency_ms, 2147483647), LEAST(ttfb_ms, 2147483647),
    LEAST(input_tokens, 2147483647), LEAST(output_tokens, 2147483647),
    LEAST(cache_read_tokens, 2147483647), LEAST(cache_creation_tokens, 2147483647),
    LEAST(reasoning_tokens, 2147483647), LEAST(audio_milliseconds, 2147483647),
    LEAST(characters, 2147483647), LEAST(retries, 2147483647), LEAST(images, 2147483647),
    -- LEAST would turn NULL (no attempt kept in the row) into its other
    -- argument.
    CASE WHEN attempt_latency_ms > 2147483647 THEN 2147483647 ELSE attempt_latency_ms END,
    CASE WHEN attempt_offset_ms > 2147483647 THEN 2147483647 ELSE attempt_offset_ms END,
    LEAST(status, 32767), LEAST(stream, 1), LEAST(cancelled, 1), LEAST(translated, 1),
    LEAST(request_body_truncated, 1), LEAST(response_body_truncated, 1),
    LEAST(upstream_request_body_truncated, 1),
    id, node_id, key_name, client_ip, user_agent, protocol, path, model,
    provider, upstream_model, upstream_protocol, usage_source, count_source,
    error, dropped_fields, outcome, stop_reason, end_user, limited_by,
    trace_id, origin, replay_of, image_size, image_quality, audio_source
FROM request_logs_wide;

DROP TABLE request_logs_wide;

-- The primary key and the indexes of 0003, 0009, 0013, 0016 and 0025,
-- built over the copied rows: a build from sorted rows fills its pages,
-- where the copy's inserts in the old table's order would split them
-- (the primary key took 116 bytes a row that way, 68 built after).
ALTER TABLE request_logs ADD CONSTRAINT request_logs_pkey PRIMARY KEY (id, time_ms);
CREATE INDEX request_logs_time ON request_logs (time_ms);
CREATE INDEX request_logs_model_time ON request_logs (model, time_ms);
CREATE INDEX request_logs_provider_time ON request_logs (provider, time_ms);
CREATE INDEX request_logs_key_time ON request_logs (key_name, time_ms);
CREATE INDEX request_logs_latency ON request_logs (latency_ms);
CREATE INDEX request_logs_end_user_time ON request_logs (end_user, time_ms) WHERE end_user <> '';
CREATE INDEX request_logs_trace_id_time ON request_logs (trace_id, time_ms) WHERE trace_id <> '';
CREATE INDEX request_logs_replay_of ON request_logs (replay_of, time_ms) WHERE replay_of <> '';
CREATE INDEX request_logs_failed_time ON request_logs (time_ms, status)
    WHERE (status >= 400 OR cancelled <> 0 OR error <> '');
CREATE INDEX request_logs_not_ok_outcome_time ON request_logs (outcome, time_ms)
    WHERE outcome NOT IN ('', 'ok');

-- The finished days' indexes were just built from sorted rows: the hourly
-- rebuild of finished days (controlplane/src/logs/reindex.rs) need not do
-- them again. The comment starts with its mark.
DO $$
DECLARE
    p RECORD;
BEGIN
    FOR p IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'request_logs'::regclass
          AND c.relname ~ '^request_logs_p[0-9]{8}$'
          -- Finished an hour ago at least, as reindex.rs counts: records
          -- resent after the upgrade still come in just after midnight.
          AND to_date(right(c.relname, 8), 'YYYYMMDD')
              < ((now() AT TIME ZONE 'UTC') - INTERVAL '1 hour')::date
    LOOP
        EXECUTE format('COMMENT ON TABLE %I IS %L', p.relname,
                       'llmgw: indexes rebuilt by migration 0030');
    END LOOP;
END
$$;
