//! `rcpt_client`: the client runtime (one logged-in user at a time, a connection thread with
//! reconnect and backoff, an on-disk store), its calls, and event delivery.
//!
//! Events come from the runtime's channel. With an event callback set, the runtime's waker
//! (which runs on the thread that produced the events) drains the channel into the callback.
//! Without one, events stay queued for `rcpt_client_poll_event`, and the wake-up callback, if
//! set, is told each time events were queued.

use std::ffi::c_void;
use std::os::raw::c_char;
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_channel::Receiver;
use receipt_client::{Client, ClientConfig, ClientEvent};
use receipt_core::{AckId, ChatType, ConversationKey, GroupAckKind, MsgId, ReqId};

use crate::error::{set_last_error, FfiError};
use crate::event::rcpt_event;
use crate::message::rcpt_message;
use crate::options::rcpt_options;
use crate::panic::{ffi_boundary, ffi_result, in_host_callback, inside_host_callback};
use crate::result::rcpt_result;
use crate::string::{arg_opt_str, arg_str, out_param, to_cstring};

/// The event callback: `user_data` is what was passed to `rcpt_client_set_event_callback`;
/// `ev` is borrowed and valid only during the call.
///
/// Thread: called on the client's connection thread (events from the server, connection
/// changes) or on the thread of the `rcpt_client_*` call that caused the event, one call at a
/// time per client, in order. It must not block for long, and must not call `rcpt_client_*`
/// functions (those fail with `RCPT_GENERAL_ERROR` there); reading the event with the
/// `rcpt_event_*`, `rcpt_message_*` and `rcpt_group_read_ack_*` accessors is fine.
pub type rcpt_event_callback = Option<unsafe extern "C" fn(user_data: *mut c_void, ev: *const rcpt_event)>;

/// The wake-up callback: `user_data` is what was passed to `rcpt_client_set_wakeup`.
///
/// Thread: called on any thread (the connection thread, or the thread of a `rcpt_client_*`
/// call) each time events were queued. It must only schedule a `rcpt_client_poll_event` on the
/// host's own thread (the NAPI shim uses a threadsafe function) and must not call back into the
/// library (`rcpt_client_*` calls fail with `RCPT_GENERAL_ERROR` there).
pub type rcpt_wakeup_callback = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// The host's `void *user_data`: the host guarantees it may be used from the threads above.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);
// SAFETY: an opaque value handed back to the host's callbacks; the callbacks' documentation
// tells the host which threads will see it.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

#[derive(Default)]
struct Handlers {
    callback: Option<(unsafe extern "C" fn(*mut c_void, *const rcpt_event), UserData)>,
    wakeup: Option<(unsafe extern "C" fn(*mut c_void), UserData)>,
}

/// Where the runtime's events go.
struct Sink {
    rx: Receiver<ClientEvent>,
    handlers: Mutex<Handlers>,
}

impl Sink {
    fn handlers(&self) -> MutexGuard<'_, Handlers> {
        self.handlers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The runtime queued events (runs on the thread that queued them).
    fn on_events(&self) {
        let h = self.handlers();
        if let Some((cb, ud)) = h.callback {
            Self::drain(&self.rx, cb, ud);
        } else if let Some((wake, ud)) = h.wakeup {
            // SAFETY: the host's function pointer, called as documented.
            in_host_callback(|| unsafe { wake(ud.0) });
        }
    }

    /// Hands every queued event to the callback, in order. Call with the handlers locked (that
    /// lock serializes the callback's calls).
    fn drain(rx: &Receiver<ClientEvent>, cb: unsafe extern "C" fn(*mut c_void, *const rcpt_event), ud: UserData) {
        while let Ok(e) = rx.try_recv() {
            let ev = rcpt_event::new(e);
            // SAFETY: the host's function pointer, called as documented; `ev` outlives the call.
            in_host_callback(|| unsafe { cb(ud.0, &ev) });
        }
    }
}

