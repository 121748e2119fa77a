//! `GET /model-cards/{id}`: the service's model card (markdown), linked from
//! every card's `source.url`.

use actix_web::{HttpResponse, web};

use super::{ApiError, AppState};

pub async fn model_card(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let service = state
        .engine
        .registry
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no CDS service `{id}`")))?;
    let text = service
        .model_card()
        .ok_or_else(|| ApiError::NotFound(format!("service `{id}` has no model card")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/markdown; charset=utf-8")
        .body(text))
}
