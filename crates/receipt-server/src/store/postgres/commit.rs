//! One [`ServerStore::commit`](crate::store::ServerStore::commit): the operations of every part
//! grouped by kind (later writes of a key win, as applied in order would leave them), then one
//! set-based statement per kind (`UNNEST` of arrays, however many rows), in one transaction.
//! `BEGIN` and the statements are pipelined on the connection (tokio-postgres sends each as its
//! future is first polled, before any answer is read): one round trip, then `COMMIT` once every
//! statement succeeded (a `COMMIT` after a failed statement would roll back and say nothing).

use std::collections::BTreeSet;

use receipt_core::protocol::SeqEvent;
use receipt_core::{GroupAckKind, MsgId};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::{ack_kind, big};
use crate::core::StoreOp;
use crate::state::{ConvId, HashMap};
use crate::store::records::{chat_type_code, conv_record, encode_events, encode_record};
use crate::store::{store_err, StoreError};

/// The commit statements, prepared once on the commit connection.
pub(super) struct Statements {
    counters: Statement,
    messages: Statement,
    client_ids: Statement,
    flags: Statement,
    acks: Statement,
    events: Statement,
    convs: Statement,
    trim_reads: Statement,
    add_reads: Statement,
    groups: Statement,
    log_base: Statement,
    trim_events: Statement,
    put_cursors: Statement,
    delete_cursors: Statement,
    delete_messages: Statement,
}

impl Statements {
    pub(super) fn prepare(c: &Conn) -> Result<Self, StoreError> {
        let p = |sql: &str| c.block_on(c.client.prepare(sql)).map_err(|e| StoreError(format!("preparing {sql:?}: {e}")));
        Ok(Statements {
            counters: p("INSERT INTO receipt_meta (key, value) VALUES ('counters', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value")?,
            messages: p("INSERT INTO messages (id, conv_kind, conv_a, conv_b, body) \
                 SELECT * FROM unnest($1::int8[], $2::int2[], $3::text[], $4::text[], $5::bytea[]) \
                 ON CONFLICT (id) DO UPDATE SET conv_kind = excluded.conv_kind, conv_a = excluded.conv_a, \
                 conv_b = excluded.conv_b, body = excluded.body")?,
            client_ids: p("INSERT INTO client_ids (sender, client_id, msg_id) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) \
                 ON CONFLICT (sender, client_id) DO UPDATE SET msg_id = excluded.msg_id")?,
            flags: p("INSERT INTO message_flags (id, flags) SELECT * FROM unnest($1::int8[], $2::int2[]) \
                 ON CONFLICT (id) DO UPDATE SET flags = excluded.flags")?,
            acks: p("INSERT INTO group_acks (msg_id, kind, ack_id, acker, body) \
                 SELECT * FROM unnest($1::int8[], $2::int2[], $3::int8[], $4::text[], $5::bytea[]) \
                 ON CONFLICT (msg_id, kind, ack_id) DO UPDATE SET acker = excluded.acker, body = excluded.body")?,
            events: p("INSERT INTO events (usr, first_seq, last_seq, body) \
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::bytea[]) \
                 ON CONFLICT (usr, first_seq) DO UPDATE SET last_seq = excluded.last_seq, body = excluded.body")?,
            convs: p("INSERT INTO conversations (usr, chat_type, conv, body) \
                 SELECT * FROM unnest($1::text[], $2::int2[], $3::text[], $4::bytea[]) \
                 ON CONFLICT (usr, chat_type, conv) DO UPDATE SET body = excluded.body")?,
            trim_reads: p("DELETE FROM conversation_reads r \
                 USING unnest($1::text[], $2::int2[], $3::text[], $4::int8[]) AS t(usr, chat_type, conv, up_to) \
                 WHERE r.usr = t.usr AND r.chat_type = t.chat_type AND r.conv = t.conv AND r.msg_id <= t.up_to")?,
            add_reads: p("INSERT INTO conversation_reads (usr, chat_type, conv, msg_id) \
                 SELECT * FROM unnest($1::text[], $2::int2[], $3::text[], $4::int8[]) ON CONFLICT DO NOTHING")?,
            groups: p("INSERT INTO groups (id, body, member_since) SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[]) \
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body, member_since = excluded.member_since")?,
            log_base: p("INSERT INTO log_base (usr, up_to) SELECT * FROM unnest($1::text[], $2::int8[]) \
                 ON CONFLICT (usr) DO UPDATE SET up_to = excluded.up_to")?,
            // A row goes once all of its events are trimmed; a row straddling the trim stays
            // (loading and reads drop its trimmed part), as in the embedded store.
            trim_events: p("DELETE FROM events e USING unnest($1::text[], $2::int8[]) AS t(usr, up_to) \
                 WHERE e.usr = t.usr AND e.first_seq <= t.up_to AND e.last_seq <= t.up_to")?,
            put_cursors: p("INSERT INTO device_cursors (usr, device, seq, seen) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) \
                 ON CONFLICT (usr, device) DO UPDATE SET seq = excluded.seq, seen = excluded.seen")?,
            delete_cursors: p("DELETE FROM device_cursors d USING unnest($1::text[], $2::text[]) AS t(usr, device) \
                 WHERE d.usr = t.usr AND d.device = t.device")?,
            // A message with everything that hangs on it; its client id only while the id still
            // names it (a resend after retention may have taken it over).
            delete_messages: p("WITH m AS (DELETE FROM messages WHERE id = ANY($1)), \
                 f AS (DELETE FROM message_flags WHERE id = ANY($1)), \
                 a AS (DELETE FROM group_acks WHERE msg_id = ANY($1)) \
                 DELETE FROM client_ids WHERE msg_id = ANY($1)")?,
        })
    }
}

