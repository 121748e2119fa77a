//! Training: each ensemble member from its own seed (initialisation, batch
//! order, modality dropout), AdamW on binary cross-entropy, early stopping on
//! the validation split; then the temperature and the conformal threshold on
//! the calibration split. Deterministic for a seed on the CPU: every random
//! draw comes from a ChaCha stream, and the weights are initialised here
//! rather than by candle's unseeded CPU generator.

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

use super::dataset::{Dataset, Example};
use super::ensemble::{
    CachexiaEnsemble, Conformal, FORMAT, META_FILE, MODEL_ID, MemberMeta, ModelMeta, combine,
    fit_temperature, mean_logits,
};
use super::inputs::{Encoded, MODALITIES, ModalityBatch, Standardizer, input_dims, key};
use super::model::{CachexiaFusion, Config};
use crate::features::cachexia::Modality;
use crate::synth::Split;

/// Semantic version of the method (architecture + training recipe).
/// 1.1.0: training reaches every parameter (`ml::ops`); 1.0.0 trained
/// through candle-nn's fused LayerNorm and softmax, which have no backward
/// pass, so attention query/key weights and LayerNorms kept their initial
/// values.
pub const MODEL_VERSION: &str = "1.1.0";

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("the {0} split is empty: need train, validation and calibration patients")]
    EmptySplit(&'static str),
    #[error("invalid option: {0}")]
    Options(String),
    #[error("model tensors: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainOptions {
    pub seed: u64,
    pub members: usize,
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation loss.
    pub patience: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Probability of hiding each present modality of a training example
    /// (half of it for demographics), so the model learns every subset.
    pub modality_dropout: f64,
    /// Conformal target error rate.
    pub alpha: f64,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_ff: usize,
    #[serde(skip)]
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        let c = Config::small(input_dims());
        Self {
            seed: 1,
            members: 5,
            // Sized so that 5 members on 12,000 training patients fit the
            // 30-minute budget on the shared 2-core machine.
            max_epochs: 12,
            patience: 4,
            batch_size: 256,
            learning_rate: 2e-3,
            weight_decay: 1e-2,
            modality_dropout: 0.3,
            alpha: 0.1,
            d_model: c.d_model,
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            d_ff: c.d_ff,
            progress: false,
        }
    }
}

impl TrainOptions {
    fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Options(m.to_owned()));
        if self.members == 0 {
            return bad("members must be at least 1");
        }
        if self.batch_size == 0 || self.max_epochs == 0 {
            return bad("batch size and epochs must be positive");
        }
        if self.alpha.is_nan() || self.alpha <= 0.0 || self.alpha >= 1.0 {
            return bad("alpha must be in (0, 1)");
        }
        if !(0.0..1.0).contains(&self.modality_dropout) {
            return bad("modality dropout must be in [0, 1)");
        }
        if self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return bad("d_model must be a multiple of n_heads");
        }
        Ok(())
    }

    fn config(&self) -> Config {
        Config {
            d_model: self.d_model,
            n_heads: self.n_heads,
            n_layers: self.n_layers,
            d_ff: self.d_ff,
            input_dims: input_dims(),
        }
    }
}

/// Stable binary cross-entropy on logits: mean(max(x,0) − x·y + log(1 + e^−|x|)).
fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let a = logits.relu()?;
    let b = (logits * targets)?;
    let c = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    ((a - b)? + c)?.mean_all()
}

pub fn bce(probs_or_logits: &[f64], labels: &[bool], logits: bool) -> f64 {
    let n = labels.len().max(1) as f64;
    probs_or_logits
        .iter()
        .zip(labels)
        .map(|(v, y)| {
            if logits {
                let s = if *y { *v } else { -*v };
                (-s).max(0.0) + (-(s.abs())).exp().ln_1p()
            } else {
                let p = v.clamp(1e-7, 1.0 - 1e-7);
                if *y { -p.ln() } else { -(1.0 - p).ln() }
            }
        })
        .sum::<f64>()
        / n
}

