//! Verification of the JWT a CDS Client sends on every call
//! (CDS Hooks 2.0 §"Trusting CDS Clients").
//!
//! Order of checks: size and shape → header (alg, typ, kid, crit) → `iss` is
//! trusted → `jku` is that issuer's configured URL → key by `kid` → key fits
//! alg → signature → aud, exp, iat, nbf, lifetime, jti → tenant → replay.
//! Only `iss` is read before the signature is checked, and only to choose the
//! keys; the replay cache records a token only once everything else passed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};
use url::Url;

use super::dev_token::{DEMO_ISSUER, DEMO_JWKS};
use super::error::{AuthError, clip};
use super::jwks::{Alg, FetchPolicy, KeySet, PublicKey, RemoteJwks, Skipped, parse_jwks_url};
use super::replay::{self, ReplayCache};
use super::settings::{AuthSettings, TrustedIssuer};

/// Longer than any CDS Client JWT (they are well under 2 KB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Bound on `jti`, which is echoed into errors and audit records.
const MAX_JTI_BYTES: usize = 256;

/// Who is calling, once authentication is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdsClient {
    /// A token was sent and passed every check.
    Verified(VerifiedClient),
    /// No token was sent and `auth.required` is false.
    Anonymous,
}

impl CdsClient {
    /// The verified identity, if any.
    pub fn verified(&self) -> Option<&VerifiedClient> {
        match self {
            Self::Verified(client) => Some(client),
            Self::Anonymous => None,
        }
    }
}

/// The identity asserted by a verified token. Safe to log and audit: it holds
/// no part of the token that could be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClient {
    /// The trusted issuer (the CDS Client).
    pub iss: String,
    /// `sub`, if sent (CDS Hooks 2.0 does not require it).
    pub sub: Option<String>,
    /// The token's unique id; already recorded for replay protection.
    pub jti: String,
    /// The healthcare organisation invoking the hook, if sent.
    pub tenant: Option<String>,
    /// Key that signed the token.
    pub kid: String,
}

/// Verifies CDS Client tokens. Build one at start-up and share it (it is a
/// cheap `Clone` around an `Arc`): the JWKS and replay caches live inside.
#[derive(Clone)]
pub struct ClientVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    required: bool,
    policy: TimePolicy,
    issuers: HashMap<String, Issuer>,
    replay: ReplayCache,
}

struct Issuer {
    keys: KeySource,
    tenants: HashSet<String>,
}

pub(super) enum KeySource {
    Inline(KeySet),
    Remote(RemoteJwks),
}

impl KeySource {
    /// Finds the issuer's key for the token's `kid` (inline, or from the one
    /// configured JWKS URL) and checks the signature. A `jku` other than the
    /// configured URL is refused before any request is made.
    pub(super) async fn verify(
        &self,
        iss: &str,
        header: &JoseHeader<'_>,
        jws: &CompactJws<'_>,
    ) -> Result<(), AuthError> {
        let key = match self {
            KeySource::Inline(set) => {
                if let Some(jku) = header.jku {
                    // No URL is configured for this issuer, so no jku is listed.
                    return Err(AuthError::UntrustedJku {
                        iss: clip(iss),
                        jku: clip(jku),
                    });
                }
                set.get(header.kid).ok_or_else(|| AuthError::UnknownKid {
                    iss: clip(iss),
                    kid: clip(header.kid),
                })?
            }
            KeySource::Remote(remote) => {
                // CDS Hooks 2.0: services SHOULD allow-list jku. A jku is
                // honoured only if it is the configured URL; anything else is
                // refused here, before any request is made.
                if let Some(jku) = header.jku
                    && Url::parse(jku).ok().as_ref() != Some(remote.url())
                {
                    return Err(AuthError::UntrustedJku {
                        iss: clip(iss),
                        jku: clip(jku),
                    });
                }
                remote.key(iss, header.kid).await?
            }
        };
        let decoding_key = fit(&key, header.alg, header.kid)?;
        jws.verify_signature(header.alg, decoding_key)
            .map_err(|()| AuthError::BadSignature {
                iss: clip(iss),
                kid: clip(header.kid),
            })?;
        Ok(())
    }
}

