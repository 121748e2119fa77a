//! CDS Hooks endpoints (CDS Hooks 2.0 §"Discovery", §"Calling a CDS Service",
//! §"Feedback").

use std::time::Instant as StdInstant;

use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use uuid::Uuid;

use super::body::read_json;
use super::{ApiError, AppState};
use crate::auth::{CdsClient, bearer_token};
use crate::cds::card::Link;
use crate::cds::{DiscoveryResponse, FeedbackRequest, HookRequest, card::json_rule_violations};
use crate::services::{CdsService, HookError, HookOutcome};
use crate::store::spool::{Persisted, persist_feedback, persist_hook};
use crate::store::{CardRecord, FeedbackRecord, HookRecord, InvocationRecord, PredictionRecord};

/// Where the client reached us: the configured public base URL, else the
/// request's scheme and Host.
pub(crate) fn base_url(req: &HttpRequest, state: &AppState) -> String {
    match &state.public_base_url {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

/// The URL the client called, as it must appear in the JWT's `aud`.
fn called_url(req: &HttpRequest, state: &AppState) -> String {
    format!("{}{}", base_url(req, state), req.path())
}

/// Verify the CDS client's JWT. Failures are a bare 401; the reason is logged.
async fn authenticate(req: &HttpRequest, state: &AppState) -> Result<CdsClient, ApiError> {
    let refuse = |e: crate::auth::AuthError| {
        if e.is_infrastructure() {
            tracing::error!(reason = %e, path = %req.path(), "CDS client authentication failed");
        } else {
            tracing::warn!(reason = %e, path = %req.path(), "CDS client authentication failed");
        }
        ApiError::Unauthorized
    };
    let header = match req.headers().get(AUTHORIZATION) {
        Some(v) => Some(v.to_str().map_err(|_| ApiError::Unauthorized)?),
        None => None,
    };
    let token = header.map(bearer_token).transpose().map_err(refuse)?;
    let url = called_url(req, state);
    state
        .verifier
        .verify(token, &[url.as_str()])
        .await
        .map_err(refuse)
}

/// (iss, sub) of the calling client, for the audit record.
fn identity(client: &CdsClient) -> (Option<String>, Option<String>) {
    match client {
        CdsClient::Verified(v) => (Some(v.iss.clone()), v.sub.clone()),
        CdsClient::Anonymous => (None, None),
    }
}

#[tracing::instrument(name = "Discovery", skip_all)]
pub async fn discovery(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &state).await?;
    let services = state
        .engine
        .registry
        .iter()
        .map(|s| s.definition().descriptor())
        .collect();
    Ok(HttpResponse::Ok().json(DiscoveryResponse { services }))
}

#[tracing::instrument(
    name = "Calling a CDS service",
    skip_all,
    fields(service = %path.as_str(), hook_instance = tracing::field::Empty)
)]
pub async fn call_service(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let clock = StdInstant::now();
    let received_at = Utc::now();
    let client = authenticate(&req, &state).await?;
    let body = read_json(&req, payload, state.max_body_bytes).await?;
    let (service, hook) = state.engine.parse(&path, body)?;
    tracing::Span::current().record("hook_instance", tracing::field::display(hook.hook_instance));

    let base = base_url(&req, &state);
    let result = state
        .engine
        .evaluate(service.as_ref(), &hook, started, Some(&base))
        .await;
    let total_ms = clock.elapsed().as_secs_f64() * 1e3;
    let meta = Meta {
        service: service.as_ref(),
        hook: &hook,
        client: &client,
        received_at,
        total_ms,
    };
    let prediction_id = Uuid::new_v4();
    match result {
        Ok(mut outcome) => {
            if outcome.evaluation.prediction.is_some() {
                add_review_links(&mut outcome, &base, prediction_id);
            }
            let mut record = hook_record(&meta, Some(&mut outcome), prediction_id, 200, None);
            // The write-back job goes into the same transaction as the
            // prediction; the hook does not wait for the write-back itself.
            if let (Some(policy), Some(p)) = (&state.writeback, &record.prediction) {
                record.jobs.extend(policy.job_for(&p.service_id, p.id));
            }
            persist(&state, record).await;
            debug_assert!(
                json_rule_violations(&serde_json::to_value(&outcome.response).unwrap()).is_empty()
            );
            let total_ms = clock.elapsed().as_secs_f64() * 1e3;
            let mut response = HttpResponse::Ok();
            if let Some(n) = outcome.evaluation.model_batch {
                // Hooks scored in the same model pass (1: alone).
                response.insert_header(("x-model-batch", n.to_string()));
            }
            Ok(response
                .insert_header(("x-total-time", format!("{total_ms:.1}")))
                .insert_header(("x-fhir-time", format!("{:.1}", outcome.fhir_ms)))
                .insert_header((
                    "x-inference-time",
                    format!("{:.1}", outcome.evaluation.inference_ms),
                ))
                .insert_header(("x-model-version", service.model_version()))
                .json(&outcome.response))
        }
        Err(err) => {
            // Accepted but unanswerable calls (412, 500) are audited too.
            let status = match &err {
                HookError::PreconditionFailed { .. } => 412,
                HookError::UnknownService(_) => 404,
                HookError::BadRequest(_) => 400,
                HookError::Service(_) => 500,
            };
            let record = hook_record(&meta, None, prediction_id, status, Some(err.to_string()));
            persist(&state, record).await;
            Err(err.into())
        }
    }
}

