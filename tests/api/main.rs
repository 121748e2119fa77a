//! Integration tests (one binary: `cargo test --test api`).
mod jobs;
mod store_story;
mod support;
