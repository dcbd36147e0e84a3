//! The names and sizes of better-sync's tables: the one place they are
//! spelled. The migrations create them from here, and the engine's storage,
//! its limits and the benchmarks read them from here.

/// The append-only operation log.
pub const OP_LOG: &str = "op_log";
/// The current state of each row.
pub const SNAPSHOTS: &str = "snapshots";
/// The log head, and the lock writers take (one row, `id = 1`).
pub const SYNC_COUNTER: &str = "sync_counter";

/// Each tenant's log horizon: entries at or below it may have been compacted
/// away, and a cursor below it is stale.
pub const SYNC_HORIZONS: &str = "sync_horizons";
/// The log head recorded at points in time, so that retention by age needs
/// no timestamp on every log row.
pub const SYNC_MARKS: &str = "sync_marks";
/// Named leases (one compactor at a time across instances and the CLI).
pub const SYNC_LEASES: &str = "sync_leases";

/// Column names, each spelled once (several tables share some).
pub mod col {
    /// Server sequence number (`op_log`, `snapshots`).
    pub const SEQ: &str = "seq";
    /// Idempotency key (`op_log`).
    pub const OP_ID: &str = "op_id";
    /// Tenant (`op_log`, `snapshots`).
    pub const TENANT_ID: &str = "tenant_id";
    /// Model name (`op_log`, `snapshots`).
    pub const MODEL: &str = "model";
    /// Primary key of the changed row (`op_log`).
    pub const PK: &str = "pk";
    /// `insert`, `update` or `delete` (`op_log`).
    pub const OP: &str = "op";
    /// Replica that made the change (`op_log`).
    pub const ACTOR: &str = "actor";
    /// Canonical hybrid logical clock (`op_log`).
    pub const UPDATED_AT: &str = "updated_at";
    /// The change's payload as JSON text (`op_log`).
    pub const PAYLOAD: &str = "payload";
    /// Row id (`snapshots`), or the counter row's key (`sync_counter`).
    pub const ID: &str = "id";
    /// The row's live fields as JSON text (`snapshots`).
    pub const VALUE: &str = "value";
    /// The row's stamps as JSON text (`snapshots`).
    pub const CLOCKS: &str = "clocks";
    /// Tombstone flag (`snapshots`).
    pub const DELETED: &str = "deleted";
    /// The log head (`sync_counter`).
    pub const LAST_SEQ: &str = "last_seq";
    /// The horizon `seq` (`sync_horizons`).
    pub const HORIZON: &str = "horizon";
    /// Milliseconds since the Unix epoch (`sync_marks`).
    pub const AT_MS: &str = "at_ms";
    /// The log head at `at_ms` (`sync_marks`).
    pub const HEAD: &str = "head";
    /// A lease's name (`sync_leases`).
    pub const NAME: &str = "name";
    /// Who holds a lease (`sync_leases`).
    pub const HOLDER: &str = "holder";
    /// When a lease ends, milliseconds since the Unix epoch (`sync_leases`).
    pub const EXPIRES_MS: &str = "expires_ms";
}

/// `op_log`'s columns, in the order rows are written.
pub const OP_LOG_COLUMNS: [&str; 9] = [
    col::SEQ,
    col::OP_ID,
    col::TENANT_ID,
    col::MODEL,
    col::PK,
    col::OP,
    col::ACTOR,
    col::UPDATED_AT,
    col::PAYLOAD,
];

/// `snapshots`' columns, in the order rows are written.
pub const SNAPSHOT_COLUMNS: [&str; 7] = [
    col::TENANT_ID,
    col::MODEL,
    col::ID,
    col::VALUE,
    col::CLOCKS,
    col::DELETED,
    col::SEQ,
];

/// Index names.
pub mod index {
    /// Unique `(tenant_id, op_id)`: idempotency.
    pub const OP_LOG_TENANT_OP_ID: &str = "op_log_tenant_op_id_key";
    /// `(tenant_id, seq)`: pulls.
    pub const OP_LOG_TENANT_SEQ: &str = "op_log_tenant_seq_idx";
    /// `snapshots`' primary key `(tenant_id, model, id)`.
    pub const SNAPSHOTS_PKEY: &str = "snapshots_pkey";
}

/// Longest values the key columns hold, in bytes (the engine refuses longer
/// ones before they reach the database).
pub mod len {
    /// `op_id`.
    pub const OP_ID: u32 = 128;
    /// `tenant_id`.
    pub const TENANT_ID: u32 = 128;
    /// `model`.
    pub const MODEL: u32 = 64;
    /// `pk` and `snapshots.id`.
    pub const PK: u32 = 255;
    /// `op`.
    pub const OP: u32 = 16;
    /// `actor`.
    pub const ACTOR: u32 = 255;
    /// `updated_at`.
    pub const UPDATED_AT: u32 = 40;
    /// A lease's name and holder.
    pub const LEASE: u32 = 128;
}
