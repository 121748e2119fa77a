//! `oncohooks evaluate nodule`: the nodule model against the clinical
//! baselines and a radiomics-only logistic regression on the held-out LIDC
//! scans (LIDC-IDRI-0800 and above), from the table of
//! [`crate::nodule::table`].
//!
//! - Binary metrics on benign vs malignant (median reader rating < 3 vs > 3;
//!   "unsure" = 3 is excluded and reported on its own): AUROC with a
//!   percentile bootstrap 95 % interval (seeded), accuracy and F1 at a
//!   stated cut, ECE (10 equal-width bins) where the score is a probability.
//! - Methods: the full model and, when given, an image-only model (both
//!   through [`NoduleClassifier`], so any classifier can be evaluated);
//!   radiomics-only L2 logistic regression fitted here on 0001–0799
//!   ([`super::logistic`]); Brock (PanCan model 2b), Mayo (Swensen 1997) and
//!   Lung-RADS v2022 (ordinal category as the score, ≥ 4A called malignant).
//! - LIDC has no age, sex, smoking, family history, emphysema or lobe: Brock
//!   and Mayo get fixed population values ([`Population`], stated in the
//!   report). A constant input shifts every nodule's logit equally, so it
//!   changes calibration and the 0.5-cut metrics but not the AUROC.
//! - The review gate of the full model: coverage of the conformal sets,
//!   share sent to review, accuracy on the nodules not sent vs all.
//!
//! Writes `report.md`, `metrics.json`, `roc.png`, `calibration.png`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::logistic::LogisticModel;
use super::{NoduleClassifier, NoduleModelError, NoduleModelOutput};
use crate::clinical::nodule::{
    BrockInput, LungRadsCategory, LungRadsInput, MayoInput, NoduleType, Size, brock, lung_rads,
    mayo,
};
use crate::ml::cachexia::plot::{Canvas, GREY, SERIES, roc_canvas};
use crate::ml::metrics::{ece, roc_curve};
use crate::nodule::lidc::{MalignancyLabel, Split};
use crate::nodule::table::{NoduleTable, Subset, TableRow};
use crate::synth::stats::auroc;

/// The AUROC a third-party summary attributes to AutoRad-Lung on LIDC-IDRI
/// (`shared/papers.md` §2: "not verified").
pub const PAPER_AUROC: f64 = 0.92;

/// Fixed values for the inputs LIDC does not have. NLST-like: the National
/// Lung Screening Trial enrolled 55–74-year-old current or former heavy
/// smokers (median age about 61, 59 % men); the modal value is used for the
/// yes/no inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Population {
    pub age_years: f64,
    pub female: bool,
    pub family_history: bool,
    pub emphysema: bool,
    pub ever_smoker: bool,
    pub extrathoracic_cancer_over_5y: bool,
    /// Lobe is unknown in LIDC: "not upper lobe" for every nodule.
    pub upper_lobe: bool,
}

impl Default for Population {
    fn default() -> Self {
        Self {
            age_years: 61.0,
            female: false,
            family_history: false,
            emphysema: false,
            ever_smoker: true,
            extrathoracic_cancer_over_5y: false,
            upper_lobe: false,
        }
    }
}

/// Settings of one evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalConfig {
    pub bootstrap: usize,
    pub seed: u64,
    pub population: Population,
    /// A nodule is "spiculated" for Brock, Mayo and Lung-RADS 4X when the
    /// readers' median spiculation rating (1 none … 5 marked) is ≥ this.
    pub spiculation_min_rating: f64,
    /// Penalties tried for the radiomics-only baseline (chosen on the
    /// table's validation patients, then refitted on all of 0001–0799).
    pub lambdas: Vec<f64>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            bootstrap: 2000,
            seed: 1,
            population: Population::default(),
            spiculation_min_rating: 3.0,
            lambdas: vec![0.1, 1.0, 10.0, 100.0, 1000.0],
        }
    }
}

/// One method's metrics on the labelled test nodules.
#[derive(Debug, Clone, Serialize)]
pub struct MethodMetrics {
    pub method: String,
    /// `probability` or `ordinal category`.
    pub score: &'static str,
    pub n: usize,
    pub malignant: usize,
    /// Nodules the method could not score (inputs outside its domain).
    pub not_scored: usize,
    pub auroc: Option<f64>,
    /// Percentile bootstrap 95 % interval.
    pub auroc_ci95: Option<(f64, f64)>,
    /// The cut for accuracy, F1, sensitivity, specificity.
    pub cut: String,
    pub accuracy: f64,
    pub f1: f64,
    pub sensitivity: f64,
    pub specificity: f64,
    /// `None` where the score is not a probability.
    pub ece: Option<f64>,
    pub brier: Option<f64>,
}

