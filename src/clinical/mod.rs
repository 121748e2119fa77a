//! The clinical layer: FHIR resources in, a normalised patient timeline and
//! the classic cachexia indices out. Pure and deterministic — no I/O, no
//! clock: everything is relative to an explicit index date.
//!
//! ```text
//! PatientRecord ──Timeline::from_record(record, index_date)──▶ Timeline
//! Timeline + Cutoffs ──ClassicAssessment::compute──▶ ClassicAssessment ──.risk()──▶ ClassicRisk
//! ```
//!
//! - [`Timeline`]: demographics (age at the index date, sex, US Core race and
//!   ethnicity), cancer diagnoses with type and stage, recorded cachexia
//!   diagnoses, observation series by code in canonical UCUM units, weight
//!   change over 1/3/6/12 months, BMI, NLR, L3 SMI, and note text. Every
//!   value carries its provenance (value, unit, date, `Type/id` source), and
//!   every recognised value that was not used is listed with the reason.
//!   Nothing dated after the index date is used.
//! - [`indices`]: Fearon 2011, Prado 2008, Martin 2013, CXI, mCXI and GLIM,
//!   each three-valued (Unknown when the data cannot decide, never "no"),
//!   with all thresholds in [`Cutoffs`] (the config file's `[clinical]` table).
//! - [`ClassicAssessment::risk`]: the interim "risk from classic indices"
//!   signal until the ML model lands. Rule, first that applies:
//!   **high** if Fearon says cachexia or an active cachexia diagnosis is
//!   recorded; **elevated** if GLIM malnutrition, weight loss > 2 % within 6
//!   months, low CXI, low mCXI, or sarcopenia (Prado or Martin); **low** if
//!   Fearon says not cachexia; otherwise **unknown** (too little data).
//!
//! The rules of each step are documented in its module: [`observations`]
//! (status, dates, values), [`units`] (conversions), [`diagnoses`] (codes,
//! status, stage), [`timeline`] (windows), [`notes`] (attachments).

pub mod codes;
pub mod dates;
pub mod demographics;
pub mod diagnoses;
pub mod indices;
pub mod nodule;
pub mod notes;
pub mod observations;
pub mod provenance;
pub mod timeline;
pub mod trends;
pub mod units;

#[cfg(test)]
mod tests;

pub use codes::Analyte;
pub use dates::DatePrecision;
pub use demographics::{Age, Demographics, OmbCategory, RaceEthnicity, Sex};
pub use diagnoses::{
    CachexiaDiagnosis, CancerDiagnosis, CancerType, Stage, StageBasis, StageGroup,
    StagingObservation,
};
pub use indices::assessment::{ClassicAssessment, ClassicRisk, RiskLevel};
pub use indices::cutoffs::Cutoffs;
pub use indices::cxi::CxiStatus;
pub use indices::fearon::FearonStatus;
pub use indices::glim::GlimStatus;
pub use indices::sarcopenia::{AttenuationStatus, MartinResult, SarcopeniaStatus};
pub use indices::{Criterion, IndexResult, InputUsed};
pub use notes::{NotRetrieved, Note, NoteKind};
pub use provenance::{DerivedValue, Measurement, RecordedQuantity, SourceRef};
pub use timeline::{SkippedValue, Timeline, TimelineRules, WeightChange, WeightTrajectory};

/// Errors of the clinical layer (configuration only: extraction never fails,
/// it records what it skipped).
#[derive(Debug, thiserror::Error)]
pub enum ClinicalError {
    #[error("clinical cut-off {name} = {value} is not a finite, non-negative number")]
    InvalidCutoff { name: &'static str, value: f64 },
}
