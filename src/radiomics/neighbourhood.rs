//! The GLDM and NGTDM both look at the 26 neighbours of every ROI voxel that
//! lie in the ROI, so both matrices are built in one pass here.

use super::roi::{Roi, angles26};
use super::{gldm, ngtdm};

struct Matrices {
    /// GLDM counts `[level-1][dependence]`, dependence 0..=26.
    gldm: Vec<u64>,
    /// NGTDM per level: voxel count and summed |level − neighbourhood mean|.
    n: Vec<u64>,
    s: Vec<f64>,
}

fn matrices(roi: &Roi, alpha: u32) -> Matrices {
    let ng = roi.ng;
    let offsets: Vec<isize> = angles26(roi.dims)
        .into_iter()
        .map(|d| roi.offset(d))
        .collect();
    let mut gldm = vec![0u64; ng * 27];
    let mut n = vec![0u64; ng + 1];
    let mut s = vec![0.0f64; ng + 1];
    roi.for_each_voxel(|i| {
        let li = roi.levels[i];
        let (mut dep, mut count, mut sum) = (0usize, 0u32, 0u64);
        for &o in &offsets {
            let lj = roi.levels[(i as isize + o) as usize];
            if lj == 0 {
                continue;
            }
            count += 1;
            sum += lj as u64;
            if (li as i64 - lj as i64).unsigned_abs() <= alpha as u64 {
                dep += 1;
            }
        }
        let li = li as usize;
        gldm[(li - 1) * 27 + dep] += 1;
        n[li] += 1;
        if count > 0 {
            s[li] += (li as f64 - sum as f64 / count as f64).abs();
        }
    });
    Matrices { gldm, n, s }
}

type Named = Vec<(&'static str, f64)>;

/// Returns (GLDM features, NGTDM features).
pub fn compute(roi: &Roi, alpha: u32) -> (Named, Named) {
    let m = matrices(roi, alpha);
    (
        gldm::features(&m.gldm, roi.ng, roi.n_voxels as f64),
        ngtdm::features(&m.n, &m.s),
    )
}
