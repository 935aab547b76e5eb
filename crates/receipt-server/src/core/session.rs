//! Sessions: login (device limit, backlog replay after the device's cursor, sync end),
//! disconnect, and retention pruning.

use receipt_core::protocol::{ConversationState, SeqEvent, ServerEvent, ServerFrame};
use receipt_core::{ChatError, ErrorCode, UserId};

use super::{err, Effects, LoggedIn, ServerCore, SessionId, StoreOp};

/// Largest number of events in one `Backlog` frame.
pub const BACKLOG_BATCH: usize = 100;
/// Most conversations in one `SyncConversations` (or `SyncDone`) frame: with ids of at most 128
/// bytes a page stays under ~200 KiB, far below the 1 MiB frame limit.
pub const SYNC_PAGE: usize = 1000;
/// Rough byte budget of one `Backlog` frame (stays far below the 1 MiB frame limit).
const BACKLOG_BYTES: usize = 256 * 1024;

impl ServerCore {
    /// The session's connection is gone.
    pub fn disconnect(&mut self, session: SessionId) {
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
        while let Some((&id, rec)) = self.state.messages.first_key_value() {
            if !self.expired(rec, now_ms) {
                break;
            }
            let rec = self.state.messages.remove(&id).expect("present");
            if let Some(ids) = self.state.client_ids.get_mut(&rec.msg.from) {
                ids.remove(&rec.msg.client_id);
                if ids.is_empty() {
                    self.state.client_ids.remove(&rec.msg.from);
                }
            }
            self.effects.ops.push(StoreOp::DeleteMessage(id));
        }
        // A log is in time order: its expired events are a prefix. (One look per user and
        // tick; a time-ordered index of logs would make it proportional to what expires.)
        let cutoff = now_ms.saturating_sub(self.cfg.retention_ms);
        let mut emptied = Vec::new();
        for (user, log) in self.state.logs.iter_mut() {
            let n = log.partition_point(|e| e.at() < cutoff);
            if n == 0 {
                continue;
            }
            let up_to = log[n - 1].seq;
            log.drain(..n);
            if log.is_empty() {
                emptied.push(user.clone());
            }
            self.state.log_base.insert(user.clone(), up_to);
            self.effects.ops.push(StoreOp::TrimLog { user: user.clone(), up_to });
        }
        for user in emptied {
            self.state.logs.remove(&user);
        }
        self.take()
    }

    pub(super) fn login(&mut self, now_ms: u64, session: SessionId, user: UserId, device: String, since: u64) {
        if self.sessions.contains_key(&session) {
            self.send(session, ServerFrame::Error { error: ChatError::invalid_param("already logged in") }, false);
            return;
        }
        // Per-user device limit: distinct device ids online, not counting this one (a device
        // reconnecting before its old connection was noticed closed is never refused).
        let limit = self.cfg.max_devices_per_user.max(1);
        if let Some(list) = self.online.get(&user) {
            let mut others: Vec<&str> =
                list.iter().filter_map(|s| self.sessions.get(s)).map(|s| &*s.device).filter(|d| *d != device).collect();
            others.sort_unstable();
            others.dedup();
            if others.len() >= limit {
                let e = err(ErrorCode::UserLoginTooManyDevices, format!("{user} has {limit} devices online (max_devices_per_user)"));
                // The connection layer closes the connection after a LoginFailed.
                self.send(session, ServerFrame::LoginFailed { error: e }, true);
                return;
            }
        }
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
        let mut frames = Vec::new();
        if let Some(log) = self.state.logs.get(&user) {
            let start = log.partition_point(|e| e.seq <= since);
            let mut batch = Vec::new();
            let mut bytes = 0;
            for e in &log[start..] {
                let size = event_size(&e.event);
                if !batch.is_empty() && (batch.len() >= BACKLOG_BATCH || bytes + size > BACKLOG_BYTES) {
                    frames.push(ServerFrame::Backlog { events: std::mem::take(&mut batch) });
                    bytes = 0;
                }
                bytes += size;
                batch.push(SeqEvent::clone(e));
            }
            if !batch.is_empty() {
                frames.push(ServerFrame::Backlog { events: batch });
            }
        }
        for f in frames {
            self.send(session, f, true);
        }
        let mut conversations: Vec<ConversationState> = self
            .state
            .convs
            .get(&user)
            .map(|m| m.iter().map(|(k, c)| ConversationState { chat_type: k.chat_type, id: k.id.clone(), unread: c.unread }).collect())
            .unwrap_or_default();
        conversations.sort_by(|a, b| (a.chat_type, &a.id).cmp(&(b.chat_type, &b.id)));
        let head = self.state.head(&user);
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
        self.send(session, ServerFrame::SyncDone { head, conversations: rest }, true);
        self.online.entry(user.clone()).or_default().push(session);
        self.sessions.insert(session, LoggedIn { user: user.into(), device: device.into() });
    }
}

/// A cheap upper-ish estimate of an event's encoded size.
fn event_size(e: &ServerEvent) -> usize {
    256 + match e {
        ServerEvent::Message { msg } => msg.content.len() * 2,
        ServerEvent::GroupRead { ack, .. } => ack.content.as_ref().map_or(0, |c| c.len() * 2),
        _ => 0,
    }
}
