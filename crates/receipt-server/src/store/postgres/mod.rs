//! The PostgreSQL store: the same data model as the embedded redb store (tables, record
//! encodings, what each operation means) in a PostgreSQL database, for operators who run
//! PostgreSQL already (docs/deployment.md).
//!
//! - [`schema`]: the schema, created and migrated at start (`receipt_schema_version`).
//! - `commit`: one transaction per [`ServerStore::commit`], set-based statements per kind of
//!   operation (multi-row `UNNEST` arrays), pipelined, synchronous commit on.
//! - `read`: [`StoreRead`] on a connection of its own; the reads of one batch share one
//!   REPEATABLE READ snapshot, opened at the first read and ended on `release()`.
//!
//! The store thread and the core thread are plain threads, each with its own connection: the
//! reads and the start-up work use the blocking `postgres` client; the commit connection is
//! tokio-postgres on a one-thread runtime of its own, to pipeline a commit's statements. The
//! commit connection also holds the cluster sequencer's session advisory lock
//! ([`ServerStore::try_lead`]): losing that connection loses the lock and the writes together.

mod commit;
mod read;
pub mod schema;

use std::sync::Arc;

use postgres::{Client, NoTls};
use receipt_core::{ChatType, ConversationKey, GroupAckKind, GroupReadAck, MsgId, WireMessage};

use super::records::{decode, decode_conv, decode_events, finish_logs};
use super::{store_err, ServerStore, StoreError, StoreRead};
use crate::core::StoreOp;
use crate::state::{Counters, DeviceCursor, Group, HashMap, MessageRecord, State};

pub use self::schema::SCHEMA_VERSION;

/// A u64 (id, seq, time) as a bigint column; bounds past `i64::MAX` are clamped (stored values
/// stay far below it: ids and seqs count up from 1, times are ms since 1970).
/// The `kind` column of `group_acks`.
pub(super) fn ack_kind(kind: GroupAckKind) -> i16 {
    match kind {
        GroupAckKind::Read => 0,
        GroupAckKind::Delivery => 1,
    }
}

pub(super) fn big(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// A bigint column as the u64 it stores.
pub(super) fn unbig(v: i64) -> u64 {
    v.max(0) as u64
}

fn chat_type_of(t: i16) -> Result<ChatType, StoreError> {
    u32::try_from(t).ok().and_then(ChatType::from_u32).ok_or_else(|| StoreError(format!("corrupt chat type {t}")))
}

/// A blocking connection to `conninfo` (a libpq connection string or URL; no TLS: keep the
/// server and PostgreSQL on one host or a private network).
pub(super) fn connect(conninfo: &str) -> Result<Client, StoreError> {
    Client::connect(conninfo, NoTls).map_err(|e| StoreError(format!("cannot connect to PostgreSQL: {e}")))
}

/// The PostgreSQL store. It holds the commit connection; the core thread's reader opens its own.
pub struct PgServerStore {
    conninfo: String,
    conn: commit::Conn,
    stmts: commit::Statements,
    /// The commit connection holds the sequencer lock (key, lease): it is never replaced by a
    /// new connection (which would write without the lock).
    leading: Option<(i64, std::time::Duration)>,
}

impl std::fmt::Debug for PgServerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password.
        f.debug_struct("PgServerStore").finish_non_exhaustive()
    }
}

impl PgServerStore {
    /// Connects, creates or migrates the schema ([`schema::migrate`]) and prepares the commit
    /// statements. Refuses a database whose schema is newer than this server knows.
    pub fn connect(conninfo: &str) -> Result<Self, StoreError> {
        schema::migrate(&mut connect(conninfo)?)?;
        let conn = commit::Conn::connect(conninfo)?;
        let stmts = commit::Statements::prepare(&conn)?;
        Ok(PgServerStore { conninfo: conninfo.to_string(), conn, stmts, leading: None })
    }

