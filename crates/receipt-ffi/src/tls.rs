//! TLS settings of `rcpt_options` (the SDK's ChatOptions has none; these are ours): what the
//! client trusts, and whether it may speak plaintext. Without any of them the client uses TLS
//! with the built-in Mozilla roots, except to a loopback host (plaintext).

use std::os::raw::c_char;

use receipt_client::{Security, TlsSettings};

use crate::error::FfiError;
use crate::options::{options_mut, rcpt_options};
use crate::panic::ffi_result;
use crate::result::rcpt_result;
use crate::string::arg_str;

/// The TLS part of the options.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsOptions {
    pub(crate) tls: Option<TlsSettings>,
    pub(crate) allow_plaintext: bool,
}

impl TlsOptions {
    pub(crate) fn security(&self) -> Security {
        match (&self.tls, self.allow_plaintext) {
            (Some(settings), _) => Security::Tls(settings.clone()),
            (None, true) => Security::Plaintext,
            (None, false) => Security::Auto,
        }
    }
}

fn pem_arg(pem: *const c_char, what: &str) -> Result<String, FfiError> {
    let pem = arg_str(pem, what)?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(FfiError::invalid_param(format!("{what} holds no PEM CERTIFICATE")));
    }
    Ok(pem.to_string())
}

/// Use TLS, verified against these PEM CA certificates (copied) instead of the built-in roots:
/// a private deployment's CA, or the roots the app read from the device's CA store.
#[no_mangle]
pub extern "C" fn rcpt_options_set_tls_ca_pem(options: *mut rcpt_options, pem: *const c_char) -> rcpt_result {
    ffi_result("rcpt_options_set_tls_ca_pem", || {
        let o = options_mut(options)?;
        let pem = pem_arg(pem, "pem")?;
        o.tls.tls.get_or_insert_with(TlsSettings::default).ca_pem = Some(pem);
        Ok(())
    })
}

/// Use TLS and accept only the server certificate given here as PEM (copied): certificate
/// pinning. The handshake's signature is checked with it; its name and dates are not.
#[no_mangle]
pub extern "C" fn rcpt_options_set_tls_pinned_cert_pem(options: *mut rcpt_options, pem: *const c_char) -> rcpt_result {
    ffi_result("rcpt_options_set_tls_pinned_cert_pem", || {
        let o = options_mut(options)?;
        let pem = pem_arg(pem, "pem")?;
        o.tls.tls.get_or_insert_with(TlsSettings::default).pinned_cert_pem = Some(pem);
        Ok(())
    })
}

/// Use TLS (true: with the built-in roots unless a CA or pin is set) or not (false: back to the
/// default, TLS except to a loopback host).
#[no_mangle]
pub extern "C" fn rcpt_options_set_use_tls(options: *mut rcpt_options, value: bool) -> rcpt_result {
    ffi_result("rcpt_options_set_use_tls", || {
        let o = options_mut(options)?;
        if value {
            o.tls.tls.get_or_insert_with(TlsSettings::default);
        } else {
            o.tls.tls = None;
        }
        Ok(())
    })
}

/// Allow plaintext to any host when no TLS setting is given (default false: plaintext only to
/// a loopback host). For tests and private networks only: the token crosses in clear.
#[no_mangle]
pub extern "C" fn rcpt_options_set_allow_plaintext(options: *mut rcpt_options, value: bool) -> rcpt_result {
    ffi_result("rcpt_options_set_allow_plaintext", || {
        options_mut(options)?.tls.allow_plaintext = value;
        Ok(())
    })
}
