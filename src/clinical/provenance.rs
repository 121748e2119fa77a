//! Provenance: every value the timeline derives says where it came from, so a
//! card can cite "albumin 3.1 g/dL on 2026-10-02 (Observation/abc)".

use chrono::NaiveDate;
use serde::Serialize;
use std::fmt;

/// A FHIR resource reference in `Type/id` form, e.g. `Observation/abc`.
///
/// Resources without an `id` (hand-built bundles, contained resources) get
/// `Type[#n]`, where `n` is the resource's position in the patient record,
/// so the reference is still stable for one record and visibly not an id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SourceRef(String);

impl SourceRef {
    /// Reference for the resource of type `resource_type` at `position` in
    /// the record, with the logical `id` when it has one.
    pub fn new(resource_type: &str, id: Option<&str>, position: usize) -> Self {
        match id.map(str::trim).filter(|id| !id.is_empty()) {
            Some(id) => Self(format!("{resource_type}/{id}")),
            None => Self(format!("{resource_type}[#{position}]")),
        }
    }

    /// A value computed by our imaging pipeline from one series of a
    /// study: `ImagingStudy/abc series 1.2.3 (pipeline ct-bc-1)`. Not a FHIR
    /// reference (no resource holds the value), but it names the study, the
    /// series and the code version that produced it.
    pub fn imaging_series(study: &str, series_uid: &str, pipeline_version: &str) -> Self {
        Self(format!(
            "{study} series {series_uid} (pipeline {pipeline_version})"
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `reference` (a FHIR `Reference.reference`, possibly absolute
    /// or versioned) points at this resource.
    pub fn matches_reference(&self, reference: &str) -> bool {
        // Strip `/_history/n` and any base URL: `https://ehr/fhir/Observation/1`.
        let reference = reference.split("/_history/").next().unwrap_or(reference);
        reference == self.0 || reference.ends_with(&format!("/{}", self.0))
    }
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The value and unit exactly as the source recorded them, kept whenever a
/// unit conversion was applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedQuantity {
    pub value: f64,
    pub unit: String,
}

/// One measured value, normalised to the analyte's canonical UCUM unit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    pub value: f64,
    /// Canonical UCUM unit of the analyte (e.g. `g/dL`, `10*9/L`).
    pub unit: &'static str,
    /// Effective date (the clinically relevant date, not the report date).
    pub date: NaiveDate,
    pub source: SourceRef,
    /// The code that identified the analyte, as `system|code`.
    pub code: String,
    /// Present when the recorded unit differed from the canonical one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<RecordedQuantity>,
}

impl fmt::Display for Measurement {
    /// `3.1 g/dL on 2026-10-02 (Observation/abc)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} on {} ({})",
            format_value(self.value),
            self.unit,
            self.date,
            self.source
        )
    }
}

/// A value that is either measured (one input) or computed from several
/// measurements (BMI from weight and height, NLR, SMI from area and height).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DerivedValue {
    pub value: f64,
    pub unit: &'static str,
    /// Date the value holds for: the measurement's date, or for a computed
    /// value the date of its most recent input.
    pub date: NaiveDate,
    /// True when computed here rather than recorded as such in the EHR.
    pub derived: bool,
    /// The measurements used, for citation.
    pub inputs: Vec<Measurement>,
}

impl DerivedValue {
    /// A recorded value used as is.
    pub fn measured(m: &Measurement) -> Self {
        Self {
            value: m.value,
            unit: m.unit,
            date: m.date,
            derived: false,
            inputs: vec![m.clone()],
        }
    }

    /// A value computed from `inputs`; its date is the latest input date.
    pub(crate) fn computed(value: f64, unit: &'static str, inputs: Vec<Measurement>) -> Self {
        let date = inputs
            .iter()
            .map(|m| m.date)
            .max()
            .unwrap_or(NaiveDate::MIN);
        Self {
            value,
            unit,
            date,
            derived: true,
            inputs,
        }
    }

    /// The resources this value rests on.
    pub fn sources(&self) -> Vec<SourceRef> {
        let mut sources: Vec<SourceRef> = self.inputs.iter().map(|m| m.source.clone()).collect();
        sources.dedup();
        sources
    }
}

impl fmt::Display for DerivedValue {
    /// `BMI 19.6 kg/m2 (derived from 58 kg on 2026-10-01 (Observation/w), ...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.derived {
            write!(
                f,
                "{} {} (derived from ",
                format_value(self.value),
                self.unit
            )?;
            for (i, m) in self.inputs.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{m}")?;
            }
            f.write_str(")")
        } else {
            match self.inputs.first() {
                Some(m) => write!(f, "{m}"),
                None => write!(f, "{} {}", format_value(self.value), self.unit),
            }
        }
    }
}

/// At most two decimals (three below 1, so `0.113` stays `0.113`), trailing
/// zeros dropped: `3.1`, `70.35`, `52`.
pub fn format_value(value: f64) -> String {
    let s = if value.abs() < 1.0 {
        format!("{value:.3}")
    } else {
        format!("{value:.2}")
    };
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ref_uses_id_or_position() {
        assert_eq!(
            SourceRef::new("Observation", Some("abc"), 3).as_str(),
            "Observation/abc"
        );
        assert_eq!(
            SourceRef::new("Observation", None, 3).as_str(),
            "Observation[#3]"
        );
        assert_eq!(
            SourceRef::new("Observation", Some("  "), 0).as_str(),
            "Observation[#0]"
        );
    }

    #[test]
    fn source_ref_matches_relative_absolute_and_versioned_references() {
        let s = SourceRef::new("Observation", Some("abc"), 0);
        assert!(s.matches_reference("Observation/abc"));
        assert!(s.matches_reference("https://ehr.example/fhir/Observation/abc"));
        assert!(s.matches_reference("Observation/abc/_history/2"));
        assert!(!s.matches_reference("Observation/abcd"));
        assert!(!s.matches_reference("Observation/xabc"));
    }

    #[test]
    fn measurement_display_cites_value_date_and_source() {
        let m = Measurement {
            value: 3.1,
            unit: "g/dL",
            date: NaiveDate::from_ymd_opt(2026, 10, 2).unwrap(),
            source: SourceRef::new("Observation", Some("abc"), 0),
            code: "http://loinc.org|1751-7".into(),
            recorded: None,
        };
        assert_eq!(m.to_string(), "3.1 g/dL on 2026-10-02 (Observation/abc)");
    }

    #[test]
    fn format_value_trims() {
        assert_eq!(format_value(3.10), "3.1");
        assert_eq!(format_value(52.0), "52");
        assert_eq!(format_value(70.349), "70.35");
        assert_eq!(format_value(-0.0001), "0");
        assert_eq!(format_value(0.113), "0.113");
        assert_eq!(format_value(0.0894), "0.089");
    }
}
