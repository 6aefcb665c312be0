-- request_log_details loses its primary key (#18), as on PostgreSQL
-- (migrations/postgres/0034_details_time_index.sql says why): a record's
-- details are written once, in the transaction that stores its summary,
-- and `logs get` finds them by time through an index on the time alone.
-- SQLite cannot drop a primary key, so the table is rebuilt.
CREATE TABLE request_log_details_new (
    time_ms INTEGER NOT NULL,
    id BLOB NOT NULL,
    data BLOB NOT NULL
);
INSERT INTO request_log_details_new (time_ms, id, data)
SELECT time_ms, id, data FROM request_log_details ORDER BY time_ms;
DROP TABLE request_log_details;
ALTER TABLE request_log_details_new RENAME TO request_log_details;
CREATE INDEX request_log_details_time ON request_log_details (time_ms);
