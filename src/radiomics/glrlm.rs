//! Grey-level run length matrix features (IBSI chapter 3.7), as pyradiomics'
//! `glrlm.py` computes them: one GLRLM per direction (13 directions), features
//! per direction, then averaged (IBSI "3D, averaged"). Runs stop at the ROI
//! border; a direction along which no line holds two ROI voxels (a flat ROI
//! seen edge-on) is dropped, as pyradiomics' C code does.

use super::roi::{Roi, angles13};

const EPS: f64 = f64::EPSILON;

/// Run-length counts for one direction: `ng × nr`, entry `[level-1][len-1]`,
/// or `None` when pyradiomics drops the direction (no line along it holds two
/// ROI voxels).
fn run_matrix(roi: &Roi, d: [isize; 3], nr: usize) -> Option<Vec<u32>> {
    let ng = roi.ng;
    let off = roi.offset(d);
    let mut m = vec![0u32; ng * nr];
    let mut multi = false;
    roi.for_each_voxel(|i| {
        let l = roi.levels[i];
        // A run starts where the previous voxel along d differs (the padding
        // reads 0, so runs also stop at the bounding box).
        if roi.levels[(i as isize - off) as usize] == l {
            return;
        }
        let mut len = 1usize;
        let mut j = (i as isize + off) as usize;
        while roi.levels[j] == l {
            len += 1;
            j = (j as isize + off) as usize;
        }
        multi |= len > 1;
        m[(l as usize - 1) * nr + len - 1] += 1;
    });
    (multi || line_with_two_voxels(roi, d)).then_some(m)
}

/// Whether any line along `d` holds two ROI voxels that are not adjacent or
/// differ in level (the rare case the run pass cannot tell).
fn line_with_two_voxels(roi: &Roi, d: [isize; 3]) -> bool {
    let [nx, ny, nz] = roi.dims.map(|n| n as isize);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                if roi.levels[roi.idx(x as usize, y as usize, z as usize)] == 0 {
                    continue;
                }
                let (mut cx, mut cy, mut cz) = (x - d[0], y - d[1], z - d[2]);
                while cx >= 0 && cy >= 0 && cz >= 0 && cx < nx && cy < ny && cz < nz {
                    if roi.levels[roi.idx(cx as usize, cy as usize, cz as usize)] != 0 {
                        return true;
                    }
                    cx -= d[0];
                    cy -= d[1];
                    cz -= d[2];
                }
            }
        }
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::Volume;
    use crate::radiomics::Settings;
    use crate::radiomics::roi::bounding_box;

    /// Three voxels in an L, each in its own grey level: every run has length 1.
    fn l_shape() -> Roi {
        let image = Volume::new(vec![0.0f32, 100.0, 200.0, 0.0], [2, 2, 1], [1.0; 3]);
        let mask = Volume::new(vec![1u8, 1, 1, 0], [2, 2, 1], [1.0; 3]);
        let bbox = bounding_box(&mask, 1).unwrap();
        Roi::build(&image, &mask, bbox, &Settings::default()).unwrap()
    }

    #[test]
    fn a_direction_without_two_voxels_on_a_line_is_dropped() {
        let roi = l_shape();
        // (0,0) → (1,1) is outside the ROI: no line holds two voxels.
        assert!(run_matrix(&roi, [1, 1, 0], 2).is_none());
        // (1,0) and (0,1) share an anti-diagonal line, in different runs.
        let m = run_matrix(&roi, [-1, 1, 0], 2).unwrap();
        assert_eq!(m.iter().sum::<u32>(), 3);
        assert!(run_matrix(&roi, [1, 0, 0], 2).is_some());
    }

    #[test]
    fn runs_follow_levels_and_stop_at_the_roi_border() {
        let image = Volume::new(
            vec![10.0f32, 10.0, 10.0, 90.0, 10.0, 10.0],
            [6, 1, 1],
            [1.0; 3],
        );
        let mask = Volume::new(vec![1u8, 1, 1, 1, 1, 0], [6, 1, 1], [1.0; 3]);
        let bbox = bounding_box(&mask, 1).unwrap();
        let roi = Roi::build(&image, &mask, bbox, &Settings::default()).unwrap();
        let nr = 5;
        let m = run_matrix(&roi, [1, 0, 0], nr).unwrap();
        // Level of 10 HU is 1, 90 HU is 4: runs (1, len 3), (4, len 1), (1, len 1).
        assert_eq!(m[2], 1);
        assert_eq!(m[0], 1);
        assert_eq!(m[3 * nr], 1);
        assert_eq!(m.iter().sum::<u32>(), 3);
    }
}
