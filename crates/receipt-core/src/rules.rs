//! The receipt rules: who may ack what, what is already covered, what a message may hold.
//!
//! # One home per rule
//!
//! A receipt rule used to be written twice or more: once in the client engine (to refuse early
//! and to keep its flags right offline), once in the server core (to enforce it), and again in
//! test doubles and bindings, under different names and, in places, with different answers. This
//! module is the single place where each rule is written. Every function here is pure: it takes
//! plain data (ids, watermarks, a read set, a group's size and the caller's role, the policy
//! settings, timestamps) and answers `Ok` or the [`ChatError`] whose [`ErrorCode`] both sides
//! report. Nothing here looks anything up: the caller finds the message, the conversation or the
//! group in its own state (an unknown one is the caller's error, since only it knows whether the
//! id is unknown or past retention) and hands the facts in.
//!
//! The server (`ServerCore` in receipt-server) enforces every rule. The client
//! ([`ClientEngine`]) runs the same functions on the facts it has (its copy of the message, its
//! own watermarks) so that a request the server would refuse is refused locally, with the same
//! code, before it is queued; rules whose facts only the server holds (the group-ack policy,
//! membership, validity) are enforced there alone. Changing a rule means changing one function
//! here, and both sides follow.
//!
//! # Watermark vocabulary
//!
//! Both sides describe a conversation's read state with the same words:
//!
//! - **read mark** ([`ReadMark`]): what *this user* has read. `up_to` is the read watermark (every
//!   received message with an id up to it counts as read: a conversation read or a mark-all), and
//!   `singles` the messages above it read one by one. A received message is unread iff the read
//!   mark does not [cover](ReadMark::covers) it. (The client holds the messages themselves, so it
//!   keeps its singles as each message's `unread` flag; its `read_up_to` is the same watermark.)
//! - **receipt mark** (`receipt_up_to`): 1:1 only, the `up_to` of the last conversation ack this
//!   user sent: the peer already got a read receipt for every message up to it, so a read ack of
//!   one of them is [already covered](read_ack_covered).
//! - **newest** / **newest received**: the newest message of the conversation in either direction,
//!   and the newest one this user received. A conversation ack moves the marks to `newest`, and
//!   it has something to say only when `newest_received` is above the mark it moves
//!   ([`conversation_ack_up_to`]).
//!
//! [`ClientEngine`]: crate::engine::ClientEngine

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{ChatError, ChatResult, ErrorCode};
use crate::types::{ChatMessage, ChatType, GroupAckKind, GroupRole, MsgId, WireMessage, MAX_CONTENT_BYTES};

// ----- page bounds -----

/// Largest page of group read acks one fetch may ask for.
pub const MAX_PAGE_SIZE: u32 = 100;

/// A page size must be 1..=[`MAX_PAGE_SIZE`] (110 otherwise).
pub fn check_page_size(page_size: u32) -> ChatResult<()> {
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(ChatError::invalid_param(format!("page_size must be 1..={MAX_PAGE_SIZE}")));
    }
    Ok(())
}

/// Most message ids one batch request may name (the SDKs' batch calls allow 20).
pub const MAX_BATCH_IDS: usize = 20;

/// A batch request names 1..=[`MAX_BATCH_IDS`] message ids (110 otherwise).
pub fn check_batch_ids(count: usize) -> ChatResult<()> {
    if !(1..=MAX_BATCH_IDS).contains(&count) {
        return Err(ChatError::invalid_param(format!("a batch names 1..={MAX_BATCH_IDS} message ids, not {count}")));
    }
    Ok(())
}

/// A message of a batch read ack must belong to the conversation the batch names: sent by
/// that peer (500 otherwise, like a message sent to somebody else).
pub fn check_in_conversation(msg: MessageFacts<'_>, peer: &str) -> ChatResult<()> {
    if msg.chat_type == ChatType::Chat && msg.from != peer {
        return Err(ChatError::invalid_message(format!("message {} is not from {peer}", msg.id)));
    }
    Ok(())
}

// ----- content -----

