//! `cachexia-risk`: cancer cachexia risk on `patient-view` (seed paper §1,
//! arXiv 2503.06797).
//!
//! The risk is the multimodal ensemble's (`ml::cachexia`: fusion
//! transformer over demographics, labs, weight history, CT body composition
//! and notes, temperature-scaled, with a conformal expert-review gate),
//! shown beside the classic indices (Fearon 2011, GLIM, L3 sarcopenia by
//! Prado 2008 / Martin 2013, CXI, mCXI; rule in
//! `clinical::indices::assessment`). Without a loadable model the card is the
//! classic indices' alone, and says so.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::inference::{Batcher, InferencePool};
use super::notes::{NotesOutcome, NotesPipeline};
use super::{
    CdsService, Evaluation, FeatureValue, KeySource, Prediction, ServiceDefinition, ServiceError,
    ServiceInput,
};
use crate::cds::{
    Action, ActionType, Card, CardBuilder, Coding, Indicator, SelectionBehavior, Source, Suggestion,
};
use crate::clinical::codes::BODY_COMPOSITION;
use crate::clinical::provenance::format_value;
use crate::clinical::{
    Analyte, ClassicAssessment, ClassicRisk, Cutoffs, CxiStatus, FearonStatus, GlimStatus,
    Measurement, RiskLevel, SarcopeniaStatus, SourceRef, Timeline,
};
use crate::config::Settings;
use crate::features::cachexia::{self as features, Modality};
use crate::imaging::ImagingCache;
use crate::imaging::cache::{CtFinding, CtRules, CtStatus, ct_studies, resolve_offline};
use crate::imaging::jobs::{BodyCompositionOutcome, PIPELINE_VERSION, SliceLocator};
use crate::ml::cachexia::{CachexiaEnsemble, ModelPrediction, RawInputs};
use crate::ml::{TextEncoder, TextEncoderOptions};
use crate::store::Store;

pub const SERVICE_ID: &str = "cachexia-risk";
const EMBEDDED_DEFINITION: &str = include_str!("../../cds-hooks/cachexia-risk/service.toml");
const EMBEDDED_MODEL_CARD: &str = include_str!("../../cds-hooks/cachexia-risk/model-card.md");
pub const MODEL_ID: &str = "cachexia-classic-indices";
const METHOD_VERSION: &str = "1.0.0";
const OVERRIDE_SYSTEM: &str = "https://oncohooks.invalid/fhir/CodeSystem/cachexia-override-reason";

pub struct CachexiaService {
    definition: ServiceDefinition,
    cutoffs: Cutoffs,
    /// `1.0.0+<cut-off digest>`: a change of configured cut-offs is a
    /// different method version in the audit trail.
    version: String,
    /// The imaging cache and job queue; `None` (offline `score`) counts CT
    /// body composition as missing.
    imaging: Option<ImagingCache>,
    /// The multimodal ensemble, loaded once at start-up.
    model: Option<Arc<CachexiaEnsemble>>,
    /// The notes pipeline (MiniLM + embedding cache); `None` → the notes
    /// modality is missing, for the reason in `notes_unavailable`.
    notes: Option<NotesPipeline>,
    notes_unavailable: &'static str,
    /// Where model calls run (`services::inference`), never on the async
    /// workers.
    inference: Arc<InferencePool>,
    /// Concurrent hooks' model calls, scored together on `inference`
    /// (built with the model).
    batcher: Option<ModelBatcher>,
    /// Most hooks per model pass (`[models] inference_batch`).
    max_batch: usize,
}

/// One hook's model inputs in, its prediction (or why there is none) out.
type ModelBatcher = Batcher<RawInputs, candle_core::Result<ModelPrediction>>;

/// Hooks per model pass unless configured (`[models] inference_batch`).
pub const DEFAULT_MAX_BATCH: usize = 8;

