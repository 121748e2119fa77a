//! Timeline extraction: units, dates, windows, demographics, diagnoses, notes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

use super::{Fixture, close, d, index_date};
use crate::clinical::codes::{BODY_COMPOSITION, ICD10CM, LOINC, SNOMED};
use crate::clinical::dates::DatePrecision;
use crate::clinical::{Analyte, CancerType, NoteKind, Sex, StageBasis, StageGroup, Timeline};

// ---------------------------------------------------------------- units

#[test]
fn albumin_in_g_per_l_is_normalised_to_g_per_dl_with_provenance() {
    let t = Fixture::male()
        .push(json!({
            "resourceType": "Observation", "id": "alb1", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "1751-7"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2026-09-20T08:30:00+02:00",
            "valueQuantity": {"value": 31, "unit": "g/L",
                "system": "http://unitsofmeasure.org", "code": "g/L"}
        }))
        .timeline();
    let alb = t.latest(Analyte::Albumin).expect("albumin kept");
    assert!(close(alb.value, 3.1));
    assert_eq!(alb.unit, "g/dL");
    assert_eq!(alb.date, d("2026-09-20"));
    assert_eq!(alb.source.as_str(), "Observation/alb1");
    assert_eq!(alb.code, "http://loinc.org|1751-7");
    let recorded = alb.recorded.as_ref().expect("conversion is recorded");
    assert!(close(recorded.value, 31.0));
    assert_eq!(recorded.unit, "g/L");
    assert_eq!(alb.to_string(), "3.1 g/dL on 2026-09-20 (Observation/alb1)");
}

#[test]
fn pounds_inches_and_cells_per_microlitre_are_converted() {
    let t = Fixture::male()
        .loinc("29463-7", 150.0, "[lb_av]", "2026-09-30")
        .loinc("8302-2", 70.0, "[in_i]", "2026-09-30")
        .loinc("751-8", 4200.0, "/uL", "2026-09-30")
        .loinc("26474-7", 1500.0, "{cells}/uL", "2026-09-30")
        .timeline();
    assert!(close(
        t.latest(Analyte::BodyWeight).unwrap().value,
        68.038_855_5
    ));
    assert!(close(t.latest(Analyte::BodyHeight).unwrap().value, 177.8));
    assert!(close(t.latest(Analyte::Neutrophils).unwrap().value, 4.2));
    assert!(close(t.latest(Analyte::Lymphocytes).unwrap().value, 1.5));
    let nlr = t.nlr.as_ref().expect("same-day counts give an NLR");
    assert!(close(nlr.value, 2.8));
    assert!(nlr.derived);
}

#[test]
fn unknown_unit_is_skipped_with_a_reason_never_guessed() {
    let t = Fixture::male()
        .loinc("1751-7", 0.6, "mmol/L", "2026-09-20")
        .timeline();
    assert!(t.series(Analyte::Albumin).is_empty());
    let skip = t
        .skipped
        .iter()
        .find(|s| s.code.as_deref() == Some("http://loinc.org|1751-7"))
        .expect("skip recorded");
    assert!(skip.reason.contains("mmol/L"), "{}", skip.reason);
    assert!(skip.reason.contains("albumin"), "{}", skip.reason);
}

