//! AutoRad-Lung (arXiv 2503.20662; `shared/papers.md` §2) in candle: one
//! ensemble member.
//!
//! ```text
//! views (B, 3, S, S) ─ AIMv2-architecture ViT (ml::vit) ─ mean tokens ─ image_proj ─ L2 ─┐
//!                                                                                        cos / τ → logits (B, 2)
//! radiomics (B, F) ─ MetaNet: Linear → ReLU → Linear ─ π (B, D)                           │
//!   ctx (M, D) + π ──► "[CLS] ctx₁…ctx_M benign [SEP]"    ─ frozen MiniLM ─ mean ─ L2 ┘
//!                      "[CLS] ctx₁…ctx_M malignant [SEP]"
//! ```
//!
//! * Conditional context optimisation (CoCoOp; Zhou et al., CVPR 2022,
//!   arXiv 2203.05557): `M` learned context vectors in the text encoder's
//!   word-embedding space, shifted per nodule by the same meta-network token
//!   `π = MetaNet(x)`. CoCoOp feeds the image feature to the meta-network;
//!   AutoRad-Lung feeds the nodule's hand-crafted radiomics instead, which is
//!   what this model does ([`Variant::Full`]). [`Variant::ImageOnly`] drops
//!   the meta-network (π = 0: plain CoOp, Zhou et al., IJCV 2022) for the
//!   ablation; its class prompts are then the same for every nodule.
//! * The text encoder is all-MiniLM-L6-v2 (frozen; [`crate::ml::bert`]) in
//!   place of CLIP's text tower; the context vectors replace word-piece
//!   vectors, so positions and the embedding LayerNorm apply to them as to
//!   words (CoOp's "X X X X" placeholder tokens).
//! * Logit scale: learned, as CLIP's `logit_scale` (stored as log, started
//!   at ln(1/0.07) and capped at 100, Radford et al. 2021). CoCoOp keeps
//!   CLIP's pre-trained scale frozen; here the image tower starts from random
//!   weights, so the scale has to be learned with it.
//! * The image tower is trained from scratch (no AIMv2 weights exist at this
//!   size); its tensor names are AIMv2's under `vision.`.
//!
//! Shaped like candle-transformers: [`Config`], [`NoduleNet::load`],
//! [`NoduleNet::forward`].

use std::sync::Arc;

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, linear, linear_no_bias};
use serde::{Deserialize, Serialize};

use crate::ml::bert::{BertModel, PackedBatch, l2_normalize};
use crate::ml::vit::{self, VisionTransformer};

/// With or without the radiomics meta-network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// CoCoOp with the radiomics meta-network (AutoRad-Lung).
    Full,
    /// CoOp: the same learned context for every nodule, no radiomics.
    ImageOnly,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::ImageOnly => "image-only",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(Self::Full),
            "image-only" => Some(Self::ImageOnly),
            _ => None,
        }
    }

    pub fn uses_radiomics(self) -> bool {
        self == Self::Full
    }
}

/// CLIP's cap on the learned logit scale (`logit_scale.clamp(max=100)`).
pub const MAX_LOGIT_SCALE: f32 = 100.0;

/// One member's shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The image tower (AIMv2 `config.json` fields).
    pub vision: vit::Config,
    pub variant: Variant,
    /// Learned context vectors `M` (CoOp/CoCoOp use 4 to 16; 4 keeps the
    /// text sequences short, which is most of the training cost).
    pub n_ctx: usize,
    /// Width of the text encoder's word vectors (384 for MiniLM).
    pub text_dim: usize,
    /// Radiomics features in, in the order of the model's feature list.
    pub n_radiomics: usize,
    /// Hidden width of the meta-network. CoCoOp uses input/16 (512/16 = 32
    /// for CLIP's image feature); 107 radiomics / 16 would leave 6, so the
    /// 32 of CoCoOp is kept.
    pub meta_hidden: usize,
    /// Starting value of the learned log logit scale.
    pub logit_scale_init: f64,
}

