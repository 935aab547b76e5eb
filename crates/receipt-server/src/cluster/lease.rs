//! Who may write: the [`Leadership`] seam. A sequencer commits only while it holds the lease;
//! "a sequencer that loses its lock or NATS for longer than its lease stops writing: never two
//! writers". [`StaticLeadership`] is today's static role (always held).
//!
//! With PostgreSQL: `acquire` is `SELECT pg_try_advisory_lock(<cluster key>)` on the commit
//! connection (a session lock: PostgreSQL frees it when that connection dies); `renew` is a
//! cheap query on the same connection that confirms it is alive (and NATS reachable), pushing
//! the deadline to `now + lease`. The store thread checks [`Leadership::is_held`] before each
//! commit; a successor waits one lease after acquiring before it writes, so a paused (SIGSTOP)
//! old holder whose lease ran out has stopped by then.

use std::time::Duration;

/// The lease on writing.
pub trait Leadership: Send {
    /// Tries to become the writer at `now_ms`; true if held afterwards.
    fn acquire(&mut self, now_ms: u64) -> bool;
    /// Confirms the lease at `now_ms` (the lock's connection answered), extending it.
    fn renew(&mut self, now_ms: u64);
    /// Whether this node may write at `now_ms`.
    fn is_held(&self, now_ms: u64) -> bool;
    /// When the lease ends unless renewed (ms).
    fn deadline(&self) -> u64;
}

/// The static role: the configured sequencer always holds the lease.
#[derive(Debug, Default)]
pub struct StaticLeadership;

impl Leadership for StaticLeadership {
    fn acquire(&mut self, _: u64) -> bool {
        true
    }
    fn renew(&mut self, _: u64) {}
    fn is_held(&self, _: u64) -> bool {
        true
    }
    fn deadline(&self) -> u64 {
        u64::MAX
    }
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
}
