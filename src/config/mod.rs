//! Layered configuration: embedded demo defaults, then an optional file, then
//! `ONCOHOOKS__SECTION__KEY` environment variables (zero-to-production style).
//!
//! Values from the environment are parsed as TOML scalars or arrays where
//! possible (`ONCOHOOKS__FHIR__PAGE_CAP=5`, `ONCOHOOKS__FHIR__ALLOWED_SERVERS=["https://ehr/fhir"]`),
//! else taken as strings.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use toml::{Table, Value};

use crate::auth::AuthSettings;
use crate::auth::SmartSettings;
use crate::auth::access::AccessSettings;
use crate::clinical::Cutoffs;
use crate::imaging::dicomweb::DicomWebConfig;

mod writeback;

pub use writeback::{
    ClientAuthMethod, WritebackAuthMethod, WritebackAuthSettings, WritebackMode, WritebackSettings,
};

const DEFAULTS: &str = include_str!("default.toml");
const ENV_PREFIX: &str = "ONCOHOOKS__";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Demo key trusted, loopback FHIR servers allowed, `dev-token` enabled.
    Demo,
    /// Nothing trusted unless configured.
    Production,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub profile: Profile,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub fhir: FhirSettings,
    #[serde(default)]
    pub auth: AuthSettings,
    /// Bearer tokens of people and systems reading our outputs (FHIR
    /// RiskAssessment, audit API, review app): `src/auth/access.rs`.
    #[serde(default)]
    pub access: AccessSettings,
    #[serde(default)]
    pub clinical: Cutoffs,
    pub services: ServicesSettings,
    pub logging: LoggingSettings,
    #[serde(default)]
    pub scoring: ScoringSettings,
    #[serde(default)]
    pub imaging: ImagingSettings,
    #[serde(default)]
    pub models: ModelsSettings,
    /// Optional write-back of RiskAssessments to the EHR (off by default).
    #[serde(default)]
    pub writeback: WritebackSettings,
    /// SMART App Launch of the review app (`src/auth/smart/`).
    #[serde(default)]
    pub smart: SmartSettings,
}

/// `[models]`: where model files live (see `docs/models.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ModelsSettings {
    /// all-MiniLM-L6-v2 folder (`scripts/setup-models.sh`); relative paths
    /// are relative to the working directory.
    pub text_encoder_dir: PathBuf,
    /// Threads of the text encoder's own inference pool.
    pub text_encoder_threads: usize,
    /// Word pieces of new (uncached) notes a hook may embed inline; the
    /// rest are queued and count as missing until embedded (issue 4 §6).
    /// 0: never inline.
    pub notes_inline_token_budget: usize,
    /// Note vectors each process keeps in memory after reading them from
    /// the shared cache (384 floats, ~1.6 KB each); 0: read the database
    /// on every hook.
    pub note_vectors_in_memory: usize,
    /// Threads of the cachexia model's dedicated inference pool
    /// (`services::inference`); 0: half the CPUs, at least one.
    pub inference_threads: usize,
    /// Most hooks whose cachexia model calls run in one pass when they
    /// queue together (`services::inference::Batcher`); 1: one at a time.
    pub inference_batch: usize,
}

impl Default for ModelsSettings {
    fn default() -> Self {
        Self {
            text_encoder_dir: crate::ml::text_encoder::default_dir(),
            text_encoder_threads: 2,
            notes_inline_token_budget: 512,
            note_vectors_in_memory: 20_000,
            inference_threads: 0,
            inference_batch: crate::services::cachexia::DEFAULT_MAX_BATCH,
        }
    }
}

