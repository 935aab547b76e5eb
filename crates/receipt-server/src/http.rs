//! The operations listener: a minimal HTTP/1.1 responder for `GET /metrics`, `/livez` and
//! `/readyz` (docs/operations.md). One request per connection (`Connection: close`), at most
//! [`MAX_CONNS`] at once, a request head of at most [`MAX_HEAD`] bytes, [`TIMEOUT`] for the
//! whole exchange: a scraper or a probe needs nothing more, and nothing here can hold the
//! server's memory or tasks.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::metrics::{Health, Metrics};

/// Connections served at once; more are closed at once.
const MAX_CONNS: usize = 16;
/// Largest request head read.
const MAX_HEAD: usize = 8 << 10;
/// Longest one connection may take, reading and writing.
const TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the listener until `shutdown` changes.
pub(crate) fn spawn(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNS));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((sock, peer)) => {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            debug!("metrics listener: {peer} refused, {MAX_CONNS} connections open");
                            continue;
                        };
                        let (metrics, health) = (metrics.clone(), health.clone());
                        tokio::spawn(async move {
                            if tokio::time::timeout(TIMEOUT, serve(sock, &metrics, &health)).await.is_err() {
                                debug!("metrics listener: {peer} timed out");
                            }
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        warn!("metrics listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.changed() => break,
            }
        }
    })
}

async fn serve(mut sock: TcpStream, metrics: &Metrics, health: &Health) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return respond(&mut sock, "431 Request Header Fields Too Large", "text/plain", "request head too large\n").await;
        }
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut sock, "405 Method Not Allowed", "text/plain", "GET only\n").await;
    }
    // The query string (e.g. `/readyz?verbose`) is ignored.
    match target.split('?').next().unwrap_or("") {
        "/metrics" => respond(&mut sock, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &metrics.encode()).await,
        "/livez" => respond(&mut sock, "200 OK", "text/plain", "ok\n").await,
        "/readyz" => match health.readiness() {
            Ok(()) => respond(&mut sock, "200 OK", "text/plain", "ok\n").await,
            Err(why) => respond(&mut sock, "503 Service Unavailable", "text/plain", &format!("not ready\n{why}\n")).await,
        },
        _ => respond(&mut sock, "404 Not Found", "text/plain", "not found: /metrics, /livez, /readyz\n").await,
    }
}

async fn respond(sock: &mut TcpStream, status: &str, content_type: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    sock.shutdown().await
}
