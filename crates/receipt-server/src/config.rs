//! Server settings: defaults, and loading from a TOML file.
//!
//! Every field has a default, so a TOML file only names what it changes:
//!
//! ```toml
//! addr = "0.0.0.0:7878"
//! data_dir = "/var/lib/receipt-server"
//! # backend = "postgres"                 # instead of redb in data_dir (docs/deployment.md)
//! # pg = "host=/run/postgresql dbname=receipts user=receipt"
//! secret = "long random string"
//! retention_secs = 604800
//!
//! max_groups_per_user = 1000
//! max_to_unseen_per_user = 10000
//! max_remembered_devices = 32
//! device_horizon_secs = 2592000
//! outbound_bytes = 8388608
//! max_result_bytes = 262144
//! cache_bytes = 268435456                # hot-state cache budget (256 MiB)
//! store_cache_bytes = 134217728          # redb's page cache (128 MiB)
//!
//! [send_rate]                            # per user; 502 beyond it
//! per_sec = 100
//! burst = 500
//!
//! [request_rate]                         # other requests, per user; 4 beyond it
//! per_sec = 1000
//! burst = 10000
//!
//! metrics_addr = "127.0.0.1:9464"       # /metrics, /livez, /readyz (off when absent)
//!
//! [tokens]                               # JWT login tokens (docs/operations.md)
//! public_keys = ["/etc/receipt/2026-12.pem"]  # Ed25519 or P-256; none: HS256 with `secret`
//! audience = "chat.example.com"          # optional
//! leeway_secs = 60
//!
//! [group_ack]
//! enabled = true
//! who_may_request = "owner_and_admins"   # or "all_members"
//! validity_secs = 259200
//! member_cap = 200                       # at most 10000 (see max_group_size)
//! visibility = "all_members"             # or "sender_only"
//! coalesce_above = 200                   # larger groups: count updates, not one event per ack
//! coalesce_ms = 500                      # at most one count update per message per interval
//!
//! [group_delivery_ack]                   # the same switches, for group delivery acks
//! enabled = true                         # off by default: group messages take no delivery acks
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use receipt_core::rules;
use serde::{Deserialize, Serialize};

/// The secret a default config carries. The server warns when it runs with it.
pub const DEFAULT_SECRET: &str = "change-me";

/// Who may send a group message that asks for read acks. The configuration's copy of
/// [`rules::WhoMayRequest`] (it also parses from the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum WhoMayRequest {
    AllMembers,
    OwnerAndAdmins,
}

/// Who sees a group message's read acks (count, list, events). The configuration's copy of
/// [`rules::Visibility`] (it also parses from the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Visibility {
    SenderOnly,
    AllMembers,
}

/// Where the server keeps its state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Backend {
    /// One redb file in `data_dir` (or in memory without one): no external service.
    #[default]
    Redb,
    /// A PostgreSQL database named by `pg` (docs/deployment.md).
    Postgres,
}

/// The group read-ack policy (docs/protocol.md, seed defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupAckPolicy {
    /// The feature is off until enabled (505 while off).
    pub enabled: bool,
    pub who_may_request: WhoMayRequest,
    /// An ack is valid for this long after the message was sent (506 after). Default 3 days.
    pub validity_secs: u64,
    /// Groups with more members than this get no read acks. Default 200, at most 10,000
    /// ([`rules::MAX_MEMBER_CAP`]; more is a configuration error). Groups that large need a
    /// `max_group_size` as large.
    pub member_cap: usize,
    pub visibility: Visibility,
    /// Messages of groups with more members than this get coalesced acks: the sender's devices
    /// get one count update per message per `coalesce_ms` (and fetch the list on demand)
    /// instead of one event per ack; members get no per-ack events either. Default 200 (the
    /// default cap: nothing coalesced).
    pub coalesce_above: usize,
    /// The interval of the count updates, in ms (1..=60,000). Default 500.
    pub coalesce_ms: u64,
}

impl Default for GroupAckPolicy {
    /// The rules' defaults (the seed's), in the configuration's units.
    fn default() -> Self {
        let d = rules::GroupAckPolicy::default();
        GroupAckPolicy {
            enabled: d.enabled,
            who_may_request: match d.who_may_request {
                rules::WhoMayRequest::AllMembers => WhoMayRequest::AllMembers,
                rules::WhoMayRequest::OwnerAndAdmins => WhoMayRequest::OwnerAndAdmins,
            },
            validity_secs: d.validity_ms / 1000,
            member_cap: d.member_cap,
            visibility: match d.visibility {
                rules::Visibility::SenderOnly => Visibility::SenderOnly,
                rules::Visibility::AllMembers => Visibility::AllMembers,
            },
            coalesce_above: d.coalesce_above,
            coalesce_ms: DEFAULT_COALESCE_MS,
        }
    }
}

