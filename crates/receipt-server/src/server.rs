//! The network side: a tokio accept loop, one reader and one writer task per connection, and ONE
//! core thread that owns the state.
//!
//! Connection readers decode frames, check the login (version, token) themselves, and forward
//! everything else over a bounded channel to the core thread. The core thread drains the channel
//! in batches: it applies the whole batch to [`ServerCore`], writes all resulting store operations
//! in one transaction (one fsync for many requests: group commit), and only after the commit
//! sends the answers and routes the events to the online sessions through a [`Router`].
//!
//! Each connection has its own outbound queue. A connection whose queue of live frames exceeds
//! `outbound_queue` is dropped, so a slow reader never blocks the core; its device replays what
//! it missed from its cursor at the next login.

use crate::state::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, info, warn};
use receipt_core::codec::{encode_into, FrameDecoder};
use receipt_core::protocol::{ClientFrame, ServerFrame, PROTOCOL_VERSION};
use receipt_core::types::validate_id;
use receipt_core::{ChatError, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::auth;
use crate::config::{ServerConfig, DEFAULT_SECRET};
use crate::core::{CoreConfig, ServerCore, SessionId};
use crate::store::{MemStore, RedbStore, ServerStore};

/// Routes frames to sessions. The core thread's implementation maps a session to its
/// connection's outbound queue; a multi-node deployment would forward to other nodes.
pub trait Router {
    /// Queues `frame` for `session`. `replay` frames (login answer, backlog) are exempt from the
    /// slow-reader bound. Unknown sessions are ignored.
    fn deliver(&mut self, session: SessionId, frame: Arc<ServerFrame>, replay: bool);
    /// Closes the session's connection after what is already queued.
    fn close(&mut self, session: SessionId);
}

enum OutItem {
    /// A frame from the connection task itself (a refusal): not counted against the bound.
    Frame(ServerFrame),
    /// One commit's frames for a connection, in order, and how many of them are counted
    /// (not replay): one channel push and wake-up instead of one per frame.
    Frames(Vec<Arc<ServerFrame>>, usize),
    Close,
}

#[derive(Default)]
struct OutShared {
    /// Live frames queued and not yet written.
    pending: AtomicUsize,
    /// Dropped as too slow: stop writing at once.
    killed: AtomicBool,
    /// Tells the reader that the connection is finished.
    closed: Notify,
}

/// One connection's outbound queue.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<OutItem>,
    shared: Arc<OutShared>,
}

impl Outbox {
    fn push(&self, frame: ServerFrame) {
        let _ = self.tx.send(OutItem::Frame(frame));
    }
    fn close(&self) {
        let _ = self.tx.send(OutItem::Close);
    }
}

/// The core thread's router: session id -> outbound queue.
struct SessionRouter {
    cap: usize,
    conns: HashMap<SessionId, Outbox>,
    /// Frames of the batch being routed, per session in order (see [`SessionRouter::stage`]).
    staged: Vec<(SessionId, Vec<Arc<ServerFrame>>, usize)>,
    staged_at: HashMap<SessionId, usize>,
}

impl SessionRouter {
    /// Queues `frame` for `session` in the current batch; [`Self::send_staged`] hands each
    /// session's frames to its connection in one item.
    fn stage(&mut self, session: SessionId, frame: Arc<ServerFrame>, replay: bool) {
        let i = *self.staged_at.entry(session).or_insert_with(|| {
            self.staged.push((session, Vec::new(), 0));
            self.staged.len() - 1
        });
        let (_, frames, live) = &mut self.staged[i];
        frames.push(frame);
        if !replay {
            *live += 1;
        }
    }

    /// Sends the staged frames. The slow-reader bound is the per-frame one: the connection is
    /// dropped if its counted frames would pass `cap` (replay frames are exempt).
    fn send_staged(&mut self) {
        self.staged_at.clear();
        for (session, frames, live) in std::mem::take(&mut self.staged) {
            let Some(ob) = self.conns.get(&session) else {
                continue;
            };
            if live > 0 {
                if ob.shared.pending.load(Ordering::Acquire) + live > self.cap {
                    warn!("session {session}: outbound queue full, dropping the connection (it will resync)");
                    ob.shared.killed.store(true, Ordering::Release);
                    ob.shared.closed.notify_one();
                    ob.close();
                    self.conns.remove(&session);
                    continue;
                }
                ob.shared.pending.fetch_add(live, Ordering::AcqRel);
            }
            if ob.tx.send(OutItem::Frames(frames, live)).is_err() {
                self.conns.remove(&session);
            }
        }
    }
}

