//! A throwaway `nats-server` (Debian's package) on a free loopback port: [`NatsServer`]. It can
//! be stopped and started again on the same port (fault tests); dropping it kills it.
//!
//! Without the binary the start fails. `RECEIPT_SKIP_NATS=1` skips, installed or not:
//! [`NatsServer::start`] returns `None` after a loud SKIPPED line, and the caller skips its test
//! (the ohos runs set it: the cluster is not what runs on a phone).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start may take until the port accepts.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A running `nats-server` child process.
pub struct NatsServer {
    child: Option<Child>,
    bin: PathBuf,
    conf: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

/// The `nats-server` binary: on `PATH`, or Debian's `/usr/sbin/nats-server`.
pub fn nats_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    on_path.chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")]).map(|d| d.join("nats-server")).find(|p| p.is_file())
}

/// Whether the tests needing nats-server are skipped: `RECEIPT_SKIP_NATS=1`, installed or not;
/// says so loudly.
pub fn skip() -> bool {
    let skip = std::env::var("RECEIPT_SKIP_NATS").as_deref() == Ok("1");
    if skip {
        crate::loud("*** SKIPPED: RECEIPT_SKIP_NATS=1: a test needing nats-server did not run ***");
    }
    skip
}

impl NatsServer {
    /// Starts one on a free loopback port. `None` only with `RECEIPT_SKIP_NATS=1` (a SKIPPED
    /// line says so); panics otherwise if it cannot start (no binary included).
    pub fn start() -> Option<NatsServer> {
        NatsServer::start_with("")
    }

    /// [`NatsServer::start`] with `extra` appended to its config file (e.g. nats-server's
    /// `tls { ... }` and `authorization { ... }` blocks).
    pub fn start_with(extra: &str) -> Option<NatsServer> {
        if skip() {
            return None;
        }
        let Some(bin) = nats_binary() else {
            panic!("no nats-server on PATH or in /usr/sbin: install Debian's nats-server (or set RECEIPT_SKIP_NATS=1 to skip)");
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("nats.conf");
        // A message may hold a frame of up to 1 MiB (max_frame) plus its envelope.
        let text = format!("host: 127.0.0.1\nport: {port}\nmax_payload: 4MB\n{extra}\n");
        std::fs::write(&conf, text).expect("write nats.conf");
        let mut s = NatsServer { child: None, bin, conf, port, _dir: dir };
        s.launch();
        Some(s)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The running nats-server's pid (`None` while stopped): its CPU can be read from /proc.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reap it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port after [`NatsServer::stop`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "stop the nats-server first");
        self.launch();
    }

    fn launch(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            let child = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
            self.child = Some(child);
            // Accepts: up. Exited: the port may still be held by the previous run; retry.
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return;
                }
                if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.stop();
            assert!(Instant::now() < deadline, "nats-server did not accept on {addr} within {START_LIMIT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its config file (tests may read it).
    pub fn conf(&self) -> &Path {
        &self.conf
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    crate::dead_port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_accepts_stops_and_starts_again_on_its_port() {
        let Some(mut n) = NatsServer::start() else { return };
        let addr = SocketAddr::from(([127, 0, 0, 1], n.port()));
        let mut info = [0u8; 4];
        let mut s = TcpStream::connect(addr).expect("connect");
        std::io::Read::read_exact(&mut s, &mut info).expect("INFO line");
        assert_eq!(&info, b"INFO");
        n.stop();
        assert!(TcpStream::connect(addr).is_err(), "stopped");
        n.start_again();
        assert!(TcpStream::connect(addr).is_ok(), "started again on the same port");
    }
}
