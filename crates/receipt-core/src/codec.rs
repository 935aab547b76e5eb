//! Framing: a 4-byte big-endian length, then that many bytes of JSON.
//!
//! A frame longer than the decoder's limit is refused from its header alone, before any of it is
//! buffered, so a peer announcing 4 GiB costs nothing. Every failure is a [`FrameError`].

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Default maximum frame body, in bytes.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("unknown frame type: {0}")]
    UnknownType(String),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
}

impl From<FrameError> for crate::ChatError {
    fn from(e: FrameError) -> Self {
        crate::ChatError::invalid_param(e.to_string())
    }
}

/// Appends one frame (header and JSON body) to `out`.
pub fn encode_into<T: Serialize>(frame: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    // Serializing our own frame types to a Vec cannot fail (no maps with non-string keys).
    serde_json::to_writer(&mut *out, frame).expect("frame serializes");
    let len = (out.len() - start - HEADER_LEN) as u32;
    out[start..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}

/// One frame as bytes.
pub fn encode<T: Serialize>(frame: &T) -> Vec<u8> {
    let mut v = Vec::with_capacity(128);
    encode_into(frame, &mut v);
    v
}

/// Decodes a frame body (without header).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    if body.is_empty() {
        return Err(FrameError::Empty);
    }
    // One UTF-8 check of the whole body, then the `str` reader: serde_json's byte-slice reader
    // re-validates every string (keys included) on its own, which cost ~20% of a frame's decode.
    let text = std::str::from_utf8(body).map_err(|e| FrameError::Malformed(format!("not UTF-8: {e}")))?;
    serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with("unknown variant") {
            let name = msg.split('`').nth(1).unwrap_or("?").to_string();
            FrameError::UnknownType(name)
        } else {
            FrameError::Malformed(msg)
        }
    })
}