#[test]
fn unusable_observations_are_skipped_with_reasons() {
    let t = Fixture::male()
        .push(json!({
            "resourceType": "Observation", "id": "err", "status": "entered-in-error",
            "code": {"coding": [{"system": LOINC, "code": "29463-7"}]},
            "effectiveDateTime": "2026-09-01",
            "valueQuantity": {"value": 70, "unit": "kg"}
        }))
        .push(json!({
            "resourceType": "Observation", "id": "late", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "29463-7"}]},
            "effectiveDateTime": "2026-10-03",
            "valueQuantity": {"value": 70, "unit": "kg"}
        }))
        .push(json!({
            "resourceType": "Observation", "id": "crp-lt", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "1988-5"}]},
            "effectiveDateTime": "2026-09-01",
            "valueQuantity": {"value": 5, "comparator": "<", "unit": "mg/L"}
        }))
        .push(json!({
            "resourceType": "Observation", "id": "month", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "29463-7"}]},
            "effectiveDateTime": "2026-09",
            "valueQuantity": {"value": 70, "unit": "kg"}
        }))
        .push(json!({
            "resourceType": "Observation", "id": "hr", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
            "effectiveDateTime": "2026-09-01",
            "valueQuantity": {"value": 80, "unit": "/min"}
        }))
        .timeline();
    assert!(t.series(Analyte::BodyWeight).is_empty());
    assert!(t.series(Analyte::Crp).is_empty());
    let reason = |id: &str| {
        t.skipped
            .iter()
            .find(|s| s.source.as_str() == format!("Observation/{id}"))
            .map(|s| s.reason.clone())
            .unwrap_or_else(|| panic!("no skip for {id}"))
    };
    assert!(reason("err").contains("entered-in-error"));
    assert!(reason("late").contains("after the index date"));
    assert!(reason("crp-lt").contains("censored"));
    assert!(reason("month").contains("month"));
    assert_eq!(t.ignored_observations, 1, "heart rate is not used");
    assert!(
        !t.skipped
            .iter()
            .any(|s| s.source.as_str() == "Observation/hr")
    );
}

#[test]
fn ecog_from_answer_code_and_body_composition_from_panel_components() {
    let t = Fixture::male()
        .push(json!({
            "resourceType": "Observation", "id": "ecog", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "89247-1"}]},
            "effectiveDateTime": "2026-09-15",
            "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA9624-3"}]}
        }))
        .push(json!({
            "resourceType": "Observation", "id": "kps", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "89243-0"}]},
            "effectiveDateTime": "2026-09-15",
            "valueInteger": 70
        }))
        .push(json!({
            "resourceType": "Observation", "id": "bc", "status": "final",
            "code": {"text": "L3 body composition"},
            "effectiveDateTime": "2026-09-10",
            "component": [
                {"code": {"coding": [{"system": BODY_COMPOSITION, "code": "l3-smi"}]},
                 "valueQuantity": {"value": 41.2, "unit": "cm2/m2"}},
                {"code": {"coding": [{"system": BODY_COMPOSITION, "code": "l3-muscle-hu"}]},
                 "valueQuantity": {"value": 28.5, "unit": "HU"}},
                {"code": {"text": "something else"}, "valueQuantity": {"value": 1}}
            ]
        }))
        .timeline();
    assert!(close(t.latest(Analyte::Ecog).unwrap().value, 2.0));
    assert!(close(t.latest(Analyte::Karnofsky).unwrap().value, 70.0));
    let smi = t.latest(Analyte::L3Smi).unwrap();
    assert!(close(smi.value, 41.2));
    assert_eq!(smi.source.as_str(), "Observation/bc");
    assert!(close(t.latest(Analyte::L3MuscleHu).unwrap().value, 28.5));
    assert!(!t.smi.as_ref().unwrap().derived);
}

// ---------------------------------------------------------- demographics

#[test]
fn partial_birth_dates_give_an_age_range() {
    let age = |birth: &str| {
        Fixture::patient("female", birth)
            .timeline()
            .demographics
            .age
            .expect("age")
    };
    // Index date 2026-10-02.
    let a = age("1956");
    assert_eq!((a.min_years, a.max_years, a.years), (69, 70, 70));
    assert_eq!(a.birth_date, "1956");
    assert_eq!(a.precision, DatePrecision::Year);
    let a = age("1956-10");
    assert_eq!((a.min_years, a.max_years, a.years), (69, 70, 69));
    let a = age("1956-11");
    assert_eq!((a.min_years, a.max_years, a.years), (69, 69, 69));
    let a = age("1956-10-02");
    assert_eq!((a.min_years, a.max_years, a.years), (70, 70, 70));
    let a = age("1956-10-03");
    assert_eq!((a.min_years, a.max_years, a.years), (69, 69, 69));
    // Born in the index year: the range stops at the index date.
    let a = age("2026");
    assert_eq!((a.min_years, a.max_years), (0, 0));
    let t = Fixture::patient("female", "2027-01-01").timeline();
    assert!(t.demographics.age.is_none());
    assert!(t.demographics.notes[0].contains("after the index date"));
}

