-- When each upstream attempt was sent, in milliseconds from its request's
-- start (Attempt.start_offset_ms in proto/llmgw/v1/logs.proto), for the
-- dashboard's attempt timeline. Attempts stored before keep 0, and the
-- timeline lays them end to end. A constant default rewrites no rows;
-- on PostgreSQL the column reaches every day partition, and those
-- llmgw_ensure_log_day creates later.
ALTER TABLE request_attempts ADD COLUMN start_offset_ms BIGINT NOT NULL DEFAULT 0;
