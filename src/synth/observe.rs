//! From the truth to what an EHR would hold on the index date: FHIR R4
//! resources with measurement noise, unit variety, irregular visits and
//! informative gaps. Nothing dated after the index date is written.
//!
//! References are written Bulk-Data style (`Patient/<id>`); the transaction
//! Bundle writer rewrites them to `urn:uuid:` (see `output`).

use chrono::{Duration, NaiveDate};
use serde_json::{Value, json};

use super::model::{MONTH_DAYS, Truth};
use super::notes;
use super::sample::{
    SynthRng, bernoulli, int, normal, pick, poisson, round_to, sigmoid, uuid, weighted,
};
use crate::clinical::codes::{
    BODY_COMPOSITION, CDC_RACE_ETHNICITY, ICD10CM, LOINC, SNOMED, UCUM, US_CORE_BIRTHSEX,
    US_CORE_ETHNICITY, US_CORE_RACE,
};
use crate::clinical::{CancerType, Sex, StageGroup};

const OBS_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const NULL_FLAVOR: &str = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// Identifier system linking the FHIR Patient to `labels.csv`.
pub const PATIENT_IDENTIFIER_SYSTEM: &str = "https://oncohooks.invalid/fhir/synthetic-patient";

/// What the observation step produced, beyond the resources (for the
/// manifest and the documentation of missingness).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Observed {
    pub weights: usize,
    pub lab_panels: usize,
    pub notes: usize,
    pub has_ct: bool,
    pub has_ecog: bool,
    pub stage_recorded: bool,
}

struct Builder<'a> {
    rng: &'a mut SynthRng,
    truth: &'a Truth,
    patient_ref: String,
    /// UTC offset of the patient's clinic (`-05:00`…), for timestamps.
    offset: &'static str,
    resources: Vec<Value>,
}

impl Builder<'_> {
    fn id(&mut self) -> String {
        uuid(self.rng).to_string()
    }

    fn date(&self, day: i64) -> NaiveDate {
        self.truth.index_date + Duration::days(day)
    }

    /// A clinic-hours timestamp on `day` (relative to the index date).
    fn timestamp(&mut self, day: i64) -> String {
        let hour = int(self.rng, 7, 17);
        let minute = int(self.rng, 0, 59);
        format!("{}T{hour:02}:{minute:02}:00{}", self.date(day), self.offset)
    }

    #[allow(clippy::too_many_arguments, reason = "one flat FHIR shape")]
    fn observation(
        &mut self,
        category: &str,
        system: &str,
        code: &str,
        display: &str,
        day: i64,
        value_key: &str,
        value: Value,
    ) -> String {
        let id = self.id();
        let effective = self.timestamp(day);
        let mut obs = json!({
            "resourceType": "Observation",
            "id": id,
            "status": "final",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "subject": {"reference": self.patient_ref},
            "effectiveDateTime": effective,
        });
        obs[value_key] = value;
        self.resources.push(obs);
        id
    }

    fn quantity(
        &mut self,
        category: &str,
        (system, code, display): (&str, &str, &str),
        day: i64,
        value: f64,
        unit: &str,
        ucum: &str,
    ) -> String {
        self.observation(
            category,
            system,
            code,
            display,
            day,
            "valueQuantity",
            json!({"value": value, "unit": unit, "system": UCUM, "code": ucum}),
        )
    }
}

/// Build the patient's resources. `id` is the Patient's logical id.
pub(crate) fn observe(rng: &mut SynthRng, truth: &Truth, id: &str) -> (Vec<Value>, Observed) {
    let offset = *pick(
        rng,
        &["-05:00", "-05:00", "-06:00", "-07:00", "-08:00", "-04:00"],
    );
    let mut b = Builder {
        rng,
        truth,
        patient_ref: format!("Patient/{id}"),
        offset,
        resources: Vec::new(),
    };
    let mut observed = Observed::default();
    patient(&mut b, id);
    observed.stage_recorded = conditions(&mut b);
    observed.weights = body_size(&mut b);
    observed.lab_panels = labs(&mut b);
    observed.has_ecog = ecog(&mut b);
    observed.has_ct = body_composition(&mut b);
    observed.notes = notes::documents(&mut NoteSink(&mut b));
    (b.resources, observed)
}

