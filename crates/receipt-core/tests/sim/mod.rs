//! A reference model of the server and a lossless in-order network, for driving real client
//! engines in tests. It is deliberately simple (and slow where that keeps it obviously right):
//! unread counts are recomputed from scratch, not maintained.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use receipt_core::engine::{ClientEngine, ClientEvent, EngineConfig};
use receipt_core::protocol::*;
use receipt_core::store::MemStore;
use receipt_core::*;

pub const GROUP: &str = "g1";

#[derive(Default)]
pub struct SimServer {
    pub messages: BTreeMap<MsgId, WireMessage>,
    pub by_client_id: HashMap<(UserId, String), (MsgId, u64)>,
    pub logs: HashMap<UserId, Vec<ServerEvent>>,
    pub delivered: BTreeSet<MsgId>,
    pub read: BTreeSet<MsgId>,
    pub group_acks: BTreeMap<MsgId, Vec<GroupReadAck>>,
    /// (user, conversation) -> watermark
    pub watermarks: HashMap<(UserId, ConversationKey), MsgId>,
    /// (user, message) read one by one
    pub read_one: BTreeSet<(UserId, MsgId)>,
    pub groups: BTreeMap<GroupId, Vec<UserId>>,
    pub group_acks_enabled: bool,
    pub next_id: u64,
    pub now: u64,
    /// Acks the server forwarded, for "never forwarded twice" checks: (kind, msg, acker) -> count.
    pub forwarded: BTreeMap<(AckKind, MsgId, UserId), u32>,
    /// Online sessions: device -> (user, outbound queue).
    pub sessions: HashMap<DeviceId, (UserId, VecDeque<ServerFrame>)>,
}

impl SimServer {
    pub fn new() -> Self {
        SimServer { next_id: 0, now: 1_000, group_acks_enabled: true, ..Default::default() }
    }

    fn append(&mut self, user: &str, e: ServerEvent) {
        let log = self.logs.entry(user.to_string()).or_default();
        log.push(e.clone());
        let seq = log.len() as Seq;
        for (_, (u, q)) in self.sessions.iter_mut() {
            if u == user {
                q.push_back(ServerFrame::Event { event: SeqEvent { seq, event: e.clone().into() } });
            }
        }
    }

    pub fn unread(&self, user: &str, key: &ConversationKey) -> u32 {
        let wm = self.watermarks.get(&(user.to_string(), key.clone())).copied().unwrap_or(0);
        self.messages
            .values()
            .filter(|m| m.from != user && m.conversation_for(user) == *key)
            .filter(|m| m.chat_type != ChatType::Chat || m.to == user)
            .filter(|m| m.id > wm && !self.read_one.contains(&(user.to_string(), m.id)))
            .count() as u32
    }

    pub fn conversations_of(&self, user: &str) -> BTreeSet<ConversationKey> {
        self.messages
            .values()
            .filter(|m| m.from == user || m.to == user || self.groups.get(&m.to).is_some_and(|g| g.iter().any(|x| x == user)))
            .map(|m| m.conversation_for(user))
            .collect()
    }

    fn latest(&self, user: &str, key: &ConversationKey) -> MsgId {
        self.messages.values().filter(|m| m.conversation_for(user) == *key).map(|m| m.id).max().unwrap_or(0)
    }

    pub fn connect(&mut self, device: &str) {
        self.sessions.remove(device);
    }

    pub fn disconnect(&mut self, device: &str) {
        self.sessions.remove(device);
    }

