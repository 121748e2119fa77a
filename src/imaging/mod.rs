//! Imaging: volumes in patient space, DICOM and NRRD readers, DICOMweb,
//! body composition and nodule patches, and the imaging jobs — CT body
//! composition (`jobs`: worker side; `cache`: hook side) and lung nodules
//! (`nodule_job`: worker side; `findings`: hook side) — never run inside a hook.

pub mod body_composition;
pub mod cache;
pub mod dicom;
pub mod dicomweb;
pub mod findings;
#[allow(unsafe_code)] // FFI to libdeflate, bounds-checked-by-construction hot loop
pub mod inflate;
pub mod jobs;
pub mod nodule_job;
pub mod nrrd;
#[allow(unsafe_code)] // madvise(2)
pub mod pages;
pub mod patch;
pub mod volume;

pub use cache::ImagingCache;
pub use volume::Volume;
