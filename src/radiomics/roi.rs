//! The region of interest, cropped to its bounding box and discretised once;
//! every feature class reads from this.

use rayon::prelude::*;

use super::discretize::BinEdges;
use super::{RadiomicsError, Settings};
use crate::imaging::Volume;

/// Inclusive index bounding box `[lo, hi]` per axis (x, y, z).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundingBox {
    pub lo: [usize; 3],
    pub hi: [usize; 3],
}

impl BoundingBox {
    pub fn size(&self) -> [usize; 3] {
        [
            self.hi[0] - self.lo[0] + 1,
            self.hi[1] - self.lo[1] + 1,
            self.hi[2] - self.lo[2] + 1,
        ]
    }
}

/// Bounding box of the voxels equal to `label`, or `None` if there are none.
/// Scans slices in parallel: on a whole CT this is the largest memory pass.
pub fn bounding_box(mask: &Volume<u8>, label: u8) -> Option<BoundingBox> {
    let [nx, ny, _] = mask.dims;
    let plane = nx * ny;
    if plane == 0 {
        return None;
    }
    mask.data
        .par_chunks(plane)
        .enumerate()
        .filter_map(|(z, slice)| {
            let mut lo = [usize::MAX, usize::MAX];
            let mut hi = [0usize, 0usize];
            for (y, row) in slice.chunks_exact(nx).enumerate() {
                let Some(first) = row.iter().position(|&m| m == label) else {
                    continue;
                };
                let last = row.iter().rposition(|&m| m == label).unwrap_or(first);
                lo[0] = lo[0].min(first);
                hi[0] = hi[0].max(last);
                lo[1] = lo[1].min(y);
                hi[1] = hi[1].max(y);
            }
            (lo[0] != usize::MAX).then_some(BoundingBox {
                lo: [lo[0], lo[1], z],
                hi: [hi[0], hi[1], z],
            })
        })
        .reduce_with(|a, b| BoundingBox {
            lo: [
                a.lo[0].min(b.lo[0]),
                a.lo[1].min(b.lo[1]),
                a.lo[2].min(b.lo[2]),
            ],
            hi: [
                a.hi[0].max(b.hi[0]),
                a.hi[1].max(b.hi[1]),
                a.hi[2].max(b.hi[2]),
            ],
        })
}

/// The ROI inside its bounding box.
#[derive(Debug, Clone)]
pub struct Roi {
    /// Bounding-box size along x, y, z.
    pub dims: [usize; 3],
    /// Size of `levels`: the bounding box plus one voxel of padding per side.
    pub pdims: [usize; 3],
    /// Voxel spacing (mm) along x, y, z.
    pub spacing: [f64; 3],
    /// Discretised grey level per voxel of the padded bounding box (x
    /// fastest): 0 outside the ROI and in the padding, 1..=`ng` inside. The
    /// padding lets neighbour loops use fixed linear offsets without bounds
    /// checks: a neighbour outside the box reads 0 like one outside the ROI.
    pub levels: Vec<u16>,
    /// Intensities of the ROI voxels in raster order (for first-order features).
    pub values: Vec<f64>,
    /// Highest grey level (pyradiomics' `Ng`).
    pub ng: usize,
    /// Number of ROI voxels per grey level (index 0 unused).
    pub level_counts: Vec<u64>,
    pub n_voxels: usize,
}

impl Roi {
    /// Crops image and mask to `bbox` and discretises the ROI intensities.
    pub fn build(
        image: &Volume<f32>,
        mask: &Volume<u8>,
        bbox: BoundingBox,
        settings: &Settings,
    ) -> Result<Self, RadiomicsError> {
        let dims = bbox.size();
        let [nx, ny, nz] = dims;
        let pdims = [nx + 2, ny + 2, nz + 2];
        let mut inside = vec![false; pdims[0] * pdims[1] * pdims[2]];
        let mut values = Vec::new();
        for z in 0..nz {
            for y in 0..ny {
                let src = image.index(bbox.lo[0], bbox.lo[1] + y, bbox.lo[2] + z);
                let dst = ((z + 1) * pdims[1] + y + 1) * pdims[0] + 1;
                for x in 0..nx {
                    if mask.data[src + x] == settings.label {
                        let v = image.data[src + x];
                        if !v.is_finite() {
                            return Err(RadiomicsError::NonFiniteIntensity {
                                index: [bbox.lo[0] + x, bbox.lo[1] + y, bbox.lo[2] + z],
                            });
                        }
                        inside[dst + x] = true;
                        values.push(v as f64);
                    }
                }
            }
        }
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let edges = BinEdges::new(min, max, settings.bin_width);
        let mut levels = vec![0u16; inside.len()];
        let mut ng = 0usize;
        let mut vi = 0usize;
        for (l, &ins) in levels.iter_mut().zip(&inside) {
            if ins {
                let level = edges.level(values[vi]);
                vi += 1;
                if level == 0 || level > u16::MAX as usize {
                    return Err(RadiomicsError::TooManyGreyLevels {
                        levels: level,
                        bin_width: settings.bin_width,
                    });
                }
                *l = level as u16;
                ng = ng.max(level);
            }
        }
        let mut level_counts = vec![0u64; ng + 1];
        for &l in &levels {
            if l != 0 {
                level_counts[l as usize] += 1;
            }
        }
        Ok(Self {
            dims,
            pdims,
            spacing: image.spacing,
            levels,
            n_voxels: values.len(),
            values,
            ng,
            level_counts,
        })
    }