struct Meta<'a> {
    service: &'a dyn CdsService,
    hook: &'a HookRequest,
    client: &'a CdsClient,
    received_at: chrono::DateTime<Utc>,
    total_ms: f64,
}

/// Every card about a stored prediction links to the review app (CDS Hooks
/// 2.0 §Link): a `smart` link whose `appContext` names the prediction, and
/// an `absolute` fallback for EHRs that do not launch SMART apps.
fn add_review_links(outcome: &mut HookOutcome, base: &str, prediction_id: Uuid) {
    let context = serde_json::json!({ "predictionId": prediction_id }).to_string();
    for card in &mut outcome.response.cards {
        card.links.push(Link::smart(
            "Review this prediction (SMART app)",
            &format!("{base}/review/launch"),
            Some(context.clone()),
        ));
        card.links.push(Link::absolute(
            "Review this prediction",
            &format!("{base}/review/{prediction_id}"),
        ));
    }
}

/// The audit record of one hook call. The snapshot and result are moved out
/// of `outcome` (their last use); its response is left as it was.
fn hook_record(
    meta: &Meta<'_>,
    mut outcome: Option<&mut HookOutcome>,
    prediction_id: Uuid,
    http_status: i32,
    error: Option<String>,
) -> HookRecord {
    let invocation_id = Uuid::new_v4();
    let service_id = meta.service.definition().id.clone();
    let patient_id = meta.hook.context.patient_id.as_str().to_owned();
    let now = Utc::now();
    let (prediction, cards) = match outcome.as_deref_mut() {
        Some(o) => {
            let prediction = if o.evaluation.prediction.is_some() {
                let (features, result) = (o.take_snapshot(), o.take_result());
                o.evaluation.prediction.as_ref().map(|p| PredictionRecord {
                    id: prediction_id,
                    invocation_id,
                    service_id: service_id.clone(),
                    patient_id: patient_id.clone(),
                    model_id: p.model_id.clone(),
                    model_version: p.model_version.clone(),
                    risk: p.risk,
                    risk_tier: p.risk_tier.clone(),
                    confidence: p.confidence,
                    review_suggested: p.review_suggested,
                    input_digest: o.input_digest.clone(),
                    features,
                    result,
                    created_at: now,
                })
            } else {
                None
            };
            let prediction_id = prediction.as_ref().map(|p| p.id);
            let cards = o
                .response
                .cards
                .iter()
                .map(|c| CardRecord {
                    uuid: c.uuid,
                    invocation_id,
                    prediction_id,
                    service_id: service_id.clone(),
                    card: serde_json::to_value(c).unwrap_or_default(),
                    created_at: now,
                })
                .collect();
            (prediction, cards)
        }
        None => (None, Vec::new()),
    };
    let (client_iss, client_sub) = identity(meta.client);
    HookRecord {
        invocation: InvocationRecord {
            id: invocation_id,
            hook_instance: meta.hook.hook_instance.to_string(),
            service_id,
            hook: meta.hook.hook.clone(),
            patient_id: Some(patient_id),
            user_id: Some(meta.hook.context.user_id.clone()),
            encounter_id: meta.hook.context.encounter_id.clone(),
            fhir_server_host: meta.hook.fhir_server.as_ref().map(|u| {
                u.host_str()
                    .map(|h| match u.port() {
                        Some(p) => format!("{h}:{p}"),
                        None => h.to_owned(),
                    })
                    .unwrap_or_default()
            }),
            client_iss,
            client_sub,
            received_at: meta.received_at,
            total_ms: meta.total_ms,
            fhir_ms: outcome.as_deref().map(|o| o.fhir_ms).unwrap_or(0.0),
            inference_ms: outcome
                .as_deref()
                .map(|o| o.evaluation.inference_ms)
                .unwrap_or(0.0),
            http_status,
            outcome: match (outcome.as_deref(), http_status) {
                (Some(o), _) if o.response.cards.is_empty() => "no-cards".into(),
                (Some(_), _) => "cards".into(),
                (None, s) => format!("error-{s}"),
            },
            error,
        },
        prediction,
        cards,
        jobs: Vec::new(),
    }
}

