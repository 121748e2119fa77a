//! Classic indices at every threshold edge: exactly at the cut-off, just
//! below and just above, per sex and per BMI / age band.

use super::{Fixture, close};
use crate::clinical::indices::cutoffs::MuscleDefinition;
use crate::clinical::indices::{cxi, fearon, glim, sarcopenia};
use crate::clinical::{
    AttenuationStatus, ClassicAssessment, Cutoffs, CxiStatus, FearonStatus, GlimStatus, RiskLevel,
    SarcopeniaStatus,
};

const CURRENT: &str = "2026-10-01";
const SIX_MONTHS_BEFORE: &str = "2026-04-01";

fn fearon_status(f: &Fixture) -> FearonStatus {
    fearon::fearon(&f.timeline(), &Cutoffs::default()).status
}

/// Male, 6-month loss from 100 kg to `end`, BMI 25, SMI 60 (not sarcopenic).
fn decided_male(end: f64) -> Fixture {
    Fixture::male()
        .weights(100.0, SIX_MONTHS_BEFORE, end)
        .bmi(25.0, CURRENT)
        .smi(60.0, "2026-09-01")
}

// ------------------------------------------------------------------ Fearon

#[test]
fn fearon_weight_loss_of_exactly_five_percent_is_not_more_than_five() {
    assert_eq!(
        fearon_status(&decided_male(95.0)),
        FearonStatus::NotCachexia
    );
    assert_eq!(fearon_status(&decided_male(94.99)), FearonStatus::Cachexia);
    assert_eq!(
        fearon_status(&decided_male(95.01)),
        FearonStatus::NotCachexia
    );
}

#[test]
fn fearon_low_bmi_edges_with_small_loss() {
    let with_bmi = |bmi: f64, end: f64| {
        Fixture::male()
            .weights(100.0, SIX_MONTHS_BEFORE, end)
            .bmi(bmi, CURRENT)
            .smi(60.0, "2026-09-01")
    };
    // Loss 3 %: BMI decides.
    assert_eq!(
        fearon_status(&with_bmi(19.99, 97.0)),
        FearonStatus::Cachexia
    );
    assert_eq!(
        fearon_status(&with_bmi(20.0, 97.0)),
        FearonStatus::NotCachexia
    );
    assert_eq!(
        fearon_status(&with_bmi(20.01, 97.0)),
        FearonStatus::NotCachexia
    );
    // BMI 19: the loss must be more than 2 %.
    assert_eq!(
        fearon_status(&with_bmi(19.0, 98.0)),
        FearonStatus::NotCachexia
    );
    assert_eq!(
        fearon_status(&with_bmi(19.0, 97.99)),
        FearonStatus::Cachexia
    );
    assert_eq!(
        fearon_status(&with_bmi(19.0, 98.01)),
        FearonStatus::NotCachexia
    );
}

#[test]
fn fearon_sarcopenia_edges_per_sex() {
    let with_smi = |f: Fixture, smi: f64| {
        f.weights(100.0, SIX_MONTHS_BEFORE, 97.0)
            .bmi(25.0, CURRENT)
            .smi(smi, "2026-09-01")
    };
    // Consensus CT cut-offs: men < 55, women < 39 cm²/m².
    assert_eq!(
        fearon_status(&with_smi(Fixture::male(), 55.0)),
        FearonStatus::NotCachexia
    );
    assert_eq!(
        fearon_status(&with_smi(Fixture::male(), 54.99)),
        FearonStatus::Cachexia
    );
    assert_eq!(
        fearon_status(&with_smi(Fixture::male(), 55.01)),
        FearonStatus::NotCachexia
    );
    assert_eq!(
        fearon_status(&with_smi(Fixture::female(), 39.0)),
        FearonStatus::NotCachexia
    );
    assert_eq!(
        fearon_status(&with_smi(Fixture::female(), 38.99)),
        FearonStatus::Cachexia
    );
    assert_eq!(
        fearon_status(&with_smi(Fixture::female(), 39.01)),
        FearonStatus::NotCachexia
    );
    // Sex unknown: decided only where both sexes agree.
    let unknown = || Fixture::patient("unknown", "1960-01-01");
    assert_eq!(
        fearon_status(&with_smi(unknown(), 45.0)),
        FearonStatus::Unknown
    );
    assert_eq!(
        fearon_status(&with_smi(unknown(), 38.0)),
        FearonStatus::Cachexia
    );
    assert_eq!(
        fearon_status(&with_smi(unknown(), 55.0)),
        FearonStatus::NotCachexia
    );
}