/// Time rules for the claims, in seconds.
#[derive(Debug, Clone, Copy)]
struct TimePolicy {
    skew: i64,
    max_lifetime: i64,
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut issuers: Vec<&str> = self.inner.issuers.keys().map(String::as_str).collect();
        issuers.sort_unstable();
        f.debug_struct("ClientVerifier")
            .field("required", &self.inner.required)
            .field("issuers", &issuers)
            .finish_non_exhaustive()
    }
}

impl ClientVerifier {
    /// Build the verifier from settings. `http` is used only to fetch the
    /// configured `jwks_url`s (never a URL taken from a token).
    ///
    /// Fails on inconsistent settings: an issuer listed twice, neither or
    /// both of `jwks_url`/`jwks`, a non-https `jwks_url`, an inline JWKS with
    /// broken keys, zero limits.
    pub fn new(settings: &AuthSettings, http: reqwest::Client) -> Result<Self, AuthError> {
        let config = |msg: String| AuthError::Config(msg);
        if settings.max_token_lifetime_seconds == 0 {
            return Err(config(
                "max_token_lifetime_seconds must be at least 1".into(),
            ));
        }
        if settings.replay_cache_size == 0 {
            return Err(config("replay_cache_size must be at least 1".into()));
        }
        if settings.jwks_fetch_timeout_ms == 0 {
            return Err(config("jwks_fetch_timeout_ms must be at least 1".into()));
        }
        if settings.jwks_cache_seconds < settings.jwks_min_refetch_seconds {
            return Err(config(format!(
                "jwks_cache_seconds ({}) must not be shorter than jwks_min_refetch_seconds ({})",
                settings.jwks_cache_seconds, settings.jwks_min_refetch_seconds
            )));
        }
        let fetch = FetchPolicy {
            ttl: Duration::from_secs(settings.jwks_cache_seconds),
            min_refetch: Duration::from_secs(settings.jwks_min_refetch_seconds),
            timeout: Duration::from_millis(settings.jwks_fetch_timeout_ms),
        };

        let mut issuers = HashMap::new();
        let demo = settings.demo.then(|| TrustedIssuer {
            iss: DEMO_ISSUER.to_owned(),
            jwks: serde_json::from_str(DEMO_JWKS).ok(),
            ..TrustedIssuer::default()
        });
        for trusted in settings.trusted_issuers.iter().chain(demo.as_ref()) {
            let iss = trusted.iss.as_str();
            if iss.is_empty() {
                return Err(config("a trusted issuer has an empty iss".into()));
            }
            let keys = match (&trusted.jwks_url, &trusted.jwks) {
                (Some(url), None) => {
                    let url = parse_jwks_url(iss, url)?;
                    KeySource::Remote(RemoteJwks::new(url, http.clone(), fetch))
                }
                (None, Some(jwks)) => KeySource::Inline(inline_keys(iss, jwks)?),
                _ => {
                    return Err(config(format!(
                        "issuer {iss:?}: set exactly one of jwks_url and jwks"
                    )));
                }
            };
            let issuer = Issuer {
                keys,
                tenants: trusted.tenants.iter().cloned().collect(),
            };
            if issuers.insert(iss.to_owned(), issuer).is_some() {
                let hint = if iss == DEMO_ISSUER {
                    " (it is the demo issuer)"
                } else {
                    ""
                };
                return Err(config(format!("issuer {iss:?} is listed twice{hint}")));
            }
        }

        if settings.demo {
            tracing::warn!(
                issuer = DEMO_ISSUER,
                "Demo mode: tokens signed with the public demo key are trusted. Never in production."
            );
        }
        if settings.required && issuers.is_empty() {
            tracing::warn!(
                "auth.required is true and no issuer is trusted: every call will be refused"
            );
        }
        let secs = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(Self {
            inner: Arc::new(Inner {
                required: settings.required,
                policy: TimePolicy {
                    skew: secs(settings.clock_skew_seconds),
                    max_lifetime: secs(settings.max_token_lifetime_seconds),
                },
                issuers,
                replay: ReplayCache::new(settings.replay_cache_size),
            }),
        })
    }

