//! 3-D shape features (IBSI chapter 3.1, morphology), computed the way
//! pyradiomics' `shape.py` and its C extension do:
//!
//! - the surface is a marching-cubes mesh of the (1-voxel padded) mask with
//!   vertices at edge midpoints; `SurfaceArea` sums its triangle areas and
//!   `MeshVolume` is the signed volume enclosed (divergence theorem: one
//!   tetrahedron per triangle). Triangulation follows pyradiomics'
//!   table exactly (see `shape_table.rs`), since the polygons are not planar;
//! - diameters are the largest distances between mesh vertices, overall and
//!   among vertices sharing an axial (z), coronal (y) or sagittal (x) plane;
//! - axis lengths come from the eigenvalues of the covariance of the voxel
//!   centres in index × spacing coordinates (the direction matrix is ignored,
//!   as pyradiomics does).

use super::linalg::symmetric_eigenvalues;
use super::roi::Roi;
use super::shape_table::TRIANGLES;

/// Corner offsets of a marching cube in (z, y, x); bit k of a configuration is
/// corner k.
const CORNERS: [[usize; 3]; 8] = [
    [0, 0, 0],
    [0, 0, 1],
    [0, 1, 1],
    [0, 1, 0],
    [1, 0, 0],
    [1, 0, 1],
    [1, 1, 1],
    [1, 1, 0],
];

/// Cube edges as corner pairs; a mesh vertex sits at an edge's midpoint.
const EDGES: [[usize; 2]; 12] = [
    [0, 1],
    [1, 2],
    [2, 3],
    [3, 0],
    [4, 5],
    [5, 6],
    [6, 7],
    [7, 4],
    [0, 4],
    [1, 5],
    [2, 6],
    [3, 7],
];

