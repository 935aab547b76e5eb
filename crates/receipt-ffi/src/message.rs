//! `rcpt_message`: a message with its receipt flags.

use std::ffi::CString;
use std::os::raw::c_char;

use receipt_core::ChatMessage;

use crate::error::set_last_error;
use crate::panic::{ffi_boundary, PanicValue};
use crate::string::to_cstring;

/// A message as this client sees it, with its receipt flags (docs/product.md), as a snapshot
/// taken when it was handed out: it does not change afterwards.
///
/// Ownership: owned by the caller when returned by `rcpt_client_get_message` or
/// `rcpt_client_send_text` (free it with `rcpt_message_free`); borrowed when read from an event
/// with `rcpt_event_message_at` (it lives as long as the event; do not free it). The strings
/// its accessors return are borrowed from the message and live as long as it.
/// Immutable: may be read from any thread.
pub struct rcpt_message {
    pub(crate) msg: ChatMessage,
    id: CString,
    client_id: CString,
    from: CString,
    to: CString,
    content: CString,
    conversation_id: CString,
}

impl rcpt_message {
    pub(crate) fn new(msg: ChatMessage) -> Self {
        rcpt_message {
            id: to_cstring(&msg.msg_id_string()),
            client_id: to_cstring(&msg.client_id),
            from: to_cstring(&msg.from),
            to: to_cstring(&msg.to),
            content: to_cstring(&msg.content),
            conversation_id: to_cstring(msg.conversation_ref().id),
            msg,
        }
    }
}

/// Runs `f` on the message, or records the NULL and returns the neutral value.
pub(crate) fn with_msg<T: PanicValue>(name: &'static str, m: *const rcpt_message, f: impl FnOnce(&rcpt_message) -> T) -> T {
    // SAFETY: NULL or a live message handle, per the contract.
    match unsafe { m.as_ref() } {
        Some(m) => f(m),
        None => {
            set_last_error(&format!("{name}: message is NULL"));
            T::panic_value()
        }
    }
}

/// Frees a message returned by `rcpt_client_get_message` or `rcpt_client_send_text`. NULL is a
/// no-op. Never free a message borrowed from an event.
#[no_mangle]
pub extern "C" fn rcpt_message_free(msg: *mut rcpt_message) {
    ffi_boundary("rcpt_message_free", || {
        if !msg.is_null() {
            // SAFETY: an owned message handle, freed once, per the contract.
            drop(unsafe { Box::from_raw(msg) });
        }
    })
}

/// The id users see: the server id as a decimal string once the server accepted the message,
/// the client id before. Borrowed from `msg`. NULL if `msg` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_message_id(msg: *const rcpt_message) -> *const c_char {
    ffi_boundary("rcpt_message_id", || with_msg("rcpt_message_id", msg, |m| m.id.as_ptr()))
}

/// The sending device's id for the message. Borrowed from `msg`. NULL if `msg` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_message_client_id(msg: *const rcpt_message) -> *const c_char {
    ffi_boundary("rcpt_message_client_id", || with_msg("rcpt_message_client_id", msg, |m| m.client_id.as_ptr()))
}

/// The sender's user id. Borrowed from `msg`. NULL if `msg` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_message_from(msg: *const rcpt_message) -> *const c_char {
    ffi_boundary("rcpt_message_from", || with_msg("rcpt_message_from", msg, |m| m.from.as_ptr()))
}

/// The peer's user id (1:1) or the group id. Borrowed from `msg`. NULL if `msg` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_message_to(msg: *const rcpt_message) -> *const c_char {
    ffi_boundary("rcpt_message_to", || with_msg("rcpt_message_to", msg, |m| m.to.as_ptr()))
}

/// The conversation the message belongs to: the peer for a 1:1 message (its sender when
/// received, `to` when sent), else the group id. Borrowed from `msg`. NULL if `msg` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_message_conversation_id(msg: *const rcpt_message) -> *const c_char {
    ffi_boundary("rcpt_message_conversation_id", || with_msg("rcpt_message_conversation_id", msg, |m| m.conversation_id.as_ptr()))
}

/// The text (UTF-8). Borrowed from `msg`. NULL if `msg` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_message_content(msg: *const rcpt_message) -> *const c_char {
    ffi_boundary("rcpt_message_content", || with_msg("rcpt_message_content", msg, |m| m.content.as_ptr()))
}

/// `RCPT_CHAT_TYPE_CHAT` (0), `RCPT_CHAT_TYPE_GROUP_CHAT` (1) or `RCPT_CHAT_TYPE_CHAT_ROOM`
/// (2). 0 if `msg` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_message_chat_type(msg: *const rcpt_message) -> u32 {
    ffi_boundary("rcpt_message_chat_type", || with_msg("rcpt_message_chat_type", msg, |m| m.msg.chat_type as u32))
}

/// `RCPT_DIRECTION_SEND` (0) or `RCPT_DIRECTION_RECEIVE` (1). 0 if `msg` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_message_direction(msg: *const rcpt_message) -> u32 {
    ffi_boundary("rcpt_message_direction", || with_msg("rcpt_message_direction", msg, |m| m.msg.direction as u32))
}

/// Server time (ms since the Unix epoch) when the server accepted the message; 0 before.
#[no_mangle]
pub extern "C" fn rcpt_message_timestamp(msg: *const rcpt_message) -> u64 {
    ffi_boundary("rcpt_message_timestamp", || with_msg("rcpt_message_timestamp", msg, |m| m.msg.timestamp))
}

