//! BERT encoder (Devlin et al. 2019, arXiv:1810.04805) for sentence
//! embeddings, shaped like `candle_transformers::models::bert` (`Config`,
//! `load(vb, &cfg)`, `forward`) and reading the same checkpoint names
//! (`embeddings.*`, `encoder.layer.N.*`), but computing on *packed* batches.
//!
//! Why not the candle-transformers module as is: it pads every sequence of a
//! batch to the longest one and runs the dense layers on the padding too.
//! Clinical sentences vary from a handful of tokens to 256, so a padded batch
//! of 16 spends a large share of its FLOPs on `[PAD]` rows, which is the
//! reason candle measured ~2x slower than PyTorch batched (STACK.md). Here
//! every position-wise layer (Q/K/V, attention output, feed-forward, layer
//! norms: ~95% of the FLOPs at these lengths) runs on the `T` real tokens of
//! the batch stacked into one `(T, hidden)` matrix, one GEMM per layer; only
//! the attention scores use a padded `(batch, heads, L, L)` view, built by an
//! index gather, with the padding masked as in Hugging Face's
//! `get_extended_attention_mask`. The arithmetic per real token is the same
//! as the padded model's, so outputs agree with the reference to float
//! rounding (parity test: `tests/minilm.rs`).
//!
//! Three more differences from the reference module, all exact up to
//! rounding: Q, K and V are one fused `(3·hidden, hidden)` linear layer; the
//! `1/sqrt(head_dim)` score scale is folded into the query weights at load;
//! and the exact GELU uses a rational erf that vectorises ([`gelu_erf`])
//! instead of a scalar libm call per element, which cost as much as the
//! feed-forward matrix product itself.

use candle_core::{CpuStorage, CustomOp1, D, DType, Device, Layout, Module, Result, Shape, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use rayon::prelude::*;
use serde::Deserialize;

/// The hidden activation. Hugging Face's `"gelu"` is the exact (erf) GELU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HiddenAct {
    Gelu,
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluApproximate,
    Relu,
}

/// `config.json` of a Hugging Face BERT checkpoint (the fields used here;
/// `transformers` `BertConfig`). all-MiniLM-L6-v2: hidden 384, 6 layers,
/// 12 heads, intermediate 1536, 512 positions, vocabulary 30522.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default)]
    pub model_type: Option<String>,
}

impl Config {
    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Refuses configurations this module cannot run (instead of failing
    /// deep inside a reshape).
    pub fn check(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        Ok(())
    }
}

/// Token sequences stacked for one forward pass. Built by
/// [`PackedBatch::new`]; sequences keep their order.
pub struct PackedBatch {
    /// `(T,)` token ids, all sequences one after the other.
    ids: Tensor,
    /// `(T,)` position of each token within its own sequence.
    positions: Tensor,
    /// Length of each sequence; they sum to `T`.
    lens: Vec<usize>,
    /// Only for more than one sequence: the gather to and from the padded
    /// attention view, and the additive mask of the padding.
    padding: Option<Padding>,
}

struct Padding {
    max_len: usize,
    /// `(batch·L,)` row of the `(T + 1, ·)` matrix (row `T` is all zeros)
    /// that lands at each padded position.
    to_padded: Tensor,
    /// `(T,)` padded position of each real token.
    from_padded: Tensor,
    /// `(batch, 1, 1, L)`: 0 on tokens, `f32::MIN` on padding (as
    /// `transformers`' `get_extended_attention_mask` with `torch.finfo.min`).
    mask: Tensor,
}

impl PackedBatch {
    /// Packs token id sequences (each with its `[CLS]`/`[SEP]` already).
    /// Empty sequences are refused: BERT needs at least one position.
    pub fn new(sequences: &[&[u32]], device: &Device) -> Result<Self> {
        if sequences.is_empty() || sequences.iter().any(|s| s.is_empty()) {
            candle_core::bail!("a packed batch needs at least one non-empty sequence");
        }
        let lens: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
        let total: usize = lens.iter().sum();
        let max_len = *lens.iter().max().unwrap_or(&0);
        let mut ids = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        for s in sequences {
            ids.extend_from_slice(s);
            positions.extend(0..s.len() as u32);
        }
        let padding = if sequences.len() > 1 {
            let b = sequences.len();
            let zero_row = total as u32;
            let mut to_padded = vec![zero_row; b * max_len];
            let mut from_padded = Vec::with_capacity(total);
            let mut mask = vec![f32::MIN; b * max_len];
            let mut offset = 0usize;
            for (i, &len) in lens.iter().enumerate() {
                for j in 0..len {
                    let p = i * max_len + j;
                    to_padded[p] = (offset + j) as u32;
                    mask[p] = 0.0;
                    from_padded.push(p as u32);
                }
                offset += len;
            }
            Some(Padding {
                max_len,
                to_padded: Tensor::from_vec(to_padded, b * max_len, device)?,
                from_padded: Tensor::from_vec(from_padded, total, device)?,
                mask: Tensor::from_vec(mask, (b, 1, 1, max_len), device)?,
            })
        } else {
            None
        };
        Ok(PackedBatch {
            ids: Tensor::from_vec(ids, total, device)?,
            positions: Tensor::from_vec(positions, total, device)?,
            lens,
            padding,
        })
    }

