//! `receipt-cli bench`: receipts per second and latency against the real server.
//!
//! The server is embedded (its own threads, a temporary data directory, the redb store with one
//! fsync per commit; `--backend postgres`: PostgreSQL), spawned as a child process
//! (`--spawn-server`), a spawned cluster of N nodes over NATS (`--spawn-server --nodes N`,
//! [`crate::bench_cluster`]), or already running
//! (`--server 127.0.0.1:PORT[,127.0.0.1:PORT2,...] --secret S`: the connections spread over the
//! addresses, see [`Server::node_of_receiver`]). The load runs on a few threads (see
//! [`crate::bench_load`]) and stops by itself; a progress bar runs on stderr, the summary goes to
//! stdout (`--json` for machines).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use receipt_server::auth;
use receipt_testkit::{ChildServer, TestServer};
use serde_json::json;
use tokio::sync::watch;

use crate::bench_cluster::SpawnedCluster;
use crate::bench_load::{self, Conn, Progress};
use crate::bench_stats::{
    cpu_by_thread_name, cpu_by_thread_name_of, loadavg, peak_rss_kib, process_cpu, process_tree_cpu, threads_cpu, Samples,
};

/// TOML for a spawned server: no per-user rate limits (see [`Server::start`]).
const NO_RATE_LIMITS: &str = "[send_rate]\nper_sec = 0\nburst = 0\n\n[request_rate]\nper_sec = 0\nburst = 0\n";

/// The group size and read-ack member cap of a large-group bench's server.
const LARGE: usize = receipt_core::rules::MAX_MEMBER_CAP;

/// Thread-name prefixes of an embedded server (tokio workers, the runtime thread, the core).
const SERVER_THREADS: &[&str] = &["receipt-srv", "receipt-server", "receipt-core"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    OneToOne,
    Group,
    /// Group read acks in groups of up to 10,000 members: acks/s, server CPU per ack, and
    /// what the sender's device receives per message (`bench_large`).
    LargeGroup,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Workload.
    #[arg(long, value_enum, default_value = "one-to-one")]
    pub(crate) mode: Mode,
    /// 1:1: sender/receiver pairs, all connected at once.
    #[arg(long, default_value_t = 50)]
    pairs: u64,
    /// 1:1: messages per sender.
    #[arg(long, default_value_t = 2000)]
    messages: u64,
    /// 1:1: most messages per pair sent and not yet delivered.
    #[arg(long, default_value_t = 100)]
    window: u64,
    /// Group: members including the sender (at most the server's read-ack member cap, 200 by
    /// default; large-group: up to 10,000, the cap its server gets).
    #[arg(long, default_value_t = 200)]
    pub(crate) group_members: u64,
    /// Group: messages asking for group read acks.
    #[arg(long, default_value_t = 100)]
    pub(crate) group_messages: u64,
    /// Large-group: the server coalesces the acks of groups above this many members (a value
    /// of 10000 or more: never, one event per ack).
    #[arg(long, default_value_t = 100)]
    pub(crate) coalesce_above: usize,
    /// Large-group: members logged in (and acking) at a time.
    #[arg(long, default_value_t = 250)]
    pub(crate) login_batch: u64,
    /// Message content size in bytes.
    #[arg(long, default_value_t = 32)]
    pub(crate) size: usize,
    /// Target a running server instead of an embedded one; several addresses (comma-separated,
    /// a cluster's nodes): the connections spread over them, a 1:1 pair's sender and receiver
    /// mostly on different nodes.
    #[arg(long, value_delimiter = ',')]
    server: Vec<SocketAddr>,
    /// The running server's token secret.
    #[arg(long, requires = "server")]
    secret: Option<String>,
    /// The running servers' pids (comma-separated), to report each one's CPU time and peak RSS.
    #[arg(long, requires = "server", value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Run the `receipt-server` binary as a child process (durable store in a temp dir) instead
    /// of embedding the server: its CPU and RSS are then measured apart from the tool's.
    #[arg(long, conflicts_with = "server")]
    spawn_server: bool,
    /// With --spawn-server: N ≥ 2 starts a cluster instead of one server: nats-server, the
    /// sequencer (node 1, on --backend: redb in a temp dir, or PostgreSQL where it is elected
    /// with a 1.5 s lease) and N-1 gateways, every node with its metrics listener.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// The `receipt-server` binary for --spawn-server (default: next to this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Embedded/spawned server without a disk store (no fsync): to see what durability costs.
    /// Not the figure to quote.
    #[arg(long, conflicts_with = "server")]
    in_memory: bool,
    /// Threads driving the load connections.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Every connection over TLS (embedded server requiring TLS, a throwaway CA).
    #[arg(long, conflicts_with_all = ["server", "spawn_server"])]
    tls: bool,
    /// Turn on the embedded/spawned server's metrics listener (127.0.0.1, a free port, named
    /// in the summary): what counting costs (docs/benchmarks.md, "Metrics overhead").
    #[arg(long, conflicts_with = "server")]
    metrics: bool,
    /// The embedded/spawned server's store: redb in a temp dir, or PostgreSQL (`--pg`, else a
    /// throwaway cluster in a temp dir with fsync on, started and stopped by the tool).
    #[arg(long, value_enum, default_value = "redb", conflicts_with_all = ["server", "in_memory"])]
    backend: receipt_server::Backend,
    /// PostgreSQL connection string for `--backend postgres` (its schema is made if missing).
    #[arg(long, requires = "backend")]
    pg: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Where the server runs and how to measure it.
enum Target {
    Embedded(Box<TestServer>),
    Child(ChildServer),
    Cluster(Box<SpawnedCluster>),
    /// Running servers: their pids, as given.
    External(Vec<u32>),
}

/// A process whose CPU the bench reads from /proc over the measured phase.
pub(crate) struct Proc {
    /// How the report names it (`node 2 (gateway)`, `nats-server`, `PostgreSQL (all processes)`).
    pub(crate) name: String,
    pub(crate) pid: u32,
    /// Count its descendants too (PostgreSQL's backends, live or reaped).
    tree: bool,
    /// A `receipt-server` process: its CPU is the server's, its threads are listed.
    server: bool,
}

pub(crate) struct Server {
    /// Client addresses: one, or a cluster's nodes (node 1 first).
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) secret: String,
    target: Target,
    /// The child's data dir.
    _dir: Option<tempfile::TempDir>,
    /// `--tls`: how the load connects (the CA is kept alive with it).
    tls: Option<(tokio_rustls::TlsConnector, receipt_testkit::TestCa)>,
    /// `--backend postgres` without `--pg`: the throwaway cluster (stopped on drop, after the
    /// server: fields drop in order).
    _pg: Option<receipt_testkit::pg::PgCluster>,
}

