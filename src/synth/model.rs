//! The generative model: who the patient is, their latent physiology, their
//! true weight and muscle trajectory, and the outcome label. Nothing here is
//! observed directly; `observe` turns it into FHIR resources with noise and
//! gaps. Every number is documented in `docs/synthetic-cohort.md`.

use chrono::{Datelike, Duration, NaiveDate};
use serde::Serialize;

use super::sample::{
    SynthRng, bernoulli, int, normal, normal_clamped, sigmoid, softplus, uniform, weighted,
};
use crate::clinical::{CancerType, Sex, StageGroup};

/// Days per month used for trajectories and label checkpoints.
pub(crate) const MONTH_DAYS: f64 = 30.44;

/// The cancer types the generator draws: the project's `CancerType` except
/// `Liver` (not generated). "Other" sites are kidney, bladder, ovary,
/// endometrium, melanoma and thyroid.
pub const CANCER_TYPES: [CancerType; 9] = [
    CancerType::Lung,
    CancerType::Pancreas,
    CancerType::Colorectal,
    CancerType::Gastric,
    CancerType::Oesophageal,
    CancerType::Breast,
    CancerType::Prostate,
    CancerType::HeadAndNeck,
    CancerType::Other,
];

/// OMB race as the generator draws it (US Core race `ombCategory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Race {
    White,
    Black,
    Asian,
    AmericanIndianAlaskaNative,
    NativeHawaiianPacificIslander,
    /// Two OMB categories: White and Black (the commonest multi-race answer
    /// in US registries is White + another; one pair keeps it simple).
    WhiteAndBlack,
    /// `UNK` null flavour.
    Unknown,
}

impl Race {
    pub fn label(self) -> &'static str {
        match self {
            Race::White => "white",
            Race::Black => "black",
            Race::Asian => "asian",
            Race::AmericanIndianAlaskaNative => "american_indian_alaska_native",
            Race::NativeHawaiianPacificIslander => "native_hawaiian_pacific_islander",
            Race::WhiteAndBlack => "white_and_black",
            Race::Unknown => "unknown",
        }
    }

    /// OMB category codes (CDC Race & Ethnicity code system) and displays.
    pub(crate) fn omb(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Race::White => &[("2106-3", "White")],
            Race::Black => &[("2054-5", "Black or African American")],
            Race::Asian => &[("2028-9", "Asian")],
            Race::AmericanIndianAlaskaNative => &[("1002-5", "American Indian or Alaska Native")],
            Race::NativeHawaiianPacificIslander => {
                &[("2076-8", "Native Hawaiian or Other Pacific Islander")]
            }
            Race::WhiteAndBlack => &[("2106-3", "White"), ("2054-5", "Black or African American")],
            Race::Unknown => &[("UNK", "Unknown")],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ethnicity {
    Hispanic,
    NotHispanic,
    Unknown,
}

impl Ethnicity {
    pub fn label(self) -> &'static str {
        match self {
            Ethnicity::Hispanic => "hispanic",
            Ethnicity::NotHispanic => "not_hispanic",
            Ethnicity::Unknown => "unknown",
        }
    }

    pub(crate) fn omb(self) -> (&'static str, &'static str) {
        match self {
            Ethnicity::Hispanic => ("2135-2", "Hispanic or Latino"),
            Ethnicity::NotHispanic => ("2186-5", "Not Hispanic or Latino"),
            Ethnicity::Unknown => ("UNK", "Unknown"),
        }
    }
}

/// Latent physiology (standardised scales, mean about 0, SD about 1 in the
/// whole cohort). Never written to FHIR; seen only through noisy proxies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latents {
    /// Tumour-driven systemic inflammation (IL-6/CRP axis).
    pub inflammation: f64,
    /// Central catabolic drive and anorexia (appetite loss, early satiety).
    pub anorexia: f64,
    /// Baseline skeletal muscle reserve (SMI z-score for sex).
    pub muscle_reserve: f64,
    /// Frailty and comorbidity burden.
    pub frailty: f64,
    /// Skeletal muscle quality (low: myosteatosis, seen as low L3 muscle
    /// attenuation on CT); low quality speeds wasting after the index.
    pub muscle_quality: f64,
    /// Response to first-line treatment (higher is better); unobservable at
    /// the index date: it is what keeps the future uncertain.
    pub treatment_response: f64,
    /// Mechanical obstruction of eating (0..1): oesophageal, head and neck,
    /// gastric outlet, pancreatic head.
    pub obstruction: f64,
}

