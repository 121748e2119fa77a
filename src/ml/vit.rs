//! A Vision Transformer with the architecture of Apple's AIMv2 vision
//! encoder (Fini et al., "Multimodal Autoregressive Pre-training of Large
//! Vision Encoders", arXiv 2411.14402; the `apple/aimv2-*-patch14-*`
//! checkpoints), so that real AIMv2 weights in safetensors load by path.
//!
//! ```text
//! pixels (B, C, H, W)
//!   → preprocessor.patchifier.proj   Conv2d(C, D, kernel = stride = patch)   → (B, N, D)
//!   → preprocessor.patchifier.norm   RMSNorm
//!   + preprocessor.pos_embed         learned absolute, (1, N_max, D)
//!   → trunk.blocks.{0..L}            x + attn(norm_1(x));  x + mlp(norm_2(x))
//!        attn: qkv Linear(D, 3D) → softmax(q kᵀ / √d_head) v → proj Linear(D, D)
//!        mlp (SwiGLU): fc2( silu(fc1 x) ⊙ fc3 x )
//!   → trunk.post_trunk_norm          RMSNorm
//!   → mean over the N tokens         (B, D)
//! ```
//!
//! Tensor names are those of the AIMv2 checkpoints (`preprocessor.patchifier.proj.weight`,
//! `trunk.blocks.N.attn.qkv.weight`, `trunk.blocks.N.mlp.fc1/fc2/fc3.weight`,
//! `trunk.blocks.N.norm_1/norm_2.weight`, `trunk.post_trunk_norm.weight`).
//! The published sizes have no bias in qkv, proj or the MLP (`qkv_bias =
//! use_bias = false`), a biased patch projection, and RMSNorm ε = 1e-5.
//! AIMv2's attention-pooling classification head is not part of the
//! encoder checkpoints and is not built: the embedding is the mean-pooled
//! trunk output, as AutoRad-Lung uses it.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, RmsNorm, VarBuilder, linear_b};
use serde::{Deserialize, Serialize};

/// Encoder configuration; field names follow the AIMv2 `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub qkv_bias: bool,
    #[serde(default)]
    pub use_bias: bool,
}

fn default_channels() -> usize {
    3
}

fn default_eps() -> f64 {
    1e-5
}

impl Config {
    fn aimv2(hidden: usize, mlp: usize, heads: usize, image_size: usize) -> Self {
        Self {
            hidden_size: hidden,
            intermediate_size: mlp,
            num_hidden_layers: 24,
            num_attention_heads: heads,
            num_channels: 3,
            image_size,
            patch_size: 14,
            rms_norm_eps: 1e-5,
            qkv_bias: false,
            use_bias: false,
        }
    }

    /// `apple/aimv2-large-patch14-{224,336,448}` (~300M parameters).
    pub fn aimv2_large_patch14(image_size: usize) -> Self {
        Self::aimv2(1024, 2816, 8, image_size)
    }

    /// `apple/aimv2-huge-patch14-*` (~600M).
    pub fn aimv2_huge_patch14(image_size: usize) -> Self {
        Self::aimv2(1536, 4096, 12, image_size)
    }

    /// `apple/aimv2-1B-patch14-*`.
    pub fn aimv2_1b_patch14(image_size: usize) -> Self {
        Self::aimv2(2048, 5632, 16, image_size)
    }

    /// `apple/aimv2-3B-patch14-*` (~2.7B).
    pub fn aimv2_3b_patch14(image_size: usize) -> Self {
        Self::aimv2(3072, 8192, 24, image_size)
    }

    /// The small encoder trained here on 64 × 64 nodule views (3 channels:
    /// axial, coronal, sagittal planes), patch 8 → 64 tokens. Same blocks,
    /// same tensor names, ~1.9M parameters, trainable on a CPU.
    pub fn nodule_small() -> Self {
        Self {
            hidden_size: 192,
            intermediate_size: 512,
            num_hidden_layers: 4,
            num_attention_heads: 3,
            num_channels: 3,
            image_size: 64,
            patch_size: 8,
            rms_norm_eps: 1e-5,
            qkv_bias: false,
            use_bias: false,
        }
    }