/// `--backend postgres`: the connection string, and the throwaway cluster when the tool made one.
fn postgres(a: &BenchArgs) -> Result<(String, Option<receipt_testkit::pg::PgCluster>), String> {
    if let Some(pg) = &a.pg {
        return Ok((pg.clone(), None));
    }
    // fsync on: a commit costs what it costs in production (the tests' clusters skip it).
    let cluster = receipt_testkit::pg::PgCluster::start_durable()?;
    let db = cluster.database();
    Ok((db.conninfo, Some(cluster)))
}

impl Server {
    /// The per-user rate limits are off in the servers the tool starts: it measures capacity,
    /// with each sender far above a chat user's rate (a server given with --server is used
    /// as configured; turn them off there too: `send_rate` / `request_rate` `per_sec = 0`).
    fn start(a: &BenchArgs) -> Result<Server, String> {
        if !a.server.is_empty() {
            let secret = a.secret.clone().ok_or("--server needs --secret")?;
            let target = Target::External(a.server_pid.clone());
            return Ok(Server { addrs: a.server.clone(), secret, target, _dir: None, tls: None, _pg: None });
        }
        let secret = receipt_testkit::SECRET.to_string();
        let (pg, cluster_pg) = match a.backend {
            receipt_server::Backend::Postgres => {
                let (conninfo, cluster) = postgres(a)?;
                (Some(conninfo), cluster)
            }
            receipt_server::Backend::Redb => (None, None),
        };
        if a.spawn_server {
            let bin = match &a.server_bin {
                Some(b) => b.clone(),
                None => receipt_testkit::server_binary()?,
            };
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let data = (!a.in_memory).then(|| dir.path().join("server"));
            let metrics = if a.metrics { "metrics_addr = \"127.0.0.1:0\"\n" } else { "" };
            let large = match a.mode {
                Mode::LargeGroup => format!(
                    "max_group_size = {LARGE}\n{NO_RATE_LIMITS}\n[group_ack]\nenabled = true\nmember_cap = {LARGE}\ncoalesce_above = {}\n",
                    a.coalesce_above
                ),
                _ => NO_RATE_LIMITS.to_string(),
            };
            if a.nodes >= 2 {
                // Every node has its metrics listener: the commits and NATS traffic per node.
                let cluster = SpawnedCluster::start(&bin, a.nodes, pg.as_deref(), a.in_memory, &large)?;
                let addrs = cluster.addrs();
                let target = Target::Cluster(Box::new(cluster));
                return Ok(Server { addrs, secret, target, _dir: Some(dir), tls: None, _pg: cluster_pg });
            }
            let extra = format!("{metrics}{large}");
            let child = match &pg {
                Some(conninfo) => ChildServer::try_start_pg_with(&bin, conninfo, &extra)?,
                None => ChildServer::try_start(&bin, data.as_deref(), &extra)?,
            };
            return Ok(Server {
                addrs: vec![child.addr()],
                secret,
                target: Target::Child(child),
                _dir: Some(dir),
                tls: None,
                _pg: cluster_pg,
            });
        }
        let ca = if a.tls { Some(receipt_testkit::TestCa::try_new()?) } else { None };
        let srv = TestServer::try_start(|c| {
            if a.in_memory {
                c.data_dir = None;
            }
            if let Some(conninfo) = &pg {
                c.backend = receipt_server::Backend::Postgres;
                c.pg = Some(conninfo.clone());
            }
            c.send_rate = receipt_server::RateLimit::OFF;
            c.request_rate = receipt_server::RateLimit::OFF;
            if a.mode == Mode::LargeGroup {
                c.max_group_size = LARGE;
                c.group_ack.member_cap = LARGE;
                c.group_ack.coalesce_above = a.coalesce_above;
            }
            if a.metrics {
                c.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
            }
            if let Some(ca) = &ca {
                ca.configure(c, true);
            }
        })
        .map_err(|e| format!("starting the server: {e}"))?;
        let tls = match ca {
            Some(ca) => Some((crate::bench_load::tls_connector(&ca.ca_pem)?, ca)),
            None => None,
        };
        Ok(Server { addrs: vec![srv.addr()], secret, target: Target::Embedded(Box::new(srv)), _dir: None, tls, _pg: cluster_pg })
    }

