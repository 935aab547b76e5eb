//! One client connection: the reader task (frame decoding, the login handshake, handing
//! requests to the core) and the writer task (draining the connection's outbound queue).
//!
//! Readers check the login (version, id syntax, token) themselves; only an authenticated
//! `Login` reaches the core, together with the connection's outbound queue.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::debug;
use receipt_core::codec::{encode_into, FrameDecoder};
use receipt_core::protocol::{ClientFrame, Response, ServerFrame, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use receipt_core::types::validate_id;
use receipt_core::{ChatError, ErrorCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, watch, Notify};

use crate::auth;
use crate::core::SessionId;
use crate::pipeline::CoreMsg;

pub(crate) enum OutItem {
    /// A frame from the connection task itself (a refusal): not counted against the bound.
    Frame(ServerFrame),
    /// One commit's frames for a connection, in order, how many of them are counted (not
    /// replay) and their estimated bytes: one channel push and wake-up instead of one per frame.
    Frames(Vec<Arc<ServerFrame>>, usize, usize),
    Close,
}

#[derive(Default)]
pub(crate) struct OutShared {
    /// Live frames queued and not yet written.
    pub(crate) pending: AtomicUsize,
    /// Their estimated encoded bytes ([`crate::size::frame_bytes`]).
    pub(crate) pending_bytes: AtomicUsize,
    /// Dropped as too slow: stop writing at once.
    pub(crate) killed: AtomicBool,
    /// Tells the reader that the connection is finished.
    pub(crate) closed: Notify,
    /// Tells the reader that the writer wrote the last window of the login's replay: the core
    /// may hand over the next (the replay is streamed, `core::replay`).
    pub(crate) replay_drained: Notify,
}

/// One connection's outbound queue.
#[derive(Clone)]
pub(crate) struct ConnQueue {
    pub(crate) tx: mpsc::UnboundedSender<OutItem>,
    pub(crate) shared: Arc<OutShared>,
}

impl ConnQueue {
    pub(crate) fn push(&self, frame: ServerFrame) {
        let _ = self.tx.send(OutItem::Frame(frame));
    }
    pub(crate) fn close(&self) {
        let _ = self.tx.send(OutItem::Close);
    }
}

/// The connection settings every connection shares.
pub(crate) struct ConnCfg {
    /// Checks login and renewal tokens (JWTs, [`auth::Verifier`]).
    pub(crate) tokens: auth::Verifier,
    pub(crate) idle: Duration,
    /// A valid Login must arrive within this long after the accept (slowloris bound).
    pub(crate) login_timeout: Duration,
    pub(crate) max_frame: usize,
    /// Counts refused logins and renewals (`None`: no metrics listener, nothing counted).
    pub(crate) metrics: Option<Arc<crate::metrics::Metrics>>,
}

async fn writer_task<S: AsyncWrite>(mut wr: WriteHalf<S>, mut rx: mpsc::UnboundedReceiver<OutItem>, shared: Arc<OutShared>) {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut close = false;
    // Until SyncDone is written, a written Backlog window asks for the next one.
    let (mut synced, mut wrote_backlog) = (false, false);
    while !close {
        let Some(mut item) = rx.recv().await else {
            break;
        };
        loop {
            match item {
                OutItem::Frame(f) => {
                    encode_into(&f, &mut buf);
                    // A refused login: nothing follows it.
                    if matches!(f, ServerFrame::LoginFailed { .. }) {
                        close = true;
                        break;
                    }
                }
                OutItem::Frames(frames, counted, bytes) => {
                    for f in &frames {
                        encode_into(&**f, &mut buf);
                        match **f {
                            ServerFrame::Backlog { .. } | ServerFrame::Resync { .. } => wrote_backlog = true,
                            ServerFrame::SyncDone { .. } => synced = true,
                            _ => {}
                        }
                        // A login refused by the core (device limit): nothing follows it.
                        if matches!(**f, ServerFrame::LoginFailed { .. }) {
                            close = true;
                            break;
                        }
                    }
                    shared.pending.fetch_sub(counted, Ordering::AcqRel);
                    shared.pending_bytes.fetch_sub(bytes, Ordering::AcqRel);
                    if close {
                        break;
                    }
                }
                OutItem::Close => {
                    close = true;
                    break;
                }
            }
            if buf.len() >= 64 * 1024 {
                break;
            }
            match rx.try_recv() {
                Ok(next) => item = next,
                Err(_) => break,
            }
        }
        if shared.killed.load(Ordering::Acquire) {
            break;
        }
        if !buf.is_empty() {
            if let Err(e) = wr.write_all(&buf).await {
                debug!("write failed: {e}");
                break;
            }
            buf.clear();
        }
        if wrote_backlog && !synced {
            wrote_backlog = false;
            shared.replay_drained.notify_one();
        }
    }
    let _ = wr.shutdown().await;
    shared.closed.notify_one();
}

enum Step {
    Continue,
    Stop,
}

/// Serves one accepted connection (a TCP stream, or a TLS stream over one) until it closes,
/// the peer misbehaves or the server stops.
pub(crate) async fn connection<S: AsyncRead + AsyncWrite + Send + 'static>(
    sock: S,
    session: SessionId,
    core_tx: mpsc::Sender<CoreMsg>,
    cfg: Arc<ConnCfg>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut rd, wr) = tokio::io::split(sock);
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(OutShared::default());
    let queue = ConnQueue { tx, shared: shared.clone() };
    let mut writer = tokio::spawn(writer_task(wr, rx, shared.clone()));
    let mut decoder = FrameDecoder::new(cfg.max_frame);
    let mut buf = vec![0u8; 16 * 1024];
    let mut logged_in = false;
    let mut login_user = String::new();
    let login_deadline = tokio::time::Instant::now() + cfg.login_timeout;
    // Requests decoded from one read go to the core as one item; whatever came before a bad
    // frame or a refusal is still handed over first, as if sent one by one.
    let mut frames: Vec<ClientFrame> = Vec::new();
    'conn: loop {
        // A refusal that ends the connection, sent after the requests before it were handed over.
        let mut refusal: Option<ServerFrame> = None;
        loop {
            match decoder.next_frame::<ClientFrame>() {
                Ok(Some(ClientFrame::RenewToken { req, token })) if logged_in => {
                    // Checked here, where the keys are; the session goes on either way.
                    if let Some(m) = &cfg.metrics {
                        m.renewal();
                    }
                    let answer = match cfg.tokens.verify(&login_user, &token, auth::unix_secs()) {
                        Ok(()) => ServerFrame::ok(req, Response::Done),
                        Err(e) => {
                            let e = token_error(e);
                            if let Some(m) = &cfg.metrics {
                                m.refused("renew_token", e.code.as_u32());
                            }
                            ServerFrame::err(req, e)
                        }
                    };
                    queue.push(answer);
                }
                Ok(Some(frame)) if logged_in => {
                    if matches!(frame, ClientFrame::Login { .. }) {
                        refusal = Some(ServerFrame::Error { error: ChatError::invalid_param("already logged in") });
                        break;
                    }
                    frames.push(frame);
                }
                Ok(Some(frame)) => {
                    if let ClientFrame::Login { user, .. } = &frame {
                        login_user = user.clone();
                    }
                    if let Step::Stop = login(frame, session, &mut logged_in, &core_tx, &queue, &cfg).await {
                        break 'conn;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    debug!("session {session}: bad frame: {e}");
                    refusal = Some(ServerFrame::Error { error: ChatError::from(e) });
                    break;
                }
            }
        }
        if !frames.is_empty() {
            let msg = CoreMsg::Frames { session, frames: std::mem::take(&mut frames) };
            if core_tx.send(msg).await.is_err() {
                break 'conn;
            }
        }
        if let Some(error) = refusal {
            queue.push(error);
            break 'conn;
        }
        // Before the login, the read also ends at the login deadline, however often bytes trickle in.
        let wait = if logged_in { cfg.idle } else { cfg.idle.min(login_deadline.saturating_duration_since(tokio::time::Instant::now())) };
        let read = tokio::select! {
            r = tokio::time::timeout(wait, rd.read(&mut buf)) => r,
            _ = shared.closed.notified() => break 'conn,
            _ = shutdown.changed() => break 'conn,
            _ = shared.replay_drained.notified() => {
                if core_tx.send(CoreMsg::ReplayMore { session }).await.is_err() {
                    break 'conn;
                }
                continue 'conn;
            }
        };
        match read {
            Err(_) if !logged_in && tokio::time::Instant::now() >= login_deadline => {
                queue.push(ServerFrame::Error { error: ChatError::invalid_param("login timeout: no valid Login in time") });
                break;
            }
            Err(_) => {
                queue.push(ServerFrame::Error { error: ChatError::invalid_param("idle timeout") });
                break;
            }
            Ok(Ok(0)) => {
                if let Err(e) = decoder.finish() {
                    // A half-closed peer may still read why its cut frame was refused.
                    debug!("session {session}: {e}");
                    queue.push(ServerFrame::Error { error: ChatError::from(e) });
                }
                break;
            }
            Ok(Ok(n)) => decoder.push(&buf[..n]),
            Ok(Err(e)) => {
                debug!("session {session}: read failed: {e}");
                break;
            }
        }
    }
    if logged_in {
        let _ = core_tx.send(CoreMsg::Closed { session }).await;
    }
    queue.close();
    drop(queue);
    // Let the writer flush a final Error / LoginFailed, but never wait on a peer that does not read.
    if tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
        writer.abort();
    }
}

