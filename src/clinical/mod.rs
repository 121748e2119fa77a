//! Placeholder until the clinical module lands.
use serde::Deserialize;
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Cutoffs {}