impl CachexiaService {
    /// `notes_store`: the note-embedding cache shared by replicas (`None`
    /// offline: every note is embedded inline).
    pub fn load(
        settings: &Settings,
        imaging: Option<ImagingCache>,
        notes_store: Option<Store>,
    ) -> anyhow::Result<Self> {
        let definition =
            ServiceDefinition::load(&settings.services.dir, SERVICE_ID, EMBEDDED_DEFINITION)?;
        let model = load_model(&definition);
        let inference = InferencePool::new(settings.models.inference_threads)?;
        let mut service = Self::with_pool(
            definition,
            settings.clinical.clone(),
            inference,
            settings.models.inference_batch,
        )?
        .with_imaging(imaging)
        .with_model(model);
        // The encoder (91 MB) is loaded only for a model that reads notes.
        if service.model_uses_notes() {
            match load_text_encoder(settings) {
                Ok(encoder) => {
                    let pipeline = NotesPipeline::start(
                        Arc::new(encoder),
                        notes_store,
                        settings.models.notes_inline_token_budget,
                        settings.models.note_vectors_in_memory,
                    );
                    service = service.with_notes(Some(pipeline));
                }
                Err(e) => {
                    // Said once, here: every card then says notes are missing.
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        dir = %settings.models.text_encoder_dir.display(),
                        "Text encoder not loaded; clinical notes count as a missing modality (scripts/setup-models.sh installs it)"
                    );
                    service.notes_unavailable = "no text encoder is installed on this server";
                }
            }
        }
        Ok(service)
    }

    /// Whether the loaded model was trained with the notes modality.
    pub fn model_uses_notes(&self) -> bool {
        self.model
            .as_ref()
            .is_some_and(|m| m.meta.uses(Modality::Notes))
    }

    /// Use a notes pipeline. A model trained on another encoder's vectors
    /// (its `notes_embedder` differs from the pipeline's identity) is never
    /// fed these: notes then count as missing, and the log says so once.
    pub fn with_notes(mut self, notes: Option<NotesPipeline>) -> Self {
        self.notes = None;
        if let (Some(p), Some(m)) = (notes, &self.model) {
            if m.meta.notes_embedder.as_deref() == Some(p.identity()) {
                self.notes = Some(p);
            } else {
                tracing::warn!(
                    model_encoder = m.meta.notes_embedder.as_deref().unwrap_or("none"),
                    encoder = p.identity(),
                    "The installed text encoder is not the one the cachexia model was trained with; notes count as missing"
                );
                self.notes_unavailable =
                    "the installed text encoder differs from the one the model was trained with";
            }
        }
        self
    }

    /// Use (or stop using) the multimodal model.
    pub fn with_model(mut self, model: Option<Arc<CachexiaEnsemble>>) -> Self {
        self.batcher = model.as_ref().map(|m| {
            let m = Arc::clone(m);
            // A failure is the failing hook's alone (`predict_each`).
            Batcher::new(Arc::clone(&self.inference), self.max_batch, move |raws| {
                m.predict_each(&raws)
            })
        });
        self.model = model;
        self
    }

    /// Use (or stop using) the imaging cache for CT body composition.
    pub fn with_imaging(mut self, imaging: Option<ImagingCache>) -> Self {
        self.imaging = imaging;
        self
    }

    /// With an inference pool of half the CPUs and the default batch.
    pub fn new(definition: ServiceDefinition, cutoffs: Cutoffs) -> anyhow::Result<Self> {
        Self::with_pool(
            definition,
            cutoffs,
            InferencePool::new(0)?,
            DEFAULT_MAX_BATCH,
        )
    }

    fn with_pool(
        definition: ServiceDefinition,
        cutoffs: Cutoffs,
        inference: InferencePool,
        max_batch: usize,
    ) -> anyhow::Result<Self> {
        cutoffs.validate()?;
        let digest = Sha256::digest(serde_json::to_vec(&cutoffs)?);
        let version = format!("{METHOD_VERSION}+{}", &hex::encode(digest)[..8]);
        Ok(Self {
            definition,
            cutoffs,
            version,
            imaging: None,
            model: None,
            notes: None,
            notes_unavailable: "no text encoder is configured",
            inference: Arc::new(inference),
            batcher: None,
            max_batch,
        })
    }
}

fn load_text_encoder(settings: &Settings) -> anyhow::Result<TextEncoder> {
    let started = Instant::now();
    let opts = TextEncoderOptions {
        threads: settings.models.text_encoder_threads,
        ..TextEncoderOptions::default()
    };
    let enc = TextEncoder::load_with(
        &settings.models.text_encoder_dir,
        &candle_core::Device::Cpu,
        &opts,
    )?;
    tracing::info!(
        encoder = enc.identity(),
        load_ms = started.elapsed().as_secs_f64() * 1e3,
        "Loaded the notes text encoder"
    );
    Ok(enc)
}

/// The model folder named by `service.toml` (`model = "model"`). A missing
/// or unreadable model is not fatal: the service answers with the classic
/// indices, and the log says why once, at start-up.
fn load_model(def: &ServiceDefinition) -> Option<Arc<CachexiaEnsemble>> {
    let (Some(dir), Some(rel)) = (def.dir.as_ref(), def.model.as_ref()) else {
        tracing::info!("No cachexia model configured; cards show the classic indices only");
        return None;
    };
    let path = dir.join(rel);
    let started = Instant::now();
    match CachexiaEnsemble::load(&path) {
        Ok(m) => {
            tracing::info!(
                model = %m.version(),
                members = m.meta.members.len(),
                load_ms = started.elapsed().as_secs_f64() * 1e3,
                "Loaded the cachexia model"
            );
            Some(Arc::new(m))
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cachexia model not loaded; cards show the classic indices only");
            None
        }
    }
}

#[async_trait]
impl CdsService for CachexiaService {
    fn definition(&self) -> &ServiceDefinition {
        &self.definition
    }

    fn model_version(&self) -> String {
        match &self.model {
            Some(m) => format!("{}/{};{MODEL_ID}/{}", m.meta.id, m.version(), self.version),
            None => format!("{MODEL_ID}/{}", self.version),
        }
    }

    fn model_card(&self) -> Option<String> {
        let def = &self.definition;
        def.dir
            .as_ref()
            .zip(def.model_card.as_ref())
            .and_then(|(d, f)| std::fs::read_to_string(d.join(f)).ok())
            .or_else(|| Some(EMBEDDED_MODEL_CARD.to_owned()))
    }

