-- Request-log details in their own table (#18): the request and response
-- headers and the client, upstream and response bodies leave
-- request_logs for request_log_details, one row per record, keyed by the
-- request's time and the 16 bytes of its id, partitioned by day like the
-- logs. Ingest stores them compressed with zstd (controlplane/src/logs/
-- details.rs); the rows moved here are a JSON object of the five fields,
-- which the control plane reads as well. Retention drops these partitions
-- after --body-retention-days, before the summaries'.
--
-- The dropped columns' bytes stay in the existing day partitions (DROP
-- COLUMN rewrites nothing) until retention drops those days.

CREATE TABLE request_log_details (
    time_ms BIGINT NOT NULL,
    id BYTEA NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (time_ms, id)
) PARTITION BY RANGE (time_ms);

CREATE OR REPLACE FUNCTION llmgw_ensure_log_day(t_ms BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    day_ms BIGINT := (t_ms / 86400000) * 86400000;
    suffix TEXT := to_char(to_timestamp(day_ms / 1000) AT TIME ZONE 'UTC', 'YYYYMMDD');
BEGIN
    IF to_regclass('request_logs_p' || suffix) IS NOT NULL
       AND to_regclass('request_attempts_p' || suffix) IS NOT NULL
       AND to_regclass('request_log_details_p' || suffix) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('llmgw_log_partitions'));
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

SELECT llmgw_ensure_log_day(day)
FROM (SELECT DISTINCT (time_ms / 86400000) * 86400000 AS day FROM request_logs) AS days;
SELECT llmgw_ensure_log_day((extract(epoch FROM now()) * 1000)::BIGINT);

-- Ingest stores canonical UUIDs only; anything else would not decode.
INSERT INTO request_log_details (time_ms, id, data)
SELECT time_ms,
       decode(replace(id, '-', ''), 'hex'),
       convert_to(json_build_object(
           'request_headers', request_headers,
           'response_headers', response_headers,
           'request_body', request_body,
           'response_body', response_body,
           'upstream_request_body', upstream_request_body)::TEXT, 'UTF8')
FROM request_logs
WHERE id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';

-- Compressed by ingest from here on: never again by TOAST. (After the
-- copy, so that the moved rows, plain JSON, are compressed by TOAST.)
ALTER TABLE request_log_details ALTER COLUMN data SET STORAGE EXTERNAL;

ALTER TABLE request_logs
    DROP COLUMN request_headers,
    DROP COLUMN response_headers,
    DROP COLUMN request_body,
    DROP COLUMN response_body,
    DROP COLUMN upstream_request_body;

-- The zstd dictionaries the details are compressed with, trained by the
-- control plane on its own traffic (details.rs): a row names its
-- dictionary's id.
CREATE TABLE log_dictionaries (
    id BIGSERIAL PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    dict BYTEA NOT NULL
);