    /// The node (index into `addrs`) of the connection of a 1:1 pair's sender, of a group's
    /// owner (`i` = 0) or member `i`: round-robin.
    pub(crate) fn node_of(&self, i: usize) -> usize {
        i % self.addrs.len()
    }

    /// The node of pair `i`'s receiver: `(i + i / n) mod n` with n nodes, so that every
    /// (sender node, receiver node) combination comes equally often: with 3 nodes a third of
    /// the pairs sit on one node, two thirds on two (the latency is reported for both).
    pub(crate) fn node_of_receiver(&self, i: usize) -> usize {
        let n = self.addrs.len();
        (i + i / n) % n
    }

    /// The address of node `node` (an index into `addrs`).
    pub(crate) fn addr_of(&self, node: usize) -> SocketAddr {
        self.addrs[node]
    }

    /// The single server's pid (a child, or the only pid given), for its peak RSS and disk
    /// writes; a cluster's sequencer.
    pub(crate) fn pid(&self) -> Option<String> {
        match &self.target {
            Target::Embedded(_) => None,
            Target::Child(c) => Some(c.pid().to_string()),
            Target::Cluster(c) => Some(c.nodes[0].pid().to_string()),
            Target::External(p) => p.first().map(|p| p.to_string()),
        }
    }

    /// Every process measured apart from this tool: the server processes, nats-server and the
    /// tool's own PostgreSQL.
    pub(crate) fn procs(&self) -> Vec<Proc> {
        let mut v = Vec::new();
        let node = |name: String, pid: u32| Proc { name, pid, tree: false, server: true };
        match &self.target {
            Target::Embedded(_) => {}
            Target::Child(c) => v.push(node("receipt-server".into(), c.pid())),
            Target::Cluster(c) => {
                v.extend(c.nodes.iter().enumerate().map(|(i, n)| node(c.node_name(i), n.pid())));
                if let Some(pid) = c.nats.pid() {
                    v.push(Proc { name: "nats-server".into(), pid, tree: false, server: false });
                }
            }
            // The n-th pid given is taken as the n-th address's server.
            Target::External(pids) => v.extend(pids.iter().enumerate().map(|(k, &p)| match self.addrs.get(k) {
                Some(a) => node(format!("server on {a}"), p),
                None => node(format!("server {}", k + 1), p),
            })),
        }
        if let Some(pid) = self._pg.as_ref().and_then(|pg| pg.postmaster_pid()) {
            v.push(Proc { name: "PostgreSQL (all processes)".into(), pid, tree: true, server: false });
        }
        v
    }

    /// The metrics listeners to scrape: (node name, address).
    fn metrics_addrs(&self) -> Vec<(String, SocketAddr)> {
        match &self.target {
            Target::Embedded(s) => s.metrics_addr().map(|m| ("server".to_string(), m)).into_iter().collect(),
            Target::Child(c) => c.metrics_addr().map(|m| ("receipt-server".to_string(), m)).into_iter().collect(),
            Target::Cluster(c) => c.nodes.iter().enumerate().filter_map(|(i, n)| Some((c.node_name(i), n.metrics_addr()?))).collect(),
            Target::External(_) => Vec::new(),
        }
    }

    /// (server CPU seconds: every server process summed, or an embedded server's threads;
    /// whole-process CPU seconds of this tool incl. an embedded server).
    pub(crate) fn cpu(&self) -> (Option<f64>, f64) {
        let me = process_cpu("self").unwrap_or(0.0);
        match &self.target {
            Target::Embedded(_) => (Some(threads_cpu(SERVER_THREADS)), me),
            _ => {
                let cpus: Vec<Option<f64>> = self.procs().iter().filter(|p| p.server).map(|p| process_cpu(&p.pid.to_string())).collect();
                let sum = if cpus.is_empty() { None } else { cpus.into_iter().sum::<Option<f64>>() };
                (sum, me)
            }
        }
    }

    /// Bytes the server wrote to storage so far (with an embedded server: this process's, the
    /// load tool writes nothing to disk).
    pub(crate) fn disk_written(&self) -> Option<u64> {
        match &self.target {
            Target::Embedded(_) => crate::bench_stats::disk_written("self"),
            _ => self.pid().and_then(|p| crate::bench_stats::disk_written(&p)),
        }
    }