    #[tracing::instrument(name = "Scoring cachexia risk", skip_all)]
    async fn evaluate(&self, input: ServiceInput<'_>) -> Result<Evaluation, ServiceError> {
        // Timeline extraction and the indices take well under a millisecond
        // for a typical record: inline is cheaper than a thread hop.
        let started = Instant::now();
        let mut timeline = Timeline::from_record(&input.gathered.record, input.index_date);
        let ct = self.ct_body_composition(&input, &mut timeline).await;
        let assessment = ClassicAssessment::compute(&timeline, &self.cutoffs);
        let risk = assessment.risk(&timeline, &self.cutoffs);
        let features = features::extract(&timeline);
        let applicable = timeline.has_active_cancer();
        let ml = match (&self.batcher, applicable) {
            (Some(batcher), true) => Some(self.predict(batcher, &timeline).await?),
            _ => None,
        };
        let (ml, notes, model_batch) = match ml {
            Some((p, n, batch)) => (Some(p), n, Some(batch)),
            None => (None, None, None),
        };
        let inference_ms = started.elapsed().as_secs_f64() * 1e3;

        let baselines =
            serde_json::to_value(&assessment).map_err(|e| ServiceError::Unexpected(e.into()))?;
        let classic_model = json!({
            "id": MODEL_ID,
            "version": self.version,
            "kind": "classic-indices",
            "feature_schema": features::SCHEMA_VERSION,
            "machine_learning": false,
            "imaging_pipeline": PIPELINE_VERSION,
        });
        let model = match &self.model {
            Some(m) => json!({
                "id": m.meta.id,
                "version": m.version(),
                "kind": "multimodal-ensemble",
                "machine_learning": true,
                "trained_on_synthetic_data": m.meta.trained_on_synthetic_data,
                "members": m.meta.members.len(),
                "temperature": m.meta.temperature,
                "conformal": m.meta.conformal,
                "trained_modalities": m.meta.trained_modalities,
                "notes_embedder": m.meta.notes_embedder,
                "notes_encoder_available": self.notes.is_some(),
                "feature_schema": features::SCHEMA_VERSION,
                "imaging_pipeline": PIPELINE_VERSION,
                "classic_indices": classic_model,
            }),
            None => {
                let mut v = classic_model;
                v["note"] =
                    json!("Risk derived from the classic indices; no multimodal model is loaded.");
                v
            }
        };
        let tier = if applicable {
            match &ml {
                Some(p) => model_tier(&self.definition, p.risk),
                None => level_name(risk.level),
            }
        } else {
            "not-applicable"
        };
        let classic_result = json!({
            "level": if applicable { level_name(risk.level) } else { "not-applicable" },
            "reasons": risk.reasons,
            "modalities_present": features::modalities_present(&features),
            "ct_body_composition": ct,
        });
        let prediction = match (&self.model, &ml) {
            (Some(m), Some(p)) => Prediction {
                model_id: m.meta.id.clone(),
                model_version: m.version(),
                risk: Some(p.risk),
                risk_tier: tier.into(),
                confidence: Some(p.confidence),
                review_suggested: p.review_suggested,
                result: json!({
                    "model": p,
                    // What the notes pipeline did (counts, never text).
                    "notes": notes,
                    "classic_indices": classic_result,
                    // Same places as without the model (the imaging audit reads them).
                    "ct_body_composition": ct,
                    "modalities_present": features::modalities_present(&features),
                }),
            },
            _ => Prediction {
                model_id: MODEL_ID.into(),
                model_version: self.version.clone(),
                risk: None,
                risk_tier: tier.into(),
                confidence: None,
                review_suggested: false,
                result: classic_result,
            },
        };
        // The service is for adults with cancer: no active cancer, no card
        // (CDS Hooks: an empty `cards` array means nothing to say).
        let cards = if applicable {
            vec![self.card(
                &input,
                &timeline,
                &assessment,
                &risk,
                &features,
                &ct,
                ml.as_ref().map(|p| (p, notes.as_ref())),
            )]
        } else {
            Vec::new()
        };
        Ok(Evaluation {
            cards,
            prediction: Some(prediction),
            features,
            baselines,
            model,
            inference_ms,
            model_batch,
        })
    }
}

/// The card tier of a model risk, by the service's `[tiers]`.
fn model_tier(def: &ServiceDefinition, risk: f64) -> &'static str {
    match def.tier(risk) {
        Indicator::Critical => "high",
        Indicator::Warning => "elevated",
        Indicator::Info => "low",
    }
}

fn indicator_rank(i: &Indicator) -> u8 {
    match i {
        Indicator::Info => 0,
        Indicator::Warning => 1,
        Indicator::Critical => 2,
    }
}

fn percent(p: f64) -> String {
    format!("{:.0} %", 100.0 * p)
}

