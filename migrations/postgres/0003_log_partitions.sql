-- Request logs and their attempts, partitioned by day (UTC) on the
-- request's time. Retention drops whole days; queries with a time range
-- read only the days in it.
--
-- A partition's unique keys must include its partition key, so the primary
-- keys become (id, time_ms) and (request_id, request_time_ms, attempt). A
-- data plane resends a record unchanged, time included, so ingest stays
-- idempotent by id.

ALTER TABLE request_attempts RENAME TO request_attempts_unpartitioned;
ALTER TABLE request_logs RENAME TO request_logs_unpartitioned;

CREATE TABLE request_logs (
    LIKE request_logs_unpartitioned INCLUDING DEFAULTS,
    PRIMARY KEY (id, time_ms)
) PARTITION BY RANGE (time_ms);

CREATE TABLE request_attempts (
    request_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    provider TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    status BIGINT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    latency_ms BIGINT NOT NULL,
    -- The time_ms of the request log, which places the attempt in the same day.
    request_time_ms BIGINT NOT NULL,
    PRIMARY KEY (request_id, request_time_ms, attempt)
) PARTITION BY RANGE (request_time_ms);

-- The day partitions of both tables for the day holding `t_ms`, created if
-- missing: request_logs_pYYYYMMDD and request_attempts_pYYYYMMDD. Several
-- control planes may call it at once; the advisory lock makes them take
-- turns, and the check before it keeps the common case lock-free.
CREATE FUNCTION llmgw_ensure_log_day(t_ms BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    day_ms BIGINT := (t_ms / 86400000) * 86400000;
    suffix TEXT := to_char(to_timestamp(day_ms / 1000) AT TIME ZONE 'UTC', 'YYYYMMDD');
BEGIN
    IF to_regclass('request_logs_p' || suffix) IS NOT NULL
       AND to_regclass('request_attempts_p' || suffix) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('llmgw_log_partitions'));
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF request_logs FOR VALUES FROM (%s) TO (%s)',
        'request_logs_p' || suffix, day_ms, day_ms + 86400000);
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF request_attempts FOR VALUES FROM (%s) TO (%s)',
        'request_attempts_p' || suffix, day_ms, day_ms + 86400000);
END
$$;

SELECT llmgw_ensure_log_day(day)
FROM (SELECT DISTINCT (time_ms / 86400000) * 86400000 AS day
      FROM request_logs_unpartitioned) AS days;
SELECT llmgw_ensure_log_day((extract(epoch FROM now()) * 1000)::BIGINT);

INSERT INTO request_logs SELECT * FROM request_logs_unpartitioned;
INSERT INTO request_attempts
    (request_id, attempt, provider, upstream_model, status, error, latency_ms, request_time_ms)
SELECT a.request_id, a.attempt, a.provider, a.upstream_model, a.status, a.error, a.latency_ms,
       l.time_ms
FROM request_attempts_unpartitioned a
JOIN request_logs_unpartitioned l ON l.id = a.request_id;

DROP TABLE request_attempts_unpartitioned;
DROP TABLE request_logs_unpartitioned;

-- The indexes of 0001 and 0002, now on every partition.
CREATE INDEX request_logs_time ON request_logs (time_ms);
CREATE INDEX request_logs_model_time ON request_logs (model, time_ms);
CREATE INDEX request_logs_provider_time ON request_logs (provider, time_ms);
CREATE INDEX request_logs_key_time ON request_logs (key_name, time_ms);
CREATE INDEX request_logs_status_time ON request_logs (status, time_ms);
CREATE INDEX request_logs_latency ON request_logs (latency_ms);
