//! The `nodule-radiomics` job: fetch one chest CT series (and the DICOM SEG
//! series of its study) over DICOMweb, build each nodule's mask, measure it,
//! compute its 107 radiomics features and cut its patch, cache the result.
//!
//! Like CT body composition ([`super::jobs`]) this never runs inside a hook:
//! the hook looks the result up in the imaging cache and enqueues this job
//! when it is missing ([`super::findings`]). One job per (series, findings,
//! patch settings, [`PIPELINE_VERSION`]); the worker:
//!
//! 1. parses the payload ([`NoduleJob`]: DICOMweb base, study, CT series,
//!    SEG series, the point findings of FHIR Observations, the patch
//!    settings); nothing in it identifies the patient;
//! 2. stops when the cache already holds the answer (at-least-once delivery);
//! 3. retrieves the CT series (WADO-RS, decoded as parts arrive) and each SEG
//!    series;
//! 4. on a blocking thread, per nodule: one nodule per SEG segment
//!    (PS3.3 C.8.20, rasterised on the CT grid by `dicom::read_seg_mask`); a
//!    point finding inside a SEG segment is that segment's nodule; any other
//!    point finding is segmented around its point ([`segment_at_point`]);
//!    then size ([`axes`]), volume, attenuation, the radiomics features
//!    (`radiomics::extract`, pyradiomics defaults, on the CT's own grid) and
//!    the isotropic patch at the requested [`PatchConfig`];
//! 5. `put_imaging_result(series, PIPELINE_VERSION, "nodule-radiomics:<digest>", …)`.
//!
//! A nodule that cannot be measured (its point lies outside the series, no
//! tissue near it, a SEG that does not lie on the CT grid) is kept in the
//! result with the reason, so its card can say why while the others are
//! scored. Failures of the whole series are classified as for body
//! composition ([`super::jobs::classify`]).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::Volume;
use super::dicom::{
    AssembleOptions, CtVolume, SegSegment, SegSelection, read_seg_mask, seg_segments,
};
use super::dicomweb::{DicomUid, DicomWebClient, DicomWebError, SeriesRef, WadoPart};
use super::jobs::{FailureClass, classify, job_failure};
use super::patch::{HuWindow, PatchConfig, extract_patch, mask_centroid};
use crate::clinical::nodule::NoduleType;
use crate::radiomics::{self, Features};
use crate::store::jobs::JobHandler;
use crate::store::{Job, JobFailure, NewJob, Store};

/// Version of everything that shapes a result: decoding, SEG reading, the
/// point-seeded segmentation, the measurements, radiomics and the patch.
pub const PIPELINE_VERSION: &str = "lung-nodule-1";
/// `jobs.kind` of this job.
pub const JOB_KIND: &str = "nodule-radiomics";
/// `imaging_results.kind` prefix of its result (`nodule-radiomics:<digest>`).
pub const RESULT_KIND: &str = "nodule-radiomics";

/// HU threshold of the point-seeded segmentation for solid, part-solid and
/// untyped findings: lung parenchyma is about −850 HU, soft tissue above
/// −100 HU; −500 HU keeps the nodule and its partial-volume rim and leaves
/// the aerated lung out. A choice of this pipeline, documented in
/// docs/nodule-service.md, not a guideline value.
pub const SEED_THRESHOLD_HU: f32 = -500.0;
/// The same for findings typed ground-glass (typically −750 to −300 HU).
pub const SEED_THRESHOLD_GGO_HU: f32 = -750.0;
/// Diameter assumed for a point finding without one: 30 mm, the upper size
/// limit of a "nodule" (Fleischner glossary); larger is a mass.
pub const DEFAULT_SEED_DIAMETER_MM: f64 = 30.0;
/// Voxels at or above this HU form the solid component of a nodule. A
/// pipeline choice (documented), used only to estimate the type and solid
/// size when the finding does not state them.
pub const SOLID_COMPONENT_HU: f32 = -300.0;

// ------------------------------------------------------------------ payload

/// A nodule located by a point (a FHIR Observation's coordinates). `key` is
/// assigned by the hook ("f0", "f1", … in its findings order), so no FHIR
/// id, which could carry patient data, enters the job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointFinding {
    pub key: String,
    /// Patient-space (DICOM LPS) position, mm.
    pub center_mm: [f64; 3],
    /// Stated diameter, mm (bounds the point-seeded segmentation).
    #[serde(default)]
    pub diameter_mm: Option<f64>,
    /// Typed ground-glass: a lower segmentation threshold.
    #[serde(default)]
    pub ground_glass: bool,
}

/// The job's payload. No access token and no patient identifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoduleJob {
    pub dicomweb_base: String,
    pub study_uid: String,
    pub series_uid: String,
    /// SEG series of the same study (one nodule per segment).
    #[serde(default)]
    pub seg_series: Vec<String>,
    #[serde(default)]
    pub points: Vec<PointFinding>,
    /// The patch the model expects (its `NoduleModelInfo.patch`), else the default.
    pub patch: PatchConfig,
}

impl NoduleJob {
    pub fn series_ref(&self) -> Result<SeriesRef, DicomWebError> {
        SeriesRef::parse(&self.dicomweb_base, &self.study_uid, &self.series_uid)
    }

    /// Digest of what, besides the series, shapes the result: SEG series,
    /// point findings and patch settings. A corrected finding or another
    /// model's patch size is a new job and a new cache entry.
    pub fn digest(&self) -> String {
        let json =
            serde_json::to_vec(&(&self.seg_series, &self.points, &self.patch)).unwrap_or_default();
        hex::encode(&Sha256::digest(json)[..8])
    }

