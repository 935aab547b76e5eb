//! The pipeline behind the connections: ONE core thread that owns the state and applies
//! requests in batches, and one store thread that commits each batch (group commit) and only
//! then routes its frames.
//!
//! Pipelined group commit: while the store thread commits (and fsyncs) batch N, the core thread
//! already applies batch N+1 in memory. Nothing of a batch is sent before its commit returned,
//! and the store thread commits and routes strictly in batch order, so every `ok` and every
//! event still follows the durable commit of its effects (and of everything before them). If
//! a commit fails, the store thread stops at once: neither that batch nor any later one is
//! answered, and the core thread stops when it next hands a batch over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error};
use receipt_core::protocol::ClientFrame;
use receipt_core::types::ReqId;
use tokio::sync::mpsc;

use crate::cluster::sequencer::RemoteRouter;
use crate::connection::ConnQueue;
use crate::core::{Effects, Outgoing, ServerCore, SessionId, StoreOp};
use crate::metrics::{request_kind, Health, Metrics};
use crate::router::{Router, SessionRouter};
use crate::store::{ServerStore, COMPACT_EVERY};

/// What the connections (and the tick timer) hand to the core thread.
pub(crate) enum CoreMsg {
    /// `queue`: the connection's outbound queue; `None` for a session held by another node
    /// (cluster: its frames are published to that node).
    Login {
        session: SessionId,
        frame: ClientFrame,
        queue: Option<ConnQueue>,
    },
    /// The requests of one socket read, in order (one channel item, not one per request).
    Frames {
        session: SessionId,
        frames: Vec<ClientFrame>,
    },
    Closed {
        session: SessionId,
    },
    /// The session's connection wrote its replay window: the next one.
    ReplayMore {
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
    /// The core's number of the batch ([`Effects::batch`]): handed back once committed, it
    /// unpins what the batch changed in the core's cache.
    batch: u64,
    logins: Vec<(SessionId, ConnQueue)>,
    ops: Vec<StoreOp>,
    out: Vec<Outgoing>,
    closed: Vec<SessionId>,
    /// With metrics on: the batch's requests (session, req id, kind), counted once committed.
    requests: Vec<(SessionId, ReqId, u8)>,
}

/// Batches the core thread may hand over before it waits for the store thread.
const COMMITS_IN_FLIGHT: usize = 4;

/// A batch ends once its results reach this many bytes (see [`ServerCore::result_bytes`]): with
/// the batches in flight, what the pipeline holds stays in the tens of MiB however large the
/// pages pipelined requests ask for.
const BATCH_RESULT_BYTES: usize = 4 << 20;

/// The core thread: batches and applies; the store thread commits and routes (see the module
/// docs). `cap` bounds each connection's queue of live frames (count, estimated bytes); a
/// batch ends after `max_batch` requests. `metrics`: counted on the store thread, per batch.
/// `remote`: in a cluster, the router of the sessions other nodes hold.
#[allow(clippy::too_many_arguments)]
pub(crate) fn core_loop(
    mut core: ServerCore,
    store: Box<dyn ServerStore>,
    mut rx: mpsc::Receiver<CoreMsg>,
    cap: (usize, usize),
    max_batch: usize,
    metrics: Option<Arc<Metrics>>,
    health: Arc<Health>,
    remote: Option<RemoteRouter>,
) {
    let counting = metrics.is_some();
    // The hot-state cache's bytes, reported after each batch (two atomic stores).
    let cache_gauge = metrics.clone().zip(core.cache_budget());
    let (commit_tx, commit_rx) = std::sync::mpsc::sync_channel::<Applied>(COMMITS_IN_FLIGHT);
    // A batch's effects come back once committed and routed: the operations are dropped here,
    // on the thread that allocated them (mimalloc frees thread-locally much faster than across
    // threads), and the emptied vectors are reused for later batches.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Effects>();
    let store_thread = match std::thread::Builder::new()
        .name("receipt-core-store".into())
        .spawn(move || store_loop(store, commit_rx, done_tx, cap, metrics, health, remote))
    {
        Ok(t) => t,
        Err(e) => {
            error!("cannot start the store thread: {e}");
            return;
        }
    };
    let mut batch = Vec::with_capacity(max_batch);
    // What a batch left for the next one (it ended at BATCH_RESULT_BYTES), in order.
    let mut carry: std::collections::VecDeque<CoreMsg> = std::collections::VecDeque::new();
    // Logged-in sessions' queues: the requests of a connection dropped as too slow are not
    // applied (nobody reads their answers; its device resends what was not answered).
    let mut queues: crate::state::HashMap<SessionId, std::sync::Arc<crate::connection::OutShared>> = Default::default();
    let mut last_prune = 0u64;
    loop {
        let Some(first) = carry.pop_front().or_else(|| rx.blocking_recv()) else {
            break;
        };
        while let Ok(done) = done_rx.try_recv() {
            core.recycle(done);
        }
        if let Some((m, budget)) = &cache_gauge {
            m.set_cache_bytes(core.cache_bytes_used() as u64, *budget as u64);
        }
        // A batch ends after `max_batch` requests (or when nothing more is queued).
        let weight = |m: &CoreMsg| match m {
            CoreMsg::Frames { frames, .. } => frames.len(),
            _ => 1,
        };
        let mut requests = weight(&first);
        batch.push(first);
        while requests < max_batch.max(1) {
            match carry.pop_front().map(Ok).unwrap_or_else(|| rx.try_recv()) {
                Ok(m) => {
                    requests += weight(&m);
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        let now = now_ms();
        // Effects accumulate inside the core (in order) and are taken once per batch.
        let mut effects = Effects::default();
        let mut stop = false;
        let mut applied =
            Applied { batch: 0, logins: Vec::new(), ops: Vec::new(), out: Vec::new(), closed: Vec::new(), requests: Vec::new() };
        if counting {
            applied.requests.reserve(requests);
        }
        let mut msgs = batch.drain(..);
        while let Some(m) = msgs.next() {
            match m {
                CoreMsg::Login { session, frame, queue } => {
                    if counting {
                        applied.requests.push((session, 0, request_kind(&frame)));
                    }
                    if let Some(queue) = queue {
                        queues.insert(session, queue.shared.clone());
                        applied.logins.push((session, queue));
                    }
                    core.apply(now, session, frame);
                }
                CoreMsg::Frames { session, frames } => {
                    if queues.get(&session).is_some_and(|q| q.killed.load(std::sync::atomic::Ordering::Acquire)) {
                        continue;
                    }
                    let mut frames = frames.into_iter();
                    while let Some(frame) = frames.next() {
                        if counting {
                            applied.requests.push((session, frame.req().unwrap_or(0), request_kind(&frame)));
                        }
                        core.apply(now, session, frame);
                        // Large results (pages of group read acks) end the batch early, so the
                        // batches in flight hold a bounded number of bytes.
                        if core.result_bytes() > BATCH_RESULT_BYTES {
                            let rest: Vec<ClientFrame> = frames.by_ref().collect();
                            if !rest.is_empty() {
                                carry.push_back(CoreMsg::Frames { session, frames: rest });
                            }
                            carry.extend(msgs.by_ref());
                        }
                    }
                }
                CoreMsg::Closed { session } => {
                    queues.remove(&session);
                    core.disconnect(session);
                    applied.closed.push(session);
                }
                CoreMsg::ReplayMore { session } => core.replay_more(session),
                CoreMsg::Tick => {
                    if now.saturating_sub(last_prune) >= 1000 {
                        last_prune = now;
                        // prune() takes what accumulated so far, then its own deletions.
                        effects.append(core.prune(now));
                    }
                }
                CoreMsg::Shutdown => {
                    // Pending count updates are logged before the server stops.
                    core.flush_counts(now, true);
                    stop = true;
                }
            }
        }
        drop(msgs);
        // Coalesced count updates due by now (cheap when none is): after each batch, and on the
        // ticks while idle.
        core.flush_counts(now, false);
        let rest = core.take_effects();
        if effects.is_empty() {
            effects = rest;
        } else {
            effects.append(rest);
        }
        applied.ops = effects.ops;
        applied.out = effects.out;
        applied.batch = effects.batch;
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

fn compact(store: &mut dyn ServerStore, deleted: &mut bool, at: &mut std::time::Instant) {
    let t = std::time::Instant::now();
    match store.compact() {
        Ok(()) => log::info!("store compacted in {:?}", t.elapsed()),
        Err(e) => log::warn!("compaction failed (the space is reused later): {e}"),
    }
    *deleted = false;
    *at = std::time::Instant::now();
}

/// Renews a leased sequencer's lease when due; exits if it is not held (see [`lease_lost`]).
fn keep_lease(remote: &mut Option<RemoteRouter>, store: &mut dyn ServerStore) {
    if let Some(r) = remote {
        r.renew(store, now_ms());
        if !r.may_write(now_ms()) {
            lease_lost();
        }
    }
}

/// A leased sequencer could not confirm its lock in time: a successor may be writing already.
/// It answers nothing more and exits at once (its gateways' sessions resync with the
/// successor); a supervisor starts it again, as a standby.
fn lease_lost() -> ! {
    error!(
        "the sequencer's lease ran out (its PostgreSQL lock not confirmed, or NATS unreachable for a lease): it no longer writes; exiting with status {}",
        crate::cluster::lease::LEASE_LOST_EXIT
    );
    log::logger().flush();
    std::process::exit(crate::cluster::lease::LEASE_LOST_EXIT)
}

/// How often the store thread samples the router for the metrics (sessions, bytes queued).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The store thread: commits applied batches in order (several queued batches share one
/// transaction and one fsync), then sends their frames.
fn store_loop(
    mut store: Box<dyn ServerStore>,
    rx: std::sync::mpsc::Receiver<Applied>,
    done: std::sync::mpsc::Sender<Effects>,
    (cap, byte_cap): (usize, usize),
    metrics: Option<Arc<Metrics>>,
    health: Arc<Health>,
    mut remote: Option<RemoteRouter>,
) {
    let mut router = SessionRouter::new(cap, byte_cap);
    let mut far: Vec<Outgoing> = Vec::new();
    let mut sampled = Instant::now();
    let mut queued: Vec<Applied> = Vec::with_capacity(COMMITS_IN_FLIGHT + 1);
    // Deletions (retention) committed since the last compaction, and when that was.
    let mut deleted = false;
    let mut compacted = std::time::Instant::now();
    'run: loop {
        // A leased sequencer renews while idle too (every third of its lease).
        let first = match remote.as_ref().and_then(|r| r.renew_every()) {
            None => rx.recv().ok(),
            Some(every) => match rx.recv_timeout(every) {
                Ok(a) => Some(a),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    keep_lease(&mut remote, &mut *store);
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            },
        };
        let Some(first) = first else { break };
        queued.push(first);
        while let Ok(next) = rx.try_recv() {
            queued.push(next);
        }
        // All queued batches in one transaction, without copying their operations together.
        let failed = {
            let parts: Vec<&[StoreOp]> = queued.iter().filter(|a| !a.ops.is_empty()).map(|a| a.ops.as_slice()).collect();
            deleted |= parts.iter().flat_map(|p| p.iter()).any(|op| matches!(op, StoreOp::DeleteMessage(_) | StoreOp::TrimLog { .. }));
            // Every round, not only before commits: the core's ticks keep this loop busy
            // while idle, and the lock's session must not idle out. Nothing of these batches
            // is committed nor answered without the lease.
            keep_lease(&mut remote, &mut *store);
            if parts.is_empty() {
                None
            } else {
                let t = Instant::now();
                let r = store.commit(&parts).err();
                if let (None, Some(m)) = (&r, &metrics) {
                    // The group-commit batch: every core input of the batches this transaction holds.
                    let inputs = queued.iter().map(|a| a.requests.len() + a.closed.len()).sum();
                    m.committed(inputs, t.elapsed().as_secs_f64());
                }
                r
            }
        };
        if let Some(e) = failed {
            // Memory is now ahead of the disk: answer nothing, stop. A restart reloads the
            // last committed state and clients resend from their outboxes.
            error!("commit failed, stopping the server: {e}");
            if remote.as_ref().is_some_and(|r| r.renew_every().is_some()) {
                // A leased sequencer whose commit connection failed no longer holds the lock.
                lease_lost();
            }
            health.set_check("store", Err(format!("commit failed: {e}")));
            if let Some(m) = &metrics {
                m.commit_failed();
            }
            break 'run;
        }
        for mut a in queued.drain(..) {
            if let Some(m) = &metrics {
                m.count_batch(&a.requests, &a.out);
            }
            for (session, queue) in a.logins {
                router.attach(session, queue);
            }
            if let Some(r) = &mut remote {
                // Frames of other nodes' sessions are published to them, in the same order.
                let local = r.local_node();
                a.out.retain(|o| {
                    let here = crate::cluster::node_of(o.session) == local;
                    if !here {
                        far.push(o.clone());
                    }
                    here
                });
                r.deliver_batch(&mut far);
            }
            router.deliver_batch(&mut a.out);
            for s in a.closed {
                router.detach(s);
            }
            let _ = done.send(Effects { ops: a.ops, out: a.out, batch: a.batch });
        }
        if let Some(m) = &metrics {
            if sampled.elapsed() >= SAMPLE_EVERY {
                sampled = Instant::now();
                m.sample_router(router.len(), router.queued_bytes(), router.take_dropped());
            }
        }
        // Between commits, once this batch's frames are routed; the core thread hands over at
        // most COMMITS_IN_FLIGHT batches meanwhile: a compaction delays them, it loses none.
        if deleted && compacted.elapsed() >= COMPACT_EVERY {
            compact(&mut *store, &mut deleted, &mut compacted);
        }
    }
    router.close_all();
    if deleted {
        compact(&mut *store, &mut deleted, &mut compacted);
    }
    drop(rx);
    drop(store);
}
