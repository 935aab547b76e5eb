//! Sessions: login (device limit, backlog replay after the device's cursor, sync end),
//! disconnect, and retention pruning.

use receipt_core::protocol::ServerFrame;
use receipt_core::{ChatError, ChatType, ErrorCode, UserId, WireMessage};

use super::{err, Effects, LoggedIn, ServerCore, SessionId, StoreOp};

/// Longest time log events are kept past retention (see `prune`).
pub const LOG_GRACE_MAX_MS: u64 = 3_600_000;
/// Work one retention pass does at most (messages dropped plus group members whose unread
/// count it fixed); the rest is dropped at the next tick.
pub const PRUNE_STEPS: usize = 50_000;

/// Messages read at a time by retention with the cache, and reads per pass (tick).
const PRUNE_READ: usize = 4096;
const PRUNE_READS: usize = 16;
/// Logs looked at per retention pass with the cache, and rows read of each.
const SWEEP_USERS: usize = 256;
const SWEEP_ROWS: usize = 64;

impl ServerCore {
    /// The session's connection is gone.
    pub fn disconnect(&mut self, session: SessionId) {
        self.syncing.remove(&session);
        self.last_sent.remove(&session);
        if let Some(s) = self.sessions.remove(&session) {
            if let Some(list) = self.online.get_mut(&*s.user) {
                list.retain(|x| *x != session);
                if list.is_empty() {
                    self.online.remove(&*s.user);
                }
            }
        }
    }

    /// Drops messages past retention (oldest first; cheap when there is nothing to drop) with
    /// their acks and index entries, and trims every log of the events past retention (the
    /// `Message` events that held the messages among them): nothing past retention stays in
    /// memory or in the store.
    pub fn prune(&mut self, now_ms: u64) -> Effects {
        self.now_ms = now_ms;
        // Bounded work per tick: a group message's unread fix-up is O(members) (see
        // `drop_expired_message`); what is left waits for the next tick.
        let mut budget = PRUNE_STEPS;
        if self.cache.on() {
            self.prune_stored(now_ms, budget);
            self.sweep_logs(now_ms);
            self.forget_unseen_devices(now_ms);
            return self.take();
        }
        while let Some((&id, rec)) = self.state.messages.first_key_value() {
            if budget == 0 || !self.expired(rec, now_ms) {
                break;
            }
            let rec = self.state.messages.remove(&id).expect("present");
            let recipients = self.unread_recipients(&rec.msg);
            budget = budget.saturating_sub(self.drop_expired_message(&rec.msg, recipients));
            self.effects.ops.push(StoreOp::DeleteMessage(id));
        }
        // A log is in time order: its expired events are a prefix. Only the logs whose first
        // event expired are looked at (the queue holds each non-empty log once, by that time).
        // Events stay a grace period past retention (the retention again, at most an hour): a
        // device whose ack was applied but whose answer was lost, reconnecting after the message
        // expired, still gets the event that confirms its ack (its resend is refused with 506).
        // A `Message` event of a pruned message is not replayed meanwhile (`replay`), and on
        // disk it was only the message id.
        let grace = self.cfg.retention_ms.min(LOG_GRACE_MAX_MS);
        let cutoff = now_ms.saturating_sub(self.cfg.retention_ms.saturating_add(grace));
        while self.trim_queue.peek().is_some_and(|std::cmp::Reverse((at, _))| *at < cutoff) {
            let std::cmp::Reverse((_, user)) = self.trim_queue.pop().expect("peeked");
            let Some(log) = self.state.logs.get_mut(&user) else {
                // Emptied by the device cursors meanwhile.
                self.queued.remove(&user);
                continue;
            };
            let n = log.partition_point(|e| e.at() < cutoff);
            if n > 0 {
                let up_to = log[n - 1].seq;
                log.drain(..n);
                self.note_trim(&user, up_to);
                self.effects.ops.push(StoreOp::TrimLog { user: user.clone(), up_to });
            }
            let log = self.state.logs.get(&user).expect("present");
            match log.first() {
                Some(e) => self.trim_queue.push(std::cmp::Reverse((e.at(), user))),
                None => {
                    self.state.logs.remove(&user);
                    self.queued.remove(&user);
                }
            }
        }
        self.forget_unseen_devices(now_ms);
        self.take()
    }

    /// Retention with the cache: the expired messages are a prefix of the stored ones (ids grow
    /// with time), read from the store [`PRUNE_READ`] at a time from where the last pass
    /// stopped. A pass stops after `budget` steps (as `drop_expired_message` counts them) or
    /// [`PRUNE_READS`] reads; what is left goes at the next tick.
    fn prune_stored(&mut self, now_ms: u64, mut budget: usize) {
        for _ in 0..PRUNE_READS {
            let Some(reader) = &self.cache.reader else { return };
            let batch = match reader.messages_from(self.prune_next, PRUNE_READ) {
                Ok(b) => b,
                Err(e) => {
                    log::error!("retention: {e}");
                    return;
                }
            };
            let full = batch.len() == PRUNE_READ;
            for msg in batch {
                if budget == 0 || !self.expired_at(msg.timestamp, now_ms) {
                    return;
                }
                // The recipients' conversations are read first: a failed read drops nothing (the
                // message is looked at again at the next tick).
                let recipients = self.unread_recipients(&msg);
                for user in &recipients {
                    if let Err(e) = self.load_conv(user, &msg.conversation_for(user)) {
                        log::error!("retention of message {}: {}", msg.id, e.description);
                        return;
                    }
                }
                self.prune_next = msg.id + 1;
                if let Some(rec) = self.state.messages.remove(&msg.id) {
                    self.cache.forget_msg(&rec);
                }
                budget = budget.saturating_sub(self.drop_expired_message(&msg, recipients));
                self.effects.ops.push(StoreOp::DeleteMessage(msg.id));
            }
            if !full {
                return;
            }
        }
    }

