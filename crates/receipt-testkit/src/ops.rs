//! Reading a server's operations listener (`/metrics`, `/livez`, `/readyz`): a blocking
//! HTTP/1.1 GET with time bounds, and a reader of Prometheus text samples.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET path` on `addr`: (status code, body). Bounded: 5 s to connect, read and write.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let limit = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(limit)).and_then(|_| s.set_write_timeout(Some(limit))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut resp = String::new();
    // The server closes after one response.
    s.take(16 << 20).read_to_string(&mut resp).map_err(|e| format!("read: {e}"))?;
    let (head, body) = resp.split_once("\r\n\r\n").ok_or_else(|| format!("no header end in {resp:?}"))?;
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// `/metrics` on `addr` (panics if it does not answer 200).
pub fn scrape(addr: SocketAddr) -> String {
    match http_get(addr, "/metrics") {
        Ok((200, body)) => body,
        other => panic!("GET /metrics on {addr}: {other:?}"),
    }
}

/// The value of the sample `series` (a name with its labels as the text spells them, e.g.
/// `receipt_requests_total{kind="send"}`) in a Prometheus text exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}
