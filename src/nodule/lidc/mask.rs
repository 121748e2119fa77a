//! Boolean masks from LIDC contour polygons, voxel for voxel as pylidc
//! 0.2.3's `Annotation.boolean_mask()` and `utils.consensus()` build them.
//!
//! How pylidc decides which pixels belong to an annotation (and so do we):
//!
//! - The contour vertices `(i, j)` of one slice form a closed polygon (the
//!   first vertex is appended when the list is not already closed).
//! - A pixel centre `(i, j)` of the bounding box is inside when
//!   matplotlib's `Path.contains_points` (radius 0) says so: an even-odd
//!   crossing test of a ray towards +i, with the half-open rule
//!   `y_vertex >= y_point` on the j coordinate. [`inside`] is the same
//!   arithmetic, so ties on edges fall the same way.
//! - Inclusion contours are OR-ed into their slice; then **their own
//!   vertices are switched off** (`include_contour_points=False`, the
//!   default): LIDC readers drew the outline on the pixels just outside the
//!   nodule, so the mask is the interior strictly within the drawn line.
//! - Exclusion contours then remove their inside and their vertices.
//! - The mask covers the annotation's bounding box (min/max of its vertices
//!   in `i`, `j` and slice index `k`); slices between contours stay empty
//!   when a reader skipped one.
//! - A nodule's consensus mask: every reader's mask on the union bounding
//!   box, a voxel set when at least half of the readers set it
//!   (`clevel = 0.5`, `mean >= clevel`).
//!
//! The voxel spacing is (pixel spacing, pixel spacing, the scan's median
//! slice spacing).

use super::{Annotation, Scan};
use crate::imaging::Volume;

/// Inclusive index bounding box `[[imin, imax], [jmin, jmax], [kmin, kmax]]`.
pub type BBox = [[i32; 2]; 3];

/// A mask on a bounding box of the scan, as a [`Volume`]: x = column `j`,
/// y = row `i`, z = slice `k` (x fastest, as the radiomics extractor wants),
/// origin at (jmin · spacing, imin · spacing, z of slice kmin).
#[derive(Debug, Clone, PartialEq)]
pub struct NoduleMask {
    pub bbox: BBox,
    pub volume: Volume<u8>,
}

impl NoduleMask {
    pub fn voxels(&self) -> usize {
        self.volume.data.iter().filter(|&&v| v != 0).count()
    }

    /// Volume of the set voxels, mm³.
    pub fn volume_mm3(&self) -> f64 {
        let s = self.volume.spacing;
        self.voxels() as f64 * s[0] * s[1] * s[2]
    }

    /// Whether voxel `(i, j, k)` of the scan is set.
    pub fn contains(&self, i: i32, j: i32, k: i32) -> bool {
        let [[i0, i1], [j0, j1], [k0, k1]] = self.bbox;
        if i < i0 || i > i1 || j < j0 || j > j1 || k < k0 || k > k1 {
            return false;
        }
        let v = &self.volume;
        v.get((j - j0) as usize, (i - i0) as usize, (k - k0) as usize) != 0
    }
}

/// The bounding box of an annotation's vertices.
pub fn annotation_bbox(ann: &Annotation) -> Option<BBox> {
    let m = ann.contours_matrix();
    if m.is_empty() {
        return None;
    }
    let mut bb = [[i32::MAX, i32::MIN]; 3];
    for p in &m {
        for a in 0..3 {
            bb[a][0] = bb[a][0].min(p[a]);
            bb[a][1] = bb[a][1].max(p[a]);
        }
    }
    Some(bb)
}

/// matplotlib's `point_in_path` (agg crossing test) for one closed polygon
/// with vertices `poly` (the closing edge back to the first vertex
/// implied), at the point `(tx, ty)`.
pub fn inside(poly: &[[f64; 2]], tx: f64, ty: f64) -> bool {
    let Some(&[sx, sy]) = poly.first() else {
        return false;
    };
    let (mut vtx0, mut vty0) = (sx, sy);
    let mut yflag0 = vty0 >= ty;
    let mut flag = false;
    for idx in 1..=poly.len() {
        let [vtx1, vty1] = if idx == poly.len() {
            [sx, sy]
        } else {
            poly[idx]
        };
        let yflag1 = vty1 >= ty;
        if yflag0 != yflag1
            && (((vty1 - ty) * (vtx0 - vtx1) >= (vtx1 - tx) * (vty0 - vty1)) == yflag1)
        {
            flag = !flag;
        }
        yflag0 = yflag1;
        vtx0 = vtx1;
        vty0 = vty1;
    }
    flag
}

