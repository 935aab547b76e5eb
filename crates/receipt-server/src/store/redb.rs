//! The default store: one redb file in a data directory, every commit fsynced.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ::redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use receipt_core::protocol::SeqEvent;
use receipt_core::{ChatType, ConversationKey, GroupAckKind, GroupReadAck, MsgId, WireMessage};

use super::records::{
    chat_type_code, conv_record, decode, decode_conv, decode_events, encode_events, encode_record, finish_logs, last_seq, resolver,
    Resolver, TrimPrefix,
};
use super::{store_err, LogRead, LogSweep, ServerStore, StoreError, StoreRead};
use crate::core::StoreOp;
use crate::state::{ConvId, ConvState, Counters, DeviceCursor, Group, HashMap, MessageRecord, State};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// bit 0: delivered, bit 1: read acked.
const FLAGS: TableDefinition<u64, u8> = TableDefinition::new("message_flags");
/// (msg id, ack id) -> ack: an ordered index, so a page of acks is a range scan.
const ACKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("group_acks");
/// (msg id, acker) -> (): who acked a group message, by key (the "already acked" check of a
/// message not in the core's cache). Dropped with the message.
const ACKERS: TableDefinition<(u64, &str), ()> = TableDefinition::new("group_ackers");
/// The group delivery acks and who sent them, keyed like `group_acks` / `group_ackers` (format 4).
const DELIVERY_ACKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("group_delivery_acks");
const DELIVERY_ACKERS: TableDefinition<(u64, &str), ()> = TableDefinition::new("group_delivery_ackers");

/// The tables of the group acks of `kind`: (acks, ackers).
#[allow(clippy::type_complexity)]
fn ack_tables(
    kind: GroupAckKind,
) -> (TableDefinition<'static, (u64, u64), &'static [u8]>, TableDefinition<'static, (u64, &'static str), ()>) {
    match kind {
        GroupAckKind::Read => (ACKS, ACKERS),
        GroupAckKind::Delivery => (DELIVERY_ACKS, DELIVERY_ACKERS),
    }
}

/// (sender, client id) -> msg id: idempotent sends of a message not in the core's cache.
/// Dropped with the message.
const CLIENT_IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("client_ids");
/// (user, seq) -> event.
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
/// (user, chat type, conversation id) -> read state.
const CONVS: TableDefinition<(&str, u8, &str), &[u8]> = TableDefinition::new("conversations");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
/// (user, chat type, conversation id, msg id): messages above the read watermark read one by one.
const READS: TableDefinition<(&str, u8, &str, u64), ()> = TableDefinition::new("conversation_reads");
/// group id -> members added after its creation, with the newest message id when each joined
/// (`Group::joined_after`); no row: every member is a member since the creation.
const MEMBER_SINCE: TableDefinition<&str, &[u8]> = TableDefinition::new("member_since");
/// user -> seq of the last event trimmed from the user's log (past retention).
const LOG_BASE: TableDefinition<&str, u64> = TableDefinition::new("log_base");

/// redb's page cache by default: its own default (1 GiB) is most of a server's memory once the
/// file is larger than it (`ServerConfig::store_cache_bytes`).
pub const DEFAULT_STORE_CACHE_BYTES: usize = 128 << 20;
/// (user, device) -> (cursor seq, last seen ms): the devices the server remembers per user; the
/// user's log is trimmed below the lowest cursor.
const CURSORS: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("device_cursors");
/// (kind, id, id, msg id): the retained messages of each conversation (kind 0: a 1:1 pair, the
/// two user ids in order; 1: a group or room, its id and ""). Written with the message, dropped
/// with it: what a full state resync walks (`ConvId`).
const CONV_MESSAGES: TableDefinition<(u8, &str, &str, u64), ()> = TableDefinition::new("conv_messages");

/// The database file inside a data directory.
pub const DB_FILE: &str = "receipts.redb";

/// The store format this server writes and the newest it reads, kept in `meta` under
/// [`FORMAT_KEY`] (4 bytes, little-endian). Bump it when a change writes rows an older server
/// would misread; an older server that knows this key then refuses the store by name instead of
/// failing on a row it cannot decode. 2: `Message` events hold the message id (format 1 rows,
/// which hold the whole message, still load). Stores written before the key existed have none:
/// they are format 1 or 2 and are stamped at open.
/// 3: the key indexes `group_ackers`, `client_ids` and `conv_messages` are kept with every
/// commit (the hot-state cache reads them on a miss, a resync walks `conv_messages`; derived
/// once at open from a format 1 or 2 store, O(messages)), and `device_cursors`: an older server
/// writing to the store would leave them stale.
/// 4: group delivery acks (`group_delivery_acks`, `group_delivery_ackers`) and their
/// `GroupDelivered` log events, and a large group's coalesced `GroupAckCount` log events (two
/// appended event variants an older server cannot decode). A format 3 store has none: it opens
/// as it is (the two tables are created empty) and is stamped 4.
pub const STORE_FORMAT: u32 = 4;
const FORMAT_KEY: &str = "format";

/// The default store: one redb file in a data directory. Every commit is fsynced.
///
/// The database is shared with the core thread's reader ([`ServerStore::reader`]): redb takes
/// readers beside the one writer. Compaction needs it alone (the write lock); everything else
/// takes the read lock.
pub struct RedbServerStore {
    db: Arc<RwLock<Database>>,
    path: PathBuf,
}

impl std::fmt::Debug for RedbServerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbServerStore").field("path", &self.path).finish()
    }
}

fn db_of(db: &RwLock<Database>) -> std::sync::RwLockReadGuard<'_, Database> {
    // A panic while holding the lock leaves the database itself consistent (redb is transactional).
    db.read().unwrap_or_else(|e| e.into_inner())
}

