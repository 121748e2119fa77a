//! The multimodal cachexia model (issue 4, seed paper §1, arXiv 2503.06797):
//! a missing-modality-native fusion transformer ([`model`]), its inputs from
//! the clinical timeline ([`inputs`]), the deep ensemble with temperature
//! scaling and conformal expert-review gate ([`ensemble`]), training
//! ([`train`](mod@train)) and evaluation ([`evaluate`]) on a labelled cohort
//! ([`dataset`]).

pub mod commands;
pub mod dataset;
pub mod ensemble;
pub mod evaluate;
pub mod inputs;
pub mod model;
pub mod plot;
pub mod train;

pub use ensemble::{CachexiaEnsemble, ModelError, ModelMeta, ModelPrediction};
pub use inputs::{NotesEmbedder, RawInputs};
pub use model::{CachexiaFusion, Config};
pub use train::{TrainOptions, train};

#[cfg(test)]
mod tests;