/// The model's answers on the "unsure" test nodules (median rating 3).
#[derive(Debug, Clone, Serialize)]
pub struct UnsureSummary {
    pub n: usize,
    /// min, 10 %, 25 %, 50 %, 75 %, 90 %, max of the probability.
    pub quantiles: Vec<(f64, f64)>,
    /// Counts in ten equal-width probability bins.
    pub histogram: Vec<usize>,
    pub share_at_least_half: f64,
    pub share_sent_to_review: f64,
}

/// The conformal review gate on the labelled test nodules.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewGate {
    pub alpha: f64,
    /// Share whose true class is in the prediction set.
    pub coverage: f64,
    pub share_sent_to_review: f64,
    pub accuracy_overall: f64,
    pub accuracy_not_reviewed: Option<f64>,
    pub n_not_reviewed: usize,
}

/// A classifier's evaluation beyond the shared metrics.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSection {
    pub id: String,
    pub version: String,
    pub source_label: String,
    pub trained_on_rendered_pixels: bool,
    pub review: ReviewGate,
    pub unsure: Option<UnsureSummary>,
}

/// The radiomics-only baseline's fit.
#[derive(Debug, Clone, Serialize)]
pub struct RadiomicsFit {
    pub train_rows: usize,
    /// `(λ, validation AUROC)` for each penalty tried.
    pub validation: Vec<(f64, Option<f64>)>,
    pub lambda: f64,
    pub iterations: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct NoduleEvaluation {
    pub table: String,
    pub config: EvalConfig,
    pub test_patients: usize,
    pub test_benign: usize,
    pub test_malignant: usize,
    pub test_unsure: usize,
    pub methods: Vec<MethodMetrics>,
    /// Paired bootstrap 95 % interval of AUROC(full model) − AUROC(Brock).
    pub model_minus_brock_auroc_ci95: Option<(f64, f64)>,
    pub model: Option<ModelSection>,
    pub image_only: Option<ModelSection>,
    pub radiomics_fit: RadiomicsFit,
    pub paper_auroc: f64,
    #[serde(skip)]
    roc: Vec<(String, Vec<(f64, f64)>)>,
    /// `(method, [(mean predicted, observed, count)])`.
    #[serde(skip)]
    reliability: Vec<(String, ReliabilityBins)>,
}

/// Reliability bins of one method: (mean predicted, observed rate, count).
pub type ReliabilityBins = Vec<(f64, f64, usize)>;

/// Linear-interpolated quantile of sorted values (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Bootstrap resamples of `0..n` (with replacement), seeded.
fn resamples(n: usize, count: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| (0..n).map(|_| rng.random_range(0..n)).collect())
        .collect()
}

/// Percentile bootstrap 95 % interval of `stat` over resamples of the
/// index set; resamples where `stat` is undefined (one class only) are
/// skipped. `None` when fewer than half of them are defined.
fn bootstrap_ci(
    n: usize,
    count: usize,
    seed: u64,
    stat: impl Fn(&[usize]) -> Option<f64>,
) -> Option<(f64, f64)> {
    if n == 0 || count == 0 {
        return None;
    }
    let mut v: Vec<f64> = resamples(n, count, seed)
        .iter()
        .filter_map(|idx| stat(idx))
        .collect();
    if v.len() * 2 < count {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some((quantile(&v, 0.025), quantile(&v, 0.975)))
}

/// AUROC with a bootstrap interval.
pub fn auroc_with_ci(
    scores: &[f64],
    labels: &[bool],
    count: usize,
    seed: u64,
) -> (Option<f64>, Option<(f64, f64)>) {
    let pairs: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    let point = auroc(&pairs);
    let ci = bootstrap_ci(pairs.len(), count, seed, |idx| {
        let s: Vec<(f64, bool)> = idx.iter().map(|&i| pairs[i]).collect();
        auroc(&s)
    });
    (point, ci)
}

/// Accuracy, F1, sensitivity, specificity of `predicted` against `labels`.
pub fn confusion(predicted: &[bool], labels: &[bool]) -> (f64, f64, f64, f64) {
    let (mut tp, mut fp, mut tn, mut fneg) = (0.0, 0.0, 0.0, 0.0);
    for (p, y) in predicted.iter().zip(labels) {
        match (p, y) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, false) => tn += 1.0,
            (false, true) => fneg += 1.0,
        }
    }
    let n: f64 = tp + fp + tn + fneg;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    (
        ratio(tp + tn, n),
        ratio(2.0 * tp, 2.0 * tp + fp + fneg),
        ratio(tp, tp + fneg),
        ratio(tn, tn + fp),
    )
}

/// Reliability bins: (mean predicted, observed rate, count), non-empty bins.
pub fn reliability(probs: &[f64], labels: &[bool], bins: usize) -> ReliabilityBins {
    let mut acc = vec![(0.0, 0.0, 0usize); bins];
    for (p, y) in probs.iter().zip(labels) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        acc[b].0 += p;
        acc[b].1 += f64::from(u8::from(*y));
        acc[b].2 += 1;
    }
    acc.into_iter()
        .filter(|a| a.2 > 0)
        .map(|(p, y, c)| (p / c as f64, y / c as f64, c))
        .collect()
}

