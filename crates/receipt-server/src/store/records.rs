//! Record encoding of the redb store: postcard after a one-byte format version; rows written
//! by older versions are JSON and still load.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;

use receipt_core::protocol::{SeqEvent, ServerEvent};
use receipt_core::rules::ReadMark;
use receipt_core::{ChatType, GroupReadAck, GroupRole, MsgId, WireMessage};

use super::StoreError;
use crate::state::{ConvState, HashMap, LogEvent, State};

/// Format version byte of binary records.
const BIN_V1: u8 = 1;

fn json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError(format!("corrupt {what}: {e}")))
}

/// A record: binary (version byte first) or, from an older version, JSON.
pub(super) fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.first() {
        Some(&BIN_V1) => postcard::from_bytes(&bytes[1..]).map_err(|e| StoreError(format!("corrupt {what}: {e}"))),
        _ => json(what, bytes),
    }
}

/// Encodes `v` (version byte, then postcard) into `buf` (cleared first).
pub(super) fn encode_record<'b, T: serde::Serialize + ?Sized>(v: &T, buf: &'b mut Vec<u8>) -> &'b [u8] {
    buf.clear();
    buf.push(BIN_V1);
    let mut out = std::mem::take(buf);
    out = postcard::to_extend(v, out).expect("stored types serialize");
    *buf = out;
    buf.as_slice()
}

/// A conversation's stored fields (its read singles are stored in `READS`): unread, read
/// watermark, receipt mark, newest, newest received.
pub(super) type ConvRec = (u32, MsgId, MsgId, MsgId, MsgId);

/// The record of a conversation.
pub(super) fn conv_record(c: &ConvState) -> ConvRec {
    (c.unread, c.read.up_to, c.receipt_up_to, c.newest, c.newest_received)
}

/// A conversation row as older versions wrote it: JSON, under the old field names, with the
/// read singles inside.
#[derive(serde::Deserialize)]
struct LegacyConv {
    unread: u32,
    read_wm: MsgId,
    ack_wm: MsgId,
    newest: MsgId,
    newest_in: MsgId,
    #[serde(default)]
    read_set: BTreeSet<MsgId>,
}

pub(super) fn decode_conv(bytes: &[u8]) -> Result<ConvState, StoreError> {
    let (unread, up_to, receipt_up_to, newest, newest_received, singles) = match bytes.first() {
        Some(&BIN_V1) => {
            let (unread, up_to, receipt_up_to, newest, newest_received): ConvRec =
                postcard::from_bytes(&bytes[1..]).map_err(|e| StoreError(format!("corrupt conversation: {e}")))?;
            (unread, up_to, receipt_up_to, newest, newest_received, BTreeSet::new())
        }
        _ => {
            let c: LegacyConv = json("conversation", bytes)?;
            (c.unread, c.read_wm, c.ack_wm, c.newest, c.newest_in, c.read_set)
        }
    };
    Ok(ConvState { unread, read: ReadMark { up_to, singles }, receipt_up_to, newest, newest_received })
}

/// A stored event. `ServerEvent` is internally tagged on the wire, which postcard cannot decode;
/// this mirror is externally tagged (a variant index). Generic so that encoding borrows
/// (`&str`, `&WireMessage`, ...) and decoding owns. Append variants only: the index is stored.
#[derive(serde::Serialize, serde::Deserialize)]
enum Ev<S, M, A> {
    Message(M),
    Delivered {
        msg_id: MsgId,
        from: S,
        to: S,
        by: S,
        timestamp: u64,
    },
    Read {
        msg_id: MsgId,
        from: S,
        to: S,
        by: S,
        timestamp: u64,
    },
    ConversationRead {
        chat_type: ChatType,
        from: S,
        to: S,
        up_to: MsgId,
        timestamp: u64,
        device: S,
    },
    GroupRead {
        group: S,
        sender: S,
        ack: A,
    },
    ReadState {
        chat_type: ChatType,
        conversation: S,
        msg_id: Option<MsgId>,
        up_to: MsgId,
    },
    Membership {
        group: S,
        role: Option<GroupRole>,
        chat_room: bool,
    },
    /// A `Message` event since format 2: the message id only; the message itself is stored once,
    /// in `MESSAGES` (resolved at load; dropped with the message at retention).
    MessageRef(MsgId),
    /// Since format 4.
    GroupDelivered {
        group: S,
        sender: S,
        ack: A,
    },
    /// A coalesced group read count (protocol version 3).
    GroupAckCount {
        group: S,
        msg_id: MsgId,
        count: u32,
        timestamp: u64,
    },
}

type EvRef<'a> = Ev<&'a str, &'a WireMessage, &'a GroupReadAck>;
type EvOwned = Ev<String, WireMessage, GroupReadAck>;

