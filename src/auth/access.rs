//! Access tokens of *people and systems reading our outputs* (the FHIR
//! RiskAssessment endpoints, the audit API, the review app, the dashboard),
//! as opposed to the CDS Client JWTs of [`super::ClientVerifier`].
//!
//! They are OAuth 2.0 bearer access tokens in JWT form (RFC 9068) from a
//! configured issuer, checked with the same machinery as CDS Client JWTs
//! (allow-listed issuers, JWKS inline or fetched from the configured URL with
//! the cache and rate limit of `jwks`, ES384/RS384 only, `crv`/`alg` checks).
//! The rules differ where access tokens differ: `aud` is this resource
//! server's configured audience rather than a URL, `jti` is optional and not
//! single-use (a token is reused until it expires), lifetimes are longer, and
//! `scope` (RFC 8693 §4.2, space-separated) or `scp` (array) grants access.
//!
//! Scopes: `audit.read`, `audit.export`, `audit.write` (outcomes),
//! `review.write`, and SMART App Launch scopes for the FHIR endpoints:
//! v1 `user/RiskAssessment.read`, `user/*.read` and v2
//! `user/RiskAssessment.rs` (`r` read, `s` search), also with `system/`
//! (SMART Backend Services). Patient-level (`patient/…`) and restricted
//! (`…?param=…`) scopes are not granted: we cannot enforce them.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::dev_token::DEMO_JWKS;
use super::error::{AuthError, clip};
use super::jwks::{FetchPolicy, RemoteJwks, parse_jwks_url};
use super::settings::TrustedIssuer;
use super::verifier::{CompactJws, KeySource, inline_keys, unix_now};

/// Issuer of the demo user tokens (`oncohooks dev-token --scope …`), signed
/// with the public demo key: demo profile only.
pub const DEMO_USER_ISSUER: &str = "https://idp.oncohooks.invalid/demo";
/// Audience of the demo user tokens (the demo profile's `access.audience`).
pub const DEMO_AUDIENCE: &str = "oncohooks";

/// The `[access]` configuration section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessSettings {
    /// OAuth authorization servers whose access tokens we accept (`iss` and
    /// its JWKS, inline or by URL; `tenants` is not used here).
    pub issuers: Vec<TrustedIssuer>,
    /// Accepted `aud` values: this resource server's identifier(s) at the
    /// authorization server. Required when issuers are listed (RFC 9068
    /// §4: a token for another resource server must not work here).
    pub audience: Vec<String>,
    pub clock_skew_seconds: u64,
    /// Longest accepted `exp - iat` (when `iat` is sent).
    pub max_token_lifetime_seconds: u64,
    pub jwks_cache_seconds: u64,
    pub jwks_min_refetch_seconds: u64,
    pub jwks_fetch_timeout_ms: u64,
    /// Trust [`DEMO_USER_ISSUER`] with the public demo key. Never in production.
    pub demo: bool,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            audience: Vec::new(),
            clock_skew_seconds: 60,
            max_token_lifetime_seconds: 12 * 3600,
            jwks_cache_seconds: 300,
            jwks_min_refetch_seconds: 30,
            jwks_fetch_timeout_ms: 2_000,
            demo: false,
        }
    }
}

/// Why a request was refused. `status()` is 401 or 403 (RFC 6750 §3.1).
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no bearer token: send `Authorization: Bearer <access token>`")]
    Missing,
    #[error("the access token has expired")]
    Expired,
    #[error("invalid access token: {0}")]
    Invalid(String),
    #[error("the access token lacks the scope this needs: one of {needed}")]
    InsufficientScope { needed: String },
}

impl AccessError {
    pub fn status(&self) -> u16 {
        match self {
            AccessError::InsufficientScope { .. } => 403,
            _ => 401,
        }
    }

    /// RFC 6750 §3.1 error code.
    pub fn code(&self) -> &'static str {
        match self {
            AccessError::Missing => "invalid_request",
            AccessError::Expired | AccessError::Invalid(_) => "invalid_token",
            AccessError::InsufficientScope { .. } => "insufficient_scope",
        }
    }

    fn from_auth(e: AuthError) -> Self {
        match e {
            AuthError::Expired { .. } => AccessError::Expired,
            AuthError::MissingToken => AccessError::Missing,
            other => AccessError::Invalid(other.to_string()),
        }
    }
}

/// A verified access token's identity and grants. Holds nothing replayable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub iss: String,
    pub sub: String,
    pub scopes: Vec<String>,
    /// Set for a reviewer session from a SMART EHR launch: the patient in
    /// the launch context, the only patient this session may see
    /// (`auth::smart`). `None`: no patient restriction (access tokens).
    pub patient: Option<String>,
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A plain scope such as `audit.read`.
    Scope(&'static str),
    /// SMART access to a FHIR resource type: `'r'` read, `'s'` search.
    Fhir {
        resource: &'static str,
        interaction: char,
    },
}

