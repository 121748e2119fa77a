//! Nodule patches: an isotropic cube around a nodule, resampled with
//! trilinear interpolation, plus 2.5-D views (axial, coronal, sagittal
//! planes through the centre) windowed to [0, 1] for the image model.
//!
//! The cube's axes are the patient axes (LPS), whatever the acquisition
//! orientation, so "axial" really is axial. Its voxel `(size/2, size/2,
//! size/2)` sits exactly on the requested centre (for the default 64³ that is
//! index 32, one voxel past the geometric middle, so a voxel, not a corner,
//! is centred). Samples outside the CT take `pad_hu` (air, −1000 HU): a
//! nodule near the field-of-view edge still gets a full-size patch.
//!
//! View layout (row-major, `size × size`, radiological display convention):
//! * axial: rows anterior → posterior (+y), columns patient right → left (+x);
//! * coronal: rows superior → inferior (−z), columns right → left (+x);
//! * sagittal: rows superior → inferior (−z), columns anterior → posterior (+y).

use serde::{Deserialize, Serialize};

use super::Volume;

/// A linear HU window mapped to [0, 1] and clamped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HuWindow {
    pub lower: f32,
    pub upper: f32,
}

impl HuWindow {
    /// Lung window −1000..400 HU (width 1400, level −300), the usual
    /// reading window for pulmonary nodules.
    pub const LUNG: Self = Self {
        lower: -1000.0,
        upper: 400.0,
    };

    pub fn apply(&self, hu: f32) -> f32 {
        ((hu - self.lower) / (self.upper - self.lower)).clamp(0.0, 1.0)
    }
}

/// Patch settings. Defaults: 64³ at 1 mm, air padding, lung window, one
/// slice per view.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PatchConfig {
    /// Edge length in voxels.
    pub size: usize,
    /// Isotropic output spacing, mm.
    pub spacing_mm: f64,
    /// Value for samples outside the CT, HU.
    pub pad_hu: f32,
    pub window: HuWindow,
    /// Extra planes on each side of the centre plane per view: 0 gives the
    /// centre plane only, `k` gives `2k + 1` adjacent planes (multi-slice 2.5-D).
    pub view_half_width: usize,
}

impl Default for PatchConfig {
    fn default() -> Self {
        Self {
            size: 64,
            spacing_mm: 1.0,
            pad_hu: -1000.0,
            window: HuWindow::LUNG,
            view_half_width: 0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatchError {
    #[error("invalid patch configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("the patch centre {0:?} is not a finite position")]
    NonFiniteCenter([f64; 3]),
    #[error(
        "the patch centre {center_mm:?} mm lies outside the CT volume (continuous index {index:?}); \
         check that it is in LPS patient coordinates of this series"
    )]
    CenterOutsideVolume {
        center_mm: [f64; 3],
        index: [f64; 3],
    },
    #[error("the mask has no voxel set")]
    EmptyMask,
    #[error("the mask is not on the image grid")]
    MaskGridMismatch,
}

/// One plane of a view, windowed to [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Plane offset from the centre, in voxels of the patch.
    pub offset: isize,
    pub pixels: Vec<f32>,
}

/// The extracted patch.
#[derive(Debug, Clone, PartialEq)]
pub struct NodulePatch {
    /// Resampled HU, `size³`, identity direction (LPS), isotropic spacing.
    pub hu: Volume<f32>,
    pub center_mm: [f64; 3],
    pub window: HuWindow,
    pub axial: Vec<View>,
    pub coronal: Vec<View>,
    pub sagittal: Vec<View>,
}

impl NodulePatch {
    /// The cube windowed to [0, 1], same layout as `hu`.
    pub fn windowed(&self) -> Vec<f32> {
        self.hu.data.iter().map(|v| self.window.apply(*v)).collect()
    }
}

