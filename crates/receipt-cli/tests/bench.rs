//! `receipt-cli bench` runs a small workload of each kind against its embedded durable server
//! and reports consistent figures.

use std::process::Command;

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
fn group_reaches_every_count_and_pages_every_ack() {
    let j = bench(&["--mode", "group", "--group-members", "12", "--group-messages", "3"]);
    assert_eq!(j["acks"], 33);
    assert_eq!(j["fetch_all_acks"]["acks_paged"], 33);
}