/// The default interval of coalesced group read counts (ms).
pub const DEFAULT_COALESCE_MS: u64 = 500;
/// Longest interval of coalesced group read counts (ms).
pub const MAX_COALESCE_MS: u64 = 60_000;

/// A per-user token bucket: `burst` requests at once, refilled at `per_sec` a second.
/// `per_sec = 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_sec: u32,
    pub burst: u32,
}

impl RateLimit {
    /// No limit.
    pub const OFF: RateLimit = RateLimit { per_sec: 0, burst: 0 };
}

/// How login tokens (JWTs, [`crate::auth`]) are verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// PEM public keys (Ed25519: EdDSA tokens; P-256: ES256 tokens), each named by its file stem
    /// as a token's `kid`. Empty: HS256 tokens signed with [`ServerConfig::secret`]. Not empty:
    /// only these keys verify tokens (the secret mints nothing).
    pub public_keys: Vec<PathBuf>,
    /// The `aud` a token must carry. `None`: a token's `aud` is not checked.
    pub audience: Option<String>,
    /// Clock skew allowed between the minting backend and the server: a token is expired once
    /// `exp + leeway_secs <= now`. Default 60.
    pub leeway_secs: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig { public_keys: Vec::new(), audience: None, leeway_secs: 60 }
    }
}