    /// Grey levels present in the ROI, ascending (pyradiomics' `grayLevels`).
    pub fn present_levels(&self) -> Vec<usize> {
        (1..=self.ng)
            .filter(|&l| self.level_counts[l] > 0)
            .collect()
    }

    /// Index in `levels` of bounding-box voxel (x, y, z).
    #[inline]
    pub fn idx(&self, x: usize, y: usize, z: usize) -> usize {
        ((z + 1) * self.pdims[1] + y + 1) * self.pdims[0] + x + 1
    }

    /// Linear offset in `levels` of a neighbour offset (dx, dy, dz).
    #[inline]
    pub fn offset(&self, d: [isize; 3]) -> isize {
        (d[2] * self.pdims[1] as isize + d[1]) * self.pdims[0] as isize + d[0]
    }

    /// Calls `f(index)` for every ROI voxel, in raster order (x fastest).
    #[inline]
    pub fn for_each_voxel(&self, mut f: impl FnMut(usize)) {
        let [nx, ny, nz] = self.dims;
        for z in 0..nz {
            for y in 0..ny {
                let row = self.idx(0, y, z);
                for i in row..row + nx {
                    if self.levels[i] != 0 {
                        f(i);
                    }
                }
            }
        }
    }
}

/// The 13 unique offsets (dx, dy, dz) at distance 1 (one of each ± pair), in
/// the order pyradiomics generates them, keeping only those that fit in a box
/// of `size` (pyradiomics drops an offset whose magnitude reaches the box size
/// along an axis).
pub fn angles13(size: [usize; 3]) -> Vec<[isize; 3]> {
    let all = angles26(size);
    // pyradiomics keeps the first half of its generation order, which starts at
    // offset +1 on the slowest axis (z).
    all[..all.len() / 2].to_vec()
}

/// All 26 neighbour offsets (dx, dy, dz) that fit in a box of `size`.
pub fn angles26(size: [usize; 3]) -> Vec<[isize; 3]> {
    let mut out = Vec::with_capacity(26);
    for dz in [1isize, 0, -1] {
        for dy in [1isize, 0, -1] {
            for dx in [1isize, 0, -1] {
                if dx == 0 && dy == 0 && dz == 0 {
                    continue;
                }
                let fits = [dx, dy, dz]
                    .iter()
                    .zip(size)
                    .all(|(&d, n)| d == 0 || (n as isize) > d.abs());
                if fits {
                    out.push([dx, dy, dz]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirteen_directions_for_a_3d_box_and_four_for_a_slice() {
        let a = angles13([5, 5, 5]);
        assert_eq!(a.len(), 13);
        // No direction appears with its opposite.
        for (i, x) in a.iter().enumerate() {
            for y in &a[i + 1..] {
                assert_ne!(*x, [-y[0], -y[1], -y[2]]);
            }
        }
        assert_eq!(angles13([5, 5, 1]).len(), 4);
        assert_eq!(angles26([5, 5, 1]).len(), 8);
    }

    #[test]
    fn bounding_box_spans_the_label_only() {
        let mut m = Volume::new(vec![0u8; 4 * 5 * 6], [4, 5, 6], [1.0; 3]);
        let i = m.index(1, 2, 3);
        m.data[i] = 1;
        let i = m.index(2, 4, 4);
        m.data[i] = 1;
        let i = m.index(3, 0, 0);
        m.data[i] = 2;
        let b = bounding_box(&m, 1).unwrap();
        assert_eq!(b.lo, [1, 2, 3]);
        assert_eq!(b.hi, [2, 4, 4]);
        assert!(bounding_box(&m, 7).is_none());
    }
}