/// A factor's name for people.
fn factor_label(name: &str) -> String {
    if let Some(m) = Modality::ALL
        .iter()
        .find(|m| crate::ml::cachexia::inputs::key(**m) == name)
    {
        return m.label().to_owned();
    }
    let n = name.strip_prefix("log_").unwrap_or(name);
    match n {
        "weight_change_1m" => "weight change over 1 month".into(),
        "weight_change_3m" => "weight change over 3 months".into(),
        "weight_change_6m" => "weight change over 6 months".into(),
        "weight_change_12m" => "weight change over 12 months".into(),
        "weight_slope_6m" => "weight trend over 6 months".into(),
        "loss_from_peak_6m" => "loss from the 6-month peak weight".into(),
        "log_weights_12m" | "weights_12m" => "number of weights in 12 months".into(),
        "smi_below_fearon_cutoff" => "L3 SMI below the sarcopenia cut-off".into(),
        "nlr" => "NLR".into(),
        "l3_smi" => "L3 SMI".into(),
        "l3_sma" => "L3 muscle area".into(),
        "l3_muscle_hu" => "L3 muscle attenuation".into(),
        "l3_vat" => "L3 visceral fat".into(),
        "l3_sat" => "L3 subcutaneous fat".into(),
        "crp" => "CRP".into(),
        "bmi" => "BMI".into(),
        "ecog" => "ECOG".into(),
        other => other.replace('_', " "),
    }
}

impl CachexiaService {
    /// The notes vector (cache, inline budget, queue: `services::notes`),
    /// then the model call on the inference pool, in one pass with the
    /// hooks queued beside it: CPU work never runs on the async workers.
    async fn predict(
        &self,
        batcher: &ModelBatcher,
        t: &Timeline,
    ) -> Result<(ModelPrediction, Option<NotesOutcome>, usize), ServiceError> {
        let mut raw = RawInputs::from_timeline(t, None);
        let notes = match &self.notes {
            Some(p) if !t.notes.is_empty() => {
                let texts = t.notes.iter().map(|n| (n.date, n.text.clone())).collect();
                let outcome = p.patient_vector(texts).await;
                raw.notes = outcome.vector.clone().filter(|v| {
                    v.len() == crate::ml::cachexia::inputs::NOTES_DIM
                        && v.iter().all(|x| x.is_finite())
                });
                Some(outcome)
            }
            _ => None,
        };
        let (p, batch) = batcher
            .run(raw)
            .await
            .map_err(|e| ServiceError::Inference(e.to_string()))?;
        let p = p.map_err(|e| ServiceError::Inference(e.to_string()))?;
        Ok((p, notes, batch))
    }

    /// The model part of the card detail: risk, interval, confidence, the
    /// review gate, modalities, and the model-computed factors.
    fn model_detail(
        &self,
        p: &ModelPrediction,
        notes: Option<&NotesOutcome>,
        t: &Timeline,
    ) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "**Model: risk of cachexia (Fearon 2011) within 6 months {}** (range across the {} ensemble members {}–{}; temperature-scaled probability). The model was trained on **synthetic** patients only, not on real records: treat the number as decision support to be checked.\n",
            percent(p.risk),
            self.model.as_ref().map_or(0, |m| m.meta.members.len()),
            percent(p.interval.0),
            percent(p.interval.1)
        );
        let set = p.prediction_set.join(", ");
        let _ = writeln!(
            md,
            "- Confidence: **{}**; {:.0} % conformal prediction set: {{{set}}}.",
            p.confidence_level,
            100.0 * (1.0 - p.alpha)
        );
        if p.review_suggested {
            let _ = writeln!(
                md,
                "- **Expert review suggested**: at the {:.0} % target error rate the model cannot tell cachexia from no cachexia for this patient; a clinician or dietitian should assess.",
                100.0 * p.alpha
            );
        }
        let labels = |ms: &[Modality]| {
            if ms.is_empty() {
                "none".to_owned()
            } else {
                ms.iter().map(|m| m.label()).collect::<Vec<_>>().join(", ")
            }
        };
        let _ = writeln!(md, "- Modalities used: {}.", labels(&p.modalities_used));
        if let Some(n) = notes.filter(|n| n.used() > 0 && n.used() < n.notes) {
            let _ = writeln!(
                md,
                "- Notes: {} of {} used; {} queued for embedding in the background (used from the next view), {} not embedded.",
                n.used(),
                n.notes,
                n.queued,
                n.failed
            );
        }
        let mut missing: Vec<String> = p
            .modalities_missing
            .iter()
            .map(|m| {
                if *m == Modality::Notes && !t.notes.is_empty() {
                    let why = match (&self.model, notes) {
                        (Some(model), _) if !model.meta.uses(Modality::Notes) => {
                            "this model version was trained without notes".to_owned()
                        }
                        (_, None) => self.notes_unavailable.to_owned(),
                        (_, Some(n)) if n.queued > 0 => format!(
                            "{} queued for embedding in the background; the next view will use them",
                            n.queued
                        ),
                        _ => "the notes could not be embedded".to_owned(),
                    };
                    format!(
                        "{} ({} on record, not used: {why})",
                        m.label(),
                        t.notes.len()
                    )
                } else {
                    m.label().to_owned()
                }
            })
            .collect();
        missing.extend(
            p.modalities_not_used
                .iter()
                .map(|m| format!("{} (on record, not used by this model version)", m.label())),
        );
        if !missing.is_empty() {
            let _ = writeln!(
                md,
                "- Missing (the model used its learned “missing” input instead): {}.",
                missing.join("; ")
            );
        }
        // Near 0 or 1 the sigmoid is flat and no single input moves the risk
        // by much; the ranking still says what the estimate rests on, so the
        // factors are shown down to what one decimal can show, and the card
        // says when none reaches half a point.
        let top: Vec<String> = p
            .factors
            .iter()
            .filter(|f| f.delta_pp.abs() >= 0.05)
            .take(5)
            .map(|f| {
                format!(
                    "{} {}{:.1} pp",
                    factor_label(&f.name),
                    if f.delta_pp >= 0.0 { "+" } else { "−" },
                    f.delta_pp.abs()
                )
            })
            .collect();
        if !top.is_empty() {
            let flat = p.factors.iter().all(|f| f.delta_pp.abs() < 0.5);
            let _ = writeln!(
                md,
                "- Top factors (computed by the model: change in risk when the input is replaced by “missing”): {}.{}",
                top.join("; "),
                if flat {
                    " No single input moves this estimate by half a point."
                } else {
                    ""
                }
            );
        }
        md.push('\n');
        md
    }
}