fn patient(b: &mut Builder<'_>, id: &str) {
    let t = b.truth;
    let race = t.race.omb();
    let mut race_ext: Vec<Value> = race
        .iter()
        .map(|(code, display)| {
            let system = if *code == "UNK" {
                NULL_FLAVOR
            } else {
                CDC_RACE_ETHNICITY
            };
            json!({"url": "ombCategory", "valueCoding": {"system": system, "code": code, "display": display}})
        })
        .collect();
    let race_text = if race.len() > 1 {
        "Multiracial".to_owned()
    } else {
        race[0].1.to_owned()
    };
    race_ext.push(json!({"url": "text", "valueString": race_text}));
    let (eth_code, eth_display) = t.ethnicity.omb();
    let eth_system = if eth_code == "UNK" {
        NULL_FLAVOR
    } else {
        CDC_RACE_ETHNICITY
    };
    let mut extension = vec![
        json!({"url": US_CORE_RACE, "extension": race_ext}),
        json!({"url": US_CORE_ETHNICITY, "extension": [
            {"url": "ombCategory", "valueCoding": {"system": eth_system, "code": eth_code, "display": eth_display}},
            {"url": "text", "valueString": eth_display}
        ]}),
    ];
    // Birth sex is recorded for most patients (US Core makes it optional).
    if bernoulli(b.rng, 0.8) {
        let code = if t.sex == Sex::Male { "M" } else { "F" };
        extension.push(json!({"url": US_CORE_BIRTHSEX, "valueCode": code}));
    }
    let gender = if t.sex == Sex::Male { "male" } else { "female" };
    let mrn = int(b.rng, 10_000_000, 99_999_999);
    b.resources.push(json!({
        "resourceType": "Patient",
        "id": id,
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
        "extension": extension,
        "identifier": [
            {"system": PATIENT_IDENTIFIER_SYSTEM, "value": id},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
             "system": "urn:oid:2.16.840.1.113883.19.5", "value": format!("SYN{mrn}")}
        ],
        "name": [{"use": "official", "family": "Synthetic", "given": [format!("Patient{}", &id[..8])]}],
        "gender": gender,
        "birthDate": t.birth_date.to_string(),
    }));
}

fn stage_label(rng: &mut SynthRng, stage: StageGroup) -> String {
    let options: &[&str] = match stage {
        StageGroup::Zero => &["0"],
        StageGroup::I => &["I", "IA", "IB"],
        StageGroup::II => &["II", "IIA", "IIB"],
        StageGroup::III => &["III", "IIIA", "IIIB", "IIIC"],
        StageGroup::IV => &["IV", "IVA", "IVB"],
    };
    (*pick(rng, options)).to_owned()
}

