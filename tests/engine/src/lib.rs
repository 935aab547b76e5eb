//! A test harness that drives real client engines against the real server core, in the style
//! of quinn-proto's test `Pair`: everything is sans-IO, so one thread owns the whole system and
//! moves it forward in explicit steps on a simulated clock.
//!
//! A [`Cluster`] is one [`SimServer`] (the real [`receipt_server::ServerCore`] with its real
//! redb store in a temp dir) and N [`Device`]s (each a real
//! [`receipt_core::engine::ClientEngine`] over a store that plays its disk). Between them runs a
//! simulated network: one connection per online device, frames encoded by the real codec,
//! delivered in order per connection, and lost if still in flight when the connection is cut.
//!
//! - [`Cluster::now`] is the clock (ms). Every harness input advances it by 1 ms;
//!   [`Cluster::advance`] jumps it (retention, validity, keep-alive).
//! - [`Cluster::connect`] opens a connection and the engine logs in; [`Cluster::disconnect`]
//!   cuts it (frames in flight both ways are lost; both sides see the close).
//! - [`Cluster::transmit`], [`Cluster::deliver_to_server`] and [`Cluster::deliver_to_client`]
//!   move one device's frames one hop; a test that needs "the server got the ack but the answer
//!   was lost" calls them one by one, then cuts.
//! - [`Cluster::step`] is one round over every online device: it sends what the device has,
//!   the server handles it and the device reads what the server sent it. Returns whether
//!   anything moved. [`Cluster::pump`] steps until nothing moves (bounded).
//! - [`Cluster::restart`] kills a client process (its connection drops, its engine reopens from
//!   its disk); [`Cluster::restart_server`] kills the server (every connection drops, its state
//!   reloads from what it committed).
//!
//! The server side follows the server's pipeline: frames that arrive in one delivery are
//! applied as one batch, its store operations are committed in one transaction, and only then
//! are its frames sent. The connection layer's token check is not simulated (every login is
//! taken as authenticated); everything after it is the real core.
//!
//! ```no_run
//! use receipt_core::{ChatOptions, ChatType};
//! use receipt_engine_tests::Cluster;
//! let mut c = Cluster::new(&[("alice", "a1", ChatOptions::default()), ("bob", "b1", ChatOptions::default())]);
//! c.connect(0);
//! c.connect(1);
//! let now = c.now;
//! c.devices[0].engine.send_message(now, "bob", ChatType::Chat, "hi", false).unwrap();
//! c.pump();
//! ```

mod device;
mod net;
mod server;

use receipt_core::engine::{ClientEvent, Completion};
use receipt_core::protocol::{ClientFrame, Response};
use receipt_core::{ChatError, ChatOptions, GroupId, UserId};
use receipt_server::{CoreConfig, Effects, SessionId};

pub use device::{Device, DeviceStore, Disk, TEST_MESSAGE_CACHE};
pub use server::{default_config, SimServer};

use net::Conn;

/// The clock's start (ms).
pub const T0: u64 = 1_000;
/// Most rounds [`Cluster::pump`] runs before it declares the network stuck.
pub const MAX_PUMP_ROUNDS: usize = 10_000;

/// One server, N devices, the network between them and the clock. See the crate docs.
pub struct Cluster {
    pub server: SimServer,
    pub devices: Vec<Device>,
    /// Simulated time, ms.
    pub now: u64,
    next_session: SessionId,
}

impl Cluster {
    /// Devices `(user, device, options)` on [`Disk::Mem`], the [`default_config`] rules; all
    /// offline.
    pub fn new(devices: &[(&str, &str, ChatOptions)]) -> Self {
        let specs: Vec<_> = devices.iter().map(|(u, d, o)| (*u, *d, o.clone(), Disk::Mem)).collect();
        Self::build(default_config(), &specs)
    }

    /// Like [`new`](Self::new) with the server's rules and each device's disk chosen.
    pub fn build(cfg: CoreConfig, devices: &[(&str, &str, ChatOptions, Disk)]) -> Self {
        Cluster {
            server: SimServer::new(cfg),
            devices: devices.iter().map(|(u, d, o, disk)| Device::new(u, d, o.clone(), *disk)).collect(),
            now: T0,
            next_session: 1,
        }
    }

    /// The device named `name`.
    pub fn dev(&mut self, name: &str) -> &mut Device {
        let i = self.index(name);
        &mut self.devices[i]
    }

    pub fn index(&self, name: &str) -> usize {
        self.devices.iter().position(|d| d.name == name).unwrap_or_else(|| panic!("no device {name}"))
    }

    /// Moves the clock forward by `ms` (nothing else happens).
    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    fn tick(&mut self) -> u64 {
        self.now += 1;
        self.now
    }

    // ----- connections -----

    /// Device `i` gets a connection and its engine logs in (the login is sent by the next
    /// [`transmit`](Self::transmit)). No-op when it is online.
    pub fn connect(&mut self, i: usize) {
        let now = self.tick();
        if self.devices[i].online() {
            return;
        }
        let session = self.next_session;
        self.next_session += 1;
        let d = &mut self.devices[i];
        d.conn = Some(Conn::new(session));
        d.engine.handle_connected(now, "token");
        d.drain_events();
    }

    /// Cuts device `i`'s connection: frames in flight either way are lost, the server and the
    /// engine both see the close. No-op when it is offline.
    pub fn disconnect(&mut self, i: usize) {
        let now = self.tick();
        let Some(conn) = self.devices[i].conn.take() else { return };
        self.server.core().disconnect(conn.session);
        let d = &mut self.devices[i];
        d.engine.handle_disconnected(now);
        d.drain_events();
    }