    /// Peak RSS of the server (a cluster's or several servers': their sum).
    fn peak_rss_kib(&self) -> Option<u64> {
        match &self.target {
            Target::Embedded(_) => peak_rss_kib("self"),
            _ => self.procs().iter().filter(|p| p.server).map(|p| peak_rss_kib(&p.pid.to_string())).sum(),
        }
    }

    pub(crate) fn connector(&self) -> Option<tokio_rustls::TlsConnector> {
        self.tls.as_ref().map(|(connector, _)| connector.clone())
    }

    fn describe(&self, in_memory: bool, backend: receipt_server::Backend) -> String {
        let store = match (in_memory, backend) {
            (true, _) => "in-memory store, no fsync",
            (false, receipt_server::Backend::Redb) => "redb store, fsync per commit",
            (false, receipt_server::Backend::Postgres) => "PostgreSQL store, synchronous commit (its WAL flushed per commit)",
        };
        let metrics = match &self.target {
            Target::Embedded(s) => s.metrics_addr(),
            Target::Child(c) => c.metrics_addr(),
            Target::Cluster(_) | Target::External(_) => None,
        };
        let store = match metrics {
            Some(m) => format!("{store}, metrics on {m}"),
            None => store.to_string(),
        };
        match &self.target {
            Target::Embedded(_) => {
                let tls = if self.tls.is_some() { ", TLS" } else { "" };
                format!("embedded server on {} ({store}{tls})", self.addrs[0])
            }
            Target::Child(c) => format!("receipt-server child pid {} on {} ({store})", c.pid(), self.addrs[0]),
            Target::Cluster(c) => {
                let nodes: Vec<String> =
                    (0..c.nodes.len()).map(|i| format!("{} pid {} on {}", c.node_name(i), c.nodes[i].pid(), self.addrs[i])).collect();
                let store = if in_memory { "no store" } else { store.as_str() };
                format!(
                    "cluster of {} nodes over nats-server {} (the sequencer's {store}): {}",
                    c.nodes.len(),
                    c.nats.url(),
                    nodes.join("; ")
                )
            }
            Target::External(_) => {
                let a: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
                format!("running server on {}", a.join(", "))
            }
        }
    }

    fn stop(self) {
        match self.target {
            Target::Embedded(mut srv) => srv.stop(),
            // SIGTERM for a clean shutdown; SIGKILL if it lingers.
            Target::Child(mut c) => c.stop(),
            Target::Cluster(c) => c.stop(),
            Target::External(_) => {}
        }
    }
}

/// Threads by CPU seconds spent between two readings of [`cpu_by_thread_name_of`], busiest
/// first.
fn thread_deltas(before: &std::collections::BTreeMap<String, f64>, after: std::collections::BTreeMap<String, f64>) -> Vec<(String, f64)> {
    let mut threads: Vec<(String, f64)> = after
        .into_iter()
        .map(|(n, c)| {
            let d = c - before.get(&n).copied().unwrap_or(0.0);
            (n, d)
        })
        .filter(|(_, c)| *c > 0.0)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    threads
}

/// One process's CPU over a measured phase.
struct ProcCpu {
    name: String,
    pid: u32,
    cpu: f64,
    /// A server process's threads (core, store, I/O...), busiest first.
    threads: Vec<(String, f64)>,
}

/// What a node's `/metrics` counted over a measured phase.
struct NodeCounters {
    name: String,
    /// Store transactions, the core inputs they held, and the seconds spent committing.
    commits: f64,
    requests: f64,
    commit_secs: f64,
    /// NATS messages this node published and received (`receipt_cluster_*`).
    published: f64,
    received: f64,
}

/// The series [`NodeCounters`] is made of, in its field order.
const COUNTER_SERIES: [&str; 5] = [
    "receipt_commits_total",
    "receipt_commit_requests_sum",
    "receipt_commit_duration_seconds_sum",
    "receipt_cluster_messages_published_total",
    "receipt_cluster_messages_received_total",
];

/// The [`COUNTER_SERIES`] on the metrics listener `addr` (a series it lacks: 0; a single
/// node has no `receipt_cluster_*`). `None` if it does not answer.
fn scrape_counters(addr: SocketAddr) -> Option<[f64; 5]> {
    let (status, text) = receipt_testkit::ops::http_get(addr, "/metrics").ok()?;
    (status == 200).then(|| COUNTER_SERIES.map(|s| receipt_testkit::ops::sample(&text, s).unwrap_or(0.0)))
}

/// CPU split of a measured phase.
struct Cpu {
    wall: f64,
    server: Option<f64>,
    tool: f64,
    /// CPU seconds per thread name of this process during the phase.
    threads: Vec<(String, f64)>,
    /// Every process measured apart (server nodes, nats-server, PostgreSQL).
    procs: Vec<ProcCpu>,
    /// Every metrics listener's counters.
    nodes: Vec<NodeCounters>,
    /// 1-minute load average before and after (other work on the machine shows here).
    load: (Option<f64>, Option<f64>),
}

