//! `receipt-server`: run the server, mint tokens, manage groups offline.
//!
//! - `receipt-server serve [--config FILE] [--addr A] [--data-dir D] [--secret S] ...` prints
//!   `listening on <addr>` as its first stdout line (then `metrics on <addr>` with
//!   `--metrics-addr`), then serves until SIGINT/SIGTERM.
//! - `receipt-server token --user U (--secret S | --private-key PEM) [--ttl SECS]` prints a login
//!   token (a JWT: HS256 with the secret, EdDSA or ES256 with the private key).
//! - `receipt-server group create|add|remove|role --data-dir D ...` edits groups in a data
//!   directory. The server must be stopped: the database is locked while it runs, and the
//!   command then fails with an error instead of touching it.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// mimalloc: many small short-lived allocations across the I/O and core threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use receipt_core::protocol::{ClientFrame, Response};
use receipt_core::GroupRole;
use receipt_server::config::{ClusterConfig, Role, ServerConfig, Visibility, WhoMayRequest};
use receipt_server::core::{CoreConfig, ServerCore};
use receipt_server::store::{RedbServerStore, ServerStore};

#[derive(Parser)]
#[command(name = "receipt-server", version, about = "Message receipt server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    // Boxed: the serve flags are much larger than the other commands.
    Serve(Box<ServeArgs>),
    /// Print a login token (a JWT) for a user.
    Token(TokenArgs),
    /// Manage groups in a data directory while the server is stopped.
    Group {
        /// The server's data directory.
        #[arg(long, default_value = "receipt-data")]
        data_dir: PathBuf,
        #[command(subcommand)]
        op: GroupOp,
    },
}

