//! Neighbourhood grey tone difference matrix features (IBSI chapter 3.10), as
//! pyradiomics' `ngtdm.py` computes them. The matrix comes from the shared
//! neighbourhood pass in `neighbourhood.rs`.
//!
//! pyradiomics convention (docs/radiomics.md): a voxel with no ROI neighbour
//! still counts in `n_i` (with a zero difference); IBSI leaves it out.

/// Features from per-level voxel counts `n` and summed differences `s`
/// (both indexed by grey level, index 0 unused).
pub fn features(n: &[u64], s: &[f64]) -> Vec<(&'static str, f64)> {
    // Only grey levels present (n_i > 0) take part.
    let levels: Vec<usize> = (1..n.len()).filter(|&l| n[l] > 0).collect();
    let nvp: f64 = levels.iter().map(|&l| n[l] as f64).sum();
    let p: Vec<f64> = levels.iter().map(|&l| n[l] as f64 / nvp).collect();
    let si: Vec<f64> = levels.iter().map(|&l| s[l]).collect();
    let g: Vec<f64> = levels.iter().map(|&l| l as f64).collect();
    let ngp = levels.len() as f64;
    let sum_ps: f64 = p.iter().zip(&si).map(|(a, b)| a * b).sum();
    let sum_s: f64 = si.iter().sum();

    let coarseness = if sum_ps == 0.0 { 1e6 } else { 1.0 / sum_ps };
    let (mut c2, mut busy_div, mut complexity, mut strength) = (0.0, 0.0, 0.0, 0.0);
    for a in 0..levels.len() {
        for b in 0..levels.len() {
            let d = g[a] - g[b];
            c2 += p[a] * p[b] * d * d;
            busy_div += (g[a] * p[a] - g[b] * p[b]).abs();
            complexity += d.abs() * (p[a] * si[a] + p[b] * si[b]) / (p[a] + p[b]);
            strength += (p[a] + p[b]) * d * d;
        }
    }
    let div = ngp * (ngp - 1.0);
    let contrast = if div == 0.0 {
        0.0
    } else {
        c2 * sum_s / nvp / div
    };
    let busyness = if busy_div == 0.0 {
        0.0
    } else {
        sum_ps / busy_div
    };
    let strength = if sum_s == 0.0 { 0.0 } else { strength / sum_s };
    vec![
        ("Busyness", busyness),           // IBSI NQ30
        ("Coarseness", coarseness),       // IBSI QCDE
        ("Complexity", complexity / nvp), // IBSI HDEZ
        ("Contrast", contrast),           // IBSI 65HE
        ("Strength", strength),           // IBSI 1X9X
    ]
}
