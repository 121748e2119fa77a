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
//! the batch stacked into one `(T, hidden)` matrix, one GEMM per layer; the
//! attention itself runs per (sequence, head) on the packed rows
//! (`PackedAttention`), so no padding exists anywhere at inference (when
//! gradients are tracked, a padded `(batch, heads, L, L)` view of candle
//! ops, masked as in Hugging Face's `get_extended_attention_mask`, is used
//! instead). The arithmetic per real token is the same
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

/// A linear layer of the frozen encoder. Untracked input: the layer as is.
/// Tracked input (prompt learning): the same product through
/// [`FrozenLinearOp`], whose backward pass computes the input's gradient
/// only. candle's `matmul` backward also forms the weight's gradient
/// (`xᵀ·grad`, one more GEMM as large as the forward one) and the bias's,
/// which a frozen encoder throws away: a third of the dense work of every
/// training step through MiniLM.
fn dense(lin: &Linear, xs: &Tensor) -> Result<Tensor> {
    if xs.track_op() && xs.rank() == 2 && xs.device().is_cpu() && xs.dtype() == DType::F32 {
        xs.apply_op1(FrozenLinearOp { lin: lin.clone() })
    } else {
        lin.forward(xs)
    }
}

/// `x·Wᵀ + b` with constant `W`, `b`: forward as [`Linear`], backward
/// `grad·W` for `x` alone.
struct FrozenLinearOp {
    lin: Linear,
}

impl CustomOp1 for FrozenLinearOp {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = storage.as_slice::<f32>()?;
        let x = match layout.contiguous_offsets() {
            Some((start, end)) => {
                Tensor::from_slice(&src[start..end], layout.shape(), &Device::Cpu)?
            }
            None => candle_core::bail!("frozen linear needs a contiguous input"),
        };
        let y = self.lin.forward(&x)?.contiguous()?;
        let (st, l) = y.storage_and_layout();
        match (&*st, l.contiguous_offsets()) {
            (candle_core::Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) => {
                Ok((CpuStorage::F32(v[start..end].to_vec()), l.shape().clone()))
            }
            _ => candle_core::bail!("frozen linear: unexpected output storage"),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // y = x·Wᵀ + b  ⇒  ∂L/∂x = ∂L/∂y · W
        Ok(Some(grad_res.contiguous()?.matmul(self.lin.weight())?))
    }
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
        self.forward_words(&self.word.forward(&batch.ids)?, batch)
    }

    /// From word vectors `(T, hidden)` (the rows of `word_embeddings` for
    /// ordinary tokens, learned vectors for prompt context): adds positions
    /// and the type-0 row, then the LayerNorm.
    fn forward_words(&self, words: &Tensor, batch: &PackedBatch) -> Result<Tensor> {
        let xs = (words + self.position.forward(&batch.positions)?)?;
        let xs = xs.broadcast_add(&self.token_type_0)?;
        super::ops::layer_norm(&self.layer_norm, &xs)
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
        let qkv = dense(&self.qkv, xs)?; // (T, 3H)
        // Inference on the CPU: attention per (sequence, head) on the packed
        // rows ([`PackedAttention`]). When gradients are tracked (a caller
        // training through the encoder) the padded view below, built from
        // differentiable candle ops, is used instead.
        let ctx = if qkv.device().is_cpu() && qkv.dtype() == DType::F32 && !qkv.track_op() {
            qkv.contiguous()?.apply_op1_no_bwd(&PackedAttention {
                lens: &batch.lens,
                num_heads: self.num_heads,
                head_dim: self.head_dim,
            })?
        } else {
            self.padded_attention(&qkv, batch)?
        };
        let out = dense(&self.output, &ctx)?;
        super::ops::layer_norm(&self.layer_norm, &(out + xs)?)
    }

    /// Attention through a padded `(batch, heads, L, L)` view of the packed
    /// `qkv` (`(T, 3H)` → `(T, H)`), masking the padding as Hugging Face's
    /// `get_extended_attention_mask` does. Differentiable.
    fn padded_attention(&self, qkv: &Tensor, batch: &PackedBatch) -> Result<Tensor> {
        let total = qkv.dim(0)?;
        let (b, len, qkv) = match &batch.padding {
            None => (1, total, qkv.clone()),
            Some(p) => {
                let zero = Tensor::zeros((1, 3 * self.hidden), qkv.dtype(), qkv.device())?;
                let padded = Tensor::cat(&[qkv, &zero], 0)?.index_select(&p.to_padded, 0)?;
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
        // The fused softmax has no backward pass; `ops` picks the composed
        // one when a gradient is tracked.
        let probs = super::ops::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * len, self.hidden))?;
        match &batch.padding {
            None => Ok(ctx),
            Some(p) => ctx.index_select(&p.from_padded, 0),
        }
    }
}