/// The cancer Condition (with stage) and comorbidities. Returns whether a
/// stage was recorded.
fn conditions(b: &mut Builder<'_>) -> bool {
    let t = b.truth;
    let (code, display) = t.icd10;
    let id = b.id();
    let onset = t.diagnosis_date.to_string();
    let recorded = (t.diagnosis_date + Duration::days(int(b.rng, 0, 3))).min(t.index_date);
    let mut condition = json!({
        "resourceType": "Condition",
        "id": id,
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-condition-problems-health-concerns"]},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
        "code": {"coding": [{"system": ICD10CM, "code": code, "display": display}], "text": display},
        "subject": {"reference": b.patient_ref},
        "onsetDateTime": onset,
        "recordedDate": recorded.to_string(),
    });
    // Stage: 6 % unrecorded; otherwise SNOMED stage qualifier, an AJCC
    // code, or free text only.
    let stage_recorded = bernoulli(b.rng, 0.94);
    if stage_recorded {
        let label = stage_label(b.rng, t.stage);
        let text = format!("Stage {label}");
        let summary = match weighted(b.rng, &[(0, 0.5), (1, 0.3), (2, 0.2)]) {
            0 => {
                let (code, n) = match t.stage {
                    StageGroup::I | StageGroup::Zero => ("258215001", 1),
                    StageGroup::II => ("258219007", 2),
                    StageGroup::III => ("258224005", 3),
                    StageGroup::IV => ("258228008", 4),
                };
                json!({"coding": [{"system": SNOMED, "code": code, "display": format!("Stage {n}")}], "text": text})
            }
            1 => {
                json!({"coding": [{"system": crate::clinical::codes::AJCC, "code": label, "display": text}]})
            }
            _ => json!({"text": text}),
        };
        condition["stage"] = json!([{"summary": summary}]);
    }
    b.resources.push(condition);

    // Comorbidities: read by no index, but real problem lists carry them and
    // they track frailty.
    let agez = (f64::from(t.age) - 65.0) / 10.0;
    let f = t.latents.frailty;
    let smoker_site = matches!(
        t.cancer_type,
        CancerType::Lung | CancerType::HeadAndNeck | CancerType::Oesophageal
    );
    let comorbidities = [
        (
            "I10",
            "Essential (primary) hypertension",
            sigmoid(-0.3 + 0.5 * agez + 0.3 * f),
        ),
        (
            "E11.9",
            "Type 2 diabetes mellitus without complications",
            sigmoid(-1.5 + 0.2 * agez + 0.3 * f),
        ),
        (
            "J44.9",
            "Chronic obstructive pulmonary disease, unspecified",
            sigmoid(if smoker_site { -0.8 } else { -2.6 } + 0.4 * f),
        ),
        (
            "N18.3",
            "Chronic kidney disease, stage 3 (moderate)",
            sigmoid(-2.8 + 0.5 * agez + 0.4 * f),
        ),
    ];
    for (code, display, p) in comorbidities {
        if bernoulli(b.rng, p) {
            let id = b.id();
            let onset = t.index_date - Duration::days(int(b.rng, 200, 4000));
            b.resources.push(json!({
                "resourceType": "Condition",
                "id": id,
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
                "code": {"coding": [{"system": ICD10CM, "code": code, "display": display}], "text": display},
                "subject": {"reference": b.patient_ref},
                "onsetDateTime": onset.to_string(),
            }));
        }
    }
    stage_recorded
}

/// Weight unit preference of the patient's clinic.
#[derive(Clone, Copy)]
enum WeightUnit {
    Kg,
    Lb,
    Gram,
}

/// Weights at irregular visits before the index, height, sometimes BMI.
/// Returns the number of weights written.
fn body_size(b: &mut Builder<'_>) -> usize {
    let t = b.truth;
    // How far back the EHR reaches: 15 % of patients are new to the system
    // (only the workup and index visits); otherwise 2 months to 2.5 years.
    let history = if bernoulli(b.rng, 0.15) {
        int(b.rng, 0, 20)
    } else {
        int(b.rng, 60, 900)
    };
    let mut days: Vec<i64> = Vec::new();
    // Routine visits before the workup: a Poisson process whose rate varies
    // between patients (median 0.35 visits/month).
    if history > 60 {
        let rate = (normal(b.rng, 0.35f64.ln(), 0.6)).exp();
        let n = poisson(b.rng, rate * (history - 60) as f64 / MONTH_DAYS);
        for _ in 0..n {
            days.push(-int(b.rng, 61, history));
        }
    }
    // Diagnostic workup: 0–3 visits within the 60 days before the index,
    // more when symptomatic.
    let workup = poisson(b.rng, 0.8 + 0.3 * t.latents.anorexia.max(0.0));
    for _ in 0..workup.min(4) {
        days.push(-int(b.rng, 1, 60.min(history.max(1))));
    }
    // The index (first oncology) visit, usually on the index date.
    if bernoulli(b.rng, 0.88) {
        days.push(0);
    } else {
        days.push(-int(b.rng, 1, 10));
    }
    days.sort_unstable();
    days.dedup();

    let unit = weighted(
        b.rng,
        &[
            (WeightUnit::Kg, 0.65),
            (WeightUnit::Lb, 0.33),
            (WeightUnit::Gram, 0.02),
        ],
    );
    let height_known = bernoulli(b.rng, 0.88);
    let measured_height = t.height_cm + normal(b.rng, 0.0, 1.0);
    let mut weights = 0;
    let mut height_day = None;
    for &day in &days {
        if !bernoulli(b.rng, 0.93) {
            continue; // Visit without a weight.
        }
        // Scale error plus clothing and fluid (about 0.8 kg SD together).
        let kg = t.weight_at(day as f64) + normal(b.rng, 0.3, 0.75);
        // A visit now and then uses the other unit (a different clinic).
        let visit_unit = if bernoulli(b.rng, 0.1) {
            match unit {
                WeightUnit::Kg => WeightUnit::Lb,
                _ => WeightUnit::Kg,
            }
        } else {
            unit
        };
        let code = (LOINC, "29463-7", "Body weight");
        match visit_unit {
            WeightUnit::Kg => b.quantity("vital-signs", code, day, round_to(kg, 1), "kg", "kg"),
            WeightUnit::Lb => b.quantity(
                "vital-signs",
                code,
                day,
                round_to(kg / 0.453_592_37, 1),
                "lb",
                "[lb_av]",
            ),
            WeightUnit::Gram => {
                b.quantity("vital-signs", code, day, (kg * 1000.0).round(), "g", "g")
            }
        };
        weights += 1;
        if height_known && height_day.is_none() {
            height_day = Some(day);
            if bernoulli(b.rng, 0.7) {
                let v = round_to(measured_height, 1);
                b.quantity(
                    "vital-signs",
                    (LOINC, "8302-2", "Body height"),
                    day,
                    v,
                    "cm",
                    "cm",
                );
            } else {
                let v = round_to(measured_height / 2.54, 1);
                b.quantity(
                    "vital-signs",
                    (LOINC, "8302-2", "Body height"),
                    day,
                    v,
                    "in",
                    "[in_i]",
                );
            }
        }
        if height_known && bernoulli(b.rng, 0.3) {
            let m = measured_height / 100.0;
            let bmi = round_to(kg / (m * m), 1);
            b.quantity(
                "vital-signs",
                (LOINC, "39156-5", "Body mass index"),
                day,
                bmi,
                "kg/m2",
                "kg/m2",
            );
        }
    }
    weights
}

