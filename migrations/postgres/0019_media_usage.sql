-- Media quantities of a request (#16): seconds of audio (in ms), characters
-- of speech input, images asked for and their size and quality
-- (RequestLog fields 49-53). Rows stored before keep 0 and ''.
--
-- request_logs is partitioned by day: the columns are added to every
-- partition, and partitions created later by llmgw_ensure_log_day
-- (PARTITION OF) have them too. A constant default rewrites no rows.
ALTER TABLE request_logs ADD COLUMN audio_milliseconds BIGINT NOT NULL DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN characters BIGINT NOT NULL DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN images BIGINT NOT NULL DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN image_size TEXT NOT NULL DEFAULT '';
ALTER TABLE request_logs ADD COLUMN image_quality TEXT NOT NULL DEFAULT '';
