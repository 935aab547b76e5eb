//! A login's replay, streamed: the core sends the backlog after the device's cursor one window
//! of at most [`REPLAY_WINDOW_BYTES`] (estimated encoded bytes) at a time, and the next window
//! only when the connection has written the last one ([`ServerCore::replay_more`], asked by the
//! connection's writer). A device that does not read holds one window on the server, however long
//! its backlog (docs/server-data-model.md, "Sync").
//!
//! While it replays, a session is not online: live events of its user are not sent to it, they
//! are in the log and the replay reaches them. When the replay reaches the log's head, in the same
//! step, the session gets the unread counts (`SyncConversations` pages, `SyncDone`) and goes
//! online; frames for it in the meantime (answers, pongs) are held and sent after `SyncDone`, in
//! order, as before streaming.

use std::sync::Arc;

use receipt_core::protocol::{ConversationState, SeqEvent, ServerEvent, ServerFrame};
use receipt_core::ConversationKey;

use super::{Outgoing, ServerCore, SessionId};

/// Largest number of events in one `Backlog` frame.
pub const BACKLOG_BATCH: usize = 100;
/// Rough byte budget of one `Backlog` (or `Resync`) frame (stays far below the 1 MiB frame limit).
pub(super) const BACKLOG_BYTES: usize = 256 * 1024;
/// Most conversations in one `SyncConversations` (or `SyncDone`) frame: with ids of at most 128
/// bytes a page stays under ~200 KiB, far below the 1 MiB frame limit.
pub const SYNC_PAGE: usize = 1000;
/// Estimated encoded bytes of backlog the core hands a connection at once.
pub const REPLAY_WINDOW_BYTES: usize = 1024 * 1024;
/// Frames held for a replaying session before they are sent anyway (then the connection's
/// slow-reader bound applies to them).
const HELD_MAX: usize = 4096;

/// A session replaying its backlog.
#[derive(Debug)]
pub(super) struct Replay {
    /// The first seq not sent yet.
    next: u64,
    /// Frames for the session held until its `SyncDone`.
    held: Vec<Arc<ServerFrame>>,
    /// A full state resync still walking the user's conversations (`resync`); the backlog after
    /// `next` follows it.
    pub(super) resync: Option<super::resync::Walk>,
    /// This sync is a resync (`SyncDone { resync: true }`).
    resynced: bool,
}

impl ServerCore {
    /// Starts the replay of a logged-in session (registered in `sessions`) after `since`: the
    /// first window, and the end of the sync if that is all. With `since` below the trimmed
    /// prefix of the log and `resync_ok` (the client knows the frames), a full state resync
    /// instead: the retained messages with their flags, then the events from the head on.
    pub(super) fn start_replay(&mut self, session: SessionId, since: u64, resync_ok: bool) {
        let Some(s) = self.sessions.get(&session) else { return };
        let (user, device) = (s.user.clone(), s.device.clone());
        let replay = if resync_ok && since < self.trimmed_up_to(&user) {
            let head = self.head_of(&user);
            self.resync_started(self.now_ms, &user, &device, head);
            let walk = super::resync::Walk::new(self.conversation_keys(&user));
            Replay { next: head + 1, held: Vec::new(), resync: Some(walk), resynced: true }
        } else {
            Replay { next: since.saturating_add(1), held: Vec::new(), resync: None, resynced: false }
        };
        self.syncing.insert(session, replay);
        self.replay_window(session);
    }

    /// The session's connection wrote the last window: the next one (nothing if the session is
    /// not replaying). The effects accumulate like [`apply`](Self::apply)'s.
    pub fn replay_more(&mut self, session: SessionId) {
        if self.syncing.contains_key(&session) {
            self.replay_window(session);
        }
    }

    /// Whether a frame for `session` that is not part of the replay waits for its `SyncDone`;
    /// if so it is held.
    pub(super) fn hold_while_replaying(&mut self, session: SessionId, frame: &Arc<ServerFrame>) -> bool {
        match self.syncing.get_mut(&session) {
            Some(r) if r.held.len() < HELD_MAX => {
                r.held.push(frame.clone());
                true
            }
            _ => false,
        }
    }

