//! `rcpt_event`: what the client tells the host (the SDK's listeners), one kind at a time.

use std::ffi::CString;
use std::os::raw::c_char;

use receipt_client::{ClientEvent, Completion};
use receipt_core::ChatError;

use crate::error::set_last_error;
use crate::group_ack::rcpt_group_read_ack;
use crate::message::rcpt_message;
use crate::panic::{ffi_boundary, PanicValue};
use crate::result::rcpt_result;
use crate::string::to_cstring;

/// The kind of an event, as `rcpt_event_kind(ev)` returns it. Values are stable. (The type is
/// not named `rcpt_event_kind`: in C that name is the accessor function.)
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum rcpt_event_type {
    /// Not an event: what `rcpt_event_kind(NULL)` returns.
    RCPT_EVENT_NONE = 0,
    /// Logged in and caught up with the server (backlog replayed, unread counts synced).
    RCPT_EVENT_CONNECTED = 1,
    /// The connection is gone; the client reconnects with backoff and acks wait in its outbox.
    RCPT_EVENT_DISCONNECTED = 2,
    /// The login failed for good: `rcpt_event_error_code` is `RCPT_INVALID_TOKEN` (malformed),
    /// `RCPT_TOKEN_EXPIRED` (after `RCPT_EVENT_TOKEN_EXPIRED`), `RCPT_USER_AUTHENTICATION_FAILED`
    /// (bad signature) or `RCPT_SERVER_NOT_REACHABLE` (first connection attempt failed).
    RCPT_EVENT_LOGIN_FAILED = 3,
    /// onMessageReceived: `rcpt_event_message_count` / `rcpt_event_message_at`.
    RCPT_EVENT_MESSAGES_RECEIVED = 4,
    /// onMessageDelivered (sender side): the delivered messages.
    RCPT_EVENT_MESSAGES_DELIVERED = 5,
    /// onMessageRead (sender side): the messages the peer read.
    RCPT_EVENT_MESSAGES_READ = 6,
    /// onGroupMessageRead: `rcpt_event_ack_count` / `rcpt_event_ack_at`.
    RCPT_EVENT_GROUP_MESSAGE_READ = 7,
    /// onConversationRead(from, to): `rcpt_event_from` read the conversation with
    /// `rcpt_event_to`. Fires on the peer's devices and on the acker's other devices.
    RCPT_EVENT_CONVERSATION_READ = 8,
    /// A conversation's unread count changed: `rcpt_event_conversation_id`,
    /// `rcpt_event_chat_type`, `rcpt_event_unread`.
    RCPT_EVENT_UNREAD_COUNT_CHANGED = 9,
    /// A request finished: `rcpt_event_request_id`, `rcpt_event_error_code` (`RCPT_OK` on
    /// success) and the result: a sent message (`rcpt_event_message_at(ev, 0)`), a page of group
    /// acks (`rcpt_event_ack_at`, `rcpt_event_cursor`), a page of unread members
    /// (`rcpt_event_member_at`, `rcpt_event_cursor`), a batch's items (`rcpt_event_item_*`) or a
    /// created group (`rcpt_event_group_id`).
    RCPT_EVENT_REQUEST_COMPLETED = 10,
    /// This user joined or left a group or changed role in it: `rcpt_event_group_id`.
    RCPT_EVENT_MEMBERSHIP_CHANGED = 11,
    /// The server closed the connection for a protocol error: `rcpt_event_error_code`,
    /// `rcpt_event_error_message`.
    RCPT_EVENT_PROTOCOL_ERROR = 12,
    /// Persisting the client's state failed (it goes on in memory): `rcpt_event_error_message`.
    RCPT_EVENT_STORE_FAILED = 13,
    /// Messages whose own receipt flags or counts changed (an own ack, a single read here or on
    /// another device, a delivery, a group ack count, a refused ack rolled back): each message
    /// in its current state (`rcpt_event_message_count` / `rcpt_event_message_at`). Apply them
    /// as they are; no other event of the same input carries them. A conversation-wide read is
    /// not listed here: it is one `RCPT_EVENT_CONVERSATION_UPDATED`.
    RCPT_EVENT_MESSAGES_UPDATED = 14,
    /// A conversation's read marks moved (read by this user here or on another device, read by
    /// the peer, marked all read): the flags of any of its messages may have changed, however
    /// many. `rcpt_event_conversation_id`, `rcpt_event_chat_type`, `rcpt_event_unread`, and the
    /// marks `rcpt_event_read_up_to`, `rcpt_event_receipt_up_to`, `rcpt_event_peer_read_up_to`.
    /// Re-read the messages of that conversation you hold (`rcpt_client_get_message`) instead
    /// of deriving their flags from the marks: which mark covers which message is the engine's
    /// rule. One per conversation per input, before its UNREAD_COUNT_CHANGED.
    RCPT_EVENT_CONVERSATION_UPDATED = 15,
    /// onGroupMessageDelivered: group delivery acks of messages this user sent (members'
    /// devices got them): `rcpt_event_ack_count` / `rcpt_event_ack_at` (content `""`; count:
    /// the delivered count with that ack). After the input's MESSAGES_UPDATED, which carries
    /// the messages' new `rcpt_message_group_delivered_count`.
    RCPT_EVENT_GROUP_MESSAGE_DELIVERED = 16,
    /// onReadAckForGroupMessageUpdated: the read counts of messages this user sent to a large
    /// group went up (one coalesced update per message per interval instead of one
    /// GROUP_MESSAGE_READ per ack; fetch the readers on demand). The messages in their new state
    /// (`rcpt_event_message_count` / `rcpt_event_message_at`, their group ack count). Counts
    /// never go down.
    RCPT_EVENT_READ_ACK_FOR_GROUP_MESSAGE_UPDATED = 17,
    // The connection and token lifecycle (the SDK's ConnectionListener), from 30 on.
    /// onDatabaseOpened(username): the user's store is open (at login, with or without the
    /// server): counts and messages are readable, acks queue. `rcpt_event_from` is the user;
    /// `rcpt_event_offline_start` is true when the login counts as done already (an earlier
    /// session reached the server: no LOGIN_FAILED for an unreachable server, retries go on).
    RCPT_EVENT_DATABASE_OPENED = 30,
    /// onOfflineMessageSyncStart: the server accepted the login and replays what came meanwhile.
    RCPT_EVENT_OFFLINE_SYNC_START = 31,
    /// onOfflineMessageSyncFinish: the replay is over; `RCPT_EVENT_CONNECTED` follows.
    RCPT_EVENT_OFFLINE_SYNC_FINISH = 32,
    /// onTokenWillExpire: about 80% of the token's lifetime has passed; call
    /// `rcpt_client_renew_token`.
    RCPT_EVENT_TOKEN_WILL_EXPIRE = 33,
    /// onTokenExpired: the token's expiry has passed.
    RCPT_EVENT_TOKEN_EXPIRED = 34,
    /// onLogout(errorCode, info): the server ended the session (`rcpt_event_error_code`,
    /// `rcpt_event_error_message`). Queued acks stay for the next good login.
    RCPT_EVENT_LOGGED_OUT = 35,
}

