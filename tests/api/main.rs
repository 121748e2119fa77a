//! Integration tests (one binary: `cargo test --test api`).
mod jobs;
mod store_story;
mod support;
mod auth;
mod feedback;
mod fhir_double;
mod helpers;
mod hooks;
mod persistence;
