//! Starting and stopping a server: [`start`] / [`start_with_store`] on the caller's runtime
//! ([`Server`]), [`ServerHandle`] on a thread of its own, and [`open_store`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cluster::lease::{lock_key, Leadership, StaticLeadership};
use crate::cluster::metrics::ClusterMetrics;
use crate::config::{Backend, Role, ServerConfig, DEFAULT_SECRET};
use crate::connection::ConnCfg;
use crate::core::{CoreConfig, ServerCore};
use crate::listener::{bind_listener, spawn_accept_loop};
use crate::metrics::{Health, Metrics, Phase};
use crate::pipeline::{core_loop, CoreMsg};
use crate::store::{MemServerStore, PgServerStore, RedbServerStore, ServerStore};

/// A running server on the caller's tokio runtime. Dropping it does not stop it; call
/// [`Server::shutdown`].
pub struct Server {
    local_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    core_tx: mpsc::Sender<CoreMsg>,
    core_done: oneshot::Receiver<()>,
    accept: tokio::task::JoinHandle<()>,
    ops: Ops,
    /// A gateway: whether it hears the sequencer (it closes new connections until it does).
    ready: Option<watch::Receiver<bool>>,
}

/// The operations side of a running server: its metrics listener, metrics and health.
#[derive(Clone)]
struct Ops {
    addr: Option<SocketAddr>,
    metrics: Option<Arc<Metrics>>,
    health: Arc<Health>,
    /// Stops the metrics listener (after the rest, so `/readyz` says "shutting down" meanwhile).
    stop: Arc<watch::Sender<bool>>,
}

impl Server {
    /// The bound address (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics listener's bound address (`/metrics`, `/livez`, `/readyz`), if one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.ops.addr
    }

    /// The server's metrics (`None` when `metrics_addr` is unset): e.g. for
    /// [`Metrics::set_cache_bytes`].
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.ops.metrics.as_ref()
    }

    /// Liveness and readiness, as `/readyz` reports them.
    pub fn health(&self) -> &Arc<Health> {
        &self.ops.health
    }

    /// A gateway: waits (at most `limit`) until it hears the sequencer; true if it does. Other
    /// nodes are ready at once.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let Some(mut rx) = self.ready.clone() else { return true };
        tokio::time::timeout(limit, rx.wait_for(|r| *r)).await.is_ok_and(|r| r.is_ok())
    }

    /// Stops accepting, closes every connection, commits what is in flight and closes the store.
    /// When this returns the data directory can be opened again.
    pub async fn shutdown(self) {
        self.ops.health.set_phase(Phase::ShuttingDown);
        let _ = self.shutdown_tx.send(true);
        let _ = self.core_tx.send(CoreMsg::Shutdown).await;
        let _ = self.accept.await;
        let _ = self.core_done.await;
        let _ = self.ops.stop.send(true);
    }
}

/// Opens the configured store: PostgreSQL at `pg` with `backend = "postgres"`, else redb in
/// `data_dir`, or in memory when it is `None`.
pub fn open_store(config: &ServerConfig) -> io::Result<Box<dyn ServerStore>> {
    Ok(match (config.backend, &config.data_dir) {
        (Backend::Postgres, _) => {
            let pg = config.pg.as_deref().ok_or_else(|| io::Error::other("backend = \"postgres\" needs `pg` (a connection string)"))?;
            Box::new(PgServerStore::connect(pg).map_err(io::Error::other)?)
        }
        (Backend::Redb, Some(dir)) => Box::new(RedbServerStore::open_with_cache(dir, config.store_cache_bytes).map_err(io::Error::other)?),
        (Backend::Redb, None) => Box::new(MemServerStore::default()),
    })
}