    /// The encoder the shipped nodule model trains (AutoRad-Lung's AIMv2
    /// scaled down to what trains on two CPU cores within the 30-minute
    /// budget): 32 × 32 views (1.5 mm voxels: 48 mm of context, room for a
    /// 30 mm nodule), patch 8 → 16 tokens, width 128, 2 blocks, 4 heads,
    /// ~0.3M parameters; same blocks and tensor names as AIMv2.
    pub fn nodule_tiny() -> Self {
        Self {
            hidden_size: 128,
            intermediate_size: 256,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_channels: 3,
            image_size: 32,
            patch_size: 8,
            rms_norm_eps: 1e-5,
            qkv_bias: false,
            use_bias: false,
        }
    }

    /// A preset by name (`aimv2-large-patch14-224`, …, `nodule-small`,
    /// `nodule-tiny`).
    pub fn preset(name: &str) -> Option<Self> {
        let (base, size) = match name.rsplit_once('-') {
            Some((b, s)) if b.ends_with("patch14") => (b, s.parse().ok()?),
            _ => (name, 224),
        };
        Some(match base {
            "aimv2-large-patch14" => Self::aimv2_large_patch14(size),
            "aimv2-huge-patch14" => Self::aimv2_huge_patch14(size),
            "aimv2-1B-patch14" => Self::aimv2_1b_patch14(size),
            "aimv2-3B-patch14" => Self::aimv2_3b_patch14(size),
            "nodule-small" => Self::nodule_small(),
            "nodule-tiny" => Self::nodule_tiny(),
            _ => return None,
        })
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the shapes fit together before any weight is read.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        Ok(())
    }
}

/// RMSNorm that keeps a tracked gradient: candle-nn's fused kernel has no
/// backward pass (`apply_op2_no_bwd`), so while training (weights are
/// variables, every activation is tracked) the composed, differentiable
/// form runs; inference keeps the fused kernel. Same formula either way.
fn rms(norm: &RmsNorm, x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        norm.forward_diff(x)
    } else {
        norm.forward(x)
    }
}

/// `preprocessor`: patch embedding, its RMSNorm and the absolute positions.
#[derive(Debug, Clone)]
struct Preprocessor {
    proj: Conv2d,
    norm: RmsNorm,
    pos_embed: Tensor,
}

impl Preprocessor {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let pvb = vb.pp("patchifier");
        let conv_cfg = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let proj = candle_nn::conv2d(
            cfg.num_channels,
            cfg.hidden_size,
            cfg.patch_size,
            conv_cfg,
            pvb.pp("proj"),
        )?;
        let norm = candle_nn::rms_norm(cfg.hidden_size, cfg.rms_norm_eps, pvb.pp("norm"))?;
        let pos_embed = vb.get((1, cfg.num_patches(), cfg.hidden_size), "pos_embed")?;
        Ok(Self {
            proj,
            norm,
            pos_embed,
        })
    }

    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        // (B, D, h, w) → (B, N, D)
        let x = self
            .proj
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let x = rms(&self.norm, &x)?;
        let n = x.dim(1)?;
        if n > self.pos_embed.dim(1)? {
            candle_core::bail!(
                "the image gives {n} patches, the position table holds {}",
                self.pos_embed.dim(1)?
            );
        }
        x.broadcast_add(&self.pos_embed.narrow(1, 0, n)?)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            qkv: linear_b(d, 3 * d, cfg.qkv_bias, vb.pp("qkv"))?,
            proj: linear_b(d, d, cfg.use_bias, vb.pp("proj"))?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        // (B, N, 3, H, d_h) → (3, B, H, N, d_h), as the reference reshapes.
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, n, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let att = (q.matmul(&k.t()?)? * scale)?;
        // The fused softmax has no backward pass; `ops` picks the composed
        // one when a gradient is tracked.
        let att = super::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, n, d))?;
        self.proj.forward(&y)
    }
}

