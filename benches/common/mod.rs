//! Helpers shared by the custom-harness benches (`mod common;` in each).
//! A folder, not `benches/common.rs`, so that cargo does not take it for a
//! bench target of its own.

use std::time::Duration;

/// The median of timed runs (the upper one of an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
