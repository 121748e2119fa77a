//! The shipped predictor: a deep ensemble of [`CachexiaFusion`] members
//! (Lakshminarayanan et al. 2017), temperature scaling fit on the
//! calibration split (Guo et al. 2017), and split-conformal prediction sets
//! (Vovk et al. 2005; Angelopoulos & Bates 2021) that send a patient to
//! expert review when the set at the target error rate is not a single class.
//!
//! On disk (`<model dir>/`): `model.json` ([`ModelMeta`]: config,
//! standardisation, temperature, conformal threshold, training record and
//! measured metrics) and one `member-<i>.safetensors` per member.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::inputs::{Encoded, MODALITIES, RawInputs, Standardizer, continuous_names, key};
use super::model::{CachexiaFusion, Config, StackedFusion, TokenBatch};
use crate::features::cachexia::Modality;

pub const MODEL_ID: &str = "cachexia-fusion";
pub const META_FILE: &str = "model.json";
/// Bump when `model.json` changes shape.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid model description: {message}")]
    Meta { path: PathBuf, message: String },
    #[error("model tensors: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Split-conformal threshold for the score `1 − p(true class)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Conformal {
    /// Target error rate (miscoverage) α.
    pub alpha: f64,
    /// The ⌈(n+1)(1−α)⌉/n empirical quantile of the calibration scores.
    pub qhat: f64,
    pub n_calibration: usize,
}

impl Conformal {
    /// Fit on calibration probabilities (already temperature-scaled; the
    /// sets do not depend on the temperature anyway, because the score is a
    /// monotone function of the signed logit for both classes).
    pub fn fit(probs: &[f64], labels: &[bool], alpha: f64) -> Self {
        let mut scores: Vec<f64> = probs
            .iter()
            .zip(labels)
            .map(|(p, y)| if *y { 1.0 - p } else { *p })
            .collect();
        scores.sort_by(f64::total_cmp);
        let n = scores.len();
        let k = (((n + 1) as f64) * (1.0 - alpha)).ceil() as usize;
        let qhat = if n == 0 || k > n {
            1.0
        } else {
            scores[k.max(1) - 1]
        };
        Self {
            alpha,
            qhat,
            n_calibration: n,
        }
    }

    /// The prediction set: (contains "no cachexia", contains "cachexia").
    pub fn set(&self, p: f64) -> (bool, bool) {
        (p <= self.qhat, 1.0 - p <= self.qhat)
    }

    /// Expert review when the set is not exactly one class.
    pub fn review(&self, p: f64) -> bool {
        let (neg, pos) = self.set(p);
        neg == pos
    }
}

/// What training recorded about one member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberMeta {
    pub file: String,
    pub seed: u64,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub validation_loss: f64,
}

/// `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format: u32,
    pub id: String,
    pub version: String,
    /// Stated on every card: the model learned from generated patients.
    pub trained_on_synthetic_data: bool,
    pub config: Config,
    pub members: Vec<MemberMeta>,
    pub standardizer: Standardizer,
    pub temperature: f64,
    pub conformal: Conformal,
    /// Modalities seen present during training; any other is always fed
    /// as missing (an untrained encoder must not speak).
    pub trained_modalities: Vec<String>,
    /// The notes encoder the embeddings came from (`NotesEmbedder::id`).
    pub notes_embedder: Option<String>,
    pub training: Value,
    /// Filled in by `oncohooks evaluate cachexia` when asked to.
    #[serde(default)]
    pub metrics: Option<Value>,
}

impl ModelMeta {
    pub fn uses(&self, m: Modality) -> bool {
        self.trained_modalities.iter().any(|k| k == key(m))
    }
}

/// One patient's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelPrediction {
    /// Temperature-scaled ensemble probability of cachexia within 6 months.
    pub risk: f64,
    /// Lowest and highest temperature-scaled member probability (the
    /// ensemble's spread: disagreement between members, not a coverage
    /// guarantee).
    pub interval: (f64, f64),
    /// The conformal prediction set at `alpha`: labels it contains.
    pub prediction_set: Vec<&'static str>,
    pub alpha: f64,
    pub review_suggested: bool,
    /// Probability of the predicted class (max(p, 1 − p)).
    pub confidence: f64,
    /// `high`, `moderate` or `low`.
    pub confidence_level: &'static str,
    pub modalities_used: Vec<Modality>,
    pub modalities_missing: Vec<Modality>,
    /// Modalities with data that this model was not trained on.
    pub modalities_not_used: Vec<Modality>,
    /// Model-computed contributions, largest first.
    pub factors: Vec<Factor>,
}

