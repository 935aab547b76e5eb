//! Several nodes over NATS (issue 13, part 2): one nats-server, a sequencer (which serves
//! clients too, with the redb store in a temp dir) and two gateways, all real child processes;
//! the devices of one user and their peers spread over different nodes. The rules hold across
//! nodes; a device moving between nodes, a SIGKILLed gateway and a restarted nats-server lose
//! nothing and duplicate nothing, and unread counts stay exact.
//!
//! The receipts and the sequencer's restart also run with the sequencer's store on PostgreSQL
//! (a database of the test kit's throwaway cluster): the shared store of several nodes.
//!
//! The election (issue 13, part 3): a sequencer and a standby on PostgreSQL ([`Elected`]); the
//! sequencer SIGKILLed under load (the standby takes over; the failover time is printed),
//! SIGSTOPped past its lease and resumed (it exits with status 75, having written nothing), and
//! PostgreSQL stopped (`-m immediate`) and started under load.
//!
//! Needs Debian's `nats-server` (RECEIPT_SKIP_NATS=1 skips, loudly, where it is missing) and, for
//! the PostgreSQL cases, PostgreSQL's binaries (RECEIPT_SKIP_PG=1).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use receipt_client::ClientEvent;
use receipt_core::*;
use receipt_testkit::{chat, group, ChildServer, Device, NatsServer};

const NO_RATE_LIMITS: &str = "[send_rate]\nper_sec = 0\nburst = 0\n\n[request_rate]\nper_sec = 0\nburst = 0\n";
/// Longest wait of a device across a fault (reconnect, resync).
const FAULT_WAIT: Duration = Duration::from_secs(20);

/// nats-server, the sequencer (node 1) and gateways 2 and 3.
struct Cluster {
    nats: NatsServer,
    seq: ChildServer,
    gw: Vec<ChildServer>,
    _data: tempfile::TempDir,
    _pg: Option<receipt_testkit::pg::PgDb>,
}

/// Where the sequencer keeps the cluster's state.
#[derive(Clone, Copy)]
enum SeqStore {
    Redb,
    Postgres,
}

/// Every node has its metrics listener (`receipt_cluster_*`: [`cluster_metric`]).
fn cluster_toml(node: u16, nats: &str, role: &str) -> String {
    format!(
        "metrics_addr = \"127.0.0.1:0\"\n{NO_RATE_LIMITS}\n[cluster]\nnode_id = {node}\nnats = \"{nats}\"\nrole = \"{role}\"\nname = \"t\"\n"
    )
}

/// `receipt_cluster_<name>` on `node`'s `/metrics` (counters with their `_total`).
fn cluster_metric(node: &ChildServer, name: &str) -> f64 {
    let addr = node.metrics_addr().expect("the node's metrics listener");
    let text = receipt_testkit::ops::scrape(addr);
    receipt_testkit::ops::sample(&text, &format!("receipt_cluster_{name}")).unwrap_or_else(|| panic!("no receipt_cluster_{name} in {text}"))
}

