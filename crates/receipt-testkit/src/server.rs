//! The real server in this process: [`TestServer`].

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use receipt_core::ConversationKey;
use receipt_server::{ServerConfig, ServerHandle, State};

use crate::cluster::{topology, TestCluster, Topology};
use crate::SECRET;

/// The config every kit server starts from: a free port on 127.0.0.1 (`:0`), [`SECRET`] (HS256
/// tokens), no token leeway (tests mint tokens that expire at a given second and expect the
/// server to refuse them from that second on), group read acks enabled (the guide's flows use
/// them; a test about the feature being off says so), the store in `data_dir` (`None`: in
/// memory), everything else the server's defaults.
pub fn server_config(data_dir: Option<PathBuf>) -> ServerConfig {
    let mut config = ServerConfig { addr: "127.0.0.1:0".parse().unwrap(), data_dir, secret: SECRET.into(), ..ServerConfig::default() };
    config.tokens.leeway_secs = 0;
    config.group_ack.enabled = true;
    config
}

/// The environment variable that puts every [`TestServer`] with a store on PostgreSQL: with
/// `RECEIPT_TEST_BACKEND=postgres`, a server whose config names a data dir gets a new database
/// of the kit's throwaway cluster ([`crate::pg`]) instead (the rule and persistence suites run
/// on both backends this way; scripts/test.sh).
pub const BACKEND_ENV: &str = "RECEIPT_TEST_BACKEND";

/// Puts `config` on a new PostgreSQL database when [`BACKEND_ENV`] says so and it has a store.
fn choose_backend(config: &mut ServerConfig) {
    match std::env::var(BACKEND_ENV).as_deref() {
        Ok("postgres") if config.data_dir.is_some() => {
            if let Some(db) = crate::pg::database() {
                config.backend = receipt_server::Backend::Postgres;
                config.pg = Some(db.conninfo);
            }
        }
        Ok("postgres") | Ok("redb") | Err(_) => {}
        Ok(other) => panic!("{BACKEND_ENV}={other:?}: expected \"redb\" or \"postgres\""),
    }
}

/// The real server on its own tokio runtime in this process, with a redb store in a temp dir
/// (removed on drop), or a PostgreSQL database ([`BACKEND_ENV`]). Dropping it shuts the server
/// down.
///
/// With `RECEIPT_TEST_TOPOLOGY=cluster` ([`crate::cluster`]) it is three nodes behind a
/// round-robin balancer instead (a sequencer on PostgreSQL and two gateways, over NATS): the
/// address is the balancer's, stop/start again/stop and load act on every node, and the
/// metrics are the sequencer's.
pub struct TestServer {
    handle: Option<ServerHandle>,
    /// The cluster topology's nodes (`handle` is `None` then).
    cluster: Option<TestCluster>,
    /// What it was started with (the port stays `0` until [`TestServer::start_again`] pins it).
    /// On the cluster topology: the sequencer's config (its store is the cluster's).
    pub config: ServerConfig,
    root: tempfile::TempDir,
    addr: SocketAddr,
}

impl TestServer {
    /// Starts a server from [`server_config`] with the store in `<temp dir>/server`; `f`
    /// adjusts the config first. Panics if it cannot start.
    pub fn start(f: impl FnOnce(&mut ServerConfig)) -> TestServer {
        TestServer::try_start(f).unwrap_or_else(|e| panic!("the test server does not start: {e}"))
    }

    /// [`TestServer::start`], returning the error instead (for the demo and the load tool).
    pub fn try_start(f: impl FnOnce(&mut ServerConfig)) -> io::Result<TestServer> {
        TestServer::try_start_on(topology(), f)
    }

    /// [`TestServer::start`] on `topology` whatever `RECEIPT_TEST_TOPOLOGY` says (the kit's
    /// own tests of the cluster topology).
    pub fn start_on(topology: Topology, f: impl FnOnce(&mut ServerConfig)) -> TestServer {
        TestServer::try_start_on(topology, f).unwrap_or_else(|e| panic!("the test server does not start: {e}"))
    }

