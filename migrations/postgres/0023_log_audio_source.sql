-- Where a transcription's seconds of audio come from (#16; RequestLog
-- field 55): "reported" by the upstream, "measured" by the data plane from
-- the upload, "unknown" when a per-second price needed them and the file
-- could not be measured. Rows stored before keep ''.
--
-- request_logs is partitioned by day: the column is added to every
-- partition, and partitions created later by llmgw_ensure_log_day
-- (PARTITION OF) have it too. A constant default rewrites no rows.
ALTER TABLE request_logs ADD COLUMN audio_source TEXT NOT NULL DEFAULT '';
