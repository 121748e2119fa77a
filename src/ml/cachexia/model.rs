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

use candle_core::{CpuStorage, CustomOp1, D, DType, Device, Layout, Module, Result, Shape, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder, layer_norm, linear};
use serde::{Deserialize, Serialize};

use super::inputs::{Encoded, MODALITIES, ModalityBatch, input_dims, key};
use crate::ml::ops;

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
    /// A model small enough for tests to build and train in milliseconds.
    #[cfg(test)]
    pub(crate) fn tiny(n_layers: usize, input_dims: [usize; 5]) -> Self {
        Self {
            d_model: 8,
            n_heads: 2,
            n_layers,
            d_ff: 16,
            input_dims,
        }
    }

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
        let h = self.fc2.forward(&ops::gelu_erf(&self.fc1.forward(x)?)?)?;
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
        self.out.forward(&self.mix(x)?)
    }

    /// Attention before the output projection: (B, T, d), heads side by side.
    fn mix(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let qkv = self.qkv.forward(x)?;
        if !qkv.track_op() && qkv.device().is_cpu() && qkv.dtype() == DType::F32 {
            return qkv.contiguous()?.apply_op1_no_bwd(&TokenAttention {
                n_heads: self.n_heads,
                head_dim: self.head_dim,
                first_only: false,
            });
        }
        let qkv = qkv
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
        let att = ops::softmax_last_dim(&att)?;
        let y = att.unsqueeze(4)?.broadcast_mul(&v.unsqueeze(2)?)?.sum(3)?; // (B, H, T, hd)
        y.transpose(1, 2)?.contiguous()?.reshape((b, t, d))
    }
}

/// Scaled dot-product attention over a handful of tokens, as one CPU op for
/// inference: `qkv` (B, T, 3·d) as the `qkv` projection lays it out
/// (`[q | k | v]`, each head's `head_dim` values contiguous) → (B, T, d),
/// heads side by side as in the composed path. With six tokens the composed
/// path is mostly allocation and broadcasting of (B, H, T, T, hd) products;
/// this loop does the same arithmetic in registers. No backward pass: the
/// composed path runs whenever a gradient is tracked.
struct TokenAttention {
    n_heads: usize,
    head_dim: usize,
    /// Only the first token's query (→ (B, 1, d)): all that the last block
    /// needs of its attention ([`Block::forward_first`]).
    first_only: bool,
}

impl CustomOp1 for TokenAttention {
    fn name(&self) -> &'static str {
        "token-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, t, three_d) = layout.shape().dims3()?;
        let (h, hd) = (self.n_heads, self.head_dim);
        let d = h * hd;
        if three_d != 3 * d {
            candle_core::bail!("token attention: last axis {three_d} is not 3 × {d}");
        }
        let queries = if self.first_only { t.min(1) } else { t };
        if b == 0 || t == 0 || d == 0 {
            return Ok((CpuStorage::F32(Vec::new()), Shape::from((b, queries, d))));
        }
        let src = match layout.contiguous_offsets() {
            Some((start, end)) => &storage.as_slice::<f32>()?[start..end],
            None => candle_core::bail!("token attention needs a contiguous input"),
        };
        let mut dst = vec![0f32; b * queries * d];
        attend(src, &mut dst, t, h, hd, queries);
        Ok((CpuStorage::F32(dst), Shape::from((b, queries, d))))
    }
}

avx2_dispatch! {
    /// Scaled dot-product attention of every row's tokens (or its first
    /// token only: `queries` = 1) over its `t` tokens; `src` is (B, t, 3·d)
    /// packed q|k|v, `dst` (B, queries, d), zeroed. AVX2 chosen at run time.
    fn attend(src: &[f32], dst: &mut [f32], t: usize, h: usize, hd: usize, queries: usize) => attend_body
}

