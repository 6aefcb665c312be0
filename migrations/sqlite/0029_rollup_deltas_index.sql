-- PostgreSQL indexes the rollup deltas by cube and minute here (see
-- migrations/postgres/0029_rollup_deltas_index.sql): its deltas heap keeps
-- the size of its largest backlog, and stats scanned all of it. SQLite's
-- deleted pages leave the table's B-tree, so a scan reads only the pending
-- rows: a backlog slows stats only until compaction has folded it, and
-- every delta's insert stays one B-tree insert. This migration changes
-- nothing; it keeps the two engines' migration numbers in step.
SELECT 1;