/// Metrics of one method's scores. `probability`: cut at 0.5 and ECE;
/// otherwise `cut` decides the class from the score.
fn method_metrics(
    method: &str,
    scores: &[Option<f64>],
    labels: &[bool],
    probability: bool,
    cut: (f64, &str),
    cfg: &EvalConfig,
    seed_offset: u64,
) -> (MethodMetrics, Vec<f64>, Vec<bool>) {
    let (s, y): (Vec<f64>, Vec<bool>) = scores
        .iter()
        .zip(labels)
        .filter_map(|(s, y)| s.map(|s| (s, *y)))
        .unzip();
    let (a, ci) = auroc_with_ci(&s, &y, cfg.bootstrap, cfg.seed.wrapping_add(seed_offset));
    let predicted: Vec<bool> = s.iter().map(|v| *v >= cut.0).collect();
    let (accuracy, f1, sensitivity, specificity) = confusion(&predicted, &y);
    let m = MethodMetrics {
        method: method.to_string(),
        score: if probability {
            "probability"
        } else {
            "ordinal category"
        },
        n: s.len(),
        malignant: y.iter().filter(|v| **v).count(),
        not_scored: scores.len() - s.len(),
        auroc: a,
        auroc_ci95: ci,
        cut: cut.1.to_string(),
        accuracy,
        f1,
        sensitivity,
        specificity,
        ece: probability.then(|| ece(&s, &y, 10)),
        brier: probability.then(|| {
            s.iter()
                .zip(&y)
                .map(|(p, t)| (p - f64::from(u8::from(*t))).powi(2))
                .sum::<f64>()
                / s.len().max(1) as f64
        }),
    };
    (m, s, y)
}

/// The baseline scores of one row: Brock and Mayo probabilities, Lung-RADS
/// ordinal category (1, 2, 3, 4A, 4B, 4X → 1…6).
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineScores {
    pub brock: Option<f64>,
    pub mayo: Option<f64>,
    pub lung_rads: Option<LungRadsCategory>,
}

/// LIDC calcification rating: 1 popcorn, 2 laminated, 3 solid, 4 non-central,
/// 5 central, 6 absent. Popcorn, laminated, solid and central are Lung-RADS'
/// benign patterns; internal structure 3 is fat.
fn benign_calcification_or_fat(r: &TableRow) -> bool {
    let calc = (r.calcification_median + 0.5).floor() as i64;
    let internal = (r.internal_structure_median + 0.5).floor() as i64;
    matches!(calc, 1 | 2 | 3 | 5) || internal == 3
}

pub fn baseline_scores(r: &TableRow, cfg: &EvalConfig) -> BaselineScores {
    let pop = &cfg.population;
    let spiculated = r.spiculation_median >= cfg.spiculation_min_rating;
    let brock = brock(&BrockInput {
        age_years: pop.age_years,
        female: pop.female,
        family_history: pop.family_history,
        emphysema: pop.emphysema,
        size_mm: r.long_axis_mm,
        nodule_type: r.nodule_type,
        upper_lobe: pop.upper_lobe,
        nodule_count: r.nodules_on_scan.max(1),
        spiculation: spiculated,
    })
    .ok()
    .map(|x| x.probability);
    let mayo = mayo(&MayoInput {
        age_years: pop.age_years,
        ever_smoker: pop.ever_smoker,
        extrathoracic_cancer_over_5y: pop.extrathoracic_cancer_over_5y,
        diameter_mm: r.long_axis_mm,
        spiculation: spiculated,
        upper_lobe: pop.upper_lobe,
    })
    .ok()
    .map(|x| x.probability);
    let mut input = LungRadsInput::new(
        r.nodule_type,
        Size::from_axes(r.long_axis_mm, r.short_axis_mm),
    );
    if r.nodule_type == NoduleType::PartSolid {
        // LIDC measures no solid component. The renderer's solid core is
        // the part deeper than half the maximal depth, i.e. half the
        // diameter for a sphere: the same assumption here.
        input.solid_component = Some(Size::MeanDiameterMm(r.mean_diameter_mm / 2.0));
    }
    input.benign_calcification_or_fat = benign_calcification_or_fat(r);
    input.additional_suspicious_features = spiculated;
    let lung_rads = lung_rads(&input).ok().map(|x| x.category);
    BaselineScores {
        brock,
        mayo,
        lung_rads,
    }
}

fn ordinal(c: LungRadsCategory) -> f64 {
    match c {
        LungRadsCategory::C1 => 1.0,
        LungRadsCategory::C2 => 2.0,
        LungRadsCategory::C3 => 3.0,
        LungRadsCategory::C4A => 4.0,
        LungRadsCategory::C4B => 5.0,
        LungRadsCategory::C4X => 6.0,
    }
}

