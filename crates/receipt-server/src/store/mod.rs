//! Storage behind a narrow trait: load everything at start, commit a batch of operations
//! atomically and durably. [`RedbServerStore`] (one redb file in a data directory, in `redb`) is the
//! default; [`MemServerStore`] keeps nothing (tests, demos). Another backend (e.g. PostgreSQL)
//! implements [`ServerStore`] the same way; its contract is on the trait.

mod records;
mod redb;

pub use self::redb::{RedbServerStore, DB_FILE, STORE_FORMAT};

use crate::core::StoreOp;
use crate::state::State;

/// A storage failure. The server stops rather than answer `ok` for something not stored.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// Where the server keeps its state: the seam a second backend (e.g. PostgreSQL) implements.
///
/// The contract, which the pipeline relies on:
///
/// - **One writer.** Only the store thread calls the store, one call at a time; `load` once at
///   start, before any `commit`.
/// - **Order.** `commit` applies the operations of `parts` in order, part after part (each part
///   is one applied batch, in the order the core applied them). Later operations win: a
///   `Put*` replaces the whole record, so a backend may skip all but the last write of the same
///   key within one commit.
/// - **Atomic and durable before it returns.** All of one call's operations are stored or none
///   is, and they survive a crash once `commit` returned `Ok` (redb: one fsynced transaction;
///   PostgreSQL: one transaction with synchronous commit). The server sends no answer and
///   routes no event of a batch before its commit returned `Ok`: an `ok` means "stored". On
///   `Err` the server stops; the backend must not have applied part of that call.
/// - **What the operations mean** (see [`StoreOp`]): messages are written once; message flags,
///   conversations, counters and groups are whole-record upserts; `AppendEvent` adds
///   `(user, seq)` (seqs of a user only grow); `AddRead` / `TrimReads` add one read row and
///   drop the rows up to a watermark; `DeleteMessage` drops a message with its flags and group
///   acks; `TrimLog` drops a user's events up to a seq (and remembers that seq: the log's base).
/// - **Load.** `load` returns exactly what the committed operations describe: every message
///   with its flags and group acks, every user's log in seq order, conversations with their
///   read rows (`ConvState::read.singles`, only ids above `read.up_to`), groups (with their
///   members' join marks), each log's base (`State::log_base`) and the counters;
///   then [`State::rebuild_indexes`] has been run.
pub trait ServerStore: Send {
    /// Everything stored, as the core's state.
    fn load(&mut self) -> Result<State, StoreError>;
    /// Applies the operations of `parts` (one slice per applied batch) in order, atomically, in
    /// one transaction, and makes them durable before returning.
    fn commit(&mut self, parts: &[&[StoreOp]]) -> Result<(), StoreError>;
    /// Gives the space of deleted records back (redb: compaction), so that nothing deleted
    /// (past retention) lingers in free pages of the file. Called by the store thread between
    /// commits after deletions, at most every [`COMPACT_EVERY`], and at shutdown; slow (it
    /// rewrites the file's tail), never on the request path of a batch.
    fn compact(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Shortest time between two compactions while the server runs.
pub const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Stores nothing: a restart starts empty.
#[derive(Debug, Default)]
pub struct MemServerStore {
    /// How many commits were made (for tests).
    pub commits: usize,
}

impl ServerStore for MemServerStore {
    fn load(&mut self) -> Result<State, StoreError> {
        Ok(State::default())
    }
    fn commit(&mut self, _parts: &[&[StoreOp]]) -> Result<(), StoreError> {
        self.commits += 1;
        Ok(())
    }
}