fn ev_ref(e: &ServerEvent) -> EvRef<'_> {
    use ServerEvent as E;
    match e {
        // A log holds a pointer to the message, never a copy (docs/server-data-model.md).
        E::Message { msg } => Ev::MessageRef(msg.id),
        E::Delivered { msg_id, from, to, by, timestamp } => Ev::Delivered { msg_id: *msg_id, from, to, by, timestamp: *timestamp },
        E::Read { msg_id, from, to, by, timestamp } => Ev::Read { msg_id: *msg_id, from, to, by, timestamp: *timestamp },
        E::ConversationRead { chat_type, from, to, up_to, timestamp, device } => {
            Ev::ConversationRead { chat_type: *chat_type, from, to, up_to: *up_to, timestamp: *timestamp, device }
        }
        E::GroupRead { group, sender, ack } => Ev::GroupRead { group, sender, ack },
        E::GroupDelivered { group, sender, ack } => Ev::GroupDelivered { group, sender, ack },
        E::ReadState { chat_type, conversation, msg_id, up_to } => {
            Ev::ReadState { chat_type: *chat_type, conversation, msg_id: *msg_id, up_to: *up_to }
        }
        E::Membership { group, role, chat_room } => Ev::Membership { group, role: *role, chat_room: *chat_room },
        E::GroupAckCount { group, msg_id, count, timestamp } => {
            Ev::GroupAckCount { group, msg_id: *msg_id, count: *count, timestamp: *timestamp }
        }
    }
}

/// The event of a stored row; `None` for a reference to a message no longer stored (past
/// retention: the event went with it).
fn ev_owned(e: EvOwned, resolve: &mut dyn FnMut(MsgId) -> Option<Arc<WireMessage>>) -> Option<ServerEvent> {
    use ServerEvent as E;
    Some(match e {
        Ev::MessageRef(id) => E::Message { msg: resolve(id)? },
        Ev::Message(msg) => E::Message { msg: Arc::new(msg) },
        Ev::Delivered { msg_id, from, to, by, timestamp } => E::Delivered { msg_id, from, to, by, timestamp },
        Ev::Read { msg_id, from, to, by, timestamp } => E::Read { msg_id, from, to, by, timestamp },
        Ev::ConversationRead { chat_type, from, to, up_to, timestamp, device } => {
            E::ConversationRead { chat_type, from, to, up_to, timestamp, device }
        }
        Ev::GroupRead { group, sender, ack } => E::GroupRead { group, sender, ack },
        Ev::GroupDelivered { group, sender, ack } => E::GroupDelivered { group, sender, ack },
        Ev::ReadState { chat_type, conversation, msg_id, up_to } => E::ReadState { chat_type, conversation, msg_id, up_to },
        Ev::Membership { group, role, chat_room } => E::Membership { group, role, chat_room },
        Ev::GroupAckCount { group, msg_id, count, timestamp } => E::GroupAckCount { group, msg_id, count, timestamp },
    })
}

/// An `EVENTS` row: key (user, seq of its first event). Returns the row's last seq (also when
/// its events were dropped: references to messages past retention). Binary rows hold all of one user's
/// events of one commit (consecutive seqs) as `[(seq, event)]`; an older JSON row is one event.
/// `resolve` gives the stored message of an id (`None`: no longer stored).
pub(super) fn decode_events(
    user: &str,
    seq: u64,
    bytes: &[u8],
    resolve: &mut dyn FnMut(MsgId) -> Option<Arc<WireMessage>>,
    loaded: &mut HashMap<(u8, u64, u64), Arc<ServerEvent>>,
    log: &mut Vec<LogEvent>,
) -> Result<u64, StoreError> {
    // Shared as when they were first logged: an event stored in several users' logs is one
    // allocation again, and a `Message` event holds the loaded message record's copy.
    let mut shared = |event: ServerEvent, resolve: &mut dyn FnMut(MsgId) -> Option<Arc<WireMessage>>| -> Arc<ServerEvent> {
        let key = share_key(&event);
        if let Some(e) = key.and_then(|k| loaded.get(&k)).filter(|e| ***e == event) {
            return e.clone();
        }
        let event = match event {
            ServerEvent::Message { msg } => match resolve(msg.id) {
                Some(stored) if stored == msg => ServerEvent::Message { msg: stored },
                _ => ServerEvent::Message { msg },
            },
            e => e,
        };
        let event = Arc::new(event);
        if let Some(k) = key {
            loaded.entry(k).or_insert_with(|| event.clone());
        }
        event
    };
    match bytes.first() {
        Some(&BIN_V1) => {
            let evs: Vec<(u64, EvOwned)> =
                postcard::from_bytes(&bytes[1..]).map_err(|e| StoreError(format!("corrupt events of {user} at {seq}: {e}")))?;
            let last = evs.last().map_or(seq, |(s, _)| *s);
            for (seq, e) in evs {
                if let Some(e) = ev_owned(e, resolve) {
                    log.push(LogEvent::new(SeqEvent { seq, event: shared(e, resolve) }));
                }
            }
            Ok(last)
        }
        _ => {
            log.push(LogEvent::new(SeqEvent { seq, event: shared(json("event", bytes)?, resolve) }));
            Ok(seq)
        }
    }
}