/// The loop itself, inlined into both entry points of [`attend`].
#[inline(always)]
fn attend_body(src: &[f32], dst: &mut [f32], t: usize, h: usize, hd: usize, queries: usize) {
    let d = h * hd;
    let three_d = 3 * d;
    let scale = 1.0 / (hd as f32).sqrt();
    // Up to LANES tokens, each head's keys are first laid out key-index
    // fastest (zero-padded to LANES), so that the scores of one query
    // against every key accumulate side by side in one vector; each
    // score still sums its products in the same order.
    const LANES: usize = 8;
    let mut p = vec![0f32; t];
    let mut keys = vec![0f32; hd * LANES];
    for (rows, out) in src
        .chunks_exact(t * three_d)
        .zip(dst.chunks_exact_mut(queries * d))
    {
        for head in 0..h {
            let (qo, ko, vo) = (head * hd, d + head * hd, 2 * d + head * hd);
            if t <= LANES {
                for j in 0..t {
                    for (c, &k) in rows[j * three_d + ko..][..hd].iter().enumerate() {
                        keys[c * LANES + j] = k;
                    }
                }
            }
            for i in 0..queries {
                let q = &rows[i * three_d + qo..][..hd];
                let mut max = f32::NEG_INFINITY;
                if t <= LANES {
                    let mut acc = [0f32; LANES];
                    for (&qc, kc) in q.iter().zip(keys.as_chunks::<LANES>().0) {
                        for (a, &k) in acc.iter_mut().zip(kc) {
                            *a += qc * k;
                        }
                    }
                    for (pj, a) in p.iter_mut().zip(acc) {
                        *pj = a * scale;
                        max = max.max(*pj);
                    }
                } else {
                    for (j, pj) in p.iter_mut().enumerate() {
                        let k = &rows[j * three_d + ko..][..hd];
                        *pj = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                        max = max.max(*pj);
                    }
                }
                let mut sum = 0f32;
                for pj in p.iter_mut() {
                    *pj = (*pj - max).exp();
                    sum += *pj;
                }
                let y = &mut out[i * d + head * hd..][..hd];
                let inv_sum = sum.recip();
                if hd == LANES {
                    // The weighted values accumulate in registers and are
                    // stored once: with a run-time length the compiler kept
                    // `y` in memory, and every key's update waited for the
                    // previous one's store (the op's hottest instructions).
                    // The same additions in the same order.
                    let mut acc = [0f32; LANES];
                    acc.copy_from_slice(y);
                    for (j, pj) in p.iter().enumerate() {
                        let w = pj * inv_sum;
                        let v = &rows[j * three_d + vo..][..LANES];
                        for (a, &v) in acc.iter_mut().zip(v) {
                            *a += w * v;
                        }
                    }
                    y.copy_from_slice(&acc);
                } else {
                    for (j, pj) in p.iter().enumerate() {
                        let w = pj * inv_sum;
                        let v = &rows[j * three_d + vo..][..hd];
                        for (y, v) in y.iter_mut().zip(v) {
                            *y += w * v;
                        }
                    }
                }
            }
        }
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
        // `ops` keeps the gradient through LayerNorm and GELU while
        // training; candle-nn's fused LayerNorm would drop it.
        let x = (x + self.attn.forward(&ops::layer_norm(&self.ln1, x)?)?)?;
        self.feed_forward(x)
    }

    /// The block's output for the first (CLS) token only, (B, 1, d): all
    /// the head reads after the last block. Every token's keys and values
    /// still come in, but the output projection and the feed-forward run on
    /// one token of six: the same numbers, a fifth fewer multiply-adds per
    /// row (each output row of a block depends on its own attention row).
    fn forward_first(&self, x: &Tensor) -> Result<Tensor> {
        let mixed = self.attn.mix(&ops::layer_norm(&self.ln1, x)?)?;
        let first = |t: &Tensor| t.narrow(1, 0, 1);
        let x = (first(x)? + self.attn.out.forward(&first(&mixed)?)?)?;
        self.feed_forward(x)
    }

    fn feed_forward(&self, x: Tensor) -> Result<Tensor> {
        let h = self.ff1.forward(&ops::layer_norm(&self.ln2, &x)?)?;
        let h = self.ff2.forward(&ops::gelu_erf(&h)?)?;
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
        if let Some((last, rest)) = self.blocks.split_last() {
            for block in rest {
                x = block.forward(&x)?;
            }
            x = last.forward_first(&x)?;
        }
        let cls = ops::layer_norm(&self.ln_f, &x.narrow(1, 0, 1)?.squeeze(1)?)?;
        self.head.forward(&cls)?.squeeze(D::Minus1)
    }
}

