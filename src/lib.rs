//! oncohooks: a FHIR-native CDS Hooks 2.0 server for oncology decision support.
//!
//! Data flows one way (see `docs/architecture.md`):
//! `http` → `auth` → `services` → (`fhir`, `imaging`, `clinical`) → `features` → `ml` → `cds` → `store`.
//! Nothing below `http` knows about HTTP.
// `deny`, not `forbid`: two imaging modules need `unsafe` and say why
// (`imaging::inflate`: libdeflate's C entry point and the inflate hot loop;
// `imaging::pages`: madvise). Everything else stays safe Rust.
#![deny(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod cds;
pub mod cli;
pub mod clinical;
pub mod config;
pub mod features;
pub mod fhir;
pub mod http;
pub mod imaging;
pub mod ml;
pub mod nodule;
pub mod radiomics;
pub mod review;
pub mod services;
pub mod startup;
pub mod store;
pub mod synth;
pub mod telemetry;
pub mod writeback;

pub use startup::Application;