/// Everything the generator knows about one patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Truth {
    pub cancer_type: CancerType,
    pub stage: StageGroup,
    /// ICD-10-CM code and display of the primary cancer.
    pub icd10: (&'static str, &'static str),
    pub sex: Sex,
    pub age: u32,
    pub birth_date: NaiveDate,
    pub race: Race,
    pub ethnicity: Ethnicity,
    pub diagnosis_date: NaiveDate,
    pub index_date: NaiveDate,
    pub height_cm: f64,
    /// BMI one year before the index date, before any disease-related loss.
    pub premorbid_bmi: f64,
    /// Sex-specific L3 SMI before disease-related loss (cm²/m²).
    pub premorbid_smi: f64,
    pub latents: Latents,
    /// Annual drift of weight before the catabolic phase (fraction/year).
    pub drift_per_year: f64,
    /// Months before the index date the catabolic phase began.
    pub onset_months: f64,
    /// Weight-loss rate in the catabolic phase before the index (%/month).
    pub pre_rate: f64,
    /// Weight-loss rate after the index (%/month).
    pub post_rate: f64,
    /// Extra treatment-related loss after the index (surgery, chemoradiation
    /// mucositis), reached with a 1.5-month time constant (%).
    pub treatment_loss: f64,
    /// True (noise-free) loss over the 6 months before the index date (%).
    pub loss_before_index_6m: f64,
    /// Largest trailing 6-month loss at the monthly checkpoints 1..=6 (%).
    pub max_loss_6m: f64,
    pub label: bool,
    /// Which Fearon criterion made the label positive first, if any.
    pub label_reason: Option<&'static str>,
    /// Month (1..=6) of the first positive checkpoint.
    pub label_month: Option<u32>,
}

/// Fearon 2011 consensus sarcopenia cut-offs (L3 SMI, cm²/m²): the label
/// uses the clinical layer's defaults (men < 55, women < 39), so the label
/// and the Fearon baseline cannot drift apart.
pub(crate) fn sarcopenia_cutoff(sex: Sex) -> f64 {
    let smi = crate::clinical::indices::cutoffs::FearonCutoffs::default().sarcopenia_smi;
    if sex == Sex::Male {
        smi.male
    } else {
        smi.female
    }
}

impl Truth {
    fn premorbid_weight(&self) -> f64 {
        let h = self.height_cm / 100.0;
        self.premorbid_bmi * h * h
    }

    /// Day (relative to the index date) the catabolic phase began.
    fn onset_day(&self) -> f64 {
        -self.onset_months * MONTH_DAYS
    }

    /// True weight (kg) on `day` relative to the index date.
    pub fn weight_at(&self, day: f64) -> f64 {
        let w0 = self.premorbid_weight();
        let onset = self.onset_day();
        // Slow drift anchored at the onset of the catabolic phase.
        let at_onset = w0;
        if day <= onset {
            return at_onset * (1.0 + self.drift_per_year * (day - onset) / 365.25);
        }
        let pre_days = day.min(0.0) - onset;
        let mut w = at_onset * (-self.pre_rate / 100.0 * pre_days / MONTH_DAYS).exp();
        if day > 0.0 {
            let months = day / MONTH_DAYS;
            let treat = self.treatment_loss / 100.0 * (1.0 - (-months / 1.5).exp());
            w *= (-self.post_rate / 100.0 * months).exp() * (1.0 - treat);
        }
        w
    }

