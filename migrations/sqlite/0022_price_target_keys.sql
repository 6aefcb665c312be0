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
UPDATE price_history
SET prices = json_set(
    json_remove(prices, '$.targets'),
    '$.target_prices',
    json((
        SELECT json_group_array(json_object(
            'provider', p.name,
            'upstream_model', t.upstream_model,
            'occurrence', (
                SELECT COUNT(*) FROM model_targets o
                WHERE o.model_id = t.model_id AND o.provider_id = t.provider_id
                  AND o.upstream_model = t.upstream_model AND o.position < t.position
            ),
            'prices', json(j.value)
        ))
        FROM json_each(price_history.prices, '$.targets') AS j
        JOIN models m ON m.name = price_history.model
        JOIN model_targets t
          ON t.model_id = m.id
         AND j.key <> '' AND j.key NOT GLOB '*[^0-9]*' AND length(j.key) <= 9
         AND t.position = CAST(j.key AS INTEGER)
        JOIN providers p ON p.id = t.provider_id
    ))
)
-- (SQLite does not promise to evaluate AND's sides in order, and
-- json_type of text that is not JSON is an error: CASE guards it.)
WHERE CASE WHEN json_valid(prices) THEN json_type(prices, '$.targets') END = 'object';