impl RedbServerStore {
    /// Opens (or creates) the store in `data_dir`. Fails if another process has it open.
    ///
    /// A store written by an older version gets its key indexes (`group_ackers`, `client_ids`)
    /// derived from its messages and acks once, here (one pass over both tables).
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_cache(data_dir, DEFAULT_STORE_CACHE_BYTES)
    }

    /// [`open`](Self::open) with redb's page cache (read cache and write buffer) of
    /// `cache_bytes` (`ServerConfig::store_cache_bytes`).
    pub fn open_with_cache(data_dir: impl AsRef<Path>, cache_bytes: usize) -> Result<Self, StoreError> {
        let dir = data_dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let db = ::redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(store_err)?;
        {
            let mut meta = txn.open_table(META).map_err(store_err)?;
            let messages = txn.open_table(MESSAGES).map_err(store_err)?;
            txn.open_table(FLAGS).map_err(store_err)?;
            let acks = txn.open_table(ACKS).map_err(store_err)?;
            let mut ackers = txn.open_table(ACKERS).map_err(store_err)?;
            txn.open_table(DELIVERY_ACKS).map_err(store_err)?;
            txn.open_table(DELIVERY_ACKERS).map_err(store_err)?;
            let mut client_ids = txn.open_table(CLIENT_IDS).map_err(store_err)?;
            txn.open_table(EVENTS).map_err(store_err)?;
            let convs = txn.open_table(CONVS).map_err(store_err)?;
            txn.open_table(GROUPS).map_err(store_err)?;
            let mut reads = txn.open_table(READS).map_err(store_err)?;
            txn.open_table(MEMBER_SINCE).map_err(store_err)?;
            txn.open_table(LOG_BASE).map_err(store_err)?;
            txn.open_table(CURSORS).map_err(store_err)?;
            let mut conv_messages = txn.open_table(CONV_MESSAGES).map_err(store_err)?;
            let stored = meta.get(FORMAT_KEY).map_err(store_err)?.map(|v| format_of(v.value()));
            let stored = match stored {
                Some(Ok(f)) if f > STORE_FORMAT => {
                    return Err(StoreError(format!(
                        "{} was written by a newer server (store format {f}; this server reads formats up to {STORE_FORMAT}): run that server's version or newer, or restore a backup",
                        path.display()
                    )))
                }
                Some(Err(e)) => return Err(StoreError(format!("{}: {e}", path.display()))),
                Some(Ok(f)) => Some(f),
                None => None,
            };
            let older = stored.is_none_or(|f| f < 3);
            // Format 3: the key indexes, derived once from an older store's messages and acks.
            // An index that is empty while what it indexes is not (a format 3 store written by
            // a build that kept only some of them: the cache's and the cursors' branches were
            // built apart) is derived too: each message has its `client_ids` and
            // `conv_messages` rows and each ack its `group_ackers` row, so that cannot be a
            // store this build wrote. O(1) to check.
            let has_messages = messages.first().map_err(store_err)?.is_some();
            let derive_client_ids = older || (has_messages && client_ids.first().map_err(store_err)?.is_none());
            let derive_conv_messages = older || (has_messages && conv_messages.first().map_err(store_err)?.is_none());
            let derive_ackers = older || (acks.first().map_err(store_err)?.is_some() && ackers.first().map_err(store_err)?.is_none());
            if derive_client_ids || derive_conv_messages {
                for item in messages.iter().map_err(store_err)? {
                    let (k, v) = item.map_err(store_err)?;
                    let msg: WireMessage = decode("message", v.value())?;
                    if derive_client_ids {
                        client_ids.insert((msg.from.as_str(), msg.client_id.as_str()), k.value()).map_err(store_err)?;
                    }
                    if derive_conv_messages {
                        let conv = ConvId::of(&msg);
                        let (kind, a, b) = conv.key_parts();
                        conv_messages.insert((kind, a, b, msg.id), ()).map_err(store_err)?;
                    }
                }
            }
            if derive_ackers {
                for item in acks.iter().map_err(store_err)? {
                    let (k, v) = item.map_err(store_err)?;
                    let ack: GroupReadAck = decode("group ack", v.value())?;
                    ackers.insert((k.value().0, ack.from.as_str()), ()).map_err(store_err)?;
                }
            }
            if older {
                // Read sets kept inside conversation records by older versions: to READS.
                for item in convs.iter().map_err(store_err)? {
                    let (k, v) = item.map_err(store_err)?;
                    let (user, t, id) = k.value();
                    for m in decode_conv(v.value())?.read.singles {
                        reads.insert((user, t, id, m), ()).map_err(store_err)?;
                    }
                }
            }
            // Older (or unstamped) stores load as they are; from now on they are this format.
            if stored != Some(STORE_FORMAT) {
                meta.insert(FORMAT_KEY, STORE_FORMAT.to_le_bytes().as_slice()).map_err(store_err)?;
            }
        }
        txn.commit().map_err(store_err)?;
        Ok(RedbServerStore { db: Arc::new(RwLock::new(db)), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of keys and values stored in every table (redb's `stored_bytes`: without page
    /// overhead and free space): what the data model costs, independent of file growth steps.
    pub fn stored_bytes(&self) -> Result<u64, StoreError> {
        let db = db_of(&self.db);
        let txn = db.begin_write().map_err(store_err)?;
        let stats = txn.stats().map_err(store_err)?;
        txn.abort().map_err(store_err)?;
        Ok(stats.stored_bytes())
    }

    /// Counters, groups (with join marks), log bases and every log, resolving a log's message
    /// references with `resolve`.
    fn load_common(
        txn: &ReadTransaction,
        state: &mut State,
        resolve: &mut dyn FnMut(MsgId) -> Option<Arc<WireMessage>>,
    ) -> Result<(), StoreError> {
        if let Some(v) = txn.open_table(META).map_err(store_err)?.get("counters").map_err(store_err)? {
            state.counters = decode::<Counters>("counters", v.value())?;
        }
        for item in txn.open_table(LOG_BASE).map_err(store_err)?.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            state.log_base.insert(k.value().to_string(), v.value());
            state.trimmed.insert(k.value().to_string(), v.value());
        }
        Self::load_cursors(txn, state)?;
        // Each log's last stored seq: its head, even when its last events were dropped at load.
        let mut stored_heads: HashMap<String, u64> = HashMap::default();
        // The first event loaded under each summary, for the loading only (see `decode_events`).
        let mut loaded = HashMap::default();
        for item in txn.open_table(EVENTS).map_err(store_err)?.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let (user, seq) = k.value();
            let last = decode_events(user, seq, v.value(), resolve, &mut loaded, state.logs.entry(user.to_string()).or_default())?;
            stored_heads.insert(user.to_string(), last);
        }
        finish_logs(state, stored_heads);
        Self::load_groups(txn, state)
    }

    /// The remembered devices' cursors.
    fn load_cursors(txn: &ReadTransaction, state: &mut State) -> Result<(), StoreError> {
        for item in txn.open_table(CURSORS).map_err(store_err)?.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let ((user, device), (seq, seen)) = (k.value(), v.value());
            state.cursors.entry(user.to_string()).or_default().insert(device.to_string(), DeviceCursor { seq, seen });
        }
        Ok(())
    }

    /// Groups with their members' join marks.
    fn load_groups(txn: &ReadTransaction, state: &mut State) -> Result<(), StoreError> {
        for item in txn.open_table(GROUPS).map_err(store_err)?.iter().map_err(store_err)? {
            let (_, v) = item.map_err(store_err)?;
            let g: Group = decode("group", v.value())?;
            state.groups.insert(g.id.clone(), g);
        }
        for item in txn.open_table(MEMBER_SINCE).map_err(store_err)?.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            if let Some(g) = state.groups.get_mut(k.value()) {
                g.joined_after = decode("group members' join marks", v.value())?;
            }
        }
        Ok(())
    }
}

/// The store format recorded in `meta`.
fn format_of(v: &[u8]) -> Result<u32, String> {
    let b: [u8; 4] = v.try_into().map_err(|_| format!("store format marker of {} bytes, expected 4", v.len()))?;
    Ok(u32::from_le_bytes(b))
}