#[test]
fn fearon_is_unknown_not_no_when_inputs_are_missing() {
    // 3 % loss, no BMI (no height), no SMI: cannot rule out either depletion criterion.
    let r = fearon::fearon(
        &Fixture::male()
            .weights(100.0, SIX_MONTHS_BEFORE, 97.0)
            .timeline(),
        &Cutoffs::default(),
    );
    assert_eq!(r.status, FearonStatus::Unknown);
    assert!(r.reason.contains("cannot tell"), "{}", r.reason);
    assert_eq!(r.criteria[0].met, Some(false));
    assert_eq!(r.criteria[1].met, None);
    assert_eq!(r.criteria[2].met, None);

    // 1 % loss: not cachexia whatever BMI and muscle are.
    let f = Fixture::male().weights(100.0, SIX_MONTHS_BEFORE, 99.0);
    assert_eq!(fearon_status(&f), FearonStatus::NotCachexia);

    // No weight history at all.
    let r = fearon::fearon(&Fixture::male().timeline(), &Cutoffs::default());
    assert_eq!(r.status, FearonStatus::Unknown);
    assert!(r.reason.contains("no body weight"), "{}", r.reason);
    assert!(r.inputs.is_empty());
}

#[test]
fn fearon_short_windows_can_confirm_but_not_rule_out() {
    // Only a 1-month window: 6 % loss is cachexia.
    let f = Fixture::male().weights(100.0, "2026-09-01", 94.0);
    assert_eq!(fearon_status(&f), FearonStatus::Cachexia);
    // 1 % over one month cannot exclude > 5 % over six.
    let f = Fixture::male().weights(100.0, "2026-09-01", 99.0);
    let r = fearon::fearon(&f.timeline(), &Cutoffs::default());
    assert_eq!(r.status, FearonStatus::Unknown);
    assert!(r.reason.contains("about 6 months"), "{}", r.reason);
}

#[test]
fn fearon_cites_the_measurements_it_used() {
    let r = fearon::fearon(&decided_male(94.0).timeline(), &Cutoffs::default());
    assert_eq!(r.status, FearonStatus::Cachexia);
    assert!(
        r.reason.contains("weight loss 6 % over 6 months"),
        "{}",
        r.reason
    );
    assert!(
        r.reason.contains("100 kg on 2026-04-01 (Observation/o1)"),
        "{}",
        r.reason
    );
    let loss = &r.inputs[0];
    assert_eq!(loss.name, "weight_loss_within_6_months");
    assert!(close(loss.value, 6.0));
    assert_eq!(loss.sources.len(), 2);
}

// ------------------------------------------------------------------- Prado

fn prado_of(f: Fixture, smi: f64) -> (SarcopeniaStatus, Option<f64>) {
    let r = sarcopenia::prado(&f.smi(smi, "2026-09-01").timeline(), &Cutoffs::default());
    (r.status, r.cutoff)
}

#[test]
fn prado_edges_per_sex() {
    use SarcopeniaStatus::*;
    assert_eq!(prado_of(Fixture::male(), 52.4), (NotSarcopenic, Some(52.4)));
    assert_eq!(prado_of(Fixture::male(), 52.39).0, Sarcopenic);
    assert_eq!(prado_of(Fixture::male(), 52.41).0, NotSarcopenic);
    assert_eq!(
        prado_of(Fixture::female(), 38.5),
        (NotSarcopenic, Some(38.5))
    );
    assert_eq!(prado_of(Fixture::female(), 38.49).0, Sarcopenic);
    assert_eq!(prado_of(Fixture::female(), 38.51).0, NotSarcopenic);
    let unknown = || Fixture::patient("unknown", "1960-01-01");
    assert_eq!(prado_of(unknown(), 38.49), (Sarcopenic, None));
    assert_eq!(prado_of(unknown(), 52.4).0, NotSarcopenic);
    assert_eq!(prado_of(unknown(), 45.0).0, Unknown);
    let r = sarcopenia::prado(&Fixture::male().timeline(), &Cutoffs::default());
    assert_eq!(r.status, Unknown);
    assert!(r.reason.contains("no L3 skeletal muscle index"));
}