    /// True L3 SMI on `day`: muscle is lost faster than weight in cachexia
    /// (elasticity 1.6 to the fraction of weight kept since onset).
    pub fn smi_at(&self, day: f64) -> f64 {
        let kept = (self.weight_at(day) / self.weight_at(self.onset_day())).min(1.0);
        self.premorbid_smi * kept.powf(1.6)
    }

    pub fn bmi_at(&self, day: f64) -> f64 {
        let h = self.height_cm / 100.0;
        self.weight_at(day) / (h * h)
    }

    /// Trailing 6-month loss (%) ending on `day`.
    pub fn loss_6m_at(&self, day: f64) -> f64 {
        let before = self.weight_at(day - 6.0 * MONTH_DAYS);
        (before - self.weight_at(day)) / before * 100.0
    }

    /// Fearon 2011 on the true trajectory at monthly checkpoints 1..=6 after
    /// the index date: > 5 % loss over the trailing 6 months; or > 2 % with
    /// BMI < 20 kg/m²; or > 2 % with sarcopenia (L3 SMI below the consensus
    /// cut-off).
    fn apply_label(&mut self) {
        self.loss_before_index_6m = self.loss_6m_at(0.0);
        self.max_loss_6m = f64::NEG_INFINITY;
        self.label = false;
        self.label_reason = None;
        self.label_month = None;
        for month in 1..=6u32 {
            let day = f64::from(month) * MONTH_DAYS;
            let loss = self.loss_6m_at(day);
            self.max_loss_6m = self.max_loss_6m.max(loss);
            if self.label {
                continue;
            }
            let reason = if loss > 5.0 {
                Some("weight loss > 5 % in 6 months")
            } else if loss > 2.0 && self.bmi_at(day) < 20.0 {
                Some("BMI < 20 and weight loss > 2 %")
            } else if loss > 2.0 && self.smi_at(day) < sarcopenia_cutoff(self.sex) {
                Some("sarcopenia and weight loss > 2 %")
            } else {
                None
            };
            if let Some(r) = reason {
                self.label = true;
                self.label_reason = Some(r);
                self.label_month = Some(month);
            }
        }
    }
}

/// Relative frequency of each cancer type: a cancer-centre referral mix,
/// enriched for the high-cachexia sites compared with US incidence.
fn cancer_mix() -> [(CancerType, f64); 9] {
    [
        (CancerType::Lung, 17.0),
        (CancerType::Pancreas, 9.0),
        (CancerType::Colorectal, 12.0),
        (CancerType::Gastric, 5.0),
        (CancerType::Oesophageal, 5.0),
        (CancerType::Breast, 17.0),
        (CancerType::Prostate, 13.0),
        (CancerType::HeadAndNeck, 7.0),
        (CancerType::Other, 15.0),
    ]
}

/// AJCC stage group distribution (I, II, III, IV) at presentation.
fn stage_mix(t: CancerType) -> [f64; 4] {
    match t {
        CancerType::Lung => [25.0, 10.0, 22.0, 43.0],
        CancerType::Pancreas => [12.0, 20.0, 15.0, 53.0],
        CancerType::Colorectal => [22.0, 27.0, 30.0, 21.0],
        CancerType::Gastric => [25.0, 18.0, 22.0, 35.0],
        CancerType::Oesophageal => [18.0, 22.0, 28.0, 32.0],
        CancerType::Breast => [45.0, 33.0, 14.0, 8.0],
        CancerType::Prostate => [30.0, 38.0, 17.0, 15.0],
        CancerType::HeadAndNeck => [15.0, 15.0, 22.0, 48.0],
        _ => [30.0, 22.0, 20.0, 28.0],
    }
}

/// Share of men, and (mean, SD) of age at diagnosis.
fn sex_and_age(t: CancerType) -> (f64, f64, f64) {
    match t {
        CancerType::Lung => (0.52, 70.0, 9.0),
        CancerType::Pancreas => (0.52, 70.0, 9.5),
        CancerType::Colorectal => (0.54, 66.0, 12.0),
        CancerType::Gastric => (0.62, 68.0, 11.0),
        CancerType::Oesophageal => (0.78, 67.0, 10.0),
        CancerType::Breast => (0.01, 62.0, 12.5),
        CancerType::Prostate => (1.0, 67.0, 8.0),
        CancerType::HeadAndNeck => (0.72, 63.0, 10.0),
        _ => (0.50, 64.0, 13.0),
    }
}

