//! Bearer access tokens on the output endpoints (FHIR, audit API, review
//! app, dashboard) and the AuditEvent every successful access leaves.

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use chrono::Utc;
use uuid::Uuid;

use super::hooks::base_url;
use super::{ApiError, AppState};
use crate::auth::{AccessError, Need, Principal};
use crate::fhir::outputs::{Access, audit_event};
use crate::store::AuditEventRecord;

/// Verify the request's bearer token and check that it grants one of
/// `needs`. Tokens are accepted in the Authorization header only (never
/// in the URL, RFC 6750 §2.3 "SHOULD NOT", so they stay out of logs and
/// of the audit trail).
pub async fn authorize(
    req: &HttpRequest,
    state: &AppState,
    needs: &[Need],
) -> Result<Principal, ApiError> {
    authorize_with(req, state, needs, false).await
}

/// The session cookie of the review app and dashboard (HttpOnly,
/// SameSite=Strict: never sent on cross-site requests, which is what keeps
/// the verdict form safe from cross-site request forgery).
pub const SESSION_COOKIE: &str = "oncohooks_token";

/// Like [`authorize`], for the browser pages: the token may also come from
/// the session cookie set by `/review/session`.
pub async fn authorize_browser(
    req: &HttpRequest,
    state: &AppState,
    needs: &[Need],
) -> Result<Principal, ApiError> {
    authorize_with(req, state, needs, true).await
}

async fn authorize_with(
    req: &HttpRequest,
    state: &AppState,
    needs: &[Need],
    cookie: bool,
) -> Result<Principal, ApiError> {
    let from_cookie = if cookie {
        cookie_value(req, SESSION_COOKIE)
    } else {
        None
    };
    // A reviewer session from a SMART launch (`auth::smart`): our own
    // signed cookie, used when no bearer token is sent.
    if cookie
        && req.headers().get(AUTHORIZATION).is_none()
        && from_cookie.is_none()
        && let Some(session) = cookie_value(req, crate::auth::smart::SESSION_COOKIE)
    {
        let principal = state.smart.session(&session).ok_or_else(|| {
            tracing::info!(path = %req.path(), "reviewer session refused (expired or not ours)");
            AccessError::Invalid(
                "the review session has expired or is not valid: launch the app again from the EHR"
                    .into(),
            )
        })?;
        principal.require(needs)?;
        return Ok(principal);
    }
    let token = match req.headers().get(AUTHORIZATION) {
        None => from_cookie.as_deref(),
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| AccessError::Invalid("Authorization header is not ASCII".into()))?;
            Some(crate::auth::bearer_token(v).map_err(|e| AccessError::Invalid(e.to_string()))?)
        }
    };
    let principal = state.access.verify(token).await.inspect_err(|e| {
        tracing::info!(reason = %e, path = %req.path(), "access token refused");
    })?;
    principal.require(needs)?;
    Ok(principal)
}

/// What was accessed, for the AuditEvent.
pub struct Accessed<'a> {
    /// `R` read, `E` search/export/aggregate, `C` create.
    pub action: char,
    pub operation: &'a str,
    pub patient_id: Option<&'a str>,
    pub entity: Option<&'a str>,
}

/// Store the FHIR AuditEvent of a successful access *before* the data goes
/// out: if it cannot be recorded, the data is not served (503), so the
/// trail has no gaps.
pub async fn record_access(
    req: &HttpRequest,
    state: &AppState,
    who: &Principal,
    what: Accessed<'_>,
) -> Result<(), ApiError> {
    let path = match req.uri().query() {
        Some(q) => format!("{}?{q}", req.path()),
        None => req.path().to_owned(),
    };
    let server = base_url(req, state);
    let id = Uuid::new_v4();
    let recorded = Utc::now();
    let resource = audit_event(&Access {
        id,
        recorded,
        agent_iss: &who.iss,
        agent_sub: &who.sub,
        action: what.action,
        operation: what.operation,
        path: &path,
        patient_id: what.patient_id,
        entity: what.entity,
        server: &server,
    })
    .map_err(|e| ApiError::Unexpected(e.into()))?;
    let record = AuditEventRecord {
        id,
        recorded_at: recorded,
        agent_iss: who.iss.clone(),
        agent_sub: who.sub.clone(),
        action: what.action.to_string(),
        operation: what.operation.to_owned(),
        path,
        patient_id: what.patient_id.map(str::to_owned),
        entity: what.entity.map(str::to_owned),
        resource,
    };
    state.store.record_audit_event(&record).await.map_err(|e| {
        tracing::error!(error = %e, "access audit event could not be stored; refusing to serve");
        ApiError::Unavailable("the access could not be audited; retry later".into())
    })
}

/// A cookie's value from the Cookie header (RFC 6265 §5.4), without the
/// actix `cookies` feature.
pub fn cookie_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}
