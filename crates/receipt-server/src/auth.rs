//! Login tokens: JSON Web Tokens (RFC 7519), verified with the `jsonwebtoken` crate.
//!
//! - **EdDSA (Ed25519) or ES256** with public keys the server holds (PEM files,
//!   [`TokenConfig::public_keys`]): the app backend signs with the private key, so a stolen server
//!   config cannot mint tokens. With public keys configured, HS256 tokens are refused.
//! - **HS256** with the shared [`ServerConfig::secret`] when no public key is configured (simple
//!   setups, tests, the demo).
//!
//! Claims: `sub` = the user id, `exp` (Unix seconds), and `aud` when [`TokenConfig::audience`] is
//! set. A token is expired once `exp + leeway <= now` ([`TokenConfig::leeway_secs`], default 60 s
//! of clock skew between the minting backend and this server). A `kid` header picks the key of
//! that name (the PEM file's stem); without one every configured key is tried in turn.
//!
//! The signature is checked before the claims, so a forged token learns nothing from the expiry
//! answer. The old `<expiry>.<hex mac>` format is gone (docs/protocol.md, "Tokens").

use std::collections::HashSet;
use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{ServerConfig, TokenConfig};

/// Why a token was refused. Missing and Malformed become code 104, Expired 108, BadSignature 202.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token expired")]
    Expired,
    /// A signature no configured key verifies, an algorithm the server does not take, an
    /// unknown `kid`, another user's token (`sub`) or another audience (`aud`).
    #[error("bad token signature")]
    BadSignature,
}

/// The claims the server reads. Other claims (`iat`, `iss`, ...) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// A key that mints tokens: the shared secret (HS256) or a private key (EdDSA / ES256).
pub struct SigningKey {
    alg: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
}

impl SigningKey {
    /// HS256 with the server's shared secret.
    pub fn secret(secret: &str) -> SigningKey {
        SigningKey { alg: Algorithm::HS256, key: EncodingKey::from_secret(secret.as_bytes()), kid: None }
    }

    /// A PKCS#8 PEM private key: Ed25519 signs EdDSA, P-256 signs ES256.
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, String> {
        if let Ok(key) = EncodingKey::from_ed_pem(pem) {
            return Ok(SigningKey { alg: Algorithm::EdDSA, key, kid: None });
        }
        match EncodingKey::from_ec_pem(pem) {
            Ok(key) => Ok(SigningKey { alg: Algorithm::ES256, key, kid: None }),
            Err(e) => Err(format!("not an Ed25519 or P-256 PKCS#8 private key: {e}")),
        }
    }

    /// Names the key in the tokens' `kid` header (the server picks the public key of that name).
    pub fn with_kid(mut self, kid: impl Into<String>) -> SigningKey {
        self.kid = Some(kid.into());
        self
    }

    /// A token with these claims.
    pub fn mint(&self, claims: &Claims) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).expect("a valid key signs any claims")
    }

    /// A token for `user` expiring at `exp` (Unix seconds), for audience `aud` if given.
    pub fn token(&self, user: &str, exp: u64, aud: Option<&str>) -> String {
        self.mint(&Claims { sub: user.to_string(), exp, aud: aud.map(str::to_string) })
    }
}

/// An HS256 token for `user`, signed with `secret`, expiring at `expiry_unix_secs`.
pub fn make_token(secret: &str, user: &str, expiry_unix_secs: u64) -> String {
    SigningKey::secret(secret).token(user, expiry_unix_secs, None)
}

/// An HS256 token for `user`, signed with `secret`, valid for `ttl_secs` from now.
pub fn token_for(secret: &str, user: &str, ttl_secs: u64) -> String {
    make_token(secret, user, unix_secs().saturating_add(ttl_secs))
}

/// One key that verifies tokens.
struct VerifyKey {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

/// Verifies login tokens with the configured keys (see the module docs).
pub struct Verifier {
    keys: Vec<VerifyKey>,
    leeway_secs: u64,
}

impl Verifier {
    /// HS256 with `secret` only, no audience, no leeway (unit tests).
    pub fn hs256(secret: &str) -> Verifier {
        Verifier::new(vec![(None, Algorithm::HS256, DecodingKey::from_secret(secret.as_bytes()))], None, 0)
    }

