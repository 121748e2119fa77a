//! Lung nodule malignancy (AutoRad-Lung, `shared/papers.md` §2): a vision
//! encoder over the nodule's CT views, with prompt context shifted per
//! nodule by a meta-network fed with hand-crafted radiomics (conditional
//! context optimisation, CoCoOp).
//!
//! This file is the contract between the model (trained and loaded in this
//! folder) and its callers (the `lung-nodule-malignancy` service, the
//! evaluation CLI): what one nodule's input is, what the model answers, and
//! the [`NoduleClassifier`] trait the service holds. The service depends on
//! the trait only, so it can be tested with any classifier and still runs
//! (baselines only, saying so) where no model folder is installed.

pub mod classifier;
pub mod commands;
pub mod evaluate;
pub mod logistic;
pub mod model;
#[cfg(test)]
mod tests;
pub mod train;

pub use classifier::{NoduleModel, load_classifier};

use serde::Serialize;

use crate::imaging::patch::{NodulePatch, PatchConfig, View};
use crate::radiomics::Features;

/// What the model sees of one nodule.
#[derive(Debug, Clone)]
pub struct NoduleModelInput {
    /// The centre planes of the isotropic patch, in the order axial,
    /// coronal, sagittal; each `size × size` row-major, windowed to [0, 1]
    /// exactly as [`crate::imaging::patch::extract_patch`] cuts them with the
    /// model's [`NoduleModelInfo::patch`] settings.
    pub views: [Vec<f32>; 3],
    /// pyradiomics-compatible features (`original_…` names, defaults:
    /// binWidth 25, label 1, no resampling) computed on the nodule's mask on
    /// the CT's own grid. Features the model was trained on but absent here
    /// are an error, not imputed.
    pub radiomics: Features,
}

impl NoduleModelInput {
    /// The centre plane (offset 0) of each view of `patch`, so training
    /// (rendered patches) and serving (real CT) cut the views the same way.
    pub fn from_patch(patch: &NodulePatch, radiomics: Features) -> Result<Self, NoduleModelError> {
        let centre = |views: &[View], name: &str| {
            views
                .iter()
                .find(|v| v.offset == 0)
                .map(|v| v.pixels.clone())
                .ok_or_else(|| {
                    NoduleModelError::Input(format!("the patch has no centre {name} plane"))
                })
        };
        Ok(Self {
            views: [
                centre(&patch.axial, "axial")?,
                centre(&patch.coronal, "coronal")?,
                centre(&patch.sagittal, "sagittal")?,
            ],
            radiomics,
        })
    }
}

/// One radiomics feature's share in this nodule's prompt shift, computed by
/// the model (not invented): e.g. gradient × input through the meta-network
/// onto the malignant-class logit, in logit units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RadiomicsDriver {
    pub name: String,
    /// The raw feature value.
    pub value: f64,
    /// Signed contribution (positive: towards malignant).
    pub contribution: f64,
}

/// The model's answer for one nodule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoduleModelOutput {
    /// Temperature-scaled ensemble probability that the nodule is malignant.
    pub probability: f64,
    /// Spread of the member probabilities (lowest, highest): disagreement
    /// between members, not a coverage guarantee.
    pub interval: (f64, f64),
    /// Probability of the predicted class, max(p, 1 − p).
    pub confidence: f64,
    /// `high`, `moderate` or `low`.
    pub confidence_level: &'static str,
    /// Split-conformal prediction set at [`NoduleModelInfo::alpha`]
    /// (`"benign"`, `"malignant"`).
    pub prediction_set: Vec<&'static str>,
    /// Radiologist review suggested: the set is not a single class.
    pub review_suggested: bool,
    /// Largest |contribution| first.
    pub radiomics_drivers: Vec<RadiomicsDriver>,
}

/// Identity and settings of a loaded model, stored with every prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoduleModelInfo {
    pub id: String,
    pub version: String,
    /// Shown on every card's source label, e.g. "trained on LIDC-IDRI reader
    /// annotations with rendered CT patches".
    pub source_label: String,
    /// The image branch learned from pixels rendered from real masks, not
    /// from real CT: cards and the model card say so.
    pub trained_on_rendered_pixels: bool,
    /// The patch the model expects (size, spacing, window).
    pub patch: PatchConfig,
    /// Conformal target error rate.
    pub alpha: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum NoduleModelError {
    #[error("nodule model input: {0}")]
    Input(String),
    #[error("nodule model: {0}")]
    Model(String),
}

/// A nodule malignancy classifier. Blocking CPU work: call it off the async
/// runtime (the service's inference pool).
pub trait NoduleClassifier: Send + Sync {
    fn info(&self) -> &NoduleModelInfo;
    fn predict(
        &self,
        inputs: &[NoduleModelInput],
    ) -> Result<Vec<NoduleModelOutput>, NoduleModelError>;
}