/// The read rows of one conversation in a commit: trims first (up to the highest), then the
/// adds still standing. An add followed by a trim covering it is dropped here, so applying
/// trims before adds leaves what applying the operations in order would.
#[derive(Default)]
struct Reads {
    trim: Option<MsgId>,
    add: BTreeSet<MsgId>,
}

/// Columns of one kind's rows, filled from the operations (the last write of a key wins).
#[derive(Default)]
struct Rows<'a> {
    counters: Option<Vec<u8>>,
    messages: HashMap<MsgId, (i16, ConvId, Vec<u8>)>,
    client_ids: HashMap<(&'a str, &'a str), MsgId>,
    flags: HashMap<MsgId, i16>,
    acks: HashMap<(MsgId, i16, u64), (&'a str, Vec<u8>)>,
    events: HashMap<&'a str, Vec<&'a SeqEvent>>,
    convs: HashMap<(&'a str, i16, &'a str), Vec<u8>>,
    reads: HashMap<(&'a str, i16, &'a str), Reads>,
    groups: HashMap<&'a str, (Vec<u8>, Option<Vec<u8>>)>,
    trims: HashMap<&'a str, u64>,
    cursors: HashMap<(&'a str, &'a str), Option<(u64, u64)>>,
    deleted: Vec<i64>,
}

impl<'a> Rows<'a> {
    fn add(&mut self, op: &'a StoreOp, buf: &mut Vec<u8>) {
        // One arm per operation: a new operation adds its arm (and its statement) here.
        match op {
            StoreOp::PutCounters(c) => self.counters = Some(encode_record(c, buf).to_vec()),
            StoreOp::PutMessage(m) => {
                let conv = ConvId::of(m);
                self.messages.insert(m.id, (i16::from(conv.key_parts().0), conv, encode_record(m, buf).to_vec()));
                self.client_ids.insert((m.from.as_str(), m.client_id.as_str()), m.id);
            }
            StoreOp::PutMessageFlags { id, delivered, read_acked } => {
                self.flags.insert(*id, i16::from(*delivered) | (i16::from(*read_acked) << 1));
            }
            StoreOp::DeleteMessage(id) => self.deleted.push(big(*id)),
            StoreOp::PutGroupAck(a) => {
                self.acks.insert((a.msg_id, ack_kind(GroupAckKind::Read), a.ack_id), (a.from.as_str(), encode_record(a, buf).to_vec()));
            }
            StoreOp::PutGroupDeliveryAck(a) => {
                let key = (a.msg_id, ack_kind(GroupAckKind::Delivery), a.ack_id);
                self.acks.insert(key, (a.from.as_str(), encode_record(a, buf).to_vec()));
            }
            StoreOp::AppendEvent { user, event } => self.events.entry(user.as_str()).or_default().push(&**event),
            StoreOp::PutConversation { user, key, state } => {
                let k = (user.as_str(), i16::from(chat_type_code(key.chat_type)), key.id.as_str());
                self.convs.insert(k, encode_record(&conv_record(state), buf).to_vec());
            }
            StoreOp::AddRead { user, key, msg_id } => {
                let k = (user.as_str(), i16::from(chat_type_code(key.chat_type)), key.id.as_str());
                self.reads.entry(k).or_default().add.insert(*msg_id);
            }
            StoreOp::TrimReads { user, key, up_to } => {
                let k = (user.as_str(), i16::from(chat_type_code(key.chat_type)), key.id.as_str());
                let r = self.reads.entry(k).or_default();
                r.add.retain(|id| id > up_to);
                r.trim = Some(r.trim.map_or(*up_to, |t| t.max(*up_to)));
            }
            StoreOp::PutGroup(g) => {
                let since = (!g.joined_after.is_empty()).then(|| encode_record(&g.joined_after, buf).to_vec());
                self.groups.insert(g.id.as_str(), (encode_record(g, buf).to_vec(), since));
            }
            StoreOp::TrimLog { user, up_to } => {
                self.trims.insert(user.as_str(), *up_to);
            }
            StoreOp::PutCursor { user, device, cursor } => {
                self.cursors.insert((user.as_str(), device.as_str()), Some((cursor.seq, cursor.seen)));
            }
            StoreOp::DeleteCursor { user, device } => {
                self.cursors.insert((user.as_str(), device.as_str()), None);
            }
        }
    }
}

