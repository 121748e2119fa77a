//! The LIDC nodule table the nodule model trains and is evaluated on
//! (`oncohooks nodule table`): one row per grouped LIDC nodule, with
//!
//! - the model's input exactly as the service builds it: the three centre
//!   views cut by [`crate::imaging::patch::extract_patch_at_mask`] at the
//!   table's [`PatchConfig`] and taken by
//!   [`NoduleModelInput::from_patch`], and the 107 pyradiomics-compatible
//!   features on the rendered patch and the real consensus mask
//!   ([`super::dataset::render_nodule`]; the pixels are rendered, the mask
//!   is the readers');
//! - the inputs of the clinical baselines that LIDC can supply (size,
//!   volume, attenuation type, spiculation, calcification, nodule count);
//! - label, split and a fixed train/validation assignment by patient.
//!
//! On disk (folder `DIR`):
//!
//! - `views.safetensors`: `views` f32 `[N, 3, S, S]` (axial, coronal,
//!   sagittal) and `radiomics` f64 `[N, F]` (F = 107), rows in table order;
//! - `rows.jsonl`: one [`TableRow`] per line, same order;
//! - `table.json`: [`TableMeta`] (patch and render settings, seed, feature
//!   names in column order, counts, failed nodules with their reasons).
//!
//! Nothing in it depends on the clock or on thread scheduling: the same
//! database, settings and seed give byte-identical files.
//!
//! Size definitions (docs/lidc.md): the axial plane of maximal extent is the
//! slice of the consensus mask with the most voxels; on it the **long axis**
//! is the largest distance between two corners of mask pixels (the
//! caliper/Feret diameter of the pixel outline), the **short axis** is the
//! extent of the outline perpendicular to the long axis, and the **mean
//! diameter** is their average, as Lung-RADS v2022 measures size. The
//! **equivalent diameter** is that of the sphere with the mask's volume.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::dataset;
use super::lidc::{self, LidcDatabase, LidcNodule, MalignancyLabel, Split};
use super::render::RenderConfig;
use crate::clinical::nodule::NoduleType;
use crate::imaging::Volume;
use crate::imaging::patch::{PatchConfig, extract_patch_at_mask};
use crate::ml::nodule::NoduleModelInput;
use crate::radiomics::Features;

/// Bumped when the files' layout changes.
pub const FORMAT_VERSION: u32 = 1;
pub const VIEWS_FILE: &str = "views.safetensors";
pub const ROWS_FILE: &str = "rows.jsonl";
pub const META_FILE: &str = "table.json";

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Format { path: PathBuf, detail: String },
    #[error("invalid table settings: {0}")]
    Config(String),
    #[error("the table has no row: every nodule failed ({0} failures)")]
    Empty(usize),
}

/// Settings of one table build.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TableConfig {
    /// The model's patch: size, spacing, window (views are cut with it).
    pub patch: PatchConfig,
    /// The renderer; its half-width must cover the patch's field of view.
    pub render: RenderConfig,
    /// Global seed of the renderer (mixed with each nodule key) and of the
    /// train/validation assignment.
    pub seed: u64,
    /// Share of the 0001–0799 patients put in validation.
    pub val_fraction: f64,
}

impl TableConfig {
    /// Patch `size` at `spacing_mm` with the lung window; the renderer draws
    /// the patch's half field of view plus 6 mm (the patch is centred on
    /// the mask centroid, the rendering on the mask's bounding-box centre).
    pub fn new(size: usize, spacing_mm: f64, seed: u64) -> Self {
        let patch = PatchConfig {
            size,
            spacing_mm,
            ..PatchConfig::default()
        };
        let render = RenderConfig {
            half_width_mm: (size as f64 * spacing_mm / 2.0 + 6.0).ceil(),
            ..RenderConfig::default()
        };
        Self {
            patch,
            render,
            seed,
            val_fraction: 0.2,
        }
    }

    fn check(&self) -> Result<(), TableError> {
        let fov_half = self.patch.size as f64 * self.patch.spacing_mm / 2.0;
        if self.patch.view_half_width != 0 {
            return Err(TableError::Config(
                "the table stores the centre plane of each view only (view_half_width 0)".into(),
            ));
        }
        if self.render.half_width_mm.is_nan() || self.render.half_width_mm < fov_half {
            return Err(TableError::Config(format!(
                "render half-width {} mm does not cover the patch's half field of view {fov_half} mm",
                self.render.half_width_mm
            )));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(TableError::Config("val_fraction must be in [0, 1)".into()));
        }
        Ok(())
    }
}

