//! The simulated network: one connection per online device, two in-order byte streams.

use std::collections::VecDeque;

use receipt_core::codec::{self, FrameDecoder};
use receipt_core::protocol::{ClientFrame, ServerFrame};
use receipt_server::SessionId;

/// One device's connection to the server. Frames travel encoded by the real codec, one chunk
/// per frame, and are decoded on arrival by the real [`FrameDecoder`], in order. Whatever is
/// still in flight when the connection is cut is lost.
pub(crate) struct Conn {
    pub(crate) session: SessionId,
    /// Client -> server, encoded frames not yet read by the server.
    up: VecDeque<Vec<u8>>,
    /// Server -> client, encoded frames not yet read by the client.
    down: VecDeque<Vec<u8>>,
    server_rx: FrameDecoder,
    client_rx: FrameDecoder,
}

impl Conn {
    pub(crate) fn new(session: SessionId) -> Self {
        Conn { session, up: VecDeque::new(), down: VecDeque::new(), server_rx: FrameDecoder::default(), client_rx: FrameDecoder::default() }
    }

    pub(crate) fn send_up(&mut self, f: &ClientFrame) {
        self.up.push_back(codec::encode(f));
    }

    pub(crate) fn send_down(&mut self, f: &ServerFrame) {
        self.down.push_back(codec::encode(f));
    }

    pub(crate) fn in_flight(&self) -> (usize, usize) {
        (self.up.len(), self.down.len())
    }

    /// Everything in flight to the server, decoded as the server's connection reads it.
    pub(crate) fn recv_up(&mut self) -> Vec<ClientFrame> {
        let mut out = Vec::new();
        while let Some(bytes) = self.up.pop_front() {
            self.server_rx.push(&bytes);
            while let Some(f) = self.server_rx.next_frame::<ClientFrame>().expect("client frames decode") {
                out.push(f);
            }
        }
        out
    }

    /// Everything in flight to the client, as frame bodies (the engine decodes them itself).
    pub(crate) fn recv_down(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(bytes) = self.down.pop_front() {
            self.client_rx.push(&bytes);
            while let Some(body) = self.client_rx.next_body().expect("server frames decode") {
                out.push(body.to_vec());
            }
        }
        out
    }
}