#[derive(Args)]
struct TokenArgs {
    /// The user id (the token's `sub`).
    #[arg(long)]
    user: String,
    /// Sign with HS256 and this shared secret (the server's `secret`).
    #[arg(long, required_unless_present = "private_key", conflicts_with = "private_key")]
    secret: Option<String>,
    /// Sign with this PKCS#8 PEM private key: Ed25519 (EdDSA) or P-256 (ES256).
    #[arg(long)]
    private_key: Option<PathBuf>,
    /// The `kid` header (the stem of the public key's file name on the server).
    #[arg(long)]
    kid: Option<String>,
    /// The `aud` claim.
    #[arg(long)]
    audience: Option<String>,
    /// Validity in seconds.
    #[arg(long, default_value_t = 86400)]
    ttl: u64,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML config file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    /// Data directory (default ./receipt-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep nothing on disk (tests, demos).
    #[arg(long, conflicts_with = "data_dir")]
    in_memory: bool,
    /// Where to keep the state: redb in the data directory (default) or PostgreSQL (`--pg`).
    #[arg(long, value_enum)]
    backend: Option<receipt_server::Backend>,
    /// PostgreSQL connection string for `--backend postgres` (libpq key=value or URL).
    #[arg(long, env = "RECEIPT_SERVER_PG")]
    pg: Option<String>,
    /// HS256 secret of the login tokens (when no --token-public-key is given).
    #[arg(long, env = "RECEIPT_SERVER_SECRET")]
    secret: Option<String>,
    /// PEM public key verifying login tokens (Ed25519: EdDSA, P-256: ES256); repeat for several
    /// (key rotation; a token's `kid` is the file's stem). Replaces the config's list.
    #[arg(long = "token-public-key")]
    token_public_keys: Vec<PathBuf>,
    /// The `aud` a login token must carry.
    #[arg(long)]
    token_audience: Option<String>,
    /// Clock skew allowed on a token's expiry, in seconds (default 60).
    #[arg(long)]
    token_leeway_secs: Option<u64>,
    /// Serve /metrics, /livez and /readyz on this address (off by default). A bare port binds
    /// loopback (`9464` is 127.0.0.1:9464); keep it on loopback or a private network.
    #[arg(long, value_parser = parse_metrics_addr)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Message retention in seconds.
    #[arg(long)]
    retention_secs: Option<u64>,
    #[arg(long)]
    idle_timeout_secs: Option<u64>,
    /// Enable group read acks.
    #[arg(long)]
    group_ack_enabled: Option<bool>,
    /// Enable group delivery acks (`[group_delivery_ack]`; its other switches in the file).
    #[arg(long)]
    group_delivery_ack_enabled: Option<bool>,
    #[arg(long)]
    who_may_request: Option<WhoMayRequest>,
    /// Validity of a group read ack after the message, in seconds.
    #[arg(long)]
    validity_secs: Option<u64>,
    /// Groups above this many members get no read acks (default 200, at most 10000).
    #[arg(long)]
    member_cap: Option<usize>,
    #[arg(long)]
    visibility: Option<Visibility>,
    /// Groups above this many members get coalesced read counts instead of one event per ack
    /// (default 200).
    #[arg(long)]
    coalesce_above: Option<usize>,
    /// Interval of the coalesced read counts in ms (default 500).
    #[arg(long)]
    coalesce_ms: Option<u64>,
    /// Largest group, members including the owner (default 5000; beyond: 604).
    #[arg(long)]
    max_group_size: Option<usize>,
    /// PEM certificate chain (leaf first): the listener speaks TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse plaintext connections (needs the certificate and key).
    #[arg(long)]
    require_tls: Option<bool>,
    /// Most open connections (default 10000).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Most devices of one user online at once; also the most connections one user holds, since
    /// a new login on a device replaces its older session (default 10).
    #[arg(long)]
    max_devices_per_user: Option<usize>,
    /// Most groups one user is in (default 1000; beyond: 4 EXCEED_SERVICE_LIMIT).
    #[arg(long)]
    max_groups_per_user: Option<usize>,
    /// Messages a user may send per second, sustained (default 100; 0: no limit; beyond: 502).
    #[arg(long)]
    send_rate_per_sec: Option<u32>,
    /// Messages a user may send at once (default 500).
    #[arg(long)]
    send_burst: Option<u32>,
    /// Other requests a user may make per second (default 1000; 0: no limit; beyond: 4).
    #[arg(long)]
    request_rate_per_sec: Option<u32>,
    /// Other requests a user may make at once (default 10000).
    #[arg(long)]
    request_burst: Option<u32>,
    /// Estimated bytes of live frames queued for a connection before it is dropped as too slow
    /// (default 8 MiB).
    #[arg(long)]
    outbound_bytes: Option<usize>,
    /// Largest page of group read acks in bytes (default 256 KiB).
    #[arg(long)]
    max_result_bytes: Option<usize>,
    /// Most 1:1 messages a user keeps stored for users who never logged in (default 10000;
    /// 0: no limit; beyond: 4 EXCEED_SERVICE_LIMIT).
    #[arg(long)]
    max_to_unseen_per_user: Option<usize>,
    /// Byte budget of the hot-state cache (default 256 MiB; with a data directory only).
    #[arg(long)]
    cache_bytes: Option<usize>,
    /// redb's page cache in bytes (default 128 MiB).
    #[arg(long)]
    store_cache_bytes: Option<usize>,
    /// Most devices per user whose log cursor is remembered (default 32).
    #[arg(long)]
    max_remembered_devices: Option<usize>,
    /// Forget a device not seen for this long, in seconds (default 30 days).
    #[arg(long)]
    device_horizon_secs: Option<u64>,
    /// Cluster: this node's id, 1..=65535 (with --nats and --role; docs/deployment.md).
    #[arg(long, requires_all = ["nats", "role"])]
    node_id: Option<u16>,
    /// Cluster: the NATS server's URL (e.g. nats://127.0.0.1:4222).
    #[arg(long, requires_all = ["node_id", "role"])]
    nats: Option<String>,
    /// Cluster: this node's role.
    #[arg(long, requires_all = ["node_id", "nats"])]
    role: Option<Role>,
    /// Cluster: its name, the NATS subject prefix `receipt.<name>.` (default "default").
    #[arg(long)]
    cluster_name: Option<String>,
    /// Cluster on PostgreSQL: the sequencer's lease in ms, at least 30 (default 3000). A
    /// standby leads about one to two leases after the sequencer died (docs/deployment.md).
    #[arg(long)]
    lease_ms: Option<u64>,
    /// Cluster: the NATS user (its password from RECEIPT_SERVER_NATS_PASSWORD; a token from
    /// RECEIPT_SERVER_NATS_TOKEN instead).
    #[arg(long)]
    nats_user: Option<String>,
    /// Cluster: PEM file of the CA of nats-server's certificate (TLS to NATS is then required).
    #[arg(long)]
    nats_ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum GroupOp {
    /// Create a group owned by `owner`; prints its id.
    Create {
        #[arg(long)]
        owner: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Comma-separated member ids.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        #[arg(long)]
        chat_room: bool,
    },
    /// Add members (as the group's owner).
    Add {
        #[arg(long)]
        group: String,
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Remove members (as the group's owner).
    Remove {
        #[arg(long)]
        group: String,
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Set a member's role (as the group's owner).
    Role {
        #[arg(long)]
        group: String,
        #[arg(long)]
        member: String,
        #[arg(long)]
        role: RoleArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Admin,
    Member,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Serve(a) => serve(*a),
        Cmd::Token(t) => token(t),
        Cmd::Group { data_dir, op } => group(data_dir, op),
    };
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// `HOST:PORT`, or a bare port on 127.0.0.1.
fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    match s.parse::<u16>() {
        Ok(port) => Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => s.parse().map_err(|e| format!("{s:?}: {e} (HOST:PORT or a port)")),
    }
}

fn token(t: TokenArgs) -> Result<(), Box<dyn std::error::Error>> {
    use receipt_server::auth::SigningKey;
    let key = match (&t.secret, &t.private_key) {
        (_, Some(p)) => SigningKey::from_pem(&std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?)?,
        (Some(s), None) => SigningKey::secret(s),
        (None, None) => return Err("--secret or --private-key".into()),
    };
    let key = match t.kid {
        Some(k) => key.with_kid(k),
        None => key,
    };
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs().saturating_add(t.ttl);
    println!("{}", key.token(&t.user, exp, t.audience.as_deref()));
    Ok(())
}

fn serve(a: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut c = match &a.config {
        Some(p) => ServerConfig::from_file(p)?,
        None => ServerConfig { data_dir: Some(PathBuf::from("receipt-data")), ..ServerConfig::default() },
    };
    if let Some(v) = a.addr {
        c.addr = v;
    }
    if let Some(v) = a.data_dir {
        c.data_dir = Some(v);
    }
    if let Some(v) = a.backend {
        c.backend = v;
    }
    if let Some(v) = a.pg {
        c.pg = Some(v);
    }
    if a.in_memory {
        c.data_dir = None;
    } else if c.data_dir.is_none() && c.backend == receipt_server::Backend::Redb {
        c.data_dir = Some(PathBuf::from("receipt-data"));
    }
    if let Some(v) = a.secret {
        c.secret = v;
    }
    if !a.token_public_keys.is_empty() {
        c.tokens.public_keys = a.token_public_keys;
    }
    if let Some(v) = a.token_audience {
        c.tokens.audience = Some(v);
    }
    if let Some(v) = a.token_leeway_secs {
        c.tokens.leeway_secs = v;
    }
    if let Some(v) = a.metrics_addr {
        c.metrics_addr = Some(v);
    }
    if let Some(v) = a.retention_secs {
        c.retention_secs = v;
    }
    if let Some(v) = a.idle_timeout_secs {
        c.idle_timeout_secs = v;
    }
    if let Some(v) = a.group_ack_enabled {
        c.group_ack.enabled = v;
    }
    if let Some(v) = a.group_delivery_ack_enabled {
        c.group_delivery_ack.enabled = v;
    }
    if let Some(v) = a.who_may_request {
        c.group_ack.who_may_request = v;
    }
    if let Some(v) = a.validity_secs {
        c.group_ack.validity_secs = v;
    }
    if let Some(v) = a.member_cap {
        c.group_ack.member_cap = v;
    }
    if let Some(v) = a.visibility {
        c.group_ack.visibility = v;
    }
    if let Some(v) = a.tls_cert {
        c.tls_cert = Some(v);
    }
    if let Some(v) = a.tls_key {
        c.tls_key = Some(v);
    }
    if let Some(v) = a.require_tls {
        c.require_tls = v;
    }
    let overrides = [
        (a.max_connections, &mut c.max_connections),
        (a.max_devices_per_user, &mut c.max_devices_per_user),
        (a.max_groups_per_user, &mut c.max_groups_per_user),
        (a.outbound_bytes, &mut c.outbound_bytes),
        (a.max_result_bytes, &mut c.max_result_bytes),
        (a.max_to_unseen_per_user, &mut c.max_to_unseen_per_user),
        (a.cache_bytes, &mut c.cache_bytes),
        (a.store_cache_bytes, &mut c.store_cache_bytes),
        (a.max_remembered_devices, &mut c.max_remembered_devices),
        (a.coalesce_above, &mut c.group_ack.coalesce_above),
        (a.max_group_size, &mut c.max_group_size),
    ];
    for (flag, field) in overrides {
        if let Some(v) = flag {
            *field = v;
        }
    }
    if let Some(v) = a.device_horizon_secs {
        c.device_horizon_secs = v;
    }
    if let Some(v) = a.coalesce_ms {
        c.group_ack.coalesce_ms = v;
    }
    let rates = [
        (a.send_rate_per_sec, &mut c.send_rate.per_sec),
        (a.send_burst, &mut c.send_rate.burst),
        (a.request_rate_per_sec, &mut c.request_rate.per_sec),
        (a.request_burst, &mut c.request_rate.burst),
    ];
    for (flag, field) in rates {
        if let Some(v) = flag {
            *field = v;
        }
    }
    if let (Some(node_id), Some(nats), Some(role)) = (a.node_id, a.nats, a.role) {
        let name = a.cluster_name.or_else(|| c.cluster.as_ref().map(|c| c.name.clone())).unwrap_or_else(|| "default".into());
        let lease_ms = c.cluster.as_ref().map_or(receipt_server::config::DEFAULT_LEASE_MS, |c| c.lease_ms);
        let old = c.cluster.take();
        let mut cl = ClusterConfig::new(node_id, nats, role, name);
        cl.lease_ms = lease_ms;
        // NATS credentials and TLS files of the file's [cluster] stay (flags below override).
        if let Some(o) = old {
            (cl.nats_user, cl.nats_password, cl.nats_token) = (o.nats_user, o.nats_password, o.nats_token);
            (cl.nats_ca, cl.nats_cert, cl.nats_key) = (o.nats_ca, o.nats_cert, o.nats_key);
        }
        c.cluster = Some(cl);
    } else if let (Some(name), Some(cl)) = (a.cluster_name, c.cluster.as_mut()) {
        cl.name = name;
    }
    let cluster_flags = a.lease_ms.is_some() || a.nats_user.is_some() || a.nats_ca.is_some();
    match c.cluster.as_mut() {
        Some(cl) => {
            if let Some(ms) = a.lease_ms {
                cl.lease_ms = ms;
            }
            if let Some(u) = a.nats_user {
                cl.nats_user = Some(u);
            }
            if let Some(ca) = a.nats_ca {
                cl.nats_ca = Some(ca);
            }
            // Secrets from the environment rather than a flag (visible in `ps`) or the file.
            if let Ok(p) = std::env::var("RECEIPT_SERVER_NATS_PASSWORD") {
                cl.nats_password = Some(p);
            }
            if let Ok(t) = std::env::var("RECEIPT_SERVER_NATS_TOKEN") {
                cl.nats_token = Some(t);
            }
        }
        None if cluster_flags => {
            return Err("--lease-ms, --nats-user and --nats-ca are for a cluster node (--node-id, --nats, --role or [cluster])".into())
        }
        None => {}
    }
    if c.cluster.as_ref().is_some_and(|cl| cl.node_id == 0) {
        return Err("a cluster node's node_id must be 1..=65535".into());
    }
    // Flags are checked like the file's values (start checks again).
    c.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let server = receipt_server::start(c).await?;
        // A gateway says it listens once it hears the sequencer (it closes connections before).
        if !server.wait_ready(std::time::Duration::from_secs(10)).await {
            log::warn!("no sequencer heard yet; connections are closed until it is");
        }
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {}", server.local_addr())?;
            if let Some(m) = server.metrics_addr() {
                writeln!(out, "metrics on {m}")?;
            }
            out.flush()?;
        }
        wait_for_signal().await;
        log::info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn group(data_dir: PathBuf, op: GroupOp) -> Result<(), Box<dyn std::error::Error>> {
    let mut store =
        RedbServerStore::open(&data_dir).map_err(|e| format!("{e} (is the server running on this data directory? stop it first)"))?;
    // Groups are resident; nothing else is loaded (the hot-state cache reads what it needs).
    let state = store.load_hot()?;
    let reader = store.reader().ok_or("the redb store has a reader")?;
    let config = ServerConfig::default();
    let mut core = ServerCore::with_store(CoreConfig::from(&config), state, reader, config.cache_bytes);
    let owner_of = |core: &ServerCore, g: &str| -> Result<String, String> {
        let grp = core.state().groups.get(g).ok_or_else(|| format!("unknown group {g}"))?;
        grp.members.iter().find(|(_, r)| **r == GroupRole::Owner).map(|(u, _)| u.clone()).ok_or_else(|| format!("group {g} has no owner"))
    };
    let (user, frame) = match op {
        GroupOp::Create { owner, name, members, chat_room } => (owner, ClientFrame::CreateGroup { req: 0, name, members, chat_room }),
        GroupOp::Add { group, members } => (owner_of(&core, &group)?, ClientFrame::AddMembers { req: 0, group, members }),
        GroupOp::Remove { group, members } => (owner_of(&core, &group)?, ClientFrame::RemoveMembers { req: 0, group, members }),
        GroupOp::Role { group, member, role } => {
            let role = match role {
                RoleArg::Admin => GroupRole::Admin,
                RoleArg::Member => GroupRole::Member,
            };
            (owner_of(&core, &group)?, ClientFrame::SetRole { req: 0, group, member, role })
        }
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let (res, fx) = core.apply_as(now, &user, frame);
    let resp = res?;
    store.commit(&[&fx.ops])?;
    match resp {
        Response::GroupCreated { group } => println!("{group}"),
        _ => println!("ok"),
    }
    Ok(())
}