#[test]
fn us_core_race_ethnicity_and_birth_sex_are_read() {
    let t = Fixture::default()
        .push(json!({
            "resourceType": "Patient", "id": "p1", "gender": "other", "birthDate": "1950-01-01",
            "extension": [
                {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                 "extension": [
                    {"url": "ombCategory", "valueCoding": {
                        "system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3", "display": "White"}},
                    {"url": "ombCategory", "valueCoding": {
                        "system": "urn:oid:2.16.840.1.113883.6.238", "code": "2028-9", "display": "asian"}},
                    {"url": "detailed", "valueCoding": {
                        "system": "urn:oid:2.16.840.1.113883.6.238", "code": "2039-6", "display": "Japanese"}},
                    {"url": "text", "valueString": "White and Japanese"}
                 ]},
                {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
                 "extension": [
                    {"url": "ombCategory", "valueCoding": {
                        "system": "urn:oid:2.16.840.1.113883.6.238", "code": "2186-5"}},
                    {"url": "text", "valueString": "Not Hispanic or Latino"}
                 ]},
                {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                 "valueCode": "F"}
            ]
        }))
        .timeline();
    let demo = &t.demographics;
    assert_eq!(demo.source.as_ref().unwrap().as_str(), "Patient/p1");
    let race = demo.race.as_ref().unwrap();
    let omb: Vec<(&str, &str)> = race
        .omb
        .iter()
        .map(|c| (c.code.as_str(), c.display.as_str()))
        .collect();
    // Displays are the standard OMB wording, not the data's spelling.
    assert_eq!(omb, [("2106-3", "White"), ("2028-9", "Asian")]);
    assert_eq!(race.detailed[0].code, "2039-6");
    assert_eq!(race.text.as_deref(), Some("White and Japanese"));
    let eth = demo.ethnicity.as_ref().unwrap();
    assert_eq!(eth.omb[0].display, "Not Hispanic or Latino");
    assert_eq!(demo.sex, Some(Sex::Other));
    assert_eq!(demo.birth_sex, Some(Sex::Female));
    assert_eq!(demo.sex_for_cutoffs(), Some(Sex::Female));
}

// ------------------------------------------------------------ weight windows

#[test]
fn weight_windows_pick_the_closest_weight_within_tolerance() {
    // Current weight 2026-10-01; targets: 1 m 09-01 (±7), 3 m 07-01 (±14),
    // 6 m 04-01 (±30), 12 m 2025-10-01 (±30).
    let t = Fixture::male()
        .weight(66.5, "2026-10-01")
        .weight(67.0, "2026-09-08") // 7 days after the 1-month target: inside
        .weight(68.0, "2026-07-14") // 13 days off the 3-month target
        .weight(68.5, "2026-06-16") // 15 days off: outside
        .weight(70.0, "2026-04-20") // 19 days off the 6-month target
        .weight(72.0, "2026-03-01") // 31 days off: outside
        .weight(75.0, "2025-10-01")
        .timeline();
    let w = &t.weight;
    assert_eq!(w.current.as_ref().unwrap().date, d("2026-10-01"));
    let one = w.one_month.as_ref().unwrap();
    assert_eq!(one.reference.date, d("2026-09-08"));
    assert_eq!(
        w.three_months.as_ref().unwrap().reference.date,
        d("2026-07-14")
    );
    let six = w.six_months.as_ref().unwrap();
    assert_eq!(six.reference.date, d("2026-04-20"));
    assert!(close(six.percent_change, -5.0));
    assert!(close(six.loss_percent, 5.0));
    assert_eq!(six.days_between, 164);
    assert_eq!(
        w.twelve_months.as_ref().unwrap().reference.date,
        d("2025-10-01")
    );
}

