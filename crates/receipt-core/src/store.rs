//! The client's persistent state: messages with their receipt flags, conversations (unread
//! counts and read watermarks), the outbox of requests not yet confirmed, and the sync cursor.
//!
//! The engine keeps conversation summaries, the outbox and a bounded cache of messages in
//! memory; it reads other messages by key ([`ClientStore::message`]) or by conversation range
//! ([`ClientStore::conversation_messages`]) when an input or the app needs them. At the end of
//! every input it hands the store one [`StoreBatch`] with everything that changed: one
//! transaction per input. [`RedbStore`] keeps it on disk (redb: pure Rust, copy-on-write
//! B-trees, crash-safe commits); [`MemStore`] keeps it in memory for tests and benchmarks.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};

use crate::protocol::ClientFrame;
use crate::types::*;

/// A conversation's read state on this device, in the watermark words of [`crate::rules`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub key: ConversationKey,
    /// Received messages held here that are unread (id above `read_up_to`, not read one by one).
    pub local_unread: u32,
    /// Unread messages the server counts that this device does not hold (older than its
    /// history); cleared by a conversation read.
    pub remote_unread: u32,
    /// Own read watermark: every received message with an id up to here counts as read.
    pub read_up_to: MsgId,
    /// 1:1: the peer read every message this user sent up to here (conversation ack).
    pub peer_read_up_to: MsgId,
    /// 1:1: the receipt mark: this user's conversation ack covered messages up to here.
    /// (Stored under its former name: the on-disk format is unchanged.)
    #[serde(rename = "ack_sent_up_to")]
    pub receipt_up_to: MsgId,
    /// Newest message id held in this conversation, either direction.
    #[serde(rename = "latest")]
    pub newest: MsgId,
    /// Newest message id this user received in this conversation (0: none). Kept here so a
    /// conversation ack needs no scan of the history. (Format 2; computed when migrating.)
    #[serde(default)]
    pub newest_received: MsgId,
    /// How many messages of this conversation the store holds (local retention's count).
    #[serde(default)]
    pub held: u32,
}

impl Conversation {
    pub fn new(key: ConversationKey) -> Self {
        Conversation {
            key,
            local_unread: 0,
            remote_unread: 0,
            read_up_to: 0,
            peer_read_up_to: 0,
            receipt_up_to: 0,
            newest: 0,
            newest_received: 0,
            held: 0,
        }
    }
    /// The unread count users see.
    pub fn unread(&self) -> u32 {
        self.local_unread.saturating_add(self.remote_unread)
    }

    /// Counts a message newly held in this conversation.
    pub fn note_held(&mut self, m: &ChatMessage) {
        self.newest = self.newest.max(m.id);
        if m.direction == MessageDirection::Receive {
            self.newest_received = self.newest_received.max(m.id);
        }
        self.held = self.held.saturating_add(1);
    }
}

/// Small counters kept across restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Last event seq applied from the user's log.
    pub cursor: Seq,
    /// Next request id.
    pub next_req: ReqId,
    /// Next client message number (client ids are `<device>-<n>`).
    pub next_client_msg: u64,
}

/// What the engine loads at start: everything but the messages (read on demand), so opening
/// costs O(conversations + outbox), not O(messages).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: Meta,
    /// Messages this device sent that the server has not accepted yet (id == 0).
    pub pending: Vec<ChatMessage>,
    pub conversations: Vec<Conversation>,
    /// Requests not yet confirmed by the server, in request order.
    pub outbox: Vec<ClientFrame>,
}

/// The changes of one handled input, written in one transaction. (Serialized as JSON in
/// [`RedbStore`]'s journal.)
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoreBatch {
    pub meta: Option<Meta>,
    /// Accepted messages (id > 0) added or changed.
    pub messages: Vec<ChatMessage>,
    /// Accepted messages dropped by local retention.
    pub messages_delete: Vec<(ConversationKey, MsgId)>,
    pub pending_put: Vec<ChatMessage>,
    pub pending_delete: Vec<String>,
    pub conversations: Vec<Conversation>,
    pub outbox_put: Vec<ClientFrame>,
    pub outbox_delete: Vec<ReqId>,
    /// The batch must be on disk before the caller is told (it holds a user's command). Batches
    /// made only from inbound events may be lazy: after a crash the server replays them.
    pub durable: bool,
}

