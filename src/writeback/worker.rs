//! The `riskassessment-writeback` job: PUT the stored prediction's
//! RiskAssessment (and Provenance) to the EHR's FHIR server.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::watch;
use url::Url;

use super::credential::{clip, scrub};
use super::{Credential, JOB_KIND, WritebackError, WritebackJob};
use crate::config::{Settings, WritebackMode, WritebackSettings};
use crate::fhir::client::AllowList;
use crate::fhir::client::read_limited;
use crate::fhir::outputs;
use crate::store::jobs::{JobHandler, WorkerPoolConfig, WorkerPoolStats, run_workers};
use crate::store::{Backoff, Job, JobFailure, Store};

const FHIR_JSON: &str = "application/fhir+json";
/// Longest response body read (an OperationOutcome, a transaction-response).
const MAX_RESPONSE: usize = 256 * 1024;
/// Longest OperationOutcome text kept in `last_error`.
const MAX_OUTCOME_TEXT: usize = 600;

/// Whether an HTTP status is worth another attempt: 429 (rate limited) and
/// 5xx (the server's trouble). Any other 4xx means the server refused this
/// resource or this credential, and sending the same again cannot help.
pub fn should_retry(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

/// The readable part of a FHIR OperationOutcome (FHIR R4 §2.36.0.6):
/// `severity code: details.text | diagnostics` per issue, or a note that
/// the body was none. Read leniently from JSON rather than with fhir-sdk's
/// type: a server's OperationOutcome with a code the R4B model does not
/// know must still give us its text.
pub fn operation_outcome_text(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return format!("no OperationOutcome ({} bytes of non-JSON)", body.len());
    };
    if v["resourceType"] != "OperationOutcome" {
        return "no OperationOutcome in the response".into();
    }
    let issues: Vec<String> = v["issue"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|i| {
            let sev = i["severity"].as_str().unwrap_or("?");
            let code = i["code"].as_str().unwrap_or("?");
            let text = i["details"]["text"]
                .as_str()
                .or(i["diagnostics"].as_str())
                .or(i["details"]["coding"][0]["display"].as_str())
                .unwrap_or("");
            let at = i["expression"][0].as_str().or(i["location"][0].as_str());
            let mut s = format!("{sev} {code}");
            if !text.is_empty() {
                s.push_str(": ");
                s.push_str(text);
            }
            if let Some(at) = at {
                s.push_str(&format!(" (at {at})"));
            }
            s
        })
        .collect();
    if issues.is_empty() {
        return "OperationOutcome without issues".into();
    }
    // One line: it goes into a log field and `jobs.last_error`.
    let joined = issues.join("; ").replace(['\n', '\r', '\t'], " ");
    clip(&joined, MAX_OUTCOME_TEXT)
}

/// Runs `riskassessment-writeback` jobs. Build it with
/// [`WritebackWorker::new`] at start-up so that configuration errors stop
/// the process there.
pub struct WritebackWorker {
    store: Store,
    http: reqwest::Client,
    /// The FHIR base as configured, without a trailing slash.
    base: String,
    /// The same with a trailing slash, for `Url::join`.
    base_url: Url,
    credential: Credential,
    mode: WritebackMode,
    include_provenance: bool,
    timeout: Duration,
}

