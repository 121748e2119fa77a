//! Tests of the generator: determinism, FHIR that the clinical layer reads
//! back with the generated values, files on disk, and the cohort's signal.

use serde_json::Value;

use super::*;
use crate::clinical::{Analyte, CancerType, Sex, Timeline};

fn cohort(n: usize, seed: u64) -> Vec<SyntheticPatient> {
    generate(&SynthConfig::new(n, seed).unwrap()).collect()
}

fn resources_of<'a>(p: &'a SyntheticPatient, kind: &str) -> Vec<&'a Value> {
    p.resources
        .iter()
        .filter(|r| r["resourceType"] == kind)
        .collect()
}

fn code_of(r: &Value) -> &str {
    r["code"]["coding"][0]["code"].as_str().unwrap_or_default()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn same_seed_gives_identical_patients_and_a_smaller_cohort_is_a_prefix() {
    let a = cohort(30, 11);
    let b = cohort(30, 11);
    assert_eq!(
        serde_json::to_string(&a.iter().map(|p| &p.resources).collect::<Vec<_>>()).unwrap(),
        serde_json::to_string(&b.iter().map(|p| &p.resources).collect::<Vec<_>>()).unwrap()
    );
    let small = cohort(10, 11);
    assert_eq!(small[..], a[..10]);
    let other = cohort(10, 12);
    assert_ne!(other[0].id, a[0].id);
    assert_ne!(other[0].resources, a[0].resources);
}

#[test]
fn config_rejects_an_empty_cohort() {
    assert!(matches!(
        SynthConfig::new(0, 1),
        Err(SynthError::InvalidConfig(_))
    ));
}

#[test]
fn nothing_is_dated_after_the_index_date() {
    for p in cohort(60, 3) {
        let record = p.record();
        assert!(record.skipped.is_empty(), "{:?}", record.skipped);
        let t = Timeline::from_record(&record, p.index_date);
        let late: Vec<_> = t
            .skipped
            .iter()
            .filter(|s| s.reason.contains("after the index date"))
            .collect();
        assert!(late.is_empty(), "{late:?}");
    }
}

/// Every generated value arrives in the timeline in canonical units.
#[test]
fn the_clinical_layer_reads_back_what_was_generated() {
    let patients = cohort(80, 5);
    let mut saw_lb = false;
    let mut saw_albumin_g_l = false;
    let mut saw_html = false;
    let mut saw_ct = false;
    for p in &patients {
        let record = p.record();
        let t = Timeline::from_record(&record, p.index_date);
        let truth = &p.truth;

        // Demographics.
        let d = &t.demographics;
        assert_eq!(d.age.as_ref().unwrap().years, truth.age);
        assert_eq!(d.sex_for_cutoffs(), Some(truth.sex));
        let race: Vec<&str> = d
            .race
            .as_ref()
            .unwrap()
            .omb
            .iter()
            .map(|c| c.code.as_str())
            .collect();
        let expected: Vec<&str> = truth.race.omb().iter().map(|c| c.0).collect();
        assert_eq!(race, expected);
        assert_eq!(
            d.ethnicity.as_ref().unwrap().omb[0].code,
            truth.ethnicity.omb().0
        );

        // Cancer and stage.
        let cancer = t.primary_cancer().expect("a cancer diagnosis");
        assert_eq!(cancer.cancer_type, truth.cancer_type);
        assert_eq!(cancer.onset, Some(truth.diagnosis_date));
        match (p.observed.stage_recorded, cancer.stage.as_ref()) {
            (true, Some(s)) => assert_eq!(s.group, Some(truth.stage)),
            (false, None) => {}
            other => panic!(
                "stage recorded {:?} but read {:?}",
                p.observed.stage_recorded, other.1
            ),
        }

        // Weights: every weight Observation becomes a kg measurement equal to
        // the recorded value after conversion.
        let weights = resources_of(p, "Observation")
            .into_iter()
            .filter(|r| code_of(r) == "29463-7")
            .collect::<Vec<_>>();
        assert_eq!(t.series(Analyte::BodyWeight).len(), weights.len());
        for w in &weights {
            let q = &w["valueQuantity"];
            let value = q["value"].as_f64().unwrap();
            let kg = match q["code"].as_str().unwrap() {
                "kg" => value,
                "[lb_av]" => {
                    saw_lb = true;
                    value * 0.453_592_37
                }
                "g" => value / 1000.0,
                other => panic!("weight unit {other}"),
            };
            let id = w["id"].as_str().unwrap();
            let m = t
                .series(Analyte::BodyWeight)
                .iter()
                .find(|m| m.source.as_str() == format!("Observation/{id}"))
                .unwrap();
            assert!(close(m.value, kg, 1e-9));
            // The measurement is near the true weight that day.
            let day = (m.date - p.index_date).num_days() as f64;
            assert!(
                close(m.value, truth.weight_at(day), 5.0),
                "{} vs {}",
                m.value,
                truth.weight_at(day)
            );
        }

        // Albumin in g/dL whatever the recorded unit.
        for a in resources_of(p, "Observation")
            .into_iter()
            .filter(|r| matches!(code_of(r), "1751-7" | "61151-7"))
        {
            let q = &a["valueQuantity"];
            let recorded = q["value"].as_f64().unwrap();
            let expected = if q["code"] == "g/L" {
                saw_albumin_g_l = true;
                recorded / 10.0
            } else {
                recorded
            };
            let id = a["id"].as_str().unwrap();
            let m = t
                .series(Analyte::Albumin)
                .iter()
                .find(|m| m.source.as_str() == format!("Observation/{id}"))
                .unwrap();
            assert!(close(m.value, expected, 1e-9));
            assert!((1.0..=6.0).contains(&m.value));
        }
        // Lab counts come through in 10*9/L (plausible absolute counts).
        for m in t.series(Analyte::Neutrophils) {
            assert!((0.3..60.0).contains(&m.value), "{}", m.value);
        }

        // Notes: every DocumentReference is read as text.
        let docs = resources_of(p, "DocumentReference");
        assert_eq!(t.notes.len(), docs.len());
        assert_eq!(p.observed.notes, docs.len());
        for (note, doc) in t.notes.iter().zip(&docs) {
            assert!(note.text.contains("HPI:"), "{}", note.text);
            assert!(note.text.contains(&format!("{}-year-old", truth.age)));
            assert!(!note.text.contains('<'), "HTML left in {}", note.text);
            if doc["content"][0]["attachment"]["contentType"] == "text/html" {
                saw_html = true;
            }
        }

        // Body composition: SMI (measured or derived from area / height²).
        if p.observed.has_ct {
            saw_ct = true;
            assert_eq!(resources_of(p, "ImagingStudy").len(), 1);
            let smi = t.smi.as_ref().expect("SMI from the CT");
            assert!(
                close(smi.value, truth.smi_at(0.0), 12.0),
                "{} vs {}",
                smi.value,
                truth.smi_at(0.0)
            );
            assert!(t.recent(Analyte::L3MuscleHu).is_some());
            assert!(t.recent(Analyte::L3Vat).is_some());
            assert!(t.recent(Analyte::L3Sat).is_some());
        } else {
            assert!(t.smi.is_none());
            assert!(resources_of(p, "ImagingStudy").is_empty());
        }
        if truth.cancer_type == CancerType::Prostate {
            assert_eq!(truth.sex, Sex::Male);
        }
    }
    assert!(saw_lb && saw_albumin_g_l && saw_html && saw_ct);
}

#[test]
fn imaging_studies_carry_dicom_uids_and_body_composition_points_at_them() {
    let p = cohort(40, 9)
        .into_iter()
        .find(|p| p.observed.has_ct)
        .unwrap();
    let study = resources_of(&p, "ImagingStudy")[0];
    let uid = study["identifier"][0]["value"].as_str().unwrap();
    let digits = uid.strip_prefix("urn:oid:2.25.").unwrap();
    assert!(digits.chars().all(|c| c.is_ascii_digit()) && digits.len() <= 39);
    assert!(
        study["series"][0]["uid"]
            .as_str()
            .unwrap()
            .starts_with("2.25.")
    );
    let reference = format!("ImagingStudy/{}", study["id"].as_str().unwrap());
    let body: Vec<_> = resources_of(&p, "Observation")
        .into_iter()
        .filter(|o| o["code"]["coding"][0]["system"] == crate::clinical::codes::BODY_COMPOSITION)
        .collect();
    assert!(body.len() >= 4);
    assert!(
        body.iter()
            .all(|o| o["derivedFrom"][0]["reference"] == reference.as_str())
    );
}

#[test]
fn written_cohort_is_reproducible_and_reads_back_grouped_by_patient() {
    let cfg = SynthConfig::new(25, 42).unwrap();
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let summary = write_cohort(&cfg, dir_a.path()).unwrap();
    write_cohort(&cfg, dir_b.path()).unwrap();
    for file in [
        "labels.csv",
        "manifest.json",
        "ndjson/Patient.ndjson",
        "ndjson/Observation.ndjson",
        "ndjson/DocumentReference.ndjson",
    ] {
        let a = std::fs::read(dir_a.path().join(file)).unwrap();
        let b = std::fs::read(dir_b.path().join(file)).unwrap();
        assert_eq!(a, b, "{file} differs between two runs");
    }
    assert_eq!(summary.overall.patients, 25);
    let mut bundles: Vec<_> = std::fs::read_dir(dir_a.path().join("bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    bundles.sort();
    assert_eq!(bundles.len(), 25);
    for name in &bundles {
        let a = std::fs::read(dir_a.path().join("bundles").join(name)).unwrap();
        let b = std::fs::read(dir_b.path().join("bundles").join(name)).unwrap();
        assert_eq!(a, b, "bundle {name:?} differs between two runs");
    }

    let data = read_cohort(dir_a.path()).unwrap();
    assert_eq!(data.patients.len(), 25);
    assert_eq!(data.unassigned, 0);
    let labels = data.labels.as_ref().unwrap();
    assert_eq!(labels.len(), 25);
    let generated: Vec<SyntheticPatient> = generate(&cfg).collect();
    for (p, g) in data.patients.iter().zip(&generated) {
        assert_eq!(p.patient_id, g.id);
        assert_eq!(p.resources[0]["resourceType"], "Patient");
        // Same resources, possibly in a different order (by type).
        assert_eq!(p.resources.len(), g.resources.len());
        let record = p.record();
        assert_eq!(record.resource_count(), g.resources.len());
    }
    for (row, g) in labels.iter().zip(&generated) {
        assert_eq!(*row, g.label_row());
    }

    // Bundles: transactions whose references point at urn:uuid fullUrls.
    let bundle: Value = serde_json::from_slice(
        &std::fs::read(
            dir_a
                .path()
                .join("bundles")
                .join(format!("{}.json", generated[0].id)),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(bundle["type"], "transaction");
    let entries = bundle["entry"].as_array().unwrap();
    let full_urls: Vec<&str> = entries
        .iter()
        .map(|e| e["fullUrl"].as_str().unwrap())
        .collect();
    for e in entries {
        assert_eq!(e["request"]["method"], "PUT");
        if let Some(r) = e["resource"]["subject"]["reference"].as_str() {
            assert!(full_urls.contains(&r), "{r} is not a fullUrl in the bundle");
        }
    }
    // A bundle loads into the same record as the NDJSON.
    let mut record = crate::fhir::PatientRecord::default();
    record.add_bundle_or_resource("bundle", bundle);
    assert_eq!(record.resource_count(), generated[0].resources.len());
}

#[test]
fn reader_groups_a_bulk_export_by_subject_reference() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Observation.ndjson"),
        concat!(
            r#"{"resourceType":"Observation","id":"o1","subject":{"reference":"https://ehr.example/fhir/Patient/b/_history/2"}}"#,
            "\n\n",
            r#"{"resourceType":"Observation","id":"o2","subject":{"reference":"Patient/a"}}"#,
            "\n",
            r#"{"resourceType":"Observation","id":"o3"}"#,
            "\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("Patient.ndjson"),
        r#"{"resourceType":"Patient","id":"a"}"#,
    )
    .unwrap();
    let data = read_cohort(dir.path()).unwrap();
    assert!(data.labels.is_none());
    assert_eq!(data.unassigned, 1);
    let ids: Vec<&str> = data
        .patients
        .iter()
        .map(|p| p.patient_id.as_str())
        .collect();
    assert_eq!(ids, ["b", "a"]);
    assert_eq!(data.patients[1].resources[0]["resourceType"], "Patient");
    assert_eq!(data.patients[1].resources.len(), 2);

    std::fs::write(dir.path().join("bad.ndjson"), "{not json\n").unwrap();
    let err = read_cohort(dir.path()).unwrap_err();
    assert!(err.to_string().contains("bad.ndjson line 1"), "{err}");
}

#[test]
fn splits_are_stable_and_roughly_60_10_10_20() {
    assert_eq!(Split::assign(1, "x"), Split::assign(1, "x"));
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..5000 {
        *counts
            .entry(Split::assign(7, &format!("p{i}")))
            .or_insert(0) += 1;
    }
    let share = |s| f64::from(counts[&s]) / 5000.0;
    assert!(close(share(Split::Train), 0.6, 0.03));
    assert!(close(share(Split::Validation), 0.1, 0.02));
    assert!(close(share(Split::Calibration), 0.1, 0.02));
    assert!(close(share(Split::Test), 0.2, 0.03));
}

/// The cohort is neither trivial nor noise: each modality carries partial
/// signal, the classic index is clearly imperfect, and no single observed
/// feature separates the classes.
#[test]
fn cohort_signal_is_partial_in_every_modality() {
    let patients = cohort(1500, 2026);
    let rows = stats::observed_rows(&patients);
    let n = rows.len() as f64;
    let prevalence = rows.iter().filter(|r| r.label).count() as f64 / n;
    assert!(
        (0.28..=0.45).contains(&prevalence),
        "prevalence {prevalence}"
    );

    let rate = |f: &dyn Fn(&stats::ObservedRow) -> bool| {
        let v: Vec<_> = rows.iter().filter(|r| f(r)).collect();
        v.iter().filter(|r| r.label).count() as f64 / v.len().max(1) as f64
    };
    let pancreas = rate(&|r| r.cancer_type == "pancreas");
    let breast = rate(&|r| r.cancer_type == "breast");
    assert!(
        pancreas > 2.0 * breast,
        "pancreas {pancreas} breast {breast}"
    );
    // Notes and labs carry signal.
    assert!(rate(&|r| r.notes.symptoms[0] > 0.0) > rate(&|r| r.notes.symptoms[0] < 0.0) + 0.15);
    let low_alb = rate(&|r| r.albumin.is_some_and(|a| a < 3.6));
    let high_alb = rate(&|r| r.albumin.is_some_and(|a| a >= 4.2));
    assert!(low_alb > high_alb + 0.15, "{low_alb} vs {high_alb}");

    // Fearon on the observed data is clearly imperfect.
    let positives = rows.iter().filter(|r| r.label).count() as f64;
    let detected = rows
        .iter()
        .filter(|r| r.label && r.fearon == crate::clinical::FearonStatus::Cachexia)
        .count() as f64;
    let sensitivity = detected / positives;
    assert!(sensitivity < 0.75, "Fearon sensitivity {sensitivity}");

    // No single observed feature gives AUROC > 0.9.
    let single: [fn(&stats::ObservedRow) -> Option<f64>; 6] = [
        |r| r.weight_loss,
        |r| r.albumin,
        |r| r.crp,
        |r| r.nlr,
        |r| r.smi,
        |r| r.notes.has_notes.then(|| r.notes.score()),
    ];
    for f in single {
        let scored: Vec<(f64, bool)> = rows.iter().filter_map(|r| Some((f(r)?, r.label))).collect();
        let a = stats::auroc(&scored).unwrap();
        assert!(a.max(1.0 - a) < 0.9, "single-feature AUROC {a}");
    }
    // Adding modalities helps a plain logistic regression overall.
    let steps = stats::ablation(&rows);
    assert!(steps[3].auroc > steps[0].auroc + 0.03, "{steps:?}");
}

#[test]
fn auroc_matches_hand_computed_values() {
    assert_eq!(stats::auroc(&[(0.1, false), (0.9, true)]), Some(1.0));
    assert_eq!(stats::auroc(&[(0.5, false), (0.5, true)]), Some(0.5));
    assert_eq!(
        stats::auroc(&[(0.1, false), (0.4, true), (0.35, false), (0.8, true)]),
        Some(1.0)
    );
    assert_eq!(
        stats::auroc(&[(0.1, true), (0.4, false), (0.35, true), (0.8, false)]),
        Some(0.0)
    );
    assert_eq!(stats::auroc(&[(0.1, true)]), None);
}

#[test]
fn the_note_reader_tells_negation_from_affirmation() {
    let s = stats::NoteSignals::read(&[
        "HPI: Denies early satiety. Reports poor appetite for 2 months. His wife mentions that her own appetite has been poor.",
    ]);
    assert_eq!(s.symptoms[0], 1.0);
    assert_eq!(s.symptoms[1], -1.0);
    let s = stats::NoteSignals::read(&["Appetite is good. Possibly some change in taste."]);
    assert_eq!(s.symptoms[0], -1.0);
    assert_eq!(s.symptoms[3], 0.5);
}
