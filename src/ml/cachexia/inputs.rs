//! Model inputs: a [`Timeline`] → per-modality vectors, each with "present"
//! or "absent". Nothing is imputed: an absent value is a zero plus a
//! presence flag inside a modality, and a modality with no value at all is
//! absent as a whole (the model then uses its learned missing token).
//!
//! Patient-specific factors (age, sex, race, ethnicity, weight, BMI, cancer
//! type, stage) are inputs, not fixed thresholds (issue 4 item 3).

use candle_core::{Device, Result as CandleResult, Tensor};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::clinical::diagnoses::{CancerType, StageGroup};
use crate::clinical::{Analyte, Cutoffs, Sex, Timeline};
use crate::features::cachexia::Modality;

/// Token order after CLS (and the order of every per-modality array here).
pub const MODALITIES: [Modality; 5] = Modality::ALL;
/// all-MiniLM-L6-v2 sentence embeddings (pooled per patient, L2-normalised).
pub const NOTES_DIM: usize = 384;

/// Short machine name of a modality (tensor names, JSON keys).
pub fn key(m: Modality) -> &'static str {
    match m {
        Modality::Clinical => "clinical",
        Modality::Labs => "labs",
        Modality::Weight => "weight",
        Modality::BodyComposition => "body_composition",
        Modality::Notes => "notes",
    }
}

pub fn index_of(m: Modality) -> usize {
    MODALITIES.iter().position(|x| *x == m).unwrap_or(0)
}

/// Turns a patient's notes into one 384-d vector (the MiniLM text encoder
/// in production). Behind a trait so that training, evaluation and serving
/// take whichever encoder is configured, and tests can use a deterministic
/// one; without an encoder the notes modality is missing.
pub trait NotesEmbedder: Send + Sync {
    /// Names the encoder and its weights; stored with the trained model so a
    /// model is never fed embeddings from a different encoder.
    fn id(&self) -> String;
    /// `None` when there is nothing to embed.
    fn embed_patient_notes(&self, notes: &[String]) -> anyhow::Result<Option<Vec<f32>>>;

    /// [`Self::embed_patient_notes`] for many patients at once; an encoder
    /// may batch their notes together (same vectors, faster).
    fn embed_patients(&self, patients: &[Vec<String>]) -> anyhow::Result<Vec<Option<Vec<f32>>>> {
        patients
            .iter()
            .map(|n| self.embed_patient_notes(n))
            .collect()
    }
}

/// The production encoder: each note through `embed_document`, pooled
/// (`TextEncoder::embed_patient_notes`); the serving path
/// (`services::notes`) pools cached per-note vectors the same way.
impl NotesEmbedder for crate::ml::TextEncoder {
    fn id(&self) -> String {
        self.identity().to_owned()
    }

    fn embed_patient_notes(&self, notes: &[String]) -> anyhow::Result<Option<Vec<f32>>> {
        let notes: Vec<&str> = notes.iter().map(String::as_str).collect();
        Ok(crate::ml::TextEncoder::embed_patient_notes(self, &notes)?)
    }

    /// All the patients' notes in one `embed_documents` call (sorted into
    /// length-matched batches there), then pooled per patient exactly as
    /// `embed_patient_notes` pools them.
    fn embed_patients(&self, patients: &[Vec<String>]) -> anyhow::Result<Vec<Option<Vec<f32>>>> {
        let mut texts = Vec::new();
        let mut owner = Vec::new();
        for (i, notes) in patients.iter().enumerate() {
            for n in notes.iter().filter(|n| !n.trim().is_empty()) {
                texts.push(n.as_str());
                owner.push(i);
            }
        }
        let vectors = self.embed_documents(&texts)?;
        Ok(crate::ml::text_encoder::pool_groups(
            vectors,
            &owner,
            patients.len(),
        ))
    }
}