/// A client: one app's connection to the receipt server, for one logged-in user at a time.
///
/// Created by `rcpt_client_new`, owned by the caller, freed with `rcpt_client_free`. Its calls
/// may be made from any thread (they are synchronized inside), but not from inside its event
/// or wake-up callback.
pub struct rcpt_client {
    pub(crate) client: Client,
    sink: Arc<Sink>,
}

pub(crate) fn client_ref<'a>(c: *const rcpt_client) -> Result<&'a rcpt_client, FfiError> {
    // SAFETY: NULL or a live handle from rcpt_client_new, per the contract.
    let c = unsafe { c.as_ref() }.ok_or_else(|| FfiError::null("client"))?;
    if inside_host_callback() {
        return Err(FfiError::new(
            rcpt_result::RCPT_GENERAL_ERROR,
            "rcpt_client_* must not be called from inside the event or wake-up callback",
        ));
    }
    Ok(c)
}

pub(crate) fn parse_chat_type(v: u32) -> Result<ChatType, FfiError> {
    ChatType::from_u32(v).ok_or_else(|| FfiError::invalid_param(format!("chat_type {v} is not 0 (Chat), 1 (GroupChat) or 2 (ChatRoom)")))
}

/// A server message id given as a decimal string.
pub(crate) fn msg_id(s: &str) -> Result<MsgId, FfiError> {
    if s.is_empty() {
        return Err(FfiError::invalid_param("msg_id is empty"));
    }
    match s.parse::<MsgId>() {
        Ok(id) if id != 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(FfiError::new(rcpt_result::RCPT_MESSAGE_INVALID, format!("no message with server id {s:?}"))),
    }
}

/// `n` strings at `members`.
fn members(members: *const *const c_char, n: usize) -> Result<Vec<String>, FfiError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if members.is_null() {
        return Err(FfiError::null("members"));
    }
    // SAFETY: `members` points to `n` pointers, per the contract.
    let ptrs = unsafe { std::slice::from_raw_parts(members, n) };
    ptrs.iter().enumerate().map(|(i, p)| arg_str(*p, &format!("members[{i}]")).map(str::to_string)).collect()
}

pub(crate) fn write_req(out_req: &mut u64, req: Option<ReqId>) {
    *out_req = req.unwrap_or(0);
}

/// Creates a client from `options` (which must have a data dir; the options are copied and
/// may be freed afterwards) and writes it to `*out`. No connection until `rcpt_client_login`.
/// The caller owns `*out` and frees it with `rcpt_client_free`. On failure `*out` is NULL.
#[no_mangle]
pub extern "C" fn rcpt_client_new(options: *const rcpt_options, out: *mut *mut rcpt_client) -> rcpt_result {
    ffi_result("rcpt_client_new", || {
        let out = out_param(out, "out", std::ptr::null_mut())?;
        // SAFETY: NULL or a live handle from rcpt_options_new, per the contract.
        let o = unsafe { options.as_ref() }.ok_or_else(|| FfiError::null("options"))?;
        let dir = o.data_dir.clone().ok_or_else(|| FfiError::invalid_param("options have no data dir (rcpt_options_set_data_dir)"))?;
        let mut cfg = ClientConfig::new(o.options.clone(), dir);
        cfg.device_id = o.device_id.clone();
        cfg.security = o.tls.security();
        if let Some(n) = o.message_cache {
            cfg.message_cache = n;
        }
        cfg.retention = o.retention;
        let client = Client::new(cfg)?;
        let sink = Arc::new(Sink { rx: client.events().clone(), handlers: Mutex::new(Handlers::default()) });
        let waker_sink = sink.clone();
        client.set_waker(Some(Arc::new(move || {
            // Runs inside the runtime (often on its connection thread): never unwind there.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker_sink.on_events())).is_err() {
                set_last_error("event delivery: internal panic");
            }
        })));
        *out = Box::into_raw(Box::new(rcpt_client { client, sink }));
        Ok(())
    })
}

