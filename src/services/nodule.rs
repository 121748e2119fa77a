//! `lung-nodule-malignancy`: malignancy of the lung nodules of the latest
//! chest CT on `patient-view` (issue 5, seed paper §2 AutoRad-Lung).
//!
//! Per nodule the card shows its size (mean diameter), type and location,
//! the nodule model's probability with its interval and confidence
//! (`ml::nodule`, when a model is installed), the Brock (McWilliams 2013)
//! and Mayo (Swensen 1997) probabilities and the Lung-RADS v2022 category
//! with its management (`clinical::nodule`), and "radiologist review
//! suggested" when the model's conformal set holds both classes.
//!
//! Imaging is never done in the hook: findings come from the FHIR record
//! (`imaging::findings`), measurements, radiomics and patches from the
//! imaging cache, filled by the `nodule-radiomics` job
//! (`imaging::nodule_job`) that the first view enqueues ("imaging pending"
//! card). Model inference runs on the service's inference pool. The stored
//! prediction's `result` follows `/work/shared/schema.md` (documented in
//! docs/nodule-service.md).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{Datelike, NaiveDate};
use serde_json::{Value, json};
use uuid::Uuid;

use super::inference::InferencePool;
use super::{
    CdsService, Evaluation, FeatureValue, Prediction, ServiceDefinition, ServiceError, ServiceInput,
};
use crate::cds::{Card, CardBuilder, Coding, Indicator, Source};
use crate::clinical::nodule::{
    BrockInput, LungRadsCategory, LungRadsInput, MayoInput, NoduleType, Size, brock, lung_rads,
    mayo,
};
use crate::clinical::{CancerType, Sex, Timeline};
use crate::config::Settings;
use crate::imaging::ImagingCache;
use crate::imaging::findings::{
    ChestCt, NoduleFinding, NoduleImagingStatus, latest_chest_ct, point_key,
};
use crate::imaging::nodule_job::{
    MaskSource, MeasuredNodule, NoduleImagingOutcome, NoduleMeasurement, PIPELINE_VERSION,
};
use crate::imaging::patch::PatchConfig;
use crate::ml::nodule::{NoduleClassifier, NoduleModelInput, NoduleModelOutput};

pub const SERVICE_ID: &str = "lung-nodule-malignancy";
const EMBEDDED_DEFINITION: &str =
    include_str!("../../cds-hooks/lung-nodule-malignancy/service.toml");
/// `model_id` / `model_version` of predictions made without a model
/// (schema.md).
pub const BASELINES_ID: &str = "baselines-only";
pub const BASELINES_VERSION: &str = "brock-mayo-lungrads";
const SNOMED: &str = "http://snomed.info/sct";

pub struct NoduleService {
    definition: ServiceDefinition,
    imaging: Option<ImagingCache>,
    model: Option<Arc<dyn NoduleClassifier>>,
    inference: Arc<InferencePool>,
}

impl NoduleService {
    /// The definition from `cds-hooks/lung-nodule-malignancy/service.toml`
    /// (or the embedded copy), the model it names when one can be loaded.
    pub fn load(settings: &Settings, imaging: Option<ImagingCache>) -> anyhow::Result<Self> {
        let definition =
            ServiceDefinition::load(&settings.services.dir, SERVICE_ID, EMBEDDED_DEFINITION)?;
        let model = load_model(&definition);
        let inference = InferencePool::new(settings.models.inference_threads)?;
        Ok(Self::new(definition, inference)
            .with_imaging(imaging)
            .with_model(model))
    }

    pub fn new(definition: ServiceDefinition, inference: InferencePool) -> Self {
        Self {
            definition,
            imaging: None,
            model: None,
            inference: Arc::new(inference),
        }
    }

    pub fn with_imaging(mut self, imaging: Option<ImagingCache>) -> Self {
        self.imaging = imaging;
        self
    }

    /// Use (or stop using) a nodule classifier (tests inject a double here).
    pub fn with_model(mut self, model: Option<Arc<dyn NoduleClassifier>>) -> Self {
        self.model = model;
        self
    }

    /// The patch the imaging job cuts: the model's when one is loaded.
    fn patch_config(&self) -> PatchConfig {
        self.model
            .as_ref()
            .map(|m| m.info().patch)
            .unwrap_or_default()
    }
}

/// The nodule model folder named by `service.toml` (`model = "model"`),
/// loaded once at start-up. A missing or unreadable model (or a missing
/// text encoder, which the prompts need) is not fatal: the service answers
/// with Brock, Mayo and Lung-RADS, every card says no model is installed,
/// and the log says why once.
pub fn load_model(def: &ServiceDefinition) -> Option<Arc<dyn NoduleClassifier>> {
    let (Some(dir), Some(rel)) = (def.dir.as_ref(), def.model.as_ref()) else {
        tracing::info!(
            "No nodule model configured; lung nodule cards show Brock, Mayo and Lung-RADS only"
        );
        return None;
    };
    let path = dir.join(rel);
    let started = std::time::Instant::now();
    match crate::ml::nodule::load_classifier(&path) {
        Ok(m) => {
            tracing::info!(
                model = %format!("{}/{}", m.info().id, m.info().version),
                load_ms = started.elapsed().as_secs_f64() * 1e3,
                "Loaded the nodule model"
            );
            Some(m)
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                model_dir = %path.display(),
                "Nodule model not loaded; lung nodule cards show Brock, Mayo and Lung-RADS only"
            );
            None
        }
    }
}

/// Patient-level inputs of Brock and Mayo from the FHIR record, with the
/// defaults used where the record is silent (said on the card).
#[derive(Debug, Clone)]
struct ClinicalInputs {
    age_years: Option<f64>,
    female: Option<bool>,
    ever_smoker: Option<(bool, String)>,
    emphysema: Option<String>,
    family_history: Option<String>,
    extrathoracic_cancer_over_5y: Option<String>,
}

/// LOINC 72166-2 "Tobacco smoking status" answers (SNOMED CT).
const NEVER_SMOKER: [&str; 2] = ["266919005", "221000119102"];
const EVER_SMOKER: [&str; 7] = [
    "449868002",
    "428041000124106",
    "8517006",
    "77176002",
    "230063004",
    "428061000124105",
    "65568007",
];

fn codes(concept: Option<&Value>) -> Vec<(String, String)> {
    concept
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c.get("system")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                c.get("code")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
            )
        })
        .collect()
}

