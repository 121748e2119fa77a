//! Imaging: volumes in patient space, DICOM and NRRD readers, DICOMweb,
//! body composition and nodule patches.

pub mod nrrd;
pub mod volume;

pub use volume::Volume;
