//! Routing committed frames to sessions: the [`Router`] seam and this node's `SessionRouter`,
//! which maps a session to its connection's outbound queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::warn;
use receipt_core::protocol::ServerFrame;

use crate::connection::{ConnQueue, OutItem};
use crate::core::{Outgoing, SessionId};
use crate::state::HashMap;

/// Routes frames to sessions: the seam between committed effects and connections. This node's
/// implementation maps a session to its connection's outbound queue; a multi-node deployment
/// (e.g. NATS between gateway nodes) forwards frames of sessions held by other nodes. (The core
/// addresses frames only to sessions logged in with it, so that also needs the core to learn of
/// remote sessions; the trait does not cover it yet.)
///
/// The contract, which the pipeline relies on:
///
/// - **Committed only.** The store thread calls the router only with frames whose batch (and
///   every batch before it) was durably committed ([`crate::ServerStore::commit`] returned).
///   A router that publishes to other nodes publishes nothing else.
/// - **Order.** Batches are handed over in commit order and each batch in the order the core
///   produced it; a session must receive its frames in that order (its `Result` before the
///   events it caused, `LoginOk` and the backlog before `SyncDone` and live events).
/// - **Slow readers.** Frames with `replay = false` count against a per-connection bound; a
///   connection over it is closed (its device resyncs from its cursor), never waited for:
///   `deliver` must not block.
/// - **Unknown sessions** (closed, or never logged in here) are ignored.
pub trait Router {
    /// Queues `frame` for `session`. `replay` frames (login answer, backlog) are exempt from the
    /// slow-reader bound. Unknown sessions are ignored.
    fn deliver(&mut self, session: SessionId, frame: Arc<ServerFrame>, replay: bool);
    /// Queues one committed batch's frames, in order, leaving `out` empty. By default one
    /// [`deliver`](Self::deliver) per frame; a router may hand each session its frames at once.
    fn deliver_batch(&mut self, out: &mut Vec<Outgoing>) {
        for o in out.drain(..) {
            self.deliver(o.session, o.frame, o.replay);
        }
    }
}

/// One session's frames of the batch being routed.
struct Staged {
    session: SessionId,
    frames: Vec<Arc<ServerFrame>>,
    /// Counted (not replay) frames and their estimated bytes.
    live: usize,
    live_bytes: usize,
    /// An `Error` among them: the session ends with it.
    ends: bool,
}

/// This node's router: session id -> outbound queue of the session's connection.
pub(crate) struct SessionRouter {
    cap: usize,
    /// The same bound in estimated encoded bytes.
    byte_cap: usize,
    conns: HashMap<SessionId, ConnQueue>,
    /// Frames of the batch being routed, per session in order (see [`SessionRouter::stage`]).
    staged: Vec<Staged>,
    staged_at: HashMap<SessionId, usize>,
    /// Connections dropped as too slow, since [`SessionRouter::take_dropped`] last read it.
    dropped: u64,
}

impl SessionRouter {
    /// A router that drops a connection once more than `cap` live frames, or more than
    /// `byte_cap` estimated bytes of them, wait in its queue.
    pub(crate) fn new(cap: usize, byte_cap: usize) -> Self {
        SessionRouter { cap, byte_cap, conns: HashMap::default(), staged: Vec::new(), staged_at: HashMap::default(), dropped: 0 }
    }

    /// A logged-in session's connection: frames for `session` go to `queue` from now on.
    pub(crate) fn attach(&mut self, session: SessionId, queue: ConnQueue) {
        self.conns.insert(session, queue);
    }

    /// The session's connection is gone: its frames are dropped from now on.
    pub(crate) fn detach(&mut self, session: SessionId) {
        self.conns.remove(&session);
    }

