//! Imaging: volumes in patient space, DICOM and NRRD readers, DICOMweb,
//! body composition and nodule patches.

pub mod body_composition;
pub mod dicom;
pub mod dicomweb;
pub mod patch;
pub mod volume;

pub use volume::Volume;
