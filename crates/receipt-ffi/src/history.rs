//! `rcpt_message_list` and the history calls: a conversation's messages read from the local
//! store a page at a time (the SDK's `Conversation.loadMessages(startMsgId, pageSize)`), newest
//! first, with their receipt flags current. Messages not in the engine's cache are read from the
//! store by key; reading history never grows the client's memory beyond the page.

use std::os::raw::c_char;

use receipt_core::ConversationKey;

use crate::client::{client_ref, msg_id, parse_chat_type, rcpt_client};
use crate::error::{set_last_error, FfiError};
use crate::message::rcpt_message;
use crate::options::{options_mut, rcpt_options};
use crate::panic::{ffi_boundary, ffi_result};
use crate::result::rcpt_result;
use crate::string::{arg_opt_str, arg_str, out_param};

/// Largest page `rcpt_client_load_messages` returns (the SDK's local page limit).
pub const RCPT_MAX_HISTORY_PAGE: u32 = 400;

/// A page of messages, newest first, each a snapshot taken when the page was read.
///
/// Owned by the caller of `rcpt_client_load_messages`, freed with `rcpt_message_list_free`.
/// The messages it hands out are borrowed from it and live as long as it. Immutable: may be
/// read from any thread.
pub struct rcpt_message_list {
    messages: Vec<rcpt_message>,
}

/// Reads one page of a conversation's history from the local store into `*out` (the caller
/// owns it: `rcpt_message_list_free`): up to `page_size` (1..=`RCPT_MAX_HISTORY_PAGE`)
/// messages older than `start_msg_id`, newest first. `start_msg_id` NULL or "" starts from the
/// newest message; pass the last (oldest) id of a page to get the next one. A page shorter than
/// `page_size` is the last. Messages still waiting for the server are not in the history.
/// An unknown conversation gives an empty page. Needs a logged-in user (`RCPT_USER_NOT_LOGIN`).
#[no_mangle]
pub extern "C" fn rcpt_client_load_messages(
    client: *const rcpt_client,
    conversation_id: *const c_char,
    chat_type: u32,
    start_msg_id: *const c_char,
    page_size: u32,
    out: *mut *mut rcpt_message_list,
) -> rcpt_result {
    ffi_result("rcpt_client_load_messages", || {
        let out = out_param(out, "out", std::ptr::null_mut())?;
        let c = client_ref(client)?;
        let conv = arg_str(conversation_id, "conversation_id")?;
        let key = ConversationKey::new(parse_chat_type(chat_type)?, conv);
        let start = match arg_opt_str(start_msg_id, "start_msg_id")? {
            None | Some("") => None,
            Some(s) => Some(msg_id(s)?),
        };
        if page_size == 0 || page_size > RCPT_MAX_HISTORY_PAGE {
            return Err(FfiError::invalid_param(format!("page_size {page_size} is not in 1..={RCPT_MAX_HISTORY_PAGE}")));
        }
        let page = c.client.with_engine(|e, _| Ok(e.load_messages(&key, start, page_size as usize)))?;
        let list = rcpt_message_list { messages: page.into_iter().map(rcpt_message::new).collect() };
        *out = Box::into_raw(Box::new(list));
        Ok(())
    })
}

/// Writes how many messages the client holds in memory now (its message cache, at most the
/// `rcpt_options_set_message_cache` size plus any whose store write failed) to `*out`: a
/// diagnostic, for tests and figures.
#[no_mangle]
pub extern "C" fn rcpt_client_cached_message_count(client: *const rcpt_client, out: *mut u32) -> rcpt_result {
    ffi_result("rcpt_client_cached_message_count", || {
        let out = out_param(out, "out", 0)?;
        let c = client_ref(client)?;
        let n = c.client.with_engine(|e, _| Ok(e.cached_message_count()))?;
        *out = u32::try_from(n).unwrap_or(u32::MAX);
        Ok(())
    })
}

/// How many messages the client keeps in memory (`n` >= 1; default 2048). Older ones stay in
/// the local store and are read from it by key when an ack or a page needs them.
#[no_mangle]
pub extern "C" fn rcpt_options_set_message_cache(options: *mut rcpt_options, n: u32) -> rcpt_result {
    ffi_result("rcpt_options_set_message_cache", || {
        let o = options_mut(options)?;
        if n == 0 {
            return Err(FfiError::invalid_param("message cache size must be at least 1"));
        }
        o.message_cache = Some(n as usize);
        Ok(())
    })
}

/// Local retention: drop messages older than `max_age_ms` (by server time; 0: no age cap) and
/// beyond the newest `max_per_conversation` of each conversation (0: no count cap), in bounded
/// background steps. Unread received messages are never dropped, so unread counts stay exact.
/// Default: keep everything.
#[no_mangle]
pub extern "C" fn rcpt_options_set_retention(options: *mut rcpt_options, max_age_ms: u64, max_per_conversation: u32) -> rcpt_result {
    ffi_result("rcpt_options_set_retention", || {
        let o = options_mut(options)?;
        o.retention.max_age_ms = (max_age_ms != 0).then_some(max_age_ms);
        o.retention.max_per_conversation = (max_per_conversation != 0).then_some(max_per_conversation);
        Ok(())
    })
}

/// Frees a list from `rcpt_client_load_messages` (and the messages borrowed from it). NULL is
/// a no-op.
#[no_mangle]
pub extern "C" fn rcpt_message_list_free(list: *mut rcpt_message_list) {
    ffi_boundary("rcpt_message_list_free", || {
        if !list.is_null() {
            // SAFETY: an owned list handle, freed once, per the contract.
            drop(unsafe { Box::from_raw(list) });
        }
    })
}

/// How many messages the list holds (0 if `list` is NULL).
#[no_mangle]
pub extern "C" fn rcpt_message_list_count(list: *const rcpt_message_list) -> usize {
    ffi_boundary("rcpt_message_list_count", || {
        // SAFETY: NULL or a live list handle, per the contract.
        match unsafe { list.as_ref() } {
            Some(l) => l.messages.len(),
            None => {
                set_last_error("rcpt_message_list_count: list is NULL");
                0
            }
        }
    })
}

/// The message at `index` (0 is the newest), borrowed from `list` (do not free it). NULL if
/// `list` is NULL or `index` is out of range.
#[no_mangle]
pub extern "C" fn rcpt_message_list_at(list: *const rcpt_message_list, index: usize) -> *const rcpt_message {
    ffi_boundary("rcpt_message_list_at", || {
        // SAFETY: NULL or a live list handle, per the contract.
        let Some(l) = (unsafe { list.as_ref() }) else {
            set_last_error("rcpt_message_list_at: list is NULL");
            return std::ptr::null();
        };
        match l.messages.get(index) {
            Some(m) => m as *const rcpt_message,
            None => {
                set_last_error(&format!("rcpt_message_list_at: index {index} out of range ({} messages)", l.messages.len()));
                std::ptr::null()
            }
        }
    })
}
