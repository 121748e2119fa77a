//! The HTTP edge's error type: every client mistake becomes a 4xx with a JSON
//! body that says what was wrong and where; unexpected failures are a 500
//! whose body says nothing internal (the cause chain goes to the log).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::cds::FieldError;
use crate::services::HookError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request: {0}")]
    BadRequest(FieldError),
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    /// CDS Hooks 2.0 §"Trusting CDS Clients": a bare 401; the reason is logged only.
    #[error("unauthorized")]
    Unauthorized,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("required data unavailable")]
    PreconditionFailed {
        missing: Vec<String>,
        reasons: std::collections::BTreeMap<String, String>,
    },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bearer access token was missing, invalid, expired (401) or lacks
    /// the scope (403): RFC 6750 §3.1 codes, with a JSON body.
    #[error("access refused: {0}")]
    Access(#[from] crate::auth::AccessError),
    /// A SMART launch of the review app was refused (`auth::smart`).
    #[error("SMART launch refused: {0}")]
    Launch(#[from] crate::auth::smart::LaunchError),
    /// Authenticated, but this data is outside what the principal may see
    /// (a reviewer session bound to another patient).
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<HookError> for ApiError {
    fn from(e: HookError) -> Self {
        match e {
            HookError::UnknownService(id) => ApiError::NotFound(format!("no CDS service `{id}`")),
            HookError::BadRequest(f) => ApiError::BadRequest(f),
            HookError::PreconditionFailed { missing, reasons } => {
                ApiError::PreconditionFailed { missing, reasons }
            }
            HookError::Service(s) => ApiError::Unexpected(anyhow::Error::new(s)),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::NotJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Access(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED)
            }
            ApiError::Launch(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let body = match self {
            ApiError::BadRequest(f) => json!({
                "error": "invalid_request", "field": f.field, "message": f.message
            }),
            ApiError::NotJson(m) => json!({
                "error": "invalid_json", "field": "$", "message": m
            }),
            ApiError::Unauthorized => json!({"error": "unauthorized"}),
            ApiError::NotFound(m) => json!({"error": "not_found", "message": m}),
            ApiError::PayloadTooLarge { limit } => json!({
                "error": "payload_too_large",
                "message": format!("request body larger than {limit} bytes"),
                "limit": limit
            }),
            ApiError::UnsupportedMediaType(m) => json!({
                "error": "unsupported_media_type", "message": m
            }),
            ApiError::PreconditionFailed { missing, reasons } => json!({
                "error": "precondition_failed",
                "message": "required data was neither prefetched nor obtainable from the FHIR server",
                "missing": missing,
                "reasons": reasons
            }),
            ApiError::Unavailable(m) => json!({"error": "unavailable", "message": m}),
            ApiError::Access(e) => {
                // RFC 6750 §3: the challenge names the error code; the body
                // says it in words (never echoing the token).
                return HttpResponse::build(status)
                    .insert_header((
                        actix_web::http::header::WWW_AUTHENTICATE,
                        format!("Bearer realm=\"oncohooks\", error=\"{}\"", e.code()),
                    ))
                    .json(json!({"error": e.code(), "message": e.to_string()}));
            }
            ApiError::Launch(e) => {
                if e.status() >= 500 {
                    tracing::error!(error = %e, "SMART launch failed");
                } else {
                    tracing::warn!(error = %e, "SMART launch refused");
                }
                let mut b = json!({"error": e.code(), "message": e.to_string()});
                if let Some(f) = e.field() {
                    b["field"] = json!(f);
                }
                b
            }
            ApiError::Forbidden(m) => json!({"error": "forbidden", "message": m}),
            ApiError::Unexpected(e) => {
                tracing::error!(error = ?e, "unexpected error");
                json!({"error": "internal_error", "message": "unexpected server error; see the server log"})
            }
        };
        HttpResponse::build(status).json(body)
    }
}