    /// `imaging_results.kind` of this job's result.
    pub fn result_kind(&self) -> String {
        format!("{RESULT_KIND}:{}", self.digest())
    }

    /// At most one unfinished job per series, findings and pipeline version.
    pub fn dedupe_key(&self) -> String {
        format!(
            "{JOB_KIND}:{}:{PIPELINE_VERSION}:{}",
            self.series_uid,
            self.digest()
        )
    }

    pub fn to_new_job(&self, max_attempts: i32) -> NewJob {
        NewJob::deduplicated(JOB_KIND, self, self.dedupe_key(), max_attempts)
    }
}

// ------------------------------------------------------------------- result

/// What is cached per (SeriesInstanceUID, [`PIPELINE_VERSION`],
/// [`NoduleJob::result_kind`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoduleImagingResult {
    pub pipeline_version: String,
    pub study_uid: String,
    pub series_uid: String,
    pub digest: String,
    #[serde(flatten)]
    pub outcome: NoduleImagingOutcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum NoduleImagingOutcome {
    Measured {
        nodules: Vec<MeasuredNodule>,
        series_slices: usize,
        /// Accepted series irregularities and SEG instances that could not
        /// be read at all, for audit and the card.
        #[serde(default)]
        warnings: Vec<String>,
    },
    /// The series can never be analysed by this pipeline: why.
    NotMeasurable { reason: String },
}

/// A segment of a SEG instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegRef {
    pub sop_instance_uid: String,
    pub segment_number: u16,
    #[serde(default)]
    pub label: Option<String>,
}

/// One nodule of the series: where it came from and its measurement, or why
/// there is none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasuredNodule {
    /// The point finding ([`PointFinding::key`]) this nodule answers.
    #[serde(default)]
    pub point: Option<String>,
    /// The SEG segment that gave its mask.
    #[serde(default)]
    pub seg: Option<SegRef>,
    #[serde(default)]
    pub measurement: Option<NoduleMeasurement>,
    /// Why it could not be measured.
    #[serde(default)]
    pub error: Option<String>,
}

/// How the mask was obtained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum MaskSource {
    /// A DICOM SEG segment.
    Seg,
    /// [`segment_at_point`]: the connected component at or above
    /// `threshold_hu` around the point, inside a sphere of `radius_mm`.
    PointSeeded { threshold_hu: f32, radius_mm: f64 },
}

/// Sizes, radiomics and the patch of one nodule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoduleMeasurement {
    pub mask_source: MaskSource,
    /// Mask centroid, patient mm (LPS).
    pub center_mm: [f64; 3],
    /// Long and short axis on the axial slice where the nodule is largest
    /// (Lung-RADS v2022 measurement notes), mm.
    pub long_axis_mm: f64,
    pub short_axis_mm: f64,
    /// (long + short) / 2.
    pub mean_diameter_mm: f64,
    /// Voxel count × voxel volume.
    pub volume_mm3: f64,
    pub voxels: usize,
    pub mean_hu: f64,
    /// Voxels ≥ [`SOLID_COMPONENT_HU`]: their mean diameter (same axes
    /// rule) and volume; `None` when there are none.
    pub solid_component: Option<SolidComponent>,
    /// Type estimated from attenuation (used only when the finding does not
    /// state one).
    pub estimated_type: NoduleType,
    /// pyradiomics-named features, in pyradiomics order.
    pub radiomics: Vec<(String, f64)>,
    pub patch: StoredPatch,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SolidComponent {
    pub mean_diameter_mm: f64,
    pub volume_mm3: f64,
    /// Share of the nodule's voxels.
    pub fraction: f64,
}

/// The patch as stored: the model's three centre planes (f32 in [0, 1],
/// little-endian, base64) and, for the review app, the windowed centre
/// axial plane and the mask on it (u8, base64).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredPatch {
    pub size: usize,
    pub spacing_mm: f64,
    pub window: HuWindow,
    /// Axial, coronal, sagittal centre planes.
    pub views: [String; 3],
    /// `size × size` u8, 0..255.
    pub axial: String,
    /// `size × size` u8, 0 or 1.
    pub mask_axial: String,
}

impl StoredPatch {
    /// The three views as the model takes them.
    pub fn decode_views(&self) -> Result<[Vec<f32>; 3], String> {
        let n = self.size * self.size;
        let one = |s: &str| -> Result<Vec<f32>, String> {
            let bytes = B64.decode(s).map_err(|e| format!("patch view: {e}"))?;
            if bytes.len() != n * 4 {
                return Err(format!(
                    "patch view holds {} bytes, {n} floats expected",
                    bytes.len()
                ));
            }
            Ok(bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        Ok([
            one(&self.views[0])?,
            one(&self.views[1])?,
            one(&self.views[2])?,
        ])
    }
}

impl NoduleMeasurement {
    pub fn features(&self) -> Features {
        self.radiomics.iter().cloned().collect()
    }
}

// ---------------------------------------------------- point-seeded segmentation

/// Why a point finding could not be segmented.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SeedError {
    #[error(
        "the stated position {center_mm:?} mm lies outside the CT series (continuous voxel index {index:.1?}, series size {dims:?}); check that it is in LPS patient coordinates of this series"
    )]
    OutsideVolume {
        center_mm: [f64; 3],
        index: [f64; 3],
        dims: [usize; 3],
    },
    #[error("the stated position {0:?} mm is not a finite number")]
    NotFinite([f64; 3]),
    #[error("the stated diameter {0} mm is not a positive size")]
    BadDiameter(f64),
    #[error(
        "no tissue at or above {threshold_hu} HU within {radius_mm:.1} mm of the stated position: no nodule to measure there"
    )]
    NoTissue { threshold_hu: f32, radius_mm: f64 },
}

