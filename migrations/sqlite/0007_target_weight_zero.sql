-- A target's weight may be 0: the target is drained (no traffic while any
-- other target of its priority is healthy).
--
-- SQLite cannot change a CHECK constraint, so `model_targets` is rebuilt.
-- No table references it, so it can be dropped and the copy renamed.

CREATE TABLE model_targets_new (
    model_id INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    provider_id INTEGER NOT NULL REFERENCES providers (id) ON DELETE RESTRICT,
    upstream_model TEXT NOT NULL,
    priority INTEGER NOT NULL,
    weight INTEGER NOT NULL CHECK (weight >= 0),
    rules TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    -- NULL means the model's prices.
    price_input REAL,
    price_output REAL,
    price_cached_input REAL,
    price_cache_write REAL,
    PRIMARY KEY (model_id, position)
);
INSERT INTO model_targets_new (model_id, position, provider_id, upstream_model, priority,
    weight, rules, enabled, price_input, price_output, price_cached_input, price_cache_write)
SELECT model_id, position, provider_id, upstream_model, priority,
    weight, rules, enabled, price_input, price_output, price_cached_input, price_cache_write
FROM model_targets;

DROP TABLE model_targets;
ALTER TABLE model_targets_new RENAME TO model_targets;
CREATE INDEX model_targets_provider ON model_targets (provider_id);
