//! Grey-level co-occurrence matrix features (IBSI chapter 3.6), as
//! pyradiomics' `glcm.py` computes them: one symmetric GLCM per direction
//! (13 directions, distance 1; IBSI aggregation "3D, averaged" — features are
//! computed per direction and then averaged), absent grey levels removed,
//! directions without any pair dropped, natural grey-level values `i`, `j`
//! (not ranks) in the formulas, log base 2 with `eps` inside the logarithm.
//!
//! pyradiomics-specific conventions (see docs/radiomics.md): `Idmn`/`Idn`
//! normalise by `Ng` = the highest grey level, not the number of levels
//! present; `Imc2` uses `exp(-2(HXY2 - HXY))` with base-2 entropies;
//! `Correlation` is 1 where a marginal has zero variance.

use super::linalg::symmetric_eigenvalues;
use super::roi::{Roi, angles13};

const EPS: f64 = f64::EPSILON;

/// Raw (non-symmetric) co-occurrence counts per direction, `Ng×Ng` each.
fn count_matrices(roi: &Roi, angles: &[[isize; 3]]) -> Vec<Vec<u32>> {
    let ng = roi.ng;
    let offsets: Vec<isize> = angles.iter().map(|&d| roi.offset(d)).collect();
    let mut mats = vec![vec![0u32; ng * ng]; angles.len()];
    roi.for_each_voxel(|i| {
        let li = roi.levels[i] as usize;
        for (m, &off) in mats.iter_mut().zip(&offsets) {
            let lj = roi.levels[(i as isize + off) as usize] as usize;
            if lj != 0 {
                m[(li - 1) * ng + (lj - 1)] += 1;
            }
        }
    });
    mats
}

/// Features of one direction's normalised symmetric GLCM over the present
/// grey levels `g` (values); `p` is `n×n`.
fn angle_features(p: &[f64], g: &[f64], ng: usize) -> [f64; 25] {
    let n = g.len();
    let mut px = vec![0.0; n];
    for i in 0..n {
        px[i] = p[i * n..(i + 1) * n].iter().sum();
    }
    let py = px.clone(); // symmetric matrix
    let ux: f64 = (0..n).map(|i| g[i] * px[i]).sum();
    let uy = ux;

    let mut p_sum = vec![0.0; 2 * ng + 1]; // index k = i + j (2..=2Ng)
    let mut p_diff = vec![0.0; ng]; // index k = |i − j| (0..Ng−1)
    let (mut autocorr, mut cprom, mut cshade, mut ctend, mut contrast) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut corm, mut energy, mut hxy, mut hxy1, mut hxy2, mut maxprob, mut sumsq) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0f64, 0.0);
    for i in 0..n {
        for j in 0..n {
            let pij = p[i * n + j];
            let (gi, gj) = (g[i], g[j]);
            let pxy = px[i] * py[j];
            hxy2 -= pxy * (pxy + EPS).log2();
            if pij == 0.0 {
                continue;
            }
            autocorr += pij * gi * gj;
            let t = gi + gj - ux - uy;
            let t2 = t * t;
            ctend += pij * t2;
            cshade += pij * t2 * t;
            cprom += pij * t2 * t2;
            contrast += pij * (gi - gj) * (gi - gj);
            corm += pij * (gi - ux) * (gj - uy);
            sumsq += pij * (gi - ux) * (gi - ux);
            energy += pij * pij;
            hxy -= pij * (pij + EPS).log2();
            hxy1 -= pij * (pxy + EPS).log2();
            maxprob = maxprob.max(pij);
            p_sum[(gi + gj) as usize] += pij;
            p_diff[(gi - gj).abs() as usize] += pij;
        }
    }
    let sigx = (0..n)
        .map(|i| px[i] * (g[i] - ux).powi(2))
        .sum::<f64>()
        .sqrt();
    let sigy = sigx;
    let correlation = if sigx * sigy == 0.0 {
        1.0
    } else {
        corm / (sigx * sigy + EPS)
    };

    let (mut diff_avg, mut diff_ent, mut idm, mut idmn, mut id, mut idn, mut inv_var) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let ngf = ng as f64;
    for (k, &pk) in p_diff.iter().enumerate() {
        let kf = k as f64;
        diff_avg += kf * pk;
        diff_ent -= pk * (pk + EPS).log2();
        idm += pk / (1.0 + kf * kf);
        idmn += pk / (1.0 + kf * kf / (ngf * ngf));
        id += pk / (1.0 + kf);
        idn += pk / (1.0 + kf / ngf);
        if k > 0 {
            inv_var += pk / (kf * kf);
        }
    }
    let diff_var: f64 = p_diff
        .iter()
        .enumerate()
        .map(|(k, &pk)| pk * (k as f64 - diff_avg).powi(2))
        .sum();
    let (mut sum_avg, mut sum_ent) = (0.0, 0.0);
    for (k, &pk) in p_sum.iter().enumerate().skip(2) {
        sum_avg += k as f64 * pk;
        sum_ent -= pk * (pk + EPS).log2();
    }

    let hx: f64 = -px.iter().map(|&v| v * (v + EPS).log2()).sum::<f64>();
    let hy = hx;
    let div = hx.max(hy);
    let imc1 = if div == 0.0 { 0.0 } else { (hxy - hxy1) / div };
    let imc2 = if hxy2 == hxy {
        0.0
    } else {
        (1.0 - (-2.0 * (hxy2 - hxy)).exp()).sqrt()
    };

    let mcc = maximal_correlation(p, &px, n);

    [
        autocorr,
        ux,
        cprom,
        cshade,
        ctend,
        contrast,
        correlation,
        diff_avg,
        diff_ent,
        diff_var,
        id,
        idm,
        idmn,
        idn,
        imc1,
        imc2,
        inv_var,
        energy,
        hxy,
        mcc,
        maxprob,
        sum_avg,
        sum_ent,
        sumsq,
        0.0,
    ]
}

