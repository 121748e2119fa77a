//! Errors of the DICOM layer. Every variant names the file (or DICOMweb part)
//! or the tag at fault, so an imaging job's failure can be acted on without a
//! debugger. No variant carries pixel data or patient identifiers.

/// Why a DICOM instance or series could not be turned into a volume or mask.
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },

    #[error("{file} is not a readable DICOM file (malformed or truncated): {reason}")]
    Malformed { file: String, reason: String },

    #[error("{file} lacks required attribute {tag}")]
    MissingTag { file: String, tag: &'static str },

    #[error("{file} has an invalid {tag}: {reason}")]
    InvalidTag {
        file: String,
        tag: &'static str,
        reason: String,
    },

    #[error("{file} has modality {modality}, not CT; only CT series are assembled into HU volumes")]
    NotCt { file: String, modality: String },

    #[error("{file} has no pixel data (7FE0,0010)")]
    NoPixelData { file: String },

    #[error("cannot decode the pixel data of {file} (transfer syntax {transfer_syntax}): {reason}")]
    PixelDecode {
        file: String,
        transfer_syntax: String,
        reason: String,
    },

    #[error("{file} is not supported: {reason}")]
    Unsupported { file: String, reason: String },

    #[error("the series has no slices")]
    EmptySeries,

    #[error("inconsistent series: {tag} differs between slices ({detail})")]
    InconsistentSeries { tag: &'static str, detail: String },

    #[error(
        "gantry tilt: slice positions deviate from the slice normal by up to {max_offset_mm:.3} mm \
         (about {tilt_degrees:.2}°); a tilted series cannot be stacked on an orthogonal grid without resampling"
    )]
    GantryTilt {
        tilt_degrees: f64,
        max_offset_mm: f64,
    },

    #[error(
        "irregular slice spacing: {gap_mm:.4} mm between slices {index} and {next} where {expected_mm:.4} mm \
         is expected (tolerance {tolerance_mm} mm); missing or extra slices would be mis-stacked"
    )]
    IrregularSpacing {
        index: usize,
        next: usize,
        gap_mm: f64,
        expected_mm: f64,
        tolerance_mm: f64,
    },

    #[error(
        "two different instances ({first} and {second}) lie at the same slice position {position_mm:.3} mm"
    )]
    DuplicatePosition {
        first: String,
        second: String,
        position_mm: f64,
    },

    #[error("several series were given ({count}: {uids}); choose one SeriesInstanceUID")]
    MultipleSeries { count: usize, uids: String },

    #[error("series {series_uid} is not among the instances read")]
    SeriesNotFound { series_uid: String },

    #[error("{file} is not a DICOM Segmentation (SOP class {sop_class}, modality {modality})")]
    NotSegmentation {
        file: String,
        sop_class: String,
        modality: String,
    },

    #[error("segmentation {file} does not fit the image grid: {detail}")]
    MaskGridMismatch { file: String, detail: String },

    #[error("segmentation {file} has no segment number {segment}")]
    SegmentNotFound { file: String, segment: u16 },
}