/// One event.
///
/// Ownership: owned by the caller when returned by `rcpt_client_poll_event` (free it with
/// `rcpt_event_free`); borrowed inside the event callback (valid only during that call; do not
/// free it). The messages, acks and strings its accessors return are borrowed from the event
/// and live as long as it. Immutable: may be read from any thread.
pub struct rcpt_event {
    kind: rcpt_event_type,
    request_id: u64,
    error_code: rcpt_result,
    error_message: CString,
    messages: Vec<rcpt_message>,
    acks: Vec<rcpt_group_read_ack>,
    /// A page of member ids (who has not read a group message).
    pub(crate) members: Vec<CString>,
    /// One per id of a batch answer.
    pub(crate) items: Vec<crate::batch::Item>,
    cursor: CString,
    from: CString,
    to: CString,
    conversation_id: CString,
    chat_type: u32,
    unread: u32,
    group_id: CString,
    read_up_to: CString,
    receipt_up_to: CString,
    peer_read_up_to: CString,
    offline_start: bool,
}

impl rcpt_event {
    fn empty(kind: rcpt_event_type) -> Self {
        rcpt_event {
            kind,
            request_id: 0,
            error_code: rcpt_result::RCPT_OK,
            error_message: CString::default(),
            messages: Vec::new(),
            acks: Vec::new(),
            members: Vec::new(),
            items: Vec::new(),
            cursor: CString::default(),
            from: CString::default(),
            to: CString::default(),
            conversation_id: CString::default(),
            chat_type: 0,
            unread: 0,
            group_id: CString::default(),
            read_up_to: CString::default(),
            receipt_up_to: CString::default(),
            peer_read_up_to: CString::default(),
            offline_start: false,
        }
    }

