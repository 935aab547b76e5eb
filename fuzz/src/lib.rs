//! Shared code of the fuzz targets (see `fuzz_targets/` and docs/reliability.md).
//!
//! - [`frame_decoder`]: the framing and JSON decoding of both directions.
//! - [`Harness`]: one `ClientEngine<MemStore>` driven by inbound frames (raw bytes or
//!   well-formed frames), user commands, disconnects, reconnects and restarts, with the engine's
//!   invariants checked after every step.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arbitrary::{Result, Unstructured};
use receipt_core::codec::{decode_body, encode, FrameDecoder, FrameError, DEFAULT_MAX_FRAME, HEADER_LEN};
use receipt_core::engine::{ClientEngine, ClientEvent, EngineConfig};
use receipt_core::protocol::*;
use receipt_core::store::{Conversation, MemStore};
use receipt_core::*;

pub const ME: &str = "alice";
pub const DEVICE: &str = "a1";
pub const USERS: [&str; 3] = ["alice", "bob", "carol"];
pub const GROUPS: [&str; 2] = ["g1", "g2"];
/// Message ids come from 1..=MAX_MSG (0 and MAX_MSG + 1 too, rarely), so events hit the same
/// messages.
pub const MAX_MSG: u64 = 8;

/// `RECEIPT_FUZZ_TRACE=1` prints every step to stderr (to turn a crash into a regression test).
fn trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("RECEIPT_FUZZ_TRACE").is_some())
}

macro_rules! trace {
    ($($a:tt)*) => { if trace() { eprintln!($($a)*); } };
}

// ----- frame_decoder -----

/// What a decoder made of a stream: the bodies, then either an error or the bytes left over.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    bodies: Vec<Vec<u8>>,
    end: std::result::Result<usize, FrameError>,
}

fn drain(d: &mut FrameDecoder, out: &mut Vec<Vec<u8>>) -> std::result::Result<(), FrameError> {
    while let Some(b) = d.next_body()? {
        out.push(b.to_vec());
    }
    Ok(())
}

fn decode_stream<'a>(max: usize, chunks: impl Iterator<Item = &'a [u8]>) -> Decoded {
    let mut d = FrameDecoder::new(max);
    let mut bodies = Vec::new();
    for c in chunks {
        d.push(c);
        if let Err(e) = drain(&mut d, &mut bodies) {
            return Decoded { bodies, end: Err(e) };
        }
    }
    let end = match d.finish() {
        Ok(()) => Ok(0),
        Err(FrameError::Truncated { buffered }) => {
            assert_eq!(buffered, d.buffered());
            Ok(buffered)
        }
        Err(e) => panic!("finish returned {e:?}"),
    };
    Decoded { bodies, end }
}

/// Decodes `body` as `T`; if it decodes, encoding it again and decoding that gives the same value.
fn round_trip<T>(body: &[u8]) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let f: T = decode_body(body).ok()?;
    let bytes = encode(&f);
    let len = u32::from_be_bytes(bytes[..HEADER_LEN].try_into().unwrap()) as usize;
    assert_eq!(len, bytes.len() - HEADER_LEN, "header length");
    let back: T = decode_body(&bytes[HEADER_LEN..]).unwrap_or_else(|e| panic!("re-encoded {f:?} does not decode: {e}"));
    assert_eq!(back, f, "round trip changed the frame");
    // And through a decoder, as a peer would read it.
    let mut d = FrameDecoder::default();
    d.push(&bytes);
    let again: T = d.next_frame().expect("decoder").expect("one frame");
    assert_eq!(again, f);
    d.finish().expect("nothing left over");
    Some(f)
}

/// `data[0]`: low 4 bits = how many chunk-size bytes follow, high 4 bits = frame limit
/// (0: the default 1 MiB, else n * 64 bytes). Then the chunk sizes (each byte + 1; none: byte by
/// byte), then the stream. The stream is decoded in one push and in those chunks: both must agree;
/// every body that decodes as a client or server frame must survive a round trip.
pub fn frame_decoder(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let nsizes = ((ctl & 0x0f) as usize).min(rest.len());
    let max = match ctl >> 4 {
        0 => DEFAULT_MAX_FRAME,
        n => n as usize * 64,
    };
    let (sizes, stream) = rest.split_at(nsizes);

    let whole = decode_stream(max, std::iter::once(stream));
    let mut chunks = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let n = if sizes.is_empty() { 1 } else { sizes[i % sizes.len()] as usize + 1 };
        let end = (pos + n).min(stream.len());
        chunks.push(&stream[pos..end]);
        pos = end;
        i += 1;
    }
    let chunked = decode_stream(max, chunks.into_iter());
    assert_eq!(whole, chunked, "chunking changed what the decoder produced");

    for body in &whole.bodies {
        assert!(!body.is_empty() && body.len() <= max);
        if let Some(f) = round_trip::<ClientFrame>(body) {
            let _ = f.req();
        }
        round_trip::<ServerFrame>(body);
    }
}

