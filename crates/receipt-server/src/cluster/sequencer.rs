//! The sequencer's side: the inputs of remote sessions go into the core thread's channel, and
//! the committed frames of remote sessions are published to their gateways.
//!
//! The store thread hands each committed batch's remote frames to a [`RemoteRouter`], which
//! splits them per gateway and queues them (bounded, never waiting) for the sequencer task.
//! The task owns the registry of gateways (their streams, their sessions), publishes, sends
//! heartbeats and drops what a gap or a silence makes unreliable.
//!
//! The task never waits on the core: while the core's channel is full (a long login sync, a
//! slow commit), inputs wait in a short queue of the task's own and it stops reading NATS, but
//! it goes on publishing committed batches and heartbeats. Waiting on the core there would let
//! the publish queue overflow and drop every session of a gateway for nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use log::{debug, info, warn};
use tokio::sync::{mpsc, watch};

use super::lease::Leadership;
use super::metrics::ClusterMetrics;
use super::wire::{self, Builder, Header, Input, Kind, OutFrame};
use super::{node_of, Seen, Stream, GATEWAY_SILENT, HEARTBEAT};
use crate::core::{Outgoing, SessionId};
use crate::pipeline::{now_ms, CoreMsg};
use crate::router::Router;

/// Committed batches (one gateway's part of one each) queued for publishing: what the store
/// thread may run ahead of NATS before a gateway loses a batch (and resyncs its sessions).
pub const PUBLISH_QUEUE: usize = 256;

/// The `Router` of remote sessions, on the store thread: committed frames only, in commit
/// order, never waiting. A batch that does not fit the queue is lost for its gateway, which
/// then sees a gap and drops its sessions (they resync): a slow gateway is dropped, not waited for.
pub(crate) struct RemoteRouter {
    local: u16,
    tx: mpsc::Sender<(u16, Vec<Outgoing>)>,
    /// Gateways that lost a batch: the task skips a sequence number for each before its next
    /// message to them.
    lost: Arc<Mutex<HashSet<u16>>>,
    /// Whether this node may write (the store thread asks before every commit).
    lease: Box<dyn Leadership>,
    /// The NATS client, for its connection state, and since when (ms) it is not connected.
    nats: async_nats::Client,
    nats_lost_at: Option<u64>,
    metrics: ClusterMetrics,
}

impl RemoteRouter {
    /// This node's id: its own sessions are not routed here.
    pub(crate) fn local_node(&self) -> u16 {
        self.local
    }

    /// Whether this sequencer may commit at `now_ms`: never two writers.
    pub(crate) fn may_write(&self, now_ms: u64) -> bool {
        let nats_ok = match (self.nats_lost_at, self.lease.lease()) {
            (Some(at), Some(lease)) => now_ms.saturating_sub(at) < lease.as_millis() as u64,
            _ => true,
        };
        self.lease.is_held(now_ms) && nats_ok
    }

    /// Renews the lease through the store's commit connection when due.
    /// An elected sequencer also gives up when NATS stays unreachable for a lease (a standby
    /// that reaches it may then lead); a static one keeps serving its own clients.
    pub(crate) fn renew(&mut self, store: &mut dyn crate::store::ServerStore, now_ms: u64) {
        self.lease.renew(store, now_ms);
        let state = self.nats.connection_state();
        if state == async_nats::connection::State::Connected {
            self.nats_lost_at = None;
        } else if self.nats_lost_at.is_none() {
            // `Pending` is also what a fresh client reports until its first server info: counted
            // like a disconnect, but only a real one is worth a warning.
            if state == async_nats::connection::State::Disconnected {
                log::warn!("sequencer: NATS unreachable; it stops writing if it stays so for a lease");
            } else {
                log::debug!("sequencer: NATS connection {state:?}");
            }
            self.nats_lost_at = Some(now_ms);
        }
    }

    /// How long the store thread may wait for a batch before it must renew the lease.
    pub(crate) fn renew_every(&self) -> Option<std::time::Duration> {
        self.lease.renew_every()
    }
}

impl Router for RemoteRouter {
    fn deliver(&mut self, session: SessionId, frame: Arc<receipt_core::protocol::ServerFrame>, replay: bool) {
        self.deliver_batch(&mut vec![Outgoing { session, frame, replay }]);
    }

    fn deliver_batch(&mut self, out: &mut Vec<Outgoing>) {
        // Few gateways: a short list beats a map.
        let mut per: Vec<(u16, Vec<Outgoing>)> = Vec::new();
        for o in out.drain(..) {
            let node = node_of(o.session);
            match per.iter_mut().find(|(n, _)| *n == node) {
                Some((_, v)) => v.push(o),
                None => per.push((node, vec![o])),
            }
        }
        for (node, frames) in per {
            if self.tx.try_send((node, frames)).is_err() {
                warn!("sequencer: publish queue full, gateway {node} loses a batch (its sessions resync)");
                self.metrics.queue_full.inc();
                self.lost.lock().unwrap_or_else(|e| e.into_inner()).insert(node);
            }
        }
    }
}