    fn with_error(mut self, e: &ChatError) -> Self {
        self.error_code = e.code.into();
        self.error_message = to_cstring(&e.description);
        self
    }

    fn with_messages(mut self, m: Vec<receipt_core::ChatMessage>) -> Self {
        self.messages = m.into_iter().map(rcpt_message::new).collect();
        self
    }

    pub(crate) fn new(e: ClientEvent) -> Self {
        use rcpt_event_type::*;
        match e {
            ClientEvent::Connected => Self::empty(RCPT_EVENT_CONNECTED),
            // onDisconnected(errorCode): the runtime only knows the server is out of reach.
            ClientEvent::Disconnected => {
                let mut ev = Self::empty(RCPT_EVENT_DISCONNECTED);
                ev.error_code = rcpt_result::RCPT_SERVER_NOT_REACHABLE;
                ev
            }
            ClientEvent::DatabaseOpened { user, offline_start } => {
                let mut ev = Self::empty(RCPT_EVENT_DATABASE_OPENED);
                ev.from = to_cstring(&user);
                ev.offline_start = offline_start;
                ev
            }
            ClientEvent::OfflineSyncStarted => Self::empty(RCPT_EVENT_OFFLINE_SYNC_START),
            ClientEvent::OfflineSyncFinished => Self::empty(RCPT_EVENT_OFFLINE_SYNC_FINISH),
            ClientEvent::TokenWillExpire => Self::empty(RCPT_EVENT_TOKEN_WILL_EXPIRE),
            ClientEvent::TokenExpired => Self::empty(RCPT_EVENT_TOKEN_EXPIRED),
            ClientEvent::LoggedOut(e) => Self::empty(RCPT_EVENT_LOGGED_OUT).with_error(&e),
            ClientEvent::LoginFailed(e) => Self::empty(RCPT_EVENT_LOGIN_FAILED).with_error(&e),
            ClientEvent::ProtocolError(e) => Self::empty(RCPT_EVENT_PROTOCOL_ERROR).with_error(&e),
            ClientEvent::MessagesReceived(m) => Self::empty(RCPT_EVENT_MESSAGES_RECEIVED).with_messages(m),
            ClientEvent::MessagesDelivered(m) => Self::empty(RCPT_EVENT_MESSAGES_DELIVERED).with_messages(m),
            ClientEvent::MessagesRead(m) => Self::empty(RCPT_EVENT_MESSAGES_READ).with_messages(m),
            ClientEvent::MessagesUpdated(m) => Self::empty(RCPT_EVENT_MESSAGES_UPDATED).with_messages(m),
            ClientEvent::ReadAckForGroupMessageUpdated(m) => Self::empty(RCPT_EVENT_READ_ACK_FOR_GROUP_MESSAGE_UPDATED).with_messages(m),
            ClientEvent::GroupMessageRead(acks) => {
                let mut ev = Self::empty(RCPT_EVENT_GROUP_MESSAGE_READ);
                ev.acks = acks.into_iter().map(rcpt_group_read_ack::new).collect();
                ev
            }
            ClientEvent::GroupMessageDelivered(acks) => {
                let mut ev = Self::empty(RCPT_EVENT_GROUP_MESSAGE_DELIVERED);
                ev.acks = acks.into_iter().map(rcpt_group_read_ack::new).collect();
                ev
            }
            ClientEvent::ConversationRead { from, to } => {
                let mut ev = Self::empty(RCPT_EVENT_CONVERSATION_READ);
                ev.from = to_cstring(&from);
                ev.to = to_cstring(&to);
                ev
            }
            ClientEvent::UnreadCountChanged { conversation, unread } => {
                let mut ev = Self::empty(RCPT_EVENT_UNREAD_COUNT_CHANGED);
                ev.conversation_id = to_cstring(&conversation.id);
                ev.chat_type = conversation.chat_type as u32;
                ev.unread = unread;
                ev
            }
            ClientEvent::ConversationUpdated { conversation, read_up_to, receipt_up_to, peer_read_up_to, unread } => {
                let mut ev = Self::empty(RCPT_EVENT_CONVERSATION_UPDATED);
                ev.conversation_id = to_cstring(&conversation.id);
                ev.chat_type = conversation.chat_type as u32;
                ev.unread = unread;
                ev.read_up_to = to_cstring(&read_up_to.to_string());
                ev.receipt_up_to = to_cstring(&receipt_up_to.to_string());
                ev.peer_read_up_to = to_cstring(&peer_read_up_to.to_string());
                ev
            }
            ClientEvent::RequestCompleted { req, result } => {
                let mut ev = Self::empty(RCPT_EVENT_REQUEST_COMPLETED);
                ev.request_id = req;
                match result {
                    Err(e) => ev = ev.with_error(&e),
                    Ok(Completion::Done) => {}
                    Ok(Completion::Sent(m)) => ev = ev.with_messages(vec![m]),
                    Ok(Completion::GroupAcks(page)) => {
                        ev.acks = page.data.into_iter().map(rcpt_group_read_ack::new).collect();
                        ev.cursor = to_cstring(&page.cursor);
                    }
                    Ok(Completion::GroupCreated(g)) => ev.group_id = to_cstring(&g),
                    Ok(Completion::GroupUnread(page)) => {
                        ev.members = page.data.iter().map(|m| to_cstring(m)).collect();
                        ev.cursor = to_cstring(&page.cursor);
                    }
                    Ok(Completion::GroupAckCounts(items) | Completion::ReadAcks(items)) => {
                        ev.items = items.into_iter().map(crate::batch::Item::new).collect();
                    }
                }
                ev
            }
            ClientEvent::MembershipChanged { group, role: _ } => {
                let mut ev = Self::empty(RCPT_EVENT_MEMBERSHIP_CHANGED);
                ev.group_id = to_cstring(&group);
                ev
            }
            ClientEvent::StoreFailed(s) => {
                let mut ev = Self::empty(RCPT_EVENT_STORE_FAILED);
                ev.error_code = rcpt_result::RCPT_GENERAL_ERROR;
                ev.error_message = to_cstring(&s);
                ev
            }
        }
    }
}

