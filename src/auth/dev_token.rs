//! Development tokens signed with the public demo key.
//!
//! For local demos and the CLI: `auth.demo = true` trusts [`DEMO_ISSUER`]
//! with the key pair in `fixtures/keys/demo-*`, and [`dev_token`] signs
//! tokens as that issuer. The private key is in the repository, so anyone
//! can mint such tokens: demo mode must never be enabled in production.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::error::AuthError;
use super::settings::AuthSettings;

/// The `iss` of development tokens. `.invalid` (RFC 2606) can never resolve.
pub const DEMO_ISSUER: &str = "https://ehr.oncohooks.invalid/demo";
/// The `sub` of development tokens.
pub const DEV_CLIENT_SUB: &str = "oncohooks-dev-client";
/// `kid` of the demo key in `fixtures/keys/demo-jwks.json`.
pub(crate) const DEMO_KID: &str = "oncohooks-demo-es384-1";
/// Public JWK Set trusted for [`DEMO_ISSUER`] in demo mode.
pub(crate) const DEMO_JWKS: &str = include_str!("../../fixtures/keys/demo-jwks.json");
/// Matching private key (PKCS#8). Public by design: demo only.
const DEMO_PRIVATE_KEY_PEM: &str = include_str!("../../fixtures/keys/demo-es384.pem");
/// Same five-minute bound as the verifier's default.
const MAX_DEV_LIFETIME_SECONDS: u64 = 300;

/// Sign a fresh ES384 token as the demo CDS Client for audience `aud` (the
/// full URL of the endpoint it will be sent to), valid for `lifetime`.
///
/// Refused unless `settings.demo` is true. `lifetime` must be at least one
/// second and at most five minutes (and within
/// `settings.max_token_lifetime_seconds`).
pub fn dev_token(
    settings: &AuthSettings,
    aud: &str,
    lifetime: Duration,
) -> Result<String, AuthError> {
    if !settings.demo {
        return Err(AuthError::DemoDisabled);
    }
    let max = MAX_DEV_LIFETIME_SECONDS.min(settings.max_token_lifetime_seconds);
    let now = issued_at(lifetime, max)?;
    sign_demo(&json!({
        "iss": DEMO_ISSUER,
        "sub": DEV_CLIENT_SUB,
        "aud": aud,
        "iat": now,
        "exp": now + lifetime.as_secs(),
        "jti": uuid::Uuid::new_v4().to_string(),
    }))
}

/// The `iat` of a demo token valid for `lifetime`, which must be between one
/// second and `max` seconds.
fn issued_at(lifetime: Duration, max: u64) -> Result<u64, AuthError> {
    if lifetime < Duration::from_secs(1) || lifetime > Duration::from_secs(max) {
        return Err(AuthError::DevTokenLifetime {
            requested: lifetime.as_secs(),
            max,
        });
    }
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| AuthError::Signing(format!("system clock before 1970: {e}")))?
        .as_secs())
}

/// Longest demo user token: a working session in the review app.
pub const MAX_DEV_ACCESS_LIFETIME_SECONDS: u64 = 3600;

/// Sign a demo *access token* for a user (`sub`) with `scopes`, as
/// [`super::access::DEMO_USER_ISSUER`] for audience
/// [`super::access::DEMO_AUDIENCE`]: what an OAuth server would issue to
/// the review app or an informatics client. Refused unless `access.demo`.
pub fn dev_access_token(
    settings: &super::access::AccessSettings,
    sub: &str,
    scopes: &[String],
    lifetime: Duration,
) -> Result<String, AuthError> {
    if !settings.demo {
        return Err(AuthError::DemoDisabled);
    }
    let max = MAX_DEV_ACCESS_LIFETIME_SECONDS.min(settings.max_token_lifetime_seconds);
    let now = issued_at(lifetime, max)?;
    sign_demo(&json!({
        "iss": super::access::DEMO_USER_ISSUER,
        "sub": sub,
        "aud": super::access::DEMO_AUDIENCE,
        "iat": now,
        "exp": now + lifetime.as_secs(),
        "jti": uuid::Uuid::new_v4().to_string(),
        "scope": scopes.join(" "),
    }))
}