    /// The verifier a server config describes: its public keys (read now), else its secret.
    pub fn from_config(config: &ServerConfig) -> Result<Verifier, String> {
        let t: &TokenConfig = &config.tokens;
        let mut keys = Vec::new();
        for path in &t.public_keys {
            let pem = std::fs::read(path).map_err(|e| format!("token public key {}: {e}", path.display()))?;
            let (alg, key) = public_key(&pem).map_err(|e| format!("token public key {}: {e}", path.display()))?;
            keys.push((Some(kid_of(path)), alg, key));
        }
        if keys.is_empty() {
            keys.push((None, Algorithm::HS256, DecodingKey::from_secret(config.secret.as_bytes())));
        }
        Ok(Verifier::new(keys, t.audience.as_deref(), t.leeway_secs))
    }

    fn new(keys: Vec<(Option<String>, Algorithm, DecodingKey)>, audience: Option<&str>, leeway_secs: u64) -> Verifier {
        let keys = keys
            .into_iter()
            .map(|(kid, alg, key)| {
                let mut v = Validation::new(alg);
                // Expiry is checked here after the signature (with our leeway and our `<=`).
                v.validate_exp = false;
                v.required_spec_claims = HashSet::from(["exp".to_string(), "sub".to_string()]);
                match audience {
                    Some(aud) => {
                        v.set_audience(&[aud]);
                        v.required_spec_claims.insert("aud".to_string());
                    }
                    None => v.validate_aud = false,
                }
                VerifyKey { kid, key, validation: v }
            })
            .collect();
        Verifier { keys, leeway_secs }
    }

    /// Checks `token` for `user` at `now_unix_secs`.
    pub fn verify(&self, user: &str, token: &str, now_unix_secs: u64) -> Result<(), TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let mut result = Err(TokenError::BadSignature);
        for k in &self.keys {
            if let (Some(want), Some(kid)) = (&header.kid, &k.kid) {
                if want != kid {
                    continue;
                }
            }
            result = match jsonwebtoken::decode::<Claims>(token, &k.key, &k.validation) {
                Ok(data) => Ok(data.claims),
                Err(e) => Err(match e.kind() {
                    // A token without the configured audience is for another audience.
                    ErrorKind::MissingRequiredClaim(c) if c == "aud" => TokenError::BadSignature,
                    ErrorKind::InvalidToken
                    | ErrorKind::Base64(_)
                    | ErrorKind::Json(_)
                    | ErrorKind::Utf8(_)
                    | ErrorKind::MissingRequiredClaim(_)
                    | ErrorKind::InvalidClaimFormat(_) => TokenError::Malformed,
                    _ => TokenError::BadSignature,
                }),
            };
            if !matches!(result, Err(TokenError::BadSignature)) {
                break;
            }
        }
        let claims = result?;
        if claims.sub != user {
            return Err(TokenError::BadSignature);
        }
        if claims.exp.saturating_add(self.leeway_secs) <= now_unix_secs {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

/// A PEM public key: Ed25519 verifies EdDSA, P-256 verifies ES256.
fn public_key(pem: &[u8]) -> Result<(Algorithm, DecodingKey), String> {
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Ok((Algorithm::EdDSA, k));
    }
    DecodingKey::from_ec_pem(pem).map(|k| (Algorithm::ES256, k)).map_err(|e| format!("not an Ed25519 or P-256 public key: {e}"))
}

/// A public key file's `kid`: its file name without the extension (`keys/2026-12.pem` -> `2026-12`).
pub fn kid_of(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

pub(crate) fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Throwaway keys made with `openssl genpkey -algorithm ed25519` / `-algorithm EC -pkeyopt
    // ec_paramgen_curve:P-256` and `openssl pkey -pubout`; used nowhere else.
    const ED_PRIVATE: &str =
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHDelX11YFyahSlYs8ALMIgB+oCRDov1HQhtNhskiR2R\n-----END PRIVATE KEY-----\n";
    const ED_PUBLIC: &str =
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEARALKjib75NslYZOejE7yS7Y44QA5Vm80Mouk+l/yZSE=\n-----END PUBLIC KEY-----\n";

    fn verifier_with(keys: &[(&str, &str)], aud: Option<&str>, leeway: u64) -> Verifier {
        let keys = keys.iter().map(|(kid, pem)| (Some(kid.to_string()), public_key(pem.as_bytes()).unwrap())).map(|(k, (a, d))| (k, a, d));
        Verifier::new(keys.collect(), aud, leeway)
    }

    #[test]
    fn hs256_tokens_verify_only_for_their_user_secret_and_time() {
        let v = Verifier::hs256("k");
        let t = make_token("k", "alice", 1000);
        assert_eq!(t.split('.').count(), 3, "a JWT: header.payload.signature");
        assert_eq!(v.verify("alice", &t, 999), Ok(()));
        assert_eq!(v.verify("alice", &t, 1000), Err(TokenError::Expired));
        assert_eq!(v.verify("bob", &t, 10), Err(TokenError::BadSignature));
        assert_eq!(Verifier::hs256("other").verify("alice", &t, 10), Err(TokenError::BadSignature));
        assert_eq!(v.verify("alice", "", 10), Err(TokenError::Missing));
        assert_eq!(v.verify("alice", "1000.abcdef", 10), Err(TokenError::Malformed), "the old format is gone");
        assert_eq!(v.verify("alice", "not-a-token", 10), Err(TokenError::Malformed));
        // A changed payload (a later expiry) breaks the signature.
        let later = make_token("k", "alice", 2000);
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], later.split('.').nth(1).unwrap(), parts[2]);
        assert_eq!(v.verify("alice", &forged, 1500), Err(TokenError::BadSignature));
        // No `sub` (or no `exp`): malformed.
        #[derive(Serialize)]
        struct NoSub {
            exp: u64,
        }
        let no_sub = jsonwebtoken::encode(&Header::default(), &NoSub { exp: 2000 }, &EncodingKey::from_secret(b"k")).unwrap();
        assert_eq!(v.verify("alice", &no_sub, 10), Err(TokenError::Malformed));
    }

