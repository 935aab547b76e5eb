//! A throwaway PostgreSQL cluster for the tests of the PostgreSQL store: Debian's binaries
//! (`$RECEIPT_PG_BIN`, else `/usr/lib/postgresql/<newest>/bin`, else `initdb` on `PATH`), a temp dir, trust auth on a
//! unix socket in that dir and on 127.0.0.1 at a free port, and one database per test cloned
//! from a template that has the schema (`CREATE DATABASE x TEMPLATE receipt_template`).
//!
//! [`shared`] starts one cluster per test binary (stopped at exit); [`PgCluster::start`] starts
//! one of the caller's own (a test that stops and starts PostgreSQL). As root (CI), `initdb`
//! and `pg_ctl` run as the `postgres` user (`runuser`), which owns the temp dir.
//!
//! Not installed: [`shared`] panics (a test run without PostgreSQL fails). `RECEIPT_SKIP_PG=1`
//! skips, installed or not: [`shared`] prints a loud SKIPPED line and returns `None` (the ohos
//! runs set it: a server on PostgreSQL is not what runs on a phone).
//!
//! A cluster whose test process aborted (no exit handler ran) is stopped and removed by the next
//! cluster start (its dir names the owner's pid).
//!
//! `fsync=off`: PostgreSQL's own durability against a machine crash is not what these tests
//! test (they kill the server or stop PostgreSQL with `-m immediate`: its WAL writes are in the
//! kernel already); synchronous commit stays on, so a commit is written before it returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The database the per-test databases are cloned from (it has the schema).
const TEMPLATE: &str = "receipt_template";
/// Longest `pg_ctl` waits for a start or a stop.
const PG_CTL_WAIT_SECS: &str = "30";

/// A PostgreSQL cluster in a temp dir. Dropping it stops it (`-m immediate`) and removes the dir.
pub struct PgCluster {
    /// `fsync=on` (benchmarks) rather than off (tests).
    fsync: bool,
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    next_db: AtomicU64,
}

/// One test's database in a cluster.
#[derive(Debug, Clone)]
pub struct PgDb {
    pub name: String,
    /// A libpq connection string (unix socket) for `receipt-server --pg` or the store.
    pub conninfo: String,
}

static SHARED: OnceLock<Option<PgCluster>> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(Some(c)) = SHARED.get() {
        c.shutdown();
    }
}

/// The test binary's cluster (started at the first call, stopped when the process exits), or
/// `None` with a SKIPPED line when `RECEIPT_SKIP_PG=1`. Panics when PostgreSQL is not installed
/// otherwise, or cannot start.
pub fn shared() -> Option<&'static PgCluster> {
    let cluster = SHARED
        .get_or_init(|| {
            if skip() {
                return None;
            }
            let c = PgCluster::start().unwrap_or_else(|e| panic!("{e}"));
            // SAFETY: registers a plain function; it runs at exit, after the tests.
            unsafe { libc::atexit(stop_shared) };
            Some(c)
        })
        .as_ref();
    if cluster.is_none() {
        // Said again for each test that asked.
        skip();
    }
    cluster
}

/// Whether the PostgreSQL tests are skipped: `RECEIPT_SKIP_PG=1`, installed or not (otherwise
/// a missing PostgreSQL fails the test that asks for it); says so loudly.
pub fn skip() -> bool {
    let skip = std::env::var("RECEIPT_SKIP_PG").as_deref() == Ok("1");
    if skip {
        crate::loud("*** SKIPPED: RECEIPT_SKIP_PG=1: the PostgreSQL tests did not run ***");
    }
    skip
}

/// Whether PostgreSQL's server binaries were found (see [`BIN_ENV`]).
pub fn installed() -> bool {
    find_bin().is_some()
}

/// A new database with the schema in the [`shared`] cluster (`None`: skipped, see there).
pub fn database() -> Option<PgDb> {
    shared().map(PgCluster::database)
}

/// Names the directory of PostgreSQL's server binaries (`initdb`, `pg_ctl`), instead of looking.
pub const BIN_ENV: &str = "RECEIPT_PG_BIN";

/// The directory of PostgreSQL's server binaries: `$RECEIPT_PG_BIN`, else Debian's newest
/// version, else `initdb`'s on `PATH`.
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").is_file().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("initdb").is_file())
        .collect();
    versions.sort();
    if let Some((_, p)) = versions.pop() {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// The prefix of a cluster's temp dir.
const PREFIX: &str = "receipt-pg-";
/// The file in a cluster's dir naming the pid of the test process that started it.
const OWNER: &str = "owner.pid";

/// Stops and removes the clusters whose test process is gone without stopping them (it
/// aborted or was killed: no exit handler ran). Best effort.
fn reap_stale(bin: &Path, as_postgres: bool) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(e.path().join(OWNER)).ok().and_then(|p| p.trim().parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            // Dropping it stops it (`-m immediate`) and removes the dir.
            drop(PgCluster::of(bin, e.path(), as_postgres));
        }
    }
}

