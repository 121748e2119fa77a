//! `/fhir`: stored predictions as FHIR R4 RiskAssessment (with Provenance),
//! the access trail as AuditEvent, and the CapabilityStatement.
//! FHIR R4 §3.1.0 RESTful API: read, search-type, capabilities.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use uuid::Uuid;

use super::access::{Accessed, authorize, record_access};
use super::hooks::base_url;
use super::params::{Params, bad, date_range, with_offset};
use super::{ApiError, AppState};
use crate::auth::Need;
use crate::fhir::outputs::{self, Entry};
use crate::store::{AuditEventFilter, PredictionFilter, PredictionRow};

const FHIR_JSON: &str = "application/fhir+json";
/// Default and largest page (`_count`).
const DEFAULT_COUNT: i64 = 50;
const MAX_COUNT: i64 = 1000;

const READ_RA: Need = Need::Fhir {
    resource: "RiskAssessment",
    interaction: 'r',
};
const SEARCH_RA: Need = Need::Fhir {
    resource: "RiskAssessment",
    interaction: 's',
};

fn fhir(body: &serde_json::Value) -> HttpResponse {
    HttpResponse::Ok().content_type(FHIR_JSON).json(body)
}

fn unexpected(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Unexpected(e.into())
}

/// `GET /fhir/metadata`: public, as FHIR servers' capabilities are.
pub async fn metadata(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let base = format!("{}/fhir", base_url(&req, &state));
    fhir(&outputs::capability_statement(
        &base,
        env!("CARGO_PKG_VERSION"),
        &Utc::now().date_naive().to_string(),
    ))
}

/// `GET /fhir/RiskAssessment?subject=&date=&_count=&_offset=&_revinclude=`
#[tracing::instrument(name = "Searching RiskAssessments", skip_all)]
pub async fn search_risk_assessments(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, &[SEARCH_RA]).await?;
    let params = Params::parse(req.query_string());
    params.only(&[
        "subject",
        "patient",
        "date",
        "_count",
        "_offset",
        "_revinclude",
    ])?;
    let patient = params.patient(&["subject", "patient"])?;
    let range = date_range("date", params.all("date"))?;
    let count = params.number("_count", DEFAULT_COUNT, 1, MAX_COUNT)?;
    let offset = params.number("_offset", 0, 0, i64::MAX / 2)?;
    let provenance = match params.one("_revinclude")? {
        None => false,
        Some("Provenance:target") => true,
        Some(_) => return Err(bad("_revinclude", "only Provenance:target is supported")),
    };
    let filter = PredictionFilter {
        patient_id: patient.clone(),
        since: range.since,
        until: range.until,
        ..PredictionFilter::default()
    };
    let (total, rows) = state
        .store
        .search_predictions_page(&filter, count, offset)
        .await
        .map_err(unexpected)?;
    record_access(
        &req,
        &state,
        &who,
        Accessed {
            action: 'E',
            operation: "fhir.RiskAssessment.search",
            patient_id: patient.as_deref(),
            entity: None,
        },
    )
    .await?;

    let base = base_url(&req, &state);
    let mut entries = Vec::with_capacity(rows.len() * 2);
    for row in &rows {
        entries.push(Entry {
            full_url: format!("{base}/fhir/RiskAssessment/{}", row.record.id),
            resource: outputs::risk_assessment(row).map_err(unexpected)?,
            mode: "match",
        });
        if provenance {
            entries.push(Entry {
                full_url: format!("{base}/fhir/Provenance/{}", row.record.id),
                resource: outputs::provenance(row).map_err(unexpected)?,
                mode: "include",
            });
        }
    }
    let self_url = with_offset(&base, req.path(), &params, offset);
    let next = (offset + (rows.len() as i64) < total)
        .then(|| with_offset(&base, req.path(), &params, offset + count));
    Ok(fhir(&outputs::searchset(
        &self_url,
        next.as_deref(),
        total,
        entries,
    )))
}

async fn load(state: &AppState, id: &str) -> Result<PredictionRow, ApiError> {
    let not_found = || ApiError::NotFound(format!("no RiskAssessment/{id}"));
    let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
    state
        .store
        .get_prediction(uuid)
        .await
        .map_err(unexpected)?
        .ok_or_else(not_found)
}

/// `GET /fhir/RiskAssessment/{id}`
pub async fn read_risk_assessment(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, &[READ_RA]).await?;
    let row = load(&state, &path).await?;
    let entity = format!("RiskAssessment/{}", row.record.id);
    record_access(
        &req,
        &state,
        &who,
        Accessed {
            action: 'R',
            operation: "fhir.RiskAssessment.read",
            patient_id: Some(&row.record.patient_id),
            entity: Some(&entity),
        },
    )
    .await?;
    Ok(fhir(&outputs::risk_assessment(&row).map_err(unexpected)?))
}

/// `GET /fhir/Provenance/{id}` (the id of the RiskAssessment it targets).
pub async fn read_provenance(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(
        &req,
        &state,
        &[
            READ_RA,
            Need::Fhir {
                resource: "Provenance",
                interaction: 'r',
            },
        ],
    )
    .await?;
    let row = load(&state, &path).await?;
    let entity = format!("Provenance/{}", row.record.id);
    record_access(
        &req,
        &state,
        &who,
        Accessed {
            action: 'R',
            operation: "fhir.Provenance.read",
            patient_id: Some(&row.record.patient_id),
            entity: Some(&entity),
        },
    )
    .await?;
    Ok(fhir(&outputs::provenance(&row).map_err(unexpected)?))
}

/// `GET /fhir/AuditEvent?patient=&agent=&date=&_count=&_offset=` with
/// `audit.read`. Reading the trail is itself recorded.
#[tracing::instrument(name = "Searching AuditEvents", skip_all)]
pub async fn search_audit_events(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, &[Need::Scope("audit.read")]).await?;
    let params = Params::parse(req.query_string());
    params.only(&["patient", "entity", "agent", "date", "_count", "_offset"])?;
    let patient = params.patient(&["patient", "entity"])?;
    let range = date_range("date", params.all("date"))?;
    let count = params.number("_count", DEFAULT_COUNT, 1, MAX_COUNT)?;
    let offset = params.number("_offset", 0, 0, i64::MAX / 2)?;
    let filter = AuditEventFilter {
        patient_id: patient.clone(),
        agent_sub: params.one("agent")?.map(str::to_owned),
        since: range.since,
        until: range.until,
    };
    let (events, total) = state
        .store
        .search_audit_events(&filter, count, offset)
        .await
        .map_err(unexpected)?;
    record_access(
        &req,
        &state,
        &who,
        Accessed {
            action: 'E',
            operation: "fhir.AuditEvent.search",
            patient_id: patient.as_deref(),
            entity: None,
        },
    )
    .await?;
    let base = base_url(&req, &state);
    let n = events.len() as i64;
    let entries = events
        .into_iter()
        .map(|e| Entry {
            full_url: format!("{base}/fhir/AuditEvent/{}", e.id),
            resource: e.resource,
            mode: "match",
        })
        .collect();
    let self_url = with_offset(&base, req.path(), &params, offset);
    let next =
        (offset + n < total).then(|| with_offset(&base, req.path(), &params, offset + count));
    Ok(fhir(&outputs::searchset(
        &self_url,
        next.as_deref(),
        total,
        entries,
    )))
}
