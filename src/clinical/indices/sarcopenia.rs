//! L3 CT sarcopenia.
//!
//! - Prado et al., Lancet Oncol 2008;9:629-35: SMI < 52.4 cm²/m² (men),
//!   < 38.5 cm²/m² (women).
//! - Martin et al., J Clin Oncol 2013;31:1539-47: low muscle mass men SMI < 43
//!   (BMI < 25) or < 53 (BMI ≥ 25), women SMI < 41 (any BMI); low muscle
//!   attenuation (myosteatosis) < 41 HU (BMI < 25) or < 33 HU (BMI ≥ 25), both
//!   sexes. BMI exactly 25 falls in the "≥ 25" band.
//!
//! SMI is the timeline's (measured `l3-smi`, or `l3-sma` / height²); muscle
//! attenuation is the latest `l3-muscle-hu` within the body-composition
//! lookback.

use serde::Serialize;

use super::cutoffs::Cutoffs;
use super::{IndexResult, InputUsed, Tri, below, below_all, compare_text, single};
use crate::clinical::codes::Analyte;
use crate::clinical::demographics::Sex;
use crate::clinical::provenance::format_value;
use crate::clinical::timeline::Timeline;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SarcopeniaStatus {
    Sarcopenic,
    NotSarcopenic,
    Unknown,
}

impl From<Tri> for SarcopeniaStatus {
    fn from(t: Tri) -> Self {
        match t {
            Some(true) => Self::Sarcopenic,
            Some(false) => Self::NotSarcopenic,
            None => Self::Unknown,
        }
    }
}

/// Muscle attenuation (myosteatosis) per Martin 2013.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttenuationStatus {
    Low,
    Normal,
    Unknown,
}

impl From<Tri> for AttenuationStatus {
    fn from(t: Tri) -> Self {
        match t {
            Some(true) => Self::Low,
            Some(false) => Self::Normal,
            None => Self::Unknown,
        }
    }
}

/// Martin 2013 gives two findings: muscle mass and muscle attenuation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MartinResult {
    pub muscle_mass: IndexResult<SarcopeniaStatus>,
    pub attenuation: IndexResult<AttenuationStatus>,
}

fn no_smi_reason(t: &Timeline) -> String {
    format!(
        "no L3 skeletal muscle index (or muscle area with a height) within {} days",
        t.rules.body_composition_lookback_days
    )
}

fn sex_text(sex: Option<Sex>) -> &'static str {
    match sex {
        Some(Sex::Male) => "male",
        Some(Sex::Female) => "female",
        _ => "sex unknown",
    }
}

pub fn prado(t: &Timeline, cutoffs: &Cutoffs) -> IndexResult<SarcopeniaStatus> {
    let Some(smi) = &t.smi else {
        return IndexResult {
            index: "prado_2008",
            status: SarcopeniaStatus::Unknown,
            reason: no_smi_reason(t),
            value: None,
            cutoff: None,
            criteria: vec![],
            inputs: vec![],
        };
    };
    let sex = t.demographics.sex_for_cutoffs();
    let cuts = cutoffs.prado.smi.applicable(sex);
    let status = SarcopeniaStatus::from(below_all(smi.value, &cuts));
    IndexResult {
        index: "prado_2008",
        status,
        reason: format!(
            "{}: L3 SMI {} cm²/m²",
            sex_text(sex),
            compare_text(smi.value, &cuts)
        ),
        value: Some(smi.value),
        cutoff: single(&cuts),
        criteria: vec![],
        inputs: vec![InputUsed::from_value("l3_smi", smi)],
    }
}

/// Candidate Martin SMI cut-offs for a sex and (maybe unknown) BMI band.
fn martin_smi_cutoffs(cutoffs: &Cutoffs, sex: Option<Sex>, high_bmi: Tri) -> Vec<f64> {
    let m = &cutoffs.martin;
    let men = match high_bmi {
        Some(false) => vec![m.smi_male_low_bmi],
        Some(true) => vec![m.smi_male_high_bmi],
        None => vec![m.smi_male_low_bmi, m.smi_male_high_bmi],
    };
    match sex {
        Some(Sex::Female) => vec![m.smi_female],
        Some(Sex::Male) => men,
        _ => {
            let mut all = men;
            all.push(m.smi_female);
            all
        }
    }
}

pub fn martin(t: &Timeline, cutoffs: &Cutoffs) -> MartinResult {
    let m = &cutoffs.martin;
    let sex = t.demographics.sex_for_cutoffs();
    let high_bmi: Tri = t.bmi.as_ref().map(|b| !below(b.value, m.bmi_split));
    let bmi_text = match &t.bmi {
        Some(b) => format!(
            "BMI {} {} {}",
            format_value(b.value),
            if high_bmi == Some(true) { "≥" } else { "<" },
            format_value(m.bmi_split)
        ),
        None => "BMI unknown".to_owned(),
    };
    let bmi_input = t.bmi.as_ref().map(|b| InputUsed::from_value("bmi", b));

    let muscle_mass = match &t.smi {
        None => IndexResult {
            index: "martin_2013_muscle_mass",
            status: SarcopeniaStatus::Unknown,
            reason: no_smi_reason(t),
            value: None,
            cutoff: None,
            criteria: vec![],
            inputs: bmi_input.iter().cloned().collect(),
        },
        Some(smi) => {
            let cuts = martin_smi_cutoffs(cutoffs, sex, high_bmi);
            let mut inputs = vec![InputUsed::from_value("l3_smi", smi)];
            // BMI only selects the band for men (or when sex is unknown).
            if sex != Some(Sex::Female) {
                inputs.extend(bmi_input.clone());
            }
            IndexResult {
                index: "martin_2013_muscle_mass",
                status: below_all(smi.value, &cuts).into(),
                reason: format!(
                    "{}, {bmi_text}: L3 SMI {} cm²/m²",
                    sex_text(sex),
                    compare_text(smi.value, &cuts)
                ),
                value: Some(smi.value),
                cutoff: single(&cuts),
                criteria: vec![],
                inputs,
            }
        }
    };

    let attenuation = match t.recent(Analyte::L3MuscleHu) {
        None => IndexResult {
            index: "martin_2013_muscle_attenuation",
            status: AttenuationStatus::Unknown,
            reason: format!(
                "no L3 muscle attenuation within {} days",
                t.rules.body_composition_lookback_days
            ),
            value: None,
            cutoff: None,
            criteria: vec![],
            inputs: vec![],
        },
        Some(hu) => {
            let cuts = match high_bmi {
                Some(false) => vec![m.hu_low_bmi],
                Some(true) => vec![m.hu_high_bmi],
                None => vec![m.hu_low_bmi, m.hu_high_bmi],
            };
            let mut inputs = vec![InputUsed::from_measurement("l3_muscle_hu", hu)];
            inputs.extend(bmi_input);
            IndexResult {
                index: "martin_2013_muscle_attenuation",
                status: below_all(hu.value, &cuts).into(),
                reason: format!(
                    "{bmi_text}: muscle attenuation {} HU",
                    compare_text(hu.value, &cuts)
                ),
                value: Some(hu.value),
                cutoff: single(&cuts),
                criteria: vec![],
                inputs,
            }
        }
    };
    MartinResult {
        muscle_mass,
        attenuation,
    }
}
