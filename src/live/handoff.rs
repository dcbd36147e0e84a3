//! The hand-off of committed entries from the engine's writer to the live
//! fan-out: a shortcut that spares the fan-out a read of the log.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

use crate::storage::LogEntry;

/// Entries handed over beyond this many are dropped, oldest first; the gap
/// is then read from the log.
const MAX_HANDOFF_ENTRIES: usize = 10_000;

/// Committed blocks of entries, from the engine's writer to the fan-out, so
/// that a local commit reaches subscribers without a read of the log.
///
/// Purely a shortcut: whatever is missing (commits of other instances, a
/// block dropped here, a commit made before the fan-out started) shows as a
/// gap in sequence numbers, and the fan-out reads the log instead.
#[derive(Default)]
pub(crate) struct Handoff {
    /// Each commit's entries, with when it was handed over.
    blocks: Mutex<VecDeque<Handed>>,
    /// Set by the fan-out task when it starts, before it reads the head.
    pub(super) active: AtomicBool,
    /// Woken after each handed-over commit.
    pub(super) committed: Notify,
}

/// One commit's entries as handed over: when, and the commit's span (the
/// fan-out's round follows from it).
pub(super) struct Handed {
    pub(super) at: Instant,
    pub(super) span: tracing::Span,
    pub(super) entries: Vec<LogEntry>,
}

/// What the handoff holds right after a sequence number.
pub(super) enum Next {
    /// The entries that follow it, in order, and their commit.
    Block(Handed),
    /// Entries that do not follow it: something in between must be read.
    Gap,
    /// Nothing.
    Empty,
}

impl Handoff {
    /// Hand over the entries of one commit, in sequence order.
    pub(crate) fn offer(&self, entries: Vec<LogEntry>, span: tracing::Span) {
        // Before the fan-out starts nobody takes them; its first head read
        // covers them.
        if entries.is_empty() || !self.active.load(Ordering::SeqCst) {
            return;
        }
        {
            let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
            blocks.push_back(Handed {
                at: Instant::now(),
                span,
                entries,
            });
            let mut held: usize = blocks.iter().map(|b| b.entries.len()).sum();
            while held > MAX_HANDOFF_ENTRIES && blocks.len() > 1 {
                held -= blocks.pop_front().map_or(0, |b| b.entries.len());
            }
        }
        self.committed.notify_one();
    }

    /// The block that continues right after `after`, dropping what is at
    /// or below it.
    pub(super) fn next(&self, after: i64) -> Next {
        let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut block) = blocks.pop_front() {
            block.entries.retain(|e| e.seq > after);
            match block.entries.first() {
                None => continue,
                Some(e) if e.seq == after + 1 => return Next::Block(block),
                Some(_) => {
                    blocks.push_front(block);
                    return Next::Gap;
                }
            }
        }
        Next::Empty
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use better_sync_core::protocol::Op;

    fn entries(seqs: std::ops::RangeInclusive<i64>) -> Vec<LogEntry> {
        seqs.map(|seq| LogEntry {
            seq,
            op_id: format!("o{seq}"),
            tenant_id: "t".into(),
            model: "todo".into(),
            pk: format!("{seq}"),
            op: Op::Insert,
            actor: "a".into(),
            updated_at: "2026-01-01T00:00:00.000Z-0000".into(),
            payload: "{}".into(),
        })
        .collect()
    }

    fn seqs(next: Next) -> Option<Vec<i64>> {
        match next {
            Next::Block(b) => Some(b.entries.iter().map(|e| e.seq).collect()),
            Next::Gap => Some(Vec::new()),
            Next::Empty => None,
        }
    }

    #[test]
    fn nothing_is_held_before_the_fan_out_starts() {
        let h = Handoff::default();
        h.offer(entries(1..=3), tracing::Span::none());
        assert!(matches!(h.next(0), Next::Empty));
    }

    #[test]
    fn blocks_follow_in_order_and_old_entries_are_dropped() {
        let h = Handoff::default();
        h.active.store(true, Ordering::SeqCst);
        h.offer(entries(1..=3), tracing::Span::none());
        h.offer(entries(4..=5), tracing::Span::none());
        h.offer(entries(6..=9), tracing::Span::none());
        // Entries at or below `after` (already read from the log) are cut.
        assert_eq!(seqs(h.next(4)), Some(vec![5]));
        assert_eq!(seqs(h.next(5)), Some(vec![6, 7, 8, 9]));
        assert_eq!(seqs(h.next(9)), None);
    }

    #[test]
    fn a_gap_is_reported_and_the_block_kept() {
        let h = Handoff::default();
        h.active.store(true, Ordering::SeqCst);
        // 4..=5 committed by another instance, never handed over.
        h.offer(entries(6..=7), tracing::Span::none());
        assert_eq!(seqs(h.next(3)), Some(vec![]), "gap");
        // After the log read covered 4..=7, the kept block is stale.
        assert_eq!(seqs(h.next(7)), None);
        h.offer(entries(8..=8), tracing::Span::none());
        assert_eq!(seqs(h.next(5)), Some(vec![]), "6..=7 were dropped");
    }

    #[test]
    fn the_held_entries_are_bounded() {
        let h = Handoff::default();
        h.active.store(true, Ordering::SeqCst);
        let block = 1000;
        for b in 0..20 {
            h.offer(
                entries(b * block + 1..=(b + 1) * block),
                tracing::Span::none(),
            );
        }
        let held: usize = h
            .blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|b| b.entries.len())
            .sum();
        assert!(held <= MAX_HANDOFF_ENTRIES, "{held}");
        // The oldest were dropped: reading from the start finds a gap.
        assert_eq!(seqs(h.next(0)), Some(vec![]));
    }
}
