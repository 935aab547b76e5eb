//! Device cursors: the server remembers, per (user, device), the last event seq the device
//! applied (its `SyncCursor`, or its login's `since`) and trims the prefix of the user's log that
//! every remembered device has applied. A device is forgotten when unseen past the horizon
//! (`device_horizon_ms`) or when the user has more than `max_remembered_devices`; a forgotten (or
//! new) device below the trimmed prefix gets a full state resync at login (`resync`).
//! docs/server-data-model.md, "Event logs and device cursors".

use receipt_core::Seq;

use super::{ServerCore, SessionId, StoreOp};
use crate::state::DeviceCursor;

/// Devices the horizon pass looks at most per tick (the rest at the next ones): each costs a
/// look at the sessions replaying, so a login storm does not make a tick long.
const FORGET_STEPS: usize = 100;

impl ServerCore {
    /// A logged-in device says it applied every event up to `seq`. Ignored (with the reason in
    /// the log: the frame has no answer) when it is ahead of the log's head or behind what the
    /// device reported before: hostile or confused input must not trim what a device still needs.
    pub(super) fn sync_cursor(&mut self, now: u64, session: SessionId, seq: Seq) {
        let Some(s) = self.sessions.get(&session) else { return };
        let (user, device) = (s.user.clone(), s.device.clone());
        let head = self.head_of(&user);
        if seq > head {
            log::warn!("{user}/{device}: cursor {seq} ignored: ahead of the log's head {head}");
            return;
        }
        // Everything after the last event sent to this session was its own echo (its device
        // applied those itself): a cursor that reached the last one sent covers the head.
        let seq = if self.last_sent.get(&session).is_some_and(|&last| seq >= last) { head } else { seq };
        let known = self.state.cursors.get(&*user).and_then(|ds| ds.get(&*device)).copied();
        if let Some(c) = known {
            if seq < c.seq {
                log::warn!("{user}/{device}: cursor {seq} ignored: behind the device's cursor {}", c.seq);
                return;
            }
            // Not moved: nothing to store (a client repeating its report costs no write; an
            // online device is never forgotten, so its last-seen time needs no refresh).
            if seq == c.seq {
                return;
            }
        }
        self.put_cursor(&user, &device, DeviceCursor { seq, seen: now });
        self.trim_below_cursors(&user);
    }

    /// A device logs in with cursor `since`: remembered (or refreshed) at that cursor, which may
    /// go back (a reinstalled device knows less than it reported before). Over the cap, the
    /// least recently seen device without a session is forgotten (and the log trimmed below the
    /// others).
    pub(super) fn note_device(&mut self, now: u64, user: &str, device: &str, since: Seq) {
        let seq = since.min(self.head_of(user));
        self.put_cursor(user, device, DeviceCursor { seq, seen: now });
        // No trim here: a login's `since` is a claim the device has not confirmed by a report
        // (a client that never reports, e.g. a version-1 one, must not trim its user's log).
        let cap = self.cfg.max_remembered_devices.max(1);
        let mut forgot = false;
        let mut guard = 0;
        while self.state.cursors.get(user).is_some_and(|ds| ds.len() > cap) && guard < cap + 1 {
            guard += 1;
            let oldest = self.state.cursors[user]
                .iter()
                .filter(|(d, _)| d.as_str() != device && !self.device_has_session(user, d))
                .min_by_key(|(_, c)| c.seen)
                .map(|(d, _)| d.clone());
            match oldest {
                Some(d) => {
                    self.forget_device(user, &d);
                    forgot = true;
                }
                None => break,
            }
        }
        if forgot {
            self.trim_below_cursors(user);
        }
    }

    /// A resync brings the device to `seq` (the head when it started): it needs no event up to
    /// it any more, whether or not the resync finishes (an interrupted one starts again).
    pub(super) fn resync_started(&mut self, now: u64, user: &str, device: &str, seq: Seq) {
        self.put_cursor(user, device, DeviceCursor { seq, seen: now });
    }

