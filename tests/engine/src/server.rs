//! The real server core with its real redb store, committed the way the server's pipeline does.

use std::collections::{BTreeMap, BTreeSet};

use receipt_core::protocol::{ClientFrame, Response, ServerEvent};
use receipt_core::{AckKind, ChatError, ConversationKey, GroupId, MsgId, UserId};
use receipt_server::store::{RedbServerStore, ServerStore};
use receipt_server::{CoreConfig, Effects, ServerConfig, ServerCore, SessionId, State};
use tempfile::TempDir;

/// The rules the harness runs by default: the server's defaults with group read acks on (as a
/// deployment that offers them configures it).
/// The core's cache budget in the harness: a few entries (a message is ~300 bytes).
pub const CACHE_BYTES: usize = 2048;

pub fn default_config() -> CoreConfig {
    let mut cfg = CoreConfig::from(&ServerConfig::default());
    cfg.group_ack.enabled = true;
    cfg
}

/// [`ServerCore`] plus a [`RedbServerStore`] in a temp dir. Like the server's core thread, it commits
/// the store operations of each batch of effects before any of its frames leaves; a restart
/// reloads [`State`] from that store only, so what survives is exactly what was committed.
///
/// The core runs with the hot-state cache and a tiny budget ([`CACHE_BYTES`]): nearly every
/// message and conversation is evicted after its batch and read back from the store, so every
/// scenario also checks that the answers do not depend on what happens to be in memory.
///
pub struct SimServer {
    core: ServerCore,
    store: RedbServerStore,
    cfg: CoreConfig,
    dir: TempDir,
    /// Batches committed (all of them non-empty).
    pub commits: usize,
    /// Times the server was restarted.
    pub restarts: usize,
}

impl SimServer {
    pub fn new(cfg: CoreConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = RedbServerStore::open(dir.path()).expect("server store");
        let core = Self::core_on(&cfg, &mut store);
        SimServer { core, store, cfg, dir, commits: 0, restarts: 0 }
    }

    fn core_on(cfg: &CoreConfig, store: &mut RedbServerStore) -> ServerCore {
        let state = store.load_hot().expect("load");
        ServerCore::with_store(cfg.clone(), state, store.reader().expect("redb reads"), CACHE_BYTES)
    }

    /// Everything the server stored (what it answers from: memory holds only a cache of it,
    /// and every batch is committed before its frames leave).
    pub fn state(&self) -> State {
        self.store.load_all().expect("load")
    }

    /// Online sessions of `user`, as the core sees them.
    pub fn sessions_of(&self, user: &str) -> &[SessionId] {
        self.core.sessions_of(user)
    }

    pub(crate) fn core(&mut self) -> &mut ServerCore {
        &mut self.core
    }

    /// Commits `fx.ops` durably (one transaction, as one batch of the server's pipeline) and
    /// hands back the effects, whose frames may now be sent.
    pub(crate) fn commit(&mut self, fx: Effects) -> Effects {
        if !fx.ops.is_empty() {
            self.store.commit(&[&fx.ops]).expect("server commit");
            self.commits += 1;
        }
        self.core.committed(fx.batch);
        assert!(self.core.cache_bytes_used() <= CACHE_BYTES, "the cache holds {} bytes", self.core.cache_bytes_used());
        fx
    }

    /// The process dies and starts again: sessions and memory are gone, the state is reloaded
    /// from the store.
    pub(crate) fn restart(&mut self) {
        // Close the database before reopening it (redb refuses a second open of one file).
        let placeholder = ServerCore::new(self.cfg.clone(), State::default());
        drop(std::mem::replace(&mut self.core, placeholder));
        let fresh = tempfile::tempdir().expect("temp dir");
        let placeholder = RedbServerStore::open(fresh.path()).expect("placeholder store");
        drop(std::mem::replace(&mut self.store, placeholder));
        self.store = RedbServerStore::open(self.dir.path()).expect("reopen server store");
        self.core = Self::core_on(&self.cfg, &mut self.store);
        self.restarts += 1;
    }

    /// Applies `frame` as `user` without a session (the core's admin path, e.g. to set up
    /// groups) and commits it. Frames it produces for online sessions come back to be routed.
    pub(crate) fn admin(&mut self, now: u64, user: &str, frame: ClientFrame) -> (Result<Response, ChatError>, Effects) {
        let (res, fx) = self.core.apply_as(now, user, frame);
        let fx = self.commit(fx);
        (res, fx)
    }

    // ----- what the server holds, for assertions -----

    /// Every ack the server forwarded to a message's sender, counted from the sender's event
    /// log: (kind, message, acker) -> times. A receipt the sender hears twice shows up as 2.
    pub fn forwarded(&self) -> BTreeMap<(AckKind, MsgId, UserId), u32> {
        let mut out = BTreeMap::new();
        for (owner, log) in &self.state().logs {
            for e in log {
                let key = match &*e.event {
                    ServerEvent::Delivered { msg_id, from, by, .. } if from == owner => (AckKind::Delivery, *msg_id, by.clone()),
                    ServerEvent::Read { msg_id, from, by, .. } if from == owner => (AckKind::Read, *msg_id, by.clone()),
                    ServerEvent::GroupRead { sender, ack, .. } if sender == owner => (AckKind::Group, ack.msg_id, ack.from.clone()),
                    _ => continue,
                };
                *out.entry(key).or_default() += 1;
            }
        }
        out
    }

    /// How many times the server forwarded `kind` acks of `msg` (all ackers together).
    pub fn forwarded_count(&self, kind: AckKind, msg: MsgId) -> u32 {
        self.forwarded().iter().filter(|((k, m, _), _)| *k == kind && *m == msg).map(|(_, n)| n).sum()
    }

    /// The server's unread count of `user` in `key` (0 for a conversation it does not have).
    pub fn unread(&self, user: &str, key: &ConversationKey) -> u32 {
        self.state().convs.get(user).and_then(|m| m.get(key)).map_or(0, |c| c.unread)
    }

    /// The conversations the server keeps read state of for `user`.
    pub fn conversations_of(&self, user: &str) -> BTreeSet<ConversationKey> {
        self.state().convs.get(user).map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// The recipient's read receipt of 1:1 message `id` reached the server: acked one by one,
    /// or covered by a conversation ack (whose receipt the sender got instead).
    pub fn read_receipt_of(&self, id: MsgId) -> bool {
        let state = self.state();
        let Some(rec) = state.messages.get(&id) else { return false };
        let key = ConversationKey::new(rec.msg.chat_type, rec.msg.from.clone());
        let covered = state.convs.get(&rec.msg.to).and_then(|m| m.get(&key)).is_some_and(|c| c.receipt_up_to >= id);
        rec.read_acked || covered
    }

    /// `user`'s group read ack of `id` is stored.
    pub fn group_acked_by(&self, id: MsgId, user: &str) -> bool {
        self.state().messages.get(&id).is_some_and(|r| r.ackers.contains(user))
    }

    /// Members of `group`.
    pub fn members(&self, group: &GroupId) -> Vec<UserId> {
        self.state().groups.get(group).map(|g| g.members.keys().cloned().collect()).unwrap_or_default()
    }
}
