//! The review app (`/review/…`, linked from every card) and the dashboard
//! (`/dashboard`). Server-rendered HTML (`crate::review`); every view and
//! every verdict is recorded as an AuditEvent; a verdict is stored as CDS
//! Hooks feedback on the prediction's card, with the reviewer's identity
//! (the access token's `sub`, or the `fhirUser` of a SMART launch).

use actix_web::http::header::{CONTENT_TYPE, LOCATION};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use std::time::Duration;

use actix_web::http::header::SET_COOKIE;

use super::access::{Accessed, SESSION_COOKIE, authorize_browser, cookie_value, record_access};
use super::audit_api::{compute_aggregates, prediction_detail};
use super::hooks::base_url;
use super::params::{Params, bad};
use super::{ApiError, AppState};
use crate::audit::aggregates::Bucket;
use crate::auth::smart::{LAUNCH_COOKIE, LaunchError, SESSION_COOKIE as SMART_SESSION};
use crate::auth::{Need, Principal};
use crate::review::{ReviewOptions, dashboard_page, review_page, signin_page};
use crate::store::FeedbackRecord;
use crate::store::spool::persist_feedback;

/// Longest verdict comment.
const MAX_COMMENT: usize = 2000;
/// Largest form body (a verdict, or a pasted token).
const MAX_FORM_BYTES: usize = 32 * 1024;
const VERDICT_SYSTEM: &str = "https://oncohooks.invalid/fhir/CodeSystem/review-verdict";

const VIEW: &[Need] = &[
    Need::Scope("review.write"),
    Need::Scope("audit.read"),
    Need::Fhir {
        resource: "RiskAssessment",
        interaction: 'r',
    },
];

fn html(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // Nothing external is loaded: say so to the browser.
        .insert_header((
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'self'",
        ))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("cache-control", "no-store"))
        .body(body)
}

/// A browser without a (valid) token goes to the sign-in page.
fn signin_redirect(req: &HttpRequest, e: ApiError) -> Result<HttpResponse, ApiError> {
    let wants_html = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    match &e {
        ApiError::Access(a) if a.status() == 401 && wants_html => {
            let next = match req.uri().query() {
                Some(q) => format!("{}?{q}", req.path()),
                None => req.path().to_owned(),
            };
            let q = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("next", &next)
                .finish();
            Ok(HttpResponse::SeeOther()
                .insert_header((LOCATION, format!("/review/signin?{q}")))
                .finish())
        }
        _ => Err(e),
    }
}

/// `GET /review/{prediction id}`
#[tracing::instrument(name = "Showing the review page", skip_all)]
pub async fn show(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = match authorize_browser(&req, &state, VIEW).await {
        Ok(p) => p,
        Err(e) => return signin_redirect(&req, e),
    };
    let detail = prediction_detail(&state, &path).await?;
    same_patient(&who, &detail)?;
    let pid = detail["prediction"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let entity = format!("RiskAssessment/{pid}");
    record_access(
        &req,
        &state,
        &who,
        Accessed {
            action: 'R',
            operation: "review.read",
            patient_id: detail["prediction"]["patient_id"].as_str(),
            entity: Some(&entity),
        },
    )
    .await?;
    let saved = Params::parse(req.query_string()).one("saved")? == Some("1");
    Ok(html(review_page(
        &detail,
        &ReviewOptions {
            can_write: who.has_scope("review.write"),
            viewer: &who.sub,
            saved,
        },
    )))
}

/// A reviewer session from a SMART launch sees only the launch's patient:
/// the EHR authorised the clinician for that patient, not for others.
fn same_patient(who: &Principal, detail: &serde_json::Value) -> Result<(), ApiError> {
    let patient = detail["prediction"]["patient_id"].as_str().unwrap_or("");
    if who.may_see_patient(patient) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this review session was launched from the EHR for another patient; launch the app from this patient's card".into(),
        ))
    }
}