    fn replay_window(&mut self, session: SessionId) {
        let Some(user) = self.sessions.get(&session).map(|s| s.user.clone()) else {
            self.syncing.remove(&session);
            return;
        };
        let (frames, window, walked) = self.resync_pages(session, &user, REPLAY_WINDOW_BYTES);
        for f in frames {
            self.send(session, f, true);
        }
        if !walked {
            return;
        }
        let next = self.syncing.get(&session).map_or(1, |r| r.next);
        let v = self.sessions.get(&session).map_or(receipt_core::protocol::PROTOCOL_VERSION, |s| s.v);
        // The resync's pages count in the same window as the backlog after them.
        let mut w = Window { window, ..Window::default() };
        let mut done = true;
        if self.cache.on() {
            done = self.window_from_store(&user, next, v, &mut w);
        } else if let Some(log) = self.state.logs.get(&*user) {
            let start = log.partition_point(|e| e.seq < next);

            for e in &log[start..] {
                if !w.push(e, self.skipped_in_replay(e, v)) {
                    done = false;
                    break;
                }
            }
        }
        let (frames, sent_up_to) = w.finish();
        for f in frames {
            self.send(session, f, true);
        }
        if let (Some(seq), Some(r)) = (sent_up_to, self.syncing.get_mut(&session)) {
            r.next = seq + 1;
        }
        if done {
            self.finish_sync(session, &user);
        }
    }

    /// The replay reached the head: unread counts in pages, `SyncDone`, the held frames; the
    /// session is online from here on.
    fn finish_sync(&mut self, session: SessionId, user: &Arc<str>) {
        let (held, resync) = self.syncing.remove(&session).map(|r| (r.held, r.resynced)).unwrap_or_default();
        let mut conversations: Vec<ConversationState> = self.conversation_states(user);
        conversations.sort_by(|a, b| (a.chat_type, &a.id).cmp(&(b.chat_type, &b.id)));
        let head = self.head_of(user);
        // Paged: no frame grows with the number of conversations (a user added to 22,000 groups
        // must still log in under the frame limit).
        let last = conversations.len().saturating_sub(1) / SYNC_PAGE * SYNC_PAGE;
        let rest = conversations.split_off(last);
        let mut it = conversations.into_iter();
        loop {
            let page: Vec<ConversationState> = it.by_ref().take(SYNC_PAGE).collect();
            if page.is_empty() {
                break;
            }
            self.send(session, ServerFrame::SyncConversations { conversations: page }, true);
        }
        self.send(session, ServerFrame::SyncDone { head, conversations: rest, resync }, true);
        for frame in held {
            self.effects.out.push(Outgoing { session, frame, replay: false });
        }
        self.last_sent.insert(session, head);
        self.online.entry(user.to_string()).or_default().push(session);
    }
}

/// One window of a replay being built: `Backlog` frames of at most [`BACKLOG_BATCH`] events
/// and ~[`BACKLOG_BYTES`], up to [`REPLAY_WINDOW_BYTES`] in all.
#[derive(Default)]
struct Window {
    frames: Vec<ServerFrame>,
    batch: Vec<SeqEvent>,
    bytes: usize,
    window: usize,
    sent_up_to: Option<u64>,
}

impl Window {
    /// Adds an event (`gone`: a message past retention, skipped); false when the window is
    /// full and the event was not taken.
    fn push(&mut self, e: &SeqEvent, gone: bool) -> bool {
        if gone {
            self.sent_up_to = Some(e.seq);
            return true;
        }
        let size = event_size(&e.event);
        if !self.batch.is_empty() && (self.batch.len() >= BACKLOG_BATCH || self.bytes + size > BACKLOG_BYTES) {
            self.frames.push(ServerFrame::Backlog { events: std::mem::take(&mut self.batch) });
            self.bytes = 0;
            if self.window >= REPLAY_WINDOW_BYTES {
                return false;
            }
        }
        self.bytes += size;
        self.window += size;
        self.sent_up_to = Some(e.seq);
        self.batch.push(e.clone());
        true
    }

    fn finish(mut self) -> (Vec<ServerFrame>, Option<u64>) {
        if !self.batch.is_empty() {
            self.frames.push(ServerFrame::Backlog { events: self.batch });
        }
        (self.frames, self.sent_up_to)
    }
}