#[test]
fn prado_uses_smi_derived_from_muscle_area() {
    let f = Fixture::male()
        .quantity(
            crate::clinical::codes::BODY_COMPOSITION,
            "l3-sma",
            150.0,
            "cm2",
            "2026-09-01",
        )
        .height(170.0, "2026-01-01");
    let r = sarcopenia::prado(&f.timeline(), &Cutoffs::default());
    assert_eq!(r.status, SarcopeniaStatus::Sarcopenic); // 150 / 1.7² = 51.9
    assert!(r.inputs[0].derived);
    assert_eq!(r.inputs[0].sources.len(), 2);
}

// ------------------------------------------------------------------ Martin

fn martin_mass(f: Fixture, bmi: Option<f64>, smi: f64) -> SarcopeniaStatus {
    let f = match bmi {
        Some(b) => f.bmi(b, CURRENT),
        None => f,
    };
    sarcopenia::martin(&f.smi(smi, "2026-09-01").timeline(), &Cutoffs::default())
        .muscle_mass
        .status
}

#[test]
fn martin_muscle_mass_edges_per_sex_and_bmi_band() {
    use SarcopeniaStatus::*;
    let m = Fixture::male;
    // Men, BMI < 25: SMI < 43.
    assert_eq!(martin_mass(m(), Some(24.99), 43.0), NotSarcopenic);
    assert_eq!(martin_mass(m(), Some(24.99), 42.99), Sarcopenic);
    assert_eq!(martin_mass(m(), Some(24.99), 43.01), NotSarcopenic);
    // Men, BMI exactly 25 is the ≥ 25 band: SMI < 53.
    assert_eq!(martin_mass(m(), Some(25.0), 53.0), NotSarcopenic);
    assert_eq!(martin_mass(m(), Some(25.0), 52.99), Sarcopenic);
    assert_eq!(martin_mass(m(), Some(25.01), 52.99), Sarcopenic);
    assert_eq!(martin_mass(m(), Some(25.01), 53.01), NotSarcopenic);
    // Men, BMI unknown: only where both bands agree.
    assert_eq!(martin_mass(m(), None, 42.0), Sarcopenic);
    assert_eq!(martin_mass(m(), None, 53.0), NotSarcopenic);
    assert_eq!(martin_mass(m(), None, 50.0), Unknown);
    // Women: SMI < 41 whatever the BMI.
    let w = Fixture::female;
    assert_eq!(martin_mass(w(), None, 41.0), NotSarcopenic);
    assert_eq!(martin_mass(w(), None, 40.99), Sarcopenic);
    assert_eq!(martin_mass(w(), Some(30.0), 41.01), NotSarcopenic);
}

fn martin_hu(bmi: Option<f64>, hu: f64) -> AttenuationStatus {
    let f = Fixture::female();
    let f = match bmi {
        Some(b) => f.bmi(b, CURRENT),
        None => f,
    };
    sarcopenia::martin(
        &f.muscle_hu(hu, "2026-09-01").timeline(),
        &Cutoffs::default(),
    )
    .attenuation
    .status
}

#[test]
fn martin_muscle_attenuation_edges_per_bmi_band() {
    use AttenuationStatus::*;
    assert_eq!(martin_hu(Some(24.99), 41.0), Normal);
    assert_eq!(martin_hu(Some(24.99), 40.99), Low);
    assert_eq!(martin_hu(Some(24.99), 41.01), Normal);
    assert_eq!(martin_hu(Some(25.0), 33.0), Normal);
    assert_eq!(martin_hu(Some(25.0), 32.99), Low);
    assert_eq!(martin_hu(Some(25.0), 35.0), Normal);
    assert_eq!(martin_hu(None, 35.0), Unknown);
    assert_eq!(martin_hu(None, 32.0), Low);
    assert_eq!(martin_hu(None, 41.0), Normal);
    let r = sarcopenia::martin(&Fixture::female().timeline(), &Cutoffs::default());
    assert_eq!(r.attenuation.status, Unknown);
}

