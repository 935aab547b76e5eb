//! The C ABI of the receipt client (`include/receipt.h`, generated from this crate by cbindgen).
//!
//! Design (docs/c-api.md, after rustls-ffi): every name starts with `rcpt_`; objects are opaque
//! handles that the library allocates and the caller frees with the matching `*_free` (a no-op
//! on NULL); every fallible call returns an [`rcpt_result`](result::rcpt_result) and writes its
//! outputs through out-pointers given last; `rcpt_last_error()` describes the calling thread's
//! last failure. At the boundary every pointer is checked for NULL (`RCPT_NULL_ARGUMENT`) and
//! every string for UTF-8 (`RCPT_INVALID_UTF8`), and every export runs inside the panic boundary
//! of [`panic`] (a panic becomes `RCPT_PANIC`, never an unwind into C). The crate must be built
//! with `panic = "unwind"` (the default) for that boundary to work.
//!
//! One module per C concept: [`result`], [`error`], [`string`], [`options`], [`client`],
//! [`message`], [`group_ack`], [`group_delivery`], [`batch`], [`event`], [`history`], [`private_reading`].
//!
//! The exports are plain `extern "C" fn`s that take raw pointers: their contract (valid,
//! properly aligned pointers the caller owns as documented, or NULL) is stated on each item for
//! the C caller; Rust callers of the rlib must uphold the same contract.

#![allow(non_camel_case_types)]
#![allow(clippy::not_unsafe_ptr_arg_deref)]
#![deny(missing_docs)]

pub mod batch;
pub mod client;
pub mod connection;
pub mod error;
pub mod event;
pub mod group_ack;
pub mod group_delivery;
pub mod history;
pub mod log;
pub mod message;
pub mod options;
pub mod panic;
pub mod private_reading;
pub mod result;
pub mod string;
pub mod tls;

pub use client::rcpt_client;
pub use event::{rcpt_event, rcpt_event_type};
pub use group_ack::rcpt_group_read_ack;
pub use history::rcpt_message_list;
pub use message::rcpt_message;
pub use options::rcpt_options;
pub use result::rcpt_result;