/// Stored log rows read at a time by a replay.
const LOG_READ_ROWS: usize = 256;
/// Most reads for one window (a bound; a window fills long before on any real log).
const LOG_READS_PER_WINDOW: usize = 1 << 16;

impl ServerCore {
    /// A message past retention is not replayed (its event leaves the log a grace period
    /// later, with the receipts logged around it).
    fn message_gone_event(&self, e: &SeqEvent) -> bool {
        matches!(&*e.event, ServerEvent::Message { msg } if self.message_gone(msg.id))
    }

    /// Not replayed to a device of protocol version `v`: a message gone, or an event `v` cannot
    /// decode (a count update for a version-2 device).
    fn skipped_in_replay(&self, e: &SeqEvent, v: u32) -> bool {
        self.message_gone_event(e) || super::needs_version(&e.event).is_some_and(|need| v < need)
    }

    /// With the cache: a window of `user`'s log from seq `next`, read from the store, then the
    /// events not committed yet. True when it reached the head.
    fn window_from_store(&mut self, user: &str, next: u64, v: u32, w: &mut Window) -> bool {
        let Some(reader) = &self.cache.reader else { return true };
        let mut from = next;
        for _ in 0..LOG_READS_PER_WINDOW {
            let read = match reader.log_events(user, from, LOG_READ_ROWS) {
                Ok(r) => r,
                Err(e) => {
                    // Ends the sync with what was sent; the device asks again at its next login.
                    log::error!("replay of {user}: {e}");
                    return true;
                }
            };
            for e in &read.events {
                if !w.push(e, self.skipped_in_replay(e, v)) {
                    return false;
                }
            }
            from = from.max(read.next);
            if !read.more {
                break;
            }
        }
        // Committed while this window was read, events are both stored and still here: once.
        for e in self.cache.tail(user).filter(|e| e.seq >= from) {
            if !w.push(e, self.skipped_in_replay(e, v)) {
                return false;
            }
        }
        true
    }

    /// The conversations `user` has a record of, in key order (`State::conversations_of`; with
    /// the cache, the stored ones and those in memory).
    pub(super) fn conversation_keys(&self, user: &str) -> Vec<ConversationKey> {
        if !self.cache.on() {
            return self.state.conversations_of(user);
        }
        let mut keys: Vec<ConversationKey> =
            self.conversation_states(user).into_iter().map(|c| ConversationKey::new(c.chat_type, c.id)).collect();
        keys.sort_by(|a, b| (a.chat_type, &a.id).cmp(&(b.chat_type, &b.id)));
        keys
    }

    /// `user`'s unread count of every conversation. With the cache: the stored ones, overridden
    /// by those in memory (which include every change not committed yet).
    fn conversation_states(&self, user: &str) -> Vec<ConversationState> {
        let cached = self.state.convs.get(user);
        let state = |k: &ConversationKey, unread: u32| ConversationState { chat_type: k.chat_type, id: k.id.clone(), unread };
        let mut out: Vec<ConversationState> = cached.into_iter().flatten().map(|(k, c)| state(k, c.unread)).collect();
        if let Some(reader) = &self.cache.reader {
            match reader.conversations_of(user, CONVERSATIONS_MAX) {
                Ok(stored) => {
                    out.extend(stored.iter().filter(|(k, _)| !cached.is_some_and(|m| m.contains_key(k))).map(|(k, c)| state(k, c.unread)))
                }
                // The sync ends with what memory holds; the next login reads them again.
                Err(e) => log::error!("conversations of {user}: {e}"),
            }
        }
        out
    }
}

/// Most conversations read for one user's sync (a bound on the read, far above
/// `max_groups_per_user` plus the 1:1 conversations of any real user).
const CONVERSATIONS_MAX: usize = 1 << 20;

/// A cheap upper-ish estimate of an event's encoded size.
fn event_size(e: &ServerEvent) -> usize {
    256 + match e {
        ServerEvent::Message { msg } => msg.content.len() * 2,
        ServerEvent::GroupRead { ack, .. } => ack.content.as_ref().map_or(0, |c| c.len() * 2),
        _ => 0,
    }
}