// --------------------------------------------------------------------- CXI

fn cxi_of(f: Fixture, albumin: f64, cutoffs: &Cutoffs) -> (CxiStatus, Option<f64>) {
    // SMI 50 × albumin / NLR 5 (5 / 1): CXI = 10 × albumin.
    let t = f
        .smi(50.0, "2026-09-01")
        .albumin(albumin, "2026-09-20")
        .counts(5.0, 1.0, "2026-09-20")
        .timeline();
    let r = cxi::cxi(&t, cutoffs);
    (r.status, r.value)
}

#[test]
fn cxi_edges_at_the_default_cutoff() {
    let c = Cutoffs::default();
    let (status, value) = cxi_of(Fixture::male(), 3.5, &c);
    assert_eq!(status, CxiStatus::NotLow);
    assert!(close(value.unwrap(), 35.0));
    assert_eq!(cxi_of(Fixture::male(), 3.4999, &c).0, CxiStatus::Low);
    assert_eq!(cxi_of(Fixture::male(), 3.5001, &c).0, CxiStatus::NotLow);
}

#[test]
fn cxi_cutoffs_are_configurable_per_sex() {
    let mut c = Cutoffs::default();
    c.cxi.low.male = 35.0;
    c.cxi.low.female = 30.0;
    assert_eq!(cxi_of(Fixture::female(), 3.2, &c).0, CxiStatus::NotLow);
    assert_eq!(cxi_of(Fixture::female(), 3.0, &c).0, CxiStatus::NotLow);
    assert_eq!(cxi_of(Fixture::female(), 2.9999, &c).0, CxiStatus::Low);
    assert_eq!(cxi_of(Fixture::male(), 3.2, &c).0, CxiStatus::Low);
    let unknown = || Fixture::patient("unknown", "1960-01-01");
    assert_eq!(cxi_of(unknown(), 3.2, &c).0, CxiStatus::Unknown);
    assert_eq!(cxi_of(unknown(), 2.9, &c).0, CxiStatus::Low);
}

#[test]
fn cxi_is_unknown_with_the_missing_inputs_named() {
    let t = Fixture::male().smi(50.0, "2026-09-01").timeline();
    let r = cxi::cxi(&t, &Cutoffs::default());
    assert_eq!(r.status, CxiStatus::Unknown);
    assert!(r.reason.contains("albumin"), "{}", r.reason);
    assert!(r.reason.contains("neutrophil"), "{}", r.reason);
    assert_eq!(r.inputs.len(), 1, "the SMI that was there is still cited");
}

// -------------------------------------------------------------------- mCXI

fn mcxi_of(albumin: f64) -> (CxiStatus, f64) {
    // NLR 2, BUN 15, creatinine 1: mCXI = albumin / 30.
    let t = Fixture::male()
        .albumin(albumin, "2026-09-20")
        .counts(4.0, 2.0, "2026-09-20")
        .bun(15.0, "2026-09-20")
        .creatinine(1.0, "2026-09-20")
        .timeline();
    let r = cxi::mcxi(&t, &Cutoffs::default());
    (r.status, r.value.unwrap_or(f64::NAN))
}

#[test]
fn mcxi_edges_at_0_113() {
    let (status, value) = mcxi_of(3.39);
    assert!(close(value, 0.113));
    assert_eq!(
        status,
        CxiStatus::NotLow,
        "exactly at the cut-off is not low"
    );
    assert_eq!(mcxi_of(3.38).0, CxiStatus::Low);
    assert_eq!(mcxi_of(3.40).0, CxiStatus::NotLow);
}

#[test]
fn mcxi_is_the_same_from_si_units() {
    let conventional = Fixture::male()
        .albumin(3.38, "2026-09-20")
        .counts(4.0, 2.0, "2026-09-20")
        .bun(14.005, "2026-09-20")
        .creatinine(1.0, "2026-09-20")
        .timeline();
    let si = Fixture::male()
        .loinc("1751-7", 33.8, "g/L", "2026-09-20")
        .counts(4.0, 2.0, "2026-09-20")
        .loinc("3094-0", 5.0, "mmol/L", "2026-09-20")
        .loinc("14682-9", 88.42, "umol/L", "2026-09-20")
        .timeline();
    let a = cxi::mcxi(&conventional, &Cutoffs::default());
    let b = cxi::mcxi(&si, &Cutoffs::default());
    assert!(close(a.value.unwrap(), b.value.unwrap()));
    assert!(close(a.value.unwrap(), 3.38 / 2.0 / 14.005));
    assert_eq!(a.status, b.status);
    assert_eq!(b.inputs.len(), 4);
}