/// The classifier's answers for `rows`, in batches of 32.
fn predict_rows(
    clf: &dyn NoduleClassifier,
    table: &NoduleTable,
    rows: &[usize],
) -> Result<Vec<NoduleModelOutput>, NoduleModelError> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(32) {
        let inputs: Vec<_> = chunk.iter().map(|&i| table.model_input(i)).collect();
        let got = clf.predict(&inputs)?;
        if got.len() != inputs.len() {
            return Err(NoduleModelError::Model(format!(
                "{} answers for {} inputs",
                got.len(),
                inputs.len()
            )));
        }
        out.extend(got);
    }
    Ok(out)
}

fn review_gate(alpha: f64, outs: &[NoduleModelOutput], labels: &[bool]) -> ReviewGate {
    let n = labels.len().max(1) as f64;
    let covered = outs
        .iter()
        .zip(labels)
        .filter(|(o, y)| {
            let name = if **y { "malignant" } else { "benign" };
            o.prediction_set.contains(&name)
        })
        .count();
    let correct = |o: &NoduleModelOutput, y: bool| (o.probability >= 0.5) == y;
    let not_reviewed: Vec<(&NoduleModelOutput, bool)> = outs
        .iter()
        .zip(labels.iter().copied())
        .filter(|(o, _)| !o.review_suggested)
        .collect();
    ReviewGate {
        alpha,
        coverage: covered as f64 / n,
        share_sent_to_review: outs.iter().filter(|o| o.review_suggested).count() as f64 / n,
        accuracy_overall: outs
            .iter()
            .zip(labels)
            .filter(|(o, y)| correct(o, **y))
            .count() as f64
            / n,
        accuracy_not_reviewed: (!not_reviewed.is_empty()).then(|| {
            not_reviewed.iter().filter(|(o, y)| correct(o, *y)).count() as f64
                / not_reviewed.len() as f64
        }),
        n_not_reviewed: not_reviewed.len(),
    }
}

