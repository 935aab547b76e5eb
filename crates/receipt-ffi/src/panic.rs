//! The panic boundary. Every `extern "C"` function of this crate runs its whole body inside
//! [`ffi_boundary`] (or [`ffi_result`], which builds on it): a panic is caught, described in
//! `rcpt_last_error()`, and turned into `RCPT_PANIC` or the function's neutral value (NULL,
//! 0, false). A unit test (`every_export_is_inside_the_panic_boundary`) fails the build's tests
//! when an export forgets it.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{fail, set_last_error, FfiError};
use crate::event::rcpt_event_type;
use crate::result::rcpt_result;

/// What an export returns when its body panicked.
pub(crate) trait PanicValue {
    fn panic_value() -> Self;
}

impl PanicValue for rcpt_result {
    fn panic_value() -> Self {
        rcpt_result::RCPT_PANIC
    }
}
impl PanicValue for rcpt_event_type {
    fn panic_value() -> Self {
        rcpt_event_type::RCPT_EVENT_NONE
    }
}
impl<T> PanicValue for *const T {
    fn panic_value() -> Self {
        std::ptr::null()
    }
}
impl<T> PanicValue for *mut T {
    fn panic_value() -> Self {
        std::ptr::null_mut()
    }
}
macro_rules! zero_on_panic {
    ($($t:ty),*) => { $(impl PanicValue for $t { fn panic_value() -> Self { Default::default() } })* };
}
zero_on_panic!((), bool, u32, u64, usize);

fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "unknown panic"
    }
}

/// Runs the body of the export `name`; a panic becomes `T::panic_value()`.
pub(crate) fn ffi_boundary<T: PanicValue>(name: &'static str, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            set_last_error(&format!("{name}: internal panic: {}", panic_text(&*payload)));
            T::panic_value()
        }
    }
}

/// [`ffi_boundary`] for a fallible export: `Err` is recorded for `rcpt_last_error()` and its
/// code returned; `Ok` is `RCPT_OK`.
pub(crate) fn ffi_result(name: &'static str, body: impl FnOnce() -> Result<(), FfiError>) -> rcpt_result {
    ffi_boundary(name, || match body() {
        Ok(()) => rcpt_result::RCPT_OK,
        Err(e) => fail(name, e),
    })
}

thread_local! {
    /// Set while this thread runs a host callback (event callback or wake-up).
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Runs a host callback with the re-entrancy guard set, so that a call back into
/// `rcpt_client_*` from inside it fails cleanly instead of deadlocking.
pub(crate) fn in_host_callback(f: impl FnOnce()) {
    let prev = IN_CALLBACK.with(|c| c.replace(true));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_CALLBACK.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(prev);
    f();
}

/// Whether the calling thread is inside a host callback.
pub(crate) fn inside_host_callback() -> bool {
    IN_CALLBACK.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_rcpt_panic_with_a_description() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = ffi_result("rcpt_test", || panic!("boom"));
        let p: *const u8 = ffi_boundary("rcpt_test", || panic!("boom"));
        std::panic::set_hook(prev);
        assert_eq!(r, rcpt_result::RCPT_PANIC);
        assert!(p.is_null());
        let text = unsafe { std::ffi::CStr::from_ptr(crate::error::rcpt_last_error()) };
        assert_eq!(text.to_str().unwrap(), "rcpt_test: internal panic: boom");
    }

    /// Every export's body must start with `ffi_boundary(` or `ffi_result(`.
    #[test]
    fn every_export_is_inside_the_panic_boundary() {
        let sources = [
            ("client.rs", include_str!("client.rs")),
            ("error.rs", include_str!("error.rs")),
            ("event.rs", include_str!("event.rs")),
            ("group_ack.rs", include_str!("group_ack.rs")),
            ("message.rs", include_str!("message.rs")),
            ("options.rs", include_str!("options.rs")),
            ("result.rs", include_str!("result.rs")),
            ("string.rs", include_str!("string.rs")),
        ];
        let mut exports = 0;
        for (file, src) in sources {
            assert_eq!(
                src.matches("extern \"C\" fn rcpt_").count(),
                src.matches("pub extern \"C\" fn rcpt_").count(),
                "{file}: every rcpt_ export is `pub extern \"C\" fn`"
            );
            for chunk in src.split("pub extern \"C\" fn ").skip(1) {
                let name: String = chunk.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let body = &chunk[chunk.find('{').expect("a body") + 1..];
                let body = body.trim_start();
                assert!(
                    body.starts_with("ffi_boundary(") || body.starts_with("ffi_result("),
                    "{file}: {name} does not run inside the panic boundary"
                );
                exports += 1;
            }
        }
        assert!(exports > 50, "found only {exports} exports");
    }
}
