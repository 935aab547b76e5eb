//! Several nodes over core NATS: every node is a gateway holding client connections; ONE
//! sequencer runs the sans-IO core and group commit against the store (docs/deployment.md,
//! "Several nodes").
//!
//! - A gateway ([`gateway`]) keeps what a single node's connections keep (TLS, login tokens,
//!   framing, the slow-reader bounds of its own `SessionRouter`) and forwards its sessions'
//!   inputs (login, frames, closed, replay-more) to `receipt.<cluster>.seq.in`. The sequencer
//!   ([`sequencer`]) feeds them to the core thread like local connections' inputs, and its store
//!   thread hands each COMMITTED batch's frames of remote sessions to a [`sequencer::RemoteRouter`]
//!   (the `Router` seam), which publishes them, per gateway and in commit order, to
//!   `receipt.<cluster>.gw.<node>.out`. Nothing uncommitted leaves the sequencer.
//! - The sequencer serves clients too: its own sessions stay local (no NATS hop, the same
//!   `SessionRouter` as a single node), so a one-node "cluster" behaves exactly like today's
//!   server and the sequencer's clients do not pay two NATS hops.
//! - Session ids are global: the node id is their top 16 bits ([`session_base`], [`node_of`]).
//! - PostgreSQL (or the embedded redb store) is the only log; NATS may lose messages. Every
//!   message carries the sender's epoch (its start time) and a sequence number per receiver,
//!   and heartbeats (every [`HEARTBEAT`]) carry the last one sent, so a lost tail shows too. A
//!   gateway that sees a gap or a new sequencer epoch drops its sessions (closes their
//!   connections; the clients reconnect and resync from their cursors: login `since`, replay,
//!   `Resync`); a sequencer that sees a gap from a gateway closes that gateway's sessions in
//!   the core and tells the gateway to drop them. A gateway silent for [`GATEWAY_SILENT`] is
//!   forgotten (its sessions closed); a gateway that has not heard the sequencer for
//!   [`SEQUENCER_SILENT`] drops its sessions and closes new connections meanwhile (they retry).
//! - Backpressure: every queue is bounded. The store thread never waits for NATS: a batch that
//!   does not fit the publisher's queue is lost for its gateway and the gap makes the gateway
//!   drop its sessions (they resync); NATS itself drops a slow subscriber, with the same result.
//!
//! Who is the sequencer, behind the [`lease::Leadership`] seam: on redb a static role
//! (`role = "sequencer"` on one node); on PostgreSQL an election, a session advisory lock held
//! on the commit connection (`pg_try_advisory_lock`). A `standby` (or a `sequencer` on
//! PostgreSQL) waits for the lock, waits one lease more, loads and runs as the sequencer with a
//! new epoch; the holder renews its lease every third of it and exits (status 75) rather than
//! commit once it could not (`lease.rs`). A standby is not a gateway while it waits.

pub(crate) mod gateway;
pub mod lease;
pub mod metrics;
pub(crate) mod sequencer;
pub mod wire;

use std::time::Duration;

use crate::config::ClusterConfig;
use crate::core::SessionId;

/// How often each side tells the other its last sequence number.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A gateway that has not heard the sequencer for this long drops its sessions.
pub const SEQUENCER_SILENT: Duration = Duration::from_secs(3);
/// A sequencer forgets a gateway silent for this long (its sessions are closed in the core).
pub const GATEWAY_SILENT: Duration = Duration::from_secs(5);
/// Messages a node's NATS subscription buffers (each at most ~`wire::CHUNK_BYTES`, or one
/// frame past it); beyond it NATS drops messages for this node (slow consumer): a gap.
pub const SUBSCRIPTION_CAPACITY: usize = 1024;
/// Bits of a session id below the node id.
const NODE_SHIFT: u32 = 48;

/// The first session id of node `node` (node 0: a single node, ids from 1 as before).
pub fn session_base(node: u16) -> SessionId {
    ((node as u64) << NODE_SHIFT) + 1
}

/// The node holding `session`.
pub fn node_of(session: SessionId) -> u16 {
    (session >> NODE_SHIFT) as u16
}

/// Subject of the sequencer's inputs.
pub(crate) fn seq_subject(cluster: &str) -> String {
    format!("receipt.{cluster}.seq.in")
}

/// Subject of gateway `node`'s committed frames.
pub(crate) fn gw_subject(cluster: &str, node: u16) -> String {
    format!("receipt.{cluster}.gw.{node}.out")
}

/// Longest a node waits to hand a message to its NATS client (its buffer is full while NATS is
/// unreachable): past it the message counts as lost, and the receiver sees the gap.
const PUBLISH_WAIT: Duration = Duration::from_millis(200);