/// Frees a client: drops the callbacks (once this returns, neither callback runs again; a call
/// already running finishes first), logs out, closes the connection and joins the connection
/// thread. Queued events are dropped. NULL is a no-op. No other call on this client may run
/// concurrently or follow (set your pointer to NULL). Must not be called from inside the
/// client's own callbacks (it then does nothing and records an error).
#[no_mangle]
pub extern "C" fn rcpt_client_free(client: *mut rcpt_client) {
    ffi_boundary("rcpt_client_free", || {
        if client.is_null() {
            return;
        }
        if inside_host_callback() {
            set_last_error("rcpt_client_free: must not be called from inside the event or wake-up callback; the client was not freed");
            return;
        }
        // SAFETY: a handle from rcpt_client_new, freed once, per the contract.
        let c = unsafe { Box::from_raw(client) };
        c.client.set_waker(None);
        *c.sink.handlers() = Handlers::default();
        drop(c);
    })
}

/// Logs `user` in with `token` (both copied). Returns at once; the outcome arrives as
/// `RCPT_EVENT_CONNECTED` or `RCPT_EVENT_LOGIN_FAILED` (104 malformed token, 108 expired, 202
/// bad signature, 300 server unreachable).
/// `RCPT_USER_ALREADY_LOGIN` if a user is logged in.
#[no_mangle]
pub extern "C" fn rcpt_client_login(client: *mut rcpt_client, user: *const c_char, token: *const c_char) -> rcpt_result {
    ffi_result("rcpt_client_login", || {
        let c = client_ref(client)?;
        let user = arg_str(user, "user")?;
        let token = arg_str(token, "token")?;
        Ok(c.client.login(user, token)?)
    })
}

/// Logs out: closes the connection and joins the connection thread (an `RCPT_EVENT_DISCONNECTED`
/// may be delivered meanwhile). What waits in the outbox stays on disk and goes out at the
/// user's next login. `RCPT_USER_NOT_LOGIN` if nobody is logged in.
#[no_mangle]
pub extern "C" fn rcpt_client_logout(client: *mut rcpt_client) -> rcpt_result {
    ffi_result("rcpt_client_logout", || Ok(client_ref(client)?.client.logout()?))
}

/// Writes the logged-in user's id to `*out` (a new string the caller frees with
/// `rcpt_string_free`), or NULL when nobody is logged in.
#[no_mangle]
pub extern "C" fn rcpt_client_current_user(client: *const rcpt_client, out: *mut *mut c_char) -> rcpt_result {
    ffi_result("rcpt_client_current_user", || {
        let out = out_param(out, "out", std::ptr::null_mut())?;
        let c = client_ref(client)?;
        if let Some(u) = c.client.current_user() {
            *out = to_cstring(&u).into_raw();
        }
        Ok(())
    })
}

/// Sends a text message to `to` (a user id for `RCPT_CHAT_TYPE_CHAT`, else a group id).
/// `need_group_ack` asks the members for group read acks (group messages only). Works offline:
/// the message waits in the outbox. `*out_req` gets the request id; its REQUEST_COMPLETED event
/// carries the accepted message (with its server id). If `out_msg` is not NULL, `*out_msg` gets
/// the message as queued (status pending; owned by the caller: `rcpt_message_free`).
#[no_mangle]
pub extern "C" fn rcpt_client_send_text(
    client: *mut rcpt_client,
    to: *const c_char,
    chat_type: u32,
    content: *const c_char,
    need_group_ack: bool,
    out_req: *mut u64,
    out_msg: *mut *mut rcpt_message,
) -> rcpt_result {
    ffi_result("rcpt_client_send_text", || send(client, to, chat_type, content, (need_group_ack, false), out_req, out_msg))
}

