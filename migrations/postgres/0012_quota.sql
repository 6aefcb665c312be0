-- The quota runtime of limits (#15; proto/llmgw/v1/quota.proto and
-- docs/architecture.md "Limits and the quota protocol"). Scope is 'key',
-- 'model' or 'provider'; kind 'rpm', 'tpm' or 'concurrency'.

-- rpm/tpm: the grants of one window of one bucket, over every data plane.
-- `granted` only grows, by one conditional statement that can never take
-- it past the limit; `last_add` is what that statement added (read back
-- with RETURNING). Rows die with their window (pruned after window_end_ms).
CREATE TABLE quota_windows (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    window_start_ms BIGINT NOT NULL,
    window_end_ms BIGINT NOT NULL,
    granted BIGINT NOT NULL DEFAULT 0,
    last_add BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, name, kind, window_start_ms)
);
CREATE INDEX quota_windows_end ON quota_windows (window_end_ms);

-- rpm/tpm: each data plane's share of a window's grants.
CREATE TABLE quota_grants (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    window_start_ms BIGINT NOT NULL,
    node_id TEXT NOT NULL,
    window_end_ms BIGINT NOT NULL,
    granted BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, name, kind, window_start_ms, node_id)
);
CREATE INDEX quota_grants_end ON quota_grants (window_end_ms);

-- concurrency: a data plane's lease of slots, live until expires_at_ms.
-- Changes to one bucket's leases first lock its row in quota_windows
-- (kind 'concurrency', window_start_ms 0), so the live leases never add up
-- to more than the limit.
CREATE TABLE quota_leases (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    node_id TEXT NOT NULL,
    slots BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, name, node_id)
);
CREATE INDEX quota_leases_expiry ON quota_leases (expires_at_ms);

-- The data planes on the quota stream and their last report: those that
-- reported within a lease are QuotaAssignments.data_planes.
CREATE TABLE quota_nodes (
    node_id TEXT PRIMARY KEY,
    last_report_ms BIGINT NOT NULL
);

-- Spend in micro-dollars per scope, name and UTC day, counted when request
-- logs are ingested (in the same transaction as their idempotent insert).
-- A reset adds a negative amount to the day it happened.
CREATE TABLE spend (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    day_start_ms BIGINT NOT NULL,
    micros BIGINT NOT NULL,
    PRIMARY KEY (scope, name, day_start_ms)
);

-- The limit that refused a request (RequestLog.limited_by, "key:rpm");
-- '' when none did. Rows stored before keep ''.
ALTER TABLE request_logs ADD COLUMN limited_by TEXT NOT NULL DEFAULT '';
