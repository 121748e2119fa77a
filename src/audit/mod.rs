//! The informatics side of the audit store: aggregates over stored
//! predictions (volume, review and override rates, risk over time,
//! calibration against recorded outcomes), the export formats, and the
//! OpenAPI document of `/audit`. Pure: rows in, values out; the HTTP layer
//! streams rows from the store into these.

pub mod aggregates;
pub mod export;
pub mod openapi;

pub use aggregates::Aggregator;
