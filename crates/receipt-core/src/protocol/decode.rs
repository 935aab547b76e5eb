//! Fast decoding of the tagged frames (the hand-written `Deserialize` impls of [`super`]).
//!
//! serde's derived decoder of an internally tagged enum buffers every field of the object into
//! its generic `Content` tree before it knows the variant (many small allocations, then a second
//! pass). Our encoder always writes the tag first, so these impls read the first key: when it is
//! the tag, the rest of the object is decoded straight into the variant's fields (one helper
//! struct per variant, from the same map). Otherwise (another producer) the object is buffered
//! and decoded by the derived code (`#[serde(remote = "Self")]` makes the derives inherent
//! functions, which the trait impls below call). The wire format is unchanged; an unknown tag is
//! still serde's `unknown variant ...` error.

use super::*;

use std::borrow::Cow;
use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::Serializer;

/// The first key of an object: the tag, or anything else (kept for the buffered path).
enum FirstKey {
    Tag,
    Other(String),
}

struct FirstKeySeed(&'static str);

impl<'de> DeserializeSeed<'de> for FirstKeySeed {
    type Value = FirstKey;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FirstKey, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FirstKeySeed {
    type Value = FirstKey;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<FirstKey, E> {
        Ok(if v == self.0 { FirstKey::Tag } else { FirstKey::Other(v.to_owned()) })
    }
}

/// A string value, borrowed from the input when it can be.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Buffers the rest of `map` (after the entries already read into `obj`) and decodes the whole
/// object with `generic` (the derived decoder).
fn buffered<'de, A, T>(
    mut obj: serde_json::Map<String, serde_json::Value>,
    mut map: A,
    generic: fn(serde_json::Value) -> Result<T, serde_json::Error>,
) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
{
    while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
        obj.insert(k, v);
    }
    generic(serde_json::Value::Object(obj)).map_err(de::Error::custom)
}

/// Reads the first key of `map`; with the tag first, returns the tag's value; otherwise buffers
/// the object and decodes it with `generic`.
fn read_tag<'de, A, T>(
    map: &mut A,
    tag: &'static str,
    generic: fn(serde_json::Value) -> Result<T, serde_json::Error>,
) -> Result<Result<Text<'de>, T>, A::Error>
where
    A: MapAccess<'de>,
{
    match map.next_key_seed(FirstKeySeed(tag))? {
        None => Err(de::Error::missing_field(tag)),
        Some(FirstKey::Tag) => Ok(Ok(map.next_value()?)),
        Some(FirstKey::Other(k)) => {
            let v: serde_json::Value = map.next_value()?;
            let mut obj = serde_json::Map::new();
            obj.insert(k, v);
            Ok(Err(buffered(obj, map, generic)?))
        }
    }
}