/// A message's content must be 1..=[`MAX_CONTENT_BYTES`] bytes (110 otherwise): an empty
/// message is refused like an oversized one.
pub fn check_content(content: &str) -> ChatResult<()> {
    if content.is_empty() || content.len() > MAX_CONTENT_BYTES {
        return Err(ChatError::invalid_param(format!("content must be 1..={MAX_CONTENT_BYTES} bytes")));
    }
    Ok(())
}

/// A group read ack's ext is optional and at most [`MAX_CONTENT_BYTES`] bytes (110 otherwise).
pub fn check_ext(ext: Option<&str>) -> ChatResult<()> {
    if ext.is_some_and(|e| e.len() > MAX_CONTENT_BYTES) {
        return Err(ChatError::invalid_param(format!("ext must be at most {MAX_CONTENT_BYTES} bytes")));
    }
    Ok(())
}

// ----- the facts of a message -----

/// What the rules need to know about a message, borrowed from whichever type holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageFacts<'a> {
    pub id: MsgId,
    pub from: &'a str,
    /// The peer (1:1) or the group / room id.
    pub to: &'a str,
    pub chat_type: ChatType,
    /// Server time the message was accepted (ms).
    pub timestamp: u64,
    /// The sender asked for group read acks and the server kept the request.
    pub need_group_ack: bool,
    /// The sender asked for delivery acks (group: and the server kept the request).
    pub require_delivery_ack: bool,
}

impl<'a> From<&'a WireMessage> for MessageFacts<'a> {
    fn from(m: &'a WireMessage) -> Self {
        MessageFacts {
            id: m.id,
            from: &m.from,
            to: &m.to,
            chat_type: m.chat_type,
            timestamp: m.timestamp,
            need_group_ack: m.need_group_ack,
            require_delivery_ack: m.require_delivery_ack,
        }
    }
}

impl<'a> From<&'a ChatMessage> for MessageFacts<'a> {
    fn from(m: &'a ChatMessage) -> Self {
        MessageFacts {
            id: m.id,
            from: &m.from,
            to: &m.to,
            chat_type: m.chat_type,
            timestamp: m.timestamp,
            need_group_ack: m.need_group_ack,
            require_delivery_ack: m.require_delivery_ack,
        }
    }
}

// ----- 1:1 acks -----

/// Who may send a 1:1 ack (`what`: "delivery" or "read") of `msg`: only its recipient, and only
/// for a 1:1 message. 500 for a group or room message or one's own message, and for a message
/// sent to somebody else.
pub fn check_one_to_one_ack(msg: MessageFacts<'_>, acker: &str, what: &str) -> ChatResult<()> {
    if msg.chat_type != ChatType::Chat {
        return Err(ChatError::wrong_type(format!("{what} acks are for 1:1 messages only")));
    }
    if msg.from == acker {
        return Err(ChatError::wrong_type("cannot ack a message you sent"));
    }
    if msg.to != acker {
        return Err(ChatError::invalid_message(format!("message {} was not sent to you", msg.id)));
    }
    Ok(())
}

/// Read-ack eligibility: [`check_one_to_one_ack`] for a read ack.
pub fn check_read_ack(msg: MessageFacts<'_>, reader: &str) -> ChatResult<()> {
    check_one_to_one_ack(msg, reader, "read")
}

/// A read ack of message `id` says nothing new when this user already acked it one by one
/// (`acked`) or a conversation ack of theirs covered it (`receipt_up_to`, the receipt mark).
pub fn read_ack_covered(acked: bool, receipt_up_to: MsgId, id: MsgId) -> bool {
    acked || id <= receipt_up_to
}

// ----- private reading -----
//
// Design note. A read ack is either a receipt (the sender is told: `Read`, `ConversationRead`,
// `GroupRead`, the sender's `isReceiverRead` / `groupAckCount`) or, in private reading, a change
// of the reader's own read state only: the server records it like a mark-read (unread count
// drops, the reader's other devices get `ReadState`, offline ones at their sync) and tells the
// sender nothing. The two are kept apart on the server by the facts it already holds: "read"
// (the read mark) and "receipt sent" (`read_acked`, the receipt mark, a group's ack list). So a
// message read privately can still be acked publicly later (the sender is told then, once),
// while a private ack after a receipt changes nothing. `requireReadAck = false` sends nothing
// at all (505), whatever the private setting: it wins.

