//! `/audit`: the audit API for informatics teams (OpenAPI document at
//! `/audit/openapi.json`). Scopes: `audit.read` (search, detail,
//! aggregates), `audit.export` (exports), `audit.write` (outcomes).

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::access::{Accessed, authorize, record_access};
use super::body::read_json;
use super::hooks::base_url;
use super::params::{Params, bad, date_range};
use super::{ApiError, AppState};
use crate::audit::aggregates::{Aggregator, Bucket};
use crate::audit::export::{csv_header, csv_line, ndjson_line, override_reason_text};
use crate::audit::openapi;
use crate::auth::Need;
use crate::store::{FeedbackFilter, OutcomeRecord, PredictionFilter, PredictionRow, StoreError};

const FILTERS: &[&str] = &[
    "service",
    "patient",
    "since",
    "until",
    "model_version",
    "review",
    "feedback",
];
/// Most outcomes in one POST.
const MAX_OUTCOMES: usize = 10_000;
/// Rows written per body chunk of an export.
const ROWS_PER_CHUNK: usize = 256;

fn unexpected(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Unexpected(e.into())
}

fn filter(params: &Params) -> Result<PredictionFilter, ApiError> {
    let since = params.one("since")?.map(|v| format!("ge{v}"));
    let until = params.one("until")?.map(|v| format!("le{v}"));
    let s = date_range("since", since.as_deref().into_iter())?;
    let u = date_range("until", until.as_deref().into_iter())?;
    let feedback = match params.one("feedback")? {
        None => None,
        Some(v) => Some(
            FeedbackFilter::parse(v)
                .ok_or_else(|| bad("feedback", "must be accepted, overridden or none"))?,
        ),
    };
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match params.one(name)? {
            Some(v) if v.is_empty() || v.len() > 200 => {
                Err(bad(name, "must be 1 to 200 characters"))
            }
            v => Ok(v.map(str::to_owned)),
        }
    };
    Ok(PredictionFilter {
        service_id: text("service")?,
        patient_id: params.patient(&["patient"])?,
        since: s.since,
        until: u.until,
        // Versions carry semver build metadata (`1.0.0+9c569647`), and an
        // unencoded `+` in a query string arrives as a space: versions have
        // no spaces, so it is taken back.
        model_version: text("model_version")?.map(|v| v.replace(' ', "+")),
        review_suggested: params.boolean("review")?,
        feedback,
    })
}

/// `GET /audit/openapi.json` (public: it describes, it holds no data).
pub async fn openapi_json(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(openapi::document(&base_url(&req, &state)))
}

fn summary(row: &PredictionRow) -> Value {
    let p = &row.record;
    json!({
        "id": p.id,
        "invocation_id": p.invocation_id,
        "created_at": p.created_at,
        "service_id": p.service_id,
        "patient_id": p.patient_id,
        "model_id": p.model_id,
        "model_version": p.model_version,
        "risk": p.risk,
        "risk_tier": p.risk_tier,
        "confidence": p.confidence,
        "review_suggested": p.review_suggested,
        "input_digest": p.input_digest,
        "feedback_outcome": row.feedback_outcome,
        "override_reason": override_reason_text(row.feedback_override_reason.as_ref()),
        "outcome_label": row.outcome_label,
    })
}

/// `GET /audit/predictions`
#[tracing::instrument(name = "Searching stored predictions", skip_all)]
pub async fn search(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, &[Need::Scope("audit.read")]).await?;
    let params = Params::parse(req.query_string());
    let mut known = FILTERS.to_vec();
    known.extend(["limit", "offset"]);
    params.only(&known)?;
    let f = filter(&params)?;
    let limit = params.number("limit", 50, 1, 1000)?;
    let offset = params.number("offset", 0, 0, i64::MAX / 2)?;
    let (total, rows) = state
        .store
        .search_predictions_page(&f, limit, offset)
        .await
        .map_err(unexpected)?;
    record_access(
        &req,
        &state,
        &who,
        Accessed {
            action: 'E',
            operation: "audit.predictions.search",
            patient_id: f.patient_id.as_deref(),
            entity: None,
        },
    )
    .await?;
    let next = (offset + (rows.len() as i64) < total).then(|| {
        let mut p = Params(
            params
                .0
                .iter()
                .filter(|(k, _)| k != "offset")
                .cloned()
                .collect(),
        );
        p.0.push(("offset".into(), (offset + limit).to_string()));
        let q = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(p.0.iter())
            .finish();
        format!("{}{}?{q}", base_url(&req, &state), req.path())
    });
    Ok(HttpResponse::Ok().json(json!({
        "total": total,
        "limit": limit,
        "offset": offset,
        "next": next,
        "items": rows.iter().map(summary).collect::<Vec<_>>(),
    })))
}