    /// Length of each sequence, in order.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// Real tokens in the batch (`T`).
    pub fn total_tokens(&self) -> usize {
        self.lens.iter().sum()
    }
}

fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear(in_dim, out_dim, vb)
}

fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    candle_nn::layer_norm(size, eps, vb)
}

/// Word + position + token-type embeddings, then LayerNorm
/// (`transformers` `BertEmbeddings`; dropout is the identity at inference).
struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type_0: Tensor,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let word = candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("word_embeddings"))?;
        let position = candle_nn::embedding(
            cfg.max_position_embeddings,
            cfg.hidden_size,
            vb.pp("position_embeddings"),
        )?;
        let token_type = candle_nn::embedding(
            cfg.type_vocab_size,
            cfg.hidden_size,
            vb.pp("token_type_embeddings"),
        )?;
        // Single-segment input: every token has type 0 (sentence-transformers
        // passes token_type_ids of zeros), so the row is added by broadcast.
        let token_type_0 = token_type.embeddings().get(0)?;
        let layer_norm = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?;
        Ok(Embeddings {
            word,
            position,
            token_type_0,
            layer_norm,
        })
    }

    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        let xs = (self.word.forward(&batch.ids)? + self.position.forward(&batch.positions)?)?;
        let xs = xs.broadcast_add(&self.token_type_0)?;
        self.layer_norm.forward(&xs)
    }
}

/// Multi-head self-attention plus its output projection and residual
/// LayerNorm (`BertSelfAttention` + `BertSelfOutput`).
struct Attention {
    qkv: Linear,
    output: Linear,
    layer_norm: LayerNorm,
    num_heads: usize,
    head_dim: usize,
    hidden: usize,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let h = cfg.hidden_size;
        let sv = vb.pp("self");
        let scale = 1.0 / (cfg.head_dim() as f64).sqrt();
        let part = |name: &str, scale: f64| -> Result<(Tensor, Tensor)> {
            let w = sv.pp(name).get((h, h), "weight")?;
            let b = sv.pp(name).get(h, "bias")?;
            Ok(((w * scale)?, (b * scale)?))
        };
        let (qw, qb) = part("query", scale)?;
        let (kw, kb) = part("key", 1.0)?;
        let (vw, vb_) = part("value", 1.0)?;
        let qkv = Linear::new(
            Tensor::cat(&[&qw, &kw, &vw], 0)?,
            Some(Tensor::cat(&[&qb, &kb, &vb_], 0)?),
        );
        let output = linear(h, h, vb.pp("output").pp("dense"))?;
        let layer_norm = layer_norm(h, cfg.layer_norm_eps, vb.pp("output").pp("LayerNorm"))?;
        Ok(Attention {
            qkv,
            output,
            layer_norm,
            num_heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            hidden: h,
        })
    }

    /// `xs`: `(T, hidden)` packed tokens → `(T, hidden)`.
    fn forward(&self, xs: &Tensor, batch: &PackedBatch) -> Result<Tensor> {
        let total = xs.dim(0)?;
        let qkv = self.qkv.forward(xs)?; // (T, 3H)
        let (b, len, qkv) = match &batch.padding {
            None => (1, total, qkv),
            Some(p) => {
                let zero = Tensor::zeros((1, 3 * self.hidden), qkv.dtype(), qkv.device())?;
                let padded = Tensor::cat(&[&qkv, &zero], 0)?.index_select(&p.to_padded, 0)?;
                (batch.lens.len(), p.max_len, padded)
            }
        };
        // (b, L, 3, heads, d) → three (b, heads, L, d)
        let qkv = qkv.reshape((b, len, 3, self.num_heads, self.head_dim))?;
        let head = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (head(0)?, head(1)?, head(2)?);
        let scores = q.matmul(&k.t()?)?; // scale folded into q
        let scores = match &batch.padding {
            None => scores,
            Some(p) => scores.broadcast_add(&p.mask)?,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * len, self.hidden))?;
        let ctx = match &batch.padding {
            None => ctx,
            Some(p) => ctx.index_select(&p.from_padded, 0)?,
        };
        let out = self.output.forward(&ctx)?;
        self.layer_norm.forward(&(out + xs)?)
    }
}

