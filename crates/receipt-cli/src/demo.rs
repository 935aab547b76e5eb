//! The guided demo: every receipt of the guide, on an embedded server, as a transcript.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use receipt_client::{ClientEvent, Completion, Security};
use receipt_core::*;
use receipt_server::{ServerConfig, WhoMayRequest};
use receipt_testkit::{token, try_expect_err, Device, TestCa, TestServer};

/// With `--tls`: the throwaway CA whose certificate every server of the tour presents (TLS
/// required) and every device trusts. Dropped (its temp files removed) when the tour ends.
static TLS: Mutex<Option<TestCa>> = Mutex::new(None);

fn tls_guard() -> std::sync::MutexGuard<'static, Option<TestCa>> {
    TLS.lock().unwrap_or_else(|e| e.into_inner())
}

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn section(&self, n: u32, title: &str) {
        println!("\n{}", self.paint("1", &format!("{n}. {title}")));
    }
    fn say(&self, who: &str, what: &str) {
        println!("   {:<14} {what}", self.paint("36", who));
    }
    fn hear(&self, who: &str, callback: &str, what: &str) {
        println!("   {:<14} {} {what}", self.paint("36", who), self.paint("33", callback));
    }
    fn tick(&self, n: usize) -> String {
        self.paint("32", &"✓".repeat(n))
    }
    fn refused(&self, what: &str, e: &ChatError) {
        println!("   {:<14} {what}: {} {}", "", self.paint("31", &format!("refused {}", e.code.as_u32())), e.description);
    }
}

/// How long any single wait may take before the demo gives up.
const WAIT: Duration = Duration::from_secs(10);

/// A device of `label` ("user/device") with its data under `dir`, logged in.
fn online(label: &str, options: ChatOptions, port: u16, dir: &Path) -> Result<Device, String> {
    let d = device(label, options, port, dir)?;
    d.try_login()?;
    Ok(d)
}

/// A device of `label` with its data under `dir`, not logged in.
fn device(label: &str, options: ChatOptions, port: u16, dir: &Path) -> Result<Device, String> {
    let d = Device::in_dir(label, options, port, dir)?.wait_limit(WAIT);
    let settings = tls_guard().as_ref().map(TestCa::client_settings);
    Ok(match settings {
        Some(settings) => d.reconfigure(|cfg| cfg.security = Security::Tls(settings)),
        None => d,
    })
}

fn start_server(f: impl FnOnce(&mut ServerConfig)) -> Result<TestServer, String> {
    let tls = tls_guard();
    TestServer::try_start(|config| {
        if let Some(ca) = tls.as_ref() {
            ca.configure(config, true);
        }
        f(config)
    })
    .map_err(|e| format!("starting the server: {e}"))
}

/// The next message `d` received (earlier receipt events may still be queued).
fn received(d: &Device) -> Result<ChatMessage, String> {
    d.try_received_where("onMessageReceived", |_| true)
}

/// Waits until `d` received message `id`.
fn received_id(d: &Device, id: MsgId) -> Result<ChatMessage, String> {
    d.try_received_where(&format!("onMessageReceived of msg {id}"), |m| m.id == id)
}

/// The tour; with `tls`, every connection is TLS (a throwaway CA made now; the server
/// requires TLS).
pub fn run(color: bool, tls: bool) -> Result<(), String> {
    if tls {
        *tls_guard() = Some(TestCa::try_new().map_err(|e| format!("making the throwaway CA: {e}"))?);
    }
    let result = tour(color, tls);
    tls_guard().take();
    result
}

