//! Grey-level dependence matrix features (IBSI chapter 3.11, "NGLDM" with
//! coarseness parameter α = `gldm_alpha` and distance 1), as pyradiomics'
//! `gldm.py` computes them. The matrix comes from the shared neighbourhood pass
//! in `neighbourhood.rs`.
//!
//! pyradiomics convention (docs/radiomics.md): the dependence of a voxel counts
//! the centre voxel too, `j = dependent neighbours + 1`, so `j` starts at 1.

const EPS: f64 = f64::EPSILON;

/// Features of the GLDM `m` (`[level-1][dependent neighbours]`, 27 columns).
pub fn features(m: &[u64], ng: usize, nvox: f64) -> Vec<(&'static str, f64)> {
    const ND: usize = 27;
    let mut pg = vec![0.0; ng];
    let mut pd = vec![0.0; ND];
    for i in 0..ng {
        for j in 0..ND {
            let v = m[i * ND + j] as f64;
            pg[i] += v;
            pd[j] += v;
        }
    }
    let nz = nvox;
    let (mut sde, mut lde, mut dn) = (0.0, 0.0, 0.0);
    for (j, &v) in pd.iter().enumerate() {
        let jf = (j + 1) as f64;
        sde += v / (jf * jf);
        lde += v * jf * jf;
        dn += v * v;
    }
    let (mut gln, mut lgle, mut hgle) = (0.0, 0.0, 0.0);
    for (i, &v) in pg.iter().enumerate() {
        let i_f = (i + 1) as f64;
        gln += v * v;
        lgle += v / (i_f * i_f);
        hgle += v * i_f * i_f;
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
    let uj: f64 = pd
        .iter()
        .enumerate()
        .map(|(j, &v)| v / nz * (j + 1) as f64)
        .sum();
    let dv: f64 = pd
        .iter()
        .enumerate()
        .map(|(j, &v)| v / nz * ((j + 1) as f64 - uj).powi(2))
        .sum();
    let (mut de, mut sdlgle, mut sdhgle, mut ldlgle, mut ldhgle) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..ng {
        let i2 = ((i + 1) * (i + 1)) as f64;
        for j in 0..ND {
            let v = m[i * ND + j] as f64;
            if v == 0.0 {
                continue;
            }
            let j2 = ((j + 1) * (j + 1)) as f64;
            let p = v / nz;
            de -= p * (p + EPS).log2();
            sdlgle += v / (i2 * j2);
            sdhgle += v * i2 / j2;
            ldlgle += v * j2 / i2;
            ldhgle += v * i2 * j2;
        }
    }
    vec![
        ("DependenceEntropy", de),                             // IBSI FCBV
        ("DependenceNonUniformity", dn / nz),                  // IBSI Z87G
        ("DependenceNonUniformityNormalized", dn / (nz * nz)), // IBSI OKJI
        ("DependenceVariance", dv),                            // IBSI DNX2
        ("GrayLevelNonUniformity", gln / nz),                  // IBSI FP8K
        ("GrayLevelVariance", glv),                            // IBSI 1PFV
        ("HighGrayLevelEmphasis", hgle / nz),                  // IBSI OAE7
        ("LargeDependenceEmphasis", lde / nz),                 // IBSI IMOQ
        ("LargeDependenceHighGrayLevelEmphasis", ldhgle / nz), // IBSI KLTH
        ("LargeDependenceLowGrayLevelEmphasis", ldlgle / nz),  // IBSI A7WM
        ("LowGrayLevelEmphasis", lgle / nz),                   // IBSI TL9H
        ("SmallDependenceEmphasis", sde / nz),                 // IBSI SODN
        ("SmallDependenceHighGrayLevelEmphasis", sdhgle / nz), // IBSI JA6D
        ("SmallDependenceLowGrayLevelEmphasis", sdlgle / nz),  // IBSI EQ3F
    ]
}