impl Default for TableConfig {
    fn default() -> Self {
        Self::new(32, 1.5, 5)
    }
}

/// Training subset of a row: test is fixed by the split (0800+), train and
/// validation are drawn per patient, so no patient is in two subsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subset {
    Train,
    Val,
    Test,
}

/// A deterministic uniform number in [0, 1) for a patient (FNV-1a of the
/// id mixed with the seed, then the splitmix64 finaliser).
fn patient_uniform(patient_id: &str, seed: u64) -> f64 {
    let mut h = super::render::nodule_seed(patient_id, seed);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The subset of a patient at `val_fraction` and `seed`.
pub fn subset_of(patient_id: &str, split: Split, val_fraction: f64, seed: u64) -> Subset {
    match split {
        Split::Test => Subset::Test,
        Split::TrainVal if patient_uniform(patient_id, seed) < val_fraction => Subset::Val,
        Split::TrainVal => Subset::Train,
    }
}

/// One nodule of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRow {
    /// `LIDC-IDRI-NNNN/scanS/annA` ([`LidcNodule::key`]).
    pub key: String,
    pub patient_id: String,
    pub scan_id: i64,
    pub split: Split,
    pub subset: Subset,
    pub label: MalignancyLabel,
    pub median_malignancy: f64,
    pub readers: usize,
    pub annotation_ids: Vec<i64>,
    /// Seed the patch was rendered with.
    pub render_seed: u64,
    /// 50 % consensus mask voxels and volume (scan grid).
    pub mask_voxels: usize,
    pub volume_mm3: f64,
    /// Sizes on the axial plane of maximal extent (module docs).
    pub long_axis_mm: f64,
    pub short_axis_mm: f64,
    pub mean_diameter_mm: f64,
    pub equivalent_diameter_mm: f64,
    /// Medians of the readers' ratings (numpy median: mean of the two middle
    /// values for an even count).
    pub texture_median: f64,
    pub spiculation_median: f64,
    pub calcification_median: f64,
    pub internal_structure_median: f64,
    /// From the texture median rounded half up: 1–2 ground-glass
    /// (non-solid), 3–4 part-solid, 5 solid.
    pub nodule_type: NoduleType,
    /// Grouped nodules on the same scan (all of them, any label), as
    /// Brock's "nodule count".
    pub nodules_on_scan: u32,
    pub slice_thickness_mm: f64,
    pub pixel_spacing_mm: f64,
    pub contrast: bool,
}

impl TableRow {
    pub fn patient_number(&self) -> Option<u32> {
        lidc::db::patient_number(&self.patient_id)
    }
}

/// Attenuation type from the readers' texture median (LIDC: 1 non-solid /
/// ground-glass, 3 part-solid / mixed, 5 solid; 2 and 4 in between),
/// rounded half up.
pub fn nodule_type_of_texture(texture_median: f64) -> NoduleType {
    match (texture_median + 0.5).floor() as i64 {
        i64::MIN..=2 => NoduleType::NonSolid,
        3 | 4 => NoduleType::PartSolid,
        _ => NoduleType::Solid,
    }
}

/// A nodule without a row, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableFailure {
    pub key: String,
    pub split: Split,
    pub label: MalignancyLabel,
    pub reason: String,
}

/// Rows per split and label.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableCounts {
    pub rows: usize,
    pub failures: usize,
    /// `split → label → rows`.
    pub by_split: BTreeMap<String, BTreeMap<String, usize>>,
    /// `subset → label → rows`.
    pub by_subset: BTreeMap<String, BTreeMap<String, usize>>,
}

/// `table.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableMeta {
    pub format_version: u32,
    pub config: TableConfig,
    /// The radiomics columns, in order.
    pub feature_names: Vec<String>,
    pub counts: TableCounts,
    pub failures: Vec<TableFailure>,
    /// How the baseline inputs were derived (human-readable, fixed text).
    pub definitions: BTreeMap<String, String>,
}