/// Latent means by site: (inflammation, anorexia, obstruction probability).
fn site_latents(t: CancerType) -> (f64, f64, f64) {
    match t {
        CancerType::Pancreas => (0.9, 0.9, 0.45),
        CancerType::Gastric => (0.6, 0.8, 0.45),
        CancerType::Oesophageal => (0.5, 0.5, 0.75),
        CancerType::Lung => (0.6, 0.3, 0.0),
        CancerType::HeadAndNeck => (0.2, 0.3, 0.6),
        CancerType::Colorectal => (0.2, 0.0, 0.1),
        CancerType::Breast => (-0.6, -0.6, 0.0),
        CancerType::Prostate => (-0.7, -0.6, 0.0),
        _ => (0.0, -0.1, 0.0),
    }
}

/// BMI shift by site (obesity-related sites up, smoking-related down).
fn site_bmi_shift(t: CancerType) -> f64 {
    match t {
        CancerType::Colorectal | CancerType::Breast => 1.5,
        CancerType::Prostate => 0.5,
        CancerType::Lung | CancerType::HeadAndNeck | CancerType::Oesophageal => -1.5,
        _ => 0.0,
    }
}

/// An ICD-10-CM code for the site, consistent with the sex (breast, ovary,
/// endometrium).
fn icd10(rng: &mut SynthRng, t: CancerType, sex: Sex) -> (&'static str, &'static str) {
    let female = sex == Sex::Female;
    let list: &[(&str, &str)] = match t {
        CancerType::Lung => &[
            (
                "C34.11",
                "Malignant neoplasm of upper lobe, right bronchus or lung",
            ),
            (
                "C34.12",
                "Malignant neoplasm of upper lobe, left bronchus or lung",
            ),
            (
                "C34.2",
                "Malignant neoplasm of middle lobe, bronchus or lung",
            ),
            (
                "C34.31",
                "Malignant neoplasm of lower lobe, right bronchus or lung",
            ),
            (
                "C34.32",
                "Malignant neoplasm of lower lobe, left bronchus or lung",
            ),
            (
                "C34.90",
                "Malignant neoplasm of unspecified part of unspecified bronchus or lung",
            ),
        ],
        CancerType::Pancreas => &[
            ("C25.0", "Malignant neoplasm of head of pancreas"),
            ("C25.0", "Malignant neoplasm of head of pancreas"),
            ("C25.1", "Malignant neoplasm of body of pancreas"),
            ("C25.2", "Malignant neoplasm of tail of pancreas"),
            ("C25.9", "Malignant neoplasm of pancreas, unspecified"),
        ],
        CancerType::Colorectal => &[
            ("C18.0", "Malignant neoplasm of cecum"),
            ("C18.2", "Malignant neoplasm of ascending colon"),
            ("C18.7", "Malignant neoplasm of sigmoid colon"),
            ("C18.9", "Malignant neoplasm of colon, unspecified"),
            ("C19", "Malignant neoplasm of rectosigmoid junction"),
            ("C20", "Malignant neoplasm of rectum"),
        ],
        CancerType::Gastric => &[
            ("C16.0", "Malignant neoplasm of cardia"),
            ("C16.3", "Malignant neoplasm of pyloric antrum"),
            ("C16.9", "Malignant neoplasm of stomach, unspecified"),
        ],
        CancerType::Oesophageal => &[
            ("C15.3", "Malignant neoplasm of upper third of esophagus"),
            ("C15.4", "Malignant neoplasm of middle third of esophagus"),
            ("C15.5", "Malignant neoplasm of lower third of esophagus"),
            ("C15.9", "Malignant neoplasm of esophagus, unspecified"),
        ],
        CancerType::Breast if female => &[
            (
                "C50.911",
                "Malignant neoplasm of unspecified site of right female breast",
            ),
            (
                "C50.912",
                "Malignant neoplasm of unspecified site of left female breast",
            ),
            (
                "C50.411",
                "Malignant neoplasm of upper-outer quadrant of right female breast",
            ),
            (
                "C50.412",
                "Malignant neoplasm of upper-outer quadrant of left female breast",
            ),
        ],
        CancerType::Breast => &[
            (
                "C50.921",
                "Malignant neoplasm of unspecified site of right male breast",
            ),
            (
                "C50.922",
                "Malignant neoplasm of unspecified site of left male breast",
            ),
        ],
        CancerType::Prostate => &[("C61", "Malignant neoplasm of prostate")],
        CancerType::HeadAndNeck => &[
            ("C01", "Malignant neoplasm of base of tongue"),
            ("C02.9", "Malignant neoplasm of tongue, unspecified"),
            ("C09.9", "Malignant neoplasm of tonsil, unspecified"),
            ("C10.9", "Malignant neoplasm of oropharynx, unspecified"),
            ("C13.9", "Malignant neoplasm of hypopharynx, unspecified"),
            ("C32.9", "Malignant neoplasm of larynx, unspecified"),
        ],
        _ if female => &[
            (
                "C64.1",
                "Malignant neoplasm of right kidney, except renal pelvis",
            ),
            ("C67.9", "Malignant neoplasm of bladder, unspecified"),
            ("C56.1", "Malignant neoplasm of right ovary"),
            ("C54.1", "Malignant neoplasm of endometrium"),
            ("C43.9", "Malignant melanoma of skin, unspecified"),
            ("C73", "Malignant neoplasm of thyroid gland"),
        ],
        _ => &[
            (
                "C64.1",
                "Malignant neoplasm of right kidney, except renal pelvis",
            ),
            (
                "C64.2",
                "Malignant neoplasm of left kidney, except renal pelvis",
            ),
            ("C67.9", "Malignant neoplasm of bladder, unspecified"),
            ("C43.9", "Malignant melanoma of skin, unspecified"),
            ("C73", "Malignant neoplasm of thyroid gland"),
        ],
    };
    *super::sample::pick(rng, list)
}