    /// Authenticate one call.
    ///
    /// * `token`: the bearer token from `Authorization: Bearer <token>` (see
    ///   [`bearer_token`]), or `None` when the header is absent.
    /// * `expected_aud`: the acceptable audiences, i.e. the exact URL being
    ///   called, built from the configured public base URL and the request
    ///   path (`https://cds.example.org/cds-services/cachexia`). The spec
    ///   says `aud` MUST be that URL. An empty list accepts nothing.
    ///
    /// A missing token gives [`CdsClient::Anonymous`] only when
    /// `auth.required` is false; a token that is sent is always checked.
    pub async fn verify(
        &self,
        token: Option<&str>,
        expected_aud: &[&str],
    ) -> Result<CdsClient, AuthError> {
        let Some(token) = token else {
            return if self.inner.required {
                Err(AuthError::MissingToken)
            } else {
                Ok(CdsClient::Anonymous)
            };
        };
        let jws = CompactJws::parse(token)?;
        let header_json = jws.header()?;
        let header = header_json.checked()?;
        let claims = jws.claims()?;
        let iss = claims
            .string("iss")?
            .ok_or(AuthError::MissingClaim("iss"))?;
        let issuer = self
            .inner
            .issuers
            .get(iss)
            .ok_or_else(|| AuthError::UntrustedIssuer { iss: clip(iss) })?;

        issuer.keys.verify(iss, &header, &jws).await?;

        let now = unix_now();
        let checked = check_claims(&claims, expected_aud, now, self.inner.policy)?;
        let sub = claims.string("sub")?;
        if !issuer.tenants.is_empty()
            && !checked
                .tenant
                .is_some_and(|tenant| issuer.tenants.contains(tenant))
        {
            return Err(AuthError::TenantNotAllowed {
                iss: clip(iss),
                tenant: checked.tenant.map(clip),
            });
        }
        let forget_after = checked.exp.saturating_add(self.inner.policy.skew);
        self.inner
            .replay
            .check_and_insert(iss, checked.jti, forget_after, now)
            .map_err(|refused| match refused {
                replay::Refused::Replayed => AuthError::Replayed {
                    iss: clip(iss),
                    jti: clip(checked.jti),
                },
                replay::Refused::Full => AuthError::ReplayCacheFull {
                    capacity: self.inner.replay.capacity(),
                },
            })?;

        Ok(CdsClient::Verified(VerifiedClient {
            iss: iss.to_owned(),
            sub: sub.map(str::to_owned),
            jti: checked.jti.to_owned(),
            tenant: checked.tenant.map(str::to_owned),
            kid: header.kid.to_owned(),
        }))
    }
}

/// Extract the token from an `Authorization` header value. The scheme is
/// case-insensitive (RFC 7235 §2.1); anything but `Bearer <token>` is refused.
pub fn bearer_token(authorization: &str) -> Result<&str, AuthError> {
    let (scheme, rest) = authorization
        .trim()
        .split_once(' ')
        .ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::Malformed("empty bearer token".into()));
    }
    Ok(token)
}

pub(super) fn inline_keys(iss: &str, jwks: &Value) -> Result<KeySet, AuthError> {
    let source = format!("inline jwks of issuer {iss:?}");
    let (set, skipped) =
        KeySet::parse(jwks, &source).map_err(|e| AuthError::Config(e.to_string()))?;
    for skip in skipped {
        match skip {
            // Operator-supplied keys must all be usable: a typo should stop
            // start-up, not surface as 401s later.
            Skipped::Invalid(reason) => {
                return Err(AuthError::Config(format!("{source}: {reason}")));
            }
            Skipped::Ignored(reason) => tracing::debug!(issuer = iss, "Ignoring JWK: {reason}"),
        }
    }
    if set.is_empty() {
        return Err(AuthError::Config(format!(
            "{source}: no signing key with a kid"
        )));
    }
    Ok(set)
}