#[test]
fn weight_window_edges_and_ties() {
    // 8 days off the 1-month target is outside the ±7-day tolerance.
    let t = Fixture::male()
        .weight(66.0, "2026-10-01")
        .weight(67.0, "2026-09-09")
        .timeline();
    assert!(t.weight.one_month.is_none());
    // Equidistant references: the earlier one wins.
    let t = Fixture::male()
        .weight(66.0, "2026-10-01")
        .weight(68.0, "2026-08-29")
        .weight(67.0, "2026-09-04")
        .timeline();
    assert_eq!(
        t.weight.one_month.as_ref().unwrap().reference.date,
        d("2026-08-29")
    );
}

#[test]
fn no_current_weight_means_no_windows() {
    // Latest weight 31 days before the index date.
    let t = Fixture::male()
        .weight(66.0, "2026-09-01")
        .weight(70.0, "2026-03-01")
        .timeline();
    assert!(t.weight.current.is_none());
    assert!(t.weight.six_months.is_none());
    assert!(t.bmi.is_none());
}

#[test]
fn bmi_is_measured_when_recent_else_derived_and_flagged() {
    let t = Fixture::male()
        .weight(64.0, "2026-09-30")
        .height(160.0, "2024-01-01")
        .timeline();
    let bmi = t.bmi.as_ref().unwrap();
    assert!(bmi.derived);
    assert!(close(bmi.value, 25.0));
    assert_eq!(bmi.date, d("2026-09-30"));
    assert_eq!(bmi.inputs.len(), 2);

    // A measured BMI on the same day as the weight wins the tie.
    let t = Fixture::male()
        .weight(64.0, "2026-09-30")
        .height(160.0, "2024-01-01")
        .bmi(24.8, "2026-09-30")
        .timeline();
    let bmi = t.bmi.as_ref().unwrap();
    assert!(!bmi.derived);
    assert!(close(bmi.value, 24.8));

    // An older measured BMI loses to one derived from a newer weight.
    let t = Fixture::male()
        .weight(60.0, "2026-09-30")
        .height(160.0, "2024-01-01")
        .bmi(24.8, "2026-09-10")
        .timeline();
    assert!(t.bmi.as_ref().unwrap().derived);
}

#[test]
fn nlr_needs_a_same_day_pair_and_skips_zero_lymphocytes() {
    let t = Fixture::male()
        .loinc("751-8", 6.0, "10*3/uL", "2026-09-20")
        .loinc("731-0", 2.0, "10*3/uL", "2026-09-21")
        .timeline();
    assert!(t.nlr.is_none(), "different days do not pair");

    let t = Fixture::male()
        .counts(6.0, 2.0, "2026-08-01")
        .counts(5.0, 0.0, "2026-09-20")
        .timeline();
    let nlr = t.nlr.as_ref().unwrap();
    assert!(close(nlr.value, 3.0));
    assert_eq!(nlr.date, d("2026-08-01"));

    // Older than the 90-day lab lookback.
    let t = Fixture::male().counts(6.0, 2.0, "2026-06-01").timeline();
    assert!(t.nlr.is_none());
}

#[test]
fn smi_is_derived_from_muscle_area_and_height() {
    let t = Fixture::male()
        .quantity(BODY_COMPOSITION, "l3-sma", 14_450.0, "mm2", "2026-09-01")
        .height(170.0, "2026-01-01")
        .timeline();
    let smi = t.smi.as_ref().unwrap();
    assert!(smi.derived);
    assert!(close(smi.value, 50.0));
    assert_eq!(smi.date, d("2026-09-01"));
}

