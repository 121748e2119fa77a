//! Grey-level run length matrix features (IBSI chapter 3.7), as pyradiomics'
//! `glrlm.py` computes them: one GLRLM per direction (13 directions), features
//! per direction, then averaged (IBSI "3D, averaged"). Runs stop at the ROI
//! border; a direction along which no line holds two ROI voxels (a flat ROI
//! seen edge-on) is dropped, as pyradiomics' C code does.

use super::roi::{Roi, angles13};

const EPS: f64 = f64::EPSILON;

/// Run-length counts for one direction: `ng × nr`, entry `[level-1][len-1]`.
fn run_matrix(roi: &Roi, d: [isize; 3], nr: usize) -> Option<Vec<u32>> {
    let [nx, ny, nz] = roi.dims;
    let ng = roi.ng;
    let mut m = vec![0u32; ng * nr];
    let inside = |x: isize, y: isize, z: isize| {
        x >= 0 && y >= 0 && z >= 0 && x < nx as isize && y < ny as isize && z < nz as isize
    };
    let mut multi = false;
    for z in 0..nz as isize {
        for y in 0..ny as isize {
            for x in 0..nx as isize {
                // A line starts where the previous voxel along d is outside the box.
                if inside(x - d[0], y - d[1], z - d[2]) {
                    continue;
                }
                let (mut cx, mut cy, mut cz) = (x, y, z);
                let mut run_level = 0usize;
                let mut run_len = 0usize;
                let mut elements = 0usize;
                while inside(cx, cy, cz) {
                    let l = roi.levels[roi.idx(cx as usize, cy as usize, cz as usize)] as usize;
                    if l != 0 {
                        elements += 1;
                    }
                    if l != run_level {
                        if run_level != 0 {
                            m[(run_level - 1) * nr + run_len - 1] += 1;
                        }
                        run_level = l;
                        run_len = 0;
                    }
                    if l != 0 {
                        run_len += 1;
                    }
                    cx += d[0];
                    cy += d[1];
                    cz += d[2];
                }
                if run_level != 0 {
                    m[(run_level - 1) * nr + run_len - 1] += 1;
                }
                multi |= elements > 1;
            }
        }
    }
    multi.then_some(m)
}

fn angle_features(m: &[u32], ng: usize, nr: usize) -> Option<[f64; 16]> {
    let mut pg = vec![0.0; ng];
    let mut pr = vec![0.0; nr];
    let mut total = 0.0;
    for i in 0..ng {
        for j in 0..nr {
            let v = m[i * nr + j] as f64;
            pg[i] += v;
            pr[j] += v;
            total += v;
        }
    }
    if total == 0.0 {
        return None;
    }
    let nruns = total;
    let (mut sre, mut lre, mut rln, mut np) = (0.0, 0.0, 0.0, 0.0);
    for (j, &v) in pr.iter().enumerate() {
        let jf = (j + 1) as f64;
        sre += v / (jf * jf);
        lre += v * jf * jf;
        rln += v * v;
        np += v * jf;
    }
    let (mut gln, mut lglre, mut hglre) = (0.0, 0.0, 0.0);
    for (i, &v) in pg.iter().enumerate() {
        let i_f = (i + 1) as f64;
        gln += v * v;
        lglre += v / (i_f * i_f);
        hglre += v * i_f * i_f;
    }
    let ui: f64 = pg
        .iter()
        .enumerate()
        .map(|(i, &v)| v / nruns * (i + 1) as f64)
        .sum();
    let glv: f64 = pg
        .iter()
        .enumerate()
        .map(|(i, &v)| v / nruns * ((i + 1) as f64 - ui).powi(2))
        .sum();
    let uj: f64 = pr
        .iter()
        .enumerate()
        .map(|(j, &v)| v / nruns * (j + 1) as f64)
        .sum();
    let rv: f64 = pr
        .iter()
        .enumerate()
        .map(|(j, &v)| v / nruns * ((j + 1) as f64 - uj).powi(2))
        .sum();
    let (mut re, mut srlgle, mut srhgle, mut lrlgle, mut lrhgle) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..ng {
        let i2 = ((i + 1) * (i + 1)) as f64;
        for j in 0..nr {
            let v = m[i * nr + j] as f64;
            if v == 0.0 {
                continue;
            }
            let j2 = ((j + 1) * (j + 1)) as f64;
            let p = v / nruns;
            re -= p * (p + EPS).log2();
            srlgle += v / (i2 * j2);
            srhgle += v * i2 / j2;
            lrlgle += v * j2 / i2;
            lrhgle += v * i2 * j2;
        }
    }
    Some([
        gln / nruns,           // GrayLevelNonUniformity
        gln / (nruns * nruns), // GrayLevelNonUniformityNormalized
        glv,                   // GrayLevelVariance
        hglre / nruns,         // HighGrayLevelRunEmphasis
        lre / nruns,           // LongRunEmphasis
        lrhgle / nruns,        // LongRunHighGrayLevelEmphasis
        lrlgle / nruns,        // LongRunLowGrayLevelEmphasis
        lglre / nruns,         // LowGrayLevelRunEmphasis
        re,                    // RunEntropy
        rln / nruns,           // RunLengthNonUniformity
        rln / (nruns * nruns), // RunLengthNonUniformityNormalized
        nruns / np,            // RunPercentage
        rv,                    // RunVariance
        sre / nruns,           // ShortRunEmphasis
        srhgle / nruns,        // ShortRunHighGrayLevelEmphasis
        srlgle / nruns,        // ShortRunLowGrayLevelEmphasis
    ])
}

pub fn compute(roi: &Roi) -> Vec<(&'static str, f64)> {
    let nr = roi.dims.iter().copied().max().unwrap_or(1);
    let per_angle: Vec<[f64; 16]> = angles13(roi.dims)
        .into_iter()
        .filter_map(|d| run_matrix(roi, d, nr))
        .filter_map(|m| angle_features(&m, roi.ng, nr))
        .collect();
    let mean = |k: usize| -> f64 {
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
    const NAMES: [&str; 16] = [
        "GrayLevelNonUniformity",           // IBSI R5YN
        "GrayLevelNonUniformityNormalized", // IBSI OVBL
        "GrayLevelVariance",                // IBSI 8CE5
        "HighGrayLevelRunEmphasis",         // IBSI G3QZ
        "LongRunEmphasis",                  // IBSI W4KF
        "LongRunHighGrayLevelEmphasis",     // IBSI 3KUM
        "LongRunLowGrayLevelEmphasis",      // IBSI IVPO
        "LowGrayLevelRunEmphasis",          // IBSI V3SW
        "RunEntropy",                       // IBSI HJ9O
        "RunLengthNonUniformity",           // IBSI W92Y
        "RunLengthNonUniformityNormalized", // IBSI IC23
        "RunPercentage",                    // IBSI 9ZK5
        "RunVariance",                      // IBSI SXLW
        "ShortRunEmphasis",                 // IBSI 22OV
        "ShortRunHighGrayLevelEmphasis",    // IBSI GD3A
        "ShortRunLowGrayLevelEmphasis",     // IBSI HTZT
    ];
    NAMES
        .iter()
        .enumerate()
        .map(|(k, &n)| (n, mean(k)))
        .collect()
}
