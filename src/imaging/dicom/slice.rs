//! One CT instance: the header fields we need and its pixels in HU.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions, Tag};
use dicom_pixeldata::PixelDecoder;

use super::DicomError;

/// CT Image Storage (PS3.4 B.5). Enhanced CT (`…1.2.1`) is multi-frame and is
/// refused below with a clear message rather than read as one slice.
pub(crate) const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// One decoded CT slice. The encoded DICOM object is not kept.
#[derive(Debug, Clone, PartialEq)]
pub struct CtSlice {
    /// Where it came from (file path or DICOMweb part), for error messages.
    pub file: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub frame_of_reference_uid: Option<String>,
    pub instance_number: Option<i32>,
    pub rows: usize,
    pub cols: usize,
    /// PixelSpacing as stored: (row spacing, column spacing) in mm, i.e. the
    /// spacing along y then x (PS3.3 10.7.1.3).
    pub pixel_spacing: [f64; 2],
    /// ImageOrientationPatient: row direction (x) then column direction (y).
    pub orientation: [f64; 6],
    /// ImagePositionPatient: centre of the first transmitted pixel, mm.
    pub position: [f64; 3],
    pub slice_thickness: Option<f64>,
    pub transfer_syntax: String,
    /// Hounsfield units, row-major (x fastest), `rows * cols` values.
    pub hu: Vec<f32>,
}