/// `GET /audit/predictions/{id}`
pub async fn detail(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, &[Need::Scope("audit.read")]).await?;
    let v = prediction_detail(&state, &path).await?;
    let entity = format!(
        "RiskAssessment/{}",
        v["prediction"]["id"].as_str().unwrap_or("")
    );
    record_access(
        &req,
        &state,
        &who,
        Accessed {
            action: 'R',
            operation: "audit.predictions.read",
            patient_id: v["prediction"]["patient_id"].as_str(),
            entity: Some(&entity),
        },
    )
    .await?;
    let mut v = v;
    v["fhir"] = json!(format!("{}/fhir/{entity}", base_url(&req, &state)));
    Ok(HttpResponse::Ok().json(v))
}

/// The prediction with its invocation (timings), cards and each card's
/// feedback. Shared with the review app.
pub(crate) async fn prediction_detail(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let not_found = || ApiError::NotFound(format!("no prediction {id}"));
    let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
    let row = state
        .store
        .get_prediction(uuid)
        .await
        .map_err(unexpected)?
        .ok_or_else(not_found)?;
    let inv = state
        .store
        .get_invocation(row.record.invocation_id)
        .await
        .map_err(unexpected)?;
    let mut cards = Vec::new();
    let mut invocation = Value::Null;
    if let Some(inv) = inv {
        for c in inv.cards.iter().filter(|c| c.prediction_id == Some(uuid)) {
            let fb = state
                .store
                .feedback_for_card(c.uuid)
                .await
                .map_err(unexpected)?;
            cards.push(json!({"uuid": c.uuid, "card": c.card, "feedback": fb}));
        }
        let i = &inv.invocation;
        invocation = json!({
            "id": i.id,
            "hook": i.hook,
            "hook_instance": i.hook_instance,
            "received_at": i.received_at,
            "total_ms": i.total_ms,
            "fhir_ms": i.fhir_ms,
            "inference_ms": i.inference_ms,
            "http_status": i.http_status,
            "outcome": i.outcome,
            "user_id": i.user_id,
            "encounter_id": i.encounter_id,
            "fhir_server_host": i.fhir_server_host,
            "client_iss": i.client_iss,
        });
    }
    Ok(json!({
        "prediction": row.record,
        "invocation": invocation,
        "cards": cards,
        "feedback_outcome": row.feedback_outcome,
        "override_reason": override_reason_text(row.feedback_override_reason.as_ref()),
        "outcome_label": row.outcome_label,
        "interval": row.interval(),
        "reasons": row.reasons(),
        "review_reasons": row.review_reasons(),
    }))
}

#[derive(Clone, Copy)]
enum Format {
    Ndjson,
    Csv,
}

/// `GET /audit/export.ndjson` and `/audit/export.csv`
async fn export(
    req: HttpRequest,
    state: web::Data<AppState>,
    format: Format,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, &[Need::Scope("audit.export")]).await?;
    let params = Params::parse(req.query_string());
    params.only(FILTERS)?;
    let f = filter(&params)?;
    let operation = match format {
        Format::Ndjson => "audit.export.ndjson",
        Format::Csv => "audit.export.csv",
    };
    record_access(
        &req,
        &state,
        &who,
        Accessed {
            action: 'E',
            operation,
            patient_id: f.patient_id.as_deref(),
            entity: None,
        },
    )
    .await?;
    let rx = state.store.stream_predictions(f);
    let head = match format {
        Format::Csv => Some(Bytes::from(csv_header())),
        Format::Ndjson => None,
    };
    let body =
        futures_util::stream::unfold((rx, head, false), move |(mut rx, head, done)| async move {
            if let Some(h) = head {
                return Some((Ok::<Bytes, ExportError>(h), (rx, None, done)));
            }
            if done {
                return None;
            }
            // One chunk: the next row, plus whatever is already buffered.
            let first = rx.recv().await?;
            let mut buf = String::new();
            let mut push = |r: Result<PredictionRow, StoreError>| -> Result<(), ExportError> {
                let row = r.map_err(ExportError)?;
                buf.push_str(&match format {
                    Format::Ndjson => ndjson_line(&row),
                    Format::Csv => csv_line(&row),
                });
                Ok(())
            };
            if let Err(e) = push(first) {
                tracing::error!(error = %e.0, "export stopped by a database error");
                return Some((Err(e), (rx, None, true)));
            }
            for _ in 1..ROWS_PER_CHUNK {
                match rx.try_recv() {
                    Ok(r) => {
                        if let Err(e) = push(r) {
                            tracing::error!(error = %e.0, "export stopped by a database error");
                            return Some((Err(e), (rx, None, true)));
                        }
                    }
                    Err(_) => break,
                }
            }
            Some((Ok(Bytes::from(buf)), (rx, None, false)))
        });
    let content_type = match format {
        Format::Ndjson => "application/x-ndjson",
        Format::Csv => "text/csv; charset=utf-8",
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("x-content-type-options", "nosniff"))
        .streaming(body))
}

