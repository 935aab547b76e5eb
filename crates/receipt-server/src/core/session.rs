//! Sessions: login (device limit, backlog replay after the device's cursor, sync end),
//! disconnect, and retention pruning.

use receipt_core::protocol::ServerFrame;
use receipt_core::{ChatError, ErrorCode, UserId};

use super::{err, Effects, LoggedIn, ServerCore, SessionId, StoreOp};

/// Longest time log events are kept past retention (see `prune`).
pub const LOG_GRACE_MAX_MS: u64 = 3_600_000;

/// Messages read per step of retention with the cache, and steps per pass (tick).
const PRUNE_STEP: usize = 4096;
const PRUNE_STEPS: usize = 16;
/// Logs looked at per retention pass with the cache, and rows read of each.
const SWEEP_USERS: usize = 256;
const SWEEP_ROWS: usize = 64;

impl ServerCore {
    /// The session's connection is gone.
    pub fn disconnect(&mut self, session: SessionId) {
        self.syncing.remove(&session);
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
        if self.cache.on() {
            self.prune_stored(now_ms);
            self.sweep_logs(now_ms);
            return self.take();
        }
        while let Some((&id, rec)) = self.state.messages.first_key_value().filter(|_| !self.cache.on()) {
            if !self.expired(rec, now_ms) {
                break;
            }
            let rec = self.state.messages.remove(&id).expect("present");
            self.limits.dropped(&rec.msg);
            if let Some(ids) = self.state.client_ids.get_mut(&rec.msg.from) {
                ids.remove(&rec.msg.client_id);
                if ids.is_empty() {
                    self.state.client_ids.remove(&rec.msg.from);
                }
            }
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
            let Some(log) = self.state.logs.get_mut(&user) else { continue };
            let n = log.partition_point(|e| e.at() < cutoff);
            if n > 0 {
                let up_to = log[n - 1].seq;
                log.drain(..n);
                let base = self.state.log_base.entry(user.clone()).or_default();
                *base = (*base).max(up_to);
                self.effects.ops.push(StoreOp::TrimLog { user: user.clone(), up_to });
            }
            match log.first() {
                Some(e) => self.trim_queue.push(std::cmp::Reverse((e.at(), user))),
                None => {
                    self.state.logs.remove(&user);
                }
            }
        }
        self.take()
    }

    /// Retention with the cache: the expired messages are a prefix of the stored ones (ids grow
    /// with time), read from the store in bounded steps from where the last pass stopped. What
    /// is left past `PRUNE_STEPS` steps goes at the next tick.
    fn prune_stored(&mut self, now_ms: u64) {
        for _ in 0..PRUNE_STEPS {
            let Some(reader) = &self.cache.reader else { return };
            let batch = match reader.messages_from(self.prune_next, PRUNE_STEP) {
                Ok(b) => b,
                Err(e) => {
                    log::error!("retention: {e}");
                    return;
                }
            };
            let full = batch.len() == PRUNE_STEP;
            for msg in batch {
                if !self.expired_at(msg.timestamp, now_ms) {
                    return;
                }
                self.prune_next = msg.id + 1;
                if let Some(rec) = self.state.messages.remove(&msg.id) {
                    self.cache.forget_msg(&rec);
                }
                if let Some(ids) = self.state.client_ids.get_mut(&msg.from) {
                    if ids.get(&msg.client_id) == Some(&msg.id) {
                        ids.remove(&msg.client_id);
                    }
                    if ids.is_empty() {
                        self.state.client_ids.remove(&msg.from);
                    }
                }
                self.limits.dropped(&msg);
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
                    self.effects.ops.push(StoreOp::TrimLog { user, up_to });
                }
            }
            Err(e) => log::error!("log retention: {e}"),
        }
    }

    pub(super) fn login(&mut self, now_ms: u64, session: SessionId, user: UserId, device: String, since: u64) {
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
        self.sessions.insert(session, LoggedIn { user: user.into(), device: device.into() });
        // Online once the replay (streamed, see `replay`) reached the head.
        self.start_replay(session, since);
    }
}