/// How much the risk changes when one input (or a whole modality) is
/// replaced by "missing": p(all) − p(without it). Computed by the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Factor {
    /// A modality key or a feature name.
    pub name: String,
    pub kind: &'static str,
    /// Percentage points of risk (positive: raises the risk).
    pub delta_pp: f64,
}

pub struct CachexiaEnsemble {
    pub meta: ModelMeta,
    members: Vec<CachexiaFusion>,
    /// The members stacked for inference (one pass for all of them).
    stacked: StackedFusion,
    device: Device,
    /// sha256 over `model.json` (without recorded metrics) and the member files.
    pub digest: String,
}

impl CachexiaEnsemble {
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let read =
            |p: PathBuf| std::fs::read(&p).map_err(|source| ModelError::Read { path: p, source });
        let meta_path = dir.join(META_FILE);
        let meta_bytes = read(meta_path.clone())?;
        let bad = |message: String| ModelError::Meta {
            path: meta_path.clone(),
            message,
        };
        let meta: ModelMeta =
            serde_json::from_slice(&meta_bytes).map_err(|e| bad(e.to_string()))?;
        if meta.format != FORMAT {
            return Err(bad(format!(
                "format {} (this build reads {FORMAT})",
                meta.format
            )));
        }
        if meta.config.input_dims != super::inputs::input_dims() {
            return Err(bad(format!(
                "input widths {:?} differ from this build's {:?}",
                meta.config.input_dims,
                super::inputs::input_dims()
            )));
        }
        meta.standardizer.check().map_err(bad)?;
        if meta.members.is_empty() || meta.temperature.is_nan() || meta.temperature <= 0.0 {
            return Err(bad("no members or a non-positive temperature".into()));
        }
        let device = Device::Cpu;
        // The version digest covers the weights and everything that changes
        // a prediction, not the recorded metrics (`evaluate --record`): the
        // description is hashed as `train` wrote it, with `metrics` null.
        let mut hasher = Sha256::new();
        let unannotated = ModelMeta {
            metrics: None,
            ..meta.clone()
        };
        let canonical =
            serde_json::to_string_pretty(&unannotated).map_err(|e| bad(e.to_string()))? + "\n";
        hasher.update(canonical.as_bytes());
        let mut members = Vec::new();
        for m in &meta.members {
            let bytes = read(dir.join(&m.file))?;
            hasher.update(&bytes);
            let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)?;
            members.push(CachexiaFusion::load(vb, &meta.config)?);
        }
        Ok(Self {
            stacked: StackedFusion::new(&members)?,
            meta,
            members,
            device,
            digest: hex::encode(hasher.finalize()),
        })
    }

    /// From members already in memory (training, tests).
    pub fn from_parts(meta: ModelMeta, members: Vec<CachexiaFusion>) -> candle_core::Result<Self> {
        Ok(Self {
            stacked: StackedFusion::new(&members)?,
            meta,
            members,
            device: Device::Cpu,
            digest: String::new(),
        })
    }

    /// `<version>+<first 8 hex of the digest>`.
    pub fn version(&self) -> String {
        if self.digest.is_empty() {
            self.meta.version.clone()
        } else {
            format!("{}+{}", self.meta.version, &self.digest[..8])
        }
    }

    /// Switch off modalities the model was not trained on.
    pub fn mask_untrained(&self, e: &mut Encoded) {
        for (i, m) in MODALITIES.iter().enumerate() {
            if !self.meta.uses(*m) {
                e.present[i] = false;
            }
        }
    }

    /// Member logits, `[member][row]`, all members in one pass
    /// ([`StackedFusion`]), in batches small enough that every tensor stays
    /// under the size (64k elements) at which candle's CPU backend hands
    /// element-wise work to its spinning thread pool, which on a busy
    /// machine made batched inference several times slower.
    pub fn member_logits(&self, rows: &[&Encoded]) -> candle_core::Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::with_capacity(rows.len()); self.members.len()];
        if rows.is_empty() {
            return Ok(out);
        }
        // Widest activation per row: every member's tokens (CLS and one
        // per modality) × the qkv projection or the feed-forward hidden layer.
        let c = &self.meta.config;
        let tokens = 1 + MODALITIES.len();
        let per_row = self.members.len() * tokens * (3 * c.d_model).max(c.d_ff);
        let most = ((64 * 1024 - 1) / per_row.max(1)).max(1);
        let batches = rows.len().div_ceil(most);
        for chunk in rows.chunks(rows.len().div_ceil(batches)) {
            let batch = TokenBatch::new(chunk, &self.device)?;
            let logits = self.stacked.forward(&batch)?.to_vec2::<f32>()?;
            for (o, l) in out.iter_mut().zip(logits) {
                o.extend(l);
            }
        }
        Ok(out)
    }

    /// Member logits one member at a time ([`CachexiaFusion::forward`]):
    /// what [`Self::member_logits`] computes, unstacked (tests).
    #[cfg(test)]
    pub(crate) fn member_logits_unstacked(
        &self,
        rows: &[&Encoded],
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let batch = super::inputs::ModalityBatch::new(rows, &self.device)?;
        self.members
            .iter()
            .map(|m| m.forward(&batch)?.to_vec1::<f32>())
            .collect()
    }

    /// Calibrated ensemble probability per row, and each member's.
    pub fn probabilities(
        &self,
        rows: &[&Encoded],
    ) -> candle_core::Result<(Vec<f64>, Vec<Vec<f64>>)> {
        let logits = self.member_logits(rows)?;
        Ok(combine(&logits, self.meta.temperature))
    }

    /// Encode, predict and explain one patient.
    pub fn predict(&self, raw: &RawInputs) -> candle_core::Result<ModelPrediction> {
        let mut out = self.predict_many(std::slice::from_ref(raw))?;
        Ok(out.remove(0))
    }

    /// Encode, predict and explain several patients in one pass: every
    /// patient's rows (itself, then one per left-out modality and input)
    /// go through [`Self::member_logits`] together, so concurrent hooks
    /// share the per-call and per-op cost (issue 4 §6, "batched when
    /// concurrent"). Each patient's answer equals [`Self::predict`]'s on it
    /// alone: every row is computed independently of the others
    /// (`predict_many_equals_predict_one_at_a_time`).
    pub fn predict_many(&self, raws: &[RawInputs]) -> candle_core::Result<Vec<ModelPrediction>> {
        let plans: Vec<RowPlan> = raws.iter().map(|raw| self.plan(raw)).collect();
        let refs: Vec<&Encoded> = plans.iter().flat_map(|p| p.rows.iter()).collect();
        let (probs, members) = self.probabilities(&refs)?;
        let mut start = 0;
        Ok(plans
            .into_iter()
            .map(|plan| {
                let n = plan.rows.len();
                let member_p: Vec<f64> = members.iter().map(|m| m[start]).collect();
                let out = self.explain(plan, &probs[start..start + n], &member_p);
                start += n;
                out
            })
            .collect())
    }

    /// [`Self::predict_many`], one answer per patient: a pass that fails
    /// (a candle error; inputs built by `RawInputs::from_timeline` should
    /// never cause one) is retried patient by patient, so one patient's
    /// bad input cannot fail the others' (the server's batched calls).
    pub fn predict_each(&self, raws: &[RawInputs]) -> Vec<candle_core::Result<ModelPrediction>> {
        match self.predict_many(raws) {
            Ok(ps) => ps.into_iter().map(Ok).collect(),
            Err(e) if raws.len() == 1 => vec![Err(e)],
            Err(_) => raws.iter().map(|raw| self.predict(raw)).collect(),
        }
    }

    /// The rows one patient needs. Row 0: the patient; then one row per
    /// present modality without it; then one row per present continuous
    /// input without it.
    fn plan(&self, raw: &RawInputs) -> RowPlan {
        let mut e = self.meta.standardizer.encode(raw);
        let had = e.present;
        self.mask_untrained(&mut e);
        let mut rows = vec![e.clone()];
        let mut labels: Vec<(String, &'static str)> = Vec::new();
        for (i, m) in MODALITIES.iter().enumerate() {
            if e.present[i] {
                rows.push(e.without(&[*m]));
                labels.push((key(*m).to_owned(), "modality"));
            }
        }
        for (i, m) in MODALITIES.iter().enumerate() {
            if !e.present[i] {
                continue;
            }
            let names = continuous_names(*m);
            let n = names.len();
            for (f, name) in names.iter().enumerate() {
                if raw.continuous[i][f].is_finite() {
                    let mut r = e.clone();
                    r.x[i][f] = 0.0;
                    r.x[i][n + f] = 0.0;
                    rows.push(r);
                    labels.push(((*name).to_owned(), "input"));
                }
            }
        }
        RowPlan {
            present: e.present,
            had,
            rows,
            labels,
        }
    }

    /// One patient's answer from its rows' probabilities (`probs[0]` is
    /// the patient's) and each member's probability of row 0.
    fn explain(&self, plan: RowPlan, probs: &[f64], member_p: &[f64]) -> ModelPrediction {
        let p = probs[0];
        let lo = member_p.iter().copied().fold(1.0, f64::min);
        let hi = member_p.iter().copied().fold(0.0, f64::max);
        let mut factors: Vec<Factor> = plan
            .labels
            .into_iter()
            .zip(&probs[1..])
            .map(|((name, kind), q)| Factor {
                name,
                kind,
                delta_pp: round2(100.0 * (p - q)),
            })
            .collect();
        factors.sort_by(|a, b| b.delta_pp.abs().total_cmp(&a.delta_pp.abs()));

        let c = &self.meta.conformal;
        let (neg, pos) = c.set(p);
        let review = c.review(p);
        let mut set = Vec::new();
        if neg {
            set.push("no cachexia");
        }
        if pos {
            set.push("cachexia");
        }
        let confidence_level = if review {
            "low"
        } else if hi - lo <= 0.15 {
            "high"
        } else {
            "moderate"
        };
        let pick = |want: bool, had_it: bool| {
            MODALITIES
                .iter()
                .enumerate()
                .filter(|(i, _)| plan.present[*i] == want && plan.had[*i] == had_it)
                .map(|(_, m)| *m)
                .collect::<Vec<_>>()
        };
        ModelPrediction {
            risk: p,
            interval: (lo, hi),
            prediction_set: set,
            alpha: c.alpha,
            review_suggested: review,
            confidence: p.max(1.0 - p),
            confidence_level,
            modalities_used: pick(true, true),
            modalities_missing: pick(false, false),
            modalities_not_used: pick(false, true),
            factors,
        }
    }
}

