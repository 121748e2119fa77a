//! SMART App Launch 2.0, EHR launch, for the review app (issue 6 item 4):
//! the card's `smart` link opens `/review/launch?iss=…&launch=…`, the
//! clinician signs in at the EHR, and `/review/callback` lands them on the
//! prediction's page with a reviewer session of ours.
//!
//! 1. `begin`: `iss` must be on `[[smart.issuers]]`. We read
//!    `iss/.well-known/smart-configuration` (SMART 2.0 §"SMART on FHIR
//!    Well-Known Configuration"), require PKCE S256 in
//!    `code_challenge_methods_supported`, and send the browser to the
//!    `authorization_endpoint` with `response_type=code`, `client_id`,
//!    `redirect_uri`, `launch`, `scope`, `state`, `aud=iss`, an OpenID
//!    `nonce` and the S256 `code_challenge` (RFC 7636 §4.3). What we need
//!    back is kept in a signed, short-lived, HttpOnly launch cookie
//!    (`session::LaunchClaims`); the `code_verifier` is derived from the
//!    state with a server key and never leaves the server.
//! 2. `complete`: the state must equal the cookie's (RFC 6749 §10.12), the
//!    code is exchanged at the `token_endpoint` with the `code_verifier`
//!    (as a public client, or confidential with HTTP Basic), and the
//!    response's `id_token` is verified against the issuer's JWKS
//!    (`id_token`). The launch context (`appContext` with the prediction
//!    id, `patient`) chooses the page.
//!
//! **Which token authorises the reviewer here.** The access token the EHR
//! returns is the EHR's token for the EHR's FHIR server: its audience is
//! that server, not us, and its format is the EHR's business (often
//! opaque). We do not use it, keep it, or log it. What we trust is the
//! *identity* the EHR asserts in the id_token, signed by the issuer we
//! allow-listed and bound to this launch by the nonce; from it we mint our
//! own short-lived session (`session::SessionClaims`): who (`fhirUser`),
//! which issuer, what they may do here (`grant` of that issuer, by default
//! `review.write`), and the launch's patient, the only patient the session
//! may see. Token introspection (RFC 7662) would need an introspection
//! endpoint and credentials most EHRs do not offer to apps, one call per
//! page, and the EHR's token in our cookie; see `docs/audit.md`.

mod id_token;
pub mod session;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::access::Principal;
use super::jwks::{FetchPolicy, RemoteJwks, parse_jwks_url};
use super::verifier::KeySource;
pub use id_token::Identity;
use session::{LaunchClaims, SessionClaims, SessionKeys, expires_in, random_b64, s256_challenge};

/// Name of the cookie holding the launch in progress.
pub const LAUNCH_COOKIE: &str = "oncohooks_launch";
/// Name of the reviewer session cookie.
pub const SESSION_COOKIE: &str = "oncohooks_session";
/// Scopes `grant` may give: what a reviewer does in the review app. Audit
/// scopes are not among them: a launch is about one patient.
const GRANTABLE: &[&str] = &["review.write", "user/RiskAssessment.read"];
/// Largest discovery document or token response read.
const MAX_JSON: usize = 256 * 1024;