/// Whether a read ack call goes out private: the call's override (`per_call`) or else the
/// client's `private_read_receipts` option. 505 when `require_read_ack` is false: then the
/// call sends nothing at all, private or not.
pub fn read_ack_private(require_read_ack: bool, private_option: bool, per_call: Option<bool>) -> ChatResult<bool> {
    if !require_read_ack {
        return Err(ChatError::new(ErrorCode::ServiceNotEnabled, "read acks are off (requireReadAck is false): nothing was sent"));
    }
    Ok(per_call.unwrap_or(private_option))
}

/// What an accepted (checked) read ack of one message does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAckEffect {
    /// Nothing new: the receipt was sent before, or (private) the message is already read.
    Nothing,
    /// Private: the reader's own read state only (unread count, own devices); no receipt.
    OwnReadState,
    /// A receipt: the sender is told, and the reader's read state changes too.
    Receipt,
}

/// The effect of a read ack (1:1 or group) made `private` or not, given whether this user's
/// receipt for the message was already sent (`receipt_sent`) and whether it is already read by
/// them (`read`). A receipt after a private read still goes out; a private ack never undoes or
/// repeats a receipt.
pub fn read_ack_effect(private: bool, receipt_sent: bool, read: bool) -> ReadAckEffect {
    match (receipt_sent, private, read) {
        (true, _, _) | (false, true, true) => ReadAckEffect::Nothing,
        (false, true, false) => ReadAckEffect::OwnReadState,
        (false, false, _) => ReadAckEffect::Receipt,
    }
}

// ----- the read mark -----

/// This user's read state of one conversation: the watermark and the messages above it read one
/// by one. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMark {
    /// Every received message with an id up to here counts as read.
    pub up_to: MsgId,
    /// Messages above `up_to` read one by one.
    pub singles: BTreeSet<MsgId>,
}

impl ReadMark {
    /// Whether message `id` counts as read.
    pub fn covers(&self, id: MsgId) -> bool {
        id <= self.up_to || self.singles.contains(&id)
    }

    /// Marks one message read; true if it was not covered before.
    pub fn mark_one(&mut self, id: MsgId) -> bool {
        id > self.up_to && self.singles.insert(id)
    }

    /// Moves the watermark to `up_to` (never back) and drops the singles it now covers.
    /// O(log n) in the number of singles.
    pub fn mark_all(&mut self, up_to: MsgId) {
        self.up_to = self.up_to.max(up_to);
        self.singles = self.singles.split_off(&(self.up_to + 1));
    }
}

/// The marks of one conversation a conversation ack looks at (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversationMarks {
    /// The read mark's watermark.
    pub read_up_to: MsgId,
    /// 1:1: the receipt mark.
    pub receipt_up_to: MsgId,
    /// Newest message, either direction.
    pub newest: MsgId,
    /// Newest message this user received.
    pub newest_received: MsgId,
}

/// Where a conversation ack moves the marks, or `None` when it has nothing to say: 1:1, when the
/// receipt mark already covers every received message; group and room, when the read watermark
/// does. The ack covers the conversation up to its newest message.
pub fn conversation_ack_up_to(chat_type: ChatType, marks: ConversationMarks) -> Option<MsgId> {
    let mark = match chat_type {
        ChatType::Chat => marks.receipt_up_to,
        ChatType::GroupChat | ChatType::ChatRoom => marks.read_up_to,
    };
    (marks.newest_received > mark).then_some(marks.newest)
}

// ----- group read acks -----

/// Who may send a group message that asks for read acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhoMayRequest {
    AllMembers,
    OwnerAndAdmins,
}

/// Who sees a group message's read acks (count, list, events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    SenderOnly,
    AllMembers,
}