pub(super) fn fit<'k>(
    key: &'k PublicKey,
    alg: Alg,
    kid: &str,
) -> Result<&'k DecodingKey, AuthError> {
    key.for_alg(alg)
        .map_err(|reason| AuthError::KeyAlgorithmMismatch {
            kid: clip(kid),
            alg: alg.name(),
            reason,
        })
}

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A compact JWS split into its parts; nothing verified yet.
pub(super) struct CompactJws<'t> {
    signing_input: &'t str,
    header_b64: &'t str,
    payload_b64: &'t str,
    signature_b64: &'t str,
}

/// The header fields we act on.
pub(super) struct JoseHeader<'h> {
    pub(super) alg: Alg,
    pub(super) kid: &'h str,
    pub(super) jku: Option<&'h str>,
}

/// The header as a JSON object; `checked()` gives the validated view.
pub(super) struct HeaderJson(Map<String, Value>);

/// The payload as a JSON object, read claim by claim so that errors name the
/// claim without echoing its value.
pub(super) struct Claims(pub(super) Map<String, Value>);

impl<'t> CompactJws<'t> {
    pub(super) fn parse(token: &'t str) -> Result<Self, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TokenTooLarge {
                len: token.len(),
                max: MAX_TOKEN_BYTES,
            });
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [header_b64, payload_b64, signature_b64] = parts[..] else {
            let hint = if parts.len() == 5 {
                " (a JWE; CDS Clients send a signed JWS)"
            } else {
                ""
            };
            return Err(AuthError::Malformed(format!(
                "expected 3 dot-separated parts (compact JWS), found {}{hint}",
                parts.len()
            )));
        };
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        Ok(Self {
            signing_input,
            header_b64,
            payload_b64,
            signature_b64,
        })
    }

    pub(super) fn header(&self) -> Result<HeaderJson, AuthError> {
        Ok(HeaderJson(decode_object(self.header_b64, "header")?))
    }

    pub(super) fn claims(&self) -> Result<Claims, AuthError> {
        Ok(Claims(decode_object(self.payload_b64, "payload")?))
    }

    pub(super) fn verify_signature(&self, alg: Alg, key: &DecodingKey) -> Result<(), ()> {
        match jsonwebtoken::crypto::verify(
            self.signature_b64,
            self.signing_input.as_bytes(),
            key,
            alg.jwt(),
        ) {
            Ok(true) => Ok(()),
            // A signature that does not decode or a key the crypto backend
            // rejects is as bad as a wrong signature.
            Ok(false) | Err(_) => Err(()),
        }
    }
}

fn decode_object(part_b64: &str, what: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part_b64)
        .map_err(|_| AuthError::Malformed(format!("{what} is not unpadded base64url")))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed(format!("{what} is not a JSON object")))
}

impl HeaderJson {
    fn string(&self, name: &'static str) -> Result<Option<&str>, AuthError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(AuthError::Malformed(format!(
                "header {name} is not a string"
            ))),
        }
    }

    /// Header rules: CDS Hooks 2.0 §"Trusting CDS Clients" (alg, kid
    /// REQUIRED; typ fixed to JWT), §"JWT Signing Algorithm" (ES384/RS384;
    /// no `none`, no symmetric algorithms), RFC 7515 §4.1.11 (`crit` must be
    /// understood).
    pub(super) fn checked(&self) -> Result<JoseHeader<'_>, AuthError> {
        self.checked_for(Alg::CDS)
    }

    /// [`Self::checked`] with another list of algorithms (id_tokens).
    pub(super) fn checked_for(&self, algs: &[Alg]) -> Result<JoseHeader<'_>, AuthError> {
        let alg_name = match self.0.get("alg") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(AuthError::Malformed("header alg is not a string".into())),
            None => return Err(AuthError::DisallowedAlgorithm { alg: String::new() }),
        };
        let alg = Alg::parse(alg_name)
            .filter(|a| algs.contains(a))
            .ok_or_else(|| AuthError::DisallowedAlgorithm {
                alg: clip(alg_name),
            })?;
        // RFC 7515 §4.1.9: typ is compared case-insensitively.
        if let Some(typ) = self.string("typ")?
            && !typ.eq_ignore_ascii_case("JWT")
        {
            return Err(AuthError::WrongType { typ: clip(typ) });
        }
        if let Some(crit) = self.0.get("crit") {
            return Err(AuthError::UnsupportedCritical(clip(&crit.to_string())));
        }
        let kid = self
            .string("kid")?
            .filter(|kid| !kid.is_empty())
            .ok_or(AuthError::MissingKid)?;
        Ok(JoseHeader {
            alg,
            kid,
            jku: self.string("jku")?,
        })
    }
}

