//! [`StoreRead`] on PostgreSQL: the core thread's own connection. The reads of one batch share
//! one snapshot: a REPEATABLE READ, READ ONLY transaction opened at the batch's first read and
//! ended by [`StoreRead::release`], so they agree with each other as redb's read transaction
//! makes them, and an idle core holds no snapshot (which would hold back vacuum).

use std::cell::RefCell;
use std::sync::Arc;

use postgres::types::ToSql;
use postgres::{Client, Row, Statement};
use receipt_core::{ConversationKey, GroupAckKind, GroupReadAck, MsgId, WireMessage};

use super::{ack_kind, big, chat_type_of, connect, unbig};
use crate::state::{ConvId, ConvState, HashMap, MessageRecord};
use crate::store::records::{chat_type_code, decode, decode_conv, decode_events, resolver, TrimPrefix};
use crate::store::{store_err, LogRead, LogSweep, StoreError, StoreRead};

/// The reader's connection, opened at the first read (and again after it broke: PostgreSQL
/// restarted).
pub(super) struct PgReader {
    conninfo: String,
    conn: RefCell<Option<Conn>>,
}

struct Conn {
    client: Client,
    /// A snapshot is open (a transaction begun, not yet ended by `release`).
    open: bool,
    /// Each query prepared once per connection: a read is then one round trip.
    stmts: HashMap<&'static str, Statement>,
}

impl PgReader {
    pub(super) fn new(conninfo: &str) -> Self {
        PgReader { conninfo: conninfo.to_string(), conn: RefCell::new(None) }
    }