/// Scaled dot-product attention of a packed batch on the CPU: `(T, 3H)`
/// fused Q/K/V rows (query already scaled) → `(T, H)` context rows.
///
/// Why not the padded view: for a batch of 16 sentences of 8–75 tokens the
/// `(16, 12, 75, 75)` view is mostly padding, and candle runs its batched
/// matrix products as one small multi-threaded GEMM per (sentence, head),
/// 384 per layer, whose start-up cost, not arithmetic, dominated: our batch
/// of 16 was slower per sentence than a single sentence (docs/benchmarks.md,
/// MiniLM). Here each (sequence, head) is one unit of rayon work on the
/// caller's pool: two single-threaded GEMMs (`gemm`, the kernels candle
/// itself uses) read Q, K and V in place through their row stride, and a
/// softmax runs on the real `len × len` scores only. Each sequence's result
/// does not depend on what else is in the batch, so a sentence embeds to
/// the same bits alone and batched.
struct PackedAttention<'a> {
    lens: &'a [usize],
    num_heads: usize,
    head_dim: usize,
}

impl PackedAttention<'_> {
    /// Context rows `(len, head_dim)` of one head of one sequence whose
    /// first row is `offset`.
    #[allow(unsafe_code)] // two calls into `gemm`'s raw-pointer API (SAFETY below)
    fn attend(&self, qkv: &[f32], offset: usize, len: usize, head: usize) -> Vec<f32> {
        let d = self.head_dim;
        let hidden = self.num_heads * d;
        let row = 3 * hidden;
        let base = offset * row + head * d;
        let q = &qkv[base..base + (len - 1) * row + d];
        let k = &qkv[base + hidden..base + hidden + (len - 1) * row + d];
        let v = &qkv[base + 2 * hidden..base + 2 * hidden + (len - 1) * row + d];
        let mut scores = vec![0f32; len * len];
        // SAFETY: `gemm` reads `m·k` elements of lhs and `k·n` of rhs at the
        // given strides and writes `m·n` of dst; every index it forms lies
        // inside the slices above (rows `0..len` of stride `row`, columns
        // `0..d`) and inside `scores`/`ctx`, which are exactly `len·len` and
        // `len·d` long and not aliased.
        unsafe {
            // scores (len × len) = Q (len × d) · Kᵀ (d × len)
            gemm::gemm(
                len,
                len,
                d,
                scores.as_mut_ptr(),
                1,
                len as isize,
                false,
                q.as_ptr(),
                1,
                row as isize,
                k.as_ptr(),
                row as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for r in scores.chunks_exact_mut(len) {
            let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for x in r.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            let inv = 1.0 / sum;
            for x in r.iter_mut() {
                *x *= inv;
            }
        }
        let mut ctx = vec![0f32; len * d];
        // SAFETY: as above.
        unsafe {
            // ctx (len × d) = P (len × len) · V (len × d)
            gemm::gemm(
                len,
                d,
                len,
                ctx.as_mut_ptr(),
                1,
                d as isize,
                false,
                scores.as_ptr(),
                1,
                len as isize,
                v.as_ptr(),
                1,
                row as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        ctx
    }
}

impl CustomOp1 for PackedAttention<'_> {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = storage.as_slice::<f32>()?;
        let qkv = match layout.contiguous_offsets() {
            Some((start, end)) => &src[start..end],
            None => candle_core::bail!("packed attention needs a contiguous tensor"),
        };
        let d = self.head_dim;
        let hidden = self.num_heads * d;
        let total: usize = self.lens.iter().sum();
        if self.lens.contains(&0) || qkv.len() != total * 3 * hidden {
            candle_core::bail!(
                "packed attention: {} values for sequences of {:?} tokens and width {}",
                qkv.len(),
                self.lens,
                3 * hidden
            );
        }
        let mut units = Vec::with_capacity(self.lens.len() * self.num_heads);
        let mut offset = 0;
        for &len in self.lens {
            units.extend((0..self.num_heads).map(|h| (offset, len, h)));
            offset += len;
        }
        let parts: Vec<Vec<f32>> = units
            .par_iter()
            .map(|&(offset, len, head)| self.attend(qkv, offset, len, head))
            .collect();
        let mut out = vec![0f32; total * hidden];
        for (&(offset, _, head), part) in units.iter().zip(&parts) {
            for (i, src_row) in part.chunks_exact(d).enumerate() {
                let at = (offset + i) * hidden + head * d;
                out[at..at + d].copy_from_slice(src_row);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((total, hidden))))
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
        let inter = dense(&self.intermediate, &attn)?;
        let inter = match self.act {
            // The rational-erf op has no backward pass; `ops` runs
            // candle's own `gelu_erf` when a gradient is tracked.
            HiddenAct::Gelu => super::ops::gelu_erf(&inter)?,
            HiddenAct::GeluApproximate => inter.gelu()?,
            HiddenAct::Relu => inter.relu()?,
        };
        let out = dense(&self.output, &inter)?;
        super::ops::layer_norm(&self.layer_norm, &(out + attn)?)
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

    /// Word-piece vectors `(T, hidden)` of `ids` (the embedding table's rows,
    /// before positions and LayerNorm): what a prompt-learning caller puts
    /// around its learned context vectors.
    pub fn word_embeddings(&self, ids: &Tensor) -> Result<Tensor> {
        self.embeddings.word.forward(ids)
    }

    /// Last-layer token states `(T, hidden)` from word vectors `words`
    /// `(T, hidden)` laid out as `batch` (its token ids are not read; its
    /// lengths and positions are). For prompt learning (CoOp/CoCoOp, Zhou et
    /// al. 2022): some rows are learned vectors, and when they carry a
    /// gradient every op on the way is a differentiable candle op (padded
    /// attention, composed softmax, LayerNorm and GELU), so the gradient
    /// reaches them through the frozen encoder. Untracked input takes the
    /// same fast path as [`BertModel::forward`].
    pub fn forward_embeddings(&self, words: &Tensor, batch: &PackedBatch) -> Result<Tensor> {
        let (t, h) = words.dims2()?;
        if t != batch.total_tokens() || h != self.hidden_size {
            candle_core::bail!(
                "word vectors ({t}, {h}) for a batch of {} tokens of width {}",
                batch.total_tokens(),
                self.hidden_size
            );
        }
        if let Some(&too_long) = batch.lens.iter().find(|&&l| l > self.max_positions) {
            candle_core::bail!(
                "a sequence of {too_long} tokens exceeds the {} positions of the model",
                self.max_positions
            );
        }
        let mut xs = self.embeddings.forward_words(words, batch)?;
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
/// [`erf_f32`] (in parallel chunks on the current rayon pool when large);
/// elsewhere
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
        if src.len() <= GELU_SERIAL_MAX {
            let mut dst = vec![0f32; src.len()];
            gelu_slice(src, &mut dst);
            return Ok((CpuStorage::F32(dst), layout.shape().clone()));
        }
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(GELU_CHUNK)
            .zip(src.par_chunks(GELU_CHUNK))
            .for_each(|(d, s)| gelu_slice(s, d));
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// Values per parallel piece of a large activation (MiniLM: 1,536 per token).
const GELU_CHUNK: usize = 16 * 1024;

/// Up to this many values the op runs on the calling thread. Handing three
/// or four small pieces to rayon cost more than it saved: the cachexia
/// model's activations (always under 64k values per pass) spent more time
/// in rayon's job plumbing than in the arithmetic under load.
const GELU_SERIAL_MAX: usize = 4 * GELU_CHUNK;

avx2_dispatch! {
    /// GELU of `src` into `dst` (same length). AVX2 chosen at run time.
    fn gelu_slice(src: &[f32], dst: &mut [f32]) => gelu_slice_body
}

#[inline(always)]
fn gelu_slice_body(src: &[f32], dst: &mut [f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = 0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed op (inference) and the padded view of candle ops (used
    /// when gradients are tracked) compute the same attention, and a
    /// sequence's result does not depend on its batch.
    #[test]
    fn packed_attention_equals_the_padded_view() {
        let (heads, d) = (3, 4);
        let h = heads * d;
        let dev = Device::Cpu;
        let attn = Attention {
            qkv: Linear::new(Tensor::zeros((3 * h, h), DType::F32, &dev).unwrap(), None),
            output: Linear::new(Tensor::zeros((h, h), DType::F32, &dev).unwrap(), None),
            layer_norm: LayerNorm::new(
                Tensor::ones(h, DType::F32, &dev).unwrap(),
                Tensor::zeros(h, DType::F32, &dev).unwrap(),
                1e-12,
            ),
            num_heads: heads,
            head_dim: d,
            hidden: h,
        };
        let seqs: [&[u32]; 3] = [&[1, 2, 3], &[4, 5, 6, 7, 8], &[9]];
        let batch = PackedBatch::new(&seqs, &dev).unwrap();
        let total = batch.total_tokens();
        // Deterministic, varied values in [-2, 2).
        let vals: Vec<f32> = (0..total * 3 * h)
            .map(|i| ((i * 7919 % 1000) as f32 / 250.0) - 2.0)
            .collect();
        let qkv = Tensor::from_vec(vals, (total, 3 * h), &dev).unwrap();
        let op = |lens: &[usize], t: &Tensor| {
            t.apply_op1_no_bwd(&PackedAttention {
                lens,
                num_heads: heads,
                head_dim: d,
            })
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
        };
        let packed = op(batch.lens(), &qkv);
        let padded = attn
            .padded_attention(&qkv, &batch)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let worst = packed
            .iter()
            .zip(&padded)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "packed vs padded attention {worst:e}");
        // The second sequence alone gives the same bits as inside the batch.
        let alone = op(&[5], &qkv.narrow(0, 3, 5).unwrap());
        assert_eq!(alone, packed[3 * h..8 * h]);
    }

    fn tiny_model() -> BertModel {
        let h = 16;
        let cfg: Config = serde_json::from_value(serde_json::json!({
            "vocab_size": 20, "hidden_size": h, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 32, "hidden_act": "gelu",
            "max_position_embeddings": 16, "type_vocab_size": 2, "layer_norm_eps": 1e-12
        }))
        .unwrap();
        let mut t = std::collections::HashMap::new();
        let mut seed = 0u32;
        let mut put = |name: String, shape: &[usize]| {
            seed += 1;
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|i| {
                    let x = (i as u32 + 1).wrapping_mul(2_654_435_761u32.wrapping_add(seed * 97));
                    (x % 1000) as f32 / 1666.0 - 0.3
                })
                .collect();
            let mut x = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
            if name.ends_with("LayerNorm.weight") {
                x = (x + 1.0).unwrap();
            }
            t.insert(name, x);
        };
        put("embeddings.word_embeddings.weight".into(), &[20, h]);
        put("embeddings.position_embeddings.weight".into(), &[16, h]);
        put("embeddings.token_type_embeddings.weight".into(), &[2, h]);
        put("embeddings.LayerNorm.weight".into(), &[h]);
        put("embeddings.LayerNorm.bias".into(), &[h]);
        for l in 0..2 {
            let p = format!("encoder.layer.{l}");
            for n in ["query", "key", "value"] {
                put(format!("{p}.attention.self.{n}.weight"), &[h, h]);
                put(format!("{p}.attention.self.{n}.bias"), &[h]);
            }
            put(format!("{p}.attention.output.dense.weight"), &[h, h]);
            put(format!("{p}.attention.output.dense.bias"), &[h]);
            put(format!("{p}.attention.output.LayerNorm.weight"), &[h]);
            put(format!("{p}.attention.output.LayerNorm.bias"), &[h]);
            put(format!("{p}.intermediate.dense.weight"), &[32, h]);
            put(format!("{p}.intermediate.dense.bias"), &[32]);
            put(format!("{p}.output.dense.weight"), &[h, 32]);
            put(format!("{p}.output.dense.bias"), &[h]);
            put(format!("{p}.output.LayerNorm.weight"), &[h]);
            put(format!("{p}.output.LayerNorm.bias"), &[h]);
        }
        BertModel::load(VarBuilder::from_tensors(t, DType::F32, &Device::Cpu), &cfg).unwrap()
    }

    /// `forward_embeddings` on the table's own word vectors is `forward`
    /// (untracked: the packed path), and with tracked word vectors (the
    /// differentiable path) it gives the same states and the true gradient:
    /// the analytic one matches a central finite difference.
    #[test]
    fn forward_embeddings_is_forward_and_differentiable() {
        let model = tiny_model();
        let dev = Device::Cpu;
        let seqs: [&[u32]; 3] = [&[1, 5, 6, 2], &[1, 7, 2], &[1, 8, 9, 10, 2]];
        let batch = PackedBatch::new(&seqs, &dev).unwrap();
        let words = model.word_embeddings(&batch.ids).unwrap();
        let packed = model.forward(&batch).unwrap().to_vec2::<f32>().unwrap();
        let same = model
            .forward_embeddings(&words, &batch)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(packed, same);
        let var = candle_core::Var::from_tensor(&words).unwrap();
        let tracked = model.forward_embeddings(var.as_tensor(), &batch).unwrap();
        assert!(tracked.track_op());
        let worst = tracked
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .flatten()
            .zip(packed.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "tracked vs packed {worst:e}");
        // A loss that mixes every sequence's pooled state nonlinearly.
        let loss_of = |w: &Tensor| -> Tensor {
            let s = model.forward_embeddings(w, &batch).unwrap();
            let pooled = l2_normalize(&model.mean_pool(&s, &batch).unwrap()).unwrap();
            let probe = Tensor::from_vec(
                (0..16)
                    .map(|i| (i as f32 * 0.37).sin())
                    .collect::<Vec<f32>>(),
                (16, 1),
                &dev,
            )
            .unwrap();
            pooled
                .matmul(&probe)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let grads = loss_of(var.as_tensor()).backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .expect("gradient on the word vectors");
        let g: Vec<Vec<f32>> = g.to_vec2().unwrap();
        let base: Vec<Vec<f32>> = words.to_vec2().unwrap();
        for (row, col) in [(1usize, 3usize), (5, 0), (9, 11)] {
            let at = |eps: f32| -> f32 {
                let mut w = base.clone();
                w[row][col] += eps;
                loss_of(&Tensor::new(w, &dev).unwrap()).to_scalar().unwrap()
            };
            let eps = 1e-2;
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            let analytic = g[row][col];
            assert!(
                (numeric - analytic).abs() <= 0.05 * analytic.abs().max(1e-2),
                "word ({row}, {col}): analytic {analytic} vs numeric {numeric}"
            );
        }
        // Wrong widths are refused.
        assert!(
            model
                .forward_embeddings(&words.narrow(0, 0, 5).unwrap(), &batch)
                .is_err()
        );
    }

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