    /// Handles a frame from `device`; answers go to that device's queue.
    pub fn handle(&mut self, device: &str, f: ClientFrame) {
        self.now += 1;
        if let ClientFrame::Login { user, since, .. } = &f {
            let log = self.logs.get(user).cloned().unwrap_or_default();
            let mut q = VecDeque::new();
            q.push_back(ServerFrame::LoginOk { v: PROTOCOL_VERSION, user: user.clone(), device: device.into(), server_time: self.now });
            let events: Vec<SeqEvent> = log
                .iter()
                .enumerate()
                .map(|(i, e)| SeqEvent { seq: i as Seq + 1, event: e.clone().into() })
                .filter(|e| e.seq > *since)
                .collect();
            for chunk in events.chunks(3) {
                q.push_back(ServerFrame::Backlog { events: chunk.to_vec() });
            }
            let conversations = self
                .conversations_of(user)
                .into_iter()
                .map(|k| ConversationState { unread: self.unread(user, &k), chat_type: k.chat_type, id: k.id })
                .collect();
            q.push_back(ServerFrame::SyncDone { head: log.len() as Seq, conversations });
            self.sessions.insert(device.to_string(), (user.clone(), q));
            return;
        }
        let Some((user, _)) = self.sessions.get(device) else { return };
        let user = user.clone();
        let Some(req) = f.req() else { return };
        let answer = match self.request(&user, device, f) {
            Ok(r) => ServerFrame::ok(req, r),
            Err(e) => ServerFrame::err(req, e),
        };
        if let Some((_, q)) = self.sessions.get_mut(device) {
            q.push_back(answer);
        }
    }

