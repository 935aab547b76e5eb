//! `rcpt_options`: the settings a client is created with.

use std::os::raw::c_char;
use std::path::PathBuf;

use receipt_core::{validate_id, ChatOptions};

use crate::error::FfiError;
use crate::panic::{ffi_boundary, ffi_result};
use crate::result::rcpt_result;
use crate::string::arg_str;

/// Client settings (the SDK's ChatOptions plus where the client keeps its files).
/// Created by `rcpt_options_new`, owned by the caller, freed with `rcpt_options_free`.
/// `rcpt_client_new` copies what it needs: the options may be freed right after it.
/// Not synchronized: use one options object from one thread at a time.
pub struct rcpt_options {
    pub(crate) options: ChatOptions,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) device_id: Option<String>,
    /// TLS settings (`rcpt_options_set_tls_*`, in tls.rs).
    pub(crate) tls: crate::tls::TlsOptions,
    /// History settings (`rcpt_options_set_message_cache`, `rcpt_options_set_retention`).
    pub(crate) message_cache: Option<usize>,
    pub(crate) retention: receipt_core::engine::Retention,
}

pub(crate) fn options_mut<'a>(o: *mut rcpt_options) -> Result<&'a mut rcpt_options, FfiError> {
    // SAFETY: NULL or a live handle from rcpt_options_new, per the contract.
    unsafe { o.as_mut() }.ok_or_else(|| FfiError::null("options"))
}

/// New options with the defaults: require_delivery_ack false, require_read_ack true,
/// private_read_receipts false, server 127.0.0.1:7878, no data dir (it must be set before
/// `rcpt_client_new`), a generated device id.
/// The caller owns the result and frees it with `rcpt_options_free`. NULL only on an internal
/// failure.
#[no_mangle]
pub extern "C" fn rcpt_options_new() -> *mut rcpt_options {
    ffi_boundary("rcpt_options_new", || {
        Box::into_raw(Box::new(rcpt_options {
            options: ChatOptions::default(),
            data_dir: None,
            device_id: None,
            message_cache: None,
            retention: Default::default(),
            tls: Default::default(),
        }))
    })
}

/// Frees options from `rcpt_options_new`. NULL is a no-op.
#[no_mangle]
pub extern "C" fn rcpt_options_free(options: *mut rcpt_options) {
    ffi_boundary("rcpt_options_free", || {
        if !options.is_null() {
            // SAFETY: a handle from rcpt_options_new, freed once, per the contract.
            drop(unsafe { Box::from_raw(options) });
        }
    })
}

/// Ask peers for delivery acks on the 1:1 messages this client sends (default false).
#[no_mangle]
pub extern "C" fn rcpt_options_set_require_delivery_ack(options: *mut rcpt_options, value: bool) -> rcpt_result {
    ffi_result("rcpt_options_set_require_delivery_ack", || {
        options_mut(options)?.options.require_delivery_ack = value;
        Ok(())
    })
}

/// Allow this client to send read acks (default true). When false, the ack calls send nothing
/// and return `RCPT_SERVICE_NOT_ENABLED` (a privacy switch).
#[no_mangle]
pub extern "C" fn rcpt_options_set_require_read_ack(options: *mut rcpt_options, value: bool) -> rcpt_result {
    ffi_result("rcpt_options_set_require_read_ack", || {
        options_mut(options)?.options.require_read_ack = value;
        Ok(())
    })
}

/// Private reading (default false): read acks mark messages read on this user's devices and
/// tell the sender nothing. Each ack call may override it (`rcpt_client_ack_*_mode`); a
/// `require_read_ack` of false wins (505, nothing sent).
#[no_mangle]
pub extern "C" fn rcpt_options_set_private_read_receipts(options: *mut rcpt_options, value: bool) -> rcpt_result {
    ffi_result("rcpt_options_set_private_read_receipts", || {
        options_mut(options)?.options.private_read_receipts = value;
        Ok(())
    })
}

/// The server to connect to: `host` (a name or an IP address; copied) and `port` (not 0).
#[no_mangle]
pub extern "C" fn rcpt_options_set_server(options: *mut rcpt_options, host: *const c_char, port: u16) -> rcpt_result {
    ffi_result("rcpt_options_set_server", || {
        let o = options_mut(options)?;
        let host = arg_str(host, "host")?;
        if host.is_empty() || host.chars().any(char::is_control) {
            return Err(FfiError::invalid_param("host must be non-empty, without control characters"));
        }
        if port == 0 {
            return Err(FfiError::invalid_param("port must not be 0"));
        }
        o.options.im_server = Some(host.to_string());
        o.options.im_port = Some(port);
        Ok(())
    })
}

/// The directory where the client keeps its per-user store and its device id (copied; created
/// if missing). Required before `rcpt_client_new`. One client at a time per directory.
#[no_mangle]
pub extern "C" fn rcpt_options_set_data_dir(options: *mut rcpt_options, dir: *const c_char) -> rcpt_result {
    ffi_result("rcpt_options_set_data_dir", || {
        let o = options_mut(options)?;
        let dir = arg_str(dir, "dir")?;
        if dir.is_empty() {
            return Err(FfiError::invalid_param("data dir must not be empty"));
        }
        o.data_dir = Some(PathBuf::from(dir));
        Ok(())
    })
}

/// This install's device id (optional, copied; 1..=128 bytes, no control characters). Without
/// it the client generates one and keeps it in the data dir.
#[no_mangle]
pub extern "C" fn rcpt_options_set_device_id(options: *mut rcpt_options, id: *const c_char) -> rcpt_result {
    ffi_result("rcpt_options_set_device_id", || {
        let o = options_mut(options)?;
        let id = arg_str(id, "id")?;
        validate_id("device id", id)?;
        o.device_id = Some(id.to_string());
        Ok(())
    })
}