fn level_name(level: RiskLevel) -> &'static str {
    match level {
        RiskLevel::High => "high",
        RiskLevel::Elevated => "elevated",
        RiskLevel::Low => "low",
        RiskLevel::Unknown => "unknown",
    }
}

impl CachexiaService {
    /// CT body composition from the imaging cache: for each current CT study
    /// with a recorded L3 position, the cached measurement joins the
    /// timeline (unless a body-composition Observation is at least as
    /// recent); a missing one is enqueued for the workers. Pixels are never
    /// fetched here, and a database problem only makes CT "unavailable".
    async fn ct_body_composition(
        &self,
        input: &ServiceInput<'_>,
        timeline: &mut Timeline,
    ) -> Vec<CtFinding> {
        let default_base = self.imaging.as_ref().and_then(|c| c.default_base());
        let studies = ct_studies(&input.gathered.record, input.index_date, default_base);
        if studies.is_empty() {
            return Vec::new();
        }
        let rules = CtRules {
            index_date: input.index_date,
            lookback_days: timeline.rules.body_composition_lookback_days,
            observed_until: [Analyte::L3Smi, Analyte::L3Sma]
                .into_iter()
                .filter_map(|a| timeline.latest(a).map(|m| m.date))
                .max(),
        };
        let findings = match &self.imaging {
            Some(cache) => cache.resolve(studies, &rules).await,
            None => resolve_offline(studies, &rules),
        };
        for f in &findings {
            timeline.add_measurements(ct_measurements(f));
        }
        findings
    }

    // One argument per piece of the card; bundling them would only move the list.
    #[allow(clippy::too_many_arguments)]
    fn card(
        &self,
        input: &ServiceInput<'_>,
        t: &Timeline,
        a: &ClassicAssessment,
        risk: &ClassicRisk,
        features: &[FeatureValue],
        ct: &[CtFinding],
        ml: Option<(&ModelPrediction, Option<&NotesOutcome>)>,
    ) -> Card {
        let (ml, notes) = match ml {
            Some((p, n)) => (Some(p), n),
            None => (None, None),
        };
        let classic_indicator = match risk.level {
            RiskLevel::High => Indicator::Critical,
            RiskLevel::Elevated => Indicator::Warning,
            RiskLevel::Low | RiskLevel::Unknown => Indicator::Info,
        };
        // The more severe of the model's tier and the classic indices: Fearon
        // criteria already met are a present fact, not a prediction.
        let indicator = match ml.map(|p| self.definition.tier(p.risk)) {
            Some(m) if indicator_rank(&m) > indicator_rank(&classic_indicator) => m,
            _ => classic_indicator,
        };
        let headline = match risk.level {
            RiskLevel::High => "HIGH",
            RiskLevel::Elevated => "ELEVATED",
            RiskLevel::Low => "low",
            RiskLevel::Unknown => "undetermined",
        };
        let summary = match ml {
            Some(p) => format!(
                "Cachexia risk {} within 6 months (model{}); classic indices: {headline}",
                percent(p.risk),
                if p.review_suggested {
                    "; expert review suggested"
                } else {
                    ""
                }
            ),
            None => format!(
                "Cachexia risk {headline} (classic indices): {}",
                short_reasons(t, a, risk.level)
            ),
        };

        let base = input.public_base_url.map(|b| b.trim_end_matches('/'));
        let label = match &self.model {
            Some(m) if ml.is_some() => format!(
                "oncohooks {SERVICE_ID} · model {} {} trained on synthetic data · classic indices {}",
                m.meta.id,
                m.version(),
                self.version
            ),
            _ => format!(
                "oncohooks {SERVICE_ID} · classic indices {} (no ML model)",
                self.version
            ),
        };
        let source = Source {
            label,
            url: base.map(|b| format!("{b}/model-cards/{SERVICE_ID}")),
            icon: None,
            topic: Some(Coding::new(
                Some("http://snomed.info/sct"),
                "238108007",
                "Cachexia",
            )),
        };

        let mut b = CardBuilder::new(&summary, indicator, source)
            .detail(
                ml.map(|p| self.model_detail(p, notes, t))
                    .unwrap_or_default()
                    + &detail(
                        t,
                        a,
                        risk,
                        features,
                        ct,
                        &input.gathered.sources,
                        ml.is_some(),
                    ),
            )
            .override_reason(Coding::new(
                Some(OVERRIDE_SYSTEM),
                "already-managed",
                "Already under nutrition or cachexia management",
            ))
            .override_reason(Coding::new(
                Some(OVERRIDE_SYSTEM),
                "not-cancer-related",
                "Weight or lab changes not related to the cancer",
            ))
            .override_reason(Coding::new(
                Some(OVERRIDE_SYSTEM),
                "data-inaccurate",
                "Recorded data are inaccurate",
            ))
            .override_reason(Coding::new(
                Some(OVERRIDE_SYSTEM),
                "patient-declined",
                "Patient declined further assessment",
            ));
        let patient = format!("Patient/{}", input.request.context.patient_id);
        if matches!(risk.level, RiskLevel::High | RiskLevel::Elevated)
            || indicator_rank(&indicator) > 0
        {
            b = b.suggestion(Suggestion {
                label: "Refer to dietitian for nutritional assessment".into(),
                uuid: Some(Uuid::new_v4()),
                is_recommended: Some(matches!(indicator, Indicator::Critical)),
                actions: vec![service_request(
                    &patient,
                    "103699006",
                    "Referral to dietitian",
                    if ml.is_some() {
                        "Risk of cancer cachexia (oncohooks model and classic indices)"
                    } else {
                        "Suspected cancer cachexia (classic indices)"
                    },
                )],
            });
        }
        let missing_labs: Vec<&FeatureValue> = features
            .iter()
            .filter(|f| !f.present && matches!(f.name.as_str(), "albumin" | "crp"))
            .collect();
        if !missing_labs.is_empty() {
            b = b.suggestion(Suggestion {
                label: "Order the labs the indices are missing".into(),
                uuid: Some(Uuid::new_v4()),
                is_recommended: None,
                actions: missing_labs
                    .iter()
                    .map(|f| match f.name.as_str() {
                        "albumin" => lab_request(
                            &patient,
                            "1751-7",
                            "Albumin [Mass/volume] in Serum or Plasma",
                        ),
                        _ => lab_request(
                            &patient,
                            "1988-5",
                            "C reactive protein [Mass/volume] in Serum or Plasma",
                        ),
                    })
                    .collect(),
            });
        }
        b.selection_behavior(SelectionBehavior::Any).build()
    }
}

