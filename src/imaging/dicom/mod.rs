//! DICOM CT series → HU volume, and DICOM SEG → mask on the CT grid.
//!
//! The pipeline is two steps so that a DICOMweb download never holds a whole
//! series of encoded instances in memory:
//!
//! 1. [`CtSlice::from_bytes`] / [`CtSlice::from_file`] parse one instance,
//!    check it is a single-frame CT image, decode its pixel data (any transfer
//!    syntax dicom-pixeldata's `native` feature decodes: implicit/explicit VR
//!    little endian, deflate, RLE lossless, JPEG baseline/extended/lossless)
//!    and apply RescaleSlope/Intercept (PS3.3 C.11.1.1.2) to get HU as `f32`.
//!    The encoded bytes can be dropped right after.
//! 2. [`assemble_ct`] sorts the slices of one series along the slice normal and
//!    builds a [`Volume<f32>`](crate::imaging::Volume), checking that the
//!    slices really form a regular grid.
//!
//! # Geometry (PS3.3 C.7.6.2.1.1)
//! ImageOrientationPatient gives the row direction `r` (the direction of
//! increasing column index, our x) and the column direction `c` (increasing
//! row index, our y); the slice normal is `n = r × c`. Slices are sorted by
//! `ImagePositionPatient · n`, ascending, so z grows along `n` and the volume's
//! direction matrix has columns `r`, `c`, `n` (right-handed, orthonormal).
//! The origin is the ImagePositionPatient of the first slice after sorting.
//! PixelSpacing is (row spacing, column spacing) = (y, x) spacing.
//!
//! # What is an error and what is a warning
//! Our volume type can only describe an orthonormal regular grid, so anything
//! that cannot be stacked onto one is an error, never a silent mis-stack:
//! gantry tilt (positions not along the normal), gaps or uneven spacing beyond
//! [`AssembleOptions::position_tolerance_mm`], two different instances at one
//! position, and any disagreement in orientation, size or pixel spacing.
//! Deviations that do not move a voxel by more than the tolerance (rounding
//! jitter in ImagePositionPatient), an instance received twice (same
//! SOPInstanceUID) and a single-slice series are accepted and listed in
//! [`CtVolume::warnings`], which callers should store with the result.

mod assemble;
mod error;
mod seg;
mod slice;
pub mod synthetic;
#[cfg(test)]
mod tests;

pub use assemble::{
    AssembleOptions, CtVolume, SeriesWarning, assemble_ct, group_by_series, read_ct_dir,
};
pub use error::DicomError;
pub use seg::{SEGMENTATION_STORAGE, SegSegment, SegSelection, read_seg_mask, seg_segments};
pub use slice::CtSlice;

use std::path::Path;

/// All regular files in `dir` (not recursive), sorted by name, skipping
/// `DICOMDIR` and hidden files. File order carries no meaning for us: slices
/// are sorted by position later.
pub fn list_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, DicomError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DicomError::Io {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DicomError::Io {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.eq_ignore_ascii_case("DICOMDIR") || !path.is_file() {
            continue;
        }
        files.push(path);
    }
    files.sort();
    Ok(files)
}
