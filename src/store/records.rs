//! The audit records the server writes for every hook call and every feedback
//! message (CDS Hooks 2.0 §"Feedback").
//!
//! They are plain data: the services layer fills them in, the store writes them
//! append-only, and the spool serialises them as JSON lines while the database
//! is away. No field holds a secret: there is no place for a token or a JWT.
//!
//! Timestamps are stored with microsecond precision (PostgreSQL's
//! `timestamptz` resolution; SQLite text uses the same), truncated, so a record
//! read back carries `received_at.trunc_subsecs(6)`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::StoreError;
use super::jobs::NewJob;

/// Everything one hook invocation produced, written in one transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookRecord {
    pub invocation: InvocationRecord,
    pub prediction: Option<PredictionRecord>,
    pub cards: Vec<CardRecord>,
    /// Jobs this call starts (the RiskAssessment write-back), enqueued in
    /// the same transaction: a stored prediction is never without its job,
    /// and a spooled record brings its jobs along when replayed. Not read
    /// back by `get_invocation` (they live in `jobs`). Absent in spool
    /// lines written before the field existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<NewJob>,
}

/// What [`super::Store::get_invocation`] returns: the hook record as stored.
pub type StoredInvocation = HookRecord;

/// One `POST /cds-services/{id}` call (CDS Hooks 2.0 §"HTTP Request").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// Server-assigned id; the idempotency key of [`HookRecord`].
    pub id: Uuid,
    /// `hookInstance` from the request (a UUID chosen by the CDS client).
    pub hook_instance: String,
    pub service_id: String,
    pub hook: String,
    pub patient_id: Option<String>,
    pub user_id: Option<String>,
    pub encounter_id: Option<String>,
    /// Host part of `fhirServer` only (never the access token that came with it).
    pub fhir_server_host: Option<String>,
    /// `iss` / `sub` of the CDS client's JWT (the identity, not the token).
    pub client_iss: Option<String>,
    pub client_sub: Option<String>,
    pub received_at: DateTime<Utc>,
    pub total_ms: f64,
    pub fhir_ms: f64,
    pub inference_ms: f64,
    pub http_status: i32,
    pub outcome: String,
    pub error: Option<String>,
}

/// One model output. Append-only: a correction is a new row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    pub id: Uuid,
    pub invocation_id: Uuid,
    pub service_id: String,
    pub patient_id: String,
    pub model_id: String,
    pub model_version: String,
    pub risk: Option<f64>,
    pub risk_tier: String,
    pub confidence: Option<f64>,
    pub review_suggested: bool,
    /// sha256 of the canonical model input, lowercase hex (64 characters).
    pub input_digest: String,
    /// Feature snapshot the model saw (values and missing mask).
    pub features: Value,
    pub result: Value,
    pub created_at: DateTime<Utc>,
}

/// One card as returned to the EHR (CDS Hooks 2.0 §"Card Attributes").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CardRecord {
    /// The card's `uuid`, which feedback refers to.
    pub uuid: Uuid,
    pub invocation_id: Uuid,
    pub prediction_id: Option<Uuid>,
    pub service_id: String,
    pub card: Value,
    pub created_at: DateTime<Utc>,
}

/// One feedback item (CDS Hooks 2.0 §"Feedback": `card`, `outcome`,
/// `overrideReason`, `acceptedSuggestions`, `outcomeTimestamp`).
///
/// Feedback may name a card this server does not know (another replica's
/// database, or a client bug); it is stored anyway (no foreign key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    pub id: Uuid,
    pub service_id: String,
    pub card_uuid: Uuid,
    /// `accepted` or `overridden` (the two values CDS Hooks 2.0 defines).
    pub outcome: String,
    pub override_reason: Option<Value>,
    pub accepted_suggestions: Value,
    pub outcome_timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub client_iss: Option<String>,
    /// Idempotency key: a digest of the feedback item as received, so a
    /// client that retries a POST does not count the same outcome twice.
    pub feedback_digest: String,
}

/// Result of [`super::Store::record_feedback`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedbackInsert {
    Inserted,
    /// A row with the same `feedback_digest` exists; nothing was written.
    Duplicate,
}

