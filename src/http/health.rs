//! Liveness and readiness probes.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready to take traffic: the database answers. (Hooks still answer and spool
/// when it does not, but a load balancer should prefer healthy replicas.)
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({
            "status": "ready", "database": state.store.backend_name()
        })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "not ready", "database": "unreachable"
            }))
        }
    }
}