fn day(v: Option<&Value>) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(v?.as_str()?.get(..10)?, "%Y-%m-%d").ok()
}

impl ClinicalInputs {
    fn from_record(input: &ServiceInput<'_>, t: &Timeline) -> Self {
        let record = &input.gathered.record;
        let index = input.index_date;
        let mut smoking: Option<(NaiveDate, bool, String)> = None;
        for (i, o) in record.observations.iter().enumerate() {
            let Ok(v) = serde_json::to_value(o) else {
                continue;
            };
            let is_status = codes(v.get("code"))
                .iter()
                .any(|(s, c)| s == "http://loinc.org" && c == "72166-2");
            let status = v.get("status").and_then(Value::as_str).unwrap_or("");
            if !is_status || !matches!(status, "final" | "amended" | "corrected") {
                continue;
            }
            let date = day(v.get("effectiveDateTime")).or_else(|| day(v.get("issued")));
            let Some(date) = date.filter(|d| *d <= index) else {
                continue;
            };
            let answer = codes(v.get("valueCodeableConcept"));
            let ever = if answer
                .iter()
                .any(|(s, c)| s == SNOMED && EVER_SMOKER.contains(&c.as_str()))
            {
                true
            } else if answer
                .iter()
                .any(|(s, c)| s == SNOMED && NEVER_SMOKER.contains(&c.as_str()))
            {
                false
            } else {
                continue;
            };
            let src =
                crate::clinical::SourceRef::new("Observation", o.id.as_deref(), i).to_string();
            if smoking.as_ref().is_none_or(|(d, _, _)| date >= *d) {
                smoking = Some((date, ever, src));
            }
        }
        // Emphysema (ICD-10 J43, SNOMED CT 87433001) and a family history
        // of lung cancer (ICD-10 Z80.1) recorded as Conditions.
        let mut emphysema = None;
        let mut family = None;
        for (i, c) in record.conditions.iter().enumerate() {
            let Ok(v) = serde_json::to_value(c) else {
                continue;
            };
            let refuted = codes(v.get("verificationStatus"))
                .iter()
                .any(|(_, c)| c == "refuted" || c == "entered-in-error");
            if refuted {
                continue;
            }
            let src = crate::clinical::SourceRef::new("Condition", c.id.as_deref(), i).to_string();
            for (s, code) in codes(v.get("code")) {
                let icd = s.contains("icd-10");
                if (icd && code.starts_with("J43")) || (s == SNOMED && code == "87433001") {
                    emphysema = Some(src.clone());
                }
                if icd && code.starts_with("Z80.1") {
                    family = Some(src.clone());
                }
            }
        }
        // An extrathoracic cancer diagnosed more than 5 years before (Mayo).
        let cutoff = NaiveDate::from_ymd_opt(index.year() - 5, index.month(), 1);
        let old_cancer = t
            .cancers
            .iter()
            .filter(|c| !c.secondary && c.cancer_type != CancerType::Lung)
            .find(|c| c.onset.zip(cutoff).is_some_and(|(o, cut)| o < cut))
            .map(|c| c.source.to_string());
        Self {
            age_years: t.demographics.age.as_ref().map(|a| f64::from(a.years)),
            female: match t.demographics.sex {
                Some(Sex::Female) => Some(true),
                Some(Sex::Male) => Some(false),
                _ => None,
            },
            ever_smoker: smoking.map(|(_, e, s)| (e, s)),
            emphysema,
            family_history: family,
            extrathoracic_cancer_over_5y: old_cancer,
        }
    }

    fn features(&self) -> Vec<FeatureValue> {
        let f = |name: &str, value: Option<Value>, source: Option<String>| FeatureValue {
            name: name.into(),
            present: value.is_some(),
            value,
            unit: None,
            source,
            date: None,
        };
        vec![
            f("age_years", self.age_years.map(|a| json!(a)), None),
            f("female", self.female.map(|b| json!(b)), None),
            f(
                "ever_smoker",
                self.ever_smoker.as_ref().map(|(b, _)| json!(b)),
                self.ever_smoker.as_ref().map(|(_, s)| s.clone()),
            ),
            f(
                "emphysema",
                self.emphysema.as_ref().map(|_| json!(true)),
                self.emphysema.clone(),
            ),
            f(
                "family_history_lung_cancer",
                self.family_history.as_ref().map(|_| json!(true)),
                self.family_history.clone(),
            ),
            f(
                "extrathoracic_cancer_over_5y",
                self.extrathoracic_cancer_over_5y
                    .as_ref()
                    .map(|_| json!(true)),
                self.extrathoracic_cancer_over_5y.clone(),
            ),
        ]
    }
}

/// One nodule as the cards and the stored result see it.
struct Nodule<'a> {
    label: String,
    finding: String,
    observation: Option<&'a NoduleFinding>,
    measured: Option<&'a MeasuredNodule>,
}

impl Nodule<'_> {
    fn measurement(&self) -> Option<&NoduleMeasurement> {
        self.measured.and_then(|m| m.measurement.as_ref())
    }

    /// (value, "stated" | "measured").
    fn mean_diameter(&self) -> Option<(f64, &'static str)> {
        self.observation
            .and_then(|o| o.diameter_mm)
            .map(|d| (d, "stated"))
            .or_else(|| self.measurement().map(|m| (m.mean_diameter_mm, "measured")))
    }

    /// Longest diameter for Brock and Mayo: the measured long axis, else the
    /// stated diameter.
    fn longest_diameter(&self) -> Option<f64> {
        self.measurement()
            .map(|m| m.long_axis_mm)
            .or_else(|| self.observation.and_then(|o| o.diameter_mm))
    }

    fn nodule_type(&self) -> Option<(NoduleType, &'static str)> {
        self.observation
            .and_then(|o| o.nodule_type)
            .map(|t| (t, "stated"))
            .or_else(|| {
                self.measurement()
                    .map(|m| (m.estimated_type, "estimated from CT attenuation"))
            })
    }

    fn solid_component(&self) -> Option<(f64, &'static str)> {
        self.observation
            .and_then(|o| o.solid_component_mm)
            .map(|d| (d, "stated"))
            .or_else(|| {
                self.measurement()
                    .and_then(|m| m.solid_component.as_ref())
                    .map(|s| (s.mean_diameter_mm, "measured"))
            })
    }

    fn center(&self) -> Option<[f64; 3]> {
        self.measurement()
            .map(|m| m.center_mm)
            .or_else(|| self.observation.and_then(|o| o.center_mm))
    }

    fn error(&self) -> Option<String> {
        if let Some(e) = self.measured.and_then(|m| m.error.clone()) {
            return Some(e);
        }
        match (self.observation, self.measured) {
            (Some(o), None) if o.center_mm.is_none() => Some(
                "the finding has no patient-space coordinates, so it was not located on the CT"
                    .into(),
            ),
            _ => None,
        }
    }
}

