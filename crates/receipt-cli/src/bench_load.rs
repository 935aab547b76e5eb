//! The load side of `bench`: many lean client connections on a few threads.
//!
//! Each connection is a tokio task that drives the real sans-IO client engine
//! ([`ClientEngine`] with a [`NullStore`]: a device that keeps nothing on disk) over one TCP
//! socket: it reads whatever arrived, hands every frame to the engine, reacts to the engine's
//! events (read acks, group acks, more sends), then writes everything the engine wants sent in
//! one `write`. The engine sends the delivery acks on its own, as it does in the SDK.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use receipt_core::codec::{encode_into, FrameDecoder, DEFAULT_MAX_FRAME};
use receipt_core::engine::{ClientEngine, ClientEvent, Completion, EngineConfig};
use receipt_core::store::NullStore;
use receipt_core::{ChatOptions, ChatType, MsgId, ReqId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use crate::bench_stats::Samples;

/// foldhash maps for the per-message bookkeeping (SipHash showed in the tool's profile).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Longest a run may wait for the next frame before it gives up (the run stops by itself).
const STALL: Duration = Duration::from_secs(30);

/// Counters the progress bar reads.
#[derive(Default)]
pub struct Progress {
    /// 1:1: delivery and read receipts seen by senders. Group: acks seen by the sender.
    pub receipts: AtomicU64,
}

/// A connection's byte stream: TCP, or TLS over TCP (`bench --tls`).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A TLS connector that trusts `ca_pem` (the RustCrypto provider, as the client runtime).
pub fn tls_connector(ca_pem: &str) -> Result<TlsConnector, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(e2s)?).map_err(e2s)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls_rustcrypto::provider()))
        .with_safe_default_protocol_versions()
        .map_err(e2s)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One client connection driving a [`ClientEngine`].