/// Every member of an ensemble in one forward pass, for inference: their
/// weights stacked on a leading member axis, so that each layer is one
/// batched matmul or one op for all members instead of one per member.
/// A member has ~25k parameters and a hook scores a few dozen rows, so a
/// forward is mostly per-op overhead (allocation, dispatch: ~60 candle ops
/// per member); stacking divides the op count by the ensemble size.
///
/// It also computes each distinct token once ([`TokenBatch`]): a hook's
/// rows are one patient with one modality or one input left out at a time,
/// so a modality's encoder sees the same inputs in nearly every row, and
/// so does the first block's LayerNorm and qkv projection (per token,
/// before any attention). Encoders and that projection run on the distinct
/// tokens; the rows then take theirs by index. The arithmetic per token is
/// unchanged (`stacked_forward_equals_each_member`). Built from loaded
/// members; not for training (nothing is tracked).
pub struct StackedFusion {
    members: usize,
    encoders: Vec<StackedEncoder>,
    /// (M, 1, d).
    cls: Tensor,
    blocks: Vec<StackedBlock>,
    ln_f: StackedNorm,
    head: StackedLinear,
    n_heads: usize,
    head_dim: usize,
}

/// A batch of rows as positions in a vocabulary of distinct tokens:
/// `[CLS, modality 0's distinct inputs…, its missing token, modality 1's…]`.
pub struct TokenBatch {
    /// Per modality, the distinct inputs of the rows where it is present,
    /// (U, in); `None` where no row has it.
    inputs: Vec<Option<Tensor>>,
    /// (B · T,) u32: each row's tokens, CLS first, as vocabulary positions.
    index: Tensor,
    rows: usize,
}

impl TokenBatch {
    pub fn new(rows: &[&Encoded], device: &Device) -> Result<Self> {
        let dims = input_dims();
        let t = 1 + dims.len();
        let mut index = vec![0u32; rows.len() * t];
        let mut inputs = Vec::with_capacity(dims.len());
        let mut offset = 1;
        for (mi, &dim) in dims.iter().enumerate() {
            let mut distinct: Vec<&[f32]> = Vec::new();
            let mut slots = Vec::with_capacity(rows.len());
            for r in rows {
                let x = &r.x[mi][..];
                if x.len() != dim {
                    candle_core::bail!(
                        "modality {} has {} inputs, expected {dim}",
                        key(MODALITIES[mi]),
                        x.len()
                    );
                }
                // Bit-for-bit equal inputs give bit-for-bit equal tokens.
                let same = |d: &&[f32]| d.iter().zip(x).all(|(a, b)| a.to_bits() == b.to_bits());
                slots.push(r.present[mi].then(|| {
                    distinct.iter().position(same).unwrap_or_else(|| {
                        distinct.push(x);
                        distinct.len() - 1
                    })
                }));
            }
            let u = distinct.len();
            for (ri, slot) in slots.iter().enumerate() {
                index[ri * t + 1 + mi] = (offset + slot.unwrap_or(u)) as u32;
            }
            inputs.push(if u == 0 {
                None
            } else {
                Some(Tensor::from_vec(distinct.concat(), (u, dim), device)?)
            });
            offset += u + 1;
        }
        Ok(Self {
            inputs,
            index: Tensor::from_vec(index, rows.len() * t, device)?,
            rows: rows.len(),
        })
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

/// A linear layer per member: `wt` (M, in, out), `b` (M, 1, out).
struct StackedLinear {
    wt: Tensor,
    b: Tensor,
}

impl StackedLinear {
    fn new(layers: &[&Linear]) -> Result<Self> {
        let wt = layers
            .iter()
            .map(|l| l.weight().detach().t())
            .collect::<Result<Vec<_>>>()?;
        let b = layers
            .iter()
            .map(|l| bias_row(l))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            wt: Tensor::stack(&wt, 0)?.contiguous()?,
            b: Tensor::stack(&b, 0)?,
        })
    }

