//! A measured figure beside the ceiling it is judged against, and the
//! statistics of latencies.

use std::time::Duration;

/// One measured figure, with the ceiling it is judged against.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) ceiling: Option<f64>,
    /// A second yardstick: what the same work costs without the engine.
    pub(crate) reference: Option<f64>,
    pub(crate) target: String,
}

/// The machine's limits, measured in the same run, that figures are
/// reported against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ceilings {
    /// Hello-world hyper, one client, requests in sequence.
    pub(crate) hello_sequential: f64,
    /// Hello-world hyper, 64 concurrent clients.
    pub(crate) hello_64: f64,
    /// Raw batched insert of small rows (rows/s).
    pub(crate) raw_insert: f64,
    /// The storage layer writing 100 changes a commit (changes/s).
    pub(crate) schema_writes: f64,
    /// The database itself writing the same log and snapshot rows, no
    /// async driver between (changes/s; `physical.rs`).
    pub(crate) physical_write: f64,
    /// The database itself committing one change a transaction, in
    /// sequence (commits/s; SQLite only: `physical.rs`).
    pub(crate) physical_single_commits: Option<f64>,
}

impl Figure {
    pub(crate) fn new(
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        target: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            value,
            unit,
            ceiling: None,
            reference: None,
            target: target.into(),
        }
    }

    pub(crate) fn against(mut self, ceiling: f64) -> Self {
        self.ceiling = Some(ceiling);
        self
    }

    pub(crate) fn beside(mut self, reference: f64) -> Self {
        self.reference = Some(reference);
        self
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
