-- Limits (#15): what a client key, a model or a provider may use, and the
-- limits of every key that sets none (scope 'default', name ''). One row
-- per (scope, name); no row means no limits. NULL is no limit of that
-- kind; window_ms is the rpm/tpm window; budget_period is '' when there is
-- no budget. The row of a key, model or provider is deleted with it.
CREATE TABLE limits (
    scope TEXT NOT NULL CHECK (scope IN ('key', 'model', 'provider', 'default')),
    name TEXT NOT NULL,
    rpm INTEGER CHECK (rpm > 0),
    tpm INTEGER CHECK (tpm > 0),
    max_concurrency INTEGER CHECK (max_concurrency > 0),
    budget_micros INTEGER CHECK (budget_micros > 0),
    budget_period TEXT NOT NULL DEFAULT '',
    window_ms INTEGER NOT NULL DEFAULT 60000,
    on_outage TEXT NOT NULL DEFAULT 'open',
    PRIMARY KEY (scope, name)
);
