//! The messages between nodes: a [`Header`] (kind, sender node, epoch, sequence number), the
//! item count, then that many postcard-encoded items. Items are encoded once, as they are added
//! ([`Builder`]); a message ends at [`CHUNK_BYTES`] (one item may pass it: a frame is at most
//! `max_frame`), and a received message is refused past [`MAX_MESSAGE_BYTES`]. Protocol frames
//! inside are carried in the protocol's own encoding (JSON: its internally tagged enums are not
//! something postcard can decode), as bytes.

use std::sync::Arc;

use receipt_core::protocol::{ClientFrame, ServerFrame};
use serde::{Deserialize, Serialize};

use crate::core::SessionId;

/// A message is closed once its items reach this many bytes.
pub const CHUNK_BYTES: usize = 256 << 10;
/// Largest message decoded (the NATS server's `max_payload` must allow it: docs/deployment.md).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Most items one message may claim (a hostile count allocates nothing beyond it).
pub const MAX_ITEMS: u32 = 1 << 16;

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Gateway -> sequencer: [`Input`] items.
    Inputs,
    /// Sequencer -> gateway: committed frames for its sessions, [`OutFrame`] items.
    Frames,
    /// Sequencer -> gateway: close these sessions ([`SessionId`] items).
    Drop,
    /// Either way, no items: `seq` is the sender's last sequence number (it consumes none).
    Heartbeat,
}

/// Every message starts with it. `epoch` is the sender's term (its start time, ms): a new
/// epoch means a new process that knows nothing of the old one's sessions. `seq` counts the
/// messages a sender sent to one receiver in this epoch, from 1, without gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub kind: Kind,
    pub node: u16,
    pub epoch: u64,
    pub seq: u64,
}

/// One input of a gateway's session, as the connection hands it to the core.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Input {
    Login {
        session: SessionId,
        #[serde(with = "as_json")]
        frame: ClientFrame,
    },
    Frames {
        session: SessionId,
        #[serde(with = "as_json")]
        frames: Vec<ClientFrame>,
    },
    Closed {
        session: SessionId,
    },
    ReplayMore {
        session: SessionId,
    },
}

/// One committed frame for a gateway's session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutFrame {
    pub session: SessionId,
    pub replay: bool,
    #[serde(with = "as_json")]
    pub frame: Arc<ServerFrame>,
}

/// A protocol value as its JSON bytes.
mod as_json {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        let bytes = serde_json::to_vec(v).map_err(serde::ser::Error::custom)?;
        s.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let bytes = <&[u8]>::deserialize(d)?;
        serde_json::from_slice(bytes).map_err(serde::de::Error::custom)
    }
}

/// The items of one message being built.
#[derive(Default)]
pub struct Builder {
    items: u32,
    body: Vec<u8>,
}

impl Builder {
    /// Adds an item; true once the message is full (send it, start another).
    pub fn push<T: Serialize>(&mut self, item: &T) -> bool {
        // Encoding to a Vec only fails for types serde cannot express; ours all can.
        if let Ok(b) = postcard::to_extend(item, std::mem::take(&mut self.body)) {
            self.body = b;
            self.items += 1;
        }
        self.is_full()
    }

    pub fn is_full(&self) -> bool {
        self.body.len() >= CHUNK_BYTES || self.items >= MAX_ITEMS
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// The message with `header`; the builder is empty again.
    pub fn finish(&mut self, header: Header) -> Vec<u8> {
        let mut out = postcard::to_allocvec(&(header, self.items)).unwrap_or_default();
        out.append(&mut self.body);
        self.items = 0;
        out
    }
}

/// A message without items.
pub fn empty(header: Header) -> Vec<u8> {
    Builder::default().finish(header)
}

/// Why a message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message of {0} bytes, over {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// The header of a message and its undecoded items.
pub fn header(bytes: &[u8]) -> Result<(Header, u32, &[u8]), WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let ((h, n), rest): ((Header, u32), _) = postcard::take_from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if n > MAX_ITEMS {
        return Err(WireError::Malformed(format!("{n} items")));
    }
    Ok((h, n, rest))
}

/// Decodes `n` items (all or an error).
pub fn items<T: serde::de::DeserializeOwned>(n: u32, mut rest: &[u8]) -> Result<Vec<T>, WireError> {
    // Every item takes at least one byte: the count cannot reserve more than the bytes allow.
    let mut out = Vec::with_capacity((n as usize).min(rest.len()));
    for _ in 0..n {
        let (item, r) = postcard::take_from_bytes(rest).map_err(|e| WireError::Malformed(e.to_string()))?;
        out.push(item);
        rest = r;
    }
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_and_hostile_ones_are_refused() {
        let mut b = Builder::default();
        let inputs = vec![
            Input::Closed { session: 7 },
            Input::ReplayMore { session: (3 << 48) | 1 },
            Input::Frames { session: 8, frames: vec![ClientFrame::Ping { nonce: 4 }] },
        ];
        for i in &inputs {
            assert!(!b.push(i));
        }
        let h = Header { kind: Kind::Inputs, node: 3, epoch: 99, seq: 5 };
        let bytes = b.finish(h);
        assert!(b.is_empty());
        let (got, n, rest) = header(&bytes).unwrap();
        assert_eq!((got, n), (h, 3));
        assert_eq!(items::<Input>(n, rest).unwrap(), inputs);
        // A count claiming more items than there are, trailing bytes, a truncated message.
        assert!(items::<Input>(n + 1, rest).is_err());
        assert!(items::<Input>(n - 1, rest).is_err());
        assert!(header(&bytes[..3]).is_err());
        assert_eq!(header(&vec![0u8; MAX_MESSAGE_BYTES + 1]).unwrap_err(), WireError::TooLarge(MAX_MESSAGE_BYTES + 1));
        let huge = postcard::to_allocvec(&(h, MAX_ITEMS + 1)).unwrap();
        assert!(header(&huge).is_err());
    }

    #[test]
    fn frames_round_trip_in_the_protocol_encoding() {
        let f = OutFrame { session: 9, replay: true, frame: Arc::new(ServerFrame::Pong { nonce: 3 }) };
        let mut b = Builder::default();
        b.push(&f);
        let bytes = b.finish(Header { kind: Kind::Frames, node: 0, epoch: 1, seq: 1 });
        let (_, n, rest) = header(&bytes).unwrap();
        assert_eq!(items::<OutFrame>(n, rest).unwrap(), vec![f]);
    }

    #[test]
    fn a_message_closes_at_the_chunk_size() {
        let mut b = Builder::default();
        let frames = vec![ClientFrame::Ping { nonce: 1 }; 1000];
        let mut pushes = 0;
        while !b.push(&Input::Frames { session: 1, frames: frames.clone() }) {
            pushes += 1;
            assert!(pushes < 10_000, "never full");
        }
        assert!(b.finish(Header { kind: Kind::Inputs, node: 1, epoch: 1, seq: 1 }).len() >= CHUNK_BYTES);
    }
}
