//! Our own short-lived, signed cookies: the launch in progress (state,
//! nonce, the EHR's endpoints) and the reviewer session minted after the
//! EHR's id_token was verified. Both are HS256 JWTs under keys derived from
//! one server secret, so any replica holding the secret can check them and
//! the HTTP tier stays stateless (DESIGN.md "Horizontal scale"). Neither
//! ever holds an EHR token.
//!
//! The PKCE `code_verifier` (RFC 7636 §4.1) is not in any cookie: it is
//! derived from the launch's random `state` with a keyed hash, so it never
//! reaches the browser, and only the server that can check the launch
//! cookie can recompute it.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::verifier::unix_now;

/// Shortest accepted `smart.session_secret` (256 bits, the HMAC-SHA-256
/// key size; RFC 2104 §3 says shorter keys weaken it).
pub const MIN_SECRET_BYTES: usize = 32;

/// The three keys, each derived from the secret for one purpose so that a
/// cookie of one kind can never pass as another.
pub(crate) struct SessionKeys {
    launch: Vec<u8>,
    session: Vec<u8>,
    pkce: Vec<u8>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys([REDACTED])")
    }
}

/// HMAC-SHA-256 (RFC 2104), as jsonwebtoken computes it for HS256.
fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let sig = jsonwebtoken::crypto::sign(message, &EncodingKey::from_secret(key), Algorithm::HS256)
        .expect("HMAC with a byte key cannot fail");
    URL_SAFE_NO_PAD
        .decode(sig)
        .expect("jsonwebtoken returns base64url")
}

pub(crate) fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

impl SessionKeys {
    /// From the configured secret, or — when none is configured — a random
    /// one for this process only (sessions then end with the process and
    /// work on one replica only; the production profile refuses that).
    pub(crate) fn new(secret: Option<&SecretString>) -> Self {
        let random;
        let secret: &[u8] = match secret {
            Some(s) => s.expose_secret().as_bytes(),
            None => {
                let mut buf = [0u8; 32];
                rand::rng().fill_bytes(&mut buf);
                random = buf;
                &random
            }
        };
        // HKDF-style expansion with one HMAC per label (RFC 5869 §2.3 with
        // a single block): independent keys for independent uses.
        Self {
            launch: hmac(secret, b"oncohooks smart launch cookie v1"),
            session: hmac(secret, b"oncohooks review session cookie v1"),
            pkce: hmac(secret, b"oncohooks pkce code_verifier v1"),
        }
    }

    /// The PKCE code_verifier of a launch: 43 base64url characters of
    /// HMAC(state), within RFC 7636 §4.1's 43..128 unreserved characters.
    pub(crate) fn code_verifier(&self, state: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac(&self.pkce, state.as_bytes()))
    }

    pub(crate) fn sign_launch(&self, claims: &LaunchClaims) -> String {
        sign(claims, &self.launch)
    }

    pub(crate) fn open_launch(&self, cookie: &str) -> Option<LaunchClaims> {
        open(cookie, &self.launch)
    }

    pub(crate) fn sign_session(&self, claims: &SessionClaims) -> String {
        sign(claims, &self.session)
    }

    pub(crate) fn open_session(&self, cookie: &str) -> Option<SessionClaims> {
        open(cookie, &self.session)
    }
}

/// RFC 7636 §4.2: `BASE64URL(SHA256(ASCII(code_verifier)))`.
pub(crate) fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn sign<T: Serialize>(claims: &T, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key),
    )
    .expect("HS256 over serialisable claims cannot fail")
}

/// `None` for a cookie that is not ours, was altered, or has expired.
fn open<T: for<'de> Deserialize<'de>>(cookie: &str, key: &[u8]) -> Option<T> {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.validate_aud = false;
    v.required_spec_claims = ["exp".to_owned()].into_iter().collect();
    jsonwebtoken::decode::<T>(cookie, &DecodingKey::from_secret(key), &v)
        .ok()
        .map(|d| d.claims)
}

/// What the server needs back at `/review/callback`, signed so the
/// browser cannot change it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LaunchClaims {
    /// The random `state` sent to the authorization server.
    pub state: String,
    /// The OpenID Connect `nonce` the id_token must carry.
    pub nonce: String,
    /// The EHR's FHIR base (the launch's `iss`).
    pub fhir: String,
    /// The id_token's expected `iss` (`issuer` of the EHR's configuration).
    pub oidc_issuer: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub redirect_uri: String,
    pub exp: i64,
}

/// A reviewer's session on our side: who (the EHR's `fhirUser`), under
/// which issuer, what they may do here, and the one patient of the launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionClaims {
    pub iss: String,
    pub sub: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

/// `now + d` in Unix seconds.
pub(crate) fn expires_in(d: Duration) -> i64 {
    unix_now().saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(exp: i64) -> LaunchClaims {
        LaunchClaims {
            state: "s".into(),
            nonce: "n".into(),
            fhir: "https://ehr/fhir".into(),
            oidc_issuer: "https://ehr".into(),
            token_endpoint: "https://ehr/token".into(),
            jwks_uri: "https://ehr/jwks".into(),
            redirect_uri: "https://cds/review/callback".into(),
            exp,
        }
    }

    #[test]
    fn cookies_open_only_with_their_own_key_and_before_they_expire() {
        let secret = SecretString::from("x".repeat(MIN_SECRET_BYTES));
        let keys = SessionKeys::new(Some(&secret));
        let c = launch(expires_in(Duration::from_secs(60)));
        let cookie = keys.sign_launch(&c);
        assert_eq!(keys.open_launch(&cookie), Some(c.clone()));
        // A launch cookie is not a session, and another secret opens nothing.
        assert!(keys.open_session(&cookie).is_none());
        let other = SessionKeys::new(Some(&SecretString::from("y".repeat(32))));
        assert!(other.open_launch(&cookie).is_none());
        let expired = keys.sign_launch(&launch(unix_now() - 1));
        assert!(keys.open_launch(&expired).is_none());
        // One flipped character of the payload breaks the signature.
        let mut parts: Vec<String> = cookie.split('.').map(str::to_owned).collect();
        let mut p = parts[1].clone().into_bytes();
        p[3] = if p[3] == b'A' { b'B' } else { b'A' };
        parts[1] = String::from_utf8(p).unwrap();
        assert!(keys.open_launch(&parts.join(".")).is_none());
    }

    #[test]
    fn the_pkce_verifier_is_stable_per_state_and_fits_rfc_7636() {
        let keys = SessionKeys::new(None);
        let v = keys.code_verifier("state-1");
        assert_eq!(v, keys.code_verifier("state-1"));
        assert_ne!(v, keys.code_verifier("state-2"));
        assert_eq!(v.len(), 43);
        assert!(
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        // RFC 7636 Appendix B.
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