/// The commit connection: tokio-postgres on a runtime of its own (one thread: the store
/// thread, inside `block_on`), so that a commit's statements are pipelined.
pub(super) struct Conn {
    /// Always `Some` but in `drop`.
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Without blocking: the store may be dropped on a runtime's thread (a server that
        // failed to start), where dropping a runtime the blocking way panics.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Conn {
    /// Connects with synchronous commit on for the session (durable before `COMMIT` returns,
    /// whatever the database's or role's default says).
    pub(super) fn connect(conninfo: &str) -> Result<Conn, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(store_err)?;
        let (client, connection) = rt
            .block_on(tokio_postgres::connect(conninfo, tokio_postgres::NoTls))
            .map_err(|e| StoreError(format!("cannot connect to PostgreSQL: {e}")))?;
        // Driven while the store thread is in `block_on` (every use of the connection is).
        rt.spawn(async move {
            if let Err(e) = connection.await {
                log::warn!("PostgreSQL commit connection: {e}");
            }
        });
        rt.block_on(client.batch_execute("SET synchronous_commit = on")).map_err(store_err)?;
        Ok(Conn { rt: Some(rt), client })
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("only taken in drop").block_on(f)
    }

    /// The connection broke (PostgreSQL restarted or went away).
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Tries the session advisory lock `key` (not waiting for it). Once held, PostgreSQL ends
    /// this session when it stays idle for two leases (the holder renews every third of one):
    /// a holder paused that long loses the lock and, with it, the connection its commits go
    /// through. Idle inside a transaction too: a holder paused between a commit's statements
    /// and its `COMMIT` (a SIGSTOP lands there under load) is ended the same way, its
    /// transaction rolled back (nothing of it was answered). Two leases, not one: a slow
    /// start-up or a loaded machine does not cost a failover, and the holder's own lease (one)
    /// runs out first anyway.
    pub(super) fn try_lock(&self, key: i64, lease: std::time::Duration) -> Result<bool, StoreError> {
        let held: bool = self.block_on(self.client.query_one("SELECT pg_try_advisory_lock($1)", &[&key])).map_err(store_err)?.get(0);
        if held {
            let ms = lease.as_millis().max(1) * 2;
            let set = format!("SET idle_session_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms}");
            self.block_on(self.client.batch_execute(&set)).map_err(store_err)?;
        }
        Ok(held)
    }

    /// A cheap round trip (at most `limit`): the session, and so its advisory lock, still stands.
    pub(super) fn ping(&self, limit: std::time::Duration) -> Result<(), StoreError> {
        match self.block_on(async { tokio::time::timeout(limit, self.client.simple_query("SELECT 1")).await }) {
            Ok(r) => r.map(drop).map_err(store_err),
            Err(_) => Err(StoreError(format!("PostgreSQL did not answer within {limit:?}"))),
        }
    }
}

/// Why a commit failed: `Before`: before `COMMIT` was sent (nothing of it is stored: an open
/// transaction never commits by itself), so it may be tried again on a new connection;
/// `Commit`: `COMMIT` itself failed (stored or not: not known).
pub(super) enum Failed {
    Before(StoreError),
    Commit(StoreError),
}

