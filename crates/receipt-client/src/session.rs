//! One logged-in session: the state the API and the connection thread share, and stopping it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use receipt_core::codec::encode_into;
use receipt_core::engine::{ClientEngine, ClientEvent};
use receipt_core::store::RedbStore;
use receipt_core::*;

use crate::tls::Conn;
use crate::token::{unix_ms, TokenClock};
use crate::Waker;

/// State shared by the API and the connection thread of one session.
pub(crate) struct Shared {
    pub(crate) engine: Mutex<ClientEngine<RedbStore>>,
    /// The write side of the live connection (and its TLS session), if any.
    pub(crate) conn: Mutex<Option<Conn>>,
    pub(crate) stop: AtomicBool,
    /// "Airplane mode": while false the session stays disconnected (see `set_network_enabled`).
    pub(crate) network: Arc<AtomicBool>,
    /// Wakes the connection thread out of a backoff sleep on logout.
    pub(crate) sleeper: (Mutex<()>, Condvar),
    pub(crate) started: Instant,
    /// The store was opened by an earlier session that reached the server: connection
    /// failures retry in the background instead of failing the login.
    pub(crate) offline_start: bool,
    /// Written when the server first accepts this user here (what makes the next start offline-capable).
    pub(crate) marker: PathBuf,
    pub(crate) token: Mutex<TokenClock>,
    pub(crate) events: Sender<ClientEvent>,
    pub(crate) waker: Arc<Mutex<Option<Waker>>>,
}

impl Shared {
    pub(crate) fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Writes the engine's pending frames and forwards its events. Call with the engine locked.
    pub(crate) fn pump(&self, engine: &mut ClientEngine<RedbStore>) {
        let now = self.now();
        let mut out = Vec::new();
        while let Some(frame) = engine.poll_transmit(now) {
            encode_into(&frame, &mut out);
        }
        if !out.is_empty() {
            let mut conn = self.conn.lock();
            if let Some(conn) = conn.as_mut() {
                if let Err(e) = conn.send(&out) {
                    // The reader sees the broken connection and reconnects; unconfirmed
                    // requests are still in the outbox and go again.
                    log::debug!("write failed: {e}");
                    conn.shutdown();
                }
            }
        }
        let mut any = false;
        while let Some(event) = engine.poll_event() {
            if event == ClientEvent::TokenExpired {
                // The engine's (a LoginFailed 108): once per token, with the clock's.
                let mut clock = self.token.lock();
                if clock.expired_told {
                    continue;
                }
                clock.expired_told = true;
            }
            any = true;
            let _ = self.events.send(event);
        }
        if any {
            self.wake();
        }
    }

    /// Runs the waker (events were queued).
    pub(crate) fn wake(&self) {
        let waker = self.waker.lock().clone();
        if let Some(waker) = waker {
            waker();
        }
    }

    /// Queues an event the engine did not produce, and wakes the host.
    pub(crate) fn emit(&self, event: ClientEvent) {
        let _ = self.events.send(event);
        self.wake();
    }

    /// Raises TokenWillExpire / TokenExpired once each when their time has come.
    pub(crate) fn check_token(&self) {
        let now = unix_ms();
        let mut due = Vec::new();
        {
            let mut clock = self.token.lock();
            if !clock.will_expire_told && clock.will_expire_at.is_some_and(|t| now >= t) {
                clock.will_expire_told = true;
                due.push(ClientEvent::TokenWillExpire);
            }
            if !clock.expired_told && clock.expires_at.is_some_and(|t| now >= t) {
                clock.expired_told = true;
                due.push(ClientEvent::TokenExpired);
            }
        }
        for event in due {
            log::info!("token lifecycle: {event:?}");
            self.emit(event);
        }
    }

    /// Runs the engine's timer while there is no connection: the store's checkpoint after
    /// offline acks, and the retry of a failed store write, ride on it.
    pub(crate) fn engine_timer(&self) {
        let mut engine = self.engine.lock();
        let now = self.now();
        if engine.poll_timeout().is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
            self.pump(&mut engine);
        }
    }

    pub(crate) fn note_logged_in(&self) {
        if !self.marker.exists() {
            if let Err(e) = std::fs::write(&self.marker, b"1") {
                log::warn!("cannot note the first login at {}: {e}", self.marker.display());
            }
        }
    }

    /// Sleeps `d` in short steps, raising token events on time meanwhile.
    pub(crate) fn sleep_checking(&self, d: Duration) {
        let deadline = Instant::now() + d;
        for _ in 0..10_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stop.load(Ordering::SeqCst) {
                break;
            }
            let woken = self.sleep(left.min(Duration::from_millis(250)));
            self.check_token();
            self.engine_timer();
            if woken {
                // Logout or the network coming back: act now.
                break;
            }
        }
    }

    /// Sleeps at most `d`; true when woken early (logout, network switched).
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let mut guard = self.sleeper.0.lock();
        if self.stop.load(Ordering::SeqCst) {
            return true;
        }
        !self.sleeper.1.wait_for(&mut guard, d).timed_out()
    }
}

/// The logged-in user of a [`Client`]: its state shared with the connection thread, and that
/// thread.
pub(crate) struct LoginSession {
    pub(crate) user: UserId,
    pub(crate) shared: Arc<Shared>,
    pub(crate) thread: Option<JoinHandle<()>>,
}

pub(crate) fn stop_session(mut session: LoginSession) {
    session.shared.stop.store(true, Ordering::SeqCst);
    {
        let _guard = session.shared.sleeper.0.lock();
        session.shared.sleeper.1.notify_all();
    }
    if let Some(conn) = session.shared.conn.lock().as_ref() {
        conn.shutdown();
    }
    if let Some(thread) = session.thread.take() {
        if thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }
}
