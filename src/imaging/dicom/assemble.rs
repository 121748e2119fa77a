//! Stacking the slices of one CT series into a volume, with the checks that
//! keep a broken series from being mis-stacked silently.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use dicom_dictionary_std::tags;
use serde::Serialize;

use super::slice::{CtSlice, Header, dot, parse_guarded};
use super::{DicomError, list_files};
use crate::imaging::Volume;

/// Tolerances for [`assemble_ct`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AssembleOptions {
    /// How far (mm) a slice may lie from where the regular grid puts it,
    /// along the normal (uneven spacing) or across it (gantry tilt).
    /// The default 0.1 mm is far above DS rounding in ImagePositionPatient
    /// (≈1e-4 mm) and well under half a CT voxel (0.25-0.5 mm), so anything
    /// beyond it is a real gap, extra slice or tilt.
    pub position_tolerance_mm: f64,
    /// Largest accepted difference in PixelSpacing (mm) and in direction
    /// cosines between slices.
    pub header_tolerance: f64,
}

impl Default for AssembleOptions {
    fn default() -> Self {
        Self {
            position_tolerance_mm: 0.1,
            header_tolerance: 1e-4,
        }
    }
}

/// Something about the series that was accepted but should be kept with the
/// result (stored alongside the imaging result and shown in `--explain`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SeriesWarning {
    /// The same SOPInstanceUID arrived twice at the same position; one copy
    /// was dropped.
    DuplicateInstanceDropped { sop_instance_uid: String },
    /// Slice positions deviate from the regular grid by less than the
    /// tolerance but more than 1 µm.
    PositionJitter { max_deviation_mm: f64 },
    /// Only one slice: the z spacing cannot be measured and is taken from
    /// SliceThickness (or 1 mm when absent).
    SingleSlice { assumed_spacing_mm: f64 },
}

/// A CT series as a HU volume plus what identifies and qualifies it.
#[derive(Debug, Clone, PartialEq)]
pub struct CtVolume {
    /// HU (`f32`), x fastest; z ascending along the slice normal.
    pub volume: Volume<f32>,
    pub study_uid: String,
    pub series_uid: String,
    pub frame_of_reference_uid: Option<String>,
    /// SOPInstanceUID of each z slice, in volume order.
    pub sop_instance_uids: Vec<String>,
    /// Transfer syntax UIDs the instances arrived in (distinct, sorted):
    /// provenance, since lossy JPEG changes texture features.
    pub transfer_syntaxes: Vec<String>,
    pub warnings: Vec<SeriesWarning>,
}