/// Maximal correlation coefficient (not an IBSI feature): square root of the
/// second largest eigenvalue of `Q`, `Q_ij = Σ_k p_ik p_jk / (px_i py_k + eps)`
/// exactly as pyradiomics forms it (the `eps` shifts the result by ~1e-7
/// relative on large ROIs, so it is kept). pyradiomics hands Q to a general
/// eigen-solver; for a symmetric GLCM, `D^½ Q D^-½` (D = diag(px)) is
/// symmetric up to the `eps` terms, so we symmetrise it and use a symmetric
/// solver: same eigenvalues to first order in `eps`.
fn maximal_correlation(p: &[f64], px: &[f64], n: usize) -> f64 {
    if n < 2 {
        return 1.0; // pyradiomics: fewer than 2 grey levels ("flat region")
    }
    // Rows/columns of levels without neighbours along this direction are zero
    // in Q and only add zero eigenvalues; Q is positive semi-definite, so they
    // matter only when fewer than two levels remain.
    let keep: Vec<usize> = (0..n).filter(|&i| px[i] > 0.0).collect();
    let m = keep.len();
    if m < 2 {
        return 0.0;
    }
    let mut q = vec![0.0; m * m];
    for (r, &i) in keep.iter().enumerate() {
        for (c, &j) in keep.iter().enumerate() {
            let mut v = 0.0;
            for k in 0..n {
                let a = p[i * n + k];
                if a != 0.0 {
                    v += a * p[j * n + k] / (px[i] * px[k] + EPS);
                }
            }
            q[r * m + c] = v * (px[i] / px[j]).sqrt();
        }
    }
    for r in 0..m {
        for c in r + 1..m {
            let avg = 0.5 * (q[r * m + c] + q[c * m + r]);
            q[r * m + c] = avg;
            q[c * m + r] = avg;
        }
    }
    let ev = symmetric_eigenvalues(&mut q, m);
    let second = ev[m - 2];
    if second < 0.0 { 0.0 } else { second.sqrt() }
}

pub fn compute(roi: &Roi) -> Vec<(&'static str, f64)> {
    let angles = angles13(roi.dims);
    let counts = count_matrices(roi, &angles);
    let present = roi.present_levels();
    let g: Vec<f64> = present.iter().map(|&l| l as f64).collect();
    let n = present.len();
    let ng = roi.ng;

    let mut per_angle: Vec<[f64; 25]> = Vec::new();
    let mut empty = Vec::new();
    for c in &counts {
        // Symmetric matrix over present levels (P + Pᵀ).
        let mut p = vec![0.0; n * n];
        let mut total = 0.0;
        for (r, &i) in present.iter().enumerate() {
            for (s, &j) in present.iter().enumerate() {
                let v = (c[(i - 1) * ng + (j - 1)] + c[(j - 1) * ng + (i - 1)]) as f64;
                p[r * n + s] = v;
                total += v;
            }
        }
        if total == 0.0 {
            empty.push(true);
            per_angle.push([f64::NAN; 25]);
            continue;
        }
        empty.push(false);
        for v in &mut p {
            *v /= total;
        }
        per_angle.push(angle_features(&p, &g, ng));
    }
    // Directions without pairs are dropped (when there is more than one).
    if per_angle.len() > 1 {
        let kept: Vec<[f64; 25]> = per_angle
            .iter()
            .zip(&empty)
            .filter(|(_, e)| !**e)
            .map(|(f, _)| *f)
            .collect();
        per_angle = kept;
    }
    let nanmean = |k: usize| -> f64 {
        let vals: Vec<f64> = per_angle
            .iter()
            .map(|f| f[k])
            .filter(|v| !v.is_nan())
            .collect();
        if vals.is_empty() {
            f64::NAN
        } else {
            vals.iter().sum::<f64>() / vals.len() as f64
        }
    };
    vec![
        ("Autocorrelation", nanmean(0)),     // IBSI QWB0
        ("ClusterProminence", nanmean(2)),   // IBSI AE86
        ("ClusterShade", nanmean(3)),        // IBSI 7NFM
        ("ClusterTendency", nanmean(4)),     // IBSI DG8W
        ("Contrast", nanmean(5)),            // IBSI ACUI
        ("Correlation", nanmean(6)),         // IBSI NI2N
        ("DifferenceAverage", nanmean(7)),   // IBSI TF7R
        ("DifferenceEntropy", nanmean(8)),   // IBSI NTRS
        ("DifferenceVariance", nanmean(9)),  // IBSI D3YU
        ("Id", nanmean(10)),                 // IBSI IB1Z
        ("Idm", nanmean(11)),                // IBSI WF0Z
        ("Idmn", nanmean(12)),               // IBSI 1QCO
        ("Idn", nanmean(13)),                // IBSI NDRX
        ("Imc1", nanmean(14)),               // IBSI R8DG
        ("Imc2", nanmean(15)),               // IBSI JN9H
        ("InverseVariance", nanmean(16)),    // IBSI E8JP
        ("JointAverage", nanmean(1)),        // IBSI 60VM
        ("JointEnergy", nanmean(17)),        // IBSI 8ZQL
        ("JointEntropy", nanmean(18)),       // IBSI TU9B
        ("MCC", nanmean(19)),                // not in IBSI
        ("MaximumProbability", nanmean(20)), // IBSI GYBY
        ("SumAverage", nanmean(21)),         // IBSI ZGXS
        ("SumEntropy", nanmean(22)),         // IBSI P6QZ
        ("SumSquares", nanmean(23)),         // IBSI UR99 (joint variance)
    ]
}