async fn persist(state: &AppState, record: HookRecord) {
    match persist_hook(&state.store, &state.spool, &record).await {
        Ok(Persisted::Database) => {}
        Ok(Persisted::Spooled) => {
            tracing::warn!(invocation = %record.invocation.id, "database unavailable: hook record spooled")
        }
        Err(e) => {
            // Both the database and the spool failed: the answer still goes
            // out, and the operator must see this at once.
            tracing::error!(invocation = %record.invocation.id, error = %e, "hook record could not be persisted or spooled")
        }
    }
}

#[tracing::instrument(name = "Receiving feedback", skip_all, fields(service = %path.as_str()))]
pub async fn feedback(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client = authenticate(&req, &state).await?;
    let service_id = path.into_inner();
    if state.engine.registry.get(&service_id).is_none() {
        return Err(ApiError::NotFound(format!("no CDS service `{service_id}`")));
    }
    let body = read_json(&req, payload, state.max_body_bytes).await?;
    let parsed = FeedbackRequest::parse(body).map_err(ApiError::BadRequest)?;
    let (client_iss, _) = identity(&client);
    let received_at = Utc::now();
    for item in parsed.feedback {
        let accepted: serde_json::Value = item
            .accepted_suggestions
            .iter()
            .map(|id| serde_json::json!({"id": id}))
            .collect();
        // Feedback may arrive twice (CDS Hooks 2.0 §Feedback): the digest of
        // its content makes storing it idempotent.
        let mut h = Sha256::new();
        h.update(service_id.as_bytes());
        h.update(item.card.as_bytes());
        h.update(item.outcome.as_str().as_bytes());
        h.update(item.outcome_timestamp.to_rfc3339().as_bytes());
        h.update(accepted.to_string().as_bytes());
        if let Some(r) = &item.override_reason {
            h.update(r.to_string().as_bytes());
        }
        let record = FeedbackRecord {
            id: Uuid::new_v4(),
            service_id: service_id.clone(),
            card_uuid: item.card,
            outcome: item.outcome.as_str().to_owned(),
            override_reason: item.override_reason,
            accepted_suggestions: accepted,
            outcome_timestamp: item.outcome_timestamp,
            received_at,
            client_iss: client_iss.clone(),
            feedback_digest: hex::encode(h.finalize()),
        };
        match persist_feedback(&state.store, &state.spool, &record).await {
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "feedback could not be persisted or spooled");
                return Err(ApiError::Unavailable(
                    "feedback could not be stored; retry later".into(),
                ));
            }
        }
    }
    Ok(HttpResponse::Ok().finish())
}
