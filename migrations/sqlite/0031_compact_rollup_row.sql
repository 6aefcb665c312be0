-- PostgreSQL rebuilds log_rollups with narrower integer columns here (see
-- migrations/postgres/0031_compact_rollup_row.sql). SQLite needs no
-- rebuild: its record format stores each integer in as few bytes as its
-- value takes, whatever the column's declared type. This migration
-- changes nothing; it keeps the two engines' migration numbers in step.
SELECT 1;