/// The `[smart]` configuration section.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmartSettings {
    /// EHRs allowed to launch the review app. Empty: every SMART launch is
    /// refused (the `appContext` and absolute links still work).
    pub issuers: Vec<SmartIssuer>,
    /// Scopes asked for. `openid fhirUser` is what identifies the reviewer.
    pub scope: String,
    /// The registered redirect URI; default `server.public_base_url` +
    /// `/review/callback`, else derived from the request (demo).
    pub redirect_uri: Option<String>,
    /// Lifetime of a reviewer session (our cookie).
    pub session_lifetime_seconds: u64,
    /// Time a clinician has to sign in at the EHR.
    pub launch_lifetime_seconds: u64,
    /// Key for the launch and session cookies, shared by all replicas:
    /// `ONCOHOOKS__SMART__SESSION_SECRET`, at least 32 bytes. Unset: a
    /// random key per process (demo; refused in production with issuers).
    pub session_secret: Option<SecretString>,
    /// `lax` (default) or `none` (an EHR that embeds the app in an iframe;
    /// needs https, the cookie is then `Secure`).
    pub cookie_same_site: SameSite,
    pub clock_skew_seconds: u64,
    /// Longest accepted id_token lifetime (`exp - iat`).
    pub max_id_token_lifetime_seconds: u64,
    /// Deadline of one request to the EHR (discovery, token, JWKS).
    pub http_timeout_ms: u64,
    pub jwks_cache_seconds: u64,
    pub jwks_min_refetch_seconds: u64,
}

impl Default for SmartSettings {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            scope: "launch openid fhirUser user/RiskAssessment.read".into(),
            redirect_uri: None,
            session_lifetime_seconds: 3600,
            launch_lifetime_seconds: 600,
            session_secret: None,
            cookie_same_site: SameSite::Lax,
            clock_skew_seconds: 60,
            max_id_token_lifetime_seconds: 24 * 3600,
            http_timeout_ms: 5_000,
            jwks_cache_seconds: 300,
            jwks_min_refetch_seconds: 30,
        }
    }
}

impl std::fmt::Debug for SmartSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartSettings")
            .field("issuers", &self.issuers)
            .field("scope", &self.scope)
            .field("redirect_uri", &self.redirect_uri)
            .field(
                "session_secret",
                &self.session_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    Lax,
    None,
}

/// One EHR allowed to launch the review app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmartIssuer {
    /// The EHR's FHIR base URL: the `iss` launch parameter.
    pub iss: String,
    /// Our client id at that EHR.
    pub client_id: String,
    /// Confidential client: the secret from this file, or from the
    /// environment variable named here. Neither: a public client (PKCE).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// What a reviewer launched from this EHR may do here.
    #[serde(default = "default_grant")]
    pub grant: Vec<String>,
}

fn default_grant() -> Vec<String> {
    vec!["review.write".into()]
}

/// Why a launch was refused. Every variant is a 4xx the clinician (or the
/// EHR's integrator) can act on, or a 502 when the EHR itself failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("invalid [smart] configuration: {0}")]
    Config(String),
    #[error("missing query parameter `{0}`")]
    MissingParameter(&'static str),
    #[error("issuer {iss:?} is not allowed to launch the review app (smart.issuers)")]
    UntrustedIssuer { iss: String },
    #[error("the EHR's SMART configuration at {url} is unusable: {reason}")]
    Discovery { url: String, reason: String },
    #[error(
        "no SMART launch in progress in this browser: the launch cookie, which carries the state and from which the PKCE code_verifier is derived, is missing or expired; launch the app again from the EHR"
    )]
    NoLaunch,
    #[error(
        "state does not match the launch in progress (RFC 6749 §10.12); launch again from the EHR"
    )]
    StateMismatch,
    #[error("the EHR refused the authorization: {0}")]
    Denied(String),
    #[error("the EHR's token endpoint refused the code: {0}")]
    TokenRefused(String),
    #[error("the EHR's token endpoint failed: {0}")]
    TokenEndpoint(String),
    #[error(
        "the token response has no id_token: the scopes `openid fhirUser` were not granted, so the reviewer cannot be identified"
    )]
    NoIdToken,
    #[error("the EHR's id_token is not valid: {0}")]
    IdToken(String),
    #[error("launch context: {0}")]
    Context(String),
}