impl Cpu {
    fn measure(srv: &Server, f: impl FnOnce() -> Result<(), String>) -> Result<Cpu, String> {
        let load0 = loadavg();
        let procs = srv.procs();
        let metrics = srv.metrics_addrs();
        let m0: Vec<Option<[f64; 5]>> = metrics.iter().map(|(_, a)| scrape_counters(*a)).collect();
        let pcpu = |p: &Proc| if p.tree { process_tree_cpu(p.pid) } else { process_cpu(&p.pid.to_string()) }.unwrap_or(0.0);
        let pth = |p: &Proc| if p.server { cpu_by_thread_name_of(&p.pid.to_string()) } else { Default::default() };
        let pc0: Vec<(f64, std::collections::BTreeMap<String, f64>)> = procs.iter().map(|p| (pcpu(p), pth(p))).collect();
        let th0 = cpu_by_thread_name();
        let (s0, p0) = srv.cpu();
        let t = Instant::now();
        f()?;
        let wall = t.elapsed().as_secs_f64();
        let (s1, p1) = srv.cpu();
        let threads = thread_deltas(&th0, cpu_by_thread_name());
        let procs = procs
            .iter()
            .zip(pc0)
            .map(|(p, (c0, t0))| ProcCpu { name: p.name.clone(), pid: p.pid, cpu: pcpu(p) - c0, threads: thread_deltas(&t0, pth(p)) })
            .collect();
        let nodes = metrics
            .iter()
            .zip(m0)
            .filter_map(|((name, a), m0)| {
                let (m0, m1) = (m0?, scrape_counters(*a)?);
                let d = |i: usize| m1[i] - m0[i];
                Some(NodeCounters { name: name.clone(), commits: d(0), requests: d(1), commit_secs: d(2), published: d(3), received: d(4) })
            })
            .collect();
        let server = s0.zip(s1).map(|(a, b)| b - a);
        let tool = match srv.target {
            Target::Embedded(_) => (p1 - p0) - server.unwrap_or(0.0),
            _ => p1 - p0,
        };
        Ok(Cpu { wall, server, tool, threads, procs, nodes, load: (load0, loadavg()) })
    }

    /// Per process: CPU seconds, cores, µs per unit of work (`units`: messages, receipts or
    /// acks, named by `per`), its busiest threads; and per node: its commits and NATS traffic.
    fn json_by_process(&self, units: u64, per: &str) -> serde_json::Value {
        let u = units.max(1) as f64;
        let procs: Vec<serde_json::Value> = self
            .procs
            .iter()
            .map(|p| {
                json!({
                    "name": p.name, "pid": p.pid, "cpu_s": p.cpu, "cores": p.cpu / self.wall,
                    format!("cpu_us_per_{per}"): p.cpu * 1e6 / u,
                    "threads_cpu_s": p.threads.iter().take(8).map(|(n, c)| (n.clone(), json!(c))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        let all = self.procs.iter().map(|p| p.cpu).sum::<f64>()
            + self.tool
            + if self.procs.is_empty() { self.server.unwrap_or(0.0) } else { 0.0 };
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "name": n.name,
                    "commits": n.commits,
                    "requests_per_commit": (n.commits > 0.0).then(|| n.requests / n.commits),
                    "commit_ms_mean": (n.commits > 0.0).then(|| n.commit_secs * 1000.0 / n.commits),
                    "commit_s": n.commit_secs,
                    "commit_share_of_wall": n.commit_secs / self.wall,
                    "nats_published": n.published,
                    "nats_received": n.received,
                })
            })
            .collect();
        json!({ "processes": procs, format!("all_cpu_us_per_{per}"): all * 1e6 / u, "nodes_metrics": nodes })
    }

    /// The human lines of [`Cpu::json_by_process`] (empty when nothing was measured apart).
    fn human_by_process(&self, units: u64, per: &str) -> String {
        let u = units.max(1) as f64;
        let mut out = String::new();
        for p in &self.procs {
            let th: Vec<String> = p.threads.iter().take(4).map(|(n, c)| format!("{n} {c:.2}s")).collect();
            let th = if th.is_empty() { String::new() } else { format!(" [{}]", th.join(", ")) };
            out += &format!(
                "\n  {} (pid {}): {:.2} s CPU ({:.2} cores), {:.1} µs per {per}{th}",
                p.name,
                p.pid,
                p.cpu,
                p.cpu / self.wall,
                p.cpu * 1e6 / u
            );
        }
        for n in self.nodes.iter().filter(|n| n.commits > 0.0 || n.published > 0.0 || n.received > 0.0) {
            let commits = if n.commits > 0.0 {
                format!(
                    "{:.0} commits, {:.0} requests per commit, {:.1} ms per commit, {:.2} s committing ({:.0}% of the run)",
                    n.commits,
                    n.requests / n.commits,
                    n.commit_secs * 1000.0 / n.commits,
                    n.commit_secs,
                    100.0 * n.commit_secs / self.wall
                )
            } else {
                "no commits".to_string()
            };
            out += &format!("\n  {}: {commits}; NATS published {:.0}, received {:.0}", n.name, n.published, n.received);
        }
        if out.is_empty() {
            return out;
        }
        format!("\nby process and node:{out}")
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "wall_s": self.wall,
            "server_cpu_s": self.server,
            "server_cores": self.server.map(|s| s / self.wall),
            "tool_cpu_s": self.tool,
            "tool_cores": self.tool / self.wall,
            "tool_share": self.server.map(|s| self.tool / (self.tool + s).max(1e-9)),
            "threads_cpu_s": self.threads.iter().map(|(n, c)| (n.clone(), json!(c))).collect::<serde_json::Map<_, _>>(),
            "loadavg_1m_before": self.load.0,
            "loadavg_1m_after": self.load.1,
        })
    }

    /// CPU microseconds per unit of work (server, tool).
    fn per(&self, units: u64) -> (Option<f64>, f64) {
        let u = units.max(1) as f64;
        (self.server.map(|s| s * 1e6 / u), self.tool * 1e6 / u)
    }

    fn threads_line(&self) -> String {
        let t: Vec<String> = self.threads.iter().take(6).map(|(n, c)| format!("{n} {c:.2}s")).collect();
        format!("CPU by thread: {}; load average {:.1} -> {:.1}", t.join(", "), self.load.0.unwrap_or(0.0), self.load.1.unwrap_or(0.0))
    }

    fn human(&self) -> String {
        let tool = format!("load tool {:.2} s CPU ({:.2} cores)", self.tool, self.tool / self.wall);
        match self.server {
            Some(s) => format!(
                "server {:.2} s CPU ({:.2} cores), {tool}; the tool's share {:.0}%",
                s,
                s / self.wall,
                100.0 * self.tool / (self.tool + s).max(1e-9)
            ),
            None => format!("server CPU unknown (pass --server-pid), {tool}"),
        }
    }
}

