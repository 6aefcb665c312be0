-- Details in blocks (#18; PostgreSQL's migration 0038 says why): each
-- summary row keeps how long after its details block's time it came,
-- NULL for a record stored before (its details row is its own) and for
-- one stored without details.
ALTER TABLE request_logs ADD COLUMN details_offset_ms INTEGER;
