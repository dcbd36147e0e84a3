//! The writer's row cache: the merge state of the rows it committed, so that
//! a group touching only those (or new rows) can commit without reading
//! first.

use std::collections::HashMap;

use super::RowKey;
use better_sync_core::conflict::RowState;

/// Rows whose state the writer holds at once.
const KNOWN_ROWS: usize = 16_384;
/// The JSON text (value and clocks) of the rows it holds, at most: a row's
/// parsed state takes several times its text, and rows can be large.
const KNOWN_BYTES: usize = 16 << 20;
/// A row with more text than this is not held; it is read when touched.
const KNOWN_ROW_BYTES: usize = 64 << 10;

/// What the writer knows of the database between commits: the head after
/// its last commit, and the states of the rows that commit (and earlier
/// ones) touched. They stay true while no one else commits, which
/// [`crate::storage::Storage::commit_if_head`] checks as part of the next commit: a group
/// whose rows are all known (or new: inserts of rows it has not seen)
/// commits without reading anything first.
#[derive(Default)]
pub(super) struct RowCache {
    pub(super) head: Option<i64>,
    /// Whether to try commits without reads: not after one was refused,
    /// until a commit that reads finds the head where this writer left it
    /// (with several busy instances the head has mostly moved, and a
    /// refused commit costs a lock wait and, on Postgres, a logged error).
    pub(super) fast: bool,
    /// Two generations: rows found in `old` move to `recent`; when `recent`
    /// is full it becomes `old`, and what `old` held is forgotten.
    pub(super) recent: Generation,
    old: Generation,
}

#[derive(Default)]
pub(super) struct Generation {
    /// Each row's state and the length of its texts.
    rows: HashMap<RowKey, (RowState, usize)>,
    bytes: usize,
}

impl Generation {
    pub(super) fn remove(&mut self, key: &RowKey) -> Option<(RowKey, (RowState, usize))> {
        let found = self.rows.remove_entry(key)?;
        self.bytes -= found.1.1;
        Some(found)
    }

    pub(super) fn clear(&mut self) {
        self.rows.clear();
        self.bytes = 0;
    }
}

impl RowCache {
    /// A row's state and the length of its texts.
    pub(super) fn get(&mut self, key: &RowKey) -> Option<(RowState, usize)> {
        if let Some(found) = self.recent.rows.get(key) {
            return Some(found.clone());
        }
        let (key, (state, bytes)) = self.old.remove(key)?;
        self.put(key, state.clone(), bytes);
        Some((state, bytes))
    }

    pub(super) fn put(&mut self, key: RowKey, state: RowState, bytes: usize) {
        self.old.remove(&key);
        self.recent.remove(&key);
        if bytes > KNOWN_ROW_BYTES {
            return;
        }
        if self.recent.rows.capacity() == 0 {
            // Full size at once: growing rehashes every row held so far.
            self.recent.rows.reserve(KNOWN_ROWS / 2);
        }
        if self.recent.rows.len() >= KNOWN_ROWS / 2 || self.recent.bytes + bytes > KNOWN_BYTES / 2 {
            // Keeps both tables' allocations: growing one from empty again
            // (rehashing on the way) was most of the cost of an insert-only
            // load.
            std::mem::swap(&mut self.old, &mut self.recent);
            self.recent.clear();
        }
        self.recent.bytes += bytes;
        self.recent.rows.insert(key, (state, bytes));
    }

    /// After a commit at `head`, the rows it touched are as given (with
    /// the length of their texts).
    pub(super) fn committed(
        &mut self,
        head: i64,
        rows: impl IntoIterator<Item = (RowKey, RowState, usize)>,
    ) {
        self.head = Some(head);
        for (key, state, bytes) in rows {
            self.put(key, state, bytes);
        }
    }

    /// A commit that reads found the head at `head`: what was known still
    /// holds only if it was known at that head.
    pub(super) fn at_head(&mut self, head: i64) {
        let unmoved = self.head.is_none_or(|h| h == head);
        if self.head != Some(head) {
            self.forget();
            self.head = Some(head);
        }
        self.fast = unmoved;
    }

    /// A commit without reads was refused: read for the next one.
    pub(super) fn refused(&mut self) {
        self.fast = false;
    }

    pub(super) fn forget(&mut self) {
        self.head = None;
        self.recent.clear();
        self.old.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> RowKey {
        ("t".into(), "todo".into(), format!("r{i}"))
    }

    fn held(known: &RowCache) -> (usize, usize) {
        (
            known.recent.rows.len() + known.old.rows.len(),
            known.recent.bytes + known.old.bytes,
        )
    }

    #[test]
    fn known_rows_are_bounded_and_keep_the_recently_used() {
        let mut known = RowCache::default();
        let rows =
            |from: usize, n: usize| (from..from + n).map(|i| (key(i), RowState::default(), 10));
        known.committed(1, rows(0, KNOWN_ROWS * 2));
        assert!(held(&known).0 <= KNOWN_ROWS);
        assert!(known.get(&key(KNOWN_ROWS * 2 - 1)).is_some(), "the latest");
        assert!(known.get(&key(0)).is_none(), "the first are forgotten");
        // A row found among the old ones survives the next turnover.
        let old = known.old.rows.keys().next().cloned().expect("old rows");
        assert!(known.get(&old).is_some());
        known.committed(2, rows(10 * KNOWN_ROWS, KNOWN_ROWS / 2));
        assert!(known.get(&old).is_some(), "moved to the recent ones");
        assert!(held(&known).0 <= KNOWN_ROWS);
        assert_eq!(held(&known).1, 10 * held(&known).0, "bytes add up");
    }

    #[test]
    fn known_rows_are_bounded_by_their_text() {
        let mut known = RowCache::default();
        let big = KNOWN_ROW_BYTES;
        known.committed(1, (0..1000).map(|i| (key(i), RowState::default(), big)));
        let (rows, bytes) = held(&known);
        assert!(bytes <= KNOWN_BYTES, "{bytes}");
        assert!(rows < 1000 && rows >= KNOWN_BYTES / big / 2, "{rows}");
        // A row over the limit is not held, and drops an older copy.
        known.committed(2, [(key(999), RowState::default(), big + 1)]);
        assert!(known.get(&key(999)).is_none());
        let (_, after) = held(&known);
        assert_eq!(after, bytes - big);
    }

    #[test]
    fn known_rows_hold_only_at_their_head() {
        let mut known = RowCache::default();
        known.committed(5, [(key(1), RowState::default(), 1)]);
        known.at_head(5);
        assert!(known.fast);
        assert!(known.get(&key(1)).is_some(), "nothing moved");
        known.refused();
        assert!(!known.fast, "read next time");
        known.at_head(6);
        assert_eq!(known.head, Some(6));
        assert!(!known.fast, "the head had moved: keep reading");
        assert!(known.get(&key(1)).is_none(), "someone else committed");
        known.committed(7, [(key(2), RowState::default(), 1)]);
        known.at_head(7);
        assert!(known.fast, "nothing moved since this writer's commit");
        known.forget();
        assert_eq!(known.head, None);
        assert!(known.get(&key(2)).is_none());
        known.at_head(9);
        assert!(known.fast, "nothing known to have moved");
    }
}