impl Router for SessionRouter {
    /// One frame alone: staged and sent at once, under the same slow-reader bound.
    fn deliver(&mut self, session: SessionId, frame: Arc<ServerFrame>, replay: bool) {
        self.stage(session, frame, replay);
        self.send_staged();
    }

    fn close(&mut self, session: SessionId) {
        if let Some(ob) = self.conns.remove(&session) {
            ob.close();
        }
    }
}

pub(crate) enum CoreMsg {
    Login {
        session: SessionId,
        frame: ClientFrame,
        outbox: Outbox,
    },
    /// The requests of one socket read, in order (one channel item, not one per request).
    Frames {
        session: SessionId,
        frames: Vec<ClientFrame>,
    },
    Closed {
        session: SessionId,
    },
    Tick,
    Shutdown,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One applied batch on its way to the store thread: sessions that logged in, what to commit,
/// what to send once it is committed, sessions that closed.
struct Applied {
    logins: Vec<(SessionId, Outbox)>,
    ops: Vec<crate::core::StoreOp>,
    out: Vec<crate::core::Outgoing>,
    closed: Vec<SessionId>,
}

/// Batches the core thread may hand over before it waits for the store thread.
const COMMITS_IN_FLIGHT: usize = 4;

/// The core thread: batches and applies; the store thread commits and routes.
///
/// Pipelined group commit: while the store thread commits (and fsyncs) batch N, the core thread
/// already applies batch N+1 in memory. Nothing of a batch is sent before its commit returned,
/// and the store thread commits and routes strictly in batch order, so every `ok` and every
/// event still follows the durable commit of its effects (and of everything before them). If
/// a commit fails, the store thread stops at once: neither that batch nor any later one is
/// answered, and the core thread stops when it next hands a batch over.
fn core_loop(mut core: ServerCore, store: Box<dyn ServerStore>, mut rx: mpsc::Receiver<CoreMsg>, cap: usize, max_batch: usize) {
    let (commit_tx, commit_rx) = std::sync::mpsc::sync_channel::<Applied>(COMMITS_IN_FLIGHT);
    // A batch's effects come back once committed and routed: the operations are dropped here,
    // on the thread that allocated them (mimalloc frees thread-locally much faster than across
    // threads), and the emptied vectors are reused for later batches.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<crate::core::Effects>();
    let store_thread =
        match std::thread::Builder::new().name("receipt-core-store".into()).spawn(move || store_loop(store, commit_rx, done_tx, cap)) {
            Ok(t) => t,
            Err(e) => {
                error!("cannot start the store thread: {e}");
                return;
            }
        };
    let mut batch = Vec::with_capacity(max_batch);
    let mut last_prune = 0u64;
    loop {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        while let Ok(done) = done_rx.try_recv() {
            core.recycle(done);
        }
        // A batch ends after `max_batch` requests (or when nothing more is queued).
        let weight = |m: &CoreMsg| match m {
            CoreMsg::Frames { frames, .. } => frames.len(),
            _ => 1,
        };
        let mut requests = weight(&first);
        batch.push(first);
        while requests < max_batch.max(1) {
            match rx.try_recv() {
                Ok(m) => {
                    requests += weight(&m);
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        let now = now_ms();
        // Effects accumulate inside the core (in order) and are taken once per batch.
        let mut fx = crate::core::Effects::default();
        let mut stop = false;
        let mut applied = Applied { logins: Vec::new(), ops: Vec::new(), out: Vec::new(), closed: Vec::new() };
        for m in batch.drain(..) {
            match m {
                CoreMsg::Login { session, frame, outbox } => {
                    applied.logins.push((session, outbox));
                    core.apply(now, session, frame);
                }
                CoreMsg::Frames { session, frames } => {
                    for frame in frames {
                        core.apply(now, session, frame);
                    }
                }
                CoreMsg::Closed { session } => {
                    core.disconnect(session);
                    applied.closed.push(session);
                }
                CoreMsg::Tick => {
                    if now.saturating_sub(last_prune) >= 1000 {
                        last_prune = now;
                        // prune() takes what accumulated so far, then its own deletions.
                        fx.append(core.prune(now));
                    }
                }
                CoreMsg::Shutdown => stop = true,
            }
        }
        let rest = core.take_effects();
        if fx.is_empty() {
            fx = rest;
        } else {
            fx.append(rest);
        }
        applied.ops = fx.ops;
        applied.out = fx.out;
        if commit_tx.send(applied).is_err() {
            // The store thread stopped after a failed commit.
            break;
        }
        if stop {
            break;
        }
    }
    drop(commit_tx);
    let _ = store_thread.join();
    debug!("core thread stopped");
}

/// The store thread: commits applied batches in order (several queued batches share one
/// transaction and one fsync), then sends their frames.
fn store_loop(
    mut store: Box<dyn ServerStore>,
    rx: std::sync::mpsc::Receiver<Applied>,
    done: std::sync::mpsc::Sender<crate::core::Effects>,
    cap: usize,
) {
    let mut router = SessionRouter { cap, conns: HashMap::default(), staged: Vec::new(), staged_at: HashMap::default() };
    let mut queued: Vec<Applied> = Vec::with_capacity(COMMITS_IN_FLIGHT + 1);
    'run: while let Ok(first) = rx.recv() {
        queued.push(first);
        while let Ok(next) = rx.try_recv() {
            queued.push(next);
        }
        // All queued batches in one transaction, without copying their operations together.
        let failed = {
            let parts: Vec<&[crate::core::StoreOp]> = queued.iter().filter(|a| !a.ops.is_empty()).map(|a| a.ops.as_slice()).collect();
            if parts.is_empty() {
                None
            } else {
                store.commit(&parts).err()
            }
        };
        if let Some(e) = failed {
            // Memory is now ahead of the disk: answer nothing, stop. A restart reloads the
            // last committed state and clients resend from their outboxes.
            error!("commit failed, stopping the server: {e}");
            break 'run;
        }
        for mut a in queued.drain(..) {
            for (session, outbox) in a.logins {
                router.conns.insert(session, outbox);
            }
            for o in a.out.drain(..) {
                router.stage(o.session, o.frame, o.replay);
            }
            router.send_staged();
            for s in a.closed {
                router.conns.remove(&s);
            }
            let _ = done.send(crate::core::Effects { ops: a.ops, out: a.out });
        }
    }
    for (_, ob) in router.conns.drain() {
        ob.close();
    }
    drop(rx);
    drop(store);
}

struct ConnCfg {
    secret: String,
    idle: Duration,
    /// A valid Login must arrive within this long after the accept (slowloris bound).
    login_timeout: Duration,
    max_frame: usize,
}

async fn writer_task(mut wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<OutItem>, shared: Arc<OutShared>) {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut close = false;
    while !close {
        let Some(mut item) = rx.recv().await else {
            break;
        };
        loop {
            match item {
                OutItem::Frame(f) => {
                    encode_into(&f, &mut buf);
                    // A refused login: nothing follows it.
                    if matches!(f, ServerFrame::LoginFailed { .. }) {
                        close = true;
                        break;
                    }
                }
                OutItem::Frames(frames, counted) => {
                    for f in &frames {
                        encode_into(&**f, &mut buf);
                        // A login refused by the core (device limit): nothing follows it.
                        if matches!(**f, ServerFrame::LoginFailed { .. }) {
                            close = true;
                            break;
                        }
                    }
                    shared.pending.fetch_sub(counted, Ordering::AcqRel);
                    if close {
                        break;
                    }
                }
                OutItem::Close => {
                    close = true;
                    break;
                }
            }
            if buf.len() >= 64 * 1024 {
                break;
            }
            match rx.try_recv() {
                Ok(next) => item = next,
                Err(_) => break,
            }
        }
        if shared.killed.load(Ordering::Acquire) {
            break;
        }
        if !buf.is_empty() {
            if let Err(e) = wr.write_all(&buf).await {
                debug!("write failed: {e}");
                break;
            }
            buf.clear();
        }
    }
    let _ = wr.shutdown().await;
    shared.closed.notify_one();
}

enum Step {
    Continue,
    Stop,
}

async fn connection(
    sock: TcpStream,
    session: SessionId,
    core_tx: mpsc::Sender<CoreMsg>,
    cfg: Arc<ConnCfg>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = sock.set_nodelay(true);
    let (mut rd, wr) = sock.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(OutShared::default());
    let outbox = Outbox { tx, shared: shared.clone() };
    let mut writer = tokio::spawn(writer_task(wr, rx, shared.clone()));
    let mut dec = FrameDecoder::new(cfg.max_frame);
    let mut buf = vec![0u8; 16 * 1024];
    let mut logged_in = false;
    let login_deadline = tokio::time::Instant::now() + cfg.login_timeout;
    // Requests decoded from one read go to the core as one item; whatever came before a bad
    // frame or a refusal is still handed over first, as if sent one by one.
    let mut frames: Vec<ClientFrame> = Vec::new();
    'conn: loop {
        // A refusal that ends the connection, sent after the requests before it were handed over.
        let mut refusal: Option<ServerFrame> = None;
        loop {
            match dec.next_frame::<ClientFrame>() {
                Ok(Some(frame)) if logged_in => {
                    if matches!(frame, ClientFrame::Login { .. }) {
                        refusal = Some(ServerFrame::Error { error: ChatError::invalid_param("already logged in") });
                        break;
                    }
                    frames.push(frame);
                }
                Ok(Some(frame)) => {
                    if let Step::Stop = login(frame, session, &mut logged_in, &core_tx, &outbox, &cfg).await {
                        break 'conn;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    debug!("session {session}: bad frame: {e}");
                    refusal = Some(ServerFrame::Error { error: ChatError::from(e) });
                    break;
                }
            }
        }
        if !frames.is_empty() {
            let msg = CoreMsg::Frames { session, frames: std::mem::take(&mut frames) };
            if core_tx.send(msg).await.is_err() {
                break 'conn;
            }
        }
        if let Some(error) = refusal {
            outbox.push(error);
            break 'conn;
        }
        // Before the login, the read also ends at the login deadline, however often bytes trickle in.
        let wait = if logged_in { cfg.idle } else { cfg.idle.min(login_deadline.saturating_duration_since(tokio::time::Instant::now())) };
        let read = tokio::select! {
            r = tokio::time::timeout(wait, rd.read(&mut buf)) => r,
            _ = shared.closed.notified() => break 'conn,
            _ = shutdown.changed() => break 'conn,
        };
        match read {
            Err(_) if !logged_in && tokio::time::Instant::now() >= login_deadline => {
                outbox.push(ServerFrame::Error { error: ChatError::invalid_param("login timeout: no valid Login in time") });
                break;
            }
            Err(_) => {
                outbox.push(ServerFrame::Error { error: ChatError::invalid_param("idle timeout") });
                break;
            }
            Ok(Ok(0)) => {
                if let Err(e) = dec.finish() {
                    // A half-closed peer may still read why its cut frame was refused.
                    debug!("session {session}: {e}");
                    outbox.push(ServerFrame::Error { error: ChatError::from(e) });
                }
                break;
            }
            Ok(Ok(n)) => dec.push(&buf[..n]),
            Ok(Err(e)) => {
                debug!("session {session}: read failed: {e}");
                break;
            }
        }
    }
    if logged_in {
        let _ = core_tx.send(CoreMsg::Closed { session }).await;
    }
    outbox.close();
    drop(outbox);
    // Let the writer flush a final Error / LoginFailed, but never wait on a peer that does not read.
    if tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
        writer.abort();
    }
}

fn login_failed(outbox: &Outbox, code: ErrorCode, d: impl Into<String>) -> Step {
    outbox.push(ServerFrame::LoginFailed { error: ChatError::new(code, d) });
    Step::Stop
}

/// The first frame of a connection: it must be a valid Login, which goes to the core alone
/// (with the connection's outbox).
async fn login(
    frame: ClientFrame,
    session: SessionId,
    logged_in: &mut bool,
    core_tx: &mpsc::Sender<CoreMsg>,
    outbox: &Outbox,
    cfg: &ConnCfg,
) -> Step {
    let ClientFrame::Login { v, user, device, token, .. } = &frame else {
        outbox.push(ServerFrame::Error { error: ChatError::not_logged_in() });
        return Step::Stop;
    };
    if *v != PROTOCOL_VERSION {
        return login_failed(
            outbox,
            ErrorCode::InvalidParam,
            format!("protocol version {v} not supported (server speaks {PROTOCOL_VERSION})"),
        );
    }
    if let Err(e) = validate_id("user", user).and_then(|_| validate_id("device", device)) {
        return login_failed(outbox, ErrorCode::InvalidParam, e.description);
    }
    if let Err(e) = auth::verify_token(&cfg.secret, user, token, auth::unix_secs()) {
        debug!("session {session}: login of {user} refused: {e}");
        return login_failed(outbox, ErrorCode::UserAuthenticationFailed, e.to_string());
    }
    *logged_in = true;
    if core_tx.send(CoreMsg::Login { session, frame, outbox: outbox.clone() }).await.is_err() {
        return Step::Stop;
    }
    Step::Continue
}

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
        Some(dir) => Box::new(RedbStore::open(dir).map_err(io::Error::other)?),
        None => Box::new(MemStore::default()),
    })
}

