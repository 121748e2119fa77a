//! Classic, deterministic cachexia and body-composition indices, always shown
//! beside the model. Each returns an [`IndexResult`]: a three-valued status,
//! the reason (the deciding comparison, or what is missing), the criteria
//! evaluated and the inputs used with their sources.
//!
//! Conventions:
//! - "Unknown" means the data cannot decide, never "no". A rule is decided
//!   as soon as the known inputs settle it (three-valued logic: `false AND
//!   unknown` is false, `true OR unknown` is true).
//! - Comparisons are strict as published ("> 5 %", "< 52.4"): a value exactly
//!   at a cut-off does not meet it. Values are rounded to 6 decimals before
//!   comparing, so binary floating-point noise (5.000000000000001 %) does not
//!   turn "exactly 5 %" into "more than 5 %".
//! - When the sex (or BMI band, or age band) that selects a cut-off is
//!   unknown, the index is decided only if every candidate cut-off gives the
//!   same answer; otherwise it is Unknown.

pub mod assessment;
pub mod cutoffs;
pub mod cxi;
pub mod fearon;
pub mod glim;
pub mod sarcopenia;

use chrono::NaiveDate;
use serde::Serialize;

use super::provenance::{DerivedValue, Measurement, SourceRef, format_value};
use super::timeline::{Timeline, WeightChange};

/// One index's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexResult<S> {
    /// Stable identifier, e.g. `fearon_2011`.
    pub index: &'static str,
    pub status: S,
    /// Why this status: the deciding comparison, or what is missing.
    pub reason: String,
    /// The index value where it is a number (SMI, CXI, mCXI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The cut-off applied, when a single one applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cutoff: Option<f64>,
    /// Criteria evaluated (multi-criteria definitions: Fearon, GLIM).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<Criterion>,
    pub inputs: Vec<InputUsed>,
}

/// One criterion of a multi-criteria definition; `met: None` is undecided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Criterion {
    pub name: String,
    pub met: Option<bool>,
    pub detail: String,
}

/// An input an index used, with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputUsed {
    pub name: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub date: NaiveDate,
    pub derived: bool,
    pub sources: Vec<SourceRef>,
}

impl InputUsed {
    pub(crate) fn from_value(name: &'static str, v: &DerivedValue) -> Self {
        Self {
            name,
            value: v.value,
            unit: v.unit,
            date: v.date,
            derived: v.derived,
            sources: v.sources(),
        }
    }

    pub(crate) fn from_measurement(name: &'static str, m: &Measurement) -> Self {
        Self {
            name,
            value: m.value,
            unit: m.unit,
            date: m.date,
            derived: false,
            sources: vec![m.source.clone()],
        }
    }

    pub(crate) fn from_weight_change(name: &'static str, w: &WeightChange) -> Self {
        Self {
            name,
            value: w.loss_percent,
            unit: "%",
            date: w.current.date,
            derived: true,
            sources: vec![w.reference.source.clone(), w.current.source.clone()],
        }
    }
}

/// Three-valued truth: `None` is unknown.
pub(crate) type Tri = Option<bool>;

/// Kleene OR: true if any is true, false if all are false, else unknown.
pub(crate) fn tri_or(items: impl IntoIterator<Item = Tri>) -> Tri {
    let mut all_false = true;
    for item in items {
        match item {
            Some(true) => return Some(true),
            Some(false) => {}
            None => all_false = false,
        }
    }
    all_false.then_some(false)
}