async fn read_form(payload: web::Payload) -> Result<Params, ApiError> {
    let bytes = super::body::read_limited(payload, MAX_FORM_BYTES).await?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("$", "form body is not UTF-8"))?;
    Ok(Params::parse(text))
}

fn require_form(req: &HttpRequest) -> Result<(), ApiError> {
    let ct = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/x-www-form-urlencoded") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "expected application/x-www-form-urlencoded".into(),
        ))
    }
}

/// `POST /review/{prediction id}/verdict` (form: `card`, `verdict` =
/// agree|disagree, `comment`): stored as CDS Hooks feedback on the card —
/// agree as `accepted`, disagree as `overridden` with an override reason —
/// then 303 back to the page (POST/redirect/GET).
#[tracing::instrument(name = "Recording a review verdict", skip_all)]
pub async fn verdict(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize_browser(&req, &state, &[Need::Scope("review.write")]).await?;
    require_form(&req)?;
    let form = read_form(payload).await?;
    let detail = prediction_detail(&state, &path).await?;
    same_patient(&who, &detail)?;
    let prediction = &detail["prediction"];
    let card: Uuid = form
        .one("card")?
        .and_then(|c| Uuid::parse_str(c).ok())
        .ok_or_else(|| bad("card", "required: the uuid of the prediction's card"))?;
    let belongs = detail["cards"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["uuid"] == json!(card)));
    if !belongs {
        return Err(bad("card", "is not a card of this prediction"));
    }
    let verdict = form.one("verdict")?.unwrap_or_default();
    let (outcome, code, display) = match verdict {
        "agree" => ("accepted", "expert-agrees", "Expert agrees"),
        "disagree" => ("overridden", "expert-disagrees", "Expert disagrees"),
        _ => return Err(bad("verdict", "must be agree or disagree")),
    };
    let comment = form.one("comment")?.unwrap_or_default().trim().to_owned();
    if comment.chars().count() > MAX_COMMENT {
        return Err(bad("comment", &format!("at most {MAX_COMMENT} characters")));
    }
    let now = Utc::now();
    // CDS Hooks 2.0 §Feedback: overrideReason is `{reason: Coding,
    // userComment}`; the reviewer and the app are added so the trail says
    // who decided.
    let mut reason = json!({
        "reason": {"system": VERDICT_SYSTEM, "code": code, "display": display},
        "reviewer": who.sub,
        "source": "review-app",
    });
    if !comment.is_empty() {
        reason["userComment"] = json!(comment);
    }
    let mut h = Sha256::new();
    for part in [
        card.to_string(),
        who.iss.clone(),
        who.sub.clone(),
        verdict.to_owned(),
        comment.clone(),
        now.to_rfc3339(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let record = FeedbackRecord {
        id: Uuid::new_v4(),
        service_id: prediction["service_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        card_uuid: card,
        outcome: outcome.to_owned(),
        override_reason: Some(reason),
        accepted_suggestions: json!([]),
        outcome_timestamp: now,
        received_at: now,
        client_iss: Some(who.iss.clone()),
        feedback_digest: hex::encode(h.finalize()),
    };
    let pid = prediction["id"].as_str().unwrap_or_default().to_owned();
    let entity = format!("RiskAssessment/{pid}");
    record_access(
        &req,
        &state,
        &who,
        Accessed {
            action: 'C',
            operation: "review.verdict",
            patient_id: prediction["patient_id"].as_str(),
            entity: Some(&entity),
        },
    )
    .await?;
    persist_feedback(&state.store, &state.spool, &record)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "review verdict could not be persisted or spooled");
            ApiError::Unavailable("the verdict could not be stored; retry later".into())
        })?;
    // On a page with one block per nodule, land back on the one judged.
    let anchor = crate::review::nodule::anchor_for_card(&detail, &card.to_string())
        .map(|a| format!("#{a}"))
        .unwrap_or_default();
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, format!("/review/{pid}?saved=1{anchor}")))
        .finish())
}

