//! `receipt-cli bench --mode large-group`: the cost of one group read ack as the group grows
//! (docs/benchmarks.md, "Large groups").
//!
//! The owner creates a group of N members (N up to 10,000) and sends M messages asking for read
//! acks; then the members log in `--login-batch` at a time, and every member of a batch acks
//! every message. Only the ack phases are measured (wall time, server CPU and the bytes the
//! server wrote to storage, `/proc/<pid>/io` `write_bytes`, summed over the
//! batches): the logins, whose replay grows with M, are not the ack's cost. Meanwhile the
//! owner's device stays connected and counts the frames and bytes it receives, until its count
//! of every message reached N-1 (coalesced count updates, or one event per ack below the
//! server's `coalesce_above`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use receipt_core::engine::ClientEvent;
use receipt_core::MsgId;
use receipt_server::auth;
use serde_json::json;
use tokio::sync::watch;

use crate::bench::{all, content, run_prefix, BenchArgs, Report, Server};
use crate::bench_load::{self, Conn};

/// Longest the owner waits for the last count after the last ack (a coalesced update comes one
/// interval after the change).
const LAST_COUNT_WAIT: Duration = Duration::from_secs(30);

/// What the owner's device received during the run.
struct OwnerSeen {
    frames: u64,
    bytes: u64,
    /// When every message's count reached N-1.
    done_at: Instant,
}

/// The owner's device: reads until every message's count reached `expect` (or `stop`).
async fn owner(mut c: Conn, ids: Vec<MsgId>, expect: u32, mut stop: watch::Receiver<bool>) -> Result<OwnerSeen, String> {
    let (frames0, bytes0) = (c.frames_in, c.bytes_in);
    let mut counts: std::collections::HashMap<MsgId, u32> = ids.iter().map(|&id| (id, 0)).collect();
    let mut left = ids.len();
    while left > 0 {
        tokio::select! {
            r = c.recv() => r?,
            _ = stop.changed() => return Err(format!("the owner's counts did not all reach {expect}: {counts:?}")),
        }
        for e in std::mem::take(&mut c.events) {
            let seen: Vec<(MsgId, u32)> = match e {
                ClientEvent::GroupMessageRead(acks) => acks.iter().map(|a| (a.msg_id, a.count)).collect(),
                ClientEvent::ReadAckForGroupMessageUpdated(ms) => ms.iter().map(|m| (m.id, m.group_ack_count)).collect(),
                _ => continue,
            };
            for (id, n) in seen {
                if let Some(c) = counts.get_mut(&id) {
                    if *c < expect && n >= expect {
                        left -= 1;
                    }
                    *c = (*c).max(n);
                }
            }
        }
    }
    Ok(OwnerSeen { frames: c.frames_in - frames0, bytes: c.bytes_in - bytes0, done_at: Instant::now() })
}

/// One member: acks every message, waits for the M answers.
async fn acker(mut c: Conn, ids: Arc<Vec<MsgId>>) -> Result<(), String> {
    let now = c.now();
    let mut want = 0;
    for &id in ids.iter() {
        if c.engine_mut().ack_group_message_read(now, id, None).map_err(|e| format!("ack {id}: {e}"))?.is_some() {
            want += 1;
        }
    }
    c.flush().await?;
    let mut confirmed = 0;
    while confirmed < want {
        c.recv().await?;
        for e in std::mem::take(&mut c.events) {
            match e {
                ClientEvent::RequestCompleted { result: Ok(_), .. } => confirmed += 1,
                ClientEvent::RequestCompleted { result: Err(err), .. } => return Err(format!("ack refused: {err}")),
                _ => {}
            }
        }
    }
    Ok(())
}