/// One lab result with its alternative units: `(value in canonical unit,
/// decimals)` and `(factor, unit, ucum, decimals)` for the alternative.
struct Lab<'a> {
    code: (&'a str, &'a str),
    value: f64,
    decimals: i32,
    unit: &'a str,
    alt: Option<(f64, &'a str, i32, &'a str)>,
    alt_share: f64,
}

fn write_lab(b: &mut Builder<'_>, day: i64, lab: Lab<'_>) {
    let (code, display) = lab.code;
    match lab.alt {
        Some((factor, unit, decimals, alt_code)) if bernoulli(b.rng, lab.alt_share) => {
            let v = round_to(lab.value * factor, decimals);
            b.quantity("laboratory", (LOINC, alt_code, display), day, v, unit, unit);
        }
        _ => {
            let v = round_to(lab.value, lab.decimals);
            b.quantity(
                "laboratory",
                (LOINC, code, display),
                day,
                v,
                lab.unit,
                lab.unit,
            );
        }
    }
}

/// Lab panels: one around the index date for most patients (more often when
/// sicker), an earlier one for some. Returns the number of panels.
fn labs(b: &mut Builder<'_>) -> usize {
    let t = b.truth;
    let l = t.latents;
    let s = stage_number(t.stage);
    let agez = (f64::from(t.age) - 65.0) / 10.0;
    let mut panel_days = Vec::new();
    if bernoulli(
        b.rng,
        sigmoid(1.1 + 0.5 * l.inflammation + 0.25 * s + 0.3 * l.frailty),
    ) {
        panel_days.push(-int(b.rng, 0, 14));
    }
    if bernoulli(
        b.rng,
        sigmoid(-0.9 + 0.5 * l.inflammation + 0.3 * l.frailty),
    ) {
        panel_days.push(-int(b.rng, 20, 85));
    }
    // SI-unit lab (15 % of patients): g/L, µmol/L, mmol/L.
    let si = bernoulli(b.rng, 0.15);
    let si_share: f64 = if si { 0.9 } else { 0.05 };
    let male = t.sex == Sex::Male;
    for &day in &panel_days {
        if bernoulli(b.rng, 0.9) {
            // CBC with differential.
            let neut = (4.3f64.ln() + 0.2 * l.inflammation + normal(b.rng, 0.0, 0.3)).exp();
            let lymph = (1.7f64.ln() - 0.22 * l.inflammation - 0.05 * agez
                + normal(b.rng, 0.0, 0.33))
            .exp();
            let hgb = if male { 14.0 } else { 12.8 }
                - 0.45 * l.inflammation
                - if matches!(t.cancer_type, CancerType::Colorectal | CancerType::Gastric) {
                    0.6
                } else {
                    0.0
                }
                + normal(b.rng, 0.0, 1.0);
            let count_unit = *pick(b.rng, &["10*3/uL", "10*3/uL", "10*3/uL", "10*9/L", "/uL"]);
            let neut_code = if bernoulli(b.rng, 0.7) {
                "751-8"
            } else {
                "26499-4"
            };
            let lymph_code = if neut_code == "751-8" {
                "731-0"
            } else {
                "26474-7"
            };
            for (code, display, v) in [
                (neut_code, "Neutrophils [#/volume] in Blood", neut),
                (lymph_code, "Lymphocytes [#/volume] in Blood", lymph),
            ] {
                let (value, decimals) = if count_unit == "/uL" {
                    (v * 1000.0, -1)
                } else {
                    (v, 2)
                };
                let value = round_to(value, decimals);
                b.quantity(
                    "laboratory",
                    (LOINC, code, display),
                    day,
                    value,
                    count_unit,
                    count_unit,
                );
            }
            write_lab(
                b,
                day,
                Lab {
                    code: ("718-7", "Hemoglobin [Mass/volume] in Blood"),
                    value: hgb.clamp(5.5, 19.0),
                    decimals: 1,
                    unit: "g/dL",
                    alt: Some((10.0, "g/L", 0, "718-7")),
                    alt_share: si_share.max(0.1),
                },
            );
        }
        if bernoulli(b.rng, 0.85) {
            // Metabolic panel.
            let albumin =
                4.15 - 0.3 * l.inflammation - 0.08 * l.anorexia - 0.08 * l.frailty - 0.04 * agez
                    + normal(b.rng, 0.0, 0.32);
            let protein = 7.0 - 0.12 * l.inflammation + normal(b.rng, 0.0, 0.45);
            let creatinine = if male { 0.95 } else { 0.75 }
                * (0.07 * l.muscle_reserve + 0.08 * agez + normal(b.rng, 0.0, 0.18)).exp();
            let drive = 0.6 * l.inflammation + 0.8 * l.anorexia;
            let bun = (15f64.ln() + 0.08 * drive + 0.07 * agez + normal(b.rng, 0.0, 0.3)).exp();
            if bernoulli(b.rng, 0.95) {
                let code = if bernoulli(b.rng, 0.9) {
                    "1751-7"
                } else {
                    "61151-7"
                };
                write_lab(
                    b,
                    day,
                    Lab {
                        code: (code, "Albumin [Mass/volume] in Serum or Plasma"),
                        value: albumin.clamp(1.4, 5.4),
                        decimals: 1,
                        unit: "g/dL",
                        alt: Some((10.0, "g/L", 0, code)),
                        alt_share: si_share.max(0.2),
                    },
                );
            }
            if bernoulli(b.rng, 0.85) {
                write_lab(
                    b,
                    day,
                    Lab {
                        code: ("2885-2", "Protein [Mass/volume] in Serum or Plasma"),
                        value: protein.clamp(4.0, 9.5),
                        decimals: 1,
                        unit: "g/dL",
                        alt: Some((10.0, "g/L", 0, "2885-2")),
                        alt_share: si_share,
                    },
                );
            }
            write_lab(
                b,
                day,
                Lab {
                    code: ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma"),
                    value: creatinine.clamp(0.3, 6.0),
                    decimals: 2,
                    unit: "mg/dL",
                    alt: Some((88.42, "umol/L", 0, "14682-9")),
                    alt_share: si_share.max(0.1),
                },
            );
            write_lab(
                b,
                day,
                Lab {
                    code: ("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma"),
                    value: bun.clamp(3.0, 90.0),
                    decimals: 0,
                    unit: "mg/dL",
                    alt: Some((1.0 / 2.801, "mmol/L", 1, "3094-0")),
                    alt_share: si_share,
                },
            );
        }
        // CRP is ordered selectively: more when inflammation is suspected.
        if bernoulli(b.rng, sigmoid(-1.0 + 0.6 * l.inflammation)) {
            let crp = (1.0 + 0.85 * l.inflammation + normal(b.rng, 0.0, 0.75))
                .exp()
                .min(350.0);
            let (code, display) = if bernoulli(b.rng, 0.8) {
                (
                    "1988-5",
                    "C reactive protein [Mass/volume] in Serum or Plasma",
                )
            } else {
                (
                    "30522-7",
                    "C reactive protein [Mass/volume] in Serum or Plasma by High sensitivity method",
                )
            };
            let mg_dl = bernoulli(b.rng, 0.25);
            let (value, unit, decimals, floor) = if mg_dl {
                (crp / 10.0, "mg/dL", 2, 0.05)
            } else {
                (crp, "mg/L", 1, 0.5)
            };
            let mut q = json!({"value": round_to(value, decimals), "unit": unit, "system": UCUM, "code": unit});
            if value < floor {
                // Below the reporting limit: a censored value ("<0.5 mg/L").
                q = json!({"value": floor, "comparator": "<", "unit": unit, "system": UCUM, "code": unit});
            }
            b.observation("laboratory", LOINC, code, display, day, "valueQuantity", q);
        }
        if bernoulli(b.rng, 0.06 + 0.08 * f64::from(u8::from(l.anorexia > 1.0))) {
            let prealbumin =
                24.0 - 3.5 * l.inflammation - 2.0 * l.anorexia + normal(b.rng, 0.0, 4.0);
            write_lab(
                b,
                day,
                Lab {
                    code: ("14338-8", "Prealbumin [Mass/volume] in Serum or Plasma"),
                    value: prealbumin.clamp(3.0, 45.0),
                    decimals: 0,
                    unit: "mg/dL",
                    alt: Some((10.0, "mg/L", 0, "14338-8")),
                    alt_share: si_share,
                },
            );
        }
    }
    panel_days.len()
}

