//! What a cluster node counts about its NATS streams (docs/operations.md, "Several nodes"):
//! registered beside the server's own metrics when the metrics listener is on, plain atomics
//! nobody reads when it is off. Both roles have the same names; the node's role tells which side
//! a figure is of (a gateway's gaps are in the sequencer's stream, the sequencer's in a
//! gateway's).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A node's cluster metrics; clones count into the same series.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    /// 1 on the node running as the sequencer; 0 on a gateway and a standby.
    pub(crate) leading: Gauge,
    /// Gateway: 1 while the sequencer is heard. Sequencer: gateways heard.
    pub(crate) peers: Gauge,
    /// Gaps seen in a stream this node receives (messages lost between two nodes).
    pub(crate) gaps: Counter,
    /// New epochs seen (the other side restarted, or a new sequencer leads).
    pub(crate) epochs: Counter,
    /// Sessions dropped because of a gap, a new epoch or a silence (their devices resync).
    pub(crate) sessions_dropped: Counter,
    /// NATS messages published, and those NATS did not take (unreachable; the receiver sees a gap).
    pub(crate) published: Counter,
    pub(crate) publish_failures: Counter,
    /// Sequencer: committed batches a gateway lost because the publish queue was full.
    pub(crate) queue_full: Counter,
    /// Sequencer: committed batches waiting to be published (sampled each heartbeat).
    pub(crate) queued: Gauge,
    /// NATS messages received on this node's subject.
    pub(crate) received: Counter,
}

impl ClusterMetrics {
    /// Registers every series under `receipt_cluster_*`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("cluster");
        r.register("leading", "1 on the node that runs as the sequencer, 0 on gateways and waiting standbys", self.leading.clone());
        r.register("peers", "Gateway: 1 while it hears the sequencer; sequencer: gateways it hears", self.peers.clone());
        r.register("gaps", "Gaps seen in a stream this node receives over NATS (lost messages)", self.gaps.clone());
        r.register("epochs", "New epochs seen in a stream this node receives (the other side restarted)", self.epochs.clone());
        r.register(
            "sessions_dropped",
            "Sessions dropped after a gap, a new epoch or a silence (their devices reconnect and resync)",
            self.sessions_dropped.clone(),
        );
        r.register("messages_published", "NATS messages this node published", self.published.clone());
        r.register(
            "publish_failures",
            "NATS messages NATS did not take within the publish wait (the receiver sees a gap)",
            self.publish_failures.clone(),
        );
        r.register(
            "publish_queue_full",
            "Sequencer: committed batches a gateway lost because the publish queue was full (it resyncs its sessions)",
            self.queue_full.clone(),
        );
        r.register("publish_queue", "Sequencer: committed batches waiting to be published to gateways", self.queued.clone());
        r.register("messages_received", "NATS messages received on this node's subject", self.received.clone());
    }

    /// Counts one publish's outcome.
    pub(crate) fn published(&self, ok: bool) {
        if ok {
            self.published.inc();
        } else {
            self.publish_failures.inc();
        }
    }
}
