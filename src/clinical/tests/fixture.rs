//! The synthetic fixture bundle `fixtures/fhir/cachexia-pancreas-bundle.json`
//! end to end: record → timeline → classic indices → risk.

use super::{close, d, index_date};
use crate::clinical::{
    Analyte, AttenuationStatus, CancerType, ClassicAssessment, Cutoffs, CxiStatus, FearonStatus,
    GlimStatus, RiskLevel, SarcopeniaStatus, Sex, StageGroup, Timeline,
};
use crate::fhir::PatientRecord;

const BUNDLE: &str = include_str!("../../../fixtures/fhir/cachexia-pancreas-bundle.json");

fn timeline() -> (PatientRecord, Timeline) {
    let mut record = PatientRecord::default();
    record.add_bundle_or_resource("prefetch.patient", serde_json::from_str(BUNDLE).unwrap());
    let t = Timeline::from_record(&record, index_date());
    (record, t)
}

#[test]
fn fixture_bundle_builds_a_complete_timeline() {
    let (record, t) = timeline();
    // The MedicationRequest is not a type we read.
    assert_eq!(record.skipped.len(), 1);
    assert_eq!(t.demographics.age.as_ref().unwrap().years, 68);
    assert_eq!(t.demographics.sex_for_cutoffs(), Some(Sex::Female));
    assert_eq!(t.demographics.race.as_ref().unwrap().omb[0].code, "2054-5");
    let cancer = t.primary_cancer().unwrap();
    assert_eq!(cancer.cancer_type, CancerType::Pancreas);
    assert_eq!(cancer.stage.as_ref().unwrap().group, Some(StageGroup::IV));

    let w = &t.weight;
    assert_eq!(
        w.current.as_ref().unwrap().source.as_str(),
        "Observation/wt-0930"
    );
    let one = w.one_month.as_ref().unwrap();
    assert_eq!(one.reference.source.as_str(), "Observation/wt-0904");
    assert!(close(one.reference.value, 137.4 * 0.453_592_37));
    assert_eq!(
        w.three_months.as_ref().unwrap().reference.date,
        d("2026-07-02")
    );
    assert!(close(w.six_months.as_ref().unwrap().loss_percent, 10.0));
    assert!(w.twelve_months.is_none());

    assert!(close(t.bmi.as_ref().unwrap().value, 61.2 / (1.62 * 1.62)));
    assert!(t.bmi.as_ref().unwrap().derived);
    assert!(close(t.nlr.as_ref().unwrap().value, 8.0));
    assert!(close(t.recent(Analyte::Albumin).unwrap().value, 2.9));
    assert!(close(
        t.recent(Analyte::Creatinine).unwrap().value,
        61.9 / 88.42
    ));
    assert!(close(t.recent(Analyte::Crp).unwrap().value, 24.0));
    assert!(close(t.recent(Analyte::Ecog).unwrap().value, 2.0));
    assert!(close(t.smi.as_ref().unwrap().value, 36.1));
    assert!(close(t.recent(Analyte::L3Vat).unwrap().value, 61.0));
    assert_eq!(t.ignored_observations, 1);
    assert!(t.skipped.is_empty(), "{:?}", t.skipped);
    assert_eq!(t.notes.len(), 1);
    assert!(t.notes[0].text.contains("early satiety"));
    assert_eq!(t.notes[0].date, Some(d("2026-09-29")));
}

#[test]
fn fixture_bundle_is_high_risk_by_every_classic_index() {
    let (_, t) = timeline();
    let c = Cutoffs::default();
    let a = ClassicAssessment::compute(&t, &c);
    assert_eq!(a.fearon.status, FearonStatus::Cachexia);
    assert_eq!(a.sarcopenia_prado.status, SarcopeniaStatus::Sarcopenic);
    assert_eq!(
        a.sarcopenia_martin.muscle_mass.status,
        SarcopeniaStatus::Sarcopenic
    );
    assert_eq!(
        a.sarcopenia_martin.attenuation.status,
        AttenuationStatus::Low
    );
    assert_eq!(a.cxi.status, CxiStatus::Low);
    assert!(close(a.cxi.value.unwrap(), 36.1 * 2.9 / 8.0));
    assert_eq!(a.mcxi.status, CxiStatus::Low);
    assert!(close(
        a.mcxi.value.unwrap(),
        2.9 / 8.0 / (18.0 / (61.9 / 88.42))
    ));
    assert_eq!(a.glim.status, GlimStatus::Malnutrition);
    let risk = a.risk(&t, &c);
    assert_eq!(risk.level, RiskLevel::High);
    assert!(
        risk.reasons[0].contains("Observation/wt-0403"),
        "{}",
        risk.reasons[0]
    );
}
