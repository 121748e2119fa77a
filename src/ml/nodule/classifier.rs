//! The shipped nodule classifier: a deep ensemble of [`NoduleNet`] members
//! (Lakshminarayanan et al. 2017) over one frozen text encoder, temperature
//! scaling fit on the calibration patients (Guo et al. 2017), and a
//! split-conformal prediction set (Vovk et al. 2005; Angelopoulos & Bates
//! 2021) that suggests radiologist review when the set is not one class.
//!
//! On disk (`<model dir>/`): `model.json` ([`ModelMeta`]) and one
//! `member-<i>.safetensors` per member. The text encoder is not copied
//! into the folder (91 MB); `model.json` names it and records the SHA-256
//! of its weights, which loading checks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::model::{Config, NoduleNet, Prompts, Variant};
use super::{
    NoduleClassifier, NoduleModelError, NoduleModelInfo, NoduleModelInput, NoduleModelOutput,
    RadiomicsDriver,
};
use crate::imaging::patch::PatchConfig;
use crate::ml::bert::{self, BertModel};
use crate::ml::cachexia::ensemble::{Conformal, combine};

pub const MODEL_ID: &str = "autorad-lung";
pub const META_FILE: &str = "model.json";
/// Bump when `model.json` changes shape.
pub const FORMAT: u32 = 1;
/// Class names as the prompts spell them, benign first. Just the class
/// word: MiniLM splits "nodule" into two pieces, and every piece is paid
/// for twice per nodule per training step (two prompts through six
/// layers); the learned context carries the rest of the prompt.
pub const CLASS_PROMPTS: [&str; 2] = ["benign", "malignant"];
/// Prediction-set labels, benign first.
pub const CLASS_LABELS: [&str; 2] = ["benign", "malignant"];
/// Standardised radiomics are clipped to ±this many training standard
/// deviations: shape and texture features are heavy-tailed (a 30 mm
/// nodule's volume is > 20 SD above the mean), and an unclipped outlier
/// would push the meta-network far outside anything it was trained on.
pub const Z_CLIP: f64 = 5.0;
/// Rows per forward pass at inference.
const CHUNK: usize = 32;

/// Per-feature mean and standard deviation of the training patients only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    pub names: Vec<String>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Standardizer {
    /// Fit on training rows (`rows[i][j]`: feature `j` of row `i`).
    /// Non-finite values are left out of the statistics.
    pub fn fit(names: Vec<String>, rows: &[&[f64]]) -> Self {
        let f = names.len();
        let mut mean = vec![0.0; f];
        let mut std = vec![1.0; f];
        for j in 0..f {
            let v: Vec<f64> = rows
                .iter()
                .map(|r| r[j])
                .filter(|x| x.is_finite())
                .collect();
            if v.is_empty() {
                continue;
            }
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
            mean[j] = m;
            std[j] = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
        }
        Self { names, mean, std }
    }

    /// z-scores clipped to ±[`Z_CLIP`]; a non-finite value becomes 0 (the
    /// training mean). Returns the row and how many values were non-finite.
    pub fn encode(&self, raw: &[f64]) -> (Vec<f32>, usize) {
        let mut bad = 0;
        let z = raw
            .iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(x, (m, s))| {
                if x.is_finite() {
                    ((x - m) / s).clamp(-Z_CLIP, Z_CLIP) as f32
                } else {
                    bad += 1;
                    0.0
                }
            })
            .collect();
        (z, bad)
    }

    fn check(&self) -> Result<(), String> {
        let f = self.names.len();
        if self.mean.len() != f || self.std.len() != f {
            return Err("standardiser lengths differ from the feature list".into());
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err("standardiser has a non-finite mean or a non-positive SD".into());
        }
        Ok(())
    }
}