/// The body of the send calls: `asks` is (need_group_ack, need_group_delivery_ack).
pub(crate) fn send(
    client: *mut rcpt_client,
    to: *const c_char,
    chat_type: u32,
    content: *const c_char,
    asks: (bool, bool),
    out_req: *mut u64,
    out_msg: *mut *mut rcpt_message,
) -> Result<(), FfiError> {
    let out_req = out_param(out_req, "out_req", 0)?;
    // SAFETY: NULL or writable, per the contract.
    let mut out_msg = unsafe { out_msg.as_mut() };
    if let Some(m) = out_msg.as_deref_mut() {
        *m = std::ptr::null_mut();
    }
    let c = client_ref(client)?;
    let to = arg_str(to, "to")?;
    let content = arg_str(content, "content")?;
    let chat_type = parse_chat_type(chat_type)?;
    let (req, msg) = c.client.send_text_asking(to, chat_type, content, asks.0, asks.1)?;
    *out_req = req;
    if let Some(m) = out_msg {
        *m = Box::into_raw(Box::new(rcpt_message::new(msg)));
    }
    Ok(())
}

/// Sends the read ack of a received 1:1 message (`msg_id`: its server id, decimal) and marks it
/// read here. `*out_req`: the request id, or 0 when this user already acked it (nothing sent).
/// 500 unknown, own or chat-room message, 505 read acks off in the options.
#[no_mangle]
pub extern "C" fn rcpt_client_ack_message_read(client: *mut rcpt_client, msg_id: *const c_char, out_req: *mut u64) -> rcpt_result {
    ffi_result("rcpt_client_ack_message_read", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let id = arg_str(msg_id, "msg_id")?;
        // Not logged in beats a bad id: no user, no messages.
        c.client.current_user().ok_or_else(receipt_core::ChatError::not_logged_in)?;
        write_req(out_req, c.client.ack_message_read(self::msg_id(id)?)?);
        Ok(())
    })
}

/// Conversation ack: every message of `conversation_id` (a peer's user id or a group id) up to
/// now counts as read. 1:1: the peer's devices and this user's other devices get
/// CONVERSATION_READ. `*out_req`: the request id, or 0 when there was nothing to ack.
#[no_mangle]
pub extern "C" fn rcpt_client_ack_conversation_read(
    client: *mut rcpt_client,
    conversation_id: *const c_char,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_ack_conversation_read", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let conv = arg_str(conversation_id, "conversation_id")?;
        write_req(out_req, c.client.ack_conversation_read(conv)?);
        Ok(())
    })
}

/// Sends the group read ack of a received group message (`msg_id`: its server id, decimal),
/// with an optional `ext` (NULL for none; copied) for the sender. `*out_req`: the request id,
/// or 0 when this user already acked it.
#[no_mangle]
pub extern "C" fn rcpt_client_ack_group_message_read(
    client: *mut rcpt_client,
    msg_id: *const c_char,
    ext: *const c_char,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_ack_group_message_read", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let id = arg_str(msg_id, "msg_id")?;
        let ext = arg_opt_str(ext, "ext")?;
        c.client.current_user().ok_or_else(receipt_core::ChatError::not_logged_in)?;
        write_req(out_req, c.client.ack_group_message_read(self::msg_id(id)?, ext)?);
        Ok(())
    })
}

/// Asks for one page (`page_size` 1..=100) of a group message's read acks, newest first,
/// starting at `start_ack_id` (NULL or `""`: the newest; else a previous page's cursor). The
/// REQUEST_COMPLETED event of `*out_req` carries the page and the next cursor. Needs a live
/// connection (300 otherwise).
#[no_mangle]
pub extern "C" fn rcpt_client_fetch_group_read_acks(
    client: *mut rcpt_client,
    msg_id: *const c_char,
    page_size: u32,
    start_ack_id: *const c_char,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_fetch_group_read_acks", || {
        fetch_group_acks(client, GroupAckKind::Read, msg_id, page_size, start_ack_id, out_req)
    })
}

