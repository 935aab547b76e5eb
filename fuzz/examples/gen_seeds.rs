//! Writes the committed seed corpus (fuzz/seeds/): a few real sessions as wire bytes.
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds`

use std::path::Path;

use receipt_core::codec::encode_into;
use receipt_core::protocol::*;
use receipt_core::*;

fn msg(id: MsgId, from: &str, to: &str, chat_type: ChatType, client_id: &str) -> ServerEvent {
    ServerEvent::Message {
        msg: std::sync::Arc::new(WireMessage {
            id,
            client_id: client_id.into(),
            from: from.into(),
            to: to.into(),
            chat_type,
            content: "hi".into(),
            timestamp: 5,
            require_delivery_ack: chat_type == ChatType::Chat,
            need_group_ack: chat_type == ChatType::GroupChat,
        }),
    }
}

fn ev(seq: Seq, event: ServerEvent) -> ServerFrame {
    ServerFrame::Event { event: SeqEvent { seq, event: event.into() } }
}

fn login(events: Vec<ServerEvent>, conversations: Vec<(ChatType, &str, u32)>) -> Vec<ServerFrame> {
    let events: Vec<SeqEvent> = events.into_iter().enumerate().map(|(i, event)| SeqEvent { seq: i as Seq + 1, event: event.into() }).collect();
    let head = events.len() as Seq;
    vec![
        ServerFrame::LoginOk { v: PROTOCOL_VERSION, user: "alice".into(), device: "a1".into(), server_time: 1 },
        ServerFrame::Backlog { events },
        ServerFrame::SyncDone {
            head,
            conversations: conversations
                .into_iter()
                .map(|(chat_type, id, unread)| ConversationState { chat_type, id: id.into(), unread })
                .collect(),
            resync: false,
        },
    ]
}

fn sessions() -> Vec<(&'static str, Vec<ServerFrame>)> {
    let c = ChatType::Chat;
    let g = ChatType::GroupChat;
    vec![
        ("login_empty", login(vec![], vec![])),
        (
            "backlog_then_live",
            [
                login(vec![msg(1, "bob", "alice", c, "b1-1"), msg(2, "carol", "g1", g, "c1-1")], vec![(c, "bob", 3), (g, "g1", 1)]),
                vec![
                    ev(3, msg(3, "bob", "alice", c, "b1-2")),
                    ev(4, ServerEvent::Delivered { msg_id: 3, from: "bob".into(), to: "alice".into(), by: "alice".into(), timestamp: 6 }),
                    ev(5, ServerEvent::Read { msg_id: 1, from: "bob".into(), to: "alice".into(), by: "alice".into(), timestamp: 7 }),
                    ev(
                        6,
                        ServerEvent::ConversationRead {
                            chat_type: c,
                            from: "alice".into(),
                            to: "bob".into(),
                            up_to: 2,
                            timestamp: 8,
                            device: "a2".into(),
                        },
                    ),
                    ev(
                        7,
                        ServerEvent::GroupRead {
                            group: "g1".into(),
                            sender: "carol".into(),
                            ack: GroupReadAck { ack_id: 9, msg_id: 2, from: "alice".into(), content: None, count: 1, timestamp: 9 },
                        },
                    ),
                    ev(8, ServerEvent::ReadState { chat_type: c, conversation: "bob".into(), msg_id: None, up_to: 3 }),
                    ev(9, ServerEvent::Membership { group: "g2".into(), role: Some(GroupRole::Member), chat_room: false }),
                ],
            ]
            .concat(),
        ),
        (
            "own_messages_and_results",
            [
                login(vec![msg(1, "alice", "bob", c, "a1-1"), msg(2, "alice", "g1", g, "a2-1")], vec![]),
                vec![
                    ServerFrame::ok(1, Response::Sent { client_id: "a1-1".into(), msg_id: 1, timestamp: 5, need_group_ack: false, require_delivery_ack: false }),
                    ServerFrame::ok(2, Response::Done),
                    ServerFrame::err(3, ChatError::new(ErrorCode::MessageInvalid, "unknown message")),
                    ev(3, ServerEvent::Read { msg_id: 1, from: "alice".into(), to: "bob".into(), by: "bob".into(), timestamp: 7 }),
                    ev(
                        4,
                        ServerEvent::GroupRead {
                            group: "g1".into(),
                            sender: "alice".into(),
                            ack: GroupReadAck {
                                ack_id: 10,
                                msg_id: 2,
                                from: "carol".into(),
                                content: Some("x".into()),
                                count: 1,
                                timestamp: 9,
                            },
                        },
                    ),
                    ServerFrame::Pong { nonce: 1 },
                    ServerFrame::Error { error: ChatError::new(ErrorCode::InvalidParam, "bad frame") },
                ],
            ]
            .concat(),
        ),
        ("login_failed", vec![ServerFrame::LoginFailed { error: ChatError::new(ErrorCode::UserAuthenticationFailed, "bad token") }]),
    ]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (name, frames) in sessions() {
        let mut wire = Vec::new();
        for f in &frames {
            encode_into(f, &mut wire);
        }
        // frame_decoder: control byte 0 (default limit, byte-by-byte), then the stream; and the
        // same stream in 7-byte chunks.
        write(&root.join("frame_decoder"), name, &[&[0u8][..], &wire].concat());
        write(&root.join("frame_decoder"), &format!("{name}_chunked"), &[&[1u8, 6][..], &wire].concat());
        // engine_inbound: options byte (read acks on), then one raw chunk per frame, and a few
        // commands (ack read of 1, conversation ack, reconnect) in between.
        let mut input = vec![0u8];
        let mut pos = 0;
        for f in &frames {
            let mut one = Vec::new();
            encode_into(f, &mut one);
            input.push(0);
            input.extend_from_slice(&(one.len() as u16).to_le_bytes());
            input.extend_from_slice(&wire[pos..pos + one.len()]);
            pos += one.len();
        }
        input.extend_from_slice(&[0xff, 1, 1, 0xff, 2, 1, 0xff, 10]);
        write(&root.join("engine_inbound"), name, &input);
    }
    // Client frames for the decoder too.
    let client = vec![
        ClientFrame::Login { v: 1, user: "alice".into(), device: "a1".into(), token: "t".into(), since: 3 },
        ClientFrame::ReadAck { req: 1, msg_id: 2, private: false },
        ClientFrame::GroupAck { req: 2, msg_id: 3, ext: Some("e".into()), private: false },
        ClientFrame::FetchGroupAcks { req: 3, msg_id: 3, page_size: 10, start_ack_id: None },
        ClientFrame::MarkRead { req: 4, chat_type: ChatType::Chat, conversation: "bob".into(), msg_id: None },
        ClientFrame::Ping { nonce: 1 },
    ];
    let mut wire = vec![0u8];
    for f in &client {
        encode_into(f, &mut wire);
    }
    write(&root.join("frame_decoder"), "client_frames", &wire);
    println!("seeds written to {}", root.display());
}
