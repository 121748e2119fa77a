//! CDS services: one file per service, each implementing [`CdsService`].
//!
//! A service receives validated, gathered data ([`ServiceInput`]) and returns
//! cards plus the prediction and explanation that are stored for audit. The
//! shared hook pipeline (validation → gather → evaluate) is in [`engine`].

pub mod cachexia;
pub mod definition;
pub mod engine;
pub mod gather;
pub mod inference;
pub mod nodule;
pub mod notes;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::Value;

use crate::cds::{Card, HookRequest};
pub use definition::{RiskTiers, ServiceDefinition};
pub use engine::{Engine, HookError, HookOutcome};
pub use gather::{Gathered, KeySource};

/// What a service sees of one hook call.
pub struct ServiceInput<'a> {
    pub request: &'a HookRequest,
    pub gathered: &'a Gathered,
    /// The date the prediction is made for (today, unless pinned in config).
    pub index_date: NaiveDate,
    /// Where this server is reachable, for links on cards (model card, review).
    pub public_base_url: Option<&'a str>,
}

/// One named input value, as shown by `score --explain` and stored in the
/// prediction's feature snapshot.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FeatureValue {
    pub name: String,
    pub value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// e.g. `Observation/abc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    pub present: bool,
}

/// What a model (or the classic-index fallback) concluded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prediction {
    pub model_id: String,
    pub model_version: String,
    /// Probability-like risk in 0..1, when the method yields one.
    pub risk: Option<f64>,
    /// `low` / `elevated` / `high` / `unknown`.
    pub risk_tier: String,
    pub confidence: Option<f64>,
    pub review_suggested: bool,
    /// Service-specific details (indices, intervals, contributions).
    pub result: Value,
}

/// A service's answer to one hook.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub cards: Vec<Card>,
    pub prediction: Option<Prediction>,
    pub features: Vec<FeatureValue>,
    /// The deterministic baselines shown beside the model.
    pub baselines: Value,
    /// Model id, version, source label, whether it is synthetic-trained.
    pub model: Value,
    pub inference_ms: f64,
    /// How many hooks the model pass that scored this one held
    /// (`services::inference::Batcher`); `None` without a batched model call.
    pub model_batch: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("model inference failed: {0}")]
    Inference(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

#[async_trait]
pub trait CdsService: Send + Sync {
    fn definition(&self) -> &ServiceDefinition;

    /// Model id and version, reported in `x-model-version` and stored.
    fn model_version(&self) -> String;

    /// The model card (markdown): `<service dir>/<model_card>` when present.
    fn model_card(&self) -> Option<String> {
        let def = self.definition();
        let file = def.model_card.as_ref()?;
        std::fs::read_to_string(def.dir.as_ref()?.join(file)).ok()
    }

    /// Score the gathered data. CPU-heavy work must run off the async
    /// runtime (`tokio::task::spawn_blocking` or the inference pool).
    async fn evaluate(&self, input: ServiceInput<'_>) -> Result<Evaluation, ServiceError>;
}

/// The services this server offers, in discovery order.
#[derive(Clone, Default)]
pub struct Registry {
    services: Vec<Arc<dyn CdsService>>,
}

impl Registry {
    pub fn new(services: Vec<Arc<dyn CdsService>>) -> Self {
        Self { services }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<dyn CdsService>> {
        self.services.iter().find(|s| s.definition().id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn CdsService>> {
        self.services.iter()
    }
}