fn type_label(t: NoduleType) -> &'static str {
    match t {
        NoduleType::Solid => "solid",
        NoduleType::PartSolid => "part-solid",
        NoduleType::NonSolid => "ground-glass",
    }
}

/// ACR Lung-RADS v2022 management of a baseline category.
fn management(c: LungRadsCategory) -> &'static str {
    match c {
        LungRadsCategory::C1 | LungRadsCategory::C2 => {
            "Continue annual screening with LDCT in 12 months."
        }
        LungRadsCategory::C3 => "6-month LDCT.",
        LungRadsCategory::C4A => {
            "3-month LDCT; PET/CT may be considered if there is a ≥ 8 mm solid component."
        }
        LungRadsCategory::C4B | LungRadsCategory::C4X => {
            "Referral for further clinical evaluation: diagnostic chest CT with or without contrast; PET/CT may be considered if there is a ≥ 8 mm solid component; tissue sampling."
        }
    }
}

fn percent(p: f64) -> String {
    if p < 0.01 {
        format!("{:.1} %", 100.0 * p)
    } else {
        format!("{:.0} %", 100.0 * p)
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The baselines of one nodule: (brock, mayo, lung_rads, assumptions) as
/// stored JSON, with `*_missing` reasons.
fn baselines(n: &Nodule<'_>, c: &ClinicalInputs, count: u32) -> (Value, Vec<String>) {
    let mut assumed = Vec::new();
    let mut out = serde_json::Map::new();
    let typ = n.nodule_type().map(|(t, _)| t);
    let upper = match n.observation.and_then(|o| o.upper_lobe) {
        Some(u) => u,
        None => {
            assumed.push("not in an upper lobe (lobe not recorded)".to_owned());
            false
        }
    };
    let spiculation = match n.observation.and_then(|o| o.spiculated) {
        Some(s) => s,
        None => {
            assumed.push("no spiculation (not recorded)".to_owned());
            false
        }
    };
    let female = match c.female {
        Some(f) => f,
        None => {
            assumed.push("male (sex not recorded)".to_owned());
            false
        }
    };
    if c.emphysema.is_none() {
        assumed.push("no emphysema (none recorded)".to_owned());
    }
    if c.family_history.is_none() {
        assumed.push("no family history of lung cancer (none recorded)".to_owned());
    }
    let ever_smoker = match &c.ever_smoker {
        Some((e, _)) => *e,
        None => {
            assumed.push("never smoker (no smoking status recorded; Mayo)".to_owned());
            false
        }
    };
    if c.extrathoracic_cancer_over_5y.is_none() {
        assumed.push("no extrathoracic cancer over 5 years ago (Mayo)".to_owned());
    }
    let size = n.longest_diameter();
    // Brock
    match (c.age_years, size, typ) {
        (Some(age), Some(size_mm), Some(nodule_type)) => {
            let input = BrockInput {
                age_years: age,
                female,
                family_history: c.family_history.is_some(),
                emphysema: c.emphysema.is_some(),
                size_mm,
                nodule_type,
                upper_lobe: upper,
                nodule_count: count.max(1),
                spiculation,
            };
            match brock(&input) {
                Ok(r) => {
                    out.insert(
                        "brock".into(),
                        json!({"probability": r.probability, "inputs": input, "terms": r.terms}),
                    );
                }
                Err(e) => {
                    out.insert("brock".into(), Value::Null);
                    out.insert("brock_missing".into(), json!(e.to_string()));
                }
            }
        }
        _ => {
            out.insert("brock".into(), Value::Null);
            out.insert(
                "brock_missing".into(),
                json!(missing_reason(
                    c.age_years.is_none(),
                    size.is_none(),
                    typ.is_none()
                )),
            );
        }
    }
    // Mayo
    match (c.age_years, size) {
        (Some(age), Some(d)) => {
            let input = MayoInput {
                age_years: age,
                ever_smoker,
                extrathoracic_cancer_over_5y: c.extrathoracic_cancer_over_5y.is_some(),
                diameter_mm: d,
                spiculation,
                upper_lobe: upper,
            };
            match mayo(&input) {
                Ok(r) => {
                    let within = crate::clinical::nodule::mayo::within_derivation_range(d);
                    out.insert(
                        "mayo".into(),
                        json!({"probability": r.probability, "inputs": input, "terms": r.terms, "within_derivation_range": within}),
                    );
                }
                Err(e) => {
                    out.insert("mayo".into(), Value::Null);
                    out.insert("mayo_missing".into(), json!(e.to_string()));
                }
            }
        }
        _ => {
            out.insert("mayo".into(), Value::Null);
            out.insert(
                "mayo_missing".into(),
                json!(missing_reason(c.age_years.is_none(), size.is_none(), false)),
            );
        }
    }
    // Lung-RADS v2022 (baseline categories)
    match (n.mean_diameter(), typ) {
        (Some((d, _)), Some(t)) => {
            let mut input = LungRadsInput::new(t, Size::MeanDiameterMm(d));
            input.solid_component = n
                .solid_component()
                .map(|(s, _)| Size::MeanDiameterMm(s.min(d)));
            input.additional_suspicious_features = spiculation;
            match lung_rads(&input) {
                Ok(r) => {
                    out.insert(
                        "lung_rads".into(),
                        json!({"category": r.category, "management": management(r.category), "rule": r.rule, "inputs": input}),
                    );
                }
                Err(e) => {
                    out.insert("lung_rads".into(), Value::Null);
                    out.insert("lung_rads_missing".into(), json!(e.to_string()));
                }
            }
        }
        _ => {
            out.insert("lung_rads".into(), Value::Null);
            out.insert(
                "lung_rads_missing".into(),
                json!(missing_reason(
                    false,
                    n.mean_diameter().is_none(),
                    typ.is_none()
                )),
            );
        }
    }
    (Value::Object(out), assumed)
}

fn missing_reason(age: bool, size: bool, typ: bool) -> String {
    let mut m = Vec::new();
    if age {
        m.push("the patient's age (no birth date)");
    }
    if size {
        m.push("the nodule's size (neither stated nor measured)");
    }
    if typ {
        m.push("the nodule's type");
    }
    format!("not computable without {}", m.join(", "))
}

#[async_trait]
impl CdsService for NoduleService {
    fn definition(&self) -> &ServiceDefinition {
        &self.definition
    }

    fn model_version(&self) -> String {
        match &self.model {
            Some(m) => format!(
                "{}/{};{BASELINES_VERSION}/{PIPELINE_VERSION}",
                m.info().id,
                m.info().version
            ),
            None => format!("{BASELINES_ID}/{BASELINES_VERSION};{PIPELINE_VERSION}"),
        }
    }

    #[tracing::instrument(name = "Scoring lung nodules", skip_all)]
    async fn evaluate(&self, input: ServiceInput<'_>) -> Result<Evaluation, ServiceError> {
        let started = Instant::now();
        let timeline = Timeline::from_record(&input.gathered.record, input.index_date);
        let clinical = ClinicalInputs::from_record(&input, &timeline);
        let default_base = self.imaging.as_ref().and_then(|c| c.default_base());
        let ct = latest_chest_ct(&input.gathered.record, input.index_date, default_base);
        let model_json = match &self.model {
            Some(m) => serde_json::to_value(m.info()).unwrap_or(Value::Null),
            None => Value::Null,
        };
        let Some(ct) = ct else {
            return Ok(self.status_only(
                &input,
                "no_chest_ct",
                "No chest CT on record: no lung nodule to assess",
                "No `ImagingStudy` with a chest CT series acquired on or before today was found in the record. This service assesses the nodules of the latest chest CT; nothing was queued.".into(),
                Value::Null,
                model_json,
                clinical.features(),
                started,
            ));
        };
        let study = json!({
            "imaging_study": ct.study.study,
            "study_uid": ct.study_uid,
            "series_uid": ct.study.series_uid,
            "started": ct.started,
            "seg_series": ct.seg_series,
            "sr_series_not_read": ct.sr_series,
        });
        let when = ct
            .study
            .date
            .map(|d| format!("chest CT of {d}"))
            .unwrap_or_else(|| "chest CT".into());
        if ct.findings.is_empty() && ct.seg_series.is_empty() {
            return Ok(self.status_only(
                &input,
                "no_nodule_findings",
                &format!("No lung nodule findings recorded for the {when}"),
                format!(
                    "{} has no nodule findings this service can read: an `Observation` coded SNOMED CT 786838002 (pulmonary nodule) derived from the study, or a DICOM SEG series in it. DICOM SR (TID 1500) measurement reports are not read yet{}.",
                    ct.study.study,
                    if ct.sr_series.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ": the study's SR series ({}) were not used",
                            ct.sr_series.join(", ")
                        )
                    }
                ),
                study,
                model_json,
                clinical.features(),
                started,
            ));
        }
        let status = match (&self.imaging, ct.job(self.patch_config())) {
            (_, Err(reason)) => NoduleImagingStatus::NotAnalysable { reason },
            (Some(cache), Ok(job)) => cache.nodules(&job).await,
            (None, Ok(_)) => NoduleImagingStatus::Unavailable {
                reason: "no imaging cache (offline scoring)".into(),
            },
        };
        let result = match status {
            NoduleImagingStatus::Ready { result } => result,
            NoduleImagingStatus::Queued {
                job_id,
                already_queued,
            } => {
                let mut study = study;
                study["job_id"] = json!(job_id);
                let ev = self.status_only(
                    &input,
                    "imaging_pending",
                    &format!("Lung nodule analysis of the {when} in progress: reload in a minute"),
                    format!(
                        "The CT series is being retrieved from the PACS and each nodule measured (size, volume, attenuation), its 107 radiomics features computed and its CT patch cut{}. This runs in the background (job {job_id}{}); reload the patient in a minute to see one card per nodule with its malignancy estimates.",
                        if self.model.is_some() { " for the nodule model" } else { "" },
                        if already_queued { ", queued earlier" } else { "" }
                    ),
                    study,
                    model_json,
                    clinical.features(),
                    started,
                );
                return Ok(with_recorded_findings(ev, &ct, &clinical));
            }
            NoduleImagingStatus::NotMeasurable { reason }
            | NoduleImagingStatus::NotAnalysable { reason }
            | NoduleImagingStatus::Unavailable { reason } => {
                let ev = self.status_only(
                    &input,
                    "imaging_failed",
                    &format!("Lung nodules of the {when} could not be analysed"),
                    format!("The CT could not be analysed: {reason}."),
                    study,
                    model_json,
                    clinical.features(),
                    started,
                );
                return Ok(with_recorded_findings(ev, &ct, &clinical));
            }
        };
        let (nodules_measured, warnings) = match &result.outcome {
            NoduleImagingOutcome::Measured {
                nodules, warnings, ..
            } => (nodules.as_slice(), warnings.as_slice()),
            NoduleImagingOutcome::NotMeasurable { .. } => (&[][..], &[][..]),
        };
        let nodules = assemble(&ct, nodules_measured);
        let outputs = self.predict(&nodules).await?;
        let count = nodules.len() as u32;
        let base = input.public_base_url.map(|b| b.trim_end_matches('/'));
        let mut cards = Vec::new();
        let mut stored = Vec::new();
        let mut baselines_all = Vec::new();
        let mut best: Option<(f64, Option<f64>)> = None;
        let mut review_any = false;
        for (n, out) in nodules.iter().zip(&outputs) {
            let (mut base_json, assumed) = baselines(n, &clinical, count);
            let model_out = out.as_ref().ok();
            let risk = model_out
                .map(|o| o.probability)
                .or_else(|| base_json["brock"]["probability"].as_f64());
            if let Some(r) = risk
                && best.is_none_or(|(b, _)| r > b)
            {
                best = Some((r, model_out.map(|o| o.confidence)));
            }
            review_any |= model_out.is_some_and(|o| o.review_suggested);
            let uuid = Uuid::new_v4();
            let card = self.nodule_card(
                n,
                out,
                &base_json,
                &assumed,
                &ct,
                &result.pipeline_version,
                warnings,
                uuid,
                base,
            );
            cards.push(card);
            baselines_all.push(json!({"label": n.label, "brock": base_json["brock"], "mayo": base_json["mayo"], "lung_rads": base_json["lung_rads"]}));
            let obj = base_json.as_object_mut().expect("an object");
            let mut entry = json!({
                "card_uuid": uuid,
                "finding": n.finding,
                "label": n.label,
                "location": {
                    "body_site": n.observation.and_then(|o| o.body_site.clone()),
                    "center_mm": n.center(),
                },
                "size": {
                    "mean_diameter_mm": n.mean_diameter().map(|(d, _)| d),
                    "volume_mm3": n.measurement().map(|m| m.volume_mm3),
                    "source": n.mean_diameter().map(|(_, s)| s),
                    "measured_mean_diameter_mm": n.measurement().map(|m| m.mean_diameter_mm),
                    "long_axis_mm": n.measurement().map(|m| m.long_axis_mm),
                    "short_axis_mm": n.measurement().map(|m| m.short_axis_mm),
                },
                "nodule_type": n.nodule_type().map(|(t, _)| type_label(t)),
                "nodule_type_source": n.nodule_type().map(|(_, s)| s),
                "model": model_out,
                "radiomics": n.measurement().map(|m| serde_json::to_value(m.features()).unwrap_or(Value::Null)),
                "patch": n.measurement().map(|m| json!({
                    "size": m.patch.size,
                    "spacing_mm": m.patch.spacing_mm,
                    "window": m.patch.window,
                    "axial": m.patch.axial,
                    "mask_axial": m.patch.mask_axial,
                })),
                "mask_source": n.measurement().map(|m| &m.mask_source),
                "seg": n.measured.and_then(|m| m.seg.as_ref()),
                "error": n.error(),
                "assumed": assumed,
            });
            if let Err(e) = out
                && self.model.is_some()
            {
                entry["model_missing"] = json!(e);
            }
            let e = entry.as_object_mut().expect("an object");
            for (k, v) in std::mem::take(obj) {
                e.insert(k, v);
            }
            stored.push(entry);
        }
        let (risk, confidence) = best.map_or((None, None), |(r, c)| (Some(r), c));
        let tier = match risk.map(|r| self.definition.tier(r)) {
            Some(Indicator::Critical) => "high",
            Some(Indicator::Warning) => "elevated",
            Some(Indicator::Info) => "low",
            None => "unknown",
        };
        let measured = nodules.iter().filter(|n| n.measurement().is_some()).count();
        let result_json = json!({
            "status": "scored",
            "status_detail": format!("{} nodule(s) on the {when}; {measured} measured on the CT by pipeline {}.", nodules.len(), result.pipeline_version),
            "study": study,
            "model": model_json,
            "nodules": stored,
            "warnings": warnings,
        });
        let (model_id, model_version) = self.ids();
        Ok(Evaluation {
            cards,
            prediction: Some(Prediction {
                model_id,
                model_version,
                risk,
                risk_tier: tier.into(),
                confidence,
                review_suggested: review_any,
                result: result_json,
            }),
            features: clinical.features(),
            baselines: json!({"nodules": baselines_all}),
            model: self.model_meta(),
            inference_ms: started.elapsed().as_secs_f64() * 1e3,
            model_batch: None,
        })
    }
}