/// The seq of the last event of an `EVENTS` row (key seq `seq`: its first).
pub(super) fn last_seq(user: &str, seq: u64, bytes: &[u8]) -> Result<u64, StoreError> {
    match bytes.first() {
        Some(&BIN_V1) => {
            let evs: Vec<(u64, EvOwned)> =
                postcard::from_bytes(&bytes[1..]).map_err(|e| StoreError(format!("corrupt events of {user} at {seq}: {e}")))?;
            Ok(evs.last().map_or(seq, |(s, _)| *s))
        }
        _ => Ok(seq),
    }
}

/// A cheap summary under which loading looks for an equal event already loaded (the event
/// itself is compared in full); `None`: never shared.
fn share_key(e: &ServerEvent) -> Option<(u8, u64, u64)> {
    use ServerEvent as E;
    Some(match e {
        E::Message { msg } => (0, msg.id, msg.timestamp),
        E::Delivered { msg_id, timestamp, .. } => (1, *msg_id, *timestamp),
        E::Read { msg_id, timestamp, .. } => (2, *msg_id, *timestamp),
        E::ConversationRead { up_to, timestamp, .. } => (3, *up_to, *timestamp),
        E::GroupRead { ack, .. } => (4, ack.msg_id, ack.ack_id),
        E::GroupDelivered { ack, .. } => (5, ack.msg_id, ack.ack_id),
        E::ReadState { .. } | E::Membership { .. } | E::GroupAckCount { .. } => return None,
    })
}

/// Encodes one user's events of a commit as one `EVENTS` row value (see [`decode_events`]).
pub(super) fn encode_events<'b>(evs: &[&SeqEvent], buf: &'b mut Vec<u8>) -> &'b [u8] {
    struct Row<'a, 'e>(&'a [&'e SeqEvent]);
    impl serde::Serialize for Row<'_, '_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for e in self.0 {
                seq.serialize_element(&(e.seq, ev_ref(&e.event)))?;
            }
            seq.end()
        }
    }
    encode_record(&Row(evs), buf)
}

pub(super) fn chat_type_code(t: ChatType) -> u8 {
    t as u32 as u8
}

/// After a load read every log (`stored_heads`: each log's last stored seq): drops the events a
/// trim left in a straddling row, gives events their log times, and makes each log's base at
/// least its last stored seq (seqs never go back, even when its last events were dropped).
pub(super) fn finish_logs(state: &mut State, stored_heads: HashMap<String, u64>) {
    let loaded_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    for (user, log) in state.logs.iter_mut() {
        // A row that straddled a trim still holds trimmed events.
        if let Some(&base) = state.log_base.get(user) {
            log.retain(|e| e.seq > base);
        }
        // Log times: an event without a time of its own (a membership change, a read state)
        // takes that of the next event that has one, or now: it is kept at least as long as
        // what follows it. Then the times are made to never go back along the log.
        let mut next = loaded_at;
        for e in log.iter_mut().rev() {
            e.unknown_time_is(next);
            next = next.min(e.at());
        }
        let mut at = 0;
        for e in log.iter_mut() {
            e.not_before(at);
            at = e.at();
        }
    }
    state.logs.retain(|_, log| !log.is_empty());
    for (user, head) in stored_heads {
        let base = state.log_base.entry(user).or_default();
        *base = (*base).max(head);
    }
}

/// Resolves a log's message references with `get` (each message read once per resolver);
/// remembers the first failure, reported by [`Resolver::error`].
pub(super) struct Resolver<F>(pub(super) F, Rc<RefCell<Option<StoreError>>>);

impl<F> Resolver<F> {
    pub(super) fn error(&mut self) -> Result<(), StoreError> {
        match self.1.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A [`Resolver`] reading a message with `get`.
pub(super) fn resolver<'a>(
    mut get: impl FnMut(MsgId) -> Result<Option<WireMessage>, StoreError> + 'a,
) -> Resolver<impl FnMut(MsgId) -> Option<Arc<WireMessage>> + 'a> {
    let failed = Rc::new(RefCell::new(None));
    let f = failed.clone();
    let mut read: HashMap<MsgId, Option<Arc<WireMessage>>> = HashMap::default();
    let resolve = move |id: MsgId| -> Option<Arc<WireMessage>> {
        read.entry(id)
            .or_insert_with(|| match get(id) {
                Ok(m) => m.map(Arc::new),
                Err(e) => {
                    f.borrow_mut().get_or_insert(e);
                    None
                }
            })
            .clone()
    };
    Resolver(resolve, failed)
}

