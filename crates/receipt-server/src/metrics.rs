//! What the server counts for operators ([`Metrics`]) and whether it is ready ([`Health`]),
//! served by [`crate::http`] on the `metrics_addr` listener in the Prometheus text format
//! (docs/operations.md lists every metric and what to alert on).
//!
//! Cheap on the hot path: every labelled counter is created once at start and kept as a plain
//! atomic handle; the pipeline adds up a whole batch in local variables and touches each counter
//! at most once per batch, on the store thread (which waits on fsync, not on the CPU). Nothing
//! is counted when the listener is off (`metrics_addr` unset).
//!
//! A second backend (a scale-out store, a message bus) adds its own metrics with
//! [`Metrics::registry_mut`] before the server starts, and its own readiness checks with
//! [`Health::set_check`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use receipt_core::protocol::{ClientFrame, ServerEvent, ServerFrame};
use receipt_core::types::ReqId;

use crate::core::{Outgoing, SessionId};

/// The request kinds, as the `kind` label spells them (index = [`request_kind`]).
pub const REQUEST_KINDS: [&str; 20] = [
    "login",
    "send",
    "delivery_ack",
    "read_ack",
    "conversation_ack",
    "group_ack",
    "fetch_group_acks",
    "mark_read",
    "create_group",
    "add_members",
    "remove_members",
    "set_role",
    "leave_group",
    "sync_cursor",
    "ping",
    "renew_token",
    "fetch_group_unread",
    "fetch_group_ack_counts",
    "read_acks",
    "fetch_group_delivery_acks",
];

/// `renew_token` in [`REQUEST_KINDS`].
const KIND_RENEW_TOKEN: u8 = 15;

/// The index of a request's kind in [`REQUEST_KINDS`].
pub fn request_kind(f: &ClientFrame) -> u8 {
    use ClientFrame::*;
    match f {
        Login { .. } => 0,
        Send { .. } => 1,
        DeliveryAck { .. } => 2,
        ReadAck { .. } => 3,
        ConversationAck { .. } => 4,
        GroupAck { .. } => 5,
        FetchGroupAcks { .. } => 6,
        MarkRead { .. } => 7,
        CreateGroup { .. } => 8,
        AddMembers { .. } => 9,
        RemoveMembers { .. } => 10,
        SetRole { .. } => 11,
        LeaveGroup { .. } => 12,
        SyncCursor { .. } => 13,
        Ping { .. } => 14,
        FetchGroupUnread { .. } => 16,
        FetchGroupAckCounts { .. } => 17,
        ReadAcks { .. } => 18,
        FetchGroupDeliveryAcks { .. } => 19,
        RenewToken { .. } => KIND_RENEW_TOKEN,
    }
}

/// The receipt kinds relayed, as the `kind` label spells them.
const RECEIPT_KINDS: [&str; 5] = ["delivered", "read", "conversation_read", "group_read", "group_delivered"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    kind: &'static str,
    code: u32,
}

/// The server's metrics (see the module docs).
pub struct Metrics {
    registry: Registry,
    pub(crate) connections: Gauge,
    sessions: Gauge,
    requests: Vec<Counter>,
    refusals: Family<RefusalLabels, Counter>,
    receipts: Vec<Counter>,
    messages: Counter,
    backlog_pages: Counter,
    sync_pages: Counter,
    commits: Counter,
    commit_failures: Counter,
    commit_requests: Histogram,
    commit_seconds: Histogram,
    outbound_bytes: Gauge,
    slow_dropped: Counter,
    store_bytes: Gauge,
    cache_bytes: Gauge,
    cache_budget: Gauge,
    data_dir: Option<PathBuf>,
}

