//! The patient timeline: everything the cachexia service reads from FHIR,
//! normalised, dated and cited, as it stood on the index date.
//!
//! Derived values and their rules (all windows in [`TimelineRules`]):
//! - **Current weight**: the latest weight within `current_weight_days` (30)
//!   before the index date, inclusive.
//! - **Weight change over N months** (N = 1, 3, 6, and 12 for GLIM's "beyond 6
//!   months"): the reference is the weight closest to *current weight date − N
//!   calendar months*, within ± the window's tolerance (7, 14, 30, 30 days) and
//!   strictly before the current weight. Anchoring on the current weight's date
//!   keeps the interval between the two measurements at N months ± tolerance.
//!   Ties go to the earlier measurement, then the source. Change = (current −
//!   reference) / reference × 100; loss is its negative.
//! - **BMI**: the more recent of the latest measured BMI within
//!   `bmi_lookback_days` (30) and a BMI derived from the current weight and the
//!   latest height (any date: adult height is stable); a tie goes to the
//!   measured value. Derived values are flagged `derived`.
//! - **NLR**: neutrophils / lymphocytes (absolute counts) measured on the same
//!   calendar day, the latest such day within `lab_lookback_days` (90); a day
//!   whose lymphocyte count is zero is passed over (the ratio is undefined).
//! - **SMI**: the more recent of the latest measured `l3-smi` and one derived
//!   from the latest `l3-sma` / height (m)², both within
//!   `body_composition_lookback_days` (90).
//! - Latest labs (albumin, CRP, creatinine, urea nitrogen, …) for the indices
//!   are taken within `lab_lookback_days`; performance status within
//!   `performance_lookback_days`.

use chrono::{Months, NaiveDate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::codes::Analyte;
use super::demographics::Demographics;
use super::diagnoses::{self, CachexiaDiagnosis, CancerDiagnosis, StagingObservation};
use super::notes::{self, NotRetrieved, Note};
use super::observations;
use super::provenance::{DerivedValue, Measurement, SourceRef};
use crate::fhir::PatientRecord;

/// Windows used to pick measurements; defaults are documented in the module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimelineRules {
    pub current_weight_days: u32,
    pub tolerance_1m_days: u32,
    pub tolerance_3m_days: u32,
    pub tolerance_6m_days: u32,
    pub tolerance_12m_days: u32,
    pub bmi_lookback_days: u32,
    pub lab_lookback_days: u32,
    pub body_composition_lookback_days: u32,
    pub performance_lookback_days: u32,
}

impl Default for TimelineRules {
    fn default() -> Self {
        Self {
            current_weight_days: 30,
            tolerance_1m_days: 7,
            tolerance_3m_days: 14,
            tolerance_6m_days: 30,
            tolerance_12m_days: 30,
            bmi_lookback_days: 30,
            lab_lookback_days: 90,
            body_composition_lookback_days: 90,
            performance_lookback_days: 90,
        }
    }
}

/// A value present in the data but not used, with the reason (for explain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedValue {
    pub source: SourceRef,
    /// The code that made it relevant, as `system|code` or a bare code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub reason: String,
}

impl SkippedValue {
    pub(crate) fn new(source: SourceRef, code: Option<String>, reason: impl Into<String>) -> Self {
        Self {
            source,
            code,
            reason: reason.into(),
        }
    }
}

/// Weight change between a reference weight and the current weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightChange {
    /// The nominal window (1, 3, 6 or 12 months).
    pub months: u32,
    /// (current − reference) / reference × 100.
    pub percent_change: f64,
    /// −percent_change: positive means weight was lost.
    pub loss_percent: f64,
    pub reference: Measurement,
    pub current: Measurement,
    pub days_between: i64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct WeightTrajectory {
    pub current: Option<Measurement>,
    pub one_month: Option<WeightChange>,
    pub three_months: Option<WeightChange>,
    pub six_months: Option<WeightChange>,
    /// GLIM's "beyond 6 months" horizon.
    pub twelve_months: Option<WeightChange>,
}

impl WeightTrajectory {
    /// The windows of at most 6 months that could be computed.
    pub fn within_six_months(&self) -> impl Iterator<Item = &WeightChange> {
        [&self.one_month, &self.three_months, &self.six_months]
            .into_iter()
            .flatten()
    }
}

/// The normalised patient timeline. Build it with [`Timeline::from_record`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub index_date: NaiveDate,
    pub rules: TimelineRules,
    pub demographics: Demographics,
    /// Cancer diagnoses, the primary cancer first (see `diagnoses`).
    pub cancers: Vec<CancerDiagnosis>,
    /// Recorded cachexia diagnoses, active first.
    pub cachexia_diagnoses: Vec<CachexiaDiagnosis>,
    pub staging_observations: Vec<StagingObservation>,
    /// Measurements by analyte, oldest first.
    pub series: BTreeMap<Analyte, Vec<Measurement>>,
    pub weight: WeightTrajectory,
    pub bmi: Option<DerivedValue>,
    pub nlr: Option<DerivedValue>,
    pub smi: Option<DerivedValue>,
    pub notes: Vec<Note>,
    pub not_retrieved: Vec<NotRetrieved>,
    /// Values we recognised but did not use, with reasons.
    pub skipped: Vec<SkippedValue>,
    /// Observations whose codes we do not use (counted, not listed).
    pub ignored_observations: usize,
}

