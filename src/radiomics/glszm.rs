//! Grey-level size zone matrix features (IBSI chapter 3.8), as pyradiomics'
//! `glszm.py` computes them: zones are 26-connected groups of ROI voxels with
//! the same grey level, one matrix for the whole 3-D ROI.

use super::roi::{Roi, angles26};

const EPS: f64 = f64::EPSILON;

/// (grey level, size) of every zone.
fn zones(roi: &Roi) -> Vec<(usize, usize)> {
    let offsets: Vec<isize> = angles26(roi.dims)
        .into_iter()
        .map(|d| roi.offset(d))
        .collect();
    let mut seen = vec![false; roi.levels.len()];
    let mut stack: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    roi.for_each_voxel(|start| {
        if seen[start] {
            return;
        }
        let level = roi.levels[start];
        seen[start] = true;
        stack.push(start);
        let mut size = 0usize;
        while let Some(k) = stack.pop() {
            size += 1;
            for &o in &offsets {
                let j = (k as isize + o) as usize;
                if !seen[j] && roi.levels[j] == level {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        out.push((level as usize, size));
    });
    out
}

pub fn compute(roi: &Roi) -> Vec<(&'static str, f64)> {
    let zones = zones(roi);
    let ng = roi.ng;
    let max_size = zones.iter().map(|z| z.1).max().unwrap_or(1);
    let mut m = vec![0u32; ng * max_size];
    for &(l, s) in &zones {
        m[(l - 1) * max_size + s - 1] += 1;
    }
    let nz = zones.len() as f64;
    let np = roi.n_voxels as f64;
    let mut pg = vec![0.0; ng];
    let mut ps = vec![0.0; max_size];
    for i in 0..ng {
        for j in 0..max_size {
            let v = m[i * max_size + j] as f64;
            pg[i] += v;
            ps[j] += v;
        }
    }
    let (mut sae, mut lae, mut szn) = (0.0, 0.0, 0.0);
    for (j, &v) in ps.iter().enumerate() {
        let jf = (j + 1) as f64;
        sae += v / (jf * jf);
        lae += v * jf * jf;
        szn += v * v;
    }
    let (mut gln, mut lgze, mut hgze) = (0.0, 0.0, 0.0);
    for (i, &v) in pg.iter().enumerate() {
        let i_f = (i + 1) as f64;
        gln += v * v;
        lgze += v / (i_f * i_f);
        hgze += v * i_f * i_f;
    }
    let ui: f64 = pg
        .iter()
        .enumerate()
        .map(|(i, &v)| v / nz * (i + 1) as f64)
        .sum();
    let glv: f64 = pg
        .iter()
        .enumerate()
        .map(|(i, &v)| v / nz * ((i + 1) as f64 - ui).powi(2))
        .sum();
    let uj: f64 = ps
        .iter()
        .enumerate()
        .map(|(j, &v)| v / nz * (j + 1) as f64)
        .sum();
    let zv: f64 = ps
        .iter()
        .enumerate()
        .map(|(j, &v)| v / nz * ((j + 1) as f64 - uj).powi(2))
        .sum();
    let (mut ze, mut salgle, mut sahgle, mut lalgle, mut lahgle) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..ng {
        let i2 = ((i + 1) * (i + 1)) as f64;
        for j in 0..max_size {
            let v = m[i * max_size + j] as f64;
            if v == 0.0 {
                continue;
            }
            let j2 = ((j + 1) as f64).powi(2);
            let p = v / nz;
            ze -= p * (p + EPS).log2();
            salgle += v / (i2 * j2);
            sahgle += v * i2 / j2;
            lalgle += v * j2 / i2;
            lahgle += v * i2 * j2;
        }
    }
    vec![
        ("GrayLevelNonUniformity", gln / nz), // IBSI JNSA
        ("GrayLevelNonUniformityNormalized", gln / (nz * nz)), // IBSI Y1RO
        ("GrayLevelVariance", glv),           // IBSI BYLV
        ("HighGrayLevelZoneEmphasis", hgze / nz), // IBSI 5GN9
        ("LargeAreaEmphasis", lae / nz),      // IBSI 48P8
        ("LargeAreaHighGrayLevelEmphasis", lahgle / nz), // IBSI 97LA
        ("LargeAreaLowGrayLevelEmphasis", lalgle / nz), // IBSI 24ZG
        ("LowGrayLevelZoneEmphasis", lgze / nz), // IBSI XMSY
        ("SizeZoneNonUniformity", szn / nz),  // IBSI 4JP3
        ("SizeZoneNonUniformityNormalized", szn / (nz * nz)), // IBSI VB3A
        ("SmallAreaEmphasis", sae / nz),      // IBSI 5QRC
        ("SmallAreaHighGrayLevelEmphasis", sahgle / nz), // IBSI HW1V
        ("SmallAreaLowGrayLevelEmphasis", salgle / nz), // IBSI 5RAI
        ("ZoneEntropy", ze),                  // IBSI GU8N
        ("ZonePercentage", nz / np),          // IBSI P30P
        ("ZoneVariance", zv),                 // IBSI 3NSA
    ]
}
