-- Bytes per request log on PostgreSQL (docs/benchmarks.md, "Bytes per row"):
--   psql URL -v rows=N -f bench/log_sizes.sql
-- after a log_volume run of N rows on a fresh database.
-- Per parent table: heap (main fork), TOAST, indexes; summed over its partitions.
WITH parts AS (
  SELECT COALESCE(p.relname, c.relname) AS parent, c.oid, c.reltoastrelid
  FROM pg_class c
  LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
  LEFT JOIN pg_class p ON p.oid = i.inhparent
  WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace
)
SELECT parent,
       sum(pg_relation_size(oid)) AS heap,
       sum(CASE WHEN reltoastrelid <> 0 THEN pg_total_relation_size(reltoastrelid) ELSE 0 END) AS toast,
       sum(pg_indexes_size(oid)) AS indexes,
       sum(pg_total_relation_size(oid)) AS total,
       round(sum(pg_total_relation_size(oid)) / :rows::numeric, 1) AS per_row
FROM parts WHERE parent IN ('request_logs','request_attempts','request_log_details','request_log_pieces','log_rollups')
GROUP BY parent ORDER BY parent;
-- Per index (name without the partition suffix), summed over partitions.
SELECT regexp_replace(ic.relname, '^request_(logs|attempts|log_details|log_pieces)_p\d{8}_', 'request_\1_*_') AS index,
       sum(pg_relation_size(ic.oid)) AS bytes,
       round(sum(pg_relation_size(ic.oid)) / :rows::numeric, 1) AS per_row
FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relkind = 'r' AND (t.relname LIKE 'request_logs%' OR t.relname LIKE 'request_attempts%' OR t.relname LIKE 'request_log_details%' OR t.relname LIKE 'request_log_pieces%')
GROUP BY 1 ORDER BY 2 DESC;
SELECT sum(pg_total_relation_size(c.oid)) AS log_tables_total,
       round(sum(pg_total_relation_size(c.oid)) / :rows::numeric, 1) AS bytes_per_row
FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid LEFT JOIN pg_class p ON p.oid = i.inhparent
WHERE c.relkind = 'r' AND COALESCE(p.relname, c.relname) IN ('request_logs','request_attempts','request_log_details','request_log_pieces');
