//! Evaluation on the held-out test split: discrimination, calibration,
//! subgroups, the modality ablation in the paper's order (clinical → + labs
//! → + notes → + CT; seed paper §1, arXiv 2503.06797) next to Fearon, CXI and
//! mCXI on the same patients, and the expert-review gate. Writes
//! `report.md`, `metrics.json` and PNG plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

use super::dataset::{Dataset, Example};
use super::ensemble::CachexiaEnsemble;
use super::inputs::{Encoded, MODALITIES, key};
use super::plot::{Canvas, GREY, SERIES, roc_canvas};
use crate::features::cachexia::Modality;
use crate::ml::metrics::{ece, roc_curve};
use crate::synth::Split;
use crate::synth::stats::auroc;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    pub n: usize,
    pub prevalence: f64,
    pub auroc: Option<f64>,
    pub auprc: Option<f64>,
    /// At risk ≥ 0.5.
    pub accuracy: f64,
    pub brier: f64,
    /// Expected calibration error, 10 equal-width bins.
    pub ece: f64,
}

pub fn auprc(scores: &[(f64, bool)]) -> Option<f64> {
    let pos = scores.iter().filter(|s| s.1).count();
    if pos == 0 {
        return None;
    }
    let mut v = scores.to_vec();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    // Average precision, ties handled as one step.
    let (mut tp, mut fp, mut ap, mut i) = (0usize, 0usize, 0.0, 0usize);
    while i < v.len() {
        let mut j = i;
        let mut new_tp = 0;
        while j < v.len() && v[j].0 == v[i].0 {
            if v[j].1 {
                new_tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        tp += new_tp;
        ap += new_tp as f64 / pos as f64 * (tp as f64 / (tp + fp) as f64);
        i = j;
    }
    Some(ap)
}

pub fn metrics(probs: &[f64], labels: &[bool]) -> Metrics {
    let n = labels.len();
    let scores: Vec<(f64, bool)> = probs.iter().copied().zip(labels.iter().copied()).collect();
    let nf = n.max(1) as f64;
    Metrics {
        n,
        prevalence: labels.iter().filter(|y| **y).count() as f64 / nf,
        auroc: auroc(&scores),
        auprc: auprc(&scores),
        accuracy: probs
            .iter()
            .zip(labels)
            .filter(|(p, y)| (**p >= 0.5) == **y)
            .count() as f64
            / nf,
        brier: probs
            .iter()
            .zip(labels)
            .map(|(p, y)| (p - f64::from(u8::from(*y))).powi(2))
            .sum::<f64>()
            / nf,
        ece: ece(probs, labels, 10),
    }
}

/// One classic index on the same patients.
#[derive(Debug, Clone, Serialize)]
pub struct ClassicMetrics {
    pub index: &'static str,
    pub auroc: Option<f64>,
    pub accuracy: f64,
    pub sensitivity: f64,
    pub specificity: f64,
    pub unknown_share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AblationRow {
    pub step: &'static str,
    pub modalities: Vec<&'static str>,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReviewMetrics {
    pub alpha: f64,
    /// Share of test patients whose true label is in the prediction set.
    pub coverage: f64,
    pub review_share: f64,
    pub accuracy_overall: f64,
    pub accuracy_not_reviewed: Option<f64>,
    pub accuracy_reviewed: Option<f64>,
    pub n_not_reviewed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub model: Value,
    pub test: Metrics,
    pub ablation: Vec<AblationRow>,
    pub classic: Vec<ClassicMetrics>,
    pub review: ReviewMetrics,
    /// group → value → metrics.
    pub subgroups: BTreeMap<&'static str, BTreeMap<String, Metrics>>,
    /// Share of test patients with each modality (as fed to the model).
    pub modality_coverage: BTreeMap<&'static str, f64>,
    #[serde(skip)]
    roc: Vec<(String, Vec<(f64, f64)>)>,
    #[serde(skip)]
    reliability: Vec<(f64, f64, usize)>,
    #[serde(skip)]
    risk_coverage: Vec<(f64, f64)>,
    #[serde(skip)]
    classic_points: Vec<(String, (f64, f64))>,
}

/// The paper's ablation order; "clinical" is demographics, disease status
/// and the weight history (the paper's structured clinical data).
const ABLATION: [(&str, &[Modality]); 4] = [
    ("clinical", &[Modality::Clinical, Modality::Weight]),
    (
        "+ labs",
        &[Modality::Clinical, Modality::Weight, Modality::Labs],
    ),
    (
        "+ notes",
        &[
            Modality::Clinical,
            Modality::Weight,
            Modality::Labs,
            Modality::Notes,
        ],
    ),
    ("+ CT (all)", &Modality::ALL),
];

pub fn evaluate(model: &CachexiaEnsemble, ds: &Dataset) -> candle_core::Result<Evaluation> {
    let test: Vec<&Example> = ds.split(Split::Test);
    let labels: Vec<bool> = test.iter().map(|e| e.label).collect();
    let encoded: Vec<Encoded> = test
        .iter()
        .map(|e| {
            let mut x = model.meta.standardizer.encode(&e.raw);
            model.mask_untrained(&mut x);
            x
        })
        .collect();

    let run = |keep: &[Modality]| -> candle_core::Result<(Vec<f64>, Vec<Vec<f64>>)> {
        let drop: Vec<Modality> = MODALITIES
            .iter()
            .copied()
            .filter(|m| !keep.contains(m))
            .collect();
        let rows: Vec<Encoded> = encoded.iter().map(|e| e.without(&drop)).collect();
        model.probabilities(&rows.iter().collect::<Vec<_>>())
    };

    let (probs, _) = run(&Modality::ALL)?;
    let test_metrics = metrics(&probs, &labels);
    let mut ablation = Vec::new();
    let mut roc = Vec::new();
    for (step, keep) in ABLATION {
        let (p, _) = run(keep)?;
        ablation.push(AblationRow {
            step,
            modalities: keep.iter().map(|m| key(*m)).collect(),
            metrics: metrics(&p, &labels),
        });
        roc.push((step.to_owned(), roc_curve(&p, &labels)));
    }

    let mut classic = Vec::new();
    let mut classic_points = Vec::new();
    let pos = labels.iter().filter(|y| **y).count().max(1) as f64;
    let neg = labels.iter().filter(|y| !**y).count().max(1) as f64;
    for (name, get) in [
        (
            "Fearon 2011",
            (|e: &Example| e.classic.fearon) as fn(&Example) -> u8,
        ),
        ("CXI", |e: &Example| e.classic.cxi),
        ("mCXI", |e: &Example| e.classic.mcxi),
    ] {
        let s: Vec<u8> = test.iter().map(|e| get(e)).collect();
        let scores: Vec<(f64, bool)> = s
            .iter()
            .zip(&labels)
            .map(|(s, y)| (f64::from(*s), *y))
            .collect();
        let tp = s
            .iter()
            .zip(&labels)
            .filter(|(s, y)| **s == 2 && **y)
            .count() as f64;
        let tn = s
            .iter()
            .zip(&labels)
            .filter(|(s, y)| **s != 2 && !**y)
            .count() as f64;
        let (sens, spec) = (tp / pos, tn / neg);
        classic_points.push((name.to_owned(), (1.0 - spec, sens)));
        classic.push(ClassicMetrics {
            index: name,
            auroc: auroc(&scores),
            accuracy: (tp + tn) / labels.len().max(1) as f64,
            sensitivity: sens,
            specificity: spec,
            unknown_share: s.iter().filter(|x| **x == 1).count() as f64
                / labels.len().max(1) as f64,
        });
    }

    let c = &model.meta.conformal;
    let mut covered = 0usize;
    let (mut nr, mut nr_ok, mut r, mut r_ok) = (0usize, 0usize, 0usize, 0usize);
    for (p, y) in probs.iter().zip(&labels) {
        let (has_neg, has_pos) = c.set(*p);
        if (*y && has_pos) || (!*y && has_neg) {
            covered += 1;
        }
        let ok = (*p >= 0.5) == *y;
        if c.review(*p) {
            r += 1;
            r_ok += usize::from(ok);
        } else {
            nr += 1;
            nr_ok += usize::from(ok);
        }
    }
    let n = labels.len().max(1) as f64;
    let review = ReviewMetrics {
        alpha: c.alpha,
        coverage: covered as f64 / n,
        review_share: r as f64 / n,
        accuracy_overall: test_metrics.accuracy,
        accuracy_not_reviewed: (nr > 0).then(|| nr_ok as f64 / nr as f64),
        accuracy_reviewed: (r > 0).then(|| r_ok as f64 / r as f64),
        n_not_reviewed: nr,
    };

    let mut subgroups: BTreeMap<&'static str, BTreeMap<String, Metrics>> = BTreeMap::new();
    for (group, get) in [
        (
            "sex",
            (|e: &Example| e.info.sex.clone()) as fn(&Example) -> String,
        ),
        ("race", |e: &Example| e.info.race.clone()),
        ("ethnicity", |e: &Example| e.info.ethnicity.clone()),
        ("cancer type", |e: &Example| e.info.cancer_type.clone()),
        ("stage", |e: &Example| e.info.stage.clone()),
    ] {
        let mut by: BTreeMap<String, (Vec<f64>, Vec<bool>)> = BTreeMap::new();
        for (i, e) in test.iter().enumerate() {
            let slot = by.entry(get(e)).or_default();
            slot.0.push(probs[i]);
            slot.1.push(labels[i]);
        }
        subgroups.insert(
            group,
            by.into_iter()
                .map(|(k, (p, y))| (k, metrics(&p, &y)))
                .collect(),
        );
    }

    let mut modality_coverage = BTreeMap::new();
    for (i, m) in MODALITIES.iter().enumerate() {
        modality_coverage.insert(
            key(*m),
            encoded.iter().filter(|e| e.present[i]).count() as f64 / n,
        );
    }

    // Reliability (10 bins) and risk–coverage (most confident first).
    let mut bins = vec![(0.0, 0.0, 0usize); 10];
    for (p, y) in probs.iter().zip(&labels) {
        let b = ((p * 10.0) as usize).min(9);
        bins[b].0 += p;
        bins[b].1 += f64::from(u8::from(*y));
        bins[b].2 += 1;
    }
    let reliability = bins
        .into_iter()
        .filter(|b| b.2 > 0)
        .map(|(p, y, c)| (p / c as f64, y / c as f64, c))
        .collect();
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|a, b| {
        let ca = probs[*a].max(1.0 - probs[*a]);
        let cb = probs[*b].max(1.0 - probs[*b]);
        cb.total_cmp(&ca)
    });
    let mut errors = 0usize;
    let mut risk_coverage = Vec::new();
    for (k, i) in order.iter().enumerate() {
        if (probs[*i] >= 0.5) != labels[*i] {
            errors += 1;
        }
        risk_coverage.push(((k + 1) as f64 / n, errors as f64 / (k + 1) as f64));
    }

    Ok(Evaluation {
        model: json!({
            "id": model.meta.id,
            "version": model.version(),
            "members": model.meta.members.len(),
            "temperature": model.meta.temperature,
            "conformal": model.meta.conformal,
            "trained_modalities": model.meta.trained_modalities,
            "notes_embedder": model.meta.notes_embedder,
        }),
        test: test_metrics,
        ablation,
        classic,
        review,
        subgroups,
        modality_coverage,
        roc,
        reliability,
        risk_coverage,
        classic_points,
    })
}

fn f3(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.3}"))
}

fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

impl Evaluation {
    /// Write `report.md`, `metrics.json`, `roc.png`, `calibration.png`,
    /// `risk-coverage.png` into `dir`.
    pub fn write(&self, dir: &Path, cohort: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("metrics.json"),
            serde_json::to_string_pretty(self).map_err(std::io::Error::other)? + "\n",
        )?;

        let mut roc = roc_canvas(&self.roc);
        for (i, (_, p)) in self.classic_points.iter().enumerate() {
            roc.marker(*p, SERIES[(4 + i) % SERIES.len()].0, 4);
        }
        std::fs::write(dir.join("roc.png"), roc.png()?)?;

        let mut cal = Canvas::unit_square(400);
        cal.line((0.0, 0.0), (1.0, 1.0), GREY, 1);
        let pts: Vec<(f64, f64)> = self.reliability.iter().map(|(p, y, _)| (*p, *y)).collect();
        cal.polyline(&pts, SERIES[0].0, 2);
        for p in &pts {
            cal.marker(*p, SERIES[0].0, 3);
        }
        std::fs::write(dir.join("calibration.png"), cal.png()?)?;

        let mut rc = Canvas::unit_square(400);
        rc.polyline(&self.risk_coverage, SERIES[0].0, 2);
        let deferred = 1.0 - self.review.review_share;
        rc.line((deferred, 0.0), (deferred, 1.0), SERIES[1].0, 1);
        std::fs::write(dir.join("risk-coverage.png"), rc.png()?)?;

        std::fs::write(dir.join("report.md"), self.markdown(cohort))
    }

    pub fn markdown(&self, cohort: &str) -> String {
        let mut md = String::new();
        let t = &self.test;
        let _ = writeln!(
            md,
            "# Cachexia model evaluation\n\nModel `{}` version `{}` ({} ensemble members, temperature {:.3}), trained on **synthetic** data. Cohort: {cohort}. Held-out test split: {} patients, {} with cachexia within 6 months ({}).\n",
            self.model["id"].as_str().unwrap_or_default(),
            self.model["version"].as_str().unwrap_or_default(),
            self.model["members"],
            self.model["temperature"].as_f64().unwrap_or(f64::NAN),
            t.n,
            (t.prevalence * t.n as f64).round(),
            pct(t.prevalence)
        );
        let trained: Vec<String> = self.model["trained_modalities"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if !trained.iter().any(|k| k == "notes") {
            md.push_str("**This model was trained without the notes modality** (no notes encoder was configured), so the “+ notes” step below cannot change anything: notes are fed as missing.\n\n");
        }
        md.push_str("## Test split\n\n| metric | value |\n|---|---|\n");
        let _ = writeln!(md, "| AUROC | {} |", f3(t.auroc));
        let _ = writeln!(md, "| AUPRC | {} |", f3(t.auprc));
        let _ = writeln!(md, "| accuracy (risk ≥ 0.5) | {:.3} |", t.accuracy);
        let _ = writeln!(md, "| Brier score | {:.4} |", t.brier);
        let _ = writeln!(md, "| ECE (10 bins) | {:.4} |", t.ece);

        md.push_str("\n## Modality ablation (paper order) and the classic indices, same patients\n\nThe ablation feeds the trained ensemble with the other modalities set to their learned missing tokens (no retraining). Classic indices: positive = cachexia / low CXI / low mCXI; AUROC ranks positive > unknown > negative; accuracy counts unknown as negative.\n\n| step | modalities | AUROC | AUPRC | accuracy | Brier | ECE |\n|---|---|---|---|---|---|---|\n");
        for a in &self.ablation {
            let m = &a.metrics;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.3} | {:.4} | {:.4} |",
                a.step,
                a.modalities.join(", "),
                f3(m.auroc),
                f3(m.auprc),
                m.accuracy,
                m.brier,
                m.ece
            );
        }
        md.push_str("\n| classic index | AUROC | accuracy | sensitivity | specificity | unknown |\n|---|---|---|---|---|---|\n");
        for c in &self.classic {
            let _ = writeln!(
                md,
                "| {} | {} | {:.3} | {} | {} | {} |",
                c.index,
                f3(c.auroc),
                c.accuracy,
                pct(c.sensitivity),
                pct(c.specificity),
                pct(c.unknown_share)
            );
        }

        let r = &self.review;
        let _ = writeln!(
            md,
            "\n## Confidence and expert review\n\nSplit-conformal prediction at target error α = {} (threshold {:.4} on `1 − p(true class)`, fit on {} calibration patients). Expert review is suggested when the prediction set is not a single class.\n\n| | value |\n|---|---|\n| coverage (true label in the set; target ≥ {}) | {} |\n| sent to review | {} |\n| accuracy, all test patients | {:.3} |\n| accuracy, patients not sent to review ({}) | {} |\n| accuracy, patients sent to review | {} |",
            r.alpha,
            self.model["conformal"]["qhat"].as_f64().unwrap_or(f64::NAN),
            self.model["conformal"]["n_calibration"],
            pct(1.0 - r.alpha),
            pct(r.coverage),
            pct(r.review_share),
            r.accuracy_overall,
            r.n_not_reviewed,
            f3(r.accuracy_not_reviewed),
            f3(r.accuracy_reviewed)
        );

        md.push_str("\n## Subgroups (full model, test split)\n\n| group | value | patients | prevalence | AUROC | accuracy | Brier | ECE |\n|---|---|---|---|---|---|---|---|\n");
        for (g, rows) in &self.subgroups {
            for (v, m) in rows {
                let _ = writeln!(
                    md,
                    "| {g} | {v} | {} | {} | {} | {:.3} | {:.4} | {:.4} |",
                    m.n,
                    pct(m.prevalence),
                    f3(m.auroc),
                    m.accuracy,
                    m.brier,
                    m.ece
                );
            }
        }
        md.push_str("\nSmall groups (under ~100 patients) have wide uncertainty; ECE in a small group is mostly noise.\n");

        md.push_str("\n## Modality coverage on the test split (as fed to the model)\n\n| modality | present |\n|---|---|\n");
        for (k, v) in &self.modality_coverage {
            let _ = writeln!(md, "| {k} | {} |", pct(*v));
        }

        md.push_str("\n## Plots\n\nAxes run from 0 to 1 with grid lines every 0.1 (heavier at 0.5); the images carry no text.\n\n");
        let names: Vec<String> = self
            .roc
            .iter()
            .enumerate()
            .map(|(i, (n, _))| format!("{} = {n}", SERIES[i % SERIES.len()].1))
            .collect();
        let points: Vec<String> = self
            .classic_points
            .iter()
            .enumerate()
            .map(|(i, (n, _))| format!("{} square = {n}", SERIES[(4 + i) % SERIES.len()].1))
            .collect();
        let _ = writeln!(
            md,
            "- ROC (x: false-positive rate, y: true-positive rate; grey diagonal = chance): {}; classic indices as operating points: {}.\n\n  ![ROC](roc.png)\n",
            names.join(", "),
            points.join(", ")
        );
        md.push_str("- Calibration (x: mean predicted risk per bin of 0.1, y: observed cachexia rate; grey = perfect calibration).\n\n  ![calibration](calibration.png)\n\n");
        md.push_str("- Risk–coverage (x: share of patients kept, most confident first; y: error rate among them); the orange vertical line is the share not sent to review.\n\n  ![risk-coverage](risk-coverage.png)\n");
        md
    }

    /// The done-when checks, as measured.
    pub fn targets(&self) -> Vec<(String, bool)> {
        let full = self.ablation.last().and_then(|a| a.metrics.auroc);
        let best_classic = self
            .classic
            .iter()
            .filter_map(|c| c.auroc)
            .fold(f64::MIN, f64::max);
        let accs: Vec<f64> = self.ablation.iter().map(|a| a.metrics.accuracy).collect();
        vec![
            (
                format!(
                    "full-model AUROC {} above every classic index (best {best_classic:.3})",
                    f3(full)
                ),
                full.is_some_and(|a| a > best_classic),
            ),
            (
                format!(
                    "accuracy rising with modalities: {}",
                    accs.iter()
                        .map(|a| format!("{a:.3}"))
                        .collect::<Vec<_>>()
                        .join(" → ")
                ),
                accs.windows(2).all(|w| w[1] > w[0]),
            ),
            (
                format!("ECE {:.4} ≤ 0.05", self.test.ece),
                self.test.ece <= 0.05,
            ),
            (
                format!(
                    "accuracy not sent to review {} > overall {:.3}",
                    f3(self.review.accuracy_not_reviewed),
                    self.review.accuracy_overall
                ),
                self.review
                    .accuracy_not_reviewed
                    .is_some_and(|a| a > self.review.accuracy_overall),
            ),
        ]
    }
}