pub(crate) fn with_ev<T: PanicValue>(name: &'static str, ev: *const rcpt_event, f: impl FnOnce(&rcpt_event) -> T) -> T {
    // SAFETY: NULL or a live event (owned, or borrowed inside the callback), per the contract.
    match unsafe { ev.as_ref() } {
        Some(ev) => f(ev),
        None => {
            set_last_error(&format!("{name}: event is NULL"));
            T::panic_value()
        }
    }
}

/// Frees an event returned by `rcpt_client_poll_event`, with everything borrowed from it. NULL
/// is a no-op. Never free the event passed to the event callback.
#[no_mangle]
pub extern "C" fn rcpt_event_free(ev: *mut rcpt_event) {
    ffi_boundary("rcpt_event_free", || {
        if !ev.is_null() {
            // SAFETY: an owned event from rcpt_client_poll_event, freed once, per the contract.
            drop(unsafe { Box::from_raw(ev) });
        }
    })
}

/// The event's kind; `RCPT_EVENT_NONE` if `ev` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_kind(ev: *const rcpt_event) -> rcpt_event_type {
    ffi_boundary("rcpt_event_kind", || with_ev("rcpt_event_kind", ev, |e| e.kind))
}

/// REQUEST_COMPLETED: the id the call that started the request wrote to its `out_req`. 0 for
/// other kinds.
#[no_mangle]
pub extern "C" fn rcpt_event_request_id(ev: *const rcpt_event) -> u64 {
    ffi_boundary("rcpt_event_request_id", || with_ev("rcpt_event_request_id", ev, |e| e.request_id))
}

/// REQUEST_COMPLETED: `RCPT_OK` when the request succeeded, else why it failed. LOGIN_FAILED,
/// PROTOCOL_ERROR: the error. STORE_FAILED: `RCPT_GENERAL_ERROR`. Other kinds: `RCPT_OK`.
/// `RCPT_NULL_ARGUMENT` if `ev` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_error_code(ev: *const rcpt_event) -> rcpt_result {
    ffi_boundary("rcpt_event_error_code", || {
        if ev.is_null() {
            set_last_error("rcpt_event_error_code: event is NULL");
            return rcpt_result::RCPT_NULL_ARGUMENT;
        }
        with_ev("rcpt_event_error_code", ev, |e| e.error_code)
    })
}