// -------------------------------------------------------------------- GLIM

fn glim_status(f: &Fixture, cutoffs: &Cutoffs) -> GlimStatus {
    glim::glim(&f.timeline(), cutoffs).status
}

/// Active cancer, not sarcopenic, BMI `bmi`, weights `w0` (6 months ago) → `w1`.
fn glim_patient(gender: &str, birth: &str, bmi: f64, w0: f64, w1: f64) -> Fixture {
    Fixture::patient(gender, birth)
        .weights(w0, SIX_MONTHS_BEFORE, w1)
        .bmi(bmi, CURRENT)
        .smi(60.0, "2026-09-01")
        .cancer("C25.0", "2026-01-01")
}

#[test]
fn glim_weight_loss_edges() {
    let c = Cutoffs::default();
    let p = |w1| glim_patient("male", "1966-01-01", 25.0, 100.0, w1);
    assert_eq!(glim_status(&p(95.0), &c), GlimStatus::NoMalnutrition);
    assert_eq!(glim_status(&p(94.99), &c), GlimStatus::Malnutrition);
    assert_eq!(glim_status(&p(95.01), &c), GlimStatus::NoMalnutrition);
}

#[test]
fn glim_loss_beyond_six_months_edges() {
    let c = Cutoffs::default();
    // Stable over the last 6 months, 12-month loss from 100 kg.
    let p = |w: f64| glim_patient("male", "1966-01-01", 25.0, w, w).weight(100.0, "2025-10-01");
    assert_eq!(glim_status(&p(90.0), &c), GlimStatus::NoMalnutrition);
    assert_eq!(glim_status(&p(89.99), &c), GlimStatus::Malnutrition);
    assert_eq!(glim_status(&p(90.01), &c), GlimStatus::NoMalnutrition);
}

#[test]
fn glim_low_bmi_edges_per_age_band() {
    let c = Cutoffs::default();
    // Born 1957-01-01: 69 on the index date; born 1956-01-01: 70.
    let p = |birth: &str, bmi: f64| glim_patient("female", birth, bmi, 60.0, 60.0);
    assert_eq!(
        glim_status(&p("1957-01-01", 19.99), &c),
        GlimStatus::Malnutrition
    );
    assert_eq!(
        glim_status(&p("1957-01-01", 20.0), &c),
        GlimStatus::NoMalnutrition
    );
    assert_eq!(
        glim_status(&p("1957-01-01", 20.01), &c),
        GlimStatus::NoMalnutrition
    );
    assert_eq!(
        glim_status(&p("1956-01-01", 21.99), &c),
        GlimStatus::Malnutrition
    );
    assert_eq!(
        glim_status(&p("1956-01-01", 22.0), &c),
        GlimStatus::NoMalnutrition
    );
    assert_eq!(
        glim_status(&p("1956-01-01", 22.01), &c),
        GlimStatus::NoMalnutrition
    );
    // Born "1956": 69 or 70 — decided only where both bands agree.
    assert_eq!(glim_status(&p("1956", 21.0), &c), GlimStatus::Unknown);
    assert_eq!(glim_status(&p("1956", 19.0), &c), GlimStatus::Malnutrition);
    assert_eq!(
        glim_status(&p("1956", 22.0), &c),
        GlimStatus::NoMalnutrition
    );
}

#[test]
fn glim_needs_an_etiologic_criterion() {
    let c = Cutoffs::default();
    // 6 % loss but no cancer recorded: etiology depends on CRP.
    let p = |crp: f64| {
        Fixture::male()
            .weights(100.0, SIX_MONTHS_BEFORE, 94.0)
            .crp(crp, "2026-09-20")
    };
    assert_eq!(glim_status(&p(5.0), &c), GlimStatus::Unknown);
    assert_eq!(glim_status(&p(5.01), &c), GlimStatus::Malnutrition);
    let r = glim::glim(&p(12.0).timeline(), &c);
    assert!(r.reason.contains("CRP"), "{}", r.reason);
}