impl CtSlice {
    /// Read a slice from a Part 10 file on disk.
    pub fn from_file(path: &Path) -> Result<Self, DicomError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| DicomError::Io {
            path: name.clone(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(name, &bytes)
    }

    /// Parse a Part 10 stream (with or without the 128-byte preamble, as
    /// WADO-RS parts may come either way) and decode it to HU.
    ///
    /// dicom-rs is not fuzz-hardened; a panic inside it on hostile input is
    /// turned into [`DicomError::Malformed`] so one bad instance cannot take an
    /// imaging worker down.
    pub fn from_bytes(file: impl Into<String>, bytes: &[u8]) -> Result<Self, DicomError> {
        let file = file.into();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let obj = parse(&file, bytes)?;
            Self::from_object(&file, &obj)
        }));
        outcome.unwrap_or_else(|_| {
            Err(DicomError::Malformed {
                file: file.clone(),
                reason: "the DICOM decoder panicked on this input".into(),
            })
        })
    }

    /// Extract the header fields and decode the pixels of a parsed object.
    pub fn from_object(file: &str, obj: &DefaultDicomObject) -> Result<Self, DicomError> {
        let h = Header { file, obj };
        let modality = h.required_str(tags::MODALITY, "Modality (0008,0060)")?;
        if modality != "CT" {
            return Err(DicomError::NotCt {
                file: file.to_owned(),
                modality,
            });
        }
        let sop_class = h.optional_str(tags::SOP_CLASS_UID).unwrap_or_default();
        if let Some(frames) = h.optional_str(tags::NUMBER_OF_FRAMES)
            && frames.parse::<u32>().map(|n| n > 1).unwrap_or(true)
        {
            return Err(DicomError::Unsupported {
                file: file.to_owned(),
                reason: format!(
                    "multi-frame image (NumberOfFrames {frames}, SOP class {sop_class}); \
                     only single-frame CT Image Storage ({CT_IMAGE_STORAGE}) is assembled"
                ),
            });
        }
        let study_uid = h.required_str(tags::STUDY_INSTANCE_UID, "StudyInstanceUID (0020,000D)")?;
        let series_uid =
            h.required_str(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID (0020,000E)")?;
        let sop_instance_uid =
            h.required_str(tags::SOP_INSTANCE_UID, "SOPInstanceUID (0008,0018)")?;
        let rows = h.required_u16(tags::ROWS, "Rows (0028,0010)")? as usize;
        let cols = h.required_u16(tags::COLUMNS, "Columns (0028,0011)")? as usize;
        let spacing = h.required_floats::<2>(tags::PIXEL_SPACING, "PixelSpacing (0028,0030)")?;
        if spacing.iter().any(|s| *s <= 0.0) {
            return Err(h.invalid("PixelSpacing (0028,0030)", "spacing must be positive"));
        }
        let orientation = h.required_floats::<6>(
            tags::IMAGE_ORIENTATION_PATIENT,
            "ImageOrientationPatient (0020,0037)",
        )?;
        let orientation = normalise_orientation(&orientation)
            .map_err(|reason| h.invalid("ImageOrientationPatient (0020,0037)", reason))?;
        let position = h.required_floats::<3>(
            tags::IMAGE_POSITION_PATIENT,
            "ImagePositionPatient (0020,0032)",
        )?;
        let samples = h.optional_u16(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
        if samples != 1 {
            return Err(h.invalid(
                "SamplesPerPixel (0028,0002)",
                format!("{samples}; a CT image has one sample per pixel"),
            ));
        }
        // dicom-pixeldata builds a 2^BitsStored lookup table and asserts on
        // out-of-range values, so BitsStored/BitsAllocated are checked here.
        let bits_allocated = h.required_u16(tags::BITS_ALLOCATED, "BitsAllocated (0028,0100)")?;
        if bits_allocated != 8 && bits_allocated != 16 {
            return Err(h.invalid(
                "BitsAllocated (0028,0100)",
                format!("{bits_allocated}; only 8 or 16 are supported for CT"),
            ));
        }
        let bits_stored = h.required_u16(tags::BITS_STORED, "BitsStored (0028,0101)")?;
        if bits_stored == 0 || bits_stored > bits_allocated {
            return Err(h.invalid(
                "BitsStored (0028,0101)",
                format!("{bits_stored} with BitsAllocated {bits_allocated}"),
            ));
        }
        if obj.get(tags::PIXEL_DATA).is_none() {
            return Err(DicomError::NoPixelData {
                file: file.to_owned(),
            });
        }
        let transfer_syntax = obj
            .meta()
            .transfer_syntax()
            .trim_end_matches(['\0', ' '])
            .to_owned();
        let decode_err = |reason: String| DicomError::PixelDecode {
            file: file.to_owned(),
            transfer_syntax: transfer_syntax.clone(),
            reason,
        };
        let decoded = obj.decode_pixel_data().map_err(|e| decode_err(chain(&e)))?;
        // The default conversion applies only the Modality LUT, i.e.
        // HU = stored value · RescaleSlope + RescaleIntercept (PS3.3 C.11.1.1.2);
        // no VOI window is applied to numeric output.
        let hu: Vec<f32> = decoded
            .to_vec_frame::<f32>(0)
            .map_err(|e| decode_err(chain(&e)))?;
        if hu.len() != rows * cols {
            return Err(decode_err(format!(
                "decoded {} pixels, expected Rows·Columns = {}",
                hu.len(),
                rows * cols
            )));
        }
        Ok(Self {
            file: file.to_owned(),
            study_uid,
            series_uid,
            sop_instance_uid,
            frame_of_reference_uid: h.optional_str(tags::FRAME_OF_REFERENCE_UID),
            instance_number: h
                .optional_str(tags::INSTANCE_NUMBER)
                .and_then(|s| s.parse().ok()),
            rows,
            cols,
            pixel_spacing: spacing,
            orientation,
            position,
            slice_thickness: h
                .optional_str(tags::SLICE_THICKNESS)
                .and_then(|s| s.parse().ok()),
            transfer_syntax,
            hu,
        })
    }

    /// The row direction (x axis of the image), unit length.
    pub fn row_direction(&self) -> [f64; 3] {
        [
            self.orientation[0],
            self.orientation[1],
            self.orientation[2],
        ]
    }

    /// The column direction (y axis of the image), unit length.
    pub fn column_direction(&self) -> [f64; 3] {
        [
            self.orientation[3],
            self.orientation[4],
            self.orientation[5],
        ]
    }

    /// The slice normal `row × column`.
    pub fn normal(&self) -> [f64; 3] {
        cross(self.row_direction(), self.column_direction())
    }
}

/// Parse a Part 10 stream held in memory.
pub(crate) fn parse(file: &str, bytes: &[u8]) -> Result<DefaultDicomObject, DicomError> {
    if bytes.is_empty() {
        return Err(DicomError::Malformed {
            file: file.to_owned(),
            reason: "empty input".into(),
        });
    }
    OpenFileOptions::new()
        .from_reader(bytes)
        .map_err(|e| DicomError::Malformed {
            file: file.to_owned(),
            reason: chain(&e),
        })
}

/// Parse with the panic guard (used by the SEG reader too).
pub(crate) fn parse_guarded(file: &str, bytes: &[u8]) -> Result<DefaultDicomObject, DicomError> {
    catch_unwind(AssertUnwindSafe(|| parse(file, bytes))).unwrap_or_else(|_| {
        Err(DicomError::Malformed {
            file: file.to_owned(),
            reason: "the DICOM decoder panicked on this input".into(),
        })
    })
}

/// An error and its causes on one line (snafu errors nest several levels).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Check that the two direction cosines are (nearly) unit and orthogonal and
/// return them normalised. DS values carry at most 16 characters, so small
/// rounding is normal; a 1 % error or a 0.1° non-orthogonality is not.
pub(crate) fn normalise_orientation(o: &[f64; 6]) -> Result<[f64; 6], String> {
    let r = [o[0], o[1], o[2]];
    let c = [o[3], o[4], o[5]];
    let (nr, nc) = (dot(r, r).sqrt(), dot(c, c).sqrt());
    if (nr - 1.0).abs() > 1e-2 || (nc - 1.0).abs() > 1e-2 {
        return Err(format!(
            "direction cosines are not unit vectors (lengths {nr:.4}, {nc:.4})"
        ));
    }
    if (dot(r, c) / (nr * nc)).abs() > 2e-3 {
        return Err("row and column directions are not orthogonal".into());
    }
    Ok([
        r[0] / nr,
        r[1] / nr,
        r[2] / nr,
        c[0] / nc,
        c[1] / nc,
        c[2] / nc,
    ])
}

/// Typed access to header attributes with errors that name file and tag.
pub(crate) struct Header<'a> {
    pub file: &'a str,
    pub obj: &'a InMemDicomObject,
}

