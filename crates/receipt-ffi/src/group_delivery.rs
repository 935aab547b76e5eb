//! Group delivery receipts: sending a group message that asks for them, the delivered count of
//! a sent message, and paging through who got it. A member's device acks on its own (as for a
//! 1:1 delivery ack); the sender hears `RCPT_EVENT_GROUP_MESSAGE_DELIVERED`, whose acks are
//! `rcpt_group_read_ack` handles (the same shape; their content is always `""`).

use std::os::raw::c_char;

use receipt_core::{ChatType, GroupAckKind};

use crate::client::{fetch_group_acks, rcpt_client, send};
use crate::message::{rcpt_message, with_msg};
use crate::panic::{ffi_boundary, ffi_result};
use crate::result::rcpt_result;

/// Sends a text message to group `group_id`. `need_group_ack` asks the members for group read
/// acks; `need_group_delivery_ack` asks their devices for group delivery acks (each member's
/// device sends one on its own when the message arrives, backlog included). The server keeps
/// a request only when its policy is on (505 otherwise) and the caller may ask (603); a group
/// above the policy's member cap gets the message without the request
/// (`rcpt_message_need_group_delivery_ack` of the sent message says which). Otherwise as
/// `rcpt_client_send_text`: works offline, `*out_req` gets the request id, `*out_msg` (if not
/// NULL) the message as queued (owned: `rcpt_message_free`).
#[no_mangle]
pub extern "C" fn rcpt_client_send_group_message(
    client: *mut rcpt_client,
    group_id: *const c_char,
    content: *const c_char,
    need_group_ack: bool,
    need_group_delivery_ack: bool,
    out_req: *mut u64,
    out_msg: *mut *mut rcpt_message,
) -> rcpt_result {
    ffi_result("rcpt_client_send_group_message", || {
        send(client, group_id, ChatType::GroupChat as u32, content, (need_group_ack, need_group_delivery_ack), out_req, out_msg)
    })
}

/// Asks for one page (`page_size` 1..=100) of a group message's delivery acks, newest first,
/// starting at `start_ack_id` (NULL or `""`: the newest; else a previous page's cursor). The
/// REQUEST_COMPLETED event of `*out_req` carries the page (`rcpt_event_ack_at`) and the next
/// cursor (`rcpt_event_cursor`). Needs a live connection (300 otherwise). The server's
/// visibility policy decides who may ask (the sender by default; 603 for anybody else).
#[no_mangle]
pub extern "C" fn rcpt_client_fetch_group_delivery_acks(
    client: *mut rcpt_client,
    msg_id: *const c_char,
    page_size: u32,
    start_ack_id: *const c_char,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_fetch_group_delivery_acks", || {
        fetch_group_acks(client, GroupAckKind::Delivery, msg_id, page_size, start_ack_id, out_req)
    })
}

/// A group message that asks for group delivery acks (the server kept the request, once sent).
/// False for 1:1 messages (see `rcpt_message_require_delivery_ack`) and if `msg` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_message_need_group_delivery_ack(msg: *const rcpt_message) -> bool {
    ffi_boundary("rcpt_message_need_group_delivery_ack", || {
        with_msg("rcpt_message_need_group_delivery_ack", msg, |m| m.msg.chat_type == ChatType::GroupChat && m.msg.require_delivery_ack)
    })
}

/// Sender side: how many members' devices have acked the delivery of this group message.
#[no_mangle]
pub extern "C" fn rcpt_message_group_delivered_count(msg: *const rcpt_message) -> u32 {
    ffi_boundary("rcpt_message_group_delivered_count", || {
        with_msg("rcpt_message_group_delivered_count", msg, |m| m.msg.group_delivered_count)
    })
}