/// Everything the server can be told. `Default` is a usable development config (in-memory store,
/// 127.0.0.1:7878, the [`DEFAULT_SECRET`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Port 0 picks a free port (see `local_addr()` on the handles).
    pub addr: SocketAddr,
    /// The store: redb in `data_dir` (the default) or PostgreSQL at `pg`.
    pub backend: Backend,
    /// PostgreSQL connection string (libpq key=value or URL) when `backend = "postgres"`.
    /// No TLS: keep PostgreSQL on the same host or a private network.
    pub pg: Option<String>,
    /// Directory holding the redb database file. `None`: an in-memory store (nothing survives a
    /// restart; for tests and demos). The `serve` command defaults to `./receipt-data`.
    pub data_dir: Option<PathBuf>,
    /// HS256 key of the login tokens when `tokens.public_keys` is empty.
    pub secret: String,
    /// How login tokens are verified (keys, audience, clock skew).
    pub tokens: TokenConfig,
    /// Address of the operations HTTP listener (`/metrics`, `/livez`, `/readyz`). `None` (the
    /// default): no listener and no counting. Keep it on loopback or a private network.
    pub metrics_addr: Option<SocketAddr>,
    /// How long messages are kept (read acks on older ones: 506). Default 7 days.
    pub retention_secs: u64,
    /// Connections silent for this long are closed. Default 120 s.
    pub idle_timeout_secs: u64,
    /// A connection must have sent a valid `Login` within this long after it was accepted, or
    /// it gets `Error` and is closed, however much (or little) it trickles in meanwhile
    /// (slowloris). Default 10 s.
    pub login_timeout_secs: u64,
    /// Most devices of one user online at once; a login of a further device is refused with
    /// `LoginFailed` (214 USER_LOGIN_TOO_MANY_DEVICES). A device id already online does not count
    /// twice: its new login replaces the old session (206 USER_LOGIN_ANOTHER_DEVICE to the old
    /// one), so this is also the most logged-in connections one user holds. Default 10.
    pub max_devices_per_user: usize,
    /// Most open client connections (logged in or not); sockets beyond it get `Error` (302
    /// server busy) and are closed at once. Default 10,000.
    pub max_connections: usize,
    /// Largest frame body accepted from a client, in bytes.
    pub max_frame: usize,
    /// Live frames queued for one connection before it counts as too slow and is dropped (its
    /// device replays from its cursor on reconnect; nothing is lost).
    pub outbound_queue: usize,
    /// Encoded bytes (estimated from the frames' sizes) of live frames queued for one connection
    /// before it counts as too slow and is dropped, like `outbound_queue`. Default 8 MiB.
    pub outbound_bytes: usize,
    /// Largest result of one request in bytes: a page of group read acks ends early (with a
    /// cursor) before its acks' exts pass it. Default 256 KiB, well under `max_frame`.
    pub max_result_bytes: usize,
    /// Most groups (and chat rooms) one user is in; creating, joining or being added beyond it
    /// fails with 4 EXCEED_SERVICE_LIMIT. Default 1,000.
    pub max_groups_per_user: usize,
    /// Messages one user may send (502 MESSAGE_SEND_TRAFFIC_LIMIT beyond it). Default 100/s,
    /// bursts of 500.
    pub send_rate: RateLimit,
    /// Other requests (acks, fetches, group admin) one user may make (4 EXCEED_SERVICE_LIMIT
    /// beyond it). Default 1,000/s, bursts of 10,000 (a device acking a long backlog at once).
    pub request_rate: RateLimit,
    /// Most 1:1 messages one user keeps stored for recipients the server has never seen (never
    /// logged in, never sent anything); a further message to such a recipient fails with 4
    /// EXCEED_SERVICE_LIMIT. They stop counting when the recipient logs in or the messages pass
    /// retention. 0: no limit. Default 10,000.
    pub max_to_unseen_per_user: usize,
    /// Byte budget of the core's hot-state cache (messages with their flags and recent acks,
    /// conversations): clean entries are evicted least recently used first beyond it and read
    /// back from the store when needed (docs/server-data-model.md, "Hot state and start-up").
    /// An estimate of the entries' heap bytes, not the process's RSS. Default 256 MiB. Without
    /// a data directory (in-memory store) everything stays resident and this is not used.
    pub cache_bytes: usize,
    /// redb's page cache (read cache and write buffer) in bytes: with `cache_bytes`, what bounds
    /// the server's memory besides its connections. Default 128 MiB (redb's own default, 1 GiB,
    /// filled up to its size with a large store).
    pub store_cache_bytes: usize,
    /// Most devices of one user whose log cursor the server remembers; the user's log is trimmed
    /// below the lowest of them. Beyond it the least recently seen offline device is forgotten
    /// (a full state resync at its next login). Default 32.
    pub max_remembered_devices: usize,
    /// A device not seen (login or cursor report) for this long is forgotten. Default 30 days.
    pub device_horizon_secs: u64,
    /// Most requests the core applies (and commits in one transaction) at a time.
    pub max_batch: usize,
    /// Largest group (members including the owner); beyond it create/add fail with 604.
    /// Distinct from `group_ack.member_cap`, above which groups simply get no read acks.
    pub max_group_size: usize,
    pub group_ack: GroupAckPolicy,
    /// The policy of group delivery acks (`[group_delivery_ack]`): the same switches and
    /// defaults as `group_ack`, its own values; off by default.
    pub group_delivery_ack: GroupAckPolicy,
    /// PEM file of the server's certificate chain (leaf first). With `tls_key`, the listener
    /// speaks TLS (rustls); without, plaintext only.
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// Refuse plaintext connections (needs `tls_cert`/`tls_key`). False: one port takes both,
    /// told apart by the first byte (a TLS record starts with 0x16; a frame's length prefix
    /// never does, frames being far smaller than 0x16 << 24 bytes).
    pub require_tls: bool,
    /// Several nodes over NATS (docs/deployment.md, "Several nodes"). `None` (the default): one
    /// node, as before.
    pub cluster: Option<ClusterConfig>,
}

/// What a node does in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Role {
    /// Runs the core and group commit against the store, and serves its own clients.
    Sequencer,
    /// Holds client connections only: forwards their requests to the sequencer over NATS.
    Gateway,
    /// A candidate sequencer (PostgreSQL backend only): waits for the cluster's advisory lock,
    /// then runs as the sequencer (cluster/lease.rs). A `sequencer` on PostgreSQL takes the
    /// same lock, so two never write at once.
    Standby,
}

