//! Group delivery receipts: a member's device acks the delivery of a group message that asks
//! for it (`require_delivery_ack` on a group message, kept by the `[group_delivery_ack]` policy
//! at send). The rules, the checks, the recording, the events and the paging are the read acks'
//! (`group_receipts`), taken with [`GroupAckKind::Delivery`]: its own policy, ack set and store
//! rows; no ext and no read state.

use receipt_core::protocol::Response;
use receipt_core::{GroupAckKind, MsgId};

use super::{Res, ServerCore};

impl ServerCore {
    /// `user`'s device acks the delivery of group message `msg_id` (a `DeliveryAck` naming a
    /// group message). Idempotent: a second ack of the same member changes nothing.
    pub(super) fn group_delivery_ack(&mut self, now: u64, user: &str, msg_id: MsgId) -> Res<Response> {
        if !self.check_group_acker(now, user, GroupAckKind::Delivery, msg_id)? {
            self.record_group_ack(now, user, GroupAckKind::Delivery, msg_id, None);
        }
        Ok(Response::Done)
    }
}
