//! JWK Sets: parsing public keys, checking that a key fits the token's
//! algorithm, and fetching an issuer's set over HTTPS with a cache.
//!
//! `jsonwebtoken::DecodingKey::from_jwk` ignores `crv` and the JWK `alg`, so
//! an ES384 token could be checked against a P-256 key, or an RS384 token
//! against a key published for another algorithm. We parse the JWK ourselves
//! and refuse every mismatch before any signature is computed.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde_json::Value;
use url::{Host, Url};

use super::error::{AuthError, clip};

/// A JWK Set larger than this is not a CDS Client's key set.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// RFC 7518 §3.3: RSA keys for RS* MUST be at least 2048 bits.
const MIN_RSA_BITS: usize = 2048;

/// The asymmetric signing algorithms we know. `none` and symmetric
/// algorithms are not among them at all, which keeps algorithm-confusion
/// attacks out; each use narrows the list further ([`Alg::CDS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    Es384,
    Rs384,
    /// Only for OpenID Connect id_tokens: RS256 is OIDC's default
    /// (OpenID Connect Core §15.1) and what most EHRs sign with.
    Rs256,
    Es256,
}

impl Alg {
    /// CDS Hooks 2.0 §"JWT Signing Algorithm" RECOMMENDS ES384 and RS384:
    /// what CDS Client JWTs and our access tokens may use.
    pub(crate) const CDS: &'static [Alg] = &[Alg::Es384, Alg::Rs384];
    /// What an EHR's id_token may use (SMART App Launch 2.0 §"Scopes for
    /// requesting identity data": the EHR SHALL support RS256).
    pub(crate) const ID_TOKEN: &'static [Alg] = &[Alg::Rs256, Alg::Rs384, Alg::Es256, Alg::Es384];

    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "ES384" => Some(Self::Es384),
            "RS384" => Some(Self::Rs384),
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Es384 => "ES384",
            Self::Rs384 => "RS384",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }

    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Es384 => jsonwebtoken::Algorithm::ES384,
            Self::Rs384 => jsonwebtoken::Algorithm::RS384,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }

    fn is_rsa(self) -> bool {
        matches!(self, Self::Rs256 | Self::Rs384)
    }

    /// The EC curve an ES algorithm signs on (RFC 7518 §3.4).
    fn curve(self) -> Option<&'static str> {
        match self {
            Self::Es384 => Some("P-384"),
            Self::Es256 => Some("P-256"),
            _ => None,
        }
    }
}

/// What a JWK holds, as far as algorithm fit is concerned.
#[derive(Debug, Clone)]
enum KeyShape {
    /// EC key; `key` is built only for P-384 and P-256 (the curves of ES384
    /// and ES256).
    Ec {
        curve: String,
    },
    Rsa {
        modulus_bits: usize,
    },
    /// A key type we never verify with (oct, OKP, ...).
    Other {
        kty: String,
    },
}

/// One public key from a JWK Set.
#[derive(Debug)]
pub(crate) struct PublicKey {
    shape: KeyShape,
    /// The JWK's own `alg`, if it declares one.
    jwk_alg: Option<String>,
    /// Present for P-384 EC keys and RSA keys.
    key: Option<DecodingKey>,
}

impl PublicKey {
    /// The decoding key, if this JWK may verify `alg`; otherwise why not.
    pub(crate) fn for_alg(&self, alg: Alg) -> Result<&DecodingKey, String> {
        if let Some(jwk_alg) = &self.jwk_alg
            && jwk_alg != alg.name()
        {
            return Err(format!("the JWK declares alg {:?}", clip(jwk_alg)));
        }
        match (alg.curve(), &self.shape) {
            (Some(wanted), KeyShape::Ec { curve }) if curve == wanted => {}
            (Some(wanted), KeyShape::Ec { curve }) => {
                return Err(format!(
                    "EC key on curve {:?}; {} needs {wanted}",
                    clip(curve),
                    alg.name()
                ));
            }
            (None, KeyShape::Rsa { modulus_bits })
                if alg.is_rsa() && *modulus_bits >= MIN_RSA_BITS => {}
            (None, KeyShape::Rsa { modulus_bits }) if alg.is_rsa() => {
                return Err(format!(
                    "RSA modulus of {modulus_bits} bits; at least {MIN_RSA_BITS} required"
                ));
            }
            (_, shape) => {
                let kty = match shape {
                    KeyShape::Ec { .. } => "EC",
                    KeyShape::Rsa { .. } => "RSA",
                    KeyShape::Other { kty } => kty,
                };
                let wanted = if alg.is_rsa() { "RSA" } else { "EC" };
                return Err(format!(
                    "key type {:?}; {} needs {wanted}",
                    clip(kty),
                    alg.name()
                ));
            }
        }
        self.key
            .as_ref()
            .ok_or_else(|| "no usable key material".to_owned())
    }
}