/// `RCPT_STATUS_PENDING` (0), `RCPT_STATUS_SENT` (1) or `RCPT_STATUS_FAILED` (2). 0 if `msg` is
/// NULL.
#[no_mangle]
pub extern "C" fn rcpt_message_status(msg: *const rcpt_message) -> u32 {
    ffi_boundary("rcpt_message_status", || with_msg("rcpt_message_status", msg, |m| m.msg.status as u32))
}

/// Sender side: a delivery ack came back. Receiver side: this user's delivery ack went out.
#[no_mangle]
pub extern "C" fn rcpt_message_is_delivered(msg: *const rcpt_message) -> bool {
    ffi_boundary("rcpt_message_is_delivered", || with_msg("rcpt_message_is_delivered", msg, |m| m.msg.delivered))
}

/// Sender side: the peer read it. Receiver side: this user already sent the read ack (from any
/// of their devices).
#[no_mangle]
pub extern "C" fn rcpt_message_is_receiver_read(msg: *const rcpt_message) -> bool {
    ffi_boundary("rcpt_message_is_receiver_read", || with_msg("rcpt_message_is_receiver_read", msg, |m| m.msg.receiver_read))
}

/// Receiver side: not read yet on this user's devices. Always false for sent messages.
#[no_mangle]
pub extern "C" fn rcpt_message_is_unread(msg: *const rcpt_message) -> bool {
    ffi_boundary("rcpt_message_is_unread", || with_msg("rcpt_message_is_unread", msg, |m| m.msg.unread))
}

/// The sender asked for group read acks (group messages only).
#[no_mangle]
pub extern "C" fn rcpt_message_need_group_ack(msg: *const rcpt_message) -> bool {
    ffi_boundary("rcpt_message_need_group_ack", || with_msg("rcpt_message_need_group_ack", msg, |m| m.msg.need_group_ack))
}

/// The sender asked for delivery acks (1:1: the peer's; group: see
/// `rcpt_message_need_group_delivery_ack`).
#[no_mangle]
pub extern "C" fn rcpt_message_require_delivery_ack(msg: *const rcpt_message) -> bool {
    ffi_boundary("rcpt_message_require_delivery_ack", || with_msg("rcpt_message_require_delivery_ack", msg, |m| m.msg.require_delivery_ack))
}

/// Sender side: how many members have read it (group read acks).
#[no_mangle]
pub extern "C" fn rcpt_message_group_ack_count(msg: *const rcpt_message) -> u32 {
    ffi_boundary("rcpt_message_group_ack_count", || with_msg("rcpt_message_group_ack_count", msg, |m| m.msg.group_ack_count))
}

/// Receiver side: this user already sent the group read ack.
#[no_mangle]
pub extern "C" fn rcpt_message_group_ack_sent(msg: *const rcpt_message) -> bool {
    ffi_boundary("rcpt_message_group_ack_sent", || with_msg("rcpt_message_group_ack_sent", msg, |m| m.msg.group_ack_sent))
}

/// `rcpt_message_chat_type`: a 1:1 chat (the conversation id is the peer's user id).
pub const RCPT_CHAT_TYPE_CHAT: u32 = 0;
/// `rcpt_message_chat_type`: a group chat (the conversation id is the group id).
pub const RCPT_CHAT_TYPE_GROUP_CHAT: u32 = 1;
/// `rcpt_message_chat_type`: a chat room (no receipts).
pub const RCPT_CHAT_TYPE_CHAT_ROOM: u32 = 2;
/// `rcpt_message_direction`: this user sent it.
pub const RCPT_DIRECTION_SEND: u32 = 0;
/// `rcpt_message_direction`: this user received it.
pub const RCPT_DIRECTION_RECEIVE: u32 = 1;
/// `rcpt_message_status`: waiting for the server (kept in the outbox while offline).
pub const RCPT_STATUS_PENDING: u32 = 0;
/// `rcpt_message_status`: the server accepted it and gave it an id.
pub const RCPT_STATUS_SENT: u32 = 1;
/// `rcpt_message_status`: the server refused it.
pub const RCPT_STATUS_FAILED: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use receipt_core::{ChatType, MessageDirection, SendStatus};
    use std::ffi::CStr;

    fn message(from: &str, to: &str, chat_type: ChatType, direction: MessageDirection) -> ChatMessage {
        ChatMessage {
            id: 1,
            client_id: "c1".into(),
            from: from.into(),
            to: to.into(),
            chat_type,
            direction,
            content: "hi".into(),
            timestamp: 0,
            require_delivery_ack: false,
            need_group_ack: false,
            status: SendStatus::Sent,
            delivered: false,
            receiver_read: false,
            unread: false,
            group_ack_count: 0,
            group_ack_sent: false,
            group_delivered_count: 0,
        }
    }

    #[test]
    fn the_conversation_id_is_the_engines() {
        let cases = [
            (message("bob", "alice", ChatType::Chat, MessageDirection::Receive), "bob"),
            (message("alice", "bob", ChatType::Chat, MessageDirection::Send), "bob"),
            (message("bob", "g1", ChatType::GroupChat, MessageDirection::Receive), "g1"),
        ];
        for (msg, want) in cases {
            let m = rcpt_message::new(msg);
            // SAFETY: a NUL-terminated string borrowed from `m`, which outlives this use.
            let got = unsafe { CStr::from_ptr(rcpt_message_conversation_id(&m)) };
            assert_eq!(got.to_str().unwrap(), want);
        }
    }
}