// ----- engine harness -----

fn pick<'a, T: ?Sized>(u: &mut Unstructured, xs: &[&'a T]) -> Result<&'a T> {
    Ok(xs[u.choose_index(xs.len())?])
}

fn msg_id(u: &mut Unstructured) -> Result<MsgId> {
    u.int_in_range(0..=MAX_MSG + 1)
}

fn chat_type(u: &mut Unstructured) -> Result<ChatType> {
    Ok(match u.int_in_range(0..=5u8)? {
        0..=2 => ChatType::Chat,
        3 | 4 => ChatType::GroupChat,
        _ => ChatType::ChatRoom,
    })
}

fn small_string(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => String::new(),
        1 => "hi".into(),
        2 => "x".repeat(MAX_CONTENT_BYTES + 1),
        _ => {
            let n = u.int_in_range(0..=8)?;
            String::from_utf8_lossy(u.bytes(n.min(u.len()))?).into_owned()
        }
    })
}

/// Little-endian u16 from the next two bytes (0 when the input is exhausted).
pub fn u16le(u: &mut Unstructured) -> u16 {
    let lo: u8 = u.arbitrary().unwrap_or(0);
    let hi: u8 = u.arbitrary().unwrap_or(0);
    u16::from_le_bytes([lo, hi])
}

/// Everything the engine holds that must survive a restart.
#[derive(Debug, PartialEq, Eq)]
struct Persisted {
    cursor: Seq,
    conversations: Vec<Conversation>,
    messages: Vec<ChatMessage>,
    outbox: Vec<ClientFrame>,
}

/// A client engine for `alice` on device `a1` and what its app and the wire have seen of it.
pub struct Harness {
    opts: ChatOptions,
    pub engine: ClientEngine<MemStore>,
    pub now: u64,
    /// The transport is up (handle_connected called, handle_disconnected not since).
    connected: bool,
    /// Connection number, for "resent after a reconnect".
    epoch: u64,
    /// Every ack put on the wire: (kind, msg) -> req -> epoch of its last transmission.
    acks: BTreeMap<(AckKind, MsgId), BTreeMap<ReqId, u64>>,
    /// Requests the server answered with an error (a refused ack may be made again).
    refused: BTreeSet<ReqId>,
    /// The unread count the app was last told, per conversation.
    reported: HashMap<ConversationKey, u32>,
    /// Requests seen on the wire, so that well-formed `Result`s can answer real requests.
    pub sent_reqs: Vec<ReqId>,
    /// Client ids of messages sent, so that `Sent` answers and echoes can match them.
    pub client_ids: Vec<String>,
    decoder: FrameDecoder,
}

impl Harness {
    /// A fresh engine (options from one byte), connected.
    pub fn new(u: &mut Unstructured) -> Result<Self> {
        let flags: u8 = u.arbitrary()?;
        let opts = ChatOptions { require_delivery_ack: flags & 1 != 0, require_read_ack: flags & 2 == 0, ..Default::default() };
        let engine = ClientEngine::open(EngineConfig::new(ME, DEVICE, opts.clone()), MemStore::default()).expect("MemStore opens");
        let mut h = Harness {
            opts,
            engine,
            now: 1_700_000_000_000,
            connected: false,
            epoch: 0,
            acks: BTreeMap::new(),
            refused: BTreeSet::new(),
            reported: HashMap::new(),
            sent_reqs: Vec::new(),
            client_ids: Vec::new(),
            decoder: FrameDecoder::default(),
        };
        h.connect();
        Ok(h)
    }

    pub fn connect(&mut self) {
        trace!("connect");
        if self.connected {
            self.disconnect();
        }
        self.now += 1;
        self.epoch += 1;
        self.connected = true;
        self.decoder = FrameDecoder::default();
        self.engine.handle_connected(self.now, "token");
        self.settle();
    }