/// The body of the two group-ack page fetches (read and delivery acks).
pub(crate) fn fetch_group_acks(
    client: *mut rcpt_client,
    kind: GroupAckKind,
    msg_id: *const c_char,
    page_size: u32,
    start_ack_id: *const c_char,
    out_req: *mut u64,
) -> Result<(), FfiError> {
    let out_req = out_param(out_req, "out_req", 0)?;
    let c = client_ref(client)?;
    let id = arg_str(msg_id, "msg_id")?;
    let start: Option<AckId> = match arg_opt_str(start_ack_id, "start_ack_id")? {
        None | Some("") => None,
        Some(s) => Some(
            s.parse()
                .ok()
                .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| FfiError::invalid_param(format!("start_ack_id {s:?} is not a cursor")))?,
        ),
    };
    c.client.current_user().ok_or_else(receipt_core::ChatError::not_logged_in)?;
    let id = self::msg_id(id)?;
    *out_req = match kind {
        GroupAckKind::Read => c.client.fetch_group_read_acks(id, page_size, start)?,
        GroupAckKind::Delivery => c.client.fetch_group_delivery_acks(id, page_size, start)?,
    };
    Ok(())
}

/// Marks one received message read on this user's devices, without a receipt to anybody.
/// `*out_req`: the request id, or 0 when it was read already.
#[no_mangle]
pub extern "C" fn rcpt_client_mark_message_read(client: *mut rcpt_client, msg_id: *const c_char, out_req: *mut u64) -> rcpt_result {
    ffi_result("rcpt_client_mark_message_read", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let id = arg_str(msg_id, "msg_id")?;
        c.client.current_user().ok_or_else(receipt_core::ChatError::not_logged_in)?;
        write_req(out_req, c.client.mark_message_read(self::msg_id(id)?)?);
        Ok(())
    })
}

/// Marks a whole conversation read on this user's devices, without a receipt to anybody.
/// `*out_req`: the request id, or 0 when nothing was unread.
#[no_mangle]
pub extern "C" fn rcpt_client_mark_all_messages_read(
    client: *mut rcpt_client,
    conversation_id: *const c_char,
    chat_type: u32,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_mark_all_messages_read", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let conv = arg_str(conversation_id, "conversation_id")?;
        let key = ConversationKey::new(parse_chat_type(chat_type)?, conv);
        write_req(out_req, c.client.mark_all_messages_read(&key)?);
        Ok(())
    })
}

/// Writes a snapshot of the message `msg_id` (server id as decimal, or the client id of a
/// message not yet accepted) to `*out`; the caller owns it (`rcpt_message_free`).
/// `RCPT_MESSAGE_INVALID` when this client does not know the message (`*out` is then NULL).
#[no_mangle]
pub extern "C" fn rcpt_client_get_message(client: *const rcpt_client, msg_id: *const c_char, out: *mut *mut rcpt_message) -> rcpt_result {
    ffi_result("rcpt_client_get_message", || {
        let out = out_param(out, "out", std::ptr::null_mut())?;
        let c = client_ref(client)?;
        let id = arg_str(msg_id, "msg_id")?;
        let m = c.client.message(id)?.ok_or_else(|| FfiError::new(rcpt_result::RCPT_MESSAGE_INVALID, format!("no message {id:?}")))?;
        *out = Box::into_raw(Box::new(rcpt_message::new(m)));
        Ok(())
    })
}

/// Writes the unread count of a conversation (0 for an unknown one) to `*out`.
#[no_mangle]
pub extern "C" fn rcpt_client_unread_count(
    client: *const rcpt_client,
    conversation_id: *const c_char,
    chat_type: u32,
    out: *mut u32,
) -> rcpt_result {
    ffi_result("rcpt_client_unread_count", || {
        let out = out_param(out, "out", 0)?;
        let c = client_ref(client)?;
        let conv = arg_str(conversation_id, "conversation_id")?;
        let key = ConversationKey::new(parse_chat_type(chat_type)?, conv);
        *out = c.client.unread_count(&key)?;
        Ok(())
    })
}

/// Creates a group named `name` owned by this user, with the `n` user ids at `members` (all
/// copied; `members` may be NULL when `n` is 0). Needs a live connection. The REQUEST_COMPLETED
/// event of `*out_req` carries the group id (`rcpt_event_group_id`).
#[no_mangle]
pub extern "C" fn rcpt_client_create_group(
    client: *mut rcpt_client,
    name: *const c_char,
    members: *const *const c_char,
    n: usize,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_create_group", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let name = arg_str(name, "name")?;
        let members = self::members(members, n)?;
        *out_req = c.client.create_group(name, &members)?;
        Ok(())
    })
}

