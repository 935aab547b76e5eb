//! The calling thread's last error (`rcpt_last_error`) and the crate's internal error type.

use std::cell::RefCell;
use std::ffi::CString;
use std::os::raw::c_char;

use receipt_core::ChatError;

use crate::panic::ffi_boundary;
use crate::result::rcpt_result;
use crate::string::to_cstring;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// A failed call: the code it returns and the text `rcpt_last_error` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FfiError {
    pub code: rcpt_result,
    pub message: String,
}

impl FfiError {
    pub fn new(code: rcpt_result, message: impl Into<String>) -> Self {
        FfiError { code, message: message.into() }
    }

    pub fn null(what: &str) -> Self {
        Self::new(rcpt_result::RCPT_NULL_ARGUMENT, format!("{what} is NULL"))
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(rcpt_result::RCPT_INVALID_PARAM, message)
    }
}

impl From<ChatError> for FfiError {
    fn from(e: ChatError) -> Self {
        FfiError { code: e.code.into(), message: e.description }
    }
}

/// Records `message` as the calling thread's last error.
pub(crate) fn set_last_error(message: &str) {
    let s = to_cstring(message);
    LAST_ERROR.with(|l| *l.borrow_mut() = s);
}

/// Records `e` as the last error and returns its code.
pub(crate) fn fail(name: &str, e: FfiError) -> rcpt_result {
    set_last_error(&format!("{name}: {}", e.message));
    e.code
}

/// The description of the last failed call on the calling thread (`""` if none yet), as a
/// NUL-terminated UTF-8 string. Owned by the library: do not free it. It stays valid until the
/// next failing call on the same thread (treat it as valid only until your next call into the
/// library). Successful calls leave it unchanged. Safe to call from any thread, including
/// inside an event callback.
#[no_mangle]
pub extern "C" fn rcpt_last_error() -> *const c_char {
    ffi_boundary("rcpt_last_error", || LAST_ERROR.with(|l| l.borrow().as_ptr()))
}