fn unsure_summary(outs: &[NoduleModelOutput]) -> Option<UnsureSummary> {
    if outs.is_empty() {
        return None;
    }
    let mut p: Vec<f64> = outs.iter().map(|o| o.probability).collect();
    p.sort_by(f64::total_cmp);
    let mut histogram = vec![0usize; 10];
    for v in &p {
        histogram[((v * 10.0) as usize).min(9)] += 1;
    }
    let n = p.len() as f64;
    Some(UnsureSummary {
        n: p.len(),
        quantiles: [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
            .iter()
            .map(|&q| (q, quantile(&p, q)))
            .collect(),
        histogram,
        share_at_least_half: p.iter().filter(|v| **v >= 0.5).count() as f64 / n,
        share_sent_to_review: outs.iter().filter(|o| o.review_suggested).count() as f64 / n,
    })
}

/// Fits the radiomics-only baseline on 0001–0799: λ chosen by AUROC on
/// the table's validation patients, then refitted on all of 0001–0799.
pub fn fit_radiomics_baseline(
    table: &NoduleTable,
    cfg: &EvalConfig,
) -> Result<(LogisticModel, RadiomicsFit), String> {
    let labelled = |s: Subset| -> Vec<usize> {
        table
            .subset(s)
            .into_iter()
            .filter(|&i| table.rows()[i].label != MalignancyLabel::Unsure)
            .collect()
    };
    let (train, val) = (labelled(Subset::Train), labelled(Subset::Val));
    let xs = |idx: &[usize]| -> Vec<&[f64]> { idx.iter().map(|&i| table.radiomics(i)).collect() };
    let ys = |idx: &[usize]| -> Vec<bool> {
        idx.iter()
            .map(|&i| table.rows()[i].label == MalignancyLabel::Malignant)
            .collect()
    };
    let mut validation = Vec::new();
    let mut best: Option<(f64, f64)> = None;
    for &lambda in &cfg.lambdas {
        let m = LogisticModel::fit(&xs(&train), &ys(&train), lambda)?;
        let scores: Vec<(f64, bool)> = val
            .iter()
            .map(|&i| m.predict(table.radiomics(i)))
            .zip(ys(&val))
            .collect();
        let a = auroc(&scores);
        validation.push((lambda, a));
        if let Some(a) = a
            && best.is_none_or(|(_, b)| a > b)
        {
            best = Some((lambda, a));
        }
    }
    let lambda = best.map_or(1.0, |(l, _)| l);
    let all: Vec<usize> = train.iter().chain(&val).copied().collect();
    let model = LogisticModel::fit(&xs(&all), &ys(&all), lambda)?;
    let fit = RadiomicsFit {
        train_rows: all.len(),
        validation,
        lambda,
        iterations: model.iterations,
    };
    Ok((model, fit))
}

fn model_section(
    clf: &dyn NoduleClassifier,
    outs: &[NoduleModelOutput],
    labels: &[bool],
    unsure: &[NoduleModelOutput],
) -> ModelSection {
    let info = clf.info();
    ModelSection {
        id: info.id.clone(),
        version: info.version.clone(),
        source_label: info.source_label.clone(),
        trained_on_rendered_pixels: info.trained_on_rendered_pixels,
        review: review_gate(info.alpha, outs, labels),
        unsure: unsure_summary(unsure),
    }
}

/// Evaluates on the table's test split. `model` and `image_only` are
/// optional so the baselines can be reported before a model exists.
pub fn evaluate(
    table: &NoduleTable,
    table_name: &str,
    model: Option<&dyn NoduleClassifier>,
    image_only: Option<&dyn NoduleClassifier>,
    cfg: &EvalConfig,
) -> anyhow::Result<NoduleEvaluation> {
    let test = table.split(Split::Test);
    let labelled: Vec<usize> = test
        .iter()
        .copied()
        .filter(|&i| table.rows()[i].label != MalignancyLabel::Unsure)
        .collect();
    let unsure: Vec<usize> = test
        .iter()
        .copied()
        .filter(|&i| table.rows()[i].label == MalignancyLabel::Unsure)
        .collect();
    anyhow::ensure!(
        !labelled.is_empty(),
        "the table has no benign or malignant nodule on the test scans (0800+)"
    );
    for m in [model, image_only].into_iter().flatten() {
        anyhow::ensure!(
            m.info().patch == *table.patch_config(),
            "model {} expects patch {:?} but the table was cut with {:?}",
            m.info().id,
            m.info().patch,
            table.patch_config()
        );
    }
    let labels: Vec<bool> = labelled
        .iter()
        .map(|&i| table.rows()[i].label == MalignancyLabel::Malignant)
        .collect();
    let mut methods = Vec::new();
    let mut roc = Vec::new();
    let mut rel = Vec::new();
    let mut push = |m: MethodMetrics, s: Vec<f64>, y: Vec<bool>, probability: bool| {
        roc.push((m.method.clone(), roc_curve(&s, &y)));
        if probability {
            rel.push((m.method.clone(), reliability(&s, &y, 10)));
        }
        methods.push(m);
    };
    let prob_cut = (0.5, "p ≥ 0.5");

    let mut model_probs = None;
    let mut model_sec = None;
    if let Some(clf) = model {
        let outs = predict_rows(clf, table, &labelled)?;
        let u = predict_rows(clf, table, &unsure)?;
        let probs: Vec<Option<f64>> = outs.iter().map(|o| Some(o.probability)).collect();
        let (m, s, y) = method_metrics("full model", &probs, &labels, true, prob_cut, cfg, 0);
        push(m, s, y, true);
        model_sec = Some(model_section(clf, &outs, &labels, &u));
        model_probs = Some(probs);
    }
    let mut image_sec = None;
    if let Some(clf) = image_only {
        let outs = predict_rows(clf, table, &labelled)?;
        let u = predict_rows(clf, table, &unsure)?;
        let probs: Vec<Option<f64>> = outs.iter().map(|o| Some(o.probability)).collect();
        let (m, s, y) = method_metrics("image-only model", &probs, &labels, true, prob_cut, cfg, 1);
        push(m, s, y, true);
        image_sec = Some(model_section(clf, &outs, &labels, &u));
    }

    let (logistic, radiomics_fit) = fit_radiomics_baseline(table, cfg)
        .map_err(|e| anyhow::anyhow!("radiomics baseline: {e}"))?;
    let rprobs: Vec<Option<f64>> = labelled
        .iter()
        .map(|&i| Some(logistic.predict(table.radiomics(i))))
        .collect();
    let (m, s, y) = method_metrics(
        "radiomics-only logistic",
        &rprobs,
        &labels,
        true,
        prob_cut,
        cfg,
        2,
    );
    push(m, s, y, true);

    let base: Vec<BaselineScores> = labelled
        .iter()
        .map(|&i| baseline_scores(&table.rows()[i], cfg))
        .collect();
    let brock_p: Vec<Option<f64>> = base.iter().map(|b| b.brock).collect();
    let (m, s, y) = method_metrics(
        "Brock (PanCan 2b)",
        &brock_p,
        &labels,
        true,
        prob_cut,
        cfg,
        3,
    );
    push(m, s, y, true);
    let mayo_p: Vec<Option<f64>> = base.iter().map(|b| b.mayo).collect();
    let (m, s, y) = method_metrics("Mayo", &mayo_p, &labels, true, prob_cut, cfg, 4);
    push(m, s, y, true);
    let lr: Vec<Option<f64>> = base.iter().map(|b| b.lung_rads.map(ordinal)).collect();
    let (m, s, y) = method_metrics(
        "Lung-RADS v2022",
        &lr,
        &labels,
        false,
        (4.0, "category ≥ 4A"),
        cfg,
        5,
    );
    push(m, s, y, false);

    // Paired bootstrap of the AUROC difference on the nodules both scored.
    let model_minus_brock_auroc_ci95 = model_probs.as_ref().and_then(|mp| {
        let pairs: Vec<(f64, f64, bool)> = mp
            .iter()
            .zip(&brock_p)
            .zip(&labels)
            .filter_map(|((a, b), y)| Some(((*a)?, (*b)?, *y)))
            .collect();
        bootstrap_ci(
            pairs.len(),
            cfg.bootstrap,
            cfg.seed.wrapping_add(99),
            |idx| {
                let a: Vec<(f64, bool)> = idx.iter().map(|&i| (pairs[i].0, pairs[i].2)).collect();
                let b: Vec<(f64, bool)> = idx.iter().map(|&i| (pairs[i].1, pairs[i].2)).collect();
                Some(auroc(&a)? - auroc(&b)?)
            },
        )
    });

    let mut patients: Vec<&str> = test
        .iter()
        .map(|&i| table.rows()[i].patient_id.as_str())
        .collect();
    patients.sort_unstable();
    patients.dedup();
    Ok(NoduleEvaluation {
        table: table_name.to_string(),
        config: cfg.clone(),
        test_patients: patients.len(),
        test_benign: labels.iter().filter(|v| !**v).count(),
        test_malignant: labels.iter().filter(|v| **v).count(),
        test_unsure: unsure.len(),
        methods,
        model_minus_brock_auroc_ci95,
        model: model_sec,
        image_only: image_sec,
        radiomics_fit,
        paper_auroc: PAPER_AUROC,
        roc,
        reliability: rel,
    })
}

fn f3(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.3}"))
}

