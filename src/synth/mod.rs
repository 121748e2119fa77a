//! The synthetic oncology cohort: seeded, reproducible FHIR R4 patients at
//! cancer diagnosis with a cachexia outcome label, for training and
//! evaluating the cachexia model (no public cachexia cohort exists).
//!
//! ```text
//! SynthConfig ──generate──▶ SyntheticPatient { id, resources (FHIR JSON), label, split, truth }
//!             ──write_cohort(dir)──▶ bundles/*.json, ndjson/*.ndjson, labels.csv, manifest.json
//! dir ──read_cohort──▶ resources grouped by patient (also reads real Bulk Data exports)
//! ```
//!
//! The generative model (latent physiology → true weight and muscle
//! trajectory → Fearon 2011 label; latents → noisy, partly missing
//! observations in each modality) is documented variable by variable in
//! `docs/synthetic-cohort.md`. The label is computed from the *future* true
//! trajectory; the resources hold only what was known on the index date.
//!
//! Determinism: patient `i` of seed `s` is drawn from its own ChaCha12 stream
//! (`seed_from_u64(s)`, stream `i`), so the same seed gives byte-identical
//! output, a smaller cohort is a prefix of a larger one, and patients can be
//! generated in parallel.

mod model;
mod notes;
mod observe;
mod output;
mod sample;
pub mod stats;

#[cfg(test)]
mod tests;

use chrono::NaiveDate;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use model::{CANCER_TYPES, Ethnicity, Latents, Race, Truth};
pub use observe::{Observed, PATIENT_IDENTIFIER_SYSTEM};
pub use output::{
    CohortData, LabelRow, PatientResources, WriteSummary, read_cohort, read_labels, write_cohort,
};

use crate::clinical::StageGroup;
use crate::fhir::PatientRecord;

/// Bump when the same seed would give different output.
pub const GENERATOR_VERSION: &str = "oncohooks-synth/1";

/// Errors of the generator and the cohort reader.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid synthetic cohort configuration: {0}")]
    InvalidConfig(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: not a JSON resource: {source}")]
    Json {
        path: String,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Labels {
        path: String,
        line: usize,
        reason: String,
    },
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynthConfig {
    pub patients: usize,
    pub seed: u64,
    /// Diagnosis dates are drawn uniformly in this window (inclusive).
    pub first_diagnosis: NaiveDate,
    pub last_diagnosis: NaiveDate,
}

impl SynthConfig {
    /// `patients` patients from `seed`, diagnosed 2019-01-01..=2025-06-30.
    pub fn new(patients: usize, seed: u64) -> Result<Self, SynthError> {
        let cfg = Self {
            patients,
            seed,
            first_diagnosis: NaiveDate::from_ymd_opt(2019, 1, 1).unwrap_or_default(),
            last_diagnosis: NaiveDate::from_ymd_opt(2025, 6, 30).unwrap_or_default(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), SynthError> {
        if self.patients == 0 || self.patients > 10_000_000 {
            return Err(SynthError::InvalidConfig(format!(
                "patients must be 1..=10000000, got {}",
                self.patients
            )));
        }
        if self.last_diagnosis < self.first_diagnosis {
            return Err(SynthError::InvalidConfig(format!(
                "diagnosis window ends ({}) before it starts ({})",
                self.last_diagnosis, self.first_diagnosis
            )));
        }
        Ok(())
    }
}

/// The fixed data split of a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Validation,
    Calibration,
    Test,
}

impl Split {
    pub const ALL: [Split; 4] = [
        Split::Train,
        Split::Validation,
        Split::Calibration,
        Split::Test,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Calibration => "calibration",
            Split::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Split> {
        Split::ALL.into_iter().find(|x| x.label() == s)
    }

    /// 60/10/10/20 by `SHA-256("oncohooks-synth-split/{seed}/{patient_id}")`:
    /// the first 8 bytes as a big-endian integer, modulo 100. Independent of
    /// the label and of everything else drawn, and stable for a patient id.
    pub fn assign(seed: u64, patient_id: &str) -> Split {
        let digest = Sha256::digest(format!("oncohooks-synth-split/{seed}/{patient_id}"));
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        match u64::from_be_bytes(first) % 100 {
            0..60 => Split::Train,
            60..70 => Split::Validation,
            70..80 => Split::Calibration,
            _ => Split::Test,
        }
    }
}

/// One generated patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyntheticPatient {
    /// Logical id of the Patient resource (a UUID).
    pub id: String,
    /// The date the model inputs describe: nothing in `resources` is later.
    pub index_date: NaiveDate,
    /// Cachexia (Fearon 2011) within 6 months after the index date.
    pub label: bool,
    pub split: Split,
    /// FHIR R4 resources (Patient first), references as `Patient/<id>`.
    pub resources: Vec<Value>,
    /// The generator's latent state (for analysis; never a model input).
    pub truth: Truth,
    pub observed: Observed,
}

impl SyntheticPatient {
    /// The resources as the project's typed record.
    pub fn record(&self) -> PatientRecord {
        let mut record = PatientRecord::default();
        for (i, r) in self.resources.iter().enumerate() {
            record.add_resource(&format!("synthetic[{i}]"), r.clone());
        }
        record
    }

    /// The row this patient gets in `labels.csv`.
    pub fn label_row(&self) -> LabelRow {
        let t = &self.truth;
        LabelRow {
            patient_id: self.id.clone(),
            index_date: self.index_date,
            cachexia_6m: self.label,
            cancer_type: cancer_label(t.cancer_type).to_owned(),
            stage: stage_label(t.stage).to_owned(),
            sex: if t.sex == crate::clinical::Sex::Male {
                "male"
            } else {
                "female"
            }
            .to_owned(),
            race: t.race.label().to_owned(),
            ethnicity: t.ethnicity.label().to_owned(),
            age: t.age,
            split: self.split,
        }
    }
}

pub(crate) fn cancer_label(t: crate::clinical::CancerType) -> &'static str {
    use crate::clinical::CancerType::*;
    match t {
        Lung => "lung",
        Pancreas => "pancreas",
        Colorectal => "colorectal",
        Gastric => "gastric",
        Oesophageal => "oesophageal",
        Breast => "breast",
        Prostate => "prostate",
        HeadAndNeck => "head_and_neck",
        Liver => "liver",
        Other => "other",
    }
}

pub(crate) fn stage_label(s: StageGroup) -> &'static str {
    match s {
        StageGroup::Zero => "0",
        StageGroup::I => "I",
        StageGroup::II => "II",
        StageGroup::III => "III",
        StageGroup::IV => "IV",
    }
}

/// Patient `index` of the cohort (independent of the cohort size).
pub fn generate_patient(cfg: &SynthConfig, index: u64) -> SyntheticPatient {
    let mut rng = sample::SynthRng::seed_from_u64(cfg.seed);
    rng.set_stream(index);
    let truth = model::draw_truth(&mut rng, (cfg.first_diagnosis, cfg.last_diagnosis));
    let id = sample::uuid(&mut rng).to_string();
    let (resources, observed) = observe::observe(&mut rng, &truth, &id);
    SyntheticPatient {
        split: Split::assign(cfg.seed, &id),
        index_date: truth.index_date,
        label: truth.label,
        id,
        resources,
        truth,
        observed,
    }
}

/// The cohort, patient by patient, in order (lazy: nothing is kept).
pub fn generate(cfg: &SynthConfig) -> impl Iterator<Item = SyntheticPatient> + '_ {
    (0..cfg.patients as u64).map(move |i| generate_patient(cfg, i))
}