impl Need {
    fn describe(self) -> String {
        match self {
            Need::Scope(s) => s.to_owned(),
            Need::Fhir {
                resource,
                interaction,
            } => format!("user/{resource}.read (or .{interaction}, user/*.read, system/…)"),
        }
    }
}

impl Principal {
    /// Whether this principal may see data about `patient_id`.
    pub fn may_see_patient(&self, patient_id: &str) -> bool {
        self.patient.as_deref().is_none_or(|p| p == patient_id)
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether a SMART scope grants `interaction` (`r`, `s`, `c`, `u`, `d`)
    /// on `resource` (SMART App Launch 2.0 §"Scopes for requesting clinical
    /// data"; v1 `read`/`write`/`*` map onto `rs`/`cud`/`cruds`).
    pub fn smart_allows(&self, resource: &str, interaction: char) -> bool {
        self.scopes
            .iter()
            .any(|s| smart_scope_allows(s, resource, interaction))
    }

    fn satisfies(&self, need: Need) -> bool {
        match need {
            Need::Scope(s) => self.has_scope(s),
            Need::Fhir {
                resource,
                interaction,
            } => self.smart_allows(resource, interaction),
        }
    }

    /// `Ok` when any of `needs` is met, else 403 naming them.
    pub fn require(&self, needs: &[Need]) -> Result<(), AccessError> {
        if needs.iter().any(|n| self.satisfies(*n)) {
            Ok(())
        } else {
            Err(AccessError::InsufficientScope {
                needed: needs
                    .iter()
                    .map(|n| n.describe())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

fn smart_scope_allows(scope: &str, resource: &str, interaction: char) -> bool {
    let Some((context, rest)) = scope.split_once('/') else {
        return false;
    };
    if context != "user" && context != "system" {
        return false;
    }
    // A restricted scope (`…?category=…`) narrows what it grants in ways we
    // do not evaluate: grant nothing rather than everything.
    if rest.contains('?') {
        return false;
    }
    let Some((ty, perms)) = rest.split_once('.') else {
        return false;
    };
    if ty != resource && ty != "*" {
        return false;
    }
    let granted = match perms {
        "read" => "rs",
        "write" => "cud",
        "*" => "cruds",
        // v2: a non-empty subset of c, r, u, d, s in that order.
        p if !p.is_empty() && p.chars().all(|c| "cruds".contains(c)) => p,
        _ => "",
    };
    granted.contains(interaction)
}

/// Verifies access tokens. Cheap to clone.
#[derive(Clone)]
pub struct AccessVerifier {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    issuers: HashMap<String, KeySource>,
    audience: Vec<String>,
    skew: i64,
    max_lifetime: i64,
}

impl std::fmt::Debug for AccessVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut iss: Vec<&str> = self.inner.issuers.keys().map(String::as_str).collect();
        iss.sort_unstable();
        f.debug_struct("AccessVerifier")
            .field("issuers", &iss)
            .field("audience", &self.inner.audience)
            .finish()
    }
}

impl AccessVerifier {
    pub fn new(settings: &AccessSettings, http: reqwest::Client) -> Result<Self, AuthError> {
        let config = |m: String| AuthError::Config(format!("[access] {m}"));
        if settings.jwks_cache_seconds < settings.jwks_min_refetch_seconds {
            return Err(config(
                "jwks_cache_seconds must not be shorter than jwks_min_refetch_seconds".into(),
            ));
        }
        let fetch = FetchPolicy {
            ttl: Duration::from_secs(settings.jwks_cache_seconds),
            min_refetch: Duration::from_secs(settings.jwks_min_refetch_seconds),
            timeout: Duration::from_millis(settings.jwks_fetch_timeout_ms.max(1)),
        };
        let demo = settings.demo.then(|| TrustedIssuer {
            iss: DEMO_USER_ISSUER.to_owned(),
            jwks: serde_json::from_str(DEMO_JWKS).ok(),
            ..TrustedIssuer::default()
        });
        let mut issuers = HashMap::new();
        for t in settings.issuers.iter().chain(demo.as_ref()) {
            if t.iss.is_empty() {
                return Err(config("an issuer has an empty iss".into()));
            }
            let keys = match (&t.jwks_url, &t.jwks) {
                (Some(url), None) => KeySource::Remote(RemoteJwks::new(
                    parse_jwks_url(&t.iss, url)?,
                    http.clone(),
                    fetch,
                )),
                (None, Some(j)) => KeySource::Inline(inline_keys(&t.iss, j)?),
                _ => {
                    return Err(config(format!(
                        "issuer {:?}: set exactly one of jwks_url and jwks",
                        t.iss
                    )));
                }
            };
            if issuers.insert(t.iss.clone(), keys).is_some() {
                return Err(config(format!("issuer {:?} is listed twice", t.iss)));
            }
        }
        if !issuers.is_empty() && settings.audience.is_empty() {
            return Err(config(
                "audience is empty: list this server's identifier(s) at the authorization server"
                    .into(),
            ));
        }
        let secs = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(Self {
            inner: std::sync::Arc::new(Inner {
                issuers,
                audience: settings.audience.clone(),
                skew: secs(settings.clock_skew_seconds),
                max_lifetime: secs(settings.max_token_lifetime_seconds),
            }),
        })
    }

    /// Verify a bearer token (`None`: no Authorization header).
    pub async fn verify(&self, token: Option<&str>) -> Result<Principal, AccessError> {
        let token = token.ok_or(AccessError::Missing)?;
        self.verify_inner(token)
            .await
            .map_err(AccessError::from_auth)
    }

    async fn verify_inner(&self, token: &str) -> Result<Principal, AuthError> {
        let jws = CompactJws::parse(token)?;
        let header_json = jws.header()?;
        let header = header_json.checked()?;
        let claims = jws.claims()?;
        let iss = claims
            .string("iss")?
            .ok_or(AuthError::MissingClaim("iss"))?;
        let keys = self
            .inner
            .issuers
            .get(iss)
            .ok_or_else(|| AuthError::UntrustedIssuer { iss: clip(iss) })?;
        keys.verify(iss, &header, &jws).await?;

        let now = unix_now();
        let skew = self.inner.skew;
        let aud = claims.audience()?;
        if !aud
            .iter()
            .any(|a| self.inner.audience.iter().any(|x| x == a))
        {
            return Err(AuthError::WrongAudience {
                got: aud.iter().take(5).map(|a| clip(a)).collect(),
                expected: self.inner.audience.clone(),
            });
        }
        let exp = claims
            .seconds("exp")?
            .ok_or(AuthError::MissingClaim("exp"))?;
        if exp.saturating_add(skew) < now {
            return Err(AuthError::Expired {
                exp,
                now,
                skew: skew.unsigned_abs(),
            });
        }
        if let Some(nbf) = claims.seconds("nbf")?
            && nbf.saturating_sub(skew) > now
        {
            return Err(AuthError::NotYetValid {
                nbf,
                now,
                skew: skew.unsigned_abs(),
            });
        }
        if let Some(iat) = claims.seconds("iat")? {
            if iat.saturating_sub(skew) > now {
                return Err(AuthError::IssuedInFuture {
                    iat,
                    now,
                    skew: skew.unsigned_abs(),
                });
            }
            let lifetime = exp.saturating_sub(iat);
            let max = self.inner.max_lifetime.saturating_add(skew);
            if lifetime <= 0 || lifetime > max {
                return Err(AuthError::BadLifetime {
                    lifetime,
                    max: max.unsigned_abs(),
                });
            }
        }
        let sub = claims
            .string("sub")?
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::MissingClaim("sub"))?;
        Ok(Principal {
            iss: iss.to_owned(),
            sub: clip(sub),
            scopes: scopes(&claims.0),
            patient: None,
        })
    }
}

/// `scope` (space-separated string, RFC 8693 §4.2 / RFC 9068 §2.2.3) or
/// `scp` (array of strings, common in practice).
fn scopes(claims: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(Value::String(s)) = claims.get("scope") {
        out.extend(s.split_whitespace().map(str::to_owned));
    }
    if let Some(Value::Array(a)) = claims.get("scp") {
        out.extend(a.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    out.truncate(256);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(scopes: &[&str]) -> Principal {
        Principal {
            iss: "i".into(),
            sub: "s".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            patient: None,
        }
    }

    #[test]
    fn smart_v1_and_v2_scopes_grant_read_and_search() {
        for s in [
            "user/RiskAssessment.read",
            "user/RiskAssessment.rs",
            "user/*.read",
            "system/RiskAssessment.cruds",
            "user/*.*",
        ] {
            assert!(p(&[s]).smart_allows("RiskAssessment", 'r'), "{s}");
            assert!(p(&[s]).smart_allows("RiskAssessment", 's'), "{s}");
        }
        assert!(p(&["user/RiskAssessment.r"]).smart_allows("RiskAssessment", 'r'));
        assert!(!p(&["user/RiskAssessment.r"]).smart_allows("RiskAssessment", 's'));
    }

    #[test]
    fn other_types_patient_and_restricted_scopes_grant_nothing() {
        for s in [
            "user/Observation.read",
            "patient/RiskAssessment.read",
            "user/RiskAssessment.rs?subject=Patient/1",
            "user/RiskAssessment.write",
            "RiskAssessment.read",
            "audit.read",
        ] {
            assert!(!p(&[s]).smart_allows("RiskAssessment", 'r'), "{s}");
        }
    }

    #[test]
    fn require_names_the_missing_scopes() {
        let err = p(&["audit.read"])
            .require(&[Need::Scope("audit.export")])
            .unwrap_err();
        assert_eq!(err.status(), 403);
        assert!(err.to_string().contains("audit.export"));
        assert!(
            p(&["audit.read", "x"])
                .require(&[Need::Scope("audit.read")])
                .is_ok()
        );
    }

    #[test]
    fn scopes_come_from_scope_string_or_scp_array() {
        let claims = serde_json::json!({"scope": "a b", "scp": ["c"]});
        assert_eq!(scopes(claims.as_object().unwrap()), ["a", "b", "c"]);
    }
}