#[test]
fn glim_muscle_definition_is_configurable() {
    // Male, BMI 24, SMI 45: Prado sarcopenic (< 52.4), Martin not (≥ 43).
    let f = Fixture::male()
        .weights(60.0, SIX_MONTHS_BEFORE, 60.0)
        .bmi(24.0, CURRENT)
        .smi(45.0, "2026-09-01")
        .cancer("C34.1", "2026-01-01");
    let mut c = Cutoffs::default();
    assert_eq!(glim_status(&f, &c), GlimStatus::Malnutrition);
    c.glim.muscle = MuscleDefinition::Martin;
    assert_eq!(glim_status(&f, &c), GlimStatus::NoMalnutrition);
}

#[test]
fn glim_is_unknown_when_muscle_mass_is_not_measured() {
    let f = Fixture::male()
        .weights(60.0, SIX_MONTHS_BEFORE, 60.0)
        .bmi(24.0, CURRENT)
        .cancer("C34.1", "2026-01-01");
    let r = glim::glim(&f.timeline(), &Cutoffs::default());
    assert_eq!(r.status, GlimStatus::Unknown);
    assert!(r.reason.contains("reduced muscle mass"), "{}", r.reason);
}

// --------------------------------------------------------- risk and summary

fn risk(f: &Fixture) -> RiskLevel {
    let t = f.timeline();
    let c = Cutoffs::default();
    ClassicAssessment::compute(&t, &c).risk(&t, &c).level
}

#[test]
fn risk_signal_levels() {
    // Fearon cachexia.
    assert_eq!(risk(&decided_male(94.0)), RiskLevel::High);
    // A recorded cachexia diagnosis alone.
    let f = Fixture::male().push(serde_json::json!({
        "resourceType": "Condition", "id": "cx",
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "R64"}]},
        "subject": {"reference": "Patient/p1"}
    }));
    assert_eq!(risk(&f), RiskLevel::High);
    // 3 % loss, Fearon undecidable: elevated.
    let f = Fixture::male().weights(100.0, SIX_MONTHS_BEFORE, 97.0);
    assert_eq!(risk(&f), RiskLevel::Elevated);
    // Exactly 2 % and everything else normal: low.
    assert_eq!(risk(&decided_male(98.0)), RiskLevel::Low);
    assert_eq!(risk(&decided_male(97.99)), RiskLevel::Elevated);
    // Low CXI raises an otherwise low patient.
    let f = decided_male(99.0)
        .albumin(2.0, "2026-09-20")
        .counts(5.0, 1.0, "2026-09-20");
    assert_eq!(risk(&f), RiskLevel::Elevated);
    // Nothing known.
    assert_eq!(risk(&Fixture::male()), RiskLevel::Unknown);
}

#[test]
fn assessment_serialises_with_statuses_and_sources() {
    let f = decided_male(94.0)
        .albumin(3.0, "2026-09-20")
        .counts(5.0, 1.0, "2026-09-20")
        .cancer("C25.0", "2026-01-01");
    let t = f.timeline();
    let c = Cutoffs::default();
    let a = ClassicAssessment::compute(&t, &c);
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["fearon"]["status"], "cachexia");
    assert_eq!(json["sarcopenia_prado"]["status"], "not_sarcopenic");
    assert_eq!(
        json["sarcopenia_martin"]["muscle_mass"]["status"],
        "not_sarcopenic"
    );
    assert_eq!(json["cxi"]["status"], "not_low");
    assert_eq!(json["glim"]["status"], "malnutrition");
    assert_eq!(json["mcxi"]["status"], "unknown");
    let sources = json["cxi"]["inputs"][1]["sources"][0].as_str().unwrap();
    assert!(sources.starts_with("Observation/"));
    let r = a.risk(&t, &c);
    assert_eq!(r.level, RiskLevel::High);
    assert!(r.reasons[0].starts_with("Fearon 2011 cachexia"));
}