impl ServerStore for RedbServerStore {
    fn compact(&mut self) -> Result<(), StoreError> {
        // Alone with the database: the core thread's reads wait meanwhile (so do commits).
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        // Bounded: each round moves pages towards the start; it reports when nothing moved. The
        // core's reader holds a read transaction while it applies a batch (a few ms): wait.
        let (mut rounds, mut waits) = (0, 0);
        while rounds < 16 {
            match db.compact() {
                Ok(true) => rounds += 1,
                Ok(false) => break,
                Err(::redb::CompactionError::TransactionInProgress) if waits < 1000 => {
                    waits += 1;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(e) => return Err(store_err(e)),
            }
        }
        Ok(())
    }

    fn reader(&self) -> Option<Box<dyn StoreRead>> {
        Some(Box::new(RedbReader { db: self.db.clone(), txn: Default::default(), client_ids: Default::default() }))
    }

    fn load_hot(&mut self) -> Result<State, StoreError> {
        let db = db_of(&self.db);
        let txn = db.begin_read().map_err(store_err)?;
        let mut state = State::default();
        if let Some(v) = txn.open_table(META).map_err(store_err)?.get("counters").map_err(store_err)? {
            state.counters = decode::<Counters>("counters", v.value())?;
        }
        Self::load_groups(&txn, &mut state)?;
        // Resident: bounded by `max_remembered_devices` per user (the trim below them needs
        // the lowest at every report).
        Self::load_cursors(&txn, &mut state)?;
        Ok(state)
    }

    fn load(&mut self) -> Result<State, StoreError> {
        self.load_all()
    }

    fn commit(&mut self, parts: &[&[StoreOp]]) -> Result<(), StoreError> {
        self.commit_parts(parts)
    }
}

impl RedbServerStore {
    /// Everything stored ([`ServerStore::load`]), without exclusive access: tests and tools may
    /// look while a core reads the same store.
    pub fn load_all(&self) -> Result<State, StoreError> {
        let db = db_of(&self.db);
        let txn = db.begin_read().map_err(store_err)?;
        let mut state = State::default();
        for item in txn.open_table(MESSAGES).map_err(store_err)?.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let msg: WireMessage = decode("message", v.value())?;
            state.messages.insert(k.value(), MessageRecord::new(Arc::new(msg)));
        }
        for item in txn.open_table(FLAGS).map_err(store_err)?.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            if let Some(rec) = state.messages.get_mut(&k.value()) {
                rec.delivered = v.value() & 1 != 0;
                rec.read_acked = v.value() & 2 != 0;
            }
        }
        for kind in [GroupAckKind::Read, GroupAckKind::Delivery] {
            for item in txn.open_table(ack_tables(kind).0).map_err(store_err)?.iter().map_err(store_err)? {
                let (k, v) = item.map_err(store_err)?;
                let ack: GroupReadAck = decode("group ack", v.value())?;
                if let Some(rec) = state.messages.get_mut(&k.value().0) {
                    rec.add_ack_of(kind, ack);
                }
            }
        }
        let messages = std::mem::take(&mut state.messages);
        Self::load_common(&txn, &mut state, &mut |id| messages.get(&id).map(|r| r.msg.clone()))?;
        state.messages = messages;
        for item in txn.open_table(CONVS).map_err(store_err)?.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let (user, t, id) = k.value();
            let chat_type = ChatType::from_u32(t as u32).ok_or_else(|| StoreError(format!("corrupt chat type {t}")))?;
            let conv = decode_conv(v.value())?;
            state.convs.entry(user.to_string()).or_default().insert(ConversationKey::new(chat_type, id), conv);
        }
        for item in txn.open_table(READS).map_err(store_err)?.iter().map_err(store_err)? {
            let (k, _) = item.map_err(store_err)?;
            let (user, t, id, msg_id) = k.value();
            let chat_type = ChatType::from_u32(t as u32).ok_or_else(|| StoreError(format!("corrupt chat type {t}")))?;
            let conv = state.convs.entry(user.to_string()).or_default().entry(ConversationKey::new(chat_type, id)).or_default();
            // Rows at or below the watermark are left over from a trim: not read singles.
            conv.read.mark_one(msg_id);
        }
        drop(txn);
        state.rebuild_indexes();
        Ok(state)
    }
    fn commit_parts(&mut self, parts: &[&[StoreOp]]) -> Result<(), StoreError> {
        if parts.iter().all(|p| p.is_empty()) {
            return Ok(());
        }
        let ops = || parts.iter().flat_map(|p| p.iter());
        // A batch often rewrites the same conversation record, message flags or counters several
        // times (one per message of a busy pair): only the last write of each (they are whole
        // records) needs to reach the disk.
        let mut last_conv: HashMap<(&str, &ConversationKey), usize> = HashMap::default();
        let mut last_flags: HashMap<u64, usize> = HashMap::default();
        let mut last_counters = None;
        // Each user's events of this commit go into one row (see `decode_events`).
        let mut user_events: HashMap<&str, Vec<&SeqEvent>> = HashMap::default();
        for (i, op) in ops().enumerate() {
            match op {
                StoreOp::PutConversation { user, key, .. } => {
                    last_conv.insert((user.as_str(), key), i);
                }
                StoreOp::PutCounters(_) => last_counters = Some(i),
                StoreOp::PutMessageFlags { id, .. } => {
                    last_flags.insert(*id, i);
                }
                StoreOp::AppendEvent { user, event } => user_events.entry(user.as_str()).or_default().push(&**event),
                _ => {}
            }
        }
        let db = db_of(&self.db);
        let txn = db.begin_write().map_err(store_err)?;
        {
            let mut meta = txn.open_table(META).map_err(store_err)?;
            let mut messages = txn.open_table(MESSAGES).map_err(store_err)?;
            let mut flags = txn.open_table(FLAGS).map_err(store_err)?;
            let mut acks = txn.open_table(ACKS).map_err(store_err)?;
            let mut ackers = txn.open_table(ACKERS).map_err(store_err)?;
            let mut delivery_acks = txn.open_table(DELIVERY_ACKS).map_err(store_err)?;
            let mut delivery_ackers = txn.open_table(DELIVERY_ACKERS).map_err(store_err)?;
            let mut client_ids = txn.open_table(CLIENT_IDS).map_err(store_err)?;
            let mut events = txn.open_table(EVENTS).map_err(store_err)?;
            let mut convs = txn.open_table(CONVS).map_err(store_err)?;
            let mut groups = txn.open_table(GROUPS).map_err(store_err)?;
            let mut reads = txn.open_table(READS).map_err(store_err)?;
            let mut member_since = txn.open_table(MEMBER_SINCE).map_err(store_err)?;
            let mut log_base = txn.open_table(LOG_BASE).map_err(store_err)?;
            let mut cursors = txn.open_table(CURSORS).map_err(store_err)?;
            let mut conv_messages = txn.open_table(CONV_MESSAGES).map_err(store_err)?;
            let mut buf = Vec::with_capacity(256);
            for (user, evs) in &user_events {
                events.insert((*user, evs[0].seq), encode_events(evs, &mut buf)).map_err(store_err)?;
            }
            for (i, op) in ops().enumerate() {
                match op {
                    StoreOp::PutCounters(_) if last_counters != Some(i) => {}
                    StoreOp::PutMessageFlags { id, .. } if last_flags.get(id) != Some(&i) => {}
                    StoreOp::PutConversation { user, key, .. } if last_conv.get(&(user.as_str(), key)) != Some(&i) => {}
                    StoreOp::PutCounters(c) => {
                        meta.insert("counters", encode_record(c, &mut buf)).map_err(store_err)?;
                    }
                    StoreOp::PutMessage(m) => {
                        messages.insert(m.id, encode_record(m, &mut buf)).map_err(store_err)?;
                        client_ids.insert((m.from.as_str(), m.client_id.as_str()), m.id).map_err(store_err)?;
                        let conv = ConvId::of(m);
                        let (kind, a, b) = conv.key_parts();
                        conv_messages.insert((kind, a, b, m.id), ()).map_err(store_err)?;
                    }
                    StoreOp::PutMessageFlags { id, delivered, read_acked } => {
                        let v = u8::from(*delivered) | (u8::from(*read_acked) << 1);
                        flags.insert(*id, v).map_err(store_err)?;
                    }
                    StoreOp::DeleteMessage(id) => {
                        // The row names its client id and conversation: their index entries go with it.
                        let gone = messages.remove(*id).map_err(store_err)?.map(|v| decode::<WireMessage>("message", v.value()));
                        if let Some(m) = gone.transpose()? {
                            let k = (m.from.as_str(), m.client_id.as_str());
                            // The client id may name a later message since (a resend after retention).
                            if client_ids.get(k).map_err(store_err)?.is_some_and(|v| v.value() == *id) {
                                client_ids.remove(k).map_err(store_err)?;
                            }
                            let conv = ConvId::of(&m);
                            let (kind, a, b) = conv.key_parts();
                            conv_messages.remove((kind, a, b, m.id)).map_err(store_err)?;
                        }
                        ackers.retain_in((*id, "")..(*id + 1, ""), |_, _| false).map_err(store_err)?;
                        flags.remove(*id).map_err(store_err)?;
                        acks.retain_in((*id, 0)..=(*id, u64::MAX), |_, _| false).map_err(store_err)?;
                        delivery_ackers.retain_in((*id, "")..(*id + 1, ""), |_, _| false).map_err(store_err)?;
                        delivery_acks.retain_in((*id, 0)..=(*id, u64::MAX), |_, _| false).map_err(store_err)?;
                    }
                    StoreOp::PutGroupAck(a) => {
                        acks.insert((a.msg_id, a.ack_id), encode_record(a, &mut buf)).map_err(store_err)?;
                        ackers.insert((a.msg_id, a.from.as_str()), ()).map_err(store_err)?;
                    }
                    StoreOp::PutGroupDeliveryAck(a) => {
                        delivery_acks.insert((a.msg_id, a.ack_id), encode_record(a, &mut buf)).map_err(store_err)?;
                        delivery_ackers.insert((a.msg_id, a.from.as_str()), ()).map_err(store_err)?;
                    }
                    StoreOp::AppendEvent { .. } => {} // written above, one row per user
                    StoreOp::PutConversation { user, key, state } => {
                        let k = (user.as_str(), chat_type_code(key.chat_type), key.id.as_str());
                        convs.insert(k, encode_record(&conv_record(state), &mut buf)).map_err(store_err)?;
                    }
                    StoreOp::AddRead { user, key, msg_id } => {
                        reads.insert((user.as_str(), chat_type_code(key.chat_type), key.id.as_str(), *msg_id), ()).map_err(store_err)?;
                    }
                    StoreOp::TrimReads { user, key, up_to } => {
                        let (u, t, c) = (user.as_str(), chat_type_code(key.chat_type), key.id.as_str());
                        reads.retain_in((u, t, c, 0)..=(u, t, c, *up_to), |_, _| false).map_err(store_err)?;
                    }
                    StoreOp::TrimLog { user, up_to } => {
                        log_base.insert(user.as_str(), *up_to).map_err(store_err)?;
                        // Rows are keyed by their first seq: every row before the last one that
                        // starts at or below `up_to` holds only trimmed events; that last one
                        // goes too unless it reaches past `up_to` (then loading drops its
                        // trimmed part).
                        let u = user.as_str();
                        let last = match events.range((u, 0)..=(u, *up_to)).map_err(store_err)?.next_back() {
                            Some(row) => {
                                let (k, v) = row.map_err(store_err)?;
                                Some((k.value().1, last_seq(u, k.value().1, v.value())?))
                            }
                            None => None,
                        };
                        if let Some((first, last)) = last {
                            let end = if last <= *up_to { first + 1 } else { first };
                            events.retain_in((u, 0)..(u, end), |_, _| false).map_err(store_err)?;
                        }
                    }
                    StoreOp::PutCursor { user, device, cursor } => {
                        cursors.insert((user.as_str(), device.as_str()), (cursor.seq, cursor.seen)).map_err(store_err)?;
                    }
                    StoreOp::DeleteCursor { user, device } => {
                        cursors.remove((user.as_str(), device.as_str())).map_err(store_err)?;
                    }
                    StoreOp::PutGroup(g) => {
                        groups.insert(g.id.as_str(), encode_record(g, &mut buf)).map_err(store_err)?;
                        if g.joined_after.is_empty() {
                            member_since.remove(g.id.as_str()).map_err(store_err)?;
                        } else {
                            member_since.insert(g.id.as_str(), encode_record(&g.joined_after, &mut buf)).map_err(store_err)?;
                        }
                    }
                }
            }
        }
        txn.commit().map_err(store_err)?;
        Ok(())
    }
}

