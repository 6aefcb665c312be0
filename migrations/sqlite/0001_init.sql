-- llmgw schema, SQLite flavour. Times are Unix milliseconds; flags are 0/1
-- integers (sqlx's Any driver reads both databases the same way).

CREATE TABLE config_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    -- Grows by one with every configuration change; it is the snapshot version.
    version INTEGER NOT NULL
);
INSERT INTO config_state (id, version) VALUES (1, 1);

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE providers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    protocol TEXT NOT NULL CHECK (protocol IN ('openai', 'anthropic')),
    base_url TEXT NOT NULL,
    -- AES-256-GCM sealed values: "v1.<key id>.<nonce>.<ciphertext>".
    api_key_sealed TEXT,
    headers_sealed TEXT,
    timeout_s INTEGER NOT NULL DEFAULT 0,
    stream_usage INTEGER NOT NULL DEFAULT 1,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    strategy TEXT NOT NULL,
    max_attempts INTEGER NOT NULL DEFAULT 0,
    retry_delay_ms INTEGER,
    price_input REAL NOT NULL DEFAULT 0,
    price_output REAL NOT NULL DEFAULT 0,
    price_cached_input REAL NOT NULL DEFAULT 0,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE model_targets (
    model_id INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    provider_id INTEGER NOT NULL REFERENCES providers (id) ON DELETE RESTRICT,
    upstream_model TEXT NOT NULL,
    priority INTEGER NOT NULL,
    weight INTEGER NOT NULL CHECK (weight >= 1),
    rules TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    -- NULL means the model's prices.
    price_input REAL,
    price_output REAL,
    price_cached_input REAL,
    PRIMARY KEY (model_id, position)
);
CREATE INDEX model_targets_provider ON model_targets (provider_id);

CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    -- JSON array of model names; empty means all.
    models TEXT NOT NULL DEFAULT '[]',
    expires_at INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0,
    log_bodies INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
);

CREATE TABLE data_planes (
    node_id TEXT PRIMARY KEY,
    peer_address TEXT NOT NULL,
    connected_since INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    acked_version INTEGER NOT NULL DEFAULT 0,
    nacked_version INTEGER NOT NULL DEFAULT 0,
    last_nack_error TEXT NOT NULL DEFAULT '',
    connected INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE request_logs (
    id TEXT PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    key_name TEXT NOT NULL DEFAULT '',
    client_ip TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    protocol TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    upstream_model TEXT NOT NULL DEFAULT '',
    status INTEGER NOT NULL,
    stream INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    latency_ms INTEGER NOT NULL DEFAULT 0,
    ttfb_ms INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    usage_source TEXT NOT NULL DEFAULT 'none',
    cost REAL NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    snapshot_version INTEGER NOT NULL DEFAULT 0,
    -- JSON objects, secrets already redacted by the data plane.
    request_headers TEXT NOT NULL DEFAULT '{}',
    response_headers TEXT NOT NULL DEFAULT '{}',
    request_body TEXT NOT NULL DEFAULT '',
    response_body TEXT NOT NULL DEFAULT '',
    request_body_truncated INTEGER NOT NULL DEFAULT 0,
    response_body_truncated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX request_logs_time ON request_logs (time_ms);
CREATE INDEX request_logs_model_time ON request_logs (model, time_ms);
CREATE INDEX request_logs_provider_time ON request_logs (provider, time_ms);
CREATE INDEX request_logs_key_time ON request_logs (key_name, time_ms);
CREATE INDEX request_logs_status_time ON request_logs (status, time_ms);

CREATE TABLE request_attempts (
    request_id TEXT NOT NULL REFERENCES request_logs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    provider TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    status INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    latency_ms INTEGER NOT NULL,
    PRIMARY KEY (request_id, attempt)
);

-- Records the control plane could not store, kept for inspection.
CREATE TABLE log_quarantine (
    id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    record TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