/// Segments a nodule around a stated point (a finding with coordinates but
/// no mask): the 6-connected component of voxels at or above `threshold_hu`
/// that contains the seed, restricted to a sphere of 1.5 × the stated
/// diameter (radius 0.75 d) around the point. The seed is the voxel at the
/// point, or, when that is below the threshold (a point on the nodule's
/// edge), the voxel at or above it nearest to the point within d / 2.
///
/// The sphere keeps a nodule touching a vessel or the pleura from leaking
/// into them beyond its stated size; inside it such a neighbour is included
/// (a known limit, said on the card as "segmented around the stated point").
pub fn segment_at_point(
    ct: &Volume<f32>,
    center_mm: [f64; 3],
    diameter_mm: Option<f64>,
    threshold_hu: f32,
) -> Result<(Volume<u8>, MaskSource), SeedError> {
    if center_mm.iter().any(|c| !c.is_finite()) {
        return Err(SeedError::NotFinite(center_mm));
    }
    let d = diameter_mm.unwrap_or(DEFAULT_SEED_DIAMETER_MM);
    if !(d.is_finite() && d > 0.0) {
        return Err(SeedError::BadDiameter(d));
    }
    let index = ct.physical_to_index(center_mm);
    let [nx, ny, nz] = ct.dims;
    if index
        .iter()
        .zip(ct.dims)
        .any(|(i, n)| *i < -0.5 || *i > n as f64 - 0.5)
    {
        return Err(SeedError::OutsideVolume {
            center_mm,
            index,
            dims: ct.dims,
        });
    }
    let radius = 0.75 * d;
    let dist2 = |x: usize, y: usize, z: usize| {
        let p = ct.index_to_physical([x as f64, y as f64, z as f64]);
        (0..3).map(|a| (p[a] - center_mm[a]).powi(2)).sum::<f64>()
    };
    // The index box that holds the sphere.
    let lo_hi = |axis: usize, n: usize| {
        let r = radius / ct.spacing[axis];
        let lo = (index[axis] - r).floor().max(0.0) as usize;
        let hi = ((index[axis] + r).ceil() as usize).min(n - 1);
        (lo, hi)
    };
    let ((x0, x1), (y0, y1), (z0, z1)) = (lo_hi(0, nx), lo_hi(1, ny), lo_hi(2, nz));
    let at = |v: f64, n: usize| v.round().clamp(0.0, (n - 1) as f64) as usize;
    let start = [at(index[0], nx), at(index[1], ny), at(index[2], nz)];
    let above = |x: usize, y: usize, z: usize| ct.get(x, y, z) >= threshold_hu;
    let seed = if above(start[0], start[1], start[2]) {
        Some(start)
    } else {
        let mut best: Option<(f64, [usize; 3])> = None;
        for z in z0..=z1 {
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let r2 = dist2(x, y, z);
                    if r2 <= (d / 2.0).powi(2) && above(x, y, z) && best.is_none_or(|(b, _)| r2 < b)
                    {
                        best = Some((r2, [x, y, z]));
                    }
                }
            }
        }
        best.map(|(_, s)| s)
    };
    let Some(seed) = seed else {
        return Err(SeedError::NoTissue {
            threshold_hu,
            radius_mm: d / 2.0,
        });
    };
    let mut mask = Volume {
        data: vec![0u8; ct.len()],
        dims: ct.dims,
        spacing: ct.spacing,
        origin: ct.origin,
        direction: ct.direction,
    };
    let inside = |x: usize, y: usize, z: usize| above(x, y, z) && dist2(x, y, z) <= radius * radius;
    let mut stack = vec![seed];
    let idx = mask.index(seed[0], seed[1], seed[2]);
    mask.data[idx] = 1;
    while let Some([x, y, z]) = stack.pop() {
        let neighbours = [
            (x.wrapping_sub(1), y, z),
            (x + 1, y, z),
            (x, y.wrapping_sub(1), z),
            (x, y + 1, z),
            (x, y, z.wrapping_sub(1)),
            (x, y, z + 1),
        ];
        for (a, b, c) in neighbours {
            if a >= nx || b >= ny || c >= nz {
                continue;
            }
            let i = mask.index(a, b, c);
            if mask.data[i] == 0 && inside(a, b, c) {
                mask.data[i] = 1;
                stack.push([a, b, c]);
            }
        }
    }
    Ok((
        mask,
        MaskSource::PointSeeded {
            threshold_hu,
            radius_mm: radius,
        },
    ))
}

// -------------------------------------------------------------- measurement

/// Long and short axis (mm) of the mask on the axial slice where it has the
/// most voxels (Lung-RADS v2022: "mean diameter = mean of long and short
/// axis … on the same image"). The long axis is the largest distance
/// between two voxel centres plus one in-plane voxel (edge to edge); the
/// short axis is the extent perpendicular to it, measured the same way.
/// `None` for an empty mask.
pub fn axes(mask: &Volume<u8>) -> Option<(f64, f64)> {
    axes_where(mask, |_| true)
}