/// Waits (bounded) until `receipt_cluster_<name>` on `node` is `want` (gauges are sampled each
/// heartbeat); panics with the last value.
fn wait_cluster_metric(node: &ChildServer, name: &str, want: f64) {
    let deadline = Instant::now() + FAULT_WAIT;
    loop {
        let v = cluster_metric(node, name);
        if v == want {
            return;
        }
        assert!(Instant::now() < deadline, "receipt_cluster_{name} stays {v}, expected {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    fn start() -> Option<Cluster> {
        Cluster::start_on(SeqStore::Redb)
    }

    fn start_on(store: SeqStore) -> Option<Cluster> {
        let pg = match store {
            SeqStore::Redb => None,
            SeqStore::Postgres => Some(receipt_testkit::pg::database()?),
        };
        let nats = NatsServer::start()?;
        let data = tempfile::tempdir().expect("temp dir");
        let conf = cluster_toml(1, &nats.url(), "sequencer");
        let seq = match &pg {
            None => ChildServer::start(data.path(), &conf),
            Some(db) => ChildServer::start_pg(&db.conninfo, &conf),
        };
        let bin = receipt_testkit::server_binary().expect("server binary");
        // A gateway prints its address once it hears the sequencer.
        let gw = (2..=3)
            .map(|n| ChildServer::try_start(&bin, None, &cluster_toml(n, &nats.url(), "gateway")).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        Some(Cluster { nats, seq, gw, _data: data, _pg: pg })
    }

    /// Ports: the sequencer's, then the gateways'.
    fn port(&self, node: u16) -> u16 {
        match node {
            1 => self.seq.port(),
            n => self.gw[n as usize - 2].port(),
        }
    }
}

fn online(label: &str, port: u16) -> Device {
    online_with(label, ChatOptions::default(), port)
}

fn online_with(label: &str, options: ChatOptions, port: u16) -> Device {
    let d = Device::new(label, options, port).wait_limit(FAULT_WAIT);
    d.login();
    d
}

/// Collects the ids of received messages until `want` distinct ones came (or `limit` passed),
/// counting how often each came in `seen`; returns how often the device was disconnected.
fn receive_ids(d: &Device, want: usize, seen: &mut HashMap<MsgId, u32>, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut disconnects = 0;
    while seen.len() < want && Instant::now() < deadline {
        for e in d.collect(Duration::from_millis(200)) {
            match e {
                ClientEvent::MessagesReceived(m) => {
                    for m in m {
                        *seen.entry(m.id).or_default() += 1;
                    }
                }
                ClientEvent::Disconnected => disconnects += 1,
                _ => {}
            }
        }
    }
    disconnects
}

fn assert_once(seen: &HashMap<MsgId, u32>, sent: &[MsgId], who: &str) {
    let lost: Vec<&MsgId> = sent.iter().filter(|id| !seen.contains_key(id)).collect();
    let twice: Vec<(&MsgId, &u32)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(lost.is_empty(), "{who}: lost {} of {}: {lost:?}", lost.len(), sent.len());
    assert!(twice.is_empty(), "{who}: duplicated {twice:?}");
    assert_eq!(seen.len(), sent.len(), "{who}: received only what was sent");
}

#[test]
fn receipts_across_three_nodes() {
    if let Some(c) = Cluster::start() {
        receipts(&c);
    }
}

#[test]
fn receipts_across_three_nodes_with_the_sequencer_on_postgres() {
    if let Some(c) = Cluster::start_on(SeqStore::Postgres) {
        receipts(&c);
    }
}

fn receipts(c: &Cluster) {
    // alice's two devices on the two gateways, bob on the sequencer, carol on a gateway.
    let with_delivery = ChatOptions { require_delivery_ack: true, ..Default::default() };
    let alice_phone = online_with("alice/phone", with_delivery.clone(), c.port(2));
    let alice_pad = online_with("alice/pad", with_delivery, c.port(3));
    let bob = online("bob/phone", c.port(1));
    let carol = online("carol/phone", c.port(3));

    // 1:1: delivery and read receipts cross nodes, to both of alice's devices.
    let m = alice_phone.send_chat("bob", "hi");
    assert_eq!(bob.received(1)[0].id, m.id);
    bob.wait_unread(&chat("alice"), 1);
    assert_eq!(alice_phone.delivered(1)[0].id, m.id);
    bob.ack_read(m.id);
    bob.wait_unread(&chat("alice"), 0);
    assert_eq!(alice_phone.read(1)[0].id, m.id);
    assert_eq!(alice_pad.read(1)[0].id, m.id, "the sender's other device, on another gateway");

    // Conversation ack: three unread, one ack, the sender hears it.
    let ids: Vec<MsgId> = (0..3).map(|i| alice_pad.send_chat("bob", &format!("m{i}")).id).collect();
    assert_eq!(bob.received(3).iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    bob.wait_unread(&chat("alice"), 3);
    let req = bob.client.ack_conversation_read("alice").expect("ack call").expect("an ack goes out");
    bob.ok(req);
    bob.wait_unread(&chat("alice"), 0);
    assert_eq!(alice_phone.conversation_read().0, "bob");

    // Group read acks from members on two other nodes.
    let g = alice_phone.create_group(&["bob", "carol"], false);
    let gm = alice_phone.send(&g, ChatType::GroupChat, "to all", true);
    for member in [&bob, &carol] {
        member.wait_until("the group message", |d| d.client.message(&gm.id.to_string()).ok().flatten().is_some());
        member.wait_unread(&group(&g), 1);
        let req = member.client.ack_group_message_read(gm.id, None).expect("ack call").expect("an ack goes out");
        member.ok(req);
        member.wait_unread(&group(&g), 0);
    }
    let mut from: Vec<UserId> = Vec::new();
    while from.len() < 2 {
        from.extend(alice_phone.group_acks().into_iter().map(|a| a.from));
    }
    from.sort();
    assert_eq!(from, ["bob", "carol"]);
    assert_eq!(alice_pad.unread(&group(&g)), 0, "one's own message is never unread");
    assert_eq!(carol.unread(&chat("alice")), 0);

    // What the operator sees: the sequencer hears both gateways, each gateway the sequencer,
    // and nothing was lost between them.
    wait_cluster_metric(&c.seq, "peers", 2.0);
    for gw in &c.gw {
        wait_cluster_metric(gw, "peers", 1.0);
        assert_eq!(cluster_metric(gw, "gaps_total"), 0.0);
        assert_eq!(cluster_metric(gw, "sessions_dropped_total"), 0.0);
        assert!(cluster_metric(gw, "messages_published_total") > 0.0);
        assert!(cluster_metric(gw, "messages_received_total") > 0.0);
    }
    assert_eq!(cluster_metric(&c.seq, "gaps_total"), 0.0);
    assert_eq!(cluster_metric(&c.seq, "publish_queue_full_total"), 0.0);
    assert_eq!(cluster_metric(&c.seq, "publish_failures_total"), 0.0);
    assert!(cluster_metric(&c.seq, "messages_published_total") > 0.0);
}

#[test]
fn a_device_moving_to_another_node_resyncs_without_loss_or_duplicates() {
    let Some(c) = Cluster::start() else { return };
    let alice = online("alice/phone", c.port(1));
    let bob = online("bob/phone", c.port(2));
    let first = alice.send_chat("bob", "before").id;
    let mut seen = HashMap::new();
    receive_ids(&bob, 1, &mut seen, FAULT_WAIT);
    // bob's app stops and comes back on another gateway; alice sent meanwhile.
    let bob = bob.reopen(c.port(3)).wait_limit(FAULT_WAIT);
    let mut sent = vec![first];
    sent.extend((0..5).map(|i| alice.send_chat("bob", &format!("while away {i}")).id));
    bob.login();
    receive_ids(&bob, sent.len(), &mut seen, FAULT_WAIT);
    // Anything twice would arrive by now.
    receive_ids(&bob, usize::MAX, &mut seen, Duration::from_millis(500));
    assert_once(&seen, &sent, "bob");
    bob.wait_unread(&chat("alice"), sent.len() as u32);
}

/// Sends `n` messages from `label` (on `port`) to `to` on a thread of its own, each waited for
/// (its outbox resends across reconnects); returns their ids.
fn sender(label: &'static str, port: u16, to: &'static str, n: usize, pause: Duration) -> std::thread::JoinHandle<Vec<MsgId>> {
    std::thread::spawn(move || timed_sends(label, port, to, n, pause).into_iter().map(|(id, _)| id).collect())
}

/// [`sender`]'s work: the ids with when each send was answered (committed). A send refused
/// with 302 SERVER_BUSY (PostgreSQL unreachable for a store read: nothing was stored) is sent
/// again, as an app would, a bounded number of times.
fn timed_sends(label: &str, port: u16, to: &str, n: usize, pause: Duration) -> Vec<(MsgId, Instant)> {
    let d = online(label, port);
    (0..n)
        .map(|i| {
            std::thread::sleep(pause);
            for _ in 0..100 {
                match d.try_send(to, ChatType::Chat, &format!("load {i}"), false) {
                    Ok(m) => return (m.id, Instant::now()),
                    Err(e) if e.contains("ServerBusy") => std::thread::sleep(Duration::from_millis(100)),
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("{label}: send {i} refused as busy 100 times")
        })
        .collect()
}

#[test]
fn sigkill_of_a_gateway_loses_nothing_its_clients_resync_elsewhere() {
    let Some(mut c) = Cluster::start() else { return };
    const N: usize = 150;
    let carol = online("carol/phone", c.port(3));
    let alice = sender("alice/phone", c.port(2), "carol", N, Duration::from_millis(10));
    let mut seen = HashMap::new();
    receive_ids(&carol, N / 3, &mut seen, FAULT_WAIT);
    c.gw[1].kill9();
    // carol's client retries its address list: here the test points it at another node.
    let carol = carol.reopen(c.port(1)).wait_limit(FAULT_WAIT);
    carol.login();
    let sent = alice.join().expect("sender");
    receive_ids(&carol, N, &mut seen, FAULT_WAIT);
    receive_ids(&carol, usize::MAX, &mut seen, Duration::from_millis(500));
    assert_once(&seen, &sent, "carol");
    carol.wait_unread(&chat("alice"), N as u32);
}

#[test]
fn nats_restart_drops_sessions_and_they_resync_without_loss() {
    let Some(mut c) = Cluster::start() else { return };
    const N: usize = 120;
    let bob = online("bob/phone", c.port(3));
    let alice = sender("alice/phone", c.port(2), "bob", N, Duration::from_millis(10));
    let mut seen = HashMap::new();
    receive_ids(&bob, N / 3, &mut seen, FAULT_WAIT);
    // Down past SEQUENCER_SILENT (3 s): whatever the outage lost, the gateways drop their
    // sessions, and turn logins away until they hear the sequencer again.
    c.nats.stop();
    std::thread::sleep(Duration::from_secs(4));
    c.nats.start_again();
    let sent = alice.join().expect("sender");
    let mut disconnects = receive_ids(&bob, N, &mut seen, FAULT_WAIT);
    disconnects += receive_ids(&bob, usize::MAX, &mut seen, Duration::from_millis(500));
    assert_once(&seen, &sent, "bob");
    bob.wait_unread(&chat("alice"), N as u32);
    // What the outage lost showed as a gap: bob's gateway dropped his session, he resynced.
    assert!(disconnects >= 1, "bob's session was dropped and resynced");
}

/// Publishes `payload` on `subject` with the NATS text protocol over a plain socket (the test
/// plays a lost or stray message), and waits for the server's PONG: it was processed.
fn publish_raw(nats: &NatsServer, subject: &str, payload: &[u8]) {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", nats.port())).expect("connect to nats");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).expect("INFO");
    let mut msg = format!("CONNECT {{\"verbose\":false}}\r\nPUB {subject} {}\r\n", payload.len()).into_bytes();
    msg.extend_from_slice(payload);
    msg.extend_from_slice(b"\r\nPING\r\n");
    s.write_all(&msg).expect("publish");
    line.clear();
    r.read_line(&mut line).expect("PONG");
    assert_eq!(line.trim(), "PONG");
}

/// bob's session was dropped: alice sends three more; bob, back by himself, gets every message
/// of `sent` and these once, and his unread count is exact.
fn dropped_then_resynced(alice: &Device, bob: &Device, mut sent: Vec<MsgId>, seen: &mut HashMap<MsgId, u32>) {
    bob.wait_disconnected();
    sent.extend((0..3).map(|i| alice.send_chat("bob", &format!("after {i}")).id));
    receive_ids(bob, sent.len(), seen, FAULT_WAIT);
    receive_ids(bob, usize::MAX, seen, Duration::from_millis(500));
    assert_once(seen, &sent, "bob");
    bob.wait_unread(&chat("alice"), sent.len() as u32);
}

#[test]
fn a_gap_in_the_sequencers_stream_drops_the_gateways_sessions() {
    use receipt_server::cluster::wire::{empty, Header, Kind};
    let Some(c) = Cluster::start() else { return };
    let alice = online("alice/phone", c.port(1));
    let bob = online("bob/phone", c.port(2));
    let sent = vec![alice.send_chat("bob", "before").id];
    let mut seen = HashMap::new();
    assert_eq!(receive_ids(&bob, 1, &mut seen, FAULT_WAIT), 0, "no disconnect yet");
    // A heartbeat claiming messages gateway 2 never got (another epoch, seq 7): its stream
    // from the sequencer has a hole, so its sessions are unreliable and dropped.
    let epochs = cluster_metric(&c.gw[0], "epochs_total");
    let h = Header { kind: Kind::Heartbeat, node: 0, epoch: 1, seq: 7 };
    publish_raw(&c.nats, "receipt.t.gw.2.out", &empty(h));
    dropped_then_resynced(&alice, &bob, sent, &mut seen);
    // The stray epoch, then the sequencer's own again: two new epochs seen, bob's session dropped.
    assert!(cluster_metric(&c.gw[0], "epochs_total") >= epochs + 2.0);
    assert!(cluster_metric(&c.gw[0], "sessions_dropped_total") >= 1.0);
    assert_eq!(cluster_metric(&c.gw[1], "sessions_dropped_total"), 0.0, "the other gateway's stream had no hole");
}

/// The header of the next heartbeat gateway `node` sends the sequencer, read by a plain NATS
/// subscriber (bounded: a heartbeat comes every second).
fn next_gateway_heartbeat(nats: &NatsServer, node: u16) -> receipt_server::cluster::wire::Header {
    use receipt_server::cluster::wire::{header, Kind};
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", nats.port())).expect("connect to nats");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"CONNECT {\"verbose\":false}\r\nSUB receipt.t.seq.in 1\r\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for _ in 0..1000 {
        let mut line = String::new();
        r.read_line(&mut line).expect("a line from nats");
        let Some(len) = line.trim().strip_prefix("MSG receipt.t.seq.in 1 ") else { continue };
        let mut payload = vec![0; len.parse::<usize>().unwrap() + 2];
        r.read_exact(&mut payload).unwrap();
        let (h, _, _) = header(&payload[..payload.len() - 2]).expect("a message of ours");
        if h.node == node && h.kind == Kind::Heartbeat {
            return h;
        }
    }
    panic!("no heartbeat of gateway {node}");
}

#[test]
fn a_gap_in_a_gateways_stream_makes_the_sequencer_drop_its_sessions() {
    use receipt_server::cluster::wire::{empty, Header};
    let Some(c) = Cluster::start() else { return };
    let alice = online("alice/phone", c.port(1));
    let bob = online("bob/phone", c.port(3));
    let sent = vec![alice.send_chat("bob", "before").id];
    let mut seen = HashMap::new();
    assert_eq!(receive_ids(&bob, 1, &mut seen, FAULT_WAIT), 0, "no disconnect yet");
    // Gateway 3 "lost" five messages: a heartbeat of its epoch claiming seq + 5.
    let h = next_gateway_heartbeat(&c.nats, 3);
    publish_raw(&c.nats, "receipt.t.seq.in", &empty(Header { seq: h.seq + 5, ..h }));
    dropped_then_resynced(&alice, &bob, sent, &mut seen);
    // The sequencer counts the gap and the sessions it closed; gateway 3 dropped bob on its word.
    assert!(cluster_metric(&c.seq, "gaps_total") >= 1.0);
    assert!(cluster_metric(&c.seq, "sessions_dropped_total") >= 1.0);
    assert!(cluster_metric(&c.gw[1], "sessions_dropped_total") >= 1.0);
}

#[test]
fn a_restarted_sequencer_is_a_new_epoch_gateways_drop_their_sessions_and_they_resync() {
    if let Some(c) = Cluster::start() {
        sequencer_restart(c);
    }
}

#[test]
fn a_restarted_sequencer_on_postgres_loses_nothing() {
    if let Some(c) = Cluster::start_on(SeqStore::Postgres) {
        sequencer_restart(c);
    }
}

fn sequencer_restart(mut c: Cluster) {
    const N: usize = 60;
    let bob = online("bob/phone", c.port(3));
    let alice = sender("alice/phone", c.port(2), "bob", N, Duration::from_millis(10));
    let mut seen = HashMap::new();
    receive_ids(&bob, N / 3, &mut seen, FAULT_WAIT);
    // No standby yet: the sequencer is SIGKILLed and started again on its store.
    c.seq.kill9();
    c.seq.start_again();
    let sent = alice.join().expect("sender");
    let disconnects = receive_ids(&bob, N, &mut seen, FAULT_WAIT) + receive_ids(&bob, usize::MAX, &mut seen, Duration::from_millis(500));
    assert_once(&seen, &sent, "bob");
    bob.wait_unread(&chat("alice"), N as u32);
    assert!(disconnects >= 1, "bob's gateway dropped his session (a new sequencer epoch)");
}

/// The election's lease in these tests (ms): short, so that takeovers are quick.
const LEASE_MS: u64 = 1500;

/// A node with `role = "standby"` on PostgreSQL, as a child process (not a [`ChildServer`]: it
/// prints its address only once it holds the sequencer lock, and its exit status and log are
/// part of what is tested). Dropping it SIGKILLs it.
struct Candidate {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    log: std::path::PathBuf,
    /// Its metrics listener (a fixed free port: it answers while the node waits for the lock).
    metrics: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Candidate {
    fn spawn(conninfo: &str, nats: &str, node: u16) -> Candidate {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("server.toml");
        let secret = receipt_testkit::SECRET;
        let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], receipt_testkit::dead_port()));
        let text = format!(
            "addr = \"127.0.0.1:0\"\nmetrics_addr = \"{metrics}\"\nsecret = \"{secret}\"\nbackend = \"postgres\"\npg = {conninfo:?}\n{NO_RATE_LIMITS}\n\
             [group_ack]\nenabled = true\n\n[tokens]\nleeway_secs = 0\n\n\
             [cluster]\nnode_id = {node}\nnats = \"{nats}\"\nrole = \"standby\"\nname = \"t\"\n"
        );
        std::fs::write(&conf, text).expect("config");
        let log = dir.path().join("server.log");
        let mut child = std::process::Command::new(receipt_testkit::server_binary().expect("server binary"))
            .arg("serve")
            .arg("--config")
            .arg(&conf)
            // The lease from the command line (the TOML's [cluster] has none): the flag an
            // operator would pass.
            .args(["--lease-ms", &LEASE_MS.to_string()])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start receipt-server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Candidate { child, lines, log, metrics, _dir: dir }
    }

    /// Waits (at most `limit`) until it leads: its client port.
    fn wait_leading(&self, limit: Duration) -> Option<u16> {
        let line = self.lines.recv_timeout(limit).ok()?;
        line.trim().strip_prefix("listening on ")?.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: a signal to our own child, not reaped yet (the pid is still ours).
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, sig) }, 0);
    }

    /// Its exit status once it exited (waiting at most `limit`).
    fn exited(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on its metrics listener, retried (bounded) while the listener is not up yet.
    fn ops_get(&self, path: &str) -> (u16, String) {
        let deadline = Instant::now() + FAULT_WAIT;
        loop {
            match receipt_testkit::ops::http_get(self.metrics, path) {
                Ok(r) => return r,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("{path} on {}: {e}\n{}", self.metrics, self.log()),
            }
        }
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sequencer elected on PostgreSQL (node 1), a standby (node 4), gateways 2 and 3.
struct Elected {
    seq: Candidate,
    standby: Candidate,
    gw: Vec<ChildServer>,
    db: receipt_testkit::pg::PgDb,
    nats: NatsServer,
}

impl Elected {
    fn start() -> Option<Elected> {
        Elected::start_on(receipt_testkit::pg::database()?)
    }

    fn start_on(db: receipt_testkit::pg::PgDb) -> Option<Elected> {
        let nats = NatsServer::start()?;
        let seq = Candidate::spawn(&db.conninfo, &nats.url(), 1);
        assert!(seq.wait_leading(FAULT_WAIT).is_some(), "the first candidate leads: {}", seq.log());
        let lease = format!("waiting one lease ({:?})", Duration::from_millis(LEASE_MS));
        assert!(seq.log().contains(&lease), "--lease-ms {LEASE_MS} applies: {}", seq.log());
        let standby = Candidate::spawn(&db.conninfo, &nats.url(), 4);
        let bin = receipt_testkit::server_binary().expect("server binary");
        let gw = (2..=3)
            .map(|n| ChildServer::try_start(&bin, None, &cluster_toml(n, &nats.url(), "gateway")).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        Some(Elected { seq, standby, gw, db, nats })
    }

    /// Messages stored in PostgreSQL.
    fn stored_messages(&self) -> i64 {
        let mut c = postgres::Client::connect(&self.db.conninfo, postgres::NoTls).expect("connect");
        c.query_one("SELECT count(*) FROM messages", &[]).expect("count").get(0)
    }
}

#[test]
fn sigkill_of_the_elected_sequencer_under_load_the_standby_takes_over() {
    let Some(mut c) = Elected::start() else { return };
    const N: usize = 150;
    let (gw2, gw3) = (c.gw[0].port(), c.gw[1].port());
    // Two leases: the standby does not lead while the sequencer holds the lock.
    assert_eq!(
        c.standby.wait_leading(Duration::from_millis(2 * LEASE_MS)),
        None,
        "never two sequencers: {}\n---- the sequencer's log:\n{}",
        c.standby.log(),
        c.seq.log()
    );
    // A waiting standby answers its operator: alive, not ready, and why; not leading.
    assert_eq!(c.standby.ops_get("/livez").0, 200);
    let (status, why) = c.standby.ops_get("/readyz");
    assert_eq!(status, 503, "a waiting standby is not ready: {why}");
    assert!(why.contains("sequencer lock"), "{why}");
    let metrics = c.standby.ops_get("/metrics").1;
    assert_eq!(receipt_testkit::ops::sample(&metrics, "receipt_cluster_leading"), Some(0.0), "{metrics}");
    assert_eq!(receipt_testkit::ops::sample(&c.seq.ops_get("/metrics").1, "receipt_cluster_leading"), Some(1.0));
    let bob = online("bob/phone", gw3);
    let alice = std::thread::spawn(move || timed_sends("alice/phone", gw2, "bob", N, Duration::from_millis(10)));
    let mut seen = HashMap::new();
    receive_ids(&bob, N / 3, &mut seen, FAULT_WAIT);
    assert_eq!(c.seq.exited(Duration::ZERO), None, "the sequencer ran until the kill: {}", c.seq.log());
    assert_eq!(c.standby.wait_leading(Duration::ZERO), None, "never two sequencers: {}", c.standby.log());
    let _ = c.seq.child.kill();
    let killed = Instant::now();
    let _ = c.seq.child.wait();
    assert!(c.standby.wait_leading(FAULT_WAIT).is_some(), "the standby took over: {}", c.standby.log());
    let leading = killed.elapsed();
    assert_eq!(c.standby.ops_get("/readyz").0, 200, "leading, it is ready");
    assert_eq!(receipt_testkit::ops::sample(&c.standby.ops_get("/metrics").1, "receipt_cluster_leading"), Some(1.0));
    let sent = alice.join().expect("sender");
    // The first answer after the kill came through the new sequencer (the old one is gone).
    let first = sent.iter().map(|(_, t)| *t).filter(|t| *t > killed).min().expect("sends answered after the kill");
    let failover = first - killed;
    eprintln!(
        "\n===== FAILOVER (SIGKILL, lease {LEASE_MS} ms): standby leading after {leading:?}; \
         first committed answer through it {failover:?} after the kill =====\n"
    );
    let sent: Vec<MsgId> = sent.into_iter().map(|(id, _)| id).collect();
    receive_ids(&bob, N, &mut seen, FAULT_WAIT);
    receive_ids(&bob, usize::MAX, &mut seen, Duration::from_millis(500));
    assert_once(&seen, &sent, "bob");
    bob.wait_unread(&chat("alice"), N as u32);
    assert_eq!(c.stored_messages(), N as i64, "each message stored once");
    assert!(failover < FAULT_WAIT, "failover took {failover:?}");
}

#[test]
fn a_sequencer_paused_past_its_lease_never_writes_after_the_standby_took_over() {
    let Some(mut c) = Elected::start() else { return };
    const N: usize = 120;
    let (gw2, gw3) = (c.gw[0].port(), c.gw[1].port());
    let bob = online("bob/phone", gw3);
    let alice = sender("alice/phone", gw2, "bob", N, Duration::from_millis(20));
    let mut seen = HashMap::new();
    receive_ids(&bob, N / 4, &mut seen, FAULT_WAIT);
    assert_eq!(c.standby.wait_leading(Duration::ZERO), None, "never two sequencers: {}", c.standby.log());
    c.seq.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    // PostgreSQL ends the paused holder's idle session after two leases; the standby takes
    // the lock, waits a lease, and commits.
    assert!(c.standby.wait_leading(FAULT_WAIT).is_some(), "the standby took over: {}", c.standby.log());
    eprintln!("\n===== TAKEOVER (SIGSTOP, lease {LEASE_MS} ms): standby leading {:?} after the stop =====\n", stopped.elapsed());
    let before = seen.len();
    receive_ids(&bob, before + 5, &mut seen, FAULT_WAIT);
    assert!(seen.len() >= before + 5, "the new sequencer commits");
    c.seq.signal(libc::SIGCONT);
    let status = c.seq.exited(FAULT_WAIT).expect("the old sequencer exits once resumed");
    assert_eq!(status.code(), Some(receipt_server::cluster::lease::LEASE_LOST_EXIT), "{}", c.seq.log());
    assert!(c.seq.log().contains("lease ran out"), "it says why: {}", c.seq.log());
    let sent = alice.join().expect("sender");
    receive_ids(&bob, N, &mut seen, FAULT_WAIT);
    receive_ids(&bob, usize::MAX, &mut seen, Duration::from_millis(500));
    assert_once(&seen, &sent, "bob");
    bob.wait_unread(&chat("alice"), N as u32);
    assert_eq!(c.stored_messages(), N as i64, "each message stored once: the old one wrote nothing twice");
    assert!(c.standby.exited(Duration::ZERO).is_none(), "the new sequencer runs on");
}

#[test]
fn postgres_stopped_and_started_under_load_the_cluster_recovers_without_loss() {
    if receipt_testkit::pg::skip() {
        return;
    }
    // A PostgreSQL cluster of this test's own: it is stopped and started.
    let pg = receipt_testkit::pg::PgCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let Some(mut c) = Elected::start_on(pg.database()) else { return };
    const N: usize = 100;
    let (gw2, gw3) = (c.gw[0].port(), c.gw[1].port());
    let bob = online("bob/phone", gw3);
    let alice = sender("alice/phone", gw2, "bob", N, Duration::from_millis(20));
    let mut seen = HashMap::new();
    receive_ids(&bob, N / 4, &mut seen, FAULT_WAIT);
    pg.stop_immediate().unwrap();
    let stopped = Instant::now();
    // The lock went with the sequencer's commit connection: it stops writing and exits.
    let status = c.seq.exited(FAULT_WAIT).expect("the sequencer exits without its lock");
    assert_eq!(status.code(), Some(receipt_server::cluster::lease::LEASE_LOST_EXIT), "{}", c.seq.log());
    std::thread::sleep(Duration::from_millis(500));
    pg.start_again().unwrap();
    assert!(c.standby.wait_leading(FAULT_WAIT).is_some(), "the standby took over: {}", c.standby.log());
    eprintln!(
        "\n===== RECOVERY (pg_ctl stop -m immediate, started 0.5 s later): standby leading {:?} after the stop =====\n",
        stopped.elapsed()
    );
    let sent = alice.join().expect("sender");
    receive_ids(&bob, N, &mut seen, FAULT_WAIT);
    receive_ids(&bob, usize::MAX, &mut seen, Duration::from_millis(500));
    assert_once(&seen, &sent, "bob");
    bob.wait_unread(&chat("alice"), N as u32);
    assert_eq!(c.stored_messages(), N as i64, "each message stored once");
}

#[test]
fn an_elected_sequencer_cut_off_from_nats_past_its_lease_stops_and_the_standby_leads() {
    let Some(mut c) = Elected::start() else { return };
    const N: usize = 100;
    let (gw2, gw3) = (c.gw[0].port(), c.gw[1].port());
    let bob = online("bob/phone", gw3);
    let alice = sender("alice/phone", gw2, "bob", N, Duration::from_millis(20));
    let mut seen = HashMap::new();
    receive_ids(&bob, N / 4, &mut seen, FAULT_WAIT);
    // Down for two leases and more: the sequencer gives up after one.
    c.nats.stop();
    let status = c.seq.exited(FAULT_WAIT).expect("the sequencer stops without NATS");
    assert_eq!(status.code(), Some(receipt_server::cluster::lease::LEASE_LOST_EXIT), "{}", c.seq.log());
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    c.nats.start_again();
    assert!(c.standby.wait_leading(FAULT_WAIT).is_some(), "the standby took over: {}", c.standby.log());
    let sent = alice.join().expect("sender");
    receive_ids(&bob, N, &mut seen, FAULT_WAIT);
    receive_ids(&bob, usize::MAX, &mut seen, Duration::from_millis(500));
    assert_once(&seen, &sent, "bob");
    bob.wait_unread(&chat("alice"), N as u32);
    assert_eq!(c.stored_messages(), N as i64, "each message stored once");
}

/// Runs `receipt-server serve --config <toml>` expecting it to exit within 10 s: its status
/// (`None`: still running, then killed) and what it printed on stderr.
fn start_fails(toml: &str) -> (Option<std::process::ExitStatus>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (conf, log) = (dir.path().join("server.toml"), dir.path().join("stderr"));
    let secret = receipt_testkit::SECRET;
    std::fs::write(&conf, format!("addr = \"127.0.0.1:0\"\nsecret = \"{secret}\"\n{toml}")).expect("config");
    let mut child = std::process::Command::new(receipt_testkit::server_binary().expect("server binary"))
        .args(["serve", "--in-memory", "--config"])
        .arg(&conf)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start receipt-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// nats-server requiring TLS and a user with a password (as an operator would run it): nodes
/// given the CA and the credentials serve receipts across each other (the sequencer's password
/// from the environment and its user from a flag, the gateway's from its file); a node with a
/// wrong password, or without the CA, does not start and says why, at once.
#[test]
fn nodes_reach_nats_over_tls_with_a_password_and_refuse_to_start_without_them() {
    let ca = receipt_testkit::TestCa::new();
    let server_side = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\nauthorization {{\n  user: receipt\n  password: s3cret\n}}\n",
        ca.cert_path, ca.key_path
    );
    let Some(nats) = NatsServer::start_with(&server_side) else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("nats-ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).expect("CA file");
    let url = format!("tls://127.0.0.1:{}", nats.port());
    let node = |n: u16, role: &str, tls: bool, creds: &str| {
        let ca = if tls { format!("nats_ca = {:?}\n", ca_file.display().to_string()) } else { String::new() };
        format!("{NO_RATE_LIMITS}\n[cluster]\nnode_id = {n}\nnats = \"{url}\"\nrole = \"{role}\"\nname = \"t\"\n{ca}{creds}")
    };
    let bin = receipt_testkit::server_binary().expect("server binary");
    let from_env: receipt_testkit::child::ConfigureCommand = Box::new(|cmd| {
        cmd.args(["--nats-user", "receipt"]).env("RECEIPT_SERVER_NATS_PASSWORD", "s3cret");
    });
    let seq = ChildServer::try_start_with(&bin, Some(dir.path()), &node(1, "sequencer", true, ""), Some(from_env))
        .unwrap_or_else(|e| panic!("{e}"));
    let gw_creds = "nats_user = \"receipt\"\nnats_password = \"s3cret\"\n";
    let gw = ChildServer::try_start(&bin, None, &node(2, "gateway", true, gw_creds)).unwrap_or_else(|e| panic!("{e}"));
    let alice = online("alice/phone", seq.port());
    let bob = online("bob/phone", gw.port());
    let m = alice.send_chat("bob", "over TLS");
    assert_eq!(bob.received(1)[0].id, m.id);
    bob.ack_read(m.id);
    assert_eq!(alice.read(1)[0].id, m.id);

    let t = Instant::now();
    let (status, log) = start_fails(&node(3, "gateway", true, "nats_user = \"receipt\"\nnats_password = \"wrong\"\n"));
    assert!(status.is_some_and(|s| !s.success()), "a wrong password fails the start ({status:?}): {log}");
    assert!(log.contains("authorization violation"), "and says why: {log}");
    let (status, log) = start_fails(&node(3, "gateway", false, gw_creds));
    assert!(status.is_some_and(|s| !s.success()), "a server certificate it cannot verify fails the start ({status:?}): {log}");
    assert!(log.contains("TLS"), "and says why: {log}");
    assert!(t.elapsed() < Duration::from_secs(8), "at once, not after retries: {:?}", t.elapsed());
    let (status, log) = start_fails(&node(3, "gateway", true, "nats_user = \"receipt\"\n"));
    assert!(status.is_some_and(|s| !s.success()) && log.contains("go together"), "a user without a password: {log}");
}