#[test]
fn ct_measurements_join_the_series_newest_wins_and_observations_win_ties() {
    use crate::clinical::{Measurement, SourceRef};
    let ct = |analyte: Analyte, value: f64, date: &str| {
        (
            analyte,
            Measurement {
                value,
                unit: analyte.unit(),
                date: d(date),
                source: SourceRef::imaging_series("ImagingStudy/ct", "1.2.3", "ct-bc-1"),
                code: format!("{BODY_COMPOSITION}|l3-sma"),
                recorded: None,
            },
        )
    };
    let fixture = || {
        Fixture::male()
            .quantity(BODY_COMPOSITION, "l3-smi", 41.0, "cm2/m2", "2026-09-01")
            .height(170.0, "2026-01-01")
    };
    // A newer CT: its muscle area over height² replaces the older SMI.
    let mut t = fixture().timeline();
    t.add_measurements([ct(Analyte::L3Sma, 144.5, "2026-09-15")]);
    let smi = t.smi.as_ref().unwrap();
    assert!(smi.derived && close(smi.value, 50.0), "{smi:?}");
    assert_eq!(
        smi.inputs[0].source.as_str(),
        "ImagingStudy/ct series 1.2.3 (pipeline ct-bc-1)"
    );
    // An older CT does not displace the recorded SMI.
    let mut t = fixture().timeline();
    t.add_measurements([ct(Analyte::L3Sma, 144.5, "2026-08-01")]);
    assert!(!t.smi.as_ref().unwrap().derived);
    assert!(close(t.smi.as_ref().unwrap().value, 41.0));
    // Same day: the recorded Observation wins over the CT value.
    let mut t = Fixture::male()
        .quantity(BODY_COMPOSITION, "l3-sma", 120.0, "cm2", "2026-09-15")
        .timeline();
    t.add_measurements([ct(Analyte::L3Sma, 144.5, "2026-09-15")]);
    assert!(close(t.recent(Analyte::L3Sma).unwrap().value, 120.0));
    assert_eq!(t.series(Analyte::L3Sma).len(), 2);
    // After the index date: skipped with a reason.
    let mut t = fixture().timeline();
    t.add_measurements([ct(Analyte::L3Vat, 80.0, "2026-12-01")]);
    assert!(t.recent(Analyte::L3Vat).is_none());
    assert!(
        t.skipped
            .iter()
            .any(|s| s.reason.contains("after the index date"))
    );
}

// ---------------------------------------------------------------- diagnoses

