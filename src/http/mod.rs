//! The actix-web application: routes, body limits, error mapping, CORS.
//! Handlers are thin: they authenticate, read the body, call the engine and
//! the store, and map errors to JSON.

pub mod body;
pub mod error;
pub mod health;
pub mod hooks;
pub mod model_cards;

use actix_web::web;

use crate::auth::ClientVerifier;
use crate::services::Engine;
use crate::store::{Spool, Store};

pub use error::ApiError;

/// Shared, read-only state of all workers.
pub struct AppState {
    pub engine: Engine,
    pub store: Store,
    pub spool: Spool,
    pub verifier: ClientVerifier,
    pub max_body_bytes: usize,
    /// Fixed public base URL (behind proxies); else derived from the request.
    pub public_base_url: Option<String>,
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
        .route("/model-cards/{id}", web::get().to(model_cards::model_card));
}
