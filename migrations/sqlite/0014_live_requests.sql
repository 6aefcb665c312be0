-- The requests in flight on every data plane (#17; proto/llmgw/v1/live.proto
-- and docs/architecture.md "In-flight requests and cancel"). A row is
-- written by the control plane that holds the data plane's live stream
-- (`control_plane`, `stream_id`), deleted when the request ends or the
-- stream ends, and ignored (then pruned) once `seen_ms` is older than the
-- lease: a control plane that died takes its streams' rows with it.
CREATE TABLE live_requests (
    id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    control_plane TEXT NOT NULL,
    key_name TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    upstream_model TEXT NOT NULL DEFAULT '',
    client_protocol TEXT NOT NULL DEFAULT '',
    upstream_protocol TEXT NOT NULL DEFAULT '',
    stream INTEGER NOT NULL DEFAULT 0,
    started_ms BIGINT NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 0,
    tokens BIGINT NOT NULL DEFAULT 0,
    seen_ms BIGINT NOT NULL
);
CREATE INDEX live_requests_stream ON live_requests (stream_id);
CREATE INDEX live_requests_incarnation ON live_requests (incarnation);
CREATE INDEX live_requests_seen ON live_requests (seen_ms);
