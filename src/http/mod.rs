//! The actix-web application: routes, body limits, error mapping, CORS.
//! Handlers are thin: they authenticate, read the body, call the engine and
//! the store, and map errors to JSON.

pub mod access;
pub mod audit_api;
pub mod body;
pub mod error;
pub mod fhir_api;
pub mod health;
pub mod hooks;
pub mod model_cards;
pub mod params;
pub mod review;

use actix_web::web;

use crate::auth::{AccessVerifier, ClientVerifier, SmartLauncher};
use crate::services::Engine;
use crate::store::{Spool, Store};
use crate::writeback::WritebackPolicy;

pub use error::ApiError;

/// Shared, read-only state of all workers.
pub struct AppState {
    pub engine: Engine,
    pub store: Store,
    pub spool: Spool,
    pub verifier: ClientVerifier,
    /// Access tokens of readers of our outputs (FHIR, audit, review).
    pub access: AccessVerifier,
    pub max_body_bytes: usize,
    /// Fixed public base URL (behind proxies); else derived from the request.
    pub public_base_url: Option<String>,
    /// Which stored predictions get a write-back job (`None`: write-back off).
    pub writeback: Option<WritebackPolicy>,
    /// SMART App Launch of the review app and its reviewer sessions.
    pub smart: SmartLauncher,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/cds-services", web::get().to(hooks::discovery))
        .route("/cds-services/{id}", web::post().to(hooks::call_service))
        .route(
            "/cds-services/{id}/feedback",
            web::post().to(hooks::feedback),
        )
        .route("/model-cards/{id}", web::get().to(model_cards::model_card))
        .route("/fhir/metadata", web::get().to(fhir_api::metadata))
        .route(
            "/fhir/RiskAssessment",
            web::get().to(fhir_api::search_risk_assessments),
        )
        .route(
            "/fhir/RiskAssessment/{id}",
            web::get().to(fhir_api::read_risk_assessment),
        )
        .route(
            "/fhir/Provenance/{id}",
            web::get().to(fhir_api::read_provenance),
        )
        .route(
            "/fhir/AuditEvent",
            web::get().to(fhir_api::search_audit_events),
        )
        .route(
            "/audit/openapi.json",
            web::get().to(audit_api::openapi_json),
        )
        .route("/audit/predictions", web::get().to(audit_api::search))
        .route("/audit/predictions/{id}", web::get().to(audit_api::detail))
        .route(
            "/audit/export.ndjson",
            web::get().to(audit_api::export_ndjson),
        )
        .route("/audit/export.csv", web::get().to(audit_api::export_csv))
        .route("/audit/aggregates", web::get().to(audit_api::aggregates))
        .route("/audit/outcomes", web::post().to(audit_api::post_outcomes))
        .route("/review/launch", web::get().to(review::launch))
        .route("/review/callback", web::get().to(review::callback))
        .route("/review/signin", web::get().to(review::signin))
        .route("/review/session", web::post().to(review::session))
        .route("/review/{id}", web::get().to(review::show))
        .route("/review/{id}/verdict", web::post().to(review::verdict))
        .route("/dashboard", web::get().to(review::dashboard));
}