fn edge_midpoint(e: usize) -> [f64; 3] {
    let [a, b] = EDGES[e];
    [0, 1, 2].map(|i| (CORNERS[a][i] + CORNERS[b][i]) as f64 / 2.0)
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Mesh area and volume. Per configuration, the triangles' area, the
/// determinant sum and the summed normal are computed once; a cube at
/// position `p` contributes `det + p·normal` to 6·volume (the determinant is
/// multilinear), so the pass over cubes only counts configurations and sums
/// their positions, in exact integers.
fn mesh_area_volume(padded: &[u8], pdims: [usize; 3], spacing_zyx: [f64; 3]) -> (f64, f64) {
    let [px, py, pz] = pdims;
    let mut count = [0i64; 128];
    let mut signed = [0i64; 128];
    let mut pos = [[0i64; 3]; 128];
    let at = |x: usize, y: usize, z: usize| padded[(z * py + y) * px + x];
    for z in 0..pz - 1 {
        for y in 0..py - 1 {
            for x in 0..px - 1 {
                let mut cfg = 0u8;
                for (k, c) in CORNERS.iter().enumerate() {
                    cfg |= at(x + c[2], y + c[1], z + c[0]) << k;
                }
                if cfg == 0 || cfg == 0xff {
                    continue;
                }
                // pyradiomics folds configurations with corner 7 inside onto
                // their complement, with the volume's sign flipped.
                let (cfg, sign) = if cfg & 0x80 != 0 {
                    (cfg ^ 0xff, -1i64)
                } else {
                    (cfg, 1i64)
                };
                let c = cfg as usize;
                count[c] += 1;
                signed[c] += sign;
                pos[c][0] += sign * z as i64;
                pos[c][1] += sign * y as i64;
                pos[c][2] += sign * x as i64;
            }
        }
    }
    let s = spacing_zyx;
    let (mut area, mut six_volume) = (0.0, 0.0);
    for c in 1..128 {
        if count[c] == 0 {
            continue;
        }
        let (mut a_c, mut det_c, mut n_c) = (0.0, 0.0, [0.0; 3]);
        for tri in TRIANGLES[c] {
            let [a, b, cc] = tri.map(|e| {
                let m = edge_midpoint(e as usize);
                [m[0] * s[0], m[1] * s[1], m[2] * s[2]]
            });
            let ac = [a[0] - cc[0], a[1] - cc[1], a[2] - cc[2]];
            let bc = [b[0] - cc[0], b[1] - cc[1], b[2] - cc[2]];
            let x = cross(ac, bc);
            a_c += 0.5 * dot(x, x).sqrt();
            let bxc = cross(b, cc);
            det_c += dot(a, bxc);
            let cxa = cross(cc, a);
            let axb = cross(a, b);
            for i in 0..3 {
                n_c[i] += bxc[i] + cxa[i] + axb[i];
            }
        }
        area += count[c] as f64 * a_c;
        let p = [0, 1, 2].map(|i| pos[c][i] as f64 * s[i]);
        six_volume += signed[c] as f64 * det_c + dot(p, n_c);
    }
    (area, six_volume / 6.0)
}

/// Largest vertex distances: `[3-D, same z (slice), same y (column), same x (row)]`.
///
/// Vertices are the midpoints of grid edges whose ends differ, in doubled
/// integer coordinates. A vertex strictly between two others on an axis-parallel
/// line can never end a farthest pair (distance to a point along a segment is
/// strictly convex), so only vertices at the ends of their lines are compared:
/// for the 3-D diameter, ends along x, y and z; within a plane, ends along the
/// plane's two axes.
fn diameters(padded: &[u8], pdims: [usize; 3], spacing: [f64; 3]) -> [f64; 4] {
    let [px, py, pz] = pdims;
    let at = |x: usize, y: usize, z: usize| padded[(z * py + y) * px + x];
    let mut verts: Vec<[u32; 3]> = Vec::new();
    for z in 0..pz {
        for y in 0..py {
            for x in 0..px {
                let v = at(x, y, z);
                if x + 1 < px && at(x + 1, y, z) != v {
                    verts.push([2 * x as u32 + 1, 2 * y as u32, 2 * z as u32]);
                }
                if y + 1 < py && at(x, y + 1, z) != v {
                    verts.push([2 * x as u32, 2 * y as u32 + 1, 2 * z as u32]);
                }
                if z + 1 < pz && at(x, y, z + 1) != v {
                    verts.push([2 * x as u32, 2 * y as u32, 2 * z as u32 + 1]);
                }
            }
        }
    }
    let d = [2 * px, 2 * py, 2 * pz];
    // ends[axis][key] = (min, max) coordinate along `axis` on that line.
    let mut ends: [Vec<(u32, u32)>; 3] = [
        vec![(u32::MAX, 0); d[1] * d[2]],
        vec![(u32::MAX, 0); d[0] * d[2]],
        vec![(u32::MAX, 0); d[0] * d[1]],
    ];
    let key = |axis: usize, v: &[u32; 3]| -> usize {
        match axis {
            0 => v[1] as usize + d[1] * v[2] as usize,
            1 => v[0] as usize + d[0] * v[2] as usize,
            _ => v[0] as usize + d[0] * v[1] as usize,
        }
    };
    for v in &verts {
        for axis in 0..3 {
            let e = &mut ends[axis][key(axis, v)];
            e.0 = e.0.min(v[axis]);
            e.1 = e.1.max(v[axis]);
        }
    }
    let is_end = |axis: usize, v: &[u32; 3]| {
        let e = ends[axis][key(axis, v)];
        v[axis] == e.0 || v[axis] == e.1
    };
    let half = [spacing[0] / 2.0, spacing[1] / 2.0, spacing[2] / 2.0];
    // Largest squared distance within `pts`. Exact, with pruning: with c the
    // centroid and r_i = |p_i − c|, d_ij ≤ r_i + r_j, so after sorting by r
    // (descending) both loops can stop as soon as that bound cannot beat the
    // best pair found.
    let max_pairwise = |pts: &[[u32; 3]]| -> f64 {
        if pts.len() < 2 {
            return 0.0;
        }
        let phys: Vec<[f64; 3]> = pts
            .iter()
            .map(|v| [0, 1, 2].map(|i| v[i] as f64 * half[i]))
            .collect();
        let n = phys.len() as f64;
        let c = [0, 1, 2].map(|i| phys.iter().map(|p| p[i]).sum::<f64>() / n);
        let mut by_r: Vec<(f64, [f64; 3])> = phys
            .iter()
            .map(|p| {
                let r =
                    ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2)).sqrt();
                (r, *p)
            })
            .collect();
        by_r.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let mut best2 = 0.0f64;
        for (i, (ri, a)) in by_r.iter().enumerate() {
            // Slack for rounding in r: the bound only prunes, never decides.
            if 2.0 * ri * (1.0 + 1e-12) < best2.sqrt() {
                break;
            }
            for (rj, b) in &by_r[i + 1..] {
                if (ri + rj) * (1.0 + 1e-12) < best2.sqrt() {
                    break;
                }
                let d2 = (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2);
                best2 = best2.max(d2);
            }
        }
        best2
    };
    // Within planes perpendicular to `plane_axis`, using ends along the other two axes.
    let planar = |plane_axis: usize| -> f64 {
        let (a1, a2) = match plane_axis {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        let mut pts: Vec<[u32; 3]> = verts
            .iter()
            .filter(|v| is_end(a1, v) && is_end(a2, v))
            .copied()
            .collect();
        pts.sort_unstable_by_key(|v| v[plane_axis]);
        pts.chunk_by(|a, b| a[plane_axis] == b[plane_axis])
            .map(max_pairwise)
            .fold(0.0, f64::max)
    };
    let candidates: Vec<[u32; 3]> = verts
        .iter()
        .filter(|v| is_end(0, v) && is_end(1, v) && is_end(2, v))
        .copied()
        .collect();
    let d3 = max_pairwise(&candidates);
    let (slice, (column, row)) =
        rayon::join(|| planar(2), || rayon::join(|| planar(1), || planar(0)));
    [d3.sqrt(), slice.sqrt(), column.sqrt(), row.sqrt()]
}