/// Sort the slices of one series along the slice normal and stack them.
///
/// Errors: [`DicomError::EmptySeries`], [`DicomError::InconsistentSeries`]
/// (naming the tag), [`DicomError::GantryTilt`],
/// [`DicomError::IrregularSpacing`], [`DicomError::DuplicatePosition`].
pub fn assemble_ct(slices: Vec<CtSlice>, opts: &AssembleOptions) -> Result<CtVolume, DicomError> {
    let first = slices.first().ok_or(DicomError::EmptySeries)?;
    check_consistent(&slices, first, opts)?;
    let row = first.row_direction();
    let col = first.column_direction();
    let normal = first.normal();
    let (rows, cols) = (first.rows, first.cols);
    let spacing_xy = [first.pixel_spacing[1], first.pixel_spacing[0]];
    let study_uid = first.study_uid.clone();
    let series_uid = first.series_uid.clone();
    let frame_of_reference_uid = first.frame_of_reference_uid.clone();
    let thickness = first.slice_thickness;
    let mut warnings = Vec::new();

    // Sort along the normal; a re-sent instance (same SOPInstanceUID) is
    // dropped, two different instances at one position are an error.
    let mut slices: Vec<(f64, CtSlice)> = slices
        .into_iter()
        .map(|s| (dot(s.position, normal), s))
        .collect();
    slices.sort_by(|a, b| a.0.total_cmp(&b.0));
    let tol = opts.position_tolerance_mm;
    let mut kept: Vec<(f64, CtSlice)> = Vec::with_capacity(slices.len());
    let mut seen = HashSet::new();
    for (d, s) in slices {
        if !seen.insert(s.sop_instance_uid.clone()) {
            match kept
                .iter()
                .find(|(_, k)| k.sop_instance_uid == s.sop_instance_uid)
            {
                Some((dk, _)) if (dk - d).abs() <= tol => {
                    warnings.push(SeriesWarning::DuplicateInstanceDropped {
                        sop_instance_uid: s.sop_instance_uid,
                    });
                    continue;
                }
                _ => {
                    return Err(DicomError::InconsistentSeries {
                        tag: "SOPInstanceUID (0008,0018)",
                        detail: format!(
                            "{} appears twice at different positions ({} and another)",
                            s.sop_instance_uid, s.file
                        ),
                    });
                }
            }
        }
        if let Some((dp, prev)) = kept.last()
            && (d - dp).abs() <= tol
        {
            return Err(DicomError::DuplicatePosition {
                first: prev.file.clone(),
                second: s.file,
                position_mm: d,
            });
        }
        kept.push((d, s));
    }

    // Gantry tilt: every position must lie on the line through the first one
    // along the normal (PS3.3 C.7.6.2.1.1; a tilted acquisition shifts each
    // slice along the column direction instead).
    let p0 = kept[0].1.position;
    let mut max_offset: f64 = 0.0;
    let mut tilt: f64 = 0.0;
    for (_, s) in &kept[1..] {
        let v = [
            s.position[0] - p0[0],
            s.position[1] - p0[1],
            s.position[2] - p0[2],
        ];
        let along = dot(v, normal);
        let perp = [
            v[0] - along * normal[0],
            v[1] - along * normal[1],
            v[2] - along * normal[2],
        ];
        let off = dot(perp, perp).sqrt();
        if off > max_offset {
            max_offset = off;
            tilt = off.atan2(along.abs()).to_degrees();
        }
    }
    if max_offset > tol {
        return Err(DicomError::GantryTilt {
            tilt_degrees: tilt,
            max_offset_mm: max_offset,
        });
    }

    let n = kept.len();
    let spacing_z = if n == 1 {
        let s = thickness.filter(|t| *t > 0.0).unwrap_or(1.0);
        warnings.push(SeriesWarning::SingleSlice {
            assumed_spacing_mm: s,
        });
        s
    } else {
        let d: Vec<f64> = kept.iter().map(|(d, _)| *d).collect();
        regular_spacing(&d, tol, &mut warnings)?
    };

    let origin = kept[0].1.position;
    let transfer_syntaxes: Vec<String> = kept
        .iter()
        .map(|(_, s)| s.transfer_syntax.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut data = Vec::with_capacity(rows * cols * n);
    let mut sop_instance_uids = Vec::with_capacity(n);
    for (_, s) in kept {
        // Each slice's buffer is freed as soon as it is copied, so the peak
        // is one volume plus one slice, not two volumes.
        data.extend_from_slice(&s.hu);
        sop_instance_uids.push(s.sop_instance_uid);
    }
    let mut volume = Volume::new(
        data,
        [cols, rows, n],
        [spacing_xy[0], spacing_xy[1], spacing_z],
    );
    volume.origin = origin;
    for r in 0..3 {
        volume.direction[r] = [row[r], col[r], normal[r]];
    }
    Ok(CtVolume {
        volume,
        study_uid,
        series_uid,
        frame_of_reference_uid,
        sop_instance_uids,
        transfer_syntaxes,
        warnings,
    })
}

/// The grid spacing for sorted slice positions `d` (distinct, ascending),
/// or the gap that breaks the regular grid.
fn regular_spacing(
    d: &[f64],
    tol: f64,
    warnings: &mut Vec<SeriesWarning>,
) -> Result<f64, DicomError> {
    let n = d.len();
    // The grid is anchored at the first and last slice, so slow drift is
    // absorbed and what is tested is each slice's distance from its grid
    // position.
    let spacing = (d[n - 1] - d[0]) / (n - 1) as f64;
    let max_dev = d
        .iter()
        .enumerate()
        .map(|(i, di)| (di - (d[0] + i as f64 * spacing)).abs())
        .fold(0.0, f64::max);
    if max_dev > tol {
        // Name the gap furthest from the typical (median) gap.
        let mut gaps: Vec<f64> = d.windows(2).map(|w| w[1] - w[0]).collect();
        let worst = gaps
            .iter()
            .enumerate()
            .map(|(i, g)| (i, *g))
            .collect::<Vec<_>>();
        gaps.sort_by(f64::total_cmp);
        let median = gaps[gaps.len() / 2];
        let (index, gap) = worst
            .into_iter()
            .max_by(|a, b| (a.1 - median).abs().total_cmp(&(b.1 - median).abs()))
            .unwrap_or((0, spacing));
        return Err(DicomError::IrregularSpacing {
            index,
            next: index + 1,
            gap_mm: gap,
            expected_mm: median,
            tolerance_mm: tol,
        });
    }
    if max_dev > 1e-3 {
        warnings.push(SeriesWarning::PositionJitter {
            max_deviation_mm: max_dev,
        });
    }
    Ok(spacing)
}

fn check_consistent(
    slices: &[CtSlice],
    first: &CtSlice,
    opts: &AssembleOptions,
) -> Result<(), DicomError> {
    let differs =
        |tag: &'static str, a: &str, b: &str, file: &str| DicomError::InconsistentSeries {
            tag,
            detail: format!("{a} in {} vs {b} in {file}", first.file),
        };
    for s in &slices[1..] {
        if s.series_uid != first.series_uid {
            return Err(differs(
                "SeriesInstanceUID (0020,000E)",
                &first.series_uid,
                &s.series_uid,
                &s.file,
            ));
        }
        if s.study_uid != first.study_uid {
            return Err(differs(
                "StudyInstanceUID (0020,000D)",
                &first.study_uid,
                &s.study_uid,
                &s.file,
            ));
        }
        if let (Some(a), Some(b)) = (&first.frame_of_reference_uid, &s.frame_of_reference_uid)
            && a != b
        {
            return Err(differs("FrameOfReferenceUID (0020,0052)", a, b, &s.file));
        }
        if s.rows != first.rows {
            return Err(differs(
                "Rows (0028,0010)",
                &first.rows.to_string(),
                &s.rows.to_string(),
                &s.file,
            ));
        }
        if s.cols != first.cols {
            return Err(differs(
                "Columns (0028,0011)",
                &first.cols.to_string(),
                &s.cols.to_string(),
                &s.file,
            ));
        }
        let close = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= opts.header_tolerance)
        };
        if !close(&first.pixel_spacing, &s.pixel_spacing) {
            return Err(differs(
                "PixelSpacing (0028,0030)",
                &format!("{:?}", first.pixel_spacing),
                &format!("{:?}", s.pixel_spacing),
                &s.file,
            ));
        }
        if !close(&first.orientation, &s.orientation) {
            return Err(differs(
                "ImageOrientationPatient (0020,0037)",
                &format!("{:?}", first.orientation),
                &format!("{:?}", s.orientation),
                &s.file,
            ));
        }
    }
    Ok(())
}

