//! `[writeback]`: RiskAssessments written back to the EHR's FHIR server
//! (issue 6 item 1). Off by default; see `docs/audit.md` "Write-back".
//!
//! The hook never waits for a write-back: each stored prediction of an
//! enabled service enqueues a `riskassessment-writeback` job in the same
//! transaction as the prediction, and workers (`workers_in_serve`, or
//! `oncohooks worker`) PUT it with their **own** credential. The hook's
//! `fhirAuthorization` token is never used for it and never stored.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// How the resources are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WritebackMode {
    /// One `POST [base]` of a transaction Bundle whose entries are
    /// `PUT RiskAssessment/{id}` and `PUT Provenance/{id}` (FHIR R4
    /// §3.1.0.11.2): both land or neither does.
    #[default]
    Transaction,
    /// `PUT [base]/RiskAssessment/{id}`, then `PUT [base]/Provenance/{id}`:
    /// for servers that take no transactions. A retry repeats both (PUT is
    /// idempotent).
    Update,
}

impl WritebackMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WritebackMode::Transaction => "transaction",
            WritebackMode::Update => "update",
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WritebackSettings {
    /// Master switch. Off: no job is ever enqueued.
    pub enabled: bool,
    /// Services whose predictions are written back; `"*"` is every service.
    pub services: Vec<String>,
    /// The EHR's FHIR base URL. It must be on `fhir.allowed_servers`
    /// (start-up refuses otherwise, and the worker checks again).
    pub base_url: Option<String>,
    pub mode: WritebackMode,
    /// Send the Provenance with the RiskAssessment.
    pub include_provenance: bool,
    /// Workers `oncohooks serve` runs when enabled; 0 leaves the queue to
    /// `oncohooks worker`.
    pub workers_in_serve: usize,
    /// Workers `oncohooks worker` runs when enabled.
    pub workers: usize,
    /// Attempts before a job is dead-lettered (5xx, 429, network errors).
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt up to `retry_cap_seconds`
    /// (with jitter, `store::Backoff`).
    pub retry_base_ms: u64,
    pub retry_cap_seconds: u64,
    pub lease_seconds: u64,
    pub poll_interval_ms: u64,
    /// Deadline of one HTTP request to the EHR (and to its token endpoint).
    pub request_timeout_ms: u64,
    pub auth: WritebackAuthSettings,
}

impl Default for WritebackSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            services: vec!["*".into()],
            base_url: None,
            mode: WritebackMode::Transaction,
            include_provenance: true,
            workers_in_serve: 1,
            workers: 1,
            max_attempts: 8,
            retry_base_ms: 10_000,
            retry_cap_seconds: 30 * 60,
            lease_seconds: 60,
            poll_interval_ms: 1000,
            request_timeout_ms: 15_000,
            auth: WritebackAuthSettings::default(),
        }
    }
}

impl WritebackSettings {
    /// Whether predictions of `service_id` are written back.
    pub fn covers(&self, service_id: &str) -> bool {
        self.enabled && self.services.iter().any(|s| s == "*" || s == service_id)
    }
}

impl std::fmt::Debug for WritebackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WritebackSettings")
            .field("enabled", &self.enabled)
            .field("services", &self.services)
            .field("base_url", &self.base_url)
            .field("mode", &self.mode)
            .field("include_provenance", &self.include_provenance)
            .field("workers_in_serve", &self.workers_in_serve)
            .field("max_attempts", &self.max_attempts)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// How the write-back workers authenticate to the EHR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WritebackAuthMethod {
    /// No Authorization header (a loopback test server).
    #[default]
    None,
    /// A static bearer token: `bearer_token` (environment) or
    /// `bearer_token_file` (re-read for every request, so a rotated
    /// Kubernetes secret is picked up).
    Bearer,
    /// OAuth 2.0 client credentials grant (RFC 6749 §4.4) at `token_url`;
    /// the token is kept in memory until shortly before it expires.
    ClientCredentials,
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with the URL-encoded id and secret (the spec's MUST).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WritebackAuthSettings {
    pub method: WritebackAuthMethod,
    /// Set through `ONCOHOOKS__WRITEBACK__AUTH__BEARER_TOKEN`, never in a file.
    pub bearer_token: Option<SecretString>,
    pub bearer_token_file: Option<PathBuf>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    /// Set through `ONCOHOOKS__WRITEBACK__AUTH__CLIENT_SECRET`, never in a file.
    pub client_secret: Option<SecretString>,
    pub client_secret_file: Option<PathBuf>,
    pub client_auth: ClientAuthMethod,
    /// Scopes asked for (SMART Backend Services v1 style by default; v2
    /// servers take `system/RiskAssessment.cu system/Provenance.cu`).
    pub scope: String,
}

impl Default for WritebackAuthSettings {
    fn default() -> Self {
        Self {
            method: WritebackAuthMethod::None,
            bearer_token: None,
            bearer_token_file: None,
            token_url: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            client_auth: ClientAuthMethod::ClientSecretBasic,
            scope: "system/RiskAssessment.write system/Provenance.write".into(),
        }
    }
}

impl std::fmt::Debug for WritebackAuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<SecretString>| s.as_ref().map(|_| "[REDACTED]");
        f.debug_struct("WritebackAuthSettings")
            .field("method", &self.method)
            .field("bearer_token", &redacted(&self.bearer_token))
            .field("bearer_token_file", &self.bearer_token_file)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .field("client_secret_file", &self.client_secret_file)
            .field("client_auth", &self.client_auth)
            .field("scope", &self.scope)
            .finish()
    }
}