const CANCER_TYPES: [CancerType; 10] = [
    CancerType::Lung,
    CancerType::Pancreas,
    CancerType::Colorectal,
    CancerType::Gastric,
    CancerType::Oesophageal,
    CancerType::Breast,
    CancerType::Prostate,
    CancerType::HeadAndNeck,
    CancerType::Liver,
    CancerType::Other,
];
const STAGES: [StageGroup; 5] = [
    StageGroup::Zero,
    StageGroup::I,
    StageGroup::II,
    StageGroup::III,
    StageGroup::IV,
];
/// OMB race categories (CDC Race & Ethnicity codes, US Core).
const RACES: [(&str, &str); 5] = [
    ("2106-3", "race_white"),
    ("2054-5", "race_black"),
    ("2028-9", "race_asian"),
    ("1002-5", "race_aian"),
    ("2076-8", "race_nhpi"),
];
const HISPANIC: &str = "2135-2";
const NOT_HISPANIC: &str = "2186-5";

/// Names of the continuous inputs per tabular modality (notes: none).
pub fn continuous_names(m: Modality) -> &'static [&'static str] {
    match m {
        Modality::Clinical => &[
            "age",
            "months_since_diagnosis",
            "height",
            "weight",
            "bmi",
            "ecog",
            "karnofsky",
        ],
        Modality::Labs => &[
            "albumin",
            "log_crp",
            "log_neutrophils",
            "log_lymphocytes",
            "hemoglobin",
            "total_protein",
            "prealbumin",
            "log_creatinine",
            "log_urea_nitrogen",
            "log_nlr",
            "albumin_change",
            "hemoglobin_change",
            "log_crp_change",
            "months_since_labs",
        ],
        Modality::Weight => &[
            "weight_change_1m",
            "weight_change_3m",
            "weight_change_6m",
            "weight_change_12m",
            "weight_slope_6m",
            "loss_from_peak_6m",
            "log_weights_12m",
            "history_years",
        ],
        Modality::BodyComposition => &[
            "l3_smi",
            "l3_sma",
            "l3_muscle_hu",
            "l3_vat",
            "l3_sat",
            "smi_below_fearon_cutoff",
        ],
        Modality::Notes => &[],
    }
}

/// Number of binary inputs per modality (clinical only).
fn n_flags(m: Modality) -> usize {
    match m {
        Modality::Clinical => 2 + RACES.len() + 2 + CANCER_TYPES.len() + STAGES.len(),
        _ => 0,
    }
}

/// Input width of each modality encoder: standardised values, their
/// presence flags, binary inputs; or the embedding width for notes.
pub fn input_dims() -> [usize; 5] {
    MODALITIES.map(|m| match m {
        Modality::Notes => NOTES_DIM,
        m => 2 * continuous_names(m).len() + n_flags(m),
    })
}

/// One patient's raw inputs (before standardisation).
#[derive(Debug, Clone, PartialEq)]
pub struct RawInputs {
    /// Continuous values per modality; NaN = absent.
    pub continuous: [Vec<f64>; 5],
    /// Binary inputs per modality (clinical only).
    pub flags: [Vec<f32>; 5],
    pub notes: Option<Vec<f32>>,
    /// Notes the record holds (embedded or not).
    pub note_count: usize,
}

impl RawInputs {
    /// Which modalities have at least one value.
    pub fn present(&self) -> [bool; 5] {
        let mut p = [false; 5];
        for (i, m) in MODALITIES.iter().enumerate() {
            p[i] = match m {
                Modality::Notes => self.notes.is_some(),
                Modality::Weight => self.continuous[i][..6].iter().any(|x| x.is_finite()),
                Modality::Labs => self.continuous[i][..10].iter().any(|x| x.is_finite()),
                _ => {
                    self.continuous[i].iter().any(|x| x.is_finite())
                        || self.flags[i].iter().any(|x| *x != 0.0)
                }
            };
        }
        p
    }

    /// The note texts of a timeline, for the embedder.
    pub fn note_texts(t: &Timeline) -> Vec<String> {
        t.notes.iter().map(|n| n.text.clone()).collect()
    }

