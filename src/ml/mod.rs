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