/// SwiGLU: `fc2(silu(fc1 x) * fc3 x)`.
#[derive(Debug, Clone)]
struct SwiGlu {
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl SwiGlu {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let (d, h, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.use_bias);
        Ok(Self {
            fc1: linear_b(d, h, bias, vb.pp("fc1"))?,
            fc2: linear_b(h, d, bias, vb.pp("fc2"))?,
            fc3: linear_b(d, h, bias, vb.pp("fc3"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.fc1.forward(x)?)?;
        self.fc2.forward(&(gate * self.fc3.forward(x)?)?)
    }
}

/// One pre-norm block.
#[derive(Debug, Clone)]
struct Block {
    norm_1: RmsNorm,
    attn: Attention,
    norm_2: RmsNorm,
    mlp: SwiGlu,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        Ok(Self {
            norm_1: candle_nn::rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm_1"))?,
            attn: Attention::load(vb.pp("attn"), cfg)?,
            norm_2: candle_nn::rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm_2"))?,
            mlp: SwiGlu::load(vb.pp("mlp"), cfg)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.attn.forward(&rms(&self.norm_1, x)?)?)?;
        &x + self.mlp.forward(&rms(&self.norm_2, &x)?)?
    }
}

/// The AIMv2-architecture vision encoder.
#[derive(Debug, Clone)]
pub struct VisionTransformer {
    preprocessor: Preprocessor,
    blocks: Vec<Block>,
    post_trunk_norm: RmsNorm,
    cfg: Config,
}

impl VisionTransformer {
    /// Builds the encoder from `vb` at the checkpoint root (tensors
    /// `preprocessor.*` and `trunk.*`).
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let preprocessor = Preprocessor::load(vb.pp("preprocessor"), cfg)?;
        let tvb = vb.pp("trunk");
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(tvb.pp("blocks").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let post_trunk_norm =
            candle_nn::rms_norm(cfg.hidden_size, cfg.rms_norm_eps, tvb.pp("post_trunk_norm"))?;
        Ok(Self {
            preprocessor,
            blocks,
            post_trunk_norm,
            cfg: cfg.clone(),
        })
    }

    /// Loads a safetensors checkpoint by path (read into memory: the crate
    /// forbids `unsafe`, which memory-mapping needs).
    pub fn from_safetensors(path: &Path, cfg: &Config, device: &Device) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(path, device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::load(vb, cfg)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Token features after the post-trunk norm, `(B, N, D)`.
    pub fn forward_tokens(&self, pixels: &Tensor) -> Result<Tensor> {
        let mut x = self.preprocessor.forward(pixels)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        rms(&self.post_trunk_norm, &x)
    }

    /// Mean-pooled image embedding, `(B, D)`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        self.forward_tokens(pixels)?.mean(1)
    }
}

impl Module for VisionTransformer {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        VisionTransformer::forward(self, xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Config {
        Config {
            hidden_size: 16,
            intermediate_size: 24,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_channels: 3,
            image_size: 28,
            patch_size: 14,
            rms_norm_eps: 1e-5,
            qkv_bias: false,
            use_bias: false,
        }
    }

    /// Deterministic pseudo-random tensor (no RNG state shared with candle).
    fn det(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.4
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Every tensor of an AIMv2 checkpoint, by its AIMv2 name.
    fn checkpoint(cfg: &Config) -> HashMap<String, Tensor> {
        let (d, h, c, p) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_channels,
            cfg.patch_size,
        );
        let mut t = HashMap::new();
        let mut seed = 0;
        let mut put = |name: String, shape: &[usize]| {
            seed += 1;
            let v = if name.ends_with("norm.weight") || name.contains("norm_") {
                (det(shape, seed) + 1.0).unwrap()
            } else {
                det(shape, seed)
            };
            t.insert(name, v);
        };
        put("preprocessor.patchifier.proj.weight".into(), &[d, c, p, p]);
        put("preprocessor.patchifier.proj.bias".into(), &[d]);
        put("preprocessor.patchifier.norm.weight".into(), &[d]);
        put("preprocessor.pos_embed".into(), &[1, cfg.num_patches(), d]);
        for i in 0..cfg.num_hidden_layers {
            let b = format!("trunk.blocks.{i}");
            put(format!("{b}.attn.qkv.weight"), &[3 * d, d]);
            put(format!("{b}.attn.proj.weight"), &[d, d]);
            put(format!("{b}.norm_1.weight"), &[d]);
            put(format!("{b}.norm_2.weight"), &[d]);
            put(format!("{b}.mlp.fc1.weight"), &[h, d]);
            put(format!("{b}.mlp.fc2.weight"), &[d, h]);
            put(format!("{b}.mlp.fc3.weight"), &[h, d]);
        }
        put("trunk.post_trunk_norm.weight".into(), &[d]);
        t
    }

    fn write(tensors: &HashMap<String, Tensor>, dir: &Path) -> std::path::PathBuf {
        let path = dir.join("model.safetensors");
        candle_core::safetensors::save(tensors, &path).unwrap();
        path
    }

    #[test]
    fn presets_have_the_published_dimensions() {
        let l = Config::preset("aimv2-large-patch14-224").unwrap();
        assert_eq!(
            (l.hidden_size, l.intermediate_size, l.num_attention_heads),
            (1024, 2816, 8)
        );
        let h = Config::preset("aimv2-huge-patch14-448").unwrap();
        assert_eq!(
            (
                h.hidden_size,
                h.intermediate_size,
                h.num_attention_heads,
                h.image_size
            ),
            (1536, 4096, 12, 448)
        );
        let b1 = Config::preset("aimv2-1B-patch14-336").unwrap();
        assert_eq!(
            (b1.hidden_size, b1.intermediate_size, b1.num_attention_heads),
            (2048, 5632, 16)
        );
        let b3 = Config::preset("aimv2-3B-patch14-224").unwrap();
        assert_eq!(
            (b3.hidden_size, b3.intermediate_size, b3.num_attention_heads),
            (3072, 8192, 24)
        );
        assert!(
            [l, h, b1, b3]
                .iter()
                .all(|c| c.num_hidden_layers == 24 && c.patch_size == 14)
        );
        assert_eq!(Config::preset("nodule-small"), Some(Config::nodule_small()));
        assert_eq!(Config::preset("aimv2-giant"), None);
        assert_eq!(Config::nodule_small().num_patches(), 64);
        assert_eq!(Config::preset("nodule-tiny"), Some(Config::nodule_tiny()));
        assert_eq!(Config::nodule_tiny().num_patches(), 16);
        assert!(Config::nodule_tiny().validate().is_ok());
    }

    #[test]
    fn a_checkpoint_with_aimv2_names_loads_by_path_and_runs() {
        let cfg = tiny();
        let dir = tempfile::tempdir().unwrap();
        let path = write(&checkpoint(&cfg), dir.path());
        let model = VisionTransformer::from_safetensors(&path, &cfg, &Device::Cpu).unwrap();
        let pixels = det(&[2, 3, 28, 28], 99);
        let out = model.forward(&pixels).unwrap();
        assert_eq!(out.dims(), &[2, 16]);
        assert_eq!(model.forward_tokens(&pixels).unwrap().dims(), &[2, 4, 16]);
        let v: Vec<Vec<f32>> = out.to_vec2().unwrap();
        assert!(v.iter().flatten().all(|x| x.is_finite()));
        // Deterministic: a second load and run give the same numbers.
        let again = VisionTransformer::from_safetensors(&path, &cfg, &Device::Cpu)
            .unwrap()
            .forward(&pixels)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(v, again);
        // Batched equals single.
        let single = model
            .forward(&pixels.narrow(0, 1, 1).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (a, b) in single[0].iter().zip(&v[1]) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn every_named_weight_is_used() {
        let cfg = tiny();
        let pixels = det(&[1, 3, 28, 28], 7);
        let base = checkpoint(&cfg);
        let dir = tempfile::tempdir().unwrap();
        let run = |t: &HashMap<String, Tensor>| -> Vec<f32> {
            let path = write(t, dir.path());
            VisionTransformer::from_safetensors(&path, &cfg, &Device::Cpu)
                .unwrap()
                .forward(&pixels)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let reference = run(&base);
        for name in [
            "preprocessor.patchifier.proj.weight",
            "preprocessor.pos_embed",
            "trunk.blocks.0.attn.qkv.weight",
            "trunk.blocks.1.attn.proj.weight",
            "trunk.blocks.0.mlp.fc1.weight",
            "trunk.blocks.1.mlp.fc2.weight",
            "trunk.blocks.1.mlp.fc3.weight",
            "trunk.blocks.0.norm_2.weight",
        ] {
            // Permute: reverse the first axis (rows of a Linear's weight).
            let mut t = base.clone();
            let w = &t[name];
            let axis = if name.ends_with("pos_embed") { 1 } else { 0 };
            let n = w.dim(axis).unwrap();
            let idx =
                Tensor::from_vec((0..n as u32).rev().collect::<Vec<_>>(), n, &Device::Cpu).unwrap();
            let permuted = w.index_select(&idx, axis).unwrap();
            t.insert(name.to_string(), permuted);
            let changed = run(&t);
            let diff: f32 = changed
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .sum();
            assert!(diff > 1e-4, "permuting {name} did not change the output");
        }
    }

    /// The issue's checkpoint test, in full: a model trained here (weights
    /// as variables, the differentiable path) and written in the AIMv2
    /// layout loads back (plain tensors, the fused inference path) to the
    /// same output, and a run repeats to the bit.
    #[test]
    fn a_written_checkpoint_reloads_to_the_output_of_the_weights_it_came_from() {
        let cfg = tiny();
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let trained = VisionTransformer::load(vb, &cfg).unwrap();
        // Give every variable deterministic, non-default values.
        {
            let data = varmap.data().lock().unwrap();
            let mut names: Vec<&String> = data.keys().collect();
            names.sort();
            for (i, name) in names.into_iter().enumerate() {
                let var = &data[name];
                let mut v = det(var.dims(), 1000 + i as u64);
                if name.contains("norm") {
                    v = (v + 1.0).unwrap();
                }
                var.set(&v).unwrap();
            }
        }
        let pixels = det(&[3, 3, 28, 28], 5);
        let in_memory = trained.forward(&pixels).unwrap();
        assert!(in_memory.track_op(), "variables take the tracked path");
        let in_memory: Vec<Vec<f32>> = in_memory.to_vec2().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        varmap.save(&path).unwrap();
        let names: Vec<String> = candle_core::safetensors::load(&path, &Device::Cpu)
            .unwrap()
            .into_keys()
            .collect();
        assert!(names.iter().any(|n| n == "trunk.blocks.1.mlp.fc3.weight"));
        let loaded = VisionTransformer::from_safetensors(&path, &cfg, &Device::Cpu).unwrap();
        let run = || -> Vec<Vec<f32>> { loaded.forward(&pixels).unwrap().to_vec2().unwrap() };
        let first = run();
        assert_eq!(first, run(), "same input twice, same bits");
        let worst = first
            .iter()
            .flatten()
            .zip(in_memory.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Fused vs composed norm/softmax: float rounding only.
        assert!(worst < 1e-5, "loaded vs in-memory {worst:e}");
    }

    /// While training, the gradient reaches the first layer (the patch
    /// projection and the positions): no op on the way drops it.
    #[test]
    fn the_gradient_reaches_the_patch_projection() {
        let cfg = tiny();
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = VisionTransformer::load(vb, &cfg).unwrap();
        let loss = model
            .forward(&det(&[2, 3, 28, 28], 3))
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        for name in [
            "preprocessor.patchifier.proj.weight",
            "preprocessor.pos_embed",
            "trunk.blocks.0.attn.qkv.weight",
            "trunk.blocks.0.norm_1.weight",
        ] {
            let g = grads
                .get(data[name].as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let mag: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(mag > 0.0, "zero gradient for {name}");
        }
    }

    #[test]
    fn a_missing_tensor_is_named_in_the_error() {
        let cfg = tiny();
        let mut t = checkpoint(&cfg);
        t.remove("trunk.blocks.1.mlp.fc3.weight");
        let vb = VarBuilder::from_tensors(t, DType::F32, &Device::Cpu);
        let err = VisionTransformer::load(vb, &cfg).unwrap_err().to_string();
        assert!(err.contains("trunk.blocks.1.mlp.fc3.weight"), "{err}");
        let bad = Config {
            image_size: 30,
            ..tiny()
        };
        assert!(bad.validate().is_err());
    }
}