    /// Extract from a timeline; `notes` is the patient's pooled note
    /// embedding when an encoder produced one.
    pub fn from_timeline(t: &Timeline, notes: Option<Vec<f32>>) -> Self {
        let nan = f64::NAN;
        let val = |a: Analyte| t.recent(a).map_or(nan, |m| m.value);
        let ln = |x: f64| if x > 0.0 { x.ln() } else { nan };
        let d = &t.demographics;
        let cancer = t.primary_cancer();

        let mut clinical = vec![
            d.age.as_ref().map_or(nan, |a| f64::from(a.years)),
            cancer.and_then(|c| c.onset).map_or(nan, |o| {
                ((t.index_date - o).num_days() as f64 / 30.44).max(0.0)
            }),
            t.recent(Analyte::BodyHeight).map_or(nan, |m| m.value),
            t.weight.current.as_ref().map_or(nan, |m| m.value),
            t.bmi.as_ref().map_or(nan, |b| b.value),
            val(Analyte::Ecog),
            val(Analyte::Karnofsky),
        ];
        clinical.iter_mut().for_each(|x| {
            if !x.is_finite() {
                *x = nan
            }
        });
        let mut flags = Vec::with_capacity(n_flags(Modality::Clinical));
        let sex = d.sex_for_cutoffs();
        flags.push(f32::from(sex == Some(Sex::Male)));
        flags.push(f32::from(sex == Some(Sex::Female)));
        let has = |r: &Option<crate::clinical::RaceEthnicity>, code: &str| {
            f32::from(
                r.as_ref()
                    .is_some_and(|r| r.omb.iter().any(|c| c.code == code)),
            )
        };
        for (code, _) in RACES {
            flags.push(has(&d.race, code));
        }
        flags.push(has(&d.ethnicity, HISPANIC));
        flags.push(has(&d.ethnicity, NOT_HISPANIC));
        for ct in CANCER_TYPES {
            flags.push(f32::from(cancer.is_some_and(|c| c.cancer_type == ct)));
        }
        let stage = cancer.and_then(|c| c.stage.as_ref()).and_then(|s| s.group);
        for s in STAGES {
            flags.push(f32::from(stage == Some(s)));
        }

        // Labs: latest recent value, and the change from a value 14..180
        // days before it (trends carry what a single value cannot).
        let change = |a: Analyte, f: &dyn Fn(f64) -> f64| -> f64 {
            let Some(latest) = t.recent(a) else {
                return nan;
            };
            t.series(a)
                .iter()
                .rev()
                .find(|m| {
                    let days = (latest.date - m.date).num_days();
                    (14..=180).contains(&days)
                })
                .map_or(nan, |prev| f(latest.value) - f(prev.value))
        };
        let lab_analytes = [
            Analyte::Albumin,
            Analyte::Crp,
            Analyte::Neutrophils,
            Analyte::Lymphocytes,
            Analyte::Hemoglobin,
            Analyte::TotalProtein,
            Analyte::Prealbumin,
            Analyte::Creatinine,
            Analyte::UreaNitrogen,
        ];
        let latest_lab = lab_analytes
            .iter()
            .filter_map(|a| t.recent(*a).map(|m| m.date))
            .max();
        let labs = vec![
            val(Analyte::Albumin),
            // CRP below the assay's limit is written censored; 0.1 mg/L
            // floors the log. (`f64::max` would turn a missing NaN into 0.1.)
            ln_floored(val(Analyte::Crp), 0.1),
            ln(val(Analyte::Neutrophils)),
            ln(val(Analyte::Lymphocytes)),
            val(Analyte::Hemoglobin),
            val(Analyte::TotalProtein),
            val(Analyte::Prealbumin),
            ln(val(Analyte::Creatinine)),
            ln(val(Analyte::UreaNitrogen)),
            t.nlr.as_ref().map_or(nan, |n| ln(n.value)),
            change(Analyte::Albumin, &|x| x),
            change(Analyte::Hemoglobin, &|x| x),
            change(Analyte::Crp, &|x| x.max(0.1).ln()),
            latest_lab.map_or(nan, |d| months_between(d, t.index_date)),
        ];

        let weight = weight_inputs(t);

        let cut = Cutoffs::default().fearon.sarcopenia_smi;
        let smi = t.smi.as_ref().map(|s| s.value);
        let body = vec![
            smi.unwrap_or(nan),
            val(Analyte::L3Sma),
            val(Analyte::L3MuscleHu),
            val(Analyte::L3Vat),
            val(Analyte::L3Sat),
            match (smi, sex) {
                (Some(s), Some(Sex::Male)) => cut.male - s,
                (Some(s), Some(Sex::Female)) => cut.female - s,
                _ => nan,
            },
        ];

        let finite = |v: Vec<f64>| -> Vec<f64> {
            v.into_iter()
                .map(|x| if x.is_finite() { x } else { nan })
                .collect()
        };
        Self {
            continuous: [
                clinical,
                finite(labs),
                finite(weight),
                finite(body),
                Vec::new(),
            ],
            flags: [flags, Vec::new(), Vec::new(), Vec::new(), Vec::new()],
            notes: notes.filter(|v| v.len() == NOTES_DIM && v.iter().all(|x| x.is_finite())),
            note_count: t.notes.len(),
        }
    }
}

