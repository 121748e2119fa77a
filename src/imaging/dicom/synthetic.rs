//! Synthetic CT instances written with dicom-rs, for tests, benchmarks and
//! demos. Each slice's header fields are public so a test can break one
//! (tilt a position, drop a slice, change a modality) before encoding.
//!
//! The committed fixtures in `fixtures/dicom/` are written by pydicom instead,
//! so that reading is also tested against an independent writer.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use super::DicomError;
use super::slice::{CT_IMAGE_STORAGE, chain};
use crate::imaging::Volume;

/// One instance to be encoded. Pixel values are stored signed 16-bit.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSlice {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub modality: String,
    pub instance_number: i32,
    pub rows: u16,
    pub cols: u16,
    /// (row spacing, column spacing), as PixelSpacing.
    pub pixel_spacing: [f64; 2],
    pub orientation: [f64; 6],
    pub position: [f64; 3],
    pub slope: f64,
    pub intercept: f64,
    /// Stored values, row-major; `None` leaves PixelData out.
    pub stored: Option<Vec<i16>>,
    /// Transfer syntax UID: Explicit or Implicit VR Little Endian.
    pub transfer_syntax: String,
}

impl SyntheticSlice {
    /// Encode as a Part 10 stream (preamble, `DICM`, meta group, data set).
    pub fn to_bytes(&self) -> Result<Vec<u8>, DicomError> {
        let fail = |e: &dyn std::error::Error| DicomError::Unsupported {
            file: format!("synthetic slice {}", self.sop_instance_uid),
            reason: chain(e),
        };
        let mut obj = InMemDicomObject::new_empty();
        let mut put_str = |tag, vr, s: &str| {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(s)));
        };
        put_str(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE);
        put_str(tags::SOP_INSTANCE_UID, VR::UI, &self.sop_instance_uid);
        put_str(tags::STUDY_INSTANCE_UID, VR::UI, &self.study_uid);
        put_str(tags::SERIES_INSTANCE_UID, VR::UI, &self.series_uid);
        put_str(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &self.frame_of_reference_uid,
        );
        put_str(tags::MODALITY, VR::CS, &self.modality);
        put_str(tags::PATIENT_ID, VR::LO, "SYNTH-RS");
        put_str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
        put_str(
            tags::INSTANCE_NUMBER,
            VR::IS,
            &self.instance_number.to_string(),
        );
        put_str(tags::RESCALE_SLOPE, VR::DS, &ds(self.slope));
        put_str(tags::RESCALE_INTERCEPT, VR::DS, &ds(self.intercept));
        let mut put_ds = |tag, values: &[f64]| {
            obj.put(DataElement::new(
                tag,
                VR::DS,
                PrimitiveValue::Strs(values.iter().map(|v| ds(*v)).collect()),
            ));
        };
        put_ds(tags::PIXEL_SPACING, &self.pixel_spacing);
        put_ds(tags::IMAGE_ORIENTATION_PATIENT, &self.orientation);
        put_ds(tags::IMAGE_POSITION_PATIENT, &self.position);
        let mut put_us = |tag, v: u16| {
            obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
        };
        put_us(tags::ROWS, self.rows);
        put_us(tags::COLUMNS, self.cols);
        put_us(tags::SAMPLES_PER_PIXEL, 1);
        put_us(tags::BITS_ALLOCATED, 16);
        put_us(tags::BITS_STORED, 16);
        put_us(tags::HIGH_BIT, 15);
        put_us(tags::PIXEL_REPRESENTATION, 1);
        if let Some(stored) = &self.stored {
            // Two's complement bit patterns, as the signed representation says.
            let words: Vec<u16> = stored.iter().map(|v| *v as u16).collect();
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(words.into()),
            ));
        }
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(self.transfer_syntax.as_str())
                    .implementation_class_uid("2.25.1234567890"),
            )
            .map_err(|e| fail(&e))?;
        let mut out = Vec::new();
        file.write_all(&mut out).map_err(|e| fail(&e))?;
        Ok(out)
    }
}

/// A DS value within the 16-character limit of PS3.5 6.2.
fn ds(v: f64) -> String {
    let s = format!("{v}");
    if s.len() <= 16 {
        return s;
    }
    let mut s = format!("{v:.6}");
    while s.contains('.') && (s.ends_with('0') || s.ends_with('.')) {
        s.pop();
    }
    s
}

/// One [`SyntheticSlice`] per z slice of `hu`, with its geometry. HU must be
/// integers in the `i16` range (stored with slope 1, intercept 0);
/// InstanceNumber runs opposite to z so readers cannot rely on it.
pub fn series_from_volume(hu: &Volume<f32>, series_uid: &str) -> Vec<SyntheticSlice> {
    let [nx, ny, nz] = hu.dims;
    let d = &hu.direction;
    let orientation = [d[0][0], d[1][0], d[2][0], d[0][1], d[1][1], d[2][1]];
    (0..nz)
        .map(|z| {
            let stored = hu.data[z * nx * ny..(z + 1) * nx * ny]
                .iter()
                .map(|v| v.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16)
                .collect();
            SyntheticSlice {
                study_uid: "2.25.1001".into(),
                series_uid: series_uid.into(),
                sop_instance_uid: format!("{series_uid}.{}", z + 1),
                frame_of_reference_uid: "2.25.1002".into(),
                modality: "CT".into(),
                instance_number: (nz - z) as i32,
                rows: ny as u16,
                cols: nx as u16,
                pixel_spacing: [hu.spacing[1], hu.spacing[0]],
                orientation,
                position: hu.index_to_physical([0.0, 0.0, z as f64]),
                slope: 1.0,
                intercept: 0.0,
                stored: Some(stored),
                transfer_syntax: uids::EXPLICIT_VR_LITTLE_ENDIAN.into(),
            }
        })
        .collect()
}
