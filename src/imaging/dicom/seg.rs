//! DICOM Segmentation (PS3.3 A.51, C.8.20) → binary mask on a CT grid.
//!
//! A SEG instance is multi-frame: each frame is one plane of one segment, and
//! where it lies is given per frame by the Plane Position functional group
//! (PS3.3 C.7.6.16.2.3), not by frame order. Frames are therefore placed by
//! mapping their ImagePositionPatient onto the referenced image grid; a frame
//! that does not land on a slice of that grid is an error, never rounded.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_object::mem::InMemElement;

use super::DicomError;
use super::slice::{Header, floats_of, normalise_orientation, parse_guarded};
use crate::imaging::Volume;

/// Segmentation Storage SOP class (PS3.4 B.5).
pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// Which segments end up in the mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegSelection {
    /// The union of all segments.
    All,
    /// One segment by its SegmentNumber (0062,0004).
    Segment(u16),
}

/// Read a SEG instance and rasterise the selected segment(s) onto `grid`
/// (1 inside, 0 outside). The SEG must share the grid's rows, columns,
/// pixel spacing and orientation, and each frame must lie on one of its
/// slices; otherwise [`DicomError::MaskGridMismatch`] says which check failed.
/// When `frame_of_reference` is given, the SEG's FrameOfReferenceUID must match.
pub fn read_seg_mask<T: Copy>(
    file: &str,
    bytes: &[u8],
    grid: &Volume<T>,
    frame_of_reference: Option<&str>,
    which: SegSelection,
) -> Result<Volume<u8>, DicomError> {
    let obj = parse_guarded(file, bytes)?;
    let h = Header { file, obj: &obj };
    ensure_segmentation(&h)?;
    let mismatch = |detail: String| DicomError::MaskGridMismatch {
        file: file.to_owned(),
        detail,
    };
    if let (Some(want), Some(have)) = (
        frame_of_reference,
        h.optional_str(tags::FRAME_OF_REFERENCE_UID),
    ) && want != have
    {
        return Err(mismatch(format!(
            "FrameOfReferenceUID {have} differs from the image's {want}"
        )));
    }
    let rows = h.required_u16(tags::ROWS, "Rows (0028,0010)")? as usize;
    let cols = h.required_u16(tags::COLUMNS, "Columns (0028,0011)")? as usize;
    let [nx, ny, nz] = grid.dims;
    if rows != ny || cols != nx {
        return Err(mismatch(format!(
            "mask frames are {cols}×{rows} (columns×rows), image slices are {nx}×{ny}"
        )));
    }
    let frames: usize = h
        .required_str(tags::NUMBER_OF_FRAMES, "NumberOfFrames (0028,0008)")?
        .parse()
        .map_err(|_| h.invalid("NumberOfFrames (0028,0008)", "not an integer"))?;
    let seg_type = h.required_str(tags::SEGMENTATION_TYPE, "SegmentationType (0062,0001)")?;
    let bits = h.required_u16(tags::BITS_ALLOCATED, "BitsAllocated (0028,0100)")?;
    let threshold = match (seg_type.as_str(), bits) {
        ("BINARY", 1) => None,
        ("FRACTIONAL", 8) => {
            // A voxel belongs to the segment when its fraction exceeds one
            // half (PS3.3 C.8.20.2.3: value / MaximumFractionalValue).
            let max = h
                .optional_u16(tags::MAXIMUM_FRACTIONAL_VALUE)
                .unwrap_or(255)
                .max(1);
            Some(max)
        }
        (t, b) => {
            return Err(h.invalid(
                "SegmentationType (0062,0001)",
                format!("{t} with BitsAllocated {b} is not a valid combination"),
            ));
        }
    };

    let segment_numbers: Vec<u16> = items(&obj, tags::SEGMENT_SEQUENCE)
        .iter()
        .filter_map(|it| it.get(tags::SEGMENT_NUMBER)?.to_int::<u16>().ok())
        .collect();
    if let SegSelection::Segment(n) = which
        && !segment_numbers.contains(&n)
    {
        return Err(DicomError::SegmentNotFound {
            file: file.to_owned(),
            segment: n,
        });
    }

    let shared = items(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
        .first()
        .cloned();
    let per_frame = items(&obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    if per_frame.len() != frames {
        return Err(h.invalid(
            "PerFrameFunctionalGroupsSequence (5200,9230)",
            format!("{} items for {frames} frames", per_frame.len()),
        ));
    }

    let pixel = obj.get(tags::PIXEL_DATA).ok_or(DicomError::NoPixelData {
        file: file.to_owned(),
    })?;
    if pixel.items().is_some() || pixel.fragments().is_some() {
        return Err(DicomError::Unsupported {
            file: file.to_owned(),
            reason: "encapsulated (compressed) segmentation pixel data".into(),
        });
    }
    let data = pixel.to_bytes().map_err(|e| DicomError::PixelDecode {
        file: file.to_owned(),
        transfer_syntax: obj.meta().transfer_syntax().to_owned(),
        reason: e.to_string(),
    })?;
    let frame_px = rows * cols;
    let needed = match threshold {
        None => (frames * frame_px).div_ceil(8),
        Some(_) => frames * frame_px,
    };
    if data.len() < needed {
        return Err(DicomError::Malformed {
            file: file.to_owned(),
            reason: format!(
                "pixel data holds {} bytes, {frames} frames of {cols}×{rows} need {needed}",
                data.len()
            ),
        });
    }

    // Tolerance for "lands on the grid": 0.1 mm, as for slice positions.
    let tol_mm = 0.1;
    let mut mask = Volume {
        data: vec![0u8; grid.len()],
        dims: grid.dims,
        spacing: grid.spacing,
        origin: grid.origin,
        direction: grid.direction,
    };
    for (f, item) in per_frame.iter().enumerate() {
        let segment = group_value(item, shared.as_ref(), tags::SEGMENT_IDENTIFICATION_SEQUENCE)
            .and_then(|g| g.get(tags::REFERENCED_SEGMENT_NUMBER)?.to_int::<u16>().ok())
            .ok_or_else(|| {
                h.invalid(
                    "ReferencedSegmentNumber (0062,000B)",
                    format!("missing for frame {}", f + 1),
                )
            })?;
        let wanted = match which {
            SegSelection::All => true,
            SegSelection::Segment(n) => segment == n,
        };
        if !wanted {
            continue;
        }
        let position = group_value(item, shared.as_ref(), tags::PLANE_POSITION_SEQUENCE)
            .and_then(|g| {
                floats_of::<3>(g.get(tags::IMAGE_POSITION_PATIENT)?.to_multi_float64().ok())
            })
            .ok_or_else(|| {
                h.invalid(
                    "PlanePositionSequence/ImagePositionPatient",
                    format!("missing or invalid for frame {}", f + 1),
                )
            })?;
        let orientation = group_value(item, shared.as_ref(), tags::PLANE_ORIENTATION_SEQUENCE)
            .and_then(|g| {
                floats_of::<6>(
                    g.get(tags::IMAGE_ORIENTATION_PATIENT)?
                        .to_multi_float64()
                        .ok(),
                )
            })
            .ok_or_else(|| {
                h.invalid(
                    "PlaneOrientationSequence/ImageOrientationPatient",
                    format!("missing or invalid for frame {}", f + 1),
                )
            })?;
        let orientation = normalise_orientation(&orientation)
            .map_err(|r| h.invalid("PlaneOrientationSequence/ImageOrientationPatient", r))?;
        for axis in 0..2 {
            for r in 0..3 {
                if (orientation[axis * 3 + r] - grid.direction[r][axis]).abs() > 1e-3 {
                    return Err(mismatch(format!(
                        "frame {} orientation {orientation:?} differs from the image's",
                        f + 1
                    )));
                }
            }
        }
        if let Some(ps) = group_value(item, shared.as_ref(), tags::PIXEL_MEASURES_SEQUENCE)
            .and_then(|g| floats_of::<2>(g.get(tags::PIXEL_SPACING)?.to_multi_float64().ok()))
        {
            // PixelSpacing is (row spacing, column spacing) = (y, x).
            if (ps[1] - grid.spacing[0]).abs() > 1e-3 || (ps[0] - grid.spacing[1]).abs() > 1e-3 {
                return Err(mismatch(format!(
                    "frame {} pixel spacing {ps:?} (row, column) differs from the image's {:?} (x, y)",
                    f + 1,
                    &grid.spacing[..2]
                )));
            }
        }
        let idx = grid.physical_to_index(position);
        let off_mm = [
            idx[0] * grid.spacing[0],
            idx[1] * grid.spacing[1],
            (idx[2] - idx[2].round()) * grid.spacing[2],
        ];
        let z = idx[2].round();
        if off_mm.iter().any(|o| o.abs() > tol_mm) || z < 0.0 || z >= nz as f64 {
            return Err(mismatch(format!(
                "frame {} at {position:?} mm is not on an image slice (continuous index {idx:.3?})",
                f + 1
            )));
        }
        let z = z as usize;
        let out = &mut mask.data[z * frame_px..(z + 1) * frame_px];
        match threshold {
            None => {
                // BINARY frames are bit-packed back to back, least significant
                // bit first, without padding between frames (PS3.5 8.1.1).
                let start = f * frame_px;
                for (p, o) in out.iter_mut().enumerate() {
                    let bit = start + p;
                    if (data[bit / 8] >> (bit % 8)) & 1 == 1 {
                        *o = 1;
                    }
                }
            }
            Some(max) => {
                let frame = &data[f * frame_px..(f + 1) * frame_px];
                for (o, v) in out.iter_mut().zip(frame) {
                    if u32::from(*v) * 2 > u32::from(max) {
                        *o = 1;
                    }
                }
            }
        }
    }
    Ok(mask)
}

/// One segment of a SEG instance (PS3.3 C.8.20.2, Segment Sequence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegSegment {
    pub number: u16,
    /// SegmentLabel (0062,0005), when present.
    pub label: Option<String>,
}

/// A SEG by its SOP class or, for writers that use another class UID, its
/// modality; anything else is named in the error.
fn ensure_segmentation(h: &Header<'_>) -> Result<(), DicomError> {
    let sop_class = h.optional_str(tags::SOP_CLASS_UID).unwrap_or_default();
    let modality = h.optional_str(tags::MODALITY).unwrap_or_default();
    if sop_class != SEGMENTATION_STORAGE && modality != "SEG" {
        return Err(DicomError::NotSegmentation {
            file: h.file.to_owned(),
            sop_class,
            modality,
        });
    }
    Ok(())
}

/// The SOPInstanceUID of a SEG instance and its segments, in Segment
/// Sequence order, without rasterising anything (callers then read each
/// segment with [`read_seg_mask`] and [`SegSelection::Segment`]).
pub fn seg_segments(file: &str, bytes: &[u8]) -> Result<(String, Vec<SegSegment>), DicomError> {
    let obj = parse_guarded(file, bytes)?;
    let h = Header { file, obj: &obj };
    ensure_segmentation(&h)?;
    let sop_instance_uid = h.optional_str(tags::SOP_INSTANCE_UID).unwrap_or_default();
    let segments = items(&obj, tags::SEGMENT_SEQUENCE)
        .iter()
        .filter_map(|it| {
            let number = it.get(tags::SEGMENT_NUMBER)?.to_int::<u16>().ok()?;
            let label = it
                .get(tags::SEGMENT_LABEL)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim().trim_end_matches('\0').to_owned())
                .filter(|s| !s.is_empty());
            Some(SegSegment { number, label })
        })
        .collect();
    Ok((sop_instance_uid, segments))
}

/// The items of a sequence attribute, or none.
fn items(obj: &InMemDicomObject, tag: dicom_object::Tag) -> Vec<InMemDicomObject> {
    obj.get(tag)
        .and_then(InMemElement::items)
        .map(<[InMemDicomObject]>::to_vec)
        .unwrap_or_default()
}

/// The first item of a functional group macro, looked up in the frame's own
/// groups first and then in the shared groups (PS3.3 C.7.6.16).
fn group_value(
    frame: &InMemDicomObject,
    shared: Option<&InMemDicomObject>,
    tag: dicom_object::Tag,
) -> Option<InMemDicomObject> {
    let from = |o: &InMemDicomObject| o.get(tag)?.items()?.first().cloned();
    from(frame).or_else(|| shared.and_then(from))
}
