//! The cluster topology of [`TestServer`](crate::TestServer): with
//! `RECEIPT_TEST_TOPOLOGY=cluster` ([`TOPOLOGY_ENV`]) every kit server is three nodes in this
//! process instead of one: a nats-server ([`NatsServer`]), a sequencer on a new database of the
//! kit's PostgreSQL cluster ([`crate::pg`], elected with a [`LEASE_MS`] lease) and two gateways,
//! behind a round-robin TCP [`Balancer`] on 127.0.0.1 that spreads successive connections over
//! the three nodes. The devices of one user and their peers land on different nodes, so the
//! rule suites prove the rules hold across nodes (scripts/test.sh runs them this way).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use receipt_server::{Backend, ClusterConfig, Role, ServerConfig, ServerHandle};

use crate::NatsServer;

/// The environment variable choosing the topology of every [`TestServer`](crate::TestServer):
/// `single` (the default) or `cluster`.
pub const TOPOLOGY_ENV: &str = "RECEIPT_TEST_TOPOLOGY";

/// The sequencer's lease (ms): short, so a start (the lock, then one lease) and a restart stay
/// fast; long enough that a loaded test machine renews in time (every third of it).
pub const LEASE_MS: u64 = 500;

/// Longest a gateway may take to hear the sequencer (heartbeats come every second).
const READY_LIMIT: Duration = Duration::from_secs(10);

/// The live connections a [`Balancer`] relays at most; past it, new ones are closed at once.
pub const MAX_RELAYED: usize = 1024;

/// What a [`TestServer`](crate::TestServer) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One server (the default).
    Single,
    /// A sequencer and two gateways over NATS, behind a round-robin balancer.
    Cluster,
}

/// The topology [`TOPOLOGY_ENV`] names. Panics on anything but `single`, `cluster` or unset.
pub fn topology() -> Topology {
    match std::env::var(TOPOLOGY_ENV).as_deref() {
        Err(_) | Ok("") | Ok("single") => Topology::Single,
        Ok("cluster") => Topology::Cluster,
        Ok(other) => panic!("{TOPOLOGY_ENV}={other:?}: expected \"single\" or \"cluster\""),
    }
}

/// Three nodes of one cluster and their NATS server; the balancer in front while they run.
pub(crate) struct TestCluster {
    /// The nodes' configs, the sequencer's first.
    configs: Vec<ServerConfig>,
    running: Option<Running>,
    nats: NatsServer,
}

struct Running {
    balancer: Balancer,
    sequencer: ServerHandle,
    gateways: Vec<ServerHandle>,
}