/// The group read-ack policy as the rules need it (the server's configuration maps into it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupAckPolicy {
    /// The feature is on (505 while off).
    pub enabled: bool,
    pub who_may_request: WhoMayRequest,
    /// An ack is valid for this long after the message was sent (506 after), in ms.
    pub validity_ms: u64,
    /// Groups with more members than this get no read acks (the request is dropped, not refused).
    /// At most [`MAX_MEMBER_CAP`].
    pub member_cap: usize,
    pub visibility: Visibility,
    /// Acks of a message in a group with more members than this are coalesced: no per-ack event
    /// to the sender (nor to the members), one count update per message per interval instead
    /// ([`coalesce_group_acks`]). The default equals the default `member_cap`: nothing is
    /// coalesced.
    pub coalesce_above: usize,
}

/// Largest `member_cap` a server accepts (its configuration refuses more).
pub const MAX_MEMBER_CAP: usize = 10_000;

/// The member cap must be 1..=[`MAX_MEMBER_CAP`] (a configuration error otherwise).
pub fn check_member_cap(member_cap: usize) -> Result<(), String> {
    if !(1..=MAX_MEMBER_CAP).contains(&member_cap) {
        return Err(format!("group_ack.member_cap must be 1..={MAX_MEMBER_CAP}, not {member_cap}"));
    }
    Ok(())
}

/// Whether the read acks of a message in a group of `member_count` members (the owner
/// included) are coalesced into count updates instead of one event per ack: the cost of one ack
/// must not grow with the group.
pub fn coalesce_group_acks(policy: &GroupAckPolicy, member_count: usize) -> bool {
    member_count > policy.coalesce_above
}

impl Default for GroupAckPolicy {
    /// The seed defaults: off, anybody may ask, 3 days, 200 members, sender only (and nothing
    /// coalesced: the threshold is the cap).
    fn default() -> Self {
        GroupAckPolicy {
            enabled: false,
            who_may_request: WhoMayRequest::AllMembers,
            validity_ms: 3 * 24 * 3600 * 1000,
            member_cap: 200,
            visibility: Visibility::SenderOnly,
            coalesce_above: 200,
        }
    }
}

/// Sending a group message that asks for acks of `kind` (`wants`): whether the request is kept.
/// While the feature is off: read acks, 505; delivery acks, dropped (`Ok(false)`): the
/// message's delivery flag predates group delivery acks and was always ignored on group
/// messages, so a sender that sets it on every message keeps working. 603 when `role` may not
/// ask; a group above the member cap silently gets no acks (`Ok(false)`). A message that does
/// not ask is always `Ok(false)`.
pub fn group_ack_on_send(
    kind: GroupAckKind,
    policy: &GroupAckPolicy,
    wants: bool,
    role: GroupRole,
    member_count: usize,
) -> ChatResult<bool> {
    if !wants {
        return Ok(false);
    }
    if !policy.enabled {
        return match kind {
            GroupAckKind::Read => Err(ChatError::new(ErrorCode::ServiceNotEnabled, "group read acks are not enabled")),
            GroupAckKind::Delivery => Ok(false),
        };
    }
    if policy.who_may_request == WhoMayRequest::OwnerAndAdmins && role == GroupRole::Member {
        return Err(ChatError::new(
            ErrorCode::GroupPermissionDenied,
            format!("only the owner and admins may ask for group {} acks", kind.word()),
        ));
    }
    Ok(member_count <= policy.member_cap)
}

/// Who may send a group ack of `kind` of `msg`, from the message alone: a group message (500
/// otherwise) that `acker` did not send (500).
pub fn check_group_ack_target(kind: GroupAckKind, msg: MessageFacts<'_>, acker: &str) -> ChatResult<()> {
    if msg.chat_type != ChatType::GroupChat {
        return Err(ChatError::wrong_type(format!("group {} acks are for group messages only", kind.word())));
    }
    if msg.from == acker {
        return Err(ChatError::wrong_type("cannot ack a message you sent"));
    }
    Ok(())
}

/// The message asks for group acks of `kind` (505 otherwise).
pub fn check_group_ack_asked(kind: GroupAckKind, msg: MessageFacts<'_>) -> ChatResult<()> {
    if !kind.asked(&msg) {
        return Err(ChatError::new(ErrorCode::ServiceNotEnabled, format!("this message does not take group {} acks", kind.word())));
    }
    Ok(())
}

