//! Extraction settings. Defaults are pyradiomics 3.1.0's defaults for the
//! "Original" image type (see its `featureextractor.getDefaultSettings` and
//! the per-class `kwargs`), so a default `Settings` reproduces
//! `RadiomicsFeatureExtractor(binWidth=25, label=1)`.

use serde::{Deserialize, Serialize};

use super::RadiomicsError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Fixed bin width for intensity discretisation (IBSI "FBS", pyradiomics
    /// `binWidth`); bin edges start at the ROI minimum rounded down to a
    /// multiple of the width.
    #[serde(alias = "binWidth")]
    pub bin_width: f64,
    /// Mask value that marks the region of interest.
    pub label: u8,
    /// Added to intensities before Energy, Total Energy and RMS (pyradiomics
    /// `voxelArrayShift`, default 0).
    #[serde(alias = "voxelArrayShift")]
    pub voxel_array_shift: f64,
    /// GLDM dependence threshold α (pyradiomics `gldm_a`): a neighbour is
    /// dependent when its grey level differs by at most α.
    #[serde(alias = "gldm_a")]
    pub gldm_alpha: u32,
    /// Minimum number of axes along which the ROI spans more than one voxel
    /// (pyradiomics `minimumROIDimensions`).
    #[serde(alias = "minimumROIDimensions")]
    pub minimum_roi_dimensions: usize,
    /// Geometry tolerance between image and mask, as SimpleITK applies it:
    /// relative to the spacing for origin and spacing, absolute for the
    /// direction cosines (pyradiomics `geometryTolerance`, ITK default 1e-6).
    #[serde(alias = "geometryTolerance")]
    pub geometry_tolerance: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bin_width: 25.0,
            label: 1,
            voxel_array_shift: 0.0,
            gldm_alpha: 0,
            minimum_roi_dimensions: 2,
            geometry_tolerance: 1e-6,
        }
    }
}

impl Settings {
    pub fn validate(&self) -> Result<(), RadiomicsError> {
        if !(self.bin_width.is_finite() && self.bin_width > 0.0) {
            return Err(RadiomicsError::InvalidSettings(format!(
                "bin_width must be a positive number, got {}",
                self.bin_width
            )));
        }
        if !self.voxel_array_shift.is_finite() {
            return Err(RadiomicsError::InvalidSettings(
                "voxel_array_shift must be finite".into(),
            ));
        }
        if !(1..=3).contains(&self.minimum_roi_dimensions) {
            return Err(RadiomicsError::InvalidSettings(format!(
                "minimum_roi_dimensions must be 1, 2 or 3, got {}",
                self.minimum_roi_dimensions
            )));
        }
        if !(self.geometry_tolerance.is_finite() && self.geometry_tolerance >= 0.0) {
            return Err(RadiomicsError::InvalidSettings(
                "geometry_tolerance must be a non-negative number".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserialises_pyradiomics_names_and_fills_defaults() {
        let s: Settings = serde_json::from_str(r#"{"binWidth": 10, "label": 2}"#).unwrap();
        assert_eq!(s.bin_width, 10.0);
        assert_eq!(s.label, 2);
        assert_eq!(s.gldm_alpha, 0);
        assert_eq!(s.minimum_roi_dimensions, 2);
        let s: Settings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        assert!(serde_json::from_str::<Settings>(r#"{"binCount": 10}"#).is_err());
        let s = Settings {
            bin_width: 0.0,
            ..Settings::default()
        };
        assert!(s.validate().is_err());
        let s = Settings {
            bin_width: f64::NAN,
            ..Settings::default()
        };
        assert!(s.validate().is_err());
    }
}
