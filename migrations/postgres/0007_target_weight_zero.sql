-- A target's weight may be 0: the target is drained (no traffic while any
-- other target of its priority is healthy).

ALTER TABLE model_targets DROP CONSTRAINT model_targets_weight_check;
ALTER TABLE model_targets ADD CONSTRAINT model_targets_weight_check CHECK (weight >= 0);
