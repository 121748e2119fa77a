//! Cachexia index (CXI) and the modified, imaging-free CXI (mCXI).
//!
//! - CXI (Jafri et al., Cancer Med 2015, advanced NSCLC) = SMI (cm²/m²) ×
//!   albumin (g/dL) / NLR. Low CXI (< cut-off, 35 in the original cohort,
//!   configurable per sex) means high risk.
//! - mCXI = albumin / NLR / (urea / creatinine), the urea-to-creatinine ratio
//!   (UCR) standing in for SMI. Cut-off 0.113 from a colorectal cohort
//!   (Anticancer Res 2025, PMID 39758240; median 0.089, range 0.012–0.354).
//!
//! Units for mCXI (an assumption, stated because the formula is not unit-free):
//! albumin in g/dL, urea as blood urea nitrogen (BUN) in mg/dL and creatinine
//! in mg/dL. With typical values (albumin 4.0 g/dL, NLR 2.5, BUN 15 mg/dL,
//! creatinine 0.8 mg/dL) this gives 4.0 / 2.5 / 18.75 ≈ 0.085, matching the
//! published median 0.089; SI units (albumin g/L, urea mmol/L, creatinine
//! µmol/L) would give values around 200, and a molar UCR around 0.2, neither
//! consistent with the published range. The timeline already normalises
//! urea nitrogen and creatinine to mg/dL and albumin to g/dL.

use serde::Serialize;

use super::cutoffs::Cutoffs;
use super::{IndexResult, InputUsed, Tri, below, below_all, compare_text, single};
use crate::clinical::codes::Analyte;
use crate::clinical::provenance::format_value;
use crate::clinical::timeline::Timeline;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CxiStatus {
    /// Below the cut-off: high risk.
    Low,
    NotLow,
    Unknown,
}

impl From<Tri> for CxiStatus {
    fn from(t: Tri) -> Self {
        match t {
            Some(true) => Self::Low,
            Some(false) => Self::NotLow,
            None => Self::Unknown,
        }
    }
}

fn unknown(index: &'static str, reason: String, inputs: Vec<InputUsed>) -> IndexResult<CxiStatus> {
    IndexResult {
        index,
        status: CxiStatus::Unknown,
        reason,
        value: None,
        cutoff: None,
        criteria: vec![],
        inputs,
    }
}

fn lab_missing(t: &Timeline, what: &str) -> String {
    format!("no {what} within {} days", t.rules.lab_lookback_days)
}

pub fn cxi(t: &Timeline, cutoffs: &Cutoffs) -> IndexResult<CxiStatus> {
    const INDEX: &str = "cxi_jafri_2015";
    let mut inputs = Vec::new();
    let mut missing = Vec::new();
    match &t.smi {
        Some(smi) => inputs.push(InputUsed::from_value("l3_smi", smi)),
        None => missing.push(format!(
            "no L3 skeletal muscle index within {} days",
            t.rules.body_composition_lookback_days
        )),
    }
    let albumin = t.recent(Analyte::Albumin);
    match albumin {
        Some(a) => inputs.push(InputUsed::from_measurement("albumin", a)),
        None => missing.push(lab_missing(t, "albumin")),
    }
    match &t.nlr {
        Some(n) => inputs.push(InputUsed::from_value("nlr", n)),
        None => missing.push(lab_missing(t, "same-day neutrophil and lymphocyte counts")),
    }
    let (Some(smi), Some(albumin), Some(nlr)) = (&t.smi, albumin, &t.nlr) else {
        return unknown(INDEX, missing.join("; "), inputs);
    };
    if nlr.value <= 0.0 {
        return unknown(
            INDEX,
            "NLR is 0 (no neutrophils): CXI is undefined".into(),
            inputs,
        );
    }
    let value = smi.value * albumin.value / nlr.value;
    let cuts = cutoffs.cxi.low.applicable(t.demographics.sex_for_cutoffs());
    IndexResult {
        index: INDEX,
        status: below_all(value, &cuts).into(),
        reason: format!(
            "CXI = SMI {} × albumin {} / NLR {} = {}",
            format_value(smi.value),
            format_value(albumin.value),
            format_value(nlr.value),
            compare_text(value, &cuts)
        ),
        value: Some(value),
        cutoff: single(&cuts),
        criteria: vec![],
        inputs,
    }
}

pub fn mcxi(t: &Timeline, cutoffs: &Cutoffs) -> IndexResult<CxiStatus> {
    const INDEX: &str = "mcxi_ucr";
    let mut inputs = Vec::new();
    let mut missing = Vec::new();
    let albumin = t.recent(Analyte::Albumin);
    let bun = t.recent(Analyte::UreaNitrogen);
    let creatinine = t.recent(Analyte::Creatinine);
    for (name, label, m) in [
        ("albumin", "albumin", albumin),
        ("urea_nitrogen", "urea nitrogen", bun),
        ("creatinine", "creatinine", creatinine),
    ] {
        match m {
            Some(m) => inputs.push(InputUsed::from_measurement(name, m)),
            None => missing.push(lab_missing(t, label)),
        }
    }
    match &t.nlr {
        Some(n) => inputs.push(InputUsed::from_value("nlr", n)),
        None => missing.push(lab_missing(t, "same-day neutrophil and lymphocyte counts")),
    }
    let (Some(albumin), Some(bun), Some(creatinine), Some(nlr)) =
        (albumin, bun, creatinine, &t.nlr)
    else {
        return unknown(INDEX, missing.join("; "), inputs);
    };
    if nlr.value <= 0.0 || bun.value <= 0.0 {
        return unknown(
            INDEX,
            "NLR or urea nitrogen is 0: mCXI is undefined".into(),
            inputs,
        );
    }
    let ucr = bun.value / creatinine.value;
    let value = albumin.value / nlr.value / ucr;
    let cut = cutoffs.mcxi.low;
    IndexResult {
        index: INDEX,
        status: Some(below(value, cut)).into(),
        reason: format!(
            "mCXI = albumin {} g/dL / NLR {} / (BUN {} / creatinine {} mg/dL) = {} \
             (cut-off derived in colorectal cancer)",
            format_value(albumin.value),
            format_value(nlr.value),
            format_value(bun.value),
            format_value(creatinine.value),
            compare_text(value, &[cut])
        ),
        value: Some(value),
        cutoff: Some(cut),
        criteria: vec![],
        inputs,
    }
}
