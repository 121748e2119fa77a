//! A patient's FHIR resources, parsed entry by entry.
//!
//! fhir-sdk rejects a whole Bundle when a single entry carries an unknown code
//! or an R4-only element, and real EHR data has both. We therefore take the
//! Bundle apart as `serde_json::Value`, parse each entry on its own, keep what
//! parses and record what was skipped and why (it goes into `--explain` and the
//! stored input snapshot).
//!
//! Only the six resource types we use are instantiated here: deserialising the
//! generic `Resource` enum would compile serde code for all ~145 R4B types.

use fhir_sdk::r4b::resources::{
    Condition, DiagnosticReport, DocumentReference, ImagingStudy, Observation, Patient,
};
use serde::Serialize;
use serde_json::Value;

/// Everything we know about one patient from FHIR, typed.
#[derive(Debug, Clone, Default)]
pub struct PatientRecord {
    pub patient: Option<Patient>,
    pub conditions: Vec<Condition>,
    pub observations: Vec<Observation>,
    pub documents: Vec<DocumentReference>,
    pub reports: Vec<DiagnosticReport>,
    pub imaging_studies: Vec<ImagingStudy>,
    /// Entries that were present but could not be used.
    pub skipped: Vec<SkippedEntry>,
}

/// An entry we could not use, with the reason, for audit and `--explain`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedEntry {
    /// Where it came from, e.g. `prefetch.observations.entry[3]`.
    pub location: String,
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub reason: String,
}

impl PatientRecord {
    /// Add one resource (already separated from any Bundle). Unknown or
    /// unparsable resources are recorded in `skipped`, never fatal.
    pub fn add_resource(&mut self, location: &str, value: Value) {
        self.add_resource_ref(location, &value);
    }

    /// [`Self::add_resource`] on a borrowed resource (read in place: a
    /// hook's prefetch need not be copied to be parsed).
    pub fn add_resource_ref(&mut self, location: &str, value: &Value) {
        let resource_type = value
            .get("resourceType")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
        let skip = |reason: String| SkippedEntry {
            location: location.to_owned(),
            resource_type: resource_type.clone(),
            id: id.clone(),
            reason,
        };
        let outcome = match resource_type.as_deref() {
            Some("Patient") => parse::<Patient>(value).map(|p| {
                // The first Patient wins; a second one is suspicious but not fatal.
                if self.patient.is_none() {
                    self.patient = Some(p);
                    None
                } else {
                    Some("a second Patient resource was ignored".to_owned())
                }
            }),
            Some("Condition") => parse(value).map(|r| {
                self.conditions.push(r);
                None
            }),
            Some("Observation") => parse(value).map(|r| {
                self.observations.push(r);
                None
            }),
            Some("DocumentReference") => parse(value).map(|r| {
                self.documents.push(r);
                None
            }),
            Some("DiagnosticReport") => parse(value).map(|r| {
                self.reports.push(r);
                None
            }),
            Some("ImagingStudy") => parse(value).map(|r| {
                self.imaging_studies.push(r);
                None
            }),
            // OperationOutcome entries in a searchset carry warnings, not data.
            Some("OperationOutcome") => Ok(Some("OperationOutcome entry (search warning)".into())),
            Some(other) => Ok(Some(format!("resource type {other} is not used"))),
            None => Err("entry has no resourceType".to_owned()),
        };
        match outcome {
            Ok(None) => {}
            Ok(Some(reason)) | Err(reason) => self.skipped.push(skip(reason)),
        }
    }

    /// Add a Bundle or a single resource. Bundle entries are parsed one by one.
    pub fn add_bundle_or_resource(&mut self, location: &str, value: Value) {
        if value.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
            let entries = match value {
                Value::Object(mut map) => map.remove("entry"),
                _ => None,
            };
            if let Some(Value::Array(entries)) = entries {
                for (i, mut entry) in entries.into_iter().enumerate() {
                    let loc = format!("{location}.entry[{i}]");
                    match entry.get_mut("resource").map(Value::take) {
                        Some(resource) => self.add_resource(&loc, resource),
                        None => self.skipped.push(SkippedEntry {
                            location: loc,
                            resource_type: None,
                            id: None,
                            reason: "Bundle entry has no resource".into(),
                        }),
                    }
                }
            }
        } else {
            self.add_resource(location, value);
        }
    }

    /// Number of resources that were kept.
    pub fn resource_count(&self) -> usize {
        usize::from(self.patient.is_some())
            + self.conditions.len()
            + self.observations.len()
            + self.documents.len()
            + self.reports.len()
            + self.imaging_studies.len()
    }
}

fn parse<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, String> {
    T::deserialize(value).map_err(|e| format!("not valid FHIR R4B: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_bad_entry_does_not_cost_the_bundle() {
        let bundle = json!({
            "resourceType": "Bundle", "type": "searchset",
            "entry": [
                {"resource": {"resourceType": "Observation", "id": "ok", "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                    "valueQuantity": {"value": 70.5, "unit": "kg"}}},
                {"resource": {"resourceType": "Observation", "id": "bad", "status": "not-a-status",
                    "code": {"text": "x"}}},
                {"resource": {"resourceType": "Medication", "id": "m"}},
                {"fullUrl": "urn:x"}
            ]
        });
        let mut record = PatientRecord::default();
        record.add_bundle_or_resource("prefetch.observations", bundle);
        assert_eq!(record.observations.len(), 1);
        assert_eq!(record.skipped.len(), 3);
        assert_eq!(record.skipped[0].id.as_deref(), Some("bad"));
        assert_eq!(record.skipped[0].location, "prefetch.observations.entry[1]");
        assert!(record.skipped[0].reason.contains("not valid FHIR"));
    }
}
