//! Every threshold the classic indices use, in one place, so the config file's
//! `[clinical]` table can override any of them. Defaults are the published
//! values; each field names its source.

use serde::{Deserialize, Serialize};

use crate::clinical::ClinicalError;
use crate::clinical::demographics::Sex;

/// A cut-off that differs by sex.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SexCutoffs {
    pub male: f64,
    pub female: f64,
}

impl SexCutoffs {
    /// The cut-offs that apply: one for a known sex, both when unknown.
    pub(crate) fn applicable(&self, sex: Option<Sex>) -> Vec<f64> {
        match sex {
            Some(Sex::Male) => vec![self.male],
            Some(Sex::Female) => vec![self.female],
            _ => vec![self.male, self.female],
        }
    }
}

/// Fearon et al., Lancet Oncol 2011;12:489-95 (international consensus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FearonCutoffs {
    /// Weight loss > 5 % over the past 6 months.
    pub weight_loss_pct: f64,
    /// Weight loss > 2 % together with low BMI or sarcopenia.
    pub weight_loss_with_depletion_pct: f64,
    /// BMI < 20 kg/m².
    pub low_bmi: f64,
    /// Sarcopenia by L3 SMI as in the consensus panel ("lumbar skeletal muscle
    /// index determined by oncological CT imaging: men < 55, women < 39
    /// cm²/m²", after Mourtzakis 2008). Set to Prado's 52.4 / 38.5 to align
    /// Fearon with the Prado index instead.
    pub sarcopenia_smi: SexCutoffs,
}

impl Default for FearonCutoffs {
    fn default() -> Self {
        Self {
            weight_loss_pct: 5.0,
            weight_loss_with_depletion_pct: 2.0,
            low_bmi: 20.0,
            sarcopenia_smi: SexCutoffs {
                male: 55.0,
                female: 39.0,
            },
        }
    }
}

/// Prado et al., Lancet Oncol 2008;9:629-35: sarcopenic obesity cut-offs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PradoCutoffs {
    /// SMI < 52.4 (men) / < 38.5 (women) cm²/m².
    pub smi: SexCutoffs,
}

impl Default for PradoCutoffs {
    fn default() -> Self {
        Self {
            smi: SexCutoffs {
                male: 52.4,
                female: 38.5,
            },
        }
    }
}

/// Martin et al., J Clin Oncol 2013;31:1539-47: BMI-dependent cut-offs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MartinCutoffs {
    /// BMI band split: < 25 vs ≥ 25 kg/m².
    pub bmi_split: f64,
    /// Men, BMI < 25: SMI < 43.
    pub smi_male_low_bmi: f64,
    /// Men, BMI ≥ 25: SMI < 53.
    pub smi_male_high_bmi: f64,
    /// Women, any BMI: SMI < 41.
    pub smi_female: f64,
    /// Low muscle attenuation, BMI < 25: < 41 HU.
    pub hu_low_bmi: f64,
    /// Low muscle attenuation, BMI ≥ 25: < 33 HU.
    pub hu_high_bmi: f64,
}

impl Default for MartinCutoffs {
    fn default() -> Self {
        Self {
            bmi_split: 25.0,
            smi_male_low_bmi: 43.0,
            smi_male_high_bmi: 53.0,
            smi_female: 41.0,
            hu_low_bmi: 41.0,
            hu_high_bmi: 33.0,
        }
    }
}

/// Jafri et al., Cancer Med 2015 (advanced NSCLC): CXI = SMI × albumin / NLR.
/// The cut-off is cohort-derived (35 in the original cohort), so it is
/// configurable per sex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CxiCutoffs {
    /// Low CXI (high risk) when CXI < cut-off.
    pub low: SexCutoffs,
}

impl Default for CxiCutoffs {
    fn default() -> Self {
        Self {
            low: SexCutoffs {
                male: 35.0,
                female: 35.0,
            },
        }
    }
}

/// Modified CXI = albumin / NLR / (urea / creatinine); cut-off 0.113 from a
/// colorectal cancer cohort (Anticancer Res 2025, PMID 39758240).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McxiCutoffs {
    /// Low mCXI (high risk) when mCXI < cut-off.
    pub low: f64,
}

impl Default for McxiCutoffs {
    fn default() -> Self {
        Self { low: 0.113 }
    }
}

/// Which sarcopenia definition counts as GLIM's "reduced muscle mass".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MuscleDefinition {
    Prado,
    Martin,
}

/// Cederholm et al., Clin Nutr 2019;38:1-9 (GLIM criteria).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GlimCutoffs {
    /// Weight loss > 5 % within the past 6 months.
    pub weight_loss_6m_pct: f64,
    /// Weight loss > 10 % beyond 6 months.
    pub weight_loss_beyond_6m_pct: f64,
    /// Low BMI < 20 kg/m² if younger than `age_split` years.
    pub low_bmi_under_age_split: f64,
    /// Low BMI < 22 kg/m² at `age_split` years or older.
    pub low_bmi_from_age_split: f64,
    /// 70 years.
    pub age_split: u32,
    /// Reduced muscle mass: which L3 sarcopenia definition.
    pub muscle: MuscleDefinition,
    /// CRP above which inflammation counts as an etiologic criterion when no
    /// active cancer is recorded (GLIM: CRP as a supportive measure).
    pub crp_inflammation_mg_l: f64,
}

