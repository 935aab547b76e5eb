//! Batch calls and their answers: who has not read a group message (a page of member ids), the
//! read counts of 1..=20 group messages, and 1:1 read acks of 1..=20 messages in one trip (one
//! item per id, read from the REQUEST_COMPLETED event with `rcpt_event_item_*`).

use std::ffi::CString;
use std::os::raw::c_char;

use receipt_core::protocol::BatchItem;
use receipt_core::rules::MAX_BATCH_IDS;
use receipt_core::MsgId;

use crate::client::{client_ref, msg_id, rcpt_client};
use crate::error::{set_last_error, FfiError};
use crate::event::{rcpt_event, with_ev};
use crate::panic::{ffi_boundary, ffi_result};
use crate::result::rcpt_result;
use crate::string::{arg_opt_str, arg_str, out_param, to_cstring};

/// One id's outcome in a batch answer, held by its event.
pub(crate) struct Item {
    msg_id: CString,
    count: u32,
    code: rcpt_result,
    message: CString,
}

impl Item {
    pub(crate) fn new(i: BatchItem) -> Self {
        Item {
            msg_id: to_cstring(&i.msg_id.to_string()),
            count: i.count,
            code: i.err.as_ref().map_or(rcpt_result::RCPT_OK, |e| e.code.into()),
            message: to_cstring(i.err.as_ref().map_or("", |e| e.description.as_str())),
        }
    }
}

/// `count` message ids (decimal strings) from the C array `ids`: NULL array or element
/// (`RCPT_NULL_ARGUMENT`), not UTF-8 (`RCPT_INVALID_UTF8`), not 1..=20 ids (`RCPT_INVALID_PARAM`),
/// not a message id (`RCPT_MESSAGE_INVALID`).
pub(crate) fn msg_ids(ids: *const *const c_char, count: usize) -> Result<Vec<MsgId>, FfiError> {
    if ids.is_null() {
        return Err(FfiError::null("msg_ids"));
    }
    if !(1..=MAX_BATCH_IDS).contains(&count) {
        return Err(FfiError::invalid_param(format!("a batch names 1..={MAX_BATCH_IDS} message ids, not {count}")));
    }
    // SAFETY: non-NULL and `count` readable elements per the contract (checked bounded above).
    let ids = unsafe { std::slice::from_raw_parts(ids, count) };
    ids.iter().enumerate().map(|(i, &p)| msg_id(arg_str(p, &format!("msg_ids[{i}]"))?)).collect()
}

/// Asks for one page (`page_size` 1..=100) of the members who have not read a group message:
/// members when it was sent who are still in the group and have not acked it, by user id,
/// after `cursor` (NULL or `""`: from the first; else a previous page's cursor, the last id it
/// returned). The REQUEST_COMPLETED event of `*out_req` carries the page
/// (`rcpt_event_member_count` / `rcpt_event_member_at`) and the next cursor (`rcpt_event_cursor`,
/// `""` on the last page). Only the sender may ask unless the group's policy lets members see
/// acks (603). Needs a live connection (300 otherwise).
#[no_mangle]
pub extern "C" fn rcpt_client_fetch_group_unread_members(
    client: *mut rcpt_client,
    msg_id: *const c_char,
    page_size: u32,
    cursor: *const c_char,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_fetch_group_unread_members", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let id = self::msg_id(arg_str(msg_id, "msg_id")?)?;
        let cursor = arg_opt_str(cursor, "cursor")?;
        c.client.current_user().ok_or_else(receipt_core::ChatError::not_logged_in)?;
        *out_req = c.client.fetch_group_unread_members(id, page_size, cursor)?;
        Ok(())
    })
}

/// Asks for the read count of each of `count` (1..=20) group messages `msg_ids` (decimal server
/// ids). The REQUEST_COMPLETED event of `*out_req` has one item per id in the order asked
/// (`rcpt_event_item_count`, `rcpt_event_item_msg_id`, `rcpt_event_item_read_count`,
/// `rcpt_event_item_error_code`): an id the caller may not see (603), an unknown one or one
/// that is not a group message (500) gets its error and a count of 0. Needs a live connection.
#[no_mangle]
pub extern "C" fn rcpt_client_fetch_group_ack_counts(
    client: *mut rcpt_client,
    msg_ids: *const *const c_char,
    count: usize,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_fetch_group_ack_counts", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let ids = self::msg_ids(msg_ids, count)?;
        c.client.current_user().ok_or_else(receipt_core::ChatError::not_logged_in)?;
        *out_req = c.client.fetch_group_ack_counts(&ids)?;
        Ok(())
    })
}