/// [`axes`] of the mask voxels whose linear index passes `keep` (the solid
/// component: no second full-size mask is allocated).
pub fn axes_where(mask: &Volume<u8>, keep: impl Fn(usize) -> bool) -> Option<(f64, f64)> {
    let [nx, ny, nz] = mask.dims;
    let plane = nx * ny;
    let set = |i: usize| mask.data[i] != 0 && keep(i);
    let best = (0..nz)
        .map(|z| {
            let n = (z * plane..(z + 1) * plane).filter(|i| set(*i)).count();
            (n, z)
        })
        .max_by_key(|(n, z)| (*n, std::cmp::Reverse(*z)))?;
    if best.0 == 0 {
        return None;
    }
    let z = best.1;
    let on = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < nx
            && (y as usize) < ny
            && set(mask.index(x as usize, y as usize, z))
    };
    // Boundary pixels suffice for the extremes and keep the pairwise search small.
    let mut pts = Vec::new();
    for y in 0..ny as isize {
        for x in 0..nx as isize {
            if on(x, y) && !(on(x - 1, y) && on(x + 1, y) && on(x, y - 1) && on(x, y + 1)) {
                let p = mask.index_to_physical([x as f64, y as f64, z as f64]);
                pts.push([p[0], p[1], p[2]]);
            }
        }
    }
    let pixel = (mask.spacing[0] + mask.spacing[1]) / 2.0;
    let mut long = 0.0f64;
    let mut dir = [1.0, 0.0, 0.0];
    for (i, a) in pts.iter().enumerate() {
        for b in &pts[i + 1..] {
            let v = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
            let l = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            if l > long {
                long = l;
                dir = [v[0] / l, v[1] / l, v[2] / l];
            }
        }
    }
    // In-plane perpendicular: slice normal × long-axis direction.
    let n = [
        mask.direction[0][2],
        mask.direction[1][2],
        mask.direction[2][2],
    ];
    let perp = [
        n[1] * dir[2] - n[2] * dir[1],
        n[2] * dir[0] - n[0] * dir[2],
        n[0] * dir[1] - n[1] * dir[0],
    ];
    let proj: Vec<f64> = pts
        .iter()
        .map(|p| p[0] * perp[0] + p[1] * perp[1] + p[2] * perp[2])
        .collect();
    let lo = proj.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = proj.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((long + pixel, (hi - lo) + pixel))
}

/// The mask sampled (nearest voxel) on the patch's centre axial plane.
fn mask_on_axial_plane(mask: &Volume<u8>, patch: &Volume<f32>) -> Vec<u8> {
    let n = patch.dims[0];
    let k = (n / 2) as f64;
    let [mx, my, mz] = mask.dims;
    (0..n * n)
        .map(|p| {
            let pos = patch.index_to_physical([(p % n) as f64, (p / n) as f64, k]);
            let i = mask.physical_to_index(pos);
            let r = [i[0].round(), i[1].round(), i[2].round()];
            let inside = r[0] >= 0.0
                && r[1] >= 0.0
                && r[2] >= 0.0
                && (r[0] as usize) < mx
                && (r[1] as usize) < my
                && (r[2] as usize) < mz;
            if inside && mask.get(r[0] as usize, r[1] as usize, r[2] as usize) != 0 {
                1
            } else {
                0
            }
        })
        .collect()
}

