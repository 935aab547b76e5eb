//! A gateway's side: its connections' inputs go to the sequencer over NATS; the committed frames
//! published for its sessions go to their connections through this node's `SessionRouter`
//! (the same slow-reader bounds as a single node). One task owns the router and both streams.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use log::{debug, info, warn};
use tokio::sync::{mpsc, oneshot, watch};

use super::metrics::ClusterMetrics;
use super::wire::{self, Builder, Header, Input, Kind, OutFrame};
use super::{Seen, Stream, HEARTBEAT, SEQUENCER_SILENT};
use crate::core::SessionId;
use crate::metrics::Metrics;
use crate::pipeline::{now_ms, CoreMsg};
use crate::router::{Router, SessionRouter};

/// Most connection inputs forwarded in one NATS message.
const INPUTS_PER_MESSAGE: usize = 512;

struct Gateway {
    client: async_nats::Client,
    seq_subject: String,
    node: u16,
    /// This process's epoch and the last sequence number it sent the sequencer.
    out: Stream,
    /// The sequencer's stream to this gateway; `None` until heard (or after it went silent).
    seq: Option<Stream>,
    heard: Instant,
    router: SessionRouter,
    /// Sessions whose login went to the sequencer and whose close did not yet: the router
    /// forgets a session on its own (a slow reader, a 206 replacement), the sequencer must not.
    live: HashSet<SessionId>,
    pending: Builder,
    ready: watch::Sender<bool>,
    metrics: GatewayMetrics,
}

/// What a gateway counts: its NATS streams, and its connections (sampled each heartbeat, as a
/// single node's store thread samples its router).
pub(crate) struct GatewayMetrics {
    pub(crate) cluster: ClusterMetrics,
    pub(crate) server: Option<Arc<Metrics>>,
}

/// Runs a gateway until `CoreMsg::Shutdown`: `rx` carries its connections' inputs (as they
/// would go to a core thread); `ready` says whether the sequencer is heard (logins are refused
/// meanwhile).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    client: async_nats::Client,
    cluster: String,
    node: u16,
    mut rx: mpsc::Receiver<CoreMsg>,
    (cap, byte_cap): (usize, usize),
    ready: watch::Sender<bool>,
    done: oneshot::Sender<()>,
    metrics: GatewayMetrics,
) {
    let mut sub = match client.subscribe(super::gw_subject(&cluster, node)).await {
        Ok(s) => s,
        Err(e) => {
            warn!("gateway {node}: cannot subscribe: {e}");
            let _ = done.send(());
            return;
        }
    };
    let mut gw = Gateway {
        client,
        seq_subject: super::seq_subject(&cluster),
        node,
        out: Stream { epoch: now_ms(), last: 0 },
        seq: None,
        heard: Instant::now(),
        router: SessionRouter::new(cap, byte_cap),
        live: HashSet::new(),
        pending: Builder::default(),
        ready,
        metrics,
    };
    let mut beat = tokio::time::interval(HEARTBEAT);
    let mut batch = Vec::with_capacity(INPUTS_PER_MESSAGE);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, INPUTS_PER_MESSAGE) => {
                if n == 0 {
                    break;
                }
                let mut stop = false;
                for m in batch.drain(..) {
                    stop |= gw.input(m).await;
                }
                gw.flush().await;
                if stop {
                    break;
                }
            }
            m = sub.next() => match m {
                Some(m) => gw.on_sequencer_message(&m.payload),
                None => break,
            },
            _ = beat.tick() => gw.beat().await,
        }
        // Sessions dropped while receiving: the sequencer hears they closed.
        gw.flush().await;
    }
    gw.router.close_all();
    gw.flush().await;
    // Best effort: NATS may be gone, and a shutdown never waits on it for long.
    let _ = tokio::time::timeout(super::HEARTBEAT, gw.client.flush()).await;
    let _ = done.send(());
}