/// Sends the read acks of `count` (1..=20) received 1:1 messages of the conversation with
/// `conversation_id` (the peer) in one round trip. The REQUEST_COMPLETED event of `*out_req` has
/// one item per id (`rcpt_event_item_error_code`: `RCPT_OK`, or the code a single
/// `rcpt_client_ack_message_read` would give; 500 also for a message of another conversation).
/// Unlike a single ack it is not queued offline: 300 without a live connection.
#[no_mangle]
pub extern "C" fn rcpt_client_ack_messages_read(
    client: *mut rcpt_client,
    conversation_id: *const c_char,
    msg_ids: *const *const c_char,
    count: usize,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_ack_messages_read", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let conversation = arg_str(conversation_id, "conversation_id")?;
        let ids = self::msg_ids(msg_ids, count)?;
        c.client.current_user().ok_or_else(receipt_core::ChatError::not_logged_in)?;
        *out_req = c.client.ack_messages_read(conversation, &ids)?;
        Ok(())
    })
}

/// A completed `rcpt_client_fetch_group_unread_members`: how many member ids its page holds. 0
/// for other events and for NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_member_count(ev: *const rcpt_event) -> usize {
    ffi_boundary("rcpt_event_member_count", || with_ev("rcpt_event_member_count", ev, |e| e.members.len()))
}

/// The `index`-th member id of the page (user-id order), borrowed from `ev`. NULL if `ev` is
/// NULL or `index` is out of range.
#[no_mangle]
pub extern "C" fn rcpt_event_member_at(ev: *const rcpt_event, index: usize) -> *const c_char {
    ffi_boundary("rcpt_event_member_at", || {
        with_ev("rcpt_event_member_at", ev, |e| match e.members.get(index) {
            Some(m) => m.as_ptr(),
            None => {
                set_last_error(&format!("rcpt_event_member_at: index {index} out of range ({} members)", e.members.len()));
                std::ptr::null()
            }
        })
    })
}

/// A completed batch (`rcpt_client_fetch_group_ack_counts`, `rcpt_client_ack_messages_read`):
/// how many items it holds, one per id asked. 0 for other events and for NULL.
#[no_mangle]
pub extern "C" fn rcpt_event_item_count(ev: *const rcpt_event) -> usize {
    ffi_boundary("rcpt_event_item_count", || with_ev("rcpt_event_item_count", ev, |e| e.items.len()))
}

fn with_item<T: crate::panic::PanicValue>(name: &'static str, ev: *const rcpt_event, index: usize, f: impl FnOnce(&Item) -> T) -> T {
    with_ev(name, ev, |e| match e.items.get(index) {
        Some(i) => f(i),
        None => {
            set_last_error(&format!("{name}: index {index} out of range ({} items)", e.items.len()));
            T::panic_value()
        }
    })
}

/// The `index`-th item's message id (decimal), borrowed from `ev`. NULL if `ev` is NULL or
/// `index` is out of range.
#[no_mangle]
pub extern "C" fn rcpt_event_item_msg_id(ev: *const rcpt_event, index: usize) -> *const c_char {
    ffi_boundary("rcpt_event_item_msg_id", || with_item("rcpt_event_item_msg_id", ev, index, |i| i.msg_id.as_ptr()))
}

/// The `index`-th item's read count (ack counts; 0 for read acks, for an item with an error,
/// and out of range).
#[no_mangle]
pub extern "C" fn rcpt_event_item_read_count(ev: *const rcpt_event, index: usize) -> u32 {
    ffi_boundary("rcpt_event_item_read_count", || with_item("rcpt_event_item_read_count", ev, index, |i| i.count))
}

/// The `index`-th item's outcome: `RCPT_OK`, or the error for that id. `RCPT_NULL_ARGUMENT` if
/// `ev` is NULL, `RCPT_INVALID_PARAM` if `index` is out of range.
#[no_mangle]
pub extern "C" fn rcpt_event_item_error_code(ev: *const rcpt_event, index: usize) -> rcpt_result {
    ffi_boundary("rcpt_event_item_error_code", || {
        if ev.is_null() {
            set_last_error("rcpt_event_item_error_code: event is NULL");
            return rcpt_result::RCPT_NULL_ARGUMENT;
        }
        with_ev("rcpt_event_item_error_code", ev, |e| match e.items.get(index) {
            Some(i) => i.code,
            None => {
                set_last_error(&format!("rcpt_event_item_error_code: index {index} out of range ({} items)", e.items.len()));
                rcpt_result::RCPT_INVALID_PARAM
            }
        })
    })
}

/// The `index`-th item's error description, `""` when it succeeded. Borrowed from `ev`. NULL if
/// `ev` is NULL or `index` is out of range.
#[no_mangle]
pub extern "C" fn rcpt_event_item_error_message(ev: *const rcpt_event, index: usize) -> *const c_char {
    ffi_boundary("rcpt_event_item_error_message", || with_item("rcpt_event_item_error_message", ev, index, |i| i.message.as_ptr()))
}