/// Kleene AND: false if any is false, true if all are true, else unknown.
pub(crate) fn tri_and(items: impl IntoIterator<Item = Tri>) -> Tri {
    let mut all_true = true;
    for item in items {
        match item {
            Some(false) => return Some(false),
            Some(true) => {}
            None => all_true = false,
        }
    }
    all_true.then_some(true)
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// `value < cutoff`, strict, after rounding away floating-point noise.
pub(crate) fn below(value: f64, cutoff: f64) -> bool {
    round6(value) < cutoff
}

/// `value > cutoff`, strict, after rounding away floating-point noise.
pub(crate) fn above(value: f64, cutoff: f64) -> bool {
    round6(value) > cutoff
}

/// `value < c` decided only if all candidate cut-offs agree.
pub(crate) fn below_all(value: f64, cutoffs: &[f64]) -> Tri {
    let below_count = cutoffs.iter().filter(|c| below(value, **c)).count();
    if below_count == cutoffs.len() {
        Some(true)
    } else if below_count == 0 {
        Some(false)
    } else {
        None
    }
}

/// The single cut-off, or `None` when several candidates applied.
pub(crate) fn single(cutoffs: &[f64]) -> Option<f64> {
    match cutoffs {
        [c] => Some(*c),
        _ => None,
    }
}

/// `12.5 < 35` / `40 ≥ 35`, for reasons.
pub(crate) fn compare_text(value: f64, cutoffs: &[f64]) -> String {
    let list = cutoffs
        .iter()
        .map(|c| format_value(*c))
        .collect::<Vec<_>>()
        .join(" / ");
    match below_all(value, cutoffs) {
        Some(true) => format!("{} < {list}", format_value(value)),
        Some(false) => format!("{} ≥ {list}", format_value(value)),
        None => format!(
            "{} lies between the candidate cut-offs {list}",
            format_value(value)
        ),
    }
}

/// Loss of weight within the past 6 months, as evidence for "> x %" rules.
///
/// The largest loss over the 1-, 3- and 6-month windows is used: a loss over
/// a shorter window is also a loss "within 6 months". A "> x %" rule is true
/// when that loss exceeds x; it is false only when the 6-month window itself
/// could be computed (otherwise a larger loss over 6 months cannot be ruled
/// out) and no window exceeds x.
pub(crate) struct LossWithinSixMonths<'a> {
    pub largest: Option<&'a WeightChange>,
    pub six_month_window_known: bool,
    /// Why nothing could be computed, for reasons.
    pub missing: Option<String>,
}

impl<'a> LossWithinSixMonths<'a> {
    pub(crate) fn of(t: &'a Timeline) -> Self {
        let largest = t
            .weight
            .within_six_months()
            .max_by(|a, b| a.loss_percent.total_cmp(&b.loss_percent));
        let missing = if t.weight.current.is_none() {
            Some(format!(
                "no body weight within {} days before the index date",
                t.rules.current_weight_days
            ))
        } else if t.weight.six_months.is_none() {
            Some(format!(
                "no body weight about 6 months (± {} days) before the current weight",
                t.rules.tolerance_6m_days
            ))
        } else {
            None
        };
        Self {
            largest,
            six_month_window_known: t.weight.six_months.is_some(),
            missing,
        }
    }

    pub(crate) fn exceeds(&self, pct: f64) -> Tri {
        match self.largest {
            Some(w) if above(w.loss_percent, pct) => Some(true),
            _ if self.six_month_window_known => Some(false),
            _ => None,
        }
    }

    /// `weight loss 6.2 % over 6 months (72 kg on … (Observation/a) → 67.5 kg …)`.
    pub(crate) fn describe(&self) -> String {
        let mut s = match self.largest {
            Some(w) => describe_change(w),
            None => "no weight change could be computed".to_owned(),
        };
        if let Some(missing) = &self.missing {
            s.push_str("; ");
            s.push_str(missing);
        }
        s
    }

    pub(crate) fn input(&self) -> Option<InputUsed> {
        self.largest
            .map(|w| InputUsed::from_weight_change("weight_loss_within_6_months", w))
    }
}

pub(crate) fn describe_change(w: &WeightChange) -> String {
    let verb = if w.loss_percent >= 0.0 {
        "loss"
    } else {
        "gain"
    };
    format!(
        "weight {verb} {} % over {} month{} ({} → {})",
        format_value(w.loss_percent.abs()),
        w.months,
        if w.months == 1 { "" } else { "s" },
        w.reference,
        w.current
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kleene_logic() {
        assert_eq!(tri_or([Some(false), None]), None);
        assert_eq!(tri_or([Some(false), None, Some(true)]), Some(true));
        assert_eq!(tri_or([Some(false), Some(false)]), Some(false));
        assert_eq!(tri_and([Some(true), None]), None);
        assert_eq!(tri_and([None, Some(false)]), Some(false));
        assert_eq!(tri_and([Some(true), Some(true)]), Some(true));
    }

    #[test]
    fn comparisons_are_strict_and_ignore_float_noise() {
        assert!(!above(5.000_000_000_000_001, 5.0));
        assert!(above(5.000_01, 5.0));
        assert!(!below(52.4, 52.4));
        assert!(below(52.399_9, 52.4));
        assert_eq!(below_all(40.0, &[38.5, 52.4]), None);
        assert_eq!(below_all(30.0, &[38.5, 52.4]), Some(true));
        assert_eq!(below_all(52.4, &[38.5, 52.4]), Some(false));
    }
}
