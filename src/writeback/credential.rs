//! The write-back workers' own credential for the EHR's FHIR server.
//!
//! A job runs long after the hook that queued it, on another process
//! perhaps, so the hook's `fhirAuthorization` token (short-lived, scoped to
//! the hook, and never persisted) cannot be used. The workers use what the
//! operator configured instead: a static bearer token (environment or a
//! file, re-read on every use so a rotated secret is picked up) or an OAuth
//! 2.0 client credentials grant (RFC 6749 §4.4), whose access token is kept
//! in memory only, until shortly before it expires.
//!
//! Nothing here logs or returns a secret: errors carry the token endpoint's
//! `error` / `error_description` (RFC 6749 §5.2) with our own secrets
//! scrubbed from them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use super::WritebackError;
use crate::config::{ClientAuthMethod, WritebackAuthMethod, WritebackAuthSettings};
use crate::fhir::client::{read_limited, secure_url};

/// Longest token endpoint answer we read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Lifetime assumed when the token response has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// Where a secret comes from.
enum SecretSource {
    Value(SecretString),
    /// Read (and trimmed) on every use.
    File(PathBuf),
}

impl SecretSource {
    fn new(value: &Option<SecretString>, file: &Option<PathBuf>) -> Option<Self> {
        match (value, file) {
            (Some(v), _) => Some(SecretSource::Value(v.clone())),
            (None, Some(f)) => Some(SecretSource::File(f.clone())),
            (None, None) => None,
        }
    }

    async fn read(&self) -> Result<SecretString, WritebackError> {
        match self {
            SecretSource::Value(v) => Ok(v.clone()),
            SecretSource::File(path) => read_secret_file(path).await,
        }
    }
}

async fn read_secret_file(path: &Path) -> Result<SecretString, WritebackError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| WritebackError::Credential {
            // A missing file may be a secret not mounted yet: retry.
            reason: format!("reading {}: {}", path.display(), e.kind()),
            retryable: true,
        })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(WritebackError::Credential {
            reason: format!("{} is empty", path.display()),
            retryable: true,
        });
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// The workers' credential. Cheap to share behind an `Arc`.
pub struct Credential {
    kind: Kind,
}

enum Kind {
    None,
    Bearer(SecretSource),
    ClientCredentials(Box<ClientCredentials>),
}

struct ClientCredentials {
    http: reqwest::Client,
    token_url: Url,
    client_id: String,
    secret: SecretSource,
    auth: ClientAuthMethod,
    scope: String,
    timeout: Duration,
    cache: Mutex<Option<Cached>>,
}

struct Cached {
    token: SecretString,
    refresh_at: Instant,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::None => "none".to_owned(),
            Kind::Bearer(_) => "bearer".to_owned(),
            Kind::ClientCredentials(c) => format!("client-credentials at {}", c.token_url),
        };
        f.debug_struct("Credential").field("kind", &kind).finish()
    }
}