/// The core thread's reads ([`StoreRead`]): one read transaction on the last commit, shared by
/// the reads of one batch and released at its end ([`StoreRead::release`]), so a batch's misses
/// do not each open one, and the idle core holds none (compaction needs none live).
struct RedbReader {
    db: Arc<RwLock<Database>>,
    txn: std::cell::RefCell<Option<ReadTransaction>>,
    /// `client_ids` opened in `txn`: read at every new message (its client id is not stored).
    client_ids: std::cell::RefCell<Option<::redb::ReadOnlyTable<(&'static str, &'static str), u64>>>,
}

fn flags_of(v: u8) -> (bool, bool) {
    (v & 1 != 0, v & 2 != 0)
}

impl RedbReader {
    fn txn(&self) -> Result<std::cell::RefMut<'_, ReadTransaction>, StoreError> {
        let mut cell = self.txn.borrow_mut();
        if cell.is_none() {
            *cell = Some(db_of(&self.db).begin_read().map_err(store_err)?);
        }
        Ok(std::cell::RefMut::map(cell, |t| t.as_mut().expect("opened above")))
    }
}

impl StoreRead for RedbReader {
    fn release(&self) {
        self.client_ids.borrow_mut().take();
        self.txn.borrow_mut().take();
    }

    fn message(&self, id: MsgId) -> Result<Option<MessageRecord>, StoreError> {
        let txn = self.txn()?;
        let Some(v) = txn.open_table(MESSAGES).map_err(store_err)?.get(id).map_err(store_err)? else {
            return Ok(None);
        };
        let mut rec = MessageRecord::new(Arc::new(decode::<WireMessage>("message", v.value())?));
        if let Some(f) = txn.open_table(FLAGS).map_err(store_err)?.get(id).map_err(store_err)? {
            (rec.delivered, rec.read_acked) = flags_of(f.value());
        }
        if rec.msg.chat_type == ChatType::GroupChat {
            // An ack's count is the number of acks when it was made: the last one's is the total.
            let last_count = |kind| -> Result<u32, StoreError> {
                let table = txn.open_table(ack_tables(kind).0).map_err(store_err)?;
                let last = table.range((id, 0)..=(id, u64::MAX)).map_err(store_err)?.next_back();
                match last {
                    Some(row) => Ok(decode::<GroupReadAck>("group ack", row.map_err(store_err)?.1.value())?.count),
                    None => Ok(0),
                }
            };
            rec.ack_count = last_count(GroupAckKind::Read)?;
            if rec.msg.require_delivery_ack {
                rec.delivery.count = last_count(GroupAckKind::Delivery)?;
            }
        }
        Ok(Some(rec))
    }

