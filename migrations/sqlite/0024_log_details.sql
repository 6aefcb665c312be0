-- Request-log details in their own table (#18): the request and response
-- headers and the client, upstream and response bodies leave
-- request_logs for request_log_details, one row per record, keyed by the
-- request's time and the 16 bytes of its id. Ingest stores them compressed
-- with zstd (controlplane/src/logs/details.rs); the rows moved here are a
-- JSON object of the five fields, which the control plane reads as well.
-- Retention deletes them after --body-retention-days, before the
-- summaries.

CREATE TABLE request_log_details (
    time_ms INTEGER NOT NULL,
    id BLOB NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (time_ms, id)
);

-- Ingest stores canonical UUIDs only; anything else would not decode.
INSERT INTO request_log_details (time_ms, id, data)
SELECT time_ms,
       unhex(replace(id, '-', '')),
       CAST(json_object(
           'request_headers', request_headers,
           'response_headers', response_headers,
           'request_body', request_body,
           'response_body', response_body,
           'upstream_request_body', upstream_request_body) AS BLOB)
FROM request_logs
WHERE length(id) = 36 AND unhex(replace(id, '-', '')) IS NOT NULL;

ALTER TABLE request_logs DROP COLUMN request_headers;
ALTER TABLE request_logs DROP COLUMN response_headers;
ALTER TABLE request_logs DROP COLUMN request_body;
ALTER TABLE request_logs DROP COLUMN response_body;
ALTER TABLE request_logs DROP COLUMN upstream_request_body;

-- The zstd dictionaries the details are compressed with, trained by the
-- control plane on its own traffic (details.rs): a row names its
-- dictionary's id.
CREATE TABLE log_dictionaries (
    id INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    dict BLOB NOT NULL
);