impl HookRecord {
    /// Checks the links between the parts before anything is written, so a
    /// caller bug is reported by name instead of as a foreign-key error.
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        let inv = self.invocation.id;
        if let Some(p) = &self.prediction {
            if p.invocation_id != inv {
                return Err(StoreError::InvalidRecord(format!(
                    "prediction {} names invocation {}, but the hook record is invocation {inv}",
                    p.id, p.invocation_id
                )));
            }
            if !is_sha256_hex(&p.input_digest) {
                return Err(StoreError::InvalidRecord(format!(
                    "prediction {}: input_digest must be 64 lowercase hex characters (sha256), got {} characters",
                    p.id,
                    p.input_digest.len()
                )));
            }
        }
        for j in &self.jobs {
            j.validate()?;
        }
        for c in &self.cards {
            if c.invocation_id != inv {
                return Err(StoreError::InvalidRecord(format!(
                    "card {} names invocation {}, but the hook record is invocation {inv}",
                    c.uuid, c.invocation_id
                )));
            }
            if let Some(pid) = c.prediction_id {
                match &self.prediction {
                    Some(p) if p.id == pid => {}
                    _ => {
                        return Err(StoreError::InvalidRecord(format!(
                            "card {} names prediction {pid}, which is not part of this hook record",
                            c.uuid
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

impl FeedbackRecord {
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        if self.outcome != "accepted" && self.outcome != "overridden" {
            return Err(StoreError::InvalidRecord(format!(
                "feedback {}: outcome must be \"accepted\" or \"overridden\" (CDS Hooks 2.0 §Feedback), got {:?}",
                self.id, self.outcome
            )));
        }
        if self.feedback_digest.is_empty() {
            return Err(StoreError::InvalidRecord(format!(
                "feedback {}: feedback_digest is empty",
                self.id
            )));
        }
        Ok(())
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hook() -> HookRecord {
        let inv = Uuid::new_v4();
        let pred = Uuid::new_v4();
        HookRecord {
            invocation: InvocationRecord {
                id: inv,
                hook_instance: Uuid::new_v4().to_string(),
                service_id: "cachexia".into(),
                hook: "patient-view".into(),
                patient_id: Some("p1".into()),
                user_id: None,
                encounter_id: None,
                fhir_server_host: None,
                client_iss: None,
                client_sub: None,
                received_at: Utc::now(),
                total_ms: 1.0,
                fhir_ms: 0.5,
                inference_ms: 0.2,
                http_status: 200,
                outcome: "ok".into(),
                error: None,
            },
            prediction: Some(PredictionRecord {
                id: pred,
                invocation_id: inv,
                service_id: "cachexia".into(),
                patient_id: "p1".into(),
                model_id: "m".into(),
                model_version: "1".into(),
                risk: Some(0.3),
                risk_tier: "low".into(),
                confidence: None,
                review_suggested: false,
                input_digest: "a".repeat(64),
                features: json!({}),
                result: json!({}),
                created_at: Utc::now(),
            }),
            cards: vec![CardRecord {
                uuid: Uuid::new_v4(),
                invocation_id: inv,
                prediction_id: Some(pred),
                service_id: "cachexia".into(),
                card: json!({"summary": "s"}),
                created_at: Utc::now(),
            }],
            jobs: Vec::new(),
        }
    }

    #[test]
    fn a_consistent_hook_record_validates() {
        assert!(hook().validate().is_ok());
    }

    #[test]
    fn a_card_from_another_invocation_is_rejected_by_name() {
        let mut h = hook();
        h.cards[0].invocation_id = Uuid::new_v4();
        let err = h.validate().unwrap_err().to_string();
        assert!(err.contains("card"), "{err}");
    }

    #[test]
    fn an_uppercase_or_short_digest_is_rejected() {
        let mut h = hook();
        h.prediction.as_mut().unwrap().input_digest = "A".repeat(64);
        assert!(h.validate().is_err());
        h.prediction.as_mut().unwrap().input_digest = "a".repeat(63);
        assert!(h.validate().is_err());
    }

    #[test]
    fn a_job_without_a_kind_is_rejected_and_old_spool_lines_parse() {
        let mut h = hook();
        h.jobs.push(NewJob {
            kind: String::new(),
            payload: json!({}),
            dedupe_key: None,
            max_attempts: 1,
        });
        assert!(h.validate().is_err());
        let mut line = serde_json::to_value(hook()).unwrap();
        assert!(line.get("jobs").is_none(), "empty jobs are not written");
        line.as_object_mut().unwrap().remove("jobs");
        let back: HookRecord = serde_json::from_value(line).unwrap();
        assert!(back.jobs.is_empty());
    }

    #[test]
    fn a_card_naming_a_foreign_prediction_is_rejected() {
        let mut h = hook();
        h.cards[0].prediction_id = Some(Uuid::new_v4());
        assert!(h.validate().is_err());
    }
}