/// Sign arbitrary claims with the demo key (tests build expired tokens
/// with it).
pub fn sign_demo(claims: &serde_json::Value) -> Result<String, AuthError> {
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some(DEMO_KID.to_owned());
    let key = EncodingKey::from_ec_pem(DEMO_PRIVATE_KEY_PEM.as_bytes())
        .map_err(|e| AuthError::Signing(format!("demo key: {e}")))?;
    jsonwebtoken::encode(&header, claims, &key).map_err(|e| AuthError::Signing(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{CdsClient, ClientVerifier};

    const AUD: &str = "http://localhost:8080/cds-services/cachexia";

    fn demo_settings() -> AuthSettings {
        AuthSettings {
            demo: true,
            ..AuthSettings::default()
        }
    }

    #[test]
    fn refused_when_demo_is_off() {
        let err = dev_token(&AuthSettings::default(), AUD, Duration::from_secs(60)).unwrap_err();
        assert!(matches!(err, AuthError::DemoDisabled), "{err:?}");
    }

    #[test]
    fn lifetime_is_bounded() {
        for bad in [
            Duration::ZERO,
            Duration::from_secs(301),
            Duration::from_secs(3600),
        ] {
            let err = dev_token(&demo_settings(), AUD, bad).unwrap_err();
            assert!(matches!(err, AuthError::DevTokenLifetime { .. }), "{err:?}");
        }
    }

    #[test]
    fn demo_kid_is_the_one_in_the_published_jwks() {
        let jwks: serde_json::Value = serde_json::from_str(DEMO_JWKS).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], DEMO_KID);
        assert_eq!(jwks["keys"][0]["crv"], "P-384");
    }

    #[tokio::test]
    async fn verifies_when_demo_is_on() {
        let settings = demo_settings();
        let token = dev_token(&settings, AUD, Duration::from_secs(120)).unwrap();
        let verifier = ClientVerifier::new(&settings, reqwest::Client::new()).unwrap();
        let client = verifier.verify(Some(&token), &[AUD]).await.unwrap();
        let CdsClient::Verified(client) = client else {
            panic!("expected a verified client, got {client:?}");
        };
        assert_eq!(client.iss, DEMO_ISSUER);
        assert_eq!(client.sub.as_deref(), Some(DEV_CLIENT_SUB));
        assert_eq!(client.kid, DEMO_KID);
        // Fresh jti each time: a second token is not a replay.
        let second = dev_token(&settings, AUD, Duration::from_secs(120)).unwrap();
        assert!(verifier.verify(Some(&second), &[AUD]).await.is_ok());
    }

    #[tokio::test]
    async fn demo_access_tokens_verify_with_their_scopes_and_expire() {
        use crate::auth::access::{AccessSettings, AccessVerifier, DEMO_AUDIENCE};
        let settings = AccessSettings {
            demo: true,
            audience: vec![DEMO_AUDIENCE.into()],
            ..AccessSettings::default()
        };
        let v = AccessVerifier::new(&settings, reqwest::Client::new()).unwrap();
        let scopes = vec![
            "audit.read".to_string(),
            "user/RiskAssessment.rs".to_string(),
        ];
        let t = dev_access_token(&settings, "dr-demo", &scopes, Duration::from_secs(60)).unwrap();
        let p = v.verify(Some(&t)).await.unwrap();
        assert_eq!(p.sub, "dr-demo");
        assert_eq!(p.scopes, scopes);
        // Reusable: access tokens are not single-use.
        assert!(v.verify(Some(&t)).await.is_ok());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let expired = sign_demo(&json!({
            "iss": crate::auth::access::DEMO_USER_ISSUER, "sub": "x", "aud": DEMO_AUDIENCE,
            "iat": now - 600, "exp": now - 300, "scope": "audit.read"
        }))
        .unwrap();
        let err = v.verify(Some(&expired)).await.unwrap_err();
        assert_eq!(err.code(), "invalid_token");
        assert!(err.to_string().contains("expired"), "{err}");
        let wrong_aud = sign_demo(&json!({
            "iss": crate::auth::access::DEMO_USER_ISSUER, "sub": "x", "aud": "other",
            "iat": now, "exp": now + 60, "scope": "audit.read"
        }))
        .unwrap();
        assert_eq!(v.verify(Some(&wrong_aud)).await.unwrap_err().status(), 401);
        // A CDS client dev token is not an access token here.
        let cds = dev_token(&demo_settings(), AUD, Duration::from_secs(60)).unwrap();
        assert!(v.verify(Some(&cds)).await.is_err());
    }

    #[tokio::test]
    async fn demo_tokens_are_untrusted_when_demo_is_off_on_the_verifier() {
        let token = dev_token(&demo_settings(), AUD, Duration::from_secs(60)).unwrap();
        let verifier =
            ClientVerifier::new(&AuthSettings::default(), reqwest::Client::new()).unwrap();
        let err = verifier.verify(Some(&token), &[AUD]).await.unwrap_err();
        assert!(matches!(err, AuthError::UntrustedIssuer { .. }), "{err:?}");
    }
}
