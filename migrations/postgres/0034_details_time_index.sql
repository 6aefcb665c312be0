-- request_log_details loses its primary key (#18, bytes per row). The key
-- (time_ms, id) cost 50 to 57 bytes a record, the most of any index but
-- the summaries' own primary key, and a unique check on every insert,
-- while nothing needs it to be unique: ingest writes a record's details
-- in the transaction that inserts its summary row, and only for records
-- that summary insert stored (a resent record is skipped there, so its
-- details are never written twice: controlplane/src/logs/ingest.rs
-- `insert_records`). The one reader, `logs get`, looks a record's details
-- up by its time and id; an index on the time alone finds the few rows of
-- that millisecond, and the id picks the one. Equal times share one
-- B-tree entry (deduplication), so at live rates the index is smaller
-- still.
--
-- Dropping the key drops each day partition's index with it; the new
-- index is built on every partition under a SHARE lock, which holds up
-- ingest for as long as the build takes (details are kept for
-- --body-retention-days, 7 by default, so a few days' rows).
ALTER TABLE request_log_details DROP CONSTRAINT request_log_details_pkey;
CREATE INDEX request_log_details_time ON request_log_details (time_ms);