impl StoreBatch {
    pub fn is_empty(&self) -> bool {
        self.meta.is_none()
            && self.messages.is_empty()
            && self.messages_delete.is_empty()
            && self.pending_put.is_empty()
            && self.pending_delete.is_empty()
            && self.conversations.is_empty()
            && self.outbox_put.is_empty()
            && self.outbox_delete.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Backend(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// The file was written by a newer SDK: opening it could lose what that SDK stored.
    #[error("store format {found} is newer than this SDK's ({supported}): refusing to open it")]
    NewerFormat { found: u32, supported: u32 },
}

macro_rules! backend_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Backend(e.to_string()) }
        }
    )*};
}
backend_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Where the engine's state lives between runs.
pub trait ClientStore {
    /// Everything but the messages (see [`Snapshot`]).
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    fn commit(&mut self, batch: &StoreBatch) -> Result<(), StoreError>;
    /// An accepted message by its server id.
    fn message(&self, id: MsgId) -> Result<Option<ChatMessage>, StoreError>;
    /// A conversation's messages with ids in `ids`, ascending (or newest first), at most `limit`.
    fn conversation_messages(
        &self,
        key: &ConversationKey,
        ids: Range<MsgId>,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<ChatMessage>, StoreError>;
    /// Makes the stored state cheap to reopen after the process is killed, if a durable commit
    /// since the last checkpoint left it expensive (see [`RedbStore::checkpoint`]). The engine
    /// calls it once the app has been idle for a while. Default: nothing to do.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// False for a store that keeps nothing ([`NullStore`]): the engine then does not build
    /// batches (no copies of changed records), never calls `commit`, and keeps every message it
    /// holds in memory (nothing could be read back).
    fn persists(&self) -> bool {
        true
    }
}

/// A store that keeps nothing: a device without persistence (load generators). A restart
/// starts empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullStore;

impl ClientStore for NullStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
    fn commit(&mut self, _batch: &StoreBatch) -> Result<(), StoreError> {
        Ok(())
    }
    fn message(&self, _id: MsgId) -> Result<Option<ChatMessage>, StoreError> {
        Ok(None)
    }
    fn conversation_messages(&self, _: &ConversationKey, _: Range<MsgId>, _: usize, _: bool) -> Result<Vec<ChatMessage>, StoreError> {
        Ok(Vec::new())
    }
    fn persists(&self) -> bool {
        false
    }
}

/// An in-memory store (tests, benchmarks). Cloning it models "the same disk after a restart".
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    meta: Meta,
    /// Messages clustered by conversation (the redb layout), and where each id lives.
    messages: BTreeMap<(ConversationKey, MsgId), ChatMessage>,
    message_conv: HashMap<MsgId, ConversationKey>,
    pending: BTreeMap<String, ChatMessage>,
    conversations: BTreeMap<ConversationKey, Conversation>,
    outbox: BTreeMap<ReqId, ClientFrame>,
    /// Number of commits, for tests.
    pub commits: u64,
    /// Number of checkpoints, for tests.
    pub checkpoints: u64,
}

impl MemStore {
    /// Number of accepted messages held, for tests.
    pub fn message_count(&self) -> usize {
        self.messages.len()
    }
}

impl ClientStore for MemStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            meta: self.meta,
            pending: self.pending.values().cloned().collect(),
            conversations: self.conversations.values().cloned().collect(),
            outbox: self.outbox.values().cloned().collect(),
        })
    }

    fn commit(&mut self, b: &StoreBatch) -> Result<(), StoreError> {
        if let Some(m) = b.meta {
            self.meta = m;
        }
        for m in &b.messages {
            let key = m.conversation();
            self.message_conv.insert(m.id, key.clone());
            self.messages.insert((key, m.id), m.clone());
        }
        for (key, id) in &b.messages_delete {
            self.message_conv.remove(id);
            self.messages.remove(&(key.clone(), *id));
        }
        for m in &b.pending_put {
            self.pending.insert(m.client_id.clone(), m.clone());
        }
        for k in &b.pending_delete {
            self.pending.remove(k);
        }
        for c in &b.conversations {
            self.conversations.insert(c.key.clone(), c.clone());
        }
        for f in &b.outbox_put {
            self.outbox.insert(f.req().expect("outbox frames carry a req"), f.clone());
        }
        for r in &b.outbox_delete {
            self.outbox.remove(r);
        }
        self.commits += 1;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.checkpoints += 1;
        Ok(())
    }

    fn message(&self, id: MsgId) -> Result<Option<ChatMessage>, StoreError> {
        Ok(self.message_conv.get(&id).and_then(|k| self.messages.get(&(k.clone(), id))).cloned())
    }

    fn conversation_messages(
        &self,
        key: &ConversationKey,
        ids: Range<MsgId>,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let range = self.messages.range((key.clone(), ids.start)..(key.clone(), ids.end));
        Ok(if newest_first {
            range.rev().take(limit).map(|(_, m)| m.clone()).collect()
        } else {
            range.take(limit).map(|(_, m)| m.clone()).collect()
        })
    }
}