/// Starts a server on the current tokio runtime with the store named by the config (a
/// cluster's gateway opens none: the sequencer holds the store).
pub async fn start(config: ServerConfig) -> io::Result<Server> {
    if let Some(c) = config.cluster.clone().filter(|c| c.role == Role::Gateway) {
        return start_gateway(config, c).await;
    }
    // Off the runtime's threads: opening is blocking I/O, and the PostgreSQL client runs a
    // runtime of its own, which cannot be entered from within this one.
    let cfg = config.clone();
    let pg = config.pg.clone().filter(|_| config.backend == Backend::Postgres);
    // A sequencer or standby on PostgreSQL is elected: it waits for the cluster's lock on its
    // commit connection (and one lease more) before it loads anything (cluster/lease.rs). Its
    // metrics listener answers meanwhile: `/readyz` says why it is not ready.
    let elect = config.cluster.clone().filter(|_| pg.is_some());
    config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let (ops, cluster_metrics) = start_ops(&config, config.data_dir.clone()).await?;
    if elect.is_some() {
        ops.health.set_check(LOCK_CHECK, Err("not holding the sequencer lock yet (a standby while another node leads)".into()));
    }
    let opened = tokio::task::spawn_blocking(move || -> io::Result<_> {
        let mut store = open_store(&cfg)?;
        let lease: Box<dyn Leadership> = match elect {
            Some(c) => {
                let lease = Duration::from_millis(c.lease_ms);
                Box::new(
                    crate::cluster::lease::wait_for_lock(&mut *store, lock_key(&c.name), lease, crate::pipeline::now_ms)
                        .map_err(io::Error::other)?,
                )
            }
            None => Box::new(StaticLeadership),
        };
        Ok((store, lease))
    })
    .await
    .map_err(io::Error::other)
    .and_then(|r| r);
    let (store, lease) = match opened {
        Ok(x) => x,
        Err(e) => {
            let _ = ops.stop.send(true);
            return Err(e);
        }
    };
    ops.health.set_check(LOCK_CHECK, Ok(()));
    let server = start_node(config, store, lease, ops, cluster_metrics).await?;
    if let Some(pg) = pg {
        crate::store::postgres::spawn_readiness_check(pg, Arc::downgrade(server.health()));
    }
    Ok(server)
}

/// Starts a server with a given store (any [`ServerStore`] backend). A cluster's sequencer
/// started this way holds the static lease (no election: [`start`] elects on PostgreSQL).
pub async fn start_with_store(config: ServerConfig, store: Box<dyn ServerStore>) -> io::Result<Server> {
    config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let (ops, cluster_metrics) = start_ops(&config, config.data_dir.clone()).await?;
    start_node(config, store, Box::new(StaticLeadership), ops, cluster_metrics).await
}

/// The `/readyz` check of an elected node that does not hold the sequencer lock yet.
const LOCK_CHECK: &str = "sequencer lock";

/// The operations side of a node, started first (a standby answers `/livez` and `/readyz`
/// while it waits; `/readyz` says "starting" until the node serves): its metrics (with the
/// cluster's series, registered when it is a cluster node) and the listener when configured.
async fn start_ops(config: &ServerConfig, data_dir: Option<std::path::PathBuf>) -> io::Result<(Ops, ClusterMetrics)> {
    let health = Arc::new(Health::default());
    let cluster_metrics = ClusterMetrics::default();
    let metrics = new_metrics(config, data_dir, &cluster_metrics);
    let (ops_stop, ops_stop_rx) = watch::channel(false);
    let ops_addr = match (config.metrics_addr, &metrics) {
        (Some(addr), Some(m)) => {
            let l = crate::http::bind(addr).await?;
            let bound = l.local_addr()?;
            if !bound.ip().is_loopback() {
                warn!("metrics listener on {bound}, not loopback: keep it on a private network");
            }
            crate::http::spawn(l, m.clone(), health.clone(), ops_stop_rx);
            info!("metrics on {bound}");
            Some(bound)
        }
        _ => None,
    };
    Ok((Ops { addr: ops_addr, metrics, health, stop: Arc::new(ops_stop) }, cluster_metrics))
}

/// [`start_with_store`], a cluster's sequencer holding `lease`.
/// `ops` is stopped if the start fails.
async fn start_node(
    config: ServerConfig,
    store: Box<dyn ServerStore>,
    lease: Box<dyn Leadership>,
    ops: Ops,
    cluster_metrics: ClusterMetrics,
) -> io::Result<Server> {
    let stop_ops = ops.stop.clone();
    let started = start_node_with(config, store, lease, ops, cluster_metrics).await;
    if started.is_err() {
        let _ = stop_ops.send(true);
    }
    started
}