/// Group-ack eligibility beyond the message itself, in the order the server checks: the
/// feature is on (505), the message asks for acks of `kind` (505), the acker is a member of the
/// group (602), the ack is within its validity at `now` (506).
pub fn check_group_ack(
    kind: GroupAckKind,
    policy: &GroupAckPolicy,
    msg: MessageFacts<'_>,
    acker_is_member: bool,
    now: u64,
) -> ChatResult<()> {
    if !policy.enabled {
        return Err(ChatError::new(ErrorCode::ServiceNotEnabled, format!("group {} acks are not enabled", kind.word())));
    }
    check_group_ack_asked(kind, msg)?;
    if !acker_is_member {
        return Err(ChatError::new(ErrorCode::GroupNotJoined, format!("not a member of {}", msg.to)));
    }
    if now.saturating_sub(msg.timestamp) > policy.validity_ms {
        return Err(ChatError::new(ErrorCode::MessageExpired, format!("the group {} ack is past its validity", kind.word())));
    }
    Ok(())
}

/// Whether every member (not only the sender and the acker) hears of a group ack.
pub fn members_see_group_acks(policy: &GroupAckPolicy) -> bool {
    policy.visibility == Visibility::AllMembers
}

/// Who may see a group message's acks of `kind`: its sender, and the members when the policy
/// says so (603 otherwise).
pub fn check_may_see_group_acks(
    kind: GroupAckKind,
    policy: &GroupAckPolicy,
    msg: MessageFacts<'_>,
    viewer: &str,
    viewer_is_member: bool,
) -> ChatResult<()> {
    if msg.from == viewer || (members_see_group_acks(policy) && viewer_is_member) {
        return Ok(());
    }
    Err(ChatError::new(ErrorCode::GroupPermissionDenied, format!("only the sender may see this message's {} acks", kind.word())))
}

/// Whether a group member's device sends the delivery ack of `msg` on its own: a group message
/// that asks for them, received (not sent by `me`). The server's policy decides the rest.
pub fn wants_group_delivery_ack(msg: MessageFacts<'_>, me: &str) -> bool {
    msg.chat_type == ChatType::GroupChat && msg.require_delivery_ack && msg.from != me
}

/// Whether a current member was a member when message `msg_id` was sent: a member since the
/// group was created (`joined_after` `None`), or one who joined when the newest message was
/// `joined_after` < `msg_id`. Only such members may ack it and count as its unread readers.
pub fn member_at_send(joined_after: Option<MsgId>, msg_id: MsgId) -> bool {
    joined_after.is_none_or(|j| msg_id > j)
}