/// Eigenvalues (ascending) of the covariance of voxel centres in mm.
fn pca_eigenvalues(roi: &Roi) -> [f64; 3] {
    let [nx, ny, nz] = roi.dims;
    let s = roi.spacing;
    let n = roi.n_voxels as f64;
    let mut sum = [0.0f64; 3];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                if roi.levels[roi.idx(x, y, z)] != 0 {
                    sum[0] += x as f64;
                    sum[1] += y as f64;
                    sum[2] += z as f64;
                }
            }
        }
    }
    let mean = sum.map(|v| v / n);
    let mut cov = [0.0f64; 9];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                if roi.levels[roi.idx(x, y, z)] != 0 {
                    let c = [
                        (x as f64 - mean[0]) * s[0],
                        (y as f64 - mean[1]) * s[1],
                        (z as f64 - mean[2]) * s[2],
                    ];
                    for i in 0..3 {
                        for j in 0..3 {
                            cov[i * 3 + j] += c[i] * c[j];
                        }
                    }
                }
            }
        }
    }
    for v in &mut cov {
        *v /= n;
    }
    let ev = symmetric_eigenvalues(&mut cov, 3);
    // pyradiomics rounds tiny negative eigenvalues (machine error on flat ROIs) to 0.
    let fix = |v: f64| if v < 0.0 && v > -1e-10 { 0.0 } else { v };
    [fix(ev[0]), fix(ev[1]), fix(ev[2])]
}