async fn start_node_with(
    config: ServerConfig,
    store: Box<dyn ServerStore>,
    lease: Box<dyn Leadership>,
    ops: Ops,
    cluster_metrics: ClusterMetrics,
) -> io::Result<Server> {
    if config.cluster.as_ref().is_some_and(|c| c.node_id == 0) {
        return Err(io::Error::other("a cluster node's node_id must be 1..=65535"));
    }
    if config.secret == DEFAULT_SECRET && config.tokens.public_keys.is_empty() {
        warn!("running with the default secret; set one for any real use");
    }
    let tls = crate::tls::acceptor(&config)?;
    let tokens = crate::auth::Verifier::from_config(&config).map_err(io::Error::other)?;
    let listener = bind_listener(config.addr)?;
    let local_addr = listener.local_addr()?;
    // The metrics listener answers before the store is loaded: `/readyz` says "starting" meanwhile.
    let (health, metrics) = (ops.health.clone(), ops.metrics.clone());
    // With a reader (redb, PostgreSQL) only the hot state is loaded and the rest is read on
    // demand; the in-memory store keeps everything resident. Off the runtime's threads (see
    // `start`).
    let (mut store, mut lease) = (store, lease);
    let loaded = tokio::task::spawn_blocking(move || {
        let state = store.load_hot();
        // The lock's connection was idle meanwhile: confirmed before the NATS start-up.
        lease.renew(&mut *store, crate::pipeline::now_ms());
        (store, state, lease)
    })
    .await
    .map_err(io::Error::other)?;
    let (store, state, lease) = loaded;
    let state = state.map_err(io::Error::other)?;
    let core = match store.reader() {
        Some(reader) => ServerCore::with_store(CoreConfig::from(&config), state, reader, config.cache_bytes),
        None => ServerCore::new(CoreConfig::from(&config), state),
    };
    let (core_tx, core_rx) = mpsc::channel(8192);
    let (done_tx, core_done) = oneshot::channel();
    let (cap, max_batch) = ((config.outbound_queue.max(1), config.outbound_bytes.max(1)), config.max_batch);
    let (core_metrics, core_health) = (metrics.clone(), health.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // The sequencer of a cluster: remote sessions' inputs come in over NATS, their committed
    // frames go out through the remote router.
    let (remote, first) = match &config.cluster {
        Some(c) => {
            let client = crate::cluster::connect(c, format!("receipt-{}-sequencer-{}", c.name, c.node_id)).await?;
            cluster_metrics.leading.set(1);
            let r = crate::cluster::sequencer::start(
                client,
                c.name.clone(),
                c.node_id,
                core_tx.clone(),
                shutdown_rx.clone(),
                lease,
                cluster_metrics,
            )
            .await?;
            info!("sequencer of cluster {} (node {}) on {}", c.name, c.node_id, c.nats);
            (Some(r), crate::cluster::session_base(c.node_id))
        }
        None => (None, 1),
    };
    std::thread::Builder::new().name("receipt-core".into()).spawn(move || {
        core_loop(core, store, core_rx, cap, max_batch, core_metrics, core_health, remote);
        let _ = done_tx.send(());
    })?;
    let accept = serve_connections(&config, listener, core_tx.clone(), tokens, tls, metrics, shutdown_rx, first)?;
    info!("listening on {local_addr}");
    health.set_phase(Phase::Serving);
    Ok(Server { local_addr, shutdown_tx, core_tx, core_done, accept, ops, ready: None })
}

/// The server's metrics when the listener is on (`None` otherwise), with a cluster node's
/// `receipt_cluster_*` series registered beside them.
fn new_metrics(config: &ServerConfig, data_dir: Option<std::path::PathBuf>, cluster: &ClusterMetrics) -> Option<Arc<Metrics>> {
    config.metrics_addr?;
    let mut m = Metrics::new(data_dir);
    if config.cluster.is_some() {
        cluster.register(m.registry_mut());
    }
    Some(Arc::new(m))
}

/// A cluster's gateway: the connections as on a single node, their inputs forwarded to the
/// sequencer over NATS (`cluster::gateway`).
async fn start_gateway(config: ServerConfig, c: crate::config::ClusterConfig) -> io::Result<Server> {
    if c.node_id == 0 {
        return Err(io::Error::other("a cluster node's node_id must be 1..=65535"));
    }
    let tls = crate::tls::acceptor(&config)?;
    let tokens = crate::auth::Verifier::from_config(&config).map_err(io::Error::other)?;
    let listener = bind_listener(config.addr)?;
    let local_addr = listener.local_addr()?;
    let (ops, cluster_metrics) = start_ops(&config, None).await?;
    let (health, metrics) = (ops.health.clone(), ops.metrics.clone());
    let client = match crate::cluster::connect(&c, format!("receipt-{}-gateway-{}", c.name, c.node_id)).await {
        Ok(client) => client,
        Err(e) => {
            let _ = ops.stop.send(true);
            return Err(e);
        }
    };
    let (core_tx, core_rx) = mpsc::channel(8192);
    let (done_tx, core_done) = oneshot::channel();
    let (ready_tx, ready) = watch::channel(false);
    // `/readyz`: not ready while the sequencer is not heard.
    {
        let (mut rx, health) = (ready.clone(), health.clone());
        tokio::spawn(async move {
            loop {
                let heard = *rx.borrow_and_update();
                health.set_check("sequencer", if heard { Ok(()) } else { Err("sequencer not heard".into()) });
                if rx.changed().await.is_err() {
                    break;
                }
            }
        });
    }
    let cap = (config.outbound_queue.max(1), config.outbound_bytes.max(1));
    let gw_metrics = crate::cluster::gateway::GatewayMetrics { cluster: cluster_metrics, server: metrics.clone() };
    tokio::spawn(crate::cluster::gateway::run(client, c.name.clone(), c.node_id, core_rx, cap, ready_tx, done_tx, gw_metrics));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let first = crate::cluster::session_base(c.node_id);
    let accept = serve_connections(&config, listener, core_tx.clone(), tokens, tls, metrics, shutdown_rx, first)?;
    info!("gateway {} of cluster {} listening on {local_addr} (NATS {})", c.node_id, c.name, c.nats);
    health.set_phase(Phase::Serving);
    Ok(Server { local_addr, shutdown_tx, core_tx, core_done, accept, ops, ready: Some(ready) })
}

/// The connections' side of a node: the accept loop (sessions numbered from `first`) and the
/// tick timer, both stopping when `shutdown_rx` changes.
#[allow(clippy::too_many_arguments)]
fn serve_connections(
    config: &ServerConfig,
    listener: tokio::net::TcpListener,
    core_tx: mpsc::Sender<CoreMsg>,
    tokens: crate::auth::Verifier,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: Option<Arc<Metrics>>,
    shutdown_rx: watch::Receiver<bool>,
    first: crate::core::SessionId,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let cfg = Arc::new(ConnCfg {
        tokens,
        idle: Duration::from_secs(config.idle_timeout_secs.max(1)),
        login_timeout: Duration::from_secs(config.login_timeout_secs.max(1)),
        max_frame: config.max_frame,
        metrics,
    });
    // Ticks drive retention pruning (at most once a second) and the coalesced count updates:
    // at least once per interval of them.
    {
        let tx = core_tx.clone();
        let mut stop = shutdown_rx.clone();
        let period = Duration::from_millis(config.group_ack.coalesce_ms.clamp(10, 1000));
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = iv.tick() => { if tx.try_send(CoreMsg::Tick).is_err() && tx.is_closed() { break } }
                    _ = stop.changed() => break,
                }
            }
        });
    }
    Ok(spawn_accept_loop(listener, core_tx, cfg, shutdown_rx, config.max_connections.max(1), tls, config.require_tls, first))
}