impl LaunchError {
    pub fn status(&self) -> u16 {
        match self {
            LaunchError::Config(_) => 500,
            LaunchError::MissingParameter(_)
            | LaunchError::NoLaunch
            | LaunchError::StateMismatch
            | LaunchError::TokenRefused(_)
            | LaunchError::Context(_) => 400,
            LaunchError::IdToken(_) => 401,
            LaunchError::UntrustedIssuer { .. }
            | LaunchError::Denied(_)
            | LaunchError::NoIdToken => 403,
            LaunchError::Discovery { .. } | LaunchError::TokenEndpoint(_) => 502,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            LaunchError::Config(_) => "internal_error",
            LaunchError::MissingParameter(_) => "invalid_request",
            LaunchError::UntrustedIssuer { .. } => "untrusted_issuer",
            LaunchError::Discovery { .. } => "smart_discovery_failed",
            LaunchError::NoLaunch => "no_launch_in_progress",
            LaunchError::StateMismatch => "state_mismatch",
            LaunchError::Denied(_) => "access_denied",
            LaunchError::TokenRefused(_) => "token_exchange_refused",
            LaunchError::TokenEndpoint(_) => "token_endpoint_failed",
            LaunchError::NoIdToken => "no_id_token",
            LaunchError::IdToken(_) => "invalid_id_token",
            LaunchError::Context(_) => "invalid_launch_context",
        }
    }

    /// The query parameter at fault, if one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            LaunchError::MissingParameter(p) => Some(p),
            LaunchError::UntrustedIssuer { .. } => Some("iss"),
            LaunchError::StateMismatch => Some("state"),
            LaunchError::TokenRefused(_) => Some("code"),
            _ => None,
        }
    }
}

/// A started launch: where to send the browser and the cookie to set.
pub struct Begun {
    pub authorize_url: Url,
    pub cookie: String,
    pub max_age: Duration,
}

/// What the EHR told us at the end of a launch.
#[derive(Debug)]
pub struct Completed {
    pub identity: Identity,
    /// Scopes the reviewer gets here (the issuer's `grant`).
    pub grant: Vec<String>,
    /// `patient` of the token response.
    pub patient: Option<String>,
    /// The prediction named by `appContext` (CDS Hooks 2.0 §Link: the
    /// card's appContext comes back in the token response).
    pub prediction_id: Option<uuid::Uuid>,
}

struct Client {
    iss: String,
    client_id: String,
    secret: Option<SecretSource>,
    grant: Vec<String>,
}

enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    fn read(&self) -> Result<SecretString, LaunchError> {
        let text = match self {
            SecretSource::File(p) => std::fs::read_to_string(p).map_err(|e| {
                LaunchError::Config(format!(
                    "reading client secret {}: {}",
                    p.display(),
                    e.kind()
                ))
            })?,
            SecretSource::Env(name) => std::env::var(name).map_err(|_| {
                LaunchError::Config(format!("client secret variable {name} is not set"))
            })?,
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(LaunchError::Config("the client secret is empty".into()));
        }
        Ok(SecretString::from(t.to_owned()))
    }
}

/// The review app's SMART client. Cheap to clone.
#[derive(Clone)]
pub struct SmartLauncher {
    inner: Arc<Inner>,
}

struct Inner {
    clients: HashMap<String, Client>,
    scope: String,
    redirect_uri: Option<String>,
    keys: SessionKeys,
    http: reqwest::Client,
    session_lifetime: Duration,
    launch_lifetime: Duration,
    same_site: SameSite,
    skew: i64,
    max_id_token_lifetime: i64,
    fetch: FetchPolicy,
    /// JWK Sets by URL (only URLs from allow-listed issuers' discovery).
    jwks: Mutex<HashMap<String, Arc<KeySource>>>,
}

impl std::fmt::Debug for SmartLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut iss: Vec<&str> = self.inner.clients.keys().map(String::as_str).collect();
        iss.sort_unstable();
        f.debug_struct("SmartLauncher")
            .field("issuers", &iss)
            .finish_non_exhaustive()
    }
}

/// Issuer URLs compare without a trailing slash.
fn normalise(iss: &str) -> String {
    iss.trim().trim_end_matches('/').to_owned()
}