fn progress_bar(total: u64, what: &'static str, p: Arc<Progress>) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::Builder::new()
        .name("bench-progress".into())
        .spawn(move || {
            let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
            bar.set_style(
                indicatif::ProgressStyle::with_template(&format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{per_sec}})"))
                    .expect("template")
                    .progress_chars("=> "),
            );
            while !s.load(Ordering::Relaxed) {
                bar.set_position(p.receipts.load(Ordering::Relaxed));
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.set_position(p.receipts.load(Ordering::Relaxed));
            bar.finish_and_clear();
        })
        .expect("progress thread");
    (stop, h)
}

/// Runs `n` futures concurrently on the runtime and collects their results in order.
pub(crate) async fn all<T: Send + 'static>(
    futs: Vec<impl std::future::Future<Output = Result<T, String>> + Send + 'static>,
) -> Result<Vec<T>, String> {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for h in handles {
        match h.await {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(e.to_string());
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

pub(crate) fn content(size: usize) -> String {
    "receipt bench payload 0123456789".chars().cycle().take(size.max(1)).collect()
}

pub(crate) fn run_prefix() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("b{:06x}", n as u64 & 0xff_ffff)
}

pub fn run(a: BenchArgs) -> Result<(), String> {
    if a.mode == Mode::OneToOne && (a.pairs == 0 || a.messages == 0 || a.window == 0) {
        return Err("--pairs, --messages and --window must be at least 1".into());
    }
    if matches!(a.mode, Mode::Group | Mode::LargeGroup) && (a.group_members < 2 || a.group_messages == 0) {
        return Err("--group-members must be at least 2 and --group-messages at least 1".into());
    }
    if a.nodes == 0 || (a.nodes > 1 && !a.spawn_server) {
        return Err("--nodes is at least 1, and more than 1 only with --spawn-server (a running cluster: --server A,B,C)".into());
    }
    if a.mode == Mode::LargeGroup && a.group_members as usize > LARGE {
        return Err(format!("--group-members is at most {LARGE} (the largest read-ack member cap)"));
    }
    let srv = Server::start(&a)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.client_threads.max(1))
        .thread_name("bench-load")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = match a.mode {
        Mode::OneToOne => one_to_one(&a, &srv, &rt),
        Mode::Group => group(&a, &srv, &rt),
        Mode::LargeGroup => crate::bench_large::large_group(&a, &srv, &rt),
    };
    let rss = srv.peak_rss_kib();
    let desc = srv.describe(a.in_memory, a.backend);
    let embedded = matches!(srv.target, Target::Embedded(_));
    let node_count = srv.addrs.len();
    drop(rt);
    srv.stop();
    let (mut j, human) = result?;
    j["server"] = json!({
        "target": desc,
        "durable": !a.in_memory && a.server.is_empty(),
        "nodes": node_count,
        "backend": match a.backend {
            receipt_server::Backend::Redb => "redb",
            receipt_server::Backend::Postgres => "postgres",
        },
        "peak_rss_kib": rss,
        "peak_rss_includes_tool": embedded,
        "metrics": a.metrics,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&j).expect("json"));
    } else {
        println!("{desc}");
        println!("{human}");
        if let Some(r) = rss {
            let whose = match (embedded, node_count) {
                (true, _) => "process peak RSS (server + load tool)",
                (false, 1) => "server peak RSS",
                (false, _) => "servers' peak RSS (summed)",
            };
            println!("{whose}: {:.1} MiB", r as f64 / 1024.0);
        }
    }
    Ok(())
}

