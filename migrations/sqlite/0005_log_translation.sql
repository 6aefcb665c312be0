-- Protocol translation in request logs (see RequestLog in
-- proto/llmgw/v1/logs.proto): the upstream's protocol, whether the request
-- was translated, the body sent upstream when it differs from the client's,
-- the client fields a lenient translation dropped (a JSON array of
-- strings), reasoning tokens (a part of output_tokens), and where a
-- count_tokens answer came from. Existing rows keep the defaults: no
-- upstream protocol known, not translated, nothing dropped.
ALTER TABLE request_logs ADD COLUMN upstream_protocol TEXT NOT NULL DEFAULT '';
ALTER TABLE request_logs ADD COLUMN translated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN upstream_request_body TEXT NOT NULL DEFAULT '';
ALTER TABLE request_logs ADD COLUMN upstream_request_body_truncated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN dropped_fields TEXT NOT NULL DEFAULT '[]';
ALTER TABLE request_logs ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN count_source TEXT NOT NULL DEFAULT '';
