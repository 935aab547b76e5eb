//! Private reading: the read-ack calls with a per-call mode. A private ack marks the messages
//! read on this user's devices (unread counts drop, the other devices follow) and tells the
//! sender nothing; the rule is `receipt_core::rules::read_ack_effect`. The default mode of a
//! client is `rcpt_options_set_private_read_receipts`; `require_read_ack` false wins over both
//! (505, nothing sent).

use std::os::raw::c_char;

use crate::batch::msg_ids;
use crate::client::{client_ref, msg_id, rcpt_client, write_req};
use crate::error::FfiError;
use crate::panic::ffi_result;
use crate::result::rcpt_result;
use crate::string::{arg_opt_str, arg_str, out_param};

/// Read-ack mode: the client's default (`rcpt_options_set_private_read_receipts`).
pub const RCPT_READ_ACK_DEFAULT: u32 = 0;
/// Read-ack mode: a receipt the sender hears of, whatever the client's default.
pub const RCPT_READ_ACK_PUBLIC: u32 = 1;
/// Read-ack mode: private, own devices only, whatever the client's default.
pub const RCPT_READ_ACK_PRIVATE: u32 = 2;

/// The per-call override of a mode; any other value is `RCPT_INVALID_PARAM`.
fn private_of(mode: u32) -> Result<Option<bool>, FfiError> {
    match mode {
        RCPT_READ_ACK_DEFAULT => Ok(None),
        RCPT_READ_ACK_PUBLIC => Ok(Some(false)),
        RCPT_READ_ACK_PRIVATE => Ok(Some(true)),
        other => Err(FfiError::invalid_param(format!("read-ack mode must be 0, 1 or 2, not {other}"))),
    }
}

/// `rcpt_client_ack_message_read` with a mode (`RCPT_READ_ACK_*`). `*out_req`: the request id,
/// or 0 when nothing was sent (acked before; private: read before).
#[no_mangle]
pub extern "C" fn rcpt_client_ack_message_read_mode(
    client: *mut rcpt_client,
    msg_id: *const c_char,
    mode: u32,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_ack_message_read_mode", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let id = arg_str(msg_id, "msg_id")?;
        let private = private_of(mode)?;
        c.client.current_user().ok_or_else(receipt_core::ChatError::not_logged_in)?;
        write_req(out_req, c.client.ack_message_read_with(self::msg_id(id)?, private)?);
        Ok(())
    })
}

/// `rcpt_client_ack_conversation_read` with a mode (`RCPT_READ_ACK_*`). Private, 1:1: the
/// peer hears nothing, this user's other devices mark the conversation read.
#[no_mangle]
pub extern "C" fn rcpt_client_ack_conversation_read_mode(
    client: *mut rcpt_client,
    conversation_id: *const c_char,
    mode: u32,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_ack_conversation_read_mode", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let conv = arg_str(conversation_id, "conversation_id")?;
        let private = private_of(mode)?;
        write_req(out_req, c.client.ack_conversation_read_with(conv, private)?);
        Ok(())
    })
}

/// `rcpt_client_ack_group_message_read` with a mode (`RCPT_READ_ACK_*`). Private: checked like
/// an ack, but no ack is recorded (the sender's count and list do not change; `ext` is dropped).
#[no_mangle]
pub extern "C" fn rcpt_client_ack_group_message_read_mode(
    client: *mut rcpt_client,
    msg_id: *const c_char,
    ext: *const c_char,
    mode: u32,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_ack_group_message_read_mode", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let id = arg_str(msg_id, "msg_id")?;
        let ext = arg_opt_str(ext, "ext")?;
        let private = private_of(mode)?;
        c.client.current_user().ok_or_else(receipt_core::ChatError::not_logged_in)?;
        write_req(out_req, c.client.ack_group_message_read_with(self::msg_id(id)?, ext, private)?);
        Ok(())
    })
}

/// `rcpt_client_ack_messages_read` with a mode (`RCPT_READ_ACK_*`): each id as a single ack of
/// that mode.
#[no_mangle]
pub extern "C" fn rcpt_client_ack_messages_read_mode(
    client: *mut rcpt_client,
    conversation_id: *const c_char,
    msg_ids: *const *const c_char,
    count: usize,
    mode: u32,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_ack_messages_read_mode", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let conversation = arg_str(conversation_id, "conversation_id")?;
        let ids = self::msg_ids(msg_ids, count)?;
        let private = private_of(mode)?;
        c.client.current_user().ok_or_else(receipt_core::ChatError::not_logged_in)?;
        *out_req = c.client.ack_messages_read_with(conversation, &ids, private)?;
        Ok(())
    })
}