fn ln_floored(x: f64, floor: f64) -> f64 {
    if x.is_finite() {
        x.max(floor).ln()
    } else {
        f64::NAN
    }
}

fn months_between(from: NaiveDate, to: NaiveDate) -> f64 {
    (to - from).num_days() as f64 / 30.44
}

/// Weight trajectory: the timeline's windowed changes (Fearon's windows),
/// a least-squares slope over the last 6 months, the loss from the 6-month
/// peak, and how much history there is. Absent with fewer than two weights.
fn weight_inputs(t: &Timeline) -> Vec<f64> {
    let nan = f64::NAN;
    let w = &t.weight;
    let pc =
        |c: &Option<crate::clinical::WeightChange>| c.as_ref().map_or(nan, |c| c.percent_change);
    let series = t.series(Analyte::BodyWeight);
    let recent: Vec<(f64, f64)> = series
        .iter()
        .filter(|m| (0..=183).contains(&(t.index_date - m.date).num_days()))
        .map(|m| (-months_between(m.date, t.index_date), m.value))
        .collect();
    let (slope, peak_loss) = if recent.len() >= 2 {
        let n = recent.len() as f64;
        let mx = recent.iter().map(|p| p.0).sum::<f64>() / n;
        let my = recent.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx = recent.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
        let sxy = recent.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>();
        // Less than two weeks of spread says nothing about a trend.
        let slope = if sxx > 0.0 && (recent.last().unwrap().0 - recent[0].0) >= 0.45 {
            100.0 * sxy / sxx / my
        } else {
            nan
        };
        let peak = recent.iter().map(|p| p.1).fold(f64::MIN, f64::max);
        let last = recent.last().map_or(nan, |p| p.1);
        (slope, 100.0 * (peak - last) / peak)
    } else {
        (nan, nan)
    };
    let in_year = series
        .iter()
        .filter(|m| (0..=365).contains(&(t.index_date - m.date).num_days()))
        .count();
    let enough = series.len() >= 2;
    vec![
        pc(&w.one_month),
        pc(&w.three_months),
        pc(&w.six_months),
        pc(&w.twelve_months),
        slope,
        peak_loss,
        if enough {
            (1.0 + in_year as f64).ln()
        } else {
            nan
        },
        match series.first() {
            Some(first) if enough => months_between(first.date, t.index_date) / 12.0,
            _ => nan,
        },
    ]
}

/// Mean and standard deviation of one continuous input over the training
/// patients who have it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStat {
    pub name: String,
    pub mean: f64,
    pub sd: f64,
    /// Share of training patients with the value.
    pub coverage: f64,
}

/// Standardisation of the continuous inputs (stored in `model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Per modality, in [`MODALITIES`] order.
    pub stats: Vec<Vec<FeatureStat>>,
}

