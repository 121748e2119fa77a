//! Brock University (PanCan) lung nodule malignancy model.
//!
//! Source: McWilliams A, Tammemagi MC, Mayo JR, et al. "Probability of cancer
//! in pulmonary nodules detected on first screening CT." N Engl J Med
//! 2013;369:910-919, full model with spiculation (model 2b; Table 3 and the
//! Supplementary Appendix):
//!
//! ```text
//! logit = 0.0287 (age − 62)
//!       + 0.6011 female
//!       + 0.2961 family history of lung cancer
//!       + 0.2953 emphysema
//!       − 5.3854 [ (size_mm / 10)^−0.5 − 1.58113883 ]
//!       + 0.3770 part-solid   − 0.1276 non-solid (solid is the reference)
//!       + 0.6581 upper lobe
//!       − 0.0824 (nodule count − 4)
//!       + 0.7729 spiculation
//!       − 6.7892
//! p = 1 / (1 + e^−logit)
//! ```
//!
//! The size transform is the paper's: the inverse square root of the size in
//! centimetres, centred at 4 mm ((0.4)^−0.5 = 1.58113883), so the risk rises
//! steeply through the small sizes and flattens for large nodules. Size is
//! the nodule's longest diameter in mm as measured in PanCan; age and nodule
//! count are centred at 62 years and 4 nodules as published. "Upper lobe"
//! is the right or left upper lobe; the lingula belongs anatomically to the
//! left upper lobe and callers should code it so.

use serde::{Deserialize, Serialize};

use super::{LogisticRisk, NoduleInputError, NoduleType, check_range};

/// Inputs of the full Brock model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrockInput {
    pub age_years: f64,
    pub female: bool,
    /// Lung cancer in a first-degree relative.
    pub family_history: bool,
    /// Emphysema on the CT.
    pub emphysema: bool,
    /// Longest nodule diameter in mm.
    pub size_mm: f64,
    pub nodule_type: NoduleType,
    /// Right or left upper lobe (the lingula counts as left upper lobe).
    pub upper_lobe: bool,
    /// Number of nodules reported on the scan, this one included (>= 1).
    pub nodule_count: u32,
    pub spiculation: bool,
}

/// Coefficients of model 2b (McWilliams 2013, Supplementary Appendix).
pub mod coef {
    pub const AGE: f64 = 0.0287;
    pub const AGE_CENTRE: f64 = 62.0;
    pub const FEMALE: f64 = 0.6011;
    pub const FAMILY_HISTORY: f64 = 0.2961;
    pub const EMPHYSEMA: f64 = 0.2953;
    pub const SIZE: f64 = -5.3854;
    /// (4 mm / 10)^−0.5: the size transform is centred at 4 mm.
    pub const SIZE_CENTRE: f64 = 1.581_138_83;
    pub const PART_SOLID: f64 = 0.377;
    pub const NON_SOLID: f64 = -0.1276;
    pub const UPPER_LOBE: f64 = 0.6581;
    pub const COUNT: f64 = -0.0824;
    pub const COUNT_CENTRE: f64 = 4.0;
    pub const SPICULATION: f64 = 0.7729;
    pub const INTERCEPT: f64 = -6.7892;
}

fn flag(b: bool, c: f64) -> f64 {
    if b { c } else { 0.0 }
}

/// The Brock (PanCan) full-model probability of malignancy.
pub fn brock(input: &BrockInput) -> Result<LogisticRisk, NoduleInputError> {
    let age = check_range("age_years", input.age_years, 0.0, 130.0, "0 to 130 years")?;
    // A diameter must be positive for the inverse square root; 100 mm is far
    // beyond any "nodule" (> 30 mm is a mass) but keeps the formula finite.
    let size = check_range("size_mm", input.size_mm, 0.1, 100.0, "0.1 to 100 mm")?;
    if input.nodule_count == 0 {
        return Err(NoduleInputError::OutOfRange {
            name: "nodule_count",
            value: 0.0,
            expected: "at least 1 (this nodule)",
        });
    }
    let (part_solid, non_solid) = match input.nodule_type {
        NoduleType::Solid => (0.0, 0.0),
        NoduleType::PartSolid => (coef::PART_SOLID, 0.0),
        NoduleType::NonSolid => (0.0, coef::NON_SOLID),
    };
    let terms = vec![
        ("age", coef::AGE * (age - coef::AGE_CENTRE)),
        ("female", flag(input.female, coef::FEMALE)),
        (
            "family_history",
            flag(input.family_history, coef::FAMILY_HISTORY),
        ),
        ("emphysema", flag(input.emphysema, coef::EMPHYSEMA)),
        (
            "size",
            coef::SIZE * ((size / 10.0).powf(-0.5) - coef::SIZE_CENTRE),
        ),
        ("part_solid", part_solid),
        ("non_solid", non_solid),
        ("upper_lobe", flag(input.upper_lobe, coef::UPPER_LOBE)),
        (
            "nodule_count",
            coef::COUNT * (f64::from(input.nodule_count) - coef::COUNT_CENTRE),
        ),
        ("spiculation", flag(input.spiculation, coef::SPICULATION)),
        ("intercept", coef::INTERCEPT),
    ];
    Ok(LogisticRisk::from_terms(
        "brock_2013_full_spiculation",
        terms,
    ))
}