#[test]
fn cancer_types_status_and_primary_choice() {
    let t = Fixture::male()
        .push(json!({
            "resourceType": "Condition", "id": "old-breast",
            "clinicalStatus": {"coding": [{"code": "resolved"}]},
            "code": {"coding": [{"system": ICD10CM, "code": "C50.911"}]},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2010-05"
        }))
        .push(json!({
            "resourceType": "Condition", "id": "panc",
            "code": {"coding": [
                {"system": SNOMED, "code": "363346000", "display": "Malignant neoplastic disease"},
                {"system": SNOMED, "code": "363418001", "display": "Malignant tumor of pancreas"}
            ]},
            "subject": {"reference": "Patient/p1"},
            "onsetPeriod": {"start": "2026-02-10"}
        }))
        .push(json!({
            "resourceType": "Condition", "id": "mets",
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "C78.7"}]},
            "subject": {"reference": "Patient/p1"},
            "recordedDate": "2026-06-01"
        }))
        .push(json!({
            "resourceType": "Condition", "id": "wrong",
            "verificationStatus": {"coding": [{"code": "entered-in-error"}]},
            "code": {"coding": [{"system": ICD10CM, "code": "C34.1"}]},
            "subject": {"reference": "Patient/p1"}
        }))
        .push(json!({
            "resourceType": "Condition", "id": "refuted",
            "verificationStatus": {"coding": [{"code": "refuted"}]},
            "code": {"coding": [{"system": ICD10CM, "code": "C16.9"}]},
            "subject": {"reference": "Patient/p1"}
        }))
        .push(json!({
            "resourceType": "Condition", "id": "future",
            "code": {"coding": [{"system": ICD10CM, "code": "C61"}]},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2026-12-01"
        }))
        .push(json!({
            "resourceType": "Condition", "id": "copd",
            "code": {"coding": [{"system": ICD10CM, "code": "J44.9"}]},
            "subject": {"reference": "Patient/p1"}
        }))
        .timeline();
    let ids: Vec<&str> = t.cancers.iter().map(|c| c.source.as_str()).collect();
    // Active primary first, then the active secondary site, then the resolved one.
    assert_eq!(
        ids,
        ["Condition/panc", "Condition/mets", "Condition/old-breast"]
    );
    let primary = t.primary_cancer().unwrap();
    assert_eq!(primary.cancer_type, CancerType::Pancreas);
    assert_eq!(
        primary.code.code, "363418001",
        "specific type beats generic"
    );
    assert_eq!(primary.onset, Some(d("2026-02-10")));
    assert_eq!(primary.onset_from, Some("onsetPeriod.start"));
    assert!(t.cancers[1].secondary);
    assert_eq!(t.cancers[1].onset_from, Some("recordedDate"));
    let breast = &t.cancers[2];
    assert!(!breast.active);
    assert_eq!(breast.onset, Some(d("2010-05-01")));
    for id in ["wrong", "refuted", "future"] {
        assert!(
            t.skipped
                .iter()
                .any(|s| s.source.as_str() == format!("Condition/{id}")),
            "{id} should be skipped"
        );
    }
}

#[test]
fn existing_cachexia_diagnoses_are_detected() {
    let t = Fixture::male()
        .push(json!({
            "resourceType": "Condition", "id": "cx",
            "code": {"coding": [{"system": SNOMED, "code": "788876001",
                "display": "Cachexia due to malignant neoplastic disease"}]},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2026-09-01"
        }))
        .push(json!({
            "resourceType": "Condition", "id": "r64",
            "clinicalStatus": {"coding": [{"code": "resolved"}]},
            "code": {"coding": [{"system": ICD10CM, "code": "R64"}]},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2024-01-01"
        }))
        .timeline();
    assert_eq!(t.cachexia_diagnoses.len(), 2);
    let active = t.active_cachexia_diagnosis().unwrap();
    assert_eq!(active.source.as_str(), "Condition/cx");
    assert!(t.cancers.is_empty(), "a cachexia code is not a cancer");
}

#[test]
fn stage_from_condition_stage_summary() {
    let t = Fixture::male()
        .push(json!({
            "resourceType": "Condition", "id": "lung",
            "code": {"coding": [{"system": ICD10CM, "code": "C34.11"}]},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2026-03-01",
            "stage": [{"summary": {"text": "Stage IIIB"}}]
        }))
        .push(json!({
            "resourceType": "Condition", "id": "crc",
            "code": {"coding": [{"system": ICD10CM, "code": "C18.7"}]},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2026-01-01",
            "stage": [{"summary": {"coding": [{"system": SNOMED, "code": "258228008",
                "display": "Stage 4 (qualifier value)"}]}}]
        }))
        .timeline();
    let lung = &t.cancers[0];
    assert_eq!(lung.cancer_type, CancerType::Lung);
    let stage = lung.stage.as_ref().unwrap();
    assert_eq!(stage.group, Some(StageGroup::III));
    assert_eq!(stage.label.as_deref(), Some("IIIB"));
    assert_eq!(stage.text, "Stage IIIB");
    assert_eq!(stage.basis, StageBasis::ConditionStageSummary);
    let crc = &t.cancers[1];
    assert_eq!(crc.stage.as_ref().unwrap().group, Some(StageGroup::IV));
}