/// What the sequencer knows of one gateway.
struct Gw {
    /// The gateway's stream to the sequencer.
    input: Stream,
    /// The sequencer's stream to it (the epoch is the sequencer's).
    out_seq: u64,
    heard: Instant,
    sessions: HashSet<SessionId>,
}

struct Sequencer {
    client: async_nats::Client,
    cluster: String,
    epoch: u64,
    core_tx: mpsc::Sender<CoreMsg>,
    /// Inputs for the core that did not fit its channel yet, in order. Bounded: the task reads
    /// no NATS message while it holds any, so it holds at most one message's inputs and the
    /// sessions of the gateways it closed meanwhile.
    to_core: VecDeque<CoreMsg>,
    gateways: HashMap<u16, Gw>,
    lost: Arc<Mutex<HashSet<u16>>>,
    /// The lease's deadline (ms): past it this node publishes nothing (a successor may lead).
    deadline: Arc<std::sync::atomic::AtomicU64>,
    metrics: ClusterMetrics,
}

/// Starts the sequencer task of node `local`: it subscribes before it returns (no input sent
/// after this is missed) and feeds `core_tx`; the returned router goes to the store thread.
/// `lease`: this node's lease on writing, held already.
pub(crate) async fn start(
    client: async_nats::Client,
    cluster: String,
    local: u16,
    core_tx: mpsc::Sender<CoreMsg>,
    mut stop: watch::Receiver<bool>,
    lease: Box<dyn Leadership>,
    metrics: ClusterMetrics,
) -> std::io::Result<RemoteRouter> {
    if !lease.is_held(now_ms()) {
        return Err(std::io::Error::other("not the sequencer: the lease is not held"));
    }
    let mut sub = client.subscribe(super::seq_subject(&cluster)).await.map_err(std::io::Error::other)?;
    let (tx, mut rx) = mpsc::channel(PUBLISH_QUEUE);
    let lost = Arc::new(Mutex::new(HashSet::new()));
    let deadline = lease.shared_deadline();
    let nats = client.clone();
    let core = core_tx.clone();
    let mut seq = Sequencer {
        client,
        cluster,
        epoch: now_ms(),
        core_tx,
        to_core: VecDeque::new(),
        gateways: HashMap::new(),
        lost: lost.clone(),
        deadline,
        metrics: metrics.clone(),
    };
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                // Inputs wait for the core here, never in a send: publishing goes on meanwhile.
                permit = core.reserve(), if !seq.to_core.is_empty() => match permit {
                    Ok(permit) => seq.feed_core(permit),
                    Err(_) => break,
                },
                m = sub.next(), if seq.to_core.is_empty() => match m {
                    Some(m) => {
                        seq.on_gateway_message(&m.payload).await;
                        seq.feed_core_now();
                    }
                    None => break,
                },
                b = rx.recv() => match b {
                    Some((node, frames)) => seq.publish_frames(node, frames).await,
                    None => break,
                },
                _ = beat.tick() => {
                    seq.metrics.queued.set(rx.len() as i64);
                    seq.beat().await;
                }
                _ = stop.changed() => break,
            }
        }
        let _ = tokio::time::timeout(super::HEARTBEAT, seq.client.flush()).await;
    });
    Ok(RemoteRouter { local, tx, lost, lease, nats, nats_lost_at: None, metrics })
}

impl Sequencer {
    fn subject(&self, node: u16) -> String {
        super::gw_subject(&self.cluster, node)
    }

    /// The next sequence number to `node`, skipping one if a batch for it was lost.
    fn next_seq(&mut self, node: u16) -> Option<u64> {
        let skipped = self.lost.lock().unwrap_or_else(|e| e.into_inner()).remove(&node);
        let gw = self.gateways.get_mut(&node)?;
        gw.out_seq += 1 + skipped as u64;
        Some(gw.out_seq)
    }

    async fn publish(&self, node: u16, bytes: Vec<u8>) {
        if now_ms() >= self.deadline.load(std::sync::atomic::Ordering::Acquire) {
            // Past the lease (this process was paused?): a successor may lead; its gateways
            // must not hear this one's heartbeats or drops. The store thread exits next.
            return;
        }
        // A failed publish is a lost message: the gateway sees the gap at the next heartbeat.
        let ok = super::publish(&self.client, self.subject(node), bytes).await;
        self.metrics.published(ok);
        if !ok {
            debug!("sequencer: a message to gateway {node} is lost");
        }
    }

    async fn publish_frames(&mut self, node: u16, frames: Vec<Outgoing>) {
        if !self.gateways.contains_key(&node) {
            // Sessions of a gateway forgotten (or never heard): nobody to tell.
            return;
        }
        let mut b = Builder::default();
        let mut frames = frames.into_iter().peekable();
        while let Some(o) = frames.next() {
            let full = b.push(&OutFrame { session: o.session, replay: o.replay, frame: o.frame });
            if full || frames.peek().is_none() {
                let Some(seq) = self.next_seq(node) else { return };
                let bytes = b.finish(Header { kind: Kind::Frames, node: 0, epoch: self.epoch, seq });
                self.publish(node, bytes).await;
            }
        }
    }