/// A group of `size` members (the owner included) must stay within `max_size` (604 otherwise).
pub fn check_group_size(size: usize, max_size: usize) -> ChatResult<()> {
    if size > max_size {
        return Err(ChatError::new(ErrorCode::GroupMembersFull, format!("a group has at most {max_size} members")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(chat_type: ChatType, from: &'static str, to: &'static str) -> MessageFacts<'static> {
        MessageFacts { id: 7, from, to, chat_type, timestamp: 1_000, need_group_ack: true, require_delivery_ack: false }
    }

    fn code<T: std::fmt::Debug>(r: ChatResult<T>) -> ErrorCode {
        r.unwrap_err().code
    }

    const R: GroupAckKind = GroupAckKind::Read;
    const D: GroupAckKind = GroupAckKind::Delivery;

    fn on() -> GroupAckPolicy {
        GroupAckPolicy { enabled: true, ..GroupAckPolicy::default() }
    }

    #[test]
    fn page_size_is_one_to_the_bound() {
        assert_eq!(code(check_page_size(0)), ErrorCode::InvalidParam);
        assert!(check_page_size(1).is_ok());
        assert!(check_page_size(MAX_PAGE_SIZE).is_ok());
        assert_eq!(code(check_page_size(MAX_PAGE_SIZE + 1)), ErrorCode::InvalidParam);
    }

    #[test]
    fn content_must_be_non_empty_and_bounded_and_ext_only_bounded() {
        assert_eq!(code(check_content("")), ErrorCode::InvalidParam);
        assert!(check_content("x").is_ok());
        assert!(check_content(&"x".repeat(MAX_CONTENT_BYTES)).is_ok());
        assert_eq!(code(check_content(&"x".repeat(MAX_CONTENT_BYTES + 1))), ErrorCode::InvalidParam);
        assert!(check_ext(None).is_ok());
        assert!(check_ext(Some("")).is_ok());
        assert_eq!(code(check_ext(Some(&"x".repeat(MAX_CONTENT_BYTES + 1)))), ErrorCode::InvalidParam);
    }

    #[test]
    fn only_the_recipient_of_a_one_to_one_message_may_read_ack_it() {
        assert!(check_read_ack(msg(ChatType::Chat, "alice", "bob"), "bob").is_ok());
        assert_eq!(code(check_read_ack(msg(ChatType::Chat, "alice", "bob"), "alice")), ErrorCode::MessageInvalid);
        assert_eq!(code(check_read_ack(msg(ChatType::Chat, "alice", "bob"), "carol")), ErrorCode::MessageInvalid);
        assert_eq!(code(check_read_ack(msg(ChatType::GroupChat, "alice", "g1"), "bob")), ErrorCode::MessageInvalid);
        assert_eq!(code(check_read_ack(msg(ChatType::ChatRoom, "alice", "r1"), "bob")), ErrorCode::MessageInvalid);
        assert_eq!(code(check_one_to_one_ack(msg(ChatType::Chat, "alice", "bob"), "carol", "delivery")), ErrorCode::MessageInvalid);
    }

    #[test]
    fn a_read_ack_is_covered_by_its_own_ack_or_the_receipt_mark() {
        assert!(!read_ack_covered(false, 6, 7));
        assert!(read_ack_covered(false, 7, 7));
        assert!(read_ack_covered(true, 0, 7));
    }

    #[test]
    fn large_groups_coalesce_above_the_threshold_and_the_cap_is_bounded() {
        let p = GroupAckPolicy { coalesce_above: 1000, ..on() };
        assert!(!coalesce_group_acks(&p, 1000), "at the threshold: one event per ack");
        assert!(coalesce_group_acks(&p, 1001));
        assert!(!coalesce_group_acks(&GroupAckPolicy::default(), 200), "the default coalesces nothing the default cap lets ack");
        assert!(check_member_cap(MAX_MEMBER_CAP).is_ok() && check_member_cap(200).is_ok());
        assert!(check_member_cap(MAX_MEMBER_CAP + 1).unwrap_err().contains("10000"));
        assert!(check_member_cap(0).is_err());
    }

    #[test]
    fn the_read_mark_covers_its_watermark_and_its_singles() {
        let mut m = ReadMark::default();
        assert!(!m.covers(1));
        assert!(m.mark_one(3));
        assert!(!m.mark_one(3), "twice is no news");
        assert!(m.mark_one(9));
        assert!(m.covers(3) && m.covers(9) && !m.covers(4));
        m.mark_all(5);
        assert_eq!((m.up_to, m.singles.iter().copied().collect::<Vec<_>>()), (5, vec![9]), "singles below the mark dropped");
        assert!(m.covers(4) && m.covers(9) && !m.covers(6));
        assert!(!m.mark_one(2), "below the watermark: already read");
        m.mark_all(1);
        assert_eq!(m.up_to, 5, "the watermark never goes back");
        m.mark_all(9);
        assert!(m.singles.is_empty());
    }

    #[test]
    fn a_conversation_ack_says_something_only_above_its_mark() {
        let marks = ConversationMarks { read_up_to: 4, receipt_up_to: 2, newest: 6, newest_received: 4 };
        // 1:1 looks at the receipt mark, groups at the read watermark.
        assert_eq!(conversation_ack_up_to(ChatType::Chat, marks), Some(6));
        assert_eq!(conversation_ack_up_to(ChatType::GroupChat, marks), None);
        assert_eq!(conversation_ack_up_to(ChatType::GroupChat, ConversationMarks { read_up_to: 3, ..marks }), Some(6));
        assert_eq!(conversation_ack_up_to(ChatType::Chat, ConversationMarks { receipt_up_to: 4, ..marks }), None);
        assert_eq!(conversation_ack_up_to(ChatType::Chat, ConversationMarks::default()), None, "nothing received");
    }

    #[test]
    fn asking_for_group_acks_needs_the_feature_the_role_and_a_small_group() {
        let off = GroupAckPolicy::default();
        assert_eq!(group_ack_on_send(R, &off, false, GroupRole::Member, 3), Ok(false));
        assert_eq!(code(group_ack_on_send(R, &off, true, GroupRole::Owner, 3)), ErrorCode::ServiceNotEnabled);
        assert_eq!(group_ack_on_send(R, &on(), true, GroupRole::Member, 3), Ok(true));
        assert_eq!(group_ack_on_send(R, &on(), true, GroupRole::Member, 200), Ok(true));
        assert_eq!(group_ack_on_send(R, &on(), true, GroupRole::Member, 201), Ok(false), "above the cap: dropped, not refused");
        let admins = GroupAckPolicy { who_may_request: WhoMayRequest::OwnerAndAdmins, ..on() };
        assert_eq!(code(group_ack_on_send(R, &admins, true, GroupRole::Member, 3)), ErrorCode::GroupPermissionDenied);
        assert_eq!(group_ack_on_send(R, &admins, true, GroupRole::Admin, 3), Ok(true));
        assert_eq!(group_ack_on_send(R, &admins, true, GroupRole::Owner, 3), Ok(true));
    }

    #[test]
    fn group_ack_eligibility_in_the_servers_order() {
        let m = msg(ChatType::GroupChat, "alice", "g1");
        assert!(check_group_ack_target(R, m, "bob").is_ok());
        assert_eq!(code(check_group_ack_target(R, m, "alice")), ErrorCode::MessageInvalid);
        assert_eq!(code(check_group_ack_target(R, msg(ChatType::Chat, "alice", "bob"), "bob")), ErrorCode::MessageInvalid);
        assert_eq!(code(check_group_ack_target(R, msg(ChatType::ChatRoom, "alice", "r1"), "bob")), ErrorCode::MessageInvalid);
        let not_asked = MessageFacts { need_group_ack: false, ..m };
        assert_eq!(code(check_group_ack_asked(R, not_asked)), ErrorCode::ServiceNotEnabled);
        let valid_until = m.timestamp + on().validity_ms;
        assert!(check_group_ack(R, &on(), m, true, valid_until).is_ok());
        assert_eq!(code(check_group_ack(R, &on(), m, true, valid_until + 1)), ErrorCode::MessageExpired);
        assert_eq!(code(check_group_ack(R, &on(), m, false, valid_until + 1)), ErrorCode::GroupNotJoined, "membership first");
        assert_eq!(code(check_group_ack(R, &on(), not_asked, false, 0)), ErrorCode::ServiceNotEnabled);
        assert_eq!(code(check_group_ack(R, &GroupAckPolicy::default(), m, true, 0)), ErrorCode::ServiceNotEnabled);
    }

    #[test]
    fn group_acks_are_seen_by_the_sender_and_by_members_when_visible() {
        let m = msg(ChatType::GroupChat, "alice", "g1");
        assert!(check_may_see_group_acks(R, &on(), m, "alice", true).is_ok());
        assert_eq!(code(check_may_see_group_acks(R, &on(), m, "bob", true)), ErrorCode::GroupPermissionDenied);
        let all = GroupAckPolicy { visibility: Visibility::AllMembers, ..on() };
        assert!(members_see_group_acks(&all) && !members_see_group_acks(&on()));
        assert!(check_may_see_group_acks(R, &all, m, "bob", true).is_ok());
        assert_eq!(code(check_may_see_group_acks(R, &all, m, "carol", false)), ErrorCode::GroupPermissionDenied);
    }

    #[test]
    fn group_delivery_acks_follow_the_same_rules_on_their_own_flag() {
        let read_only = msg(ChatType::GroupChat, "alice", "g1");
        let both = MessageFacts { require_delivery_ack: true, ..read_only };
        let delivery_only = MessageFacts { need_group_ack: false, ..both };
        // Each kind looks at its own flag.
        assert_eq!(code(check_group_ack_asked(D, read_only)), ErrorCode::ServiceNotEnabled);
        assert!(check_group_ack_asked(D, delivery_only).is_ok());
        assert_eq!(code(check_group_ack_asked(R, delivery_only)), ErrorCode::ServiceNotEnabled);
        assert!(check_group_ack(D, &on(), both, true, 1_000).is_ok());
        assert_eq!(code(check_group_ack(D, &GroupAckPolicy::default(), both, true, 1_000)), ErrorCode::ServiceNotEnabled);
        assert_eq!(code(check_group_ack(D, &on(), both, false, 1_000)), ErrorCode::GroupNotJoined);
        let late = both.timestamp + on().validity_ms + 1;
        assert_eq!(code(check_group_ack(D, &on(), both, true, late)), ErrorCode::MessageExpired);
        let e = check_group_ack(D, &GroupAckPolicy::default(), both, true, 0).unwrap_err();
        assert!(e.description.contains("delivery"), "{e:?}");
        assert_eq!(code(check_group_ack_target(D, both, "alice")), ErrorCode::MessageInvalid);
        assert_eq!(code(check_group_ack_target(D, msg(ChatType::Chat, "alice", "bob"), "bob")), ErrorCode::MessageInvalid);
        assert_eq!(code(check_may_see_group_acks(D, &on(), both, "bob", true)), ErrorCode::GroupPermissionDenied);
        assert_eq!(group_ack_on_send(D, &GroupAckPolicy::default(), true, GroupRole::Owner, 3), Ok(false), "off: dropped, not refused");
        let admins = GroupAckPolicy { who_may_request: WhoMayRequest::OwnerAndAdmins, ..on() };
        assert_eq!(code(group_ack_on_send(D, &admins, true, GroupRole::Member, 3)), ErrorCode::GroupPermissionDenied);
        assert_eq!(group_ack_on_send(D, &on(), true, GroupRole::Member, 201), Ok(false));
    }

    #[test]
    fn a_member_device_acks_delivery_only_of_group_messages_that_ask_and_it_did_not_send() {
        let m = MessageFacts { require_delivery_ack: true, ..msg(ChatType::GroupChat, "alice", "g1") };
        assert!(wants_group_delivery_ack(m, "bob"));
        assert!(!wants_group_delivery_ack(m, "alice"), "never one's own message");
        assert!(!wants_group_delivery_ack(MessageFacts { require_delivery_ack: false, ..m }, "bob"));
        assert!(!wants_group_delivery_ack(MessageFacts { chat_type: ChatType::Chat, ..m }, "bob"), "1:1 has its own ack");
        assert!(!wants_group_delivery_ack(MessageFacts { chat_type: ChatType::ChatRoom, ..m }, "bob"));
    }

    #[test]
    fn a_group_stays_within_its_size() {
        assert!(check_group_size(5000, 5000).is_ok());
        assert_eq!(code(check_group_size(5001, 5000)), ErrorCode::GroupMembersFull);
    }

    #[test]
    fn require_read_ack_false_wins_over_private_reading() {
        assert_eq!(code(read_ack_private(false, true, Some(true))), ErrorCode::ServiceNotEnabled);
        assert_eq!(code(read_ack_private(false, false, None)), ErrorCode::ServiceNotEnabled);
        assert_eq!(read_ack_private(true, false, None), Ok(false));
        assert_eq!(read_ack_private(true, true, None), Ok(true));
        // The call's override beats the option either way.
        assert_eq!(read_ack_private(true, true, Some(false)), Ok(false));
        assert_eq!(read_ack_private(true, false, Some(true)), Ok(true));
    }

    #[test]
    fn a_private_read_stays_open_to_a_later_receipt_and_never_repeats_one() {
        use ReadAckEffect::*;
        assert_eq!(read_ack_effect(true, false, false), OwnReadState);
        assert_eq!(read_ack_effect(true, false, true), Nothing, "private twice: idempotent");
        assert_eq!(read_ack_effect(false, false, true), Receipt, "read privately, then acked: the sender is told");
        assert_eq!(read_ack_effect(false, false, false), Receipt);
        assert_eq!(read_ack_effect(true, true, true), Nothing, "a private ack after a receipt changes nothing");
        assert_eq!(read_ack_effect(false, true, true), Nothing, "a receipt is not sent twice");
    }
}