/// The polygon pylidc hands to matplotlib: the vertices, with a closing copy
/// of the first appended when missing, then the last one replaced by
/// `CLOSEPOLY` (`Path(closed=True)`), i.e. dropped.
fn polygon(points: &[[i32; 2]]) -> Vec<[f64; 2]> {
    let mut c: Vec<[i32; 2]> = points.to_vec();
    if let (Some(first), Some(last)) = (c.first().copied(), c.last().copied())
        && first != last
    {
        c.push(first);
    }
    c.pop();
    c.iter()
        .map(|p| [f64::from(p[0]), f64::from(p[1])])
        .collect()
}

/// One reader's mask of `ann` on the box `bb` (which must contain the
/// annotation's vertices), in pylidc's `(i, j, k)` order: `mask[(k * ni + i) * nj + j]`
/// is returned as a [`NoduleMask`] volume (x = j).
pub fn annotation_mask(scan: &Scan, ann: &Annotation, bb: BBox) -> NoduleMask {
    let ni = (bb[0][1] - bb[0][0] + 1) as usize;
    let nj = (bb[1][1] - bb[1][0] + 1) as usize;
    let nk = (bb[2][1] - bb[2][0] + 1) as usize;
    let mut data = vec![0u8; ni * nj * nk];
    let at = |i: i32, j: i32, k: usize| -> Option<usize> {
        let (ii, jj) = (i - bb[0][0], j - bb[1][0]);
        (ii >= 0 && jj >= 0 && (ii as usize) < ni && (jj as usize) < nj)
            .then(|| (k * ni + ii as usize) * nj + jj as usize)
    };
    for pass_inclusion in [true, false] {
        for c in ann
            .contours
            .iter()
            .filter(|c| c.inclusion == pass_inclusion)
        {
            let Some(k) = (c.k as i32)
                .checked_sub(bb[2][0])
                .filter(|&k| k >= 0 && (k as usize) < nk)
            else {
                continue;
            };
            let k = k as usize;
            let poly = polygon(&c.points);
            for ii in 0..ni {
                let i = bb[0][0] + ii as i32;
                for jj in 0..nj {
                    let j = bb[1][0] + jj as i32;
                    let ix = (k * ni + ii) * nj + jj;
                    let ins = inside(&poly, f64::from(i), f64::from(j));
                    if pass_inclusion {
                        data[ix] |= u8::from(ins);
                    } else if ins {
                        data[ix] = 0;
                    }
                }
            }
            // The drawn outline is not part of the nodule.
            for p in &c.points {
                if let Some(ix) = at(p[0], p[1], k) {
                    data[ix] = 0;
                }
            }
        }
    }
    // (k, i, j) with j fastest is exactly Volume's (z, y, x) layout.
    let [sy, sx, sz] = scan.spacing();
    let mut volume = Volume::new(data, [nj, ni, nk], [sx, sy, sz]);
    volume.origin = [
        f64::from(bb[1][0]) * sx,
        f64::from(bb[0][0]) * sy,
        scan.slice_zvals
            .get(bb[2][0].max(0) as usize)
            .copied()
            .unwrap_or_default(),
    ];
    NoduleMask { bbox: bb, volume }
}

/// The consensus mask of one nodule's annotations at `clevel` (pylidc's
/// default 0.5): a voxel is set when at least `clevel` of the readers set it.
pub fn consensus_mask(scan: &Scan, anns: &[&Annotation], clevel: f64) -> Option<NoduleMask> {
    let mut bb: Option<BBox> = None;
    for a in anns {
        let b = annotation_bbox(a)?;
        bb = Some(match bb {
            None => b,
            Some(u) => std::array::from_fn(|ax| [u[ax][0].min(b[ax][0]), u[ax][1].max(b[ax][1])]),
        });
    }
    let bb = bb?;
    let masks: Vec<NoduleMask> = anns.iter().map(|a| annotation_mask(scan, a, bb)).collect();
    let mut out = masks[0].clone();
    let n = masks.len() as f64;
    for (ix, v) in out.volume.data.iter_mut().enumerate() {
        let set = masks.iter().filter(|m| m.volume.data[ix] != 0).count() as f64;
        *v = u8::from(set / n >= clevel);
    }
    Some(out)
}