    /// Log retention with the cache: the logs are not in memory, so a bounded sweep looks at
    /// [`SWEEP_USERS`] users' logs per pass (tick), in key order, from where the last pass
    /// stopped, and trims each of the events logged before the cutoff (as `prune` does with
    /// resident logs). A log is trimmed within one sweep of the whole user set after its
    /// events pass retention and the grace (docs/server-data-model.md).
    fn sweep_logs(&mut self, now_ms: u64) {
        let Some(reader) = &self.cache.reader else { return };
        let grace = self.cfg.retention_ms.min(LOG_GRACE_MAX_MS);
        let cutoff = now_ms.saturating_sub(self.cfg.retention_ms.saturating_add(grace));
        match reader.log_sweep(self.sweep_after.as_deref(), SWEEP_USERS, SWEEP_ROWS, cutoff) {
            Ok(sweep) => {
                self.sweep_after = sweep.last;
                for (user, up_to) in sweep.trims {
                    // A device below it now gets a resync (`trimmed_up_to`).
                    self.cache.trimmed(&user, up_to);
                    self.effects.ops.push(StoreOp::TrimLog { user, up_to });
                }
            }
            Err(e) => log::error!("log retention: {e}"),
        }
    }

    /// Who may count message `msg` as unread: 1:1, the recipient; group, each member at send
    /// time but the sender (those who joined before it; the ones removed since are not known
    /// any more: their record keeps the count until they next read).
    fn unread_recipients(&self, msg: &WireMessage) -> Vec<UserId> {
        match msg.chat_type {
            ChatType::Chat => vec![msg.to.clone()],
            _ => match self.state.groups.get(&msg.to) {
                Some(g) => g
                    .members
                    .keys()
                    .filter(|m| **m != msg.from && g.joined_after.get(*m).is_none_or(|after| msg.id > *after))
                    .cloned()
                    .collect(),
                None => Vec::new(),
            },
        }
    }

    /// A message left at retention: its index entries go, and each of `recipients`
    /// ([`unread_recipients`](Self::unread_recipients)) who had not read it counts one unread
    /// message less. With the cache their conversations were read first (`prune_stored`).
    /// Returns the steps it took (1 + members looked at).
    fn drop_expired_message(&mut self, msg: &WireMessage, recipients: Vec<UserId>) -> usize {
        self.limits.dropped(msg);
        if let Some(ids) = self.state.client_ids.get_mut(&msg.from) {
            // The client id may name a later message since (a resend after retention).
            if ids.get(&msg.client_id) == Some(&msg.id) {
                ids.remove(&msg.client_id);
            }
            if ids.is_empty() {
                self.state.client_ids.remove(&msg.from);
            }
        }
        self.state.unindex_message(msg);
        let steps = 1 + recipients.len();
        for user in recipients {
            let key = msg.conversation_for(&user);
            let unread = self.conv(&user, &key).is_some_and(|c| c.unread > 0 && !c.read.covers(msg.id) && msg.id <= c.newest_received);
            if unread {
                self.conv_mut(&user, &key).unread -= 1;
                self.put_conv(&user, &key);
            }
        }
        steps
    }

    pub(super) fn login(&mut self, now_ms: u64, session: SessionId, user: UserId, device: String, since: u64, v: u32) {
        if self.sessions.contains_key(&session) {
            self.send(session, ServerFrame::Error { error: ChatError::invalid_param("already logged in") }, false);
            return;
        }
        // One session per (user, device): a new login replaces the older ones (a reconnect racing
        // its old connection's close, or the same device id logged in twice), which get 206
        // USER_LOGIN_ANOTHER_DEVICE; their connections close on it. So one user holds at most
        // `max_devices_per_user` sessions, however many times it logs in.
        self.replace_sessions_of(&user, &device);
        // Per-user device limit: distinct device ids online, not counting this one.
        let limit = self.cfg.max_devices_per_user.max(1);
        // Sessions still replaying count too (they are not online yet).
        let replaying = self.syncing.keys().filter(|s| self.sessions.get(s).is_some_and(|l| *l.user == *user));
        let sessions: Vec<SessionId> = self.online.get(&user).into_iter().flatten().chain(replaying).copied().collect();
        if !sessions.is_empty() {
            let mut others: Vec<&str> =
                sessions.iter().filter_map(|s| self.sessions.get(s)).map(|s| &*s.device).filter(|d| *d != device).collect();
            others.sort_unstable();
            others.dedup();
            if others.len() >= limit {
                let e = err(ErrorCode::UserLoginTooManyDevices, format!("{user} has {limit} devices online (max_devices_per_user)"));
                // The connection layer closes the connection after a LoginFailed.
                self.send(session, ServerFrame::LoginFailed { error: e }, true);
                return;
            }
        }
        self.limits.seen(&user);
        self.send(
            session,
            ServerFrame::LoginOk {
                v: receipt_core::protocol::PROTOCOL_VERSION,
                user: user.clone(),
                device: device.clone(),
                server_time: now_ms,
            },
            true,
        );
        self.note_device(now_ms, &user, &device, since);
        self.sessions.insert(session, LoggedIn { user: user.into(), device: device.into(), v });
        // Online once the replay (streamed, see `replay`) reached the head. A device below the
        // log's trimmed prefix gets the full state instead of the events it missed (`resync`);
        // a version-1 client does not know those frames and gets what the log retains.
        self.start_replay(session, since, v >= 2);
    }
}