    /// [`TestServer::start_on`], returning the error instead.
    pub fn try_start_on(topology: Topology, f: impl FnOnce(&mut ServerConfig)) -> io::Result<TestServer> {
        let root = tempfile::tempdir()?;
        let mut config = server_config(Some(root.path().join("server")));
        f(&mut config);
        if topology == Topology::Cluster {
            let (cluster, config) = TestCluster::start(&config, "127.0.0.1:0".parse().unwrap())?;
            let addr = cluster.balancer_addr().expect("the cluster runs");
            return Ok(TestServer { handle: None, cluster: Some(cluster), config, root, addr });
        }
        choose_backend(&mut config);
        let handle = ServerHandle::spawn_in_thread(config.clone())?;
        let addr = handle.local_addr();
        Ok(TestServer { handle: Some(handle), cluster: None, config, root, addr })
    }

    /// Where it listens (the last address it listened on, once stopped).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The running nodes: the server, or on the cluster the sequencer, then the gateways.
    fn nodes(&self) -> Vec<&ServerHandle> {
        match &self.cluster {
            Some(c) => c.handles(),
            None => self.handle.iter().collect(),
        }
    }

    /// The metrics listener's address while running, when the config set `metrics_addr` (the
    /// sequencer's on the cluster topology).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.nodes().first().and_then(|h| h.metrics_addr())
    }

    /// The running server's metrics, when the config set `metrics_addr` (the sequencer's on
    /// the cluster topology).
    pub fn metrics(&self) -> Option<std::sync::Arc<receipt_server::Metrics>> {
        self.nodes().first().and_then(|h| h.metrics().cloned())
    }

    /// Every running node's metrics listener, when the config set `metrics_addr`: one, or on
    /// the cluster topology the sequencer's, then the gateways'.
    pub fn node_metrics_addrs(&self) -> Vec<SocketAddr> {
        self.nodes().iter().filter_map(|h| h.metrics_addr()).collect()
    }

    /// Whether this server is the cluster topology's three nodes ([`crate::cluster`]).
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The cluster topology's NATS server (`None` on a single server).
    pub fn nats_url(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.nats_url())
    }

    /// The temp dir that holds the store (`server/`); a place for the clients' dirs too.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn is_running(&self) -> bool {
        self.handle.is_some() || self.cluster.as_ref().is_some_and(|c| c.is_running())
    }

    /// Stops the server (it commits what is in flight and closes the store). Idempotent. On the
    /// cluster topology: the balancer, the gateways, then the sequencer; NATS keeps running.
    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        if let Some(c) = &mut self.cluster {
            c.stop();
        }
    }

    /// Starts it again on the same data dir, on the same port if that can be bound again within
    /// a second, else on a new one. Returns the port it listens on.
    pub fn start_again(&mut self) -> u16 {
        assert!(!self.is_running(), "stop the server first");
        if let Some(c) = &mut self.cluster {
            // The same database and NATS server; the balancer on the same port if it can.
            self.addr = c.start_nodes(self.addr).expect("the test cluster starts again");
            return self.port();
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut config = self.config.clone();
        config.addr = self.addr;
        let handle = loop {
            match ServerHandle::spawn_in_thread(config.clone()) {
                Ok(h) => break h,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {e}; retrying", self.addr);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    eprintln!("{} stays busy ({e}): starting on a new port", self.addr);
                    config.addr = "127.0.0.1:0".parse().unwrap();
                    break ServerHandle::spawn_in_thread(config).expect("the test server starts again");
                }
            }
        };
        self.addr = handle.local_addr();
        self.handle = Some(handle);
        self.port()
    }

    /// Stops and starts again on the same data dir ([`TestServer::start_again`]).
    pub fn restart(&mut self) -> u16 {
        self.stop();
        self.start_again()
    }

    /// Stops the server and loads what its store holds (the server's view of the world).
    pub fn stop_and_load(&mut self) -> State {
        self.stop();
        let mut store = receipt_server::open_store(&self.config).expect("open the server store");
        store.load().expect("load the server store")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server's unread count of `user` for `key` in a loaded [`State`].
pub fn server_unread(state: &State, user: &str, key: &ConversationKey) -> u32 {
    state.convs.get(user).and_then(|m| m.get(key)).map_or(0, |c| c.unread)
}