/// Split decoded slices by SeriesInstanceUID (for a study-level retrieval
/// or a folder holding several reconstructions).
pub fn group_by_series(slices: Vec<CtSlice>) -> BTreeMap<String, Vec<CtSlice>> {
    let mut groups: BTreeMap<String, Vec<CtSlice>> = BTreeMap::new();
    for s in slices {
        groups.entry(s.series_uid.clone()).or_default().push(s);
    }
    groups
}

/// Read the CT series in a folder (files at its top level).
///
/// With `series_uid`, instances of other series (a SEG, a scout, another
/// reconstruction) are skipped before their pixels are decoded. Without it,
/// the folder must hold exactly one series, otherwise
/// [`DicomError::MultipleSeries`] lists them.
pub fn read_ct_dir(
    dir: &Path,
    series_uid: Option<&str>,
    opts: &AssembleOptions,
) -> Result<CtVolume, DicomError> {
    let mut slices = Vec::new();
    let mut other_series = BTreeSet::new();
    let mut chosen: Option<String> = series_uid.map(str::to_owned);
    for path in list_files(dir)? {
        let name = path.display().to_string();
        let bytes = std::fs::read(&path).map_err(|e| DicomError::Io {
            path: name.clone(),
            reason: e.to_string(),
        })?;
        let obj = parse_guarded(&name, &bytes)?;
        drop(bytes);
        let uid = Header {
            file: &name,
            obj: &obj,
        }
        .required_str(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID (0020,000E)")?;
        match chosen.as_deref().map(|c| c == uid) {
            Some(false) => {
                other_series.insert(uid);
                continue;
            }
            None => chosen = Some(uid),
            Some(true) => {}
        }
        let slice = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            CtSlice::from_object(&name, &obj)
        }))
        .unwrap_or_else(|_| {
            Err(DicomError::Malformed {
                file: name.clone(),
                reason: "the DICOM decoder panicked on this input".into(),
            })
        })?;
        slices.push(slice);
    }
    if series_uid.is_none() && !other_series.is_empty() {
        let mut all: Vec<String> = other_series.into_iter().collect();
        all.extend(chosen);
        all.sort();
        return Err(DicomError::MultipleSeries {
            count: all.len(),
            uids: all.join(", "),
        });
    }
    if slices.is_empty() {
        return match series_uid {
            Some(s) => Err(DicomError::SeriesNotFound {
                series_uid: s.to_owned(),
            }),
            None => Err(DicomError::EmptySeries),
        };
    }
    assemble_ct(slices, opts)
}
