//! Machine-learning models (candle), one folder or file per model, each
//! shaped like candle-transformers: `Config`, `load(vb, &cfg)`, `forward`.

pub mod cachexia;
