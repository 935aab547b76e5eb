//! The receipt server: a tokio TCP server for the protocol in `docs/protocol.md`.
//!
//! - [`core`]: the rules, as a sans-IO state machine ([`ServerCore`]).
//! - [`store`]: persistence behind [`ServerStore`]; [`RedbServerStore`] by default,
//!   [`PgServerStore`] on PostgreSQL.
//! - `listener`, `connection`: the accept loop; per connection a reader (with the login
//!   handshake) and a writer.
//! - `pipeline`: the single core thread and the store thread (group commit, then routing).
//! - [`router`]: [`Router`], the seam between committed frames and sessions.
//! - [`handle`]: [`start`], [`Server`], [`ServerHandle`], [`open_store`].
//! - [`auth`]: login tokens (JWTs: EdDSA/ES256 with public keys, or HS256 with the secret).
//! - [`metrics`]: [`Metrics`] and [`Health`], served by `http` on `metrics_addr` (`/metrics`,
//!   `/livez`, `/readyz`; docs/operations.md).
//! - [`config`]: [`ServerConfig`], defaults and TOML.
//! - [`cluster`]: several nodes over NATS (gateways and one sequencer).
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
pub mod cluster;
pub mod config;
mod connection;
pub mod core;
pub mod handle;
mod http;
mod listener;
pub mod metrics;
mod pipeline;
pub mod router;
mod size;
pub mod state;
pub mod store;
pub mod tls;

pub use crate::config::{
    Backend, ClusterConfig, ConfigError, GroupAckPolicy, RateLimit, Role, ServerConfig, TokenConfig, Visibility, WhoMayRequest,
};
pub use crate::core::{CoreConfig, Effects, Outgoing, ServerCore, SessionId, StoreOp};
pub use crate::handle::{open_store, start, start_with_store, Server, ServerHandle};
pub use crate::metrics::{Health, Metrics};
pub use crate::router::Router;
pub use crate::state::State;
pub use crate::store::{MemServerStore, PgServerStore, RedbServerStore, ServerStore, StoreError};