/// The `[cluster]` table: this node's id, role and NATS server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique in the cluster, 1..=65535: the top 16 bits of this node's session ids.
    pub node_id: u16,
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub nats: String,
    pub role: Role,
    /// The NATS subject prefix `receipt.<name>.`: several clusters may share one NATS server.
    #[serde(default = "default_cluster_name")]
    pub name: String,
    /// The sequencer's lease on PostgreSQL (ms): it renews its lock every third of it and
    /// stops writing when it could not; a standby that took the lock waits one lease before
    /// it commits. Default 3000.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// NATS user and password (nats-server's `authorization { user, password }`). Give both or
    /// neither; `serve` also reads the password from `RECEIPT_SERVER_NATS_PASSWORD`.
    pub nats_user: Option<String>,
    pub nats_password: Option<String>,
    /// A NATS token (`authorization { token }`), instead of a user; `serve` also reads it from
    /// `RECEIPT_SERVER_NATS_TOKEN`.
    pub nats_token: Option<String>,
    /// PEM file of the CA that signed nats-server's certificate. Set, TLS is required; a
    /// `tls://` URL requires it too (then the system's roots are trusted unless this is set).
    pub nats_ca: Option<PathBuf>,
    /// This node's certificate and key (PEM files), when nats-server verifies its clients
    /// (`tls { verify: true }`). Both or neither.
    pub nats_cert: Option<PathBuf>,
    pub nats_key: Option<PathBuf>,
}

impl ClusterConfig {
    /// A node of cluster `name` on `nats`, with the default lease and no NATS credentials.
    pub fn new(node_id: u16, nats: impl Into<String>, role: Role, name: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            node_id,
            nats: nats.into(),
            role,
            name: name.into(),
            lease_ms: DEFAULT_LEASE_MS,
            nats_user: None,
            nats_password: None,
            nats_token: None,
            nats_ca: None,
            nats_cert: None,
            nats_key: None,
        }
    }
}

fn default_cluster_name() -> String {
    "default".to_string()
}

/// The default of [`ClusterConfig::lease_ms`].
pub const DEFAULT_LEASE_MS: u64 = 3000;

fn default_lease_ms() -> u64 {
    DEFAULT_LEASE_MS
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 7878)),
            backend: Backend::Redb,
            pg: None,
            data_dir: None,
            secret: DEFAULT_SECRET.to_string(),
            tokens: TokenConfig::default(),
            metrics_addr: None,
            retention_secs: 7 * 24 * 3600,
            idle_timeout_secs: 120,
            login_timeout_secs: 10,
            max_devices_per_user: 10,
            max_connections: 10_000,
            max_frame: receipt_core::codec::DEFAULT_MAX_FRAME,
            outbound_queue: 4096,
            outbound_bytes: 8 << 20,
            max_result_bytes: 256 << 10,
            max_groups_per_user: 1000,
            send_rate: RateLimit { per_sec: 100, burst: 500 },
            request_rate: RateLimit { per_sec: 1000, burst: 10_000 },
            max_to_unseen_per_user: 10_000,
            cache_bytes: 256 << 20,
            store_cache_bytes: crate::store::DEFAULT_STORE_CACHE_BYTES,
            max_remembered_devices: 32,
            device_horizon_secs: 30 * 24 * 3600,
            max_batch: 512,
            max_group_size: 5000,
            group_ack: GroupAckPolicy::default(),
            group_delivery_ack: GroupAckPolicy::default(),
            cluster: None,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
        }
    }
}

/// A config file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
}

/// A setting out of its range (`ServerConfig::validate`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {0}")]
pub struct InvalidConfig(pub String);

impl ServerConfig {
    /// Parses a TOML document (missing fields keep their defaults; unknown fields are errors,
    /// and so are values out of range: [`validate`](Self::validate)).
    pub fn from_toml_str(s: &str) -> Result<Self, toml::de::Error> {
        let c: ServerConfig = toml::from_str(s)?;
        c.validate().map_err(|e| <toml::de::Error as serde::de::Error>::custom(e.0))?;
        Ok(c)
    }

