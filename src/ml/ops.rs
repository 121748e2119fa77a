//! Layer ops shared by our candle models that pick their kernel by whether
//! a gradient is tracked.
//!
//! candle-nn's fused CPU kernels for LayerNorm and the last-axis softmax are
//! registered with `apply_op*_no_bwd`: a tracked input silently loses its
//! gradient there (nothing upstream of the op learns, and no error is
//! raised). While training (weights are `Var`s, so every activation is
//! tracked) the composed form of the same formula runs instead; untracked
//! inference keeps the fused kernel. Likewise the exact GELU: candle's
//! `gelu_erf` is differentiable but evaluates `erf` per element through libm,
//! so inference uses the vectorising rational-erf op of [`super::bert`].

use candle_core::{D, Result, Tensor};
use candle_nn::{LayerNorm, Module};

/// LayerNorm (affine, mean removed) that keeps a tracked gradient.
pub fn layer_norm(ln: &LayerNorm, xs: &Tensor) -> Result<Tensor> {
    match ln.bias() {
        Some(bias) if xs.track_op() => {
            candle_nn::ops::layer_norm_slow(xs, ln.weight(), bias, ln.eps() as f32)
        }
        _ => ln.forward(xs),
    }
}

/// Softmax over the last axis that keeps a tracked gradient.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if xs.track_op() {
        candle_nn::ops::softmax(xs, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(xs)
    }
}

/// The exact GELU: candle's differentiable `gelu_erf` when a gradient is
/// tracked, the rational-erf op ([`super::bert::gelu_erf`]) otherwise.
pub fn gelu_erf(xs: &Tensor) -> Result<Tensor> {
    if xs.track_op() {
        xs.gelu_erf()
    } else {
        super::bert::gelu_erf(xs)
    }
}

/// Largest absolute difference between two tensors of one shape (tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_dtype(candle_core::DType::F32))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("tensors of one shape")
}

/// Detached copies of a `VarMap`'s variables, by name: what a model loaded
/// from safetensors holds (tests build frozen twins of trained layers).
#[cfg(test)]
pub(crate) fn frozen_tensors(
    varmap: &candle_nn::VarMap,
) -> std::collections::HashMap<String, Tensor> {
    varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn ln(dev: &Device) -> LayerNorm {
        let w = Tensor::new(&[1.5f32, 0.5, -1.0, 2.0], dev).unwrap();
        let b = Tensor::new(&[0.1f32, -0.2, 0.3, 0.0], dev).unwrap();
        LayerNorm::new(w, b, 1e-5)
    }

    /// Tracked and untracked paths compute the same values, and the tracked
    /// path carries a gradient back to its input (the fused kernels do not).
    #[test]
    fn tracked_paths_equal_fused_ones_and_carry_gradients() {
        let dev = Device::Cpu;
        let data = Tensor::new(&[[0.3f32, -1.2, 2.5, 0.7], [1.0, 0.0, -0.5, 3.0]], &dev).unwrap();
        let var = Var::from_tensor(&data).unwrap();
        let ln = ln(&dev);
        for f in [
            (|l: &LayerNorm, x: &Tensor| layer_norm(l, x))
                as fn(&LayerNorm, &Tensor) -> Result<Tensor>,
            |_, x| softmax_last_dim(x),
            |_, x| gelu_erf(x),
        ] {
            let fused = f(&ln, &data).unwrap();
            let tracked = f(&ln, var.as_tensor()).unwrap();
            assert!(tracked.track_op());
            let diff = max_abs_diff(&fused, &tracked);
            assert!(diff < 1e-5, "paths differ by {diff}");
            // A non-constant weighting: the sum of a softmax or of a
            // normalised row would have a zero gradient by construction.
            let w = Tensor::new(&[[1f32, 2., 3., 4.], [-1., 0.5, 2., -3.]], &dev).unwrap();
            let loss = (tracked * w).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let g = grads
                .get(var.as_tensor())
                .expect("gradient reaches the input");
            let norm = g
                .to_dtype(DType::F32)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap();
            assert!(norm.to_scalar::<f32>().unwrap() > 1e-3);
        }
    }
}
