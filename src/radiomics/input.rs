//! Loading an image and its mask from NRRD files or DICOM: a CT series
//! folder for the image, a DICOM SEG (file, or a folder holding one) or an
//! NRRD label map for the mask.

use std::path::{Path, PathBuf};

use super::{RadiomicsError, Settings, check_geometry, extension, load_image, load_mask};
use crate::imaging::Volume;
use crate::imaging::dicom::{
    AssembleOptions, DicomError, SegSelection, read_ct_dir, read_seg_mask,
};

fn is_dicom_file(path: &Path) -> bool {
    if matches!(extension(path).as_str(), "dcm" | "dicom") {
        return true;
    }
    // Part 10 files: 128-byte preamble, then "DICM".
    std::fs::read(path)
        .map(|b| b.len() > 132 && &b[128..132] == b"DICM")
        .unwrap_or(false)
}

fn dicom_err(e: DicomError) -> RadiomicsError {
    RadiomicsError::Dicom(e.to_string())
}

/// The image: a DICOM CT series folder, or an NRRD file.
fn image_any(path: &Path) -> Result<(Volume<f32>, Option<String>), RadiomicsError> {
    if path.is_dir() {
        let ct = read_ct_dir(path, None, &AssembleOptions::default()).map_err(dicom_err)?;
        Ok((ct.volume, ct.frame_of_reference_uid))
    } else {
        Ok((load_image(path)?, None))
    }
}

/// The SEG file of a folder: the only Part 10 file whose modality is SEG.
fn seg_in(dir: &Path) -> Result<PathBuf, RadiomicsError> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| RadiomicsError::UnsupportedInput {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    for entry in entries.filter_map(Result::ok) {
        let p = entry.path();
        if p.is_file() && is_dicom_file(&p) {
            let bytes = std::fs::read(&p).unwrap_or_default();
            // Cheap check before parsing: the SEG SOP class UID.
            if bytes
                .windows(crate::imaging::dicom::SEGMENTATION_STORAGE.len())
                .any(|w| w == crate::imaging::dicom::SEGMENTATION_STORAGE.as_bytes())
            {
                found.push(p);
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(RadiomicsError::UnsupportedInput {
            path: dir.to_owned(),
            reason: "holds no DICOM SEG instance".into(),
        }),
        n => Err(RadiomicsError::UnsupportedInput {
            path: dir.to_owned(),
            reason: format!("holds {n} DICOM SEG instances; name the file"),
        }),
    }
}

/// Image and mask from any supported mix of inputs, mask checked against the
/// image grid (a wrong-size mask is an error naming both sizes).
pub fn load_pair_any(
    image: &Path,
    mask: &Path,
    settings: &Settings,
) -> Result<(Volume<f32>, Volume<u8>), RadiomicsError> {
    settings.validate()?;
    let (img, frame_of_reference) = image_any(image)?;
    let seg = if mask.is_dir() {
        Some(seg_in(mask)?)
    } else if is_dicom_file(mask) {
        Some(mask.to_owned())
    } else {
        None
    };
    let m = match seg {
        Some(file) => {
            let bytes = std::fs::read(&file).map_err(|e| RadiomicsError::UnsupportedInput {
                path: file.clone(),
                reason: e.to_string(),
            })?;
            // pyradiomics' `label` is the SEG's SegmentNumber.
            read_seg_mask(
                &file.display().to_string(),
                &bytes,
                &img,
                frame_of_reference.as_deref(),
                SegSelection::Segment(u16::from(settings.label)),
            )
            .map_err(dicom_err)?
        }
        None => {
            let m = load_mask(mask, settings.label)?;
            check_geometry(&img, &m, settings.geometry_tolerance)?;
            m
        }
    };
    Ok((img, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
    }

    #[test]
    fn dicom_series_and_seg_give_the_same_features_as_in_memory() {
        let settings = Settings::default();
        let ct = fixtures().join("dicom/ct_explicit");
        let seg = fixtures().join("dicom/seg_nodule.dcm");
        let (img, mask) = load_pair_any(&ct, &seg, &settings).unwrap();
        let expected = std::fs::read(fixtures().join("dicom/seg_expected.u8")).unwrap();
        assert_eq!(mask.data, expected, "SEG rasterised onto the CT grid");
        let json = super::super::cli_extract(&ct, &seg, None).unwrap();
        let direct = super::super::extract(&img, &mask, &settings).unwrap();
        for (name, value) in direct.iter() {
            assert_eq!(json["features"][name].as_f64().unwrap(), value, "{name}");
        }
        assert_eq!(json["features"].as_object().unwrap().len(), 107);
    }

    #[test]
    fn wrong_size_nrrd_mask_on_a_dicom_image_is_a_clear_error() {
        let ct = fixtures().join("dicom/ct_explicit");
        let mask = fixtures().join("radiomics/lung1_crop_mask.nrrd");
        let err = load_pair_any(&ct, &mask, &Settings::default()).unwrap_err();
        assert!(matches!(err, RadiomicsError::SizeMismatch { .. }), "{err}");
        assert!(err.to_string().contains("differ in size"));
    }

    #[test]
    fn a_ct_folder_as_mask_is_refused_with_a_reason() {
        let ct = fixtures().join("dicom/ct_explicit");
        let err = load_pair_any(&ct, &ct, &Settings::default()).unwrap_err();
        assert!(err.to_string().contains("no DICOM SEG"), "{err}");
    }
}
