-- request_logs keeps a column's default value as NULL (#18, bytes per
-- row). Most records are not cancelled, translated or truncated, use no
-- cache, reasoning, audio or images, and carry no error, trace, origin or
-- replay; each such 0 or '' took 1 to 4 bytes of the row, and the
-- floating-point `cost` 8 beside the exact `cost_nanos` that says the
-- same (ingest makes them agree). A NULL takes a bit of the null bitmap
-- the row has anyway. Ingest binds NULL for those defaults from now on
-- (controlplane/src/logs/ingest.rs `bind_record`), and every reader takes
-- a NULL for the default (logs/row.rs `summary_from_row`; lists sort by
-- the exact cost). Rows stored before keep their values.
--
-- The conditions that test these columns hold for NULL as for the
-- default: `cancelled <> 0` and `error <> ''` (the failure test and its
-- partial index) are not true, and the partial indexes on `trace_id <>
-- ''` and `replay_of <> ''` leave such rows out as before.
--
-- DROP NOT NULL changes the catalog only (no row is read or written); it
-- recurses to every day partition, and new days copy their parent.
ALTER TABLE request_logs
    ALTER COLUMN cost DROP NOT NULL,
    ALTER COLUMN cancelled DROP NOT NULL,
    ALTER COLUMN retries DROP NOT NULL,
    ALTER COLUMN cache_read_tokens DROP NOT NULL,
    ALTER COLUMN cache_creation_tokens DROP NOT NULL,
    ALTER COLUMN reasoning_tokens DROP NOT NULL,
    ALTER COLUMN audio_milliseconds DROP NOT NULL,
    ALTER COLUMN characters DROP NOT NULL,
    ALTER COLUMN images DROP NOT NULL,
    ALTER COLUMN request_body_truncated DROP NOT NULL,
    ALTER COLUMN response_body_truncated DROP NOT NULL,
    ALTER COLUMN upstream_request_body_truncated DROP NOT NULL,
    ALTER COLUMN translated DROP NOT NULL,
    ALTER COLUMN error DROP NOT NULL,
    ALTER COLUMN dropped_fields DROP NOT NULL,
    ALTER COLUMN count_source DROP NOT NULL,
    ALTER COLUMN stop_reason DROP NOT NULL,
    ALTER COLUMN limited_by DROP NOT NULL,
    ALTER COLUMN trace_id DROP NOT NULL,
    ALTER COLUMN origin DROP NOT NULL,
    ALTER COLUMN replay_of DROP NOT NULL,
    ALTER COLUMN image_size DROP NOT NULL,
    ALTER COLUMN image_quality DROP NOT NULL,
    ALTER COLUMN audio_source DROP NOT NULL;
