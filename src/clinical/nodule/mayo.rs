//! Mayo Clinic solitary pulmonary nodule model.
//!
//! Source: Swensen SJ, Silverstein MD, Ilstrup DM, Schleck CD, Edell ES.
//! "The probability of malignancy in solitary pulmonary nodules. Application
//! to small radiologically indeterminate nodules." Arch Intern Med
//! 1997;157:849-855:
//!
//! ```text
//! x = −6.8272 + 0.0391 age + 0.7917 smoker + 1.3388 cancer
//!     + 0.1274 diameter_mm + 1.0407 spiculation + 0.7838 upper lobe
//! p = e^x / (1 + e^x)
//! ```
//!
//! `smoker` is current or former smoking; `cancer` is a history of an
//! extrathoracic cancer diagnosed more than 5 years before the nodule (the
//! model's derivation excluded cancers within 5 years). The model was derived
//! on 4-30 mm nodules found on chest radiographs; outside that size range the
//! probability is an extrapolation (it is still computed, and the caller is
//! told through [`within_derivation_range`]).

use serde::{Deserialize, Serialize};

use super::{LogisticRisk, NoduleInputError, check_range};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MayoInput {
    pub age_years: f64,
    /// Current or former smoker.
    pub ever_smoker: bool,
    /// Extrathoracic cancer diagnosed more than 5 years ago.
    pub extrathoracic_cancer_over_5y: bool,
    /// Nodule diameter in mm.
    pub diameter_mm: f64,
    pub spiculation: bool,
    pub upper_lobe: bool,
}

/// Coefficients of Swensen 1997.
pub mod coef {
    pub const INTERCEPT: f64 = -6.8272;
    pub const AGE: f64 = 0.0391;
    pub const SMOKER: f64 = 0.7917;
    pub const CANCER: f64 = 1.3388;
    pub const DIAMETER: f64 = 0.1274;
    pub const SPICULATION: f64 = 1.0407;
    pub const UPPER_LOBE: f64 = 0.7838;
}

/// Whether the diameter lies in the 4-30 mm range the model was derived on.
pub fn within_derivation_range(diameter_mm: f64) -> bool {
    (4.0..=30.0).contains(&diameter_mm)
}

fn flag(b: bool, c: f64) -> f64 {
    if b { c } else { 0.0 }
}

/// The Mayo Clinic probability of malignancy.
pub fn mayo(input: &MayoInput) -> Result<LogisticRisk, NoduleInputError> {
    let age = check_range("age_years", input.age_years, 0.0, 130.0, "0 to 130 years")?;
    let d = check_range(
        "diameter_mm",
        input.diameter_mm,
        0.1,
        100.0,
        "0.1 to 100 mm",
    )?;
    let terms = vec![
        ("intercept", coef::INTERCEPT),
        ("age", coef::AGE * age),
        ("ever_smoker", flag(input.ever_smoker, coef::SMOKER)),
        (
            "extrathoracic_cancer_over_5y",
            flag(input.extrathoracic_cancer_over_5y, coef::CANCER),
        ),
        ("diameter", coef::DIAMETER * d),
        ("spiculation", flag(input.spiculation, coef::SPICULATION)),
        ("upper_lobe", flag(input.upper_lobe, coef::UPPER_LOBE)),
    ];
    Ok(LogisticRisk::from_terms("mayo_1997", terms))
}
