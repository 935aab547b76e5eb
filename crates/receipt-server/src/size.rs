//! Cheap estimates of how many bytes a frame takes on the wire (JSON), for the byte bounds: a
//! page of group read acks (`max_result_bytes`) and a connection's queue of live frames
//! (`outbound_bytes`). Strings are counted with their JSON escapes, so content full of quotes or
//! control characters cannot slip past a bound by expanding when it is encoded.

use receipt_core::protocol::{Response, ServerEvent, ServerFrame};
use receipt_core::GroupReadAck;

/// Field names, numbers and punctuation of a frame or record, beyond its strings.
const OVERHEAD: usize = 128;

/// Encoded length of `s` as a JSON string (quotes included).
pub(crate) fn json_str_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// The most bytes `s` can take as a JSON string, from its length alone (every byte escaped as
/// `\u00XX`): O(1), for the core thread, which must not scan 64 KiB exts per page.
fn json_str_bound(s: &str) -> usize {
    2 + 6 * s.len()
}

/// The most bytes an ack can take encoded, without reading its strings.
pub(crate) fn ack_bytes_bound(a: &GroupReadAck) -> usize {
    OVERHEAD + json_str_bound(&a.from) + a.content.as_deref().map_or(0, json_str_bound)
}

/// The most bytes a member id of a page of unread members can take encoded.
pub(crate) fn member_bytes(id: &str) -> usize {
    1 + json_str_bound(id)
}

pub(crate) fn ack_bytes(a: &GroupReadAck) -> usize {
    OVERHEAD + json_str_len(&a.from) + a.content.as_deref().map_or(0, json_str_len)
}

fn event_bytes(e: &ServerEvent) -> usize {
    OVERHEAD
        + match e {
            ServerEvent::Message { msg } => {
                json_str_len(&msg.content) + json_str_len(&msg.client_id) + json_str_len(&msg.from) + json_str_len(&msg.to)
            }
            ServerEvent::GroupRead { ack, .. } | ServerEvent::GroupDelivered { ack, .. } => ack_bytes(ack),
            _ => OVERHEAD,
        }
}

/// An estimate of `f`'s encoded size: exact for the strings that can be large (contents, exts),
/// a generous constant for the rest.
pub(crate) fn frame_bytes(f: &ServerFrame) -> usize {
    match f {
        ServerFrame::Event { event } => event_bytes(&event.event),
        ServerFrame::Backlog { events } => OVERHEAD + events.iter().map(|e| event_bytes(&e.event)).sum::<usize>(),
        ServerFrame::Resync { messages } => {
            OVERHEAD
                + messages
                    .iter()
                    .map(|m| {
                        OVERHEAD
                            + json_str_len(&m.msg.content)
                            + json_str_len(&m.msg.client_id)
                            + json_str_len(&m.msg.from)
                            + json_str_len(&m.msg.to)
                    })
                    .sum::<usize>()
        }
        ServerFrame::Result { ok: Some(Response::GroupAcks { page, .. }), .. } => {
            OVERHEAD + json_str_len(&page.cursor) + page.data.iter().map(ack_bytes).sum::<usize>()
        }
        ServerFrame::Result { ok: Some(Response::GroupUnread { page, .. }), .. } => {
            OVERHEAD + json_str_len(&page.cursor) + page.data.iter().map(|u| 1 + json_str_len(u)).sum::<usize>()
        }
        ServerFrame::SyncDone { conversations, .. } => {
            OVERHEAD + conversations.iter().map(|c| OVERHEAD / 2 + json_str_len(&c.id)).sum::<usize>()
        }
        ServerFrame::Result { err: Some(e), .. } | ServerFrame::Error { error: e } | ServerFrame::LoginFailed { error: e } => {
            OVERHEAD + json_str_len(&e.description)
        }
        _ => OVERHEAD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use receipt_core::protocol::ServerFrame;
    use receipt_core::CursorResult;

    #[test]
    fn estimates_are_at_least_the_encoded_size() {
        let ack = |content: &str| GroupReadAck {
            ack_id: 7,
            msg_id: 9,
            from: "bob".into(),
            content: Some(content.into()),
            count: 3,
            timestamp: 1_700_000_000_000,
        };
        for content in ["plain", "\"quotes\" and \\ backslashes", "\u{1}\u{2} controls\n", &"é".repeat(100)] {
            let page = CursorResult { data: vec![ack(content), ack(content)], cursor: "12".into() };
            let f = ServerFrame::ok(u64::MAX, Response::GroupAcks { msg_id: 9, page });
            let encoded = receipt_core::codec::encode(&f).len();
            assert!(frame_bytes(&f) >= encoded, "{content:?}: estimate {} < encoded {encoded}", frame_bytes(&f));
            assert!(frame_bytes(&f) <= encoded + 1024, "{content:?}: estimate {} far over {encoded}", frame_bytes(&f));
            let ServerFrame::Result { ok: Some(Response::GroupAcks { page, .. }), .. } = &f else { unreachable!() };
            assert!(page.data.iter().all(|a| ack_bytes_bound(a) >= ack_bytes(a)));
        }
    }
}