/// While the CT is pending or could not be analysed, the findings'
/// recorded sizes still give Brock, Mayo and Lung-RADS: listed on the one
/// card and stored as `result.recorded_findings` (the schema's `nodules`
/// stays empty for these statuses).
fn with_recorded_findings(mut ev: Evaluation, ct: &ChestCt, c: &ClinicalInputs) -> Evaluation {
    let count = ct.findings.len() as u32;
    let mut md = String::new();
    let mut stored = Vec::new();
    for (i, f) in ct.findings.iter().enumerate() {
        let n = Nodule {
            label: format!("Nodule {}", i + 1),
            finding: f.source.clone(),
            observation: Some(f),
            measured: None,
        };
        if n.mean_diameter().is_none() {
            continue;
        }
        let (b, assumed) = baselines(&n, c, count);
        let (d, _) = n.mean_diameter().unwrap_or((0.0, "stated"));
        let typ = n
            .nodule_type()
            .map(|(t, _)| type_label(t))
            .unwrap_or("type not recorded");
        let part = |key: &str, name: &str| match b[key]["probability"].as_f64() {
            Some(p) => format!("{name} {}", percent(p)),
            None => format!("{name} not computed"),
        };
        let lr = b["lung_rads"]["category"]
            .as_str()
            .map(|c| format!("Lung-RADS {c}"))
            .unwrap_or_else(|| "Lung-RADS not computed".into());
        let _ = writeln!(
            md,
            "- {} ({}): {} mm {typ} as recorded; {}; {}; {lr}.",
            n.label,
            f.body_site.as_deref().unwrap_or("lobe not recorded"),
            round1(d),
            part("brock", "Brock"),
            part("mayo", "Mayo")
        );
        stored.push(
            json!({"label": n.label, "finding": f.source, "baselines": b, "assumed": assumed}),
        );
    }
    if stored.is_empty() {
        return ev;
    }
    let text = format!(
        "\n\n**From the recorded findings alone** (sizes as recorded; the model needs the CT):\n\n{md}"
    );
    if let Some(card) = ev.cards.first_mut() {
        let mut d = card.detail.clone().unwrap_or_default();
        d.push_str(&text);
        card.detail = Some(d);
    }
    if let Some(p) = ev.prediction.as_mut() {
        p.result["recorded_findings"] = Value::Array(stored.clone());
    }
    ev.baselines = json!({"recorded_findings": stored});
    ev
}

