//! Per-user limits the core enforces: one session per (user, device), request rates (a token bucket per user and kind, the time
//! passed in, as everywhere in the core), the number of groups a user is in, and the messages a
//! user keeps stored for users never seen.
//!
//! Users exist implicitly (any id with a valid token), so a 1:1 message to an id nobody uses is
//! stored until retention. The send rate bounds how fast such messages come, not how many are
//! kept (100/s for 7 days is 60 million); `max_to_unseen_per_user` bounds that: the 1:1
//! messages a sender has stored for recipients the server has not seen. A recipient is seen once
//! it logs in, or when it has sent a message itself (what the store holds says so after a
//! restart); its messages then stop counting.

use receipt_core::protocol::ClientFrame;
use receipt_core::{ChatError, ChatType, ErrorCode, UserId, WireMessage};

use crate::config::RateLimit;
use crate::state::{HashMap, HashSet, State};

use receipt_core::protocol::ServerFrame;

use super::{err, Res, ServerCore, SessionId};

/// A token bucket in thousandths of a request: refilling `per_sec` a second is then `per_sec`
/// thousandths a millisecond, without rounding.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli: u64,
    at_ms: u64,
}

impl Bucket {
    fn level(&self, limit: RateLimit, now_ms: u64) -> u64 {
        let full = u64::from(limit.burst) * 1000;
        self.milli.saturating_add(now_ms.saturating_sub(self.at_ms).saturating_mul(u64::from(limit.per_sec))).min(full)
    }
}

/// Buckets of the users who made requests lately (a full bucket is forgotten: it is the state
/// of a user who made none).
#[derive(Debug, Default)]
struct Buckets(HashMap<UserId, Bucket>, usize);

impl Buckets {
    /// Takes one request from `user`'s bucket; false when it is empty.
    fn take(&mut self, limit: RateLimit, user: &str, now_ms: u64) -> bool {
        self.take_n(limit, user, now_ms, 1)
    }

    /// Takes `n` requests (at most the burst, so any batch can pass a full bucket) from
    /// `user`'s bucket, all or none; false when fewer are left.
    fn take_n(&mut self, limit: RateLimit, user: &str, now_ms: u64, n: u32) -> bool {
        if limit.per_sec == 0 {
            return true;
        }
        let full = u64::from(limit.burst.max(1)) * 1000;
        let cost = u64::from(n.clamp(1, limit.burst.max(1))) * 1000;
        let level = self.0.get(user).map_or(full, |b| b.level(limit, now_ms));
        if level < cost {
            return false;
        }
        let b = Bucket { milli: level - cost, at_ms: now_ms };
        match self.0.get_mut(user) {
            Some(slot) => *slot = b,
            None => {
                // Amortized O(1): forget the refilled buckets each time the map doubles.
                if self.0.len() >= self.1.max(1024) {
                    self.forget_full(limit, now_ms);
                    self.1 = 2 * self.0.len();
                }
                self.0.insert(user.to_string(), b);
            }
        }
        true
    }

    fn forget_full(&mut self, limit: RateLimit, now_ms: u64) {
        let full = u64::from(limit.burst.max(1)) * 1000;
        self.0.retain(|_, b| b.level(limit, now_ms) < full);
    }
}

/// The limits' state: request buckets, and how many groups each user is in.
#[derive(Debug, Default)]
pub(super) struct Limits {
    sends: Buckets,
    requests: Buckets,
    groups_of: HashMap<UserId, usize>,
    /// Users that logged in or sent a message.
    seen: HashSet<UserId>,
    /// Stored 1:1 messages to recipients not seen yet: recipient -> sender -> count.
    to_unseen: HashMap<UserId, HashMap<UserId, usize>>,
    /// The same, summed per sender.
    to_unseen_by: HashMap<UserId, usize>,
}

impl Limits {
    /// Counts the groups every user is in.
    pub(super) fn new(state: &State) -> Self {
        let mut groups_of: HashMap<UserId, usize> = HashMap::default();
        for g in state.groups.values() {
            for m in g.members.keys() {
                *groups_of.entry(m.clone()).or_default() += 1;
            }
        }
        let seen: HashSet<UserId> = state.messages.values().map(|r| r.msg.from.clone()).collect();
        let mut limits = Limits { groups_of, seen, ..Limits::default() };
        for r in state.messages.values() {
            limits.stored(&r.msg);
        }
        limits
    }

