//! Sanity statistics of a generated cohort, computed on the *observed* data
//! through the project's clinical code (`Timeline`, `ClassicAssessment`), as a
//! model would see it:
//!
//! - prevalence by cancer type, stage and split;
//! - the classic indices (Fearon 2011, CXI, mCXI) against the label;
//! - single-feature AUROC (no single input should decide the label);
//! - label rate by albumin tertile, by symptom mention, by CT sarcopenia;
//! - a modality ablation with a plain L2 logistic regression (train split →
//!   test split): clinical → + labs → + notes → + CT. This is a floor for the
//!   real model, not the model.
//!
//! `oncohooks synth --stats` prints the report; `docs/synthetic-cohort.md`
//! records one run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Split, SyntheticPatient, cancer_label, stage_label};
use crate::clinical::{
    Analyte, ClassicAssessment, Cutoffs, CxiStatus, FearonStatus, Sex, StageGroup, Timeline,
};

/// Symptom groups the naive note reader looks for (keywords, lower case).
const SYMPTOM_KEYWORDS: [(&str, &[&str]); 8] = [
    (
        "appetite",
        &[
            "appetite",
            "anorexia",
            "eating about half",
            "interest in food",
        ],
    ),
    ("early_satiety", &["satiety", "full after"]),
    ("nausea", &["nausea", "queasiness", "n/v"]),
    ("taste", &["taste"]),
    ("fatigue", &["fatigue", "tired", "energy"]),
    (
        "weight_loss",
        &[
            "weight loss",
            "lost some weight",
            "loose",
            "thinner",
            "belt",
            "weight has been stable",
        ],
    ),
    ("dysphagia", &["swallow", "dysphagia", "sticking"]),
    ("weakness", &["weakness", "weaker"]),
];

const NEGATION_CUES: [&str; 7] = [
    "denies",
    "no ",
    "not ",
    "without",
    "is good",
    "eating well",
    "stable",
];
const HEDGE_CUES: [&str; 8] = [
    "may ",
    "possibly",
    "unsure",
    "not sure",
    "unclear",
    "a bit",
    "mild",
    "occasional",
];
/// Sentences about someone or something else.
const OFF_TOPIC_CUES: [&str; 4] = ["wife", "resolved", "regained", "spouse"];

/// What a naive keyword reader finds in the notes (a stand-in for the
/// project's future note extractor; deliberately simple).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NoteSignals {
    pub has_notes: bool,
    /// Per symptom group: +1 affirmed, +0.5 hedged, −1 negated (last wins).
    pub symptoms: [f64; 8],
    pub wasting: bool,
    pub dietitian: bool,
}

impl NoteSignals {
    pub fn read(texts: &[&str]) -> Self {
        let mut out = Self {
            has_notes: !texts.is_empty(),
            ..Self::default()
        };
        for text in texts {
            let lower = text.to_lowercase();
            for sentence in lower.split(['.', '\n', ';']) {
                let s = sentence.trim();
                if s.is_empty() || OFF_TOPIC_CUES.iter().any(|c| s.contains(c)) {
                    continue;
                }
                let negated = NEGATION_CUES.iter().any(|c| s.contains(c))
                    && !s.contains("not quite")
                    && !s.contains("not sure");
                let hedged = HEDGE_CUES.iter().any(|c| s.contains(c));
                for (i, (_, words)) in SYMPTOM_KEYWORDS.iter().enumerate() {
                    if words.iter().any(|w| s.contains(w)) {
                        out.symptoms[i] = if negated {
                            -1.0
                        } else if hedged {
                            0.5
                        } else {
                            1.0
                        };
                    }
                }
                out.wasting |= s.contains("wasting");
                out.dietitian |= s.contains("dietitian");
            }
        }
        out
    }

    /// Affirmed symptoms count 1, hedged 0.5, negated 0.
    pub fn score(&self) -> f64 {
        self.symptoms.iter().map(|v| v.max(0.0)).sum()
    }
}

