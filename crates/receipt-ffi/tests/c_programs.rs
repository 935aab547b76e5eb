//! Runs the C programs of `tests/c` against the cdylib and a real receipt server.
//!
//! Each test compiles one program with `cc -std=c11 -Wall -Wextra -Werror -Iinclude` against
//! `libreceipt_ffi.so` (the one cargo built for this test run), starts an embedded server on
//! 127.0.0.1:0 with a temp data dir and group read acks enabled, mints tokens, and runs the
//! program with the server's address, the tokens and a temp dir in its environment, under
//! `valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99`
//! when valgrind is installed (a loud "SKIPPED valgrind" line otherwise). `RCPT_VALGRIND=0`
//! turns valgrind off on purpose.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use receipt_testkit::{dead_port, target, token, token_with_ttl, TestCa, TestServer};

const USERS: &[&str] = &["alice", "bob", "carol", "dave", "erin", "mallory", "trent"];
/// Wall-clock bound for one program (valgrind included); it is killed after that.
const PROGRAM_DEADLINE: Duration = Duration::from_secs(420);

/// The directory holding a fresh `libreceipt_ffi.so`: `cargo test` builds only the rlib for the
/// tests, so this builds the library into the target dir and profile of this test binary.
fn lib_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target::cargo_build(&["-p", "receipt-ffi", "--lib"]);
        assert!(dir.join("libreceipt_ffi.so").exists(), "libreceipt_ffi.so not found in {}", dir.display());
        dir
    })
    .clone()
}

fn compile(program: &str, out_dir: &Path) -> PathBuf {
    let root = target::workspace_root();
    let lib = lib_dir();
    let exe = out_dir.join(program);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .arg(format!("-I{}", root.join("include").display()))
        .arg(root.join("tests/c").join(format!("{program}.c")))
        .arg(format!("-L{}", lib.display()))
        .arg("-lreceipt_ffi")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(out.status.success(), "compiling {program}.c failed:\n{}", String::from_utf8_lossy(&out.stderr));
    exe
}

/// Writes to the process's stderr directly: libtest captures `println!`/`eprintln!` of passing
/// tests, and these lines (valgrind skipped, valgrind's summary, timings) must always show.
fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn valgrind_wanted() -> bool {
    if std::env::var("RCPT_VALGRIND").as_deref() == Ok("0") {
        loud("!!!!!!!! SKIPPED valgrind: RCPT_VALGRIND=0 !!!!!!!!");
        return false;
    }
    let present = Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
    if !present {
        loud("!!!!!!!! SKIPPED valgrind: not installed; running the C programs without it !!!!!!!!");
    }
    present
}

fn run_c_program(program: &str) {
    run_c_program_with(program, None)
}

/// Runs `program`; with `tls`, against a server that requires TLS with that CA's certificate
/// (the CA's PEM path in `RCPT_TEST_CA_PEM`).
fn run_c_program_with(program: &str, tls: Option<&TestCa>) {
    run_c_program_on(program, tls, |_| {})
}

/// [`run_c_program_with`] on a server whose config `configure` adjusts first.
fn run_c_program_on(program: &str, tls: Option<&TestCa>, configure: impl FnOnce(&mut receipt_testkit::ServerConfig)) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let exe = compile(program, tmp.path());
    let clients_dir = tmp.path().join("clients");
    std::fs::create_dir_all(&clients_dir).unwrap();
    let mut server = TestServer::start(|config| {
        if let Some(ca) = tls {
            ca.configure(config, true);
        }
        configure(config);
    });
    let port = server.port();

    let valgrind = valgrind_wanted();
    let mut cmd = if valgrind {
        let mut c = Command::new("valgrind");
        c.args([
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99",
            "--num-callers=40",
            "--child-silent-after-fork=yes",
        ])
        .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.env("RCPT_TEST_HOST", "127.0.0.1")
        .env("RCPT_TEST_PORT", port.to_string())
        .env("RCPT_TEST_DEAD_PORT", dead_port().to_string())
        .env("RCPT_TEST_DIR", &clients_dir)
        .env("RCPT_TEST_TIMEOUT_MS", if valgrind { "60000" } else { "20000" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for u in USERS {
        cmd.env(format!("RCPT_TEST_TOKEN_{u}"), token(u));
    }
    if let Some(ca) = tls {
        let ca_path = tmp.path().join("ca.pem");
        std::fs::write(&ca_path, &ca.ca_pem).expect("writing the CA");
        cmd.env("RCPT_TEST_CA_PEM", &ca_path);
        // Long enough to log in over TLS (slow under valgrind), short enough to see
        // onTokenWillExpire (at 80%) within one wait.
        let ttl = if valgrind { 40 } else { 4 };
        cmd.env("RCPT_TEST_SHORT_TOKEN_bob", token_with_ttl("bob", ttl));
    }

    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawning the C program");
    // Drain the pipes on threads so a chatty valgrind cannot block the child.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for the C program") {
            break Some(st);
        }
        if started.elapsed() > PROGRAM_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_t.join().unwrap();
    let stderr = err_t.join().unwrap();
    server.stop();
    let took = started.elapsed();

    loud(&format!("--- {program} ({}), {:.1} s: {}", if valgrind { "valgrind" } else { "plain" }, took.as_secs_f64(), stdout.trim()));
    eprint!("{stderr}");
    let Some(status) = status else { panic!("{program} did not finish within {PROGRAM_DEADLINE:?} and was killed") };
    if valgrind {
        for l in stderr.lines().filter(|l| {
            l.contains("ERROR SUMMARY") || l.contains("definitely lost") || l.contains("indirectly lost") || l.contains("in use at exit")
        }) {
            loud(&format!("    {program}: {}", l.trim_start_matches(|c: char| c == '=' || c.is_ascii_digit()).trim()));
        }
    }
    assert_ne!(status.code(), Some(99), "{program}: valgrind found memory errors or leaks (see above)");
    assert!(status.success(), "{program} failed: {status}");
    assert!(stdout.contains(", 0 failed"), "{program} printed no passing summary");
}

#[test]
fn c_seed_flows() {
    run_c_program("seed_flows");
}

/// The phone calls over TLS: log sink, TLS options, lifecycle events, renewToken.
#[test]
fn c_phone_over_tls() {
    let ca = TestCa::new();
    run_c_program_with("phone", Some(&ca));
}

#[test]
fn c_misuse() {
    run_c_program("misuse");
}

/// Who has not read, read counts for a screen, read acks in one trip, and their bad input.
#[test]
fn c_batches() {
    run_c_program("batches");
}

/// Group delivery receipts: automatic acks (online and backlog), the count, the list, bad input.
#[test]
fn c_group_delivery() {
    run_c_program_on("group_delivery", None, |c| c.group_delivery_ack.enabled = true);
}

#[test]
fn c_history() {
    run_c_program("history");
}

/// Private reading: the option, the per-call mode of each read-ack call, and their bad input.
#[test]
fn c_private_reading() {
    run_c_program("private_reading");
}