/// The text encoder a model was trained with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextEncoderRef {
    /// Folder name, e.g. `all-MiniLM-L6-v2`.
    pub name: String,
    /// Where training found it (relative paths resolve from the working
    /// directory, as `[models] text_encoder_dir` does).
    pub dir: String,
    /// SHA-256 of `model.safetensors`: loading refuses other weights.
    pub weights_sha256: String,
    /// The class prompts and their word-piece ids at training time.
    pub class_prompts: [String; 2],
    pub class_ids: [Vec<u32>; 2],
}

/// What training recorded about one member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberMeta {
    pub file: String,
    pub seed: u64,
    pub epochs_run: usize,
    pub best_epoch: usize,
    /// `coop` (π = 0 kept: the meta-network never lowered the validation
    /// loss) or `cocoop`.
    pub best_stage: String,
    pub validation_loss: f64,
    pub validation_auroc: f64,
    pub logit_scale: f64,
}

/// `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format: u32,
    pub id: String,
    pub version: String,
    pub variant: Variant,
    pub source_label: String,
    /// The image tower learned from patches rendered from real LIDC masks,
    /// not from real CT pixels.
    pub trained_on_rendered_pixels: bool,
    pub config: Config,
    pub patch: PatchConfig,
    pub text_encoder: TextEncoderRef,
    /// The model's radiomics features (names, order) and their training
    /// statistics; empty names for image-only.
    pub standardizer: Standardizer,
    pub members: Vec<MemberMeta>,
    pub temperature: f64,
    pub conformal: Conformal,
    /// Options, split sizes, seed, time.
    pub training: Value,
}

/// Where `text_encoder` of `meta` is looked for: `override_dir`, else the
/// folder training recorded.
fn encoder_dir(meta: &ModelMeta, override_dir: Option<&Path>) -> PathBuf {
    override_dir.map_or_else(|| PathBuf::from(&meta.text_encoder.dir), Path::to_path_buf)
}

/// The frozen encoder and tokenizer, loaded from a sentence-transformers
/// folder (`config.json`, `tokenizer.json`, `model.safetensors`).
pub struct LoadedEncoder {
    pub bert: Arc<BertModel>,
    pub tokenizer: tokenizers::Tokenizer,
    pub cls_id: u32,
    pub sep_id: u32,
    pub weights_sha256: String,
    pub name: String,
}

impl LoadedEncoder {
    pub fn load(dir: &Path) -> Result<Self, NoduleModelError> {
        let missing = |file: &str, e: &dyn std::fmt::Display| {
            NoduleModelError::Model(format!(
                "text encoder: cannot read {} ({e}); the nodule model needs the all-MiniLM-L6-v2 \
                 folder it was trained with (scripts/setup-models.sh unpacks it)",
                dir.join(file).display()
            ))
        };
        let cfg_bytes =
            std::fs::read(dir.join("config.json")).map_err(|e| missing("config.json", &e))?;
        let cfg: bert::Config = serde_json::from_slice(&cfg_bytes)
            .map_err(|e| NoduleModelError::Model(format!("text encoder config.json: {e}")))?;
        let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| missing("tokenizer.json", &e))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| NoduleModelError::Model(format!("text encoder tokenizer: {e}")))?;
        let special = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| NoduleModelError::Model(format!("text encoder has no {t} token")))
        };
        let (cls_id, sep_id) = (special("[CLS]")?, special("[SEP]")?);
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| missing("model.safetensors", &e))?;
        let weights_sha256 = hex::encode(Sha256::digest(&weights));
        let vb = VarBuilder::from_slice_safetensors(&weights, DType::F32, &Device::Cpu)
            .map_err(model_err)?;
        let bert = BertModel::load(vb, &cfg).map_err(model_err)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "text-encoder".into());
        Ok(Self {
            bert: Arc::new(bert),
            tokenizer,
            cls_id,
            sep_id,
            weights_sha256,
            name,
        })
    }

    /// Word pieces of `text`, without `[CLS]`/`[SEP]`.
    pub fn pieces(&self, text: &str) -> Result<Vec<u32>, NoduleModelError> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| NoduleModelError::Model(format!("tokenising {text:?}: {e}")))?
            .get_ids()
            .to_vec())
    }

    pub fn prompts(&self, class_ids: [Vec<u32>; 2]) -> Result<Prompts, NoduleModelError> {
        Prompts::new(self.bert.clone(), self.cls_id, self.sep_id, class_ids).map_err(model_err)
    }
}

