//! Storage behind a narrow trait: load everything at start, commit a batch of operations
//! atomically and durably. [`RedbStore`] (one redb file in a data directory) is the default;
//! [`MemStore`] keeps nothing (tests, demos). Another backend (e.g. PostgreSQL) implements
//! [`ServerStore`] the same way.

use std::path::{Path, PathBuf};

use receipt_core::protocol::{SeqEvent, ServerEvent};
use receipt_core::{ChatType, ConversationKey, GroupReadAck, WireMessage};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::core::StoreOp;
use crate::state::{ConvState, Counters, Group, HashMap, MessageRecord, State};

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
/// (user, chat type, conversation id, msg id): messages above the read watermark read one by one.
const READS: TableDefinition<(&str, u8, &str, u64), ()> = TableDefinition::new("conversation_reads");

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
            txn.open_table(READS).map_err(se)?;
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
        // Read sets kept inside conversation records by older versions: moved to READS below.
        let mut legacy = Vec::new();
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
            if !conv.read_set.is_empty() {
                legacy.push((user.to_string(), t, id.to_string(), conv.read_set.clone()));
            }
            st.convs.entry(user.to_string()).or_default().insert(ConversationKey::new(chat_type, id), conv);
        }
        for item in txn.open_table(READS).map_err(se)?.iter().map_err(se)? {
            let (k, _) = item.map_err(se)?;
            let (user, t, id, msg_id) = k.value();
            let chat_type = ChatType::from_u32(t as u32).ok_or_else(|| StoreError(format!("corrupt chat type {t}")))?;
            let conv = st.convs.entry(user.to_string()).or_default().entry(ConversationKey::new(chat_type, id)).or_default();
            if msg_id > conv.read_wm {
                conv.read_set.insert(msg_id);
            }
        }
        for item in txn.open_table(GROUPS).map_err(se)?.iter().map_err(se)? {
            let (_, v) = item.map_err(se)?;
            let g: Group = json("group", v.value())?;
            st.groups.insert(g.id.clone(), g);
        }
        drop(txn);
        if !legacy.is_empty() {
            let w = self.db.begin_write().map_err(se)?;
            {
                let mut reads = w.open_table(READS).map_err(se)?;
                for (user, t, id, set) in &legacy {
                    for m in set {
                        reads.insert((user.as_str(), *t, id.as_str(), *m), ()).map_err(se)?;
                    }
                }
            }
            w.commit().map_err(se)?;
        }
        st.rebuild_indexes();
        Ok(st)
    }

    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        // A batch often rewrites the same conversation record, message flags or counters several
        // times (one per message of a busy pair): only the last write of each (they are whole
        // records) needs to reach the disk.
        let mut last_conv: HashMap<(&str, &ConversationKey), usize> = HashMap::default();
        let mut last_flags: HashMap<u64, usize> = HashMap::default();
        let mut last_counters = None;
        for (i, op) in ops.iter().enumerate() {
            match op {
                StoreOp::PutConversation { user, key, .. } => {
                    last_conv.insert((user.as_str(), key), i);
                }
                StoreOp::PutCounters(_) => last_counters = Some(i),
                StoreOp::PutMessageFlags { id, .. } => {
                    last_flags.insert(*id, i);
                }
                _ => {}
            }
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
            let mut reads = txn.open_table(READS).map_err(se)?;
            for (i, op) in ops.iter().enumerate() {
                match op {
                    StoreOp::PutCounters(_) if last_counters != Some(i) => {}
                    StoreOp::PutMessageFlags { id, .. } if last_flags.get(id) != Some(&i) => {}
                    StoreOp::PutConversation { user, key, .. } if last_conv.get(&(user.as_str(), key)) != Some(&i) => {}
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
                    StoreOp::AddRead { user, key, msg_id } => {
                        reads.insert((user.as_str(), chat_type_code(key.chat_type), key.id.as_str(), *msg_id), ()).map_err(se)?;
                    }
                    StoreOp::TrimReads { user, key, up_to } => {
                        let (u, t, c) = (user.as_str(), chat_type_code(key.chat_type), key.id.as_str());
                        reads.retain_in((u, t, c, 0)..=(u, t, c, *up_to), |_, _| false).map_err(se)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_sets_are_stored_one_row_per_read_and_trimmed_by_the_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let key = ConversationKey::new(ChatType::Chat, "alice");
        let conv = |unread| ConvState { unread, newest: 9, newest_in: 9, ..Default::default() };
        {
            let mut s = RedbStore::open(dir.path()).unwrap();
            let mut ops = vec![StoreOp::PutConversation { user: "bob".into(), key: key.clone(), state: conv(5) }];
            for id in [3, 5, 7] {
                ops.push(StoreOp::AddRead { user: "bob".into(), key: key.clone(), msg_id: id });
            }
            // Only the last record of a conversation in a batch is written; all three are equal here
            // apart from the count.
            ops.push(StoreOp::PutConversation { user: "bob".into(), key: key.clone(), state: conv(2) });
            s.commit(&ops).unwrap();
            let st = s.load().unwrap();
            let c = &st.convs["bob"][&key];
            assert_eq!((c.unread, c.read_set.iter().copied().collect::<Vec<_>>()), (2, vec![3, 5, 7]));
            let mut moved = conv(1);
            moved.read_wm = 5;
            s.commit(&[
                StoreOp::PutConversation { user: "bob".into(), key: key.clone(), state: moved },
                StoreOp::TrimReads { user: "bob".into(), key: key.clone(), up_to: 5 },
            ])
            .unwrap();
        }
        let st = RedbStore::open(dir.path()).unwrap().load().unwrap();
        let c = &st.convs["bob"][&key];
        assert_eq!((c.unread, c.read_wm, c.read_set.iter().copied().collect::<Vec<_>>()), (1, 5, vec![7]));
    }
}
