//! Coalesced counts: in a large group one ack must not cost an event per ack to the sender (and
//! none to every member), so the core notes "message X's count changed" here and emits one count
//! update per changed message per interval, on its tick (`ServerCore::flush_counts`).
//!
//! Sans-IO like the core: time is a parameter. Keyed by ([`CountKind`], message id), so another
//! count (group delivery acks) plugs in as another kind.
//!
//! Bound: at most one entry per (kind, message), and only for messages whose count changed in
//! the last interval (an entry leaves when it is flushed). So the map holds at most the number of
//! distinct messages acked within one interval: no more than the acks the request rate lets in
//! during `interval_ms`, and never more than the messages stored.

use std::collections::VecDeque;

use receipt_core::{GroupId, MsgId, UserId};

use crate::state::HashMap;

/// Which count of a message changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CountKind {
    /// Group read acks ([`receipt_core::protocol::ServerEvent::GroupAckCount`]).
    GroupRead,
}

/// A count waiting for its update: the newest value, and who hears of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub group: GroupId,
    /// The message's sender: the user whose log gets the update.
    pub to: UserId,
    pub count: u32,
}

/// The changed counts of one core (see the module docs).
#[derive(Debug)]
pub(crate) struct Coalescer {
    interval_ms: u64,
    pending: HashMap<(CountKind, MsgId), Pending>,
    /// The pending keys by the time their update is due (pushed in time order, so the front is
    /// the first due; a clock stepping back only delays the ones behind).
    due: VecDeque<(u64, CountKind, MsgId)>,
}

impl Coalescer {
    pub(crate) fn new(interval_ms: u64) -> Self {
        Coalescer { interval_ms: interval_ms.max(1), pending: HashMap::default(), due: VecDeque::new() }
    }

    /// The interval between two updates of one message (ms).
    pub(crate) fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// The count of `msg_id` is now `count` (counts only grow: a lower one is ignored). Its
    /// update is due one interval after the first change since the last update.
    pub(crate) fn note(&mut self, now: u64, kind: CountKind, msg_id: MsgId, group: &str, to: &str, count: u32) {
        match self.pending.get_mut(&(kind, msg_id)) {
            Some(p) => p.count = p.count.max(count),
            None => {
                self.pending.insert((kind, msg_id), Pending { group: group.to_string(), to: to.to_string(), count });
                self.due.push_back((now.saturating_add(self.interval_ms), kind, msg_id));
            }
        }
    }

    /// Takes the updates due at `now` (all of them with `all`: a shutdown), oldest first.
    pub(crate) fn take_due(&mut self, now: u64, all: bool) -> Vec<(CountKind, MsgId, Pending)> {
        let mut out = Vec::new();
        while let Some(&(at, kind, id)) = self.due.front() {
            if at > now && !all {
                break;
            }
            self.due.pop_front();
            if let Some(p) = self.pending.remove(&(kind, id)) {
                out.push((kind, id, p));
            }
        }
        out
    }

    /// When the first pending update is due; `None`: nothing pending.
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.due.front().map(|&(at, ..)| at)
    }

    /// Messages with an update pending.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_update_per_message_per_interval_with_the_newest_count() {
        let mut c = Coalescer::new(500);
        for i in 1..=1000u32 {
            c.note(1_000 + u64::from((i - 1) % 400), CountKind::GroupRead, 7, "g", "alice", i);
        }
        c.note(1_010, CountKind::GroupRead, 8, "g", "alice", 1);
        assert_eq!(c.len(), 2, "one entry per message");
        assert!(c.take_due(1_499, false).is_empty(), "not due before the interval");
        assert_eq!(c.next_due(), Some(1_500));
        let due = c.take_due(1_500, false);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].1, due[0].2.count, due[0].2.to.as_str()), (7, 1000, "alice"));
        c.note(1_600, CountKind::GroupRead, 7, "g", "alice", 999);
        c.note(1_601, CountKind::GroupRead, 7, "g", "alice", 1001);
        assert_eq!(c.take_due(2_099, false).iter().map(|d| d.1).collect::<Vec<_>>(), vec![8]);
        let all = c.take_due(2_100, true);
        assert_eq!((all.len(), all[0].2.count), (1, 1001), "counts never go down");
        assert_eq!((c.len(), c.next_due()), (0, None), "flushed entries leave");
    }

    #[test]
    fn a_shutdown_takes_everything_pending() {
        let mut c = Coalescer::new(60_000);
        c.note(0, CountKind::GroupRead, 1, "g", "a", 3);
        assert!(c.take_due(1, false).is_empty());
        assert_eq!(c.take_due(1, true).len(), 1);
    }
}
