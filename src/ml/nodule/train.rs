//! Training the AutoRad-Lung ensemble on LIDC-IDRI 0001–0799.
//!
//! * Patients (never nodules) are split once, with a fixed split seed, into
//!   train / validation (early stopping) / calibration (temperature and
//!   conformal threshold); scans 0800+ are the test set and never reach this
//!   module ([`TrainingSet`] holds train/val rows only, and [`train`]
//!   refuses a patient number ≥ 800).
//! * Each member: its own seed (initialisation, batch order, augmentation),
//!   AdamW on class-weighted cross-entropy (malignant weighted by the
//!   benign:malignant ratio of the training patients, ≈ 2:1), random flips
//!   of the patch axes and an x↔y swap as augmentation, early stopping on the
//!   validation loss, best epoch kept.
//! * Two stages for the full variant. A CoCoOp step costs two prompts per
//!   nodule through the six MiniLM layers, forward and backward (~30 GFLOP
//!   for 32 nodules), a CoOp step two prompts per batch. So the image tower,
//!   projection, context and logit scale first train as CoOp (`warmup_epochs`,
//!   π = 0: cheap), then everything trains as CoCoOp with the meta-network
//!   (`max_epochs`). The meta-network's output layer starts at zero, so the
//!   second stage starts exactly from the first stage's model and the
//!   radiomics shift grows from there (as zero-initialised residual branches
//!   do). Early stopping and best-epoch selection span both stages: if the
//!   meta-network never lowers the validation loss, the member keeps π = 0,
//!   and `model.json` says so (`best_stage`).
//! * Deterministic for a seed on the CPU: every random draw comes from a
//!   ChaCha stream and the weights are initialised here, not by candle's
//!   unseeded generator; the same seed writes the same bytes.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;

use crate::ml::training::{adamw_in_name_order, member_seed, restore, snapshot};

use super::classifier::{
    CLASS_PROMPTS, FORMAT, LoadedEncoder, META_FILE, MODEL_ID, MemberMeta, ModelMeta, NoduleModel,
    Standardizer, TextEncoderRef,
};
use super::model::{Config, NoduleNet, Prompts, Variant};
use crate::imaging::patch::PatchConfig;
use crate::ml::cachexia::ensemble::{Conformal, combine, fit_temperature, mean_logits};
use crate::ml::vit;

/// Semantic version of the method (architecture + recipe).
pub const MODEL_VERSION: &str = "1.0.0";
/// Card source label.
pub const SOURCE_LABEL: &str = "AutoRad-Lung-style model trained on LIDC-IDRI reader annotations (CT patches rendered from the readers' masks)";

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid option: {0}")]
    Options(String),
    #[error("training data: {0}")]
    Data(String),
    #[error("model tensors: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Model(#[from] super::NoduleModelError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// One labelled nodule of LIDC-IDRI 0001–0799.
#[derive(Debug, Clone)]
pub struct Example {
    /// `LIDC-IDRI-0123`.
    pub patient: String,
    /// Axial, coronal, sagittal centre planes, `size²` each, in [0, 1].
    pub views: [Vec<f32>; 3],
    /// Raw radiomics in the order of [`TrainingSet::feature_names`].
    pub radiomics: Vec<f64>,
    pub malignant: bool,
}

/// What training reads: labelled train/val nodules (unsure ones and the
/// test scans already left out by the caller, and counted in `source`).
#[derive(Debug, Clone)]
pub struct TrainingSet {
    pub feature_names: Vec<String>,
    pub patch: PatchConfig,
    pub examples: Vec<Example>,
    /// Where the rows came from and what was left out (recorded in model.json).
    pub source: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainOptions {
    pub variant: Variant,
    pub seed: u64,
    /// Seed of the patient split (fixed across members and variants, so the
    /// ablation calibrates on the same patients).
    pub split_seed: u64,
    pub members: usize,
    /// CoOp epochs before the meta-network trains (full variant only).
    pub warmup_epochs: usize,
    /// Epochs of the main stage (CoCoOp for full, CoOp for image-only).
    pub max_epochs: usize,
    pub patience: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub alpha: f64,
    pub validation_fraction: f64,
    pub calibration_fraction: f64,
    /// Image tower (e.g. [`vit::Config::nodule_tiny`]); its image size must
    /// be the table's patch size.
    pub vision: vit::Config,
    pub n_ctx: usize,
    pub meta_hidden: usize,
    pub augment: bool,
    #[serde(skip)]
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            variant: Variant::Full,
            seed: 1,
            split_seed: 2026,
            members: 5,
            warmup_epochs: 8,
            max_epochs: 4,
            patience: 3,
            batch_size: 32,
            learning_rate: 1e-3,
            weight_decay: 1e-2,
            alpha: 0.1,
            validation_fraction: 0.15,
            calibration_fraction: 0.15,
            vision: vit::Config::nodule_tiny(),
            n_ctx: 4,
            meta_hidden: 32,
            augment: true,
            progress: false,
        }
    }
}