fn is_root() -> bool {
    // SAFETY: no arguments, no side effect.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> Result<(libc::uid_t, libc::gid_t), String> {
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: a NUL-terminated name; the result is read at once, before any other getpw* call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err("running as root, and there is no `postgres` user to run PostgreSQL as (initdb refuses root)".into());
    }
    // SAFETY: non-null, points to libc's static passwd record.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl PgCluster {
    /// initdb in a new temp dir and start it, `fsync=off` (see the module doc). Bounded:
    /// `pg_ctl` waits at most 30 s.
    pub fn start() -> Result<PgCluster, String> {
        PgCluster::start_with(false)
    }

    /// [`PgCluster::start`] with `fsync=on`: what a commit costs in production (benchmarks).
    pub fn start_durable() -> Result<PgCluster, String> {
        PgCluster::start_with(true)
    }

    fn start_with(fsync: bool) -> Result<PgCluster, String> {
        let bin = find_bin().ok_or(
            "PostgreSQL is not installed (no initdb in $RECEIPT_PG_BIN or /usr/lib/postgresql/*/bin or on PATH): \
             `apt-get install postgresql` (.ci/run does), or set RECEIPT_SKIP_PG=1 to skip these tests",
        )?;
        let as_postgres = is_root();
        reap_stale(&bin, as_postgres);
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir().map_err(|e| format!("temp dir: {e}"))?.keep();
        std::fs::write(dir.join(OWNER), std::process::id().to_string()).map_err(|e| format!("owner file: {e}"))?;
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        let c = PgCluster { fsync, bin, dir, port: free_port()?, as_postgres, next_db: AtomicU64::new(0) };
        let data = c.data();
        c.run("initdb", &["-D", &data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])?;
        c.start_again()?;
        c.admin(&format!("CREATE DATABASE {TEMPLATE}"))?;
        // The schema, made by the store itself; its connection is closed before any clone.
        drop(receipt_server::PgServerStore::connect(&c.conninfo(TEMPLATE)).map_err(|e| format!("schema: {e}"))?);
        Ok(c)
    }

    /// A cluster of `dir` (another process's) handle, for stopping it.
    fn of(bin: &Path, dir: PathBuf, as_postgres: bool) -> PgCluster {
        PgCluster { fsync: false, bin: bin.to_path_buf(), dir, port: 0, as_postgres, next_db: AtomicU64::new(0) }
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs one of the cluster's binaries (as `postgres` when we are root).
    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).current_dir(&self.dir).output().map_err(|e| format!("{}: {e}", exe.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        Err(format!(
            "{tool} {args:?} failed ({}): {}{}\n-- server log --\n{tail}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// Starts the cluster again after [`stop_immediate`](Self::stop_immediate) (same dir, port).
    pub fn start_again(&self) -> Result<(), String> {
        let durability = if self.fsync { "" } else { " -c fsync=off -c full_page_writes=off" };
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300{durability}", self.port, self.dir.display());
        let (data, log) = (self.data(), self.dir.join("log").display().to_string());
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &opts, "-w", "-t", PG_CTL_WAIT_SECS, "start"])
    }

    /// `pg_ctl stop -m immediate`: every backend is killed at once (as a crash of PostgreSQL;
    /// the next start recovers from the WAL).
    pub fn stop_immediate(&self) -> Result<(), String> {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "-t", PG_CTL_WAIT_SECS, "stop"])
    }

    fn shutdown(&self) {
        let _ = self.stop_immediate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// The unix socket's directory.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The postmaster's pid (first line of its `postmaster.pid`), while it runs: its CPU and
    /// its children's (every backend) can be read from /proc.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("data").join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The TCP port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for database `db` over the unix socket.
    pub fn conninfo(&self, db: &str) -> String {
        format!("host={} port={} user=postgres dbname={db}", self.dir.display(), self.port)
    }

    /// Runs `sql` on the `postgres` database.
    pub fn admin(&self, sql: &str) -> Result<(), String> {
        let mut c = postgres::Client::connect(&self.conninfo("postgres"), postgres::NoTls).map_err(|e| format!("connect: {e}"))?;
        c.batch_execute(sql).map_err(|e| format!("{sql}: {e}"))
    }

    /// A new database with the schema, cloned from the template. Panics if it cannot be made.
    pub fn database(&self) -> PgDb {
        let name = format!("t{}_{}", std::process::id(), self.next_db.fetch_add(1, Ordering::Relaxed));
        // The template's last connection may still be closing: CREATE DATABASE refuses a
        // template in use; retry for a bounded while.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.admin(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}")) {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline && e.contains("being accessed") => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("creating database {name}: {e}"),
            }
        }
        PgDb { conninfo: self.conninfo(&name), name }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