/// `[imaging]`: the CT job queue's workers and the PACS they read from.
/// Imaging never runs inside a hook (DESIGN.md "Latency design"): the hook
/// looks up cached results and enqueues what is missing; workers — in
/// `serve` (`workers_in_serve`) or in `oncohooks worker` processes — fetch
/// and analyse. See `docs/imaging.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ImagingSettings {
    /// Workers `oncohooks serve` runs in-process; 0 leaves the queue to
    /// `oncohooks worker` (a separate deployment).
    pub workers_in_serve: usize,
    /// Workers `oncohooks worker` runs (`--workers` overrides).
    pub workers: usize,
    /// Attempts of a job before it is dead-lettered (retryable failures).
    pub max_attempts: i32,
    /// Job lease; renewed every third of it while the job runs.
    pub lease_seconds: u64,
    /// Sleep of an idle worker between claims.
    pub poll_interval_ms: u64,
    /// Time a hook may spend on cache look-ups and enqueues, all CT series
    /// together; past it the rest counts as missing.
    pub hook_budget_ms: u64,
    /// CT studies considered per hook (newest first).
    pub max_studies_per_hook: usize,
    pub dicomweb: DicomWebSettings,
}

impl Default for ImagingSettings {
    /// Safe without configuration: no workers, no PACS allowed.
    fn default() -> Self {
        Self {
            workers_in_serve: 0,
            workers: 2,
            max_attempts: 5,
            lease_seconds: 300,
            poll_interval_ms: 1000,
            hook_budget_ms: 300,
            max_studies_per_hook: 3,
            dicomweb: DicomWebSettings::default(),
        }
    }
}

/// `[imaging.dicomweb]`: the client settings plus the workers' credential.
/// The hook's FHIR access token is never used for the PACS: jobs are
/// persisted, and a token must not be.
#[derive(Clone, Default, Deserialize)]
pub struct DicomWebSettings {
    #[serde(flatten)]
    pub client: DicomWebConfig,
    /// Bearer token the workers send to the PACS; set it through
    /// `ONCOHOOKS__IMAGING__DICOMWEB__BEARER_TOKEN`, never in a file.
    /// Unset: anonymous (a loopback PACS in the demo).
    #[serde(default)]
    pub bearer_token: Option<SecretString>,
}

impl std::fmt::Debug for DicomWebSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomWebSettings")
            .field("client", &self.client)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ScoringSettings {
    /// Pin the index date ("YYYY-MM-DD") for reproducible demos and tests.
    /// Unset: today (UTC). Refused in the production profile.
    #[serde(default)]
    pub index_date: Option<chrono::NaiveDate>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub bind: String,
    #[serde(default)]
    pub public_base_url: Option<String>,
    pub max_body_bytes: usize,
    pub hook_deadline_ms: u64,
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
    /// actix worker threads; default: number of CPUs.
    #[serde(default)]
    pub workers: Option<usize>,
}

