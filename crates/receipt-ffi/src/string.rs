//! Strings across the boundary: checked input (`const char *` → `&str`), library-owned output
//! (`char *` freed with `rcpt_string_free`), and `rcpt_version`.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;

use crate::error::FfiError;
use crate::panic::ffi_boundary;
use crate::result::rcpt_result;

/// A `CString` of `s`; an interior NUL (impossible to express in C) becomes U+FFFD.
pub(crate) fn to_cstring(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| CString::new(s.replace('\0', "\u{FFFD}")).expect("no NUL left"))
}

/// Borrows the C string `p` as UTF-8. `what` names the argument in the error.
///
/// The caller of the export guarantees that a non-NULL `p` is NUL-terminated and outlives the
/// call.
pub(crate) fn arg_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, FfiError> {
    if p.is_null() {
        return Err(FfiError::null(what));
    }
    // SAFETY: non-NULL, and NUL-terminated and live for the call per the export's contract.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    std::str::from_utf8(bytes).map_err(|e| FfiError::new(rcpt_result::RCPT_INVALID_UTF8, format!("{what} is not valid UTF-8 ({e})")))
}

/// Like [`arg_str`], but NULL is `None`.
pub(crate) fn arg_opt_str<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, FfiError> {
    if p.is_null() {
        Ok(None)
    } else {
        arg_str(p, what).map(Some)
    }
}

/// Checks an out-pointer for NULL.
pub(crate) fn out_ptr<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, FfiError> {
    // SAFETY: non-NULL and writable per the export's contract; used only during the call.
    unsafe { p.as_mut() }.ok_or_else(|| FfiError::null(what))
}

/// [`out_ptr`], with the slot first set to `empty`, so a failing call leaves it NULL / 0.
pub(crate) fn out_param<'a, T>(p: *mut T, what: &str, empty: T) -> Result<&'a mut T, FfiError> {
    let slot = out_ptr(p, what)?;
    *slot = empty;
    Ok(slot)
}

/// Frees a string the library handed out (for example by `rcpt_client_current_user`).
/// NULL is a no-op. Do not pass strings you got as `const char *` (those are borrowed), nor a
/// string twice.
#[no_mangle]
pub extern "C" fn rcpt_string_free(s: *mut c_char) {
    ffi_boundary("rcpt_string_free", || {
        if !s.is_null() {
            // SAFETY: `s` came from CString::into_raw in this library, per the contract.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

static VERSION: &str = concat!("receipt-ffi ", env!("CARGO_PKG_VERSION"), "\0");

/// The library's name and version, for example `"receipt-ffi 0.1.0"`. A static string: do not
/// free it.
#[no_mangle]
pub extern "C" fn rcpt_version() -> *const c_char {
    ffi_boundary("rcpt_version", || VERSION.as_ptr().cast())
}