    /// Forgets the devices unseen past the horizon (oldest first, at most [`FORGET_STEPS`] per
    /// call); a device with a session is kept (seen now).
    pub(super) fn forget_unseen_devices(&mut self, now: u64) {
        let horizon = now.saturating_sub(self.cfg.device_horizon_ms);
        for _ in 0..FORGET_STEPS {
            let Some((seen, user, device)) = self.seen_order.first().cloned() else { break };
            if seen >= horizon {
                break;
            }
            if self.device_has_session(&user, &device) {
                let seq = self.state.cursors.get(&user).and_then(|ds| ds.get(&device)).map_or(0, |c| c.seq);
                self.put_cursor(&user, &device, DeviceCursor { seq, seen: now });
                continue;
            }
            self.forget_device(&user, &device);
            self.trim_below_cursors(&user);
        }
    }

    fn device_has_session(&self, user: &str, device: &str) -> bool {
        // Bounded by the user's devices online (`max_devices_per_user`) and the replays running.
        let online = self.online.get(user).into_iter().flatten();
        online.chain(self.syncing.keys()).any(|s| self.sessions.get(s).is_some_and(|l| &*l.user == user && &*l.device == device))
    }

    fn put_cursor(&mut self, user: &str, device: &str, cursor: DeviceCursor) {
        let ds = match self.state.cursors.get_mut(user) {
            Some(ds) => ds,
            None => self.state.cursors.entry(user.to_string()).or_default(),
        };
        if let Some(old) = ds.insert(device.to_string(), cursor) {
            self.seen_order.remove(&(old.seen, user.to_string(), device.to_string()));
        }
        self.seen_order.insert((cursor.seen, user.to_string(), device.to_string()));
        self.effects.ops.push(StoreOp::PutCursor { user: user.to_string(), device: device.to_string(), cursor });
    }

    fn forget_device(&mut self, user: &str, device: &str) {
        let Some(ds) = self.state.cursors.get_mut(user) else { return };
        if let Some(old) = ds.remove(device) {
            self.seen_order.remove(&(old.seen, user.to_string(), device.to_string()));
            self.effects.ops.push(StoreOp::DeleteCursor { user: user.to_string(), device: device.to_string() });
        }
        if ds.is_empty() {
            self.state.cursors.remove(user);
        }
    }

    /// Trims `user`'s log up to the lowest cursor of the remembered devices (none remembered:
    /// nothing, the log waits for retention). Seqs never go back: the trimmed seq becomes the
    /// log's base.
    fn trim_below_cursors(&mut self, user: &str) {
        let Some(low) = self.state.cursors.get(user).and_then(|ds| ds.values().map(|c| c.seq).min()) else { return };
        if low <= self.trimmed_up_to(user) {
            return;
        }
        // With the cache the log is in the store: `TrimLog` trims it there, after the appends
        // of the batches before (the events in memory not committed yet stay until their
        // commit; no device needs them: the lowest cursor is at or above them).
        if let Some(log) = self.state.logs.get_mut(user) {
            let n = log.partition_point(|e| e.seq <= low);
            log.drain(..n);
            if log.is_empty() {
                // Its trim-queue entry stays (`queued`): the retention pass drops it.
                self.state.logs.remove(user);
            }
        }
        self.note_trim(user, low);
        self.effects.ops.push(StoreOp::TrimLog { user: user.to_string(), up_to: low });
    }

    /// The seq of the last event trimmed from `user`'s log (`State::trimmed_up_to`). With the
    /// cache, read from the store (with the trims not committed yet); a failed read answers
    /// "everything": a version-2 device gets a resync (always correct) and no trim is made.
    pub(super) fn trimmed_up_to(&self, user: &str) -> u64 {
        let Some(reader) = &self.cache.reader else { return self.state.trimmed_up_to(user) };
        match reader.log_trimmed(user) {
            Ok(t) => t.max(self.cache.pending_trim(user)),
            Err(e) => {
                log::error!("trimmed part of the log of {user}: {e}");
                u64::MAX
            }
        }
    }

    /// Records that `user`'s log is trimmed up to `up_to` (`State::note_trim`; with the cache,
    /// until the trim is committed: the store has it then).
    pub(super) fn note_trim(&mut self, user: &str, up_to: u64) {
        if self.cache.on() {
            self.cache.trimmed(user, up_to);
        } else {
            self.state.note_trim(user, up_to);
        }
    }
}
