//! Tests across the clinical layer: records are built from FHIR JSON with
//! `serde_json::json!` and loaded with `PatientRecord::add_bundle_or_resource`,
//! exactly as prefetch data arrives.

mod fixture;
mod indices;
mod timeline;

use chrono::NaiveDate;
use serde_json::{Value, json};

use super::Timeline;
use super::codes::{BODY_COMPOSITION, ICD10CM, LOINC};
use crate::fhir::PatientRecord;

/// The index date every test uses.
pub(super) fn index_date() -> NaiveDate {
    d("2026-10-02")
}

pub(super) fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

pub(super) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// A patient under construction: resources as FHIR JSON.
#[derive(Default)]
pub(super) struct Fixture {
    pub resources: Vec<Value>,
    next_id: usize,
}

impl Fixture {
    /// A patient with the given administrative gender and birth date.
    pub fn patient(gender: &str, birth_date: &str) -> Self {
        let mut f = Self::default();
        f.resources.push(json!({
            "resourceType": "Patient", "id": "p1",
            "gender": gender, "birthDate": birth_date
        }));
        f
    }

    pub fn male() -> Self {
        Self::patient("male", "1960-05-05")
    }

    pub fn female() -> Self {
        Self::patient("female", "1960-05-05")
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    pub fn push(mut self, resource: Value) -> Self {
        self.resources.push(resource);
        self
    }

    /// An Observation with a valueQuantity whose UCUM code is `unit`.
    pub fn quantity(
        mut self,
        system: &str,
        code: &str,
        value: f64,
        unit: &str,
        date: &str,
    ) -> Self {
        let id = self.id("o");
        self.resources.push(json!({
            "resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": system, "code": code}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": date,
            "valueQuantity": {"value": value, "unit": unit,
                "system": "http://unitsofmeasure.org", "code": unit}
        }));
        self
    }

    pub fn loinc(self, code: &str, value: f64, unit: &str, date: &str) -> Self {
        self.quantity(LOINC, code, value, unit, date)
    }

    pub fn weight(self, kg: f64, date: &str) -> Self {
        self.loinc("29463-7", kg, "kg", date)
    }

    pub fn height(self, cm: f64, date: &str) -> Self {
        self.loinc("8302-2", cm, "cm", date)
    }

    pub fn bmi(self, v: f64, date: &str) -> Self {
        self.loinc("39156-5", v, "kg/m2", date)
    }

    pub fn smi(self, v: f64, date: &str) -> Self {
        self.quantity(BODY_COMPOSITION, "l3-smi", v, "cm2/m2", date)
    }

    pub fn muscle_hu(self, v: f64, date: &str) -> Self {
        self.quantity(BODY_COMPOSITION, "l3-muscle-hu", v, "[hnsf'U]", date)
    }

    pub fn albumin(self, g_dl: f64, date: &str) -> Self {
        self.loinc("1751-7", g_dl, "g/dL", date)
    }

    /// Neutrophil and lymphocyte counts on one day.
    pub fn counts(self, neutrophils: f64, lymphocytes: f64, date: &str) -> Self {
        self.loinc("751-8", neutrophils, "10*3/uL", date).loinc(
            "731-0",
            lymphocytes,
            "10*3/uL",
            date,
        )
    }

    pub fn bun(self, mg_dl: f64, date: &str) -> Self {
        self.loinc("3094-0", mg_dl, "mg/dL", date)
    }

    pub fn creatinine(self, mg_dl: f64, date: &str) -> Self {
        self.loinc("2160-0", mg_dl, "mg/dL", date)
    }

    pub fn crp(self, mg_l: f64, date: &str) -> Self {
        self.loinc("1988-5", mg_l, "mg/L", date)
    }

    /// An active cancer Condition coded in ICD-10-CM.
    pub fn cancer(mut self, icd10: &str, onset: &str) -> Self {
        let id = self.id("c");
        self.resources.push(json!({
            "resourceType": "Condition", "id": id,
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"}]},
            "code": {"coding": [{"system": ICD10CM, "code": icd10}]},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": onset
        }));
        self
    }

    /// Weight `start` kg on `start_date` and `end` kg on 2026-10-01 (one day
    /// before the index date).
    pub fn weights(self, start: f64, start_date: &str, end: f64) -> Self {
        self.weight(start, start_date).weight(end, "2026-10-01")
    }

    pub fn record(&self) -> PatientRecord {
        let bundle = json!({
            "resourceType": "Bundle", "type": "searchset",
            "entry": self.resources.iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()
        });
        let mut record = PatientRecord::default();
        record.add_bundle_or_resource("prefetch.test", bundle);
        assert!(
            record.skipped.is_empty(),
            "fixture resources must all parse: {:?}",
            record.skipped
        );
        record
    }

    pub fn timeline(&self) -> Timeline {
        Timeline::from_record(&self.record(), index_date())
    }
}
