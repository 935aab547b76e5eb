//! The session token's expiry clock: when to raise `TokenWillExpire` and `TokenExpired`.

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The expiry a token carries: its `<unix secs>.<mac>` prefix (the server's token format,
/// docs/protocol.md). `None` for a token of another shape: no expiry events then.
pub fn token_expiry_unix_secs(token: &str) -> Option<u64> {
    let (secs, mac) = token.split_once('.')?;
    if secs.is_empty() || secs.len() > 20 || !secs.bytes().all(|b| b.is_ascii_digit()) || mac.is_empty() {
        return None;
    }
    secs.parse().ok()
}

/// The session's token and when to raise its expiry events (wall clock, Unix ms).
pub(crate) struct TokenClock {
    pub(crate) token: String,
    /// About 80% of the way from when the client got the token to its expiry.
    pub(crate) will_expire_at: Option<u64>,
    pub(crate) expires_at: Option<u64>,
    pub(crate) will_expire_told: bool,
    pub(crate) expired_told: bool,
}

impl TokenClock {
    pub(crate) fn new(token: &str) -> TokenClock {
        let given = unix_ms();
        let expires_at = token_expiry_unix_secs(token).map(|s| s.saturating_mul(1000));
        let will_expire_at = expires_at.map(|e| given + e.saturating_sub(given) * 8 / 10);
        TokenClock { token: token.to_string(), will_expire_at, expires_at, will_expire_told: false, expired_told: false }
    }

    pub(crate) fn expired(&self) -> bool {
        self.expires_at.is_some_and(|e| unix_ms() >= e)
    }
}
