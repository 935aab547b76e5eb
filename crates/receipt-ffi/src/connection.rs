//! The connection and token lifecycle (the SDK's `ChatClient.isConnected()`, `isLoggedIn()`,
//! `isDatabaseOpened()`, `renewToken(token)`); its events are `RCPT_EVENT_DATABASE_OPENED` ..
//! `RCPT_EVENT_LOGGED_OUT` (see `rcpt_event_type`).

use std::os::raw::c_char;

use crate::client::{client_ref, rcpt_client};
use crate::panic::{ffi_boundary, ffi_result};
use crate::result::rcpt_result;
use crate::string::{arg_str, out_param};

/// Whether the client is connected and caught up with the server (false for NULL).
#[no_mangle]
pub extern "C" fn rcpt_client_is_connected(client: *const rcpt_client) -> bool {
    ffi_boundary("rcpt_client_is_connected", || client_ref(client).map(|c| c.client.is_connected()).unwrap_or(false))
}

/// Whether a user is logged in: from `rcpt_client_login` (online, or an offline start) until
/// logout or a refused login (false for NULL).
#[no_mangle]
pub extern "C" fn rcpt_client_is_logged_in(client: *const rcpt_client) -> bool {
    ffi_boundary("rcpt_client_is_logged_in", || client_ref(client).map(|c| c.client.is_logged_in()).unwrap_or(false))
}

/// Whether the logged-in user's store is open (counts and messages readable; false for NULL).
#[no_mangle]
pub extern "C" fn rcpt_client_is_database_opened(client: *const rcpt_client) -> bool {
    ffi_boundary("rcpt_client_is_database_opened", || client_ref(client).map(|c| c.client.is_database_opened()).unwrap_or(false))
}

/// Replaces the login token (copied) without dropping the session: later reconnects use it and
/// the token-expiry events restart from its expiry. Connected: the server checks it for this
/// user, `*out_req` gets the request id and its `RCPT_EVENT_REQUEST_COMPLETED` says `RCPT_OK`, 104,
/// 108 or 202 (as at login). Offline: `*out_req` is 0 and the token waits for the next connection.
/// `RCPT_USER_NOT_LOGIN` if nobody is logged in, 110 for an empty token.
#[no_mangle]
pub extern "C" fn rcpt_client_renew_token(client: *mut rcpt_client, token: *const c_char, out_req: *mut u64) -> rcpt_result {
    ffi_result("rcpt_client_renew_token", || {
        let out_req = out_param(out_req, "out_req", 0)?;
        let c = client_ref(client)?;
        let token = arg_str(token, "token")?;
        *out_req = c.client.renew_token(token)?.unwrap_or(0);
        Ok(())
    })
}
