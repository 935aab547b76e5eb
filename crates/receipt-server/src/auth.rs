//! Login tokens: `<expiry>.<hex mac>`, where `expiry` is Unix seconds and the mac is
//! HMAC-SHA256, keyed by the server secret, over `"receipt-token-v1\n" + expiry + "\n" + user`.
//! Verification compares in constant time (`hmac`'s `verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused. Missing and Malformed become code 104, Expired 108, BadSignature 202.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("bad token signature")]
    BadSignature,
}

fn mac(secret: &str, user: &str, expiry: u64) -> HmacSha256 {
    // HMAC accepts keys of any length.
    let mut m = HmacSha256::new_from_slice(secret.as_bytes()).expect("hmac takes any key length");
    m.update(b"receipt-token-v1\n");
    m.update(expiry.to_string().as_bytes());
    m.update(b"\n");
    m.update(user.as_bytes());
    m
}

/// A token for `user`, valid until `expiry_unix_secs`.
pub fn make_token(secret: &str, user: &str, expiry_unix_secs: u64) -> String {
    let tag = mac(secret, user, expiry_unix_secs).finalize().into_bytes();
    format!("{expiry_unix_secs}.{}", hex::encode(tag))
}

/// A token for `user`, valid for `ttl_secs` from now.
pub fn token_for(secret: &str, user: &str, ttl_secs: u64) -> String {
    make_token(secret, user, unix_secs().saturating_add(ttl_secs))
}

/// Checks `token` for `user` at time `now_unix_secs`.
pub fn verify_token(secret: &str, user: &str, token: &str, now_unix_secs: u64) -> Result<(), TokenError> {
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    let (exp, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if exp.is_empty() || exp.len() > 20 || !exp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let expiry: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    let tag = hex::decode(tag).map_err(|_| TokenError::Malformed)?;
    // Check the signature first so an attacker learns nothing from the expiry answer.
    mac(secret, user, expiry).verify_slice(&tag).map_err(|_| TokenError::BadSignature)?;
    if expiry <= now_unix_secs {
        return Err(TokenError::Expired);
    }
    Ok(())
}

pub(crate) fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_for_their_user_secret_and_time() {
        let t = make_token("k", "alice", 1000);
        assert_eq!(verify_token("k", "alice", &t, 999), Ok(()));
        assert_eq!(verify_token("k", "alice", &t, 1000), Err(TokenError::Expired));
        assert_eq!(verify_token("k", "bob", &t, 10), Err(TokenError::BadSignature));
        assert_eq!(verify_token("other", "alice", &t, 10), Err(TokenError::BadSignature));
        assert_eq!(verify_token("k", "alice", "", 10), Err(TokenError::Missing));
        assert_eq!(verify_token("k", "alice", "1000", 10), Err(TokenError::Malformed));
        assert_eq!(verify_token("k", "alice", "x.00", 10), Err(TokenError::Malformed));
        assert_eq!(verify_token("k", "alice", "1000.zz", 10), Err(TokenError::Malformed));
        let forged = format!("2000.{}", t.split_once('.').unwrap().1);
        assert_eq!(verify_token("k", "alice", &forged, 10), Err(TokenError::BadSignature));
    }
}