impl std::fmt::Debug for WritebackWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WritebackWorker")
            .field("base", &self.base)
            .field("mode", &self.mode)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl WritebackWorker {
    /// From `[writeback]` and `fhir.allowed_servers`: the target must be on
    /// the allow-list. `store`'s job retry delays are replaced by
    /// `retry_base_ms`/`retry_cap_seconds`.
    pub fn new(settings: &Settings, store: Store) -> Result<Self, WritebackError> {
        let wb = &settings.writeback;
        let base = wb
            .base_url
            .as_deref()
            .ok_or_else(|| WritebackError::Config("base_url is not set".into()))?
            .trim_end_matches('/')
            .to_owned();
        let base_url = Url::parse(&format!("{base}/"))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| WritebackError::Config(format!("base_url {base:?} is not a URL")))?;
        if !AllowList::new(&settings.fhir.allowed_servers).allows(&base_url) {
            return Err(WritebackError::Config(format!(
                "base_url {base:?} is not on fhir.allowed_servers"
            )));
        }
        let timeout = Duration::from_millis(wb.request_timeout_ms.max(1));
        let http = crate::fhir::client::http_client(timeout);
        let credential = Credential::new(&wb.auth, http.clone(), timeout)?;
        let store = store.with_backoff(Backoff {
            base: Duration::from_millis(wb.retry_base_ms),
            cap: Duration::from_secs(wb.retry_cap_seconds.max(1)),
            jitter: 0.25,
        });
        Ok(Self {
            store,
            http,
            base,
            base_url,
            credential,
            mode: wb.mode,
            include_provenance: wb.include_provenance,
            timeout,
        })
    }

    pub fn handler(self: &Arc<Self>) -> JobHandler {
        let me = self.clone();
        Arc::new(move |job: Job| {
            let me = me.clone();
            Box::pin(async move { me.run(&job).await })
        })
    }

    /// One job. `Ok` is the job row's result: what was written where, and
    /// the server's statuses; no patient data.
    #[tracing::instrument(name = "Writing a RiskAssessment back to the EHR", skip_all, fields(job_id = %job.id))]
    pub async fn run(&self, job: &Job) -> Result<Value, JobFailure> {
        let payload: WritebackJob = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobFailure::permanent(format!("invalid {JOB_KIND} payload: {e}")))?;
        let id = payload.prediction_id;
        let row = self
            .store
            .get_prediction(id)
            .await
            .map_err(|e| JobFailure::retryable(format!("reading prediction {id}: {e}")))?
            .ok_or_else(|| JobFailure::permanent(format!("prediction {id} is not stored")))?;
        let built = |e: outputs::OutputError| JobFailure::permanent(e.to_string());
        let mut resources = vec![for_the_ehr(outputs::risk_assessment(&row).map_err(built)?)];
        if self.include_provenance {
            resources.push(for_the_ehr(outputs::provenance(&row).map_err(built)?));
        }
        let written: Vec<String> = resources
            .iter()
            .map(|r| format!("{}/{}", r["resourceType"].as_str().unwrap_or("?"), id))
            .collect();
        let statuses = match self.mode {
            WritebackMode::Transaction => {
                let bundle = outputs::put_transaction(&self.base, &resources).map_err(built)?;
                let url =
                    Url::parse(&self.base).map_err(|e| JobFailure::permanent(e.to_string()))?;
                let (status, body) = self
                    .send("transaction", Method::POST, url, &bundle)
                    .await
                    .map_err(failure)?;
                let mut out = vec![status];
                // A transaction succeeds or fails as a whole (FHIR R4
                // §3.1.0.11.2); the per-entry statuses are kept for the record.
                if let Some(entries) = body.as_ref().and_then(|b| b["entry"].as_array()) {
                    out.extend(entries.iter().filter_map(|e| {
                        e["response"]["status"]
                            .as_str()
                            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
                    }));
                }
                out
            }
            WritebackMode::Update => {
                let mut out = Vec::new();
                for (r, path) in resources.iter().zip(&written) {
                    let url = self
                        .base_url
                        .join(path)
                        .map_err(|e| JobFailure::permanent(e.to_string()))?;
                    let (status, _) = self
                        .send("update", Method::PUT, url, r)
                        .await
                        .map_err(failure)?;
                    out.push(status);
                }
                out
            }
        };
        tracing::info!(?statuses, "RiskAssessment written back");
        Ok(json!({
            "prediction_id": id,
            "target": self.base,
            "mode": self.mode.as_str(),
            "written": written,
            "http_status": statuses,
        }))
    }

    /// One request with the credential; a 401 with a refreshable
    /// credential is tried once more with a fresh token. Returns the status
    /// and the JSON body (if any) of a 2xx answer.
    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: &Value,
    ) -> Result<(u16, Option<Value>), WritebackError> {
        let bytes = serde_json::to_vec(body).map_err(|e| WritebackError::Transport {
            operation,
            reason: format!("serialising the body: {e}"),
        })?;
        let mut refreshed = false;
        loop {
            let token = self.credential.bearer().await?;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .header(CONTENT_TYPE, FHIR_JSON)
                .header(ACCEPT, FHIR_JSON)
                // FHIR R4 §3.1.0.1.8: the server need not echo the resources.
                .header("prefer", "return=minimal")
                .timeout(self.timeout)
                .body(bytes.clone());
            if let Some(t) = &token {
                req = req.header(AUTHORIZATION, bearer_header(t)?);
            }
            let resp = req.send().await.map_err(|e| WritebackError::Transport {
                operation,
                reason: format!("{} unreachable: {}", self.base, e.without_url()),
            })?;
            let status = resp.status().as_u16();
            if status == 401 && !refreshed && self.credential.can_refresh() {
                tracing::warn!("The EHR refused the write-back token; fetching a new one");
                self.credential.refused().await;
                refreshed = true;
                continue;
            }
            let body = read_limited(resp, MAX_RESPONSE).await;
            if (200..300).contains(&status) {
                return Ok((status, serde_json::from_slice(&body).ok()));
            }
            let secret = token.as_ref().map(|t| t.expose_secret().to_owned());
            let outcome = scrub(
                &operation_outcome_text(&body),
                &secret.as_deref().into_iter().collect::<Vec<_>>(),
            );
            return Err(WritebackError::Status {
                operation,
                status,
                outcome,
            });
        }
    }
}