/// A server running on its own thread with its own tokio runtime: for embedding in blocking
/// code and tests. Dropping the handle shuts the server down.
pub struct ServerHandle {
    local_addr: SocketAddr,
    ops: Ops,
    /// A gateway: whether it hears the sequencer ([`Server::wait_ready`]).
    ready: Option<watch::Receiver<bool>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// Starts the server and returns once it listens (or failed to start).
    pub fn spawn_in_thread(config: ServerConfig) -> io::Result<ServerHandle> {
        type Started = (SocketAddr, Ops, Option<watch::Receiver<bool>>);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<Started>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("receipt-server".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("receipt-srv-io").enable_all().build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                match start(config).await {
                    Ok(server) => {
                        let _ = ready_tx.send(Ok((server.local_addr(), server.ops.clone(), server.ready.clone())));
                        let _ = stop_rx.await;
                        server.shutdown().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })?;
        let (local_addr, ops, ready) = ready_rx.recv().map_err(|_| io::Error::other("server thread died"))??;
        Ok(ServerHandle { local_addr, ops, ready, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// A gateway: waits (blocking, at most `limit`) until it hears the sequencer; true if it
    /// does. Other nodes are ready at once ([`Server::wait_ready`]).
    pub fn wait_ready(&self, limit: Duration) -> bool {
        let Some(ready) = &self.ready else { return true };
        let deadline = std::time::Instant::now() + limit;
        loop {
            if *ready.borrow() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The bound address (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics listener's bound address, if one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.ops.addr
    }

    /// The server's metrics (`None` when `metrics_addr` is unset).
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.ops.metrics.as_ref()
    }

    /// Liveness and readiness, as `/readyz` reports them.
    pub fn health(&self) -> &Arc<Health> {
        &self.ops.health
    }

    /// Stops the server and waits until its store is closed.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}