/// The table in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct NoduleTable {
    meta: TableMeta,
    rows: Vec<TableRow>,
    /// `[N, 3, S, S]` row-major.
    views: Vec<f32>,
    /// `[N, F]` row-major.
    radiomics: Vec<f64>,
}

/// The fixed definitions written into `table.json`.
pub fn definitions() -> BTreeMap<String, String> {
    [
        (
            "long_axis_mm",
            "largest distance between two pixel corners of the 50 % consensus mask on its axial slice with the most voxels",
        ),
        (
            "short_axis_mm",
            "extent of that slice's mask perpendicular to the long axis",
        ),
        (
            "mean_diameter_mm",
            "(long_axis_mm + short_axis_mm) / 2, as Lung-RADS v2022",
        ),
        (
            "equivalent_diameter_mm",
            "diameter of the sphere of the mask's volume, (6 V / pi)^(1/3)",
        ),
        (
            "nodule_type",
            "readers' texture median rounded half up: 1-2 non_solid (ground-glass), 3-4 part_solid, 5 solid",
        ),
        (
            "nodules_on_scan",
            "grouped nodules (pylidc clustering) on the same scan, any label",
        ),
        (
            "subset",
            "test = LIDC-IDRI-0800 and above; else val when a seeded per-patient uniform draw < val_fraction, else train",
        ),
        (
            "views",
            "centre axial, coronal, sagittal planes of imaging::patch::extract_patch_at_mask on the rendered patch, windowed to [0, 1]",
        ),
        (
            "radiomics",
            "radiomics::extract (pyradiomics defaults) on the rendered patch and the real consensus mask, scan grid",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Long and short axis (mm) of the mask's axial slice with the most voxels.
pub fn axial_axes(mask: &Volume<u8>) -> Option<(f64, f64)> {
    let [nx, ny, nz] = mask.dims;
    let plane = |z: usize| &mask.data[z * nx * ny..(z + 1) * nx * ny];
    let best_z = (0..nz)
        .map(|z| (z, plane(z).iter().filter(|&&v| v != 0).count()))
        // The first slice among equals (max_by_key keeps the last).
        .fold(None, |acc: Option<(usize, usize)>, (z, n)| match acc {
            Some((_, m)) if m >= n => acc,
            _ => Some((z, n)),
        })
        .filter(|&(_, n)| n > 0)?
        .0;
    let p = plane(best_z);
    let (sx, sy) = (mask.spacing[0], mask.spacing[1]);
    let set = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < nx
            && (y as usize) < ny
            && p[y as usize * nx + x as usize] != 0
    };
    // Corners of the outline pixels (a pixel with an unset 4-neighbour);
    // interior corners cannot be extreme points.
    let mut corners: Vec<[f64; 2]> = Vec::new();
    for y in 0..ny as isize {
        for x in 0..nx as isize {
            if set(x, y) && !(set(x - 1, y) && set(x + 1, y) && set(x, y - 1) && set(x, y + 1)) {
                for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)] {
                    corners.push([(x as f64 + dx) * sx, (y as f64 + dy) * sy]);
                }
            }
        }
    }
    let mut long = 0.0f64;
    let mut dir = [1.0, 0.0];
    for (i, a) in corners.iter().enumerate() {
        for b in &corners[i + 1..] {
            let d = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
            if d > long {
                long = d;
                dir = [(b[0] - a[0]) / d, (b[1] - a[1]) / d];
            }
        }
    }
    let perp = [-dir[1], dir[0]];
    let (lo, hi) = corners
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| {
            let t = c[0] * perp[0] + c[1] * perp[1];
            (lo.min(t), hi.max(t))
        });
    Some((long, hi - lo))
}