/// Public keys by `kid`.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, Arc<PublicKey>>,
}

/// Why one JWK of a set was not taken.
#[derive(Debug)]
pub(crate) enum Skipped {
    /// Not meant for us (encryption key, no `kid`): not an error.
    Ignored(String),
    /// Broken: an error in configuration, a warning when fetched.
    Invalid(String),
}

impl KeySet {
    pub(crate) fn get(&self, kid: &str) -> Option<Arc<PublicKey>> {
        self.keys.get(kid).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parse `{"keys": [...]}`. Signing keys with a `kid` are kept; the rest
    /// is reported in the second value. Only a document that is not a JWK
    /// Set at all is an error.
    pub(crate) fn parse(value: &Value, source: &str) -> Result<(Self, Vec<Skipped>), AuthError> {
        let invalid = |reason: &str| AuthError::InvalidJwks {
            source_name: source.to_owned(),
            reason: reason.to_owned(),
        };
        let entries = value
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("not a JWK Set: no \"keys\" array"))?;
        let mut set = Self::default();
        let mut skipped = Vec::new();
        for (i, jwk) in entries.iter().enumerate() {
            match parse_jwk(jwk) {
                Ok((kid, key)) => match set.keys.entry(kid) {
                    Entry::Vacant(slot) => {
                        slot.insert(Arc::new(key));
                    }
                    Entry::Occupied(taken) => {
                        // RFC 7517 §4.5: kids are unique within a set. Keep
                        // the first, deterministically, and report it.
                        skipped.push(Skipped::Invalid(format!(
                            "keys[{i}]: duplicate kid {:?}; first one kept",
                            clip(taken.key())
                        )));
                    }
                },
                Err(skip) => skipped.push(match skip {
                    Skipped::Ignored(r) => Skipped::Ignored(format!("keys[{i}]: {r}")),
                    Skipped::Invalid(r) => Skipped::Invalid(format!("keys[{i}]: {r}")),
                }),
            }
        }
        Ok((set, skipped))
    }
}

fn parse_jwk(jwk: &Value) -> Result<(String, PublicKey), Skipped> {
    let text = |name: &str| -> Result<Option<&str>, Skipped> {
        match jwk.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Skipped::Invalid(format!("{name} is not a string"))),
        }
    };
    let required = |name: &str| -> Result<&str, Skipped> {
        text(name)?.ok_or_else(|| Skipped::Invalid(format!("{name} is missing")))
    };
    let Some(kid) = text("kid")? else {
        return Err(Skipped::Ignored(
            "no kid (CDS Hooks 2.0 selects keys by kid)".into(),
        ));
    };
    if let Some(usage) = text("use")?
        && usage != "sig"
    {
        return Err(Skipped::Ignored(format!(
            "kid {:?} has use {usage:?}",
            clip(kid)
        )));
    }
    let jwk_alg = text("alg")?.map(str::to_owned);
    let kty = required("kty")?;
    let (shape, key) = match kty {
        "EC" => {
            let curve = required("crv")?.to_owned();
            // Coordinates are exactly the field size: 48 bytes on P-384, 32
            // on P-256 (RFC 7518 §6.2.1.2).
            let size = match curve.as_str() {
                "P-384" => Some(48),
                "P-256" => Some(32),
                _ => None,
            };
            let key = match size {
                Some(size) => {
                    let (x, y) = (required("x")?, required("y")?);
                    for (name, coord) in [("x", x), ("y", y)] {
                        let len = b64_len(coord).map_err(Skipped::Invalid)?;
                        if len != size {
                            return Err(Skipped::Invalid(format!(
                                "kid {:?}: {name} is {len} bytes, {curve} needs {size}",
                                clip(kid)
                            )));
                        }
                    }
                    Some(DecodingKey::from_ec_components(x, y).map_err(|e| {
                        Skipped::Invalid(format!("kid {:?}: EC key: {e}", clip(kid)))
                    })?)
                }
                None => None,
            };
            (KeyShape::Ec { curve }, key)
        }
        "RSA" => {
            let (n, e) = (required("n")?, required("e")?);
            let modulus = URL_SAFE_NO_PAD.decode(n).map_err(|_| {
                Skipped::Invalid(format!("kid {:?}: n is not base64url", clip(kid)))
            })?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            b64_len(e).map_err(Skipped::Invalid)?;
            let key = DecodingKey::from_rsa_components(n, e)
                .map_err(|e| Skipped::Invalid(format!("kid {:?}: RSA key: {e}", clip(kid))))?;
            (
                KeyShape::Rsa {
                    modulus_bits: significant * 8,
                },
                Some(key),
            )
        }
        other => (
            KeyShape::Other {
                kty: other.to_owned(),
            },
            None,
        ),
    };
    Ok((
        kid.to_owned(),
        PublicKey {
            shape,
            jwk_alg,
            key,
        },
    ))
}