#[test]
fn stage_from_observations_linked_or_for_the_primary() {
    // Stage-group observation linked by focus to the lung cancer; an M1
    // observation unlinked; a later M1 for the breast cancer via assessment.
    let t = Fixture::male()
        .push(json!({
            "resourceType": "Condition", "id": "lung",
            "code": {"coding": [{"system": ICD10CM, "code": "C34.11"}]},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2026-03-01"
        }))
        .push(json!({
            "resourceType": "Condition", "id": "breast",
            "code": {"coding": [{"system": ICD10CM, "code": "C50.9"}]},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2020-03-01",
            "stage": [{"assessment": [{"reference": "Observation/m1"}]}]
        }))
        .push(json!({
            "resourceType": "Observation", "id": "sg", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "21908-9"}]},
            "focus": [{"reference": "Condition/lung"}],
            "effectiveDateTime": "2026-03-05",
            "valueCodeableConcept": {"coding": [{"system": "http://cancerstaging.org", "code": "2A"}],
                "text": "cStage IIA"}
        }))
        .push(json!({
            "resourceType": "Observation", "id": "m1", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "21907-1"}]},
            "effectiveDateTime": "2021-01-01",
            "valueCodeableConcept": {"text": "cM1"}
        }))
        .timeline();
    let lung = t
        .cancers
        .iter()
        .find(|c| c.source.as_str() == "Condition/lung")
        .unwrap();
    let stage = lung.stage.as_ref().unwrap();
    assert_eq!(stage.group, Some(StageGroup::II));
    assert_eq!(stage.label.as_deref(), Some("IIA"));
    assert_eq!(stage.basis, StageBasis::StageGroupObservation);
    assert_eq!(stage.source.as_str(), "Observation/sg");
    assert_eq!(stage.date, Some(d("2026-03-05")));
    let breast = t
        .cancers
        .iter()
        .find(|c| c.source.as_str() == "Condition/breast")
        .unwrap();
    let stage = breast.stage.as_ref().unwrap();
    assert_eq!(stage.group, Some(StageGroup::IV));
    assert_eq!(stage.basis, StageBasis::DistantMetastasisObservation);
    assert_eq!(t.staging_observations.len(), 2);

    // Unlinked stage observation goes to the primary cancer only.
    let t = Fixture::male()
        .cancer("C25.0", "2026-05-01")
        .push(json!({
            "resourceType": "Observation", "id": "sg", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "21902-2"}]},
            "effectiveDateTime": "2026-05-20",
            "valueString": "Stage IV"
        }))
        .timeline();
    let stage = t.primary_cancer().unwrap().stage.as_ref().unwrap();
    assert_eq!(stage.group, Some(StageGroup::IV));
    assert_eq!(stage.text, "Stage IV");
}

#[test]
fn synthea_staged_snomed_codes_imply_a_stage() {
    let t = Fixture::male()
        .push(json!({
            "resourceType": "Condition", "id": "nsclc3",
            "code": {"coding": [{"system": SNOMED, "code": "422968005",
                "display": "Non-small cell carcinoma of lung, TNM stage 3 (disorder)"}]},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2026-01-01"
        }))
        .timeline();
    let c = t.primary_cancer().unwrap();
    assert_eq!(c.cancer_type, CancerType::Lung);
    let stage = c.stage.as_ref().unwrap();
    assert_eq!(stage.group, Some(StageGroup::III));
    assert_eq!(stage.basis, StageBasis::DiagnosisCode);
}

// ------------------------------------------------------------------- notes

