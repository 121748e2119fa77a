//! Fearon 2011 international consensus definition of cancer cachexia
//! (Lancet Oncol 2011;12:489-95): weight loss > 5 % over the past 6 months;
//! or BMI < 20 kg/m² and weight loss > 2 %; or sarcopenia and weight loss > 2 %.
//!
//! Weight loss is the largest loss over the 1-, 3- and 6-month windows (see
//! `LossWithinSixMonths` in the parent module); sarcopenia is L3 SMI below the consensus CT
//! cut-offs (`Cutoffs::fearon.sarcopenia_smi`). Fearon's other muscle
//! measures (DXA, BIA, arm muscle area) are not available from FHIR here.

use serde::Serialize;

use super::cutoffs::Cutoffs;
use super::{
    Criterion, IndexResult, InputUsed, LossWithinSixMonths, Tri, below, below_all, compare_text,
    tri_and, tri_or,
};
use crate::clinical::provenance::format_value;
use crate::clinical::timeline::Timeline;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FearonStatus {
    Cachexia,
    NotCachexia,
    Unknown,
}

pub fn fearon(t: &Timeline, cutoffs: &Cutoffs) -> IndexResult<FearonStatus> {
    let c = &cutoffs.fearon;
    let loss = LossWithinSixMonths::of(t);
    let mut inputs: Vec<InputUsed> = loss.input().into_iter().collect();

    // Criterion 1: weight loss > 5 % within 6 months.
    let c1 = loss.exceeds(c.weight_loss_pct);
    let small_loss = loss.exceeds(c.weight_loss_with_depletion_pct);

    // Criterion 2: BMI < 20 and loss > 2 %.
    let (low_bmi, bmi_detail): (Tri, String) = match &t.bmi {
        Some(bmi) => {
            inputs.push(InputUsed::from_value("bmi", bmi));
            (
                Some(below(bmi.value, c.low_bmi)),
                format!("BMI {}", compare_text(bmi.value, &[c.low_bmi])),
            )
        }
        None => (
            None,
            "no recent BMI (measured, or from a recent weight and a height)".to_owned(),
        ),
    };
    let c2 = tri_and([low_bmi, small_loss]);

    // Criterion 3: sarcopenia and loss > 2 %.
    let (sarcopenia, sarc_detail): (Tri, String) = match &t.smi {
        Some(smi) => {
            inputs.push(InputUsed::from_value("l3_smi", smi));
            let cuts = c
                .sarcopenia_smi
                .applicable(t.demographics.sex_for_cutoffs());
            (
                below_all(smi.value, &cuts),
                format!("L3 SMI {}", compare_text(smi.value, &cuts)),
            )
        }
        None => (
            None,
            format!(
                "no L3 skeletal muscle index within {} days",
                t.rules.body_composition_lookback_days
            ),
        ),
    };
    let c3 = tri_and([sarcopenia, small_loss]);

    let loss_text = loss.describe();
    let criteria = vec![
        Criterion {
            name: format!(
                "weight loss > {} % within 6 months",
                format_value(c.weight_loss_pct)
            ),
            met: c1,
            detail: loss_text.clone(),
        },
        Criterion {
            name: format!(
                "BMI < {} and weight loss > {} %",
                format_value(c.low_bmi),
                format_value(c.weight_loss_with_depletion_pct)
            ),
            met: c2,
            detail: format!("{bmi_detail}; {loss_text}"),
        },
        Criterion {
            name: format!(
                "sarcopenia and weight loss > {} %",
                format_value(c.weight_loss_with_depletion_pct)
            ),
            met: c3,
            detail: format!("{sarc_detail}; {loss_text}"),
        },
    ];
    let status = match tri_or([c1, c2, c3]) {
        Some(true) => FearonStatus::Cachexia,
        Some(false) => FearonStatus::NotCachexia,
        None => FearonStatus::Unknown,
    };
    let reason = reason_from_criteria(&criteria, status == FearonStatus::Cachexia);
    IndexResult {
        index: "fearon_2011",
        status,
        reason,
        value: None,
        cutoff: None,
        criteria,
        inputs,
    }
}

/// For a positive result the first met criterion; otherwise the criteria
/// that are not met or undecided.
pub(crate) fn reason_from_criteria(criteria: &[Criterion], positive: bool) -> String {
    if positive && let Some(c) = criteria.iter().find(|c| c.met == Some(true)) {
        return format!("{}: {}", c.name, c.detail);
    }
    let undecided: Vec<String> = criteria
        .iter()
        .filter(|c| c.met.is_none())
        .map(|c| format!("cannot tell whether {} ({})", c.name, c.detail))
        .collect();
    if undecided.is_empty() {
        let all: Vec<String> = criteria
            .iter()
            .map(|c| format!("not {} ({})", c.name, c.detail))
            .collect();
        all.join("; ")
    } else {
        undecided.join("; ")
    }
}