impl SmartLauncher {
    /// Checks `[smart]`. `public_base_url` gives the default redirect URI.
    pub fn new(
        settings: &SmartSettings,
        public_base_url: Option<&str>,
    ) -> Result<Self, LaunchError> {
        let config = |m: String| LaunchError::Config(m);
        if let Some(s) = &settings.session_secret
            && s.expose_secret().len() < session::MIN_SECRET_BYTES
        {
            return Err(config(format!(
                "smart.session_secret must be at least {} bytes",
                session::MIN_SECRET_BYTES
            )));
        }
        if settings.session_lifetime_seconds == 0 || settings.launch_lifetime_seconds == 0 {
            return Err(config("session and launch lifetimes must be > 0".into()));
        }
        if settings.jwks_cache_seconds < settings.jwks_min_refetch_seconds {
            return Err(config(
                "smart.jwks_cache_seconds must not be shorter than jwks_min_refetch_seconds".into(),
            ));
        }
        let mut clients = HashMap::new();
        for i in &settings.issuers {
            let iss = normalise(&i.iss);
            crate::fhir::client::secure_url(&iss, "smart issuer").map_err(config)?;
            if i.client_id.is_empty() {
                return Err(config(format!("issuer {iss:?}: client_id is empty")));
            }
            if let Some(g) = i.grant.iter().find(|g| !GRANTABLE.contains(&g.as_str())) {
                return Err(config(format!(
                    "issuer {iss:?}: grant {g:?} is not one of {GRANTABLE:?}"
                )));
            }
            let secret = match (&i.client_secret_file, &i.client_secret_env) {
                (Some(f), None) => Some(SecretSource::File(f.clone())),
                (None, Some(e)) => Some(SecretSource::Env(e.clone())),
                (None, None) => None,
                (Some(_), Some(_)) => {
                    return Err(config(format!(
                        "issuer {iss:?}: set at most one of client_secret_file and client_secret_env"
                    )));
                }
            };
            let client = Client {
                iss: iss.clone(),
                client_id: i.client_id.clone(),
                secret,
                grant: i.grant.clone(),
            };
            if clients.insert(iss.clone(), client).is_some() {
                return Err(config(format!("issuer {iss:?} is listed twice")));
            }
        }
        let redirect_uri = settings.redirect_uri.clone().or_else(|| {
            public_base_url.map(|b| format!("{}/review/callback", b.trim_end_matches('/')))
        });
        let timeout = Duration::from_millis(settings.http_timeout_ms.max(1));
        let secs = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(Self {
            inner: Arc::new(Inner {
                clients,
                scope: settings.scope.trim().to_owned(),
                redirect_uri,
                keys: SessionKeys::new(settings.session_secret.as_ref()),
                http: crate::fhir::client::http_client(timeout),
                session_lifetime: Duration::from_secs(settings.session_lifetime_seconds),
                launch_lifetime: Duration::from_secs(settings.launch_lifetime_seconds),
                same_site: settings.cookie_same_site,
                skew: secs(settings.clock_skew_seconds),
                max_id_token_lifetime: secs(settings.max_id_token_lifetime_seconds),
                fetch: FetchPolicy {
                    ttl: Duration::from_secs(settings.jwks_cache_seconds),
                    min_refetch: Duration::from_secs(settings.jwks_min_refetch_seconds),
                    timeout,
                },
                jwks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The redirect URI: configured, else `base` + `/review/callback`.
    pub fn redirect_uri(&self, base: &str) -> String {
        self.inner
            .redirect_uri
            .clone()
            .unwrap_or_else(|| format!("{}/review/callback", base.trim_end_matches('/')))
    }

    /// `Set-Cookie` attributes for our cookies: HttpOnly always; Secure on
    /// https (and always with SameSite=None, which browsers require).
    pub fn cookie_attributes(&self, https: bool, max_age: Duration) -> String {
        let same_site = match self.inner.same_site {
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        };
        let secure = if https || self.inner.same_site == SameSite::None {
            "; Secure"
        } else {
            ""
        };
        format!(
            "Path=/review; HttpOnly; SameSite={same_site}; Max-Age={}{secure}",
            max_age.as_secs()
        )
    }

    /// Step 1: check the issuer, discover its endpoints, and build the
    /// authorization request.
    #[tracing::instrument(name = "Starting a SMART EHR launch", skip_all)]
    pub async fn begin(
        &self,
        iss: &str,
        launch: &str,
        redirect_uri: &str,
    ) -> Result<Begun, LaunchError> {
        let iss = normalise(iss);
        let client = self
            .inner
            .clients
            .get(&iss)
            .ok_or_else(|| LaunchError::UntrustedIssuer {
                iss: super::error::clip(&iss),
            })?;
        if launch.is_empty() {
            return Err(LaunchError::MissingParameter("launch"));
        }
        let conf = self.discover(&client.iss).await?;
        let state = random_b64(32);
        let nonce = random_b64(24);
        let verifier = self.inner.keys.code_verifier(&state);
        let mut url = conf.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("launch", launch)
            .append_pair("scope", &self.inner.scope)
            .append_pair("state", &state)
            // SMART 2.0 §"Obtain authorization code": `aud` is the FHIR
            // base the app will use, so a token cannot leak to another one.
            .append_pair("aud", &client.iss)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &s256_challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        let claims = LaunchClaims {
            state,
            nonce,
            fhir: client.iss.clone(),
            oidc_issuer: conf.issuer,
            token_endpoint: conf.token_endpoint.to_string(),
            jwks_uri: conf.jwks_uri.to_string(),
            redirect_uri: redirect_uri.to_owned(),
            exp: expires_in(self.inner.launch_lifetime),
        };
        Ok(Begun {
            authorize_url: url,
            cookie: self.inner.keys.sign_launch(&claims),
            max_age: self.inner.launch_lifetime,
        })
    }

    /// Step 2: the authorization server sent the browser back.
    #[tracing::instrument(name = "Completing a SMART EHR launch", skip_all)]
    pub async fn complete(
        &self,
        cookie: Option<&str>,
        params: &HashMap<String, String>,
    ) -> Result<Completed, LaunchError> {
        let launch = cookie
            .and_then(|c| self.inner.keys.open_launch(c))
            .ok_or(LaunchError::NoLaunch)?;
        let state = params
            .get("state")
            .ok_or(LaunchError::MissingParameter("state"))?;
        // Compare digests, so the comparison's time says nothing about the
        // expected value.
        if s256_challenge(state) != s256_challenge(&launch.state) {
            return Err(LaunchError::StateMismatch);
        }
        // RFC 6749 §4.1.2.1: the authorization server's refusal.
        if let Some(e) = params.get("error") {
            let d = params
                .get("error_description")
                .map(|d| format!(": {}", super::error::clip(d)))
                .unwrap_or_default();
            return Err(LaunchError::Denied(format!("{}{d}", super::error::clip(e))));
        }
        let code = params
            .get("code")
            .filter(|c| !c.is_empty())
            .ok_or(LaunchError::MissingParameter("code"))?;
        // The issuer may have been removed from the list since the launch.
        let client =
            self.inner
                .clients
                .get(&launch.fhir)
                .ok_or_else(|| LaunchError::UntrustedIssuer {
                    iss: launch.fhir.clone(),
                })?;
        let verifier = self.inner.keys.code_verifier(&launch.state);
        let tokens = self.exchange(client, &launch, code, &verifier).await?;
        // The access token (the EHR's, for the EHR's FHIR server) is
        // dropped here, unread.
        let id_token = tokens["id_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or(LaunchError::NoIdToken)?;
        let keys = self.jwks(&launch)?;
        let identity = id_token::verify(
            id_token,
            &keys,
            &id_token::Expected {
                issuer: &launch.oidc_issuer,
                client_id: &client.client_id,
                nonce: &launch.nonce,
                skew: self.inner.skew,
                max_lifetime: self.inner.max_id_token_lifetime,
            },
        )
        .await
        .map_err(|e| LaunchError::IdToken(e.to_string()))?;
        let patient = tokens["patient"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(super::error::clip);
        Ok(Completed {
            identity,
            grant: client.grant.clone(),
            patient,
            prediction_id: prediction_from_app_context(&tokens["appContext"])?,
        })
    }

    /// Our reviewer session for a completed launch, bound to `patient`.
    /// Returns the cookie value and its lifetime.
    pub fn session_cookie(&self, done: &Completed, patient: Option<&str>) -> (String, Duration) {
        let lifetime = self.inner.session_lifetime;
        let claims = SessionClaims {
            iss: done.identity.iss.clone(),
            sub: done.identity.user.clone(),
            scope: done.grant.join(" "),
            patient: patient.map(str::to_owned),
            iat: expires_in(Duration::ZERO),
            exp: expires_in(lifetime),
        };
        (self.inner.keys.sign_session(&claims), lifetime)
    }

    /// The reviewer behind a session cookie, or `None` (not ours, altered,
    /// expired).
    pub fn session(&self, cookie: &str) -> Option<Principal> {
        let c = self.inner.keys.open_session(cookie)?;
        Some(Principal {
            iss: c.iss,
            sub: c.sub,
            scopes: c.scope.split_whitespace().map(str::to_owned).collect(),
            patient: c.patient,
        })
    }

    async fn get_json(&self, url: &Url) -> Result<Value, String> {
        let resp = self
            .inner
            .http
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("unreachable: {}", e.without_url()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let body = crate::fhir::client::read_limited(resp, MAX_JSON).await;
        serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
    }

    /// SMART 2.0 §"Discovery": the well-known configuration of `iss`, with
    /// the OpenID configuration as the source of `jwks_uri` if the SMART one
    /// lacks it.
    async fn discover(&self, iss: &str) -> Result<Discovered, LaunchError> {
        let url = Url::parse(&format!("{iss}/.well-known/smart-configuration")).map_err(|e| {
            LaunchError::Discovery {
                url: iss.to_owned(),
                reason: e.to_string(),
            }
        })?;
        let failed = |reason: String| LaunchError::Discovery {
            url: url.to_string(),
            reason,
        };
        let doc = self.get_json(&url).await.map_err(failed)?;
        let endpoint = |name: &str| -> Result<Url, LaunchError> {
            let raw = doc[name]
                .as_str()
                .ok_or_else(|| failed(format!("no {name}")))?;
            crate::fhir::client::secure_url(raw, name).map_err(failed)
        };
        let authorization_endpoint = endpoint("authorization_endpoint")?;
        let token_endpoint = endpoint("token_endpoint")?;
        // SMART 2.0 requires S256 support; a server that does not advertise
        // it would ignore our code_challenge, and the code would be
        // redeemable without the verifier.
        let s256 = doc["code_challenge_methods_supported"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x == "S256"));
        if !s256 {
            return Err(failed(
                "code_challenge_methods_supported does not list S256 (PKCE is required)".into(),
            ));
        }
        let issuer = doc["issuer"]
            .as_str()
            .map(normalise_keep)
            .unwrap_or_else(|| iss.to_owned());
        let jwks_raw = match doc["jwks_uri"].as_str() {
            Some(j) => j.to_owned(),
            None => {
                let oidc = Url::parse(&format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                ))
                .map_err(|e| failed(e.to_string()))?;
                let odoc = self
                    .get_json(&oidc)
                    .await
                    .map_err(|r| LaunchError::Discovery {
                        url: oidc.to_string(),
                        reason: r,
                    })?;
                odoc["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| failed("no jwks_uri here nor in the OpenID configuration: the id_token cannot be verified".into()))?
                    .to_owned()
            }
        };
        let jwks_uri = parse_jwks_url(&issuer, &jwks_raw).map_err(|e| failed(e.to_string()))?;
        Ok(Discovered {
            issuer,
            authorization_endpoint,
            token_endpoint,
            jwks_uri,
        })
    }

    /// RFC 6749 §4.1.3 with RFC 7636 §4.5: the code and its verifier for
    /// the tokens.
    async fn exchange(
        &self,
        client: &Client,
        launch: &LaunchClaims,
        code: &str,
        verifier: &str,
    ) -> Result<Value, LaunchError> {
        let token_url = Url::parse(&launch.token_endpoint)
            .map_err(|e| LaunchError::TokenEndpoint(e.to_string()))?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", launch.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        let mut req = self
            .inner
            .http
            .post(token_url)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        let secret = client.secret.as_ref().map(SecretSource::read).transpose()?;
        match &secret {
            // SMART 2.0 §"Confidential app": HTTP Basic (RFC 6749 §2.3.1).
            Some(s) => {
                let enc = |v: &str| -> String {
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
                };
                use base64::Engine as _;
                let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    enc(&client.client_id),
                    enc(s.expose_secret())
                ));
                let mut v = HeaderValue::from_str(&format!("Basic {basic}"))
                    .map_err(|_| LaunchError::Config("client secret is not header-safe".into()))?;
                v.set_sensitive(true);
                req = req.header(AUTHORIZATION, v);
            }
            // A public client names itself in the body.
            None => form.push(("client_id", client.client_id.as_str())),
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp =
            req.body(body).send().await.map_err(|e| {
                LaunchError::TokenEndpoint(format!("unreachable: {}", e.without_url()))
            })?;
        let status = resp.status().as_u16();
        let bytes = crate::fhir::client::read_limited(resp, MAX_JSON).await;
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            // RFC 6749 §5.2: `error` and `error_description`.
            let why = match (json["error"].as_str(), json["error_description"].as_str()) {
                (Some(e), Some(d)) => {
                    format!("{} ({})", super::error::clip(e), super::error::clip(d))
                }
                (Some(e), None) => super::error::clip(e),
                _ => "no OAuth error body".into(),
            };
            let why = format!("HTTP {status}: {why}");
            return Err(if (400..500).contains(&status) {
                LaunchError::TokenRefused(why)
            } else {
                LaunchError::TokenEndpoint(why)
            });
        }
        if !json.is_object() {
            return Err(LaunchError::TokenEndpoint(
                "the token response is not a JSON object".into(),
            ));
        }
        Ok(json)
    }

    /// The key source for a launch's `jwks_uri`, cached per URL.
    fn jwks(&self, launch: &LaunchClaims) -> Result<Arc<KeySource>, LaunchError> {
        let mut map = self
            .inner
            .jwks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(k) = map.get(&launch.jwks_uri) {
            return Ok(k.clone());
        }
        let url = parse_jwks_url(&launch.oidc_issuer, &launch.jwks_uri)
            .map_err(|e| LaunchError::IdToken(e.to_string()))?;
        // Bounded: URLs come from signed launch cookies of allow-listed
        // issuers, but an issuer may rotate its URL.
        if map.len() >= 4 * self.inner.clients.len().max(1) {
            map.clear();
        }
        let keys = Arc::new(KeySource::Remote(RemoteJwks::new(
            url,
            self.inner.http.clone(),
            self.inner.fetch,
        )));
        map.insert(launch.jwks_uri.clone(), keys.clone());
        Ok(keys)
    }
}

/// The `issuer` as published (OpenID Connect compares it exactly), only
/// trimmed of whitespace.
fn normalise_keep(s: &str) -> String {
    s.trim().to_owned()
}

struct Discovered {
    issuer: String,
    authorization_endpoint: Url,
    token_endpoint: Url,
    jwks_uri: Url,
}

/// `appContext` is a string (CDS Hooks 2.0 §Link: the card's value, here
/// `{"predictionId": "…"}`); some EHRs pass it parsed. Absent: `None`.
fn prediction_from_app_context(v: &Value) -> Result<Option<uuid::Uuid>, LaunchError> {
    let parsed;
    let obj = match v {
        Value::Null => return Ok(None),
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|_| {
                LaunchError::Context(
                    "appContext is not the card's JSON ({\"predictionId\": …})".into(),
                )
            })?;
            &parsed
        }
        other => other,
    };
    let id = obj["predictionId"]
        .as_str()
        .ok_or_else(|| LaunchError::Context("appContext has no predictionId".into()))?;
    uuid::Uuid::parse_str(id)
        .map(Some)
        .map_err(|_| LaunchError::Context("appContext.predictionId is not a UUID".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_context_comes_as_a_string_or_an_object() {
        let id = uuid::Uuid::new_v4();
        let s = Value::String(format!("{{\"predictionId\":\"{id}\"}}"));
        assert_eq!(prediction_from_app_context(&s).unwrap(), Some(id));
        let o = serde_json::json!({"predictionId": id});
        assert_eq!(prediction_from_app_context(&o).unwrap(), Some(id));
        assert_eq!(prediction_from_app_context(&Value::Null).unwrap(), None);
        assert!(prediction_from_app_context(&Value::String("x".into())).is_err());
    }

    #[test]
    fn settings_refuse_short_secrets_wide_grants_and_http_issuers() {
        let issuer = |iss: &str, grant: &[&str]| SmartIssuer {
            iss: iss.into(),
            client_id: "c".into(),
            client_secret_file: None,
            client_secret_env: None,
            grant: grant.iter().map(|g| g.to_string()).collect(),
        };
        let mut s = SmartSettings {
            issuers: vec![issuer("https://ehr.example.org/fhir/", &["review.write"])],
            ..Default::default()
        };
        let l = SmartLauncher::new(&s, Some("https://cds.example.org/")).unwrap();
        assert_eq!(
            l.redirect_uri("http://ignored"),
            "https://cds.example.org/review/callback"
        );
        s.session_secret = Some(SecretString::from("short"));
        assert!(SmartLauncher::new(&s, None).is_err());
        s.session_secret = None;
        s.issuers = vec![issuer("https://ehr.example.org/fhir", &["audit.export"])];
        assert!(SmartLauncher::new(&s, None).is_err());
        s.issuers = vec![issuer("http://ehr.example.org/fhir", &["review.write"])];
        assert!(SmartLauncher::new(&s, None).is_err());
    }

    #[test]
    fn sessions_round_trip_with_their_patient_and_cookies_are_httponly() {
        let l = SmartLauncher::new(&SmartSettings::default(), None).unwrap();
        let done = Completed {
            identity: Identity {
                iss: "https://ehr.example.org".into(),
                user: "https://ehr.example.org/fhir/Practitioner/7".into(),
            },
            grant: vec!["review.write".into()],
            patient: Some("p1".into()),
            prediction_id: None,
        };
        let (cookie, _) = l.session_cookie(&done, Some("p1"));
        let who = l.session(&cookie).unwrap();
        assert_eq!(who.sub, "https://ehr.example.org/fhir/Practitioner/7");
        assert_eq!(who.scopes, ["review.write"]);
        assert!(who.may_see_patient("p1") && !who.may_see_patient("p2"));
        assert!(l.session("not.a.cookie").is_none());
        let attrs = l.cookie_attributes(false, Duration::from_secs(60));
        assert!(attrs.contains("HttpOnly") && attrs.contains("SameSite=Lax"));
        assert!(!attrs.contains("Secure"));
        assert!(
            l.cookie_attributes(true, Duration::from_secs(60))
                .contains("; Secure")
        );
    }
}