pub struct Conn {
    engine: ClientEngine<NullStore>,
    sock: Box<dyn Stream>,
    dec: FrameDecoder,
    out: Vec<u8>,
    buf: Vec<u8>,
    t0: Instant,
    pub events: Vec<ClientEvent>,
    /// Frames and bytes received so far (what a device pays for what the server sends it).
    pub frames_in: u64,
    pub bytes_in: u64,
}

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Conn {
    /// Connects and logs in; returns once the engine reports `Connected`.
    /// With `tls`, over TLS (the server's name: its IP address).
    pub async fn login(addr: SocketAddr, user: &str, token: &str, t0: Instant, tls: Option<TlsConnector>) -> Result<Conn, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("{user}: connect {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(e2s)?;
        let sock: Box<dyn Stream> = match tls {
            Some(connector) => {
                let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
                Box::new(connector.connect(name, tcp).await.map_err(|e| format!("{user}: TLS handshake: {e}"))?)
            }
            None => Box::new(tcp),
        };
        let options = ChatOptions { require_delivery_ack: true, require_read_ack: true, ..Default::default() };
        let mut cfg = EngineConfig::new(user, format!("{user}-bench"), options);
        // Runs are short and busy; keep the engine from pinging in the middle.
        cfg.keepalive_ms = 600_000;
        cfg.idle_timeout_ms = 1_200_000;
        let engine = ClientEngine::open(cfg, NullStore).map_err(e2s)?;
        let mut c = Conn {
            engine,
            sock,
            dec: FrameDecoder::new(DEFAULT_MAX_FRAME),
            out: Vec::with_capacity(16 * 1024),
            buf: vec![0; 64 * 1024],
            t0,
            events: Vec::new(),
            frames_in: 0,
            bytes_in: 0,
        };
        let now = c.now();
        c.engine.handle_connected(now, token);
        c.flush().await?;
        loop {
            c.recv().await?;
            for e in std::mem::take(&mut c.events) {
                match e {
                    ClientEvent::Connected => return Ok(c),
                    ClientEvent::LoginFailed(err) => return Err(format!("{user}: login refused: {err}")),
                    _ => {}
                }
            }
        }
    }

    pub fn now(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// The connection's engine (to issue commands; `flush` sends them).
    pub fn engine_mut(&mut self) -> &mut ClientEngine<NullStore> {
        &mut self.engine
    }

    /// Writes every frame the engine has queued, in one write.
    pub async fn flush(&mut self) -> Result<(), String> {
        let now = self.now();
        while let Some(f) = self.engine.poll_transmit(now) {
            encode_into(&f, &mut self.out);
        }
        if !self.out.is_empty() {
            self.sock.write_all(&self.out).await.map_err(|e| format!("{}: write: {e}", self.engine.user()))?;
            self.out.clear();
        }
        Ok(())
    }

    /// Waits for bytes, feeds every complete frame to the engine and collects its events.
    pub async fn recv(&mut self) -> Result<(), String> {
        // The user id is formatted only on an error (this runs once per socket read).
        let n = match tokio::time::timeout(STALL, self.sock.read(&mut self.buf)).await {
            Err(_) => return Err(format!("{}: nothing received for {STALL:?}", self.engine.user())),
            Ok(Err(e)) => return Err(format!("{}: read: {e}", self.engine.user())),
            Ok(Ok(0)) => return Err(format!("{}: the server closed the connection", self.engine.user())),
            Ok(Ok(n)) => n,
        };
        self.dec.push(&self.buf[..n]);
        self.bytes_in += n as u64;
        let now = self.now();
        loop {
            match self.dec.next_body() {
                Ok(Some(body)) => {
                    self.frames_in += 1;
                    if let Err(e) = self.engine.handle_frame_bytes(now, body) {
                        return Err(format!("{}: bad frame: {e}", self.engine.user()));
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(format!("{}: bad frame: {e}", self.engine.user())),
            }
        }
        while let Some(e) = self.engine.poll_event() {
            match e {
                ClientEvent::Disconnected | ClientEvent::ProtocolError(_) | ClientEvent::StoreFailed(_) => {
                    return Err(format!("{}: {e:?}", self.engine.user()));
                }
                e => self.events.push(e),
            }
        }
        Ok(())
    }
}

async fn wait_go(go: &mut watch::Receiver<bool>) {
    while !*go.borrow_and_update() {
        if go.changed().await.is_err() {
            return;
        }
    }
}

/// What a 1:1 sender measured.
pub struct SenderResult {
    pub rtt: Samples,
    pub delivered: u64,
    pub read: u64,
}

/// 1:1 sender: M messages to `peer`, at most `window` not yet delivered.
pub async fn sender(
    mut c: Conn,
    peer: String,
    messages: u64,
    window: u64,
    content: String,
    mut go: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> Result<SenderResult, String> {
    wait_go(&mut go).await;
    let (mut sent, mut inflight, mut delivered, mut read) = (0u64, 0u64, 0u64, 0u64);
    let mut by_req: HashMap<ReqId, Instant> = HashMap::default();
    let mut by_msg: HashMap<MsgId, Instant> = HashMap::default();
    let mut rtt = Samples(Vec::with_capacity(messages as usize));
    loop {
        while inflight < window && sent < messages {
            let now = c.now();
            let (req, _) = c.engine.send_message(now, &peer, ChatType::Chat, &content, false).map_err(e2s)?;
            by_req.insert(req, Instant::now());
            sent += 1;
            inflight += 1;
        }
        c.flush().await?;
        if delivered == messages && read == messages {
            break;
        }
        c.recv().await?;
        // Reuse the event vector's allocation across reads.
        let mut events = std::mem::take(&mut c.events);
        for e in events.drain(..) {
            match e {
                ClientEvent::RequestCompleted { req, result: Ok(Completion::Sent(m)) } => {
                    if let Some(t) = by_req.remove(&req) {
                        by_msg.insert(m.id, t);
                    }
                }
                ClientEvent::RequestCompleted { result: Err(err), .. } => return Err(format!("{}: refused: {err}", c.engine.user())),
                ClientEvent::MessagesDelivered(ms) => {
                    let at = Instant::now();
                    for m in &ms {
                        if let Some(t) = by_msg.remove(&m.id) {
                            rtt.push(at - t);
                        }
                    }
                    delivered += ms.len() as u64;
                    inflight = inflight.saturating_sub(ms.len() as u64);
                    progress.receipts.fetch_add(ms.len() as u64, Ordering::Relaxed);
                }
                ClientEvent::MessagesRead(ms) => {
                    read += ms.len() as u64;
                    progress.receipts.fetch_add(ms.len() as u64, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        c.events = events;
    }
    Ok(SenderResult { rtt, delivered, read })
}

/// 1:1 receiver: read-acks every message (the engine delivery-acks it on its own); done when
/// all 2·M of its acks were confirmed.
pub async fn receiver(mut c: Conn, messages: u64, mut go: watch::Receiver<bool>) -> Result<(), String> {
    wait_go(&mut go).await;
    let mut confirmed = 0u64;
    while confirmed < 2 * messages {
        c.recv().await?;
        let mut events = std::mem::take(&mut c.events);
        for e in events.drain(..) {
            match e {
                ClientEvent::MessagesReceived(ms) => {
                    let now = c.now();
                    for m in ms {
                        c.engine.ack_message_read(now, m.id).map_err(e2s)?;
                    }
                }
                ClientEvent::RequestCompleted { result: Ok(_), .. } => confirmed += 1,
                ClientEvent::RequestCompleted { result: Err(err), .. } => return Err(format!("{}: refused: {err}", c.engine.user())),
                _ => {}
            }
        }
        c.events = events;
        c.flush().await?;
    }
    Ok(())
}

/// Waits for the completion of request `req`.
async fn completion(c: &mut Conn, req: ReqId) -> Result<Completion, String> {
    loop {
        c.recv().await?;
        let mut found = None;
        for e in c.events.drain(..) {
            if let ClientEvent::RequestCompleted { req: r, result } = e {
                if r == req {
                    found = Some(result);
                }
            }
        }
        if let Some(r) = found {
            return r.map_err(e2s);
        }
    }
}

/// Creates the group (as its owner) and returns its id.
pub async fn create_group(c: &mut Conn, members: &[String]) -> Result<String, String> {
    let now = c.now();
    let req = c.engine.create_group(now, "bench", members, false).map_err(e2s)?;
    c.flush().await?;
    match completion(c, req).await? {
        Completion::GroupCreated(g) => Ok(g),
        other => Err(format!("create group answered {other:?}")),
    }
}

/// Sends `messages` group messages asking for read acks and returns their ids, in order, once
/// the server accepted them all (each with its request kept: a group above the member cap is
/// an error here).
pub async fn send_group_messages(c: &mut Conn, group: &str, messages: u64, content: String) -> Result<Vec<MsgId>, String> {
    let now = c.now();
    let mut reqs: Vec<ReqId> = Vec::new();
    for _ in 0..messages {
        reqs.push(c.engine.send_message(now, group, ChatType::GroupChat, &content, true).map_err(e2s)?.0);
    }
    c.flush().await?;
    let mut ids: HashMap<ReqId, MsgId> = HashMap::default();
    while ids.len() < reqs.len() {
        c.recv().await?;
        for e in std::mem::take(&mut c.events) {
            match e {
                ClientEvent::RequestCompleted { req, result: Ok(Completion::Sent(m)) } => {
                    if !m.need_group_ack {
                        return Err("the server did not keep need_group_ack (group larger than member_cap?)".into());
                    }
                    ids.insert(req, m.id);
                }
                ClientEvent::RequestCompleted { result: Err(err), .. } => return Err(format!("group send refused: {err}")),
                _ => {}
            }
        }
    }
    Ok(reqs.iter().map(|r| ids[r]).collect())
}

/// What the group sender measured.
pub struct GroupSenderResult {
    /// Per message: send until the sender's count reached N-1.
    pub full: Samples,
    pub acks: u64,
    pub ack_phase: Duration,
    /// Per message: paging through all its acks.
    pub fetch: Samples,
    pub fetch_total: Duration,
    pub fetched: u64,
}

/// Group sender: K messages asking for group acks, waits until each has N-1 acks, then pages
/// through every message's acks (page size 100).
pub async fn group_sender(
    mut c: Conn,
    group: String,
    messages: u64,
    expect: u32,
    content: String,
    mut go: watch::Receiver<bool>,
    progress: Arc<Progress>,
) -> Result<GroupSenderResult, String> {
    wait_go(&mut go).await;
    let start = Instant::now();
    let mut by_req: HashMap<ReqId, Instant> = HashMap::default();
    for _ in 0..messages {
        let now = c.now();
        let (req, _) = c.engine.send_message(now, &group, ChatType::GroupChat, &content, true).map_err(e2s)?;
        by_req.insert(req, Instant::now());
    }
    c.flush().await?;
    let mut sent_at: HashMap<MsgId, Instant> = HashMap::default();
    let mut counts: HashMap<MsgId, u32> = HashMap::default();
    let mut ids: Vec<MsgId> = Vec::new();
    let mut full = Samples::default();
    let mut acks = 0u64;
    while (full.0.len() as u64) < messages {
        c.recv().await?;
        for e in std::mem::take(&mut c.events) {
            match e {
                ClientEvent::RequestCompleted { req, result: Ok(Completion::Sent(m)) } => {
                    if !m.need_group_ack {
                        return Err("the server did not keep need_group_ack (group larger than member_cap?)".into());
                    }
                    if let Some(t) = by_req.remove(&req) {
                        sent_at.insert(m.id, t);
                        ids.push(m.id);
                    }
                }
                ClientEvent::RequestCompleted { result: Err(err), .. } => return Err(format!("group send refused: {err}")),
                ClientEvent::GroupMessageRead(list) => {
                    let at = Instant::now();
                    acks += list.len() as u64;
                    progress.receipts.fetch_add(list.len() as u64, Ordering::Relaxed);
                    for a in list {
                        let n = counts.entry(a.msg_id).or_default();
                        let before = *n;
                        *n = (*n).max(a.count);
                        if before < expect && *n >= expect {
                            if let Some(t) = sent_at.get(&a.msg_id) {
                                full.push(at - *t);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let ack_phase = start.elapsed();
    let mut fetch = Samples::default();
    let mut fetched = 0u64;
    let fetch_start = Instant::now();
    for id in ids {
        let t = Instant::now();
        let mut cursor = None;
        let mut got = 0u64;
        loop {
            let now = c.now();
            let req = c.engine.fetch_group_read_acks(now, id, 100, cursor).map_err(e2s)?;
            c.flush().await?;
            let Completion::GroupAcks(page) = completion(&mut c, req).await? else {
                return Err("fetch answered something else".into());
            };
            got += page.data.len() as u64;
            if page.cursor.is_empty() {
                break;
            }
            cursor = Some(page.cursor.parse().map_err(|_| format!("bad cursor {:?}", page.cursor))?);
        }
        if got != u64::from(expect) {
            return Err(format!("message {id}: paged {got} acks, expected {expect}"));
        }
        fetched += got;
        fetch.push(t.elapsed());
    }
    Ok(GroupSenderResult { full, acks, ack_phase, fetch, fetch_total: fetch_start.elapsed(), fetched })
}

/// Group member: acks every group message it receives; done after K confirmed acks.
pub async fn group_member(mut c: Conn, messages: u64, mut go: watch::Receiver<bool>) -> Result<(), String> {
    wait_go(&mut go).await;
    let mut confirmed = 0u64;
    while confirmed < messages {
        c.recv().await?;
        for e in std::mem::take(&mut c.events) {
            match e {
                ClientEvent::MessagesReceived(ms) => {
                    let now = c.now();
                    for m in ms.iter().filter(|m| m.chat_type == ChatType::GroupChat) {
                        c.engine.ack_group_message_read(now, m.id, None).map_err(e2s)?;
                    }
                }
                ClientEvent::RequestCompleted { result: Ok(_), .. } => confirmed += 1,
                ClientEvent::RequestCompleted { result: Err(err), .. } => return Err(format!("{}: refused: {err}", c.engine.user())),
                _ => {}
            }
        }
        c.flush().await?;
    }
    Ok(())
}