/// Sizes, attenuation, radiomics and patch of one nodule mask on `ct`.
pub fn measure_nodule(
    ct: &Volume<f32>,
    mask: &Volume<u8>,
    source: MaskSource,
    patch_cfg: &PatchConfig,
) -> Result<NoduleMeasurement, String> {
    let voxel_mm3: f64 = ct.spacing.iter().product();
    let voxels = mask.data.iter().filter(|v| **v != 0).count();
    if voxels == 0 {
        return Err("the nodule mask is empty".into());
    }
    let center_mm = mask_centroid(mask).ok_or("the nodule mask is empty")?;
    let (long, short) = axes(mask).ok_or("the nodule mask is empty")?;
    let mut sum = 0.0f64;
    let mut solid_voxels = 0usize;
    for (m, hu) in mask.data.iter().zip(&ct.data) {
        if *m != 0 {
            sum += f64::from(*hu);
            if *hu >= SOLID_COMPONENT_HU {
                solid_voxels += 1;
            }
        }
    }
    let solid = |i: usize| ct.data[i] >= SOLID_COMPONENT_HU;
    let solid_component = axes_where(mask, solid).map(|(l, s)| SolidComponent {
        mean_diameter_mm: (l + s) / 2.0,
        volume_mm3: solid_voxels as f64 * voxel_mm3,
        fraction: solid_voxels as f64 / voxels as f64,
    });
    // Attenuation-based estimate: mostly solid voxels → solid; almost none →
    // ground-glass (non-solid); otherwise part-solid. Partial volume at the
    // rim of a solid nodule lowers its solid share, hence the one-half cut.
    let estimated_type = match solid_component.as_ref().map_or(0.0, |s| s.fraction) {
        f if f >= 0.5 => NoduleType::Solid,
        f if f < 0.05 => NoduleType::NonSolid,
        _ => NoduleType::PartSolid,
    };
    let features = radiomics::extract(ct, mask, &radiomics::Settings::default())
        .map_err(|e| format!("radiomics: {e}"))?;
    let patch = extract_patch(ct, center_mm, patch_cfg).map_err(|e| format!("patch: {e}"))?;
    let centre_view = |views: &[super::patch::View]| {
        views
            .iter()
            .find(|v| v.offset == 0)
            .map(|v| v.pixels.clone())
            .unwrap_or_default()
    };
    let f32s =
        |v: Vec<f32>| B64.encode(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    let axial = centre_view(&patch.axial);
    let axial_u8: Vec<u8> = axial
        .iter()
        .map(|x| (x.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let stored = StoredPatch {
        size: patch_cfg.size,
        spacing_mm: patch_cfg.spacing_mm,
        window: patch.window,
        views: [
            f32s(axial),
            f32s(centre_view(&patch.coronal)),
            f32s(centre_view(&patch.sagittal)),
        ],
        axial: B64.encode(axial_u8),
        mask_axial: B64.encode(mask_on_axial_plane(mask, &patch.hu)),
    };
    Ok(NoduleMeasurement {
        mask_source: source,
        center_mm,
        long_axis_mm: long,
        short_axis_mm: short,
        mean_diameter_mm: (long + short) / 2.0,
        volume_mm3: voxels as f64 * voxel_mm3,
        voxels,
        mean_hu: sum / voxels as f64,
        solid_component,
        estimated_type,
        radiomics: features.iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        patch: stored,
    })
}

/// One SEG instance as received.
struct SegInstance {
    name: String,
    bytes: Bytes,
}

/// All nodules of one series: CPU work, run on a blocking thread.
fn analyse(
    ct: &CtVolume,
    segs: &[SegInstance],
    mut warnings: Vec<String>,
    job: &NoduleJob,
) -> NoduleImagingOutcome {
    let v = &ct.volume;
    warnings.extend(
        ct.warnings
            .iter()
            .filter_map(|w| serde_json::to_value(w).ok().map(|w| w.to_string())),
    );
    let mut nodules = Vec::new();
    // (nodule index, sorted linear indices of its voxels) of the SEG
    // nodules, to match points against. Indices, not masks: a full-size
    // mask of a 512² × 300 CT is 78 MB per segment.
    let mut seg_masks: Vec<(usize, Vec<usize>)> = Vec::new();
    for seg in segs {
        let (sop, segments) = match seg_segments(&seg.name, &seg.bytes) {
            Ok(s) => s,
            Err(e) => {
                warnings.push(format!("{} was not used: {e}", seg.name));
                continue;
            }
        };
        for SegSegment { number, label } in segments {
            let seg_ref = SegRef {
                sop_instance_uid: sop.clone(),
                segment_number: number,
                label,
            };
            let mask = read_seg_mask(
                &seg.name,
                &seg.bytes,
                v,
                ct.frame_of_reference_uid.as_deref(),
                SegSelection::Segment(number),
            );
            let (measurement, error) = match mask {
                Ok(mask) => {
                    let m = measure_nodule(v, &mask, MaskSource::Seg, &job.patch);
                    if m.is_ok() {
                        let voxels = (0..mask.len()).filter(|i| mask.data[*i] != 0).collect();
                        seg_masks.push((nodules.len(), voxels));
                    }
                    match m {
                        Ok(m) => (Some(m), None),
                        Err(e) => (None, Some(e)),
                    }
                }
                Err(e) => (None, Some(format!("the SEG segment cannot be used: {e}"))),
            };
            nodules.push(MeasuredNodule {
                point: None,
                seg: Some(seg_ref),
                measurement,
                error,
            });
        }
    }
    for p in &job.points {
        // A point inside a SEG segment (nearest voxel) is that nodule.
        let idx = v.physical_to_index(p.center_mm);
        let r = [idx[0].round(), idx[1].round(), idx[2].round()];
        let in_grid = r
            .iter()
            .zip(v.dims)
            .all(|(i, n)| *i >= 0.0 && *i < n as f64);
        let hit = in_grid
            .then(|| {
                let at = v.index(r[0] as usize, r[1] as usize, r[2] as usize);
                seg_masks.iter().find(|(n, voxels)| {
                    nodules[*n].point.is_none() && voxels.binary_search(&at).is_ok()
                })
            })
            .flatten()
            .map(|(n, _)| *n);
        if let Some(n) = hit {
            nodules[n].point = Some(p.key.clone());
            continue;
        }
        let threshold = if p.ground_glass {
            SEED_THRESHOLD_GGO_HU
        } else {
            SEED_THRESHOLD_HU
        };
        let (measurement, error) = match segment_at_point(v, p.center_mm, p.diameter_mm, threshold)
        {
            Ok((mask, source)) => match measure_nodule(v, &mask, source, &job.patch) {
                Ok(m) => (Some(m), None),
                Err(e) => (None, Some(e)),
            },
            Err(e) => (None, Some(e.to_string())),
        };
        nodules.push(MeasuredNodule {
            point: Some(p.key.clone()),
            seg: None,
            measurement,
            error,
        });
    }
    NoduleImagingOutcome::Measured {
        nodules,
        series_slices: v.dims[2],
        warnings,
    }
}

// ------------------------------------------------------------------- worker

/// Runs `nodule-radiomics` jobs (registered with the imaging worker pool in
/// [`super::jobs`]).
pub struct NoduleWorker {
    client: DicomWebClient,
    store: Store,
    assemble: AssembleOptions,
}

impl NoduleWorker {
    pub fn new(client: DicomWebClient, store: Store, assemble: AssembleOptions) -> Self {
        Self {
            client,
            store,
            assemble,
        }
    }

    /// The function the worker pool calls.
    pub fn handler(self: Arc<Self>) -> JobHandler {
        Arc::new(move |job: Job| {
            let worker = self.clone();
            async move { worker.run(&job).await }.boxed()
        })
    }

    /// One job. `Ok` carries a short summary for the job row (counts, no
    /// patient data); the result goes to the imaging cache.
    #[tracing::instrument(name = "Measuring lung nodules", skip_all, fields(job_id = %job.id))]
    pub async fn run(&self, job: &Job) -> Result<Value, JobFailure> {
        let payload: NoduleJob = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobFailure::permanent(format!("invalid {JOB_KIND} payload: {e}")))?;
        let series = payload
            .series_ref()
            .map_err(|e| JobFailure::permanent(format!("invalid {JOB_KIND} payload: {e}")))?;
        let seg_refs = payload
            .seg_series
            .iter()
            .map(|s| {
                Ok(SeriesRef {
                    series_uid: DicomUid::parse(s)?,
                    ..series.clone()
                })
            })
            .collect::<Result<Vec<_>, DicomWebError>>()
            .map_err(|e| JobFailure::permanent(format!("invalid {JOB_KIND} payload: {e}")))?;

        if let Some(done) = self.cached(&payload).await? {
            tracing::info!("Result already cached; nothing to do");
            return Ok(summary(&done, true));
        }
        let ct = match self.client.retrieve_ct_volume(&series, self.assemble).await {
            Ok(ct) => ct,
            Err(e) => return Err(self.failure(&payload, &e).await),
        };
        if ct.series_uid != payload.series_uid || ct.study_uid != payload.study_uid {
            let reason = "the PACS returned instances of another study or series".to_owned();
            return self
                .unmeasurable(&payload, reason.clone())
                .await
                .and(Err(JobFailure::permanent(reason)));
        }
        let mut segs = Vec::new();
        let mut warnings = Vec::new();
        for r in &seg_refs {
            match self.retrieve_all(r).await {
                Ok(parts) => segs.extend(parts.into_iter().map(|p| SegInstance {
                    name: format!("SEG series {} part {}", r.series_uid, p.index),
                    bytes: p.body,
                })),
                Err(e) => match classify(&e) {
                    // The PACS or network: try the whole job again later.
                    FailureClass::Retryable => {
                        return Err(JobFailure::retryable(format!("SEG series: {e}")));
                    }
                    // Not a SEG, too large, refused: the CT is still analysed.
                    _ => warnings.push(format!("SEG series {} was not used: {e}", r.series_uid)),
                },
            }
        }
        let span = tracing::Span::current();
        let job_payload = payload.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            analyse(&ct, &segs, warnings, &job_payload)
        })
        .await
        .map_err(|e| JobFailure::retryable(format!("the measuring thread failed: {e}")))?;
        let result = NoduleImagingResult {
            pipeline_version: PIPELINE_VERSION.to_owned(),
            study_uid: payload.study_uid.clone(),
            series_uid: payload.series_uid.clone(),
            digest: payload.digest(),
            outcome,
        };
        self.put(&payload, &result).await?;
        tracing::info!("Lung nodules measured and cached");
        Ok(summary(&result, false))
    }

    /// Every instance of a series, undecoded (SEG instances are small).
    async fn retrieve_all(&self, series: &SeriesRef) -> Result<Vec<WadoPart>, DicomWebError> {
        let (tx, mut rx) = mpsc::channel::<WadoPart>(4);
        let collect = async move {
            let mut parts = Vec::new();
            while let Some(p) = rx.recv().await {
                parts.push(p);
            }
            parts
        };
        let (net, parts) = tokio::join!(self.client.retrieve_series(series, tx), collect);
        net?;
        Ok(parts)
    }

    async fn cached(&self, payload: &NoduleJob) -> Result<Option<NoduleImagingResult>, JobFailure> {
        let value = self
            .store
            .get_imaging_result(
                &payload.series_uid,
                PIPELINE_VERSION,
                &payload.result_kind(),
            )
            .await
            .map_err(|e| JobFailure::retryable(format!("reading the imaging cache: {e}")))?;
        Ok(value.and_then(|v| serde_json::from_value(v).ok()))
    }

    async fn put(
        &self,
        payload: &NoduleJob,
        result: &NoduleImagingResult,
    ) -> Result<(), JobFailure> {
        let value = serde_json::to_value(result)
            .map_err(|e| JobFailure::permanent(format!("serialising the result: {e}")))?;
        self.store
            .put_imaging_result(
                &payload.series_uid,
                PIPELINE_VERSION,
                &payload.result_kind(),
                &value,
            )
            .await
            .map_err(|e| JobFailure::retryable(format!("writing the imaging cache: {e}")))
    }

    async fn unmeasurable(&self, payload: &NoduleJob, reason: String) -> Result<(), JobFailure> {
        tracing::warn!(%reason, "CT series cannot be analysed for nodules");
        self.put(
            payload,
            &NoduleImagingResult {
                pipeline_version: PIPELINE_VERSION.to_owned(),
                study_uid: payload.study_uid.clone(),
                series_uid: payload.series_uid.clone(),
                digest: payload.digest(),
                outcome: NoduleImagingOutcome::NotMeasurable { reason },
            },
        )
        .await
    }

    async fn failure(&self, payload: &NoduleJob, e: &DicomWebError) -> JobFailure {
        job_failure(e, |reason| self.unmeasurable(payload, reason)).await
    }
}