impl Metrics {
    /// Every metric registered, at zero. `data_dir`: where the store's files are (their total
    /// size is `receipt_store_bytes`); `None` for a store without files.
    pub fn new(data_dir: Option<PathBuf>) -> Metrics {
        let mut r = Registry::with_prefix("receipt");
        let connections = Gauge::default();
        r.register("connections", "Open client connections (logged in or not)", connections.clone());
        let sessions = Gauge::default();
        r.register("sessions", "Logged-in sessions receiving frames", sessions.clone());
        let by_kind = Family::<KindLabel, Counter>::default();
        r.register("requests", "Requests handled, by kind (authenticated logins included)", by_kind.clone());
        let requests = REQUEST_KINDS.iter().map(|&kind| by_kind.get_or_create(&KindLabel { kind }).clone()).collect();
        let refusals = Family::<RefusalLabels, Counter>::default();
        r.register("refusals", "Refused logins and requests, by kind and SDK error code (docs/errors.md)", refusals.clone());
        let by_receipt = Family::<KindLabel, Counter>::default();
        r.register(
            "receipts_relayed",
            "Receipts sent live to at least one device, once per receipt however many devices get it",
            by_receipt.clone(),
        );
        let receipts = RECEIPT_KINDS.iter().map(|&kind| by_receipt.get_or_create(&KindLabel { kind }).clone()).collect();
        let messages = Counter::default();
        r.register("messages_relayed", "Messages sent live to at least one device, once per message", messages.clone());
        let backlog_pages = Counter::default();
        r.register("backlog_pages", "Backlog frames (windows of missed events) sent to devices that log in", backlog_pages.clone());
        let sync_pages = Counter::default();
        r.register("sync_pages", "Unread-count pages sent at login (SyncConversations and SyncDone)", sync_pages.clone());
        let commits = Counter::default();
        r.register("commits", "Store transactions committed (each holds one or more batches)", commits.clone());
        let commit_failures = Counter::default();
        r.register("commit_failures", "Failed commits (the server then stops serving; /readyz fails)", commit_failures.clone());
        let commit_requests = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        r.register(
            "commit_requests",
            "Requests (and other core inputs) per committed transaction: the group-commit batch size",
            commit_requests.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        r.register_with_unit("commit_duration", "Time of one store commit (fsync included)", Unit::Seconds, commit_seconds.clone());
        let outbound_bytes = Gauge::default();
        r.register_with_unit(
            "outbound_queued",
            "Estimated bytes of live frames queued for all connections and not yet written (sampled each second)",
            Unit::Bytes,
            outbound_bytes.clone(),
        );
        let slow_dropped = Counter::default();
        r.register("slow_connections_dropped", "Connections dropped because their outbound queue passed its bound", slow_dropped.clone());
        let store_bytes = Gauge::default();
        r.register_with_unit("store", "Size of the store's files on disk", Unit::Bytes, store_bytes.clone());
        let cache_bytes = Gauge::default();
        r.register_with_unit(
            "cache",
            "Bytes the server's hot-state cache holds (0 while no cache reports)",
            Unit::Bytes,
            cache_bytes.clone(),
        );
        let cache_budget = Gauge::default();
        r.register_with_unit("cache_budget", "The hot-state cache's budget (0 while no cache reports)", Unit::Bytes, cache_budget.clone());
        Metrics {
            registry: r,
            connections,
            sessions,
            requests,
            refusals,
            receipts,
            messages,
            backlog_pages,
            sync_pages,
            commits,
            commit_failures,
            commit_requests,
            commit_seconds,
            outbound_bytes,
            slow_dropped,
            store_bytes,
            cache_bytes,
            cache_budget,
            data_dir,
        }
    }

    /// Where another backend registers its own metrics (before the server starts).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The hook of the server's hot-state cache: bytes held and its budget.
    pub fn set_cache_bytes(&self, used: u64, budget: u64) {
        self.cache_bytes.set(used.min(i64::MAX as u64) as i64);
        self.cache_budget.set(budget.min(i64::MAX as u64) as i64);
    }

    /// A `RenewToken`, checked by the connection (it never reaches the core).
    pub(crate) fn renewal(&self) {
        self.requests[KIND_RENEW_TOKEN as usize].inc();
    }

    /// A refusal outside the core (the connection's token and login checks).
    pub(crate) fn refused(&self, kind: &'static str, code: u32) {
        self.refusals.get_or_create(&RefusalLabels { kind, code }).inc();
    }

    /// One committed transaction of `requests` core inputs, which took `secs`.
    pub(crate) fn committed(&self, requests: usize, secs: f64) {
        self.commits.inc();
        self.commit_requests.observe(requests as f64);
        self.commit_seconds.observe(secs);
    }

    pub(crate) fn commit_failed(&self) {
        self.commit_failures.inc();
    }

    /// What the store thread samples once a second: sessions routed, bytes queued, connections
    /// dropped as too slow since the last sample.
    pub(crate) fn sample_router(&self, sessions: usize, queued_bytes: usize, dropped: u64) {
        self.sessions.set(sessions as i64);
        self.outbound_bytes.set(queued_bytes as i64);
        self.slow_dropped.inc_by(dropped);
    }

    /// Counts one committed batch: its requests (`(session, req, kind)`, in order) and what it
    /// sends (`out`, before routing).
    pub(crate) fn count_batch(&self, requests: &[(SessionId, ReqId, u8)], out: &[Outgoing]) {
        let mut by_kind = [0u64; REQUEST_KINDS.len()];
        for &(_, _, k) in requests {
            by_kind[k as usize] += 1;
        }
        for (c, n) in self.requests.iter().zip(by_kind) {
            if n > 0 {
                c.inc_by(n);
            }
        }
        let (mut receipts, mut messages, mut backlog, mut sync) = ([0u64; RECEIPT_KINDS.len()], 0u64, 0u64, 0u64);
        // One event reaches every device of its users in consecutive frames sharing it: count
        // it once.
        let mut last: *const ServerEvent = std::ptr::null();
        for o in out {
            match &*o.frame {
                ServerFrame::Event { event } => {
                    let ptr = Arc::as_ptr(&event.event);
                    if ptr == last {
                        continue;
                    }
                    last = ptr;
                    match &*event.event {
                        ServerEvent::Delivered { .. } => receipts[0] += 1,
                        ServerEvent::Read { .. } => receipts[1] += 1,
                        ServerEvent::ConversationRead { .. } => receipts[2] += 1,
                        ServerEvent::GroupRead { .. } => receipts[3] += 1,
                        ServerEvent::GroupDelivered { .. } => receipts[4] += 1,
                        ServerEvent::Message { .. } => messages += 1,
                        _ => {}
                    }
                }
                ServerFrame::Result { req, err: Some(e), .. } => {
                    // The request's kind: found among the batch's requests (refusals are rare).
                    let kind = requests
                        .iter()
                        .find(|&&(s, r, _)| s == o.session && r == *req)
                        .map_or("unknown", |&(_, _, k)| REQUEST_KINDS[k as usize]);
                    self.refused(kind, e.code.as_u32());
                }
                // The core refuses a login itself only for the device limit.
                ServerFrame::LoginFailed { error } => self.refused("login", error.code.as_u32()),
                ServerFrame::Backlog { .. } => backlog += 1,
                ServerFrame::SyncConversations { .. } | ServerFrame::SyncDone { .. } => sync += 1,
                _ => {}
            }
        }
        for (c, n) in self.receipts.iter().zip(receipts) {
            if n > 0 {
                c.inc_by(n);
            }
        }
        for (c, n) in [(&self.messages, messages), (&self.backlog_pages, backlog), (&self.sync_pages, sync)] {
            if n > 0 {
                c.inc_by(n);
            }
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric, sampled now.
    pub fn encode(&self) -> String {
        if let Some(dir) = &self.data_dir {
            self.store_bytes.set(dir_bytes(dir) as i64);
        }
        let mut s = String::with_capacity(8 << 10);
        prometheus_client::encoding::prometheus_text::encode(&mut s, &self.registry).expect("writing to a String");
        s
    }
}

/// Total size of the regular files directly in `dir` (the store keeps its files there).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
}

/// Where the server is in its life, for `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Loading the store, binding the listener.
    Starting,
    Serving,
    ShuttingDown,
}

/// Liveness and readiness: ready while serving and every check passes (the store's: its last
/// commit succeeded). Another backend adds its own checks with [`Health::set_check`].
#[derive(Default)]
pub struct Health {
    phase: AtomicU8,
    /// Failing checks: (name, why). Empty: all pass.
    failing: Mutex<Vec<(&'static str, String)>>,
}

impl Health {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::ShuttingDown,
        }
    }