pub(crate) fn stage_number(stage: StageGroup) -> f64 {
    match stage {
        StageGroup::Zero | StageGroup::I => 0.0,
        StageGroup::II => 1.0,
        StageGroup::III => 2.0,
        StageGroup::IV => 3.0,
    }
}

/// ECOG performance status, recorded for about 45 % (more in stage IV).
fn ecog(b: &mut Builder<'_>) -> bool {
    let t = b.truth;
    let s = stage_number(t.stage);
    if !bernoulli(b.rng, 0.35 + 0.05 * s) {
        return false;
    }
    let grade = (0.3
        + 0.55 * t.latents.frailty
        + 0.3 * t.latents.anorexia
        + 0.2 * s
        + normal(b.rng, 0.0, 0.6))
    .round()
    .clamp(0.0, 4.0) as usize;
    let day = -int(b.rng, 0, 30);
    const ANSWERS: [&str; 5] = ["LA9622-7", "LA9623-5", "LA9624-3", "LA9625-0", "LA9626-8"];
    let display = "ECOG Performance Status score";
    if bernoulli(b.rng, 0.6) {
        let answer = json!({"coding": [{"system": LOINC, "code": ANSWERS[grade], "display": format!("ECOG {grade}")}]});
        b.observation(
            "survey",
            LOINC,
            "89247-1",
            display,
            day,
            "valueCodeableConcept",
            answer,
        );
    } else {
        b.observation(
            "survey",
            LOINC,
            "89247-1",
            display,
            day,
            "valueInteger",
            json!(grade),
        );
    }
    true
}

