//! Radiomics features of a region of interest, equal to pyradiomics 3.1.0
//! (`RadiomicsFeatureExtractor` with the "Original" image type, no resampling,
//! no normalisation) and named as pyradiomics names them
//! (`original_glcm_Contrast`, …).
//!
//! The 107 default features: shape (14), first order (18), GLCM (24),
//! GLRLM (16), GLSZM (16), GLDM (14), NGTDM (5). Definitions follow the IBSI
//! reference manual (Zwanenburg et al., arXiv:1612.07003) where pyradiomics
//! does; where it does not, we follow pyradiomics — see docs/radiomics.md.
//!
//! Work plan: find the mask's bounding box, crop image and mask to it (as
//! pyradiomics does), discretise the ROI once, then compute the feature
//! classes in parallel on rayon's pool (the caller chooses the pool size with
//! `ThreadPool::install`). CPU-bound and synchronous: call it off the async
//! runtime.

mod discretize;
mod firstorder;
mod glcm;
mod gldm;
mod glrlm;
mod glszm;
mod input;
mod linalg;
mod neighbourhood;
mod ngtdm;
mod roi;
mod settings;
mod shape;
mod shape_table;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::imaging::Volume;
use crate::imaging::nrrd::{self, NrrdError};
pub use input::load_pair_any;
pub use roi::BoundingBox;
pub use settings::Settings;

/// Version of pyradiomics whose output this module reproduces.
pub const PYRADIOMICS_VERSION: &str = "3.1.0";

#[derive(Debug, thiserror::Error)]
pub enum RadiomicsError {
    #[error("invalid radiomics settings: {0}")]
    InvalidSettings(String),
    #[error("image and mask differ in size: image {image:?}, mask {mask:?} (x, y, z voxels)")]
    SizeMismatch { image: [usize; 3], mask: [usize; 3] },
    #[error("image and mask differ in {what}: image {image:?}, mask {mask:?}")]
    GeometryMismatch {
        what: &'static str,
        image: String,
        mask: String,
    },
    #[error("label {label} is not present in the mask (empty region of interest)")]
    EmptyRoi { label: u8 },
    #[error("the mask has a single voxel with label {label}; features need at least two")]
    SingleVoxel { label: u8 },
    #[error(
        "the region of interest spans {found} dimension(s) (more than one voxel along that many axes); at least {required} required"
    )]
    TooFewDimensions { found: usize, required: usize },
    #[error("intensity at voxel {index:?} (x, y, z) inside the ROI is not finite")]
    NonFiniteIntensity { index: [usize; 3] },
    #[error(
        "discretisation with bin width {bin_width} gives grey level {levels}, outside 1..=65535; use a larger bin width"
    )]
    TooManyGreyLevels { levels: usize, bin_width: f64 },
    #[error("invalid volume: {0}")]
    InvalidVolume(String),
    #[error(transparent)]
    Nrrd(#[from] NrrdError),
    #[error("cannot load {path}: {reason}")]
    UnsupportedInput { path: PathBuf, reason: String },
    #[error("DICOM input: {0}")]
    Dicom(String),
}

/// Feature name → value, in pyradiomics' order (shape, first order, GLCM,
/// GLRLM, GLSZM, GLDM, NGTDM; alphabetical by pyradiomics' getter within a
/// class). Serialises as a JSON object in that order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    entries: Vec<(String, f64)>,
}

