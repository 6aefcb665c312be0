-- A request id is stored as its UUID's 16 bytes instead of 36 characters
-- (#18), as on PostgreSQL (migrations/postgres/0035_log_id_bytes.sql says
-- why): request_logs.id and request_attempts.request_id hold BLOBs, as
-- request_log_details.id has since 0024. The columns keep their declared
-- TEXT type: SQLite stores a BLOB as it is in any column, and changing
-- the declaration would rebuild request_logs. An id that is not a
-- canonical UUID (ingest has stored none) keeps its UTF-8 bytes.
--
-- request_attempts.request_id refers to request_logs.id; the check waits
-- for the commit, by when both hold the new form.
PRAGMA defer_foreign_keys = ON;

UPDATE request_logs
SET id = CASE
    WHEN length(id) = 36 AND unhex(replace(id, '-', '')) IS NOT NULL
         AND length(unhex(replace(id, '-', ''))) = 16
        THEN unhex(replace(id, '-', ''))
    ELSE CAST(id AS BLOB)
END
WHERE typeof(id) = 'text';

UPDATE request_attempts
SET request_id = CASE
    WHEN length(request_id) = 36 AND unhex(replace(request_id, '-', '')) IS NOT NULL
         AND length(unhex(replace(request_id, '-', ''))) = 16
        THEN unhex(replace(request_id, '-', ''))
    ELSE CAST(request_id AS BLOB)
END
WHERE typeof(request_id) = 'text';