impl Timeline {
    /// Build the timeline as it stood on `index_date`, with default rules.
    pub fn from_record(record: &PatientRecord, index_date: NaiveDate) -> Timeline {
        Self::from_record_with_rules(record, index_date, TimelineRules::default())
    }

    /// Build the timeline with explicit window rules.
    pub fn from_record_with_rules(
        record: &PatientRecord,
        index_date: NaiveDate,
        rules: TimelineRules,
    ) -> Timeline {
        let mut skipped = Vec::new();
        let demographics = Demographics::from_patient(record.patient.as_ref(), index_date);
        let obs = observations::extract(&record.observations, index_date, &mut skipped);
        let conditions =
            diagnoses::extract_conditions(&record.conditions, index_date, &mut skipped);
        let (cancers, cachexia_diagnoses) = diagnoses::finish(conditions, &obs.staging);
        let notes = notes::extract(&record.documents, &record.reports, index_date, &mut skipped);

        let mut timeline = Timeline {
            index_date,
            rules,
            demographics,
            cancers,
            cachexia_diagnoses,
            staging_observations: obs.staging,
            series: obs.series,
            weight: WeightTrajectory::default(),
            bmi: None,
            nlr: None,
            smi: None,
            notes: notes.notes,
            not_retrieved: notes.not_retrieved,
            skipped,
            ignored_observations: obs.ignored,
        };
        timeline.weight = timeline.weight_trajectory();
        timeline.bmi = timeline.derive_bmi();
        timeline.nlr = timeline.derive_nlr();
        timeline.smi = timeline.derive_smi();
        timeline
    }

    /// Adds measurements that do not come from FHIR Observations — L3 body
    /// composition measured by the imaging pipeline on a cached CT series —
    /// and recomputes what derives from them (SMI, and for completeness BMI,
    /// NLR and the weight trajectory).
    ///
    /// They join the analyte's series like any Observation: the latest value
    /// within the look-back wins, and on the same day the recorded
    /// Observation wins (series order is date, then source, and
    /// `ImagingStudy/…` sorts before `Observation/…`) — a body composition a
    /// radiologist recorded beats our threshold segmentation of the same CT.
    /// Values dated after the index date are skipped, as for Observations.
    pub fn add_measurements(
        &mut self,
        measurements: impl IntoIterator<Item = (Analyte, Measurement)>,
    ) {
        for (analyte, m) in measurements {
            if m.date > self.index_date {
                self.skipped.push(SkippedValue::new(
                    m.source.clone(),
                    Some(m.code.clone()),
                    "dated after the index date",
                ));
                continue;
            }
            let series = self.series.entry(analyte).or_default();
            series.push(m);
            series.sort_by(|a, b| (a.date, &a.source).cmp(&(b.date, &b.source)));
        }
        self.weight = self.weight_trajectory();
        self.bmi = self.derive_bmi();
        self.nlr = self.derive_nlr();
        self.smi = self.derive_smi();
    }

    /// All measurements of `analyte`, oldest first.
    pub fn series(&self, analyte: Analyte) -> &[Measurement] {
        self.series.get(&analyte).map_or(&[], Vec::as_slice)
    }

    /// The latest measurement of `analyte`, at any date up to the index date.
    pub fn latest(&self, analyte: Analyte) -> Option<&Measurement> {
        self.series(analyte).last()
    }

    /// The latest measurement no more than `days` before the index date.
    pub fn latest_within(&self, analyte: Analyte, days: u32) -> Option<&Measurement> {
        self.latest(analyte)
            .filter(|m| (self.index_date - m.date).num_days() <= i64::from(days))
    }

    /// The latest measurement recent enough to describe the patient on the
    /// index date, by the analyte's lookback rule (height: any date).
    pub fn recent(&self, analyte: Analyte) -> Option<&Measurement> {
        let r = &self.rules;
        let days = match analyte {
            Analyte::BodyHeight => return self.latest(analyte),
            Analyte::BodyWeight => r.current_weight_days,
            Analyte::Bmi => r.bmi_lookback_days,
            Analyte::Ecog | Analyte::Karnofsky => r.performance_lookback_days,
            Analyte::L3Smi
            | Analyte::L3Sma
            | Analyte::L3MuscleHu
            | Analyte::L3Vat
            | Analyte::L3Sat => r.body_composition_lookback_days,
            _ => r.lab_lookback_days,
        };
        self.latest_within(analyte, days)
    }