fn ci(x: Option<(f64, f64)>) -> String {
    x.map_or("n/a".into(), |(a, b)| format!("{a:.3}–{b:.3}"))
}

fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

impl NoduleEvaluation {
    pub fn method(&self, name: &str) -> Option<&MethodMetrics> {
        self.methods.iter().find(|m| m.method == name)
    }

    /// Writes `report.md`, `metrics.json`, `roc.png`, `calibration.png`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("metrics.json"),
            serde_json::to_string_pretty(self).map_err(std::io::Error::other)? + "\n",
        )?;
        let roc = roc_canvas(&self.roc);
        std::fs::write(dir.join("roc.png"), roc.png()?)?;
        let mut cal = Canvas::unit_square(400);
        cal.line((0.0, 0.0), (1.0, 1.0), GREY, 1);
        for (name, bins) in &self.reliability {
            let i = self.roc.iter().position(|(n, _)| n == name).unwrap_or(0);
            let col = SERIES[i % SERIES.len()].0;
            let pts: Vec<(f64, f64)> = bins.iter().map(|(p, y, _)| (*p, *y)).collect();
            cal.polyline(&pts, col, 2);
            for p in &pts {
                cal.marker(*p, col, 3);
            }
        }
        std::fs::write(dir.join("calibration.png"), cal.png()?)?;
        std::fs::write(dir.join("report.md"), self.markdown())
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# Lung nodule malignancy: evaluation on the held-out LIDC-IDRI scans\n\n\
             Table `{}`. Test scans: LIDC-IDRI-0800 and above ({} patients), never used for training, tuning or selection. \
             Labels: median reader malignancy rating > 3 malignant, < 3 benign; = 3 \"unsure\" is excluded from the binary metrics. \
             Test nodules: {} benign, {} malignant, {} unsure.\n",
            self.table, self.test_patients, self.test_benign, self.test_malignant, self.test_unsure
        );
        if self.model.is_none() {
            let _ = writeln!(
                md,
                "**No nodule model was given (`--model`): this report covers the baselines only.**\n"
            );
        }
        let _ = writeln!(
            md,
            "## Discrimination and calibration (benign vs malignant)\n\n\
             AUROC 95 % intervals: percentile bootstrap, {} resamples of the test nodules, seed {}. ECE: 10 equal-width bins; n/a where the score is not a probability.\n\n\
             | method | score | n (malignant) | AUROC | 95 % CI | cut | accuracy | F1 | sensitivity | specificity | ECE | Brier |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|",
            self.config.bootstrap, self.config.seed
        );
        for m in &self.methods {
            let _ = writeln!(
                md,
                "| {} | {} | {} ({}){} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} |",
                m.method,
                m.score,
                m.n,
                m.malignant,
                if m.not_scored > 0 {
                    format!(", {} not scorable", m.not_scored)
                } else {
                    String::new()
                },
                f3(m.auroc),
                ci(m.auroc_ci95),
                m.cut,
                m.accuracy,
                m.f1,
                m.sensitivity,
                m.specificity,
                f3(m.ece),
                f3(m.brier),
            );
        }
        let legend: Vec<String> = self
            .roc
            .iter()
            .enumerate()
            .map(|(i, (n, _))| format!("{} = {n}", SERIES[i % SERIES.len()].1))
            .collect();
        let _ = writeln!(
            md,
            "\n![ROC](roc.png) ![calibration](calibration.png)\n\n\
             ROC (false-positive rate → true-positive rate) and reliability (mean predicted → observed malignant rate, probability methods, non-empty bins; grey diagonal = perfect): {}.\n",
            legend.join(", ")
        );
        self.comparison(&mut md);
        for (title, sec) in [
            ("Full model", &self.model),
            ("Image-only model", &self.image_only),
        ] {
            let Some(s) = sec else { continue };
            let r = &s.review;
            let _ = writeln!(
                md,
                "## {title}: `{}` version `{}`\n\n{} (trained on rendered pixels: {}).\n\n\
                 **Review gate** (split-conformal sets at α = {}): coverage {} (target ≥ {}), sent to review {}, \
                 accuracy overall {}, accuracy on the {} nodules not sent to review {}.\n",
                s.id,
                s.version,
                s.source_label,
                s.trained_on_rendered_pixels,
                r.alpha,
                pct(r.coverage),
                pct(1.0 - r.alpha),
                pct(r.share_sent_to_review),
                pct(r.accuracy_overall),
                r.n_not_reviewed,
                r.accuracy_not_reviewed.map_or("n/a".into(), pct),
            );
            if let Some(u) = &s.unsure {
                let q: Vec<String> = u
                    .quantiles
                    .iter()
                    .map(|(q, v)| format!("{:.0} %: {v:.3}", q * 100.0))
                    .collect();
                let _ = writeln!(
                    md,
                    "**Unsure test nodules** (median rating 3, no binary label): {} nodules. Probability quantiles {}. \
                     Histogram over ten 0.1-wide bins: {:?}. p ≥ 0.5: {}; sent to review: {}.\n",
                    u.n,
                    q.join(", "),
                    u.histogram,
                    pct(u.share_at_least_half),
                    pct(u.share_sent_to_review)
                );
            }
        }
        let p = &self.config.population;
        let rf = &self.radiomics_fit;
        let val: Vec<String> = rf
            .validation
            .iter()
            .map(|(l, a)| format!("λ {l}: {}", f3(*a)))
            .collect();
        let _ = writeln!(
            md,
            "## How the baselines were computed\n\n\
             - **Fixed population values** (LIDC has no demographics, history, emphysema or lobe; NLST-like): age {} years, {}, family history {}, emphysema {}, ever smoker {}, extrathoracic cancer > 5 y {}, upper lobe {} for every nodule. \
             Brock and Mayo are therefore **handicapped**: these inputs carry part of their discrimination in their derivation cohorts. A constant input moves every logit by the same amount, so it changes calibration, accuracy and F1 but not the AUROC.\n\
             - **Size**: Brock and Mayo use the long axis, Lung-RADS the mean of long and short axis, on the axial slice of maximal extent of the readers' 50 % consensus mask (docs/lidc.md).\n\
             - **Spiculation** (Brock, Mayo, and Lung-RADS 4X): the readers' median spiculation rating ≥ {} (issue 5 allows the readers' rating). The same readers rated malignancy, so this input is correlated with the label by construction.\n\
             - **Nodule type**: readers' median texture rating rounded half up, 1–2 ground-glass, 3–4 part-solid, 5 solid. Part-solid solid component for Lung-RADS: half the mean diameter (no measurement exists in LIDC; the renderer's solid core has that size for a sphere).\n\
             - **Lung-RADS** benign calcification or fat (category 1): median calcification rating popcorn, laminated, solid or central, or internal structure fat. The readers' calcification rating is nearly a benign label, and the model never sees it (it is not rendered into the pixels).\n\
             - **Nodule count** (Brock): grouped LIDC nodules on the scan.\n\
             - **Lung-RADS as a score**: categories 1, 2, 3, 4A, 4B, 4X ranked 1…6 (4X above 4B: a 3/4A/4B nodule with suspicious features).\n\
             - **Radiomics-only**: L2 logistic regression (Newton/IRLS) on the 107 standardised radiomics features, standardiser and fit on the 0001–0799 nodules only ({} rows); λ chosen on the table's validation patients ({}), chosen λ = {}, refitted on all 0001–0799 ({} Newton steps). \
             The shape features come from the readers' real masks; the intensity and texture features are computed on the **rendered** patches, whose grey levels the renderer chose from the readers' texture and internal-structure ratings, so they are not real-CT radiomics.\n",
            p.age_years,
            if p.female { "female" } else { "male" },
            p.family_history,
            p.emphysema,
            p.ever_smoker,
            p.extrathoracic_cancer_over_5y,
            p.upper_lobe,
            self.config.spiculation_min_rating,
            rf.train_rows,
            val.join(", "),
            rf.lambda,
            rf.iterations
        );
        md
    }

    /// Where the full model stands: against Brock, and against the paper.
    fn comparison(&self, md: &mut String) {
        let _ = writeln!(md, "## Against Brock and against the paper\n");
        let brock = self.method("Brock (PanCan 2b)");
        let Some(model) = self.method("full model") else {
            let _ = writeln!(
                md,
                "No model was evaluated. A third-party summary reports AUROC {:.2} for AutoRad-Lung on LIDC-IDRI (not verified; `shared/papers.md` §2).\n",
                self.paper_auroc
            );
            return;
        };
        let (Some(a), Some(b)) = (model.auroc, brock.and_then(|b| b.auroc)) else {
            return;
        };
        let verdict = match self.model_minus_brock_auroc_ci95 {
            Some((lo, _)) if lo > 0.0 => {
                "higher than Brock's, and the paired bootstrap interval of the difference excludes 0"
            }
            Some((_, hi)) if hi < 0.0 => {
                "lower than Brock's, and the paired bootstrap interval of the difference excludes 0"
            }
            Some(_) => {
                "not distinguishable from Brock's: the paired bootstrap interval of the difference includes 0"
            }
            None => {
                "compared with Brock's without an interval (too few resamples with both classes)"
            }
        };
        let _ = writeln!(
            md,
            "The full model's AUROC is {a:.3} against Brock's {b:.3} on the same nodules (difference {:+.3}, paired 95 % CI {}): {verdict}. \
             Brock here lacks age, sex, family history, emphysema and lobe (fixed values above) but receives the readers' spiculation rating.\n\n\
             A third-party summary reports AUROC {:.2} for AutoRad-Lung on LIDC-IDRI (not verified; `shared/papers.md` §2); this model's {a:.3} is {} it. \
             The numbers are not directly comparable: this model's image branch learned from CT patches **rendered** from the readers' masks (real size and shape, \
             grey levels chosen from the readers' texture and internal-structure ratings), not from the real CT pixels; its radiomics are computed on those rendered \
             patches; the encoder is a small ViT trained here, not a pre-trained AIMv2; and the split (by patient number, 0800+ held out), the label rule and the \
             exclusion of \"unsure\" nodules may differ from the paper's.\n",
            a - b,
            ci(self.model_minus_brock_auroc_ci95),
            self.paper_auroc,
            if a >= self.paper_auroc {
                "at or above"
            } else {
                "below"
            }
        );
    }
}

