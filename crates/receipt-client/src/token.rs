//! The session token's expiry clock: when to raise `TokenWillExpire` and `TokenExpired`.

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The expiry a token carries: the `exp` claim (Unix seconds) of a JWT (docs/protocol.md,
/// "Tokens"), read from its payload without verifying it (the client holds no key; the server
/// verifies). `None` for a token of another shape or without a numeric `exp`: no expiry events.
pub fn token_expiry_unix_secs(token: &str) -> Option<u64> {
    use base64::Engine;
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 8192 {
        return None;
    }
    // base64url without padding (RFC 7515); some minting libraries pad anyway.
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    claims.get("exp")?.as_u64()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_is_the_jwt_exp_claim() {
        // {"alg":"HS256","typ":"JWT"} . {"sub":"alice","exp":1900000000} . (any signature)
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTkwMDAwMDAwMH0.c2ln";
        assert_eq!(token_expiry_unix_secs(jwt), Some(1_900_000_000));
        // Padded payload: the same.
        let padded = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIiwiZXhwIjo1fQ==.c2ln";
        assert_eq!(token_expiry_unix_secs(padded), Some(5));
        // No exp, a non-numeric exp, not a JWT, the old format: no expiry.
        assert_eq!(token_expiry_unix_secs("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"), None);
        assert_eq!(token_expiry_unix_secs("eyJhbGciOiJIUzI1NiJ9.eyJleHAiOiJzb29uIn0.c2ln"), None);
        assert_eq!(token_expiry_unix_secs("opaque"), None);
        assert_eq!(token_expiry_unix_secs("1900000000.abcdef"), None);
    }
}