pub(crate) type Report = (serde_json::Value, String);

fn one_to_one(a: &BenchArgs, srv: &Server, rt: &tokio::runtime::Runtime) -> Result<Report, String> {
    let (p, m, w) = (a.pairs, a.messages, a.window);
    let prefix = run_prefix();
    let progress = Arc::new(Progress::default());
    let t0 = Instant::now();
    let (go_tx, go_rx) = watch::channel(false);
    // Connect and log in every client at once.
    let conns: Vec<Conn> = rt.block_on(all((0..2 * p)
        .map(|i| {
            let (user, node) = if i < p {
                (format!("{prefix}-s{i}"), srv.node_of(i as usize))
            } else {
                (format!("{prefix}-r{}", i - p), srv.node_of_receiver((i - p) as usize))
            };
            let token = auth::token_for(&srv.secret, &user, 3600);
            let (addr, tls) = (srv.addr_of(node), srv.connector());
            async move { Conn::login(addr, &user, &token, t0, tls).await }
        })
        .collect()))?;
    let mut conns = conns.into_iter();
    let senders: Vec<Conn> = conns.by_ref().take(p as usize).collect();
    let receivers: Vec<Conn> = conns.collect();
    let body = content(a.size);
    let (stop, bar) = progress_bar(2 * p * m, "receipts", progress.clone());
    let mut results = Vec::new();
    let cpu = Cpu::measure(srv, || {
        rt.block_on(async {
            let recv: Vec<_> = receivers.into_iter().map(|c| tokio::spawn(bench_load::receiver(c, m, go_rx.clone()))).collect();
            let send = senders
                .into_iter()
                .enumerate()
                .map(|(i, c)| bench_load::sender(c, format!("{prefix}-r{i}"), m, w, body.clone(), go_rx.clone(), progress.clone()))
                .collect();
            let _ = go_tx.send(true);
            results = all(send).await?;
            for r in recv {
                r.await.map_err(|e| e.to_string())??;
            }
            Ok::<_, String>(())
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = bar.join();
    let cpu = cpu?;
    let mut rtt = Samples::default();
    let (mut delivered, mut read) = (0, 0);
    // Several nodes: the latency by where the pair's two ends sit (node numbers from 1).
    let (mut same, mut cross) = (Samples::default(), Samples::default());
    let mut by_nodes: std::collections::BTreeMap<(usize, usize), Samples> = Default::default();
    for (i, r) in results.into_iter().enumerate() {
        delivered += r.delivered;
        read += r.read;
        let (sn, rn) = (srv.node_of(i), srv.node_of_receiver(i));
        if srv.addrs.len() > 1 {
            if sn == rn { &mut same } else { &mut cross }.0.extend_from_slice(&r.rtt.0);
            by_nodes.entry((sn + 1, rn + 1)).or_default().0.extend_from_slice(&r.rtt.0);
        }
        rtt.extend(r.rtt);
    }
    let (p50, p99, max) = rtt.summary();
    let secs = cpu.wall;
    let receipts = delivered + read;
    let mut placement = serde_json::Value::Null;
    let mut placement_human = String::new();
    if srv.addrs.len() > 1 {
        let summary = |s: &mut Samples| {
            let (p50, p99, max) = s.summary();
            json!({ "p50": p50, "p99": p99, "max": max, "samples": s.0.len() })
        };
        let (same_j, cross_j) = (summary(&mut same), summary(&mut cross));
        let pairs: Vec<serde_json::Value> = by_nodes
            .iter_mut()
            .map(|(&(sn, rn), s)| {
                let mut v = summary(s);
                v["sender_node"] = json!(sn);
                v["receiver_node"] = json!(rn);
                v
            })
            .collect();
        let ms = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
        placement_human = format!(
            "\nsend -> delivery ack by placement: same node p50 {:.2} ms, p99 {:.2} ms ({} samples); different nodes p50 {:.2} ms, p99 {:.2} ms ({} samples)\n  by sender node -> receiver node (p50 / p99 ms): {}",
            ms(&same_j, "p50"),
            ms(&same_j, "p99"),
            same.0.len(),
            ms(&cross_j, "p50"),
            ms(&cross_j, "p99"),
            cross.0.len(),
            pairs
                .iter()
                .map(|v| format!("{}->{} {:.1} / {:.1}", v["sender_node"], v["receiver_node"], ms(v, "p50"), ms(v, "p99")))
                .collect::<Vec<_>>()
                .join(", ")
        );
        placement = json!({ "same_node": same_j, "different_nodes": cross_j, "by_nodes": pairs });
    }
    let j = json!({
        "mode": "one-to-one",
        "pairs": p, "messages": m, "window": w, "content_bytes": a.size,
        "messages_total": p * m,
        "delivery_receipts": delivered,
        "read_receipts": read,
        "seconds": secs,
        "receipts_per_sec": receipts as f64 / secs,
        "delivery_receipts_per_sec": delivered as f64 / secs,
        "read_receipts_per_sec": read as f64 / secs,
        "messages_per_sec": (p * m) as f64 / secs,
        "send_to_delivery_ms": { "p50": p50, "p99": p99, "max": max, "samples": rtt.0.len() },
        "send_to_delivery_ms_by_placement": placement,
        "cpu": cpu.json(),
        "cpu_us_per_message": { "server": cpu.per(p * m).0, "tool": cpu.per(p * m).1 },
        "by_process": cpu.json_by_process(receipts, "receipt"),
    });
    let human = format!(
        "1:1: {p} pairs x {m} messages, window {w}, {} B content\n\
         {} messages, {delivered} delivery + {read} read receipts in {secs:.2} s\n\
         receipts relayed: {:.0}/s (delivery {:.0}/s + read {:.0}/s); messages: {:.0}/s\n\
         send -> delivery ack at the sender: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms{placement_human}\n\
         CPU during the run: {}\n\
         CPU per message (its 2 receipts included): server {} µs, load tool {:.1} µs\n\
         {}{}",
        a.size,
        p * m,
        receipts as f64 / secs,
        delivered as f64 / secs,
        read as f64 / secs,
        (p * m) as f64 / secs,
        cpu.human(),
        cpu.per(p * m).0.map_or("?".into(), |v| format!("{v:.1}")),
        cpu.per(p * m).1,
        cpu.threads_line(),
        cpu.human_by_process(receipts, "receipt")
    );
    Ok((j, human))
}

fn group(a: &BenchArgs, srv: &Server, rt: &tokio::runtime::Runtime) -> Result<Report, String> {
    let (n, k) = (a.group_members, a.group_messages);
    let prefix = run_prefix();
    let progress = Arc::new(Progress::default());
    let t0 = Instant::now();
    let (go_tx, go_rx) = watch::channel(false);
    let owner = format!("{prefix}-o");
    let member_ids: Vec<String> = (1..n).map(|i| format!("{prefix}-m{i}")).collect();
    let users: Vec<String> = std::iter::once(owner.clone()).chain(member_ids.iter().cloned()).collect();
    let mut conns = rt
        .block_on(all(users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let (user, token, addr, tls) =
                    (u.clone(), auth::token_for(&srv.secret, u, 3600), srv.addr_of(srv.node_of(i)), srv.connector());
                async move { Conn::login(addr, &user, &token, t0, tls).await }
            })
            .collect()))?
        .into_iter();
    let mut owner_conn = conns.next().expect("owner");
    let members: Vec<Conn> = conns.collect();
    let group_id = rt.block_on(bench_load::create_group(&mut owner_conn, &member_ids))?;
    let body = content(a.size);
    let expect = (n - 1) as u32;
    let (stop, bar) = progress_bar(k * (n - 1), "group acks", progress.clone());
    let mut res = None;
    let cpu = Cpu::measure(srv, || {
        rt.block_on(async {
            let ms: Vec<_> = members.into_iter().map(|c| tokio::spawn(bench_load::group_member(c, k, go_rx.clone()))).collect();
            let s = tokio::spawn(bench_load::group_sender(owner_conn, group_id, k, expect, body, go_rx.clone(), progress.clone()));
            let _ = go_tx.send(true);
            for h in ms {
                h.await.map_err(|e| e.to_string())??;
            }
            res = Some(s.await.map_err(|e| e.to_string())??);
            Ok::<_, String>(())
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = bar.join();
    let cpu = cpu?;
    let mut r = res.expect("sender result");
    let (f50, _, fmax) = r.full.summary();
    let (p50, _, pmax) = r.fetch.summary();
    let ack_secs = r.ack_phase.as_secs_f64();
    let j = json!({
        "mode": "group",
        "members": n, "messages": k, "content_bytes": a.size,
        "acks": r.acks,
        "ack_phase_seconds": ack_secs,
        "acks_per_sec": r.acks as f64 / ack_secs,
        "count_reaches_n_minus_1_ms": { "p50": f50, "max": fmax },
        "fetch_all_acks": {
            "page_size": 100,
            "acks_paged": r.fetched,
            "total_ms": r.fetch_total.as_secs_f64() * 1000.0,
            "per_message_ms": { "p50": p50, "max": pmax },
        },
        "cpu": cpu.json(),
        "by_process": cpu.json_by_process(r.acks, "ack"),
    });
    let human = format!(
        "group: {n} members, {k} messages asking for group read acks, {} B content\n\
         {} acks in {ack_secs:.2} s: {:.0} acks/s\n\
         sender's count reaches {expect} (N-1): p50 {f50:.1} ms, max {fmax:.1} ms after the send\n\
         paging all acks (page size 100): {} acks in {:.1} ms; per message p50 {p50:.2} ms, max {pmax:.2} ms\n\
         CPU during the run (acks and paging): {}\n\
         {}{}",
        a.size,
        r.acks,
        r.acks as f64 / ack_secs,
        r.fetched,
        r.fetch_total.as_secs_f64() * 1000.0,
        cpu.human(),
        cpu.threads_line(),
        cpu.human_by_process(r.acks, "ack")
    );
    Ok((j, human))
}
