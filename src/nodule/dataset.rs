//! The LIDC nodule table for training and evaluation: one row per grouped
//! nodule with its label, split, real mask size, and the 107 pyradiomics
//! features computed on the patch rendered from its real mask.
//!
//! The readers' texture and internal-structure ratings choose the rendered
//! grey levels ([`super::render`]); the ratings themselves are not columns
//! of the feature table, and no rating is a model input.

use std::io::Write;

use rayon::prelude::*;
use serde::Serialize;

use super::lidc::{self, LidcDatabase, LidcNodule, MalignancyLabel, Split};
use super::render::{self, Appearance, RenderConfig, RenderedPatch};
use crate::radiomics::{self, Features};

/// Why a nodule has no row (reported, never silently dropped).
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{key}: {reason}")]
    Nodule { key: String, reason: String },
    #[error(transparent)]
    Lidc(#[from] lidc::LidcError),
    #[error("writing the table: {0}")]
    Io(#[from] std::io::Error),
}

/// One nodule's row.
#[derive(Debug, Clone, Serialize)]
pub struct NoduleRow {
    pub key: String,
    pub patient_id: String,
    pub split: Split,
    pub label: MalignancyLabel,
    pub median_malignancy: f64,
    pub readers: usize,
    /// Consensus (50 %) mask voxels and volume on the scan grid.
    pub mask_voxels: usize,
    pub mask_volume_mm3: f64,
    pub seed: u64,
    #[serde(skip)]
    pub features: Features,
}

/// Rounded median of one rating over the readers.
fn median_rating(anns: &[&lidc::Annotation], f: impl Fn(&lidc::Ratings) -> u8) -> u8 {
    let v: Vec<f64> = anns.iter().map(|a| f64::from(f(&a.ratings))).collect();
    lidc::median(&v).unwrap_or(1.0).round() as u8
}

/// Consensus mask, rendered patch and features of one nodule.
pub fn render_nodule(
    db: &LidcDatabase,
    nodule: &LidcNodule,
    cfg: &RenderConfig,
    global_seed: u64,
) -> Result<(NoduleRow, RenderedPatch), DatasetError> {
    let key = nodule.key();
    let err = |reason: String| DatasetError::Nodule {
        key: key.clone(),
        reason,
    };
    let scan = db
        .scan(nodule.scan_id)
        .ok_or_else(|| err("scan not found".into()))?;
    let anns: Vec<&lidc::Annotation> = nodule
        .annotation_ids
        .iter()
        .filter_map(|&id| db.annotation(id))
        .collect();
    let mask =
        lidc::consensus_mask(scan, &anns, 0.5).ok_or_else(|| err("no contour points".into()))?;
    let mask_voxels = mask.voxels();
    if mask_voxels == 0 {
        return Err(err("empty 50 % consensus mask".into()));
    }
    let look = Appearance {
        texture: median_rating(&anns, |r| r.texture),
        internal_structure: median_rating(&anns, |r| r.internal_structure),
        contrast: scan.contrast_used,
    };
    let seed = render::nodule_seed(&key, global_seed);
    let patch = render::render_patch(&mask, look, cfg, seed).map_err(|e| err(e.to_string()))?;
    let features = radiomics::extract(&patch.hu, &patch.mask, &radiomics::Settings::default())
        .map_err(|e| err(format!("radiomics: {e}")))?;
    Ok((
        NoduleRow {
            key: key.clone(),
            patient_id: nodule.patient_id.clone(),
            split: nodule.split,
            label: nodule.label,
            median_malignancy: nodule.median_malignancy,
            readers: nodule.readers(),
            mask_voxels,
            mask_volume_mm3: mask.volume_mm3(),
            seed,
            features,
        },
        patch,
    ))
}

/// Rows for `nodules` (in parallel on the rayon pool), and the nodules that
/// failed with their reasons.
pub fn build(
    db: &LidcDatabase,
    nodules: &[LidcNodule],
    cfg: &RenderConfig,
    global_seed: u64,
) -> (Vec<NoduleRow>, Vec<DatasetError>) {
    let results: Vec<Result<NoduleRow, DatasetError>> = nodules
        .par_iter()
        .map(|n| render_nodule(db, n, cfg, global_seed).map(|(row, _)| row))
        .collect();
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(row) => rows.push(row),
            Err(e) => errors.push(e),
        }
    }
    (rows, errors)
}

/// Writes the rows as CSV: identifiers, label, split, then the features in
/// the extractor's order.
pub fn write_csv(rows: &[NoduleRow], out: &mut dyn Write) -> Result<(), DatasetError> {
    let names: Vec<String> = rows
        .first()
        .map(|r| r.features.iter().map(|(k, _)| k.to_string()).collect())
        .unwrap_or_default();
    write!(
        out,
        "key,patient_id,split,label,median_malignancy,readers,mask_voxels,mask_volume_mm3,seed"
    )?;
    for n in &names {
        write!(out, ",{n}")?;
    }
    writeln!(out)?;
    for r in rows {
        let label = serde_json::to_value(r.label)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        write!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            r.key,
            r.patient_id,
            r.split.as_str(),
            label,
            r.median_malignancy,
            r.readers,
            r.mask_voxels,
            r.mask_volume_mm3,
            r.seed
        )?;
        for n in &names {
            write!(out, ",{}", r.features.get(n).unwrap_or(f64::NAN))?;
        }
        writeln!(out)?;
    }
    Ok(())
}