#[derive(Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `sqlite://path` or `postgres://…`; may hold a password, hence secret.
    pub url: SecretString,
    pub max_connections: u32,
    pub spool_dir: PathBuf,
    pub spool_replay_interval_seconds: u64,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(self.url.expose_secret()))
            .field("max_connections", &self.max_connections)
            .field("spool_dir", &self.spool_dir)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct FhirSettings {
    pub allowed_servers: Vec<String>,
    pub page_cap: usize,
    pub page_size: usize,
    pub max_concurrent_requests: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServicesSettings {
    /// Folder holding one sub-folder per service (`cds-hooks/<id>/service.toml`).
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LoggingSettings {
    pub json: bool,
    pub level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {name}: {reason}")]
    Env { name: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Defaults ← file ← process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Same as [`Settings::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: Table = DEFAULTS.parse().expect("embedded default.toml is valid");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let overlay: Table = text.parse().map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
            merge(&mut table, overlay);
        }
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        env.sort();
        for (name, raw) in env {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_lowercase)
                .collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::Env {
                    name,
                    reason: "empty key segment".into(),
                });
            }
            set_path(&mut table, &path, parse_env_value(&raw)).map_err(|reason| {
                ConfigError::Env {
                    name: name.clone(),
                    reason,
                }
            })?;
        }
        let settings = Settings::deserialize(Value::Table(table))
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.profile == Profile::Production {
            if self.auth.demo {
                return Err(ConfigError::Invalid(
                    "auth.demo must be false in the production profile".into(),
                ));
            }
            if self.access.demo {
                return Err(ConfigError::Invalid(
                    "access.demo must be false in the production profile".into(),
                ));
            }
            if !self.auth.required {
                return Err(ConfigError::Invalid(
                    "auth.required must be true in the production profile".into(),
                ));
            }
            if !self.smart.issuers.is_empty() && self.smart.session_secret.is_none() {
                return Err(ConfigError::Invalid(
                    "smart.session_secret (ONCOHOOKS__SMART__SESSION_SECRET, at least 32 bytes) is required in the production profile when smart.issuers are listed: replicas must share it".into(),
                ));
            }
            if self.scoring.index_date.is_some() {
                return Err(ConfigError::Invalid(
                    "scoring.index_date is for demos and tests, not the production profile".into(),
                ));
            }
            if self
                .fhir
                .allowed_servers
                .iter()
                .any(|s| s.eq_ignore_ascii_case("loopback"))
            {
                tracing::warn!("production profile allows loopback FHIR servers");
            }
        }
        let im = &self.imaging;
        if im.max_attempts < 1 {
            return Err(ConfigError::Invalid(
                "imaging.max_attempts must be at least 1".into(),
            ));
        }
        if im.lease_seconds < 10 {
            return Err(ConfigError::Invalid(
                "imaging.lease_seconds must be at least 10".into(),
            ));
        }
        if self.profile == Profile::Production
            && im
                .dicomweb
                .client
                .allowed_base_urls
                .iter()
                .any(|s| s.trim().eq_ignore_ascii_case("loopback"))
        {
            tracing::warn!("production profile allows loopback DICOMweb servers");
        }
        self.validate_writeback()?;
        if self.models.text_encoder_threads == 0 {
            return Err(ConfigError::Invalid(
                "models.text_encoder_threads must be at least 1".into(),
            ));
        }
        if self.server.hook_deadline_ms == 0 {
            return Err(ConfigError::Invalid(
                "server.hook_deadline_ms must be > 0".into(),
            ));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "server.max_body_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }

    /// Write-back settings are checked even when it is off, so that turning
    /// it on later does not reveal a typo; the allow-list only when on.
    fn validate_writeback(&self) -> Result<(), ConfigError> {
        let wb = &self.writeback;
        let invalid = |m: String| Err(ConfigError::Invalid(format!("writeback.{m}")));
        if wb.max_attempts < 1 {
            return invalid("max_attempts must be at least 1".into());
        }
        if wb.lease_seconds < 10 {
            return invalid("lease_seconds must be at least 10".into());
        }
        if wb.request_timeout_ms == 0 {
            return invalid("request_timeout_ms must be > 0".into());
        }
        if !wb.enabled {
            return Ok(());
        }
        if wb.services.is_empty() {
            return invalid("services is empty: list service ids, or \"*\" for all".into());
        }
        let Some(base) = wb.base_url.as_deref() else {
            return invalid("base_url is required when write-back is enabled".into());
        };
        let url = match url::Url::parse(base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => return invalid(format!("base_url {base:?} is not an http(s) URL")),
        };
        if !crate::fhir::client::AllowList::new(&self.fhir.allowed_servers).allows(&url) {
            return invalid(format!(
                "base_url {base:?} is not on fhir.allowed_servers: nothing is written to a server that is not allow-listed"
            ));
        }
        let auth = &wb.auth;
        match auth.method {
            WritebackAuthMethod::None => {
                if self.profile == Profile::Production {
                    tracing::warn!(
                        "writeback.auth.method is none: write-backs are unauthenticated"
                    );
                }
            }
            WritebackAuthMethod::Bearer => {
                if auth.bearer_token.is_some() == auth.bearer_token_file.is_some() {
                    return invalid(
                        "auth: method bearer needs exactly one of bearer_token (ONCOHOOKS__WRITEBACK__AUTH__BEARER_TOKEN) and bearer_token_file".into(),
                    );
                }
            }
            WritebackAuthMethod::ClientCredentials => {
                if auth.token_url.is_none() || auth.client_id.is_none() {
                    return invalid(
                        "auth: method client-credentials needs token_url and client_id".into(),
                    );
                }
                if auth.client_secret.is_some() == auth.client_secret_file.is_some() {
                    return invalid(
                        "auth: method client-credentials needs exactly one of client_secret (ONCOHOOKS__WRITEBACK__AUTH__CLIENT_SECRET) and client_secret_file".into(),
                    );
                }
            }
        }
        Ok(())
    }

    pub fn is_demo(&self) -> bool {
        self.profile == Profile::Demo && self.auth.demo
    }
}

fn merge(base: &mut Table, overlay: Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set_path(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = match entry {
            Value::Table(t) => t,
            _ => return Err(format!("`{p}` is not a table")),
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

fn parse_env_value(raw: &str) -> Value {
    // Parse as the right-hand side of a TOML assignment; fall back to a string.
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        // Dates stay strings: the settings types parse them (chrono).
        .map(|v| match v {
            Value::Datetime(d) => Value::String(d.to_string()),
            v => v,
        })
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_are_the_demo_profile() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.profile, Profile::Demo);
        assert!(s.is_demo());
        assert_eq!(s.server.hook_deadline_ms, 3000);
        assert!(s.database.url.expose_secret().starts_with("sqlite://"));
        assert_eq!(
            s.models.text_encoder_dir,
            Path::new("models/all-MiniLM-L6-v2")
        );
        assert_eq!(s.models.text_encoder_threads, 2);
        assert_eq!(s.models.notes_inline_token_budget, 512);
        assert_eq!(s.models.note_vectors_in_memory, 20_000);
        assert_eq!(s.models.inference_batch, 8);
    }

    #[test]
    fn environment_overrides_nested_keys_with_typed_values() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("ONCOHOOKS__FHIR__PAGE_CAP", "3"),
                (
                    "ONCOHOOKS__FHIR__ALLOWED_SERVERS",
                    r#"["https://ehr.example/fhir"]"#,
                ),
                ("ONCOHOOKS__DATABASE__URL", "postgres://u:pw@db/onco"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.fhir.page_cap, 3);
        assert_eq!(s.fhir.allowed_servers, vec!["https://ehr.example/fhir"]);
        assert!(!format!("{:?}", s.database).contains("pw"));
        let s = Settings::load_with_env(
            None,
            env(&[("ONCOHOOKS__SCORING__INDEX_DATE", "2026-11-20")]),
        )
        .unwrap();
        assert_eq!(s.scoring.index_date.unwrap().to_string(), "2026-11-20");
    }

    #[test]
    fn production_profile_refuses_demo_trust() {
        let err = Settings::load_with_env(None, env(&[("ONCOHOOKS__PROFILE", "production")]))
            .unwrap_err();
        assert!(err.to_string().contains("auth.demo"), "{err}");
    }

    #[test]
    fn shipped_production_config_is_valid_and_locked_down() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/production.toml");
        let s = Settings::load_with_env(Some(&path), env(&[])).unwrap();
        assert_eq!(s.profile, Profile::Production);
        assert!(s.fhir.allowed_servers.is_empty());
        assert!(s.auth.required && !s.auth.demo);
        // Imaging runs in its own deployment (`oncohooks worker`) and no
        // PACS is trusted until configured.
        assert_eq!(s.imaging.workers_in_serve, 0);
        assert!(s.imaging.dicomweb.client.allowed_base_urls.is_empty());
    }

    #[test]
    fn write_back_is_off_by_default_and_checked_when_switched_on() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert!(!s.writeback.enabled);
        assert!(!s.writeback.covers("cachexia-risk"));
        let on = |extra: &[(&str, &str)]| {
            let mut e = vec![("ONCOHOOKS__WRITEBACK__ENABLED", "true")];
            e.extend_from_slice(extra);
            Settings::load_with_env(None, env(&e))
        };
        let err = on(&[]).unwrap_err();
        assert!(err.to_string().contains("writeback.base_url"), "{err}");
        let err = on(&[(
            "ONCOHOOKS__WRITEBACK__BASE_URL",
            "https://ehr.example.org/fhir",
        )])
        .unwrap_err();
        assert!(err.to_string().contains("fhir.allowed_servers"), "{err}");
        let base = [
            (
                "ONCOHOOKS__WRITEBACK__BASE_URL",
                "https://ehr.example.org/fhir",
            ),
            (
                "ONCOHOOKS__FHIR__ALLOWED_SERVERS",
                r#"["https://ehr.example.org/fhir"]"#,
            ),
        ];
        let s = on(&base).unwrap();
        assert!(s.writeback.covers("cachexia-risk"));
        let mut bearer = base.to_vec();
        bearer.push(("ONCOHOOKS__WRITEBACK__AUTH__METHOD", "bearer"));
        let err = on(&bearer).unwrap_err();
        assert!(err.to_string().contains("bearer_token"), "{err}");
        bearer.push((
            "ONCOHOOKS__WRITEBACK__AUTH__BEARER_TOKEN",
            "wb-secret-token",
        ));
        let s = on(&bearer).unwrap();
        assert!(!format!("{s:?}").contains("wb-secret-token"));
        let mut cc = base.to_vec();
        cc.push(("ONCOHOOKS__WRITEBACK__AUTH__METHOD", "client-credentials"));
        let err = on(&cc).unwrap_err();
        assert!(err.to_string().contains("token_url"), "{err}");
    }

    #[test]
    fn production_needs_a_shared_session_secret_once_smart_issuers_are_listed() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/production.toml");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(
            "\n[[smart.issuers]]\niss = \"https://ehr.example.org/fhir\"\nclient_id = \"c\"\n",
        );
        std::fs::write(&file, text).unwrap();
        let err = Settings::load_with_env(Some(&file), env(&[])).unwrap_err();
        assert!(err.to_string().contains("smart.session_secret"), "{err}");
        let s = Settings::load_with_env(
            Some(&file),
            env(&[("ONCOHOOKS__SMART__SESSION_SECRET", &"k".repeat(40))]),
        )
        .unwrap();
        assert_eq!(s.smart.issuers.len(), 1);
        assert!(!format!("{s:?}").contains("kkkk"));
    }

    #[test]
    fn imaging_defaults_and_the_pacs_token_from_the_environment() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.imaging.workers_in_serve, 1);
        assert_eq!(
            s.imaging.dicomweb.client.allowed_base_urls,
            vec!["loopback"]
        );
        assert!(s.imaging.dicomweb.bearer_token.is_none());
        let s = Settings::load_with_env(
            None,
            env(&[
                (
                    "ONCOHOOKS__IMAGING__DICOMWEB__BEARER_TOKEN",
                    "pacs-secret.token",
                ),
                ("ONCOHOOKS__IMAGING__DICOMWEB__DEADLINE_SECS", "30"),
                ("ONCOHOOKS__IMAGING__WORKERS_IN_SERVE", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.imaging
                .dicomweb
                .bearer_token
                .as_ref()
                .unwrap()
                .expose_secret(),
            "pacs-secret.token"
        );
        assert_eq!(s.imaging.dicomweb.client.deadline_secs, 30);
        assert_eq!(s.imaging.workers_in_serve, 0);
        assert!(!format!("{s:?}").contains("pacs-secret"));
        let err = Settings::load_with_env(None, env(&[("ONCOHOOKS__IMAGING__MAX_ATTEMPTS", "0")]))
            .unwrap_err();
        assert!(err.to_string().contains("imaging.max_attempts"), "{err}");
    }
}