    pub fn disconnect(&mut self) {
        trace!("disconnect");
        self.now += 1;
        self.connected = false;
        self.engine.handle_disconnected(self.now);
        self.settle();
    }

    fn persisted(&self) -> Persisted {
        let mut conversations: Vec<Conversation> = self.engine.conversations().cloned().collect();
        conversations.sort_by(|a, b| a.key.cmp(&b.key));
        let messages = conversations.iter().flat_map(|c| self.engine.conversation_messages(&c.key)).collect();
        Persisted { cursor: self.engine.cursor(), conversations, messages, outbox: self.engine.outbox().cloned().collect() }
    }

    /// The process dies and starts again on the same store: everything persisted comes back.
    pub fn restart(&mut self) {
        trace!("restart");
        let before = self.persisted();
        let disk = self.engine.store().clone();
        self.engine = ClientEngine::open(EngineConfig::new(ME, DEVICE, self.opts.clone()), disk).expect("MemStore reopens");
        assert_eq!(self.persisted(), before, "state lost or changed across a restart");
        self.connected = false;
        self.epoch += 1;
        // The app starts again too: it reads the counts afresh.
        self.reported = self.engine.conversations().map(|c| (c.key.clone(), self.engine.unread_count(&c.key))).collect();
        self.check();
    }

    /// One well-formed frame from the server.
    pub fn frame(&mut self, f: ServerFrame) {
        if !self.connected {
            self.connect();
        }
        self.note_inbound(&f);
        trace!("frame {f:?}");
        self.engine.handle_frame(self.now, f);
        self.settle();
    }

    fn note_inbound(&mut self, f: &ServerFrame) {
        if let ServerFrame::Result { req, err: Some(_), .. } = f {
            self.refused.insert(*req);
        }
    }

    /// Raw bytes from the socket: framed by a `FrameDecoder`, each body through
    /// `handle_frame_bytes`. A bad frame closes the connection, as the runtime does.
    pub fn bytes(&mut self, chunk: &[u8]) {
        if !self.connected {
            self.connect();
        }
        self.decoder.push(chunk);
        loop {
            let body = match self.decoder.next_body() {
                Ok(Some(b)) => b.to_vec(),
                Ok(None) => return,
                Err(_) => return self.disconnect(),
            };
            if let Ok(f) = decode_body::<ServerFrame>(&body) {
                self.note_inbound(&f);
                trace!("frame bytes {f:?}");
            } else {
                trace!("frame bytes {:?}", String::from_utf8_lossy(&body));
            }
            let r = self.engine.handle_frame_bytes(self.now, &body);
            self.settle();
            if r.is_err() {
                return self.disconnect();
            }
            if !self.connected {
                return; // login refused: the runtime closed the connection
            }
        }
    }

    /// Drains the engine's outputs, checking the wire and the app's view, then the invariants.
    fn settle(&mut self) {
        while let Some(f) = self.engine.poll_transmit(self.now) {
            trace!("  -> {f:?}");
            assert!(self.connected, "frame transmitted while disconnected: {f:?}");
            if let Some(req) = f.req() {
                self.sent_reqs.push(req);
            }
            let ack = match &f {
                ClientFrame::DeliveryAck { req, msg_id } => Some((AckKind::Delivery, *msg_id, *req)),
                ClientFrame::ReadAck { req, msg_id, .. } => Some((AckKind::Read, *msg_id, *req)),
                ClientFrame::GroupAck { req, msg_id, .. } => Some((AckKind::Group, *msg_id, *req)),
                ClientFrame::Send { client_id, .. } => {
                    if !self.client_ids.contains(client_id) {
                        self.client_ids.push(client_id.clone());
                    }
                    None
                }
                _ => None,
            };
            if let Some((kind, msg, req)) = ack {
                let seen = self.acks.entry((kind, msg)).or_default();
                if let Some(&epoch) = seen.get(&req) {
                    assert_ne!(epoch, self.epoch, "{kind:?} ack of message {msg} (req {req}) transmitted twice on one connection");
                }
                for &other in seen.keys() {
                    assert!(
                        other == req || self.refused.contains(&other),
                        "{kind:?} ack of message {msg} transmitted again as req {req}, after req {other} that was not refused"
                    );
                }
                seen.insert(req, self.epoch);
            }
        }
        let mut refused_login = false;
        while let Some(e) = self.engine.poll_event() {
            trace!("  event {e:?}");
            match e {
                ClientEvent::UnreadCountChanged { conversation, unread } => {
                    self.reported.insert(conversation, unread);
                }
                // Both end the session: the runtime closes the connection and does not reconnect.
                ClientEvent::LoginFailed(_) | ClientEvent::LoggedOut(_) => refused_login = true,
                _ => {}
            }
        }
        self.check();
        if refused_login && self.connected {
            self.disconnect();
        }
    }