/// The store format this SDK writes. 1: one `messages` table keyed by id (loaded whole at
/// open). 2: messages clustered by conversation, an id index, conversation summaries with
/// `newest_received` and `held`; a format-1 file is migrated at open, a newer one is refused.
pub const STORE_FORMAT: u32 = 2;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Format 1's messages (id -> record); only read to migrate.
const LEGACY_MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// (conversation, id) -> message: a conversation's history is one contiguous key range, so a
/// page newest first or a watermark's range is one ordered scan.
const CONV_MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("conv_messages");
/// id -> conversation: finds a message by its id (acks name messages by id).
const MESSAGE_CONV: TableDefinition<u64, &str> = TableDefinition::new("message_conv");
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
const CONVERSATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("conversations");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// The on-disk store: a redb file, and a small redb journal beside it (`<path>.journal`).
///
/// Crash safety and the cost of a commit: redb reopens a file whose last durable commit
/// recorded its allocator state ("quick repair") at once; any other file that was not closed
/// cleanly is walked whole to rebuild that state (O(file): ~120 ms at 100,000 messages, seconds
/// at 1,000,000). Recording that state costs a commit a write that grows with the file, and a
/// second fsync. So the big file never takes a durable commit but a checkpoint:
///
/// - [`commit`](ClientStore::commit) appends the batch to the journal (durable when the batch
///   is: one fsync of a file that holds only what came since the last checkpoint, so its cost
///   and the walk after a kill stay small), then applies it to the big file lazily (no fsync);
/// - [`checkpoint`](ClientStore::checkpoint) (the engine's timer, once the app is quiet:
///   [`crate::engine::CHECKPOINT_IDLE_MS`]; also after [`JOURNAL_MAX_BYTES`] of batches, and on
///   drop) makes the big file durable with its allocator state, then empties the journal;
/// - [`open`](RedbStore::open) replays what the journal holds into the big file, lazily (batches
///   are whole records: replaying one already applied changes nothing, so the journal can stay
///   until the next checkpoint).
///
/// A kill at any moment thus reopens without walking the big file.
pub struct RedbStore {
    db: Database,
    journal: Database,
    /// Key of the next journal entry (entries are replayed in key order).
    journal_next: u64,
    /// Bytes appended to the journal since the last checkpoint.
    journal_bytes: usize,
    /// The journal holds batches the big file has only lazily: a checkpoint has work to do.
    unchecked: bool,
    /// The open walked the big file (it was not closed cleanly after a durable commit that no
    /// checkpoint followed: a file written by the previous SDK, or redb's own repair).
    repaired: bool,
    /// Journal entries the open replayed (the last session was killed before its checkpoint).
    replayed: usize,
}

/// The journal: sequence number -> a [`StoreBatch`] as JSON.
const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// A checkpoint comes after this many bytes of journal, whatever the engine's timer says: the
/// journal (and the walk of it after a kill) stays small, and a batch larger than this (a
/// backlog) goes to the big file directly, as a checkpoint.
pub const JOURNAL_MAX_BYTES: usize = 1 << 20;

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store records serialize")
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A conversation's key in the message tables: `<chat type>:<id>` (the type is one digit, so
/// the id may hold anything).
fn conv_key(key: &ConversationKey) -> String {
    format!("{}:{}", key.chat_type as u32, key.id)
}