pub(crate) fn large_group(a: &BenchArgs, srv: &Server, rt: &tokio::runtime::Runtime) -> Result<Report, String> {
    let (n, m, batch) = (a.group_members, a.group_messages, a.login_batch.max(1));
    let prefix = run_prefix();
    let t0 = Instant::now();
    // User `i` (the owner 0, member i) connects to node `i mod n` of the server's addresses.
    let login = |user: String, i: usize| {
        let (token, addr, tls) = (auth::token_for(&srv.secret, &user, 3600), srv.addr_of(srv.node_of(i)), srv.connector());
        async move { Conn::login(addr, &user, &token, t0, tls).await }
    };
    let owner_id = format!("{prefix}-o");
    let member_ids: Vec<String> = (1..n).map(|i| format!("{prefix}-m{i}")).collect();
    let mut owner_conn = rt.block_on(login(owner_id, 0))?;
    let group_id = rt.block_on(bench_load::create_group(&mut owner_conn, &member_ids))?;
    let ids = rt.block_on(bench_load::send_group_messages(&mut owner_conn, &group_id, m, content(a.size)))?;
    let expect = (n - 1) as u32;
    let (stop_tx, stop_rx) = watch::channel(false);
    let owner_task = rt.spawn(owner(owner_conn, ids.clone(), expect, stop_rx));
    let ids = Arc::new(ids);
    let (mut ack_wall, mut server_cpu, mut login_wall) = (Duration::ZERO, Some(0.0f64), Duration::ZERO);
    let mut disk = Some(0u64);
    let mut last_ack_at = Instant::now();
    for (c, chunk) in member_ids.chunks(batch as usize).enumerate() {
        let t = Instant::now();
        let first = 1 + c * batch as usize;
        let conns: Vec<Conn> = rt.block_on(all(chunk.iter().enumerate().map(|(j, u)| login(u.clone(), first + j)).collect()))?;
        login_wall += t.elapsed();
        let (c0, _) = srv.cpu();
        let d0 = srv.disk_written();
        let t = Instant::now();
        rt.block_on(all(conns.into_iter().map(|c| acker(c, ids.clone())).collect()))?;
        ack_wall += t.elapsed();
        last_ack_at = Instant::now();
        let (c1, _) = srv.cpu();
        server_cpu = server_cpu.zip(c0.zip(c1)).map(|(sum, (x, y))| sum + (y - x));
        disk = disk.zip(d0.zip(srv.disk_written())).map(|(sum, (x, y))| sum + y.saturating_sub(x));
    }
    let stopper = rt.spawn(async move {
        tokio::time::sleep(LAST_COUNT_WAIT).await;
        let _ = stop_tx.send(true);
    });
    let seen = rt.block_on(owner_task).map_err(|e| e.to_string())??;
    stopper.abort();
    let acks = (n - 1) * m;
    let ack_secs = ack_wall.as_secs_f64();
    let cpu_us_per_ack = server_cpu.map(|s| s * 1e6 / acks as f64);
    let disk_per_ack = disk.map(|d| d as f64 / acks as f64);
    let last_count_ms = seen.done_at.saturating_duration_since(last_ack_at).as_secs_f64() * 1000.0;
    let (frames_per_msg, bytes_per_msg) = (seen.frames as f64 / m as f64, seen.bytes as f64 / m as f64);
    let j = json!({
        "mode": "large-group",
        "members": n, "messages": m, "content_bytes": a.size,
        "coalesce_above": a.coalesce_above,
        "coalesced": n as usize > a.coalesce_above,
        "login_batch": batch,
        "acks": acks,
        "ack_phase_seconds": ack_secs,
        "login_phase_seconds": login_wall.as_secs_f64(),
        "acks_per_sec": acks as f64 / ack_secs,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_ack": cpu_us_per_ack,
        "server_disk_bytes": disk,
        "server_disk_bytes_per_ack": disk_per_ack,
        "sender": {
            "frames": seen.frames,
            "bytes": seen.bytes,
            "frames_per_message": frames_per_msg,
            "bytes_per_message": bytes_per_msg,
            "last_count_after_last_ack_ms": last_count_ms,
        },
    });
    let human = format!(
        "large group: {n} members, {m} messages, every member acks every message ({acks} acks), coalesced above {} members: {}\n\
         ack phases: {ack_secs:.2} s, {:.0} acks/s; server CPU {} µs and {} bytes written to storage per ack (logins apart: {:.1} s)\n\
         the sender's device received {} frames, {} bytes: {frames_per_msg:.1} frames and {bytes_per_msg:.0} bytes per message; \
         its last count {last_count_ms:.0} ms after the last ack",
        a.coalesce_above,
        if n as usize > a.coalesce_above { "yes" } else { "no" },
        acks as f64 / ack_secs,
        cpu_us_per_ack.map_or("?".into(), |v| format!("{v:.1}")),
        disk_per_ack.map_or("?".into(), |v| format!("{v:.0}")),
        login_wall.as_secs_f64(),
        seen.frames,
        seen.bytes,
    );
    Ok((j, human))
}
