//! `rcpt_group_read_ack`: one member's read ack of a group message.

use std::ffi::CString;
use std::os::raw::c_char;

use receipt_core::GroupReadAck;

use crate::error::set_last_error;
use crate::panic::{ffi_boundary, PanicValue};
use crate::string::to_cstring;

/// One member's read ack of a group message (the SDK's GroupReadAck).
///
/// Ownership: always borrowed from the event it was read from (`rcpt_event_ack_at`); it lives
/// as long as the event and is never freed on its own. Its strings live as long as it.
pub struct rcpt_group_read_ack {
    pub(crate) ack: GroupReadAck,
    ack_id: CString,
    msg_id: CString,
    from: CString,
    content: CString,
}

impl rcpt_group_read_ack {
    pub(crate) fn new(ack: GroupReadAck) -> Self {
        rcpt_group_read_ack {
            ack_id: to_cstring(&ack.ack_id.to_string()),
            msg_id: to_cstring(&ack.msg_id.to_string()),
            from: to_cstring(&ack.from),
            content: to_cstring(ack.content.as_deref().unwrap_or("")),
            ack,
        }
    }
}

fn with_ack<T: PanicValue>(name: &'static str, a: *const rcpt_group_read_ack, f: impl FnOnce(&rcpt_group_read_ack) -> T) -> T {
    // SAFETY: NULL or a live ack borrowed from a live event, per the contract.
    match unsafe { a.as_ref() } {
        Some(a) => f(a),
        None => {
            set_last_error(&format!("{name}: ack is NULL"));
            T::panic_value()
        }
    }
}

/// The ack's id as a decimal string (increasing in arrival order; a fetch cursor). Borrowed
/// from `ack`. NULL if `ack` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_group_read_ack_id(ack: *const rcpt_group_read_ack) -> *const c_char {
    ffi_boundary("rcpt_group_read_ack_id", || with_ack("rcpt_group_read_ack_id", ack, |a| a.ack_id.as_ptr()))
}

/// The acked message's server id as a decimal string. Borrowed from `ack`. NULL if `ack` is
/// NULL.
#[no_mangle]
pub extern "C" fn rcpt_group_read_ack_msg_id(ack: *const rcpt_group_read_ack) -> *const c_char {
    ffi_boundary("rcpt_group_read_ack_msg_id", || with_ack("rcpt_group_read_ack_msg_id", ack, |a| a.msg_id.as_ptr()))
}

/// The member who read the message. Borrowed from `ack`. NULL if `ack` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_group_read_ack_from(ack: *const rcpt_group_read_ack) -> *const c_char {
    ffi_boundary("rcpt_group_read_ack_from", || with_ack("rcpt_group_read_ack_from", ack, |a| a.from.as_ptr()))
}

/// The ext the member passed to `rcpt_client_ack_group_message_read`, `""` if none. Borrowed
/// from `ack`. NULL if `ack` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_group_read_ack_content(ack: *const rcpt_group_read_ack) -> *const c_char {
    ffi_boundary("rcpt_group_read_ack_content", || with_ack("rcpt_group_read_ack_content", ack, |a| a.content.as_ptr()))
}

/// How many members had acked the message when this ack arrived (this one included).
#[no_mangle]
pub extern "C" fn rcpt_group_read_ack_count(ack: *const rcpt_group_read_ack) -> u32 {
    ffi_boundary("rcpt_group_read_ack_count", || with_ack("rcpt_group_read_ack_count", ack, |a| a.ack.count))
}

/// Server time (ms since the Unix epoch) when the ack arrived.
#[no_mangle]
pub extern "C" fn rcpt_group_read_ack_timestamp(ack: *const rcpt_group_read_ack) -> u64 {
    ffi_boundary("rcpt_group_read_ack_timestamp", || with_ack("rcpt_group_read_ack_timestamp", ack, |a| a.ack.timestamp))
}