/// The job row's result: counts only.
fn summary(r: &NoduleImagingResult, already_cached: bool) -> Value {
    let (outcome, nodules, measured) = match &r.outcome {
        NoduleImagingOutcome::Measured { nodules, .. } => (
            "measured",
            nodules.len(),
            nodules.iter().filter(|n| n.measurement.is_some()).count(),
        ),
        NoduleImagingOutcome::NotMeasurable { .. } => ("not-measurable", 0, 0),
    };
    serde_json::json!({
        "series_uid": r.series_uid,
        "pipeline_version": r.pipeline_version,
        "outcome": outcome,
        "nodules": nodules,
        "measured": measured,
        "already_cached": already_cached,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lung (−850 HU) with a 40 HU sphere of `radius` mm at `center`, and a
    /// vessel-like soft-tissue rod along x through y = 10 mm.
    fn phantom(radius: f64, center: [f64; 3]) -> Volume<f32> {
        let dims = [40, 40, 20];
        let spacing = [1.0, 1.0, 2.0];
        let mut v = Volume::new(vec![-850.0f32; 40 * 40 * 20], dims, spacing);
        v.origin = [-20.0, -20.0, -20.0];
        for z in 0..dims[2] {
            for y in 0..dims[1] {
                for x in 0..dims[0] {
                    let p = v.index_to_physical([x as f64, y as f64, z as f64]);
                    let r = ((p[0] - center[0]).powi(2)
                        + (p[1] - center[1]).powi(2)
                        + (p[2] - center[2]).powi(2))
                    .sqrt();
                    let i = v.index(x, y, z);
                    if r <= radius {
                        v.data[i] = 40.0;
                    } else if (p[1] - 10.0).abs() < 1.5 && (p[2] - center[2]).abs() < 1.5 {
                        v.data[i] = 30.0;
                    }
                }
            }
        }
        v
    }

    #[test]
    fn a_point_inside_a_nodule_segments_the_sphere_and_stops_at_the_stated_size() {
        let ct = phantom(5.0, [0.0, 0.0, 0.0]);
        let (mask, source) = segment_at_point(&ct, [1.0, 0.5, 0.0], Some(10.0), -500.0).unwrap();
        let n = mask.data.iter().filter(|v| **v != 0).count();
        // The sphere's voxels: 1 mm × 1 mm × 2 mm, about 4/3 π 5³ / 2 ≈ 262.
        let expected = ct.data.iter().filter(|v| **v == 40.0).count();
        assert_eq!(n, expected, "the whole sphere, nothing of the lung");
        assert_eq!(
            source,
            MaskSource::PointSeeded {
                threshold_hu: -500.0,
                radius_mm: 7.5
            }
        );
        let (long, short) = axes(&mask).unwrap();
        // Diameter 10 mm at 1 mm pixels: 9 voxel centres apart + 1 voxel.
        assert!((long - 11.0).abs() <= 1.0, "{long}");
        assert!((short - 11.0).abs() <= 1.0, "{short}");
    }

    #[test]
    fn the_sphere_of_one_and_a_half_diameters_keeps_a_touching_vessel_out_beyond_it() {
        // The nodule touches the rod at y = 10 mm (radius 9 mm reaches 9).
        let ct = phantom(9.0, [0.0, 0.0, 0.0]);
        let (mask, _) = segment_at_point(&ct, [0.0, 0.0, 0.0], Some(8.0), -500.0).unwrap();
        // Radius 0.75 × 8 = 6 mm: nothing beyond it, though the tissue goes on.
        for (i, v) in mask.data.iter().enumerate() {
            if *v != 0 {
                let [nx, ny, _] = mask.dims;
                let p = mask.index_to_physical([
                    (i % nx) as f64,
                    ((i / nx) % ny) as f64,
                    (i / (nx * ny)) as f64,
                ]);
                assert!(p.iter().map(|c| c * c).sum::<f64>().sqrt() <= 6.0 + 1e-9);
            }
        }
    }

    #[test]
    fn a_point_on_the_rim_finds_the_nodule_and_a_point_in_air_finds_nothing() {
        let ct = phantom(4.0, [0.0, 0.0, 0.0]);
        // 5 mm from the centre: lung at the point, the nodule within d / 2.
        let (mask, _) = segment_at_point(&ct, [5.0, 0.0, 0.0], Some(8.0), -500.0).unwrap();
        assert!(mask.data.iter().filter(|v| **v != 0).count() > 50);
        let err = segment_at_point(&ct, [-15.0, -15.0, 10.0], Some(6.0), -500.0).unwrap_err();
        assert!(matches!(err, SeedError::NoTissue { .. }), "{err}");
        assert!(err.to_string().contains("no tissue at or above -500 HU"));
    }

    #[test]
    fn a_point_outside_the_series_is_refused_with_the_reason() {
        let ct = phantom(4.0, [0.0, 0.0, 0.0]);
        let err = segment_at_point(&ct, [0.0, 0.0, 250.0], Some(8.0), -500.0).unwrap_err();
        assert!(matches!(err, SeedError::OutsideVolume { .. }), "{err}");
        assert!(err.to_string().contains("outside the CT series"), "{err}");
        assert!(matches!(
            segment_at_point(&ct, [f64::NAN, 0.0, 0.0], None, -500.0),
            Err(SeedError::NotFinite(_))
        ));
        assert!(matches!(
            segment_at_point(&ct, [0.0; 3], Some(-1.0), -500.0),
            Err(SeedError::BadDiameter(_))
        ));
    }

    #[test]
    fn measurement_gives_sizes_type_radiomics_and_a_patch_with_the_mask() {
        let ct = phantom(5.0, [2.0, -3.0, 0.0]);
        let (mask, source) = segment_at_point(&ct, [2.0, -3.0, 0.0], Some(10.0), -500.0).unwrap();
        let cfg = PatchConfig {
            size: 32,
            ..PatchConfig::default()
        };
        let m = measure_nodule(&ct, &mask, source, &cfg).unwrap();
        assert_eq!(m.estimated_type, NoduleType::Solid);
        assert!((m.center_mm[0] - 2.0).abs() < 0.5 && (m.center_mm[1] + 3.0).abs() < 0.5);
        assert!((m.volume_mm3 - m.voxels as f64 * 2.0).abs() < 1e-9);
        assert_eq!(m.radiomics.len(), 107);
        assert!((m.mean_hu - 40.0).abs() < 1e-6);
        let views = m.patch.decode_views().unwrap();
        assert!(views.iter().all(|v| v.len() == 32 * 32));
        let mask_axial = B64.decode(&m.patch.mask_axial).unwrap();
        let axial = B64.decode(&m.patch.axial).unwrap();
        // The mask on the centre plane: a disc of about π 5² mm² at 1 mm.
        let on = mask_axial.iter().filter(|v| **v == 1).count();
        assert!((60..=100).contains(&on), "{on}");
        // Where the mask is, the windowed pixel is the nodule's 40 HU.
        let expected = (HuWindow::LUNG.apply(40.0) * 255.0).round() as u8;
        let centre = 16 * 32 + 16;
        assert_eq!((mask_axial[centre], axial[centre]), (1, expected));
        assert_eq!(m.features().get("original_firstorder_Mean"), Some(40.0));
    }

    /// The synthetic SEG fixture (`fixtures/dicom/generate.py`): a point at
    /// the sphere's centre is the SEG's nodule (one nodule, not two); a point
    /// in aerated lung gets its reason; the SEG mask is the generator's.
    #[test]
    fn a_point_inside_a_seg_segment_is_that_nodule_and_a_point_in_lung_says_why() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dicom");
        let ct = crate::imaging::dicom::read_ct_dir(
            &dir.join("ct_explicit"),
            None,
            &AssembleOptions::default(),
        )
        .unwrap();
        let seg = SegInstance {
            name: "seg_nodule.dcm".into(),
            bytes: Bytes::from(std::fs::read(dir.join("seg_nodule.dcm")).unwrap()),
        };
        let expected = std::fs::read(dir.join("seg_expected.u8")).unwrap();
        let point = |key: &str, c: [f64; 3], d: f64| PointFinding {
            key: key.into(),
            center_mm: c,
            diameter_mm: Some(d),
            ground_glass: false,
        };
        let job = NoduleJob {
            dicomweb_base: "http://127.0.0.1/dicom-web".into(),
            study_uid: ct.study_uid.clone(),
            series_uid: ct.series_uid.clone(),
            seg_series: vec!["1.2.3".into()],
            points: vec![
                point("f0", [3.0, -2.0, -86.25], 12.0),
                point("f1", [-15.0, 0.0, -95.0], 4.0),
            ],
            patch: PatchConfig {
                size: 32,
                ..PatchConfig::default()
            },
        };
        let NoduleImagingOutcome::Measured {
            nodules, warnings, ..
        } = analyse(&ct, &[seg], vec!["kept".into()], &job)
        else {
            panic!("not measured")
        };
        assert_eq!(warnings, vec!["kept".to_owned()]);
        assert_eq!(nodules.len(), 2, "{nodules:?}");
        let n0 = &nodules[0];
        assert_eq!(n0.point.as_deref(), Some("f0"));
        assert_eq!(n0.seg.as_ref().unwrap().segment_number, 1);
        let m = n0.measurement.as_ref().unwrap();
        assert_eq!(m.mask_source, MaskSource::Seg);
        assert_eq!(m.voxels, expected.iter().filter(|v| **v != 0).count());
        let c = m.center_mm;
        assert!(
            (c[0] - 3.0).abs() < 0.5 && (c[1] + 2.0).abs() < 0.5,
            "{c:?}"
        );
        let n1 = &nodules[1];
        assert_eq!((n1.point.as_deref(), n1.seg.as_ref()), (Some("f1"), None));
        assert!(n1.measurement.is_none());
        assert!(n1.error.as_deref().unwrap().contains("no tissue"), "{n1:?}");
    }

    #[test]
    fn payload_keys_follow_findings_and_patch_settings() {
        let job = NoduleJob {
            dicomweb_base: "http://127.0.0.1:8042/dicom-web".into(),
            study_uid: "1.2.3".into(),
            series_uid: "1.2.3.4".into(),
            seg_series: vec!["1.2.3.5".into()],
            points: vec![PointFinding {
                key: "f0".into(),
                center_mm: [1.0, 2.0, 3.0],
                diameter_mm: Some(8.0),
                ground_glass: false,
            }],
            patch: PatchConfig::default(),
        };
        let new = job.to_new_job(3);
        assert_eq!(new.kind, JOB_KIND);
        let back: NoduleJob = serde_json::from_value(new.payload.clone()).unwrap();
        assert_eq!(back, job);
        let key = job.dedupe_key();
        assert!(key.starts_with(&format!("{JOB_KIND}:1.2.3.4:{PIPELINE_VERSION}:")));
        let mut moved = job.clone();
        moved.points[0].center_mm[2] = 4.0;
        assert_ne!(moved.dedupe_key(), key);
        let mut bigger = job.clone();
        bigger.patch.size = 96;
        assert_ne!(bigger.result_kind(), job.result_kind());
        assert_eq!(job.clone().dedupe_key(), key);
    }
}