#[test]
fn base64_html_note_and_report_text_are_extracted() {
    let html = "<html><body><h1>Oncology progress note</h1>\
        <p>Appetite poor &amp; weight down 4&nbsp;kg.</p><ul><li>Fatigue</li></ul></body></html>";
    let t = Fixture::male()
        .push(json!({
            "resourceType": "DocumentReference", "id": "doc1", "status": "current",
            "type": {"text": "Progress note"},
            "date": "2026-09-28T10:00:00Z",
            "content": [
                {"attachment": {"contentType": "text/html; charset=utf-8", "data": B64.encode(html)}},
                {"attachment": {"contentType": "application/pdf", "url": "Binary/pdf1"}},
                {"attachment": {"contentType": "application/pdf", "data": B64.encode("%PDF-1.4")}}
            ]
        }))
        .push(json!({
            "resourceType": "DocumentReference", "id": "doc-late", "status": "current",
            "date": "2026-10-05T10:00:00Z",
            "content": [{"attachment": {"contentType": "text/plain", "data": B64.encode("later")}}]
        }))
        .push(json!({
            "resourceType": "DiagnosticReport", "id": "rep1", "status": "final",
            "code": {"text": "CT chest/abdomen"},
            "effectiveDateTime": "2026-09-20",
            "conclusion": "Progressive disease. Sarcopenia.",
            "presentedForm": [{"contentType": "text/plain",
                "data": B64.encode("Lost weight.\n\n\nEarly satiety.")}]
        }))
        .timeline();
    let doc = t
        .notes
        .iter()
        .find(|n| n.source.as_str() == "DocumentReference/doc1")
        .unwrap();
    assert_eq!(doc.kind, NoteKind::Document);
    assert_eq!(doc.date, Some(d("2026-09-28")));
    assert_eq!(doc.title.as_deref(), Some("Progress note"));
    assert_eq!(
        doc.text,
        "Oncology progress note\nAppetite poor & weight down 4 kg.\nFatigue"
    );
    let kinds: Vec<(NoteKind, &str)> = t
        .notes
        .iter()
        .filter(|n| n.source.as_str() == "DiagnosticReport/rep1")
        .map(|n| (n.kind, n.text.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                NoteKind::ReportConclusion,
                "Progressive disease. Sarcopenia."
            ),
            (
                NoteKind::ReportPresentedForm,
                "Lost weight.\n\nEarly satiety."
            ),
        ]
    );
    assert_eq!(t.not_retrieved.len(), 2);
    let url_only = t.not_retrieved.iter().find(|n| n.url.is_some()).unwrap();
    assert_eq!(url_only.url.as_deref(), Some("Binary/pdf1"));
    assert!(url_only.reason.contains("not retrieved"));
    assert!(
        t.not_retrieved
            .iter()
            .any(|n| n.reason.contains("application/pdf"))
    );
    assert!(
        !t.notes
            .iter()
            .any(|n| n.source.as_str() == "DocumentReference/doc-late")
    );
    assert!(
        t.skipped
            .iter()
            .any(|s| s.source.as_str() == "DocumentReference/doc-late")
    );
}

// -------------------------------------------------------------- whole thing

#[test]
fn timeline_serialises_with_provenance_and_is_deterministic() {
    let f = Fixture::female()
        .weights(70.0, "2026-04-01", 66.0)
        .height(165.0, "2025-01-01")
        .albumin(3.1, "2026-09-20")
        .counts(6.0, 1.5, "2026-09-20")
        .cancer("C25.1", "2026-03-01");
    let a = f.timeline();
    let b = Timeline::from_record(&f.record(), index_date());
    assert_eq!(a, b);
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["index_date"], "2026-10-02");
    assert_eq!(json["series"]["albumin"][0]["unit"], "g/dL");
    assert_eq!(json["weight"]["six_months"]["months"], 6);
    assert_eq!(json["cancers"][0]["cancer_type"], "pancreas");
    assert!(
        json["nlr"]["inputs"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("Observation/")
    );
}

#[test]
fn empty_record_gives_an_empty_timeline() {
    let t = Timeline::from_record(&crate::fhir::PatientRecord::default(), index_date());
    assert!(t.demographics.age.is_none());
    assert_eq!(t.demographics.notes, ["no Patient resource"]);
    assert!(t.cancers.is_empty() && t.notes.is_empty() && t.series.is_empty());
    assert!(t.weight.current.is_none() && t.bmi.is_none() && t.nlr.is_none());
}
