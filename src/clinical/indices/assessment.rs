//! All classic indices for one timeline, and the interim risk signal derived
//! from them (used until the ML model lands; cards say "risk from classic
//! indices").
//!
//! Risk rule, first that applies:
//! 1. **High**: Fearon 2011 says cachexia, or an active cachexia diagnosis is
//!    recorded (SNOMED 238108007/788876001, ICD-10-CM R64/E88.A).
//! 2. **Elevated**: any of GLIM malnutrition; weight loss > 2 %
//!    (`Cutoffs::risk.weight_loss_pct`) in any window of at most 6 months;
//!    low CXI; low mCXI; sarcopenia by Prado or Martin (low muscle mass).
//! 3. **Low**: Fearon says not cachexia (which needs a 6-month weight history
//!    and settles the BMI and sarcopenia criteria) and nothing above applies.
//! 4. **Unknown**: otherwise — too little data to rule cachexia out.

use serde::Serialize;

use super::cutoffs::Cutoffs;
use super::cxi::{self, CxiStatus};
use super::fearon::{self, FearonStatus};
use super::glim::{self, GlimStatus};
use super::sarcopenia::{self, MartinResult, SarcopeniaStatus};
use super::{IndexResult, above, describe_change};
use crate::clinical::provenance::format_value;
use crate::clinical::timeline::Timeline;

/// Every classic index for one patient on one index date.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassicAssessment {
    pub fearon: IndexResult<FearonStatus>,
    pub sarcopenia_prado: IndexResult<SarcopeniaStatus>,
    pub sarcopenia_martin: MartinResult,
    pub cxi: IndexResult<CxiStatus>,
    pub mcxi: IndexResult<CxiStatus>,
    pub glim: IndexResult<GlimStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    Unknown,
    Low,
    Elevated,
    High,
}

/// The interim 3-level risk signal with the reasons that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassicRisk {
    pub level: RiskLevel,
    pub reasons: Vec<String>,
}

impl ClassicAssessment {
    /// Compute every index. Pure: the same timeline and cut-offs always give
    /// the same assessment.
    pub fn compute(timeline: &Timeline, cutoffs: &Cutoffs) -> Self {
        Self {
            fearon: fearon::fearon(timeline, cutoffs),
            sarcopenia_prado: sarcopenia::prado(timeline, cutoffs),
            sarcopenia_martin: sarcopenia::martin(timeline, cutoffs),
            cxi: cxi::cxi(timeline, cutoffs),
            mcxi: cxi::mcxi(timeline, cutoffs),
            glim: glim::glim(timeline, cutoffs),
        }
    }

    /// The risk signal (rule in the module docs).
    pub fn risk(&self, timeline: &Timeline, cutoffs: &Cutoffs) -> ClassicRisk {
        let mut high = Vec::new();
        if self.fearon.status == FearonStatus::Cachexia {
            high.push(format!("Fearon 2011 cachexia: {}", self.fearon.reason));
        }
        if let Some(dx) = timeline.active_cachexia_diagnosis() {
            high.push(format!(
                "cachexia diagnosis recorded: {} ({})",
                dx.code.display.as_deref().unwrap_or(&dx.code.code),
                dx.source
            ));
        }
        if !high.is_empty() {
            return ClassicRisk {
                level: RiskLevel::High,
                reasons: high,
            };
        }

        let mut elevated = Vec::new();
        if self.glim.status == GlimStatus::Malnutrition {
            elevated.push(format!("GLIM malnutrition: {}", self.glim.reason));
        }
        let limit = cutoffs.risk.weight_loss_pct;
        if let Some(w) = timeline
            .weight
            .within_six_months()
            .filter(|w| above(w.loss_percent, limit))
            .max_by(|a, b| a.loss_percent.total_cmp(&b.loss_percent))
        {
            elevated.push(format!(
                "{} (> {} %)",
                describe_change(w),
                format_value(limit)
            ));
        }
        if self.cxi.status == CxiStatus::Low {
            elevated.push(format!("low CXI: {}", self.cxi.reason));
        }
        if self.mcxi.status == CxiStatus::Low {
            elevated.push(format!("low mCXI: {}", self.mcxi.reason));
        }
        if self.sarcopenia_prado.status == SarcopeniaStatus::Sarcopenic {
            elevated.push(format!(
                "sarcopenia (Prado 2008): {}",
                self.sarcopenia_prado.reason
            ));
        }
        let martin = &self.sarcopenia_martin.muscle_mass;
        if martin.status == SarcopeniaStatus::Sarcopenic {
            elevated.push(format!("low muscle mass (Martin 2013): {}", martin.reason));
        }
        if !elevated.is_empty() {
            return ClassicRisk {
                level: RiskLevel::Elevated,
                reasons: elevated,
            };
        }

        if self.fearon.status == FearonStatus::NotCachexia {
            ClassicRisk {
                level: RiskLevel::Low,
                reasons: vec![format!("Fearon 2011 not met: {}", self.fearon.reason)],
            }
        } else {
            ClassicRisk {
                level: RiskLevel::Unknown,
                reasons: vec![format!(
                    "too little data to rule out cachexia: {}",
                    self.fearon.reason
                )],
            }
        }
    }
}