fn race(rng: &mut SynthRng, t: CancerType) -> Race {
    // US cancer-patient proportions (approximate, SEER-like), tilted for
    // prostate (more Black patients) and gastric (more Asian patients).
    let (black, asian) = match t {
        CancerType::Prostate => (18.0, 3.5),
        CancerType::Gastric => (12.0, 10.0),
        _ => (12.0, 5.0),
    };
    weighted(
        rng,
        &[
            (Race::White, 100.0 - black - asian - 7.0),
            (Race::Black, black),
            (Race::Asian, asian),
            (Race::AmericanIndianAlaskaNative, 1.0),
            (Race::NativeHawaiianPacificIslander, 0.3),
            (Race::WhiteAndBlack, 2.0),
            (Race::Unknown, 3.7),
        ],
    )
}

fn ethnicity(rng: &mut SynthRng, t: CancerType) -> Ethnicity {
    let hispanic = if t == CancerType::Gastric { 15.0 } else { 10.0 };
    weighted(
        rng,
        &[
            (Ethnicity::Hispanic, hispanic),
            (Ethnicity::NotHispanic, 96.0 - hispanic),
            (Ethnicity::Unknown, 4.0),
        ],
    )
}

/// Diagnosis dates are spread over `window` (inclusive).
pub(crate) fn draw_truth(rng: &mut SynthRng, window: (NaiveDate, NaiveDate)) -> Truth {
    let cancer_type = weighted(rng, &cancer_mix());
    let stage_w = stage_mix(cancer_type);
    let stage = weighted(
        rng,
        &[
            (StageGroup::I, stage_w[0]),
            (StageGroup::II, stage_w[1]),
            (StageGroup::III, stage_w[2]),
            (StageGroup::IV, stage_w[3]),
        ],
    );
    let s = match stage {
        StageGroup::I | StageGroup::Zero => 0.0,
        StageGroup::II => 1.0,
        StageGroup::III => 2.0,
        StageGroup::IV => 3.0,
    };
    let (male_share, age_mean, age_sd) = sex_and_age(cancer_type);
    let sex = if bernoulli(rng, male_share) {
        Sex::Male
    } else {
        Sex::Female
    };
    let age = normal_clamped(rng, age_mean, age_sd, 18.0, 95.0).round() as u32;
    let icd10 = icd10(rng, cancer_type, sex);
    let race = race(rng, cancer_type);
    let ethnicity = ethnicity(rng, cancer_type);

    let span = (window.1 - window.0).num_days().max(0);
    let diagnosis_date = window.0 + Duration::days(int(rng, 0, span));
    let index_date = diagnosis_date + Duration::days(int(rng, 0, 10));
    // Birth date consistent with the age on the index date.
    let birth_year = index_date.year() - age as i32;
    let birth_date = {
        let day_of_year = int(rng, 0, 364);
        let mut candidate = NaiveDate::from_ymd_opt(birth_year, 1, 1).unwrap_or(index_date)
            + Duration::days(day_of_year);
        // 29 February has no counterpart in most years: use the 28th.
        if candidate.month() == 2 && candidate.day() == 29 {
            candidate = candidate.pred_opt().unwrap_or(candidate);
        }
        // If the birthday is still to come this year, the person is a year
        // younger: shift the birth year back one.
        if candidate
            .with_year(index_date.year())
            .is_some_and(|b| b > index_date)
        {
            candidate.with_year(birth_year - 1).unwrap_or(candidate)
        } else {
            candidate
        }
    };

    let agez = (f64::from(age) - 65.0) / 10.0;
    let (inf_site, anx_site, obstruction_p) = site_latents(cancer_type);
    // Site and stage shift the latents; most of their spread is individual,
    // so that cancer type and stage alone cannot decide the outcome.
    let inflammation =
        0.45 * inf_site + [-0.3, -0.1, 0.1, 0.4][s as usize] + normal(rng, 0.0, 0.95);
    let obstruction = if bernoulli(rng, obstruction_p) {
        uniform(rng, 0.4, 1.0)
    } else {
        0.0
    };
    let anorexia = 0.45 * anx_site + 0.08 * s - 0.1
        + 0.25 * inflammation
        + 0.4 * obstruction
        + normal(rng, 0.0, 0.9);
    let muscle_reserve = -0.25 * agez + normal(rng, 0.0, 1.0);
    let frailty = 0.35 * agez - 0.25 * muscle_reserve + 0.1 * s + normal(rng, 0.0, 0.9);
    let muscle_quality = normal(rng, 0.0, 1.0);
    let treatment_response = normal(rng, 0.0, 1.0);

    // Body size.
    let asian = race == Race::Asian;
    let height_cm = match sex {
        Sex::Male => normal(rng, 176.5, 7.0),
        _ => normal(rng, 162.5, 6.5),
    } - if asian { 5.0 } else { 0.0 }
        - if age > 70 { 1.5 } else { 0.0 };
    let premorbid_bmi = normal_clamped(
        rng,
        27.8 + site_bmi_shift(cancer_type) - if asian { 2.5 } else { 0.0 },
        5.2,
        16.5,
        48.0,
    );
    let smi_mean = if sex == Sex::Male { 54.0 } else { 42.0 };
    let smi_sd = if sex == Sex::Male { 7.5 } else { 6.0 };
    let premorbid_smi = (smi_mean
        + smi_sd * (0.8 * muscle_reserve + 0.6 * (premorbid_bmi - 27.5) / 5.0))
        .clamp(22.0, 85.0);

    // Catabolic drive: inflammation and anorexia dominate; frailty adds.
    // The rate (%/month) is a soft threshold: 0.06 at a drive of 0, 0.39 at
    // 1, 0.87 at 1.5, 1.6 at 2, 3.8 at 3 (about 2.5 per unit well above).
    let rate = |x: f64| 2.5 * softplus(2.0 * (x - 1.5)) / 2.0;
    // Before the index the tumour has had a shorter, more idiosyncratic
    // effect: the pre-diagnosis weight history is a partial witness only.
    let pre_drive = 0.5 * inflammation + 0.5 * anorexia + 0.15 * frailty;
    let onset_months = uniform(rng, 0.5, 3.0) + 2.0 * (inflammation.max(0.0) / 2.0).min(1.0);
    let pre_rate = (rate(pre_drive + normal(rng, 0.0, 0.7)) + normal(rng, 0.0, 0.05)).max(-0.3);
    // After the index, treatment response and muscle quality (myosteatosis
    // predicts wasting) modulate the same drive.
    let post_drive = 0.55 * inflammation + 0.9 * anorexia + 0.2 * frailty + 0.1 * s
        - 0.6 * muscle_quality
        - 0.5 * treatment_response;
    let post_rate = (rate(post_drive) + normal(rng, 0.0, 0.08)).max(-0.4);
    let surgical_gi = matches!(
        cancer_type,
        CancerType::Gastric | CancerType::Oesophageal | CancerType::Pancreas
    ) && s < 3.0;
    let treatment_mean = if surgical_gi || (cancer_type == CancerType::HeadAndNeck && s >= 2.0) {
        1.8
    } else if s >= 3.0 {
        0.6
    } else {
        0.2
    };
    let treatment_loss = (treatment_mean * 2.0 * sigmoid(-0.5 * treatment_response)
        + normal(rng, 0.0, 0.5))
    .max(0.0);
    let drift_per_year = normal(rng, 0.0, 0.015);

    let mut truth = Truth {
        cancer_type,
        stage,
        icd10,
        sex,
        age,
        birth_date,
        race,
        ethnicity,
        diagnosis_date,
        index_date,
        height_cm,
        premorbid_bmi,
        premorbid_smi,
        latents: Latents {
            inflammation,
            anorexia,
            muscle_reserve,
            frailty,
            muscle_quality,
            treatment_response,
            obstruction,
        },
        drift_per_year,
        onset_months,
        pre_rate,
        post_rate,
        treatment_loss,
        loss_before_index_6m: 0.0,
        max_loss_6m: 0.0,
        label: false,
        label_reason: None,
        label_month: None,
    };
    truth.apply_label();
    truth
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn truth(seed: u64) -> Truth {
        let mut rng = SynthRng::seed_from_u64(seed);
        let w = (
            NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(2024, 12, 31).unwrap(),
        );
        draw_truth(&mut rng, w)
    }

    #[test]
    fn label_follows_the_fearon_rule_on_the_true_trajectory() {
        for seed in 0..400 {
            let t = truth(seed);
            let any = (1..=6).any(|m| {
                let day = f64::from(m) * MONTH_DAYS;
                let loss = t.loss_6m_at(day);
                loss > 5.0
                    || (loss > 2.0
                        && (t.bmi_at(day) < 20.0 || t.smi_at(day) < sarcopenia_cutoff(t.sex)))
            });
            assert_eq!(t.label, any, "seed {seed}");
            assert_eq!(t.label, t.label_reason.is_some());
        }
    }

    #[test]
    fn age_matches_the_birth_date_and_sex_matches_the_site() {
        for seed in 0..400 {
            let t = truth(seed);
            assert_eq!(t.index_date.years_since(t.birth_date), Some(t.age), "{t:?}");
            if t.cancer_type == CancerType::Prostate {
                assert_eq!(t.sex, Sex::Male);
            }
            assert!(t.index_date >= t.diagnosis_date);
        }
    }

    #[test]
    fn weight_is_continuous_at_the_onset_and_the_index() {
        let t = truth(7);
        let onset = -t.onset_months * MONTH_DAYS;
        assert!((t.weight_at(onset - 1e-6) - t.weight_at(onset + 1e-6)).abs() < 1e-3);
        assert!((t.weight_at(-1e-6) - t.weight_at(1e-6)).abs() < 1e-3);
    }
}