impl Claims {
    pub(super) fn string(&self, name: &'static str) -> Result<Option<&str>, AuthError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(AuthError::Malformed(format!(
                "claim {name} is not a string"
            ))),
        }
    }

    /// A NumericDate; CDS Hooks 2.0 says integer seconds.
    pub(super) fn seconds(&self, name: &'static str) -> Result<Option<i64>, AuthError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(value) => value.as_i64().map(Some).ok_or_else(|| {
                AuthError::Malformed(format!("claim {name} is not integer seconds"))
            }),
        }
    }

    /// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
    pub(super) fn audience(&self) -> Result<Vec<&str>, AuthError> {
        match self.0.get("aud") {
            None => Err(AuthError::MissingClaim("aud")),
            Some(Value::String(s)) => Ok(vec![s.as_str()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .ok_or_else(|| AuthError::Malformed("claim aud holds a non-string".into()))
                })
                .collect(),
            Some(_) => Err(AuthError::Malformed(
                "claim aud is neither a string nor an array".into(),
            )),
        }
    }
}

/// Claims that passed [`check_claims`].
struct CheckedClaims<'c> {
    exp: i64,
    jti: &'c str,
    tenant: Option<&'c str>,
}

/// The claim rules of CDS Hooks 2.0 §"Trusting CDS Clients": aud names the
/// endpoint, exp/iat/jti REQUIRED; plus our lifetime bound and `nbf` when sent.
fn check_claims<'c>(
    claims: &'c Claims,
    expected_aud: &[&str],
    now: i64,
    policy: TimePolicy,
) -> Result<CheckedClaims<'c>, AuthError> {
    let aud = claims.audience()?;
    if !aud.iter().any(|a| expected_aud.contains(a)) {
        return Err(AuthError::WrongAudience {
            got: aud.iter().take(5).map(|a| clip(a)).collect(),
            expected: expected_aud.iter().map(|a| (*a).to_owned()).collect(),
        });
    }
    let exp = claims
        .seconds("exp")?
        .ok_or(AuthError::MissingClaim("exp"))?;
    let iat = claims
        .seconds("iat")?
        .ok_or(AuthError::MissingClaim("iat"))?;
    let skew = policy.skew;
    let skew_u = skew.unsigned_abs();
    if exp.saturating_add(skew) < now {
        return Err(AuthError::Expired {
            exp,
            now,
            skew: skew_u,
        });
    }
    if iat.saturating_sub(skew) > now {
        return Err(AuthError::IssuedInFuture {
            iat,
            now,
            skew: skew_u,
        });
    }
    if let Some(nbf) = claims.seconds("nbf")?
        && nbf.saturating_sub(skew) > now
    {
        return Err(AuthError::NotYetValid {
            nbf,
            now,
            skew: skew_u,
        });
    }
    // Both ends come from the client's clock, but the skew is still granted
    // so a client that back-dates iat by its own skew is not refused.
    let lifetime = exp.saturating_sub(iat);
    let max = policy.max_lifetime.saturating_add(skew);
    if lifetime <= 0 || lifetime > max {
        return Err(AuthError::BadLifetime {
            lifetime,
            max: max.unsigned_abs(),
        });
    }
    let jti = claims
        .string("jti")?
        .filter(|jti| !jti.is_empty())
        .ok_or(AuthError::MissingClaim("jti"))?;
    if jti.len() > MAX_JTI_BYTES {
        return Err(AuthError::Malformed(format!(
            "claim jti is longer than {MAX_JTI_BYTES} bytes"
        )));
    }
    Ok(CheckedClaims {
        exp,
        jti,
        tenant: claims.string("tenant")?,
    })
}

#[cfg(test)]
mod tests;
