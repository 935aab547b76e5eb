//! Operating the server (issue 19): the metrics listener counts a real workload, readiness
//! fails when commits fail for real (a child server whose data file may not grow), and JWTs
//! minted by a generic library (Node's `crypto`, not our code) log devices in.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use receipt_core::protocol::*;
use receipt_core::*;
use receipt_testkit::ops::{http_get, sample, scrape};
use receipt_testkit::raw::*;
use receipt_testkit::*;

fn metric(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Scrapes until `series` reaches `want` (gauges sampled once a second), at most 5 s.
fn wait_metric(addr: SocketAddr, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(addr);
        if sample(&text, series) == Some(want) || Instant::now() >= deadline {
            assert_eq!(sample(&text, series), Some(want), "{series}:\n{text}");
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_count_a_workload_and_the_health_endpoints_answer() {
    let srv = TestServer::start(|c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap()));
    let m = srv.metrics_addr().expect("metrics listener");
    assert_eq!(http_get(m, "/livez").unwrap().0, 200);
    assert_eq!(http_get(m, "/readyz").unwrap(), (200, "ok\n".to_string()));
    assert_eq!(http_get(m, "/nope").unwrap().0, 404);

    let (mut alice, mut bob) = (RawClient::login(srv.addr(), "alice", "a1"), RawClient::login(srv.addr(), "bob", "b1"));
    const N: usize = 10;
    for i in 0..N {
        let (id, _) = alice.send_msg_opts("bob", ChatType::Chat, &format!("m{i}"), true, false).unwrap();
        bob.expect_ok(|req| ClientFrame::DeliveryAck { req, msg_id: id });
        bob.expect_ok(|req| ClientFrame::ReadAck { req, msg_id: id, private: false });
    }
    // A refused request (no such message: its code) and a refused login (another user's token: 202).
    let e = bob.expect_err(ErrorCode::MessageInvalid, |req| ClientFrame::DeliveryAck { req, msg_id: 999_999 });
    let mut mallory = RawClient::connect(srv.addr());
    mallory.send(&ClientFrame::Login { v: PROTOCOL_VERSION, user: "mallory".into(), device: "m".into(), token: token("alice"), since: 0 });
    assert!(matches!(mallory.until_closed().as_slice(), [ServerFrame::LoginFailed { .. }]));
    // Alice got every receipt (each batch is counted before it is routed, so they are counted).
    let seen = alice.drain_events(300);
    assert_eq!(seen.iter().filter(|e| matches!(e, ServerEvent::Delivered { .. } | ServerEvent::Read { .. })).count(), 2 * N);

    let text = wait_metric(m, "receipt_sessions", 2.0);
    assert_eq!(metric(&text, "receipt_connections"), 2.0);
    assert_eq!(metric(&text, r#"receipt_requests_total{kind="login"}"#), 2.0);
    assert_eq!(metric(&text, r#"receipt_requests_total{kind="send"}"#), N as f64);
    assert_eq!(metric(&text, r#"receipt_requests_total{kind="delivery_ack"}"#), N as f64 + 1.0);
    assert_eq!(metric(&text, r#"receipt_requests_total{kind="read_ack"}"#), N as f64);
    assert_eq!(metric(&text, r#"receipt_receipts_relayed_total{kind="delivered"}"#), N as f64);
    assert_eq!(metric(&text, r#"receipt_receipts_relayed_total{kind="read"}"#), N as f64);
    assert_eq!(metric(&text, "receipt_messages_relayed_total"), N as f64);
    let refused = format!(r#"receipt_refusals_total{{kind="delivery_ack",code="{}"}}"#, e.code.as_u32());
    assert_eq!(metric(&text, &refused), 1.0);
    let login_refused = format!(r#"receipt_refusals_total{{kind="login",code="{}"}}"#, ErrorCode::UserAuthenticationFailed.as_u32());
    assert_eq!(metric(&text, &login_refused), 1.0);
    // Each login got its unread counts (SyncDone); every send and ack was committed.
    assert!(metric(&text, "receipt_sync_pages_total") >= 2.0);
    let commits = metric(&text, "receipt_commits_total");
    assert!(commits >= 1.0 && metric(&text, "receipt_commit_duration_seconds_count") == commits, "{text}");
    assert!(metric(&text, "receipt_commit_requests_sum") >= (3 * N) as f64, "{text}");
    assert!(metric(&text, "receipt_store_bytes") > 0.0);
    assert_eq!(metric(&text, "receipt_commit_failures_total"), 0.0);

    // The cache hook shows as its two gauges.
    srv.metrics().unwrap().set_cache_bytes(1234, 4096);
    let text = scrape(m);
    assert_eq!((metric(&text, "receipt_cache_bytes"), metric(&text, "receipt_cache_budget_bytes")), (1234.0, 4096.0));

    // A renewal is counted, and its refusal by code.
    bob.expect_ok(|req| ClientFrame::RenewToken { req, token: token("bob") });
    bob.expect_err(ErrorCode::InvalidToken, |req| ClientFrame::RenewToken { req, token: "not-a-jwt".into() });
    let text = scrape(m);
    assert_eq!(metric(&text, r#"receipt_requests_total{kind="renew_token"}"#), 2.0);
    let renew_refused = format!(r#"receipt_refusals_total{{kind="renew_token",code="{}"}}"#, ErrorCode::InvalidToken.as_u32());
    assert_eq!(metric(&text, &renew_refused), 1.0);

    // A logout: the gauges come down.
    drop(bob);
    let text = wait_metric(m, "receipt_sessions", 1.0);
    assert_eq!(metric(&text, "receipt_connections"), 1.0);
}

#[test]
fn without_metrics_addr_there_is_no_listener() {
    let srv = TestServer::start(|_| {});
    assert_eq!(srv.metrics_addr(), None);
    assert!(srv.metrics().is_none());
}

/// The child's data file may not grow past `limit` bytes (RLIMIT_FSIZE, with SIGXFSZ ignored so
/// the write fails with EFBIG instead of killing the process): a real failing commit.
fn limit_file_size(limit: u64) -> receipt_testkit::child::ConfigureCommand {
    Box::new(move |cmd: &mut Command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls (signal, setrlimit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let r = libc::rlimit { rlim_cur: limit as libc::rlim_t, rlim_max: limit as libc::rlim_t };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
}

#[test]
fn readiness_fails_when_a_commit_fails_and_liveness_stays() {
    let dir = tempfile::tempdir().unwrap();
    let bin = server_binary().unwrap();
    let data = dir.path().join("server");
    let child = ChildServer::try_start_with(&bin, Some(&data), "metrics_addr = \"127.0.0.1:0\"\n", Some(limit_file_size(2 << 20)))
        .expect("the child server starts under a 2 MiB file size limit");
    let m = child.metrics_addr().unwrap();
    assert_eq!(http_get(m, "/readyz").unwrap().0, 200, "ready once listening");

    let mut alice = RawClient::login(child.addr(), "alice", "a1");
    let content = "x".repeat(MAX_CONTENT_BYTES.min(32 << 10));
    // Each message is stored with its content; 2 MiB holds fewer than 200 of them.
    let mut failed_at = None;
    for i in 0..400 {
        alice.send(&ClientFrame::Send {
            req: 1000 + i,
            client_id: format!("c{i}"),
            to: "bob".into(),
            chat_type: ChatType::Chat,
            content: content.clone(),
            require_delivery_ack: false,
            need_group_ack: false,
        });
        match alice.recv(Duration::from_secs(3)) {
            Some(ServerFrame::Result { ok: Some(_), .. }) => {}
            // No answer: the commit failed and the server answers nothing from then on.
            _ => {
                failed_at = Some(i);
                break;
            }
        }
    }
    assert!(failed_at.is_some(), "the store never filled 2 MiB");
    eprintln!("the commit of message {failed_at:?} failed");
    let (status, body) = http_get(m, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store: commit failed"), "{body}");
    eprintln!("/readyz: {body}");
    assert_eq!(http_get(m, "/livez").unwrap().0, 200, "the process is still up");
    let text = scrape(m);
    assert_eq!(metric(&text, "receipt_commit_failures_total"), 1.0);
    assert!(metric(&text, "receipt_store_bytes") <= (2 << 20) as f64);
}

/// Mints JWTs with Node's built-in `crypto` (no JWT library, nothing of ours): an Ed25519 key
/// (EdDSA, `kid` "ed") and a P-256 key (ES256, no `kid`). Writes the public keys as
/// `<dir>/ed.pem` and `<dir>/es.pem`; returns (EdDSA token for alice, ES256 token for bob, EdDSA
/// token for alice with another audience).
fn node_tokens(dir: &Path, audience: &str) -> (String, String, String) {
    const SCRIPT: &str = r#"
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const [dir, aud] = process.argv.slice(1);
const b64 = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');
const exp = Math.floor(Date.now() / 1000) + 3600;
function jwt(header, claims, sign) {
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${sign(Buffer.from(input)).toString('base64url')}`;
}
const ed = crypto.generateKeyPairSync('ed25519');
const es = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
fs.writeFileSync(path.join(dir, 'ed.pem'), ed.publicKey.export({ type: 'spki', format: 'pem' }));
fs.writeFileSync(path.join(dir, 'es.pem'), es.publicKey.export({ type: 'spki', format: 'pem' }));
const edSign = (data) => crypto.sign(null, data, ed.privateKey);
const esSign = (data) => crypto.sign('sha256', data, { key: es.privateKey, dsaEncoding: 'ieee-p1363' });
console.log(jwt({ alg: 'EdDSA', typ: 'JWT', kid: 'ed' }, { sub: 'alice', exp, aud }, edSign));
console.log(jwt({ alg: 'ES256', typ: 'JWT' }, { sub: 'bob', exp, aud }, esSign));
console.log(jwt({ alg: 'EdDSA', typ: 'JWT', kid: 'ed' }, { sub: 'alice', exp, aud: 'elsewhere' }, edSign));
"#;
    let out = Command::new("node")
        .arg("-e")
        .arg(SCRIPT)
        .arg(dir)
        .arg(audience)
        .output()
        .expect("node (Node.js 20, as scripts/test.sh needs) runs the minting script");
    assert!(out.status.success(), "node failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    (lines[0].into(), lines[1].into(), lines[2].into())
}

#[test]
fn jwts_minted_by_node_crypto_log_devices_in_and_the_secret_mints_nothing() {
    let keys = tempfile::tempdir().unwrap();
    let (alice_ed, bob_es, alice_elsewhere) = node_tokens(keys.path(), "receipt-test");
    let srv = TestServer::start(|c| {
        c.tokens.public_keys = vec![keys.path().join("ed.pem"), keys.path().join("es.pem")];
        c.tokens.audience = Some("receipt-test".into());
    });
    let mut alice = RawClient::login_with(srv.addr(), "alice", "phone", &alice_ed, 0);
    let mut bob = RawClient::login_with(srv.addr(), "bob", "phone", &bob_es, 0);
    let id = alice.send_msg("bob", ChatType::Chat, "signed by node");
    assert!(matches!(bob.next_event(), ServerEvent::Message { msg } if msg.id == id));

    let login = |user: &str, token: String| {
        let mut c = RawClient::connect(srv.addr());
        c.send(&ClientFrame::Login { v: PROTOCOL_VERSION, user: user.into(), device: "d".into(), token, since: 0 });
        match c.until_closed().as_slice() {
            [ServerFrame::LoginFailed { error }] => error.code,
            f => panic!("expected LoginFailed, got {f:?}"),
        }
    };
    // Another audience, another user's token, an HS256 token signed with the server's secret
    // (the config holds no private key, so it mints nothing): 202.
    assert_eq!(login("alice", alice_elsewhere), ErrorCode::UserAuthenticationFailed);
    assert_eq!(login("bob", alice_ed.clone()), ErrorCode::UserAuthenticationFailed);
    assert_eq!(login("carol", token("carol")), ErrorCode::UserAuthenticationFailed);
    // A renewal with the node-minted token is accepted on the live session.
    alice.expect_ok(|req| ClientFrame::RenewToken { req, token: alice_ed.clone() });
}

#[test]
fn the_token_subcommand_mints_with_a_private_key() {
    let keys = tempfile::tempdir().unwrap();
    // Ed25519 and P-256 pairs from Node's crypto, written as PKCS#8 / SPKI PEM.
    let script = r#"
const crypto = require('node:crypto'); const fs = require('node:fs'); const path = require('node:path');
for (const [name, type, opts] of [['k1', 'ed25519', {}], ['k2', 'ec', { namedCurve: 'P-256' }]]) {
  const k = crypto.generateKeyPairSync(type, opts);
  fs.writeFileSync(path.join(process.argv[1], name + '.key'), k.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  fs.writeFileSync(path.join(process.argv[1], name + '.pem'), k.publicKey.export({ type: 'spki', format: 'pem' }));
}
"#;
    let st = Command::new("node").arg("-e").arg(script).arg(keys.path()).status().expect("node runs");
    assert!(st.success());
    let mint = |user: &str, kid: &str| {
        let out = Command::new(server_binary().unwrap())
            .args(["token", "--user", user, "--kid", kid, "--ttl", "600", "--private-key"])
            .arg(keys.path().join(format!("{kid}.key")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (ed, es) = (mint("dora", "k1"), mint("erin", "k2"));
    let srv = TestServer::start(|c| c.tokens.public_keys = vec![keys.path().join("k1.pem"), keys.path().join("k2.pem")]);
    RawClient::login_with(srv.addr(), "dora", "d", &ed, 0);
    RawClient::login_with(srv.addr(), "erin", "d", &es, 0);
    // The client reads the expiry the subcommand wrote.
    let exp = receipt_client::token_expiry_unix_secs(&ed).expect("a JWT with exp");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 590..=now + 610).contains(&exp), "exp {exp}, now {now}");
}

#[test]
fn an_hs256_jwt_minted_by_node_crypto_logs_in_with_the_shared_secret() {
    // HS256 over the kit server's secret with Node's HMAC, no JWT library.
    let script = r#"
const crypto = require('node:crypto');
const b64 = (x) => Buffer.from(JSON.stringify(x)).toString('base64url');
const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'frank', exp: Math.floor(Date.now() / 1000) + 600, iat: 0 })}`;
console.log(`${input}.${crypto.createHmac('sha256', process.argv[1]).update(input).digest('base64url')}`);
"#;
    let out = Command::new("node").arg("-e").arg(script).arg(SECRET).output().expect("node runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let srv = TestServer::start(|_| {});
    let mut frank = RawClient::login_with(srv.addr(), "frank", "d", &tok, 0);
    frank.sync_ping();
}