    /// Kills and restarts device `i`'s app: its connection drops (the server sees the close),
    /// its engine reopens from its disk and is offline.
    pub fn restart(&mut self, i: usize) {
        self.tick();
        if let Some(conn) = self.devices[i].conn.take() {
            self.server.core().disconnect(conn.session);
        }
        let d = &mut self.devices[i];
        d.drain_events();
        d.reopen();
    }

    /// Kills and restarts the server: every connection drops (the engines see it), the core's
    /// memory is gone and its state reloads from its store. Devices stay offline until
    /// [`connect`](Self::connect)ed.
    pub fn restart_server(&mut self) {
        let now = self.tick();
        for d in &mut self.devices {
            if d.conn.take().is_some() {
                d.engine.handle_disconnected(now);
                d.drain_events();
            }
        }
        self.server.restart();
    }

    /// Frames in flight on device `i`'s connection: (to the server, to the device).
    pub fn in_flight(&self, i: usize) -> (usize, usize) {
        self.devices[i].conn.as_ref().map_or((0, 0), Conn::in_flight)
    }

    // ----- moving frames -----

    /// Device `i` puts everything it has to send on the wire. Returns how many frames.
    pub fn transmit(&mut self, i: usize) -> usize {
        let now = self.tick();
        let d = &mut self.devices[i];
        if d.conn.is_none() {
            return 0;
        }
        let mut n = 0;
        while let Some(f) = d.engine.poll_transmit(now) {
            d.note_transmit(&f);
            d.conn.as_mut().expect("online").send_up(&f);
            n += 1;
        }
        n
    }

    /// The server reads everything in flight from device `i`, applies it as one batch, commits
    /// it and sends the resulting frames. Returns how many frames it read.
    pub fn deliver_to_server(&mut self, i: usize) -> usize {
        let now = self.tick();
        let Some(conn) = self.devices[i].conn.as_mut() else { return 0 };
        let session = conn.session;
        let frames = conn.recv_up();
        let n = frames.len();
        if n == 0 {
            return 0;
        }
        for f in frames {
            self.server.core().apply(now, session, f);
        }
        let fx = self.server.core().take_effects();
        let fx = self.server.commit(fx);
        self.route(fx);
        n
    }

    /// Device `i` reads everything the server sent it. Returns how many frames.
    pub fn deliver_to_client(&mut self, i: usize) -> usize {
        let now = self.tick();
        let d = &mut self.devices[i];
        let Some(conn) = d.conn.as_mut() else { return 0 };
        let bodies = conn.recv_down();
        for body in &bodies {
            d.engine.handle_frame_bytes(now, body).expect("engine decodes server frames");
        }
        d.drain_events();
        if d.engine.is_login_refused() {
            // The server's connection layer closes after LoginFailed.
            let conn = d.conn.take().expect("online");
            self.server.core().disconnect(conn.session);
        }
        bodies.len()
    }

    /// Sends committed effects' frames to their sessions (frames for gone sessions are dropped,
    /// as the server's router does).
    fn route(&mut self, fx: Effects) {
        for o in fx.out {
            if let Some(conn) = self.devices.iter_mut().filter_map(|d| d.conn.as_mut()).find(|c| c.session == o.session) {
                conn.send_down(&o.frame);
            }
        }
    }

    /// The server's periodic retention pass (the real server runs it every second).
    pub fn prune(&mut self) {
        let now = self.now;
        let fx = self.server.core().prune(now);
        let fx = self.server.commit(fx);
        self.route(fx);
    }

    /// One round: every online device sends what it has, the server handles it, and the device
    /// reads what is queued for it; then the server prunes. Returns whether any frame moved.
    pub fn step(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.devices.len() {
            if !self.devices[i].online() {
                continue;
            }
            moved |= self.transmit(i) > 0;
            moved |= self.deliver_to_server(i) > 0;
            moved |= self.deliver_to_client(i) > 0;
        }
        self.prune();
        moved
    }

    /// Steps until nothing moves. Panics after [`MAX_PUMP_ROUNDS`] rounds.
    pub fn pump(&mut self) {
        for _ in 0..MAX_PUMP_ROUNDS {
            if !self.step() {
                return;
            }
        }
        panic!("network did not settle in {MAX_PUMP_ROUNDS} rounds");
    }

    // ----- set-up through the server's admin path -----

    /// Applies `frame` as `user` on the server without a session (an admin tool's path),
    /// commits it and routes what it sends to online devices.
    pub fn admin(&mut self, user: &str, frame: ClientFrame) -> Result<Response, ChatError> {
        let now = self.tick();
        let (res, fx) = self.server.admin(now, user, frame);
        self.route(fx);
        res
    }

    /// `owner` creates a group (or chat room) with `members`; returns its id.
    pub fn create_group(&mut self, owner: &str, members: &[&str], chat_room: bool) -> GroupId {
        let members: Vec<UserId> = members.iter().map(|m| m.to_string()).collect();
        match self.admin(owner, ClientFrame::CreateGroup { req: 0, name: "group".into(), members, chat_room }) {
            Ok(Response::GroupCreated { group }) => group,
            other => panic!("create group: {other:?}"),
        }
    }
}

/// The result of request `req` among `events`, if it completed.
pub fn completion(events: &[ClientEvent], req: u64) -> Option<&Result<Completion, ChatError>> {
    events.iter().find_map(|e| match e {
        ClientEvent::RequestCompleted { req: r, result } if *r == req => Some(result),
        _ => None,
    })
}