    async fn beat(&mut self) {
        let silent: Vec<u16> = self.gateways.iter().filter(|(_, g)| g.heard.elapsed() > GATEWAY_SILENT).map(|(n, _)| *n).collect();
        for node in silent {
            warn!("sequencer: gateway {node} silent for {GATEWAY_SILENT:?}: closing its sessions");
            if let Some(gw) = self.gateways.remove(&node) {
                self.close(gw.sessions);
            }
        }
        self.metrics.peers.set(self.gateways.len() as i64);
        let nodes: Vec<u16> = self.gateways.keys().copied().collect();
        for node in nodes {
            let skipped = self.lost.lock().unwrap_or_else(|e| e.into_inner()).remove(&node);
            let Some(gw) = self.gateways.get_mut(&node) else { continue };
            gw.out_seq += skipped as u64;
            let h = Header { kind: Kind::Heartbeat, node: 0, epoch: self.epoch, seq: gw.out_seq };
            self.publish(node, wire::empty(h)).await;
        }
    }

    /// The sessions are gone: the core forgets them (as if their connections closed).
    fn close(&mut self, sessions: HashSet<SessionId>) {
        self.metrics.sessions_dropped.inc_by(sessions.len() as u64);
        self.to_core.extend(sessions.into_iter().map(|session| CoreMsg::Closed { session }));
    }

    /// Sends the oldest waiting input through `permit`, then as many more as fit now.
    fn feed_core(&mut self, permit: mpsc::Permit<'_, CoreMsg>) {
        if let Some(m) = self.to_core.pop_front() {
            permit.send(m);
        }
        self.feed_core_now();
    }

    /// Sends waiting inputs while the core's channel has room, in order; the rest wait.
    fn feed_core_now(&mut self) {
        while let Some(m) = self.to_core.pop_front() {
            match self.core_tx.try_send(m) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(m)) => {
                    self.to_core.push_front(m);
                    return;
                }
                // The core is gone (shutting down): nothing to feed.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.to_core.clear();
                    return;
                }
            }
        }
    }

    async fn on_gateway_message(&mut self, payload: &[u8]) {
        let (h, n, rest) = match wire::header(payload) {
            Ok(x) => x,
            Err(e) => {
                warn!("sequencer: {e}");
                return;
            }
        };
        if h.node == 0 {
            return;
        }
        let node = h.node;
        let gw = self.gateways.entry(node).or_insert_with(|| Gw {
            input: Stream::default(),
            out_seq: 0,
            heard: Instant::now(),
            sessions: HashSet::new(),
        });
        gw.heard = Instant::now();
        self.metrics.received.inc();
        match gw.input.receive(h.epoch, h.seq, h.kind != Kind::Heartbeat) {
            Seen::Next => {}
            Seen::NewEpoch => {
                self.metrics.epochs.inc();
                // A new gateway process: the old one's sessions are gone; its stream restarts.
                let old = std::mem::take(&mut gw.sessions);
                gw.out_seq = 0;
                if !old.is_empty() {
                    info!("sequencer: gateway {node} restarted: closing its {} old sessions", old.len());
                }
                self.close(old);
            }
            Seen::Gap => {
                self.metrics.gaps.inc();
                let old = std::mem::take(&mut gw.sessions);
                info!("sequencer: gap from gateway {node} (seq {}): dropping its {} sessions", h.seq, old.len());
                let mut b = Builder::default();
                for s in &old {
                    b.push(s);
                }
                self.close(old);
                if let Some(seq) = self.next_seq(node) {
                    let bytes = b.finish(Header { kind: Kind::Drop, node: 0, epoch: self.epoch, seq });
                    self.publish(node, bytes).await;
                }
            }
        }
        if h.kind != Kind::Inputs {
            return;
        }
        let inputs = match wire::items::<Input>(n, rest) {
            Ok(i) => i,
            Err(e) => {
                // Its inputs are lost: like a gap, but the gateway's stream goes on.
                warn!("sequencer: from gateway {node}: {e}");
                return;
            }
        };
        for input in inputs {
            let Some(gw) = self.gateways.get_mut(&node) else { return };
            let msg = match input {
                // A gateway names only its own sessions.
                Input::Login { session, frame } if node_of(session) == node => {
                    gw.sessions.insert(session);
                    CoreMsg::Login { session, frame, queue: None }
                }
                Input::Frames { session, frames } if gw.sessions.contains(&session) => CoreMsg::Frames { session, frames },
                Input::ReplayMore { session } if gw.sessions.contains(&session) => CoreMsg::ReplayMore { session },
                Input::Closed { session } if gw.sessions.remove(&session) => CoreMsg::Closed { session },
                _ => continue,
            };
            self.to_core.push_back(msg);
        }
    }
}
