//! TODO

pub mod vit;