    fn load_counters_groups_cursors(tx: &mut postgres::Transaction<'_>, state: &mut State) -> Result<(), StoreError> {
        if let Some(row) = tx.query_opt("SELECT value FROM receipt_meta WHERE key = 'counters'", &[]).map_err(store_err)? {
            state.counters = decode::<Counters>("counters", row.get(0))?;
        }
        for row in tx.query("SELECT body, member_since FROM groups ORDER BY id", &[]).map_err(store_err)? {
            let mut g: Group = decode("group", row.get(0))?;
            if let Some(since) = row.get::<_, Option<&[u8]>>(1) {
                g.joined_after = decode("group members' join marks", since)?;
            }
            state.groups.insert(g.id.clone(), g);
        }
        for row in tx.query("SELECT usr, device, seq, seen FROM device_cursors", &[]).map_err(store_err)? {
            let cursor = DeviceCursor { seq: unbig(row.get(2)), seen: unbig(row.get(3)) };
            state.cursors.entry(row.get::<_, String>(0)).or_default().insert(row.get(1), cursor);
        }
        Ok(())
    }
}

/// How often the readiness check asks PostgreSQL.
const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Readiness: a thread of its own asks PostgreSQL `SELECT 1` every [`CHECK_EVERY`] on a
/// connection of its own (reconnecting when it broke) and reports it as the `postgres` check of
/// `/readyz`. It ends once the server's [`Health`](crate::Health) is gone.
pub fn spawn_readiness_check(conninfo: String, health: std::sync::Weak<crate::Health>) {
    let spawned = std::thread::Builder::new().name("receipt-pg-check".into()).spawn(move || {
        let mut client: Option<Client> = None;
        while let Some(h) = health.upgrade() {
            let r = match client.as_mut() {
                Some(c) => c.simple_query("SELECT 1").map(|_| ()).map_err(store_err),
                None => connect(&conninfo).map(|c| client = Some(c)),
            };
            if r.is_err() {
                client = None;
            }
            h.set_check("postgres", r.map_err(|e| e.to_string()));
            drop(h);
            std::thread::sleep(CHECK_EVERY);
        }
    });
    if let Err(e) = spawned {
        log::warn!("no PostgreSQL readiness check: {e}");
    }
}

/// A read-only transaction on one snapshot of the database (loading reads many tables).
fn snapshot(client: &mut Client) -> Result<postgres::Transaction<'_>, StoreError> {
    client.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).read_only(true).start().map_err(store_err)
}

impl ServerStore for PgServerStore {
    fn load(&mut self) -> Result<State, StoreError> {
        let mut client = connect(&self.conninfo)?;
        let mut tx = snapshot(&mut client)?;
        let mut state = State::default();
        for row in tx.query("SELECT id, body FROM messages", &[]).map_err(store_err)? {
            let msg: WireMessage = decode("message", row.get(1))?;
            state.messages.insert(unbig(row.get(0)), MessageRecord::new(Arc::new(msg)));
        }
        for row in tx.query("SELECT id, flags FROM message_flags", &[]).map_err(store_err)? {
            if let Some(rec) = state.messages.get_mut(&unbig(row.get(0))) {
                let f: i16 = row.get(1);
                (rec.delivered, rec.read_acked) = (f & 1 != 0, f & 2 != 0);
            }
        }
        for row in tx.query("SELECT msg_id, kind, body FROM group_acks ORDER BY msg_id, kind, ack_id", &[]).map_err(store_err)? {
            let ack: GroupReadAck = decode("group ack", row.get(2))?;
            let kind = if row.get::<_, i16>(1) == ack_kind(GroupAckKind::Delivery) { GroupAckKind::Delivery } else { GroupAckKind::Read };
            if let Some(rec) = state.messages.get_mut(&unbig(row.get(0))) {
                rec.add_ack_of(kind, ack);
            }
        }
        Self::load_counters_groups_cursors(&mut tx, &mut state)?;
        for row in tx.query("SELECT usr, up_to FROM log_base", &[]).map_err(store_err)? {
            let (user, up_to): (String, i64) = (row.get(0), row.get(1));
            state.log_base.insert(user.clone(), unbig(up_to));
            state.trimmed.insert(user, unbig(up_to));
        }
        let mut stored_heads: HashMap<String, u64> = HashMap::default();
        let mut loaded = HashMap::default();
        let messages = std::mem::take(&mut state.messages);
        let mut resolve = |id: MsgId| messages.get(&id).map(|r| r.msg.clone());
        for row in tx.query("SELECT usr, first_seq, body FROM events ORDER BY usr, first_seq", &[]).map_err(store_err)? {
            let user: &str = row.get(0);
            let log = state.logs.entry(user.to_string()).or_default();
            let last = decode_events(user, unbig(row.get(1)), row.get(2), &mut resolve, &mut loaded, log)?;
            stored_heads.insert(user.to_string(), last);
        }
        finish_logs(&mut state, stored_heads);
        state.messages = messages;
        for row in tx.query("SELECT usr, chat_type, conv, body FROM conversations", &[]).map_err(store_err)? {
            let key = ConversationKey::new(chat_type_of(row.get(1))?, row.get::<_, &str>(2));
            state.convs.entry(row.get::<_, String>(0)).or_default().insert(key, decode_conv(row.get(3))?);
        }
        for row in tx.query("SELECT usr, chat_type, conv, msg_id FROM conversation_reads", &[]).map_err(store_err)? {
            let key = ConversationKey::new(chat_type_of(row.get(1))?, row.get::<_, &str>(2));
            let conv = state.convs.entry(row.get::<_, String>(0)).or_default().entry(key).or_default();
            // Rows at or below the watermark are left over from a trim: not read singles.
            conv.read.mark_one(unbig(row.get(3)));
        }
        tx.commit().map_err(store_err)?;
        state.rebuild_indexes();
        Ok(state)
    }

