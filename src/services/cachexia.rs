//! Placeholder until the clinical module lands.