    /// The invariants that hold after every input.
    pub fn check(&self) {
        for c in self.engine.conversations() {
            let msgs = self.engine.conversation_messages(&c.key);
            let unread = msgs.iter().filter(|m| m.unread).count() as u32;
            assert_eq!(c.local_unread, unread, "local unread count of {:?} vs messages flagged unread: {c:?} {msgs:?}", c.key);
            assert!(msgs.iter().all(|m| m.conversation() == c.key), "{:?} holds {msgs:?}", c.key);
            let count = self.engine.unread_count(&c.key);
            assert_eq!(count, c.unread());
            let told = self.reported.get(&c.key).copied().unwrap_or(0);
            assert_eq!(told, count, "the app was told {told} unread for {:?}, the engine counts {count}: {c:?}", c.key);
        }
    }

    /// One user command (or a connection change, a restart, time passing).
    pub fn command(&mut self, u: &mut Unstructured) -> Result<()> {
        let now = self.now;
        let e = &mut self.engine;
        macro_rules! cmd {
            ($m:ident($($a:expr),*)) => {{
                let r = e.$m(now, $($a),*);
                trace!("{}({:?}) = {r:?}", stringify!($m), ($(&$a),*));
            }};
        }
        match u.int_in_range(0..=13u8)? {
            0 => {
                let to = pick(u, &["bob", "carol", "alice", "g1", "g2", ""])?;
                let (t, content, need_group_ack) = (chat_type(u)?, small_string(u)?, u.arbitrary::<bool>()?);
                cmd!(send_message(to, t, &content, need_group_ack));
            }
            1 => {
                let id = msg_id(u)?;
                cmd!(ack_message_read(id));
            }
            2 => {
                let conversation = pick(u, &["bob", "carol", "alice", "g1", "g2", "nobody"])?;
                cmd!(ack_conversation_read(conversation));
            }
            3 => {
                let ext = if u.arbitrary()? { Some(small_string(u)?) } else { None };
                let id = msg_id(u)?;
                cmd!(ack_group_message_read(id, ext.as_deref()));
            }
            4 => {
                let start = if u.arbitrary()? { Some(u.int_in_range(0..=20)?) } else { None };
                let (id, size) = (msg_id(u)?, u.int_in_range(0..=101)?);
                cmd!(fetch_group_read_acks(id, size, start));
            }
            5 => {
                let id = msg_id(u)?;
                cmd!(mark_message_read(id));
            }
            6 => {
                let key = ConversationKey::new(chat_type(u)?, pick(u, &["bob", "carol", "alice", "g1", "g2"])?);
                cmd!(mark_all_messages_read(&key));
            }
            7 => {
                let members: Vec<UserId> = vec!["bob".into(), "carol".into()];
                match u.int_in_range(0..=3u8)? {
                    0 => {
                        let room = u.arbitrary::<bool>()?;
                        cmd!(create_group("grp", &members, room))
                    }
                    1 => cmd!(add_group_members("g1", &members)),
                    2 => cmd!(remove_group_members("g1", &members)),
                    _ => cmd!(set_group_role("g1", "bob", GroupRole::Admin)),
                };
            }
            8 => {
                self.now += u.int_in_range(0..=70_000)?;
                trace!("timeout at {}", self.now);
                if self.engine.poll_timeout().is_some_and(|t| t <= self.now) && !self.engine.handle_timeout(self.now) {
                    self.disconnect();
                }
            }
            9 => self.disconnect(),
            10 => self.connect(),
            11 => self.restart(),
            12 => self.now += u.int_in_range(0..=5_000)?,
            _ => {
                let _ = e.message(&msg_id(u)?.to_string());
            }
        }
        self.settle();
        Ok(())
    }

    // ----- well-formed frames -----

    fn user(u: &mut Unstructured) -> Result<String> {
        Ok(pick(u, &USERS)?.to_string())
    }

    fn peer_or_group(u: &mut Unstructured) -> Result<String> {
        Ok(pick(u, &["alice", "bob", "carol", "g1", "g2"])?.to_string())
    }