fn b64_len(value: &str) -> Result<usize, String> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map(|bytes| bytes.len())
        .map_err(|_| "a key parameter is not base64url".to_owned())
}

/// Check a configured JWKS URL: `https`, or `http` to a loopback host only
/// (CDS Hooks 2.0 requires TLS for everything; loopback is for tests/demos).
pub(crate) fn parse_jwks_url(iss: &str, raw: &str) -> Result<Url, AuthError> {
    let url = Url::parse(raw)
        .map_err(|e| AuthError::Config(format!("issuer {iss:?}: jwks_url {raw:?}: {e}")))?;
    let loopback = match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(AuthError::Config(format!(
            "issuer {iss:?}: jwks_url {raw:?} must be https (http only for loopback)"
        ))),
    }
}

/// Timing policy for a remote JWK Set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchPolicy {
    pub(crate) ttl: Duration,
    pub(crate) min_refetch: Duration,
    pub(crate) timeout: Duration,
}

/// An issuer's JWK Set behind its configured URL, cached.
///
/// Reads of a fresh cache take a read lock only. Fetches are serialised per
/// URL (`fetch_lock`), so a burst of requests after expiry causes one fetch;
/// outside the TTL schedule (unknown `kid`, failed fetch) at most one fetch
/// per `min_refetch` interval is made.
#[derive(Debug)]
pub(crate) struct RemoteJwks {
    url: Url,
    http: reqwest::Client,
    policy: FetchPolicy,
    state: RwLock<CacheState>,
    fetch_lock: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct CacheState {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl CacheState {
    fn is_fresh(&self, now: Instant, ttl: Duration) -> bool {
        self.fetched_at
            .is_some_and(|t| now.saturating_duration_since(t) < ttl)
    }

    fn lookup(&self, kid: &str) -> Option<Arc<PublicKey>> {
        self.keys.as_ref().and_then(|set| set.get(kid))
    }
}

impl RemoteJwks {
    pub(crate) fn new(url: Url, http: reqwest::Client, policy: FetchPolicy) -> Self {
        Self {
            url,
            http,
            policy,
            state: RwLock::new(CacheState::default()),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// The key `kid`, from the cache or after (at most) one fetch.
    pub(crate) async fn key(&self, iss: &str, kid: &str) -> Result<Arc<PublicKey>, AuthError> {
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if state.is_fresh(Instant::now(), self.policy.ttl)
                && let Some(key) = state.lookup(kid)
            {
                return Ok(key);
            }
        }

        let _one_fetch_at_a_time = self.fetch_lock.lock().await;
        // Another task may have fetched while we waited: look again.
        let now = Instant::now();
        let (fresh, found, may_fetch) = {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            let may_fetch = state
                .last_attempt
                .is_none_or(|t| now.saturating_duration_since(t) >= self.policy.min_refetch);
            (
                state.is_fresh(now, self.policy.ttl),
                state.lookup(kid),
                may_fetch,
            )
        };
        let unknown_kid = || AuthError::UnknownKid {
            iss: clip(iss),
            kid: clip(kid),
        };
        match (fresh, found) {
            (true, Some(key)) => return Ok(key),
            (true, None) if !may_fetch => return Err(unknown_kid()),
            (false, _) if !may_fetch => {
                // Only a failed attempt can be this recent while the cache
                // is stale (the TTL is never shorter than the interval).
                return Err(AuthError::JwksUnavailable {
                    url: self.url.to_string(),
                });
            }
            _ => {}
        }

        self.state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .last_attempt = Some(now);
        let set = Arc::new(self.fetch().await?);
        let key = set.get(kid);
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            state.keys = Some(set);
            state.fetched_at = Some(Instant::now());
        }
        key.ok_or_else(unknown_kid)
    }

    async fn fetch(&self) -> Result<KeySet, AuthError> {
        let url = self.url.to_string();
        let failed = |reason: String| AuthError::JwksFetch {
            url: url.clone(),
            reason,
        };
        let mut response = self
            .http
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.policy.timeout)
            .send()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("HTTP status {}", response.status())));
        }
        let too_big = || failed(format!("body larger than {MAX_JWKS_BYTES} bytes"));
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        let value: Value = serde_json::from_slice(&body).map_err(|e| AuthError::InvalidJwks {
            source_name: url.clone(),
            reason: format!("not JSON: {e}"),
        })?;
        let (set, skipped) = KeySet::parse(&value, &url)?;
        for skip in &skipped {
            match skip {
                Skipped::Ignored(reason) => {
                    tracing::debug!(jwks_url = %url, "Ignoring JWK: {reason}")
                }
                Skipped::Invalid(reason) => {
                    tracing::warn!(jwks_url = %url, "Unusable JWK: {reason}")
                }
            }
        }
        tracing::info!(jwks_url = %url, keys = set.len(), "Fetched a JWKS");
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn only_key(jwks: &str) -> Arc<PublicKey> {
        let value: Value = serde_json::from_str(jwks).unwrap();
        let (set, skipped) = KeySet::parse(&value, "test").unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(set.len(), 1);
        set.keys.values().next().unwrap().clone()
    }

    #[test]
    fn keys_fit_only_their_own_algorithm() {
        let ec = only_key(include_str!("../../fixtures/keys/test-other-jwks.json"));
        let rsa = only_key(include_str!("../../fixtures/keys/test-rs384-jwks.json"));
        let p256 = only_key(include_str!("../../fixtures/keys/test-p256-jwks.json"));
        assert!(ec.for_alg(Alg::Es384).is_ok());
        assert!(ec.for_alg(Alg::Rs384).is_err());
        assert!(rsa.for_alg(Alg::Rs384).is_ok());
        assert!(rsa.for_alg(Alg::Es384).is_err());
        let reason = p256.for_alg(Alg::Es384).unwrap_err();
        assert!(reason.contains("P-256"), "{reason}");
        // The id_token algorithms: ES256 on P-256 only, RS256 on RSA only.
        assert!(p256.for_alg(Alg::Es256).is_ok());
        assert!(ec.for_alg(Alg::Es256).is_err());
        assert!(ec.for_alg(Alg::Rs256).is_err());
    }

    #[test]
    fn short_rsa_modulus_is_refused() {
        // 1024-bit modulus (128 bytes), e = 65537.
        let n = URL_SAFE_NO_PAD.encode([0xC5u8; 128]);
        let jwks = json!({"keys": [{"kty": "RSA", "kid": "short", "n": n, "e": "AQAB"}]});
        let (set, _) = KeySet::parse(&jwks, "test").unwrap();
        let reason = set.get("short").unwrap().for_alg(Alg::Rs384).unwrap_err();
        assert!(reason.contains("1024"), "{reason}");
    }

    #[test]
    fn encryption_keys_and_keys_without_kid_are_ignored_broken_ones_reported() {
        let good =
            serde_json::from_str::<Value>(include_str!("../../fixtures/keys/test-other-jwks.json"))
                .unwrap()["keys"][0]
                .clone();
        let mut enc = good.clone();
        enc["use"] = json!("enc");
        enc["kid"] = json!("enc-key");
        let mut no_kid = good.clone();
        no_kid.as_object_mut().unwrap().remove("kid");
        let mut short_x = good.clone();
        short_x["kid"] = json!("short-x");
        short_x["x"] = json!("AAAA");
        let jwks = json!({"keys": [good, enc, no_kid, short_x]});
        let (set, skipped) = KeySet::parse(&jwks, "test").unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.get("test-other-es384").is_some());
        let invalid = skipped
            .iter()
            .filter(|s| matches!(s, Skipped::Invalid(_)))
            .count();
        assert_eq!((skipped.len(), invalid), (3, 1), "{skipped:?}");
    }

    #[test]
    fn a_document_without_keys_is_not_a_jwk_set() {
        let err = KeySet::parse(&json!({"kty": "EC"}), "test").unwrap_err();
        assert!(matches!(err, AuthError::InvalidJwks { .. }), "{err:?}");
    }

    #[test]
    fn jwks_url_must_be_https_except_on_loopback() {
        assert!(parse_jwks_url("i", "https://ehr.example.org/jwks").is_ok());
        assert!(parse_jwks_url("i", "http://127.0.0.1:8080/jwks").is_ok());
        assert!(parse_jwks_url("i", "http://localhost/jwks").is_ok());
        assert!(parse_jwks_url("i", "http://[::1]:9/jwks").is_ok());
        assert!(parse_jwks_url("i", "http://ehr.example.org/jwks").is_err());
        assert!(parse_jwks_url("i", "file:///etc/passwd").is_err());
        assert!(parse_jwks_url("i", "not a url").is_err());
    }
}