    #[test]
    fn leeway_accepts_a_token_that_expired_within_it() {
        let v = Verifier::new(vec![(None, Algorithm::HS256, DecodingKey::from_secret(b"k"))], None, 60);
        let t = make_token("k", "alice", 1000);
        assert_eq!(v.verify("alice", &t, 1059), Ok(()));
        assert_eq!(v.verify("alice", &t, 1060), Err(TokenError::Expired));
    }

    #[test]
    fn eddsa_tokens_verify_with_the_public_key_and_hs256_is_then_refused() {
        let signer = SigningKey::from_pem(ED_PRIVATE.as_bytes()).unwrap().with_kid("k1");
        let v = verifier_with(&[("k1", ED_PUBLIC)], None, 0);
        let t = signer.token("alice", 2000, None);
        assert_eq!(v.verify("alice", &t, 10), Ok(()));
        assert_eq!(v.verify("alice", &t, 2000), Err(TokenError::Expired));
        assert_eq!(v.verify("bob", &t, 10), Err(TokenError::BadSignature));
        // Whoever holds only the server's config (no private key) cannot mint: an HS256 token
        // signed with anything, the public key's bytes included, is refused.
        assert_eq!(v.verify("alice", &make_token(ED_PUBLIC, "alice", 2000), 10), Err(TokenError::BadSignature));
        // An unknown kid names no key.
        let other_kid = SigningKey::from_pem(ED_PRIVATE.as_bytes()).unwrap().with_kid("k0").token("alice", 2000, None);
        assert_eq!(v.verify("alice", &other_kid, 10), Err(TokenError::BadSignature));
        // Without a kid every key is tried.
        let no_kid = SigningKey::from_pem(ED_PRIVATE.as_bytes()).unwrap().token("alice", 2000, None);
        assert_eq!(v.verify("alice", &no_kid, 10), Ok(()));
    }

    #[test]
    fn a_configured_audience_is_required() {
        let signer = SigningKey::from_pem(ED_PRIVATE.as_bytes()).unwrap();
        let v = verifier_with(&[("k1", ED_PUBLIC)], Some("chat.example"), 0);
        assert_eq!(v.verify("alice", &signer.token("alice", 2000, Some("chat.example")), 10), Ok(()));
        assert_eq!(v.verify("alice", &signer.token("alice", 2000, Some("other")), 10), Err(TokenError::BadSignature));
        assert_eq!(v.verify("alice", &signer.token("alice", 2000, None), 10), Err(TokenError::BadSignature));
        // Without a configured audience, a token's `aud` is not checked.
        let open = verifier_with(&[("k1", ED_PUBLIC)], None, 0);
        assert_eq!(open.verify("alice", &signer.token("alice", 2000, Some("other")), 10), Ok(()));
    }
}