    fn client_id(&self, u: &mut Unstructured) -> Result<String> {
        if !self.client_ids.is_empty() && u.ratio(3, 4)? {
            return Ok(u.choose(&self.client_ids)?.clone());
        }
        Ok(format!("{}-{}", pick(u, &["a1", "a2", "b1"])?, u.int_in_range(1..=4u8)?))
    }

    fn req(&self, u: &mut Unstructured) -> Result<ReqId> {
        if !self.sent_reqs.is_empty() && u.ratio(7, 8)? {
            return Ok(*u.choose(&self.sent_reqs)?);
        }
        u.int_in_range(0..=20)
    }

    fn group_ack(u: &mut Unstructured) -> Result<GroupReadAck> {
        Ok(GroupReadAck {
            ack_id: u.int_in_range(0..=20)?,
            msg_id: msg_id(u)?,
            from: Self::user(u)?,
            content: if u.arbitrary()? { Some("ext".into()) } else { None },
            count: u.int_in_range(0..=4)?,
            timestamp: u.int_in_range(0..=10)?,
        })
    }

    /// A message with fields from small ranges.
    fn message(&self, u: &mut Unstructured) -> Result<std::sync::Arc<WireMessage>> {
        let from = Self::user(u)?;
        let t = chat_type(u)?;
        let to = if t == ChatType::Chat { Self::user(u)? } else { pick(u, &GROUPS)?.to_string() };
        Ok(std::sync::Arc::new(WireMessage {
            id: msg_id(u)?,
            client_id: self.client_id(u)?,
            from,
            to,
            chat_type: t,
            content: "m".into(),
            timestamp: u.int_in_range(0..=10)?,
            require_delivery_ack: u.arbitrary()?,
            need_group_ack: u.arbitrary()?,
        }))
    }

    fn event(&self, u: &mut Unstructured) -> Result<ServerEvent> {
        Ok(match u.int_in_range(0..=10u8)? {
            0..=2 => ServerEvent::Message { msg: self.message(u)? },
            3 => ServerEvent::Delivered { msg_id: msg_id(u)?, from: Self::user(u)?, to: Self::user(u)?, by: Self::user(u)?, timestamp: 1 },
            4 => ServerEvent::Read { msg_id: msg_id(u)?, from: Self::user(u)?, to: Self::user(u)?, by: Self::user(u)?, timestamp: 1 },
            5 => ServerEvent::ConversationRead {
                chat_type: chat_type(u)?,
                from: Self::user(u)?,
                to: Self::peer_or_group(u)?,
                up_to: msg_id(u)?,
                timestamp: 1,
                device: pick(u, &["a1", "a2", "b1", ""])?.to_string(),
            },
            6 => ServerEvent::GroupRead { group: pick(u, &GROUPS)?.to_string(), sender: Self::user(u)?, ack: Self::group_ack(u)? },
            7 | 8 => ServerEvent::ReadState {
                chat_type: chat_type(u)?,
                conversation: Self::peer_or_group(u)?,
                msg_id: if u.arbitrary()? { Some(msg_id(u)?) } else { None },
                up_to: msg_id(u)?,
            },
            10 => ServerEvent::GroupDelivered { group: pick(u, &GROUPS)?.to_string(), sender: Self::user(u)?, ack: Self::group_ack(u)? },
            _ => ServerEvent::Membership {
                group: pick(u, &GROUPS)?.to_string(),
                role: if u.arbitrary()? { Some(GroupRole::Member) } else { None },
                chat_room: u.arbitrary()?,
            },
        })
    }

    fn seq_event(&self, u: &mut Unstructured) -> Result<SeqEvent> {
        let cursor = self.engine.cursor();
        let seq = if u.ratio(7, 8)? { cursor + 1 } else { u.int_in_range(0..=cursor + 2)? };
        Ok(SeqEvent { seq, event: self.event(u)?.into() })
    }

    fn error(u: &mut Unstructured) -> Result<ChatError> {
        Ok(ChatError::new(*u.choose(&ErrorCode::ALL)?, "refused"))
    }

