//! FHIR access: lenient parsing of R4/R4B JSON into fhir-sdk types, prefetch
//! templates, and the client that fetches what prefetch lacks.
//!
//! fhir-sdk ships R4B (4.3) models only. EHRs speak R4 (4.0.1); for the
//! resources we read (Patient, Condition, Observation, DiagnosticReport,
//! DocumentReference, ImagingStudy) the JSON shapes are the same, so R4 JSON is
//! parsed with R4B types. One bad entry must not cost the whole Bundle, so
//! Bundles are split entry by entry (see `record`).

pub mod client;
pub mod outputs;
pub mod prefetch;
pub mod record;

pub use client::{AllowList, Fetched, FhirClient, FhirError};
pub use prefetch::PrefetchSpec;
pub use record::{PatientRecord, SkippedEntry};
