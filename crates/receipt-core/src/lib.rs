//! The receipt engine's core: everything both sides agree on, and the client's state machine.
//!
//! - [`types`]: ids, chat types, messages and their receipt flags, group read acks, options.
//! - [`error`]: the SDK error codes users of this kind of SDK know (docs/errors.md).
//! - [`protocol`]: every frame client and server exchange.
//! - [`rules`]: the receipt rules, one function each, that the engine checks and the server enforces.
//! - [`codec`]: length-prefixed JSON framing with a size limit; bad bytes are typed errors.
//! - [`engine`]: the sans-IO client engine (inputs `handle_*(now, ..)`, outputs `poll_*()`).
//! - [`store`]: the client's persistent state (in memory for tests, redb on disk).
//!
//! This crate never opens a socket, spawns a thread or reads the clock: time is a parameter.

pub mod codec;
pub mod engine;
pub mod error;
pub mod protocol;
pub mod rules;
pub mod store;
pub mod types;

pub use error::{ChatError, ChatResult, ErrorCode};
pub use types::*;