/// The error's description, `""` if none. Borrowed from `ev`. NULL if `ev` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_error_message(ev: *const rcpt_event) -> *const c_char {
    ffi_boundary("rcpt_event_error_message", || with_ev("rcpt_event_error_message", ev, |e| e.error_message.as_ptr()))
}

/// How many messages the event carries: MESSAGES_RECEIVED / _DELIVERED / _READ / _UPDATED, and
/// 1 for a completed send. 0 otherwise.
#[no_mangle]
pub extern "C" fn rcpt_event_message_count(ev: *const rcpt_event) -> usize {
    ffi_boundary("rcpt_event_message_count", || with_ev("rcpt_event_message_count", ev, |e| e.messages.len()))
}

/// The `index`-th message (arrival order), borrowed from `ev`: do not free it; it lives as long
/// as the event. NULL if `ev` is NULL or `index` is out of range.
#[no_mangle]
pub extern "C" fn rcpt_event_message_at(ev: *const rcpt_event, index: usize) -> *const rcpt_message {
    ffi_boundary("rcpt_event_message_at", || {
        with_ev("rcpt_event_message_at", ev, |e| match e.messages.get(index) {
            Some(m) => m as *const rcpt_message,
            None => {
                set_last_error(&format!("rcpt_event_message_at: index {index} out of range ({} messages)", e.messages.len()));
                std::ptr::null()
            }
        })
    })
}

/// How many group read acks the event carries: GROUP_MESSAGE_READ, and the page of a completed
/// `rcpt_client_fetch_group_read_acks` (newest first). 0 otherwise.
#[no_mangle]
pub extern "C" fn rcpt_event_ack_count(ev: *const rcpt_event) -> usize {
    ffi_boundary("rcpt_event_ack_count", || with_ev("rcpt_event_ack_count", ev, |e| e.acks.len()))
}

/// The `index`-th group read ack, borrowed from `ev`: do not free it; it lives as long as the
/// event. NULL if `ev` is NULL or `index` is out of range.
#[no_mangle]
pub extern "C" fn rcpt_event_ack_at(ev: *const rcpt_event, index: usize) -> *const rcpt_group_read_ack {
    ffi_boundary("rcpt_event_ack_at", || {
        with_ev("rcpt_event_ack_at", ev, |e| match e.acks.get(index) {
            Some(a) => a as *const rcpt_group_read_ack,
            None => {
                set_last_error(&format!("rcpt_event_ack_at: index {index} out of range ({} acks)", e.acks.len()));
                std::ptr::null()
            }
        })
    })
}

/// A completed fetch: the cursor to pass as `start_ack_id` (group acks) or `cursor` (unread
/// members) for the next page, `""` at the end.
/// Borrowed from `ev`. NULL if `ev` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_cursor(ev: *const rcpt_event) -> *const c_char {
    ffi_boundary("rcpt_event_cursor", || with_ev("rcpt_event_cursor", ev, |e| e.cursor.as_ptr()))
}

/// CONVERSATION_READ: the user who acked the conversation; `""` for other kinds. Borrowed from
/// `ev`. NULL if `ev` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_from(ev: *const rcpt_event) -> *const c_char {
    ffi_boundary("rcpt_event_from", || with_ev("rcpt_event_from", ev, |e| e.from.as_ptr()))
}

/// CONVERSATION_READ: the peer whose conversation was read; `""` for other kinds. Borrowed from
/// `ev`. NULL if `ev` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_to(ev: *const rcpt_event) -> *const c_char {
    ffi_boundary("rcpt_event_to", || with_ev("rcpt_event_to", ev, |e| e.to.as_ptr()))
}

/// UNREAD_COUNT_CHANGED, CONVERSATION_UPDATED: the conversation's id (the peer's user id, or
/// the group id); `""` for other kinds. Borrowed from `ev`. NULL if `ev` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_conversation_id(ev: *const rcpt_event) -> *const c_char {
    ffi_boundary("rcpt_event_conversation_id", || with_ev("rcpt_event_conversation_id", ev, |e| e.conversation_id.as_ptr()))
}

/// UNREAD_COUNT_CHANGED, CONVERSATION_UPDATED: the conversation's chat type (`RCPT_CHAT_TYPE_*`).
#[no_mangle]
pub extern "C" fn rcpt_event_chat_type(ev: *const rcpt_event) -> u32 {
    ffi_boundary("rcpt_event_chat_type", || with_ev("rcpt_event_chat_type", ev, |e| e.chat_type))
}

