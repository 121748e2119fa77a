//! Per-service model inputs: every field optional, each with its presence,
//! unit, date and source, under a versioned schema. The feature list is what
//! `score --explain` prints and what is stored with every prediction.

pub mod cachexia;