    /// (M, N, in) → (M, N, out).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.wt)?.broadcast_add(&self.b)
    }
}

/// A layer's bias as a (1, out) row (zeros for a layer without one).
fn bias_row(l: &Linear) -> Result<Tensor> {
    match l.bias() {
        Some(b) => b.detach().unsqueeze(0),
        None => Tensor::zeros((1, l.weight().dim(0)?), DType::F32, l.weight().device()),
    }
}

/// (M, B·T, d) → (M, B, d): each row's first (CLS) token.
fn first_tokens(x: &Tensor, t: usize) -> Result<Tensor> {
    let (m, n, d) = x.dims3()?;
    x.reshape((m, n / t.max(1), t, d))?
        .narrow(2, 0, 1)?
        .contiguous()?
        .reshape((m, (), d))
}

/// A LayerNorm per member (mean removed, affine), as one CPU op: `x`
/// (M, N, d) with member m's scale and shift on `x[m]`. The arithmetic is
/// candle-nn's fused LayerNorm's (f32 sums of x and x², var = E[x²] − mean²)
/// in a plain loop: that kernel hands every 32-value row to rayon, which
/// on the two-thread inference pool cost more than the normalising.
struct StackedNorm {
    /// (M, d) each, row-major.
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl StackedNorm {
    fn new(norms: &[&LayerNorm]) -> Result<Self> {
        let mut weight = Vec::new();
        let mut bias = Vec::new();
        for n in norms {
            let w = n.weight().detach().to_dtype(DType::F32)?.to_vec1::<f32>()?;
            let b = match n.bias() {
                Some(b) => b.detach().to_dtype(DType::F32)?.to_vec1::<f32>()?,
                None => vec![0.0; w.len()],
            };
            weight.extend(w);
            bias.extend(b);
        }
        Ok(Self {
            weight,
            bias,
            eps: norms[0].eps() as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for StackedNorm {
    fn name(&self) -> &'static str {
        "stacked-layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (m, n, d) = layout.shape().dims3()?;
        if m * d != self.weight.len() {
            candle_core::bail!(
                "stacked layer norm: {m} members × {d} values, weights for {}",
                self.weight.len()
            );
        }
        let src = match layout.contiguous_offsets() {
            Some((start, end)) => &storage.as_slice::<f32>()?[start..end],
            None => candle_core::bail!("stacked layer norm needs a contiguous input"),
        };
        // Written row by row, never zero-filled first.
        let mut dst = Vec::with_capacity(src.len());
        if d > 0 {
            normalise(self, src, &mut dst, n, d);
        }
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

avx2_dispatch! {
    /// Each `d`-value row of `src` (`n` rows per member) normalised with its
    /// member's scale and shift, appended to `dst`. AVX2 chosen at run time.
    fn normalise(norm: &StackedNorm, src: &[f32], dst: &mut Vec<f32>, n: usize, d: usize) => normalise_body
}

#[inline(always)]
fn normalise_body(norm: &StackedNorm, src: &[f32], dst: &mut Vec<f32>, n: usize, d: usize) {
    for (k, s) in src.chunks_exact(d).enumerate() {
        let member = k / n.max(1);
        let w = &norm.weight[member * d..][..d];
        let b = &norm.bias[member * d..][..d];
        let (sum, sum2) = lane_sums(s);
        let mean = sum / d as f32;
        let var = sum2 / d as f32 - mean * mean;
        let inv_std = (var + norm.eps).sqrt().recip();
        dst.extend(
            s.iter()
                .zip(w)
                .zip(b)
                .map(|((&v, &w), &b)| (v - mean) * inv_std * w + b),
        );
    }
}

/// Sum and sum of squares of `s` in eight independent lanes, folded at the
/// end: one chain of dependent additions per value (the plain loop) cannot
/// be vectorised, and a LayerNorm row is only 32 values. A different
/// summation order than candle-nn's LayerNorm, so results agree to rounding
/// (the stacked model's tests compare with a tolerance).
#[inline(always)]
fn lane_sums(s: &[f32]) -> (f32, f32) {
    const LANES: usize = 8;
    let (chunks, rest) = s.as_chunks::<LANES>();
    let (mut a, mut b) = ([0f32; LANES], [0f32; LANES]);
    for c in chunks {
        for l in 0..LANES {
            a[l] += c[l];
            b[l] += c[l] * c[l];
        }
    }
    let (mut sum, mut sum2) = (a.iter().sum::<f32>(), b.iter().sum::<f32>());
    for &v in rest {
        sum += v;
        sum2 += v * v;
    }
    (sum, sum2)
}

/// The modality encoders: `fc1` as one matmul for all members (the input
/// is shared: their weights side by side, (in, M·d)), the rest per member.
struct StackedEncoder {
    fc1_wt: Tensor,
    fc1_b: Tensor,
    fc2: StackedLinear,
    /// (M, 1, d) each. An absent modality's token is `missing +
    /// type_embedding`, which is what [`ModalityEncoder::forward`]'s blend
    /// gives with weight 0 (and `h + type_embedding` with weight 1).
    missing_token: Tensor,
    type_embedding: Tensor,
}

impl StackedEncoder {
    fn new(encoders: &[&ModalityEncoder]) -> Result<Self> {
        let cat = |f: &dyn Fn(&ModalityEncoder) -> Result<Tensor>| -> Result<Tensor> {
            let parts = encoders.iter().map(|e| f(e)).collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 1)?.contiguous()
        };
        let per_member = |f: &dyn Fn(&ModalityEncoder) -> Result<Tensor>| -> Result<Tensor> {
            let parts = encoders
                .iter()
                .map(|e| f(e)?.detach().unsqueeze(0))
                .collect::<Result<Vec<_>>>()?;
            Tensor::stack(&parts, 0)
        };
        let fc2 = encoders.iter().map(|e| &e.fc2).collect::<Vec<_>>();
        Ok(Self {
            fc1_wt: cat(&|e| e.fc1.weight().detach().t())?,
            fc1_b: cat(&|e| bias_row(&e.fc1))?,
            fc2: StackedLinear::new(&fc2)?,
            missing_token: per_member(&|e| &e.missing + &e.type_embedding)?,
            type_embedding: per_member(&|e| Ok(e.type_embedding.clone()))?,
        })
    }

    /// Distinct inputs `x` (U, in) of rows where the modality is present →
    /// their tokens (M, U, d).
    fn forward(&self, x: &Tensor, m: usize) -> Result<Tensor> {
        let u = x.dim(0)?;
        let h = ops::gelu_erf(&x.matmul(&self.fc1_wt)?.broadcast_add(&self.fc1_b)?)?;
        let h = h.reshape((u, m, ()))?.transpose(0, 1)?.contiguous()?;
        self.fc2.forward(&h)?.broadcast_add(&self.type_embedding)
    }
}

struct StackedBlock {
    ln1: StackedNorm,
    qkv: StackedLinear,
    out: StackedLinear,
    ln2: StackedNorm,
    ff1: StackedLinear,
    ff2: StackedLinear,
}

impl StackedBlock {
    fn new(blocks: &[&Block]) -> Result<Self> {
        let pick = |f: &dyn Fn(&Block) -> &Linear| {
            StackedLinear::new(&blocks.iter().map(|b| f(b)).collect::<Vec<_>>())
        };
        let norm = |f: &dyn Fn(&Block) -> &LayerNorm| {
            StackedNorm::new(&blocks.iter().map(|b| f(b)).collect::<Vec<_>>())
        };
        Ok(Self {
            ln1: norm(&|b| &b.ln1)?,
            qkv: pick(&|b| &b.attn.qkv)?,
            out: pick(&|b| &b.attn.out)?,
            ln2: norm(&|b| &b.ln2)?,
            ff1: pick(&|b| &b.ff1)?,
            ff2: pick(&|b| &b.ff2)?,
        })
    }

    /// LayerNorm and qkv projection, token by token: (M, N, d) → (M, N, 3d).
    fn qkv(&self, x: &Tensor) -> Result<Tensor> {
        self.qkv.forward(&self.ln1.forward(x)?)
    }

    /// `x` (M, B·T, d) with its `qkv` (M, B·T, 3d) → (M, B·T, d), or
    /// (M, B, d), the first token of each row, when `attention.first_only`
    /// (as [`Block::forward_first`]).
    fn forward(
        &self,
        x: &Tensor,
        qkv: &Tensor,
        t: usize,
        attention: &TokenAttention,
    ) -> Result<Tensor> {
        let (m, n, d) = x.dims3()?;
        let b = n / t.max(1);
        let mixed = qkv
            .reshape((m * b, t, 3 * d))?
            .apply_op1_no_bwd(attention)?
            .reshape((m, (), d))?;
        let x = if attention.first_only {
            first_tokens(x, t)?
        } else {
            x.clone()
        };
        let x = (x + self.out.forward(&mixed)?)?;
        let h = self.ff1.forward(&self.ln2.forward(&x)?)?;
        let h = self.ff2.forward(&ops::gelu_erf(&h)?)?;
        x + h
    }
}

impl StackedFusion {
    pub fn new(members: &[CachexiaFusion]) -> Result<Self> {
        let Some(first) = members.first() else {
            candle_core::bail!("no members to stack");
        };
        let n_heads = first.blocks.first().map_or(1, |b| b.attn.n_heads);
        let d = first.cls.dim(0)?;
        let encoders = (0..first.encoders.len())
            .map(|i| {
                StackedEncoder::new(&members.iter().map(|m| &m.encoders[i]).collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>>>()?;
        let blocks = (0..first.blocks.len())
            .map(|i| StackedBlock::new(&members.iter().map(|m| &m.blocks[i]).collect::<Vec<_>>()))
            .collect::<Result<Vec<_>>>()?;
        let cls = members
            .iter()
            .map(|m| m.cls.detach().unsqueeze(0))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            members: members.len(),
            encoders,
            cls: Tensor::stack(&cls, 0)?,
            blocks,
            ln_f: StackedNorm::new(&members.iter().map(|m| &m.ln_f).collect::<Vec<_>>())?,
            head: StackedLinear::new(&members.iter().map(|m| &m.head).collect::<Vec<_>>())?,
            n_heads,
            head_dim: d / n_heads,
        })
    }

    /// Logits, shape (M, B): row m is member m's [`CachexiaFusion::forward`]
    /// on the batch's rows.
    pub fn forward(&self, batch: &TokenBatch) -> Result<Tensor> {
        let (m, b) = (self.members, batch.len());
        let t = 1 + self.encoders.len();
        let mut vocabulary = vec![self.cls.clone()];
        for (enc, x) in self.encoders.iter().zip(&batch.inputs) {
            if let Some(x) = x {
                vocabulary.push(enc.forward(x, m)?);
            }
            vocabulary.push(enc.missing_token.clone());
        }
        let vocabulary = Tensor::cat(&vocabulary, 1)?.contiguous()?;
        let mut x = vocabulary.index_select(&batch.index, 1)?;
        let last = self.blocks.len().saturating_sub(1);
        for (i, block) in self.blocks.iter().enumerate() {
            let qkv = if i == 0 {
                block.qkv(&vocabulary)?.index_select(&batch.index, 1)?
            } else {
                block.qkv(&x)?
            };
            let attention = TokenAttention {
                n_heads: self.n_heads,
                head_dim: self.head_dim,
                first_only: i == last,
            };
            x = block.forward(&x, &qkv, t, &attention)?;
        }
        if self.blocks.is_empty() {
            x = first_tokens(&x, t)?;
        }
        self.head.forward(&self.ln_f.forward(&x)?)?.reshape((m, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    /// The token-attention op equals scaled dot-product attention written
    /// out naively (f64), for six tokens (the vector path) and ten (the
    /// plain one), all queries and the first only, head sizes 4 and 8.
    #[test]
    fn token_attention_equals_naive_attention() {
        let dev = Device::Cpu;
        // Head size 4 (the plain output loop) and 8 (the register one).
        for (h, hd) in [(2, 4), (4, 8)] {
            let d = h * hd;
            for t in [6, 10] {
                let qkv = Tensor::randn(0f32, 1.0, (3, t, 3 * d), &dev).unwrap();
                let rows = qkv.to_vec3::<f32>().unwrap();
                for first_only in [false, true] {
                    let op = TokenAttention {
                        n_heads: h,
                        head_dim: hd,
                        first_only,
                    };
                    let got = qkv.apply_op1_no_bwd(&op).unwrap().to_vec3::<f32>().unwrap();
                    let queries = if first_only { 1 } else { t };
                    assert_eq!((got.len(), got[0].len()), (3, queries));
                    for (r, row) in rows.iter().enumerate() {
                        for i in 0..queries {
                            for head in 0..h {
                                let q = &row[i][head * hd..][..hd];
                                let scores: Vec<f64> = (0..t)
                                    .map(|j| {
                                        let k = &row[j][d + head * hd..][..hd];
                                        q.iter().zip(k).map(|(a, b)| f64::from(a * b)).sum::<f64>()
                                            / (hd as f64).sqrt()
                                    })
                                    .collect();
                                let max = scores.iter().copied().fold(f64::MIN, f64::max);
                                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                                let total: f64 = e.iter().sum();
                                for c in 0..hd {
                                    let want: f64 = (0..t)
                                        .map(|j| {
                                            e[j] / total * f64::from(row[j][2 * d + head * hd + c])
                                        })
                                        .sum();
                                    let diff = (f64::from(got[r][i][head * hd + c]) - want).abs();
                                    assert!(
                                        diff < 1e-5,
                                        "t {t}, row {r}, query {i}: off by {diff}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The last block on the CLS token alone gives the first row of the
    /// full block exactly, on the inference path (token-attention op) and
    /// while a gradient is tracked (composed ops).
    #[test]
    fn block_on_the_first_token_equals_the_full_block_row() {
        let dev = Device::Cpu;
        let cfg = Config::tiny(1, [1; 5]);
        let varmap = VarMap::new();
        let trained =
            Block::load(VarBuilder::from_varmap(&varmap, DType::F32, &dev), &cfg).unwrap();
        let frozen = ops::frozen_tensors(&varmap);
        let frozen = Block::load(VarBuilder::from_tensors(frozen, DType::F32, &dev), &cfg).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 6, 8), &dev).unwrap();
        for (block, tracking) in [(&frozen, false), (&trained, true)] {
            let full = block.forward(&x).unwrap().narrow(1, 0, 1).unwrap();
            let first = block.forward_first(&x).unwrap();
            assert_eq!(first.dims(), &[3, 1, 8]);
            assert_eq!(first.track_op(), tracking);
            let diff = ops::max_abs_diff(&first, &full);
            assert!(diff < 1e-6, "tracking {tracking}: differs by {diff}");
        }
    }
}
