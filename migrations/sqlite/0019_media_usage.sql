-- Media quantities of a request (#16): seconds of audio (in ms), characters
-- of speech input, images asked for and their size and quality
-- (RequestLog fields 49-53). Rows stored before keep 0 and ''.
ALTER TABLE request_logs ADD COLUMN audio_milliseconds INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN characters INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN images INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN image_size TEXT NOT NULL DEFAULT '';
ALTER TABLE request_logs ADD COLUMN image_quality TEXT NOT NULL DEFAULT '';
