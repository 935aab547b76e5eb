//! The receipt server: a tokio TCP server for the protocol in `docs/protocol.md`.
//!
//! - [`core`]: the rules, as a sans-IO state machine ([`ServerCore`]).
//! - [`store`]: persistence behind [`ServerStore`]; [`RedbStore`] by default.
//! - [`server`]: sockets, the single core thread with group commit, routing.
//! - [`auth`]: login tokens (`<expiry>.<hex hmac-sha256>`).
//! - [`config`]: [`ServerConfig`], defaults and TOML.
//!
//! Embedding, blocking:
//!
//! ```no_run
//! use receipt_server::{auth, ServerConfig, ServerHandle};
//! let mut config = ServerConfig::default();
//! config.addr = "127.0.0.1:0".parse().unwrap();
//! config.secret = "s3cret".into();
//! let server = ServerHandle::spawn_in_thread(config).unwrap();
//! let port = server.local_addr().port();
//! let token = auth::token_for("s3cret", "alice", 3600);
//! // ... connect clients to 127.0.0.1:port, log in as alice with `token` ...
//! server.shutdown();
//! ```
//!
//! In async code: `let server = receipt_server::start(config).await?; server.local_addr();
//! server.shutdown().await;`.

pub mod auth;
pub mod config;
pub mod core;
pub mod server;
pub mod state;
pub mod store;

pub use crate::config::{ConfigError, GroupAckPolicy, ServerConfig, Visibility, WhoMayRequest};
pub use crate::core::{CoreConfig, Effects, Outgoing, ServerCore, SessionId, StoreOp};
pub use crate::server::{open_store, start, start_with_store, Router, Server, ServerHandle};
pub use crate::state::State;
pub use crate::store::{MemStore, RedbStore, ServerStore, StoreError};