    fn response(&self, u: &mut Unstructured) -> Result<Response> {
        Ok(match u.int_in_range(0..=3u8)? {
            0 => Response::Done,
            1 => Response::Sent {
                client_id: self.client_id(u)?,
                msg_id: msg_id(u)?,
                timestamp: u.int_in_range(0..=10)?,
                need_group_ack: u.arbitrary()?,
                require_delivery_ack: u.arbitrary()?,
            },
            2 => {
                let n = u.int_in_range(0..=3)?;
                let data = (0..n).map(|_| Self::group_ack(u)).collect::<Result<Vec<_>>>()?;
                Response::GroupAcks { msg_id: msg_id(u)?, page: CursorResult { data, cursor: String::new() } }
            }
            _ => Response::GroupCreated { group: pick(u, &GROUPS)?.to_string() },
        })
    }

    /// A well-formed server frame with fields from small ranges.
    pub fn gen_frame(&self, u: &mut Unstructured) -> Result<ServerFrame> {
        Ok(match u.int_in_range(0..=15u8)? {
            0 => ServerFrame::LoginOk { v: PROTOCOL_VERSION, user: ME.into(), device: DEVICE.into(), server_time: 1 },
            1 => {
                let n = u.int_in_range(0..=4)?;
                let mut events = Vec::with_capacity(n);
                let mut seq = self.engine.cursor();
                for _ in 0..n {
                    seq = if u.ratio(7, 8)? { seq + 1 } else { u.int_in_range(0..=seq + 2)? };
                    events.push(SeqEvent { seq, event: self.event(u)?.into() });
                }
                ServerFrame::Backlog { events }
            }
            2 | 3 => {
                let n = u.int_in_range(0..=3)?;
                let mut conversations = Vec::with_capacity(n);
                for _ in 0..n {
                    conversations.push(ConversationState {
                        chat_type: chat_type(u)?,
                        id: Self::peer_or_group(u)?,
                        unread: u.int_in_range(0..=5)?,
                    });
                }
                ServerFrame::SyncDone { head: self.engine.cursor(), conversations, resync: false }
            }
            4..=9 => ServerFrame::Event { event: self.seq_event(u)? },
            10..=12 => {
                let req = self.req(u)?;
                match u.int_in_range(0..=5u8)? {
                    0..=2 => ServerFrame::ok(req, self.response(u)?),
                    3 | 4 => ServerFrame::err(req, Self::error(u)?),
                    _ => ServerFrame::Result { req, ok: None, err: None },
                }
            }
            13 => ServerFrame::Pong { nonce: 1 },
            14 => ServerFrame::Error { error: Self::error(u)? },
            _ => match u.int_in_range(0..=7u8)? {
                0 | 1 => ServerFrame::LoginFailed { error: Self::error(u)? },
                // A full state resync: pages of retained messages with arbitrary flags, ended by
                // a `SyncDone { resync: true }` (case 2 | 3 or here).
                2..=4 => {
                    let n = u.int_in_range(0..=3)?;
                    let mut messages = Vec::with_capacity(n);
                    for _ in 0..n {
                        messages.push(RetainedMessage {
                            msg: self.message(u)?,
                            delivered: u.arbitrary()?,
                            read_acked: u.arbitrary()?,
                            read: u.arbitrary()?,
                            group_ack_sent: u.arbitrary()?,
                            group_ack_count: u.int_in_range(0..=3)?,
                            group_delivered_count: u.int_in_range(0..=3)?,
                        });
                    }
                    ServerFrame::Resync { messages }
                }
                5 => ServerFrame::SyncDone { head: self.engine.cursor() + u.int_in_range(0..=3)?, conversations: Vec::new(), resync: true },
                _ => ServerFrame::Pong { nonce: 2 },
            },
        })
    }
}

/// engine_inbound: after a flags byte, ops: `< 0xa0`: a chunk of raw socket bytes
/// (u16 little-endian length, then the bytes), else one [`Harness::command`].
pub fn engine_inbound(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(mut h) = Harness::new(&mut u) else { return };
    while !u.is_empty() {
        let Ok(op) = u.arbitrary::<u8>() else { return };
        if op < 0xa0 {
            let n = (u16le(&mut u) as usize).min(u.len());
            let Ok(chunk) = u.bytes(n) else { return };
            h.bytes(chunk);
        } else if h.command(&mut u).is_err() {
            return;
        }
    }
}

/// engine_frames: well-formed frames (built from the input) and commands, in any order.
pub fn engine_frames(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(mut h) = Harness::new(&mut u) else { return };
    while !u.is_empty() {
        let step = if u.ratio(2, 3).unwrap_or(false) { h.gen_frame(&mut u).map(|f| h.frame(f)) } else { h.command(&mut u) };
        if step.is_err() {
            return;
        }
    }
}