/// A draft ServiceRequest the clinician may accept (CDS Hooks 2.0 §Action:
/// `create` with a FHIR resource).
fn service_request(patient: &str, snomed: &str, display: &str, reason: &str) -> Action {
    Action {
        kind: ActionType::Create,
        description: format!("Draft order: {display}"),
        resource: Some(json!({
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "proposal",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": snomed, "display": display}]},
            "subject": {"reference": patient},
            "reasonCode": [{"text": reason}]
        })),
        resource_id: None,
    }
}

fn lab_request(patient: &str, loinc: &str, display: &str) -> Action {
    Action {
        kind: ActionType::Create,
        description: format!("Draft lab order: {display}"),
        resource: Some(json!({
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "proposal",
            "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "108252007", "display": "Laboratory procedure"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": display}]},
            "subject": {"reference": patient}
        })),
        resource_id: None,
    }
}

/// The few words that fit the 140-character summary; the detail has the rest.
fn short_reasons(t: &Timeline, a: &ClassicAssessment, level: RiskLevel) -> String {
    let loss6 = t.weight.six_months.as_ref().map(|c| {
        format!(
            "{}% weight change in 6 mo",
            format_value(round1(c.percent_change))
        )
    });
    let mut parts: Vec<String> = Vec::new();
    match level {
        RiskLevel::High => {
            if a.fearon.status == FearonStatus::Cachexia {
                parts.push("Fearon criteria met".into());
            } else {
                parts.push("cachexia diagnosis on record".into());
            }
            parts.extend(loss6);
        }
        RiskLevel::Elevated => {
            if a.glim.status == GlimStatus::Malnutrition {
                parts.push("GLIM malnutrition".into());
            }
            if a.sarcopenia_prado.status == SarcopeniaStatus::Sarcopenic
                || a.sarcopenia_martin.muscle_mass.status == SarcopeniaStatus::Sarcopenic
            {
                parts.push("sarcopenia".into());
            }
            if a.cxi.status == CxiStatus::Low {
                parts.push("low CXI".into());
            }
            if a.mcxi.status == CxiStatus::Low {
                parts.push("low mCXI".into());
            }
            parts.extend(loss6);
        }
        RiskLevel::Low => {
            parts.push("Fearon criteria not met".into());
            parts.extend(loss6);
        }
        RiskLevel::Unknown => parts.push("too little data to apply the criteria".into()),
    }
    parts.join("; ")
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn fearon_label(s: FearonStatus) -> &'static str {
    match s {
        FearonStatus::Cachexia => "cachexia",
        FearonStatus::NotCachexia => "not met",
        FearonStatus::Unknown => "unknown",
    }
}

fn glim_label(s: GlimStatus) -> &'static str {
    match s {
        GlimStatus::Malnutrition => "malnutrition",
        GlimStatus::NoMalnutrition => "not met",
        GlimStatus::Unknown => "unknown",
    }
}

fn sarc_label(s: SarcopeniaStatus) -> &'static str {
    match s {
        SarcopeniaStatus::Sarcopenic => "sarcopenic",
        SarcopeniaStatus::NotSarcopenic => "not sarcopenic",
        SarcopeniaStatus::Unknown => "unknown",
    }
}

