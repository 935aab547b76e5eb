//! The client's persistent state: messages with their receipt flags, conversations (unread
//! counts and read watermarks), the outbox of requests not yet confirmed, and the sync cursor.
//!
//! The engine keeps its working state in memory and, at the end of every input it handles,
//! hands the store one [`StoreBatch`] with everything that changed: one transaction per input.
//! [`RedbStore`] keeps it on disk (redb: pure Rust, copy-on-write B-trees, crash-safe commits);
//! [`MemStore`] keeps it in memory for tests and benchmarks.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
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
}

impl Conversation {
    pub fn new(key: ConversationKey) -> Self {
        Conversation { key, local_unread: 0, remote_unread: 0, read_up_to: 0, peer_read_up_to: 0, receipt_up_to: 0, newest: 0 }
    }
    /// The unread count users see.
    pub fn unread(&self) -> u32 {
        self.local_unread.saturating_add(self.remote_unread)
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

/// Everything the store holds, as loaded at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: Meta,
    /// Messages the server accepted (id > 0).
    pub messages: Vec<ChatMessage>,
    /// Messages this device sent that the server has not accepted yet (id == 0).
    pub pending: Vec<ChatMessage>,
    pub conversations: Vec<Conversation>,
    /// Requests not yet confirmed by the server, in request order.
    pub outbox: Vec<ClientFrame>,
}

/// The changes of one handled input, written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct StoreBatch {
    pub meta: Option<Meta>,
    pub messages: Vec<ChatMessage>,
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
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    fn commit(&mut self, batch: &StoreBatch) -> Result<(), StoreError>;
    /// False for a store that keeps nothing ([`NullStore`]): the engine then does not build
    /// batches (no copies of changed records) and never calls `commit`.
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
    fn persists(&self) -> bool {
        false
    }
}

/// An in-memory store (tests, benchmarks). Cloning it models "the same disk after a restart".
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    meta: Meta,
    messages: BTreeMap<MsgId, ChatMessage>,
    pending: BTreeMap<String, ChatMessage>,
    conversations: BTreeMap<ConversationKey, Conversation>,
    outbox: BTreeMap<ReqId, ClientFrame>,
    /// Number of commits, for tests.
    pub commits: u64,
}

impl ClientStore for MemStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            meta: self.meta,
            messages: self.messages.values().cloned().collect(),
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
            self.messages.insert(m.id, m.clone());
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
}

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
const CONVERSATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("conversations");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// The on-disk store: one redb file.
pub struct RedbStore {
    db: Database,
}

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

impl RedbStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        // Create the tables so that a fresh store loads as empty.
        let tx = db.begin_write()?;
        {
            tx.open_table(META)?;
            tx.open_table(MESSAGES)?;
            tx.open_table(PENDING)?;
            tx.open_table(CONVERSATIONS)?;
            tx.open_table(OUTBOX)?;
        }
        tx.commit()?;
        Ok(RedbStore { db })
    }
}

impl ClientStore for RedbStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let tx = self.db.begin_read()?;
        let mut s = Snapshot::default();
        if let Some(v) = tx.open_table(META)?.get("meta")? {
            s.meta = from_json("meta", v.value())?;
        }
        for row in tx.open_table(MESSAGES)?.iter()? {
            s.messages.push(from_json("message", row?.1.value())?);
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
        let mut tx = self.db.begin_write()?;
        tx.set_durability(if b.durable { Durability::Immediate } else { Durability::None })?;
        {
            if let Some(m) = &b.meta {
                tx.open_table(META)?.insert("meta", to_json(m).as_slice())?;
            }
            let mut t = tx.open_table(MESSAGES)?;
            for m in &b.messages {
                t.insert(m.id, to_json(m).as_slice())?;
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
        assert_eq!(written, serde_json::from_str::<serde_json::Value>(stored).unwrap());
    }
}
