//! Domain types shared by the client engine, the server and the FFI.

use serde::{Deserialize, Serialize};

/// A user's id (also the id of a 1:1 conversation, seen from the peer).
pub type UserId = String;
/// One device (app install) of a user.
pub type DeviceId = String;
/// A group's (or chat room's) id; also the id of its conversation.
pub type GroupId = String;
/// A server-assigned message id: unique, and increasing in the order the server accepted messages.
pub type MsgId = u64;
/// A server-assigned group read ack id, increasing in arrival order.
pub type AckId = u64;
/// Position in a user's event log (every event for a user gets the next one).
pub type Seq = u64;
/// A client-chosen request id, echoed by the server's answer.
pub type ReqId = u64;

/// Kind of conversation a message belongs to. Values are stable (C ABI, ArkTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u32)]
pub enum ChatType {
    Chat = 0,
    GroupChat = 1,
    ChatRoom = 2,
}

impl ChatType {
    pub fn from_u32(v: u32) -> Option<ChatType> {
        match v {
            0 => Some(ChatType::Chat),
            1 => Some(ChatType::GroupChat),
            2 => Some(ChatType::ChatRoom),
            _ => None,
        }
    }
}

/// Whether this device's user sent or received a message. Values are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u32)]
pub enum MessageDirection {
    Send = 0,
    Receive = 1,
}

/// The three kinds of per-message ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AckKind {
    Delivery,
    Read,
    Group,
}

/// The two kinds of group receipts a group message may ask for: read acks (`need_group_ack`) and
/// delivery acks (`require_delivery_ack` on a group message). Both follow the same rules
/// ([`crate::rules`]), each under its own server policy, and page the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupAckKind {
    /// A member read the message (`ackGroupMessageRead`).
    Read,
    /// The message reached a member's device (sent by the SDK on its own).
    Delivery,
}

impl GroupAckKind {
    /// The word for error messages: "read" or "delivery".
    pub fn word(self) -> &'static str {
        match self {
            GroupAckKind::Read => "read",
            GroupAckKind::Delivery => "delivery",
        }
    }

    /// Whether `msg` asks for acks of this kind (and the server kept the request).
    pub fn asked(self, msg: &crate::rules::MessageFacts<'_>) -> bool {
        match self {
            GroupAckKind::Read => msg.need_group_ack,
            GroupAckKind::Delivery => msg.require_delivery_ack,
        }
    }
}

/// A conversation: a 1:1 chat (id = the peer's user id) or a group/room (id = group id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConversationKey {
    pub chat_type: ChatType,
    pub id: String,
}

impl ConversationKey {
    pub fn new(chat_type: ChatType, id: impl Into<String>) -> Self {
        ConversationKey { chat_type, id: id.into() }
    }

    pub fn as_ref(&self) -> ConversationRef<'_> {
        ConversationRef { chat_type: self.chat_type, id: &self.id }
    }
}

/// A borrowed [`ConversationKey`]: hashes and compares like the key it names, so a map keyed by
/// `ConversationKey` can be searched without building (allocating) one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConversationRef<'a> {
    pub chat_type: ChatType,
    pub id: &'a str,
}

impl ConversationRef<'_> {
    pub fn to_key(self) -> ConversationKey {
        ConversationKey::new(self.chat_type, self.id)
    }
}

impl hashbrown::Equivalent<ConversationKey> for ConversationRef<'_> {
    fn equivalent(&self, key: &ConversationKey) -> bool {
        self.chat_type == key.chat_type && self.id == key.id
    }
}

/// A message as the server relays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMessage {
    pub id: MsgId,
    /// The sending device's id for the message, unique per sending user (idempotent resend key).
    pub client_id: String,
    pub from: UserId,
    /// The peer's user id (1:1) or the group / room id.
    pub to: String,
    pub chat_type: ChatType,
    pub content: String,
    /// Server time (ms since the Unix epoch) when the server accepted the message.
    pub timestamp: u64,
    /// The sender asks for delivery acks: 1:1, the peer's; group, every member's (group delivery
    /// acks, only when the server's policy kept the request).
    #[serde(default)]
    pub require_delivery_ack: bool,
    /// The sender asks for group read acks (group only).
    #[serde(default)]
    pub need_group_ack: bool,
}

impl WireMessage {
    /// The conversation this message belongs to, seen by `me`.
    pub fn conversation_for(&self, me: &str) -> ConversationKey {
        match self.chat_type {
            ChatType::Chat if self.from == me => ConversationKey::new(ChatType::Chat, &self.to),
            ChatType::Chat => ConversationKey::new(ChatType::Chat, &self.from),
            t => ConversationKey::new(t, &self.to),
        }
    }
}

/// Delivery state of a message this device sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u32)]
pub enum SendStatus {
    /// Accepted locally, waiting for the server (kept in the outbox while offline).
    Pending = 0,
    /// The server accepted it and gave it an id.
    Sent = 1,
    /// The server refused it.
    Failed = 2,
}