impl Config {
    /// The shipped sizes around a given image tower.
    pub fn new(vision: vit::Config, variant: Variant, text_dim: usize, n_radiomics: usize) -> Self {
        Self {
            vision,
            variant,
            n_ctx: 4,
            text_dim,
            n_radiomics,
            meta_hidden: 32,
            logit_scale_init: (1.0f64 / 0.07).ln(),
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        self.vision.validate()?;
        if self.n_ctx == 0 || self.text_dim == 0 {
            return Err("n_ctx and text_dim must be positive".into());
        }
        if self.variant.uses_radiomics() && (self.n_radiomics == 0 || self.meta_hidden == 0) {
            return Err("the full variant needs radiomics features and a meta-network".into());
        }
        Ok(())
    }
}

/// The frozen text side shared by every member: the encoder and the word
/// vectors of `[CLS]`, `[SEP]` and each class name. Cheap to clone.
#[derive(Clone)]
pub struct Prompts {
    bert: Arc<BertModel>,
    cls_id: u32,
    sep_id: u32,
    /// Word-piece ids of each class name, benign first.
    class_ids: [Vec<u32>; 2],
    /// `(1, D)` word vectors of `[CLS]` and `[SEP]`.
    cls: Tensor,
    sep: Tensor,
    /// `(n_c, D)` word vectors of each class name.
    names: [Tensor; 2],
}

impl Prompts {
    /// `class_ids`: word pieces of the benign and the malignant class name
    /// (no special tokens).
    pub fn new(
        bert: Arc<BertModel>,
        cls_id: u32,
        sep_id: u32,
        class_ids: [Vec<u32>; 2],
    ) -> Result<Self> {
        if class_ids.iter().any(Vec::is_empty) {
            candle_core::bail!("a class name has no word pieces");
        }
        let dev = bert.device().clone();
        let words = |ids: &[u32]| -> Result<Tensor> {
            bert.word_embeddings(&Tensor::from_vec(ids.to_vec(), ids.len(), &dev)?)
        };
        let cls = words(&[cls_id])?;
        let sep = words(&[sep_id])?;
        let names = [words(&class_ids[0])?, words(&class_ids[1])?];
        Ok(Self {
            bert,
            cls_id,
            sep_id,
            class_ids,
            cls,
            sep,
            names,
        })
    }

    pub fn dim(&self) -> usize {
        self.bert.hidden_size()
    }

    pub fn class_ids(&self) -> &[Vec<u32>; 2] {
        &self.class_ids
    }

