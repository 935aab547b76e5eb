//! The real `receipt-server` binary as a child process: [`ChildServer`]. Its own address space,
//! so its memory and fds can be read from `/proc/<pid>`, and it can be SIGKILLed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::SECRET;

/// How long a start may take before the child is given up on (its first line included).
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long a start retries while the address is still busy (a restart on the same port).
const BUSY_LIMIT: Duration = Duration::from_secs(3);

/// The `receipt-server` binary: `$RECEIPT_SERVER_BIN` if set, else the first `receipt-server`
/// found in this executable's dir or the two above it (`<target>/<profile>/deps/<test>` finds
/// `<target>/<profile>/receipt-server`; `receipt-cli` finds its sibling).
///
/// `cargo test -p receipt-server` builds the binary for its own tests; for any other crate's
/// tests it may be missing or stale: build it with `cargo build -p receipt-server --bin
/// receipt-server` (add `--release` for release tests), or call [`build_server_binary`].
pub fn server_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("RECEIPT_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let name = format!("receipt-server{}", std::env::consts::EXE_SUFFIX);
    let dirs: Vec<&Path> = exe.ancestors().skip(1).take(3).collect();
    dirs.iter().map(|d| d.join(&name)).find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "no {name} binary in {dirs:?}: build it with `cargo build -p receipt-server --bin receipt-server` \
             (add --release for a release build) or set RECEIPT_SERVER_BIN"
        )
    })
}

/// Builds the `receipt-server` binary into this build's target dir and profile (a no-op when
/// up to date) and returns its path.
pub fn build_server_binary() -> PathBuf {
    let dir = crate::target::cargo_build(&["-p", "receipt-server", "--bin", "receipt-server"]);
    dir.join(format!("receipt-server{}", std::env::consts::EXE_SUFFIX))
}