/// Centroid (mm, patient space) of the non-zero voxels of `mask`.
pub fn mask_centroid(mask: &Volume<u8>) -> Option<[f64; 3]> {
    let [nx, ny, nz] = mask.dims;
    let mut sum = [0.0f64; 3];
    let mut n = 0usize;
    for z in 0..nz {
        for y in 0..ny {
            let row = &mask.data[(z * ny + y) * nx..(z * ny + y + 1) * nx];
            for (x, v) in row.iter().enumerate() {
                if *v != 0 {
                    sum[0] += x as f64;
                    sum[1] += y as f64;
                    sum[2] += z as f64;
                    n += 1;
                }
            }
        }
    }
    (n > 0).then(|| {
        let c = [sum[0] / n as f64, sum[1] / n as f64, sum[2] / n as f64];
        mask.index_to_physical(c)
    })
}

/// Centre (mm) of the index-space bounding box of the non-zero voxels.
pub fn mask_bbox_center(mask: &Volume<u8>) -> Option<[f64; 3]> {
    let [nx, ny, _] = mask.dims;
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for (i, v) in mask.data.iter().enumerate() {
        if *v != 0 {
            let p = [i % nx, (i / nx) % ny, i / (nx * ny)];
            for a in 0..3 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a]);
            }
        }
    }
    (lo[0] != usize::MAX).then(|| {
        mask.index_to_physical([
            (lo[0] + hi[0]) as f64 / 2.0,
            (lo[1] + hi[1]) as f64 / 2.0,
            (lo[2] + hi[2]) as f64 / 2.0,
        ])
    })
}

/// Patch centred on a mask's centroid.
pub fn extract_patch_at_mask(
    volume: &Volume<f32>,
    mask: &Volume<u8>,
    cfg: &PatchConfig,
) -> Result<NodulePatch, PatchError> {
    if !volume.same_grid(mask) {
        return Err(PatchError::MaskGridMismatch);
    }
    let center = mask_centroid(mask).ok_or(PatchError::EmptyMask)?;
    extract_patch(volume, center, cfg)
}

/// Resample a `size³` cube at `spacing_mm` centred on `center_mm` (LPS) and
/// cut its views.
pub fn extract_patch(
    volume: &Volume<f32>,
    center_mm: [f64; 3],
    cfg: &PatchConfig,
) -> Result<NodulePatch, PatchError> {
    if cfg.size == 0 || cfg.size > 512 {
        return Err(PatchError::InvalidConfig("size must be 1..=512"));
    }
    if !(cfg.spacing_mm.is_finite() && cfg.spacing_mm > 0.0) {
        return Err(PatchError::InvalidConfig("spacing must be positive"));
    }
    if cfg.window.upper.partial_cmp(&cfg.window.lower) != Some(std::cmp::Ordering::Greater) {
        return Err(PatchError::InvalidConfig("window upper must exceed lower"));
    }
    if cfg.view_half_width > cfg.size / 2 {
        return Err(PatchError::InvalidConfig(
            "view_half_width too large for size",
        ));
    }
    if center_mm.iter().any(|c| !c.is_finite()) {
        return Err(PatchError::NonFiniteCenter(center_mm));
    }
    let index = volume.physical_to_index(center_mm);
    if index
        .iter()
        .zip(volume.dims)
        .any(|(i, n)| *i < -0.5 || *i > n as f64 - 0.5)
    {
        return Err(PatchError::CenterOutsideVolume { center_mm, index });
    }

    let n = cfg.size;
    let c = (n / 2) as f64;
    let s = cfg.spacing_mm;
    let origin = [
        center_mm[0] - c * s,
        center_mm[1] - c * s,
        center_mm[2] - c * s,
    ];
    // Index-space position of the cube's first voxel and the index step for
    // one patch voxel along each patient axis: the inner loop is additions.
    let idx0 = volume.physical_to_index(origin);
    let step = |axis: usize| {
        let mut p = origin;
        p[axis] += s;
        let q = volume.physical_to_index(p);
        [q[0] - idx0[0], q[1] - idx0[1], q[2] - idx0[2]]
    };
    let (dx, dy, dz) = (step(0), step(1), step(2));
    let mut data = Vec::with_capacity(n * n * n);
    for k in 0..n {
        for j in 0..n {
            let base = [
                idx0[0] + j as f64 * dy[0] + k as f64 * dz[0],
                idx0[1] + j as f64 * dy[1] + k as f64 * dz[1],
                idx0[2] + j as f64 * dy[2] + k as f64 * dz[2],
            ];
            for i in 0..n {
                let fi = i as f64;
                data.push(trilinear(
                    volume,
                    [
                        base[0] + fi * dx[0],
                        base[1] + fi * dx[1],
                        base[2] + fi * dx[2],
                    ],
                    cfg.pad_hu,
                ));
            }
        }
    }
    let mut hu = Volume::new(data, [n, n, n], [s, s, s]);
    hu.origin = origin;

    let w = cfg.window;
    let at = |i: usize, j: usize, k: usize| w.apply(hu.data[(k * n + j) * n + i]);
    let offsets: Vec<isize> =
        (-(cfg.view_half_width as isize)..=cfg.view_half_width as isize).collect();
    let centre = n / 2;
    let plane = |o: isize| (centre as isize + o).clamp(0, n as isize - 1) as usize;
    let axial = offsets
        .iter()
        .map(|&o| {
            let k = plane(o);
            View {
                offset: o,
                pixels: (0..n * n).map(|p| at(p % n, p / n, k)).collect(),
            }
        })
        .collect();
    let coronal = offsets
        .iter()
        .map(|&o| {
            let j = plane(o);
            View {
                offset: o,
                pixels: (0..n * n).map(|p| at(p % n, j, n - 1 - p / n)).collect(),
            }
        })
        .collect();
    let sagittal = offsets
        .iter()
        .map(|&o| {
            let i = plane(o);
            View {
                offset: o,
                pixels: (0..n * n).map(|p| at(i, p % n, n - 1 - p / n)).collect(),
            }
        })
        .collect();
    Ok(NodulePatch {
        hu,
        center_mm,
        window: w,
        axial,
        coronal,
        sagittal,
    })
}