impl Default for GlimCutoffs {
    fn default() -> Self {
        Self {
            weight_loss_6m_pct: 5.0,
            weight_loss_beyond_6m_pct: 10.0,
            low_bmi_under_age_split: 20.0,
            low_bmi_from_age_split: 22.0,
            age_split: 70,
            muscle: MuscleDefinition::Prado,
            crp_inflammation_mg_l: 5.0,
        }
    }
}

/// Thresholds of the interim risk signal (see `assessment`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskCutoffs {
    /// Weight loss > 2 % in any window of at most 6 months raises the signal.
    pub weight_loss_pct: f64,
}

impl Default for RiskCutoffs {
    fn default() -> Self {
        Self {
            weight_loss_pct: 2.0,
        }
    }
}

/// All cut-offs; `Default` gives the published values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cutoffs {
    pub fearon: FearonCutoffs,
    pub prado: PradoCutoffs,
    pub martin: MartinCutoffs,
    pub cxi: CxiCutoffs,
    pub mcxi: McxiCutoffs,
    pub glim: GlimCutoffs,
    pub risk: RiskCutoffs,
}

impl Cutoffs {
    /// Reject cut-offs that cannot be meant (negative, NaN, infinite), naming
    /// the offending field.
    pub fn validate(&self) -> Result<(), ClinicalError> {
        let f = &self.fearon;
        let m = &self.martin;
        let g = &self.glim;
        let checks: [(&'static str, f64); 22] = [
            ("fearon.weight_loss_pct", f.weight_loss_pct),
            (
                "fearon.weight_loss_with_depletion_pct",
                f.weight_loss_with_depletion_pct,
            ),
            ("fearon.low_bmi", f.low_bmi),
            ("fearon.sarcopenia_smi.male", f.sarcopenia_smi.male),
            ("fearon.sarcopenia_smi.female", f.sarcopenia_smi.female),
            ("prado.smi.male", self.prado.smi.male),
            ("prado.smi.female", self.prado.smi.female),
            ("martin.bmi_split", m.bmi_split),
            ("martin.smi_male_low_bmi", m.smi_male_low_bmi),
            ("martin.smi_male_high_bmi", m.smi_male_high_bmi),
            ("martin.smi_female", m.smi_female),
            // HU cut-offs may legitimately be negative; only finiteness matters,
            // checked below with abs().
            ("martin.hu_low_bmi", m.hu_low_bmi.abs()),
            ("martin.hu_high_bmi", m.hu_high_bmi.abs()),
            ("cxi.low.male", self.cxi.low.male),
            ("cxi.low.female", self.cxi.low.female),
            ("mcxi.low", self.mcxi.low),
            ("glim.weight_loss_6m_pct", g.weight_loss_6m_pct),
            (
                "glim.weight_loss_beyond_6m_pct",
                g.weight_loss_beyond_6m_pct,
            ),
            ("glim.low_bmi_under_age_split", g.low_bmi_under_age_split),
            ("glim.low_bmi_from_age_split", g.low_bmi_from_age_split),
            ("glim.crp_inflammation_mg_l", g.crp_inflammation_mg_l),
            ("risk.weight_loss_pct", self.risk.weight_loss_pct),
        ];
        for (name, value) in checks {
            if !value.is_finite() || value < 0.0 {
                return Err(ClinicalError::InvalidCutoff { name, value });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_published_values() {
        let c = Cutoffs::default();
        assert_eq!(c.prado.smi.male, 52.4);
        assert_eq!(c.prado.smi.female, 38.5);
        assert_eq!(c.martin.smi_male_low_bmi, 43.0);
        assert_eq!(c.cxi.low.male, 35.0);
        assert_eq!(c.mcxi.low, 0.113);
        assert_eq!(c.glim.age_split, 70);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_partial_toml_table_overrides_only_what_it_names() {
        let c: Cutoffs =
            toml::from_str("[cxi.low]\nmale = 40.0\nfemale = 30.0\n[glim]\nmuscle = \"martin\"\n")
                .unwrap();
        assert_eq!(c.cxi.low.male, 40.0);
        assert_eq!(c.cxi.low.female, 30.0);
        assert_eq!(c.glim.muscle, MuscleDefinition::Martin);
        assert_eq!(c.glim.age_split, 70);
        assert_eq!(c.fearon, FearonCutoffs::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        assert!(toml::from_str::<Cutoffs>("[fearon]\nweight_los_pct = 5.0\n").is_err());
        let mut c = Cutoffs::default();
        c.mcxi.low = f64::NAN;
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("mcxi.low"), "{err}");
        c.mcxi.low = 0.113;
        c.glim.low_bmi_under_age_split = -1.0;
        assert!(c.validate().is_err());
    }
}