fn cxi_label(s: CxiStatus) -> &'static str {
    match s {
        CxiStatus::Low => "low (high risk)",
        CxiStatus::NotLow => "not low",
        CxiStatus::Unknown => "unknown",
    }
}

/// Markdown cells must not break the table.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The timeline measurements of a used CT result: SMA, muscle HU, VAT, SAT,
/// dated on the CT, cited as the study, series and pipeline version.
fn ct_measurements(f: &CtFinding) -> Vec<(Analyte, Measurement)> {
    let (CtStatus::Used { result }, Some(date), Some(series_uid)) =
        (&f.status, f.study.date, f.study.series_uid.as_deref())
    else {
        return Vec::new();
    };
    let BodyCompositionOutcome::Measured { composition: c, .. } = &result.outcome else {
        return Vec::new();
    };
    let source = SourceRef::imaging_series(&f.study.study, series_uid, &result.pipeline_version);
    let m = |analyte: Analyte, code: &str, value: f64| {
        (
            analyte,
            Measurement {
                value,
                unit: analyte.unit(),
                date,
                source: source.clone(),
                code: format!("{BODY_COMPOSITION}|{code}"),
                recorded: None,
            },
        )
    };
    let mut out = vec![
        m(Analyte::L3Sma, "l3-sma", c.sma_cm2),
        m(Analyte::L3Vat, "l3-vat", c.vat_cm2),
        m(Analyte::L3Sat, "l3-sat", c.sat_cm2),
    ];
    if let Some(hu) = c.muscle_mean_hu {
        out.push(m(Analyte::L3MuscleHu, "l3-muscle-hu", hu));
    }
    out
}

/// One line per CT study worth mentioning on the card.
fn ct_lines(ct: &[CtFinding]) -> Vec<String> {
    let round = |x: f64| format_value((x * 10.0).round() / 10.0);
    ct.iter()
        .filter_map(|f| {
            let s = &f.study;
            let what = match s.date {
                Some(d) => format!("{} (CT of {d})", s.study),
                None => format!("{} (CT)", s.study),
            };
            Some(match &f.status {
                CtStatus::Used { result } => {
                    let BodyCompositionOutcome::Measured {
                        composition: c,
                        slice,
                        ..
                    } = &result.outcome
                    else {
                        return None;
                    };
                    let hu = c
                        .muscle_mean_hu
                        .map(|h| format!(", muscle {} HU", round(h)))
                        .unwrap_or_default();
                    let at = match &result.locator {
                        SliceLocator::SopInstanceUid { .. } => "L3 key image".to_owned(),
                        _ => format!("L3 slice at z = {} mm", round(slice.z_mm)),
                    };
                    let from = s
                        .locator_source
                        .as_deref()
                        .map(|o| format!(" from {o}"))
                        .unwrap_or_default();
                    format!(
                        "{what}: SMA {} cm², VAT {} cm², SAT {} cm²{hu}; {at}{from}; series {} analysed by pipeline {} ({} segmentation: counts organs in the muscle HU range as muscle, so review the values).",
                        round(c.sma_cm2),
                        round(c.vat_cm2),
                        round(c.sat_cm2),
                        result.series_uid,
                        result.pipeline_version,
                        c.segmenter
                    )
                }
                CtStatus::Queued { .. } => format!(
                    "{what}: CT body-composition analysis queued; this card will use it on the next view."
                ),
                CtStatus::NotMeasurable { reason } => {
                    format!("{what}: the CT could not be analysed: {reason}.")
                }
                CtStatus::NotAnalysable { reason } => format!("{what}: not analysed: {reason}."),
                CtStatus::Unavailable { reason } => format!(
                    "{what}: CT body composition could not be looked up ({reason}); counted as missing."
                ),
                CtStatus::Superseded | CtStatus::NotCurrent { .. } => return None,
            })
        })
        .collect()
}