/// The observed inputs of one patient, through the clinical layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedRow {
    pub label: bool,
    /// The Fearon criterion that made the true label positive (generator
    /// truth, for the report only).
    pub label_reason: Option<&'static str>,
    pub split: Split,
    pub cancer_type: &'static str,
    pub stage: &'static str,
    pub fearon: FearonStatus,
    pub cxi: CxiStatus,
    pub mcxi: CxiStatus,
    pub age: Option<f64>,
    pub male: Option<bool>,
    pub stage_observed: Option<StageGroup>,
    pub cancer_observed: Option<&'static str>,
    /// Largest loss within 6 months (1/3/6-month windows), %.
    pub weight_loss: Option<f64>,
    pub weights: usize,
    pub bmi: Option<f64>,
    pub ecog: Option<f64>,
    pub albumin: Option<f64>,
    pub crp: Option<f64>,
    pub nlr: Option<f64>,
    pub hemoglobin: Option<f64>,
    pub total_protein: Option<f64>,
    pub creatinine: Option<f64>,
    pub urea: Option<f64>,
    pub smi: Option<f64>,
    pub muscle_hu: Option<f64>,
    pub vat: Option<f64>,
    pub sat: Option<f64>,
    pub notes: NoteSignals,
    /// Generator truth known on the index date (all latents except the
    /// treatment response), for the ceiling line of the ablation only.
    pub oracle: Vec<f64>,
}

impl ObservedRow {
    pub fn of(p: &SyntheticPatient) -> Self {
        let record = p.record();
        let t = Timeline::from_record(&record, p.index_date);
        let a = ClassicAssessment::compute(&t, &Cutoffs::default());
        let v = |a: Analyte| t.recent(a).map(|m| m.value);
        let cancer = t.primary_cancer();
        let texts: Vec<&str> = t.notes.iter().map(|n| n.text.as_str()).collect();
        Self {
            label: p.label,
            label_reason: p.truth.label_reason,
            split: p.split,
            cancer_type: cancer_label(p.truth.cancer_type),
            stage: stage_label(p.truth.stage),
            fearon: a.fearon.status,
            cxi: a.cxi.status,
            mcxi: a.mcxi.status,
            age: t.demographics.age.as_ref().map(|a| f64::from(a.years)),
            male: t.demographics.sex_for_cutoffs().map(|s| s == Sex::Male),
            stage_observed: cancer.and_then(|c| c.stage.as_ref()).and_then(|s| s.group),
            cancer_observed: cancer.map(|c| cancer_label(c.cancer_type)),
            weight_loss: t
                .weight
                .within_six_months()
                .map(|w| w.loss_percent)
                .max_by(f64::total_cmp),
            weights: t.series(Analyte::BodyWeight).len(),
            bmi: t.bmi.as_ref().map(|b| b.value),
            ecog: v(Analyte::Ecog),
            albumin: v(Analyte::Albumin),
            crp: v(Analyte::Crp),
            nlr: t.nlr.as_ref().map(|n| n.value),
            hemoglobin: v(Analyte::Hemoglobin),
            total_protein: v(Analyte::TotalProtein),
            creatinine: v(Analyte::Creatinine),
            urea: v(Analyte::UreaNitrogen),
            smi: t.smi.as_ref().map(|s| s.value),
            muscle_hu: v(Analyte::L3MuscleHu),
            vat: v(Analyte::L3Vat),
            sat: v(Analyte::L3Sat),
            notes: NoteSignals::read(&texts),
            oracle: {
                let tr = &p.truth;
                let l = &tr.latents;
                let mut x = vec![
                    l.inflammation,
                    l.anorexia,
                    l.muscle_reserve,
                    l.frailty,
                    l.muscle_quality,
                    l.obstruction,
                    tr.loss_before_index_6m,
                    tr.smi_at(0.0) - super::model::sarcopenia_cutoff(tr.sex),
                    tr.bmi_at(0.0),
                    super::observe::stage_number(tr.stage),
                ];
                x.extend(
                    super::CANCER_TYPES
                        .iter()
                        .map(|c| f64::from(u8::from(*c == tr.cancer_type))),
                );
                x
            },
        }
    }