    /// Whether `user` logged in or sent a message (as far as this process knows).
    pub(super) fn is_seen(&self, user: &str) -> bool {
        self.seen.contains(user)
    }

    /// `user` logged in: messages to it no longer count against their senders.
    pub(super) fn seen(&mut self, user: &str) {
        if self.seen.contains(user) {
            return;
        }
        self.seen.insert(user.to_string());
        for (sender, n) in self.to_unseen.remove(user).unwrap_or_default() {
            self.forget_to_unseen(&sender, n);
        }
    }

    fn forget_to_unseen(&mut self, sender: &str, n: usize) {
        if let Some(total) = self.to_unseen_by.get_mut(sender) {
            *total = total.saturating_sub(n);
            if *total == 0 {
                self.to_unseen_by.remove(sender);
            }
        }
    }

    /// 4 EXCEED_SERVICE_LIMIT when `user` already keeps `max` messages stored for users never
    /// seen and `to` is one of them (0: no limit).
    pub(super) fn check_send_to(&self, max: usize, user: &str, to: &str) -> Res<()> {
        if max == 0 || self.seen.contains(to) || self.to_unseen_by.get(user).copied().unwrap_or(0) < max {
            return Ok(());
        }
        Err(err(
            ErrorCode::ExceedServiceLimit,
            format!("{user} has {max} messages stored for users who never logged in (max_to_unseen_per_user)"),
        ))
    }

    /// A message was stored: a 1:1 message to a user not seen counts against its sender.
    pub(super) fn stored(&mut self, msg: &WireMessage) {
        if msg.chat_type != ChatType::Chat || self.seen.contains(&msg.to) {
            return;
        }
        *self.to_unseen.entry(msg.to.clone()).or_default().entry(msg.from.clone()).or_default() += 1;
        *self.to_unseen_by.entry(msg.from.clone()).or_default() += 1;
    }

    /// A message left the store (retention).
    pub(super) fn dropped(&mut self, msg: &WireMessage) {
        if msg.chat_type != ChatType::Chat {
            return;
        }
        let Some(by_sender) = self.to_unseen.get_mut(&msg.to) else {
            return;
        };
        let Some(n) = by_sender.get_mut(&msg.from) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            by_sender.remove(&msg.from);
            if by_sender.is_empty() {
                self.to_unseen.remove(&msg.to);
            }
        }
        self.forget_to_unseen(&msg.from, 1);
    }

    /// Charges a request of `user` to its bucket: sends to `send`, everything else to
    /// `request`. Refused: 502 MESSAGE_SEND_TRAFFIC_LIMIT for a send, 4 EXCEED_SERVICE_LIMIT
    /// (the SDK's code for a call frequency limit) for the rest.
    pub(super) fn charge(&mut self, send: RateLimit, request: RateLimit, user: &str, frame: &ClientFrame, now_ms: u64) -> Res<()> {
        if matches!(frame, ClientFrame::Send { .. }) {
            if !self.sends.take(send, user, now_ms) {
                return Err(err(
                    ErrorCode::MessageSendTrafficLimit,
                    format!("{user} sends faster than {} messages/s (send_rate)", send.per_sec),
                ));
            }
        } else if !self.requests.take_n(request, user, now_ms, batch_cost(frame)) {
            return Err(err(
                ErrorCode::ExceedServiceLimit,
                format!("{user} makes more than {} requests/s (request_rate)", request.per_sec),
            ));
        }
        Ok(())
    }

    pub(super) fn groups_of(&self, user: &str) -> usize {
        self.groups_of.get(user).copied().unwrap_or(0)
    }

    /// 4 EXCEED_SERVICE_LIMIT unless every one of `users` may be in one more group.
    pub(super) fn check_may_join<'a>(&self, max: usize, users: impl IntoIterator<Item = &'a str>) -> Res<()> {
        for u in users {
            if self.groups_of(u) >= max {
                return Err(ChatError::new(ErrorCode::ExceedServiceLimit, format!("{u} is in {max} groups already (max_groups_per_user)")));
            }
        }
        Ok(())
    }

    pub(super) fn joined(&mut self, user: &str) {
        *self.groups_of.entry(user.to_string()).or_default() += 1;
    }

    pub(super) fn left(&mut self, user: &str) {
        if let Some(n) = self.groups_of.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.groups_of.remove(user);
            }
        }
    }
}