impl Header<'_> {
    pub fn invalid(&self, tag: &'static str, reason: impl Into<String>) -> DicomError {
        DicomError::InvalidTag {
            file: self.file.to_owned(),
            tag,
            reason: reason.into(),
        }
    }

    fn missing(&self, tag: &'static str) -> DicomError {
        DicomError::MissingTag {
            file: self.file.to_owned(),
            tag,
        }
    }

    /// A string value with DICOM padding removed; `None` when absent or empty.
    pub fn optional_str(&self, tag: Tag) -> Option<String> {
        let s = self.obj.get(tag)?.to_str().ok()?;
        let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        (!s.is_empty()).then(|| s.to_owned())
    }

    pub fn required_str(&self, tag: Tag, name: &'static str) -> Result<String, DicomError> {
        self.optional_str(tag).ok_or_else(|| self.missing(name))
    }

    pub fn optional_u16(&self, tag: Tag) -> Option<u16> {
        self.obj.get(tag)?.to_int::<u16>().ok()
    }

    pub fn required_u16(&self, tag: Tag, name: &'static str) -> Result<u16, DicomError> {
        let el = self.obj.get(tag).ok_or_else(|| self.missing(name))?;
        let v = el
            .to_int::<u16>()
            .map_err(|e| self.invalid(name, e.to_string()))?;
        if v == 0 && (tag == tags::ROWS || tag == tags::COLUMNS) {
            return Err(self.invalid(name, "must be positive"));
        }
        Ok(v)
    }

    pub fn required_floats<const N: usize>(
        &self,
        tag: Tag,
        name: &'static str,
    ) -> Result<[f64; N], DicomError> {
        let el = self.obj.get(tag).ok_or_else(|| self.missing(name))?;
        floats_of::<N>(el.to_multi_float64().ok())
            .ok_or_else(|| self.invalid(name, format!("expected {N} finite numbers")))
    }
}

/// Exactly `n` finite values, as a fixed array.
pub(crate) fn floats_of<const N: usize>(v: Option<Vec<f64>>) -> Option<[f64; N]> {
    let v = v?;
    if v.len() != N || v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientation_must_be_orthonormal() {
        assert!(normalise_orientation(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).is_ok());
        assert!(normalise_orientation(&[1.0, 0.0, 0.0, 0.5, 0.5, 0.0]).is_err());
        assert!(normalise_orientation(&[2.0, 0.0, 0.0, 0.0, 1.0, 0.0]).is_err());
        let o = normalise_orientation(&[1.000001, 0.0, 0.0, 0.0, 0.999999, 0.0]).unwrap();
        assert!((o[0] - 1.0).abs() < 1e-12 && (o[4] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn cross_follows_right_hand_rule() {
        assert_eq!(cross([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]), [0.0, 0.0, 1.0]);
        assert_eq!(cross([0.0, 1.0, 0.0], [0.0, 0.0, -1.0]), [-1.0, 0.0, 0.0]);
    }
}