    /// The primary cancer (first of `cancers`).
    pub fn primary_cancer(&self) -> Option<&CancerDiagnosis> {
        self.cancers.first()
    }

    pub fn has_active_cancer(&self) -> bool {
        self.cancers.iter().any(|c| c.active)
    }

    /// An active recorded cachexia diagnosis, if any.
    pub fn active_cachexia_diagnosis(&self) -> Option<&CachexiaDiagnosis> {
        self.cachexia_diagnoses.iter().find(|c| c.active)
    }

    fn weight_trajectory(&self) -> WeightTrajectory {
        let Some(current) = self.recent(Analyte::BodyWeight).cloned() else {
            return WeightTrajectory::default();
        };
        let r = &self.rules;
        let change = |months, tolerance| {
            weight_change(
                self.series(Analyte::BodyWeight),
                &current,
                months,
                tolerance,
            )
        };
        WeightTrajectory {
            one_month: change(1, r.tolerance_1m_days),
            three_months: change(3, r.tolerance_3m_days),
            six_months: change(6, r.tolerance_6m_days),
            twelve_months: change(12, r.tolerance_12m_days),
            current: Some(current),
        }
    }

    fn derive_bmi(&self) -> Option<DerivedValue> {
        let measured = self.recent(Analyte::Bmi).map(DerivedValue::measured);
        let derived = match (&self.weight.current, self.latest(Analyte::BodyHeight)) {
            (Some(w), Some(h)) => {
                let metres = h.value / 100.0;
                Some(DerivedValue::computed(
                    w.value / (metres * metres),
                    Analyte::Bmi.unit(),
                    vec![w.clone(), h.clone()],
                ))
            }
            _ => None,
        };
        newer_preferring_measured(
            measured,
            derived,
            self.weight.current.as_ref().map(|w| w.date),
        )
    }

    fn derive_nlr(&self) -> Option<DerivedValue> {
        let lookback = self.rules.lab_lookback_days;
        let neutrophils = self.series(Analyte::Neutrophils);
        let lymphocytes = self.series(Analyte::Lymphocytes);
        // Latest day first; within a day the last value in source order.
        neutrophils.iter().rev().find_map(|n| {
            if (self.index_date - n.date).num_days() > i64::from(lookback) {
                return None;
            }
            let l = lymphocytes.iter().rev().find(|l| l.date == n.date)?;
            if l.value <= 0.0 {
                return None;
            }
            Some(DerivedValue::computed(
                n.value / l.value,
                "1",
                vec![n.clone(), l.clone()],
            ))
        })
    }

    fn derive_smi(&self) -> Option<DerivedValue> {
        let measured = self.recent(Analyte::L3Smi).map(DerivedValue::measured);
        let derived = match (
            self.recent(Analyte::L3Sma),
            self.latest(Analyte::BodyHeight),
        ) {
            (Some(a), Some(h)) => {
                let metres = h.value / 100.0;
                Some(DerivedValue::computed(
                    a.value / (metres * metres),
                    Analyte::L3Smi.unit(),
                    vec![a.clone(), h.clone()],
                ))
            }
            _ => None,
        };
        newer_preferring_measured(
            measured,
            derived,
            self.recent(Analyte::L3Sma).map(|a| a.date),
        )
    }
}

/// Pick the more recent of a measured and a derived value; the derived
/// value's date is that of its time-varying input (`derived_date`), not the
/// height. A tie goes to the measured value.
fn newer_preferring_measured(
    measured: Option<DerivedValue>,
    derived: Option<DerivedValue>,
    derived_date: Option<NaiveDate>,
) -> Option<DerivedValue> {
    match (measured, derived) {
        (Some(m), Some(mut d)) => {
            if let Some(date) = derived_date {
                d.date = date;
            }
            Some(if d.date > m.date { d } else { m })
        }
        (m, d) => m.or(d.map(|mut d| {
            if let Some(date) = derived_date {
                d.date = date;
            }
            d
        })),
    }
}

fn weight_change(
    weights: &[Measurement],
    current: &Measurement,
    months: u32,
    tolerance_days: u32,
) -> Option<WeightChange> {
    let target = current.date.checked_sub_months(Months::new(months))?;
    let tolerance = i64::from(tolerance_days);
    let reference = weights
        .iter()
        .filter(|w| w.date < current.date && (w.date - target).num_days().abs() <= tolerance)
        .min_by(|a, b| {
            let key = |w: &Measurement| ((w.date - target).num_days().abs(), w.date);
            key(a).cmp(&key(b)).then_with(|| a.source.cmp(&b.source))
        })?;
    if reference.value <= 0.0 {
        return None;
    }
    let percent_change = (current.value - reference.value) * 100.0 / reference.value;
    Some(WeightChange {
        months,
        percent_change,
        loss_percent: -percent_change,
        reference: reference.clone(),
        current: current.clone(),
        days_between: (current.date - reference.date).num_days(),
    })
}
