-- The end user a request was made for (RequestLog.user in
-- proto/llmgw/v1/logs.proto): the X-User-ID header, OpenAI's `user` or
-- Anthropic's `metadata.user_id`. Rows stored before keep ''. The column
-- is not called "user", a reserved word in PostgreSQL.
ALTER TABLE request_logs ADD COLUMN end_user TEXT NOT NULL DEFAULT '';
-- Filtering by user (llmgw logs --user): only rows that name one are
-- indexed, so traffic without users pays nothing for it.
CREATE INDEX request_logs_end_user_time ON request_logs (end_user, time_ms) WHERE end_user <> '';
