//! The connection thread: connect (TLS or plaintext), log in, drive the engine over the socket,
//! keep-alive, and reconnect with exponential backoff.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use receipt_core::codec::{FrameDecoder, DEFAULT_MAX_FRAME};
use receipt_core::engine::ClientEvent;
use receipt_core::*;

use crate::config::ClientConfig;
use crate::session::Shared;
use crate::tls::{Conn, TlsClient};

pub(crate) fn connect(addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let mut last = std::io::Error::new(ErrorKind::NotFound, format!("{addr} resolves to nothing"));
    for candidate in addrs {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

pub(crate) enum Outcome {
    /// The connection ended; try again.
    Retry,
    /// The server refused the login: the session is over.
    Refused,
}

pub(crate) fn connection_loop(cfg: ClientConfig, tls: Option<TlsClient>, shared: Arc<Shared>) {
    let addr = cfg.server_addr();
    let mut backoff = cfg.backoff_min;
    // An offline start (the store was opened before): failures retry in the background.
    let mut ever_connected = shared.offline_start;
    while !shared.stop.load(Ordering::SeqCst) {
        shared.check_token();
        if !shared.network.load(Ordering::SeqCst) {
            let _ = shared.sleep(Duration::from_millis(200));
            shared.engine_timer();
            continue;
        }
        let attempt = connect(&addr, cfg.connect_timeout).and_then(|stream| {
            let _ = stream.set_nodelay(true);
            match &tls {
                Some(tls) => Conn::handshake(stream, tls, cfg.connect_timeout),
                None => Ok(Conn::plain(stream)),
            }
        });
        match attempt {
            Ok(conn) => {
                backoff = cfg.backoff_min;
                match run_connection(conn, &shared, &mut ever_connected) {
                    Outcome::Refused => return,
                    Outcome::Retry => {}
                }
            }
            Err(e) => {
                if e.kind() == ErrorKind::InvalidData {
                    // A certificate the settings do not trust: worth a warning, not content.
                    log::warn!("TLS to {addr} failed: {e}");
                } else {
                    log::debug!("connect to {addr} failed: {e}");
                }
                if !ever_connected {
                    // The session is over before the host hears so (see run_connection).
                    shared.stop.store(true, Ordering::SeqCst);
                    let _ = shared.events.send(ClientEvent::LoginFailed(ChatError::new(
                        ErrorCode::ServerNotReachable,
                        format!("cannot reach the server at {addr}: {e}"),
                    )));
                    let mut engine = shared.engine.lock();
                    shared.pump(&mut engine);
                    // The LoginFailed above did not come from the engine: wake for it too.
                    shared.wake();
                    shared.stop.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        shared.sleep_checking(backoff);
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

pub(crate) fn run_connection(conn: Conn, shared: &Shared, ever_connected: &mut bool) -> Outcome {
    let Ok(mut reader) = conn.try_clone_socket() else { return Outcome::Retry };
    let _ = reader.set_read_timeout(Some(Duration::from_millis(250)));
    let _ = reader.set_write_timeout(Some(Duration::from_secs(10)));
    let is_tls = conn.is_tls();
    *shared.conn.lock() = Some(conn);
    {
        let token = shared.token.lock().token.clone();
        let mut engine = shared.engine.lock();
        engine.handle_connected(shared.now(), &token);
        shared.pump(&mut engine);
    }
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut read_buf = vec![0u8; 64 * 1024];
    let mut plain = Vec::new();
    let mut outcome = Outcome::Retry;
    'conn: while !shared.stop.load(Ordering::SeqCst) && shared.network.load(Ordering::SeqCst) {
        shared.check_token();
        match reader.read(&mut read_buf) {
            Ok(0) => break,
            Ok(n) => {
                if is_tls {
                    // Decrypt under the connection's lock (writers encrypt under it too).
                    plain.clear();
                    let open = match shared.conn.lock().as_mut() {
                        Some(conn) => conn.absorb(&read_buf[..n], &mut plain),
                        None => break,
                    };
                    match open {
                        Ok(open) => {
                            decoder.push(&plain);
                            if !open {
                                log::debug!("the server closed the TLS session");
                            }
                        }
                        Err(err) => {
                            log::warn!("TLS error from the server: {err}");
                            break;
                        }
                    }
                } else {
                    decoder.push(&read_buf[..n]);
                }
                let mut engine = shared.engine.lock();
                // Handle every complete frame of this read, then write what they produced in
                // one write and forward their events: one syscall per burst, not per frame.
                let mut refused = false;
                loop {
                    let body = match decoder.next_body() {
                        Ok(Some(body)) => body,
                        Ok(None) => break,
                        Err(err) => {
                            log::warn!("bad frame from the server: {err}");
                            shared.pump(&mut engine);
                            break 'conn;
                        }
                    };
                    if let Err(err) = engine.handle_frame_bytes(shared.now(), body) {
                        log::warn!("bad frame from the server: {err}");
                        shared.pump(&mut engine);
                        break 'conn;
                    }
                    if engine.is_connected() && !*ever_connected {
                        *ever_connected = true;
                        shared.note_logged_in();
                    }
                    if engine.is_login_refused() {
                        // Before the LoginFailed event goes out, so a host that logs in again
                        // as soon as it sees it finds this session over.
                        shared.stop.store(true, Ordering::SeqCst);
                        refused = true;
                        break;
                    }
                }
                let refusal = engine.login_refusal().cloned();
                shared.pump(&mut engine);
                drop(engine);
                if refused {
                    // A refused login of a session the app took as logged in: tell it the session
                    // is over (a 206 replacement already came as the engine's own LoggedOut).
                    if let (true, Some(error)) = (*ever_connected, refusal) {
                        let tell_expired = {
                            let mut clock = shared.token.lock();
                            let due = clock.expired() && !clock.expired_told;
                            clock.expired_told |= due;
                            due
                        };
                        if tell_expired {
                            shared.emit(ClientEvent::TokenExpired);
                        }
                        log::info!("logged out by the server: code {}", error.code.as_u32());
                        shared.emit(ClientEvent::LoggedOut(error));
                    }
                    outcome = Outcome::Refused;
                    break 'conn;
                }
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                let mut engine = shared.engine.lock();
                if engine.poll_timeout().is_some_and(|t| t <= shared.now()) && !engine.handle_timeout(shared.now()) {
                    log::info!("connection idle for too long; reconnecting");
                    break;
                }
                shared.pump(&mut engine);
            }
            Err(err) => {
                log::debug!("read failed: {err}");
                break;
            }
        }
    }
    if let Some(conn) = shared.conn.lock().take() {
        conn.shutdown();
    }
    let mut engine = shared.engine.lock();
    engine.handle_disconnected(shared.now());
    shared.pump(&mut engine);
    if matches!(outcome, Outcome::Refused) {
        shared.stop.store(true, Ordering::SeqCst);
    }
    outcome
}
