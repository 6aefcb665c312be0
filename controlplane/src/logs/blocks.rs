//! Which records of a batch share a details block (`details.rs`,
//! "Blocks"): a pure plan, made before the batch's transaction, so that
//! each summary row is inserted knowing its block's time.
//!
//! A block holds records of one UTC day (PostgreSQL keeps a day's details
//! in that day's partition, and drops it whole) within [`MAX_SPAN_MS`] of
//! each other, in the order they came, up to [`MAX_BLOCK_RECORDS`] records
//! or [`MAX_BLOCK_PLAIN`] bytes of uncompressed details. Its time is its
//! earliest record's, so no record's offset from it is negative, and the
//! span keeps it well inside the 32-bit `request_logs.details_offset_ms`. SQLite's body retention deletes a
//! block once its time is past the cutoff: the span bounds how much
//! earlier than their own time its other records' bodies go. Live
//! traffic fills a block within seconds; the span matters for a backlog
//! sent late, whose batches cover hours.

use std::collections::HashMap;

use super::details::{MAX_BLOCK_PLAIN, MAX_BLOCK_RECORDS};

const DAY_MS: i64 = 24 * 3600 * 1000;
/// The longest time between a block's earliest and latest records.
pub const MAX_SPAN_MS: i64 = 3600 * 1000;

/// One planned block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The earliest time of its records: the row's `time_ms`.
    pub time_ms: i64,
    /// Its records, as positions in what [`plan`] was given.
    pub members: Vec<usize>,
}

/// Plans the blocks of records given as `(time_ms, uncompressed details
/// length)`, `None` for a record stored without details.
pub fn plan(records: &[Option<(i64, usize)>]) -> Vec<Plan> {
    let mut done: Vec<Plan> = Vec::new();
    // The open block of each day, its uncompressed bytes and latest time.
    let mut open: HashMap<i64, (Plan, usize, i64)> = HashMap::new();
    for (at, r) in records.iter().enumerate() {
        let Some((time_ms, len)) = *r else {
            continue;
        };
        let day = time_ms.div_euclid(DAY_MS);
        let fresh = || {
            (
                Plan {
                    time_ms,
                    members: Vec::new(),
                },
                0,
                time_ms,
            )
        };
        let entry = open.entry(day).or_insert_with(fresh);
        let (block, bytes, latest) = &*entry;
        let span = time_ms.max(*latest) - time_ms.min(block.time_ms);
        if !block.members.is_empty()
            && (block.members.len() >= MAX_BLOCK_RECORDS
                || bytes.saturating_add(len) > MAX_BLOCK_PLAIN
                || span > MAX_SPAN_MS)
        {
            let (full, _, _) = std::mem::replace(entry, fresh());
            done.push(full);
        }
        let (block, bytes, latest) = entry;
        block.time_ms = block.time_ms.min(time_ms);
        *latest = (*latest).max(time_ms);
        block.members.push(at);
        *bytes = bytes.saturating_add(len);
    }
    done.extend(open.into_values().map(|(b, _, _)| b));
    done.sort_by_key(|b| b.members[0]);
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_to_a_day_and_to_their_bounds() {
        let day = DAY_MS * 20_000;
        let mut records = vec![
            Some((day + 500, 10)),
            None,
            Some((day + 100, 10)),
            // The next day.
            Some((day + DAY_MS, 10)),
            Some((day + 900, 10)),
        ];
        let plans = plan(&records);
        assert_eq!(
            plans,
            [
                Plan {
                    time_ms: day + 100,
                    members: vec![0, 2, 4]
                },
                Plan {
                    time_ms: day + DAY_MS,
                    members: vec![3]
                },
            ]
        );
        // Full by count.
        records = (0..MAX_BLOCK_RECORDS as i64 * 2 + 1)
            .map(|n| Some((day + n, 1)))
            .collect();
        let sizes: Vec<usize> = plan(&records).iter().map(|p| p.members.len()).collect();
        assert_eq!(sizes, [MAX_BLOCK_RECORDS, MAX_BLOCK_RECORDS, 1]);
        // Full by bytes; a record larger than a block has one of its own.
        records = vec![
            Some((day, MAX_BLOCK_PLAIN / 2)),
            Some((day + 1, MAX_BLOCK_PLAIN / 2)),
            Some((day + 2, 1)),
            Some((day + 3, MAX_BLOCK_PLAIN * 3)),
            Some((day + 4, 1)),
        ];
        let members: Vec<Vec<usize>> = plan(&records).into_iter().map(|p| p.members).collect();
        assert_eq!(members, [vec![0, 1], vec![2], vec![3], vec![4]]);
        // Full by span, either way from its earliest record.
        let at = day + DAY_MS / 2;
        records = vec![
            Some((at, 1)),
            Some((at + MAX_SPAN_MS, 1)),
            Some((at - 1, 1)),
            Some((at + 1, 1)),
        ];
        assert_eq!(
            plan(&records),
            [
                Plan {
                    time_ms: at,
                    members: vec![0, 1]
                },
                Plan {
                    time_ms: at - 1,
                    members: vec![2, 3]
                },
            ]
        );
    }
}