    /// SMI minus the patient's Fearon sarcopenia cut-off (negative: below).
    fn smi_margin(&self) -> Option<f64> {
        let sex = if self.male? { Sex::Male } else { Sex::Female };
        let cut = super::model::sarcopenia_cutoff(sex);
        self.smi.map(|s| s - cut)
    }
}

/// Area under the ROC curve (Mann–Whitney, ties count one half). `None`
/// when either class is empty.
pub fn auroc(scores: &[(f64, bool)]) -> Option<f64> {
    let mut v: Vec<(f64, bool)> = scores
        .iter()
        .copied()
        .filter(|(s, _)| s.is_finite())
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pos = v.iter().filter(|x| x.1).count() as f64;
    let neg = v.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    // Sum of positive ranks with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let avg = (i + j + 1) as f64 / 2.0;
        rank_sum += avg * v[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Feature groups of the ablation, in the order they are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Clinical,
    Labs,
    Notes,
    Ct,
    /// The generator's latents known on the index date (a ceiling, not an
    /// input a model can have).
    Oracle,
}

fn push_opt(x: &mut Vec<f64>, v: Option<f64>) {
    x.push(v.unwrap_or(f64::NAN));
    x.push(f64::from(u8::from(v.is_none())));
}

/// The feature vector of a row for the groups up to and including `upto`.
/// Missing values are NaN here (imputed with the training mean later) and
/// come with a missing indicator.
fn features(r: &ObservedRow, upto: Group) -> Vec<f64> {
    if upto == Group::Oracle {
        return r.oracle.clone();
    }
    let mut x = Vec::with_capacity(64);
    for t in [
        "lung",
        "pancreas",
        "colorectal",
        "gastric",
        "oesophageal",
        "breast",
        "prostate",
        "head_and_neck",
    ] {
        x.push(f64::from(u8::from(r.cancer_observed == Some(t))));
    }
    for s in [StageGroup::II, StageGroup::III, StageGroup::IV] {
        x.push(f64::from(u8::from(r.stage_observed == Some(s))));
    }
    x.push(f64::from(u8::from(r.stage_observed.is_none())));
    push_opt(&mut x, r.age);
    x.push(f64::from(u8::from(r.male == Some(true))));
    push_opt(&mut x, r.weight_loss);
    push_opt(&mut x, r.bmi);
    push_opt(&mut x, r.ecog);
    if upto == Group::Clinical {
        return x;
    }
    push_opt(&mut x, r.albumin);
    push_opt(&mut x, r.crp.map(|c| c.max(0.1).ln()));
    push_opt(&mut x, r.nlr.map(|n| n.max(0.05).ln()));
    push_opt(&mut x, r.hemoglobin);
    push_opt(&mut x, r.total_protein);
    push_opt(&mut x, r.creatinine);
    push_opt(&mut x, r.urea.map(|u| u.max(1.0).ln()));
    if upto == Group::Labs {
        return x;
    }
    x.push(f64::from(u8::from(r.notes.has_notes)));
    for v in r.notes.symptoms {
        x.push(v.max(0.0));
        x.push(f64::from(u8::from(v < 0.0)));
    }
    x.push(f64::from(u8::from(r.notes.wasting)));
    x.push(f64::from(u8::from(r.notes.dietitian)));
    if upto == Group::Notes {
        return x;
    }
    push_opt(&mut x, r.smi_margin());
    push_opt(&mut x, r.muscle_hu);
    push_opt(&mut x, r.vat.map(|v| v.max(1.0).ln()));
    push_opt(&mut x, r.sat.map(|v| v.max(1.0).ln()));
    x
}

/// Plain L2-regularised logistic regression by full-batch gradient descent
/// on standardised features (missing values set to the training mean).
struct Logistic {
    mean: Vec<f64>,
    sd: Vec<f64>,
    w: Vec<f64>,
    b: f64,
}

impl Logistic {
    fn fit(x: &[Vec<f64>], y: &[bool]) -> Self {
        let d = x.first().map_or(0, Vec::len);
        let n = x.len() as f64;
        let mut mean = vec![0.0; d];
        let mut count = vec![0.0; d];
        for row in x {
            for j in 0..d {
                if row[j].is_finite() {
                    mean[j] += row[j];
                    count[j] += 1.0;
                }
            }
        }
        for j in 0..d {
            mean[j] = if count[j] > 0.0 {
                mean[j] / count[j]
            } else {
                0.0
            };
        }
        let mut sd = vec![0.0; d];
        for row in x {
            for j in 0..d {
                let v = if row[j].is_finite() { row[j] } else { mean[j] };
                sd[j] += (v - mean[j]).powi(2);
            }
        }
        for s in &mut sd {
            *s = (*s / n).sqrt().max(1e-9);
        }
        let mut model = Self {
            mean,
            sd,
            w: vec![0.0; d],
            b: 0.0,
        };
        let z: Vec<Vec<f64>> = x.iter().map(|r| model.standardise(r)).collect();
        let lambda = 1e-3;
        let lr = 0.5;
        for _ in 0..400 {
            let mut gw = vec![0.0; d];
            let mut gb = 0.0;
            for (row, &label) in z.iter().zip(y) {
                let p = model.prob_std(row);
                let e = p - f64::from(u8::from(label));
                gb += e;
                for (g, v) in gw.iter_mut().zip(row) {
                    *g += e * v;
                }
            }
            model.b -= lr * gb / n;
            for (w, g) in model.w.iter_mut().zip(&gw) {
                *w -= lr * (g / n + lambda * *w);
            }
        }
        model
    }

    fn standardise(&self, row: &[f64]) -> Vec<f64> {
        row.iter()
            .enumerate()
            .map(|(j, v)| {
                let v = if v.is_finite() { *v } else { self.mean[j] };
                (v - self.mean[j]) / self.sd[j]
            })
            .collect()
    }

    fn prob_std(&self, z: &[f64]) -> f64 {
        let s: f64 = self.b + z.iter().zip(&self.w).map(|(a, b)| a * b).sum::<f64>();
        super::sample::sigmoid(s)
    }

    fn prob(&self, row: &[f64]) -> f64 {
        self.prob_std(&self.standardise(row))
    }
}

/// One step of the ablation.
#[derive(Debug, Clone, PartialEq)]
pub struct AblationStep {
    pub name: &'static str,
    pub auroc: f64,
    pub accuracy: f64,
    /// Mean |predicted − observed| over 10 equal-count bins.
    pub calibration_error: f64,
}

/// Train on the train split, evaluate on the test split.
pub fn ablation(rows: &[ObservedRow]) -> Vec<AblationStep> {
    let steps = [
        (
            "clinical (demographics, cancer, stage, weight, ECOG)",
            Group::Clinical,
        ),
        ("+ labs", Group::Labs),
        ("+ notes (keyword reader)", Group::Notes),
        ("+ CT body composition", Group::Ct),
        (
            "ceiling: true latents on the index date (not observable)",
            Group::Oracle,
        ),
    ];
    let train: Vec<&ObservedRow> = rows.iter().filter(|r| r.split == Split::Train).collect();
    let test: Vec<&ObservedRow> = rows.iter().filter(|r| r.split == Split::Test).collect();
    if train.is_empty() || test.is_empty() {
        return Vec::new();
    }
    steps
        .into_iter()
        .map(|(name, g)| {
            let x: Vec<Vec<f64>> = train.iter().map(|r| features(r, g)).collect();
            let y: Vec<bool> = train.iter().map(|r| r.label).collect();
            let m = Logistic::fit(&x, &y);
            let scored: Vec<(f64, bool)> = test
                .iter()
                .map(|r| (m.prob(&features(r, g)), r.label))
                .collect();
            let accuracy = scored.iter().filter(|(p, l)| (*p >= 0.5) == *l).count() as f64
                / scored.len() as f64;
            AblationStep {
                name,
                auroc: auroc(&scored).unwrap_or(f64::NAN),
                accuracy,
                calibration_error: calibration_error(&scored, 10),
            }
        })
        .collect()
}

fn calibration_error(scored: &[(f64, bool)], bins: usize) -> f64 {
    let mut v = scored.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let size = v.len().div_ceil(bins).max(1);
    let mut total = 0.0;
    for chunk in v.chunks(size) {
        let p: f64 = chunk.iter().map(|x| x.0).sum::<f64>() / chunk.len() as f64;
        let o: f64 = chunk.iter().filter(|x| x.1).count() as f64 / chunk.len() as f64;
        total += (p - o).abs() * chunk.len() as f64;
    }
    total / v.len().max(1) as f64
}

fn pct(n: usize, d: usize) -> String {
    if d == 0 {
        "–".to_owned()
    } else {
        format!("{:.1} %", 100.0 * n as f64 / d as f64)
    }
}

/// A named reading of a row, for the report's tables.
type Reading<T> = (&'static str, Box<dyn Fn(&ObservedRow) -> T>);

/// Label rate line: `name | n | positives | rate`.
fn rate_line(out: &mut String, name: &str, rows: &[&ObservedRow]) {
    let pos = rows.iter().filter(|r| r.label).count();
    let _ = writeln!(
        out,
        "| {name} | {} | {} |",
        rows.len(),
        pct(pos, rows.len())
    );
}

/// Compute the report for `rows`.
pub fn report(rows: &[ObservedRow]) -> String {
    let mut out = String::new();
    let n = rows.len();
    let pos = rows.iter().filter(|r| r.label).count();
    let _ = writeln!(out, "patients: {n}; cachexia_6m: {pos} ({})\n", pct(pos, n));

    let _ = writeln!(
        out,
        "## Label by first criterion met (true trajectory)\n\n| criterion | patients | share of cohort |\n|---|---|---|"
    );
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows {
        *reasons
            .entry(r.label_reason.unwrap_or("none (no cachexia)"))
            .or_insert(0) += 1;
    }
    for (k, v) in &reasons {
        let _ = writeln!(out, "| {k} | {v} | {} |", pct(*v, n));
    }
    let _ = writeln!(
        out,
        "\n## Prevalence by cancer type\n\n| cancer type | patients | cachexia_6m |\n|---|---|---|"
    );
    let mut by: BTreeMap<&str, Vec<&ObservedRow>> = BTreeMap::new();
    for r in rows {
        by.entry(r.cancer_type).or_default().push(r);
    }
    for (k, v) in &by {
        rate_line(&mut out, k, v);
    }
    let _ = writeln!(
        out,
        "\n## Prevalence by stage\n\n| stage | patients | cachexia_6m |\n|---|---|---|"
    );
    let mut by: BTreeMap<&str, Vec<&ObservedRow>> = BTreeMap::new();
    for r in rows {
        by.entry(r.stage).or_default().push(r);
    }
    for (k, v) in &by {
        rate_line(&mut out, k, v);
    }
    let _ = writeln!(
        out,
        "\n## Prevalence by split\n\n| split | patients | cachexia_6m |\n|---|---|---|"
    );
    for s in Split::ALL {
        let v: Vec<&ObservedRow> = rows.iter().filter(|r| r.split == s).collect();
        rate_line(&mut out, s.label(), &v);
    }

    // Classic indices on the observed data.
    let _ = writeln!(
        out,
        "\n## Classic indices on the observed data vs the label\n"
    );
    let _ = writeln!(
        out,
        "| index | status | patients | cachexia_6m |\n|---|---|---|---|"
    );
    let tri = |f: &dyn Fn(&ObservedRow) -> (u8, &'static str)| {
        let mut groups: BTreeMap<(u8, &'static str), Vec<&ObservedRow>> = BTreeMap::new();
        for r in rows {
            groups.entry(f(r)).or_default().push(r);
        }
        groups
    };
    let fearon = |r: &ObservedRow| match r.fearon {
        FearonStatus::Cachexia => (2, "cachexia"),
        FearonStatus::Unknown => (1, "unknown"),
        FearonStatus::NotCachexia => (0, "not cachexia"),
    };
    let cxi_status = |s: CxiStatus| match s {
        CxiStatus::Low => (2, "low (high risk)"),
        CxiStatus::Unknown => (1, "unknown"),
        CxiStatus::NotLow => (0, "not low"),
    };
    let indices: [Reading<(u8, &'static str)>; 3] = [
        ("Fearon 2011", Box::new(fearon)),
        ("CXI", Box::new(move |r: &ObservedRow| cxi_status(r.cxi))),
        ("mCXI", Box::new(move |r: &ObservedRow| cxi_status(r.mcxi))),
    ];
    let mut summary = String::new();
    for (name, f) in &indices {
        for ((_, label), v) in tri(f.as_ref()).iter().rev() {
            let p = v.iter().filter(|r| r.label).count();
            let _ = writeln!(
                out,
                "| {name} | {label} | {} | {} |",
                v.len(),
                pct(p, v.len())
            );
        }
        let positive: Vec<&ObservedRow> = rows.iter().filter(|r| f(r).0 == 2).collect();
        let tp = positive.iter().filter(|r| r.label).count();
        let negatives = rows.iter().filter(|r| !r.label).count();
        let tn = rows.iter().filter(|r| !r.label && f(r).0 != 2).count();
        let scored: Vec<(f64, bool)> = rows.iter().map(|r| (f64::from(f(r).0), r.label)).collect();
        let acc = (tp + tn) as f64 / n.max(1) as f64;
        let _ = writeln!(
            summary,
            "| {name} | {} | {} | {} | {:.3} | {:.3} |",
            pct(tp, pos),
            pct(tn, negatives),
            pct(tp, positive.len()),
            acc,
            auroc(&scored).unwrap_or(f64::NAN)
        );
    }
    let _ = writeln!(
        out,
        "\nPositive = cachexia / low; unknown counts as negative. AUROC ranks positive > unknown > negative.\n\n\
         | index | sensitivity | specificity | PPV | accuracy | AUROC |\n|---|---|---|---|---|---|\n{summary}"
    );

    // Single features.
    let _ = writeln!(
        out,
        "## Single observed features (AUROC among patients who have the feature)\n\n\
         | feature | coverage | AUROC (direction-free) |\n|---|---|---|"
    );
    let single: [Reading<Option<f64>>; 14] = [
        ("weight loss within 6 months", Box::new(|r| r.weight_loss)),
        ("BMI", Box::new(|r| r.bmi)),
        ("ECOG", Box::new(|r| r.ecog)),
        (
            "stage (observed)",
            Box::new(|r| r.stage_observed.map(|s| s as u8 as f64)),
        ),
        ("age", Box::new(|r| r.age)),
        ("albumin", Box::new(|r| r.albumin)),
        ("CRP", Box::new(|r| r.crp)),
        ("NLR", Box::new(|r| r.nlr)),
        ("hemoglobin", Box::new(|r| r.hemoglobin)),
        ("urea nitrogen", Box::new(|r| r.urea)),
        (
            "note symptom score",
            Box::new(|r| r.notes.has_notes.then(|| r.notes.score())),
        ),
        ("L3 SMI − sarcopenia cut-off", Box::new(|r| r.smi_margin())),
        ("L3 muscle HU", Box::new(|r| r.muscle_hu)),
        ("L3 VAT", Box::new(|r| r.vat)),
    ];
    for (name, f) in &single {
        let scored: Vec<(f64, bool)> = rows.iter().filter_map(|r| Some((f(r)?, r.label))).collect();
        let a = auroc(&scored).map_or(f64::NAN, |a| a.max(1.0 - a));
        let _ = writeln!(out, "| {name} | {} | {a:.3} |", pct(scored.len(), n));
    }

    // Partial signal per modality.
    let _ = writeln!(
        out,
        "\n## Label rate by observed values\n\n| group | patients | cachexia_6m |\n|---|---|---|"
    );
    let mut alb: Vec<f64> = rows.iter().filter_map(|r| r.albumin).collect();
    alb.sort_by(f64::total_cmp);
    if alb.len() >= 3 {
        let t1 = alb[alb.len() / 3];
        let t2 = alb[2 * alb.len() / 3];
        for (name, lo, hi) in [
            (
                format!("albumin < {t1:.1} g/dL (low tertile)"),
                f64::NEG_INFINITY,
                t1,
            ),
            (format!("albumin {t1:.1}–{t2:.1}"), t1, t2),
            (
                format!("albumin ≥ {t2:.1} (high tertile)"),
                t2,
                f64::INFINITY,
            ),
        ] {
            let v: Vec<&ObservedRow> = rows
                .iter()
                .filter(|r| r.albumin.is_some_and(|a| a >= lo && a < hi))
                .collect();
            rate_line(&mut out, &name, &v);
        }
    }
    let groups: [Reading<bool>; 11] = [
        ("no albumin", Box::new(|r| r.albumin.is_none())),
        (
            "notes: appetite loss affirmed",
            Box::new(|r| r.notes.symptoms[0] > 0.0),
        ),
        (
            "notes: appetite loss negated",
            Box::new(|r| r.notes.symptoms[0] < 0.0),
        ),
        (
            "notes: appetite not mentioned",
            Box::new(|r| r.notes.has_notes && r.notes.symptoms[0] == 0.0),
        ),
        (
            "notes: early satiety affirmed",
            Box::new(|r| r.notes.symptoms[1] > 0.0),
        ),
        ("no notes", Box::new(|r| !r.notes.has_notes)),
        (
            "CT: SMI below Fearon cut-off",
            Box::new(|r| r.smi_margin().is_some_and(|m| m < 0.0)),
        ),
        (
            "CT: SMI at or above cut-off",
            Box::new(|r| r.smi_margin().is_some_and(|m| m >= 0.0)),
        ),
        ("no CT", Box::new(|r| r.smi.is_none())),
        (
            "weight loss window unavailable",
            Box::new(|r| r.weight_loss.is_none()),
        ),
        ("only one weight", Box::new(|r| r.weights == 1)),
    ];
    for (name, f) in &groups {
        let v: Vec<&ObservedRow> = rows.iter().filter(|r| f(r)).collect();
        rate_line(&mut out, name, &v);
    }

    let steps = ablation(rows);
    if !steps.is_empty() {
        let _ = writeln!(
            out,
            "\n## Modality ablation (L2 logistic regression, train → test split; a floor, not the model)\n\n\
             | inputs | test AUROC | accuracy @ 0.5 | calibration error |\n|---|---|---|---|"
        );
        for s in &steps {
            let _ = writeln!(
                out,
                "| {} | {:.3} | {:.3} | {:.3} |",
                s.name, s.auroc, s.accuracy, s.calibration_error
            );
        }
    }
    out
}

/// Rows for a set of patients (parallel: each goes through the clinical
/// layer on its own).
pub fn observed_rows(patients: &[SyntheticPatient]) -> Vec<ObservedRow> {
    use rayon::prelude::*;
    patients.par_iter().map(ObservedRow::of).collect()
}

/// Rows for a whole cohort, generated in parallel without keeping the
/// patients (a 10,000-patient cohort as JSON values would take gigabytes).
pub fn cohort_rows(cfg: &super::SynthConfig) -> Vec<ObservedRow> {
    use rayon::prelude::*;
    (0..cfg.patients as u64)
        .into_par_iter()
        .map(|i| ObservedRow::of(&super::generate_patient(cfg, i)))
        .collect()
}
