//! First-order (intensity histogram and statistics) features, IBSI chapter 3.3
//! and 3.4, as pyradiomics' `firstorder.py` computes them.
//!
//! pyradiomics conventions kept here (documented in docs/radiomics.md):
//! - Energy, Total Energy and RMS use `x + voxelArrayShift` (default shift 0);
//! - Kurtosis is the plain fourth standardised moment (IBSI 3.3.6 "IPQS" is the
//!   *excess* kurtosis, i.e. this minus 3);
//! - Entropy and Uniformity use the discretised grey levels, log base 2 with
//!   `eps = 2.2e-16` added inside the logarithm;
//! - percentiles use numpy's linear interpolation.

use super::roi::Roi;

/// `numpy.percentile(sorted, q)` with the default ("linear") method.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let virtual_index = (q / 100.0) * (n - 1) as f64;
    let lo = virtual_index.floor();
    let t = virtual_index - lo;
    let lo = lo as usize;
    let hi = (lo + 1).min(n - 1);
    let (a, b) = (sorted[lo], sorted[hi]);
    let diff = b - a;
    // numpy's _lerp: switches form at t = 0.5 for monotonicity.
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

pub fn compute(roi: &Roi, voxel_array_shift: f64) -> Vec<(&'static str, f64)> {
    let x = &roi.values;
    let n = x.len() as f64;
    let mut sorted = x.clone();
    sorted.sort_unstable_by(f64::total_cmp);

    let min = sorted[0];
    let max = sorted[sorted.len() - 1];
    let p10 = percentile(&sorted, 10.0);
    let p25 = percentile(&sorted, 25.0);
    let p75 = percentile(&sorted, 75.0);
    let p90 = percentile(&sorted, 90.0);
    let median = {
        let m = sorted.len();
        if m % 2 == 1 {
            sorted[m / 2]
        } else {
            (sorted[m / 2 - 1] + sorted[m / 2]) / 2.0
        }
    };

    let mu = mean(x);
    let (mut m2, mut m3, mut m4, mut mad) = (0.0, 0.0, 0.0, 0.0);
    for &v in x {
        let d = v - mu;
        let d2 = d * d;
        m2 += d2;
        m3 += d2 * d;
        m4 += d2 * d2;
        mad += d.abs();
    }
    m2 /= n;
    m3 /= n;
    m4 /= n;
    mad /= n;

    // Robust mean absolute deviation (IBSI 1128): deviations from the
    // mean of the voxels between the 10th and 90th percentile, inclusive.
    let robust: Vec<f64> = x
        .iter()
        .copied()
        .filter(|&v| v >= p10 && v <= p90)
        .collect();
    let rmu = mean(&robust);
    let rmad = robust.iter().map(|v| (v - rmu).abs()).sum::<f64>() / robust.len() as f64;

    let energy: f64 = x
        .iter()
        .map(|v| {
            let s = v + voxel_array_shift;
            s * s
        })
        .sum();
    let voxel_volume = roi.spacing[0] * roi.spacing[1] * roi.spacing[2];

    // Histogram of the discretised levels (IBSI 3.4: entropy 'TU7F', uniformity 'BJ5W').
    let eps = f64::EPSILON;
    let (mut entropy, mut uniformity) = (0.0, 0.0);
    for &c in &roi.level_counts[1..] {
        if c > 0 {
            let p = c as f64 / n;
            entropy -= p * (p + eps).log2();
            uniformity += p * p;
        }
    }

    // Skewness/kurtosis are 0 for a constant ROI (pyradiomics sets m2 = 1 there).
    let (skewness, kurtosis) = if m2 == 0.0 {
        (0.0, 0.0)
    } else {
        (m3 / m2.powf(1.5), m4 / (m2 * m2))
    };
    // pyradiomics returns numpy.nanstd(x) ** 2.
    let variance = m2.sqrt().powi(2);

    vec![
        ("10Percentile", p10),                    // IBSI QG58
        ("90Percentile", p90),                    // IBSI 8DWT
        ("Energy", energy),                       // IBSI N8CA
        ("Entropy", entropy),                     // IBSI TLU2 (histogram)
        ("InterquartileRange", p75 - p25),        // IBSI SALO
        ("Kurtosis", kurtosis),                   // IBSI IPH6 + 3
        ("Maximum", max),                         // IBSI 84IY
        ("MeanAbsoluteDeviation", mad),           // IBSI 4FUA
        ("Mean", mu),                             // IBSI Q4LE
        ("Median", median),                       // IBSI Y12H
        ("Minimum", min),                         // IBSI 1GSF
        ("Range", max - min),                     // IBSI 2OJQ
        ("RobustMeanAbsoluteDeviation", rmad),    // IBSI 1128
        ("RootMeanSquared", (energy / n).sqrt()), // IBSI 5ZWQ
        ("Skewness", skewness),                   // IBSI KE2A
        ("TotalEnergy", energy * voxel_volume),   // no IBSI id (pyradiomics only)
        ("Uniformity", uniformity),               // IBSI BJ5W (histogram)
        ("Variance", variance),                   // IBSI ECT3
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_linear() {
        let v: Vec<f64> = (1..=10).map(|i| i as f64).collect();
        // numpy.percentile(range(1, 11), [10, 25, 50, 90]) = 1.9, 3.25, 5.5, 9.1
        assert!((percentile(&v, 10.0) - 1.9).abs() < 1e-12);
        assert!((percentile(&v, 25.0) - 3.25).abs() < 1e-12);
        assert!((percentile(&v, 50.0) - 5.5).abs() < 1e-12);
        assert!((percentile(&v, 90.0) - 9.1).abs() < 1e-12);
        assert_eq!(percentile(&[4.0], 90.0), 4.0);
    }
}
