//! The test kit: every fixture the tests, the C-program driver, the demo and the load tool
//! need to run the real parts, written once.
//!
//! - [`TestServer`]: the real server in this process, on a free loopback port, with a redb
//!   store in a temp dir; stop, start again on the same data dir, stop and load its [`State`].
//! - [`cluster`]: `RECEIPT_TEST_TOPOLOGY=cluster` makes every [`TestServer`] three nodes (a
//!   sequencer on PostgreSQL, two gateways, NATS) behind a round-robin balancer.
//! - [`ChildServer`]: the real `receipt-server` binary as a child process, configured by a TOML
//!   file (its RSS and fds can be read, it can be SIGKILLed and restarted on the same data dir).
//! - [`token`]: the one way to mint a login token, an HS256 JWT ([`SECRET`] is every kit
//!   server's secret).
//! - [`pg`]: a throwaway PostgreSQL cluster (one database per test) for the PostgreSQL store.
//! - [`NatsServer`]: a throwaway `nats-server` on a free loopback port (cluster tests).
//! - [`ops`]: GET on a server's metrics listener, and reading Prometheus samples.
//! - [`raw::RawClient`]: a raw protocol client on a blocking socket, for the server's rule tests.
//! - [`Device`]: a real `receipt-client` runtime with an event-waiting API (wait for an event a
//!   predicate accepts, with a time bound; collect; hears nothing...).
//! - [`target`]: where cargo put this build (`cargo build` of another artifact into it).
//!
//! ```no_run
//! use receipt_core::ChatOptions;
//! use receipt_testkit::{chat, Device, TestServer};
//!
//! let srv = TestServer::start(|config| config.retention_secs = 60);
//! let alice = Device::online("alice/phone", ChatOptions::default(), srv.port());
//! let bob = Device::online("bob/phone", ChatOptions::default(), srv.port());
//! let m = alice.send_chat("bob", "hi");
//! assert_eq!(bob.received(1)[0].id, m.id);
//! bob.wait_unread(&chat("alice"), 1);
//! ```
//!
//! The child process ([`ChildServer`]) needs the `receipt-server` binary: `cargo test -p
//! receipt-server` builds it for that crate's tests; elsewhere see [`server_binary`].
//!
//! Every wait is bounded ([`WAIT`] unless said otherwise); a wait that runs out panics with what
//! it waited for and what did arrive (the `try_` forms return that as an `Err` instead).
//!
//! # Why `receipt-cli` depends on this crate as a normal dependency
//!
//! The demo (`receipt-cli demo`) is the same thing as an end-to-end test: a real server on a
//! free loopback port with a temp data dir, real client runtimes, bounded waits for their
//! events. Its device and server are this kit's, so the demo cannot drift from what the tests
//! prove. The kit costs `receipt-cli` nothing new: its dependencies are the ones `receipt-cli`
//! already has (plus `libc`, already in the build). The alternatives were worse: the device in
//! `receipt-client` would put test waits into the SDK apps link; a copy in `receipt-cli` is
//! the duplication this crate removes. The kit is `publish = false`, like the workspace's other
//! path-only crates; it holds no test framework and no mock.

pub mod child;
pub mod cluster;
pub mod device;
pub mod nats;
pub mod ops;
pub mod pg;
pub mod raw;
pub mod rng;
pub mod server;
pub mod target;
pub mod tls;

use std::time::Duration;

use receipt_core::{ChatType, ConversationKey};

pub use child::{server_binary, ChildServer};
pub use cluster::{topology, Topology};
pub use device::{expect_err, read_ids, try_expect_err, Device};
pub use nats::NatsServer;
pub use receipt_server::{ServerConfig, State};
pub use server::{server_config, server_unread, TestServer};
pub use tls::TestCa;

/// Prints `line` to stderr past libtest's capture (which takes only `eprintln!`), so a SKIPPED
/// line or a measured figure is seen even when the test passes.
pub fn loud(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The token secret of every server the kit starts.
pub const SECRET: &str = "receipt-testkit-secret";
/// Longest a single wait may take.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long "nobody hears anything" is watched.
pub const QUIET: Duration = Duration::from_millis(300);

/// A login token (an HS256 JWT) for `user` on a kit server, valid for an hour.
pub fn token(user: &str) -> String {
    receipt_server::auth::token_for(SECRET, user, 3600)
}

/// A login token for `user` on a kit server, valid for `ttl_secs` (token-expiry tests).
pub fn token_with_ttl(user: &str, ttl_secs: u64) -> String {
    receipt_server::auth::token_for(SECRET, user, ttl_secs)
}

/// The 1:1 conversation with `peer`.
pub fn chat(peer: &str) -> ConversationKey {
    ConversationKey::new(ChatType::Chat, peer)
}

/// The group conversation `id`.
pub fn group(id: &str) -> ConversationKey {
    ConversationKey::new(ChatType::GroupChat, id)
}

/// A loopback port nothing listens on (bound, then released): a connect there is refused.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}
