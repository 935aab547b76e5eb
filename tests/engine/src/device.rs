//! One client device: a real [`ClientEngine`] over a store that plays its disk.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use receipt_core::engine::{ClientEngine, ClientEvent, EngineConfig};
use receipt_core::protocol::ClientFrame;
use receipt_core::store::{ClientStore, MemStore, RedbStore, Snapshot, StoreBatch, StoreError};
use receipt_core::{AckKind, ChatMessage, ChatOptions, ConversationKey, DeviceId, MsgId, ReqId, UserId};
use tempfile::TempDir;

use crate::net::Conn;

/// Which store a device keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// A [`MemStore`]; a restart reopens a clone of it (the same "disk"). Fast.
    Mem,
    /// The real client [`RedbStore`] in a temp dir; a restart closes and reopens the file.
    Redb,
}

/// The device's store: either kind behind one engine type, so tests call the engine directly.
pub enum DeviceStore {
    Mem(MemStore),
    Redb(RedbStore),
}

impl ClientStore for DeviceStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        match self {
            DeviceStore::Mem(s) => s.load(),
            DeviceStore::Redb(s) => s.load(),
        }
    }
    fn commit(&mut self, batch: &StoreBatch) -> Result<(), StoreError> {
        match self {
            DeviceStore::Mem(s) => s.commit(batch),
            DeviceStore::Redb(s) => s.commit(batch),
        }
    }
    fn message(&self, id: MsgId) -> Result<Option<ChatMessage>, StoreError> {
        match self {
            DeviceStore::Mem(s) => s.message(id),
            DeviceStore::Redb(s) => s.message(id),
        }
    }
    fn conversation_messages(
        &self,
        key: &ConversationKey,
        ids: Range<MsgId>,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        match self {
            DeviceStore::Mem(s) => s.conversation_messages(key, ids, limit, newest_first),
            DeviceStore::Redb(s) => s.conversation_messages(key, ids, limit, newest_first),
        }
    }
}

/// Messages a device keeps in memory: tiny, so every run evicts constantly and the engine's
/// reads by key and by range (not its cache) carry the rules.
pub const TEST_MESSAGE_CACHE: usize = 3;

fn engine_config(user: &str, name: &str, options: ChatOptions) -> EngineConfig {
    let mut cfg = EngineConfig::new(user, name, options);
    cfg.message_cache = TEST_MESSAGE_CACHE;
    cfg
}

const CLIENT_DB: &str = "client.redb";

pub struct Device {
    pub user: UserId,
    pub name: DeviceId,
    pub options: ChatOptions,
    pub engine: ClientEngine<DeviceStore>,
    /// Events the app heard, in order (taken out of the engine after every input).
    pub events: Vec<ClientEvent>,
    /// Every ack request this device put on the wire: (kind, msg) -> distinct reqs.
    pub ack_reqs: BTreeMap<(AckKind, MsgId), BTreeSet<ReqId>>,
    /// The connection, while there is one.
    pub(crate) conn: Option<Conn>,
    disk: Disk,
    dir: Option<TempDir>,
}

impl Device {
    pub fn new(user: &str, name: &str, options: ChatOptions, disk: Disk) -> Self {
        let (store, dir) = match disk {
            Disk::Mem => (DeviceStore::Mem(MemStore::default()), None),
            Disk::Redb => {
                let dir = tempfile::tempdir().expect("temp dir");
                (DeviceStore::Redb(RedbStore::open(dir.path().join(CLIENT_DB)).expect("client store")), Some(dir))
            }
        };
        let engine = ClientEngine::open(engine_config(user, name, options.clone()), store).expect("open engine");
        Device {
            user: user.into(),
            name: name.into(),
            options,
            engine,
            events: Vec::new(),
            ack_reqs: BTreeMap::new(),
            conn: None,
            disk,
            dir,
        }
    }

    /// A connection is up (logged in or logging in).
    pub fn online(&self) -> bool {
        self.conn.is_some()
    }

    /// The process dies and starts again: the engine comes back from its disk only. The caller
    /// drops the connection.
    pub(crate) fn reopen(&mut self) {
        let cfg = engine_config(&self.user, &self.name, self.options.clone());
        let disk = match self.disk {
            Disk::Mem => match self.engine.store() {
                DeviceStore::Mem(s) => DeviceStore::Mem(s.clone()),
                DeviceStore::Redb(_) => unreachable!("a Mem device has a MemStore"),
            },
            Disk::Redb => {
                // Close the file first: redb refuses a second open of it.
                let placeholder = ClientEngine::open(cfg.clone(), DeviceStore::Mem(MemStore::default())).expect("placeholder");
                drop(std::mem::replace(&mut self.engine, placeholder));
                let path = self.dir.as_ref().expect("a Redb device has a dir").path().join(CLIENT_DB);
                DeviceStore::Redb(RedbStore::open(path).expect("reopen client store"))
            }
        };
        self.engine = ClientEngine::open(cfg, disk).expect("reopen engine");
    }

    /// Records an outgoing frame's ack request (for "never sent twice" checks).
    pub(crate) fn note_transmit(&mut self, f: &ClientFrame) {
        let key = match f {
            ClientFrame::DeliveryAck { msg_id, .. } => (AckKind::Delivery, *msg_id),
            ClientFrame::ReadAck { msg_id, .. } => (AckKind::Read, *msg_id),
            ClientFrame::GroupAck { msg_id, .. } => (AckKind::Group, *msg_id),
            _ => return,
        };
        self.ack_reqs.entry(key).or_default().insert(f.req().expect("acks carry a req"));
    }

    pub fn drain_events(&mut self) {
        while let Some(e) = self.engine.poll_event() {
            self.events.push(e);
        }
    }

    pub fn take_events(&mut self) -> Vec<ClientEvent> {
        self.drain_events();
        std::mem::take(&mut self.events)
    }
}
