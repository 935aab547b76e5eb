//! The runtime's settings: [`ClientConfig`].

use std::path::PathBuf;
use std::time::Duration;

use receipt_core::engine::Retention;
use receipt_core::*;

use crate::Security;

/// Default server port.
pub const DEFAULT_PORT: u16 = 7878;

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub options: ChatOptions,
    /// Where the per-user store files and the device id live.
    pub data_dir: PathBuf,
    /// This install's device id; `None`: generated once and kept in `data_dir/device-id`.
    pub device_id: Option<DeviceId>,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// TLS or plaintext ([`Security::Auto`]: TLS except to a loopback host).
    pub security: Security,
    /// Messages the engine keeps in memory (the rest is read from the store when needed).
    pub message_cache: usize,
    /// What the device keeps of old history (default: everything).
    pub retention: Retention,
}

impl ClientConfig {
    pub fn new(options: ChatOptions, data_dir: impl Into<PathBuf>) -> Self {
        ClientConfig {
            options,
            data_dir: data_dir.into(),
            device_id: None,
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            security: Security::Auto,
            message_cache: receipt_core::engine::DEFAULT_MESSAGE_CACHE,
            retention: Retention::default(),
        }
    }

    pub(crate) fn server_host(&self) -> &str {
        self.options.im_server.as_deref().unwrap_or("127.0.0.1")
    }

    pub(crate) fn server_addr(&self) -> String {
        let host = self.server_host();
        // A bare IPv6 address needs brackets before the port.
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.options.im_port.unwrap_or(DEFAULT_PORT))
        } else {
            format!("{host}:{}", self.options.im_port.unwrap_or(DEFAULT_PORT))
        }
    }
}