/// A message with its receipt flags, as the client sees it (docs/product.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Server id; 0 while the message waits for the server.
    pub id: MsgId,
    pub client_id: String,
    pub from: UserId,
    pub to: String,
    pub chat_type: ChatType,
    pub direction: MessageDirection,
    pub content: String,
    pub timestamp: u64,
    pub require_delivery_ack: bool,
    pub need_group_ack: bool,
    pub status: SendStatus,
    /// Sender side: a delivery ack came back. Receiver side: this user's delivery ack went out.
    pub delivered: bool,
    /// Sender side: the peer read it (read ack or a conversation ack covering it).
    /// Receiver side: this user already sent the read ack (from any of their devices).
    pub receiver_read: bool,
    /// Receiver side: not read yet on this user's devices. Always false for sent messages.
    pub unread: bool,
    /// Sender side: how many members read it (group acks).
    pub group_ack_count: u32,
    /// Receiver side: this user already sent the group read ack.
    pub group_ack_sent: bool,
    /// Sender side: how many members' devices acked its delivery (group delivery acks).
    #[serde(default)]
    pub group_delivered_count: u32,
}

impl ChatMessage {
    /// The id users see: the server id once known, the client id before.
    pub fn msg_id_string(&self) -> String {
        if self.id == 0 {
            self.client_id.clone()
        } else {
            self.id.to_string()
        }
    }

    pub fn conversation(&self) -> ConversationKey {
        self.conversation_ref().to_key()
    }

    /// [`Self::conversation`], borrowed.
    pub fn conversation_ref(&self) -> ConversationRef<'_> {
        let id = match (self.chat_type, self.direction) {
            (ChatType::Chat, MessageDirection::Receive) => &self.from,
            _ => &self.to,
        };
        ConversationRef { chat_type: self.chat_type, id }
    }
}

/// One member's read ack of a group message (docs/product.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReadAck {
    pub ack_id: AckId,
    pub msg_id: MsgId,
    /// The member who read the message.
    pub from: UserId,
    /// The ext the member passed to ackGroupMessageRead.
    #[serde(default)]
    pub content: Option<String>,
    /// How many members had acked the message when this ack arrived (this one included).
    pub count: u32,
    pub timestamp: u64,
}

/// One page of a cursor-paged list. `cursor` is empty when there is no next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorResult<T> {
    pub data: Vec<T>,
    pub cursor: String,
}

/// A member's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u32)]
pub enum GroupRole {
    Owner = 0,
    Admin = 1,
    Member = 2,
}

/// Client options (the SDK's ChatOptions, with the guide's defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatOptions {
    /// Ask peers for delivery acks on the messages this client sends (default false).
    pub require_delivery_ack: bool,
    /// Allow this client to send read acks (default true). False is a privacy switch: ack calls
    /// send nothing at all (505), and win over [`ChatOptions::private_read_receipts`].
    pub require_read_ack: bool,
    /// Private reading (default false): read acks sync this user's own devices and unread counts
    /// but tell the sender nothing (`rules::read_ack_private`). Each ack call may override it.
    #[serde(default)]
    pub private_read_receipts: bool,
    /// Server host for a private deployment (the runtime's default is 127.0.0.1).
    pub im_server: Option<String>,
    /// Server port for a private deployment.
    pub im_port: Option<u16>,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions { require_delivery_ack: false, require_read_ack: true, private_read_receipts: false, im_server: None, im_port: None }
    }
}

/// Maximum length, in bytes, of a message's content or a group ack's ext.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
/// Maximum length, in bytes, of a user, device or group id.
pub const MAX_ID_BYTES: usize = 128;

/// Checks an id: non-empty, at most [`MAX_ID_BYTES`], no control characters.
pub fn validate_id(what: &str, id: &str) -> Result<(), crate::ChatError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(crate::ChatError::invalid_param(format!("{what} must be 1..={MAX_ID_BYTES} bytes without control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_conversation_finds_exactly_its_key() {
        // Same hash as the owned key (else lookups would silently miss), for every chat type.
        let mut map: hashbrown::HashMap<ConversationKey, u32, foldhash::fast::RandomState> = Default::default();
        let types = [ChatType::Chat, ChatType::GroupChat, ChatType::ChatRoom];
        for (i, t) in types.into_iter().enumerate() {
            map.insert(ConversationKey::new(t, "x"), i as u32);
        }
        for (i, t) in types.into_iter().enumerate() {
            assert_eq!(map.get(&ConversationRef { chat_type: t, id: "x" }), Some(&(i as u32)));
            assert_eq!(map.get(&ConversationRef { chat_type: t, id: "y" }), None);
        }
        let k = ConversationKey::new(ChatType::GroupChat, "g");
        assert_eq!(k.as_ref().to_key(), k);
    }

    #[test]
    fn a_message_names_its_conversation_by_direction() {
        let mut m = ChatMessage {
            id: 1,
            client_id: "c".into(),
            from: "alice".into(),
            to: "bob".into(),
            chat_type: ChatType::Chat,
            direction: MessageDirection::Receive,
            content: String::new(),
            timestamp: 0,
            require_delivery_ack: false,
            need_group_ack: false,
            status: SendStatus::Sent,
            delivered: false,
            receiver_read: false,
            unread: true,
            group_ack_count: 0,
            group_ack_sent: false,
            group_delivered_count: 0,
        };
        assert_eq!(m.conversation(), ConversationKey::new(ChatType::Chat, "alice"));
        m.direction = MessageDirection::Send;
        assert_eq!(m.conversation(), ConversationKey::new(ChatType::Chat, "bob"));
        m.chat_type = ChatType::GroupChat;
        m.direction = MessageDirection::Receive;
        assert_eq!(m.conversation_ref(), ConversationRef { chat_type: ChatType::GroupChat, id: "bob" });
    }
}
