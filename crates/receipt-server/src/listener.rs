//! The listening socket and the accept loop: binds with a large backlog, refuses connections
//! over `max_connections` with a `ServerBusy` error, and starts one connection task per accept.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};
use receipt_core::protocol::ServerFrame;
use receipt_core::{ChatError, ErrorCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::connection::{connection, ConnCfg};
use crate::core::SessionId;
use crate::pipeline::CoreMsg;

/// Pending connections the kernel keeps for the accept loop. `TcpListener::bind` asks for 128,
/// so a burst of connects beyond it had SYNs dropped (and the clients waited 1 s to retry).
const LISTEN_BACKLOG: u32 = 4096;

pub(crate) fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(LISTEN_BACKLOG)
}

/// Spawns the accept loop: it numbers sessions from `first` and runs until `shutdown` changes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn_accept_loop(
    listener: TcpListener,
    core_tx: mpsc::Sender<CoreMsg>,
    cfg: Arc<ConnCfg>,
    shutdown_rx: watch::Receiver<bool>,
    max_conns: usize,
    tls: Option<TlsAcceptor>,
    require_tls: bool,
    first: SessionId,
) -> JoinHandle<()> {
    let mut stop = shutdown_rx.clone();
    let open = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        let mut next: SessionId = first;
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((sock, peer)) => {
                        if open.load(Ordering::Acquire) >= max_conns {
                            // Over the cap: say why (best effort, never waiting) and close.
                            warn!("refusing {peer}: {max_conns} connections open (max_connections)");
                            if let Some(m) = &cfg.metrics {
                                m.refused("connect", ErrorCode::ServerBusy.as_u32());
                            }
                            let e = ChatError::new(ErrorCode::ServerBusy, format!("server busy: {max_conns} connections open"));
                            let _ = sock.try_write(&receipt_core::codec::encode(&ServerFrame::Error { error: e }));
                            drop(sock);
                            continue;
                        }
                        debug!("session {next}: connection from {peer}");
                        open.fetch_add(1, Ordering::AcqRel);
                        let open = open.clone();
                        let _ = sock.set_nodelay(true);
                        let (session, core_tx, cfg, shutdown_rx) = (next, core_tx.clone(), cfg.clone(), shutdown_rx.clone());
                        let tls = tls.clone();
                        let gauge = cfg.metrics.as_ref().map(|m| m.connections.clone());
                        if let Some(g) = &gauge {
                            g.inc();
                        }
                        tokio::spawn(async move {
                            serve_socket(sock, session, core_tx, cfg, shutdown_rx, tls, require_tls).await;
                            open.fetch_sub(1, Ordering::AcqRel);
                            if let Some(g) = gauge {
                                g.dec();
                            }
                        });
                        next += 1;
                    }
                    Err(e) => {
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = stop.changed() => break,
            }
        }
    })
}

/// Runs one accepted socket: plaintext, or TLS when an acceptor is set and the peer's first
/// byte opens a TLS handshake (or always, with `require_tls`). The handshake must finish within
/// the login timeout.
async fn serve_socket(
    sock: TcpStream,
    session: SessionId,
    core_tx: mpsc::Sender<CoreMsg>,
    cfg: Arc<ConnCfg>,
    shutdown_rx: watch::Receiver<bool>,
    tls: Option<TlsAcceptor>,
    require_tls: bool,
) {
    let Some(acceptor) = tls else {
        return connection(sock, session, core_tx, cfg, shutdown_rx).await;
    };
    let mut first = [0u8; 1];
    let is_tls = match tokio::time::timeout(cfg.login_timeout, sock.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == crate::tls::TLS_HANDSHAKE_BYTE,
        _ => return,
    };
    if !is_tls {
        if require_tls {
            debug!("session {session}: plaintext refused (require_tls)");
            let e = ChatError::invalid_param("this server requires TLS");
            let _ = sock.try_write(&receipt_core::codec::encode(&ServerFrame::LoginFailed { error: e }));
            return;
        }
        return connection(sock, session, core_tx, cfg, shutdown_rx).await;
    }
    match tokio::time::timeout(cfg.login_timeout, acceptor.accept(sock)).await {
        Ok(Ok(stream)) => connection(stream, session, core_tx, cfg, shutdown_rx).await,
        Ok(Err(e)) => debug!("session {session}: TLS handshake failed: {e}"),
        Err(_) => debug!("session {session}: TLS handshake timed out"),
    }
}
