//! Clinical baselines for a pulmonary nodule, computed deterministically and
//! always shown beside the nodule malignancy model (issue 5):
//!
//! - [`brock`](mod@brock): the Brock University / PanCan model (McWilliams et al., NEJM
//!   2013;369:910-9), full model with spiculation.
//! - [`mayo`](mod@mayo): the Mayo Clinic model (Swensen et al., Arch Intern Med
//!   1997;157:849-55).
//! - [`lung_rads`](mod@lung_rads): the ACR Lung-RADS v2022 category of one nodule on a
//!   baseline screening CT.
//!
//! All three are pure functions of explicit inputs. Inputs outside the domain
//! of a formula (a negative age, a zero diameter, a solid component larger
//! than the nodule) are refused with [`NoduleInputError`] instead of producing
//! a number.

pub mod brock;
pub mod lung_rads;
pub mod mayo;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use brock::{BrockInput, brock};
pub use lung_rads::{LungRadsCategory, LungRadsInput, LungRadsResult, Size, lung_rads};
pub use mayo::{MayoInput, mayo};

/// Nodule attenuation type, as both Brock and Lung-RADS use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoduleType {
    Solid,
    PartSolid,
    /// Ground-glass (non-solid).
    NonSolid,
}

/// A probability from a logistic model, with its linear predictor and the
/// contribution of each term (for explanations).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogisticRisk {
    /// Stable identifier, e.g. `brock_2013_full_spiculation`.
    pub model: &'static str,
    pub logit: f64,
    pub probability: f64,
    /// `(term, contribution to the logit)`, the intercept included.
    pub terms: Vec<(&'static str, f64)>,
}

impl LogisticRisk {
    fn from_terms(model: &'static str, terms: Vec<(&'static str, f64)>) -> Self {
        let logit: f64 = terms.iter().map(|(_, c)| c).sum();
        Self {
            model,
            logit,
            probability: 1.0 / (1.0 + (-logit).exp()),
            terms,
        }
    }
}

/// An input outside the domain of a baseline.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoduleInputError {
    #[error("{name} = {value} is outside the accepted range ({expected})")]
    OutOfRange {
        name: &'static str,
        value: f64,
        expected: &'static str,
    },
    #[error("a part-solid nodule needs the size of its solid component")]
    MissingSolidComponent,
    #[error("the solid component ({solid}) is larger than the whole nodule ({total})")]
    SolidComponentLargerThanNodule { solid: String, total: String },
}

/// Checks `lo <= value <= hi` (finite).
pub(crate) fn check_range(
    name: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
    expected: &'static str,
) -> Result<f64, NoduleInputError> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(value)
    } else {
        Err(NoduleInputError::OutOfRange {
            name,
            value,
            expected,
        })
    }
}
