//! ACR Lung-RADS v2022: the category of one nodule on a **baseline**
//! screening CT.
//!
//! Source: American College of Radiology, "Lung-RADS v2022" assessment
//! categories (released November 2022), rows for solid, part-solid and
//! non-solid nodules at baseline, the juxtapleural rule, and the measurement
//! notes ("mean diameter = mean of long and short axis, rounded to one
//! decimal place"; volumes in mm³ as an alternative).
//!
//! Baseline rules implemented (diameter / volume; "<" and "≥" exactly as
//! the ACR table writes them):
//!
//! | type | 2 | 3 | 4A | 4B |
//! |---|---|---|---|---|
//! | solid | < 6 mm (< 113 mm³) | 6 to < 8 mm (113 to < 268) | 8 to < 15 mm (268 to < 1767) | ≥ 15 mm (≥ 1767) |
//! | part-solid | total < 6 mm (< 113) | total ≥ 6 mm, solid < 6 mm (< 113) | solid 6 to < 8 mm (113 to < 268) | solid ≥ 8 mm (≥ 268) |
//! | non-solid | < 30 mm (< 14137) | ≥ 30 mm (≥ 14137) | | |
//!
//! - Category 2, juxtapleural (including perifissural): solid, < 10 mm mean
//!   diameter (< 524 mm³), smooth margins and an oval, lentiform or
//!   triangular shape. The morphology is the radiologist's reading and comes
//!   in as one input ([`LungRadsInput::juxtapleural_benign_morphology`]).
//! - Category 1: nodules with benign calcification (complete, central,
//!   popcorn, concentric rings) or fat, given as an input.
//! - Category 4X: a category 3 or 4 nodule "with additional features or
//!   imaging findings that increase the suspicion of lung cancer" (e.g.
//!   spiculation). That is a judgement, so it is an input, never inferred.
//!
//! Not implemented (out of reach for a single-nodule baseline input):
//! follow-up rules (new, growing — > 1.5 mm in 12 months — and stable
//! nodules, and slowly growing ground-glass nodules), category 0 (incomplete
//! exam, suspected inflammatory/infectious findings), airway (endobronchial)
//! nodules, atypical pulmonary cysts, the S modifier (significant other
//! findings), and the 1- or 3-month follow-up variants of category 4A/4B
//! management. The exam's category is the highest of its nodules
//! ([`exam_category`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{NoduleInputError, NoduleType, check_range};

/// One size measurement, diameter or volume. Lung-RADS accepts either.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    /// Mean of long and short axis in mm (rounded to 0.1 mm before
    /// comparing, as Lung-RADS v2022 prescribes).
    MeanDiameterMm(f64),
    VolumeMm3(f64),
}

impl Size {
    /// Mean diameter from the long and short axes (mm).
    pub fn from_axes(long_mm: f64, short_mm: f64) -> Self {
        Self::MeanDiameterMm((long_mm + short_mm) / 2.0)
    }

    fn validate(self, name: &'static str) -> Result<Self, NoduleInputError> {
        match self {
            Self::MeanDiameterMm(d) => {
                check_range(name, d, 0.0, 500.0, "0 to 500 mm").map(Self::MeanDiameterMm)
            }
            Self::VolumeMm3(v) => {
                check_range(name, v, 0.0, 6.5e7, "0 to 6.5e7 mm³").map(Self::VolumeMm3)
            }
        }
    }

    /// `self < threshold`, with the threshold given as (diameter mm, volume mm³).
    /// Diameters are compared in whole tenths of a millimetre after rounding,
    /// so 5.95 mm (rounds to 6.0) is not "< 6 mm".
    fn below(self, (diameter_mm, volume_mm3): (f64, f64)) -> bool {
        match self {
            Self::MeanDiameterMm(d) => tenths(d) < tenths(diameter_mm),
            Self::VolumeMm3(v) => v < volume_mm3,
        }
    }

    /// Comparable magnitude for the "solid component ≤ total" check: both
    /// in the same unit, or converted through the sphere volume.
    fn as_volume(self) -> f64 {
        match self {
            Self::MeanDiameterMm(d) => std::f64::consts::PI / 6.0 * d.powi(3),
            Self::VolumeMm3(v) => v,
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MeanDiameterMm(d) => write!(f, "{:.1} mm", tenths(*d) as f64 / 10.0),
            Self::VolumeMm3(v) => write!(f, "{v:.0} mm³"),
        }
    }
}

/// A diameter rounded to one decimal, as an integer count of 0.1 mm. The
/// small epsilon keeps binary noise (5.95 stored as 5.9499999…) from rounding
/// the wrong way.
fn tenths(mm: f64) -> i64 {
    (mm * 10.0 + 1e-9).round() as i64
}