pub(crate) fn model_err(e: candle_core::Error) -> NoduleModelError {
    NoduleModelError::Model(e.to_string())
}

/// The loaded ensemble.
pub struct NoduleModel {
    pub meta: ModelMeta,
    members: Vec<NoduleNet>,
    prompts: Prompts,
    info: NoduleModelInfo,
}

/// Loads the model in `dir` with the text encoder training recorded (see
/// [`NoduleModel::load`]).
pub fn load_classifier(dir: &Path) -> Result<Arc<dyn NoduleClassifier>, NoduleModelError> {
    Ok(Arc::new(NoduleModel::load(dir, None)?))
}

/// Inputs as tensors: pixels `(B, 3, S, S)` and standardised radiomics `(B, F)`.
pub struct Batch {
    pub pixels: Tensor,
    pub radiomics: Option<Tensor>,
}

impl NoduleModel {
    /// `text_encoder`: the all-MiniLM-L6-v2 folder, if not where training
    /// found it. A missing encoder, or one whose weights differ from the
    /// training run's, is a [`NoduleModelError::Model`] that says so.
    pub fn load(dir: &Path, text_encoder: Option<&Path>) -> Result<Self, NoduleModelError> {
        let meta_path = dir.join(META_FILE);
        let bytes = std::fs::read(&meta_path).map_err(|e| {
            NoduleModelError::Model(format!("cannot read {}: {e}", meta_path.display()))
        })?;
        let meta: ModelMeta = serde_json::from_slice(&bytes).map_err(|e| {
            NoduleModelError::Model(format!(
                "{} is not a nodule model description: {e}",
                meta_path.display()
            ))
        })?;
        let enc = LoadedEncoder::load(&encoder_dir(&meta, text_encoder))?;
        let prompts = enc.prompts(meta.text_encoder.class_ids.clone())?;
        Self::from_meta(dir, meta, &prompts, &enc.weights_sha256)
    }

