//! `receipt-cli bench` runs a small workload of each kind against its embedded durable server
//! and reports consistent figures.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use receipt_testkit::ops::{sample, scrape};
use receipt_testkit::{ChildServer, SECRET};

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_receipt-cli")).arg("bench").args(args).arg("--json").output().expect("run bench");
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json on stdout")
}

#[test]
fn one_to_one_counts_every_receipt() {
    let j = bench(&["--pairs", "3", "--messages", "40", "--window", "5"]);
    assert_eq!(j["delivery_receipts"], 120);
    assert_eq!(j["read_receipts"], 120);
    assert_eq!(j["send_to_delivery_ms"]["samples"], 120);
    assert!(j["receipts_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(j["server"]["durable"], true);
    assert!(j["cpu"]["server_cpu_s"].as_f64().is_some());
}

#[test]
fn a_spawned_server_on_postgres_counts_every_receipt() {
    if receipt_testkit::pg::skip() {
        return;
    }
    let bin = receipt_testkit::child::build_server_binary();
    let bin = bin.to_str().unwrap();
    let j = bench(&["--pairs", "3", "--messages", "40", "--window", "5", "--spawn-server", "--server-bin", bin, "--backend", "postgres"]);
    assert_eq!((j["delivery_receipts"].as_u64(), j["read_receipts"].as_u64()), (Some(120), Some(120)));
    assert_eq!((j["server"]["backend"].as_str(), j["server"]["durable"].as_bool()), (Some("postgres"), Some(true)));
    let j = bench(&["--mode", "group", "--group-members", "12", "--group-messages", "3", "--backend", "postgres"]);
    assert_eq!((j["acks"].as_u64(), j["fetch_all_acks"]["acks_paged"].as_u64()), (Some(33), Some(33)));
}

#[test]
fn group_reaches_every_count_and_pages_every_ack() {
    let j = bench(&["--mode", "group", "--group-members", "12", "--group-messages", "3"]);
    assert_eq!(j["acks"], 33);
    assert_eq!(j["fetch_all_acks"]["acks_paged"], 33);
}

/// Issue 19's check: /metrics scraped while the bench runs against a child server shows the
/// bench's own figures (connections, messages, receipts relayed).
#[test]
fn a_scrape_during_the_bench_shows_its_connections_and_receipts() {
    let bin = receipt_testkit::child::build_server_binary();
    let dir = tempfile::tempdir().unwrap();
    let conf = "metrics_addr = \"127.0.0.1:0\"\n[send_rate]\nper_sec = 0\nburst = 0\n\n[request_rate]\nper_sec = 0\nburst = 0\n";
    let srv = ChildServer::try_start(&bin, Some(&dir.path().join("server")), conf).expect("child server");
    let m = srv.metrics_addr().expect("metrics listener");
    let series = |text: &str, s: &str| sample(text, s).unwrap_or_else(|| panic!("no {s} in:\n{text}"));
    const PAIRS: u64 = 8;
    let (pairs, addr) = (PAIRS.to_string(), srv.addr().to_string());
    let mut bench = Command::new(env!("CARGO_BIN_EXE_receipt-cli"))
        .args(["bench", "--server", &addr, "--secret", SECRET, "--pairs", &pairs, "--messages", "1500", "--window", "50", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run bench");
    // Scrape while it runs (bounded: 120 s, every 20 ms).
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut max_conns, mut mid_run_receipts) = (0.0f64, Vec::new());
    while bench.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the bench did not finish in 120 s");
        let text = scrape(m);
        max_conns = max_conns.max(series(&text, "receipt_connections"));
        mid_run_receipts.push(series(&text, r#"receipt_receipts_relayed_total{kind="delivered"}"#));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = bench.wait_with_output().unwrap();
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    let text = scrape(m);
    let (delivered, read) = (j["delivery_receipts"].as_f64().unwrap(), j["read_receipts"].as_f64().unwrap());
    let close = |got: f64, want: f64, what: &str| {
        assert!((got - want).abs() <= want * 0.02, "{what}: /metrics says {got}, the bench {want}");
    };
    close(series(&text, r#"receipt_receipts_relayed_total{kind="delivered"}"#), delivered, "delivery receipts");
    close(series(&text, r#"receipt_receipts_relayed_total{kind="read"}"#), read, "read receipts");
    close(series(&text, "receipt_messages_relayed_total"), j["messages_total"].as_f64().unwrap(), "messages");
    close(series(&text, r#"receipt_requests_total{kind="login"}"#), (2 * PAIRS) as f64, "logins");
    // Every sender and receiver was connected at once; the counters moved during the run.
    assert_eq!(max_conns, (2 * PAIRS) as f64, "connections seen while the bench ran");
    assert!(mid_run_receipts.iter().any(|&r| r > 0.0 && r < delivered), "no scrape saw the run in progress: {mid_run_receipts:?}");
    eprintln!(
        "bench: {delivered} delivery + {read} read receipts; /metrics: {} + {}; {} scrapes during the run",
        series(&text, r#"receipt_receipts_relayed_total{kind="delivered"}"#),
        series(&text, r#"receipt_receipts_relayed_total{kind="read"}"#),
        mid_run_receipts.len()
    );
}

#[test]
fn with_metrics_the_embedded_server_names_its_listener() {
    let j = bench(&["--pairs", "1", "--messages", "10", "--window", "5", "--metrics"]);
    assert_eq!(j["server"]["metrics"], true);
    assert!(j["server"]["target"].as_str().unwrap().contains("metrics on 127.0.0.1:"), "{}", j["server"]);
}

/// Large groups (issue 16 item 3): a small coalesced run gives the sender one count per message
/// (its acks take far less than an interval), the same run without coalescing one event per ack.
#[test]
fn large_group_coalesces_the_senders_events_and_counts_every_ack() {
    let args = |c: &str| {
        ["--mode", "large-group", "--group-members", "30", "--group-messages", "4", "--login-batch", "10", "--coalesce-above", c]
            .map(String::from)
    };
    let on = bench(&args("10").iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!((on["acks"].as_u64(), on["coalesced"].as_bool()), (Some(29 * 4), Some(true)));
    let frames = on["sender"]["frames"].as_u64().unwrap();
    assert!((4..=4 * 4).contains(&frames), "a few count updates per message, not one per ack: {frames}");
    assert!(on["server_cpu_us_per_ack"].as_f64().is_some() && on["acks_per_sec"].as_f64().unwrap() > 0.0);
    let off = bench(&args("10000").iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!((off["coalesced"].as_bool(), off["sender"]["frames"].as_u64()), (Some(false), Some(29 * 4)), "one event per ack");
}

/// Whether the 3-node bench runs: not when RECEIPT_SKIP_NATS=1 (or, with `pg`,
/// RECEIPT_SKIP_PG=1), said loudly; a missing nats-server or PostgreSQL otherwise fails the run.
fn cluster_binaries(pg: bool) -> bool {
    !(receipt_testkit::nats::skip() || (pg && receipt_testkit::pg::skip()))
}

/// The names of the processes a run reports, and its nodes' counters by name.
fn processes(j: &serde_json::Value) -> Vec<String> {
    j["by_process"]["processes"].as_array().expect("processes").iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
}

fn node_metric<'a>(j: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let nodes = j["by_process"]["nodes_metrics"].as_array().expect("nodes_metrics");
    nodes.iter().find(|n| n["name"].as_str().unwrap().starts_with(name)).unwrap_or_else(|| panic!("no {name} in {nodes:?}"))
}

/// Issue 13: `bench --spawn-server --nodes 3` on PostgreSQL: the sequencer elected on a
/// throwaway PostgreSQL, two gateways, nats-server; every receipt counted, every node (and
/// nats-server and PostgreSQL) named with its CPU, the sequencer's commits and the NATS traffic
/// read from the nodes' /metrics, the latency split by placement.
#[test]
fn three_nodes_on_postgres_count_every_receipt_and_name_every_node() {
    if !cluster_binaries(true) {
        return;
    }
    let bin = receipt_testkit::child::build_server_binary();
    let t = Instant::now();
    let j = bench(&[
        "--pairs",
        "9",
        "--messages",
        "30",
        "--window",
        "10",
        "--spawn-server",
        "--nodes",
        "3",
        "--backend",
        "postgres",
        "--server-bin",
        bin.to_str().unwrap(),
    ]);
    eprintln!("3-node PostgreSQL bench: {:.1} s, {} receipts/s", t.elapsed().as_secs_f64(), j["receipts_per_sec"]);
    // Sent == acked: every message delivered and read, every delivery timed; nothing lost.
    assert_eq!((j["delivery_receipts"].as_u64(), j["read_receipts"].as_u64()), (Some(270), Some(270)));
    assert_eq!(j["send_to_delivery_ms"]["samples"], 270);
    assert_eq!((j["server"]["nodes"].as_u64(), j["server"]["backend"].as_str()), (Some(3), Some("postgres")));
    let names = processes(&j);
    for want in ["node 1 (sequencer, postgres)", "node 2 (gateway)", "node 3 (gateway)", "nats-server", "PostgreSQL (all processes)"] {
        assert!(names.iter().any(|n| n == want), "{want} missing in {names:?}");
    }
    assert!(j["server"]["target"].as_str().unwrap().contains("node 3 (gateway) pid"), "{}", j["server"]["target"]);
    // 9 pairs over 3 nodes: every (sender node, receiver node) once, 3 pairs on one node.
    let placement = &j["send_to_delivery_ms_by_placement"];
    assert_eq!((placement["same_node"]["samples"].as_u64(), placement["different_nodes"]["samples"].as_u64()), (Some(90), Some(180)));
    assert_eq!(placement["by_nodes"].as_array().unwrap().len(), 9);
    // Only the sequencer commits; the gateways' traffic goes over NATS.
    let seq = node_metric(&j, "node 1");
    assert!(seq["commits"].as_f64().unwrap() > 0.0 && seq["requests_per_commit"].as_f64().unwrap() >= 1.0, "{seq}");
    for gw in ["node 2", "node 3"] {
        let m = node_metric(&j, gw);
        assert_eq!(m["commits"], 0.0, "{m}");
        assert!(m["nats_published"].as_f64().unwrap() > 0.0 && m["nats_received"].as_f64().unwrap() > 0.0, "{m}");
    }
    assert!(j["by_process"]["all_cpu_us_per_receipt"].as_f64().unwrap() > 0.0);
}

/// The same with the sequencer on redb (a fixed sequencer), in the group workload.
#[test]
fn three_nodes_on_redb_reach_every_group_count() {
    if !cluster_binaries(false) {
        return;
    }
    let bin = receipt_testkit::child::build_server_binary();
    let j = bench(&[
        "--mode",
        "group",
        "--group-members",
        "12",
        "--group-messages",
        "3",
        "--spawn-server",
        "--nodes",
        "3",
        "--server-bin",
        bin.to_str().unwrap(),
    ]);
    assert_eq!((j["acks"].as_u64(), j["fetch_all_acks"]["acks_paged"].as_u64()), (Some(33), Some(33)));
    let names = processes(&j);
    for want in ["node 1 (sequencer, redb)", "node 2 (gateway)", "node 3 (gateway)", "nats-server"] {
        assert!(names.iter().any(|n| n == want), "{want} missing in {names:?}");
    }
    assert!(node_metric(&j, "node 1")["commits"].as_f64().unwrap() > 0.0);
}