/// Where a child server keeps its state.
#[derive(Clone, Copy)]
enum Store<'a> {
    /// redb in this data dir.
    Redb(&'a Path),
    /// This PostgreSQL database (a connection string).
    Postgres(&'a str),
}

/// A hook applied to a child server's command before each launch.
pub type ConfigureCommand = Box<dyn Fn(&mut Command) + Send>;

/// A `receipt-server serve --config <toml>` child process. Dropping it SIGKILLs it.
pub struct ChildServer {
    child: Option<Child>,
    bin: PathBuf,
    conf: PathBuf,
    in_memory: bool,
    addr: SocketAddr,
    /// The config sets `metrics_addr`: the child prints `metrics on <addr>` as its second line.
    metrics: bool,
    metrics_addr: Option<SocketAddr>,
    /// Applied to every launch's command (e.g. a `pre_exec` hook setting a resource limit).
    configure: Option<ConfigureCommand>,
    /// Holds the TOML file.
    _conf_dir: tempfile::TempDir,
}

impl ChildServer {
    /// Starts [`server_binary`] on a free loopback port with its store in `data_dir` and the
    /// extra TOML lines `extra`. Panics if it cannot start.
    pub fn start(data_dir: &Path, extra: &str) -> ChildServer {
        let bin = server_binary().unwrap_or_else(|e| panic!("{e}"));
        ChildServer::try_start(&bin, Some(data_dir), extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `bin` on a free loopback port. The TOML file holds the address, `data_dir`
    /// (`None`: an in-memory store), [`SECRET`], then `extra` (top-level keys first, tables
    /// after), then group read acks enabled unless `extra` has a `[group_ack]` table and no token
    /// leeway (as [`crate::server_config`]) unless it has a `[tokens]` table.
    pub fn try_start(bin: &Path, data_dir: Option<&Path>, extra: &str) -> Result<ChildServer, String> {
        ChildServer::try_start_with(bin, data_dir, extra, None)
    }

    /// [`ChildServer::try_start`], with `configure` applied to the command of every launch
    /// (start and start again) before it is spawned.
    pub fn try_start_with(
        bin: &Path,
        data_dir: Option<&Path>,
        extra: &str,
        configure: Option<ConfigureCommand>,
    ) -> Result<ChildServer, String> {
        ChildServer::try_start_on(bin, data_dir.map(Store::Redb), extra, configure)
    }

    /// Starts [`server_binary`] with its store in the PostgreSQL database `conninfo`
    /// (`backend = "postgres"`), as [`ChildServer::try_start`] otherwise. Panics if it cannot
    /// start.
    pub fn start_pg(conninfo: &str, extra: &str) -> ChildServer {
        ChildServer::try_start_pg(conninfo, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`ChildServer::start_pg`], returning the error instead.
    pub fn try_start_pg(conninfo: &str, extra: &str) -> Result<ChildServer, String> {
        ChildServer::try_start_pg_with(&server_binary()?, conninfo, extra)
    }

    /// [`ChildServer::try_start_pg`] of the binary `bin`.
    pub fn try_start_pg_with(bin: &Path, conninfo: &str, extra: &str) -> Result<ChildServer, String> {
        ChildServer::try_start_on(bin, Some(Store::Postgres(conninfo)), extra, None)
    }

    fn try_start_on(bin: &Path, store: Option<Store<'_>>, extra: &str, configure: Option<ConfigureCommand>) -> Result<ChildServer, String> {
        let conf_dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let conf = conf_dir.path().join("server.toml");
        let mut text = format!("addr = \"127.0.0.1:0\"\nsecret = \"{SECRET}\"\n");
        match store {
            Some(Store::Redb(d)) => text += &format!("data_dir = {:?}\n", d.display().to_string()),
            Some(Store::Postgres(pg)) => text += &format!("backend = \"postgres\"\npg = {pg:?}\n"),
            None => {}
        }
        text += extra;
        if !extra.contains("[group_ack]") {
            text += "\n[group_ack]\nenabled = true\n";
        }
        if !extra.contains("[tokens]") {
            text += "\n[tokens]\nleeway_secs = 0\n";
        }
        std::fs::write(&conf, text).map_err(|e| format!("writing {}: {e}", conf.display()))?;
        let mut s = ChildServer {
            child: None,
            bin: bin.to_path_buf(),
            conf,
            in_memory: store.is_none(),
            addr: "127.0.0.1:0".parse().unwrap(),
            metrics: extra.lines().any(|l| l.trim_start().starts_with("metrics_addr")),
            metrics_addr: None,
            configure,
            _conf_dir: conf_dir,
        };
        s.launch(s.addr)?;
        Ok(s)
    }

    /// Starts the child on `addr` (port 0: a free one), reading its first line ("listening on
    /// <addr>") for the address, and with metrics on the second ("metrics on <addr>"); retries
    /// while the address is busy.
    fn launch(&mut self, addr: SocketAddr) -> Result<(), String> {
        let busy_until = Instant::now() + BUSY_LIMIT;
        loop {
            let mut cmd = Command::new(&self.bin);
            cmd.arg("serve").arg("--config").arg(&self.conf).arg("--addr").arg(addr.to_string());
            if self.in_memory {
                cmd.arg("--in-memory");
            }
            if let Some(f) = &self.configure {
                f(&mut cmd);
            }
            let mut child = cmd
                .env("RUST_LOG", "error")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", self.bin.display()))?;
            let lines = stdout_lines(&mut child);
            let line = lines.as_ref().and_then(|rx| rx.recv_timeout(START_LIMIT).ok());
            if let Some(a) = line.as_deref().and_then(|l| l.trim().strip_prefix("listening on ")) {
                self.addr = a.parse().map_err(|e| format!("server address {a:?}: {e}"))?;
                if self.metrics {
                    let second = lines.as_ref().and_then(|rx| rx.recv_timeout(START_LIMIT).ok());
                    let m = second.as_deref().and_then(|l| l.trim().strip_prefix("metrics on "));
                    let m = m.ok_or_else(|| format!("no \"metrics on\" line (got {second:?})"))?;
                    self.metrics_addr = Some(m.parse().map_err(|e| format!("metrics address {m:?}: {e}"))?);
                }
                self.child = Some(child);
                return Ok(());
            }
            let _ = child.kill();
            let _ = child.wait();
            if Instant::now() >= busy_until {
                return Err(format!("{} did not start (first line {line:?})", self.bin.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again after [`ChildServer::kill9`] or [`ChildServer::stop`]: the same config
    /// and data dir, on the same address (retrying for a while if it is still busy).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "stop the child server first");
        self.launch(self.addr).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The metrics listener's address, when the config set `metrics_addr`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the child server runs").id()
    }

    /// Resident set size of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(&format!("/proc/{}/status", self.pid()), "VmRSS:")
    }

    /// Open file descriptors of the server process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }

    /// SIGKILL, and reap it. Idempotent.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (a clean shutdown: in-flight work is committed), SIGKILL if it is not gone
    /// within 5 s. Idempotent.
    pub fn stop(&mut self) {
        let Some(c) = self.child.as_mut() else { return };
        let pid = c.id() as libc::pid_t;
        // SAFETY: a signal to our own child, not reaped yet (so the pid is still ours).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                self.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The child's stdout lines, read on a thread until it closes (the child exits; a caller that
/// gives up on a child kills it, which ends the thread too). Draining it keeps the child from
/// blocking on a full pipe.
fn stdout_lines(child: &mut Child) -> Option<mpsc::Receiver<String>> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Some(rx)
}

/// A `key:  <n> kB` figure of a `/proc/<pid>/status` file, in KiB (panics if absent).
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