impl Gateway {
    /// One connection input; true on shutdown.
    async fn input(&mut self, m: CoreMsg) -> bool {
        let input = match m {
            CoreMsg::Login { session, frame, queue } => {
                let Some(queue) = queue else { return false };
                if self.seq.is_none() {
                    // Closed, not refused: a client takes LoginFailed as final, while this
                    // passes once the sequencer is heard; it reconnects with its backoff.
                    debug!("gateway {}: no sequencer heard: closing session {session}", self.node);
                    queue.close();
                    return false;
                }
                self.router.attach(session, queue);
                self.live.insert(session);
                Input::Login { session, frame }
            }
            CoreMsg::Frames { session, frames } if self.live.contains(&session) => Input::Frames { session, frames },
            CoreMsg::ReplayMore { session } if self.live.contains(&session) => Input::ReplayMore { session },
            CoreMsg::Closed { session } if self.live.remove(&session) => {
                self.router.detach(session);
                Input::Closed { session }
            }
            CoreMsg::Shutdown => return true,
            // Tick, and inputs of sessions already dropped here (the sequencer was told).
            _ => return false,
        };
        if self.pending.push(&input) {
            self.flush().await;
        }
        false
    }

    /// Publishes the inputs gathered so far as one message.
    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.out.last += 1;
        let h = Header { kind: Kind::Inputs, node: self.node, epoch: self.out.epoch, seq: self.out.last };
        let bytes = self.pending.finish(h);
        // A failed publish is a lost message: the sequencer sees the gap at the next heartbeat.
        let ok = super::publish(&self.client, self.seq_subject.clone(), bytes).await;
        self.metrics.cluster.published(ok);
    }

    async fn beat(&mut self) {
        let h = Header { kind: Kind::Heartbeat, node: self.node, epoch: self.out.epoch, seq: self.out.last };
        let ok = super::publish(&self.client, self.seq_subject.clone(), wire::empty(h)).await;
        self.metrics.cluster.published(ok);
        if self.seq.is_some() && self.heard.elapsed() > SEQUENCER_SILENT {
            warn!("gateway {}: sequencer silent for {:?}: dropping every session", self.node, SEQUENCER_SILENT);
            self.drop_all();
            self.seq = None;
            let _ = self.ready.send(false);
        }
        self.metrics.cluster.peers.set(self.seq.is_some() as i64);
        if let Some(m) = &self.metrics.server {
            m.sample_router(self.router.len(), self.router.queued_bytes(), self.router.take_dropped());
        }
    }

    /// Drops every session: their connections close, their devices reconnect and resync.
    fn drop_all(&mut self) {
        for s in self.live.iter().copied().collect::<Vec<_>>() {
            self.drop_session(s);
        }
    }

    fn drop_session(&mut self, session: SessionId) {
        self.router.kill(session);
        if self.live.remove(&session) {
            self.metrics.cluster.sessions_dropped.inc();
            self.pending.push(&Input::Closed { session });
        }
    }

    fn on_sequencer_message(&mut self, payload: &[u8]) {
        let (h, n, rest) = match wire::header(payload) {
            Ok(x) => x,
            Err(e) => {
                // Its sequence number is unknown: the next message or heartbeat shows the gap.
                warn!("gateway {}: {e}", self.node);
                return;
            }
        };
        self.heard = Instant::now();
        self.metrics.cluster.received.inc();
        let stream = self.seq.get_or_insert_with(Stream::default);
        let seen = stream.receive(h.epoch, h.seq, h.kind != Kind::Heartbeat);
        match seen {
            Seen::Next => {}
            Seen::Gap => {
                self.metrics.cluster.gaps.inc();
            }
            Seen::NewEpoch => {
                self.metrics.cluster.epochs.inc();
            }
        }
        if seen != Seen::Next {
            if seen == Seen::Gap || !self.live.is_empty() {
                info!("gateway {}: {seen:?} in the sequencer's stream (seq {}): dropping every session", self.node, h.seq);
            }
            self.drop_all();
        }
        let _ = self.ready.send(true);
        match h.kind {
            Kind::Frames => match wire::items::<OutFrame>(n, rest) {
                Ok(frames) => {
                    let mut out: Vec<_> = frames
                        .into_iter()
                        .map(|f| crate::core::Outgoing { session: f.session, frame: f.frame, replay: f.replay })
                        .collect();
                    self.router.deliver_batch(&mut out);
                }
                Err(e) => {
                    warn!("gateway {}: {e}: dropping every session", self.node);
                    self.drop_all();
                }
            },
            Kind::Drop => match wire::items::<u64>(n, rest) {
                Ok(sessions) => sessions.into_iter().for_each(|s| self.drop_session(s)),
                Err(e) => {
                    warn!("gateway {}: {e}: dropping every session", self.node);
                    self.drop_all();
                }
            },
            Kind::Heartbeat | Kind::Inputs => {}
        }
    }
}
