//! Large groups: the read-ack member cap goes up to 10,000 and no further; the binary refuses a
//! larger one at start, from its flag or its config file, with a clear message.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `receipt-server serve` with `args` (bounded: killed after 20 s); (exit success, stderr).
fn serve(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_receipt-server"))
        .args(["serve", "--in-memory", "--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("the server started with {args:?} instead of refusing the config");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_member_cap_above_ten_thousand_is_refused_at_start_by_flag_and_by_file() {
    let (ok, err) = serve(&["--member-cap", "10001"]);
    assert!(!ok && err.contains("group_ack.member_cap must be 1..=10000, not 10001"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("server.toml");
    std::fs::write(&conf, "[group_ack]\nmember_cap = 20000\n").unwrap();
    let (ok, err) = serve(&["--config", conf.to_str().unwrap()]);
    assert!(!ok && err.contains("member_cap must be 1..=10000, not 20000"), "{err}");
    let (ok, err) = serve(&["--coalesce-ms", "0"]);
    assert!(!ok && err.contains("coalesce_ms must be 1..=60000"), "{err}");
}