/// Attention, then the position-wise feed-forward block with its residual
/// LayerNorm (`BertLayer` = attention + `BertIntermediate` + `BertOutput`).
struct Layer {
    attention: Attention,
    intermediate: Linear,
    act: HiddenAct,
    output: Linear,
    layer_norm: LayerNorm,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        Ok(Layer {
            attention: Attention::load(vb.pp("attention"), cfg)?,
            intermediate: linear(
                cfg.hidden_size,
                cfg.intermediate_size,
                vb.pp("intermediate").pp("dense"),
            )?,
            act: cfg.hidden_act,
            output: linear(
                cfg.intermediate_size,
                cfg.hidden_size,
                vb.pp("output").pp("dense"),
            )?,
            layer_norm: layer_norm(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("output").pp("LayerNorm"),
            )?,
        })
    }

    fn forward(&self, xs: &Tensor, batch: &PackedBatch) -> Result<Tensor> {
        let attn = self.attention.forward(xs, batch)?;
        let inter = self.intermediate.forward(&attn)?;
        let inter = match self.act {
            HiddenAct::Gelu => gelu_erf(&inter)?,
            HiddenAct::GeluApproximate => inter.gelu()?,
            HiddenAct::Relu => inter.relu()?,
        };
        let out = self.output.forward(&inter)?;
        self.layer_norm.forward(&(out + attn)?)
    }
}

/// The BERT encoder without pooler: token states of the last layer.
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    hidden_size: usize,
    max_positions: usize,
    device: Device,
}

impl BertModel {
    /// Tensor names as in the Hugging Face checkpoint (`embeddings.*`,
    /// `encoder.layer.N.*`), with or without a leading `bert.`.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        cfg.check()?;
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        if vb.dtype() != DType::F32 {
            candle_core::bail!("this BERT runs in f32 only");
        }
        let embeddings = Embeddings::load(vb.pp("embeddings"), cfg)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(BertModel {
            embeddings,
            layers,
            hidden_size: cfg.hidden_size,
            max_positions: cfg.max_position_embeddings,
            device: vb.device().clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// Last-layer token states `(T, hidden)` of a packed batch, rows in
    /// the batch's token order.
    pub fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        if let Some(&too_long) = batch.lens.iter().find(|&&l| l > self.max_positions) {
            candle_core::bail!(
                "a sequence of {too_long} tokens exceeds the {} positions of the model",
                self.max_positions
            );
        }
        let mut xs = self.embeddings.forward(batch)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, batch)?;
        }
        Ok(xs)
    }

    /// Mean of each sequence's token states (sentence-transformers
    /// `Pooling(pooling_mode_mean_tokens=True)` over the attention mask; the
    /// mask is all ones here since the batch holds no padding): `(batch, hidden)`.
    pub fn mean_pool(&self, states: &Tensor, batch: &PackedBatch) -> Result<Tensor> {
        let mut rows = Vec::with_capacity(batch.lens.len());
        let mut offset = 0;
        for &len in &batch.lens {
            rows.push(states.narrow(0, offset, len)?.mean_keepdim(0)?);
            offset += len;
        }
        Tensor::cat(&rows, 0)?.contiguous()?.to_dtype(DType::F32)
    }
}