fn tour(color: bool, tls: bool) -> Result<(), String> {
    let s = Style { color };
    // Group delivery receipts are off by default; section 9 shows them. Section 11's group is
    // above the (lowered) threshold of coalesced read counts; the others are below it.
    let mut srv = start_server(|c| {
        c.group_delivery_ack.enabled = true;
        c.group_ack.coalesce_above = COALESCE_ABOVE;
    })?;
    let (port, dir) = (srv.port(), srv.root());
    println!("{}", s.paint("1", "Message receipts — a guided tour"));
    println!("   server on {} (embedded; data in {})", srv.addr(), dir.display());
    if tls {
        println!("   transport: TLS required by the server; every device trusts a throwaway CA made for this run");
    }

    let with_delivery = ChatOptions { require_delivery_ack: true, ..Default::default() };
    let alice = online("alice/phone", with_delivery.clone(), port, dir)?;
    let tablet = online("alice/tablet", with_delivery.clone(), port, dir)?;
    let bob = online("bob/phone", with_delivery, port, dir)?;
    let carol = online("carol/phone", ChatOptions::default(), port, dir)?;
    let dave = online("dave/phone", ChatOptions::default(), port, dir)?;
    let erin = online("erin/phone", ChatOptions::default(), port, dir)?;
    println!("   logged in: alice (phone + tablet), bob, carol, dave, erin");

    // 1. Delivery receipt.
    s.section(1, "Delivery receipt (1:1, requireDeliveryAck = true)");
    let m = alice.try_send("bob", ChatType::Chat, "Are we still on for Saturday?", false)?;
    s.say("alice/phone", &format!("sends \"{}\" to bob (msg {})", m.content, m.id));
    let got = received_id(&bob, m.id)?;
    s.hear("bob/phone", "onMessageReceived", &format!("\"{}\" — the SDK sends the delivery ack by itself", got.content));
    let d = alice.try_wait("onMessageDelivered", |e| match e {
        ClientEvent::MessagesDelivered(m) => m.first().cloned(),
        _ => None,
    })?;
    s.hear("alice/phone", "onMessageDelivered", &format!("msg {} {}", d.id, s.tick(1)));

    // 2. Message read receipt.
    s.section(2, "Message read receipt (ackMessageRead)");
    let req = bob.client.ack_message_read(got.id).map_err(|e| e.to_string())?;
    s.say("bob/phone", &format!("reads it: ackMessageRead(\"alice\", \"{}\")", got.id));
    let r = alice.try_wait("onMessageRead", |e| match e {
        ClientEvent::MessagesRead(m) => m.first().cloned(),
        _ => None,
    })?;
    s.hear("alice/phone", "onMessageRead", &format!("msg {} {}  isReceiverRead = {}", r.id, s.tick(2), r.receiver_read));
    if let Some(req) = req {
        bob.try_completed(req)?.map_err(|e| e.to_string())?;
    }
    let again = bob.client.ack_message_read(got.id).map_err(|e| e.to_string())?;
    s.say("bob/phone", &format!("acks again: {}", if again.is_none() { "nothing sent — an ack goes out once" } else { "SENT TWICE" }));
    if again.is_some() {
        return Err("a read ack went out twice".into());
    }

    // 3. Conversation read receipt.
    s.section(3, "Conversation read receipt (ackConversationRead), two devices");
    for text in ["Yes!", "I'll bring the snacks", "10 am at the park?"] {
        bob.try_send("alice", ChatType::Chat, text, false)?;
    }
    s.say("bob/phone", "sends alice three messages");
    let key = ConversationKey::new(ChatType::Chat, "bob");
    for dev in [&alice, &tablet] {
        dev.try_wait("unread count 3", |e| {
            matches!(e, ClientEvent::UnreadCountChanged { conversation, unread: 3 } if *conversation == key).then_some(())
        })?;
        s.say(&dev.label, &format!("unread from bob: {}", dev.client.unread_count(&key).map_err(|e| e.to_string())?));
    }
    alice.client.ack_conversation_read("bob").map_err(|e| e.to_string())?;
    s.say("alice/phone", "opens the chat: ackConversationRead(\"bob\")");
    for dev in [&bob, &tablet] {
        let (from, to) = dev.try_wait("onConversationRead", |e| match e {
            ClientEvent::ConversationRead { from, to } => Some((from.clone(), to.clone())),
            _ => None,
        })?;
        s.hear(&dev.label, "onConversationRead", &format!("(from: \"{from}\", to: \"{to}\")"));
    }
    tablet.try_wait("unread count 0", |e| {
        matches!(e, ClientEvent::UnreadCountChanged { conversation, unread: 0 } if *conversation == key).then_some(())
    })?;
    s.say(
        "alice/tablet",
        &format!("unread from bob: {} (synced from the phone)", tablet.client.unread_count(&key).map_err(|e| e.to_string())?),
    );
    let read_ok = bob_three_read(&bob)?;
    s.say("bob/phone", &format!("his three messages now show {} (isReceiverRead: {read_ok})", s.tick(2)));

    // 4. Group read receipts.
    s.section(4, "Group read receipts (ackGroupMessageRead, fetchGroupReadAcks)");
    let group = carol.try_create_group("weekend", &["dave", "erin"], false)?;
    // Their membership events are not part of the tour.
    dave.collect(Duration::from_millis(50));
    erin.collect(Duration::from_millis(50));
    s.say("carol/phone", &format!("creates group {group} with dave and erin"));
    let gm = carol.try_send(&group, ChatType::GroupChat, "Who's coming on Saturday?", true)?;
    s.say("carol/phone", &format!("sends \"{}\" with setIsNeedGroupAck(true) (msg {})", gm.content, gm.id));
    for (dev, ext) in [(&dave, "me!"), (&erin, "count me in")] {
        let m = received_id(dev, gm.id)?;
        dev.client.mark_message_read(m.id).map_err(|e| e.to_string())?;
        dev.client.ack_group_message_read(m.id, Some(ext)).map_err(|e| e.to_string())?;
        s.say(&dev.label, &format!("reads it: ackGroupMessageRead(message, \"{ext}\")"));
        let ack = carol.try_wait("onGroupMessageRead", |e| match e {
            ClientEvent::GroupMessageRead(a) => a.first().cloned(),
            _ => None,
        })?;
        s.hear(
            "carol/phone",
            "onGroupMessageRead",
            &format!("{} read it (\"{}\"), count {}", ack.from, ack.content.unwrap_or_default(), ack.count),
        );
    }
    let count = carol.client.message(&gm.id.to_string()).map_err(|e| e.to_string())?.map(|m| m.group_ack_count).unwrap_or(0);
    s.say("carol/phone", &format!("message.groupAckCount = {count}"));
    let mut cursor: Option<AckId> = None;
    let mut page_no = 0;
    loop {
        page_no += 1;
        let req = carol.client.fetch_group_read_acks(gm.id, 1, cursor).map_err(|e| e.to_string())?;
        let page = match carol.try_completed(req)? {
            Ok(Completion::GroupAcks(p)) => p,
            other => return Err(format!("fetch answered {other:?}")),
        };
        let who: Vec<String> = page.data.iter().map(|a| a.from.clone()).collect();
        s.say("carol/phone", &format!("fetchGroupReadAcks(pageSize 1) page {page_no}: {who:?}, cursor \"{}\"", page.cursor));
        if page.cursor.is_empty() || page_no > 10 {
            break;
        }
        cursor = page.cursor.parse().ok();
    }

    // 5. Offline ack.
    s.section(5, "An ack made offline is kept and sent on reconnect");
    let m = bob.try_send("alice", ChatType::Chat, "See you there!", false)?;
    s.say("bob/phone", &format!("sends \"{}\" (msg {})", m.content, m.id));
    received_id(&tablet, m.id)?;
    // Let the tablet's own delivery ack be confirmed first, so the outbox below holds only the
    // read ack made offline.
    for _ in 0..100 {
        if tablet.client.outbox_len().map_err(|e| e.to_string())? == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tablet.client.set_network_enabled(false);
    tablet.try_wait("disconnect", |e| matches!(e, ClientEvent::Disconnected).then_some(()))?;
    s.say("alice/tablet", "goes into a tunnel (network off)");
    tablet.client.ack_message_read(m.id).map_err(|e| e.to_string())?;
    s.say(
        "alice/tablet",
        &format!("reads it offline: ackMessageRead → outbox holds {}", tablet.client.outbox_len().map_err(|e| e.to_string())?),
    );
    if bob.heard(Duration::from_millis(300), |e| matches!(e, ClientEvent::MessagesRead(_))).is_some() {
        return Err("bob heard a read ack while alice was offline".into());
    }
    s.say("bob/phone", "hears nothing yet");
    tablet.client.set_network_enabled(true);
    tablet.try_wait("reconnect", |e| matches!(e, ClientEvent::Connected).then_some(()))?;
    s.say("alice/tablet", "back online: the outbox is flushed");
    let offline_id = m.id;
    let r = bob.try_wait("onMessageRead", |e| match e {
        ClientEvent::MessagesRead(list) => list.iter().find(|x| x.id == offline_id).cloned(),
        _ => None,
    })?;
    s.hear("bob/phone", "onMessageRead", &format!("msg {} {}", r.id, s.tick(2)));

    // 6. Refusals.
    s.section(6, "What the rules refuse");
    let own = alice.client.ack_message_read(d.id);
    s.refused("alice acks her own message", &try_expect_err(own, ErrorCode::MessageInvalid)?);
    let private = online("bob/laptop", ChatOptions { require_read_ack: false, ..Default::default() }, port, dir)?;
    let e = try_expect_err(private.client.ack_message_read(got.id), ErrorCode::ServiceNotEnabled)?;
    s.refused("bob/laptop with requireReadAck = false acks", &e);
    let req = carol.client.fetch_group_read_acks(gm.id, 0, None);
    s.refused("fetchGroupReadAcks with pageSize 0", &try_expect_err(req, ErrorCode::InvalidParam)?);
    let req = dave.client.fetch_group_read_acks(gm.id, 10, None).map_err(|e| e.to_string())?;
    s.refused("dave lists the acks of carol's message (sender only)", &dave.try_refused(req, ErrorCode::GroupPermissionDenied)?);
    let bad = device("mallory/phone", ChatOptions::default(), port, dir)?;
    bad.client.login("mallory", &token("alice")).map_err(|e| e.to_string())?;
    let e = bad.try_wait("login refusal", |e| match e {
        ClientEvent::LoginFailed(e) => Some(e.clone()),
        _ => None,
    })?;
    s.refused("mallory logs in with alice's token", &e);

    policy_refusals(&s)?;

    // 7. Who has not read.
    s.section(7, "Who has not read (fetchGroupUnreadMembers)");
    let gm2 = carol.try_send(&group, ChatType::GroupChat, "Should I bring a jacket?", true)?;
    s.say("carol/phone", &format!("sends \"{}\" asking for acks (msg {})", gm2.content, gm2.id));
    received_id(&dave, gm2.id)?;
    let req = dave.client.ack_group_message_read(gm2.id, None).map_err(|e| e.to_string())?.ok_or("no ack sent")?;
    dave.try_completed(req)?.map_err(|e| e.to_string())?;
    s.say("dave/phone", "reads it");
    carol.try_wait("onGroupMessageRead", |e| matches!(e, ClientEvent::GroupMessageRead(_)).then_some(()))?;
    let req = carol.client.fetch_group_unread_members(gm2.id, 20, None).map_err(|e| e.to_string())?;
    let unread = match carol.try_completed(req)? {
        Ok(Completion::GroupUnread(p)) => p,
        other => return Err(format!("fetch answered {other:?}")),
    };
    s.say("carol/phone", &format!("fetchGroupUnreadMembers(pageSize 20): not read by {:?}, cursor \"{}\"", unread.data, unread.cursor));
    let req = erin.client.fetch_group_unread_members(gm2.id, 20, None).map_err(|e| e.to_string())?;
    s.refused("erin asks who has not read carol's message (sender only)", &erin.try_refused(req, ErrorCode::GroupPermissionDenied)?);

    // 8. Counts for a screen, acks in one trip.
    s.section(8, "Counts for a screen, acks in one trip (fetchGroupAckCounts, ackMessagesRead)");
    let req = carol.client.fetch_group_ack_counts(&[gm.id, gm2.id]).map_err(|e| e.to_string())?;
    let counts = match carol.try_completed(req)? {
        Ok(Completion::GroupAckCounts(items)) => items,
        other => return Err(format!("counts answered {other:?}")),
    };
    let shown: Vec<String> = counts.iter().map(|i| format!("msg {}: {} read", i.msg_id, i.count)).collect();
    s.say("carol/phone", &format!("fetchGroupAckCounts([{}, {}]) in one trip: {}", gm.id, gm2.id, shown.join(", ")));
    let mut batch = Vec::new();
    for text in ["Picnic blanket?", "And a ball"] {
        batch.push(alice.try_send("bob", ChatType::Chat, text, false)?.id);
    }
    for id in &batch {
        received_id(&bob, *id)?;
    }
    s.say("alice/phone", &format!("sends bob two messages ({} and {})", batch[0], batch[1]));
    let req = bob.client.ack_messages_read("alice", &batch).map_err(|e| e.to_string())?;
    let items = match bob.try_completed(req)? {
        Ok(Completion::ReadAcks(items)) => items,
        other => return Err(format!("batch ack answered {other:?}")),
    };
    let ok = items.iter().filter(|i| i.err.is_none()).count();
    s.say("bob/phone", &format!("ackMessagesRead(\"alice\", [{}, {}]): one round trip, {ok} of {} acked", batch[0], batch[1], items.len()));
    let mut heard = Vec::new();
    while heard.len() < batch.len() {
        let ids = alice.try_wait("onMessageRead", |e| match e {
            ClientEvent::MessagesRead(m) => Some(m.iter().map(|m| m.id).filter(|id| batch.contains(id)).collect::<Vec<_>>()),
            _ => None,
        })?;
        heard.extend(ids);
    }
    heard.sort();
    s.hear("alice/phone", "onMessageRead", &format!("msgs {heard:?} {}", s.tick(2)));
    let many = vec![batch[0]; 21];
    s.refused("ackMessagesRead with 21 ids", &try_expect_err(bob.client.ack_messages_read("alice", &many), ErrorCode::InvalidParam)?);

    group_delivery(&s, &carol, &dave, &erin, &group)?;
    private_reading(&s, &erin, &private, got.id, port, dir)?;
    large_group(&s, &carol, [&bob, &dave, &erin])?;

    println!("\n{}", s.paint("32", "All receipts behaved as the guide promises."));
    drop((alice, tablet, bob, carol, dave, erin, private, bad));
    srv.stop();
    Ok(())
}

/// Members above which the demo's server coalesces a group's read acks (default 200: a smaller
/// group shows the same here).
const COALESCE_ABOVE: usize = 20;

/// Section 11, a large group: above `coalesce_above` members the sender gets coalesced count
/// updates (onReadAckForGroupMessageUpdated) instead of one onGroupMessageRead per ack, and
/// fetches the readers on demand.
fn large_group(s: &Style, carol: &Device, readers: [&Device; 3]) -> Result<(), String> {
    s.section(11, "A large group: read counts coalesced (onReadAckForGroupMessageUpdated)");
    let mut members: Vec<String> = readers.iter().map(|d| d.user.clone()).collect();
    members.extend((1..=40).map(|i| format!("guest{i:02}")));
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let group = carol.try_create_group("town hall", &refs, false)?;
    for d in readers {
        d.collect(Duration::from_millis(50));
    }
    s.say("carol/phone", &format!("creates group {group} with {} members (coalesced above {COALESCE_ABOVE})", members.len() + 1));
    let gm = carol.try_send(&group, ChatType::GroupChat, "Town hall at noon", true)?;
    s.say("carol/phone", &format!("sends \"{}\" asking for acks (msg {})", gm.content, gm.id));
    for d in readers {
        received_id(d, gm.id)?;
        let req = d.client.ack_group_message_read(gm.id, None).map_err(|e| e.to_string())?.ok_or("no ack sent")?;
        d.try_completed(req)?.map_err(|e| e.to_string())?;
        s.say(&d.label, "reads it: ackGroupMessageRead");
    }
    let (mut count, mut updates) = (0, 0);
    while count < readers.len() as u32 {
        count = carol.try_wait("onReadAckForGroupMessageUpdated", |e| match e {
            ClientEvent::ReadAckForGroupMessageUpdated(ms) => ms.iter().find(|m| m.id == gm.id).map(|m| m.group_ack_count),
            _ => None,
        })?;
        updates += 1;
    }
    let per_ack = |e: &ClientEvent| matches!(e, ClientEvent::GroupMessageRead(a) if a.iter().any(|a| a.msg_id == gm.id));
    if carol.heard(Duration::from_millis(300), per_ack).is_some() {
        return Err("carol heard an ack of the large group one by one".into());
    }
    s.hear(
        "carol/phone",
        "onReadAckForGroupMessageUpdated",
        &format!("groupAckCount() = {count} in {updates} update(s), no onGroupMessageRead per ack"),
    );
    let req = carol.client.fetch_group_read_acks(gm.id, 20, None).map_err(|e| e.to_string())?;
    let page = match carol.try_completed(req)? {
        Ok(Completion::GroupAcks(p)) => p,
        other => return Err(format!("fetch answered {other:?}")),
    };
    let mut who: Vec<String> = page.data.iter().map(|a| a.from.clone()).collect();
    who.sort();
    s.say("carol/phone", &format!("fetchGroupReadAcks on demand: read by {who:?}"));
    Ok(())
}

/// Section 9, group delivery receipts: dave's device acks on receipt, erin's when she is back
/// online; carol sees the count and pages the list.
fn group_delivery(s: &Style, carol: &Device, dave: &Device, erin: &Device, group: &str) -> Result<(), String> {
    s.section(9, "Group delivery receipts (setIsNeedGroupDeliveryAck, fetchGroupDeliveryAcks)");
    erin.client.set_network_enabled(false);
    erin.try_wait("disconnect", |e| matches!(e, ClientEvent::Disconnected).then_some(()))?;
    s.say("erin/phone", "is offline");
    let (req, _) =
        carol.client.send_text_asking(group, ChatType::GroupChat, "Tickets are booked", false, true).map_err(|e| e.to_string())?;
    let gm = match carol.try_completed(req)? {
        Ok(Completion::Sent(m)) => m,
        other => return Err(format!("send answered {other:?}")),
    };
    s.say("carol/phone", &format!("sends \"{}\" with setIsNeedGroupDeliveryAck(true) (msg {})", gm.content, gm.id));
    let delivered = |what: &str| {
        carol.try_wait(what, |e| match e {
            ClientEvent::GroupMessageDelivered(a) => a.iter().find(|a| a.msg_id == gm.id).cloned(),
            _ => None,
        })
    };
    received_id(dave, gm.id)?;
    let a = delivered("dave's delivery")?;
    s.hear("carol/phone", "onGroupMessageDelivered", &format!("{}'s phone got it (no app call), count {}", a.from, a.count));
    erin.client.set_network_enabled(true);
    erin.try_wait("reconnect", |e| matches!(e, ClientEvent::Connected).then_some(()))?;
    s.say("erin/phone", "back online: the backlog arrives and her SDK acks it");
    let a = delivered("erin's delivery")?;
    s.hear("carol/phone", "onGroupMessageDelivered", &format!("{}'s phone got it, count {}", a.from, a.count));
    let count = carol.client.message(&gm.id.to_string()).map_err(|e| e.to_string())?.map_or(0, |m| m.group_delivered_count);
    s.say("carol/phone", &format!("message.groupDeliveredCount() = {count}"));
    let req = carol.client.fetch_group_delivery_acks(gm.id, 10, None).map_err(|e| e.to_string())?;
    let page = match carol.try_completed(req)? {
        Ok(Completion::GroupAcks(p)) => p,
        other => return Err(format!("fetch answered {other:?}")),
    };
    let who: Vec<String> = page.data.iter().map(|a| a.from.clone()).collect();
    s.say("carol/phone", &format!("fetchGroupDeliveryAcks(pageSize 10): delivered to {who:?}, cursor \"{}\"", page.cursor));
    let req = dave.client.fetch_group_delivery_acks(gm.id, 10, None).map_err(|e| e.to_string())?;
    s.refused("dave lists who got carol's message (sender only)", &dave.try_refused(req, ErrorCode::GroupPermissionDenied)?);
    Ok(())
}

/// Waits (bounded) until `d`'s unread count of `key` is `want`.
fn until_unread(d: &Device, key: &ConversationKey, want: u32) -> Result<(), String> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let n = d.client.unread_count(key).map_err(|e| e.to_string())?;
        if n == want {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("unread count of {} stayed {n}, want {want}", key.id));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Private reading (`privateReadReceipts`) beside `requireReadAck = false` (`off`, a device with
/// it false, holding message `off_msg`).
fn private_reading(s: &Style, erin: &Device, off: &Device, off_msg: MsgId, port: u16, dir: &Path) -> Result<(), String> {
    s.section(10, "Private reading (privateReadReceipts = true) beside requireReadAck = false");
    let phone = online("frank/phone", ChatOptions { private_read_receipts: true, ..Default::default() }, port, dir)?;
    let tablet = online("frank/tablet", ChatOptions::default(), port, dir)?;
    let key = ConversationKey::new(ChatType::Chat, "erin");
    let p1 = erin.try_send("frank", ChatType::Chat, "Surprise party on Friday, keep it quiet", false)?;
    let p2 = erin.try_send("frank", ChatType::Chat, "Bring a gift", false)?;
    received_id(&phone, p2.id)?;
    received_id(&tablet, p2.id)?;
    s.say("erin/phone", &format!("sends frank two messages ({} and {})", p1.id, p2.id));
    let req = phone.client.ack_message_read(p1.id).map_err(|e| e.to_string())?.ok_or("no private ack sent")?;
    phone.try_completed(req)?.map_err(|e| e.to_string())?;
    s.say("frank/phone", &format!("ackMessageRead({}) in private mode: the server records the read, tells erin nothing", p1.id));
    until_unread(&tablet, &key, 1)?;
    s.say("frank/tablet", "unread 2 → 1: his own devices follow");
    let req = phone.client.ack_message_read_with(p2.id, Some(false)).map_err(|e| e.to_string())?.ok_or("no ack sent")?;
    phone.try_completed(req)?.map_err(|e| e.to_string())?;
    s.say("frank/phone", &format!("ackMessageRead({}, {{ privately: false }}): a receipt, for this call", p2.id));
    erin.try_wait("onMessageRead", |e| match e {
        ClientEvent::MessagesRead(m) => m.iter().any(|m| m.id == p2.id).then_some(()),
        _ => None,
    })?;
    // Events come in order: a read of p1 would have come before the one of p2.
    if erin.heard(Duration::from_millis(200), |e| matches!(e, ClientEvent::MessagesRead(m) if m.iter().any(|m| m.id == p1.id))).is_some() {
        return Err("erin heard of the private read".into());
    }
    s.hear("erin/phone", "onMessageRead", &format!("msg {} only {}: msg {} read privately stays unreported", p2.id, s.tick(2), p1.id));
    let req = phone.client.ack_message_read_with(p1.id, Some(false)).map_err(|e| e.to_string())?.ok_or("no ack sent")?;
    phone.try_completed(req)?.map_err(|e| e.to_string())?;
    erin.try_wait("onMessageRead", |e| match e {
        ClientEvent::MessagesRead(m) => m.iter().any(|m| m.id == p1.id).then_some(()),
        _ => None,
    })?;
    s.hear("erin/phone", "onMessageRead", &format!("msg {} {}: acked publicly later, erin is told then, once", p1.id, s.tick(2)));
    let e = try_expect_err(off.client.ack_message_read_with(off_msg, Some(true)), ErrorCode::ServiceNotEnabled)?;
    s.refused("bob/laptop (requireReadAck = false) acks privately: nothing is sent at all, not even to his devices", &e);
    drop((phone, tablet));
    Ok(())
}

/// bob's three latest sent messages all count as read by alice after her conversation ack.
fn bob_three_read(bob: &Device) -> Result<bool, String> {
    let key = ConversationKey::new(ChatType::Chat, "alice");
    let ids: Vec<MsgId> =
        bob.client.with_engine(|e, _| Ok(e.conversation_messages(&key).iter().map(|m| m.id).collect())).map_err(|e| e.to_string())?;
    let mut all = true;
    for id in ids.iter().rev().take(3) {
        all &= bob.client.message(&id.to_string()).map_err(|e| e.to_string())?.is_some_and(|m| m.receiver_read);
    }
    if !all {
        return Err("bob's messages are not all marked read after the conversation ack".into());
    }
    Ok(all)
}

/// A policy setting to show: its title and how it changes the server's config.
type PolicyCase = (&'static str, fn(&mut ServerConfig));

/// The group read-ack policy settings, each on a server configured for it.
fn policy_refusals(s: &Style) -> Result<(), String> {
    let cases: [PolicyCase; 4] = [
        ("group read acks not enabled", |c| c.group_ack.enabled = false),
        ("only owner and admins may ask for acks", |c| c.group_ack.who_may_request = WhoMayRequest::OwnerAndAdmins),
        ("acks valid for 1 s (3 days by default)", |c| c.group_ack.validity_secs = 1),
        ("member cap of 2 for acks (200 by default)", |c| c.group_ack.member_cap = 2),
    ];
    for (i, (title, f)) in cases.into_iter().enumerate() {
        let mut srv = start_server(f)?;
        let (port, sub) = (srv.port(), srv.root().to_path_buf());
        let owner = online("carol/phone", ChatOptions::default(), port, &sub)?;
        let member = online("dave/phone", ChatOptions::default(), port, &sub)?;
        let other = online("erin/phone", ChatOptions::default(), port, &sub)?;
        let group = owner.try_create_group("weekend", &["dave", "erin"], false)?;
        match i {
            0 => {
                let (req, _) = owner.client.send_text(&group, ChatType::GroupChat, "acks?", true).map_err(|e| e.to_string())?;
                s.refused(&format!("[{title}] carol asks for acks"), &owner.try_refused(req, ErrorCode::ServiceNotEnabled)?);
            }
            1 => {
                let (req, _) = member.client.send_text(&group, ChatType::GroupChat, "acks?", true).map_err(|e| e.to_string())?;
                s.refused(&format!("[{title}] dave (member) asks for acks"), &member.try_refused(req, ErrorCode::GroupPermissionDenied)?);
            }
            2 => {
                owner.try_send(&group, ChatType::GroupChat, "old news", true)?;
                let m = received(&member)?;
                std::thread::sleep(Duration::from_millis(1_200));
                let req = member.client.ack_group_message_read(m.id, None).map_err(|e| e.to_string())?.ok_or("no ack sent")?;
                s.refused(&format!("[{title}] dave acks after 1.2 s"), &member.try_refused(req, ErrorCode::MessageExpired)?);
            }
            _ => {
                let m = owner.try_send(&group, ChatType::GroupChat, "big group", true)?;
                s.say(
                    "",
                    &format!(
                        "[{title}] a 3-member group: carol asks for acks: the server drops the request (isNeedGroupAck = {})",
                        m.need_group_ack
                    ),
                );
                let got = received(&member)?;
                let e = try_expect_err(member.client.ack_group_message_read(got.id, None), ErrorCode::ServiceNotEnabled)?;
                s.refused(&format!("[{title}] dave acks"), &e);
            }
        }
        drop((owner, member, other));
        srv.stop();
    }
    Ok(())
}