    fn client_id(&self, user: &str, client_id: &str) -> Result<Option<MsgId>, StoreError> {
        let mut table = self.client_ids.borrow_mut();
        if table.is_none() {
            *table = Some(self.txn()?.open_table(CLIENT_IDS).map_err(store_err)?);
        }
        let v = table.as_ref().expect("opened above").get((user, client_id)).map_err(store_err)?;
        Ok(v.map(|v| v.value()))
    }

    fn has_sent(&self, user: &str) -> Result<bool, StoreError> {
        // `client_ids` is keyed by sender first: any row of `user` is a message it sent.
        let txn = self.txn()?;
        let table = txn.open_table(CLIENT_IDS).map_err(store_err)?;
        let first = table.range((user, "")..).map_err(store_err)?.next();
        Ok(match first {
            Some(row) => row.map_err(store_err)?.0.value().0 == user,
            None => false,
        })
    }

    fn acked_by_of(&self, kind: GroupAckKind, id: MsgId, user: &str) -> Result<bool, StoreError> {
        let txn = self.txn()?;
        Ok(txn.open_table(ack_tables(kind).1).map_err(store_err)?.get((id, user)).map_err(store_err)?.is_some())
    }

    fn acks_desc_of(&self, kind: GroupAckKind, id: MsgId, start: u64, limit: usize) -> Result<Vec<GroupReadAck>, StoreError> {
        let txn = self.txn()?;
        let table = txn.open_table(ack_tables(kind).0).map_err(store_err)?;
        let mut out = Vec::new();
        for item in table.range((id, 0)..=(id, start)).map_err(store_err)?.rev().take(limit) {
            let (_, v) = item.map_err(store_err)?;
            out.push(decode("group ack", v.value())?);
        }
        Ok(out)
    }

    fn messages_from(&self, first: MsgId, limit: usize) -> Result<Vec<Arc<WireMessage>>, StoreError> {
        let txn = self.txn()?;
        let table = txn.open_table(MESSAGES).map_err(store_err)?;
        let mut out = Vec::new();
        for item in table.range(first..).map_err(store_err)?.take(limit) {
            let (_, v) = item.map_err(store_err)?;
            out.push(Arc::new(decode("message", v.value())?));
        }
        Ok(out)
    }

    fn conversation(&self, user: &str, key: &ConversationKey) -> Result<Option<ConvState>, StoreError> {
        let txn = self.txn()?;
        let (t, id) = (chat_type_code(key.chat_type), key.id.as_str());
        let Some(v) = txn.open_table(CONVS).map_err(store_err)?.get((user, t, id)).map_err(store_err)? else {
            return Ok(None);
        };
        let mut conv = decode_conv(v.value())?;
        let reads = txn.open_table(READS).map_err(store_err)?;
        for item in reads.range((user, t, id, conv.read.up_to.saturating_add(1))..=(user, t, id, u64::MAX)).map_err(store_err)? {
            let (k, _) = item.map_err(store_err)?;
            conv.read.mark_one(k.value().3);
        }
        Ok(Some(conv))
    }

    fn conversations_of(&self, user: &str, limit: usize) -> Result<Vec<(ConversationKey, ConvState)>, StoreError> {
        let txn = self.txn()?;
        let table = txn.open_table(CONVS).map_err(store_err)?;
        let mut out = Vec::new();
        // Every chat type of `user`: (user, 0, "") up to, not including, (user, 255, "") and
        // then the rows of type 255 (none: chat types are 0..=2).
        for item in table.range((user, 0u8, "")..(user, u8::MAX, "")).map_err(store_err)?.take(limit) {
            let (k, v) = item.map_err(store_err)?;
            let (_, t, id) = k.value();
            let chat_type = ChatType::from_u32(t as u32).ok_or_else(|| StoreError(format!("corrupt chat type {t}")))?;
            out.push((ConversationKey::new(chat_type, id), decode_conv(v.value())?.without_read_set()));
        }
        Ok(out)
    }

    fn log_head(&self, user: &str) -> Result<u64, StoreError> {
        let txn = self.txn()?;
        let base = txn.open_table(LOG_BASE).map_err(store_err)?.get(user).map_err(store_err)?.map_or(0, |v| v.value());
        let events = txn.open_table(EVENTS).map_err(store_err)?;
        let last = match events.range((user, 0)..=(user, u64::MAX)).map_err(store_err)?.next_back() {
            Some(row) => {
                let (k, v) = row.map_err(store_err)?;
                last_seq(user, k.value().1, v.value())?
            }
            None => 0,
        };
        Ok(base.max(last))
    }

    fn log_events(&self, user: &str, from: u64, rows: usize) -> Result<LogRead, StoreError> {
        let txn = self.txn()?;
        let base = txn.open_table(LOG_BASE).map_err(store_err)?.get(user).map_err(store_err)?.map_or(0, |v| v.value());
        let from = from.max(base.saturating_add(1));
        let events = txn.open_table(EVENTS).map_err(store_err)?;
        let messages = txn.open_table(MESSAGES).map_err(store_err)?;
        let mut resolve = message_resolver(&messages);
        // The row holding `from` starts at or before it: the last row keyed at or below it.
        let start = match events.range((user, 0)..=(user, from)).map_err(store_err)?.next_back() {
            Some(row) => row.map_err(store_err)?.0.value().1,
            None => from,
        };
        let mut read = LogRead { events: Vec::new(), next: from, more: false };
        let (mut loaded, mut log) = (HashMap::default(), Vec::new());
        for (i, row) in events.range((user, start)..=(user, u64::MAX)).map_err(store_err)?.enumerate() {
            if i == rows {
                read.more = true;
                break;
            }
            let (k, v) = row.map_err(store_err)?;
            let last = decode_events(user, k.value().1, v.value(), &mut resolve.0, &mut loaded, &mut log)?;
            read.next = read.next.max(last + 1);
        }
        resolve.error()?;
        read.events = log.into_iter().filter(|e| e.seq >= from).map(|e| SeqEvent::clone(&e)).collect();
        Ok(read)
    }

    fn log_trimmed(&self, user: &str) -> Result<u64, StoreError> {
        let txn = self.txn()?;
        Ok(txn.open_table(LOG_BASE).map_err(store_err)?.get(user).map_err(store_err)?.map_or(0, |v| v.value()))
    }

    fn conv_messages_after(&self, conv: &ConvId, after: MsgId, limit: usize) -> Result<Vec<MsgId>, StoreError> {
        let txn = self.txn()?;
        let table = txn.open_table(CONV_MESSAGES).map_err(store_err)?;
        let (kind, a, b) = conv.key_parts();
        let Some(first) = after.checked_add(1) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for item in table.range((kind, a, b, first)..=(kind, a, b, u64::MAX)).map_err(store_err)?.take(limit) {
            out.push(item.map_err(store_err)?.0.value().3);
        }
        Ok(out)
    }

