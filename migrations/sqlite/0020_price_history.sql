-- Price history (#16; docs/architecture.md "Prices"): every change of a
-- model's prices, as it was made. `prices` is JSON of the whole price set
-- from then on: the model's sheet and the targets' own by target index
-- (0 first, in the model's target order), amounts as exact decimal
-- strings of US dollars:
--   {"model": {"tokens": {"input": "2.5", ...}, "tiers": [...], ...},
--    "targets": {"1": {...}}}
-- A change applies from effective_from (Unix milliseconds) on: the latest
-- row whose time has come is the model's prices, over the price columns of
-- models and model_targets (which keep the last immediate change's token
-- prices as f64, for an older control plane). Rows later than now are
-- scheduled changes, carried in snapshots so data planes switch at their
-- time. A model written before this table has no rows until its prices
-- next change; its columns are its prices. Rows go with their model.
CREATE TABLE price_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    effective_from INTEGER NOT NULL,
    prices TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX price_history_model ON price_history (model, effective_from, id);