/// Thresholds from the ACR table: (mean diameter mm, volume mm³).
pub mod thresholds {
    pub const SOLID_3: (f64, f64) = (6.0, 113.0);
    pub const SOLID_4A: (f64, f64) = (8.0, 268.0);
    pub const SOLID_4B: (f64, f64) = (15.0, 1767.0);
    pub const PART_SOLID_TOTAL_3: (f64, f64) = (6.0, 113.0);
    pub const PART_SOLID_COMPONENT_4A: (f64, f64) = (6.0, 113.0);
    pub const PART_SOLID_COMPONENT_4B: (f64, f64) = (8.0, 268.0);
    pub const NON_SOLID_3: (f64, f64) = (30.0, 14137.0);
    pub const JUXTAPLEURAL_2: (f64, f64) = (10.0, 524.0);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LungRadsCategory {
    #[serde(rename = "1")]
    C1,
    #[serde(rename = "2")]
    C2,
    #[serde(rename = "3")]
    C3,
    #[serde(rename = "4A")]
    C4A,
    #[serde(rename = "4B")]
    C4B,
    #[serde(rename = "4X")]
    C4X,
}

impl LungRadsCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::C1 => "1",
            Self::C2 => "2",
            Self::C3 => "3",
            Self::C4A => "4A",
            Self::C4B => "4B",
            Self::C4X => "4X",
        }
    }

    /// The ACR descriptor of the category.
    pub fn descriptor(self) -> &'static str {
        match self {
            Self::C1 => "Negative",
            Self::C2 => "Benign",
            Self::C3 => "Probably benign",
            Self::C4A | Self::C4B | Self::C4X => "Suspicious",
        }
    }
}

impl fmt::Display for LungRadsCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One nodule on a baseline screening CT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LungRadsInput {
    pub nodule_type: NoduleType,
    /// Whole nodule (for part-solid: the total, solid plus ground-glass).
    pub size: Size,
    /// Solid component; required for part-solid nodules, ignored otherwise.
    pub solid_component: Option<Size>,
    /// Benign calcification (complete, central, popcorn, concentric rings)
    /// or fat: category 1.
    #[serde(default)]
    pub benign_calcification_or_fat: bool,
    /// Juxtapleural or perifissural location.
    #[serde(default)]
    pub juxtapleural: bool,
    /// Smooth margins and an oval, lentiform or triangular shape (the
    /// radiologist's reading; needed with `juxtapleural` for the category 2
    /// rule).
    #[serde(default)]
    pub juxtapleural_benign_morphology: bool,
    /// Additional features that increase suspicion (e.g. spiculation):
    /// upgrades category 3/4A/4B to 4X.
    #[serde(default)]
    pub additional_suspicious_features: bool,
}

impl LungRadsInput {
    pub fn new(nodule_type: NoduleType, size: Size) -> Self {
        Self {
            nodule_type,
            size,
            solid_component: None,
            benign_calcification_or_fat: false,
            juxtapleural: false,
            juxtapleural_benign_morphology: false,
            additional_suspicious_features: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LungRadsResult {
    pub category: LungRadsCategory,
    /// The rule that decided, in the ACR table's words.
    pub rule: String,
}

/// The Lung-RADS v2022 baseline category of one nodule.
pub fn lung_rads(input: &LungRadsInput) -> Result<LungRadsResult, NoduleInputError> {
    use LungRadsCategory::*;
    use thresholds::*;
    let size = input.size.validate("size")?;
    let result = |category, rule: String| Ok(LungRadsResult { category, rule });

    if input.benign_calcification_or_fat {
        return result(C1, "benign calcification or fat".into());
    }
    let (category, rule) = match input.nodule_type {
        NoduleType::Solid => {
            if input.juxtapleural
                && input.juxtapleural_benign_morphology
                && size.below(JUXTAPLEURAL_2)
            {
                (
                    C2,
                    format!(
                        "juxtapleural solid nodule {size} < 10 mm with smooth margins and benign shape"
                    ),
                )
            } else if size.below(SOLID_3) {
                (C2, format!("solid {size} < 6 mm"))
            } else if size.below(SOLID_4A) {
                (C3, format!("solid {size}: ≥ 6 to < 8 mm"))
            } else if size.below(SOLID_4B) {
                (C4A, format!("solid {size}: ≥ 8 to < 15 mm"))
            } else {
                (C4B, format!("solid {size} ≥ 15 mm"))
            }
        }
        NoduleType::PartSolid => {
            let solid = input
                .solid_component
                .ok_or(NoduleInputError::MissingSolidComponent)?
                .validate("solid_component")?;
            // Allow rounding noise when the two come in different units.
            if solid.as_volume() > size.as_volume() * (1.0 + 1e-9) {
                return Err(NoduleInputError::SolidComponentLargerThanNodule {
                    solid: solid.to_string(),
                    total: size.to_string(),
                });
            }
            if size.below(PART_SOLID_TOTAL_3) {
                (C2, format!("part-solid, total {size} < 6 mm"))
            } else if solid.below(PART_SOLID_COMPONENT_4A) {
                (
                    C3,
                    format!("part-solid, total {size} ≥ 6 mm, solid component {solid} < 6 mm"),
                )
            } else if solid.below(PART_SOLID_COMPONENT_4B) {
                (
                    C4A,
                    format!("part-solid, solid component {solid}: ≥ 6 to < 8 mm"),
                )
            } else {
                (C4B, format!("part-solid, solid component {solid} ≥ 8 mm"))
            }
        }
        NoduleType::NonSolid => {
            if size.below(NON_SOLID_3) {
                (C2, format!("non-solid {size} < 30 mm"))
            } else {
                (C3, format!("non-solid {size} ≥ 30 mm"))
            }
        }
    };
    if input.additional_suspicious_features && matches!(category, C3 | C4A | C4B) {
        return result(
            C4X,
            format!("{rule}; category {category} with additional suspicious features"),
        );
    }
    result(category, rule)
}

/// The exam's category: the highest of its nodules' categories (1 when there
/// are none: "no lung nodules").
pub fn exam_category(nodules: impl IntoIterator<Item = LungRadsCategory>) -> LungRadsCategory {
    nodules.into_iter().max().unwrap_or(LungRadsCategory::C1)
}