impl TrainOptions {
    fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Options(m.to_owned()));
        if self.members == 0 || self.batch_size == 0 || self.max_epochs == 0 {
            return bad("members, batch size and epochs must be positive");
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return bad("alpha must be in (0, 1)");
        }
        let (v, c) = (self.validation_fraction, self.calibration_fraction);
        if !(v > 0.0 && c > 0.0 && v + c < 0.9) {
            return bad(
                "validation and calibration fractions must be positive and leave training patients",
            );
        }
        self.vision.validate().map_err(TrainError::Options)?;
        Ok(())
    }
}

/// Which part of 0001–0799 a patient is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Train,
    Validation,
    Calibration,
}

/// Patient → part: patients sorted, shuffled with `split_seed`, the first
/// `validation_fraction` to validation, the next `calibration_fraction` to
/// calibration, the rest to training.
pub fn split_patients(patients: &BTreeSet<&str>, opts: &TrainOptions) -> HashMap<String, Part> {
    let mut p: Vec<&str> = patients.iter().copied().collect();
    p.shuffle(&mut ChaCha8Rng::seed_from_u64(opts.split_seed));
    let n = p.len() as f64;
    let n_val = (n * opts.validation_fraction).round() as usize;
    let n_cal = (n * opts.calibration_fraction).round() as usize;
    p.into_iter()
        .enumerate()
        .map(|(i, id)| {
            let part = if i < n_val {
                Part::Validation
            } else if i < n_val + n_cal {
                Part::Calibration
            } else {
                Part::Train
            };
            (id.to_owned(), part)
        })
        .collect()
}

/// A nodule ready for batching: views and standardised radiomics.
struct Row {
    views: [Vec<f32>; 3],
    z: Vec<f32>,
    y: bool,
}

/// The patch's axes flipped (x, y, z) and x↔y swapped, applied to its
/// three centre planes. Layouts (`imaging::patch`): axial rows y, columns
/// x; coronal rows −z, columns x; sagittal rows −z, columns y. Every such
/// move maps the cube onto itself, so the views stay views of one nodule.
fn augment(views: &[Vec<f32>; 3], s: usize, flip: [bool; 3], swap_xy: bool) -> [Vec<f32>; 3] {
    let plane = |v: &Vec<f32>, flip_rows: bool, flip_cols: bool, transpose: bool| {
        let mut out = vec![0f32; s * s];
        for r in 0..s {
            for c in 0..s {
                let (rr, cc) = (
                    if flip_rows { s - 1 - r } else { r },
                    if flip_cols { s - 1 - c } else { c },
                );
                let (sr, sc) = if transpose { (cc, rr) } else { (rr, cc) };
                out[r * s + c] = v[sr * s + sc];
            }
        }
        out
    };
    let [fx, fy, fz] = flip;
    let [axial, coronal, sagittal] = views;
    if swap_xy {
        // x' = y, y' = x: the axial plane transposes, and coronal (rows z,
        // columns x') is the old sagittal (rows z, columns y), and back.
        [
            plane(axial, fy, fx, true),
            plane(sagittal, fz, fx, false),
            plane(coronal, fz, fy, false),
        ]
    } else {
        [
            plane(axial, fy, fx, false),
            plane(coronal, fz, fx, false),
            plane(sagittal, fz, fy, false),
        ]
    }
}