/// Initialise every parameter from `rng`, in name order: linear weights
/// U(±1/√fan_in) (PyTorch's default), linear biases 0, LayerNorm 1/0,
/// tokens N(0, 0.1²).
pub(super) fn init_params(varmap: &VarMap, rng: &mut ChaCha8Rng) -> candle_core::Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let is_ln = name.contains("ln1") || name.contains("ln2") || name.contains("ln_f");
        let values: Vec<f32> = if is_ln {
            let one = name.ends_with("weight");
            vec![f32::from(u8::from(one)); n]
        } else if dims.len() == 2 {
            let bound = 1.0 / (dims[1] as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        } else if name.ends_with("bias") {
            vec![0.0; n]
        } else {
            (0..n)
                .map(|_| 0.1 * rng.sample::<f32, _>(rand_distr::StandardNormal))
                .collect()
        };
        var.set(&Tensor::from_vec(values, dims, &Device::Cpu)?)?;
    }
    Ok(())
}

struct Member {
    varmap: VarMap,
    model: CachexiaFusion,
    meta: MemberMeta,
}

fn train_member(
    index: usize,
    opts: &TrainOptions,
    cfg: &Config,
    train: &[Encoded],
    train_y: &[bool],
    val: &ModalityBatch,
    val_y: &[bool],
) -> Result<Member, TrainError> {
    let device = Device::Cpu;
    let seed = member_seed(opts.seed, index);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let varmap = VarMap::new();
    let model = CachexiaFusion::load(VarBuilder::from_varmap(&varmap, DType::F32, &device), cfg)?;
    init_params(&varmap, &mut rng)?;
    let mut opt = adamw_in_name_order(&varmap, opts.learning_rate, opts.weight_decay)?;

    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut best = (f64::INFINITY, 0usize);
    let mut best_snap = snapshot(&varmap)?;
    let mut epochs_run = 0;
    for epoch in 1..=opts.max_epochs {
        epochs_run = epoch;
        order.shuffle(&mut rng);
        let mut train_loss = 0.0;
        let mut seen = 0usize;
        for chunk in order.chunks(opts.batch_size) {
            let rows: Vec<Encoded> = chunk
                .iter()
                .map(|&i| {
                    let mut e = train[i].clone();
                    for (mi, m) in MODALITIES.iter().enumerate() {
                        let p = if *m == Modality::Clinical {
                            opts.modality_dropout / 2.0
                        } else {
                            opts.modality_dropout
                        };
                        if e.present[mi] && rng.random::<f64>() < p {
                            e.present[mi] = false;
                        }
                    }
                    e
                })
                .collect();
            let refs: Vec<&Encoded> = rows.iter().collect();
            let batch = ModalityBatch::new(&refs, &device)?;
            let y: Vec<f32> = chunk.iter().map(|&i| f32::from(train_y[i])).collect();
            let y = Tensor::from_vec(y, chunk.len(), &device)?;
            let loss = bce_with_logits(&model.forward(&batch)?, &y)?;
            opt.backward_step(&loss)?;
            train_loss += f64::from(loss.to_scalar::<f32>()?) * chunk.len() as f64;
            seen += chunk.len();
        }
        let val_logits: Vec<f64> = model
            .forward(val)?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect();
        let val_loss = bce(&val_logits, val_y, true);
        if val_loss < best.0 - 1e-5 {
            best = (val_loss, epoch);
            best_snap = snapshot(&varmap)?;
        }
        if opts.progress {
            eprint!(
                "\rmember {}/{} epoch {epoch:>3}/{}  train loss {:.4}  validation loss {val_loss:.4}  best {:.4} (epoch {})   ",
                index + 1,
                opts.members,
                opts.max_epochs,
                train_loss / seen.max(1) as f64,
                best.0,
                best.1
            );
        }
        if epoch - best.1 >= opts.patience {
            break;
        }
    }
    if opts.progress {
        eprintln!();
    }
    restore(&varmap, &best_snap)?;
    Ok(Member {
        varmap,
        model,
        meta: MemberMeta {
            file: format!("member-{index}.safetensors"),
            seed,
            epochs_run,
            best_epoch: best.1,
            validation_loss: (best.0 * 1e6).round() / 1e6,
        },
    })
}

fn encode_split(
    std: &Standardizer,
    examples: &[&Example],
    trained: &[bool; 5],
) -> (Vec<Encoded>, Vec<bool>) {
    let enc = examples
        .iter()
        .map(|e| {
            let mut x = std.encode(&e.raw);
            for (i, t) in trained.iter().enumerate() {
                x.present[i] &= *t;
            }
            x
        })
        .collect();
    (enc, examples.iter().map(|e| e.label).collect())
}