/// The cluster's name: unique in the process (the lock key and NATS subjects derive from it).
fn cluster_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("kit{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

impl TestCluster {
    /// Starts the cluster from `base` (a kit server's config; its store is replaced by a new
    /// PostgreSQL database) with the balancer on `bind`. Returns it and the sequencer's config
    /// (the one [`receipt_server::open_store`] loads the store from). Fails loudly without
    /// PostgreSQL or nats-server.
    pub(crate) fn start(base: &ServerConfig, bind: SocketAddr) -> io::Result<(TestCluster, ServerConfig)> {
        let missing = |what: &str| {
            io::Error::other(format!(
                "{TOPOLOGY_ENV}=cluster needs {what}; it does not fall back to a single server (unset {TOPOLOGY_ENV} for that)"
            ))
        };
        // `None` only when the RECEIPT_SKIP_* variables asked to skip them.
        let nats = NatsServer::start().ok_or_else(|| missing("nats-server, and RECEIPT_SKIP_NATS=1 skips it"))?;
        let db = crate::pg::database().ok_or_else(|| missing("PostgreSQL, and RECEIPT_SKIP_PG=1 skips it"))?;
        let name = cluster_name();
        let node = |id: u16, role: Role| {
            let mut c = base.clone();
            c.addr = "127.0.0.1:0".parse().unwrap();
            if c.metrics_addr.is_some() {
                c.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
            }
            let mut cluster = ClusterConfig::new(id, nats.url(), role, name.clone());
            cluster.lease_ms = LEASE_MS;
            c.cluster = Some(cluster);
            if role == Role::Sequencer {
                c.backend = Backend::Postgres;
                c.pg = Some(db.conninfo.clone());
            } else {
                // A gateway holds no store.
                c.data_dir = None;
            }
            c
        };
        let configs = vec![node(1, Role::Sequencer), node(2, Role::Gateway), node(3, Role::Gateway)];
        let sequencer_config = configs[0].clone();
        let mut cluster = TestCluster { configs, running: None, nats };
        cluster.start_nodes(bind)?;
        Ok((cluster, sequencer_config))
    }

    /// Starts the nodes (the sequencer on the same database, gateways with new ports) and the
    /// balancer on `bind` (a port of `0`: a free one); returns the balancer's address.
    pub(crate) fn start_nodes(&mut self, bind: SocketAddr) -> io::Result<SocketAddr> {
        assert!(self.running.is_none(), "stop the cluster first");
        let t = Instant::now();
        // The sequencer returns once it leads (the lock, then one lease): gateways started
        // before it would only miss its first heartbeat.
        let sequencer = ServerHandle::spawn_in_thread(self.configs[0].clone())
            .map_err(|e| io::Error::other(format!("the cluster's sequencer does not start: {e}")))?;
        let gateways = self.configs[1..]
            .iter()
            .map(|c| ServerHandle::spawn_in_thread(c.clone()).map_err(|e| io::Error::other(format!("a gateway does not start: {e}"))))
            .collect::<io::Result<Vec<_>>>()?;
        for (gw, config) in gateways.iter().zip(&self.configs[1..]) {
            if !gw.wait_ready(READY_LIMIT) {
                let id = config.cluster.as_ref().map_or(0, |c| c.node_id);
                return Err(io::Error::other(format!("gateway {id} did not hear the sequencer within {READY_LIMIT:?}")));
            }
        }
        let mut nodes = vec![sequencer.local_addr()];
        nodes.extend(gateways.iter().map(|g| g.local_addr()));
        let balancer = Balancer::start(bind, nodes)?;
        let addr = balancer.addr();
        eprintln!("cluster topology: balancer {addr} over {:?} (sequencer first), started in {:?}", balancer.nodes, t.elapsed());
        self.running = Some(Running { balancer, sequencer, gateways });
        Ok(addr)
    }

    /// Stops the balancer (closing every relayed connection), the gateways, then the sequencer
    /// (it commits what is in flight and frees the lock). NATS keeps running. Idempotent.
    pub(crate) fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            drop(r.balancer);
            for gw in r.gateways {
                gw.shutdown();
            }
            r.sequencer.shutdown();
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The running nodes, the sequencer first.
    pub(crate) fn handles(&self) -> Vec<&ServerHandle> {
        self.running.iter().flat_map(|r| std::iter::once(&r.sequencer).chain(&r.gateways)).collect()
    }

    /// The balancer's address while running.
    pub(crate) fn balancer_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|r| r.balancer.addr())
    }

    /// The NATS server's URL.
    pub(crate) fn nats_url(&self) -> String {
        self.nats.url()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Before NATS goes (the field drops after this): a sequencer that lost NATS for a
        // lease would exit the process.
        self.stop();
    }
}

/// A round-robin TCP relay on 127.0.0.1: successive accepted connections go to successive
/// nodes; bytes are copied both ways by two threads per connection. At most [`MAX_RELAYED`]
/// live connections. Dropping it stops accepting and closes every relayed connection.
pub struct Balancer {
    addr: SocketAddr,
    nodes: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    relayed: Arc<Relayed>,
    accept: Option<JoinHandle<()>>,
}

/// The live relayed connections (both sockets of each, for closing them) and a tally per node.
#[derive(Default)]
struct Relayed {
    live: Mutex<HashMap<u64, [TcpStream; 2]>>,
    per_node: Mutex<Vec<usize>>,
    next_id: AtomicU64,
}