/// Trilinear interpolation at a continuous index; each of the eight
/// neighbours that lies outside the volume counts as `pad`.
pub fn trilinear(volume: &Volume<f32>, idx: [f64; 3], pad: f32) -> f32 {
    let [nx, ny, nz] = volume.dims;
    let (x0, y0, z0) = (idx[0].floor(), idx[1].floor(), idx[2].floor());
    let (fx, fy, fz) = (
        (idx[0] - x0) as f32,
        (idx[1] - y0) as f32,
        (idx[2] - z0) as f32,
    );
    let (x0, y0, z0) = (x0 as i64, y0 as i64, z0 as i64);
    let get = |x: i64, y: i64, z: i64| -> f32 {
        if x < 0 || y < 0 || z < 0 || x >= nx as i64 || y >= ny as i64 || z >= nz as i64 {
            pad
        } else {
            volume.data[(z as usize * ny + y as usize) * nx + x as usize]
        }
    };
    let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
    let c00 = lerp(get(x0, y0, z0), get(x0 + 1, y0, z0), fx);
    let c10 = lerp(get(x0, y0 + 1, z0), get(x0 + 1, y0 + 1, z0), fx);
    let c01 = lerp(get(x0, y0, z0 + 1), get(x0 + 1, y0, z0 + 1), fx);
    let c11 = lerp(get(x0, y0 + 1, z0 + 1), get(x0 + 1, y0 + 1, z0 + 1), fx);
    lerp(lerp(c00, c10, fy), lerp(c01, c11, fy), fz)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lung-like volume (−900 HU) with a 60 HU sphere of `radius` mm at
    /// `center` (mm), sampled at `spacing`.
    fn sphere_volume(
        dims: [usize; 3],
        spacing: [f64; 3],
        center: [f64; 3],
        radius: f64,
    ) -> Volume<f32> {
        let mut v = Volume::new(vec![-900.0; dims[0] * dims[1] * dims[2]], dims, spacing);
        v.origin = [-40.0, -30.0, -60.0];
        for z in 0..dims[2] {
            for y in 0..dims[1] {
                for x in 0..dims[0] {
                    let p = v.index_to_physical([x as f64, y as f64, z as f64]);
                    let d2: f64 = (0..3).map(|a| (p[a] - center[a]).powi(2)).sum();
                    if d2 <= radius * radius {
                        let i = v.index(x, y, z);
                        v.data[i] = 60.0;
                    }
                }
            }
        }
        v
    }

    /// Centroid (patch index) and extent along each axis of voxels > −420 HU
    /// (half-way between −900 and 60).
    fn blob(p: &NodulePatch) -> ([f64; 3], [usize; 3]) {
        let n = p.hu.dims[0];
        let mut sum = [0.0; 3];
        let mut cnt = 0.0;
        let mut lo = [n; 3];
        let mut hi = [0; 3];
        for k in 0..n {
            for j in 0..n {
                for i in 0..n {
                    if p.hu.get(i, j, k) > -420.0 {
                        for (a, v) in [i, j, k].into_iter().enumerate() {
                            sum[a] += v as f64;
                            lo[a] = lo[a].min(v);
                            hi[a] = hi[a].max(v);
                        }
                        cnt += 1.0;
                    }
                }
            }
        }
        (
            [sum[0] / cnt, sum[1] / cnt, sum[2] / cnt],
            [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1],
        )
    }

    #[test]
    fn a_sphere_ends_up_centred() {
        let center = [-7.3, 4.6, -38.2];
        let v = sphere_volume([80, 70, 60], [1.0, 1.0, 1.0], center, 6.0);
        let p = extract_patch(&v, center, &PatchConfig::default()).unwrap();
        assert_eq!(p.hu.dims, [64, 64, 64]);
        let (c, _) = blob(&p);
        for a in 0..3 {
            assert!((c[a] - 32.0).abs() < 0.25, "axis {a}: centroid {c:?}");
        }
        // The patch's own geometry puts voxel 32 on the centre.
        let q = p.hu.index_to_physical([32.0, 32.0, 32.0]);
        for a in 0..3 {
            assert!((q[a] - center[a]).abs() < 1e-9);
        }
    }

    #[test]
    fn anisotropic_spacing_is_resampled_to_a_round_blob() {
        // 0.7 × 0.7 × 2.5 mm voxels: without resampling the sphere would be
        // 3.6× longer in z (in voxels) than in x.
        let center = [2.0, -3.0, -30.0];
        let v = sphere_volume([120, 110, 30], [0.7, 0.7, 2.5], center, 8.0);
        let p = extract_patch(&v, center, &PatchConfig::default()).unwrap();
        let (c, ext) = blob(&p);
        for a in 0..3 {
            assert!((c[a] - 32.0).abs() < 0.5, "centroid {c:?}");
        }
        // Diameter 16 mm → about 16 voxels of 1 mm on every axis; z is
        // sampled at 2.5 mm so its edge is known to ±1.25 mm per side.
        for (a, e) in ext.iter().enumerate() {
            assert!((14..=19).contains(e), "axis {a}: extent {ext:?}");
        }
        assert!(ext[0].abs_diff(ext[1]) <= 1, "{ext:?}");
    }

    #[test]
    fn mask_centroid_centres_the_patch() {
        let center = [5.0, 5.0, -40.0];
        let v = sphere_volume([80, 80, 50], [0.8, 0.8, 1.5], center, 5.0);
        let mask = Volume {
            data: v.data.iter().map(|h| u8::from(*h > 0.0)).collect(),
            dims: v.dims,
            spacing: v.spacing,
            origin: v.origin,
            direction: v.direction,
        };
        let c = mask_centroid(&mask).unwrap();
        let b = mask_bbox_center(&mask).unwrap();
        for a in 0..3 {
            assert!((c[a] - center[a]).abs() < 0.3, "{c:?}");
            assert!((b[a] - center[a]).abs() < 0.8, "{b:?}");
        }
        let p = extract_patch_at_mask(&v, &mask, &PatchConfig::default()).unwrap();
        let (pc, _) = blob(&p);
        for a in 0..3 {
            assert!((pc[a] - 32.0).abs() < 0.5, "{pc:?}");
        }
        let empty = Volume {
            data: vec![0; mask.len()],
            ..mask.clone()
        };
        assert_eq!(
            extract_patch_at_mask(&v, &empty, &PatchConfig::default()),
            Err(PatchError::EmptyMask)
        );
    }

    #[test]
    fn outside_the_volume_is_padded_with_air() {
        // Centre on the corner voxel: seven eighths of the cube is outside.
        let v = Volume::new(vec![100.0; 10 * 10 * 10], [10, 10, 10], [1.0; 3]);
        let p = extract_patch(&v, [0.0, 0.0, 0.0], &PatchConfig::default()).unwrap();
        assert_eq!(p.hu.get(0, 0, 0), -1000.0);
        assert_eq!(p.hu.get(32, 32, 32), 100.0);
        assert_eq!(p.hu.get(41, 41, 41), 100.0);
        assert_eq!(p.hu.get(42, 32, 32), -1000.0);
        // Half-way between the last voxel and outside: the average.
        let q = trilinear(&v, [9.5, 5.0, 5.0], -1000.0);
        assert!((q - (-450.0)).abs() < 1e-4);
    }

    #[test]
    fn a_centre_outside_the_volume_is_refused() {
        let v = Volume::new(vec![0.0; 1000], [10, 10, 10], [1.0; 3]);
        assert!(matches!(
            extract_patch(&v, [50.0, 0.0, 0.0], &PatchConfig::default()),
            Err(PatchError::CenterOutsideVolume { .. })
        ));
        assert!(matches!(
            extract_patch(&v, [f64::NAN, 0.0, 0.0], &PatchConfig::default()),
            Err(PatchError::NonFiniteCenter(_))
        ));
        let bad = PatchConfig {
            spacing_mm: 0.0,
            ..PatchConfig::default()
        };
        assert!(matches!(
            extract_patch(&v, [5.0, 5.0, 5.0], &bad),
            Err(PatchError::InvalidConfig(_))
        ));
    }

    #[test]
    fn the_window_maps_to_unit_range_and_clamps() {
        let w = HuWindow::LUNG;
        assert_eq!(w.apply(-1000.0), 0.0);
        assert_eq!(w.apply(400.0), 1.0);
        assert_eq!(w.apply(-2000.0), 0.0);
        assert_eq!(w.apply(3000.0), 1.0);
        assert!((w.apply(-300.0) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn views_follow_the_radiological_layout() {
        // A ramp in each patient axis, so each view's orientation is visible.
        let n = 8;
        let mk = |f: &dyn Fn(usize, usize, usize) -> f32| {
            let mut v = Volume::new(vec![0.0; n * n * n], [n, n, n], [1.0; 3]);
            for z in 0..n {
                for y in 0..n {
                    for x in 0..n {
                        let i = v.index(x, y, z);
                        v.data[i] = f(x, y, z);
                    }
                }
            }
            v
        };
        let cfg = PatchConfig {
            size: 8,
            window: HuWindow {
                lower: 0.0,
                upper: 7.0,
            },
            view_half_width: 1,
            ..PatchConfig::default()
        };
        let c = [4.0, 4.0, 4.0];
        let px = extract_patch(&mk(&|x, _, _| x as f32), c, &cfg).unwrap();
        let py = extract_patch(&mk(&|_, y, _| y as f32), c, &cfg).unwrap();
        let pz = extract_patch(&mk(&|_, _, z| z as f32), c, &cfg).unwrap();
        assert_eq!(px.axial.len(), 3);
        assert_eq!(px.axial[0].offset, -1);
        let row = |v: &View, r: usize| v.pixels[r * n..(r + 1) * n].to_vec();
        // Axial: columns go right→left (+x), rows anterior→posterior (+y).
        assert!(row(&px.axial[1], 0).windows(2).all(|w| w[1] > w[0]));
        assert!(py.axial[1].pixels[n] > py.axial[1].pixels[0]);
        // Coronal and sagittal: the top row is superior (largest z).
        assert!(pz.coronal[1].pixels[0] > pz.coronal[1].pixels[n]);
        assert!(pz.sagittal[1].pixels[0] > pz.sagittal[1].pixels[n]);
        // Sagittal columns go anterior→posterior (+y).
        assert!(row(&py.sagittal[1], 3).windows(2).all(|w| w[1] > w[0]));
        // Adjacent planes differ by one voxel along the fixed axis.
        assert!(pz.axial[2].pixels[0] > pz.axial[0].pixels[0]);
    }
}
