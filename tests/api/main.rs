//! Integration tests (one binary: `cargo test --test api`).
mod audit_api;
mod auth;
mod cachexia_model;
mod feedback;
mod fhir_double;
mod helpers;
mod hooks;
mod imaging_jobs;
mod jobs;
mod note_embeddings;
mod outputs;
mod persistence;
mod review_browser;
mod robustness;
mod store_story;
mod support;