    fn request(&mut self, user: &str, device: &str, f: ClientFrame) -> Result<Response, ChatError> {
        let now = self.now;
        match f {
            ClientFrame::Send { client_id, to, chat_type, content, require_delivery_ack, need_group_ack, .. } => {
                if let Some(&(msg_id, timestamp)) = self.by_client_id.get(&(user.to_string(), client_id.clone())) {
                    return Ok(Response::Sent { client_id, msg_id, timestamp, need_group_ack: self.messages[&msg_id].need_group_ack });
                }
                let members = if chat_type == ChatType::Chat {
                    vec![to.clone()]
                } else {
                    let g = self.groups.get(&to).ok_or_else(|| ChatError::new(ErrorCode::GroupInvalidId, "no group"))?;
                    if !g.iter().any(|m| m == user) {
                        return Err(ChatError::new(ErrorCode::GroupNotJoined, "not a member"));
                    }
                    g.iter().filter(|m| *m != user).cloned().collect()
                };
                self.next_id += 1;
                let msg = WireMessage {
                    id: self.next_id,
                    client_id: client_id.clone(),
                    from: user.to_string(),
                    to,
                    chat_type,
                    content,
                    timestamp: now,
                    require_delivery_ack: require_delivery_ack && chat_type == ChatType::Chat,
                    need_group_ack: need_group_ack && chat_type == ChatType::GroupChat,
                };
                self.messages.insert(msg.id, msg.clone());
                self.by_client_id.insert((user.to_string(), client_id.clone()), (msg.id, now));
                for m in members {
                    self.append(&m, ServerEvent::Message { msg: msg.clone().into() });
                }
                self.append(user, ServerEvent::Message { msg: msg.clone().into() });
                Ok(Response::Sent { client_id, msg_id: msg.id, timestamp: now, need_group_ack: msg.need_group_ack })
            }
            ClientFrame::DeliveryAck { msg_id, .. } | ClientFrame::ReadAck { msg_id, .. } => {
                let read = matches!(f, ClientFrame::ReadAck { .. });
                let m = self.messages.get(&msg_id).cloned().ok_or_else(|| ChatError::invalid_message("unknown"))?;
                if m.chat_type != ChatType::Chat || m.from == user {
                    return Err(ChatError::wrong_type("wrong type"));
                }
                if m.to != user {
                    return Err(ChatError::invalid_message("not yours"));
                }
                let set = if read { &mut self.read } else { &mut self.delivered };
                if !set.insert(msg_id) {
                    return Ok(Response::Done);
                }
                let kind = if read { AckKind::Read } else { AckKind::Delivery };
                *self.forwarded.entry((kind, msg_id, user.to_string())).or_default() += 1;
                let e = if read {
                    self.read_one.insert((user.to_string(), msg_id));
                    ServerEvent::Read { msg_id, from: m.from.clone(), to: m.to.clone(), by: user.to_string(), timestamp: now }
                } else {
                    ServerEvent::Delivered { msg_id, from: m.from.clone(), to: m.to.clone(), by: user.to_string(), timestamp: now }
                };
                self.append(&m.from, e.clone());
                self.append(user, e);
                Ok(Response::Done)
            }
            ClientFrame::ConversationAck { chat_type, conversation, .. } => {
                let key = ConversationKey::new(chat_type, &conversation);
                let up_to = self.latest(user, &key);
                let wm = self.watermarks.entry((user.to_string(), key.clone())).or_default();
                if up_to <= *wm {
                    return Ok(Response::Done);
                }
                *wm = up_to;
                let e = ServerEvent::ConversationRead {
                    chat_type,
                    from: user.to_string(),
                    to: conversation.clone(),
                    up_to,
                    timestamp: now,
                    device: device.into(),
                };
                if chat_type == ChatType::Chat {
                    self.append(&conversation, e.clone());
                }
                self.append(user, e);
                Ok(Response::Done)
            }
            ClientFrame::GroupAck { msg_id, ext, .. } => {
                let m = self.messages.get(&msg_id).cloned().ok_or_else(|| ChatError::invalid_message("unknown"))?;
                if m.chat_type != ChatType::GroupChat || m.from == user {
                    return Err(ChatError::wrong_type("wrong type"));
                }
                if !self.group_acks_enabled || !m.need_group_ack {
                    return Err(ChatError::new(ErrorCode::FeatureNotEnabled, "off"));
                }
                let acks = self.group_acks.entry(msg_id).or_default();
                if acks.iter().any(|a| a.from == user) {
                    return Ok(Response::Done);
                }
                self.next_id += 1;
                let ack = GroupReadAck {
                    ack_id: self.next_id,
                    msg_id,
                    from: user.to_string(),
                    content: ext,
                    count: acks.len() as u32 + 1,
                    timestamp: now,
                };
                acks.push(ack.clone());
                *self.forwarded.entry((AckKind::Group, msg_id, user.to_string())).or_default() += 1;
                self.read_one.insert((user.to_string(), msg_id));
                let e = ServerEvent::GroupRead { group: m.to.clone(), sender: m.from.clone(), ack };
                self.append(&m.from, e.clone());
                self.append(user, e);
                Ok(Response::Done)
            }
            ClientFrame::MarkRead { chat_type, conversation, msg_id, .. } => {
                let key = ConversationKey::new(chat_type, &conversation);
                let up_to = match msg_id {
                    Some(id) => {
                        self.read_one.insert((user.to_string(), id));
                        0
                    }
                    None => {
                        let up_to = self.latest(user, &key);
                        let wm = self.watermarks.entry((user.to_string(), key)).or_default();
                        *wm = (*wm).max(up_to);
                        up_to
                    }
                };
                self.append(user, ServerEvent::ReadState { chat_type, conversation, msg_id, up_to });
                Ok(Response::Done)
            }
            ClientFrame::FetchGroupAcks { msg_id, page_size, start_ack_id, .. } => {
                let mut acks: Vec<GroupReadAck> = self.group_acks.get(&msg_id).cloned().unwrap_or_default();
                acks.reverse();
                let acks: Vec<GroupReadAck> = acks.into_iter().filter(|a| start_ack_id.is_none_or(|s| a.ack_id <= s)).collect();
                let data: Vec<GroupReadAck> = acks.iter().take(page_size as usize).cloned().collect();
                let cursor = acks.get(page_size as usize).map(|a| a.ack_id.to_string()).unwrap_or_default();
                Ok(Response::GroupAcks { msg_id, page: CursorResult { data, cursor } })
            }
            _ => Err(ChatError::invalid_param("not modelled")),
        }
    }
}

/// One device: a real engine over a MemStore whose clone plays the disk.
pub struct Device {
    pub user: UserId,
    pub name: DeviceId,
    pub options: ChatOptions,
    pub engine: ClientEngine<MemStore>,
    pub online: bool,
    pub events: Vec<ClientEvent>,
    /// Every ack request this device put on the wire: (kind, msg) -> distinct reqs.
    pub ack_reqs: BTreeMap<(AckKind, MsgId), BTreeSet<ReqId>>,
}