    fn log_sweep(&self, after: Option<&str>, users: usize, rows: usize, cutoff: u64) -> Result<LogSweep, StoreError> {
        let txn = self.txn()?;
        let bases = txn.open_table(LOG_BASE).map_err(store_err)?;
        let events = txn.open_table(EVENTS).map_err(store_err)?;
        let messages = txn.open_table(MESSAGES).map_err(store_err)?;
        let mut resolve = message_resolver(&messages);
        let mut sweep = LogSweep::default();
        // The first user after `after`: keys sort by user, then seq; "\0" is the least suffix.
        let mut next_user: Option<String> = after.map(|a| format!("{a}\0"));
        for _ in 0..users {
            let first = {
                let lo = next_user.as_deref().unwrap_or("");
                let mut it = events.range((lo, 0)..).map_err(store_err)?;
                match it.next() {
                    Some(row) => row.map_err(store_err)?.0.value().0.to_string(),
                    None => {
                        sweep.last = None;
                        resolve.error()?;
                        return Ok(sweep);
                    }
                }
            };
            let user = first.as_str();
            let base = bases.get(user).map_err(store_err)?.map_or(0, |v| v.value());
            let mut prefix = TrimPrefix::new(base, cutoff);
            for row in events.range((user, 0)..=(user, u64::MAX)).map_err(store_err)?.take(rows) {
                let (k, v) = row.map_err(store_err)?;
                if !prefix.row(user, k.value().1, v.value(), &mut resolve.0)? {
                    break;
                }
            }
            if let Some(up_to) = prefix.up_to() {
                sweep.trims.push((user.to_string(), up_to));
            }
            sweep.last = Some(first.clone());
            next_user = Some(format!("{first}\0"));
        }
        resolve.error()?;
        Ok(sweep)
    }
}

