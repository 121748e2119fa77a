//! Pieces every ensemble trainer here shares (`ml::cachexia::train`,
//! `ml::nodule::train`): member seeds, best-epoch snapshots and an AdamW whose
//! parameter order does not depend on a hash map's iteration order, so the
//! same seed writes the same bytes.

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};

/// SplitMix64: independent member seeds from one run seed.
pub fn member_seed(seed: u64, member: usize) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(member as u64 + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A copy of every variable (the best epoch so far).
pub fn snapshot(varmap: &VarMap) -> candle_core::Result<HashMap<String, Tensor>> {
    let data = varmap.data().lock().expect("varmap lock");
    data.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect()
}

/// Puts a [`snapshot`] back.
pub fn restore(varmap: &VarMap, snap: &HashMap<String, Tensor>) -> candle_core::Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    for (k, v) in data.iter() {
        if let Some(t) = snap.get(k) {
            v.set(t)?;
        }
    }
    Ok(())
}

/// AdamW over every variable of `varmap`, in name order (`VarMap` is a hash
/// map: its order changes between runs, and AdamW's updates are per
/// variable, so the order only matters for reproducible bytes).
pub fn adamw_in_name_order(
    varmap: &VarMap,
    learning_rate: f64,
    weight_decay: f64,
) -> candle_core::Result<AdamW> {
    let mut vars: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    AdamW::new(
        vars.into_iter().map(|(_, v)| v).collect(),
        ParamsAdamW {
            lr: learning_rate,
            weight_decay,
            ..Default::default()
        },
    )
}
