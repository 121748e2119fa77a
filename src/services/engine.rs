//! The hook pipeline shared by the HTTP server and `oncohooks score`:
//! parse and validate → gather (prefetch + FHIR) → evaluate → response.
//! Persistence is the caller's business (the CLI's `score` stores nothing).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use serde_json::Value;
use tokio::time::Instant;

use super::gather::{GatherError, gather};
use super::{CdsService, Evaluation, KeySource, Registry, ServiceError, ServiceInput};
use crate::cds::{CdsResponse, FieldError, HookRequest};
use crate::fhir::{FhirClient, SkippedEntry};

pub struct Engine {
    pub registry: Registry,
    /// None: never fetch (offline scoring without a FHIR server).
    pub fhir: Option<FhirClient>,
    /// One deadline for all FHIR work of a hook.
    pub fhir_deadline: Duration,
    /// Pin the index date (reproducible demos and tests); None = today (UTC).
    pub index_date: Option<NaiveDate>,
    pub public_base_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("no CDS service `{0}`")]
    UnknownService(String),
    #[error("invalid request: {0}")]
    BadRequest(#[from] FieldError),
    #[error("required data unavailable: {}", .missing.join(", "))]
    PreconditionFailed {
        missing: Vec<String>,
        reasons: BTreeMap<String, String>,
    },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<GatherError> for HookError {
    fn from(e: GatherError) -> Self {
        match e {
            GatherError::PreconditionFailed { missing, reasons } => {
                HookError::PreconditionFailed { missing, reasons }
            }
        }
    }
}

/// Everything about one answered hook, for the response and for the audit record.
#[derive(Debug)]
pub struct HookOutcome {
    pub response: CdsResponse,
    pub evaluation: Evaluation,
    pub sources: BTreeMap<String, KeySource>,
    pub skipped: Vec<SkippedEntry>,
    pub input_digest: String,
    pub index_date: NaiveDate,
    pub fhir_ms: f64,
    /// Dated weight and lab series (`clinical::trends`), for the review app.
    pub trends: Value,
}

impl HookOutcome {
    /// The stored feature snapshot: named inputs, where each key's data came
    /// from, what was skipped, and the trends. Contains no access tokens.
    /// The trends are moved out, not copied: storing the record is their
    /// last use (a 10-20 KB tree copied per hook showed in profiles).
    pub fn take_snapshot(&mut self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(
            "index_date".into(),
            Value::String(self.index_date.to_string()),
        );
        m.insert("features".into(), to_value(&self.evaluation.features));
        m.insert("sources".into(), to_value(&self.sources));
        m.insert("skipped".into(), to_value(&self.skipped));
        m.insert("trends".into(), std::mem::take(&mut self.trends));
        Value::Object(m)
    }

    /// The stored result: the prediction's details, the baselines and the
    /// model description, moved out of the evaluation (last use, as above).
    pub fn take_result(&mut self) -> Value {
        let e = &mut self.evaluation;
        let prediction = e
            .prediction
            .as_mut()
            .map_or(Value::Null, |p| std::mem::take(&mut p.result));
        let mut m = serde_json::Map::new();
        m.insert("prediction".into(), prediction);
        m.insert("baselines".into(), std::mem::take(&mut e.baselines));
        m.insert("model".into(), std::mem::take(&mut e.model));
        Value::Object(m)
    }
}

/// Serialising these plain data types cannot fail (string keys, finite or
/// null floats); `Null` keeps the record storable if that ever changes.
fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Engine {
    /// Find the service and validate the request against it (400/404).
    pub fn parse(
        &self,
        service_id: &str,
        body: Value,
    ) -> Result<(Arc<dyn CdsService>, HookRequest), HookError> {
        let service = self
            .registry
            .get(service_id)
            .cloned()
            .ok_or_else(|| HookError::UnknownService(service_id.to_owned()))?;
        let def = service.definition();
        let req = HookRequest::parse(body, &def.hook)?;
        def.validate_prefetch(&req)?;
        Ok((service, req))
    }

    pub fn index_date(&self) -> NaiveDate {
        self.index_date.unwrap_or_else(|| Utc::now().date_naive())
    }

    /// Gather data and evaluate. `started` is when the request arrived: the
    /// FHIR deadline counts from there. `base_url` is where this server was
    /// reached (for links on cards) when no public base URL is configured.
    pub async fn evaluate(
        &self,
        service: &dyn CdsService,
        req: &HookRequest,
        started: Instant,
        base_url: Option<&str>,
    ) -> Result<HookOutcome, HookError> {
        let index_date = self.index_date();
        let deadline = started + self.fhir_deadline;
        let gathered = gather(
            &service.definition().prefetch,
            req,
            self.fhir.as_ref(),
            index_date,
            deadline,
        )
        .await?;
        let mut evaluation = service
            .evaluate(ServiceInput {
                request: req,
                gathered: &gathered,
                index_date,
                public_base_url: self.public_base_url.as_deref().or(base_url),
            })
            .await?;
        // Sub-millisecond on a typical record: the series are stored with
        // the prediction so the review app can plot them later.
        let trends = crate::clinical::trends::trends(&crate::clinical::Timeline::from_record(
            &gathered.record,
            index_date,
        ));
        Ok(HookOutcome {
            trends,
            response: CdsResponse {
                // Moved: the response is where the cards live from here on.
                cards: std::mem::take(&mut evaluation.cards),
            },
            sources: gathered.sources,
            skipped: gathered.record.skipped,
            input_digest: gathered.input_digest,
            index_date,
            fhir_ms: gathered.fhir_ms,
            evaluation,
        })
    }
}