impl Standardizer {
    pub fn fit(rows: &[&RawInputs]) -> Self {
        let stats = MODALITIES
            .iter()
            .enumerate()
            .map(|(mi, m)| {
                continuous_names(*m)
                    .iter()
                    .enumerate()
                    .map(|(fi, name)| {
                        let xs: Vec<f64> = rows
                            .iter()
                            .map(|r| r.continuous[mi][fi])
                            .filter(|x| x.is_finite())
                            .collect();
                        let n = xs.len().max(1) as f64;
                        let mean = xs.iter().sum::<f64>() / n;
                        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                        FeatureStat {
                            name: (*name).to_owned(),
                            mean,
                            sd: if var.sqrt() > 1e-9 { var.sqrt() } else { 1.0 },
                            coverage: xs.len() as f64 / rows.len().max(1) as f64,
                        }
                    })
                    .collect()
            })
            .collect();
        Self { stats }
    }

    pub fn check(&self) -> Result<(), String> {
        for (mi, m) in MODALITIES.iter().enumerate() {
            let names = continuous_names(*m);
            let got = self.stats.get(mi).map(|s| s.len()).unwrap_or(0);
            if got != names.len() {
                return Err(format!(
                    "standardisation has {got} inputs for {}, this build expects {}",
                    key(*m),
                    names.len()
                ));
            }
        }
        Ok(())
    }

    /// Standardised model inputs of one patient.
    pub fn encode(&self, raw: &RawInputs) -> Encoded {
        let present = raw.present();
        let x = std::array::from_fn(|mi| {
            if MODALITIES[mi] == Modality::Notes {
                return raw.notes.clone().unwrap_or_else(|| vec![0.0; NOTES_DIM]);
            }
            let cont = &raw.continuous[mi];
            let mut v = Vec::with_capacity(2 * cont.len() + raw.flags[mi].len());
            for (x, s) in cont.iter().zip(&self.stats[mi]) {
                // Clipped so that a unit error in the record cannot swamp
                // the token.
                v.push(if x.is_finite() {
                    ((x - s.mean) / s.sd).clamp(-6.0, 6.0) as f32
                } else {
                    0.0
                });
            }
            v.extend(cont.iter().map(|x| f32::from(x.is_finite())));
            v.extend_from_slice(&raw.flags[mi]);
            v
        });
        Encoded { x, present }
    }
}

/// One patient's standardised inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub x: [Vec<f32>; 5],
    pub present: [bool; 5],
}

impl Encoded {
    /// The same patient with some modalities switched to "missing".
    pub fn without(&self, drop: &[Modality]) -> Self {
        let mut e = self.clone();
        for m in drop {
            e.present[index_of(*m)] = false;
        }
        e
    }
}

/// A batch as tensors: per modality (B, in) inputs and (B, 1) presence.
pub struct ModalityBatch {
    pub x: Vec<Tensor>,
    pub present: Vec<Tensor>,
    n: usize,
}

impl ModalityBatch {
    pub fn new(rows: &[&Encoded], device: &Device) -> CandleResult<Self> {
        let n = rows.len();
        let dims = input_dims();
        let mut x = Vec::with_capacity(5);
        let mut present = Vec::with_capacity(5);
        for (mi, dim) in dims.iter().enumerate() {
            let mut flat = Vec::with_capacity(n * dim);
            let mut p = Vec::with_capacity(n);
            for r in rows {
                if r.x[mi].len() != *dim {
                    candle_core::bail!(
                        "modality {} has {} inputs, expected {dim}",
                        key(MODALITIES[mi]),
                        r.x[mi].len()
                    );
                }
                flat.extend_from_slice(&r.x[mi]);
                p.push(f32::from(r.present[mi]));
            }
            x.push(Tensor::from_vec(flat, (n, *dim), device)?);
            present.push(Tensor::from_vec(p, (n, 1), device)?);
        }
        Ok(Self { x, present, n })
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}