impl Balancer {
    /// Listens on `bind` (retrying for a second if the port is still held, then on a free one)
    /// and relays to `nodes` in turn.
    pub fn start(bind: SocketAddr, nodes: Vec<SocketAddr>) -> io::Result<Balancer> {
        assert!(!nodes.is_empty(), "a balancer needs nodes");
        let listener = bind_again(bind)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(Relayed { per_node: Mutex::new(vec![0; nodes.len()]), ..Relayed::default() });
        let accept = {
            let (stop, relayed, nodes) = (stop.clone(), relayed.clone(), nodes.clone());
            std::thread::Builder::new().name("kit-balancer".into()).spawn(move || accept_loop(listener, nodes, stop, relayed))?
        };
        Ok(Balancer { addr, nodes, stop, relayed, accept: Some(accept) })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections went to each node so far (in the order of the nodes given).
    pub fn per_node(&self) -> Vec<usize> {
        lock(&self.relayed.per_node).clone()
    }

    /// Connections relayed now.
    pub fn live(&self) -> usize {
        lock(&self.relayed.live).len()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop; it sees the flag and returns (closing the listener).
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for [a, b] in lock(&self.relayed.live).drain().map(|(_, s)| s) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds `addr`, retrying for a second while the port is still held; then a free port.
fn bind_again(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(_) if addr.port() != 0 && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) if addr.port() != 0 => {
                eprintln!("balancer: {addr} stays busy ({e}): listening on a new port");
                return TcpListener::bind(SocketAddr::new(addr.ip(), 0));
            }
            Err(e) => return Err(e),
        }
    }
}

fn accept_loop(listener: TcpListener, nodes: Vec<SocketAddr>, stop: Arc<AtomicBool>, relayed: Arc<Relayed>) {
    let next = AtomicUsize::new(0);
    for client in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(client) = client else {
            // Out of fds, say: a bounded pause, not a busy loop.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if lock(&relayed.live).len() >= MAX_RELAYED {
            eprintln!("balancer: {MAX_RELAYED} connections relayed already: closing a new one");
            continue;
        }
        let i = next.fetch_add(1, Ordering::Relaxed) % nodes.len();
        // A node that is down: the client sees its connection closed, as it would on the node.
        let Ok(node) = TcpStream::connect_timeout(&nodes[i], Duration::from_secs(2)) else { continue };
        lock(&relayed.per_node)[i] += 1;
        let _ = (client.set_nodelay(true), node.set_nodelay(true));
        if let Err(e) = relay(client, node, &relayed) {
            eprintln!("balancer: cannot relay a connection: {e}");
        }
    }
}

/// Two threads copy the bytes of `client` and `node` both ways; the connection leaves the live
/// set when both are done.
fn relay(client: TcpStream, node: TcpStream, relayed: &Arc<Relayed>) -> io::Result<()> {
    let id = relayed.next_id.fetch_add(1, Ordering::Relaxed);
    lock(&relayed.live).insert(id, [client.try_clone()?, node.try_clone()?]);
    let pending = Arc::new(AtomicUsize::new(2));
    let pairs = [(client.try_clone()?, node.try_clone()?), (node, client)];
    for (from, to) in pairs {
        let (relayed, pending) = (relayed.clone(), pending.clone());
        std::thread::Builder::new().name("kit-relay".into()).spawn(move || {
            copy(from, to);
            if pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                lock(&relayed.live).remove(&id);
            }
        })?;
    }
    Ok(())
}

/// Copies until `from` ends: then `to` sees the end too (half close, as over a direct
/// connection). An error on either side closes both completely.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that answers each connection with its tag, then echoes.
    fn tagged_node(tag: u8) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(16) {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let _ = s.write_all(&[tag]);
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        let _ = s.write_all(&buf[..n]);
                    }
                });
            }
        });
        addr
    }

    fn read_byte(s: &mut TcpStream) -> Option<u8> {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(1) => Some(b[0]),
            _ => None,
        }
    }

    #[test]
    fn the_balancer_spreads_connections_in_turn_relays_both_ways_and_closes_them_on_drop() {
        let balancer = Balancer::start("127.0.0.1:0".parse().unwrap(), vec![tagged_node(1), tagged_node(2), tagged_node(3)]).unwrap();
        let mut clients: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(balancer.addr()).unwrap()).collect();
        let tags: Vec<Option<u8>> = clients.iter_mut().map(read_byte).collect();
        assert_eq!(tags, [Some(1), Some(2), Some(3), Some(1)], "round robin");
        assert_eq!(balancer.per_node(), [2, 1, 1]);
        clients[1].write_all(b"x").unwrap();
        assert_eq!(read_byte(&mut clients[1]), Some(b'x'), "echoed through the relay");
        assert_eq!(balancer.live(), 4);
        let addr = balancer.addr();
        drop(balancer);
        assert_eq!(read_byte(&mut clients[0]), None, "closed with the balancer");
        assert!(TcpStream::connect(addr).is_err(), "no longer listening");
    }
}