    /// Runs `f` inside the batch's snapshot (opening the connection and the snapshot first if
    /// needed). A connection that broke while idle (PostgreSQL restarted) is made again once,
    /// when this read opened the snapshot (reads are idempotent; none of this batch's came
    /// before). On a failure the snapshot is ended and a dead connection dropped: the next
    /// read reconnects.
    fn with<T>(
        &self,
        mut f: impl FnMut(&mut Client, &mut HashMap<&'static str, Statement>) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut cell = self.conn.borrow_mut();
        let fresh = cell.as_ref().is_none_or(|c| !c.open);
        for attempt in 0..2 {
            if cell.is_none() {
                *cell = Some(Conn { client: connect(&self.conninfo)?, open: false, stmts: HashMap::default() });
            }
            let Conn { client, open, stmts } = cell.as_mut().expect("connected above");
            let r = (|| {
                if !*open {
                    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
                    *open = true;
                }
                f(client, stmts)
            })();
            match r {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let closed = client.is_closed();
                    if closed || client.batch_execute("ROLLBACK").is_err() {
                        *cell = None;
                    } else {
                        *open = false;
                    }
                    if !(closed && fresh && attempt == 0) {
                        return Err(store_err(e));
                    }
                    log::warn!("PostgreSQL connection of the reader lost ({e}): reconnecting");
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    fn query(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        self.with(|c, stmts| {
            let stmt = match stmts.get(sql) {
                Some(s) => s.clone(),
                None => {
                    let s = c.prepare(sql)?;
                    stmts.insert(sql, s.clone());
                    s
                }
            };
            c.query(&stmt, params)
        })
    }

    fn query_opt(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    fn base(&self, user: &str) -> Result<u64, StoreError> {
        Ok(self.query_opt("SELECT up_to FROM log_base WHERE usr = $1", &[&user])?.map_or(0, |r| unbig(r.get(0))))
    }

    fn get_message(&self, id: MsgId) -> Result<Option<WireMessage>, StoreError> {
        self.query_opt("SELECT body FROM messages WHERE id = $1", &[&big(id)])?.map(|r| decode("message", r.get(0))).transpose()
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl StoreRead for PgReader {
    fn release(&self) {
        let mut cell = self.conn.borrow_mut();
        if let Some(c) = cell.as_mut() {
            if c.open {
                c.open = false;
                if let Err(e) = c.client.batch_execute("COMMIT") {
                    log::warn!("ending the read snapshot: {e}");
                    *cell = None;
                }
            }
        }
    }

    fn message(&self, id: MsgId) -> Result<Option<MessageRecord>, StoreError> {
        // An ack's count is the number of acks when it was made: the last one's is the total.
        let Some(row) = self.query_opt(
            "SELECT m.body, f.flags, \
             (SELECT a.body FROM group_acks a WHERE a.msg_id = m.id AND a.kind = 0 ORDER BY a.ack_id DESC LIMIT 1), \
             (SELECT a.body FROM group_acks a WHERE a.msg_id = m.id AND a.kind = 1 ORDER BY a.ack_id DESC LIMIT 1) \
             FROM messages m LEFT JOIN message_flags f ON f.id = m.id WHERE m.id = $1",
            &[&big(id)],
        )?
        else {
            return Ok(None);
        };
        let mut rec = MessageRecord::new(Arc::new(decode::<WireMessage>("message", row.get(0))?));
        if let Some(f) = row.get::<_, Option<i16>>(1) {
            (rec.delivered, rec.read_acked) = (f & 1 != 0, f & 2 != 0);
        }
        if let Some(last) = row.get::<_, Option<&[u8]>>(2) {
            rec.ack_count = decode::<GroupReadAck>("group ack", last)?.count;
        }
        if let Some(last) = row.get::<_, Option<&[u8]>>(3) {
            rec.delivery.count = decode::<GroupReadAck>("group delivery ack", last)?.count;
        }
        Ok(Some(rec))
    }

    fn client_id(&self, user: &str, client_id: &str) -> Result<Option<MsgId>, StoreError> {
        let row = self.query_opt("SELECT msg_id FROM client_ids WHERE sender = $1 AND client_id = $2", &[&user, &client_id])?;
        Ok(row.map(|r| unbig(r.get(0))))
    }

    fn has_sent(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self.query_opt("SELECT 1 FROM client_ids WHERE sender = $1 LIMIT 1", &[&user])?.is_some())
    }

    fn acked_by_of(&self, kind: GroupAckKind, id: MsgId, user: &str) -> Result<bool, StoreError> {
        let row = self.query_opt(
            "SELECT 1 FROM group_acks WHERE msg_id = $1 AND kind = $2 AND acker = $3 LIMIT 1",
            &[&big(id), &ack_kind(kind), &user],
        )?;
        Ok(row.is_some())
    }

    fn acks_desc_of(&self, kind: GroupAckKind, id: MsgId, start: u64, limit_: usize) -> Result<Vec<GroupReadAck>, StoreError> {
        let rows = self.query(
            "SELECT body FROM group_acks WHERE msg_id = $1 AND kind = $2 AND ack_id <= $3 ORDER BY ack_id DESC LIMIT $4",
            &[&big(id), &ack_kind(kind), &big(start), &limit(limit_)],
        )?;
        rows.iter().map(|r| decode("group ack", r.get(0))).collect()
    }

    fn messages_from(&self, first: MsgId, limit_: usize) -> Result<Vec<Arc<WireMessage>>, StoreError> {
        let rows = self.query("SELECT body FROM messages WHERE id >= $1 ORDER BY id LIMIT $2", &[&big(first), &limit(limit_)])?;
        rows.iter().map(|r| decode("message", r.get(0)).map(Arc::new)).collect()
    }

    fn conversation(&self, user: &str, key: &ConversationKey) -> Result<Option<ConvState>, StoreError> {
        let (t, id) = (i16::from(chat_type_code(key.chat_type)), key.id.as_str());
        let Some(row) =
            self.query_opt("SELECT body FROM conversations WHERE usr = $1 AND chat_type = $2 AND conv = $3", &[&user, &t, &id])?
        else {
            return Ok(None);
        };
        let mut conv = decode_conv(row.get(0))?;
        let reads = self.query(
            "SELECT msg_id FROM conversation_reads WHERE usr = $1 AND chat_type = $2 AND conv = $3 AND msg_id > $4 ORDER BY msg_id",
            &[&user, &t, &id, &big(conv.read.up_to)],
        )?;
        for r in reads {
            conv.read.mark_one(unbig(r.get(0)));
        }
        Ok(Some(conv))
    }

    fn conversations_of(&self, user: &str, limit_: usize) -> Result<Vec<(ConversationKey, ConvState)>, StoreError> {
        let rows = self.query(
            "SELECT chat_type, conv, body FROM conversations WHERE usr = $1 ORDER BY chat_type, conv LIMIT $2",
            &[&user, &limit(limit_)],
        )?;
        rows.iter()
            .map(|r| Ok((ConversationKey::new(chat_type_of(r.get(0))?, r.get::<_, &str>(1)), decode_conv(r.get(2))?.without_read_set())))
            .collect()
    }

    fn log_head(&self, user: &str) -> Result<u64, StoreError> {
        let last = self.query_opt("SELECT last_seq FROM events WHERE usr = $1 ORDER BY first_seq DESC LIMIT 1", &[&user])?;
        Ok(self.base(user)?.max(last.map_or(0, |r| unbig(r.get(0)))))
    }

    fn log_events(&self, user: &str, from: u64, rows: usize) -> Result<LogRead, StoreError> {
        let from = from.max(self.base(user)?.saturating_add(1));
        // The row holding `from` starts at or before it: the last row keyed at or below it.
        let start = self
            .query_opt(
                "SELECT first_seq FROM events WHERE usr = $1 AND first_seq <= $2 ORDER BY first_seq DESC LIMIT 1",
                &[&user, &big(from)],
            )?
            .map_or(from, |r| unbig(r.get(0)));
        let found = self.query(
            "SELECT first_seq, body FROM events WHERE usr = $1 AND first_seq >= $2 ORDER BY first_seq LIMIT $3",
            &[&user, &big(start), &limit(rows.saturating_add(1))],
        )?;
        let mut read = LogRead { events: Vec::new(), next: from, more: found.len() > rows };
        let mut resolve = resolver(|id| self.get_message(id));
        let (mut loaded, mut log) = (HashMap::default(), Vec::new());
        for row in found.iter().take(rows) {
            let last = decode_events(user, unbig(row.get(0)), row.get(1), &mut resolve.0, &mut loaded, &mut log)?;
            read.next = read.next.max(last + 1);
        }
        resolve.error()?;
        read.events = log.into_iter().filter(|e| e.seq >= from).map(|e| receipt_core::protocol::SeqEvent::clone(&e)).collect();
        Ok(read)
    }

    fn log_sweep(&self, after: Option<&str>, users: usize, rows: usize, cutoff: u64) -> Result<LogSweep, StoreError> {
        let mut sweep = LogSweep::default();
        let mut resolve = resolver(|id| self.get_message(id));
        let mut next: Option<String> = after.map(str::to_string);
        for _ in 0..users {
            // The next user with a log, in key order (an index scan of one row).
            let row = match &next {
                Some(after) => self.query_opt("SELECT usr FROM events WHERE usr > $1 ORDER BY usr LIMIT 1", &[after])?,
                None => self.query_opt("SELECT usr FROM events ORDER BY usr LIMIT 1", &[])?,
            };
            let Some(row) = row else {
                sweep.last = None;
                resolve.error()?;
                return Ok(sweep);
            };
            let user: String = row.get(0);
            let mut prefix = TrimPrefix::new(self.base(&user)?, cutoff);
            let found =
                self.query("SELECT first_seq, body FROM events WHERE usr = $1 ORDER BY first_seq LIMIT $2", &[&user, &limit(rows)])?;
            for r in &found {
                if !prefix.row(&user, unbig(r.get(0)), r.get(1), &mut resolve.0)? {
                    break;
                }
            }
            if let Some(up_to) = prefix.up_to() {
                sweep.trims.push((user.clone(), up_to));
            }
            sweep.last = Some(user.clone());
            next = Some(user);
        }
        resolve.error()?;
        Ok(sweep)
    }

    fn log_trimmed(&self, user: &str) -> Result<u64, StoreError> {
        self.base(user)
    }

    fn conv_messages_after(&self, conv: &ConvId, after: MsgId, limit_: usize) -> Result<Vec<MsgId>, StoreError> {
        let (kind, a, b) = conv.key_parts();
        let rows = self.query(
            "SELECT id FROM messages WHERE conv_kind = $1 AND conv_a = $2 AND conv_b = $3 AND id > $4 ORDER BY id LIMIT $5",
            &[&i16::from(kind), &a, &b, &big(after), &limit(limit_)],
        )?;
        Ok(rows.iter().map(|r| unbig(r.get(0))).collect())
    }
}
