//! Ready for a phone (issue 14): TLS on both ends, the offline start, the connection and token
//! lifecycle, against the real server over loopback.

use std::time::Duration;

use receipt_client::{ClientEvent, Completion, Security, TlsSettings};
use receipt_core::*;
use receipt_testkit::*;

fn tls_device(label: &str, port: u16, settings: TlsSettings) -> Device {
    Device::new(label, ChatOptions::default(), port).reconfigure(|cfg| cfg.security = Security::Tls(settings))
}

fn short_token(user: &str, ttl_secs: u64) -> String {
    token_with_ttl(user, ttl_secs)
}

/// A 1:1 message and its read receipt over TLS, the client trusting the throwaway CA or
/// pinning the server's certificate; the server requires TLS.
#[test]
fn tls_flow_with_a_ca_and_with_a_pinned_certificate() {
    let ca = TestCa::new();
    let srv = TestServer::start(|config| ca.configure(config, true));
    let alice = tls_device("alice/phone", srv.port(), ca.client_settings());
    alice.login();
    let bob = tls_device("bob/phone", srv.port(), ca.pinned_settings());
    bob.login();
    let m = alice.send_chat("bob", "over tls");
    assert_eq!(bob.received(1)[0].id, m.id);
    bob.ack_read(m.id);
    assert_eq!(alice.read(1)[0].id, m.id);
}

/// A server that requires TLS refuses a plaintext login; a client that does not trust the
/// server's certificate never logs in (the first attempt fails with 300).
#[test]
fn tls_refuses_plaintext_and_untrusted_certificates() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let srv = TestServer::start(|config| ca.configure(config, true));
    let plain = Device::new("alice/phone", ChatOptions::default(), srv.port());
    plain.client.login("alice", &token("alice")).unwrap();
    let err = plain.wait("LoginFailed", |e| match e {
        ClientEvent::LoginFailed(err) => Some(err.clone()),
        _ => None,
    });
    assert_eq!(err.code, ErrorCode::InvalidParam, "{err}");

    let untrusting = tls_device("bob/phone", srv.port(), other.client_settings());
    untrusting.client.login("bob", &token("bob")).unwrap();
    let err = untrusting.wait("LoginFailed", |e| match e {
        ClientEvent::LoginFailed(err) => Some(err.clone()),
        _ => None,
    });
    assert_eq!(err.code, ErrorCode::ServerNotReachable, "{err}");
}

/// A server with a certificate but without `require_tls` takes TLS and plaintext clients on one port.
#[test]
fn tls_and_plaintext_share_a_port_unless_tls_is_required() {
    let ca = TestCa::new();
    let srv = TestServer::start(|config| ca.configure(config, false));
    let alice = tls_device("alice/phone", srv.port(), ca.client_settings());
    alice.login();
    let bob = Device::online("bob/phone", ChatOptions::default(), srv.port());
    let m = bob.send_chat("alice", "plain to tls");
    assert_eq!(alice.received(1)[0].id, m.id);
}

/// After one good login the store opens with the server down: the database-opened event, the
/// unread count and the message are there, an ack queues; when the server comes back the
/// outbox goes out once and the sender hears the receipt.
#[test]
fn offline_start_reads_the_store_queues_acks_and_flushes_when_online() {
    let mut srv = TestServer::start(|_| {});
    let p = srv.port();
    let alice = Device::online("alice/phone", ChatOptions::default(), p);
    let bob = Device::online("bob/phone", ChatOptions::default(), p);
    let m = alice.send_chat("bob", "read me offline");
    bob.received(1);
    bob.wait_unread(&chat("alice"), 1);

    srv.stop();
    let bob = bob.reopen(p);
    bob.client.login("bob", &token("bob")).expect("an offline start logs in at once");
    let (user, offline_start) = bob.wait("DatabaseOpened", |e| match e {
        ClientEvent::DatabaseOpened { user, offline_start } => Some((user.clone(), *offline_start)),
        _ => None,
    });
    assert_eq!((user.as_str(), offline_start), ("bob", true));
    assert!(bob.client.is_logged_in() && bob.client.is_database_opened() && !bob.client.is_connected());
    assert_eq!(bob.unread(&chat("alice")), 1);
    assert!(bob.msg(m.id).unread);
    let req = bob.client.ack_message_read(m.id).unwrap().expect("queued");
    assert_eq!(bob.outbox(), 1);
    assert_eq!(bob.unread(&chat("alice")), 0);
    // Retried in the background: no LoginFailed while the server is down.
    bob.hears_nothing("a login failure while offline", |e| matches!(e, ClientEvent::LoginFailed(_) | ClientEvent::LoggedOut(_)));

    let p2 = srv.start_again();
    assert_eq!(p2, p, "the server came back on its port");
    bob.wait_connected();
    bob.ok(req);
    assert_eq!(bob.outbox(), 0);
    assert_eq!(alice.read(1)[0].id, m.id);
    alice.hears_nothing("the receipt twice", |e| matches!(e, ClientEvent::MessagesRead(_)));
}

