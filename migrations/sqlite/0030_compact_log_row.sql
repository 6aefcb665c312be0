-- PostgreSQL rebuilds request_logs with narrower integer columns here (see
-- migrations/postgres/0030_compact_log_row.sql). SQLite needs no rebuild:
-- its record format stores each integer in as few bytes as its value
-- takes (0 and 1 in none, a status in two), whatever the column's
-- declared type. Ingest's new bounds (durations within 24 days, counts
-- within 32 bits) apply to both engines. This migration changes nothing;
-- it keeps the two engines' migration numbers in step.
SELECT 1;