/// Resolves a log's message references by point reads of `MESSAGES` (see [`resolver`]).
fn message_resolver<'t>(
    messages: &'t ::redb::ReadOnlyTable<u64, &'static [u8]>,
) -> Resolver<impl FnMut(MsgId) -> Option<Arc<WireMessage>> + 't> {
    resolver(move |id| messages.get(id).map_err(store_err).and_then(|v| v.map(|v| decode::<WireMessage>("message", v.value())).transpose()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ConvState;
    use receipt_core::protocol::ServerEvent;
    use receipt_core::rules::ReadMark;
    use receipt_core::{GroupRole, MsgId};

    fn msg(id: MsgId) -> WireMessage {
        WireMessage {
            id,
            client_id: format!("c{id}"),
            from: "alice".into(),
            to: "bob".into(),
            chat_type: ChatType::Chat,
            content: "héllo \"x\"".into(),
            timestamp: 7,
            require_delivery_ack: true,
            need_group_ack: false,
        }
    }

    #[test]
    fn binary_records_round_trip_and_json_rows_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let ack = GroupReadAck { ack_id: 4, msg_id: 2, from: "bob".into(), content: Some("e".into()), count: 1, timestamp: 9 };
        let evs = [
            ServerEvent::Message { msg: msg(1).into() },
            ServerEvent::Delivered { msg_id: 1, from: "alice".into(), to: "bob".into(), by: "bob".into(), timestamp: 3 },
            ServerEvent::Read { msg_id: 1, from: "alice".into(), to: "bob".into(), by: "bob".into(), timestamp: 4 },
            ServerEvent::ConversationRead {
                chat_type: ChatType::Chat,
                from: "bob".into(),
                to: "alice".into(),
                up_to: 1,
                timestamp: 5,
                device: "d".into(),
            },
            ServerEvent::GroupRead { group: "g".into(), sender: "alice".into(), ack: ack.clone() },
            ServerEvent::ReadState { chat_type: ChatType::GroupChat, conversation: "g".into(), msg_id: Some(2), up_to: 0 },
            ServerEvent::Membership { group: "g".into(), role: Some(GroupRole::Admin), chat_room: true },
        ];
        let key = ConversationKey::new(ChatType::Chat, "bob");
        let group = Group {
            id: "g".into(),
            name: "n".into(),
            chat_room: false,
            members: [("alice".to_string(), GroupRole::Owner), ("bob".to_string(), GroupRole::Member)].into(),
            joined_after: [("bob".to_string(), 1)].into(),
        };
        let counters = Counters { last_msg_id: 2, last_ack_id: 4, last_group_id: 1, last_ts: 9 };
        let state_before;
        {
            let mut s = RedbServerStore::open(dir.path()).unwrap();
            // An older version's JSON rows (and no derived indexes: an older version's store).
            {
                let db = s.db.read().unwrap();
                let w = db.begin_write().unwrap();
                {
                    w.open_table(META).unwrap().insert(FORMAT_KEY, 2u32.to_le_bytes().as_slice()).unwrap();
                    w.open_table(MESSAGES).unwrap().insert(2, serde_json::to_vec(&msg(2)).unwrap().as_slice()).unwrap();
                    let ev = ServerEvent::Delivered { msg_id: 9, from: "x".into(), to: "alice".into(), by: "alice".into(), timestamp: 1 };
                    w.open_table(EVENTS).unwrap().insert(("alice", 1), serde_json::to_vec(&ev).unwrap().as_slice()).unwrap();
                    // A conversation under the old field names, its read singles inside the record.
                    let conv = r#"{"unread":1,"read_wm":2,"ack_wm":1,"newest":6,"newest_in":6,"read_set":[5]}"#;
                    let k = ("carol", chat_type_code(ChatType::Chat), "alice");
                    w.open_table(CONVS).unwrap().insert(k, conv.as_bytes()).unwrap();
                }
                w.commit().unwrap();
            }
            let mut ops = vec![
                StoreOp::PutCounters(counters),
                StoreOp::PutMessage(msg(1).into()),
                StoreOp::PutGroupAck(ack.clone()),
                StoreOp::PutGroup(group.clone()),
            ];
            ops.push(StoreOp::PutConversation {
                user: "alice".into(),
                key: key.clone(),
                state: ConvState {
                    unread: 3,
                    read: ReadMark { up_to: 1, singles: Default::default() },
                    receipt_up_to: 2,
                    newest: 5,
                    newest_received: 4,
                },
            });
            for (i, e) in evs.iter().enumerate() {
                ops.push(StoreOp::AppendEvent {
                    user: "alice".into(),
                    event: SeqEvent { seq: i as u64 + 2, event: e.clone().into() }.into(),
                });
                ops.push(StoreOp::AppendEvent {
                    user: "bob".into(),
                    event: SeqEvent { seq: i as u64 + 1, event: e.clone().into() }.into(),
                });
            }
            s.commit(&[&ops]).unwrap();
            s.commit(&[&[StoreOp::AppendEvent { user: "bob".into(), event: SeqEvent { seq: 8, event: evs[1].clone().into() }.into() }]])
                .unwrap();
            state_before = Some(s.load().unwrap());
        }
        let state = RedbServerStore::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(state.counters, counters);
        assert_eq!(*state.messages[&1].msg, msg(1));
        assert_eq!(*state.messages[&2].msg, msg(2));
        assert_eq!(state.groups["g"], group);
        let c = &state.convs["alice"][&key];
        assert_eq!((c.unread, c.read.up_to, c.receipt_up_to, c.newest, c.newest_received), (3, 1, 2, 5, 4));
        let bob: Vec<_> = state.logs["bob"].iter().map(|e| (e.seq, (*e.event).clone())).collect();
        let mut want: Vec<_> = evs.iter().cloned().enumerate().map(|(i, e)| (i as u64 + 1, e)).collect();
        want.push((8, evs[1].clone()));
        assert_eq!(bob, want);
        let alice = &state.logs["alice"];
        assert_eq!(alice.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
        assert_eq!(*alice[7].event, evs[6]);
        // The same events (an event's log time may differ: one without a time of its own at the
        // end of a log takes the loading time).
        let events = |s: &State| -> Vec<(String, Vec<SeqEvent>)> {
            let mut v: Vec<_> = s.logs.iter().map(|(u, l)| (u.clone(), l.iter().map(|e| SeqEvent::clone(e)).collect())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(events(&state_before.unwrap()), events(&state));
        let c = &state.convs["carol"][&ConversationKey::new(ChatType::Chat, "alice")];
        assert_eq!((c.unread, c.read.up_to, c.receipt_up_to, c.newest, c.newest_received), (1, 2, 1, 6, 6));
        assert_eq!(c.read.singles.iter().copied().collect::<Vec<_>>(), vec![5]);
        {
            let s = RedbServerStore::open(dir.path()).unwrap();
            let db = s.db.read().unwrap();
            let r = db.begin_read().unwrap();
            let row = r.open_table(READS).unwrap().get(("carol", chat_type_code(ChatType::Chat), "alice", 5)).unwrap();
            assert!(row.is_some(), "the legacy read single moved to its own row");
        }
        // A loaded Message event shares the loaded message's copy instead of holding its own,
        // and an event stored in several logs is one allocation again.
        let ServerEvent::Message { msg } = &*state.logs["bob"][0].event else { panic!("{:?}", state.logs["bob"][0]) };
        assert!(Arc::ptr_eq(msg, &state.messages[&1].msg));
        assert!(Arc::ptr_eq(&state.logs["bob"][0].event, &state.logs["alice"][1].event));
        assert!(Arc::ptr_eq(&state.logs["bob"][1].event, &state.logs["bob"][7].event), "bob's seq 2 and 8 are the same event");
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    fn stamp(dir: &Path, format: u32) {
        let db = Database::create(dir.join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(FORMAT_KEY, format.to_le_bytes().as_slice()).unwrap();
        txn.commit().unwrap();
    }

    fn stored_format(dir: &Path) -> Option<u32> {
        let db = Database::create(dir.join(DB_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let v = meta.get(FORMAT_KEY).unwrap();
        v.map(|v| format_of(v.value()).unwrap())
    }

    #[test]
    fn a_new_store_is_stamped_with_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        drop(RedbServerStore::open(dir.path()).unwrap());
        assert_eq!(stored_format(dir.path()), Some(STORE_FORMAT));
    }

    #[test]
    fn an_older_or_unstamped_store_opens_and_is_stamped() {
        let dir = tempfile::tempdir().unwrap();
        stamp(dir.path(), 1);
        drop(RedbServerStore::open(dir.path()).unwrap());
        assert_eq!(stored_format(dir.path()), Some(STORE_FORMAT));
    }

    #[test]
    fn a_format_2_store_gets_its_conversation_index_at_open() {
        let dir = tempfile::tempdir().unwrap();
        stamp(dir.path(), 2);
        let msg = WireMessage {
            id: 4,
            client_id: "c4".into(),
            from: "bob".into(),
            to: "alice".into(),
            chat_type: ChatType::Chat,
            content: "x".into(),
            timestamp: 7,
            require_delivery_ack: false,
            need_group_ack: false,
        };
        {
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(MESSAGES).unwrap().insert(4, serde_json::to_vec(&msg).unwrap().as_slice()).unwrap();
            txn.commit().unwrap();
        }
        drop(RedbServerStore::open(dir.path()).unwrap());
        assert_eq!(stored_format(dir.path()), Some(STORE_FORMAT));
        let db = Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        let row = txn.open_table(CONV_MESSAGES).unwrap().get((0, "alice", "bob", 4)).unwrap();
        assert!(row.is_some(), "the message written before the index has its row");
    }

    #[test]
    fn a_store_of_a_newer_format_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        stamp(dir.path(), STORE_FORMAT + 1);
        let e = RedbServerStore::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("store format {}", STORE_FORMAT + 1)) && e.contains("newer server"), "{e}");
        // Refused without writing: the marker is still the newer one.
        assert_eq!(stored_format(dir.path()), Some(STORE_FORMAT + 1));
    }
}

// The store contract (also on PostgreSQL): tests/store_contract.rs.

#[cfg(test)]
mod index_tests {
    use super::*;

    #[test]
    fn a_format_2_store_gets_its_key_indexes_derived_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let msg = WireMessage {
            id: 7,
            client_id: "c7".into(),
            from: "alice".into(),
            to: "g1".into(),
            chat_type: ChatType::GroupChat,
            content: "x".into(),
            timestamp: 7,
            require_delivery_ack: false,
            need_group_ack: true,
        };
        let ack = GroupReadAck { ack_id: 1, msg_id: 7, from: "bob".into(), content: None, count: 1, timestamp: 8 };
        {
            let mut s = RedbServerStore::open(dir.path()).unwrap();
            s.commit(&[&[StoreOp::PutMessage(msg.into()), StoreOp::PutGroupAck(ack)]]).unwrap();
            // As a format 2 server left it: no index rows.
            let db = s.db.read().unwrap();
            let w = db.begin_write().unwrap();
            w.open_table(CLIENT_IDS).unwrap().retain(|_, _| false).unwrap();
            w.open_table(ACKERS).unwrap().retain(|_, _| false).unwrap();
            w.open_table(META).unwrap().insert(FORMAT_KEY, 2u32.to_le_bytes().as_slice()).unwrap();
            w.commit().unwrap();
        }
        let s = RedbServerStore::open(dir.path()).unwrap();
        let r = s.reader().unwrap();
        assert_eq!(r.client_id("alice", "c7").unwrap(), Some(7));
        assert!(r.acked_by(7, "bob").unwrap() && !r.acked_by(7, "carol").unwrap());
        assert_eq!(r.message(7).unwrap().unwrap().ack_count, 1);
        // Deleting the message drops its index rows.
        let mut s = s;
        s.commit(&[&[StoreOp::DeleteMessage(7)]]).unwrap();
        r.release(); // the reads of a batch share a snapshot: the next batch sees the commit
        assert_eq!(r.client_id("alice", "c7").unwrap(), None);
        assert!(!r.acked_by(7, "bob").unwrap());
    }
}

#[cfg(test)]
mod half_indexed_tests {
    use super::*;

    #[test]
    fn a_format_3_store_opens_as_format_4_and_takes_group_delivery_acks() {
        let dir = tempfile::tempdir().unwrap();
        let msg = WireMessage {
            id: 5,
            client_id: "c5".into(),
            from: "alice".into(),
            to: "g".into(),
            chat_type: ChatType::GroupChat,
            content: "x".into(),
            timestamp: 5,
            require_delivery_ack: true,
            need_group_ack: true,
        };
        let read = GroupReadAck { ack_id: 1, msg_id: 5, from: "bob".into(), content: Some("e".into()), count: 1, timestamp: 6 };
        {
            let mut s = RedbServerStore::open(dir.path()).unwrap();
            s.commit(&[&[StoreOp::PutMessage(msg.into()), StoreOp::PutGroupAck(read.clone())]]).unwrap();
            // As a format 3 server left it: no delivery tables at all.
            let db = s.db.read().unwrap();
            let w = db.begin_write().unwrap();
            assert!(w.delete_table(DELIVERY_ACKS).unwrap() && w.delete_table(DELIVERY_ACKERS).unwrap());
            w.open_table(META).unwrap().insert(FORMAT_KEY, 3u32.to_le_bytes().as_slice()).unwrap();
            w.commit().unwrap();
        }
        let mut s = RedbServerStore::open(dir.path()).unwrap();
        assert_eq!(stored_format_of(&s), Some(STORE_FORMAT));
        {
            let r = s.reader().unwrap();
            let rec = r.message(5).unwrap().unwrap();
            assert_eq!((rec.ack_count, rec.delivery.count), (1, 0), "its read acks kept, no delivery acks");
            assert!(!r.acked_by_of(GroupAckKind::Delivery, 5, "bob").unwrap());
        }
        let delivered = GroupReadAck { ack_id: 2, msg_id: 5, from: "carol".into(), content: None, count: 1, timestamp: 7 };
        s.commit(&[&[StoreOp::PutGroupDeliveryAck(delivered.clone())]]).unwrap();
        let r = s.reader().unwrap();
        let rec = r.message(5).unwrap().unwrap();
        assert_eq!((rec.ack_count, rec.delivery.count), (1, 1));
        assert!(r.acked_by_of(GroupAckKind::Delivery, 5, "carol").unwrap() && !r.acked_by(5, "carol").unwrap());
        assert_eq!(r.acks_desc_of(GroupAckKind::Delivery, 5, u64::MAX, 10).unwrap(), vec![delivered.clone()]);
        assert_eq!(r.acks_desc(5, u64::MAX, 10).unwrap(), vec![read]);
        drop(r);
        let all = s.load_all().unwrap();
        assert_eq!(all.messages[&5].delivery.acks.values().cloned().collect::<Vec<_>>(), vec![delivered]);
        // Retention drops them with the message.
        s.commit(&[&[StoreOp::DeleteMessage(5)]]).unwrap();
        let r = s.reader().unwrap();
        assert!(r.acks_desc_of(GroupAckKind::Delivery, 5, u64::MAX, 10).unwrap().is_empty());
        assert!(!r.acked_by_of(GroupAckKind::Delivery, 5, "carol").unwrap());
    }

    /// The format an open store is stamped with.
    fn stored_format_of(s: &RedbServerStore) -> Option<u32> {
        let db = s.db.read().unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let v = meta.get(FORMAT_KEY).unwrap();
        v.map(|v| format_of(v.value()).unwrap())
    }

    #[test]
    fn a_format_3_store_with_only_one_branchs_indexes_gets_the_others_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let msg = WireMessage {
            id: 3,
            client_id: "c3".into(),
            from: "alice".into(),
            to: "g".into(),
            chat_type: ChatType::GroupChat,
            content: "x".into(),
            timestamp: 3,
            require_delivery_ack: false,
            need_group_ack: true,
        };
        let ack = GroupReadAck { ack_id: 1, msg_id: 3, from: "bob".into(), content: None, count: 1, timestamp: 4 };
        {
            let mut s = RedbServerStore::open(dir.path()).unwrap();
            s.commit(&[&[StoreOp::PutMessage(msg.into()), StoreOp::PutGroupAck(ack)]]).unwrap();
            // As the cursors' branch left it at format 3: no client_ids nor group_ackers rows.
            let db = s.db.read().unwrap();
            let w = db.begin_write().unwrap();
            w.open_table(CLIENT_IDS).unwrap().retain(|_, _| false).unwrap();
            w.open_table(ACKERS).unwrap().retain(|_, _| false).unwrap();
            w.commit().unwrap();
        }
        let s = RedbServerStore::open(dir.path()).unwrap();
        let r = s.reader().unwrap();
        assert_eq!(r.client_id("alice", "c3").unwrap(), Some(3));
        assert!(r.acked_by(3, "bob").unwrap());
        drop(r);
        // And the cache's branch's: no conv_messages rows.
        {
            let db = s.db.read().unwrap();
            let w = db.begin_write().unwrap();
            w.open_table(CONV_MESSAGES).unwrap().retain(|_, _| false).unwrap();
            w.commit().unwrap();
        }
        drop(s);
        let s = RedbServerStore::open(dir.path()).unwrap();
        assert_eq!(s.reader().unwrap().conv_messages_after(&ConvId::Group("g".into()), 0, 10).unwrap(), vec![3]);
    }
}

#[cfg(test)]
mod cursor_tests {
    use super::*;

    #[test]
    fn device_cursors_and_the_conversation_index_are_stored_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let msg = |id, to: &str, chat_type| WireMessage {
            id,
            client_id: format!("c{id}"),
            from: "alice".into(),
            to: to.into(),
            chat_type,
            content: "x".into(),
            timestamp: 7,
            require_delivery_ack: false,
            need_group_ack: false,
        };
        let mut s = RedbServerStore::open(dir.path()).unwrap();
        let cursor = DeviceCursor { seq: 5, seen: 99 };
        s.commit(&[&[
            StoreOp::PutMessage(msg(1, "bob", ChatType::Chat).into()),
            StoreOp::PutMessage(msg(2, "g", ChatType::GroupChat).into()),
            StoreOp::PutCursor { user: "bob".into(), device: "phone".into(), cursor },
            StoreOp::PutCursor { user: "bob".into(), device: "old".into(), cursor },
            StoreOp::DeleteCursor { user: "bob".into(), device: "old".into() },
        ]])
        .unwrap();
        let rows = |s: &RedbServerStore| -> Vec<(u8, String, String, u64)> {
            let db = s.db.read().unwrap();
            let r = db.begin_read().unwrap();
            let t = r.open_table(CONV_MESSAGES).unwrap();
            t.iter()
                .unwrap()
                .map(|x| {
                    let (k, _) = x.unwrap();
                    let (kind, a, b, id) = k.value();
                    (kind, a.to_string(), b.to_string(), id)
                })
                .collect()
        };
        assert_eq!(rows(&s), vec![(0, "alice".into(), "bob".into(), 1), (1, "g".into(), String::new(), 2)]);
        let state = s.load().unwrap();
        assert_eq!(state.cursors["bob"].iter().collect::<Vec<_>>(), vec![(&"phone".to_string(), &cursor)]);
        assert_eq!(state.conv_messages[&ConvId::Group("g".into())].iter().copied().collect::<Vec<_>>(), vec![2]);
        // Retention drops the index row with the message.
        s.commit(&[&[StoreOp::DeleteMessage(1)]]).unwrap();
        assert_eq!(rows(&s), vec![(1, "g".into(), String::new(), 2)]);
        drop(s);
        let state = RedbServerStore::open(dir.path()).unwrap().load().unwrap();
        assert!(!state.conv_messages.contains_key(&ConvId::of(&msg(1, "bob", ChatType::Chat))));
        assert_eq!(state.cursors["bob"]["phone"], cursor);
    }
}