    /// With the text side already in memory (evaluation loads two models
    /// over one encoder): `prompts` built from the model's class ids, and
    /// the SHA-256 of the encoder weights they run on.
    pub fn from_meta(
        dir: &Path,
        meta: ModelMeta,
        prompts: &Prompts,
        encoder_sha256: &str,
    ) -> Result<Self, NoduleModelError> {
        let bad =
            |m: String| NoduleModelError::Model(format!("{}: {m}", dir.join(META_FILE).display()));
        if meta.format != FORMAT {
            return Err(bad(format!(
                "format {} (this build reads {FORMAT})",
                meta.format
            )));
        }
        meta.config.validate().map_err(&bad)?;
        meta.standardizer.check().map_err(&bad)?;
        if meta.variant != meta.config.variant {
            return Err(bad("variant differs from the config's".into()));
        }
        if meta.variant.uses_radiomics() && meta.standardizer.names.len() != meta.config.n_radiomics
        {
            return Err(bad("feature list and n_radiomics differ".into()));
        }
        if meta.members.is_empty() || !meta.temperature.is_finite() || meta.temperature <= 0.0 {
            return Err(bad("no members or a non-positive temperature".into()));
        }
        if meta.patch.size != meta.config.vision.image_size {
            return Err(bad("patch size and image size differ".into()));
        }
        if encoder_sha256 != meta.text_encoder.weights_sha256 {
            return Err(NoduleModelError::Model(format!(
                "text encoder weights (sha256 {}…) are not the ones this model was trained with \
                 ({}, sha256 {}…)",
                encoder_sha256.get(..12).unwrap_or(encoder_sha256),
                meta.text_encoder.name,
                meta.text_encoder.weights_sha256.get(..12).unwrap_or("")
            )));
        }
        if prompts.class_ids() != &meta.text_encoder.class_ids {
            return Err(bad("class prompt word pieces differ from training's".into()));
        }
        let mut members = Vec::with_capacity(meta.members.len());
        for m in &meta.members {
            let path = dir.join(&m.file);
            let bytes = std::fs::read(&path).map_err(|e| {
                NoduleModelError::Model(format!("cannot read {}: {e}", path.display()))
            })?;
            let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)
                .map_err(model_err)?;
            members.push(NoduleNet::load(vb, &meta.config).map_err(model_err)?);
        }
        Ok(Self::from_parts(meta, members, prompts.clone()))
    }

    /// From members in memory (training, tests).
    pub fn from_parts(meta: ModelMeta, members: Vec<NoduleNet>, prompts: Prompts) -> Self {
        let info = NoduleModelInfo {
            id: meta.id.clone(),
            version: meta.version.clone(),
            source_label: meta.source_label.clone(),
            trained_on_rendered_pixels: meta.trained_on_rendered_pixels,
            patch: meta.patch,
            alpha: meta.conformal.alpha,
        };
        Self {
            meta,
            members,
            prompts,
            info,
        }
    }

    /// Checks and encodes inputs: every view `size²` finite values, every
    /// model feature present.
    pub fn batch(&self, inputs: &[&NoduleModelInput]) -> Result<Batch, NoduleModelError> {
        let s = self.meta.patch.size;
        let mut px = Vec::with_capacity(inputs.len() * 3 * s * s);
        for (i, inp) in inputs.iter().enumerate() {
            for (v, name) in inp.views.iter().zip(["axial", "coronal", "sagittal"]) {
                if v.len() != s * s {
                    return Err(NoduleModelError::Input(format!(
                        "nodule {i}: the {name} view has {} values, the model takes {s}×{s}",
                        v.len()
                    )));
                }
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(NoduleModelError::Input(format!(
                        "nodule {i}: the {name} view has non-finite values"
                    )));
                }
                px.extend_from_slice(v);
            }
        }
        let pixels =
            Tensor::from_vec(px, (inputs.len(), 3, s, s), &Device::Cpu).map_err(model_err)?;
        let radiomics = if self.meta.variant.uses_radiomics() {
            let std = &self.meta.standardizer;
            let mut z = Vec::with_capacity(inputs.len() * std.names.len());
            for (i, inp) in inputs.iter().enumerate() {
                let raw = std
                    .names
                    .iter()
                    .map(|n| {
                        inp.radiomics.get(n).ok_or_else(|| {
                            NoduleModelError::Input(format!(
                                "nodule {i}: radiomics feature {n} is missing"
                            ))
                        })
                    })
                    .collect::<Result<Vec<f64>, _>>()?;
                z.extend(std.encode(&raw).0);
            }
            Some(
                Tensor::from_vec(z, (inputs.len(), std.names.len()), &Device::Cpu)
                    .map_err(model_err)?,
            )
        } else {
            None
        };
        Ok(Batch { pixels, radiomics })
    }

    /// Member malignant logits `[member][row]`.
    pub fn member_logits(&self, batch: &Batch) -> candle_core::Result<Vec<Vec<f32>>> {
        self.members
            .iter()
            .map(|m| {
                m.malignant_logit(&batch.pixels, batch.radiomics.as_ref(), &self.prompts)?
                    .to_vec1::<f32>()
            })
            .collect()
    }

    /// Radiomics drivers by gradient × input (Simonyan et al. 2014;
    /// Shrikumar et al. 2016): d(member-mean malignant log-odds)/d(z_j) · z_j
    /// / T, with z the standardised feature, so a contribution is in
    /// calibrated log-odds and measured from the training mean (z = 0). The
    /// gradient flows through the frozen text encoder and the meta-network;
    /// the image branch does not depend on the radiomics. `(B, F)`.
    pub fn drivers(&self, batch: &Batch) -> candle_core::Result<Option<Vec<Vec<f64>>>> {
        let Some(z) = &batch.radiomics else {
            return Ok(None);
        };
        let var = Var::from_tensor(z)?;
        let mut total: Option<Tensor> = None;
        for m in &self.members {
            let logit = m.malignant_logit(&batch.pixels, Some(var.as_tensor()), &self.prompts)?;
            let grads = logit.sum_all()?.backward()?;
            let g = grads
                .get(var.as_tensor())
                .cloned()
                .unwrap_or(var.as_tensor().zeros_like()?);
            total = Some(match total {
                None => g,
                Some(t) => (t + g)?,
            });
        }
        let k = self.members.len() as f64;
        let Some(total) = total else { return Ok(None) };
        let contrib = ((total * z)? / (k * self.meta.temperature))?;
        Ok(Some(
            contrib
                .to_vec2::<f32>()?
                .into_iter()
                .map(|r| r.into_iter().map(f64::from).collect())
                .collect(),
        ))
    }

    fn predict_chunk(
        &self,
        inputs: &[&NoduleModelInput],
    ) -> Result<Vec<NoduleModelOutput>, NoduleModelError> {
        let batch = self.batch(inputs)?;
        let logits = self.member_logits(&batch).map_err(model_err)?;
        let (probs, member_probs) = combine(&logits, self.meta.temperature);
        let drivers = self.drivers(&batch).map_err(model_err)?;
        let c = &self.meta.conformal;
        let mut out = Vec::with_capacity(inputs.len());
        for (i, &p) in probs.iter().enumerate() {
            let lo = member_probs.iter().map(|m| m[i]).fold(1.0, f64::min);
            let hi = member_probs.iter().map(|m| m[i]).fold(0.0, f64::max);
            let (benign, malignant) = c.set(p);
            let mut set = Vec::new();
            if benign {
                set.push(CLASS_LABELS[0]);
            }
            if malignant {
                set.push(CLASS_LABELS[1]);
            }
            let review = c.review(p);
            let confidence_level = if review {
                "low"
            } else if hi - lo <= 0.15 {
                "high"
            } else {
                "moderate"
            };
            let mut radiomics_drivers: Vec<RadiomicsDriver> = match &drivers {
                None => Vec::new(),
                Some(d) => self
                    .meta
                    .standardizer
                    .names
                    .iter()
                    .zip(&d[i])
                    .map(|(name, &contribution)| RadiomicsDriver {
                        name: name.clone(),
                        value: inputs[i].radiomics.get(name).unwrap_or(f64::NAN),
                        contribution,
                    })
                    .collect(),
            };
            radiomics_drivers.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
            out.push(NoduleModelOutput {
                probability: p,
                interval: (lo, hi),
                confidence: p.max(1.0 - p),
                confidence_level,
                prediction_set: set,
                review_suggested: review,
                radiomics_drivers,
            });
        }
        Ok(out)
    }

    /// Calibrated ensemble probabilities and member probabilities, without
    /// drivers (evaluation).
    pub fn probabilities(
        &self,
        inputs: &[NoduleModelInput],
    ) -> Result<(Vec<f64>, Vec<Vec<f64>>), NoduleModelError> {
        let mut logits: Vec<Vec<f32>> = vec![Vec::new(); self.members.len()];
        for chunk in inputs.chunks(CHUNK) {
            let refs: Vec<&NoduleModelInput> = chunk.iter().collect();
            let l = self.member_logits(&self.batch(&refs)?).map_err(model_err)?;
            for (all, part) in logits.iter_mut().zip(l) {
                all.extend(part);
            }
        }
        Ok(combine(&logits, self.meta.temperature))
    }
}

impl NoduleClassifier for NoduleModel {
    fn info(&self) -> &NoduleModelInfo {
        &self.info
    }

    fn predict(
        &self,
        inputs: &[NoduleModelInput],
    ) -> Result<Vec<NoduleModelOutput>, NoduleModelError> {
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(CHUNK) {
            let refs: Vec<&NoduleModelInput> = chunk.iter().collect();
            out.extend(self.predict_chunk(&refs)?);
        }
        Ok(out)
    }
}
