//! Multi-row statements in a few fixed sizes: a batch of rows is split into
//! statements of [`STATEMENT_ROWS`] rows (largest first), so that the few
//! texts of each statement stay prepared in every connection's cache. Used
//! by ingest (request logs, attempts, details), the rollups and the spend.

use super::Backend;

/// `($1, $2, ...), (...)` for `rows` rows of `cols` values; plain `?` on
/// SQLite, which resolves each `$N` by a linear search (quadratic over the
/// thousands of parameters of a multi-row INSERT) but numbers `?` directly.
pub(crate) fn values_sql(backend: Backend, rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 6);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            match backend {
                Backend::Sqlite => s.push('?'),
                Backend::Postgres => {
                    s.push('$');
                    s.push_str(&(r * cols + c + 1).to_string());
                }
            }
        }
        s.push(')');
    }
    s
}

/// Rows per statement of a chunk: powers of two up to the largest, so a
/// few statement texts serve every batch and stay prepared in the
/// connection's cache (parsing a new multi-row INSERT for every batch cost
/// SQLite about half as much again as storing the rows). 256 rows of the
/// widest table stay under both databases' parameter limits.
pub(crate) const STATEMENT_ROWS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// Splits `n` rows into statements: indices into [`STATEMENT_ROWS`],
/// largest first.
pub(crate) fn statement_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let slot = STATEMENT_ROWS.iter().position(|&s| s <= n)?;
        n -= STATEMENT_ROWS[slot];
        Some(slot)
    })
}

/// `rows` cut into the statements of [`statement_sizes`]: each part with
/// its slot in [`STATEMENT_ROWS`].
pub(crate) fn statement_parts<T>(rows: &[T]) -> impl Iterator<Item = (usize, &[T])> {
    let mut rest = rows;
    statement_sizes(rows.len()).map(move |slot| {
        let (part, next) = rest.split_at(STATEMENT_ROWS[slot]);
        rest = next;
        (slot, part)
    })
}

/// A multi-row INSERT's table, columns and what follows its VALUES.
pub(crate) type InsertParts<'a> = (&'a str, &'a [&'a str], &'a str);

/// The multi-row INSERT texts of every backend, variant and statement size
/// (`STATEMENT_ROWS`), in that order; [`insert_text`] picks one. Built
/// once, so that the few texts stay prepared per connection.
pub(crate) fn insert_texts(variants: &[InsertParts<'_>]) -> Vec<String> {
    let mut texts = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for (name, columns, tail) in variants {
            for rows in STATEMENT_ROWS {
                texts.push(format!(
                    "INSERT INTO {name} ({}) VALUES {}{tail}",
                    columns.join(", "),
                    values_sql(backend, rows, columns.len())
                ));
            }
        }
    }
    texts
}

/// The text of `variant` for `STATEMENT_ROWS[slot]` rows in
/// [`insert_texts`]' output.
pub(crate) fn insert_text(texts: &[String], backend: Backend, variant: usize, slot: usize) -> &str {
    let variants = texts.len() / (2 * STATEMENT_ROWS.len());
    let b = match backend {
        Backend::Sqlite => 0,
        Backend::Postgres => 1,
    };
    &texts[(b * variants + variant) * STATEMENT_ROWS.len() + slot]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        assert_eq!(
            values_sql(Backend::Postgres, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(values_sql(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn statements_come_in_a_few_cached_sizes() {
        let sizes = |n| -> Vec<usize> { statement_sizes(n).map(|i| STATEMENT_ROWS[i]).collect() };
        for n in [0, 1, 2, 3, 63, 64, 65, 100, 255, 256, 257, 1000] {
            let s = sizes(n);
            assert_eq!(s.iter().sum::<usize>(), n, "{n}: {s:?}");
            // Largest first, and below the largest each size at most once.
            assert!(s.windows(2).all(|w| w[0] >= w[1]));
            assert!(s.iter().filter(|&&x| x < 256).count() <= 8);
        }
        assert_eq!(sizes(100), [64, 32, 4]);
        assert_eq!(sizes(1000), [256, 256, 256, 128, 64, 32, 8]);
        let rows: Vec<u32> = (0..100).collect();
        let parts: Vec<(usize, usize, u32)> = statement_parts(&rows)
            .map(|(slot, p)| (STATEMENT_ROWS[slot], p.len(), p[0]))
            .collect();
        assert_eq!(parts, [(64, 64, 0), (32, 32, 64), (4, 4, 96)]);
        let texts = insert_texts(&[("t", &["a", "b"], " ON CONFLICT DO NOTHING")]);
        assert_eq!(
            insert_text(&texts, Backend::Postgres, 0, STATEMENT_ROWS.len() - 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            insert_text(&texts, Backend::Sqlite, 0, STATEMENT_ROWS.len() - 1),
            "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING"
        );
    }
}