pub fn compute(roi: &Roi) -> Vec<(&'static str, f64)> {
    // The ROI grid is already padded by one voxel, as pyradiomics pads the mask.
    let pdims = roi.pdims;
    let padded: Vec<u8> = roi.levels.iter().map(|&l| u8::from(l != 0)).collect();
    let s = roi.spacing;
    let ((area, volume), (diam, ev)) = rayon::join(
        || mesh_area_volume(&padded, pdims, [s[2], s[1], s[0]]),
        || rayon::join(|| diameters(&padded, pdims, s), || pca_eigenvalues(roi)),
    );
    let voxel_volume = roi.n_voxels as f64 * s[0] * s[1] * s[2];
    let axis = |l: f64| if l < 0.0 { f64::NAN } else { 4.0 * l.sqrt() };
    let ratio = |a: f64, b: f64| {
        if a < 0.0 || b < 0.0 {
            f64::NAN
        } else {
            (a / b).sqrt()
        }
    };
    let sphericity = (36.0 * std::f64::consts::PI * volume * volume).cbrt() / area;
    vec![
        ("Elongation", ratio(ev[1], ev[2])),   // IBSI Q3CK
        ("Flatness", ratio(ev[0], ev[2])),     // IBSI N17B
        ("LeastAxisLength", axis(ev[0])),      // IBSI 7J51
        ("MajorAxisLength", axis(ev[2])),      // IBSI TDIC
        ("Maximum2DDiameterColumn", diam[2]),  // no IBSI id
        ("Maximum2DDiameterRow", diam[3]),     // no IBSI id
        ("Maximum2DDiameterSlice", diam[1]),   // no IBSI id
        ("Maximum3DDiameter", diam[0]),        // IBSI L0JK
        ("MeshVolume", volume),                // IBSI RNU0
        ("MinorAxisLength", axis(ev[1])),      // IBSI P9VJ
        ("Sphericity", sphericity),            // IBSI QCFX
        ("SurfaceArea", area),                 // IBSI C0JK
        ("SurfaceVolumeRatio", area / volume), // IBSI 2PR5
        ("VoxelVolume", voxel_volume),         // IBSI YEKZ
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_cube_config_has_a_closed_mesh_volume() {
        // One voxel: the mesh is an octahedron with vertices at face centres,
        // volume 4/3 · (1/2)³ · … = 1/6 of the voxel's bounding cube (4/3·r³ with r=½
        // for the L1 ball): (2r)³/6 = 1/6 for unit spacing.
        let padded = {
            let mut p = vec![0u8; 27];
            p[13] = 1;
            p
        };
        let (area, volume) = mesh_area_volume(&padded, [3, 3, 3], [1.0, 1.0, 1.0]);
        assert!((volume - 1.0 / 6.0).abs() < 1e-12, "{volume}");
        // 8 equilateral faces of side √2/2.
        let side: f64 = 0.5f64.sqrt();
        let expect = 8.0 * (3f64.sqrt() / 4.0) * side * side;
        assert!((area - expect).abs() < 1e-12, "{area} vs {expect}");
        let d = diameters(&padded, [3, 3, 3], [1.0, 1.0, 1.0]);
        assert_eq!(d, [1.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn mesh_volume_is_translation_invariant_and_scales_with_spacing() {
        let mut p = vec![0u8; 6 * 6 * 6];
        for (x, y, z) in [
            (1, 1, 1),
            (2, 1, 1),
            (2, 2, 1),
            (2, 2, 2),
            (3, 2, 2),
            (1, 3, 4),
        ] {
            p[(z * 6 + y) * 6 + x] = 1;
        }
        let (a1, v1) = mesh_area_volume(&p, [6, 6, 6], [1.0, 1.0, 1.0]);
        let mut q = vec![0u8; 6 * 6 * 6];
        for (x, y, z) in [
            (2, 2, 1),
            (3, 2, 1),
            (3, 3, 1),
            (3, 3, 2),
            (4, 3, 2),
            (2, 4, 4),
        ] {
            q[(z * 6 + y) * 6 + x] = 1;
        }
        let (a2, v2) = mesh_area_volume(&q, [6, 6, 6], [1.0, 1.0, 1.0]);
        assert!((a1 - a2).abs() < 1e-12 && (v1 - v2).abs() < 1e-12);
        let (_, v3) = mesh_area_volume(&p, [6, 6, 6], [2.0, 0.5, 3.0]);
        assert!((v3 - 3.0 * v1).abs() < 1e-12);
    }
}
