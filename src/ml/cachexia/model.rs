//! The missing-modality-native fusion model (seed paper §1, arXiv
//! 2503.06797): one small encoder per modality turns that modality's inputs
//! into one token; an absent modality is a learned "missing" token instead
//! (no imputation, no dropped patients); a small pre-LayerNorm transformer
//! encoder reads `[CLS, clinical, labs, weight, body composition, notes]` and
//! a linear head on the CLS output gives the logit of cachexia within 6 months.
//!
//! Shaped like candle-transformers models: [`Config`], `load(vb, &cfg)`,
//! `forward`. Tensor names follow `vb.pp(...)` so the safetensors written by
//! training load back unchanged.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder, layer_norm, linear};
use serde::{Deserialize, Serialize};

use super::inputs::{MODALITIES, ModalityBatch, key};

/// Model size and the input width of every modality encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Token width.
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    /// Hidden width of the feed-forward blocks.
    pub d_ff: usize,
    /// Input width per modality, in [`MODALITIES`] order.
    pub input_dims: [usize; 5],
}

impl Config {
    /// The shipped size: d = 32, 2 layers, 4 heads (~25k parameters, of
    /// which the notes encoder's 384 × 32 projection is half).
    pub fn small(input_dims: [usize; 5]) -> Self {
        Self {
            d_model: 32,
            n_heads: 4,
            n_layers: 2,
            d_ff: 64,
            input_dims,
        }
    }
}

/// Inputs of one modality → one token (two-layer MLP plus a learned
/// modality-type embedding), or the learned missing token when absent.
struct ModalityEncoder {
    fc1: Linear,
    fc2: Linear,
    missing: Tensor,
    type_embedding: Tensor,
}

impl ModalityEncoder {
    fn load(vb: VarBuilder, in_dim: usize, cfg: &Config) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            fc1: linear(in_dim, d, vb.pp("fc1"))?,
            fc2: linear(d, d, vb.pp("fc2"))?,
            missing: vb.get(d, "missing")?,
            type_embedding: vb.get(d, "type_embedding")?,
        })
    }

    /// `x`: (B, in), `present`: (B, 1) of 0/1 → (B, d).
    fn forward(&self, x: &Tensor, present: &Tensor) -> Result<Tensor> {
        let h = self.fc2.forward(&self.fc1.forward(x)?.gelu_erf()?)?;
        let absent = present.affine(-1.0, 1.0)?;
        let missing = self.missing.unsqueeze(0)?;
        let token = (h.broadcast_mul(present)? + absent.broadcast_mul(&missing)?)?;
        token.broadcast_add(&self.type_embedding.unsqueeze(0)?)
    }
}

struct Attention {
    qkv: Linear,
    out: Linear,
    n_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        Ok(Self {
            qkv: linear(cfg.d_model, 3 * cfg.d_model, vb.pp("qkv"))?,
            out: linear(cfg.d_model, cfg.d_model, vb.pp("out"))?,
            n_heads: cfg.n_heads,
            head_dim: cfg.d_model / cfg.n_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, t, 3, self.n_heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?; // (3, B, H, T, hd)
        let q = qkv.get(0)?;
        let k = qkv.get(1)?;
        let v = qkv.get(2)?;
        // Six tokens: broadcast products instead of a batched matmul, which
        // candle's CPU backend runs as one small GEMM per (batch, head) and
        // which made training ~10× slower here.
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let att = (q
            .unsqueeze(3)?
            .broadcast_mul(&k.unsqueeze(2)?)?
            .sum(D::Minus1)?
            * scale)?; // (B, H, T, T)
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.unsqueeze(4)?.broadcast_mul(&v.unsqueeze(2)?)?.sum(3)?; // (B, H, T, hd)
        let y = y.transpose(1, 2)?.contiguous()?.reshape((b, t, d))?;
        self.out.forward(&y)
    }
}

struct Block {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    ff1: Linear,
    ff2: Linear,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        Ok(Self {
            ln1: layer_norm(cfg.d_model, 1e-5, vb.pp("ln1"))?,
            attn: Attention::load(vb.pp("attn"), cfg)?,
            ln2: layer_norm(cfg.d_model, 1e-5, vb.pp("ln2"))?,
            ff1: linear(cfg.d_model, cfg.d_ff, vb.pp("ff1"))?,
            ff2: linear(cfg.d_ff, cfg.d_model, vb.pp("ff2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln1.forward(x)?)?)?;
        let h = self
            .ff2
            .forward(&self.ff1.forward(&self.ln2.forward(&x)?)?.gelu_erf()?)?;
        x + h
    }
}

/// One ensemble member.
pub struct CachexiaFusion {
    encoders: Vec<ModalityEncoder>,
    cls: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
}

impl CachexiaFusion {
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        if cfg.n_heads == 0 || !cfg.d_model.is_multiple_of(cfg.n_heads) {
            candle_core::bail!(
                "d_model {} is not a multiple of n_heads {}",
                cfg.d_model,
                cfg.n_heads
            );
        }
        let encoders = MODALITIES
            .iter()
            .zip(cfg.input_dims)
            .map(|(m, dim)| ModalityEncoder::load(vb.pp(format!("enc.{}", key(*m))), dim, cfg))
            .collect::<Result<Vec<_>>>()?;
        let blocks = (0..cfg.n_layers)
            .map(|i| Block::load(vb.pp(format!("blocks.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            encoders,
            cls: vb.get(cfg.d_model, "cls")?,
            blocks,
            ln_f: layer_norm(cfg.d_model, 1e-5, vb.pp("ln_f"))?,
            head: linear(cfg.d_model, 1, vb.pp("head"))?,
        })
    }

    /// Logits, shape (B,).
    pub fn forward(&self, batch: &ModalityBatch) -> Result<Tensor> {
        let b = batch.len();
        let d = self.cls.dim(0)?;
        let mut tokens = vec![self.cls.reshape((1, 1, d))?.broadcast_as((b, 1, d))?];
        for (i, enc) in self.encoders.iter().enumerate() {
            tokens.push(enc.forward(&batch.x[i], &batch.present[i])?.unsqueeze(1)?);
        }
        let mut x = Tensor::cat(&tokens, 1)?.to_dtype(DType::F32)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let cls = self.ln_f.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?;
        self.head.forward(&cls)?.squeeze(D::Minus1)
    }
}