/// Pairs the findings with the measured nodules, in a stable order: nodules
/// of point findings in findings order (SEG-matched or seeded), then SEG
/// nodules without a finding, then findings without coordinates.
fn assemble<'a>(ct: &'a ChestCt, measured: &'a [MeasuredNodule]) -> Vec<Nodule<'a>> {
    let mut out = Vec::new();
    for (i, f) in ct.findings.iter().enumerate() {
        let key = point_key(i);
        let m = measured
            .iter()
            .find(|m| m.point.as_deref() == Some(key.as_str()));
        out.push(Nodule {
            label: String::new(),
            finding: f.source.clone(),
            observation: Some(f),
            measured: m,
        });
    }
    for m in measured.iter().filter(|m| m.point.is_none()) {
        let finding = match &m.seg {
            Some(s) => format!("SEG {} segment {}", s.sop_instance_uid, s.segment_number),
            None => "SEG".into(),
        };
        out.push(Nodule {
            label: m
                .seg
                .as_ref()
                .and_then(|s| s.label.clone())
                .unwrap_or_default(),
            finding,
            observation: None,
            measured: Some(m),
        });
    }
    for (i, n) in out.iter_mut().enumerate() {
        if n.label.is_empty() {
            n.label = format!("Nodule {}", i + 1);
        }
    }
    out
}

