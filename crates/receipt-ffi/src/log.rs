//! Where the library's log records go: a sink the host sets (the NAPI shim forwards to hilog's
//! `OH_LOG_Print` on a device and to stderr under Node) and the most verbose level it wants.
//! Without a sink nothing is logged.
//!
//! No message content and no token is logged above `RCPT_LOG_DEBUG`.

use std::ffi::CString;
use std::os::raw::{c_char, c_void};
use std::sync::RwLock;

use crate::panic::ffi_result;
use crate::result::rcpt_result;

/// Log levels, most severe first. Values are stable.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum rcpt_log_level {
    /// Nothing is logged.
    RCPT_LOG_OFF = 0,
    /// Failures the app should know of (a store that cannot be written).
    RCPT_LOG_ERROR = 1,
    /// Trouble the client works around (a bad frame, a TLS failure, a reconnect).
    RCPT_LOG_WARN = 2,
    /// Connection lifecycle: connected, logged out, token events (the default with a sink).
    RCPT_LOG_INFO = 3,
    /// Protocol detail: may name users and request ids; never for production builds.
    RCPT_LOG_DEBUG = 4,
    /// Everything (the TLS library's detail included).
    RCPT_LOG_TRACE = 5,
}

/// Receives one log record: its level, its target (the Rust module, e.g.
/// `receipt_client`) and its text, both NUL-terminated and valid only during the call. Runs on
/// the thread that logged (often the client's connection thread): it must not block for long,
/// must not call `rcpt_set_log_sink`, and must be thread-safe.
pub type rcpt_log_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: rcpt_log_level, target: *const c_char, message: *const c_char)>;

#[derive(Clone, Copy)]
struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, rcpt_log_level, *const c_char, *const c_char),
    user_data: usize,
}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

struct Logger;

static LOGGER: Logger = Logger;

fn to_rcpt(level: ::log::Level) -> rcpt_log_level {
    match level {
        ::log::Level::Error => rcpt_log_level::RCPT_LOG_ERROR,
        ::log::Level::Warn => rcpt_log_level::RCPT_LOG_WARN,
        ::log::Level::Info => rcpt_log_level::RCPT_LOG_INFO,
        ::log::Level::Debug => rcpt_log_level::RCPT_LOG_DEBUG,
        ::log::Level::Trace => rcpt_log_level::RCPT_LOG_TRACE,
    }
}

fn to_filter(level: rcpt_log_level) -> ::log::LevelFilter {
    match level {
        rcpt_log_level::RCPT_LOG_OFF => ::log::LevelFilter::Off,
        rcpt_log_level::RCPT_LOG_ERROR => ::log::LevelFilter::Error,
        rcpt_log_level::RCPT_LOG_WARN => ::log::LevelFilter::Warn,
        rcpt_log_level::RCPT_LOG_INFO => ::log::LevelFilter::Info,
        rcpt_log_level::RCPT_LOG_DEBUG => ::log::LevelFilter::Debug,
        rcpt_log_level::RCPT_LOG_TRACE => ::log::LevelFilter::Trace,
    }
}

fn c_text(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

impl ::log::Log for Logger {
    fn enabled(&self, metadata: &::log::Metadata) -> bool {
        metadata.level() <= ::log::max_level()
    }

    fn log(&self, record: &::log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Copied out so the sink runs without the lock held.
        let Some(sink) = *SINK.read().unwrap_or_else(|e| e.into_inner()) else { return };
        let target = c_text(record.target());
        let message = c_text(&record.args().to_string());
        // SAFETY: the host's function pointer and user data, called as documented.
        unsafe { (sink.callback)(sink.user_data as *mut c_void, to_rcpt(record.level()), target.as_ptr(), message.as_ptr()) };
    }

    fn flush(&self) {}
}

/// Sets (or, with `callback` NULL, clears) the process-wide log sink and the most verbose level
/// it receives (`RCPT_LOG_INFO` is a good default; `RCPT_LOG_OFF` silences it). `user_data` must
/// stay valid until the sink is cleared. If another logger was installed in the process first
/// (a Rust host with its own), its records are not redirected and this returns
/// `RCPT_GENERAL_ERROR`.
#[no_mangle]
pub extern "C" fn rcpt_set_log_sink(callback: rcpt_log_callback, user_data: *mut c_void, level: rcpt_log_level) -> rcpt_result {
    ffi_result("rcpt_set_log_sink", || {
        // Installing is idempotent: the first call installs the logger, later calls only
        // change the sink.
        let installed = ::log::set_logger(&LOGGER).is_ok() || std::ptr::addr_eq(::log::logger(), &LOGGER as &dyn ::log::Log);
        if !installed {
            return Err(crate::error::FfiError::new(rcpt_result::RCPT_GENERAL_ERROR, "another logger is installed in this process"));
        }
        *SINK.write().unwrap_or_else(|e| e.into_inner()) = callback.map(|callback| Sink { callback, user_data: user_data as usize });
        ::log::set_max_level(if callback.is_some() { to_filter(level) } else { ::log::LevelFilter::Off });
        Ok(())
    })
}
