//! Write-back of RiskAssessments to the EHR's FHIR server (issue 6 item 1):
//! optional (`[writeback]`, off by default), retried, never blocking a hook.
//!
//! - Hook side ([`WritebackPolicy`]): each stored prediction of a service
//!   with write-back enabled carries one `riskassessment-writeback` job in
//!   its [`crate::store::HookRecord`], written in the same transaction (or
//!   spooled with it). The payload is the prediction id, nothing else: no
//!   patient data, and no token.
//! - Worker side ([`WritebackWorker`]): reads the prediction, builds the
//!   RiskAssessment and Provenance exactly as `/fhir` serves them
//!   (`fhir::outputs`), and PUTs them at their own ids (the prediction id),
//!   so a retry overwrites instead of duplicating. It authenticates with
//!   its own credential ([`credential::Credential`]): never the hook's
//!   `fhirAuthorization` token, which a job outlives and which is never
//!   stored.
//! - Failures: network errors, 429 and 5xx are retried with the job
//!   queue's backoff; any other 4xx is dead-lettered at once with the
//!   server's OperationOutcome text (`last_error`), since sending the same
//!   resource again cannot fix it.

pub mod credential;
mod worker;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::WritebackSettings;
use crate::store::NewJob;

pub use credential::Credential;
pub use worker::{
    WritebackWorker, operation_outcome_text, pool_config, run_writeback_workers, should_retry,
};

/// The job kind on the queue.
pub const JOB_KIND: &str = "riskassessment-writeback";

/// The job's payload: which prediction. Everything else is read when the
/// job runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WritebackJob {
    pub prediction_id: Uuid,
}

impl WritebackJob {
    /// One unfinished write-back per prediction.
    pub fn dedupe_key(&self) -> String {
        dedupe_key(self.prediction_id)
    }

    pub fn to_new_job(&self, max_attempts: i32) -> NewJob {
        NewJob::deduplicated(JOB_KIND, self, self.dedupe_key(), max_attempts)
    }
}

/// `riskassessment-writeback:<prediction id>`: look a write-back up with
/// `Store::jobs_by_dedupe_key`.
pub fn dedupe_key(prediction_id: Uuid) -> String {
    format!("{JOB_KIND}:{prediction_id}")
}

/// Why write-back could not be set up or a write-back failed.
#[derive(Debug, thiserror::Error)]
pub enum WritebackError {
    #[error("write-back configuration: {0}")]
    Config(String),
    /// The credential (a file, the token endpoint) could not be had.
    #[error("the write-back credential: {reason}")]
    Credential { reason: String, retryable: bool },
    #[error("{operation}: HTTP {status} from the EHR's FHIR server: {outcome}")]
    Status {
        operation: &'static str,
        status: u16,
        outcome: String,
    },
    #[error("{operation}: {reason}")]
    Transport {
        operation: &'static str,
        reason: String,
    },
}

impl WritebackError {
    /// Whether another attempt after the backoff may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            WritebackError::Config(_) => false,
            WritebackError::Credential { retryable, .. } => *retryable,
            WritebackError::Status { status, .. } => should_retry(*status),
            WritebackError::Transport { .. } => true,
        }
    }
}

/// The hook side: which predictions get a write-back job. `None` from
/// [`WritebackPolicy::new`] when write-back is off.
#[derive(Clone, Debug)]
pub struct WritebackPolicy {
    settings: WritebackSettings,
}

impl WritebackPolicy {
    pub fn new(settings: &WritebackSettings) -> Option<Self> {
        settings.enabled.then(|| Self {
            settings: settings.clone(),
        })
    }

    /// The job for a stored prediction of `service_id`, if that service's
    /// predictions are written back.
    pub fn job_for(&self, service_id: &str, prediction_id: Uuid) -> Option<NewJob> {
        self.settings
            .covers(service_id)
            .then(|| WritebackJob { prediction_id }.to_new_job(self.settings.max_attempts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_carry_only_the_prediction_id_and_follow_the_service_list() {
        let mut s = WritebackSettings::default();
        assert!(WritebackPolicy::new(&s).is_none(), "off by default");
        s.enabled = true;
        s.services = vec!["cachexia-risk".into()];
        let p = WritebackPolicy::new(&s).unwrap();
        let id = Uuid::new_v4();
        let job = p.job_for("cachexia-risk", id).unwrap();
        assert_eq!(job.kind, JOB_KIND);
        assert_eq!(job.payload, serde_json::json!({"prediction_id": id}));
        assert_eq!(job.dedupe_key.unwrap(), format!("{JOB_KIND}:{id}"));
        assert_eq!(job.max_attempts, s.max_attempts);
        assert!(p.job_for("lung-nodule", id).is_none());
        s.services = vec!["*".into()];
        assert!(
            WritebackPolicy::new(&s)
                .unwrap()
                .job_for("lung-nodule", id)
                .is_some()
        );
    }
}