    pub(crate) fn set_phase(&self, p: Phase) {
        self.phase.store(
            match p {
                Phase::Starting => 0,
                Phase::Serving => 1,
                Phase::ShuttingDown => 2,
            },
            Ordering::Release,
        );
    }

    /// Marks the check `name` passing (`Ok`) or failing with a reason.
    pub fn set_check(&self, name: &'static str, result: Result<(), String>) {
        let mut f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        f.retain(|(n, _)| *n != name);
        if let Err(why) = result {
            f.push((name, why));
        }
    }

    /// `Ok` when ready; else why not, one reason a line.
    pub fn readiness(&self) -> Result<(), String> {
        let mut why = Vec::new();
        match self.phase() {
            Phase::Serving => {}
            Phase::Starting => why.push("starting".to_string()),
            Phase::ShuttingDown => why.push("shutting down".to_string()),
        }
        why.extend(self.failing.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(n, w)| format!("{n}: {w}")));
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use receipt_core::protocol::SeqEvent;
    use receipt_core::{ChatError, ErrorCode};

    fn event(e: &Arc<ServerEvent>) -> Arc<ServerFrame> {
        Arc::new(ServerFrame::Event { event: SeqEvent { seq: 1, event: e.clone() } })
    }

    #[test]
    fn a_batch_counts_requests_receipts_once_and_refusals_by_kind_and_code() {
        let m = Metrics::new(None);
        let read = Arc::new(ServerEvent::Read { msg_id: 1, from: "a".into(), to: "b".into(), by: "b".into(), timestamp: 0 });
        let read2 = Arc::new(ServerEvent::Read { msg_id: 2, from: "a".into(), to: "b".into(), by: "b".into(), timestamp: 0 });
        let out = |session, frame| Outgoing { session, frame, replay: false };
        let refusal = Arc::new(ServerFrame::err(8, ChatError::new(ErrorCode::MessageInvalid, "x")));
        let batch = vec![
            // One receipt to two devices, then another receipt.
            out(1, event(&read)),
            out(2, event(&read)),
            out(1, event(&read2)),
            out(3, refusal),
        ];
        m.count_batch(&[(3, 7, 3), (3, 8, 2), (1, 1, 1)], &batch);
        let text = m.encode();
        assert!(text.contains("receipt_receipts_relayed_total{kind=\"read\"} 2\n"), "{text}");
        assert!(text.contains("receipt_receipts_relayed_total{kind=\"delivered\"} 0\n"), "{text}");
        assert!(text.contains("receipt_requests_total{kind=\"read_ack\"} 1\n"), "{text}");
        assert!(text.contains("receipt_requests_total{kind=\"send\"} 1\n"), "{text}");
        let code = ErrorCode::MessageInvalid.as_u32();
        assert!(text.contains(&format!("receipt_refusals_total{{kind=\"delivery_ack\",code=\"{code}\"}} 1\n")), "{text}");
        m.set_cache_bytes(5, 10);
        let text = m.encode();
        assert!(text.contains("receipt_cache_bytes 5\n") && text.contains("receipt_cache_budget_bytes 10\n"), "{text}");
    }

    #[test]
    fn every_kind_index_names_its_kind() {
        let renew = ClientFrame::RenewToken { req: 1, token: String::new() };
        assert_eq!(REQUEST_KINDS[request_kind(&renew) as usize], "renew_token");
        assert_eq!(REQUEST_KINDS[request_kind(&ClientFrame::Ping { nonce: 0 }) as usize], "ping");
        assert_eq!(REQUEST_KINDS[request_kind(&ClientFrame::SyncCursor { seq: 0 }) as usize], "sync_cursor");
        assert_eq!(REQUEST_KINDS[request_kind(&ClientFrame::ReadAck { req: 1, msg_id: 1, private: false }) as usize], "read_ack");
    }

    #[test]
    fn readiness_needs_serving_and_every_check() {
        let h = Health::default();
        assert_eq!(h.readiness(), Err("starting".into()));
        h.set_phase(Phase::Serving);
        assert_eq!(h.readiness(), Ok(()));
        h.set_check("store", Err("commit failed".into()));
        assert_eq!(h.readiness(), Err("store: commit failed".into()));
        h.set_check("store", Ok(()));
        assert_eq!(h.readiness(), Ok(()));
        h.set_phase(Phase::ShuttingDown);
        assert!(h.readiness().is_err());
    }
}
