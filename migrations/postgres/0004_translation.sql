-- Protocol translation: providers speak four protocols; models get a
-- default max_tokens and a translation mode; prices get a cache-write rate.

ALTER TABLE providers DROP CONSTRAINT providers_protocol_check;
ALTER TABLE providers ADD CONSTRAINT providers_protocol_check
    CHECK (protocol IN ('openai', 'openai-chat', 'anthropic', 'gemini'));

-- max_tokens for targets that require it (Anthropic) when the client gave
-- none; NULL means the data plane's default.
ALTER TABLE models ADD COLUMN default_max_tokens BIGINT;
-- What translation does with a feature the target's protocol cannot express.
ALTER TABLE models ADD COLUMN translation TEXT NOT NULL DEFAULT 'strict'
    CHECK (translation IN ('strict', 'lenient'));
-- Per 1M tokens written to a prompt cache; 0 charges them at the input price.
ALTER TABLE models ADD COLUMN price_cache_write DOUBLE PRECISION NOT NULL DEFAULT 0;
-- NULL, like the target's other prices, means the model's prices.
ALTER TABLE model_targets ADD COLUMN price_cache_write DOUBLE PRECISION;
UPDATE model_targets SET price_cache_write = 0 WHERE price_input IS NOT NULL;