fn detail(
    t: &Timeline,
    a: &ClassicAssessment,
    risk: &ClassicRisk,
    features: &[FeatureValue],
    ct: &[CtFinding],
    sources: &std::collections::BTreeMap<String, KeySource>,
    with_model: bool,
) -> String {
    let mut md = String::new();
    if with_model {
        let _ = writeln!(
            md,
            "**Classic indices: {}.** A rule on the published criteria below, shown beside the model.\n",
            level_name(risk.level)
        );
    } else {
        let _ = writeln!(
            md,
            "**Risk from the classic indices: {}.** No multimodal model is loaded; this is a rule on the published criteria below.\n",
            level_name(risk.level)
        );
    }
    for r in &risk.reasons {
        let _ = writeln!(md, "- {}", cell(r));
    }
    if let Some(c) = t.primary_cancer() {
        let stage = c
            .stage
            .as_ref()
            .and_then(|s| s.label.clone())
            .map(|s| format!(", stage {s}"))
            .unwrap_or_default();
        let onset = c.onset.map(|o| format!(", since {o}")).unwrap_or_default();
        let _ = writeln!(
            md,
            "\n**Cancer:** {}{stage}{onset} ({})",
            cell(c.code.display.as_deref().unwrap_or(c.cancer_type.label())),
            c.source
        );
    }

    md.push_str("\n| Index | Result | Basis |\n|---|---|---|\n");
    let rows: [(&str, &str, &str); 7] = [
        (
            "Fearon 2011",
            fearon_label(a.fearon.status),
            &a.fearon.reason,
        ),
        ("GLIM", glim_label(a.glim.status), &a.glim.reason),
        (
            "Sarcopenia (Prado 2008)",
            sarc_label(a.sarcopenia_prado.status),
            &a.sarcopenia_prado.reason,
        ),
        (
            "Sarcopenia (Martin 2013)",
            sarc_label(a.sarcopenia_martin.muscle_mass.status),
            &a.sarcopenia_martin.muscle_mass.reason,
        ),
        (
            "Muscle attenuation (Martin 2013)",
            match a.sarcopenia_martin.attenuation.status {
                crate::clinical::AttenuationStatus::Low => "low",
                crate::clinical::AttenuationStatus::Normal => "normal",
                crate::clinical::AttenuationStatus::Unknown => "unknown",
            },
            &a.sarcopenia_martin.attenuation.reason,
        ),
        ("CXI", cxi_label(a.cxi.status), &a.cxi.reason),
        ("mCXI", cxi_label(a.mcxi.status), &a.mcxi.reason),
    ];
    for (name, result, basis) in rows {
        let _ = writeln!(md, "| {name} | {result} | {} |", cell(basis));
    }

    md.push_str("\n**Values used**\n\n");
    let mut any = false;
    for f in features.iter().filter(|f| f.present) {
        let (Some(v), Some(src)) = (&f.value, &f.source) else {
            continue;
        };
        let v = match v {
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
            Value::Number(n) => n
                .as_f64()
                .map(|x| format_value((x * 100.0).round() / 100.0))
                .unwrap_or_else(|| n.to_string()),
            other => other.to_string(),
        };
        let unit = f
            .unit
            .as_deref()
            .map(|u| format!(" {u}"))
            .unwrap_or_default();
        let date = f
            .date
            .as_deref()
            .map(|d| format!(" on {d}"))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "- {}: {}{unit}{date} ({})",
            f.name.replace('_', " "),
            cell(&v),
            cell(src)
        );
        any = true;
    }
    if !any {
        md.push_str("- none\n");
    }

    let lines = ct_lines(ct);
    if !lines.is_empty() {
        md.push_str("\n**CT body composition**\n\n");
        for l in lines {
            let _ = writeln!(md, "- {}", cell(&l));
        }
    }

    let ct_queued = ct
        .iter()
        .any(|f| matches!(f.status, CtStatus::Queued { .. }));
    let missing = missing_advice(features, ct_queued);
    if !missing.is_empty() {
        md.push_str("\n**Missing inputs, and what they would add**\n\n");
        for m in missing {
            let _ = writeln!(md, "- {m}");
        }
    }
    let present = features::modalities_present(features);
    let absent: Vec<&str> = Modality::ALL
        .iter()
        .filter(|m| !present.contains(m))
        .map(|m| m.label())
        .collect();
    if !absent.is_empty() {
        let _ = writeln!(md, "\n_Modalities without data: {}._", absent.join(", "));
    }

    let unavailable: Vec<String> = sources
        .iter()
        .filter_map(|(k, s)| match s {
            KeySource::Unavailable { reason } => Some(format!("{k} ({reason})")),
            _ => None,
        })
        .collect();
    if !unavailable.is_empty() {
        let _ = writeln!(
            md,
            "\n_Data that could not be obtained: {}._",
            cell(&unavailable.join("; "))
        );
    }
    if !t.skipped.is_empty() {
        let _ = writeln!(
            md,
            "\n_{} recorded value(s) were not used (unknown unit, future date, or invalid status); see the audit record._",
            t.skipped.len()
        );
    }
    md
}

/// For each missing input, what ordering it would add (issue: "which inputs
/// were missing and what ordering them would add").
fn missing_advice(features: &[FeatureValue], ct_queued: bool) -> Vec<&'static str> {
    let missing = |n: &str| features.iter().any(|f| f.name == n && !f.present);
    let mut out = Vec::new();
    if missing("weight") {
        out.push(
            "No weight in the last 30 days: a current weight is needed for Fearon, GLIM and BMI.",
        );
    } else if missing("weight_change_6m") {
        out.push("No weight from about 6 months ago: a weight history (or the patient's reported usual weight, recorded as an Observation) decides Fearon's 6-month loss criterion.");
    }
    if missing("height") && missing("bmi") {
        out.push("No height: height gives BMI (Fearon, GLIM) and SMI from muscle area.");
    }
    if missing("albumin") {
        out.push("No recent albumin: serum albumin enables CXI and mCXI.");
    }
    if missing("nlr") {
        out.push("No same-day neutrophil and lymphocyte counts: a differential blood count gives NLR for CXI and mCXI.");
    }
    if missing("urea_nitrogen") || missing("creatinine") {
        out.push("No urea nitrogen/creatinine: a renal panel enables mCXI.");
    }
    if missing("crp") {
        out.push("No CRP: CRP documents systemic inflammation (GLIM etiologic criterion).");
    }
    if missing("l3_smi") && !ct_queued {
        out.push("No L3 body composition: CT body-composition analysis at L3 enables sarcopenia (Prado/Martin), Fearon's sarcopenia criterion and CXI.");
    }
    out
}