/// Incremental decoder: feed bytes as they arrive, take frames out.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder { buf: Vec::new(), start: 0, max: max_frame }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The body of the next complete frame, if one is buffered. An oversized header is an error
    /// as soon as it is seen. After an error the decoder's stream is unusable: close the peer.
    pub fn next_body(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < HEADER_LEN {
            self.compact();
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > self.max {
            return Err(FrameError::Oversized { len, max: self.max });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if avail.len() < HEADER_LEN + len {
            self.compact();
            return Ok(None);
        }
        let body_start = self.start + HEADER_LEN;
        self.start = body_start + len;
        Ok(Some(&self.buf[body_start..body_start + len]))
    }

    /// The next complete frame, decoded.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.next_body()? {
            Some(body) => decode_body(body).map(Some),
            None => Ok(None),
        }
    }

    /// Call at end of stream: an incomplete frame is an error.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            n => Err(FrameError::Truncated { buffered: n }),
        }
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientFrame, ServerFrame, PROTOCOL_VERSION};

    fn login() -> ClientFrame {
        ClientFrame::Login { v: PROTOCOL_VERSION, user: "alice".into(), device: "d1".into(), token: "t".into(), since: 0 }
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let frames = vec![login(), ClientFrame::ReadAck { req: 7, msg_id: 42, private: false }, ClientFrame::Ping { nonce: 1 }];
        let mut bytes = Vec::new();
        for f in &frames {
            encode_into(f, &mut bytes);
        }
        let mut d = FrameDecoder::default();
        let mut out = Vec::new();
        for b in bytes {
            d.push(&[b]);
            while let Some(f) = d.next_frame::<ClientFrame>().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
        d.finish().unwrap();
    }

    #[test]
    fn oversized_header_is_refused_before_buffering() {
        let mut d = FrameDecoder::new(1024);
        d.push(&u32::MAX.to_be_bytes());
        assert_eq!(d.next_body().unwrap_err(), FrameError::Oversized { len: u32::MAX as usize, max: 1024 });
    }

    #[test]
    fn truncated_frame_is_reported_at_end_of_stream() {
        let bytes = encode(&login());
        let mut d = FrameDecoder::default();
        d.push(&bytes[..bytes.len() - 3]);
        assert_eq!(d.next_frame::<ClientFrame>().unwrap(), None);
        assert!(matches!(d.finish(), Err(FrameError::Truncated { .. })));
    }

    #[test]
    fn unknown_type_and_wrong_shape_are_typed_errors() {
        assert!(matches!(decode_body::<ClientFrame>(br#"{"t":"teleport"}"#), Err(FrameError::UnknownType(t)) if t == "teleport"));
        assert!(matches!(decode_body::<ClientFrame>(br#"{"t":"read_ack","req":"x"}"#), Err(FrameError::Malformed(_))));
        assert!(matches!(decode_body::<ClientFrame>(b"\xff\xfe"), Err(FrameError::Malformed(_))));
        // A well-formed frame but for one byte that is not UTF-8, inside a string.
        let bad = b"{\"t\":\"send\",\"req\":1,\"client_id\":\"c\",\"to\":\"b\",\"chat_type\":\"Chat\",\"content\":\"\xc3\"}";
        assert!(matches!(decode_body::<ClientFrame>(bad), Err(FrameError::Malformed(m)) if m.contains("UTF-8")));
        assert!(matches!(decode_body::<ServerFrame>(b"[1,2]"), Err(FrameError::Malformed(_))));
        let mut d = FrameDecoder::default();
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.next_body().unwrap_err(), FrameError::Empty);
    }

    #[test]
    fn resync_fields_are_optional_on_the_wire() {
        use crate::protocol::*;
        // A version-1 server's SyncDone (no `resync`) is not a resync; a false flag is not written.
        let old: ServerFrame = decode_body(br#"{"t":"sync_done","head":3,"conversations":[]}"#).unwrap();
        assert_eq!(old, ServerFrame::SyncDone { head: 3, conversations: vec![], resync: false });
        let bytes = encode(&old);
        assert!(!String::from_utf8_lossy(&bytes[HEADER_LEN..]).contains("resync"));
        // A retained message with only its message: every flag false.
        let page: ServerFrame = decode_body(
            br#"{"t":"resync","messages":[{"msg":{"id":1,"client_id":"c","from":"a","to":"b","chat_type":"Chat","content":"x","timestamp":1}}]}"#,
        )
        .unwrap();
        let ServerFrame::Resync { messages } = page else { panic!("{page:?}") };
        assert_eq!((messages[0].msg.id, messages[0].delivered, messages[0].read, messages[0].group_ack_count), (1, false, false, 0));
        let cursor = ClientFrame::SyncCursor { seq: 41 };
        assert_eq!(decode_body::<ClientFrame>(&encode(&cursor)[HEADER_LEN..]).unwrap(), cursor);
    }

    #[test]
    fn batch_and_unread_frames_round_trip() {
        use crate::protocol::*;
        use crate::types::*;
        let client = vec![
            ClientFrame::FetchGroupUnread { req: 1, msg_id: 9, page_size: 20, cursor: Some("bob".into()) },
            ClientFrame::FetchGroupUnread { req: 2, msg_id: 9, page_size: 20, cursor: None },
            ClientFrame::FetchGroupAckCounts { req: 3, msg_ids: vec![4, 5, 6] },
            ClientFrame::ReadAcks { req: 4, conversation: "alice".into(), msg_ids: vec![7, 8], private: false },
        ];
        for f in client {
            assert_eq!(decode_body::<ClientFrame>(&encode(&f)[HEADER_LEN..]).unwrap(), f);
        }
        let err = crate::ChatError::new(crate::ErrorCode::GroupPermissionDenied, "not yours");
        let server = vec![
            ServerFrame::ok(
                5,
                Response::GroupUnread { msg_id: 9, page: CursorResult { data: vec!["carol".into()], cursor: "carol".into() } },
            ),
            ServerFrame::ok(
                6,
                Response::GroupAckCounts {
                    items: vec![
                        BatchItem { msg_id: 4, count: 2, err: None },
                        BatchItem { msg_id: 5, count: 0, err: None },
                        BatchItem { msg_id: 6, count: 0, err: Some(err.clone()) },
                    ],
                },
            ),
            ServerFrame::ok(7, Response::ReadAcks { items: vec![BatchItem { msg_id: 7, count: 0, err: None }] }),
        ];
        for f in server {
            assert_eq!(decode_body::<ServerFrame>(&encode(&f)[HEADER_LEN..]).unwrap(), f);
        }
        // The id of a ClientFrame request is its `req`.
        assert_eq!(ClientFrame::ReadAcks { req: 11, conversation: "a".into(), msg_ids: vec![1], private: false }.req(), Some(11));
    }

    #[test]
    fn server_frames_round_trip() {
        use crate::protocol::*;
        use crate::types::*;
        let frames = vec![
            ServerFrame::Event {
                event: SeqEvent {
                    seq: 3,
                    event: ServerEvent::Read { msg_id: 9, from: "a".into(), to: "b".into(), by: "b".into(), timestamp: 5 }.into(),
                },
            },
            ServerFrame::ok(
                4,
                Response::Sent { client_id: "c".into(), msg_id: 10, timestamp: 11, need_group_ack: false, require_delivery_ack: false },
            ),
            ServerFrame::err(5, crate::ChatError::new(crate::ErrorCode::MessageExpired, "too old")),
            ServerFrame::SyncDone {
                head: 9,
                conversations: vec![ConversationState { chat_type: ChatType::Chat, id: "b".into(), unread: 2 }],
                resync: false,
            },
            ServerFrame::SyncDone { head: 12, conversations: vec![], resync: true },
            ServerFrame::Resync {
                messages: vec![
                    RetainedMessage {
                        msg: WireMessage {
                            id: 7,
                            client_id: "c7".into(),
                            from: "a".into(),
                            to: "g".into(),
                            chat_type: ChatType::GroupChat,
                            content: "hi \"there\"".into(),
                            timestamp: 3,
                            require_delivery_ack: false,
                            need_group_ack: true,
                        }
                        .into(),
                        delivered: false,
                        read_acked: false,
                        read: true,
                        group_ack_sent: true,
                        group_ack_count: 4,
                        group_delivered_count: 2,
                    },
                    RetainedMessage {
                        msg: WireMessage {
                            id: 8,
                            client_id: "c8".into(),
                            from: "b".into(),
                            to: "a".into(),
                            chat_type: ChatType::Chat,
                            content: String::new(),
                            timestamp: 4,
                            require_delivery_ack: true,
                            need_group_ack: false,
                        }
                        .into(),
                        delivered: true,
                        read_acked: true,
                        read: false,
                        group_ack_sent: false,
                        group_ack_count: 0,
                        group_delivered_count: 0,
                    },
                ],
            },
        ];
        for f in frames {
            let bytes = encode(&f);
            let back: ServerFrame = decode_body(&bytes[HEADER_LEN..]).unwrap();
            assert_eq!(back, f);
        }
    }
}
