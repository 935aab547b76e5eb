//! The real `receipt-server` binary as a child process (its own address space, so its memory
//! can be read from `/proc/<pid>/status` and it can be SIGKILLed), configured by a TOML file.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ChildServer {
    /// Starts the binary with `addr`, `secret`, `data_dir` and the extra TOML lines `extra`
    /// (top-level keys first, tables after). Retries for up to 3 s while the port is busy.
    pub fn spawn(conf_dir: &Path, data_dir: &Path, addr: SocketAddr, secret: &str, extra: &str) -> ChildServer {
        let conf: PathBuf = conf_dir.join("server.toml");
        let text = format!("addr = \"{addr}\"\ndata_dir = {:?}\nsecret = \"{secret}\"\n{extra}\n", data_dir.display().to_string());
        std::fs::write(&conf, text).expect("write config");
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut child = Command::new(env!("CARGO_BIN_EXE_receipt-server"))
                .arg("serve")
                .arg("--config")
                .arg(&conf)
                .env("RUST_LOG", "error")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn receipt-server");
            let mut line = String::new();
            let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
            if let Some(a) = line.trim().strip_prefix("listening on ") {
                return ChildServer { addr: a.parse().unwrap(), child };
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(Instant::now() < deadline, "receipt-server did not start (first line {line:?})");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(&format!("/proc/{}/status", self.pid()), "VmRSS:")
    }

    /// Open file descriptors of the server process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn proc_status_kib(path: &str, key: &str) -> u64 {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {path}"))
}

/// Raises this process's soft RLIMIT_NOFILE to at least `want` (children inherit it). Returns
/// the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    // SAFETY: plain libc calls on a local, fully initialized struct.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < want as libc::rlim_t {
            let new = libc::rlimit { rlim_cur: (want as libc::rlim_t).min(r.rlim_max), rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 {
                r = new;
            }
        }
        r.rlim_cur
    }
}

/// A tiny seeded PRNG (xorshift64*), so the fault runs are reproducible from the seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}