/// The trimmable prefix of one log ([`StoreRead::log_sweep`](super::StoreRead::log_sweep)), fed
/// its rows in seq order: events logged before `cutoff`; one without a time of its own goes
/// with the next one that has one (as at load). A reference to a message no longer stored
/// (left out by the decoder: a gap in the seqs) is past retention and never replayed: it
/// counts as logged before the cutoff.
pub(super) struct TrimPrefix {
    base: u64,
    cutoff: u64,
    up_to: Option<u64>,
    loaded: HashMap<(u8, u64, u64), Arc<ServerEvent>>,
    log: Vec<LogEvent>,
}

impl TrimPrefix {
    pub(super) fn new(base: u64, cutoff: u64) -> Self {
        TrimPrefix { base, cutoff, up_to: None, loaded: HashMap::default(), log: Vec::new() }
    }

    /// Takes the next row (key seq `first`); `false`: the prefix ended in it (read no more).
    pub(super) fn row(
        &mut self,
        user: &str,
        first: u64,
        bytes: &[u8],
        resolve: &mut dyn FnMut(MsgId) -> Option<Arc<WireMessage>>,
    ) -> Result<bool, StoreError> {
        self.log.clear();
        let last = decode_events(user, first, bytes, resolve, &mut self.loaded, &mut self.log)?;
        let mut expected = first.max(self.base + 1);
        for e in self.log.iter().filter(|e| e.seq > self.base) {
            if e.seq > expected {
                self.up_to = Some(e.seq - 1);
            }
            expected = e.seq + 1;
            // Untimed: the prefix reaches past it only with a later event.
            if e.at() != 0 {
                if e.at() >= self.cutoff {
                    return Ok(false);
                }
                self.up_to = Some(e.seq);
            }
        }
        if last >= expected {
            self.up_to = Some(last);
        }
        Ok(true)
    }

    /// The seq the log may be trimmed up to, if above its base.
    pub(super) fn up_to(&self) -> Option<u64> {
        self.up_to.filter(|&u| u > self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MessageRecord;
    use std::collections::BTreeMap;

    fn msg(id: MsgId) -> WireMessage {
        WireMessage {
            id,
            client_id: format!("c{id}"),
            from: "alice".into(),
            to: "bob".into(),
            chat_type: ChatType::Chat,
            content: "the content".into(),
            timestamp: 7,
            require_delivery_ack: false,
            need_group_ack: false,
        }
    }

    #[test]
    fn a_format_1_row_with_the_message_inside_still_loads_and_new_rows_hold_only_the_id() {
        // What the previous version wrote: the whole message in the event.
        let m1 = msg(1);
        let old: Vec<(u64, EvRef<'_>)> = vec![(1, Ev::Message(&m1))];
        let mut buf = Vec::new();
        let row = encode_record(&old, &mut buf).to_vec();
        let (mut log, mut loaded) = (Vec::new(), HashMap::default());
        decode_events("bob", 1, &row, &mut |_| None, &mut loaded, &mut log).unwrap();
        assert!(matches!(&*log[0].event, ServerEvent::Message { msg: m } if **m == msg(1)));
        // This version's row: the id only, resolved from the stored messages; gone with them.
        let ev = SeqEvent { seq: 2, event: ServerEvent::Message { msg: msg(2).into() }.into() };
        let row = encode_events(&[&ev], &mut buf).to_vec();
        assert!(!row.windows(b"the content".len()).any(|w| w == b"the content"), "no copy of the content");
        let messages: BTreeMap<MsgId, MessageRecord> = [(2, MessageRecord::new(msg(2).into()))].into();
        let mut log = Vec::new();
        decode_events("bob", 2, &row, &mut |id| messages.get(&id).map(|r| r.msg.clone()), &mut loaded, &mut log).unwrap();
        assert!(Arc::ptr_eq(
            match &*log[0].event {
                ServerEvent::Message { msg } => msg,
                e => panic!("{e:?}"),
            },
            &messages[&2].msg
        ));
        let mut log = Vec::new();
        decode_events("bob", 2, &row, &mut |_| None, &mut loaded, &mut log).unwrap();
        assert!(log.is_empty(), "a reference to a message past retention is dropped");
        assert_eq!(last_seq("bob", 2, &row).unwrap(), 2);
    }
}
