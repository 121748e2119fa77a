//! Errors of the ML layer.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model. Messages name
/// files and shapes, never input text (clinical notes are patient data).
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// A model file is missing or unreadable. For the text encoder the fix
    /// is `scripts/setup-models.sh`.
    #[error("cannot read model file {path}{hint}")]
    ModelFile {
        path: PathBuf,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("model file {path} is not valid: {reason}")]
    InvalidModelFile { path: PathBuf, reason: String },

    #[error("tokenizer {path} failed to load")]
    TokenizerLoad {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("tokenizing text failed")]
    Tokenize(#[source] Box<dyn std::error::Error + Send + Sync>),

    #[error("could not start the inference thread pool")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),

    /// A tensor operation failed (a shape mismatch, a missing weight).
    #[error("tensor computation failed")]
    Candle(#[from] candle_core::Error),
}