    /// Checks the values whose range the types do not say: `group_ack.member_cap`
    /// 1..=10,000, `group_ack.coalesce_ms` 1..=60,000, `cluster.lease_ms` ≥ 30, a `standby`
    /// only on PostgreSQL, and NATS credentials that go together. The server refuses to start
    /// otherwise.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        rules::check_member_cap(self.group_ack.member_cap).map_err(InvalidConfig)?;
        if !(1..=MAX_COALESCE_MS).contains(&self.group_ack.coalesce_ms) {
            return Err(InvalidConfig(format!("group_ack.coalesce_ms must be 1..={MAX_COALESCE_MS}, not {}", self.group_ack.coalesce_ms)));
        }
        if let Some(c) = &self.cluster {
            // A standby waits for a lock only PostgreSQL holds; a lease under 30 ms cannot be
            // renewed in time.
            if c.role == Role::Standby && self.backend != Backend::Postgres {
                return Err(InvalidConfig("cluster.role = \"standby\" needs backend = \"postgres\"".into()));
            }
            if c.lease_ms < 30 {
                return Err(InvalidConfig(format!("cluster.lease_ms must be at least 30, not {}", c.lease_ms)));
            }
            if c.nats_user.is_some() != c.nats_password.is_some() {
                return Err(InvalidConfig("cluster.nats_user and cluster.nats_password go together".into()));
            }
            if c.nats_token.is_some() && c.nats_user.is_some() {
                return Err(InvalidConfig("cluster.nats_token or cluster.nats_user, not both".into()));
            }
            if c.nats_cert.is_some() != c.nats_key.is_some() {
                return Err(InvalidConfig("cluster.nats_cert and cluster.nats_key go together".into()));
            }
        }
        Ok(())
    }

    /// Reads a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
        Self::from_toml_str(&text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })
    }

    pub(crate) fn retention_ms(&self) -> u64 {
        self.retention_secs.saturating_mul(1000)
    }
}

impl GroupAckPolicy {
    pub(crate) fn validity_ms(&self) -> u64 {
        self.validity_secs.saturating_mul(1000)
    }

