-- An outbound proxy per provider (`llmgw provider add|update --proxy`):
-- the whole URL (http://, https:// or socks5://, credentials included)
-- sealed with the master key like the API key; NULL means none.
ALTER TABLE providers ADD COLUMN proxy_sealed TEXT;
-- Default request parameters (`--default-param NAME=JSON`), filled in only
-- when a request's body lacks the field: a JSON object, '{}' means none.
-- Per provider, and per target (the target's win for the same name).
ALTER TABLE providers ADD COLUMN default_params TEXT NOT NULL DEFAULT '{}';
ALTER TABLE model_targets ADD COLUMN default_params TEXT NOT NULL DEFAULT '{}';
