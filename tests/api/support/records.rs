//! Realistic audit records for the store tests.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use oncohooks::store::{
    CardRecord, FeedbackRecord, HookRecord, InvocationRecord, PredictionRecord,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A patient-view hook for `patient` with a prediction and two cards.
/// Timestamps carry nanoseconds on purpose (the store keeps microseconds).
pub fn hook_record(service: &str, patient: &str, at: DateTime<Utc>) -> HookRecord {
    let inv = Uuid::new_v4();
    let pred = Uuid::new_v4();
    let features = json!({
        "schema_version": "cachexia-features/3",
        "values": {"weight_loss_6m_pct": 7.25, "bmi": 18.4, "albumin_g_dl": null, "crp_mg_l": 12.0},
        "missing": ["albumin_g_dl"],
        "note_excerpt": "Appétit diminué — «patient fatigué»\tline\nbreak",
        "big": 9007199254740993u64,
        "neg": -0.000001,
        "nested": [[1, 2], {"k": [true, false, null]}]
    });
    HookRecord {
        invocation: InvocationRecord {
            id: inv,
            hook_instance: Uuid::new_v4().to_string(),
            service_id: service.to_string(),
            hook: "patient-view".to_string(),
            patient_id: Some(patient.to_string()),
            user_id: Some("Practitioner/123".to_string()),
            encounter_id: Some("Encounter/e-9".to_string()),
            fhir_server_host: Some("fhir.example.org".to_string()),
            client_iss: Some("https://ehr.example.org".to_string()),
            client_sub: Some("ehr-client-1".to_string()),
            received_at: at,
            total_ms: 41.73,
            fhir_ms: 30.0001,
            inference_ms: 7.5,
            http_status: 200,
            outcome: "cards".to_string(),
            error: None,
        },
        prediction: Some(PredictionRecord {
            id: pred,
            invocation_id: inv,
            service_id: service.to_string(),
            patient_id: patient.to_string(),
            model_id: "cachexia-fusion".to_string(),
            model_version: "2025.1.0".to_string(),
            risk: Some(0.734_210_987_654_321),
            risk_tier: "high".to_string(),
            confidence: None,
            review_suggested: true,
            input_digest: hex::encode(Sha256::digest(features.to_string().as_bytes())),
            features,
            result: json!({"risk": 0.734_210_987_654_321, "interval": [0.61, 0.83], "explanations": []}),
            created_at: at + Duration::nanoseconds(1_500),
        }),
        cards: (0..2)
            .map(|i| CardRecord {
                uuid: Uuid::new_v4(),
                invocation_id: inv,
                prediction_id: if i == 0 { Some(pred) } else { None },
                service_id: service.to_string(),
                card: json!({
                    "summary": format!("Cachexia risk high ({i})"),
                    "indicator": "warning",
                    "source": {"label": "oncohooks"},
                    "suggestions": [{"label": "Refer to dietitian", "uuid": Uuid::new_v4()}]
                }),
                created_at: at + Duration::microseconds(i),
            })
            .collect(),
        jobs: Vec::new(),
    }
}

pub fn feedback_for(card: &CardRecord, outcome: &str) -> FeedbackRecord {
    let received_at = Utc::now();
    let body = json!({"card": card.uuid, "outcome": outcome, "outcomeTimestamp": received_at});
    FeedbackRecord {
        id: Uuid::new_v4(),
        service_id: card.service_id.clone(),
        card_uuid: card.uuid,
        outcome: outcome.to_string(),
        override_reason: (outcome == "overridden").then(|| {
            json!({"reason": {"code": "patient-declined", "system": "http://example.org/reasons"},
                   "userComment": "discussed at tumour board"})
        }),
        accepted_suggestions: json!([]),
        outcome_timestamp: received_at - Duration::seconds(3),
        received_at,
        client_iss: Some("https://ehr.example.org".to_string()),
        feedback_digest: hex::encode(Sha256::digest(body.to_string().as_bytes())),
    }
}

/// What the store gives back: timestamps at microsecond precision.
pub fn as_stored(mut r: HookRecord) -> HookRecord {
    r.invocation.received_at = r.invocation.received_at.trunc_subsecs(6);
    if let Some(p) = &mut r.prediction {
        p.created_at = p.created_at.trunc_subsecs(6);
    }
    for c in &mut r.cards {
        c.created_at = c.created_at.trunc_subsecs(6);
    }
    // Jobs go to the queue, not back into the invocation.
    r.jobs.clear();
    r
}

pub fn feedback_as_stored(mut f: FeedbackRecord) -> FeedbackRecord {
    f.outcome_timestamp = f.outcome_timestamp.trunc_subsecs(6);
    f.received_at = f.received_at.trunc_subsecs(6);
    f
}
