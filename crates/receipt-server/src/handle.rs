//! Starting and stopping a server: [`start`] / [`start_with_store`] on the caller's runtime
//! ([`Server`]), [`ServerHandle`] on a thread of its own, and [`open_store`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{ServerConfig, DEFAULT_SECRET};
use crate::connection::ConnCfg;
use crate::core::{CoreConfig, ServerCore};
use crate::listener::{bind_listener, spawn_accept_loop};
use crate::pipeline::{core_loop, CoreMsg};
use crate::store::{MemServerStore, RedbServerStore, ServerStore};

/// A running server on the caller's tokio runtime. Dropping it does not stop it; call
/// [`Server::shutdown`].
pub struct Server {
    local_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    core_tx: mpsc::Sender<CoreMsg>,
    core_done: oneshot::Receiver<()>,
    accept: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The bound address (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection, commits what is in flight and closes the store.
    /// When this returns the data directory can be opened again.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let _ = self.core_tx.send(CoreMsg::Shutdown).await;
        let _ = self.accept.await;
        let _ = self.core_done.await;
    }
}

/// Opens the configured store (redb in `data_dir`, or in memory when it is `None`).
pub fn open_store(config: &ServerConfig) -> io::Result<Box<dyn ServerStore>> {
    Ok(match &config.data_dir {
        Some(dir) => Box::new(RedbServerStore::open_with_cache(dir, config.store_cache_bytes).map_err(io::Error::other)?),
        None => Box::new(MemServerStore::default()),
    })
}

/// Starts a server on the current tokio runtime with the store named by the config.
pub async fn start(config: ServerConfig) -> io::Result<Server> {
    let store = open_store(&config)?;
    start_with_store(config, store).await
}

/// Starts a server with a given store (any [`ServerStore`] backend).
pub async fn start_with_store(config: ServerConfig, mut store: Box<dyn ServerStore>) -> io::Result<Server> {
    if config.secret == DEFAULT_SECRET {
        warn!("running with the default secret; set one for any real use");
    }
    let tls = crate::tls::acceptor(&config)?;
    let listener = bind_listener(config.addr)?;
    let local_addr = listener.local_addr()?;
    // With a reader (redb) only the hot state is loaded and the rest is read on demand; the
    // in-memory store keeps everything resident.
    let state = store.load_hot().map_err(io::Error::other)?;
    let core = match store.reader() {
        Some(reader) => ServerCore::with_store(CoreConfig::from(&config), state, reader, config.cache_bytes),
        None => ServerCore::new(CoreConfig::from(&config), state),
    };
    let (core_tx, core_rx) = mpsc::channel(8192);
    let (done_tx, core_done) = oneshot::channel();
    let (cap, max_batch) = ((config.outbound_queue.max(1), config.outbound_bytes.max(1)), config.max_batch);
    std::thread::Builder::new().name("receipt-core".into()).spawn(move || {
        core_loop(core, store, core_rx, cap, max_batch);
        let _ = done_tx.send(());
    })?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let cfg = Arc::new(ConnCfg {
        secret: config.secret.clone(),
        idle: Duration::from_secs(config.idle_timeout_secs.max(1)),
        login_timeout: Duration::from_secs(config.login_timeout_secs.max(1)),
        max_frame: config.max_frame,
    });
    // Ticks drive retention pruning.
    {
        let tx = core_tx.clone();
        let mut stop = shutdown_rx.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = iv.tick() => { if tx.try_send(CoreMsg::Tick).is_err() && tx.is_closed() { break } }
                    _ = stop.changed() => break,
                }
            }
        });
    }
    let accept = spawn_accept_loop(listener, core_tx.clone(), cfg, shutdown_rx, config.max_connections.max(1), tls, config.require_tls);
    info!("listening on {local_addr}");
    Ok(Server { local_addr, shutdown_tx, core_tx, core_done, accept })
}

/// A server running on its own thread with its own tokio runtime: for embedding in blocking
/// code and tests. Dropping the handle shuts the server down.
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// Starts the server and returns once it listens (or failed to start).
    pub fn spawn_in_thread(config: ServerConfig) -> io::Result<ServerHandle> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<SocketAddr>>();
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
                        let _ = ready_tx.send(Ok(server.local_addr()));
                        let _ = stop_rx.await;
                        server.shutdown().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })?;
        let local_addr = ready_rx.recv().map_err(|_| io::Error::other("server thread died"))??;
        Ok(ServerHandle { local_addr, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// The bound address (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
