//! Imaging: volumes in patient space, DICOM and NRRD readers, DICOMweb,
//! body composition and nodule patches, and the CT body-composition job
//! (`jobs`: worker side; `cache`: hook side) — never run inside a hook.

pub mod body_composition;
pub mod cache;
pub mod dicom;
pub mod dicomweb;
#[allow(unsafe_code)] // FFI to libdeflate, bounds-checked-by-construction hot loop
pub mod inflate;
pub mod jobs;
pub mod nrrd;
#[allow(unsafe_code)] // madvise(2)
pub mod pages;
pub mod patch;
pub mod volume;

pub use cache::ImagingCache;
pub use volume::Volume;
