//! Small sampling helpers over one seeded ChaCha stream.
//!
//! Every draw goes through these functions so the order of draws, and with it
//! the output for a seed, is easy to follow: a change in the order of calls
//! changes the cohort (bump `GENERATOR_VERSION` when that happens).

use rand::Rng;
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, StandardNormal};

pub(crate) type SynthRng = ChaCha12Rng;

pub(crate) fn normal(rng: &mut SynthRng, mean: f64, sd: f64) -> f64 {
    let z: f64 = StandardNormal.sample(rng);
    mean + sd * z
}

/// Normal clamped to `[lo, hi]` (clamping, not rejection: one draw per call).
pub(crate) fn normal_clamped(rng: &mut SynthRng, mean: f64, sd: f64, lo: f64, hi: f64) -> f64 {
    normal(rng, mean, sd).clamp(lo, hi)
}

pub(crate) fn uniform(rng: &mut SynthRng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

pub(crate) fn bernoulli(rng: &mut SynthRng, p: f64) -> bool {
    rng.random::<f64>() < p.clamp(0.0, 1.0)
}

/// Integer in `lo..=hi`.
pub(crate) fn int(rng: &mut SynthRng, lo: i64, hi: i64) -> i64 {
    rng.random_range(lo..=hi)
}

/// One of `items`, by weight (weights need not sum to 1).
pub(crate) fn weighted<T: Copy>(rng: &mut SynthRng, items: &[(T, f64)]) -> T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for (item, w) in items {
        if x < *w {
            return *item;
        }
        x -= w;
    }
    items[items.len() - 1].0
}

/// One of `items`, uniformly.
pub(crate) fn pick<'a, T>(rng: &mut SynthRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Poisson by inversion (small means only: visit counts).
pub(crate) fn poisson(rng: &mut SynthRng, mean: f64) -> u32 {
    let l = (-mean).exp();
    let mut k = 0;
    let mut p = rng.random::<f64>();
    while p > l && k < 100 {
        k += 1;
        p *= rng.random::<f64>();
    }
    k
}

pub(crate) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

pub(crate) fn softplus(x: f64) -> f64 {
    if x > 30.0 { x } else { x.exp().ln_1p() }
}

/// Round to `decimals` places (values are written as recorded by an EHR).
pub(crate) fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// A deterministic version-4 UUID from the stream.
pub(crate) fn uuid(rng: &mut SynthRng) -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}