/// A DICOM UID under the `2.25` arc (ITU-T X.667: a UUID as an integer).
fn dicom_uid(rng: &mut SynthRng) -> String {
    format!("2.25.{}", uuid(rng).as_u128())
}

/// An abdominal CT (staging) with L3 body composition for 50–60 % of
/// patients; likelier in abdominal cancers and advanced stages.
fn body_composition(b: &mut Builder<'_>) -> bool {
    let t = b.truth;
    let base: f64 = match t.cancer_type {
        CancerType::Pancreas => 0.85,
        CancerType::Gastric | CancerType::Oesophageal => 0.75,
        CancerType::Colorectal => 0.72,
        CancerType::Lung => 0.6,
        CancerType::Other => 0.6,
        CancerType::HeadAndNeck => 0.3,
        CancerType::Breast => 0.3,
        CancerType::Prostate => 0.35,
        CancerType::Liver => 0.8,
    };
    let s = stage_number(t.stage);
    let p = sigmoid(base.ln() - (1.0 - base).ln() + 0.35 * (s - 1.5));
    if !bernoulli(b.rng, p) {
        return false;
    }
    let day = -int(b.rng, 1, 45);
    let study_id = b.id();
    let study_uid = dicom_uid(b.rng);
    let series_uid = dicom_uid(b.rng);
    let instances = int(b.rng, 180, 420);
    let started = b.timestamp(day);
    b.resources.push(json!({
        "resourceType": "ImagingStudy",
        "id": study_id,
        "identifier": [{"system": "urn:dicom:uid", "value": format!("urn:oid:{study_uid}")}],
        "status": "available",
        "subject": {"reference": b.patient_ref},
        "started": started,
        "modality": [{"system": DCM, "code": "CT"}],
        "numberOfSeries": 1,
        "numberOfInstances": instances,
        "description": "CT ABDOMEN PELVIS WITH CONTRAST",
        "series": [{
            "uid": series_uid,
            "number": 2,
            "modality": {"system": DCM, "code": "CT"},
            "description": "AXIAL 2.5MM SOFT TISSUE",
            "numberOfInstances": instances,
            "bodySite": {"system": SNOMED, "code": "818981001", "display": "Abdomen"}
        }]
    }));
    let h2 = (t.height_cm / 100.0).powi(2);
    let smi = t.smi_at(day as f64) + normal(b.rng, 0.0, 1.8);
    let bmi = t.bmi_at(day as f64);
    let male = t.sex == Sex::Male;
    let agez = (f64::from(t.age) - 65.0) / 10.0;
    let hu = 40.0 + 6.0 * t.latents.muscle_quality
        - 2.5 * agez
        - 1.5 * t.latents.frailty
        - 0.25 * (bmi - 27.0)
        + normal(b.rng, 0.0, 3.5);
    let vat = (120f64.ln()
        + 0.09 * (bmi - 27.0)
        + if male { 0.3 } else { -0.2 }
        + 0.1 * agez
        + normal(b.rng, 0.0, 0.35))
    .exp();
    let sat = (180f64.ln()
        + 0.08 * (bmi - 27.0)
        + if male { -0.1 } else { 0.25 }
        + normal(b.rng, 0.0, 0.3))
    .exp();
    let values: [(&str, &str, f64, &str); 5] = [
        ("l3-smi", "L3 skeletal muscle index", smi, "cm2/m2"),
        ("l3-sma", "L3 skeletal muscle area", smi * h2, "cm2"),
        (
            "l3-muscle-hu",
            "L3 skeletal muscle attenuation",
            hu,
            "[hnsf'U]",
        ),
        ("l3-vat", "L3 visceral adipose tissue area", vat, "cm2"),
        ("l3-sat", "L3 subcutaneous adipose tissue area", sat, "cm2"),
    ];
    // 15 % of reports give the muscle area only (SMI is then derived from
    // the height).
    let area_only = bernoulli(b.rng, 0.15);
    for (code, display, value, unit) in values {
        if area_only && code == "l3-smi" {
            continue;
        }
        b.observation(
            "imaging",
            BODY_COMPOSITION,
            code,
            display,
            day,
            "valueQuantity",
            json!({"value": round_to(value, 1), "unit": if unit == "[hnsf'U]" { "HU" } else { unit }, "system": UCUM, "code": unit}),
        );
        if let Some(obs) = b.resources.last_mut() {
            obs["derivedFrom"] = json!([{"reference": format!("ImagingStudy/{study_id}")}]);
        }
    }
    true
}

/// Gives the notes module what it needs without exposing the builder.
pub(crate) struct NoteSink<'a, 'b>(&'a mut Builder<'b>);

impl NoteSink<'_, '_> {
    pub fn rng(&mut self) -> &mut SynthRng {
        self.0.rng
    }

    pub fn truth(&self) -> &Truth {
        self.0.truth
    }

    /// Add a DocumentReference dated `day` with one attachment.
    pub fn document(
        &mut self,
        day: i64,
        (code, display): (&str, &str),
        content_type: &str,
        text: &str,
    ) {
        use base64::Engine;
        let id = self.0.id();
        let date = self.0.timestamp(day);
        let data = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        let period_start = self.0.date(day).to_string();
        self.0.resources.push(json!({
            "resourceType": "DocumentReference",
            "id": id,
            "status": "current",
            "docStatus": "final",
            "type": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
            "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "code": "clinical-note", "display": "Clinical Note"}]}],
            "subject": {"reference": self.0.patient_ref},
            "date": date,
            "content": [{"attachment": {"contentType": content_type, "data": data}}],
            "context": {"period": {"start": period_start}},
        }));
    }
}