/// Train the ensemble; with `out`, write `model.json` and the members there.
pub fn train(
    ds: &Dataset,
    opts: &TrainOptions,
    out: Option<&Path>,
) -> Result<CachexiaEnsemble, TrainError> {
    opts.validate()?;
    let started = Instant::now();
    let train_ex = ds.split(Split::Train);
    let val_ex = ds.split(Split::Validation);
    let cal_ex = ds.split(Split::Calibration);
    for (name, s) in [
        ("train", &train_ex),
        ("validation", &val_ex),
        ("calibration", &cal_ex),
    ] {
        if s.is_empty() {
            return Err(TrainError::EmptySplit(name));
        }
    }
    let raws: Vec<_> = train_ex.iter().map(|e| &e.raw).collect();
    let standardizer = Standardizer::fit(&raws);
    // A modality the training data (almost) never has gets no encoder
    // training; serving then treats it as missing.
    let mut trained = [false; 5];
    for (i, t) in trained.iter_mut().enumerate() {
        let n = raws.iter().filter(|r| r.present()[i]).count();
        *t = n >= 10 && n as f64 >= 0.01 * raws.len() as f64;
    }
    let (train_enc, train_y) = encode_split(&standardizer, &train_ex, &trained);
    let (val_enc, val_y) = encode_split(&standardizer, &val_ex, &trained);
    let (cal_enc, cal_y) = encode_split(&standardizer, &cal_ex, &trained);
    let device = Device::Cpu;
    let val_batch = ModalityBatch::new(&val_enc.iter().collect::<Vec<_>>(), &device)?;
    let cfg = opts.config();

    let mut members = Vec::with_capacity(opts.members);
    for m in 0..opts.members {
        members.push(train_member(
            m, opts, &cfg, &train_enc, &train_y, &val_batch, &val_y,
        )?);
    }

    // Calibration split: temperature, then the conformal threshold.
    let cal_refs: Vec<&Encoded> = cal_enc.iter().collect();
    let cal_batch = ModalityBatch::new(&cal_refs, &device)?;
    let mut cal_logits = Vec::with_capacity(members.len());
    for m in &members {
        cal_logits.push(m.model.forward(&cal_batch)?.to_vec1::<f32>()?);
    }
    let temperature = fit_temperature(&mean_logits(&cal_logits), &cal_y);
    let (cal_probs, _) = combine(&cal_logits, temperature);
    let conformal = Conformal::fit(&cal_probs, &cal_y, opts.alpha);

    let count = |s: &[&Example]| {
        json!({
            "patients": s.len(),
            "positives": s.iter().filter(|e| e.label).count(),
        })
    };
    let meta = ModelMeta {
        format: FORMAT,
        id: MODEL_ID.into(),
        version: MODEL_VERSION.into(),
        trained_on_synthetic_data: true,
        config: cfg.clone(),
        members: members.iter().map(|m| m.meta.clone()).collect(),
        standardizer,
        temperature: (temperature * 1e6).round() / 1e6,
        conformal,
        trained_modalities: MODALITIES
            .iter()
            .zip(trained)
            .filter(|(_, t)| *t)
            .map(|(m, _)| key(*m).to_owned())
            .collect(),
        notes_embedder: if trained[4] {
            ds.notes_embedder.clone()
        } else {
            None
        },
        training: json!({
            "options": opts,
            "splits": {
                "train": count(&train_ex),
                "validation": count(&val_ex),
                "calibration": count(&cal_ex),
            },
            "calibration_loss_after_temperature": (bce(&cal_probs, &cal_y, false) * 1e6).round() / 1e6,
            "unlabelled_patients_left_out": ds.unlabelled,
        }),
        metrics: None,
    };
    if opts.progress {
        eprintln!(
            "trained {} members in {:.1} s; temperature {:.3}; conformal threshold {:.4} at alpha {}",
            members.len(),
            started.elapsed().as_secs_f64(),
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
            m.varmap.save(dir.join(&m.meta.file))?;
        }
        write_meta(dir, &meta).map_err(werr(&dir.join(META_FILE)))?;
    }
    Ok(CachexiaEnsemble::from_parts(
        meta,
        members.into_iter().map(|m| m.model).collect(),
    )?)
}

pub fn write_meta(dir: &Path, meta: &ModelMeta) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(meta).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(META_FILE), text + "\n")
}
