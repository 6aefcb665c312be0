-- Targets' own prices in the price history by target identity (#16;
-- docs/architecture.md "Prices"): a change kept them by target index, so
-- a change scheduled before the model's targets were reordered, added to
-- or removed would have given its prices to whatever target was at that
-- position at its time. Now `prices` holds them as a list of
--   {"provider": P, "upstream_model": M, "occurrence": N, "prices": {...}}
-- (`occurrence`: which of the model's targets with that provider and
-- upstream model, 0 first, in target order; written here for every
-- target, and read as 0 where it is absent). Existing rows
-- are rewritten here against the model's targets as they are now, which
-- is how they were read until now: an index with no target now was
-- ignored, and is dropped. Rows that are not valid JSON are left as they
-- are (they mark their model broken, as before). A control plane older
-- than this that shares the database still writes the index form; it is
-- read the same way, against the targets as they are when read.
DO $$
DECLARE
    r RECORD;
    parsed JSONB;
BEGIN
    FOR r IN SELECT id, model, prices FROM price_history LOOP
        BEGIN
            parsed := r.prices::jsonb;
        EXCEPTION WHEN others THEN
            CONTINUE;
        END;
        IF jsonb_typeof(parsed) = 'object' AND jsonb_typeof(parsed -> 'targets') = 'object' THEN
            UPDATE price_history SET prices = (
                (parsed - 'targets') || jsonb_build_object('target_prices', COALESCE((
                    SELECT jsonb_agg(jsonb_build_object(
                        'provider', p.name,
                        'upstream_model', t.upstream_model,
                        'occurrence', (
                            SELECT COUNT(*) FROM model_targets o
                            WHERE o.model_id = t.model_id AND o.provider_id = t.provider_id
                              AND o.upstream_model = t.upstream_model
                              AND o.position < t.position
                        ),
                        'prices', j.value
                    ))
                    FROM jsonb_each(parsed -> 'targets') AS j
                    JOIN models m ON m.name = r.model
                    JOIN model_targets t ON t.model_id = m.id AND t.position =
                        CASE WHEN j.key ~ '^[0-9]{1,9}$' THEN j.key::bigint END
                    JOIN providers p ON p.id = t.provider_id
                ), '[]'::jsonb))
            )::text
            WHERE id = r.id;
        END IF;
    END LOOP;
END
$$;