fn tensors(
    rows: &[&Row],
    s: usize,
    nz: usize,
    rng: Option<&mut ChaCha8Rng>,
) -> candle_core::Result<(Tensor, Option<Tensor>, Tensor)> {
    let dev = Device::Cpu;
    let mut px = Vec::with_capacity(rows.len() * 3 * s * s);
    let mut rng = rng;
    for r in rows {
        match rng.as_deref_mut() {
            Some(rng) => {
                let flip = [
                    rng.random::<bool>(),
                    rng.random::<bool>(),
                    rng.random::<bool>(),
                ];
                let swap = rng.random::<bool>();
                for v in augment(&r.views, s, flip, swap) {
                    px.extend(v);
                }
            }
            None => {
                for v in &r.views {
                    px.extend_from_slice(v);
                }
            }
        }
    }
    let pixels = Tensor::from_vec(px, (rows.len(), 3, s, s), &dev)?;
    let z = if nz > 0 {
        let z: Vec<f32> = rows.iter().flat_map(|r| r.z.iter().copied()).collect();
        Some(Tensor::from_vec(z, (rows.len(), nz), &dev)?)
    } else {
        None
    };
    let y: Vec<f32> = rows.iter().map(|r| f32::from(u8::from(r.y))).collect();
    Ok((pixels, z, Tensor::from_vec(y, rows.len(), &dev)?))
}

/// Class-weighted binary cross-entropy on logits:
/// Σ wᵢ·(max(x,0) − x·y + log(1 + e^−|x|)) / Σ wᵢ, wᵢ = `pos_weight` for
/// malignant, 1 for benign.
fn weighted_bce(logits: &Tensor, y: &Tensor, pos_weight: f64) -> candle_core::Result<Tensor> {
    let w = y.affine(pos_weight - 1.0, 1.0)?;
    let a = logits.relu()?;
    let b = (logits * y)?;
    let c = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    let per = ((a - b)? + c)?;
    (per * &w)?.sum_all()? / w.sum_all()?.to_scalar::<f32>()? as f64
}

fn weighted_bce_f64(logits: &[f32], y: &[bool], pos_weight: f64) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (x, &t) in logits.iter().zip(y) {
        let x = f64::from(*x);
        let w = if t { pos_weight } else { 1.0 };
        let s = if t { x } else { -x };
        num += w * ((-s).max(0.0) + (-(s.abs())).exp().ln_1p());
        den += w;
    }
    num / den.max(1e-12)
}

/// AUROC by the rank-sum (Mann–Whitney U), ties counted half.
pub fn auroc(scores: &[f64], labels: &[bool]) -> f64 {
    let pos: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|(_, y)| **y)
        .map(|(s, _)| *s)
        .collect();
    let neg: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|(_, y)| !**y)
        .map(|(s, _)| *s)
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut u = 0.0;
    for p in &pos {
        for n in &neg {
            u += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    u / (pos.len() * neg.len()) as f64
}

/// Deterministic initialisation, in name order: norms 1; `pos_embed` and
/// the context N(0, 0.02²) (CoOp initialises context with std 0.02);
/// weights U(±1/√fan_in) (PyTorch's default for Linear and Conv2d);
/// biases 0; the log logit scale at its configured start.
fn init_params(varmap: &VarMap, cfg: &Config, rng: &mut ChaCha8Rng) -> candle_core::Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.contains("norm") {
            vec![1.0; n]
        } else if name == "logit_scale" {
            vec![cfg.logit_scale_init as f32; n]
        } else if name.ends_with("pos_embed") || name.ends_with("ctx") {
            (0..n)
                .map(|_| 0.02 * rng.sample::<f32, _>(rand_distr::StandardNormal))
                .collect()
        } else if name.ends_with("bias") || name.starts_with("prompt.meta_net.linear2") {
            // Biases 0; the meta-network's output layer 0 (see the module
            // docs: the CoCoOp stage starts from the CoOp model).
            vec![0.0; n]
        } else {
            let fan_in: usize = dims[1..].iter().product::<usize>().max(1);
            let bound = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        var.set(&Tensor::from_vec(values, dims, &Device::Cpu)?)?;
    }
    Ok(())
}

/// A member built from plain tensors (no gradient tracking: the fast
/// inference path).
fn frozen(snap: &HashMap<String, Tensor>, cfg: &Config) -> candle_core::Result<NoduleNet> {
    NoduleNet::load(
        VarBuilder::from_tensors(snap.clone(), DType::F32, &Device::Cpu),
        cfg,
    )
}

/// Malignant logits of `rows` by an untracked member, in chunks.
fn logits_of(
    net: &NoduleNet,
    rows: &[&Row],
    s: usize,
    nz: usize,
    prompts: &Prompts,
) -> candle_core::Result<Vec<f32>> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(64) {
        let (px, z, _) = tensors(chunk, s, nz, None)?;
        out.extend(
            net.malignant_logit(&px, z.as_ref(), prompts)?
                .to_vec1::<f32>()?,
        );
    }
    Ok(out)
}