    /// The policy as the receipt rules ([`receipt_core::rules`]) take it.
    pub fn rules(&self) -> rules::GroupAckPolicy {
        rules::GroupAckPolicy {
            enabled: self.enabled,
            who_may_request: match self.who_may_request {
                WhoMayRequest::AllMembers => rules::WhoMayRequest::AllMembers,
                WhoMayRequest::OwnerAndAdmins => rules::WhoMayRequest::OwnerAndAdmins,
            },
            validity_ms: self.validity_ms(),
            member_cap: self.member_cap,
            visibility: match self.visibility {
                Visibility::SenderOnly => rules::Visibility::SenderOnly,
                Visibility::AllMembers => rules::Visibility::AllMembers,
            },
            coalesce_above: self.coalesce_above,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ack_defaults_are_the_rules_defaults() {
        assert_eq!(GroupAckPolicy::default().rules(), rules::GroupAckPolicy::default());
        assert_eq!(GroupAckPolicy::default().validity_secs, 3 * 24 * 3600);
        assert_eq!(GroupAckPolicy::default().member_cap, 200);
    }

    #[test]
    fn toml_overrides_only_what_it_names() {
        let c = ServerConfig::from_toml_str(
            "secret = \"s\"\n[group_ack]\nenabled = true\nwho_may_request = \"owner_and_admins\"\nvisibility = \"all_members\"\n",
        )
        .unwrap();
        assert_eq!(c.secret, "s");
        assert!(c.group_ack.enabled);
        assert_eq!(c.group_ack.who_may_request, WhoMayRequest::OwnerAndAdmins);
        assert_eq!(c.group_ack.visibility, Visibility::AllMembers);
        assert_eq!(c.group_ack.member_cap, 200);
        assert_eq!(c.group_ack.validity_secs, 3 * 24 * 3600);
        assert_eq!(c.retention_secs, 7 * 24 * 3600);
        assert_eq!((c.login_timeout_secs, c.max_devices_per_user, c.max_connections), (10, 10, 10_000));
        assert!(ServerConfig::from_toml_str("bogus = 1").is_err());
        assert_eq!(c.group_delivery_ack, GroupAckPolicy::default(), "its own section, off by default");
        let d = ServerConfig::from_toml_str("[group_delivery_ack]\nenabled = true\nmember_cap = 50\n").unwrap();
        assert!(d.group_delivery_ack.enabled && !d.group_ack.enabled);
        assert_eq!(d.group_delivery_ack.member_cap, 50);
        let c = ServerConfig::from_toml_str("max_groups_per_user = 5\n[send_rate]\nper_sec = 2\nburst = 3\n").unwrap();
        assert_eq!(
            (c.max_groups_per_user, c.send_rate, c.request_rate),
            (5, RateLimit { per_sec: 2, burst: 3 }, ServerConfig::default().request_rate)
        );
        assert!(ServerConfig::from_toml_str("[send_rate]\nper_sec = 2\n").is_err(), "a rate names its burst");
        let c = ServerConfig::from_toml_str("metrics_addr = \"127.0.0.1:9464\"\n[tokens]\npublic_keys = [\"k.pem\"]\naudience = \"a\"\n")
            .unwrap();
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.tokens, TokenConfig { public_keys: vec![PathBuf::from("k.pem")], audience: Some("a".into()), leeway_secs: 60 });
        assert_eq!(ServerConfig::default().metrics_addr, None, "metrics are off by default");
        let c = ServerConfig::from_toml_str("backend = \"postgres\"\npg = \"host=/tmp dbname=r\"\n").unwrap();
        assert_eq!((c.backend, c.pg.as_deref()), (Backend::Postgres, Some("host=/tmp dbname=r")));
        assert_eq!(ServerConfig::default().backend, Backend::Redb, "the embedded store stays the default");
        assert!(ServerConfig::from_toml_str("backend = \"mysql\"").is_err());
    }

    #[test]
    fn the_member_cap_goes_up_to_ten_thousand_and_coalescing_is_off_by_default() {
        let d = GroupAckPolicy::default();
        assert_eq!((d.coalesce_above, d.coalesce_ms), (d.member_cap, 500), "a default deployment coalesces nothing");
        let c = ServerConfig::from_toml_str(
            "max_group_size = 10000\n[group_ack]\nmember_cap = 10000\ncoalesce_above = 500\ncoalesce_ms = 250\n",
        )
        .unwrap();
        assert_eq!((c.group_ack.member_cap, c.group_ack.coalesce_above, c.group_ack.coalesce_ms), (10_000, 500, 250));
        assert_eq!(c.max_group_size, 10_000);
        let e = ServerConfig::from_toml_str("[group_ack]\nmember_cap = 10001\n").unwrap_err().to_string();
        assert!(e.contains("member_cap must be 1..=10000, not 10001"), "{e}");
        let e = ServerConfig::from_toml_str("[group_ack]\ncoalesce_ms = 0\n").unwrap_err().to_string();
        assert!(e.contains("coalesce_ms"), "{e}");
        let over = ServerConfig { group_ack: GroupAckPolicy { member_cap: 20_000, ..d }, ..ServerConfig::default() };
        assert!(over.validate().is_err());
        assert!(ServerConfig::default().validate().is_ok());
    }

    #[test]
    fn nats_credentials_and_tls_files_go_together() {
        let node = "[cluster]\nnode_id = 2\nnats = \"tls://127.0.0.1:4222\"\nrole = \"gateway\"\n";
        let ok = ServerConfig::from_toml_str(&format!("{node}nats_user = \"r\"\nnats_password = \"p\"\nnats_ca = \"ca.pem\"\n")).unwrap();
        let c = ok.cluster.unwrap();
        assert_eq!((c.nats_user.as_deref(), c.nats_password.as_deref()), (Some("r"), Some("p")));
        assert_eq!(c.nats_ca, Some(PathBuf::from("ca.pem")));
        assert!(ServerConfig::from_toml_str(&format!("{node}nats_token = \"t\"\n")).is_ok());
        for (bad, why) in [
            ("nats_user = \"r\"\n", "go together"),
            ("nats_password = \"p\"\n", "go together"),
            ("nats_token = \"t\"\nnats_user = \"r\"\nnats_password = \"p\"\n", "not both"),
            ("nats_cert = \"c.pem\"\n", "go together"),
        ] {
            let e = ServerConfig::from_toml_str(&format!("{node}{bad}")).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_standby_needs_postgres_and_the_lease_defaults_to_three_seconds() {
        let cluster = "[cluster]\nnode_id = 2\nnats = \"nats://127.0.0.1:4222\"\nrole = \"standby\"\n";
        let e = ServerConfig::from_toml_str(cluster).unwrap_err().to_string();
        assert!(e.contains("needs backend = \"postgres\""), "{e}");
        let c = ServerConfig::from_toml_str(&format!("backend = \"postgres\"\npg = \"host=/tmp\"\n{cluster}")).unwrap();
        assert_eq!(c.cluster.as_ref().map(|c| (c.role, c.lease_ms)), Some((Role::Standby, DEFAULT_LEASE_MS)));
        let e = ServerConfig::from_toml_str(&format!("backend = \"postgres\"\n{cluster}lease_ms = 10\n")).unwrap_err().to_string();
        assert!(e.contains("lease_ms must be at least 30"), "{e}");
    }
}
