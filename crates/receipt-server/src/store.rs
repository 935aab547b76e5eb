//! Storage behind a narrow trait: load everything at start, commit a batch of operations
//! atomically and durably. [`RedbStore`] (one redb file in a data directory) is the default;
//! [`MemStore`] keeps nothing (tests, demos). Another backend (e.g. PostgreSQL) implements
//! [`ServerStore`] the same way.

use std::path::{Path, PathBuf};

use receipt_core::protocol::{SeqEvent, ServerEvent};
use receipt_core::{ChatType, ConversationKey, GroupReadAck, WireMessage};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::core::StoreOp;
use crate::state::{ConvState, Counters, Group, MessageRecord, State};

/// A storage failure. The server stops rather than answer `ok` for something not stored.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

fn se(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// Where the server keeps its state.
pub trait ServerStore: Send {
    /// Everything stored, as the core's state.
    fn load(&mut self) -> Result<State, StoreError>;
    /// Applies `ops` in order, atomically, and makes them durable before returning.
    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError>;
}

/// Stores nothing: a restart starts empty.
#[derive(Debug, Default)]
pub struct MemStore {
    /// How many commits were made (for tests).
    pub commits: usize,
}

impl ServerStore for MemStore {
    fn load(&mut self) -> Result<State, StoreError> {
        Ok(State::default())
    }
    fn commit(&mut self, _ops: &[StoreOp]) -> Result<(), StoreError> {
        self.commits += 1;
        Ok(())
    }
}

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// bit 0: delivered, bit 1: read acked.
const FLAGS: TableDefinition<u64, u8> = TableDefinition::new("message_flags");
/// (msg id, ack id) -> ack: an ordered index, so a page of acks is a range scan.
const ACKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("group_acks");
/// (user, seq) -> event.
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
/// (user, chat type, conversation id) -> read state.
const CONVS: TableDefinition<(&str, u8, &str), &[u8]> = TableDefinition::new("conversations");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");

/// The database file inside a data directory.
pub const DB_FILE: &str = "receipts.redb";

/// The default store: one redb file in a data directory. Every commit is fsynced.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.path).finish()
    }
}

impl RedbStore {
    /// Opens (or creates) the store in `data_dir`. Fails if another process has it open.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = data_dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(se)?;
        {
            txn.open_table(META).map_err(se)?;
            txn.open_table(MESSAGES).map_err(se)?;
            txn.open_table(FLAGS).map_err(se)?;
            txn.open_table(ACKS).map_err(se)?;
            txn.open_table(EVENTS).map_err(se)?;
            txn.open_table(CONVS).map_err(se)?;
            txn.open_table(GROUPS).map_err(se)?;
        }
        txn.commit().map_err(se)?;
        Ok(RedbStore { db, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError(format!("corrupt {what}: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("stored types serialize")
}

fn chat_type_code(t: ChatType) -> u8 {
    t as u32 as u8
}

impl ServerStore for RedbStore {
    fn load(&mut self) -> Result<State, StoreError> {
        let txn = self.db.begin_read().map_err(se)?;
        let mut st = State::default();
        if let Some(v) = txn.open_table(META).map_err(se)?.get("counters").map_err(se)? {
            st.counters = json::<Counters>("counters", v.value())?;
        }
        for item in txn.open_table(MESSAGES).map_err(se)?.iter().map_err(se)? {
            let (k, v) = item.map_err(se)?;
            let msg: WireMessage = json("message", v.value())?;
            st.messages.insert(k.value(), MessageRecord::new(msg));
        }
        for item in txn.open_table(FLAGS).map_err(se)?.iter().map_err(se)? {
            let (k, v) = item.map_err(se)?;
            if let Some(rec) = st.messages.get_mut(&k.value()) {
                rec.delivered = v.value() & 1 != 0;
                rec.read_acked = v.value() & 2 != 0;
            }
        }
        for item in txn.open_table(ACKS).map_err(se)?.iter().map_err(se)? {
            let (k, v) = item.map_err(se)?;
            let ack: GroupReadAck = json("group ack", v.value())?;
            if let Some(rec) = st.messages.get_mut(&k.value().0) {
                rec.add_ack(ack);
            }
        }
        for item in txn.open_table(EVENTS).map_err(se)?.iter().map_err(se)? {
            let (k, v) = item.map_err(se)?;
            let (user, seq) = k.value();
            let event: ServerEvent = json("event", v.value())?;
            st.logs.entry(user.to_string()).or_default().push(SeqEvent { seq, event });
        }
        for item in txn.open_table(CONVS).map_err(se)?.iter().map_err(se)? {
            let (k, v) = item.map_err(se)?;
            let (user, t, id) = k.value();
            let chat_type = ChatType::from_u32(t as u32).ok_or_else(|| StoreError(format!("corrupt chat type {t}")))?;
            let conv: ConvState = json("conversation", v.value())?;
            st.convs.entry(user.to_string()).or_default().insert(ConversationKey::new(chat_type, id), conv);
        }
        for item in txn.open_table(GROUPS).map_err(se)?.iter().map_err(se)? {
            let (_, v) = item.map_err(se)?;
            let g: Group = json("group", v.value())?;
            st.groups.insert(g.id.clone(), g);
        }
        st.rebuild_indexes();
        Ok(st)
    }

    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(se)?;
        {
            let mut meta = txn.open_table(META).map_err(se)?;
            let mut messages = txn.open_table(MESSAGES).map_err(se)?;
            let mut flags = txn.open_table(FLAGS).map_err(se)?;
            let mut acks = txn.open_table(ACKS).map_err(se)?;
            let mut events = txn.open_table(EVENTS).map_err(se)?;
            let mut convs = txn.open_table(CONVS).map_err(se)?;
            let mut groups = txn.open_table(GROUPS).map_err(se)?;
            for op in ops {
                match op {
                    StoreOp::PutCounters(c) => {
                        meta.insert("counters", to_json(c).as_slice()).map_err(se)?;
                    }
                    StoreOp::PutMessage(m) => {
                        messages.insert(m.id, to_json(m).as_slice()).map_err(se)?;
                    }
                    StoreOp::PutMessageFlags { id, delivered, read_acked } => {
                        let v = u8::from(*delivered) | (u8::from(*read_acked) << 1);
                        flags.insert(*id, v).map_err(se)?;
                    }
                    StoreOp::DeleteMessage(id) => {
                        messages.remove(*id).map_err(se)?;
                        flags.remove(*id).map_err(se)?;
                        acks.retain_in((*id, 0)..=(*id, u64::MAX), |_, _| false).map_err(se)?;
                    }
                    StoreOp::PutGroupAck(a) => {
                        acks.insert((a.msg_id, a.ack_id), to_json(a).as_slice()).map_err(se)?;
                    }
                    StoreOp::AppendEvent { user, event } => {
                        events.insert((user.as_str(), event.seq), to_json(&event.event).as_slice()).map_err(se)?;
                    }
                    StoreOp::PutConversation { user, key, state } => {
                        let k = (user.as_str(), chat_type_code(key.chat_type), key.id.as_str());
                        convs.insert(k, to_json(state).as_slice()).map_err(se)?;
                    }
                    StoreOp::PutGroup(g) => {
                        groups.insert(g.id.as_str(), to_json(g).as_slice()).map_err(se)?;
                    }
                }
            }
        }
        txn.commit().map_err(se)?;
        Ok(())
    }
}