/// UNREAD_COUNT_CHANGED, CONVERSATION_UPDATED: the conversation's new unread count.
#[no_mangle]
pub extern "C" fn rcpt_event_unread(ev: *const rcpt_event) -> u32 {
    ffi_boundary("rcpt_event_unread", || with_ev("rcpt_event_unread", ev, |e| e.unread))
}

/// A completed `rcpt_client_create_group`, and MEMBERSHIP_CHANGED: the group's id; `""`
/// otherwise. Borrowed from `ev`. NULL if `ev` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_group_id(ev: *const rcpt_event) -> *const c_char {
    ffi_boundary("rcpt_event_group_id", || with_ev("rcpt_event_group_id", ev, |e| e.group_id.as_ptr()))
}

/// CONVERSATION_UPDATED: received messages up to this server id (decimal; "0": none) are read
/// by this user. `""` for other kinds. Borrowed from `ev`. NULL if `ev` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_read_up_to(ev: *const rcpt_event) -> *const c_char {
    ffi_boundary("rcpt_event_read_up_to", || with_ev("rcpt_event_read_up_to", ev, |e| e.read_up_to.as_ptr()))
}

/// CONVERSATION_UPDATED, 1:1: this user's read receipt covers the received messages up to this
/// server id (decimal; "0": none). `""` for other kinds. Borrowed from `ev`. NULL if `ev` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_receipt_up_to(ev: *const rcpt_event) -> *const c_char {
    ffi_boundary("rcpt_event_receipt_up_to", || with_ev("rcpt_event_receipt_up_to", ev, |e| e.receipt_up_to.as_ptr()))
}

/// CONVERSATION_UPDATED, 1:1: the peer read the messages this user sent up to this server id
/// (decimal; "0": none). `""` for other kinds. Borrowed from `ev`. NULL if `ev` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_peer_read_up_to(ev: *const rcpt_event) -> *const c_char {
    ffi_boundary("rcpt_event_peer_read_up_to", || with_ev("rcpt_event_peer_read_up_to", ev, |e| e.peer_read_up_to.as_ptr()))
}

/// For `RCPT_EVENT_DATABASE_OPENED`: true when the login counts as done at once (an offline
/// start; see the event). False for other events and for NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_offline_start(ev: *const rcpt_event) -> bool {
    ffi_boundary("rcpt_event_offline_start", || with_ev("rcpt_event_offline_start", ev, |e| e.offline_start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use receipt_core::{ChatType, ConversationKey};
    use std::ffi::CStr;

    fn text(p: *const c_char) -> &'static str {
        // SAFETY: the accessors return NUL-terminated strings borrowed from a leaked event.
        unsafe { CStr::from_ptr(p) }.to_str().unwrap()
    }

    #[test]
    fn a_conversation_update_carries_the_conversation_its_marks_and_its_count() {
        let ev = Box::leak(Box::new(rcpt_event::new(ClientEvent::ConversationUpdated {
            conversation: ConversationKey::new(ChatType::Chat, "bob"),
            read_up_to: 7,
            receipt_up_to: 5,
            peer_read_up_to: 3,
            unread: 2,
        })));
        assert_eq!(rcpt_event_kind(ev), rcpt_event_type::RCPT_EVENT_CONVERSATION_UPDATED);
        assert_eq!(rcpt_event_type::RCPT_EVENT_CONVERSATION_UPDATED as u32, 15, "appended: values are stable");
        assert_eq!(text(rcpt_event_conversation_id(ev)), "bob");
        assert_eq!(rcpt_event_chat_type(ev), ChatType::Chat as u32);
        assert_eq!(rcpt_event_unread(ev), 2);
        assert_eq!(
            [text(rcpt_event_read_up_to(ev)), text(rcpt_event_receipt_up_to(ev)), text(rcpt_event_peer_read_up_to(ev))],
            ["7", "5", "3"]
        );
        assert_eq!(rcpt_event_message_count(ev), 0, "no message list: the binding re-reads what it holds");
        // Other kinds leave the marks empty.
        let other = Box::leak(Box::new(rcpt_event::new(ClientEvent::Connected)));
        assert_eq!(text(rcpt_event_read_up_to(other)), "");
        rcpt_event_free(ev);
        rcpt_event_free(other);
    }
}
