//! A demo device: a real client runtime logged in over TCP, with bounded waits for its events.

use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

use receipt_client::{Client, ClientConfig, ClientEvent, Completion};
use receipt_core::*;

/// How long any single wait may take before the demo gives up.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Device {
    pub label: String,
    pub client: Client,
    /// Events received but not yet waited for.
    pending: RefCell<Vec<ClientEvent>>,
}

impl Device {
    pub fn new(label: &str, options: ChatOptions, port: u16, dir: &Path) -> Result<Device, String> {
        let options = ChatOptions { im_server: Some("127.0.0.1".into()), im_port: Some(port), ..options };
        let mut cfg = ClientConfig::new(options, dir.join(label.replace('/', "_")));
        cfg.device_id = Some(label.replace('/', "-"));
        let client = Client::new(cfg).map_err(|e| e.to_string())?;
        Ok(Device { label: label.to_string(), client, pending: RefCell::new(Vec::new()) })
    }

    pub fn login(&self, user: &str, token: &str) -> Result<(), String> {
        self.client.login(user, token).map_err(|e| e.to_string())?;
        self.wait("login", |e| match e {
            ClientEvent::Connected => Some(Ok(())),
            ClientEvent::LoginFailed(err) => Some(Err(err.clone())),
            _ => None,
        })?
        .map_err(|e| format!("{}: login refused: {e}", self.label))
    }

    /// Waits (bounded) for the first event `f` accepts; other events stay queued.
    pub fn wait<T>(&self, what: &str, mut f: impl FnMut(&ClientEvent) -> Option<T>) -> Result<T, String> {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let mut pending = self.pending.borrow_mut();
                if let Some(pos) = pending.iter().position(|e| f(e).is_some()) {
                    let e = pending.remove(pos);
                    return Ok(f(&e).expect("matched"));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{}: no {what} within {WAIT:?}", self.label));
            }
            if let Ok(e) = self.client.events().recv_timeout(left.min(Duration::from_millis(50))) {
                self.pending.borrow_mut().push(e);
            }
        }
    }

    /// Waits for the outcome of request `req`.
    pub fn completed(&self, req: ReqId) -> Result<Result<Completion, ChatError>, String> {
        self.wait(&format!("answer to request {req}"), |e| match e {
            ClientEvent::RequestCompleted { req: r, result } if *r == req => Some(result.clone()),
            _ => None,
        })
    }

    /// Drops queued events (after a step whose events were all shown).
    pub fn settle(&self) {
        std::thread::sleep(Duration::from_millis(50));
        while let Ok(e) = self.client.events().try_recv() {
            self.pending.borrow_mut().push(e);
        }
        self.pending.borrow_mut().clear();
    }

    /// True if no event `f` accepts arrives within `d` (for "nobody else is told").
    pub fn hears_nothing(&self, d: Duration, mut f: impl FnMut(&ClientEvent) -> bool) -> bool {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            if let Ok(e) = self.client.events().recv_timeout(Duration::from_millis(20)) {
                self.pending.borrow_mut().push(e);
            }
        }
        !self.pending.borrow().iter().any(&mut f)
    }
}