fn is_https(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

/// `GET /review/launch`: the card's `smart` link.
///
/// - `?iss=…&launch=…`: a SMART App Launch 2.0 EHR launch (`auth::smart`):
///   the issuer must be allow-listed; the browser goes to the EHR's
///   authorization endpoint with PKCE S256, and comes back to
///   `/review/callback`.
/// - `?appContext=…` (or `?predictionId=…`): EHRs and the sandbox that
///   pass the card's `appContext` (`{"predictionId": …}`) as a query
///   parameter land on the page directly (it then asks for a token).
#[tracing::instrument(name = "Launching the review app", skip_all)]
pub async fn launch(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = Params::parse(req.query_string());
    if let Some(iss) = params.one("iss")? {
        let launch = params
            .one("launch")?
            .ok_or(LaunchError::MissingParameter("launch"))?;
        let redirect_uri = state.smart.redirect_uri(&base_url(&req, &state));
        let begun = state.smart.begin(iss, launch, &redirect_uri).await?;
        let attrs = state.smart.cookie_attributes(is_https(&req), begun.max_age);
        return Ok(HttpResponse::Found()
            .insert_header((
                SET_COOKIE,
                format!("{LAUNCH_COOKIE}={}; {attrs}", begun.cookie),
            ))
            .insert_header((LOCATION, begun.authorize_url.to_string()))
            .insert_header(("cache-control", "no-store"))
            .finish());
    }
    let id = params
        .one("appContext")?
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .and_then(|v| v["predictionId"].as_str().map(str::to_owned))
        .or(params.one("predictionId")?.map(str::to_owned));
    match id.and_then(|i| Uuid::parse_str(&i).ok()) {
        Some(id) => Ok(HttpResponse::SeeOther()
            .insert_header((LOCATION, format!("/review/{id}")))
            .finish()),
        None => Err(bad(
            "appContext",
            "expected the card's appContext ({\"predictionId\": …}); or open the card's absolute link",
        )),
    }
}

/// `GET /review/callback?code=…&state=…`: the end of a SMART launch.
/// Checks the state against the launch cookie, exchanges the code with the
/// PKCE verifier, verifies the id_token, picks the prediction from the
/// launch context, records the launch as an AuditEvent, and starts a
/// reviewer session (our own signed cookie; the EHR's tokens are dropped).
/// Every answer clears the launch cookie: a launch is used once.
#[tracing::instrument(name = "Completing the review app's SMART launch", skip_all)]
pub async fn callback(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let clear = format!(
        "{LAUNCH_COOKIE}=; {}",
        state
            .smart
            .cookie_attributes(is_https(&req), Duration::ZERO)
    );
    let mut resp = match complete_launch(&req, &state).await {
        Ok(r) => r,
        Err(e) => actix_web::ResponseError::error_response(&e),
    };
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&clear) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}