/// Row-wise L2 normalisation (sentence-transformers `Normalize`:
/// `torch.nn.functional.normalize(x, p=2, dim=1)`, eps 1e-12).
pub fn l2_normalize(xs: &Tensor) -> Result<Tensor> {
    let norm = xs
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    xs.broadcast_div(&norm)
}

/// erf(x) for f32 as a rational function of x (odd numerator of degree 13,
/// even denominator of degree 8) on x clamped to [-4, 4], where erf is ±1
/// to f32 precision. This is the minimax approximation Eigen and XLA use for
/// single-precision erf; only multiplies, adds, one divide and a clamp, so
/// the loop over a slice vectorises. Its error against libm's `erff` is
/// checked by the tests below (≤ 4.5e-7 absolute on erf).
#[inline(always)]
#[allow(clippy::excessive_precision)] // the published coefficients, as is
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = 2.770_681_4e-8 - x2 * 2.726_142_3e-10;
    p = x2 * p - 2.101_024e-6;
    p = x2 * p - 5.692_506_4e-5;
    p = x2 * p - 7.349_906_3e-4;
    p = x2 * p - 2.954_6e-3;
    p = x2 * p - 1.609_603_3e-2;
    let mut q = -2.133_740_6e-4 - x2 * 1.456_607_2e-5;
    q = x2 * q - 1.682_827e-3;
    q = x2 * q - 7.373_329e-3;
    q = x2 * q - 1.426_474e-2;
    x * p / q
}

/// The exact GELU, `x·Φ(x) = x/2·(1 + erf(x/√2))` (Hendrycks & Gimpel
/// 2016; Hugging Face `"gelu"`), as a candle op: on CPU through
/// [`erf_f32`], in parallel chunks on the current rayon pool; elsewhere
/// candle's own `gelu_erf`.
pub fn gelu_erf(xs: &Tensor) -> Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == DType::F32 {
        xs.contiguous()?.apply_op1_no_bwd(&GeluErfOp)
    } else {
        xs.gelu_erf()
    }
}

struct GeluErfOp;

impl CustomOp1 for GeluErfOp {
    fn name(&self) -> &'static str {
        "gelu-erf-rational"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = storage.as_slice::<f32>()?;
        let src = match layout.contiguous_offsets() {
            Some((start, end)) => &src[start..end],
            None => candle_core::bail!("gelu_erf needs a contiguous tensor"),
        };
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(16 * 1024)
            .zip(src.par_chunks(16 * 1024))
            .for_each(|(d, s)| {
                for (d, &x) in d.iter_mut().zip(s) {
                    *d = 0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
                }
            });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rational_erf_matches_libm() {
        let mut worst = 0f32;
        for i in -100_000..=100_000 {
            let x = i as f32 * 1e-4; // [-10, 10]
            let exact = candle_core::cpu::erf::erf_f64(f64::from(x)) as f32;
            worst = worst.max((erf_f32(x) - exact).abs());
        }
        // 4.5e-7 at worst, near the clamp at ±4 (|erf| > 0.99999998 there).
        assert!(worst < 5e-7, "max |erf error| {worst:e}");
        assert_eq!(erf_f32(0.0), 0.0);
        assert_eq!(erf_f32(f32::INFINITY), erf_f32(4.0));
    }

    #[test]
    fn gelu_op_matches_candle_gelu_erf() {
        let xs: Vec<f32> = (-40_000..40_000).map(|i| i as f32 * 2.5e-4).collect();
        let t = Tensor::from_vec(xs, (100, 800), &Device::Cpu).unwrap();
        let ours = gelu_erf(&t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let theirs = t
            .gelu_erf()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // Relative beyond |gelu| = 1; absolute below, where the erf error
        // times |x|/2 reaches 1.2e-6 in the negative tail (x ≈ -5.6, where
        // GELU is -6e-8 and its inputs to the next layer are negligible).
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(worst < 2e-6, "max gelu error {worst:e}");
        // A non-contiguous input gives the same values.
        let tt = t.t().unwrap();
        let back = gelu_erf(&tt).unwrap().t().unwrap();
        assert_eq!(back.flatten_all().unwrap().to_vec1::<f32>().unwrap(), ours);
    }
}