/// Publishes without waiting on NATS for long; false if the message is lost.
pub(crate) async fn publish(client: &async_nats::Client, subject: String, bytes: Vec<u8>) -> bool {
    match tokio::time::timeout(PUBLISH_WAIT, client.publish(subject, bytes.into())).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            log::debug!("publish failed: {e}");
            false
        }
        Err(_) => {
            log::debug!("publish timed out (NATS unreachable?)");
            false
        }
    }
}

/// Connects to NATS with the node's credentials and TLS settings. A refusal that retrying
/// cannot mend (bad credentials, a certificate not trusted, a malformed URL) fails the start
/// with a clear error; an unreachable server is retried in the background (a node may start
/// before its NATS server; the heartbeats say when the other side is reachable).
pub(crate) async fn connect(c: &ClusterConfig, name: String) -> std::io::Result<async_nats::Client> {
    use async_nats::ConnectErrorKind as K;
    match options(c, &name).connect(&c.nats).await {
        Ok(client) => return Ok(client),
        Err(e) if is_tls_refusal(&e) => {
            return Err(std::io::Error::other(format!("NATS {}: TLS handshake refused: {e} (check cluster.nats_ca)", c.nats)));
        }
        Err(e) if matches!(e.kind(), K::AuthorizationViolation | K::Authentication | K::Tls | K::ServerParse) => {
            return Err(std::io::Error::other(format!("NATS {}: {e} (check the [cluster] nats settings)", c.nats)));
        }
        Err(e) => log::warn!("NATS {} not reachable yet ({e}); retrying in the background", c.nats),
    }
    options(c, &name).retry_on_initial_connect().connect(&c.nats).await.map_err(std::io::Error::other)
}

/// A TLS handshake that failed (a certificate not trusted, a name that does not match): the
/// client reports it as I/O, but retrying cannot mend it.
fn is_tls_refusal(e: &async_nats::ConnectError) -> bool {
    let mut source = std::error::Error::source(e);
    for _ in 0..8 {
        let Some(s) = source else { return false };
        let inner = s.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).map(|i| i as &(dyn std::error::Error + 'static));
        if s.is::<rustls::Error>() || inner.is_some_and(|i| i.is::<rustls::Error>()) {
            return true;
        }
        source = s.source();
    }
    false
}

fn options(c: &ClusterConfig, name: &str) -> async_nats::ConnectOptions {
    let mut o = async_nats::ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .reconnect_delay_callback(|n| Duration::from_millis((50 * (n as u64 + 1)).min(500)))
        .subscription_capacity(SUBSCRIPTION_CAPACITY);
    if let (Some(user), Some(password)) = (&c.nats_user, &c.nats_password) {
        o = o.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &c.nats_token {
        o = o.token(token.clone());
    }
    if let Some(ca) = &c.nats_ca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&c.nats_cert, &c.nats_key) {
        o = o.add_client_certificate(cert.clone(), key.clone()).require_tls(true);
    }
    o
}

/// A sender's stream to one receiver: the epoch and the next sequence number, and the check a
/// receiver makes of it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    pub epoch: u64,
    /// Last sequence number seen (receiver) or sent (sender).
    pub last: u64,
}

/// What a receiver makes of a message's header.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// In order.
    Next,
    /// A new epoch (the sender restarted): everything of the old one is gone.
    NewEpoch,
    /// Messages were lost.
    Gap,
}

impl Stream {
    /// Checks a message (`counts`: it consumes a sequence number; heartbeats do not) and moves on.
    pub fn receive(&mut self, epoch: u64, seq: u64, counts: bool) -> Seen {
        let mut seen = Seen::Next;
        if epoch != self.epoch {
            *self = Stream { epoch, last: 0 };
            seen = Seen::NewEpoch;
        }
        let expected = if counts { self.last + 1 } else { self.last };
        if seq != expected && seen == Seen::Next {
            seen = Seen::Gap;
        } else if seq != expected {
            // The first message seen of a new epoch is not its first: lost too.
            seen = Seen::NewEpoch;
        }
        self.last = seq;
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_carry_their_node() {
        assert_eq!(session_base(0), 1);
        assert_eq!(node_of(session_base(7) + 12345), 7);
        assert_eq!(node_of(session_base(u16::MAX)), u16::MAX);
    }

    #[test]
    fn a_receiver_sees_gaps_lost_tails_and_new_epochs() {
        let mut s = Stream::default();
        assert_eq!(s.receive(5, 1, true), Seen::NewEpoch);
        assert_eq!(s.receive(5, 2, true), Seen::Next);
        assert_eq!(s.receive(5, 2, false), Seen::Next, "a heartbeat with the last seq");
        assert_eq!(s.receive(5, 4, true), Seen::Gap, "3 was lost");
        assert_eq!(s.receive(5, 5, true), Seen::Next);
        assert_eq!(s.receive(5, 6, false), Seen::Gap, "a heartbeat shows a lost tail");
        assert_eq!(s.receive(9, 1, true), Seen::NewEpoch);
        assert_eq!(s.receive(9, 2, true), Seen::Next);
    }
}