impl ServerCore {
    /// Ends `user`'s sessions on `device`: each gets an `Error` (206), which ends its connection,
    /// and nothing more (no events, its requests get 201).
    pub(super) fn replace_sessions_of(&mut self, user: &str, device: &str) {
        // A session of this device still replaying its backlog (not online yet) is replaced too.
        let sessions = &self.sessions;
        let replaying: Vec<SessionId> =
            self.syncing.keys().copied().filter(|s| sessions.get(s).is_some_and(|l| &*l.user == user && &*l.device == device)).collect();
        for s in replaying {
            self.syncing.remove(&s);
            self.sessions.remove(&s);
            let error = err(ErrorCode::UserLoginAnotherDevice, format!("{user} logged in again on device {device}"));
            self.send(s, ServerFrame::Error { error }, true);
        }
        let Some(list) = self.online.get_mut(user) else {
            return;
        };
        let sessions = &self.sessions;
        let replaced: Vec<SessionId> = list.iter().copied().filter(|s| sessions.get(s).is_some_and(|l| &*l.device == device)).collect();
        if replaced.is_empty() {
            return;
        }
        list.retain(|s| !replaced.contains(s));
        if list.is_empty() {
            self.online.remove(user);
        }
        for s in replaced {
            self.sessions.remove(&s);
            let error = err(ErrorCode::UserLoginAnotherDevice, format!("{user} logged in again on device {device}"));
            // Replay: exempt from the slow-reader bound, so even a full queue gets the reason.
            self.send(s, ServerFrame::Error { error }, true);
        }
    }
}

/// What a request costs in `request_rate`: a batch one per id it names (it does the work of that
/// many single requests in one trip), any other request 1.
fn batch_cost(frame: &ClientFrame) -> u32 {
    match frame {
        ClientFrame::FetchGroupAckCounts { msg_ids, .. } | ClientFrame::ReadAcks { msg_ids, .. } => msg_ids.len().max(1) as u32,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limit = RateLimit { per_sec: 10, burst: 5 };
        let mut b = Buckets::default();
        let took = (0..8).filter(|_| b.take(limit, "u", 1_000)).count();
        assert_eq!(took, 5, "the burst, at one instant");
        assert!(!b.take(limit, "u", 1_099), "1 request per 100 ms: none yet");
        assert!(b.take(limit, "u", 1_100));
        assert!(!b.take(limit, "u", 1_100));
        // A second refills 10, capped at the burst.
        assert_eq!((0..20).filter(|_| b.take(limit, "u", 10_000)).count(), 5);
        assert!(b.take(limit, "other", 10_000), "buckets are per user");
        b.forget_full(limit, 10_400);
        assert_eq!(b.0.len(), 1, "the full bucket of 'other' is forgotten, u's is not full yet");
        b.forget_full(limit, 11_000);
        assert!(b.0.is_empty());
        assert!((0..1000).all(|_| b.take(RateLimit::OFF, "u", 0)), "per_sec 0: no limit");
        // Buckets of users gone quiet are forgotten as new users come: the map stays bounded.
        for i in 0..10_000u64 {
            assert!(b.take(limit, &format!("user{i}"), 20_000 + i * 1000));
        }
        assert!(b.0.len() <= 2048, "{} buckets kept", b.0.len());
    }

    #[test]
    fn a_batch_costs_one_request_per_id_all_or_none() {
        let limit = RateLimit { per_sec: 10, burst: 25 };
        let mut b = Buckets::default();
        assert!(b.take_n(limit, "u", 1_000, 20));
        assert!(!b.take_n(limit, "u", 1_000, 20), "5 left: a batch of 20 waits");
        assert_eq!((0..10).filter(|_| b.take(limit, "u", 1_000)).count(), 5, "the refused batch took nothing");
        // A batch larger than the burst costs the burst: it passes a full bucket.
        let small = RateLimit { per_sec: 10, burst: 3 };
        assert!(b.take_n(small, "v", 1_000, 20));
        assert!(!b.take(small, "v", 1_000));
        let batch = ClientFrame::ReadAcks { req: 1, conversation: "a".into(), msg_ids: vec![1; 20], private: false };
        assert_eq!(batch_cost(&batch), 20);
        assert_eq!(batch_cost(&ClientFrame::ReadAck { req: 1, msg_id: 1, private: false }), 1);
    }
}