    fn load_hot(&mut self) -> Result<State, StoreError> {
        let mut client = connect(&self.conninfo)?;
        let mut tx = snapshot(&mut client)?;
        let mut state = State::default();
        // Resident: bounded by `max_remembered_devices` per user, as with redb.
        Self::load_counters_groups_cursors(&mut tx, &mut state)?;
        tx.commit().map_err(store_err)?;
        Ok(state)
    }

    fn reader(&self) -> Option<Box<dyn StoreRead>> {
        Some(Box::new(read::PgReader::new(&self.conninfo)))
    }

    fn commit(&mut self, parts: &[&[StoreOp]]) -> Result<(), StoreError> {
        match commit::commit(&self.conn, &self.stmts, parts) {
            Ok(()) => Ok(()),
            Err(commit::Failed::Commit(e)) => Err(e),
            // The connection broke while idle (PostgreSQL restarted): nothing of this call was
            // committed, so it is tried once more on a new connection.
            Err(commit::Failed::Before(e)) if self.leading.is_some() => {
                Err(StoreError(format!("the commit connection holding the sequencer lock failed: {e}")))
            }
            Err(commit::Failed::Before(e)) if self.conn.is_closed() => {
                log::warn!("PostgreSQL connection lost ({e}): reconnecting");
                self.conn = commit::Conn::connect(&self.conninfo)?;
                self.stmts = commit::Statements::prepare(&self.conn)?;
                commit::commit(&self.conn, &self.stmts, parts).map_err(|(commit::Failed::Before(e) | commit::Failed::Commit(e))| e)
            }
            Err(commit::Failed::Before(e)) => Err(e),
        }
    }

    fn try_lead(&mut self, key: i64, lease: std::time::Duration) -> Result<bool, StoreError> {
        match self.leading {
            Some((k, _)) if k == key => return self.confirm_lead().map(|()| true),
            Some((k, _)) => return Err(StoreError(format!("this store leads with lock key {k} already"))),
            None => {}
        }
        if self.conn.is_closed() {
            // A standby's idle connection may have broken (PostgreSQL restarted): a new one.
            self.conn = commit::Conn::connect(&self.conninfo)?;
            self.stmts = commit::Statements::prepare(&self.conn)?;
        }
        let held = self.conn.try_lock(key, lease)?;
        if held {
            self.leading = Some((key, lease));
        }
        Ok(held)
    }

    fn confirm_lead(&mut self) -> Result<(), StoreError> {
        match self.leading {
            Some((_, lease)) => self.conn.ping(lease),
            None => Err(StoreError("the sequencer lock is not held".into())),
        }
    }

    /// Nothing to do: PostgreSQL's autovacuum gives the space of deleted rows back.
    fn compact(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