/// Adds the `n` user ids at `members` to `group`. Needs a live connection; the outcome is the
/// REQUEST_COMPLETED event of `*out_req`.
#[no_mangle]
pub extern "C" fn rcpt_client_add_group_members(
    client: *mut rcpt_client,
    group: *const c_char,
    members: *const *const c_char,
    n: usize,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_add_group_members", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let group = arg_str(group, "group")?;
        let members = self::members(members, n)?;
        *out_req = c.client.add_group_members(group, &members)?;
        Ok(())
    })
}

/// Removes the `n` user ids at `members` from `group`. Needs a live connection; the outcome is
/// the REQUEST_COMPLETED event of `*out_req`.
#[no_mangle]
pub extern "C" fn rcpt_client_remove_group_members(
    client: *mut rcpt_client,
    group: *const c_char,
    members: *const *const c_char,
    n: usize,
    out_req: *mut u64,
) -> rcpt_result {
    ffi_result("rcpt_client_remove_group_members", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let group = arg_str(group, "group")?;
        let members = self::members(members, n)?;
        *out_req = c.client.remove_group_members(group, &members)?;
        Ok(())
    })
}

/// Sets (or, with `callback` NULL, clears) the event callback; see `rcpt_event_callback` for
/// the thread it runs on. `user_data` is passed back as is and must stay valid until the
/// callback is cleared or the client freed. While a callback is set, events are not queued for
/// `rcpt_client_poll_event`; events already queued are handed to the new callback at once, on
/// the calling thread. When this returns, a callback call already running has finished.
#[no_mangle]
pub extern "C" fn rcpt_client_set_event_callback(
    client: *mut rcpt_client,
    callback: rcpt_event_callback,
    user_data: *mut c_void,
) -> rcpt_result {
    ffi_result("rcpt_client_set_event_callback", || {
        let c = client_ref(client)?;
        let mut h = c.sink.handlers();
        h.callback = callback.map(|cb| (cb, UserData(user_data)));
        if let Some((cb, ud)) = h.callback {
            Sink::drain(&c.sink.rx, cb, ud);
        }
        Ok(())
    })
}

/// Sets (or, with `wakeup` NULL, clears) the wake-up callback of poll mode; see
/// `rcpt_wakeup_callback` for its rules. `user_data` must stay valid until it is cleared or
/// the client freed. If events are already queued, `wakeup` is called once at once, on the
/// calling thread.
#[no_mangle]
pub extern "C" fn rcpt_client_set_wakeup(client: *mut rcpt_client, wakeup: rcpt_wakeup_callback, user_data: *mut c_void) -> rcpt_result {
    ffi_result("rcpt_client_set_wakeup", || {
        let c = client_ref(client)?;
        let mut h = c.sink.handlers();
        h.wakeup = wakeup.map(|w| (w, UserData(user_data)));
        if let (Some((wake, ud)), None) = (h.wakeup, h.callback) {
            if !c.sink.rx.is_empty() {
                // SAFETY: the host's function pointer, called as documented.
                in_host_callback(|| unsafe { wake(ud.0) });
            }
        }
        Ok(())
    })
}

/// Takes the oldest queued event without blocking: `*out` is the event (owned by the caller:
/// `rcpt_event_free`), or NULL when none is queued (always NULL while an event callback is
/// set). Call it from the host's own thread, for example when the wake-up callback scheduled it.
#[no_mangle]
pub extern "C" fn rcpt_client_poll_event(client: *mut rcpt_client, out: *mut *mut rcpt_event) -> rcpt_result {
    ffi_result("rcpt_client_poll_event", || {
        let out = out_param(out, "out", std::ptr::null_mut())?;
        let c = client_ref(client)?;
        if c.sink.handlers().callback.is_some() {
            return Ok(());
        }
        if let Ok(e) = c.sink.rx.try_recv() {
            *out = Box::into_raw(Box::new(rcpt_event::new(e)));
        }
        Ok(())
    })
}