/// `oncohooks evaluate nodule`.
#[derive(Debug, Args)]
pub struct EvaluateNoduleArgs {
    /// Table folder written by `oncohooks nodule table`.
    #[arg(long)]
    pub table: PathBuf,
    /// Model folder (omit to report the baselines only).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// An image-only model folder for the ablation.
    #[arg(long)]
    pub image_only_model: Option<PathBuf>,
    /// Report folder (created; report.md, metrics.json, roc.png,
    /// calibration.png are overwritten).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// Loads a nodule model folder ([`super::load_classifier`]: the members,
/// and the text encoder the model records, checked by its SHA-256).
fn load_model(dir: &Path) -> anyhow::Result<Arc<dyn NoduleClassifier>> {
    super::load_classifier(dir)
        .with_context(|| format!("loading the nodule model in {}", dir.display()))
}

pub fn evaluate_command(args: EvaluateNoduleArgs) -> anyhow::Result<()> {
    let table = NoduleTable::load(&args.table)
        .with_context(|| format!("reading the nodule table in {}", args.table.display()))?;
    let model = args.model.as_deref().map(load_model).transpose()?;
    let image_only = args
        .image_only_model
        .as_deref()
        .map(load_model)
        .transpose()?;
    let cfg = EvalConfig {
        bootstrap: args.bootstrap,
        seed: args.seed,
        ..EvalConfig::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build()
        .context("starting the thread pool")?;
    let eval = pool.install(|| {
        evaluate(
            &table,
            &args.table.display().to_string(),
            model.as_deref(),
            image_only.as_deref(),
            &cfg,
        )
    })?;
    eval.write(&args.out)
        .with_context(|| format!("writing the report to {}", args.out.display()))?;
    for m in &eval.methods {
        eprintln!(
            "{:<26} AUROC {} ({})  accuracy {:.3}  F1 {:.3}  ECE {}",
            m.method,
            f3(m.auroc),
            ci(m.auroc_ci95),
            m.accuracy,
            m.f1,
            f3(m.ece)
        );
    }
    println!("{}", args.out.join("report.md").display());
    Ok(())
}

#[cfg(test)]
mod tests;