/// The statements of one commit with their parameters (arrays borrowing the operations).
type Queue<'r> = Vec<(&'r Statement, Vec<Box<dyn ToSql + Sync + Send + 'r>>)>;

/// Applies `parts` in one transaction (see the module doc), durable when it returns `Ok`.
pub(super) fn commit(conn: &Conn, s: &Statements, parts: &[&[StoreOp]]) -> Result<(), Failed> {
    if parts.iter().all(|p| p.is_empty()) {
        return Ok(());
    }
    let mut rows = Rows::default();
    let mut buf = Vec::with_capacity(256);
    for op in parts.iter().flat_map(|p| p.iter()) {
        rows.add(op, &mut buf);
    }
    let queue = statements(&rows, s, &mut buf);
    let client = &conn.client;
    conn.block_on(async {
        let execs = queue.iter().map(|(st, params)| client.execute_raw(*st, params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync))));
        // Polled in order: BEGIN first, then each statement, all sent before any answer is read.
        let (begun, done) = futures_util::future::join(client.batch_execute("BEGIN"), futures_util::future::join_all(execs)).await;
        if let Err(e) = begun.and(done.into_iter().try_for_each(|r| r.map(drop))) {
            // Nothing is committed; end the transaction if the connection still stands.
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(Failed::Before(store_err(e)));
        }
        client.batch_execute("COMMIT").await.map_err(|e| Failed::Commit(store_err(e)))
    })
}

