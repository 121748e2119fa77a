//! Shared helpers for the integration tests.
#![allow(dead_code)]

pub mod db;
pub mod orthanc;
pub mod records;
