-- Where a transcription's seconds of audio come from (#16; RequestLog
-- field 55): "reported" by the upstream, "measured" by the data plane from
-- the upload, "unknown" when a per-second price needed them and the file
-- could not be measured. Rows stored before keep ''.
ALTER TABLE request_logs ADD COLUMN audio_source TEXT NOT NULL DEFAULT '';