    /// Unit class embeddings `(B, 2, D)` (benign, malignant) for contexts
    /// `ctx` `(B, M, D)`: each prompt is `[CLS] ctx class-name [SEP]`,
    /// encoded and mean-pooled over its tokens as sentence-transformers
    /// pools, then L2-normalised. Differentiable in `ctx`.
    pub fn encode(&self, ctx: &Tensor) -> Result<Tensor> {
        let (b, m, d) = ctx.dims3()?;
        let mut parts = Vec::with_capacity(2);
        let mut seqs: Vec<Vec<u32>> = Vec::with_capacity(2 * b);
        let mut lens = [0usize; 2];
        for (c, name) in self.names.iter().enumerate() {
            let n = name.dim(0)?;
            let l = m + n + 2;
            lens[c] = l;
            let words = Tensor::cat(
                &[
                    &self.cls.unsqueeze(0)?.broadcast_as((b, 1, d))?,
                    ctx,
                    &name.unsqueeze(0)?.broadcast_as((b, n, d))?,
                    &self.sep.unsqueeze(0)?.broadcast_as((b, 1, d))?,
                ],
                1,
            )?;
            parts.push(words.reshape((b * l, d))?);
            // Ids only fix the lengths and positions; 0 marks a context slot.
            let mut ids = vec![self.cls_id];
            ids.extend(std::iter::repeat_n(0, m));
            ids.extend_from_slice(&self.class_ids[c]);
            ids.push(self.sep_id);
            seqs.extend(std::iter::repeat_n(ids, b));
        }
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let batch = PackedBatch::new(&refs, self.bert.device())?;
        let states = self
            .bert
            .forward_embeddings(&Tensor::cat(&parts, 0)?, &batch)?;
        let mut pooled = Vec::with_capacity(2);
        let mut offset = 0;
        for l in lens {
            let s = states
                .narrow(0, offset, b * l)?
                .reshape((b, l, d))?
                .mean(1)?;
            offset += b * l;
            pooled.push(l2_normalize(&s)?.unsqueeze(1)?);
        }
        Tensor::cat(&pooled, 1)
    }
}

/// MetaNet (CoCoOp): Linear → ReLU → Linear, radiomics → one context shift.
struct MetaNet {
    linear1: Linear,
    linear2: Linear,
}

impl MetaNet {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        Ok(Self {
            linear1: linear(cfg.n_radiomics, cfg.meta_hidden, vb.pp("linear1"))?,
            linear2: linear(cfg.meta_hidden, cfg.text_dim, vb.pp("linear2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear2.forward(&self.linear1.forward(x)?.relu()?)
    }
}

/// One ensemble member.
pub struct NoduleNet {
    vision: VisionTransformer,
    image_proj: Linear,
    ctx: Tensor,
    meta: Option<MetaNet>,
    logit_scale: Tensor,
    cfg: Config,
}

impl NoduleNet {
    /// Tensors: `vision.*` (AIMv2 names), `image_proj.weight`,
    /// `prompt.ctx`, `prompt.meta_net.linear{1,2}.*` (full variant only),
    /// `logit_scale`.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let vision = VisionTransformer::load(vb.pp("vision"), &cfg.vision)?;
        let image_proj = linear_no_bias(cfg.vision.hidden_size, cfg.text_dim, vb.pp("image_proj"))?;
        let pvb = vb.pp("prompt");
        let ctx = pvb.get((cfg.n_ctx, cfg.text_dim), "ctx")?;
        let meta = if cfg.variant.uses_radiomics() {
            Some(MetaNet::load(pvb.pp("meta_net"), cfg)?)
        } else {
            None
        };
        let logit_scale = vb.get(1, "logit_scale")?;
        Ok(Self {
            vision,
            image_proj,
            ctx,
            meta,
            logit_scale,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Unit image embeddings `(B, D)` in the text space.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.image_proj.forward(&self.vision.forward(pixels)?)?)
    }

    /// Context `(B, M, D)`: `ctx + MetaNet(radiomics)` per nodule for the
    /// full variant; `(1, M, D)`, the bare context, for image-only, and for
    /// the full variant without radiomics (π = 0: the CoOp warm-up stage of
    /// training, see `train`; served predictions always pass radiomics).
    pub fn context(&self, radiomics: Option<&Tensor>) -> Result<Tensor> {
        let ctx = self.ctx.unsqueeze(0)?;
        match (&self.meta, radiomics) {
            (Some(meta), Some(x)) => ctx.broadcast_add(&meta.forward(x)?.unsqueeze(1)?),
            _ => Ok(ctx),
        }
    }

    /// Class logits `(B, 2)` (benign, malignant): `scale · cos(image, class prompt)`.
    /// `radiomics`: `(B, F)` standardised features (ignored by image-only).
    pub fn forward(
        &self,
        pixels: &Tensor,
        radiomics: Option<&Tensor>,
        prompts: &Prompts,
    ) -> Result<Tensor> {
        let image = self.image_features(pixels)?; // (B, D)
        let text = prompts.encode(&self.context(radiomics)?)?; // (B or 1, 2, D)
        let cos = image.unsqueeze(1)?.broadcast_mul(&text)?.sum(D::Minus1)?; // (B, 2)
        let scale = self.logit_scale.exp()?.clamp(0f32, MAX_LOGIT_SCALE)?;
        cos.broadcast_mul(&scale)
    }

    /// Log-odds of malignant vs benign `(B,)`: the two-class softmax is the
    /// sigmoid of this difference.
    pub fn malignant_logit(
        &self,
        pixels: &Tensor,
        radiomics: Option<&Tensor>,
        prompts: &Prompts,
    ) -> Result<Tensor> {
        let logits = self.forward(pixels, radiomics, prompts)?;
        (logits.narrow(1, 1, 1)? - logits.narrow(1, 0, 1)?)?.squeeze(1)
    }

    /// The learned logit scale (after the cap).
    pub fn logit_scale(&self) -> Result<f32> {
        Ok(self
            .logit_scale
            .exp()?
            .clamp(0f32, MAX_LOGIT_SCALE)?
            .to_vec1::<f32>()?[0])
    }
}