impl Features {
    /// Features from `(name, value)` pairs in the given order (e.g. a stored
    /// table row read back).
    pub fn from_pairs(entries: Vec<(String, f64)>) -> Self {
        Self { entries }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.entries
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn extend(&mut self, class: &str, values: Vec<(&'static str, f64)>) {
        self.entries.extend(
            values
                .into_iter()
                .map(|(n, v)| (format!("original_{class}_{n}"), v)),
        );
    }
}

impl Serialize for Features {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

fn check_volume<T>(v: &Volume<T>, what: &str) -> Result<(), RadiomicsError> {
    let n = v.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(v.data.len()) {
        return Err(RadiomicsError::InvalidVolume(format!(
            "{what} has {} samples but dimensions {:?}",
            v.data.len(),
            v.dims
        )));
    }
    if v.spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(RadiomicsError::InvalidVolume(format!(
            "{what} spacing {:?} is not positive",
            v.spacing
        )));
    }
    Ok(())
}

/// Same size and, within the tolerance, same spacing, origin and direction
/// (SimpleITK's rule, which pyradiomics applies through
/// `LabelStatisticsImageFilter`).
fn check_geometry<A, B>(
    image: &Volume<A>,
    mask: &Volume<B>,
    tol: f64,
) -> Result<(), RadiomicsError> {
    if image.dims != mask.dims {
        return Err(RadiomicsError::SizeMismatch {
            image: image.dims,
            mask: mask.dims,
        });
    }
    let scale = image.spacing.iter().copied().fold(f64::INFINITY, f64::min);
    let mismatch = |what: &'static str, a: String, b: String| RadiomicsError::GeometryMismatch {
        what,
        image: a,
        mask: b,
    };
    if image
        .spacing
        .iter()
        .zip(mask.spacing)
        .any(|(a, b)| (a - b).abs() > tol * a.abs().max(b.abs()))
    {
        return Err(mismatch(
            "spacing",
            format!("{:?}", image.spacing),
            format!("{:?}", mask.spacing),
        ));
    }
    if image
        .origin
        .iter()
        .zip(mask.origin)
        .any(|(a, b)| (a - b).abs() > tol * scale)
    {
        return Err(mismatch(
            "origin",
            format!("{:?}", image.origin),
            format!("{:?}", mask.origin),
        ));
    }
    let dir_diff = (0..3)
        .flat_map(|r| (0..3).map(move |c| (r, c)))
        .any(|(r, c)| (image.direction[r][c] - mask.direction[r][c]).abs() > tol);
    if dir_diff {
        return Err(mismatch(
            "direction",
            format!("{:?}", image.direction),
            format!("{:?}", mask.direction),
        ));
    }
    Ok(())
}

/// Computes the 107 pyradiomics default features of the ROI `mask == settings.label`.
pub fn extract(
    image: &Volume<f32>,
    mask: &Volume<u8>,
    settings: &Settings,
) -> Result<Features, RadiomicsError> {
    settings.validate()?;
    check_volume(image, "image")?;
    check_volume(mask, "mask")?;
    check_geometry(image, mask, settings.geometry_tolerance)?;
    let label = settings.label;
    let bbox = roi::bounding_box(mask, label).ok_or(RadiomicsError::EmptyRoi { label })?;
    let spans = bbox.size().iter().filter(|&&n| n > 1).count();
    if spans == 0 {
        return Err(RadiomicsError::SingleVoxel { label });
    }
    if spans < settings.minimum_roi_dimensions {
        return Err(RadiomicsError::TooFewDimensions {
            found: spans,
            required: settings.minimum_roi_dimensions,
        });
    }
    let roi = roi::Roi::build(image, mask, bbox, settings)?;
    let ((shape, first), ((glcm, glrlm), (glszm, (gldm, ngtdm)))) = rayon::join(
        || {
            rayon::join(
                || shape::compute(&roi),
                || firstorder::compute(&roi, settings.voxel_array_shift),
            )
        },
        || {
            rayon::join(
                || rayon::join(|| glcm::compute(&roi), || glrlm::compute(&roi)),
                || {
                    rayon::join(
                        || glszm::compute(&roi),
                        || neighbourhood::compute(&roi, settings.gldm_alpha),
                    )
                },
            )
        },
    );
    let mut features = Features::default();
    features.extend("shape", shape);
    features.extend("firstorder", first);
    features.extend("glcm", glcm);
    features.extend("glrlm", glrlm);
    features.extend("glszm", glszm);
    features.extend("gldm", gldm);
    features.extend("ngtdm", ngtdm);
    Ok(features)
}

fn extension(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".nii.gz") {
        return "nii.gz".into();
    }
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

fn unsupported(path: &Path) -> Result<(), RadiomicsError> {
    if path.is_dir() {
        return Err(RadiomicsError::UnsupportedInput {
            path: path.to_path_buf(),
            reason:
                "is a directory; DICOM series folders are not supported yet (use an .nrrd file)"
                    .into(),
        });
    }
    match extension(path).as_str() {
        "nrrd" => Ok(()),
        "nhdr" => Err(RadiomicsError::UnsupportedInput {
            path: path.to_path_buf(),
            reason: "detached NRRD headers (.nhdr) are not supported; use an attached .nrrd".into(),
        }),
        other => Err(RadiomicsError::UnsupportedInput {
            path: path.to_path_buf(),
            reason: format!("unsupported file type {other:?} (supported: .nrrd)"),
        }),
    }
}

/// Loads an image volume, choosing the reader by file type.
pub fn load_image(path: &Path) -> Result<Volume<f32>, RadiomicsError> {
    unsupported(path)?;
    Ok(nrrd::read_nrrd_f32(path)?)
}

/// Loads a label map and keeps `label` (1 inside, 0 outside).
pub fn load_mask(path: &Path, label: u8) -> Result<Volume<u8>, RadiomicsError> {
    unsupported(path)?;
    Ok(nrrd::read_nrrd_mask(path, label as i64)?)
}

/// Loads the image and mask cropped to the mask's bounding box (what
/// `extract` would crop to anyway). For NRRD the image file is read on a
/// second thread while the mask is read, then decompressed only up to the
/// ROI's last slice;
/// geometry is checked against the full headers first, so errors are those of
/// a full load.
pub fn load_roi_pair(
    image: &Path,
    mask: &Path,
    settings: &Settings,
) -> Result<(Volume<f32>, Volume<u8>), RadiomicsError> {
    settings.validate()?;
    unsupported(image)?;
    let mut cropped_mask = None;
    let image = nrrd::read_nrrd_f32_cropped(image, |header| {
        unsupported(mask)?;
        let cropped = nrrd::read_nrrd_mask_cropped(mask, settings.label as i64)?;
        let Some(cropped) = cropped else {
            // Report a size/geometry mismatch before an absent label.
            let m = nrrd::read_nrrd_header(mask)?;
            check_geometry(&probe(header), &probe(&m), settings.geometry_tolerance)?;
            return Err(RadiomicsError::EmptyRoi {
                label: settings.label,
            });
        };
        check_geometry(
            &probe(header),
            &probe(&cropped.header),
            settings.geometry_tolerance,
        )?;
        let region = cropped.region.clone();
        cropped_mask = Some(cropped.mask);
        Ok::<_, RadiomicsError>(region)
    })?;
    let mask =
        cropped_mask.ok_or_else(|| RadiomicsError::InvalidVolume("mask was not loaded".into()))?;
    Ok((image, mask))
}

/// A data-less volume carrying a header's geometry, for `check_geometry`.
fn probe(h: &nrrd::NrrdHeader) -> Volume<u8> {
    Volume {
        data: Vec::new(),
        dims: h.dims,
        spacing: h.spacing,
        origin: h.origin,
        direction: h.direction,
    }
}

/// What `oncohooks radiomics --image IMG --mask MASK [--bin-width W]` prints:
/// the settings used, the ROI size and the features (label 1).
pub fn cli_extract(
    image: &Path,
    mask: &Path,
    bin_width: Option<f64>,
) -> Result<serde_json::Value, RadiomicsError> {
    let mut settings = Settings::default();
    if let Some(w) = bin_width {
        settings.bin_width = w;
    }
    let nrrd_pair = [image, mask]
        .iter()
        .all(|p| p.is_file() && extension(p) == "nrrd");
    let (image, mask) = if nrrd_pair {
        load_roi_pair(image, mask, &settings)?
    } else {
        input::load_pair_any(image, mask, &settings)?
    };
    // The loaded mask is binary (1 = label), whatever label was asked for.
    let run = Settings {
        label: 1,
        ..settings.clone()
    };
    let features = extract(&image, &mask, &run)?;
    let voxels = mask.data.iter().filter(|&&m| m == 1).count();
    Ok(serde_json::json!({
        "pyradiomics_compatible": PYRADIOMICS_VERSION,
        "settings": settings,
        "mask_voxels": voxels,
        "features": features,
    }))
}