impl Credential {
    /// Checks the settings (the config layer checked which fields are set;
    /// this checks what they say). `http` is used for the token endpoint.
    pub fn new(
        settings: &WritebackAuthSettings,
        http: reqwest::Client,
        timeout: Duration,
    ) -> Result<Self, WritebackError> {
        let config = |m: String| WritebackError::Config(format!("auth: {m}"));
        let kind = match settings.method {
            WritebackAuthMethod::None => Kind::None,
            WritebackAuthMethod::Bearer => Kind::Bearer(
                SecretSource::new(&settings.bearer_token, &settings.bearer_token_file).ok_or_else(
                    || config("bearer needs bearer_token or bearer_token_file".into()),
                )?,
            ),
            WritebackAuthMethod::ClientCredentials => {
                let token_url = settings
                    .token_url
                    .as_deref()
                    .ok_or_else(|| config("client-credentials needs token_url".into()))?;
                let client_id = settings
                    .client_id
                    .clone()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| config("client-credentials needs client_id".into()))?;
                let secret =
                    SecretSource::new(&settings.client_secret, &settings.client_secret_file)
                        .ok_or_else(|| {
                            config(
                                "client-credentials needs client_secret or client_secret_file"
                                    .into(),
                            )
                        })?;
                Kind::ClientCredentials(Box::new(ClientCredentials {
                    http,
                    token_url: secure_url(token_url, "token_url").map_err(config)?,
                    client_id,
                    secret,
                    auth: settings.client_auth,
                    scope: settings.scope.trim().to_owned(),
                    timeout,
                    cache: Mutex::new(None),
                }))
            }
        };
        Ok(Self { kind })
    }

    /// The bearer token to send now (`None`: send no Authorization header).
    pub async fn bearer(&self) -> Result<Option<SecretString>, WritebackError> {
        match &self.kind {
            Kind::None => Ok(None),
            Kind::Bearer(source) => source.read().await.map(Some),
            Kind::ClientCredentials(cc) => cc.token().await.map(Some),
        }
    }

    /// Whether a refused token can be replaced by asking again (a 401 from
    /// the FHIR server may mean the cached token was revoked early).
    pub fn can_refresh(&self) -> bool {
        matches!(self.kind, Kind::ClientCredentials(_))
    }

    /// Forget the cached token: the FHIR server refused it.
    pub async fn refused(&self) {
        if let Kind::ClientCredentials(cc) = &self.kind {
            *cc.cache.lock().await = None;
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
}

impl ClientCredentials {
    async fn token(&self) -> Result<SecretString, WritebackError> {
        // One request at a time: concurrent workers wait for the same token
        // instead of each asking for one.
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        // Refresh a little early so a token does not expire in flight.
        let margin = (lifetime / 10).min(Duration::from_secs(60));
        let fresh = Cached {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        };
        *cache = Some(fresh);
        Ok(token)
    }

    #[tracing::instrument(name = "Fetching a write-back access token", skip_all)]
    async fn fetch(&self) -> Result<(SecretString, Duration), WritebackError> {
        let secret = self.secret.read().await?;
        let failed = |reason: String, retryable: bool| WritebackError::Credential {
            reason: scrub(&reason, &[secret.expose_secret()]),
            retryable,
        };
        let mut form = vec![("grant_type", "client_credentials")];
        if !self.scope.is_empty() {
            form.push(("scope", self.scope.as_str()));
        }
        let mut req = self
            .http
            .post(self.token_url.clone())
            .header(ACCEPT, "application/json")
            .timeout(self.timeout);
        match self.auth {
            ClientAuthMethod::ClientSecretBasic => {
                // RFC 6749 §2.3.1: id and secret are form-urlencoded before
                // they are joined and base64-encoded.
                let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
                let (id, pw): (String, String) =
                    (enc(&self.client_id), enc(secret.expose_secret()));
                let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{pw}"));
                let mut value = HeaderValue::from_str(&format!("Basic {basic}"))
                    .map_err(|_| failed("the client secret is not header-safe".into(), false))?;
                value.set_sensitive(true);
                req = req.header(AUTHORIZATION, value);
            }
            ClientAuthMethod::ClientSecretPost => {
                form.push(("client_id", self.client_id.as_str()));
                form.push(("client_secret", secret.expose_secret()));
            }
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = req
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| {
                failed(
                    format!(
                        "token endpoint {} unreachable: {}",
                        self.token_url,
                        e.without_url()
                    ),
                    true,
                )
            })?;
        let status = resp.status().as_u16();
        let bytes = read_limited(resp, MAX_TOKEN_RESPONSE).await;
        let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        if !(200..300).contains(&status) {
            // RFC 6749 §5.2: `error` (and `error_description`) say why.
            let why = json
                .as_ref()
                .map(|j| {
                    let code = j["error"].as_str().unwrap_or("no error code");
                    match j["error_description"].as_str() {
                        Some(d) => format!("{code}: {}", clip(d, 300)),
                        None => code.to_owned(),
                    }
                })
                .unwrap_or_else(|| "no OAuth error body".into());
            return Err(failed(
                format!("token endpoint answered HTTP {status} ({why})"),
                super::should_retry(status),
            ));
        }
        let parsed: TokenResponse = json
            .and_then(|j| serde_json::from_value(j).ok())
            .ok_or_else(|| failed("token endpoint answered 2xx without JSON".into(), true))?;
        let token = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| failed("token response has no access_token".into(), true))?;
        if let Some(t) = parsed.token_type
            && !t.eq_ignore_ascii_case("bearer")
        {
            return Err(failed(
                format!("token_type {:?} is not bearer", clip(&t, 40)),
                false,
            ));
        }
        // Some servers send expires_in as a string.
        let lifetime = match parsed.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        tracing::info!(
            lifetime_s = lifetime.as_secs(),
            "Write-back access token obtained"
        );
        Ok((SecretString::from(token), lifetime))
    }
}

/// `s` shortened to `max` characters.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// `text` with every occurrence of a secret replaced: a server that echoes
/// what it was sent must not put our credential into `last_error`.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if s.len() >= 4 {
            out = out.replace(s, "[REDACTED]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_and_text_clipped() {
        assert_eq!(
            scrub("bad secret s3cr3t-value here", &["s3cr3t-value"]),
            "bad secret [REDACTED] here"
        );
        assert_eq!(clip("abcdef", 3), "abc…");
    }

    #[tokio::test]
    async fn a_bearer_file_is_read_on_every_use() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first-token\n").unwrap();
        let settings = WritebackAuthSettings {
            method: WritebackAuthMethod::Bearer,
            bearer_token_file: Some(file.clone()),
            ..Default::default()
        };
        let c = Credential::new(&settings, reqwest::Client::new(), Duration::from_secs(1)).unwrap();
        let t = c.bearer().await.unwrap().unwrap();
        assert_eq!(t.expose_secret(), "first-token");
        std::fs::write(&file, "rotated").unwrap();
        let t = c.bearer().await.unwrap().unwrap();
        assert_eq!(t.expose_secret(), "rotated");
        assert!(!format!("{c:?}").contains("rotated"));
        std::fs::remove_file(&file).unwrap();
        let err = c.bearer().await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }
}
