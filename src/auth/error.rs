//! Why a CDS Client was not authenticated.
//!
//! The reasons are precise so the HTTP edge can log them; the response to the
//! client stays a bare 401. No variant ever carries the token. Values copied
//! from an unverified token (iss, kid, jku, alg) are clipped so a hostile
//! token cannot flood the logs.

/// Everything that can go wrong while configuring or running client
/// authentication.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    // --- configuration (at start-up) ---
    /// The `[auth]` settings are inconsistent.
    #[error("invalid [auth] configuration: {0}")]
    Config(String),

    // --- the Authorization header ---
    /// No token was sent and `auth.required` is true.
    #[error("no bearer token (CDS Hooks 2.0 requires `Authorization: Bearer <JWT>` on every call)")]
    MissingToken,
    /// An Authorization header that is not `Bearer <token>`.
    #[error("the Authorization header does not use the Bearer scheme")]
    NotBearer,
    /// Longer than any sane CDS Client JWT.
    #[error("token is {len} bytes, more than the {max} accepted")]
    TokenTooLarge { len: usize, max: usize },
    /// Not a compact JWS, or a part that does not decode.
    #[error("malformed token: {0}")]
    Malformed(String),

    // --- the JOSE header ---
    /// Anything but ES384/RS384, notably `none` and HMAC (CDS Hooks 2.0
    /// §"JWT Signing Algorithm"); for SMART id_tokens also RS256/ES256.
    #[error(
        "signing algorithm {alg:?} is not accepted (ES384 and RS384; for an EHR's id_token also RS256 and ES256)"
    )]
    DisallowedAlgorithm { alg: String },
    /// `typ` present and not `JWT`.
    #[error("header typ {typ:?} is not \"JWT\"")]
    WrongType { typ: String },
    /// `kid` is REQUIRED by CDS Hooks 2.0.
    #[error("header has no kid")]
    MissingKid,
    /// A `crit` header names extensions we do not implement (RFC 7515 §4.1.11).
    #[error("header lists critical extensions {0:?}, none of which are supported")]
    UnsupportedCritical(String),

    // --- issuer and keys ---
    /// `iss` is not in `auth.trusted_issuers`.
    #[error("issuer {iss:?} is not trusted")]
    UntrustedIssuer { iss: String },
    /// `jku` is not the issuer's configured `jwks_url`; it was not fetched.
    #[error("jku {jku:?} is not the configured JWKS URL of issuer {iss:?}; not fetched")]
    UntrustedJku { iss: String, jku: String },
    /// No key with this `kid` in the issuer's JWK Set (after one refetch, if
    /// the rate limit allowed one).
    #[error("issuer {iss:?} has no key with kid {kid:?}")]
    UnknownKid { iss: String, kid: String },
    /// The JWK cannot verify this algorithm (wrong kty, wrong curve, JWK
    /// `alg` differs, RSA modulus too short).
    #[error("key {kid:?} does not fit algorithm {alg}: {reason}")]
    KeyAlgorithmMismatch {
        kid: String,
        alg: &'static str,
        reason: String,
    },
    /// The signature does not verify with the issuer's key.
    #[error("signature does not verify with key {kid:?} of issuer {iss:?}")]
    BadSignature { iss: String, kid: String },
    /// Fetching the issuer's JWK Set failed.
    #[error("could not fetch JWKS from {url}: {reason}")]
    JwksFetch { url: String, reason: String },
    /// A JWK Set (inline or fetched) that cannot be used.
    #[error("unusable JWKS from {source_name}: {reason}")]
    InvalidJwks { source_name: String, reason: String },
    /// A recent fetch failed and the rate limit forbids another one yet.
    #[error(
        "JWKS at {url} is unavailable (last fetch failed; next attempt after the rate-limit interval)"
    )]
    JwksUnavailable { url: String },

    // --- claims ---
    /// A REQUIRED claim is absent.
    #[error("claim {0} is missing")]
    MissingClaim(&'static str),
    /// `aud` does not name the endpoint being called.
    #[error("audience {got:?} does not contain the called endpoint {expected:?}")]
    WrongAudience {
        got: Vec<String>,
        expected: Vec<String>,
    },
    /// `exp` (plus skew) is in the past.
    #[error("token expired at {exp} (now {now}, skew {skew}s)")]
    Expired { exp: i64, now: i64, skew: u64 },
    /// `iat` (minus skew) is in the future.
    #[error("token issued in the future at {iat} (now {now}, skew {skew}s)")]
    IssuedInFuture { iat: i64, now: i64, skew: u64 },
    /// `nbf` (minus skew) is in the future.
    #[error("token not valid before {nbf} (now {now}, skew {skew}s)")]
    NotYetValid { nbf: i64, now: i64, skew: u64 },
    /// `exp - iat` is longer than allowed (or not positive).
    #[error("token lifetime {lifetime}s is outside 1..={max}s")]
    BadLifetime { lifetime: i64, max: u64 },
    /// This `(iss, jti)` was already accepted and has not expired.
    #[error("replayed token: jti {jti:?} of issuer {iss:?} was already used")]
    Replayed { iss: String, jti: String },
    /// The replay cache is full of unexpired entries (fail closed).
    #[error("replay cache is full ({capacity} unexpired entries); token refused")]
    ReplayCacheFull { capacity: usize },
    /// `tenant` is not in the issuer's allow-list.
    #[error("tenant {tenant:?} is not allowed for issuer {iss:?}")]
    TenantNotAllowed { iss: String, tenant: Option<String> },

    // --- development tokens ---
    /// `dev_token` while `auth.demo` is false.
    #[error("development tokens need `auth.demo = true` (never in production)")]
    DemoDisabled,
    /// Requested dev-token lifetime is zero or above the limit.
    #[error("development token lifetime {requested}s is outside 1..={max}s")]
    DevTokenLifetime { requested: u64, max: u64 },
    /// Signing a development token failed.
    #[error("could not sign development token: {0}")]
    Signing(String),
}

impl AuthError {
    /// True when the failure is on our side or the issuer's infrastructure
    /// (JWKS unreachable, replay cache full), not a bad token: the HTTP edge
    /// may log these louder, and alerting should watch them.
    pub fn is_infrastructure(&self) -> bool {
        matches!(
            self,
            Self::JwksFetch { .. }
                | Self::JwksUnavailable { .. }
                | Self::InvalidJwks { .. }
                | Self::ReplayCacheFull { .. }
                | Self::Config(_)
                | Self::Signing(_)
        )
    }
}

/// Longest piece of an unverified token value kept in an error.
const CLIP: usize = 120;

/// Cut an untrusted string to a loggable length (on a char boundary).
pub(crate) fn clip(value: &str) -> String {
    match value.char_indices().nth(CLIP) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_values_and_cuts_long_ones_on_char_boundaries() {
        assert_eq!(clip("kid-1"), "kid-1");
        let long = "é".repeat(500);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), CLIP + 1);
        assert!(clipped.ends_with('…'));
    }
}
