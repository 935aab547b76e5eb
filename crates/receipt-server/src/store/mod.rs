//! Storage behind a narrow trait: load the hot state at start, commit a batch of operations
//! atomically and durably, and read the rest by key when the core needs it ([`StoreRead`]).
//! [`RedbServerStore`] (one redb file in a data directory, in `redb`) is the default;
//! [`MemServerStore`] keeps nothing (tests, demos: the core keeps everything resident with it).
//! [`PgServerStore`] (in `postgres`) keeps the same data model in a PostgreSQL database
//! (docs/deployment.md). Each backend implements [`ServerStore`] and [`StoreRead`]; their
//! contracts are on the traits.

pub mod postgres;
mod records;
mod redb;

pub use self::postgres::PgServerStore;
pub use self::redb::{RedbServerStore, DB_FILE, DEFAULT_STORE_CACHE_BYTES, STORE_FORMAT};

use std::sync::Arc;

use receipt_core::{ConversationKey, GroupAckKind, GroupReadAck, MsgId, WireMessage};

use crate::core::StoreOp;
use crate::state::{ConvId, ConvState, MessageRecord, State};

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
///   acks of both kinds (and the message's `conv_messages` index entry, which `PutMessage` writes);
///   `TrimLog` drops a user's events up to a seq (and remembers that seq: the log's base);
///   `PutCursor` / `DeleteCursor` upsert or drop a device's cursor.
/// - **Load.** `load` returns exactly what the committed operations describe: every message
///   with its flags and group acks of both kinds (`PutGroupAck`, `PutGroupDeliveryAck`), every user's log in seq order, conversations with their
///   read rows (`ConvState::read.singles`, only ids above `read.up_to`), groups (with their
///   members' join marks), each log's base (`State::log_base` and `State::trimmed`), the device
///   cursors (`State::cursors`) and the counters;
///   then [`State::rebuild_indexes`] has been run.
pub trait ServerStore: Send {
    /// Everything stored, as the core's state (tools and tests; the server loads [`load_hot`](Self::load_hot)).
    fn load(&mut self) -> Result<State, StoreError>;
    /// What the core keeps resident from the start when it reads the rest through
    /// [`reader`](Self::reader): counters, groups (with their join marks) and the device
    /// cursors (at most `max_remembered_devices` per user); no messages, conversations, logs,
    /// log bases or `conv_messages` (read on demand). Its cost does not grow with history. A backend
    /// without a reader returns everything.
    fn load_hot(&mut self) -> Result<State, StoreError> {
        self.load()
    }
    /// Reads of the last committed state for the core thread, or `None`: the core then keeps
    /// everything resident (what [`load`](Self::load) returned plus what it applied).
    fn reader(&self) -> Option<Box<dyn StoreRead>> {
        None
    }
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
    /// Cluster: tries to become the only writer, the sequencer, without waiting: true if this
    /// store's commit connection holds the lock `key` now (again true while it does). The lock
    /// lives where the commits go (PostgreSQL: a session advisory lock on the commit
    /// connection, which PostgreSQL ends when idle for two `lease`s), so losing it stops the writes
    /// too: no second writer even if the pipeline's own lease check came too late. A store
    /// only one process can open (redb: a locked file; memory) is its own lock: always true.
    fn try_lead(&mut self, _key: i64, _lease: std::time::Duration) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Confirms the lock [`try_lead`](Self::try_lead) took still stands (one cheap round trip
    /// on the commit connection, which also keeps it from being idle); `Err` once it is lost.
    fn confirm_lead(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Point and range reads of the last committed state, on the core thread (the core's cache
/// misses). Each read sees one committed snapshot; the core keeps what it changed and is not
/// committed yet in memory (pinned), so a read is only made for keys the store is up to date on.
///
/// Every read is bounded: a point read, or a range with a `limit`.
pub trait StoreRead: Send {
    /// The core applied a batch (or learnt of a commit): a backend that keeps a read snapshot
    /// for a batch's reads lets it go, so the next read sees the last commit.
    fn release(&self) {}
    /// A message with its 1:1 flags and its number of group acks of each kind (`ack_count`,
    /// `delivery.count`); its acks and ackers are empty (read with
    /// [`acks_desc_of`](Self::acks_desc_of) / [`acked_by_of`](Self::acked_by_of)).
    fn message(&self, id: MsgId) -> Result<Option<MessageRecord>, StoreError>;
    /// The message `user` sent with `client_id` (idempotent sends), if still stored.
    fn client_id(&self, user: &str, client_id: &str) -> Result<Option<MsgId>, StoreError>;
    /// Whether `user` sent a message that is still stored.
    fn has_sent(&self, user: &str) -> Result<bool, StoreError>;
    /// Whether `user` sent a group ack of `kind` of message `id`.
    fn acked_by_of(&self, kind: GroupAckKind, id: MsgId, user: &str) -> Result<bool, StoreError>;
    /// The group acks of `kind` of message `id` with ack id at most `start`, newest first, at
    /// most `limit`.
    fn acks_desc_of(&self, kind: GroupAckKind, id: MsgId, start: u64, limit: usize) -> Result<Vec<GroupReadAck>, StoreError>;
    /// Whether `user` read-acked group message `id`.
    fn acked_by(&self, id: MsgId, user: &str) -> Result<bool, StoreError> {
        self.acked_by_of(GroupAckKind::Read, id, user)
    }
    /// The read acks of message `id` with ack id at most `start`, newest first, at most `limit`.
    fn acks_desc(&self, id: MsgId, start: u64, limit: usize) -> Result<Vec<GroupReadAck>, StoreError> {
        self.acks_desc_of(GroupAckKind::Read, id, start, limit)
    }
    /// Stored messages from id `first` on, oldest first, at most `limit` (retention).
    fn messages_from(&self, first: MsgId, limit: usize) -> Result<Vec<Arc<WireMessage>>, StoreError>;
    /// One conversation of `user`, with its read singles.
    fn conversation(&self, user: &str, key: &ConversationKey) -> Result<Option<ConvState>, StoreError>;
    /// Every conversation of `user`, without read singles (unread counts at sync), at most
    /// `limit`.
    fn conversations_of(&self, user: &str, limit: usize) -> Result<Vec<(ConversationKey, ConvState)>, StoreError>;
    /// The head of `user`'s log: the last seq stored (or trimmed), 0 for none.
    fn log_head(&self, user: &str) -> Result<u64, StoreError>;
    /// `user`'s retained events from seq `from` on, in seq order, reading at most `rows`
    /// stored rows; a `Message` event of a message no longer stored is left out. Also returns
    /// the seq to read from next (after the rows read) and whether rows are left.
    fn log_events(&self, user: &str, from: u64, rows: usize) -> Result<LogRead, StoreError>;
    /// Retention of the logs without holding them: looks at the logs of at most `users` users
    /// after `after` (in key order; `None`: from the first), reading at most `rows` rows of each,
    /// and returns for each log whose oldest events were logged before `cutoff` (ms) the seq up
    /// to which they may be trimmed, and the last user looked at (`None`: the end was reached).
    fn log_sweep(&self, after: Option<&str>, users: usize, rows: usize, cutoff: u64) -> Result<LogSweep, StoreError>;
    /// The seq up to which `user`'s log was trimmed (`TrimLog`; 0: never): a device whose
    /// cursor is below it gets a full state resync.
    fn log_trimmed(&self, user: &str) -> Result<u64, StoreError>;
    /// The ids of the stored messages of conversation `conv` above `after`, ascending, at most
    /// `limit` (the `conv_messages` index: what a resync walks).
    fn conv_messages_after(&self, conv: &ConvId, after: MsgId, limit: usize) -> Result<Vec<MsgId>, StoreError>;
}

/// What [`StoreRead::log_events`] read.
#[derive(Debug, Default)]
pub struct LogRead {
    pub events: Vec<receipt_core::protocol::SeqEvent>,
    pub next: u64,
    pub more: bool,
}

/// What [`StoreRead::log_sweep`] found: (user, trim up to seq), and where to go on.
#[derive(Debug, Default)]
pub struct LogSweep {
    pub trims: Vec<(receipt_core::UserId, u64)>,
    pub last: Option<receipt_core::UserId>,
}

/// Shortest time between two compactions while the server runs.
pub const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Stores nothing: a restart starts empty. It has no reader, so the core keeps everything
/// resident with it (tests, demos).
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