async fn complete_launch(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, ApiError> {
    let params: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .into_owned()
            .collect();
    let cookie = cookie_value(req, LAUNCH_COOKIE);
    let done = state.smart.complete(cookie.as_deref(), &params).await?;
    // The launch context chooses the page: the card's prediction, which
    // must be about the EHR's patient; else that patient's newest one.
    let row = match (done.prediction_id, done.patient.as_deref()) {
        (Some(id), patient) => {
            let row = state
                .store
                .get_prediction(id)
                .await
                .map_err(|e| ApiError::Unexpected(e.into()))?
                .ok_or_else(|| ApiError::NotFound(format!("no stored prediction {id}")))?;
            if patient.is_some_and(|p| p != row.record.patient_id) {
                return Err(LaunchError::Context(
                    "appContext names a prediction about another patient than the EHR's launch context"
                        .into(),
                )
                .into());
            }
            row
        }
        (None, Some(patient)) => {
            let filter = crate::store::PredictionFilter {
                patient_id: Some(patient.to_owned()),
                ..Default::default()
            };
            state
                .store
                .search_predictions(&filter, 1, 0)
                .await
                .map_err(|e| ApiError::Unexpected(e.into()))?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    ApiError::NotFound("no stored prediction for the launch's patient".into())
                })?
        }
        (None, None) => {
            return Err(LaunchError::Context(
                "the token response names neither a prediction (appContext) nor a patient".into(),
            )
            .into());
        }
    };
    let patient = row.record.patient_id.clone();
    let (session, lifetime) = state.smart.session_cookie(&done, Some(&patient));
    let who = Principal {
        iss: done.identity.iss.clone(),
        sub: done.identity.user.clone(),
        scopes: done.grant.clone(),
        patient: Some(patient.clone()),
    };
    let entity = format!("RiskAssessment/{}", row.record.id);
    record_access(
        req,
        state,
        &who,
        Accessed {
            action: 'E',
            operation: "review.launch",
            patient_id: Some(&patient),
            entity: Some(&entity),
        },
    )
    .await?;
    tracing::info!(prediction = %row.record.id, "Reviewer signed in through a SMART launch");
    let attrs = state.smart.cookie_attributes(is_https(req), lifetime);
    Ok(HttpResponse::SeeOther()
        .insert_header((SET_COOKIE, format!("{SMART_SESSION}={session}; {attrs}")))
        .insert_header((LOCATION, format!("/review/{}", row.record.id)))
        .insert_header(("cache-control", "no-store"))
        .finish())
}

/// `GET /review/signin?next=…`
pub async fn signin(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let params = Params::parse(req.query_string());
    let next = safe_next(params.one("next")?);
    Ok(html(signin_page(&next, None)))
}

/// Only same-site paths: never an absolute or protocol-relative URL (an
/// open redirect would hand the session to another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/dashboard".to_owned(),
    }
}

/// `POST /review/session` (form: `token`, `next`): checks the token, keeps
/// it in an HttpOnly, SameSite=Strict cookie, and goes to `next`.
pub async fn session(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_form(&req)?;
    let form = read_form(payload).await?;
    let next = safe_next(form.one("next")?);
    let token = form.one("token")?.unwrap_or_default().trim().to_owned();
    if let Err(e) = state.access.verify(Some(&token)).await {
        return Ok(html(signin_page(&next, Some(&e.to_string()))));
    }
    let secure = if req.connection_info().scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    Ok(HttpResponse::SeeOther()
        .insert_header((
            actix_web::http::header::SET_COOKIE,
            format!(
                "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600{secure}"
            ),
        ))
        .insert_header((LOCATION, next))
        .finish())
}

/// `GET /dashboard?bucket=day|month&service=…`
#[tracing::instrument(name = "Showing the dashboard", skip_all)]
pub async fn dashboard(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let who = match authorize_browser(&req, &state, &[Need::Scope("audit.read")]).await {
        Ok(p) => p,
        Err(e) => return signin_redirect(&req, e),
    };
    let params = Params::parse(req.query_string());
    params.only(&["bucket", "service"])?;
    let bucket_name = params.one("bucket")?.unwrap_or("month");
    let bucket = Bucket::parse(bucket_name).ok_or_else(|| bad("bucket", "must be day or month"))?;
    let filter = crate::store::PredictionFilter {
        service_id: params.one("service")?.map(str::to_owned),
        ..Default::default()
    };
    let agg = compute_aggregates(&state, filter, bucket).await?;
    record_access(
        &req,
        &state,
        &who,
        Accessed {
            action: 'E',
            operation: "dashboard",
            patient_id: None,
            entity: None,
        },
    )
    .await?;
    Ok(html(dashboard_page(&agg, bucket_name)))
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_is_always_a_local_path() {
        assert_eq!(safe_next(Some("/review/x?saved=1")), "/review/x?saved=1");
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil",
            "javascript:x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/dashboard", "{bad}");
        }
    }
}