/// Per tagged enum: `from_tagged_map(tag, rest)` decodes the variant named `tag` from the rest
/// of the object, and the `Deserialize` impl (tag first: fast path; else buffered).
macro_rules! fast_tagged {
    (
        $enum:ident, $tag:literal,
        fields { $( $name:literal => $variant:ident { $( $(#[$fattr:meta])* $field:ident : $ty:ty ),* $(,)? } ),* $(,)? }
        units { $( $uname:literal => $uvariant:ident ),* $(,)? }
        special { $( $sname:literal => $svariant:ident => $sfn:path ),* $(,)? }
    ) => {
        impl $enum {
            const VARIANTS: &'static [&'static str] = &[$($name,)* $($uname,)* $($sname,)*];

            fn from_tagged_map<'de, A: MapAccess<'de>>(tag: &str, map: A) -> Result<Self, A::Error> {
                match tag {
                    $($name => {
                        #[derive(Deserialize)]
                        struct Fields { $( $(#[$fattr])* $field: $ty, )* }
                        let _f = Fields::deserialize(MapAccessDeserializer::new(map))?;
                        Ok($enum::$variant { $( $field: _f.$field, )* })
                    })*
                    $($uname => {
                        IgnoredAny::deserialize(MapAccessDeserializer::new(map))?;
                        Ok($enum::$uvariant)
                    })*
                    $($sname => $sfn(map),)*
                    other => Err(de::Error::unknown_variant(other, Self::VARIANTS)),
                }
            }

            fn from_value(v: serde_json::Value) -> Result<Self, serde_json::Error> {
                $enum::deserialize(v)
            }

            /// Compile-time check that every variant is listed above.
            #[allow(dead_code)]
            fn all_variants_listed(&self) {
                match self {
                    $( $enum::$variant { .. } => {} )*
                    $( $enum::$uvariant => {} )*
                    $( $enum::$svariant { .. } => {} )*
                }
            }
        }

        impl<'de> Deserialize<'de> for $enum {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $enum;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        write!(f, "an object tagged by \"{}\"", $tag)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$enum, A::Error> {
                        match read_tag(&mut map, $tag, $enum::from_value)? {
                            Ok(tag) => $enum::from_tagged_map(&tag.0, map),
                            Err(done) => Ok(done),
                        }
                    }
                }
                d.deserialize_map(V)
            }
        }

        impl Serialize for $enum {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $enum::serialize(self, s)
            }
        }
    };
}

fast_tagged! {
    ClientFrame, "t",
    fields {
        "login" => Login { v: u32, user: UserId, device: DeviceId, token: String, since: Seq },
        "send" => Send {
            req: ReqId, client_id: String, to: String, chat_type: ChatType, content: String,
            #[serde(default)] require_delivery_ack: bool,
            #[serde(default)] need_group_ack: bool,
        },
        "delivery_ack" => DeliveryAck { req: ReqId, msg_id: MsgId },
        "read_ack" => ReadAck { req: ReqId, msg_id: MsgId, #[serde(default)] private: bool },
        "conversation_ack" => ConversationAck {
            req: ReqId, chat_type: ChatType, conversation: String, #[serde(default)] private: bool,
        },
        "group_ack" => GroupAck {
            req: ReqId, msg_id: MsgId, #[serde(default)] ext: Option<String>, #[serde(default)] private: bool,
        },
        "fetch_group_acks" => FetchGroupAcks {
            req: ReqId, msg_id: MsgId, page_size: u32, #[serde(default)] start_ack_id: Option<AckId>,
        },
        "fetch_group_delivery_acks" => FetchGroupDeliveryAcks {
            req: ReqId, msg_id: MsgId, page_size: u32, #[serde(default)] start_ack_id: Option<AckId>,
        },
        "fetch_group_unread" => FetchGroupUnread {
            req: ReqId, msg_id: MsgId, page_size: u32, #[serde(default)] cursor: Option<UserId>,
        },
        "fetch_group_ack_counts" => FetchGroupAckCounts { req: ReqId, msg_ids: Vec<MsgId> },
        "read_acks" => ReadAcks {
            req: ReqId, conversation: String, msg_ids: Vec<MsgId>, #[serde(default)] private: bool,
        },
        "mark_read" => MarkRead {
            req: ReqId, chat_type: ChatType, conversation: String, #[serde(default)] msg_id: Option<MsgId>,
        },
        "create_group" => CreateGroup {
            req: ReqId, name: String, members: Vec<UserId>, #[serde(default)] chat_room: bool,
        },
        "add_members" => AddMembers { req: ReqId, group: GroupId, members: Vec<UserId> },
        "remove_members" => RemoveMembers { req: ReqId, group: GroupId, members: Vec<UserId> },
        "set_role" => SetRole { req: ReqId, group: GroupId, member: UserId, role: GroupRole },
        "leave_group" => LeaveGroup { req: ReqId, group: GroupId },
        "sync_cursor" => SyncCursor { seq: Seq },
        "ping" => Ping { nonce: u64 },
        "renew_token" => RenewToken { req: ReqId, token: String },
    }
    units {}
    special {}
}

fast_tagged! {
    Response, "k",
    fields {
        "sent" => Sent {
            client_id: String, msg_id: MsgId, timestamp: u64, #[serde(default)] need_group_ack: bool,
            #[serde(default)] require_delivery_ack: bool,
        },
        "group_acks" => GroupAcks { msg_id: MsgId, page: CursorResult<GroupReadAck> },
        "group_created" => GroupCreated { group: GroupId },
        "group_unread" => GroupUnread { msg_id: MsgId, page: CursorResult<UserId> },
        "group_ack_counts" => GroupAckCounts { items: Vec<BatchItem> },
        "read_acks" => ReadAcks { items: Vec<BatchItem> },
    }
    units { "done" => Done }
    special {}
}

fast_tagged! {
    ServerEvent, "e",
    fields {
        "message" => Message { msg: Arc<WireMessage> },
        "delivered" => Delivered { msg_id: MsgId, from: UserId, to: UserId, by: UserId, timestamp: u64 },
        "read" => Read { msg_id: MsgId, from: UserId, to: UserId, by: UserId, timestamp: u64 },
        "conversation_read" => ConversationRead {
            chat_type: ChatType, from: UserId, to: String, up_to: MsgId, timestamp: u64,
            #[serde(default)] device: DeviceId,
        },
        "group_read" => GroupRead { group: GroupId, sender: UserId, ack: GroupReadAck },
        "group_delivered" => GroupDelivered { group: GroupId, sender: UserId, ack: GroupReadAck },
        "read_state" => ReadState { chat_type: ChatType, conversation: String, msg_id: Option<MsgId>, up_to: MsgId },
        "membership" => Membership { group: GroupId, role: Option<GroupRole>, chat_room: bool },
        "group_ack_count" => GroupAckCount { group: GroupId, msg_id: MsgId, count: u32, timestamp: u64 },
    }
    units {}
    special {}
}

fast_tagged! {
    ServerFrame, "t",
    fields {
        "login_ok" => LoginOk { v: u32, user: UserId, device: DeviceId, server_time: u64 },
        "login_failed" => LoginFailed { error: ChatError },
        "backlog" => Backlog { events: Vec<SeqEvent> },
        "sync_conversations" => SyncConversations { conversations: Vec<ConversationState> },
        "resync" => Resync { messages: Vec<RetainedMessage> },
        "sync_done" => SyncDone { head: Seq, conversations: Vec<ConversationState>, #[serde(default)] resync: bool },
        "result" => Result {
            req: ReqId,
            #[serde(default)] ok: Option<Response>,
            #[serde(default)] err: Option<ChatError>,
        },
        "error" => Error { error: ChatError },
        "pong" => Pong { nonce: u64 },
    }
    units {}
    special { "event" => Event => event_frame }
}

/// `{"seq": S, "e": TAG, ...event fields}` after the entries in `obj` (already read). With
/// `seq` then `e` next (our encoder's order) the event is decoded in place; otherwise the object
/// is buffered and decoded by `generic`.
fn seq_event_fields<'de, A, T>(
    mut map: A,
    read: &[(&'static str, &'static str)],
    generic: fn(serde_json::Value) -> Result<T, serde_json::Error>,
) -> Result<Result<SeqEvent, T>, A::Error>
where
    A: MapAccess<'de>,
{
    // Only a fallback needs the entries already read as a JSON object (built then, not per frame).
    let obj = || read.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>();
    let seq = match map.next_key_seed(FirstKeySeed("seq"))? {
        None => return Err(de::Error::missing_field("seq")),
        Some(FirstKey::Tag) => map.next_value::<Seq>()?,
        Some(FirstKey::Other(k)) => {
            let mut obj = obj();
            obj.insert(k, map.next_value()?);
            return Ok(Err(buffered(obj, map, generic)?));
        }
    };
    match map.next_key_seed(FirstKeySeed("e"))? {
        None => Err(de::Error::missing_field("e")),
        Some(FirstKey::Tag) => {
            let tag: Text = map.next_value()?;
            Ok(Ok(SeqEvent { seq, event: Arc::new(ServerEvent::from_tagged_map(&tag.0, map)?) }))
        }
        Some(FirstKey::Other(k)) => {
            let mut obj = obj();
            obj.insert("seq".into(), seq.into());
            obj.insert(k, map.next_value()?);
            Ok(Err(buffered(obj, map, generic)?))
        }
    }
}

/// `ServerFrame::Event`: the rest of `{"t":"event","seq":S,"e":TAG,...}`.
fn event_frame<'de, A: MapAccess<'de>>(map: A) -> Result<ServerFrame, A::Error> {
    Ok(match seq_event_fields(map, &[("t", "event")], ServerFrame::from_value)? {
        Ok(event) => ServerFrame::Event { event },
        Err(frame) => frame,
    })
}

impl<'de> Deserialize<'de> for SeqEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SeqEvent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event with its seq")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SeqEvent, A::Error> {
                let generic: fn(serde_json::Value) -> Result<SeqEvent, serde_json::Error> = SeqEvent::deserialize;
                Ok(match seq_event_fields(map, &[], generic)? {
                    Ok(ev) | Err(ev) => ev,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for SeqEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SeqEvent::serialize(self, s)
    }
}

#[cfg(test)]
mod fast_decode_tests {
    use super::*;
    use crate::codec::{decode_body, FrameError};

    #[test]
    fn tag_not_first_takes_the_buffered_path() {
        let f: ClientFrame = decode_body(br#"{"req":3,"msg_id":9,"t":"read_ack"}"#).unwrap();
        assert_eq!(f, ClientFrame::ReadAck { req: 3, msg_id: 9, private: false });
        let f: ClientFrame = decode_body(br#"{"t":"send","req":1,"client_id":"c","to":"b","chat_type":"Chat","content":"x"}"#).unwrap();
        assert!(matches!(f, ClientFrame::Send { require_delivery_ack: false, .. }));
        assert!(matches!(decode_body::<ClientFrame>(br#"{"req":1,"t":"teleport"}"#), Err(FrameError::UnknownType(t)) if t == "teleport"));
        assert!(matches!(decode_body::<ClientFrame>(br#"{"req":1}"#), Err(FrameError::Malformed(_))));
        assert!(matches!(decode_body::<ClientFrame>(br#"{}"#), Err(FrameError::Malformed(_))));
        assert!(matches!(decode_body::<ClientFrame>(br#"{"t":"ping"}"#), Err(FrameError::Malformed(_))));
        assert!(matches!(decode_body::<ClientFrame>(br#"{"t":7}"#), Err(FrameError::Malformed(_))));
        assert!(matches!(decode_body::<ClientFrame>(br#"{"t":"ping","nonce":1"#), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn events_decode_in_any_key_order() {
        let want = ServerFrame::Event {
            event: SeqEvent {
                seq: 4,
                event: ServerEvent::Delivered { msg_id: 2, from: "a".into(), to: "b".into(), by: "b".into(), timestamp: 5 }.into(),
            },
        };
        for body in [
            r#"{"t":"event","seq":4,"e":"delivered","msg_id":2,"from":"a","to":"b","by":"b","timestamp":5}"#,
            r#"{"t":"event","e":"delivered","seq":4,"msg_id":2,"from":"a","to":"b","by":"b","timestamp":5}"#,
            r#"{"seq":4,"t":"event","msg_id":2,"from":"a","to":"b","by":"b","timestamp":5,"e":"delivered"}"#,
            r#"{"t":"event","msg_id":2,"from":"a","to":"b","by":"b","timestamp":5,"e":"delivered","seq":4}"#,
        ] {
            assert_eq!(decode_body::<ServerFrame>(body.as_bytes()).unwrap(), want, "{body}");
        }
        assert!(
            matches!(decode_body::<ServerFrame>(br#"{"t":"event","seq":1,"e":"warp"}"#), Err(FrameError::UnknownType(t)) if t == "warp")
        );
        let ok: ServerFrame = decode_body(br#"{"t":"result","req":1,"ok":{"k":"done"}}"#).unwrap();
        assert_eq!(ok, ServerFrame::ok(1, Response::Done));
        let b: ServerFrame = decode_body(
            br#"{"t":"backlog","events":[{"e":"read_state","seq":2,"chat_type":"Chat","conversation":"b","msg_id":null,"up_to":3}]}"#,
        )
        .unwrap();
        assert!(matches!(b, ServerFrame::Backlog { events } if events[0].seq == 2));
    }
}
