-- Protocol translation in request logs (see RequestLog in
-- proto/llmgw/v1/logs.proto): the upstream's protocol, whether the request
-- was translated, the body sent upstream when it differs from the client's,
-- the client fields a lenient translation dropped (a JSON array of
-- strings), reasoning tokens (a part of output_tokens), and where a
-- count_tokens answer came from. Existing rows keep the defaults: no
-- upstream protocol known, not translated, nothing dropped.
--
-- request_logs is partitioned by day: a column added to the parent is
-- added to every partition, and partitions created later by
-- llmgw_ensure_log_day (PARTITION OF) have it too. A constant default
-- rewrites no rows, so this is quick however many logs are kept.
ALTER TABLE request_logs
    ADD COLUMN upstream_protocol TEXT NOT NULL DEFAULT '',
    ADD COLUMN translated BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN upstream_request_body TEXT NOT NULL DEFAULT '',
    ADD COLUMN upstream_request_body_truncated BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN dropped_fields TEXT NOT NULL DEFAULT '[]',
    ADD COLUMN reasoning_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN count_source TEXT NOT NULL DEFAULT '';
