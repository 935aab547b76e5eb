//! `bench --spawn-server --nodes N` (N ≥ 2): a throwaway cluster of child processes
//! (docs/deployment.md, "Several nodes"): one nats-server, the sequencer (node 1; its store in
//! redb, or in PostgreSQL where it is elected by the advisory lock with a 1.5 s lease) and N-1
//! gateways (nodes 2..=N, no store). Every node serves clients and has its metrics listener, so
//! the bench can read each node's commits and NATS traffic.

use std::net::SocketAddr;
use std::path::Path;

use receipt_testkit::{ChildServer, NatsServer};

/// The sequencer's lease on PostgreSQL (ms): as the cluster tests, so that a start is quick.
pub(crate) const LEASE_MS: u64 = 1500;

/// The nodes (node 1, the sequencer, first) and their nats-server.
pub(crate) struct SpawnedCluster {
    pub(crate) nodes: Vec<ChildServer>,
    pub(crate) nats: NatsServer,
    /// `postgres` or `redb` (the sequencer's store).
    pub(crate) backend: &'static str,
    /// The sequencer's data dir (redb).
    _data: tempfile::TempDir,
}

/// A node's TOML: `extra` (the bench's settings: top-level keys, then tables), the metrics
/// listener, then its `[cluster]` table.
fn node_toml(extra: &str, node: u16, nats: &str, role: &str, lease_ms: Option<u64>) -> String {
    let lease = lease_ms.map_or(String::new(), |ms| format!("lease_ms = {ms}\n"));
    format!("metrics_addr = \"127.0.0.1:0\"\n{extra}\n[cluster]\nnode_id = {node}\nnats = \"{nats}\"\nrole = \"{role}\"\nname = \"bench\"\n{lease}")
}

impl SpawnedCluster {
    /// Starts nats-server, the sequencer on `pg` (a connection string) or on redb in a temp
    /// dir (`in_memory`: no store), then `nodes - 1` gateways; returns once every node listens
    /// (a gateway says so once it hears the sequencer).
    pub(crate) fn start(bin: &Path, nodes: usize, pg: Option<&str>, in_memory: bool, extra: &str) -> Result<SpawnedCluster, String> {
        if !(2..=64).contains(&nodes) {
            return Err(format!("--nodes {nodes}: a cluster has 2 to 64 nodes (1: a single server)"));
        }
        if receipt_testkit::nats::nats_binary().is_none() {
            return Err("no nats-server on PATH or in /usr/sbin: install Debian's nats-server".into());
        }
        let nats = NatsServer::start().ok_or("nats-server did not start (RECEIPT_SKIP_NATS=1?)")?;
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (seq, backend) = match pg {
            Some(conninfo) => {
                let conf = node_toml(extra, 1, &nats.url(), "sequencer", Some(LEASE_MS));
                (ChildServer::try_start_pg_with(bin, conninfo, &conf)?, "postgres")
            }
            None => {
                let conf = node_toml(extra, 1, &nats.url(), "sequencer", None);
                let dir = (!in_memory).then(|| data.path().join("sequencer"));
                (ChildServer::try_start(bin, dir.as_deref(), &conf)?, if in_memory { "in-memory" } else { "redb" })
            }
        };
        let mut all = vec![seq];
        for node in 2..=nodes as u16 {
            let conf = node_toml(extra, node, &nats.url(), "gateway", None);
            all.push(ChildServer::try_start(bin, None, &conf).map_err(|e| format!("gateway node {node}: {e}"))?);
        }
        Ok(SpawnedCluster { nodes: all, nats, backend, _data: data })
    }

    /// The client addresses, node 1 first.
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(ChildServer::addr).collect()
    }

    /// Node `i` (0-based)'s name in the report: `node 1 (sequencer, postgres)`, `node 2 (gateway)`.
    pub(crate) fn node_name(&self, i: usize) -> String {
        match i {
            0 => format!("node 1 (sequencer, {})", self.backend),
            i => format!("node {} (gateway)", i + 1),
        }
    }

    /// Gateways first, then the sequencer (SIGTERM, SIGKILL past 5 s each), then nats-server.
    pub(crate) fn stop(mut self) {
        for n in self.nodes.iter_mut().rev() {
            n.stop();
        }
        self.nats.stop();
    }
}
