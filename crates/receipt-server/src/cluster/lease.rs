//! Who may write: the [`Leadership`] seam. A sequencer commits only while it holds the lease;
//! "a sequencer that loses its lock or NATS for longer than its lease stops writing: never two
//! writers". [`StaticLeadership`] is the static role on redb (the store's file lock is the
//! lock); [`LockLease`] is the election on PostgreSQL.
//!
//! With PostgreSQL: [`wait_for_lock`] tries `SELECT pg_try_advisory_lock(<cluster key>)` on the
//! commit connection ([`ServerStore::try_lead`]) every third of the lease until it holds it (a
//! session lock: PostgreSQL frees it when that connection dies, ~0.1 s after a SIGKILL, and
//! ends the session when it is idle for two leases, so a SIGSTOPped holder loses it too), then
//! waits one full lease, renewing, before the node loads its state and commits. The store
//! thread renews ([`ServerStore::confirm_lead`], a `SELECT 1` on that connection) every third
//! of the lease and checks [`Leadership::is_held`] before each commit; a holder that could not
//! renew in time, or whose NATS connection was down for a lease, exits ([`LEASE_LOST_EXIT`])
//! and its supervisor starts it again as a standby.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::store::{ServerStore, StoreError};

/// The exit status of a sequencer that lost its lease (a supervisor restarts it; it then waits
/// for the lock as a standby).
pub const LEASE_LOST_EXIT: i32 = 75;

/// The lease on writing, kept by the store thread (which owns the commit connection).
pub trait Leadership: Send {
    /// Renews the lease through `store` at `now_ms` if a renewal is due (or the lease ran out).
    fn renew(&mut self, store: &mut dyn ServerStore, now_ms: u64);
    /// Whether this node may write at `now_ms`.
    fn is_held(&self, now_ms: u64) -> bool;
    /// When the lease ends unless renewed (ms).
    fn deadline(&self) -> u64;
    /// How often the store thread must renew, even while idle (`None`: never).
    fn renew_every(&self) -> Option<Duration>;
    /// The lease's length (`None`: held for ever).
    fn lease(&self) -> Option<Duration>;
    /// The deadline as the sequencer's NATS task reads it (it publishes nothing past it).
    fn shared_deadline(&self) -> Arc<AtomicU64>;
}

/// The static role: the configured sequencer always holds the lease.
#[derive(Debug, Default)]
pub struct StaticLeadership;

impl Leadership for StaticLeadership {
    fn renew(&mut self, _: &mut dyn ServerStore, _: u64) {}
    fn is_held(&self, _: u64) -> bool {
        true
    }
    fn deadline(&self) -> u64 {
        u64::MAX
    }
    fn renew_every(&self) -> Option<Duration> {
        None
    }
    fn lease(&self) -> Option<Duration> {
        None
    }
    fn shared_deadline(&self) -> Arc<AtomicU64> {
        Arc::new(AtomicU64::new(u64::MAX))
    }
}

/// The advisory lock's key of cluster `name` (FNV-1a: stable across builds and versions, so
/// every node of the cluster derives the same key).
pub fn lock_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "receipt-sequencer:".bytes().chain(name.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// A lease on a lock held by the store's commit connection (PostgreSQL), renewed every third
/// of the lease.
#[derive(Debug)]
pub struct LockLease {
    lease: Lease,
    every_ms: u64,
    last: u64,
    shared: Arc<AtomicU64>,
}

impl LockLease {
    /// A lease confirmed at `now_ms`.
    fn confirmed(lease: Duration, now_ms: u64) -> Self {
        let mut l = Lease::new(lease);
        l.confirmed(now_ms);
        let every_ms = (lease.as_millis() as u64 / 3).max(1);
        LockLease { lease: l, every_ms, last: now_ms, shared: Arc::new(AtomicU64::new(l.deadline())) }
    }
}

impl Leadership for LockLease {
    fn renew(&mut self, store: &mut dyn ServerStore, now_ms: u64) {
        if now_ms.saturating_sub(self.last) < self.every_ms && self.lease.is_held(now_ms) {
            return;
        }
        // Counted from before the round trip: the lease never outlives what PostgreSQL saw.
        match store.confirm_lead() {
            Ok(()) => {
                self.lease.confirmed(now_ms);
                self.last = now_ms;
            }
            Err(e) => {
                log::error!("sequencer lock lost: {e}");
                self.lease.lost();
            }
        }
        self.shared.store(self.lease.deadline(), Ordering::Release);
    }
    fn is_held(&self, now_ms: u64) -> bool {
        self.lease.is_held(now_ms)
    }
    fn deadline(&self) -> u64 {
        self.lease.deadline()
    }
    fn renew_every(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.every_ms))
    }
    fn lease(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.lease.lease_ms))
    }
    fn shared_deadline(&self) -> Arc<AtomicU64> {
        self.shared.clone()
    }
}