/// Starts a server on the current tokio runtime with the store named by the config.
pub async fn start(config: ServerConfig) -> io::Result<Server> {
    let store = open_store(&config)?;
    start_with_store(config, store).await
}

/// Pending connections the kernel keeps for the accept loop. `TcpListener::bind` asks for 128,
/// so a burst of connects beyond it had SYNs dropped (and the clients waited 1 s to retry).
const LISTEN_BACKLOG: u32 = 4096;

fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(LISTEN_BACKLOG)
}

/// Starts a server with a given store (any [`ServerStore`] backend).
pub async fn start_with_store(config: ServerConfig, mut store: Box<dyn ServerStore>) -> io::Result<Server> {
    if config.secret == DEFAULT_SECRET {
        warn!("running with the default secret; set one for any real use");
    }
    let listener = bind_listener(config.addr)?;
    let local_addr = listener.local_addr()?;
    let state = store.load().map_err(io::Error::other)?;
    let core = ServerCore::new(CoreConfig::from(&config), state);
    let (core_tx, core_rx) = mpsc::channel(8192);
    let (done_tx, core_done) = oneshot::channel();
    let (cap, max_batch) = (config.outbound_queue.max(1), config.max_batch);
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
    let accept = {
        let core_tx = core_tx.clone();
        let mut stop = shutdown_rx.clone();
        let max_conns = config.max_connections.max(1);
        let open = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            let mut next: SessionId = 1;
            loop {
                tokio::select! {
                    r = listener.accept() => match r {
                        Ok((sock, peer)) => {
                            if open.load(Ordering::Acquire) >= max_conns {
                                // Over the cap: say why (best effort, never waiting) and close.
                                warn!("refusing {peer}: {max_conns} connections open (max_connections)");
                                let e = ChatError::new(ErrorCode::ServerBusy, format!("server busy: {max_conns} connections open"));
                                let _ = sock.try_write(&receipt_core::codec::encode(&ServerFrame::Error { error: e }));
                                drop(sock);
                                continue;
                            }
                            debug!("session {next}: connection from {peer}");
                            open.fetch_add(1, Ordering::AcqRel);
                            let open = open.clone();
                            let conn = connection(sock, next, core_tx.clone(), cfg.clone(), shutdown_rx.clone());
                            tokio::spawn(async move {
                                conn.await;
                                open.fetch_sub(1, Ordering::AcqRel);
                            });
                            next += 1;
                        }
                        Err(e) => {
                            warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    _ = stop.changed() => break,
                }
            }
        })
    };
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