impl RedbStore {
    /// Opens (or creates) the store file at `path`. A format-1 file is migrated in one
    /// transaction (one pass over its messages); a file of a newer format is refused.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let (db, repaired) = open_walk_noted(path)?;
        if repaired {
            log::warn!("client store was not closed cleanly after a durable commit: the open walked the file");
        }
        if !Self::is_current(&db)? {
            Self::create_or_migrate(&db)?;
        }
        let mut journal_path = path.as_os_str().to_owned();
        journal_path.push(".journal");
        let (journal, _) = open_walk_noted(Path::new(&journal_path))?;
        let mut store = RedbStore { db, journal, journal_next: 0, journal_bytes: 0, unchecked: repaired, repaired, replayed: 0 };
        store.replay_journal()?;
        if repaired {
            // Record what the walk rebuilt (it leaves nothing on disk): a second kill finds it.
            // A replayed journal needs no checkpoint now: it stays until the next one, and
            // replaying it again after another kill changes nothing.
            store.checkpoint()?;
        }
        Ok(store)
    }

    /// Creates the tables (a new file) or migrates a format-1 file, in one transaction; refuses a
    /// newer format.
    fn create_or_migrate(db: &Database) -> Result<(), StoreError> {
        let mut tx = db.begin_write()?;
        // A one-off commit: leave the file quick to reopen.
        tx.set_quick_repair(true);
        {
            let mut meta = tx.open_table(META)?;
            let format = match meta.get("format")? {
                Some(v) => std::str::from_utf8(v.value())
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .ok_or_else(|| StoreError::Corrupt("format marker".into()))?,
                None => 1,
            };
            if format > STORE_FORMAT {
                return Err(StoreError::NewerFormat { found: format, supported: STORE_FORMAT });
            }
            meta.insert("format", STORE_FORMAT.to_string().as_bytes())?;
            // Create the tables so that a fresh store loads as empty.
            tx.open_table(CONV_MESSAGES)?;
            tx.open_table(MESSAGE_CONV)?;
            tx.open_table(PENDING)?;
            tx.open_table(CONVERSATIONS)?;
            tx.open_table(OUTBOX)?;
        }
        let legacy = tx.list_tables()?.any(|t| t.name() == LEGACY_MESSAGES.name());
        if legacy {
            migrate_from_format_1(&tx)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Applies every batch the journal holds to the big file, in order, lazily: the journal keeps
    /// them until the next checkpoint makes the big file durable.
    fn replay_journal(&mut self) -> Result<(), StoreError> {
        let mut batches = Vec::new();
        {
            let tx = self.journal.begin_read()?;
            match tx.open_table(JOURNAL) {
                Ok(t) => {
                    for row in t.iter()? {
                        let (k, v) = row?;
                        self.journal_next = k.value() + 1;
                        self.journal_bytes += v.value().len();
                        batches.push(from_json::<StoreBatch>("journal entry", v.value())?);
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if batches.is_empty() {
            return Ok(());
        }
        log::warn!("client store: replaying {} journal entries (the last session was killed before its checkpoint)", batches.len());
        for b in &batches {
            apply_batch(&self.db, b, Durability::None)?;
        }
        self.replayed = batches.len();
        self.unchecked = true;
        Ok(())
    }

    /// Journal entries the open replayed into the file (the previous session was killed between
    /// a write and its checkpoint): for tests and figures.
    pub fn replayed_at_open(&self) -> usize {
        self.replayed
    }

    /// The open walked the whole big file (it was not closed cleanly after a durable commit
    /// that no checkpoint followed): for tests and figures.
    pub fn repaired_at_open(&self) -> bool {
        self.repaired
    }

    /// The journal holds batches the big file has only lazily (a checkpoint has work to do).
    pub fn needs_checkpoint(&self) -> bool {
        self.unchecked
    }
}

/// Opens (or creates) a redb file; true when the open had to walk it (not closed cleanly after
/// a durable commit without quick repair).
fn open_walk_noted(path: &Path) -> Result<(Database, bool), StoreError> {
    let walked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = walked.clone();
    let db = Database::builder().set_repair_callback(move |_| flag.store(true, std::sync::atomic::Ordering::Relaxed)).create(path)?;
    let repaired = walked.load(std::sync::atomic::Ordering::Relaxed);
    Ok((db, repaired))
}

/// Writes one batch to the big file in one transaction, without allocator state.
fn apply_batch(db: &Database, b: &StoreBatch, durability: Durability) -> Result<(), StoreError> {
    let mut tx = db.begin_write()?;
    tx.set_durability(durability)?;
    tx.set_quick_repair(false);
    {
        if let Some(m) = &b.meta {
            tx.open_table(META)?.insert("meta", to_json(m).as_slice())?;
        }
        let mut by_conv = tx.open_table(CONV_MESSAGES)?;
        let mut index = tx.open_table(MESSAGE_CONV)?;
        for m in &b.messages {
            let ck = conv_key(&m.conversation());
            by_conv.insert((ck.as_str(), m.id), to_json(m).as_slice())?;
            index.insert(m.id, ck.as_str())?;
        }
        for (key, id) in &b.messages_delete {
            by_conv.remove((conv_key(key).as_str(), *id))?;
            index.remove(*id)?;
        }
        let mut t = tx.open_table(PENDING)?;
        for m in &b.pending_put {
            t.insert(m.client_id.as_str(), to_json(m).as_slice())?;
        }
        for k in &b.pending_delete {
            t.remove(k.as_str())?;
        }
        let mut t = tx.open_table(CONVERSATIONS)?;
        for c in &b.conversations {
            t.insert(to_json(&c.key).as_slice(), to_json(c).as_slice())?;
        }
        let mut t = tx.open_table(OUTBOX)?;
        for f in &b.outbox_put {
            t.insert(f.req().expect("outbox frames carry a req"), to_json(f).as_slice())?;
        }
        for r in &b.outbox_delete {
            t.remove(*r)?;
        }
    }
    tx.commit()?;
    Ok(())
}

impl Drop for RedbStore {
    /// A clean close leaves the journal empty (redb records both files' allocator state too).
    fn drop(&mut self) {
        if let Err(e) = self.checkpoint() {
            log::error!("client store checkpoint at close failed: {e}");
        }
    }
}

impl RedbStore {
    /// The file is already in this SDK's format, with every table (so no write is needed).
    fn is_current(db: &Database) -> Result<bool, StoreError> {
        let tx = db.begin_read()?;
        let format = match tx.open_table(META) {
            Ok(t) => t.get("format")?.map(|v| v.value() == STORE_FORMAT.to_string().as_bytes()),
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if format != Some(true) {
            return Ok(false);
        }
        let names: Vec<String> = tx.list_tables()?.map(|t| t.name().to_string()).collect();
        let has = |name: &str| names.iter().any(|n| n == name);
        Ok([CONV_MESSAGES.name(), MESSAGE_CONV.name(), PENDING.name(), CONVERSATIONS.name(), OUTBOX.name()].into_iter().all(has)
            && !has(LEGACY_MESSAGES.name()))
    }
}

/// Format 1 -> 2: moves every message into the conversation-clustered table and its id index,
/// and fills the conversation summaries' `newest_received` and `held`.
fn migrate_from_format_1(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut convs: HashMap<ConversationKey, Conversation> = HashMap::new();
    for row in tx.open_table(CONVERSATIONS)?.iter()? {
        let c: Conversation = from_json("conversation", row?.1.value())?;
        convs.insert(c.key.clone(), c);
    }
    for c in convs.values_mut() {
        c.held = 0;
    }
    {
        let legacy = tx.open_table(LEGACY_MESSAGES)?;
        let mut by_conv = tx.open_table(CONV_MESSAGES)?;
        let mut index = tx.open_table(MESSAGE_CONV)?;
        for row in legacy.iter()? {
            let row = row?;
            let m: ChatMessage = from_json("message", row.1.value())?;
            let key = m.conversation();
            let ck = conv_key(&key);
            by_conv.insert((ck.as_str(), m.id), row.1.value())?;
            index.insert(m.id, ck.as_str())?;
            convs.entry(key.clone()).or_insert_with(|| Conversation::new(key)).note_held(&m);
        }
    }
    tx.delete_table(LEGACY_MESSAGES)?;
    let mut t = tx.open_table(CONVERSATIONS)?;
    for c in convs.values() {
        t.insert(to_json(&c.key).as_slice(), to_json(c).as_slice())?;
    }
    log::info!("client store migrated to format {STORE_FORMAT} ({} conversations)", convs.len());
    Ok(())
}

impl ClientStore for RedbStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let tx = self.db.begin_read()?;
        let mut s = Snapshot::default();
        if let Some(v) = tx.open_table(META)?.get("meta")? {
            s.meta = from_json("meta", v.value())?;
        }
        for row in tx.open_table(PENDING)?.iter()? {
            s.pending.push(from_json("pending message", row?.1.value())?);
        }
        for row in tx.open_table(CONVERSATIONS)?.iter()? {
            s.conversations.push(from_json("conversation", row?.1.value())?);
        }
        for row in tx.open_table(OUTBOX)?.iter()? {
            s.outbox.push(from_json("outbox entry", row?.1.value())?);
        }
        Ok(s)
    }

    fn commit(&mut self, b: &StoreBatch) -> Result<(), StoreError> {
        if b.is_empty() {
            return Ok(());
        }
        let entry = to_json(b);
        if entry.len() >= JOURNAL_MAX_BYTES {
            // A large batch (a backlog) goes to the big file directly, as a checkpoint.
            apply_batch(&self.db, b, Durability::None)?;
            self.unchecked = true;
            return self.checkpoint();
        }
        // The journal first: once it is on disk (a durable batch), the batch survives a kill.
        let mut tx = self.journal.begin_write()?;
        tx.set_durability(if b.durable { Durability::Immediate } else { Durability::None })?;
        tx.set_quick_repair(false);
        tx.open_table(JOURNAL)?.insert(self.journal_next, entry.as_slice())?;
        tx.commit()?;
        self.journal_next += 1;
        self.journal_bytes += entry.len();
        self.unchecked = true;
        // Then the big file, lazily: no fsync, no allocator state.
        apply_batch(&self.db, b, Durability::None)?;
        if self.journal_bytes >= JOURNAL_MAX_BYTES {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Makes the big file durable with its allocator state (an empty commit with quick repair:
    /// two fsyncs; the lazy commits since the last one become durable with it), then empties the
    /// journal (one more fsync). Nothing to do when nothing was written since the last one.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        if !self.unchecked {
            return Ok(());
        }
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.set_quick_repair(true);
        tx.commit()?;
        // Emptied durably, so that the journal's pages are free again (redb reuses a page a lazy
        // commit freed only after a durable one), with its allocator state: after a kill while
        // idle, neither file is walked. Entries a kill leaves before this are in the big file
        // already, and replaying them changes nothing.
        let mut tx = self.journal.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.set_quick_repair(true);
        tx.open_table(JOURNAL)?.retain(|_, _| false)?;
        tx.commit()?;
        self.journal_bytes = 0;
        self.unchecked = false;
        Ok(())
    }

    fn message(&self, id: MsgId) -> Result<Option<ChatMessage>, StoreError> {
        let tx = self.db.begin_read()?;
        let Some(ck) = tx.open_table(MESSAGE_CONV)?.get(id)? else { return Ok(None) };
        let ck = ck.value().to_string();
        match tx.open_table(CONV_MESSAGES)?.get((ck.as_str(), id))? {
            Some(v) => Ok(Some(from_json("message", v.value())?)),
            None => Err(StoreError::Corrupt(format!("message {id} is indexed but not stored"))),
        }
    }

    fn conversation_messages(
        &self,
        key: &ConversationKey,
        ids: Range<MsgId>,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        if ids.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CONV_MESSAGES)?;
        let ck = conv_key(key);
        let range = t.range((ck.as_str(), ids.start)..(ck.as_str(), ids.end))?;
        let rows: Box<dyn Iterator<Item = _>> = if newest_first { Box::new(range.rev().take(limit)) } else { Box::new(range.take(limit)) };
        let mut out = Vec::new();
        for row in rows {
            out.push(from_json::<ChatMessage>("message", row?.1.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_is_stored_under_its_former_field_names() {
        // The fields took the rules' watermark words; the records already on disk keep loading.
        let stored = r#"{"key":{"chat_type":"Chat","id":"bob"},"local_unread":1,"remote_unread":2,"read_up_to":3,
            "peer_read_up_to":4,"ack_sent_up_to":5,"latest":6}"#;
        let c: Conversation = serde_json::from_str(stored).unwrap();
        assert_eq!((c.read_up_to, c.peer_read_up_to, c.receipt_up_to, c.newest), (3, 4, 5, 6));
        let written: serde_json::Value = serde_json::from_slice(&to_json(&c)).unwrap();
        let mut expected: serde_json::Value = serde_json::from_str(stored).unwrap();
        // Format 2 adds two fields (0 until the migration fills them).
        expected["newest_received"] = 0.into();
        expected["held"] = 0.into();
        assert_eq!(written, expected);
    }
}