impl NoduleService {
    fn ids(&self) -> (String, String) {
        match &self.model {
            Some(m) => (m.info().id.clone(), m.info().version.clone()),
            None => (BASELINES_ID.into(), BASELINES_VERSION.into()),
        }
    }

    fn model_meta(&self) -> Value {
        match &self.model {
            Some(m) => json!({
                "id": m.info().id,
                "version": m.info().version,
                "kind": "nodule-classifier",
                "machine_learning": true,
                "info": m.info(),
                "imaging_pipeline": PIPELINE_VERSION,
                "baselines": BASELINES_VERSION,
            }),
            None => json!({
                "id": BASELINES_ID,
                "version": BASELINES_VERSION,
                "kind": "clinical-baselines",
                "machine_learning": false,
                "imaging_pipeline": PIPELINE_VERSION,
                "note": "No nodule model is installed: Brock, Mayo and Lung-RADS only.",
            }),
        }
    }

    /// The model's outputs per nodule, in one batch on the inference pool;
    /// `Err` says why a nodule has none.
    async fn predict(
        &self,
        nodules: &[Nodule<'_>],
    ) -> Result<Vec<Result<NoduleModelOutput, String>>, ServiceError> {
        let mut out: Vec<Result<NoduleModelOutput, String>> = nodules
            .iter()
            .map(|_| Err("no nodule model is installed".to_owned()))
            .collect();
        let Some(model) = &self.model else {
            return Ok(out);
        };
        let mut inputs = Vec::new();
        let mut which = Vec::new();
        for (i, n) in nodules.iter().enumerate() {
            let Some(m) = n.measurement() else {
                out[i] = Err(format!(
                    "the nodule could not be measured on the CT ({})",
                    n.error().unwrap_or_else(|| "no measurement".into())
                ));
                continue;
            };
            match m.patch.decode_views() {
                Ok(views) => {
                    inputs.push(NoduleModelInput {
                        views,
                        radiomics: m.features(),
                    });
                    which.push(i);
                }
                Err(e) => out[i] = Err(format!("the stored patch is unreadable: {e}")),
            }
        }
        if inputs.is_empty() {
            return Ok(out);
        }
        let model = Arc::clone(model);
        let predicted = self
            .inference
            .run(move || model.predict(&inputs))
            .await
            .map_err(|e| ServiceError::Inference(e.to_string()))?;
        match predicted {
            Ok(outputs) if outputs.len() == which.len() => {
                for (i, o) in which.into_iter().zip(outputs) {
                    out[i] = Ok(o);
                }
            }
            Ok(outputs) => {
                return Err(ServiceError::Inference(format!(
                    "the nodule model answered {} outputs for {} nodules",
                    outputs.len(),
                    which.len()
                )));
            }
            // A model refusing an input (a missing feature) is that
            // nodule's problem, not the hook's: the baselines still show.
            Err(e) => {
                for i in which {
                    out[i] = Err(e.to_string());
                }
            }
        }
        Ok(out)
    }

    fn source(&self, base: Option<&str>) -> Source {
        let label = match &self.model {
            Some(m) => format!(
                "oncohooks {SERVICE_ID} · {} {} ({}) · Brock 2013, Mayo 1997, Lung-RADS v2022",
                m.info().id,
                m.info().version,
                m.info().source_label
            ),
            None => format!(
                "oncohooks {SERVICE_ID} · no nodule model installed · Brock 2013, Mayo 1997, Lung-RADS v2022"
            ),
        };
        Source {
            label,
            url: base.map(|b| format!("{b}/model-cards/{SERVICE_ID}")),
            icon: None,
            topic: Some(Coding::new(Some(SNOMED), SNOMED_NODULE, "Pulmonary nodule")),
        }
    }

    /// One card (no nodules to show: pending, no CT, failed) and its stored
    /// prediction.
    #[allow(clippy::too_many_arguments)]
    fn status_only(
        &self,
        input: &ServiceInput<'_>,
        status: &str,
        summary: &str,
        detail: String,
        study: Value,
        model: Value,
        features: Vec<FeatureValue>,
        started: Instant,
    ) -> Evaluation {
        let base = input.public_base_url.map(|b| b.trim_end_matches('/'));
        let mut detail = detail;
        if self.model.is_none() {
            detail.push_str("\n\n_No nodule model is installed on this server: per-nodule cards will show Brock, Mayo and Lung-RADS only._");
        }
        let card = CardBuilder::new(summary, Indicator::Info, self.source(base))
            .detail(detail.clone())
            .build();
        let (model_id, model_version) = self.ids();
        Evaluation {
            cards: vec![card],
            prediction: Some(Prediction {
                model_id,
                model_version,
                risk: None,
                risk_tier: "unknown".into(),
                confidence: None,
                review_suggested: false,
                result: json!({
                    "status": status,
                    "status_detail": detail,
                    "study": study,
                    "model": model,
                    "nodules": [],
                }),
            }),
            features,
            baselines: Value::Null,
            model: self.model_meta(),
            inference_ms: started.elapsed().as_secs_f64() * 1e3,
            model_batch: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn nodule_card(
        &self,
        n: &Nodule<'_>,
        out: &Result<NoduleModelOutput, String>,
        b: &Value,
        assumed: &[String],
        ct: &ChestCt,
        pipeline: &str,
        warnings: &[String],
        uuid: Uuid,
        base: Option<&str>,
    ) -> Card {
        let size = n
            .mean_diameter()
            .map(|(d, _)| format!("{} mm", round1(d)))
            .unwrap_or_else(|| "size unknown".into());
        let typ = n
            .nodule_type()
            .map(|(t, _)| type_label(t))
            .unwrap_or("type unknown");
        let site = n
            .observation
            .and_then(|o| o.body_site.clone())
            .map(|s| format!(" ({})", s.to_lowercase()))
            .unwrap_or_default();
        let brock_p = b["brock"]["probability"].as_f64();
        let lr = b["lung_rads"]["category"].as_str();
        let mut parts = Vec::new();
        let model = out.as_ref().ok();
        match model {
            Some(o) => parts.push(format!(
                "model {} ({}–{})",
                percent(o.probability),
                percent(o.interval.0),
                percent(o.interval.1)
            )),
            None if self.model.is_some() => parts.push("model: not scored".into()),
            None => {}
        }
        if let Some(p) = brock_p {
            parts.push(format!("Brock {}", percent(p)));
        }
        if let Some(c) = lr {
            parts.push(format!("Lung-RADS {c}"));
        }
        if model.is_some_and(|o| o.review_suggested) {
            parts.push("review suggested".into());
        }
        let summary = format!("{}{site}: {size} {typ}; {}", n.label, parts.join("; "));
        let risk = model.map(|o| o.probability).or(brock_p);
        let mut indicator = risk.map_or(Indicator::Info, |r| self.definition.tier(r));
        let suspicious = matches!(lr, Some("4A" | "4B" | "4X"));
        if suspicious && indicator == Indicator::Info {
            indicator = Indicator::Warning;
        }

        let mut md = String::new();
        match model {
            Some(o) => {
                let _ = writeln!(
                    md,
                    "**Model: probability of malignancy {}** (range across ensemble members {}–{}); confidence **{}** ({}); conformal prediction set {{{}}}.",
                    percent(o.probability),
                    percent(o.interval.0),
                    percent(o.interval.1),
                    o.confidence_level,
                    percent(o.confidence),
                    o.prediction_set.join(", ")
                );
                if o.review_suggested {
                    let alpha = self.model.as_ref().map_or(0.1, |m| m.info().alpha);
                    let _ = writeln!(
                        md,
                        "\n**Radiologist review suggested**: at the {:.0} % target error rate the model's conformal prediction set holds both benign and malignant, so it cannot tell them apart for this nodule.",
                        100.0 * alpha
                    );
                }
                if let Some(m) = &self.model {
                    let _ = writeln!(
                        md,
                        "\n_{}{}._",
                        m.info().source_label,
                        if m.info().trained_on_rendered_pixels {
                            ": its image branch learned from CT patches rendered from real LIDC-IDRI nodule masks, not from real CT pixels"
                        } else {
                            ""
                        }
                    );
                }
                let drivers: Vec<String> = o
                    .radiomics_drivers
                    .iter()
                    .take(5)
                    .map(|d| {
                        format!(
                            "{} = {:.3} ({}{:.2})",
                            d.name.trim_start_matches("original_"),
                            d.value,
                            if d.contribution >= 0.0 { "+" } else { "−" },
                            d.contribution.abs()
                        )
                    })
                    .collect();
                if !drivers.is_empty() {
                    let _ = writeln!(
                        md,
                        "\nRadiomics that shifted the prompt most (contribution towards malignant, logit units): {}.",
                        drivers.join("; ")
                    );
                }
            }
            None => {
                let why = out.as_ref().err().cloned().unwrap_or_default();
                let _ = writeln!(md, "**No model estimate**: {why}.");
            }
        }
        md.push_str("\n| | |\n|---|---|\n");
        let size_line = match (n.mean_diameter(), n.measurement()) {
            (Some((d, "stated")), Some(m)) => format!(
                "{} mm mean diameter (stated); measured {} mm ({} × {} mm), volume {} mm³",
                round1(d),
                round1(m.mean_diameter_mm),
                round1(m.long_axis_mm),
                round1(m.short_axis_mm),
                m.volume_mm3.round()
            ),
            (Some((d, _)), Some(m)) => format!(
                "{} mm mean diameter ({} × {} mm on the largest axial slice), volume {} mm³",
                round1(d),
                round1(m.long_axis_mm),
                round1(m.short_axis_mm),
                m.volume_mm3.round()
            ),
            (Some((d, s)), None) => format!("{} mm mean diameter ({s})", round1(d)),
            (None, _) => "unknown".into(),
        };
        let _ = writeln!(md, "| Size | {size_line} |");
        let _ = writeln!(
            md,
            "| Type | {} |",
            n.nodule_type()
                .map(|(t, s)| format!("{} ({s})", type_label(t)))
                .unwrap_or_else(|| "unknown".into())
        );
        let loc = match (n.observation.and_then(|o| o.body_site.clone()), n.center()) {
            (Some(s), Some(c)) => format!(
                "{s}; centre ({:.1}, {:.1}, {:.1}) mm (LPS)",
                c[0], c[1], c[2]
            ),
            (Some(s), None) => s,
            (None, Some(c)) => format!("centre ({:.1}, {:.1}, {:.1}) mm (LPS)", c[0], c[1], c[2]),
            (None, None) => "unknown".into(),
        };
        let _ = writeln!(md, "| Location | {loc} |");
        let prob = |key: &str| match b[key]["probability"].as_f64() {
            Some(p) => percent(p),
            None => format!(
                "not computed: {}",
                b[format!("{key}_missing")].as_str().unwrap_or("")
            ),
        };
        let _ = writeln!(md, "| Brock (McWilliams 2013) | {} |", prob("brock"));
        let mayo_note = if b["mayo"]["within_derivation_range"] == json!(false) {
            " (outside the 4–30 mm range it was derived on)"
        } else {
            ""
        };
        let _ = writeln!(md, "| Mayo (Swensen 1997) | {}{mayo_note} |", prob("mayo"));
        match lr {
            Some(c) => {
                let _ = writeln!(
                    md,
                    "| Lung-RADS v2022 | **{c}** ({}); {} |",
                    b["lung_rads"]["rule"].as_str().unwrap_or(""),
                    b["lung_rads"]["management"].as_str().unwrap_or("")
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "| Lung-RADS v2022 | not computed: {} |",
                    b["lung_rads_missing"].as_str().unwrap_or("")
                );
            }
        }
        if !assumed.is_empty() {
            let _ = writeln!(
                md,
                "\n_Assumed for Brock/Mayo because the record does not say: {}._",
                assumed.join("; ")
            );
        }
        let _ = writeln!(
            md,
            "\n_Lung-RADS applies to lung cancer screening CTs (baseline categories); for incidental nodules the Fleischner Society guideline applies._"
        );
        if let Some(e) = n.error() {
            let _ = writeln!(md, "\n**Not measured on the CT**: {e}.");
        }
        if let Some(o) = n.observation
            && !o.problems.is_empty()
        {
            let _ = writeln!(
                md,
                "\n_Parts of {} not used: {}._",
                o.source,
                o.problems.join("; ")
            );
        }
        let how = match n.measurement().map(|m| &m.mask_source) {
            Some(MaskSource::Seg) => "mask from the DICOM SEG".to_owned(),
            Some(MaskSource::PointSeeded {
                threshold_hu,
                radius_mm,
            }) => format!(
                "segmented around the stated point (≥ {threshold_hu} HU, within {radius_mm:.1} mm)"
            ),
            None => "not measured".to_owned(),
        };
        let _ = writeln!(
            md,
            "\n_Source: {} ({}), series {}, {how}, pipeline {pipeline}; finding {}._",
            ct.study.study,
            ct.study
                .date
                .map(|d| d.to_string())
                .unwrap_or_else(|| "undated".into()),
            ct.study.series_uid.as_deref().unwrap_or("?"),
            n.finding
        );
        if !warnings.is_empty() {
            let _ = writeln!(md, "\n_Imaging notes: {}._", warnings.join("; "));
        }
        CardBuilder::new(&summary, indicator, self.source(base))
            .uuid(uuid)
            .detail(md)
            .override_reason(Coding::new(
                Some(OVERRIDE_SYSTEM),
                "already-worked-up",
                "Nodule already under follow-up or work-up",
            ))
            .override_reason(Coding::new(
                Some(OVERRIDE_SYSTEM),
                "finding-inaccurate",
                "Finding or measurement is inaccurate",
            ))
            .build()
    }
}

const SNOMED_NODULE: &str = "786838002";
const OVERRIDE_SYSTEM: &str =
    "https://oncohooks.invalid/fhir/CodeSystem/lung-nodule-override-reason";

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(diameter: Option<f64>, typ: Option<NoduleType>) -> NoduleFinding {
        NoduleFinding {
            source: "Observation/n1".into(),
            date: None,
            body_site: Some("Right upper lobe".into()),
            upper_lobe: Some(true),
            center_mm: None,
            diameter_mm: diameter,
            solid_component_mm: None,
            nodule_type: typ,
            spiculated: None,
            problems: Vec::new(),
        }
    }

    fn clinical(age: Option<f64>) -> ClinicalInputs {
        ClinicalInputs {
            age_years: age,
            female: Some(true),
            ever_smoker: Some((true, "Observation/s".into())),
            emphysema: None,
            family_history: None,
            extrathoracic_cancer_over_5y: None,
        }
    }

    #[test]
    fn the_shipped_definition_parses_and_tiers_follow_the_accp_bands() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cds-hooks");
        let def = ServiceDefinition::load(&dir, SERVICE_ID, EMBEDDED_DEFINITION).unwrap();
        assert_eq!(def.hook, "patient-view");
        assert_eq!(def.model.as_deref(), Some("model"));
        assert_eq!(def.tier(0.049), Indicator::Info);
        assert_eq!(def.tier(0.05), Indicator::Warning);
        assert_eq!(def.tier(0.65), Indicator::Critical);
        assert!(def.prefetch["observations"].template.contains("786838002"));
        // The embedded copy is the file.
        let embedded = ServiceDefinition::from_toml(EMBEDDED_DEFINITION, "embedded").unwrap();
        assert_eq!(embedded.id, SERVICE_ID);
    }

    #[test]
    fn baselines_use_the_stated_size_and_say_what_was_assumed() {
        let f = finding(Some(6.0), Some(NoduleType::Solid));
        let n = Nodule {
            label: "Nodule 1".into(),
            finding: f.source.clone(),
            observation: Some(&f),
            measured: None,
        };
        let (b, assumed) = baselines(&n, &clinical(Some(68.0)), 2);
        let expected = brock(&BrockInput {
            age_years: 68.0,
            female: true,
            family_history: false,
            emphysema: false,
            size_mm: 6.0,
            nodule_type: NoduleType::Solid,
            upper_lobe: true,
            nodule_count: 2,
            spiculation: false,
        })
        .unwrap();
        assert_eq!(
            b["brock"]["probability"].as_f64(),
            Some(expected.probability)
        );
        assert_eq!(b["lung_rads"]["category"], "3");
        assert_eq!(b["lung_rads"]["management"], "6-month LDCT.");
        assert!(b["mayo"]["probability"].as_f64().unwrap() > 0.0);
        assert_eq!(b["mayo"]["inputs"]["ever_smoker"], true);
        let a = assumed.join("; ");
        assert!(
            a.contains("no spiculation") && a.contains("no emphysema"),
            "{a}"
        );
        assert!(!a.contains("upper lobe"), "the lobe is recorded: {a}");
        assert!(!a.contains("never smoker"), "{a}");
    }

    #[test]
    fn missing_inputs_are_named_instead_of_guessed() {
        let f = finding(None, None);
        let n = Nodule {
            label: "Nodule 1".into(),
            finding: f.source.clone(),
            observation: Some(&f),
            measured: None,
        };
        let (b, _) = baselines(&n, &clinical(None), 1);
        assert!(b["brock"].is_null());
        let why = b["brock_missing"].as_str().unwrap();
        assert!(
            why.contains("age") && why.contains("size") && why.contains("type"),
            "{why}"
        );
        assert!(b["lung_rads"].is_null());
        assert!(b["mayo_missing"].as_str().unwrap().contains("size"));
        assert_eq!(
            n.error().as_deref(),
            Some("the finding has no patient-space coordinates, so it was not located on the CT")
        );
    }

    #[test]
    fn management_follows_the_lung_rads_category() {
        use LungRadsCategory::*;
        assert!(management(C2).contains("12 months"));
        assert!(management(C4A).starts_with("3-month LDCT"));
        assert_eq!(management(C4B), management(C4X));
        assert_eq!(type_label(NoduleType::NonSolid), "ground-glass");
    }
}
