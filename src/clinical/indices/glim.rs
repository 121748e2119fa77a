//! GLIM criteria for malnutrition (Cederholm et al., Clin Nutr 2019;38:1-9):
//! malnutrition needs at least one phenotypic and at least one etiologic
//! criterion.
//!
//! Phenotypic:
//! - weight loss > 5 % within the past 6 months (largest loss over the 1-, 3-
//!   and 6-month windows, as for Fearon), or > 10 % beyond 6 months (our
//!   12-month window). The beyond-6-months part is used only "if the history
//!   allows": without a weight about 12 months back it cannot make the
//!   criterion true but does not make it unknown either.
//! - low BMI: < 20 kg/m² if younger than 70, < 22 kg/m² at 70 or older. The
//!   Asian cut-offs (< 18.5 / < 20) are not applied: race is not a reliable
//!   proxy for the population GLIM meant, and the choice is left to config.
//!   With a partial birth date straddling 70, both bands must agree.
//! - reduced muscle mass: L3 sarcopenia by the configured definition (Prado
//!   by default, or Martin).
//!
//! Etiologic:
//! - disease burden / inflammation: an active cancer diagnosis (active
//!   malignancy is a chronic disease with inflammation in GLIM); without one,
//!   a recent CRP above `crp_inflammation_mg_l` (GLIM lists CRP as a
//!   supportive measure).
//! - reduced food intake or assimilation is not available from structured
//!   FHIR data here, so it is never "met" and never rules anything out.
//!
//! Severity grading (stage 1/2) is not computed.

use serde::Serialize;

use super::cutoffs::{Cutoffs, MuscleDefinition};
use super::fearon::reason_from_criteria;
use super::sarcopenia::{self, SarcopeniaStatus};
use super::{
    Criterion, IndexResult, InputUsed, LossWithinSixMonths, Tri, above, below_all, compare_text,
    describe_change, tri_and, tri_or,
};
use crate::clinical::codes::Analyte;
use crate::clinical::provenance::format_value;
use crate::clinical::timeline::Timeline;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GlimStatus {
    Malnutrition,
    NoMalnutrition,
    Unknown,
}