impl Device {
    pub fn new(user: &str, name: &str, options: ChatOptions) -> Self {
        let engine = ClientEngine::open(EngineConfig::new(user, name, options.clone()), MemStore::default()).unwrap();
        Device { user: user.into(), name: name.into(), options, engine, online: false, events: Vec::new(), ack_reqs: BTreeMap::new() }
    }

    /// Simulates a process restart: state comes back from the "disk" only.
    pub fn restart(&mut self) {
        let disk = self.engine.store().clone();
        self.engine = ClientEngine::open(EngineConfig::new(&self.user, &self.name, self.options.clone()), disk).unwrap();
        self.online = false;
    }

    pub fn drain_events(&mut self) {
        while let Some(e) = self.engine.poll_event() {
            self.events.push(e);
        }
    }

    pub fn take_events(&mut self) -> Vec<ClientEvent> {
        self.drain_events();
        std::mem::take(&mut self.events)
    }
}

/// Server plus devices, with an in-order lossless network.
pub struct World {
    pub server: SimServer,
    pub devices: Vec<Device>,
    pub now: u64,
}

impl World {
    pub fn new(devices: &[(&str, &str, ChatOptions)]) -> Self {
        World { server: SimServer::new(), devices: devices.iter().map(|(u, d, o)| Device::new(u, d, o.clone())).collect(), now: 1 }
    }

    pub fn dev(&mut self, name: &str) -> &mut Device {
        self.devices.iter_mut().find(|d| d.name == name).expect("device")
    }

    pub fn connect(&mut self, i: usize) {
        self.now += 1;
        let d = &mut self.devices[i];
        if d.online {
            return;
        }
        d.online = true;
        self.server.connect(&d.name);
        d.engine.handle_connected(self.now, "token");
    }

    pub fn disconnect(&mut self, i: usize) {
        self.now += 1;
        let d = &mut self.devices[i];
        if !d.online {
            return;
        }
        d.online = false;
        self.server.disconnect(&d.name);
        d.engine.handle_disconnected(self.now);
    }

    pub fn restart(&mut self, i: usize) {
        let name = self.devices[i].name.clone();
        self.server.disconnect(&name);
        self.devices[i].restart();
    }

    /// Moves frames both ways until nothing moves (bounded).
    pub fn pump(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                return;
            }
        }
        panic!("network did not settle");
    }

    /// One round: every online device sends what it has, then gets what is queued for it.
    pub fn step(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.devices.len() {
            self.now += 1;
            let now = self.now;
            if !self.devices[i].online {
                continue;
            }
            while let Some(f) = self.devices[i].engine.poll_transmit(now) {
                moved = true;
                let d = &mut self.devices[i];
                match &f {
                    ClientFrame::DeliveryAck { req, msg_id } => {
                        d.ack_reqs.entry((AckKind::Delivery, *msg_id)).or_default().insert(*req);
                    }
                    ClientFrame::ReadAck { req, msg_id } => {
                        d.ack_reqs.entry((AckKind::Read, *msg_id)).or_default().insert(*req);
                    }
                    ClientFrame::GroupAck { req, msg_id, .. } => {
                        d.ack_reqs.entry((AckKind::Group, *msg_id)).or_default().insert(*req);
                    }
                    _ => {}
                }
                let name = d.name.clone();
                self.server.handle(&name, f);
            }
            let name = self.devices[i].name.clone();
            let frames: Vec<ServerFrame> = self.server.sessions.get_mut(&name).map(|(_, q)| q.drain(..).collect()).unwrap_or_default();
            for f in frames {
                moved = true;
                self.devices[i].engine.handle_frame(now, f);
            }
            self.devices[i].drain_events();
        }
        moved
    }
}

impl SimServer {
    /// How many times the server forwarded `kind` acks of `msg` (all ackers together).
    pub fn forwarded_count(&self, kind: AckKind, msg: MsgId) -> u32 {
        self.forwarded.iter().filter(|((k, m, _), _)| *k == kind && *m == msg).map(|(_, n)| n).sum()
    }
}