/// The statements of a commit, one per kind of operation present, in an order that leaves what
/// applying the operations in order would (see [`Reads`] and the deletions, last).
fn statements<'r>(rows: &'r Rows<'_>, s: &'r Statements, buf: &mut Vec<u8>) -> Queue<'r> {
    let mut q: Queue<'r> = Vec::new();
    if let Some(c) = &rows.counters {
        q.push((&s.counters, vec![Box::new(c)]));
    }
    if !rows.messages.is_empty() {
        let (mut a, mut b, mut c, mut d, mut e) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, (kind, conv, body)) in &rows.messages {
            let (_, conv_a, conv_b) = conv.key_parts();
            {
                a.push(big(*id));
                b.push(*kind);
                c.push(conv_a);
                d.push(conv_b);
                e.push(body.as_slice());
            };
        }
        q.push((&s.messages, vec![Box::new(a), Box::new(b), Box::new(c), Box::new(d), Box::new(e)]));
    }
    if !rows.client_ids.is_empty() {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for ((sender, client_id), id) in &rows.client_ids {
            {
                a.push(*sender);
                b.push(*client_id);
                c.push(big(*id));
            };
        }
        q.push((&s.client_ids, vec![Box::new(a), Box::new(b), Box::new(c)]));
    }
    if !rows.flags.is_empty() {
        let (ids, flags): (Vec<i64>, Vec<i16>) = rows.flags.iter().map(|(id, f)| (big(*id), *f)).unzip();
        q.push((&s.flags, vec![Box::new(ids), Box::new(flags)]));
    }
    if !rows.acks.is_empty() {
        let (mut a, mut k, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((msg_id, kind, ack_id), (acker, body)) in &rows.acks {
            a.push(big(*msg_id));
            k.push(*kind);
            b.push(big(*ack_id));
            c.push(*acker);
            d.push(body.as_slice());
        }
        q.push((&s.acks, vec![Box::new(a), Box::new(k), Box::new(b), Box::new(c), Box::new(d)]));
    }
    if !rows.events.is_empty() {
        // Each user's events of this commit in one row, keyed by its first seq.
        let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (user, evs) in &rows.events {
            a.push(*user);
            b.push(big(evs[0].seq));
            c.push(big(evs[evs.len() - 1].seq));
            d.push(encode_events(evs, buf).to_vec());
        }
        q.push((&s.events, vec![Box::new(a), Box::new(b), Box::new(c), Box::new(d)]));
    }
    if !rows.convs.is_empty() {
        let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((user, t, conv), body) in &rows.convs {
            {
                a.push(*user);
                b.push(*t);
                c.push(*conv);
                d.push(body.as_slice());
            };
        }
        q.push((&s.convs, vec![Box::new(a), Box::new(b), Box::new(c), Box::new(d)]));
    }
    if !rows.reads.is_empty() {
        let (mut trims, mut adds) = ((Vec::new(), Vec::new(), Vec::new(), Vec::new()), (Vec::new(), Vec::new(), Vec::new(), Vec::new()));
        for ((user, t, conv), r) in &rows.reads {
            if let Some(up_to) = r.trim {
                trims.0.push(*user);
                trims.1.push(*t);
                trims.2.push(*conv);
                trims.3.push(big(up_to));
            }
            for id in &r.add {
                adds.0.push(*user);
                adds.1.push(*t);
                adds.2.push(*conv);
                adds.3.push(big(*id));
            }
        }
        if !trims.0.is_empty() {
            q.push((&s.trim_reads, vec![Box::new(trims.0), Box::new(trims.1), Box::new(trims.2), Box::new(trims.3)]));
        }
        if !adds.0.is_empty() {
            q.push((&s.add_reads, vec![Box::new(adds.0), Box::new(adds.1), Box::new(adds.2), Box::new(adds.3)]));
        }
    }
    if !rows.groups.is_empty() {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for (id, (body, since)) in &rows.groups {
            {
                a.push(*id);
                b.push(body.as_slice());
                c.push(since.as_deref());
            };
        }
        q.push((&s.groups, vec![Box::new(a), Box::new(b), Box::new(c)]));
    }
    if !rows.trims.is_empty() {
        // After this commit's events are written: a trim drops whole rows at or below it.
        let (users, up_to): (Vec<&str>, Vec<i64>) = rows.trims.iter().map(|(u, t)| (*u, big(*t))).unzip();
        q.push((&s.log_base, vec![Box::new(users.clone()), Box::new(up_to.clone())]));
        q.push((&s.trim_events, vec![Box::new(users), Box::new(up_to)]));
    }
    if !rows.cursors.is_empty() {
        let (mut put, mut gone) = ((Vec::new(), Vec::new(), Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
        for ((user, device), c) in &rows.cursors {
            if let Some((seq, seen)) = c {
                put.0.push(*user);
                put.1.push(*device);
                put.2.push(big(*seq));
                put.3.push(big(*seen));
            } else {
                gone.0.push(*user);
                gone.1.push(*device);
            }
        }
        if !put.0.is_empty() {
            q.push((&s.put_cursors, vec![Box::new(put.0), Box::new(put.1), Box::new(put.2), Box::new(put.3)]));
        }
        if !gone.0.is_empty() {
            q.push((&s.delete_cursors, vec![Box::new(gone.0), Box::new(gone.1)]));
        }
    }
    if !rows.deleted.is_empty() {
        // Last: a message is deleted after anything this commit wrote about it (ids are never
        // reused, so a delete is the last operation on its message).
        q.push((&s.delete_messages, vec![Box::new(&rows.deleted)]));
    }
    q
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Conn;

    /// Whether `other` takes the lock `key` within `limit` (polling).
    fn taken_within(other: &Conn, key: i64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if other.try_lock(key, Duration::from_secs(3)).unwrap() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// A holder paused inside a transaction (between a commit's statements and its `COMMIT`)
    /// loses the sequencer lock after two leases, as an idle one does: never a lock held
    /// forever by a stopped process. (Found by the SIGSTOP cluster test: a stop landing
    /// mid-commit kept the lock, and the standby never led.)
    #[test]
    fn a_holder_paused_inside_a_transaction_loses_the_lock_after_two_leases() {
        let Some(db) = receipt_testkit::pg::database() else { return };
        let lease = Duration::from_millis(150);
        let holder = Conn::connect(&db.conninfo).unwrap();
        let other = Conn::connect(&db.conninfo).unwrap();
        assert!(holder.try_lock(41, lease).unwrap());
        assert!(!other.try_lock(41, lease).unwrap(), "held");
        holder.block_on(holder.client.batch_execute("BEGIN; SELECT 1")).unwrap();
        assert!(taken_within(&other, 41, Duration::from_secs(5)), "the paused holder's session was not ended");
        assert!(holder.ping(Duration::from_secs(2)).is_err(), "the holder's connection is gone with its lock");

        // Idle outside a transaction, the same.
        let holder = Conn::connect(&db.conninfo).unwrap();
        assert!(holder.try_lock(42, lease).unwrap());
        assert!(taken_within(&other, 42, Duration::from_secs(5)), "the idle holder's session was not ended");
    }
}