/// A database failure in the middle of a streamed export: the response is
/// cut short (the client sees an incomplete body, never a silent truncation
/// dressed as success: the chunked encoding is not terminated).
#[derive(Debug)]
struct ExportError(StoreError);

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "export failed: {}", self.0)
    }
}

impl std::error::Error for ExportError {}

pub async fn export_ndjson(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    export(req, state, Format::Ndjson).await
}

pub async fn export_csv(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    export(req, state, Format::Csv).await
}

/// Aggregates over the filter, folded over the stream (flat memory).
pub(crate) async fn compute_aggregates(
    state: &AppState,
    f: PredictionFilter,
    bucket: Bucket,
) -> Result<Value, ApiError> {
    let mut rx = state.store.stream_predictions(f);
    let mut agg = Aggregator::new(bucket);
    while let Some(r) = rx.recv().await {
        agg.add(&r.map_err(unexpected)?);
    }
    Ok(agg.finish())
}

/// `GET /audit/aggregates`
#[tracing::instrument(name = "Aggregating predictions", skip_all)]
pub async fn aggregates(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, &[Need::Scope("audit.read")]).await?;
    let params = Params::parse(req.query_string());
    let mut known = FILTERS.to_vec();
    known.push("bucket");
    params.only(&known)?;
    let f = filter(&params)?;
    let bucket = match params.one("bucket")? {
        None => Bucket::Month,
        Some(b) => Bucket::parse(b).ok_or_else(|| bad("bucket", "must be day or month"))?,
    };
    let patient = f.patient_id.clone();
    let v = compute_aggregates(&state, f, bucket).await?;
    record_access(
        &req,
        &state,
        &who,
        Accessed {
            action: 'E',
            operation: "audit.aggregates",
            patient_id: patient.as_deref(),
            entity: None,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(v))
}

/// `POST /audit/outcomes`: `{patient, service, label, date}` or an array.
pub async fn post_outcomes(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, &[Need::Scope("audit.write")]).await?;
    let body = read_json(&req, payload, state.max_body_bytes).await?;
    let (items, array) = match body {
        Value::Array(a) => (a, true),
        other => (vec![other], false),
    };
    if items.is_empty() || items.len() > MAX_OUTCOMES {
        return Err(bad(
            "$",
            &format!("1 to {MAX_OUTCOMES} outcomes per request"),
        ));
    }
    let now = Utc::now();
    let mut records = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |f: &str| {
            if array {
                format!("[{i}].{f}")
            } else {
                f.to_owned()
            }
        };
        let obj = item
            .as_object()
            .ok_or_else(|| bad(&at("$"), "must be an object"))?;
        for k in obj.keys() {
            if !["patient", "service", "label", "date"].contains(&k.as_str()) {
                return Err(bad(
                    &at(k),
                    "unknown field; expected patient, service, label, date",
                ));
            }
        }
        let text = |f: &str| -> Result<String, ApiError> {
            match obj.get(f) {
                Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => {
                    Ok(s.trim().to_owned())
                }
                Some(_) => Err(bad(
                    &at(f),
                    "must be a non-empty string (at most 200 characters)",
                )),
                None => Err(bad(&at(f), "required")),
            }
        };
        let patient_raw = text("patient")?;
        let patient = Params(vec![("patient".into(), patient_raw)])
            .patient(&["patient"])
            .map_err(|_| bad(&at("patient"), "must be Patient/ID or ID"))?
            .unwrap_or_default();
        let service = text("service")?;
        if state.engine.registry.get(&service).is_none() {
            return Err(bad(&at("service"), &format!("no CDS service `{service}`")));
        }
        let label = match obj.get("label") {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) if n.as_f64() == Some(1.0) => true,
            Some(Value::Number(n)) if n.as_f64() == Some(0.0) => false,
            Some(_) => return Err(bad(&at("label"), "must be true/false (or 1/0)")),
            None => return Err(bad(&at("label"), "required")),
        };
        let date = NaiveDate::parse_from_str(&text("date")?, "%Y-%m-%d")
            .map_err(|_| bad(&at("date"), "must be a date YYYY-MM-DD"))?;
        if date > now.date_naive() + chrono::Duration::days(1) {
            return Err(bad(&at("date"), "is in the future"));
        }
        records.push(OutcomeRecord {
            id: Uuid::new_v4(),
            service_id: service,
            patient_id: patient,
            label,
            observed_on: date,
            recorded_at: now,
            recorded_by: who.sub.clone(),
        });
    }
    let single_patient = if records.len() == 1 {
        Some(records[0].patient_id.clone())
    } else {
        None
    };
    record_access(
        &req,
        &state,
        &who,
        Accessed {
            action: 'C',
            operation: "audit.outcomes.create",
            patient_id: single_patient.as_deref(),
            entity: None,
        },
    )
    .await?;
    for r in &records {
        state.store.record_outcome(r).await.map_err(unexpected)?;
    }
    Ok(HttpResponse::Created().json(json!({
        "ids": records.iter().map(|r| r.id).collect::<Vec<_>>()
    })))
}
