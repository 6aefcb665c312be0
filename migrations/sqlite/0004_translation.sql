-- Protocol translation: providers speak four protocols; models get a
-- default max_tokens and a translation mode; prices get a cache-write rate.
--
-- SQLite cannot change a CHECK constraint, so `providers` is rebuilt. Its
-- child `model_targets` is rebuilt with it: dropping `providers` while
-- targets still referenced it would break their ON DELETE RESTRICT
-- foreign key, and `PRAGMA foreign_keys` cannot be turned off inside the
-- migration's transaction. The targets are copied to a new table that
-- references the new providers table, the old tables are dropped child
-- first, and the renames point the foreign key back at `providers`
-- (SQLite 3.26+ rewrites references on RENAME). Ids, and the
-- AUTOINCREMENT high-water mark, are kept.

CREATE TABLE providers_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    protocol TEXT NOT NULL
        CHECK (protocol IN ('openai', 'openai-chat', 'anthropic', 'gemini')),
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
INSERT INTO providers_new (id, name, protocol, base_url, api_key_sealed, headers_sealed,
    timeout_s, stream_usage, enabled, created_at, updated_at)
SELECT id, name, protocol, base_url, api_key_sealed, headers_sealed,
    timeout_s, stream_usage, enabled, created_at, updated_at
FROM providers;
-- A deleted provider's id is never handed out again.
DELETE FROM sqlite_sequence WHERE name = 'providers_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'providers_new', seq FROM sqlite_sequence WHERE name = 'providers';

CREATE TABLE model_targets_new (
    model_id INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    provider_id INTEGER NOT NULL REFERENCES providers_new (id) ON DELETE RESTRICT,
    upstream_model TEXT NOT NULL,
    priority INTEGER NOT NULL,
    weight INTEGER NOT NULL CHECK (weight >= 1),
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
    weight, rules, enabled, price_input, price_output, price_cached_input,
    CASE WHEN price_input IS NULL THEN NULL ELSE 0 END
FROM model_targets;

DROP TABLE model_targets;
DROP TABLE providers;
ALTER TABLE providers_new RENAME TO providers;
ALTER TABLE model_targets_new RENAME TO model_targets;
CREATE INDEX model_targets_provider ON model_targets (provider_id);

-- max_tokens for targets that require it (Anthropic) when the client gave
-- none; NULL means the data plane's default.
ALTER TABLE models ADD COLUMN default_max_tokens INTEGER;
-- What translation does with a feature the target's protocol cannot express.
ALTER TABLE models ADD COLUMN translation TEXT NOT NULL DEFAULT 'strict'
    CHECK (translation IN ('strict', 'lenient'));
-- Per 1M tokens written to a prompt cache; 0 charges them at the input price.
ALTER TABLE models ADD COLUMN price_cache_write REAL NOT NULL DEFAULT 0;