fn login_failed(queue: &ConnQueue, cfg: &ConnCfg, code: ErrorCode, d: impl Into<String>) -> Step {
    if let Some(m) = &cfg.metrics {
        m.refused("login", code.as_u32());
    }
    queue.push(ServerFrame::LoginFailed { error: ChatError::new(code, d) });
    Step::Stop
}

/// The first frame of a connection: it must be a valid Login, which goes to the core alone
/// (with the connection's queue).
async fn login(
    frame: ClientFrame,
    session: SessionId,
    logged_in: &mut bool,
    core_tx: &mpsc::Sender<CoreMsg>,
    queue: &ConnQueue,
    cfg: &ConnCfg,
) -> Step {
    let ClientFrame::Login { v, user, device, token, .. } = &frame else {
        queue.push(ServerFrame::Error { error: ChatError::not_logged_in() });
        return Step::Stop;
    };
    // Version 1 clients still log in: they are never sent the frames they do not know (Resync).
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(v) {
        return login_failed(
            queue,
            cfg,
            ErrorCode::InvalidParam,
            format!("protocol version {v} not supported (server speaks {PROTOCOL_VERSION})"),
        );
    }
    if let Err(e) = validate_id("user", user).and_then(|_| validate_id("device", device)) {
        return login_failed(queue, cfg, ErrorCode::InvalidParam, e.description);
    }
    if let Err(e) = cfg.tokens.verify(user, token, auth::unix_secs()) {
        debug!("session {session}: login of {user} refused: {e}");
        let e = token_error(e);
        return login_failed(queue, cfg, e.code, e.description);
    }
    *logged_in = true;
    if core_tx.send(CoreMsg::Login { session, frame, queue: Some(queue.clone()) }).await.is_err() {
        return Step::Stop;
    }
    Step::Continue
}

/// A refused token as the client hears it, with the SDK's codes: missing or malformed -> 104
/// INVALID_TOKEN; a good signature past its expiry -> 108 TOKEN_EXPIRED; a bad signature -> 202
/// USER_AUTHENTICATION_FAILED, as are another user's token and another audience (the signature is
/// checked before the expiry, so a forged token learns nothing).
fn token_error(e: auth::TokenError) -> ChatError {
    let code = match e {
        auth::TokenError::Missing | auth::TokenError::Malformed => ErrorCode::InvalidToken,
        auth::TokenError::Expired => ErrorCode::TokenExpired,
        auth::TokenError::BadSignature => ErrorCode::UserAuthenticationFailed,
    };
    ChatError::new(code, e.to_string())
}
