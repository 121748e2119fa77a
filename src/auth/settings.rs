//! The `[auth]` configuration section.
//!
//! Every field has a default, so an empty `[auth]` table is valid: it requires
//! a token on every call and trusts nobody until issuers are listed.

use serde::Deserialize;

/// How CDS Clients are authenticated (CDS Hooks 2.0 §"Trusting CDS Clients").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// When `false`, a request without a token is accepted as anonymous. A
    /// token that *is* sent is still verified in full: a bad token never
    /// degrades to anonymous.
    pub required: bool,
    /// The CDS Clients (JWT issuers) we trust, each with its keys. The spec
    /// says services SHOULD allow-list `iss` and `jku`; this list is that
    /// allow-list.
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// Tolerated clock difference with the CDS Client, applied to `exp`,
    /// `iat`, `nbf` and the lifetime bound.
    pub clock_skew_seconds: u64,
    /// Longest accepted `exp - iat`. CDS Hooks 2.0 sets no bound; we borrow
    /// SMART Backend Services' "no more than five minutes" for client
    /// assertions, which also bounds how long a `jti` must be remembered.
    pub max_token_lifetime_seconds: u64,
    /// How long a JWKS fetched from a `jwks_url` is used before refetching.
    pub jwks_cache_seconds: u64,
    /// Minimum time between two fetches of the same JWKS URL outside the
    /// normal TTL (unknown `kid`, or a failed fetch): a flood of tokens with
    /// random `kid`s must not turn into a flood of requests to the EHR.
    pub jwks_min_refetch_seconds: u64,
    /// Time limit for one JWKS fetch; the hook has ~500 ms in total.
    pub jwks_fetch_timeout_ms: u64,
    /// Most `(iss, jti)` pairs remembered for replay detection. When full of
    /// unexpired entries, new tokens are refused (fail closed) rather than
    /// forgetting a pair that could then be replayed.
    pub replay_cache_size: usize,
    /// Also trust the demo issuer [`crate::auth::DEMO_ISSUER`] with the
    /// public demo key, and allow [`crate::auth::dev_token`]. Never in
    /// production: the demo private key is in the repository.
    pub demo: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            required: true,
            trusted_issuers: Vec::new(),
            clock_skew_seconds: 60,
            max_token_lifetime_seconds: 300,
            jwks_cache_seconds: 300,
            jwks_min_refetch_seconds: 30,
            jwks_fetch_timeout_ms: 2_000,
            replay_cache_size: 100_000,
            demo: false,
        }
    }
}

/// One trusted CDS Client (JWT issuer) and where its public keys come from.
///
/// Exactly one of `jwks_url` and `jwks` must be set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// The exact `iss` claim value (compared byte for byte; a trailing slash
    /// matters).
    pub iss: String,
    /// Where the issuer publishes its JWK Set. Must be `https` (plain `http`
    /// is accepted for loopback hosts only, for tests and local demos). A
    /// token's `jku` header is honoured only when it equals this URL.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The issuer's JWK Set inline (`{"keys": [...]}`), exchanged out of
    /// band as the spec allows when no `jku` is used.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Accepted values of the `tenant` claim; empty means any (or none).
    #[serde(default)]
    pub tenants: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_auth_table_gives_secure_defaults() {
        let settings: AuthSettings = toml::from_str("").expect("empty table parses");
        assert!(settings.required);
        assert!(!settings.demo);
        assert!(settings.trusted_issuers.is_empty());
        assert_eq!(settings.max_token_lifetime_seconds, 300);
        assert_eq!(settings.clock_skew_seconds, 60);
    }

    #[test]
    fn issuers_parse_from_toml() {
        let settings: AuthSettings = toml::from_str(
            r#"
            required = false
            [[trusted_issuers]]
            iss = "https://ehr.example.org"
            jwks_url = "https://ehr.example.org/jwks.json"
            tenants = ["hospital-a"]
            "#,
        )
        .expect("parses");
        assert!(!settings.required);
        assert_eq!(settings.trusted_issuers.len(), 1);
        assert_eq!(settings.trusted_issuers[0].tenants, ["hospital-a"]);
    }

    #[test]
    fn misspelled_key_is_an_error_not_a_silent_default() {
        let err = toml::from_str::<AuthSettings>("requried = false").unwrap_err();
        assert!(err.to_string().contains("requried"), "{err}");
    }
}
