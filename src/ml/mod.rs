//! Models run in-process with candle (CPU). Model files are shaped like
//! candle-transformers (`Config`, `load(vb, &cfg)`, `forward`).
//!
//! - [`text_encoder`]: all-MiniLM-L6-v2 sentence embeddings of clinical
//!   notes (chunked, pooled per patient), weights unpacked by
//!   `scripts/setup-models.sh` into `models/` — see `docs/models.md`.
//! - [`bert`]: the BERT encoder it runs, on packed (unpadded) batches.
//! - [`cachexia`]: the multimodal cachexia fusion model (ensemble,
//!   temperature scaling, conformal review gate).
//! - [`vit`]: the AIMv2-architecture vision encoder for nodule CT patches.
//! - [`nodule`]: the lung nodule model contract, training and evaluation.
//! - [`metrics`]: calibration and ROC helpers shared by the evaluations.
//! - [`ops`]: LayerNorm, softmax and GELU that keep a tracked gradient
//!   (candle-nn's fused kernels have no backward pass).
//! - [`training`]: member seeds, snapshots and AdamW shared by the trainers.
//!
//! Inference is blocking CPU work: callers run it in
//! `tokio::task::spawn_blocking` or a dedicated thread, never on an async
//! worker.

/// Defines `fn $name(args) -> R` that runs `$body(args)` compiled with AVX2
/// when the CPU has it, else as compiled for the baseline (SSE2): the same
/// operations 8 lanes wide instead of 4, so both give the same numbers.
/// `$body` is `#[inline(always)]` so that each entry point gets its own
/// copy (the pattern `imaging::inflate` uses for BMI2).
macro_rules! avx2_dispatch {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                // SAFETY: the CPU has AVX2 (checked just above).
                #[allow(unsafe_code)] // calling a `target_feature` function
                return unsafe { avx2($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}

pub mod bert;
pub mod cachexia;
mod error;
pub mod metrics;
pub mod nodule;
pub mod ops;
pub mod text_encoder;
pub mod training;
pub mod vit;

pub use error::MlError;
pub use text_encoder::{
    TextEncoder, TextEncoderOptions, chunk_windows, note_digest, pool_embeddings,
};