/// A standby's wait: tries the lock every third of `lease` until `store` holds it (for ever:
/// a standby waits as long as the sequencer lives), then waits one full `lease`, renewing, so
/// that a paused old holder's lease has run out before this node loads the state and commits.
/// `now_ms` is the clock (a parameter, as everywhere in the core).
pub fn wait_for_lock(store: &mut dyn ServerStore, key: i64, lease: Duration, now_ms: fn() -> u64) -> Result<LockLease, StoreError> {
    let every = (lease / 3).max(Duration::from_millis(1));
    let mut told = false;
    loop {
        match store.try_lead(key, lease) {
            Ok(true) => break,
            Ok(false) => {}
            // PostgreSQL unreachable: a standby keeps trying.
            Err(e) => log::warn!("standby: cannot try the sequencer lock: {e}"),
        }
        if !told {
            log::info!("standby: another node holds the sequencer lock; trying every {every:?}");
            told = true;
        }
        std::thread::sleep(every);
    }
    let got = now_ms();
    log::info!("took the sequencer lock; waiting one lease ({lease:?}) before the first commit");
    let mut l = LockLease::confirmed(lease, got);
    while now_ms() < got.saturating_add(lease.as_millis() as u64) {
        std::thread::sleep(every);
        l.renew(store, now_ms());
        if !l.is_held(now_ms()) {
            return Err(StoreError("lost the sequencer lock while waiting out the lease".into()));
        }
    }
    Ok(l)
}

/// The deadline arithmetic a lock-backed leadership shares: held from an acquire or renewal at
/// `t` until `t + lease`, sans-IO (time is a parameter).
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    lease_ms: u64,
    deadline: Option<u64>,
}

impl Lease {
    pub fn new(lease: Duration) -> Self {
        Lease { lease_ms: lease.as_millis() as u64, deadline: None }
    }

    /// The lock was confirmed at `now_ms`.
    pub fn confirmed(&mut self, now_ms: u64) {
        self.deadline = Some(now_ms.saturating_add(self.lease_ms));
    }

    /// The lock is gone (the connection died, or another holds it).
    pub fn lost(&mut self) {
        self.deadline = None;
    }

    pub fn is_held(&self, now_ms: u64) -> bool {
        self.deadline.is_some_and(|d| now_ms < d)
    }

    pub fn deadline(&self) -> u64 {
        self.deadline.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_not_renewed_in_time_stops_the_writer() {
        let mut l = Lease::new(Duration::from_secs(2));
        assert!(!l.is_held(0), "nothing acquired yet");
        l.confirmed(1_000);
        assert!(l.is_held(2_999));
        assert!(!l.is_held(3_000), "paused past the lease: no longer the writer");
        l.confirmed(3_500);
        assert_eq!(l.deadline(), 5_500);
        l.lost();
        assert!(!l.is_held(3_600));
        assert!(StaticLeadership.is_held(u64::MAX - 1));
    }

    #[test]
    fn every_node_of_a_cluster_derives_the_same_lock_key() {
        assert_eq!(lock_key("t"), lock_key("t"));
        assert_ne!(lock_key("t"), lock_key("u"), "clusters sharing a database do not share a lock");
    }
}