    /// Sessions routed to.
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Estimated bytes of live frames queued for every connection and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.conns.values().map(|q| q.shared.pending_bytes.load(Ordering::Relaxed)).sum()
    }

    /// Connections dropped as too slow since the last call.
    pub(crate) fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Drops the session's connection at once, unwritten frames and all (its device resyncs
    /// from its cursor). False if the session is not routed here.
    pub(crate) fn kill(&mut self, session: SessionId) -> bool {
        let Some(queue) = self.conns.remove(&session) else { return false };
        queue.shared.killed.store(true, Ordering::Release);
        queue.shared.closed.notify_one();
        queue.close();
        true
    }

    /// Closes every connection (shutdown).
    pub(crate) fn close_all(&mut self) {
        for (_, queue) in self.conns.drain() {
            queue.close();
        }
    }

    /// Queues `frame` for `session` in the current batch; [`Self::send_staged`] hands each
    /// session's frames to its connection in one item.
    fn stage(&mut self, session: SessionId, frame: Arc<ServerFrame>, replay: bool) {
        let i = *self.staged_at.entry(session).or_insert_with(|| {
            self.staged.push(Staged { session, frames: Vec::new(), live: 0, live_bytes: 0, ends: false });
            self.staged.len() - 1
        });
        let s = &mut self.staged[i];
        if !replay {
            s.live += 1;
            s.live_bytes += crate::size::frame_bytes(&frame);
        }
        // An Error from the core ends the session (206: a newer login replaced it).
        s.ends |= matches!(*frame, ServerFrame::Error { .. });
        s.frames.push(frame);
    }

    /// Sends the staged frames. The slow-reader bound is the per-frame one: the connection is
    /// dropped if its counted frames would pass `cap` (replay frames are exempt).
    fn send_staged(&mut self) {
        self.staged_at.clear();
        for Staged { session, frames, live, live_bytes, ends } in std::mem::take(&mut self.staged) {
            let Some(queue) = self.conns.get(&session) else {
                continue;
            };
            if live > 0 {
                if queue.shared.pending.load(Ordering::Acquire) + live > self.cap
                    || queue.shared.pending_bytes.load(Ordering::Acquire) + live_bytes > self.byte_cap
                {
                    warn!("session {session}: outbound queue full, dropping the connection (it will resync)");
                    self.kill(session);
                    self.dropped += 1;
                    continue;
                }
                queue.shared.pending.fetch_add(live, Ordering::AcqRel);
                queue.shared.pending_bytes.fetch_add(live_bytes, Ordering::AcqRel);
            }
            if queue.tx.send(OutItem::Frames(frames, live, live_bytes)).is_err() {
                self.conns.remove(&session);
            } else if ends {
                // The writer closes after the Error; wake the reader too, so a peer that neither
                // reads nor writes does not keep the connection (and its slot) until the idle
                // timeout.
                queue.close();
                queue.shared.closed.notify_one();
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

    /// The whole batch staged first: one queue item (and one writer wake-up) per session.
    fn deliver_batch(&mut self, out: &mut Vec<Outgoing>) {
        for o in out.drain(..) {
            self.stage(o.session, o.frame, o.replay);
        }
        self.send_staged();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::OutShared;
    use receipt_core::protocol::ServerFrame;
    use tokio::sync::mpsc;

    fn queue() -> (ConnQueue, mpsc::UnboundedReceiver<OutItem>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ConnQueue { tx, shared: Arc::new(OutShared::default()) }, rx)
    }

    fn out(session: SessionId, nonce: u64, replay: bool) -> Outgoing {
        Outgoing { session, frame: Arc::new(ServerFrame::Pong { nonce }), replay }
    }

    #[test]
    fn a_batch_is_one_item_per_session_and_a_connection_over_the_bound_is_dropped() {
        let mut router = SessionRouter::new(2, usize::MAX);
        let (q, mut rx) = queue();
        let shared = q.shared.clone();
        router.attach(1, q);
        // Replay frames are exempt from the bound; unknown sessions are ignored.
        let mut batch = vec![out(1, 1, true), out(9, 2, false), out(1, 3, false), out(1, 4, false)];
        router.deliver_batch(&mut batch);
        assert!(batch.is_empty());
        match rx.try_recv() {
            Ok(OutItem::Frames(frames, counted, _)) => {
                let nonces: Vec<u64> = frames
                    .iter()
                    .map(|f| match **f {
                        ServerFrame::Pong { nonce } => nonce,
                        ref other => panic!("{other:?}"),
                    })
                    .collect();
                assert_eq!((nonces, counted), (vec![1, 3, 4], 2));
            }
            _ => panic!("expected one Frames item"),
        }
        assert!(rx.try_recv().is_err(), "one item for the whole batch");
        assert_eq!(shared.pending.load(Ordering::Acquire), 2);
        // Nothing written yet: a third live frame passes the bound and drops the connection.
        router.deliver(1, Arc::new(ServerFrame::Pong { nonce: 5 }), false);
        assert!(shared.killed.load(Ordering::Acquire));
        assert!(matches!(rx.try_recv(), Ok(OutItem::Close)));
        router.deliver(1, Arc::new(ServerFrame::Pong { nonce: 6 }), true);
        assert!(rx.try_recv().is_err(), "a dropped session gets nothing more");
    }
}
