//! One [`ServerStore::commit`](crate::store::ServerStore::commit): the operations of every part
//! grouped by kind (later writes of a key win, as applied in order would leave them), then one
//! set-based statement per kind (`UNNEST` of arrays: one round trip however many rows), in one
//! transaction.

use std::collections::BTreeSet;

use postgres::{Client, Statement};
use receipt_core::protocol::SeqEvent;
use receipt_core::MsgId;

use super::big;
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
    pub(super) fn prepare(c: &mut Client) -> Result<Self, StoreError> {
        let mut p = |sql: &str| c.prepare(sql).map_err(|e| StoreError(format!("preparing {sql:?}: {e}")));
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
            acks: p("INSERT INTO group_acks (msg_id, ack_id, acker, body) \
                 SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::bytea[]) \
                 ON CONFLICT (msg_id, ack_id) DO UPDATE SET acker = excluded.acker, body = excluded.body")?,
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
    acks: HashMap<(MsgId, u64), (&'a str, Vec<u8>)>,
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
                self.acks.insert((a.msg_id, a.ack_id), (a.from.as_str(), encode_record(a, buf).to_vec()));
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

/// Why a commit failed: `Begin`: before anything of it was sent (the transaction did not
/// start), so it may be tried again on a new connection; `Applying`: during or after its
/// statements (not applied, or, for a failed `COMMIT`, not known).
pub(super) enum Failed {
    Begin(StoreError),
    Applying(StoreError),
}

/// Applies `parts` in one transaction (see the module doc), durable when it returns `Ok`.
pub(super) fn commit(client: &mut Client, s: &Statements, parts: &[&[StoreOp]]) -> Result<(), Failed> {
    if parts.iter().all(|p| p.is_empty()) {
        return Ok(());
    }
    let mut tx = client.transaction().map_err(|e| Failed::Begin(store_err(e)))?;
    apply(&mut tx, s, parts).map_err(Failed::Applying)?;
    tx.commit().map_err(|e| Failed::Applying(store_err(e)))
}

fn apply(tx: &mut postgres::Transaction<'_>, s: &Statements, parts: &[&[StoreOp]]) -> Result<(), StoreError> {
    let mut rows = Rows::default();
    let mut buf = Vec::with_capacity(256);
    for op in parts.iter().flat_map(|p| p.iter()) {
        rows.add(op, &mut buf);
    }
    if let Some(c) = &rows.counters {
        tx.execute(&s.counters, &[c]).map_err(store_err)?;
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
        tx.execute(&s.messages, &[&a, &b, &c, &d, &e]).map_err(store_err)?;
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
        tx.execute(&s.client_ids, &[&a, &b, &c]).map_err(store_err)?;
    }
    if !rows.flags.is_empty() {
        let (ids, flags): (Vec<i64>, Vec<i16>) = rows.flags.iter().map(|(id, f)| (big(*id), *f)).unzip();
        tx.execute(&s.flags, &[&ids, &flags]).map_err(store_err)?;
    }
    if !rows.acks.is_empty() {
        let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((msg_id, ack_id), (acker, body)) in &rows.acks {
            {
                a.push(big(*msg_id));
                b.push(big(*ack_id));
                c.push(*acker);
                d.push(body.as_slice());
            };
        }
        tx.execute(&s.acks, &[&a, &b, &c, &d]).map_err(store_err)?;
    }
    if !rows.events.is_empty() {
        // Each user's events of this commit in one row, keyed by its first seq.
        let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (user, evs) in &rows.events {
            a.push(*user);
            b.push(big(evs[0].seq));
            c.push(big(evs[evs.len() - 1].seq));
            d.push(encode_events(evs, &mut buf).to_vec());
        }
        tx.execute(&s.events, &[&a, &b, &c, &d]).map_err(store_err)?;
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
        tx.execute(&s.convs, &[&a, &b, &c, &d]).map_err(store_err)?;
    }
    if !rows.reads.is_empty() {
        let (mut trims, mut adds) = ((Vec::new(), Vec::new(), Vec::new(), Vec::new()), (Vec::new(), Vec::new(), Vec::new(), Vec::new()));
        for ((user, t, conv), r) in &rows.reads {
            if let Some(up_to) = r.trim {
                (trims.0.push(*user), trims.1.push(*t), trims.2.push(*conv), trims.3.push(big(up_to)));
            }
            for id in &r.add {
                (adds.0.push(*user), adds.1.push(*t), adds.2.push(*conv), adds.3.push(big(*id)));
            }
        }
        if !trims.0.is_empty() {
            tx.execute(&s.trim_reads, &[&trims.0, &trims.1, &trims.2, &trims.3]).map_err(store_err)?;
        }
        if !adds.0.is_empty() {
            tx.execute(&s.add_reads, &[&adds.0, &adds.1, &adds.2, &adds.3]).map_err(store_err)?;
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
        tx.execute(&s.groups, &[&a, &b, &c]).map_err(store_err)?;
    }
    if !rows.trims.is_empty() {
        // After this commit's events are written: a trim drops whole rows at or below it.
        let (users, up_to): (Vec<&str>, Vec<i64>) = rows.trims.iter().map(|(u, t)| (*u, big(*t))).unzip();
        tx.execute(&s.log_base, &[&users, &up_to]).map_err(store_err)?;
        tx.execute(&s.trim_events, &[&users, &up_to]).map_err(store_err)?;
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
            tx.execute(&s.put_cursors, &[&put.0, &put.1, &put.2, &put.3]).map_err(store_err)?;
        }
        if !gone.0.is_empty() {
            tx.execute(&s.delete_cursors, &[&gone.0, &gone.1]).map_err(store_err)?;
        }
    }
    if !rows.deleted.is_empty() {
        // Last: a message is deleted after anything this commit wrote about it (ids are never
        // reused, so a delete is the last operation on its message).
        tx.execute(&s.delete_messages, &[&rows.deleted]).map_err(store_err)?;
    }
    Ok(())
}