/// Rounds to 1e-9 (nm for lengths). serde_json's default parser can be one
/// ulp off on a 17-digit number; a value with at most 9 decimals is parsed
/// as `integer / 10^9`, exactly, so `rows.jsonl` reads back bit for bit.
fn r9(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

fn rating_median(anns: &[&lidc::Annotation], f: impl Fn(&lidc::Ratings) -> u8) -> f64 {
    let v: Vec<f64> = anns.iter().map(|a| f64::from(f(&a.ratings))).collect();
    lidc::median(&v).unwrap_or(f64::NAN)
}

struct Built {
    row: TableRow,
    views: [Vec<f32>; 3],
    features: Features,
}

fn build_one(
    db: &LidcDatabase,
    nodule: &LidcNodule,
    nodules_on_scan: u32,
    cfg: &TableConfig,
) -> Result<Built, String> {
    let (drow, rendered) =
        dataset::render_nodule(db, nodule, &cfg.render, cfg.seed).map_err(|e| match e {
            dataset::DatasetError::Nodule { reason, .. } => reason,
            other => other.to_string(),
        })?;
    let patch = extract_patch_at_mask(&rendered.hu, &rendered.mask, &cfg.patch)
        .map_err(|e| format!("patch: {e}"))?;
    let input =
        NoduleModelInput::from_patch(&patch, drow.features.clone()).map_err(|e| e.to_string())?;
    let (long, short) =
        axial_axes(&rendered.mask).ok_or_else(|| "empty rendered mask".to_string())?;
    let scan = db
        .scan(nodule.scan_id)
        .ok_or_else(|| "scan not found".to_string())?;
    let anns: Vec<&lidc::Annotation> = nodule
        .annotation_ids
        .iter()
        .filter_map(|&id| db.annotation(id))
        .collect();
    let texture_median = rating_median(&anns, |r| r.texture);
    let volume = drow.mask_volume_mm3;
    Ok(Built {
        row: TableRow {
            key: drow.key,
            patient_id: drow.patient_id,
            scan_id: nodule.scan_id,
            split: drow.split,
            subset: subset_of(&nodule.patient_id, nodule.split, cfg.val_fraction, cfg.seed),
            label: drow.label,
            median_malignancy: r9(drow.median_malignancy),
            readers: drow.readers,
            annotation_ids: nodule.annotation_ids.clone(),
            render_seed: drow.seed,
            mask_voxels: drow.mask_voxels,
            volume_mm3: r9(volume),
            long_axis_mm: r9(long),
            short_axis_mm: r9(short),
            mean_diameter_mm: r9((long + short) / 2.0),
            equivalent_diameter_mm: r9((6.0 * volume / std::f64::consts::PI).cbrt()),
            texture_median,
            spiculation_median: rating_median(&anns, |r| r.spiculation),
            calcification_median: rating_median(&anns, |r| r.calcification),
            internal_structure_median: rating_median(&anns, |r| r.internal_structure),
            nodule_type: nodule_type_of_texture(texture_median),
            nodules_on_scan,
            slice_thickness_mm: r9(scan.slice_thickness),
            pixel_spacing_mm: r9(scan.pixel_spacing),
            contrast: scan.contrast_used,
        },
        views: input.views,
        features: input.radiomics,
    })
}

fn label_str(l: MalignancyLabel) -> String {
    serde_json::to_value(l)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn subset_str(s: Subset) -> &'static str {
    match s {
        Subset::Train => "train",
        Subset::Val => "val",
        Subset::Test => "test",
    }
}

impl NoduleTable {
    /// Renders and measures every nodule of `nodules` (in parallel on the
    /// rayon pool; rows keep the order of `nodules`). Nodules that fail are
    /// listed in the metadata with their reason, never dropped silently.
    pub fn build(
        db: &LidcDatabase,
        nodules: &[LidcNodule],
        cfg: &TableConfig,
    ) -> Result<Self, TableError> {
        cfg.check()?;
        let mut per_scan: HashMap<i64, u32> = HashMap::new();
        for n in nodules {
            *per_scan.entry(n.scan_id).or_default() += 1;
        }
        let results: Vec<Result<Built, String>> = nodules
            .par_iter()
            .map(|n| build_one(db, n, per_scan[&n.scan_id], cfg))
            .collect();
        let mut feature_names: Option<Vec<String>> = None;
        let mut rows = Vec::new();
        let mut views = Vec::new();
        let mut radiomics = Vec::new();
        let mut failures = Vec::new();
        for (n, r) in nodules.iter().zip(results) {
            let fail = |reason: String| TableFailure {
                key: n.key(),
                split: n.split,
                label: n.label,
                reason,
            };
            let b = match r {
                Ok(b) => b,
                Err(reason) => {
                    failures.push(fail(reason));
                    continue;
                }
            };
            let names: Vec<String> = b.features.iter().map(|(k, _)| k.to_string()).collect();
            let expected = feature_names.get_or_insert_with(|| names.clone());
            if *expected != names {
                failures.push(fail(format!(
                    "radiomics gave {} features, not the table's {} in order",
                    names.len(),
                    expected.len()
                )));
                continue;
            }
            if let Some((name, _)) = b.features.iter().find(|(_, v)| !v.is_finite()) {
                failures.push(fail(format!("radiomics feature {name} is not finite")));
                continue;
            }
            for v in &b.views {
                views.extend_from_slice(v);
            }
            radiomics.extend(b.features.iter().map(|(_, v)| v));
            rows.push(b.row);
        }
        if rows.is_empty() {
            return Err(TableError::Empty(failures.len()));
        }
        let meta = TableMeta {
            format_version: FORMAT_VERSION,
            config: *cfg,
            feature_names: feature_names.unwrap_or_default(),
            counts: counts(&rows, failures.len()),
            failures,
            definitions: definitions(),
        };
        Ok(Self {
            meta,
            rows,
            views,
            radiomics,
        })
    }

    /// Writes the three files into `dir` (created if needed).
    pub fn write(&self, dir: &Path) -> Result<(), TableError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TableError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let n = self.rows.len();
        let s = self.meta.config.patch.size;
        let f = self.meta.feature_names.len();
        let vpath = dir.join(VIEWS_FILE);
        let fmt = |e: candle_core::Error| TableError::Format {
            path: vpath.clone(),
            detail: e.to_string(),
        };
        let views = Tensor::from_slice(&self.views, (n, 3, s, s), &Device::Cpu).map_err(fmt)?;
        let rad = Tensor::from_slice(&self.radiomics, (n, f), &Device::Cpu).map_err(fmt)?;
        let tensors: HashMap<String, Tensor> =
            [("views".to_string(), views), ("radiomics".to_string(), rad)].into();
        candle_core::safetensors::save(&tensors, &vpath).map_err(fmt)?;
        let mut jsonl = String::new();
        for r in &self.rows {
            jsonl.push_str(&serde_json::to_string(r).expect("a row serialises"));
            jsonl.push('\n');
        }
        let rpath = dir.join(ROWS_FILE);
        std::fs::write(&rpath, jsonl).map_err(io(&rpath))?;
        let mpath = dir.join(META_FILE);
        let meta = serde_json::to_string_pretty(&self.meta).expect("the metadata serialises");
        std::fs::write(&mpath, meta + "\n").map_err(io(&mpath))?;
        Ok(())
    }

    /// Reads a table written by [`Self::write`], checking that the files
    /// agree with each other (row count, patch size, feature count).
    pub fn load(dir: &Path) -> Result<Self, TableError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TableError::Io { path, source })
        };
        let mpath = dir.join(META_FILE);
        let meta: TableMeta =
            serde_json::from_str(&read(META_FILE)?).map_err(|e| TableError::Format {
                path: mpath.clone(),
                detail: e.to_string(),
            })?;
        if meta.format_version != FORMAT_VERSION {
            return Err(TableError::Format {
                path: mpath,
                detail: format!(
                    "format version {} (this build reads {FORMAT_VERSION})",
                    meta.format_version
                ),
            });
        }
        let rpath = dir.join(ROWS_FILE);
        let rows: Vec<TableRow> = read(ROWS_FILE)?
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| TableError::Format {
                    path: rpath.clone(),
                    detail: format!("line {}: {e}", i + 1),
                })
            })
            .collect::<Result<_, _>>()?;
        let vpath = dir.join(VIEWS_FILE);
        let bad = |detail: String| TableError::Format {
            path: vpath.clone(),
            detail,
        };
        let tensors =
            candle_core::safetensors::load(&vpath, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
        let (n, s, f) = (rows.len(), meta.config.patch.size, meta.feature_names.len());
        let take = |name: &str, dtype: DType, shape: &[usize]| {
            let t = tensors
                .get(name)
                .ok_or_else(|| bad(format!("no tensor {name:?}")))?;
            if t.dtype() != dtype || t.dims() != shape {
                return Err(bad(format!(
                    "tensor {name:?} is {:?} {:?}, expected {dtype:?} {shape:?} (rows.jsonl has {n} rows)",
                    t.dtype(),
                    t.dims()
                )));
            }
            t.flatten_all().map_err(|e| bad(e.to_string()))
        };
        let views = take("views", DType::F32, &[n, 3, s, s])?
            .to_vec1::<f32>()
            .map_err(|e| bad(e.to_string()))?;
        let radiomics = take("radiomics", DType::F64, &[n, f])?
            .to_vec1::<f64>()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            meta,
            rows,
            views,
            radiomics,
        })
    }

    /// A table from parts (tests, tools); the lengths must agree.
    pub fn from_parts(
        meta: TableMeta,
        rows: Vec<TableRow>,
        views: Vec<f32>,
        radiomics: Vec<f64>,
    ) -> Result<Self, TableError> {
        let (n, s, f) = (rows.len(), meta.config.patch.size, meta.feature_names.len());
        if views.len() != n * 3 * s * s || radiomics.len() != n * f {
            return Err(TableError::Config(format!(
                "{n} rows need {} view values and {} radiomics, got {} and {}",
                n * 3 * s * s,
                n * f,
                views.len(),
                radiomics.len()
            )));
        }
        Ok(Self {
            meta,
            rows,
            views,
            radiomics,
        })
    }

    pub fn meta(&self) -> &TableMeta {
        &self.meta
    }

    pub fn rows(&self) -> &[TableRow] {
        &self.rows
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn patch_config(&self) -> &PatchConfig {
        &self.meta.config.patch
    }

    pub fn feature_names(&self) -> &[String] {
        &self.meta.feature_names
    }

    /// The three views of row `i` (axial, coronal, sagittal), each `S × S`.
    pub fn views(&self, i: usize) -> [&[f32]; 3] {
        let s2 = self.meta.config.patch.size.pow(2);
        let base = i * 3 * s2;
        std::array::from_fn(|v| &self.views[base + v * s2..base + (v + 1) * s2])
    }

    /// The radiomics of row `i`, in [`Self::feature_names`] order.
    pub fn radiomics(&self, i: usize) -> &[f64] {
        let f = self.meta.feature_names.len();
        &self.radiomics[i * f..(i + 1) * f]
    }

    /// Row `i` as the model's input (what the service would build for it).
    pub fn model_input(&self, i: usize) -> NoduleModelInput {
        let features = Features::from_pairs(
            self.meta
                .feature_names
                .iter()
                .cloned()
                .zip(self.radiomics(i).iter().copied())
                .collect(),
        );
        NoduleModelInput {
            views: self.views(i).map(<[f32]>::to_vec),
            radiomics: features,
        }
    }

    /// Row indices of a subset, in table order.
    pub fn subset(&self, s: Subset) -> Vec<usize> {
        (0..self.rows.len())
            .filter(|&i| self.rows[i].subset == s)
            .collect()
    }

    /// Row indices of a split, in table order.
    pub fn split(&self, s: Split) -> Vec<usize> {
        (0..self.rows.len())
            .filter(|&i| self.rows[i].split == s)
            .collect()
    }

    /// A different train/validation draw over the 0001–0799 rows (by
    /// patient, deterministic for `seed`): `(train, val)` indices.
    pub fn train_val(&self, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (i, r) in self.rows.iter().enumerate() {
            match subset_of(&r.patient_id, r.split, val_fraction, seed) {
                Subset::Train => train.push(i),
                Subset::Val => val.push(i),
                Subset::Test => {}
            }
        }
        (train, val)
    }
}

/// Rows per split/subset and label.
pub fn counts(rows: &[TableRow], failures: usize) -> TableCounts {
    let mut c = TableCounts {
        rows: rows.len(),
        failures,
        ..Default::default()
    };
    for r in rows {
        *c.by_split
            .entry(r.split.as_str().to_string())
            .or_default()
            .entry(label_str(r.label))
            .or_default() += 1;
        *c.by_subset
            .entry(subset_str(r.subset).to_string())
            .or_default()
            .entry(label_str(r.label))
            .or_default() += 1;
    }
    c
}

#[cfg(test)]
mod tests;