/// An offline start whose token the server refuses once it is back: TokenExpired (once),
/// LoginFailed 108 and LoggedOut 108; the queued ack stays in the store and goes with the next good login.
#[test]
fn offline_start_with_an_expired_token_logs_out_and_keeps_the_queued_ack() {
    let mut srv = TestServer::start(|_| {});
    let p = srv.port();
    let alice = Device::online("alice/phone", ChatOptions::default(), p);
    let bob = Device::online("bob/phone", ChatOptions::default(), p);
    let m = alice.send_chat("bob", "ack me");
    bob.received(1);
    srv.stop();

    let bob = bob.reopen(p);
    bob.client.login("bob", &short_token("bob", 1)).unwrap();
    bob.wait("DatabaseOpened", |e| matches!(e, ClientEvent::DatabaseOpened { .. }).then_some(()));
    bob.client.ack_message_read(m.id).unwrap().expect("queued");
    bob.wait_for(Duration::from_secs(5), "TokenExpired", |e| matches!(e, ClientEvent::TokenExpired).then_some(()));
    srv.start_again();
    let refused = bob.wait("LoginFailed", |e| match e {
        ClientEvent::LoginFailed(err) => Some(err.clone()),
        _ => None,
    });
    assert_eq!(refused.code, ErrorCode::TokenExpired);
    let err = bob.wait("LoggedOut", |e| match e {
        ClientEvent::LoggedOut(err) => Some(err.clone()),
        _ => None,
    });
    assert_eq!(err.code, ErrorCode::TokenExpired);
    assert!(!bob.client.is_logged_in());
    // The clock told first; the server's 108 does not tell again.
    bob.hears_nothing("TokenExpired twice", |e| matches!(e, ClientEvent::TokenExpired));
    alice.hears_nothing("a receipt from a refused session", |e| matches!(e, ClientEvent::MessagesRead(_)));

    bob.client.logout().unwrap();
    bob.login();
    assert_eq!(alice.read(1)[0].id, m.id);
}

/// A login with an expired token: the server answers 108 TOKEN_EXPIRED, the app hears
/// TokenExpired once and LoginFailed 108; a malformed token is 104, another user's 202, neither
/// with TokenExpired.
#[test]
fn login_refusals_carry_104_108_202_and_only_108_raises_token_expired() {
    let srv = TestServer::start(|_| {});
    let p = srv.port();
    let cases = [
        (short_token("bob", 0), ErrorCode::TokenExpired),
        ("not-a-token".to_string(), ErrorCode::InvalidToken),
        (short_token("mallory", 3600), ErrorCode::UserAuthenticationFailed),
    ];
    for (token, code) in cases {
        let bob = Device::new("bob/phone", ChatOptions::default(), p);
        bob.client.login("bob", &token).unwrap();
        let refused = bob.wait("LoginFailed", |e| match e {
            ClientEvent::LoginFailed(err) => Some(err.clone()),
            _ => None,
        });
        assert_eq!(refused.code, code, "{token}");
        // `wait` leaves the other events queued: exactly one TokenExpired for 108, none otherwise.
        if code == ErrorCode::TokenExpired {
            bob.wait("TokenExpired", |e| matches!(e, ClientEvent::TokenExpired).then_some(()));
        }
        bob.hears_nothing("TokenExpired (again)", |e| matches!(e, ClientEvent::TokenExpired));
        assert!(!bob.client.is_logged_in());
    }
}

/// A short-lived token: TokenWillExpire at about 80% of its life; renewToken on the live
/// session is confirmed by the server without a disconnect, and the new token's clock starts.
#[test]
fn token_will_expire_then_renew_on_a_live_session() {
    let srv = TestServer::start(|_| {});
    let bob = Device::new("bob/phone", ChatOptions::default(), srv.port());
    bob.client.login("bob", &short_token("bob", 3)).unwrap();
    bob.wait_connected();
    let started = std::time::Instant::now();
    bob.wait_for(Duration::from_secs(5), "TokenWillExpire", |e| matches!(e, ClientEvent::TokenWillExpire).then_some(()));
    // 80% of a lifetime of 2..3 s (the expiry has second granularity).
    assert!(started.elapsed() >= Duration::from_millis(1000), "too early: {:?}", started.elapsed());
    let req = bob.client.renew_token(&short_token("bob", 3600)).unwrap().expect("sent on the live session");
    assert_eq!(bob.ok(req), Completion::Done);
    assert!(bob.client.is_connected());
    bob.hears_nothing("a disconnect or expiry after the renewal", |e| {
        matches!(e, ClientEvent::Disconnected | ClientEvent::TokenExpired | ClientEvent::LoggedOut(_))
    });
    // A token for another user is refused; the session goes on.
    let req = bob.client.renew_token(&short_token("alice", 3600)).unwrap().expect("sent");
    bob.refused(req, ErrorCode::UserAuthenticationFailed);
    assert!(bob.client.is_connected());
}

/// Without a renewal a token's expiry raises TokenExpired on time, once.
#[test]
fn token_expired_is_raised_once_on_time() {
    let srv = TestServer::start(|_| {});
    let bob = Device::new("bob/phone", ChatOptions::default(), srv.port());
    bob.client.login("bob", &short_token("bob", 2)).unwrap();
    bob.wait_connected();
    bob.wait_for(Duration::from_secs(5), "TokenWillExpire", |e| matches!(e, ClientEvent::TokenWillExpire).then_some(()));
    bob.wait_for(Duration::from_secs(5), "TokenExpired", |e| matches!(e, ClientEvent::TokenExpired).then_some(()));
    bob.hears_nothing("TokenExpired twice", |e| matches!(e, ClientEvent::TokenExpired));
}

/// The server's replay is bracketed by the sync events, then Connected.
#[test]
fn offline_sync_start_and_finish_come_before_connected() {
    let srv = TestServer::start(|_| {});
    let bob = Device::new("bob/phone", ChatOptions::default(), srv.port());
    bob.client.login("bob", &token("bob")).unwrap();
    let seen = bob.collect(Duration::from_millis(800));
    let names: Vec<&str> = seen
        .iter()
        .filter_map(|e| match e {
            ClientEvent::DatabaseOpened { .. } => Some("opened"),
            ClientEvent::OfflineSyncStarted => Some("sync-start"),
            ClientEvent::OfflineSyncFinished => Some("sync-finish"),
            ClientEvent::Connected => Some("connected"),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["opened", "sync-start", "sync-finish", "connected"]);
}