/// What [`CachexiaEnsemble::plan`] builds for one patient.
struct RowPlan {
    /// Modalities present after masking those the model was not trained on.
    present: [bool; MODALITIES.len()],
    /// Modalities with data, before that masking.
    had: [bool; MODALITIES.len()],
    rows: Vec<Encoded>,
    /// Per row after the first: what it leaves out, and whether that is a
    /// modality or an input.
    labels: Vec<(String, &'static str)>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Ensemble probability = sigmoid(mean member logit / T); member
/// probabilities = sigmoid(logit / T).
pub fn combine(logits: &[Vec<f32>], temperature: f64) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = logits.first().map_or(0, Vec::len);
    let k = logits.len().max(1) as f64;
    let mean: Vec<f64> = (0..n)
        .map(|r| logits.iter().map(|m| f64::from(m[r])).sum::<f64>() / k)
        .collect();
    let probs = mean.iter().map(|z| sigmoid(z / temperature)).collect();
    let members = logits
        .iter()
        .map(|m| {
            m.iter()
                .map(|z| sigmoid(f64::from(*z) / temperature))
                .collect()
        })
        .collect();
    (probs, members)
}

/// The temperature minimising the negative log-likelihood of `labels`
/// given mean logits (golden-section search on log T in [−3, 3]).
pub fn fit_temperature(mean_logits: &[f64], labels: &[bool]) -> f64 {
    let nll = |log_t: f64| {
        let t = log_t.exp();
        mean_logits
            .iter()
            .zip(labels)
            .map(|(z, y)| {
                let s = if *y { z / t } else { -z / t };
                // −log sigmoid(s), stable.
                (-s).max(0.0) + (-(s.abs())).exp().ln_1p()
            })
            .sum::<f64>()
    };
    let (mut a, mut b) = (-3.0f64, 3.0f64);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..100 {
        let c = b - g * (b - a);
        let d = a + g * (b - a);
        if nll(c) < nll(d) {
            b = d;
        } else {
            a = c;
        }
    }
    ((a + b) / 2.0).exp()
}

/// Mean member logit per row.
pub fn mean_logits(logits: &[Vec<f32>]) -> Vec<f64> {
    let n = logits.first().map_or(0, Vec::len);
    let k = logits.len().max(1) as f64;
    (0..n)
        .map(|r| logits.iter().map(|m| f64::from(m[r])).sum::<f64>() / k)
        .collect()
}
