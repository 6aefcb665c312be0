-- Why the upstream stopped, exactly as it said it (RequestLog.stop_reason
-- in proto/llmgw/v1/logs.proto), e.g. "end_turn", "pause_turn",
-- "MAX_TOKENS", "tool_calls". Rows stored before keep ''.
ALTER TABLE request_logs ADD COLUMN stop_reason TEXT NOT NULL DEFAULT '';