pub fn glim(t: &Timeline, cutoffs: &Cutoffs) -> IndexResult<GlimStatus> {
    let g = &cutoffs.glim;
    let mut inputs: Vec<InputUsed> = Vec::new();

    // Phenotypic 1: weight loss.
    let loss = LossWithinSixMonths::of(t);
    inputs.extend(loss.input());
    let recent_loss = loss.exceeds(g.weight_loss_6m_pct);
    let (long_loss, long_text): (Tri, String) = match &t.weight.twelve_months {
        Some(w) => {
            inputs.push(InputUsed::from_weight_change("weight_loss_12_months", w));
            (
                Some(above(w.loss_percent, g.weight_loss_beyond_6m_pct)),
                describe_change(w),
            )
        }
        // Not available: contributes nothing (see module docs).
        None => (Some(false), "no weight about 12 months back".to_owned()),
    };
    let p_loss = tri_or([recent_loss, long_loss]);

    // Phenotypic 2: low BMI by age band.
    let (p_bmi, bmi_text): (Tri, String) = match &t.bmi {
        None => (
            None,
            "no recent BMI (measured, or from a recent weight and a height)".to_owned(),
        ),
        Some(bmi) => {
            inputs.push(InputUsed::from_value("bmi", bmi));
            let (cuts, age_text) = match &t.demographics.age {
                Some(age) if age.max_years < g.age_split => (
                    vec![g.low_bmi_under_age_split],
                    format!("age {}", age.years),
                ),
                Some(age) if age.min_years >= g.age_split => {
                    (vec![g.low_bmi_from_age_split], format!("age {}", age.years))
                }
                Some(age) => (
                    vec![g.low_bmi_under_age_split, g.low_bmi_from_age_split],
                    format!(
                        "age {}–{} (partial birth date)",
                        age.min_years, age.max_years
                    ),
                ),
                None => (
                    vec![g.low_bmi_under_age_split, g.low_bmi_from_age_split],
                    "age unknown".to_owned(),
                ),
            };
            (
                below_all(bmi.value, &cuts),
                format!("{age_text}: BMI {}", compare_text(bmi.value, &cuts)),
            )
        }
    };

    // Phenotypic 3: reduced muscle mass.
    let muscle = match g.muscle {
        MuscleDefinition::Prado => sarcopenia::prado(t, cutoffs),
        MuscleDefinition::Martin => sarcopenia::martin(t, cutoffs).muscle_mass,
    };
    let p_muscle: Tri = match muscle.status {
        SarcopeniaStatus::Sarcopenic => Some(true),
        SarcopeniaStatus::NotSarcopenic => Some(false),
        SarcopeniaStatus::Unknown => None,
    };
    for i in &muscle.inputs {
        if !inputs.iter().any(|x| x.name == i.name) {
            inputs.push(i.clone());
        }
    }

    // Etiologic: active malignancy, else CRP.
    let active: Vec<String> = t
        .cancers
        .iter()
        .filter(|c| c.active)
        .map(|c| format!("{} cancer ({})", c.cancer_type.label(), c.source))
        .collect();
    let (e_inflammation, e_text): (Tri, String) = if active.is_empty() {
        match t.recent(Analyte::Crp) {
            Some(crp) if above(crp.value, g.crp_inflammation_mg_l) => {
                inputs.push(InputUsed::from_measurement("crp", crp));
                (
                    Some(true),
                    format!("CRP {crp} > {} mg/L", format_value(g.crp_inflammation_mg_l)),
                )
            }
            Some(crp) => {
                inputs.push(InputUsed::from_measurement("crp", crp));
                (
                    None,
                    format!(
                        "no active cancer recorded; CRP {crp} not above {} mg/L; intake not assessed",
                        format_value(g.crp_inflammation_mg_l)
                    ),
                )
            }
            None => (
                None,
                "no active cancer recorded, no recent CRP; intake not assessed".to_owned(),
            ),
        }
    } else {
        (
            Some(true),
            format!("active malignancy: {}", active.join(", ")),
        )
    };

    let criteria = vec![
        Criterion {
            name: format!(
                "phenotypic: weight loss > {} % within 6 months or > {} % beyond",
                format_value(g.weight_loss_6m_pct),
                format_value(g.weight_loss_beyond_6m_pct)
            ),
            met: p_loss,
            detail: format!("{}; {long_text}", loss.describe()),
        },
        Criterion {
            name: "phenotypic: low BMI".to_owned(),
            met: p_bmi,
            detail: bmi_text,
        },
        Criterion {
            name: "phenotypic: reduced muscle mass".to_owned(),
            met: p_muscle,
            detail: format!("{}: {}", muscle.index, muscle.reason),
        },
        Criterion {
            name: "etiologic: disease burden / inflammation".to_owned(),
            met: e_inflammation,
            detail: e_text,
        },
    ];
    let phenotypic = tri_or([p_loss, p_bmi, p_muscle]);
    let status = match tri_and([phenotypic, e_inflammation]) {
        Some(true) => GlimStatus::Malnutrition,
        Some(false) => GlimStatus::NoMalnutrition,
        None => GlimStatus::Unknown,
    };
    let reason = match status {
        GlimStatus::Malnutrition => {
            let met: Vec<String> = criteria
                .iter()
                .filter(|c| c.met == Some(true))
                .map(|c| format!("{} ({})", c.name, c.detail))
                .collect();
            met.join("; ")
        }
        GlimStatus::NoMalnutrition if phenotypic == Some(false) => {
            format!(
                "no phenotypic criterion met: {}",
                reason_from_criteria(&criteria[..3], false)
            )
        }
        _ => reason_from_criteria(&criteria, false),
    };
    IndexResult {
        index: "glim_2019",
        status,
        reason,
        value: None,
        cutoff: None,
        criteria,
        inputs,
    }
}