fn bearer_header(token: &SecretString) -> Result<HeaderValue, WritebackError> {
    let mut v =
        HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).map_err(|_| {
            WritebackError::Credential {
                reason: "the bearer token has characters not allowed in a header".into(),
                retryable: false,
            }
        })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Our own `meta.lastUpdated` means nothing on the EHR's server, which
/// keeps its own (FHIR R4 §2.17 "Resource.meta": server-assigned).
fn for_the_ehr(mut resource: Value) -> Value {
    if let Some(o) = resource.as_object_mut() {
        o.remove("meta");
    }
    resource
}

fn failure(e: WritebackError) -> JobFailure {
    if e.is_retryable() {
        JobFailure::retryable(e.to_string())
    } else {
        JobFailure::permanent(e.to_string())
    }
}

/// Worker pool settings from `[writeback]`.
pub fn pool_config(settings: &WritebackSettings, workers: usize) -> WorkerPoolConfig {
    WorkerPoolConfig {
        lease: Duration::from_secs(settings.lease_seconds.max(10)),
        poll_interval: Duration::from_millis(settings.poll_interval_ms.max(10)),
        ..WorkerPoolConfig::new(workers.max(1), &[JOB_KIND])
    }
}

/// Runs `workers` write-back workers until `shutdown` turns true (jobs in
/// hand are finished first). Used by `serve` (`writeback.workers_in_serve`)
/// and `oncohooks worker`.
pub async fn run_writeback_workers(
    worker: Arc<WritebackWorker>,
    settings: &WritebackSettings,
    workers: usize,
    shutdown: watch::Receiver<bool>,
) -> WorkerPoolStats {
    let config = pool_config(settings, workers);
    tracing::info!(workers = config.workers, target = %worker.base, "Write-back workers started");
    let store = worker.store.clone();
    let stats = run_workers(store, config, worker.handler(), shutdown).await;
    tracing::info!(?stats, "Write-back workers stopped");
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_429_and_5xx_are_retried() {
        for s in [429, 500, 502, 503, 504] {
            assert!(should_retry(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 412, 422] {
            assert!(!should_retry(s), "{s}");
        }
    }

    #[test]
    fn operation_outcome_text_names_each_issue_on_one_line() {
        let oo = json!({
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": "processing",
                 "diagnostics": "Unknown reference\nPatient/x", "expression": ["RiskAssessment.subject"]},
                {"severity": "warning", "code": "invalid", "details": {"text": "note too long"}}
            ]
        });
        let text = operation_outcome_text(oo.to_string().as_bytes());
        assert_eq!(
            text,
            "error processing: Unknown reference Patient/x (at RiskAssessment.subject); warning invalid: note too long"
        );
        assert!(operation_outcome_text(b"<html>").contains("non-JSON"));
        assert!(operation_outcome_text(b"{}").contains("no OperationOutcome"));
        let long = json!({"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "x", "diagnostics": "y".repeat(5000)}]});
        assert!(
            operation_outcome_text(long.to_string().as_bytes())
                .chars()
                .count()
                <= 601
        );
    }

    #[tokio::test]
    async fn the_target_must_be_allow_listed() {
        let mut s = Settings::load_with_env(None, Vec::<(String, String)>::new()).unwrap();
        s.writeback.enabled = true;
        s.writeback.base_url = Some("https://ehr.example.org/fhir".into());
        let store = crate::store::Store::connect_lazy(
            "sqlite::memory:",
            &crate::store::StoreOptions::default(),
        )
        .unwrap();
        let err = WritebackWorker::new(&s, store.clone()).unwrap_err();
        assert!(err.to_string().contains("allowed_servers"), "{err}");
        s.fhir.allowed_servers = vec!["https://ehr.example.org/fhir/".into()];
        assert!(WritebackWorker::new(&s, store).is_ok());
    }
}