struct TrainedMember {
    snap: HashMap<String, Tensor>,
    meta: MemberMeta,
}

#[allow(clippy::too_many_arguments)]
fn train_member(
    index: usize,
    opts: &TrainOptions,
    cfg: &Config,
    prompts: &Prompts,
    train: &[&Row],
    val: &[&Row],
    pos_weight: f64,
    started: Instant,
) -> Result<TrainedMember, TrainError> {
    let dev = Device::Cpu;
    let s = cfg.vision.image_size;
    let nz = if cfg.variant.uses_radiomics() {
        cfg.n_radiomics
    } else {
        0
    };
    let seed = member_seed(opts.seed, index);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let varmap = VarMap::new();
    let net = NoduleNet::load(VarBuilder::from_varmap(&varmap, DType::F32, &dev), cfg)?;
    init_params(&varmap, cfg, &mut rng)?;
    let mut opt = adamw_in_name_order(&varmap, opts.learning_rate, opts.weight_decay)?;
    let val_y: Vec<bool> = val.iter().map(|r| r.y).collect();
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut best = (f64::INFINITY, 0usize, f64::NAN);
    let mut best_stage = "coop";
    let mut best_snap = snapshot(&varmap)?;
    let mut epoch = 0;
    // (stage name, radiomics on, epochs)
    let stages: Vec<(&'static str, bool, usize)> = if nz > 0 {
        vec![
            ("coop", false, opts.warmup_epochs),
            ("cocoop", true, opts.max_epochs),
        ]
    } else {
        vec![("coop", false, opts.max_epochs)]
    };
    for (stage, with_radiomics, stage_epochs) in stages {
        let stage_start = epoch;
        let mut stage_best = epoch;
        for _ in 0..stage_epochs {
            epoch += 1;
            order.shuffle(&mut rng);
            let (mut loss_sum, mut seen) = (0.0, 0usize);
            let steps = order.len().div_ceil(opts.batch_size);
            for (step, chunk) in order.chunks(opts.batch_size).enumerate() {
                let rows: Vec<&Row> = chunk.iter().map(|&i| train[i]).collect();
                let aug = if opts.augment { Some(&mut rng) } else { None };
                let (px, z, y) = tensors(&rows, s, nz, aug)?;
                let z = if with_radiomics { z } else { None };
                let logits = net.malignant_logit(&px, z.as_ref(), prompts)?;
                let loss = weighted_bce(&logits, &y, pos_weight)?;
                opt.backward_step(&loss)?;
                loss_sum += f64::from(loss.to_scalar::<f32>()?) * rows.len() as f64;
                seen += rows.len();
                if opts.progress {
                    eprint!(
                        "\rmember {}/{} {stage} epoch {epoch} step {}/{steps}  train loss {:.4}  [{:.0} s]   ",
                        index + 1,
                        opts.members,
                        step + 1,
                        loss_sum / seen as f64,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            let snap = snapshot(&varmap)?;
            let val_logits = logits_of(
                &frozen(&snap, cfg)?,
                val,
                s,
                if with_radiomics { nz } else { 0 },
                prompts,
            )?;
            let val_loss = weighted_bce_f64(&val_logits, &val_y, pos_weight);
            let scores: Vec<f64> = val_logits.iter().map(|x| f64::from(*x)).collect();
            let val_auc = auroc(&scores, &val_y);
            if val_loss < best.0 - 1e-5 {
                best = (val_loss, epoch, val_auc);
                best_stage = stage;
                best_snap = snap;
                stage_best = epoch;
            }
            if opts.progress {
                eprintln!(
                    "\rmember {}/{} {stage} epoch {epoch}  train loss {:.4}  validation loss {val_loss:.4} AUROC {val_auc:.3}  best epoch {}  [{:.0} s]   ",
                    index + 1,
                    opts.members,
                    loss_sum / seen.max(1) as f64,
                    best.1,
                    started.elapsed().as_secs_f64()
                );
            }
            if epoch - stage_best.max(stage_start) >= opts.patience {
                break;
            }
        }
        // The next stage starts from this stage's best weights.
        restore(&varmap, &best_snap)?;
    }
    let epochs_run = epoch;
    let scale = frozen(&best_snap, cfg)?.logit_scale()?;
    Ok(TrainedMember {
        snap: best_snap,
        meta: MemberMeta {
            file: format!("member-{index}.safetensors"),
            seed,
            epochs_run,
            best_epoch: best.1,
            best_stage: best_stage.into(),
            validation_loss: round6(best.0),
            validation_auroc: round6(best.2),
            logit_scale: round6(f64::from(scale)),
        },
    })
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The text side as training records it.
pub struct TextSide<'a> {
    pub prompts: &'a Prompts,
    pub encoder: TextEncoderRef,
}

impl<'a> TextSide<'a> {
    /// From a loaded MiniLM folder: the class prompts tokenised.
    pub fn from_encoder(enc: &LoadedEncoder, dir: &Path, prompts: &'a Prompts) -> Self {
        Self {
            prompts,
            encoder: TextEncoderRef {
                name: enc.name.clone(),
                dir: dir.display().to_string(),
                weights_sha256: enc.weights_sha256.clone(),
                class_prompts: CLASS_PROMPTS.map(str::to_owned),
                class_ids: prompts.class_ids().clone(),
            },
        }
    }
}

/// Train the ensemble; with `out`, write `model.json` and the members.
/// Returns the model in memory (members as plain tensors).
pub fn train(
    set: &TrainingSet,
    text: &TextSide<'_>,
    opts: &TrainOptions,
    out: Option<&Path>,
) -> Result<NoduleModel, TrainError> {
    opts.validate()?;
    let started = Instant::now();
    let vision = opts.vision.clone();
    let s = set.patch.size;
    if vision.image_size != s {
        return Err(TrainError::Options(format!(
            "the image tower takes {0}×{0} views, the table's patches are {s}×{s}",
            vision.image_size
        )));
    }
    let f = set.feature_names.len();
    for (i, e) in set.examples.iter().enumerate() {
        if e.views.iter().any(|v| v.len() != s * s) || e.radiomics.len() != f {
            return Err(TrainError::Data(format!(
                "row {i} ({}) has the wrong shape",
                e.patient
            )));
        }
        match crate::nodule::lidc::db::patient_number(&e.patient) {
            Some(n) if n < crate::nodule::lidc::Split::FIRST_TEST_PATIENT => {}
            _ => {
                return Err(TrainError::Data(format!(
                    "{} is not a LIDC-IDRI 0001–0799 patient: test scans never reach training",
                    e.patient
                )));
            }
        }
    }
    let patients: BTreeSet<&str> = set.examples.iter().map(|e| e.patient.as_str()).collect();
    let parts = split_patients(&patients, opts);
    let part_of = |e: &Example| parts[&e.patient];
    let in_part =
        |p: Part| -> Vec<&Example> { set.examples.iter().filter(|e| part_of(e) == p).collect() };
    let (train_ex, val_ex, cal_ex) = (
        in_part(Part::Train),
        in_part(Part::Validation),
        in_part(Part::Calibration),
    );
    for (name, ex) in [
        ("train", &train_ex),
        ("validation", &val_ex),
        ("calibration", &cal_ex),
    ] {
        let pos = ex.iter().filter(|e| e.malignant).count();
        if pos == 0 || pos == ex.len() {
            return Err(TrainError::Data(format!(
                "the {name} patients need both classes"
            )));
        }
    }

    let uses_rad = opts.variant.uses_radiomics();
    let rows_of = |ex: &[&Example], std: &Standardizer| -> Vec<Row> {
        ex.iter()
            .map(|e| Row {
                views: e.views.clone(),
                z: if uses_rad {
                    std.encode(&e.radiomics).0
                } else {
                    Vec::new()
                },
                y: e.malignant,
            })
            .collect()
    };
    let standardizer = if uses_rad {
        let raw: Vec<&[f64]> = train_ex.iter().map(|e| e.radiomics.as_slice()).collect();
        Standardizer::fit(set.feature_names.clone(), &raw)
    } else {
        Standardizer {
            names: Vec::new(),
            mean: Vec::new(),
            std: Vec::new(),
        }
    };
    let non_finite: usize = train_ex
        .iter()
        .map(|e| e.radiomics.iter().filter(|x| !x.is_finite()).count())
        .sum();
    let train_rows = rows_of(&train_ex, &standardizer);
    let val_rows = rows_of(&val_ex, &standardizer);
    let cal_rows = rows_of(&cal_ex, &standardizer);
    let n_pos = train_rows.iter().filter(|r| r.y).count();
    let pos_weight = (train_rows.len() - n_pos) as f64 / n_pos as f64;

    let mut cfg = Config::new(
        vision,
        opts.variant,
        text.prompts.dim(),
        if uses_rad { f } else { 0 },
    );
    cfg.n_ctx = opts.n_ctx;
    cfg.meta_hidden = opts.meta_hidden;
    cfg.validate().map_err(TrainError::Options)?;
    if opts.progress {
        eprintln!(
            "training {} ({}): {} train / {} validation / {} calibration nodules, malignant weight {pos_weight:.2}",
            MODEL_ID,
            opts.variant.as_str(),
            train_rows.len(),
            val_rows.len(),
            cal_rows.len()
        );
    }
    let train_refs: Vec<&Row> = train_rows.iter().collect();
    let val_refs: Vec<&Row> = val_rows.iter().collect();
    let mut members = Vec::with_capacity(opts.members);
    for m in 0..opts.members {
        members.push(train_member(
            m,
            opts,
            &cfg,
            text.prompts,
            &train_refs,
            &val_refs,
            pos_weight,
            started,
        )?);
    }

    // Calibration patients: temperature, then the conformal threshold.
    let nz = if uses_rad { f } else { 0 };
    let cal_refs: Vec<&Row> = cal_rows.iter().collect();
    let cal_y: Vec<bool> = cal_rows.iter().map(|r| r.y).collect();
    let nets = members
        .iter()
        .map(|m| frozen(&m.snap, &cfg))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let cal_logits = nets
        .iter()
        .map(|n| logits_of(n, &cal_refs, s, nz, text.prompts))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let temperature = fit_temperature(&mean_logits(&cal_logits), &cal_y);
    let (cal_probs, _) = combine(&cal_logits, temperature);
    let conformal = Conformal::fit(&cal_probs, &cal_y, opts.alpha);
    let cal_auroc = auroc(&cal_probs, &cal_y);
    let secs = started.elapsed().as_secs_f64();

    let count = |ex: &[&Example]| {
        json!({
            "nodules": ex.len(),
            "malignant": ex.iter().filter(|e| e.malignant).count(),
            "patients": ex.iter().map(|e| e.patient.as_str()).collect::<BTreeSet<_>>().len(),
        })
    };
    let meta = ModelMeta {
        format: FORMAT,
        id: MODEL_ID.into(),
        version: format!("{MODEL_VERSION}-{}", opts.variant.as_str()),
        variant: opts.variant,
        source_label: SOURCE_LABEL.into(),
        trained_on_rendered_pixels: true,
        config: cfg.clone(),
        patch: set.patch,
        text_encoder: text.encoder.clone(),
        standardizer,
        members: members.iter().map(|m| m.meta.clone()).collect(),
        temperature: round6(temperature),
        conformal,
        training: json!({
            "options": opts,
            "seed": opts.seed,
            "splits": {
                "train": count(&train_ex),
                "validation": count(&val_ex),
                "calibration": count(&cal_ex),
            },
            "malignant_weight": round6(pos_weight),
            "non_finite_train_radiomics_values": non_finite,
            "calibration_auroc": round6(cal_auroc),
            "seconds": (secs * 10.0).round() / 10.0,
            "threads": rayon::current_num_threads(),
            "source": set.source,
        }),
    };
    if opts.progress {
        eprintln!(
            "trained {} members in {secs:.1} s; temperature {:.3}; conformal threshold {:.4} at alpha {}; calibration AUROC {cal_auroc:.3}",
            members.len(),
            meta.temperature,
            meta.conformal.qhat,
            meta.conformal.alpha
        );
    }
    if let Some(dir) = out {
        let werr = |path: &Path| {
            let path = path.display().to_string();
            move |source| TrainError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(werr(dir))?;
        for m in &members {
            candle_core::safetensors::save(&m.snap, dir.join(&m.meta.file))?;
        }
        let text_json =
            serde_json::to_string_pretty(&meta).map_err(|e| TrainError::Data(e.to_string()))?;
        std::fs::write(dir.join(META_FILE), text_json + "\n")
            .map_err(werr(&dir.join(META_FILE)))?;
    }
    Ok(NoduleModel::from_parts(meta, nets, text.prompts.clone()))
}
