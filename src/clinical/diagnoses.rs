//! Cancer diagnoses (type, onset, stage) and existing cachexia diagnoses from
//! Condition resources, plus stage from staging Observations.
//!
//! Rules:
//! - Conditions whose `verificationStatus` is `entered-in-error` or `refuted`
//!   are skipped (recorded in `Timeline::skipped`): they do not describe the
//!   patient. `unconfirmed`/`provisional`/`differential` are kept, with the
//!   status carried along so a reader can weigh them.
//! - `clinicalStatus` `active`/`recurrence`/`relapse` is active;
//!   `inactive`/`remission`/`resolved` is not. Without a clinical status a
//!   condition is active unless it has an abatement (FHIR R4 Condition: "If
//!   there is no abatement element, ... assume that the condition is still
//!   valid").
//! - Onset: `onsetDateTime`, else `onsetPeriod.start`, else `recordedDate`;
//!   a partial date counts from its first day. A condition whose onset is
//!   after the index date is skipped (it was not known then).
//! - Cancer type from ICD-10(-CM) C-codes or a curated SNOMED CT subset (see
//!   `snomed_concept`); only malignant codes count (D-codes, "neoplasm of
//!   uncertain behaviour" and benign concepts are not cancers). C77–C79 and
//!   C7B are secondary (metastatic) sites and typed `Other` with `secondary`.
//! - Stage, first that applies: `Condition.stage.summary`; a stage implied by
//!   the diagnosis code (SNOMED "… TNM stage 3"); a staging Observation linked
//!   to the condition (referenced from `Condition.stage.assessment`, or whose
//!   `focus` is the condition); for the primary cancer only, the latest staging
//!   Observation linked to no other condition (EHRs often do not link them).
//!   A stage-group Observation is preferred over a distant-metastasis one, then
//!   the later date. Only `M1` is turned into a stage group (IV): deriving a
//!   group from T and N is cancer-specific and is not attempted.
//! - `cancers` is ordered so that the first is the primary cancer: active
//!   before inactive, primary site before secondary, later onset first, then
//!   by source for determinism.

use chrono::NaiveDate;
use fhir_sdk::r4b::codes::ObservationStatus;
use fhir_sdk::r4b::resources::{
    Condition, ConditionOnset, Observation, ObservationEffective, ObservationValue,
};
use fhir_sdk::r4b::types::CodeableConcept;
use serde::Serialize;
use std::cmp::Reverse;

use super::codes::{AJCC, Coded, SNOMED, StagingCode, is_icd10};
use super::dates;
use super::provenance::SourceRef;
use super::timeline::SkippedValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancerType {
    /// ICD-10 C34.
    Lung,
    /// C25.
    Pancreas,
    /// C18–C20.
    Colorectal,
    /// C16.
    Gastric,
    /// C15.
    Oesophageal,
    /// C50.
    Breast,
    /// C61.
    Prostate,
    /// C00–C14 (lip, oral cavity, pharynx), C30–C32 (nasal cavity, sinuses,
    /// larynx), C76.0 (head, face and neck, ill-defined).
    HeadAndNeck,
    /// C22 (liver and intrahepatic bile ducts).
    Liver,
    Other,
}

impl CancerType {
    /// Lower-case name for reasons and cards.
    pub const fn label(self) -> &'static str {
        match self {
            CancerType::Lung => "lung",
            CancerType::Pancreas => "pancreatic",
            CancerType::Colorectal => "colorectal",
            CancerType::Gastric => "gastric",
            CancerType::Oesophageal => "oesophageal",
            CancerType::Breast => "breast",
            CancerType::Prostate => "prostate",
            CancerType::HeadAndNeck => "head and neck",
            CancerType::Liver => "liver",
            CancerType::Other => "other",
        }
    }
}

/// AJCC stage group without substage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum StageGroup {
    #[serde(rename = "0")]
    Zero,
    I,
    II,
    III,
    IV,
}

impl StageGroup {
    const fn roman(self) -> &'static str {
        match self {
            StageGroup::Zero => "0",
            StageGroup::I => "I",
            StageGroup::II => "II",
            StageGroup::III => "III",
            StageGroup::IV => "IV",
        }
    }
}

/// Where a stage came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageBasis {
    ConditionStageSummary,
    DiagnosisCode,
    StageGroupObservation,
    DistantMetastasisObservation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Normalised group (I–IV, or 0); `None` when the text could not be read.
    pub group: Option<StageGroup>,
    /// Normalised label with substage when present, e.g. `IIIB`.
    pub label: Option<String>,
    /// The original text (coding display, code or free text).
    pub text: String,
    pub basis: StageBasis,
    pub source: SourceRef,
    pub date: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CancerDiagnosis {
    pub cancer_type: CancerType,
    /// The coding that identified the cancer.
    pub code: Coded,
    /// A secondary (metastatic) site code rather than a primary cancer.
    pub secondary: bool,
    pub onset: Option<NaiveDate>,
    /// Which element the onset came from (`onsetDateTime`, `onsetPeriod.start`,
    /// `recordedDate`).
    pub onset_from: Option<&'static str>,
    pub active: bool,
    pub clinical_status: Option<String>,
    pub verification_status: Option<String>,
    pub stage: Option<Stage>,
    pub source: SourceRef,
}

/// A recorded cachexia diagnosis: SNOMED CT 238108007 (cachexia), 788876001
/// (cachexia due to malignant neoplastic disease); ICD-10-CM R64 (cachexia),
/// E88.A (wasting disease (syndrome) due to underlying condition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachexiaDiagnosis {
    pub code: Coded,
    pub onset: Option<NaiveDate>,
    pub active: bool,
    pub source: SourceRef,
}

/// A staging Observation (LOINC 21908-9 / 21902-2 stage group, TNM categories).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StagingObservation {
    pub kind: StagingCode,
    /// The value as text (display, code or string).
    pub text: String,
    /// Stage group read from the value (stage group; M1 gives IV).
    pub group: Option<StageGroup>,
    pub label: Option<String>,
    pub date: Option<NaiveDate>,
    pub source: SourceRef,
    /// `Observation.focus` references (to the Condition it stages).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub focus: Vec<String>,
}

/// What a condition code denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConceptKind {
    Cancer {
        cancer_type: CancerType,
        secondary: bool,
        implied_stage: Option<StageGroup>,
    },
    Cachexia,
}

/// Curated subset of SNOMED CT cancer concepts, mapped to a cancer type. It
/// is not the full descendant hierarchy of 363346000 |Malignant neoplastic
/// disease|: it covers the common disorder concepts (including those Synthea
/// emits, some of which carry a TNM stage) and falls back to `Other` only for
/// concepts listed here. Unlisted SNOMED codes are not read as cancer.
fn snomed_concept(code: &str) -> Option<ConceptKind> {
    use CancerType::*;
    use StageGroup::*;
    let cancer = |cancer_type, implied_stage| ConceptKind::Cancer {
        cancer_type,
        secondary: false,
        implied_stage,
    };
    Some(match code {
        "238108007" | "788876001" => ConceptKind::Cachexia,
        // Lung
        "363358000" | "93880001" | "254637007" | "254632001" => cancer(Lung, None),
        "424132000" | "67811000119102" => cancer(Lung, Some(I)),
        "425048006" | "67821000119109" => cancer(Lung, Some(II)),
        "422968005" | "67831000119107" => cancer(Lung, Some(III)),
        "423121009" | "67841000119103" => cancer(Lung, Some(IV)),
        // Pancreas
        "363418001" | "372003004" => cancer(Pancreas, None),
        // Colon and rectum
        "363406005" | "93761005" | "109838007" | "363351006" => cancer(Colorectal, None),
        "363349007" => cancer(Gastric, None),
        "363402007" => cancer(Oesophageal, None),
        "254837009" => cancer(Breast, None),
        "399068003" => cancer(Prostate, None),
        "93870000" | "25370001" => cancer(Liver, None),
        "255055008" => cancer(HeadAndNeck, None),
        // Generic malignancy and other sites
        "363346000" | "372244006" | "363443007" | "363518003" | "399326009" | "363478007"
        | "91861009" | "92818009" => cancer(Other, None),
        // Metastatic malignant neoplasm to colon (Synthea's stage IV code).
        "94260004" => ConceptKind::Cancer {
            cancer_type: Other,
            secondary: true,
            implied_stage: None,
        },
        _ => return None,
    })
}

/// ICD-10 / ICD-10-CM: C-codes by category, R64 and E88.A for cachexia.
fn icd10_concept(code: &str) -> Option<ConceptKind> {
    let code: String = code
        .chars()
        .filter(|c| *c != '.' && !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect();
    if code == "R64" || code.starts_with("E88A") {
        return Some(ConceptKind::Cachexia);
    }
    let rest = code.strip_prefix('C')?;
    let cancer = |cancer_type, secondary| {
        Some(ConceptKind::Cancer {
            cancer_type,
            secondary,
            implied_stage: None,
        })
    };
    // C7A (malignant neuroendocrine), C7B (secondary neuroendocrine).
    if rest.starts_with("7A") {
        return cancer(CancerType::Other, false);
    }
    if rest.starts_with("7B") {
        return cancer(CancerType::Other, true);
    }
    let category: u32 = rest.get(..2)?.parse().ok()?;
    let t = match category {
        0..=14 | 30..=32 => CancerType::HeadAndNeck,
        76 if rest.starts_with("760") => CancerType::HeadAndNeck,
        15 => CancerType::Oesophageal,
        16 => CancerType::Gastric,
        18..=20 => CancerType::Colorectal,
        22 => CancerType::Liver,
        25 => CancerType::Pancreas,
        34 => CancerType::Lung,
        50 => CancerType::Breast,
        61 => CancerType::Prostate,
        77..=79 => return cancer(CancerType::Other, true),
        _ => CancerType::Other,
    };
    cancer(t, false)
}

fn concept_of(code: &CodeableConcept) -> Option<(ConceptKind, Coded)> {
    let mut best: Option<(ConceptKind, Coded)> = None;
    for coding in code.coding.iter().flatten() {
        let Some(coded) = Coded::from_coding(coding) else {
            continue;
        };
        let system = coded.system.as_deref().unwrap_or("");
        let kind = if system == SNOMED {
            snomed_concept(&coded.code)
        } else if is_icd10(system) {
            icd10_concept(&coded.code)
        } else {
            None
        };
        let Some(kind) = kind else { continue };
        // A cachexia coding wins; then a specific cancer type over `Other`.
        let better = match (&best, kind) {
            (None, _) => true,
            (Some((ConceptKind::Cachexia, _)), _) => false,
            (Some(_), ConceptKind::Cachexia) => true,
            (
                Some((
                    ConceptKind::Cancer {
                        cancer_type: CancerType::Other,
                        ..
                    },
                    _,
                )),
                ConceptKind::Cancer { cancer_type, .. },
            ) => cancer_type != CancerType::Other,
            _ => false,
        };
        if better {
            best = Some((kind, coded));
        }
    }
    best
}

fn first_code(cc: Option<&CodeableConcept>) -> Option<String> {
    cc?.coding
        .iter()
        .flatten()
        .find_map(|c| c.code.clone())
        .map(|c| c.trim().to_owned())
}

/// Conditions split into cancers and cachexia diagnoses.
#[derive(Debug, Default)]
pub(crate) struct ConditionExtraction {
    pub cancers: Vec<CancerDiagnosis>,
    pub cachexia: Vec<CachexiaDiagnosis>,
    /// Per cancer, the Observation references in `Condition.stage.assessment`.
    assessment_refs: Vec<Vec<String>>,
}

pub(crate) fn extract_conditions(
    conditions: &[Condition],
    index_date: NaiveDate,
    skipped: &mut Vec<SkippedValue>,
) -> ConditionExtraction {
    let mut out = ConditionExtraction::default();
    for (position, condition) in conditions.iter().enumerate() {
        let source = SourceRef::new("Condition", condition.id.as_deref(), position);
        let Some((kind, coded)) = condition.code.as_ref().and_then(concept_of) else {
            continue; // Not a condition we read: not worth a skip record.
        };
        let verification = first_code(condition.verification_status.as_ref());
        if let Some(v @ ("entered-in-error" | "refuted")) = verification.as_deref() {
            skipped.push(SkippedValue::new(
                source,
                Some(coded.code.clone()),
                format!("condition verificationStatus is {v}"),
            ));
            continue;
        }
        let clinical = first_code(condition.clinical_status.as_ref());
        let active = match clinical.as_deref() {
            Some("active" | "recurrence" | "relapse") => true,
            Some(_) => false,
            None => condition.abatement.is_none(),
        };
        let (onset, onset_from) = onset_of(condition);
        if let Some(onset) = onset.filter(|d| *d > index_date) {
            skipped.push(SkippedValue::new(
                source,
                Some(coded.code.clone()),
                format!("condition onset {onset} is after the index date {index_date}"),
            ));
            continue;
        }
        match kind {
            ConceptKind::Cachexia => out.cachexia.push(CachexiaDiagnosis {
                code: coded,
                onset,
                active,
                source,
            }),
            ConceptKind::Cancer {
                cancer_type,
                secondary,
                implied_stage,
            } => {
                let mut stage = condition.stage.iter().flatten().find_map(|s| {
                    let summary = s.summary.as_ref()?;
                    let (group, label, text) = read_stage_concept(summary)?;
                    Some(Stage {
                        group,
                        label,
                        text,
                        basis: StageBasis::ConditionStageSummary,
                        source: source.clone(),
                        date: onset,
                    })
                });
                if stage.is_none()
                    && let Some(group) = implied_stage
                {
                    stage = Some(Stage {
                        group: Some(group),
                        label: Some(group.roman().to_owned()),
                        text: coded.display.clone().unwrap_or_else(|| coded.code.clone()),
                        basis: StageBasis::DiagnosisCode,
                        source: source.clone(),
                        date: onset,
                    });
                }
                let refs = condition
                    .stage
                    .iter()
                    .flatten()
                    .flat_map(|s| s.assessment.iter().flatten())
                    .filter_map(|r| r.reference.clone())
                    .collect();
                out.assessment_refs.push(refs);
                out.cancers.push(CancerDiagnosis {
                    cancer_type,
                    code: coded,
                    secondary,
                    onset,
                    onset_from,
                    active,
                    clinical_status: clinical,
                    verification_status: verification,
                    stage,
                    source,
                });
            }
        }
    }
    out
}

fn onset_of(condition: &Condition) -> (Option<NaiveDate>, Option<&'static str>) {
    let from_onset = match &condition.onset {
        Some(ConditionOnset::DateTime(dt)) => dates::first_day(dt).map(|d| (d, "onsetDateTime")),
        Some(ConditionOnset::Period(p)) => p
            .start
            .as_ref()
            .and_then(dates::first_day)
            .map(|d| (d, "onsetPeriod.start")),
        _ => None,
    };
    let found = from_onset.or_else(|| {
        condition
            .recorded_date
            .as_ref()
            .and_then(dates::first_day)
            .map(|d| (d, "recordedDate"))
    });
    (found.map(|f| f.0), found.map(|f| f.1))
}

/// Order cancers (primary first) and attach stages from staging Observations.
pub(crate) fn finish(
    mut extraction: ConditionExtraction,
    staging: &[StagingObservation],
) -> (Vec<CancerDiagnosis>, Vec<CachexiaDiagnosis>) {
    let mut paired: Vec<(CancerDiagnosis, Vec<String>)> = extraction
        .cancers
        .drain(..)
        .zip(extraction.assessment_refs.drain(..))
        .collect();
    paired.sort_by(|(a, _), (b, _)| {
        (Reverse(a.active), a.secondary, Reverse(a.onset), &a.source).cmp(&(
            Reverse(b.active),
            b.secondary,
            Reverse(b.onset),
            &b.source,
        ))
    });
    let linked_to = |obs: &StagingObservation, cancer: &CancerDiagnosis, refs: &[String]| {
        refs.iter().any(|r| obs.source.matches_reference(r))
            || obs.focus.iter().any(|f| cancer.source.matches_reference(f))
    };
    let mut any_link = vec![false; staging.len()];
    for (cancer, refs) in &mut paired {
        let linked: Vec<&StagingObservation> = staging
            .iter()
            .enumerate()
            .filter(|(i, o)| {
                let l = linked_to(o, cancer, refs);
                if l {
                    any_link[*i] = true;
                }
                l
            })
            .map(|(_, o)| o)
            .collect();
        if cancer.stage.is_none() {
            cancer.stage = best_stage(linked);
        }
    }
    if let Some((primary, _)) = paired.first_mut()
        && primary.stage.is_none()
    {
        let unlinked = staging
            .iter()
            .zip(&any_link)
            .filter(|(_, linked)| !**linked)
            .map(|(o, _)| o)
            .collect();
        primary.stage = best_stage(unlinked);
    }
    let mut cachexia = extraction.cachexia;
    cachexia.sort_by(|a, b| {
        (Reverse(a.active), Reverse(a.onset), &a.source).cmp(&(
            Reverse(b.active),
            Reverse(b.onset),
            &b.source,
        ))
    });
    (paired.into_iter().map(|(c, _)| c).collect(), cachexia)
}

/// Stage-group observations before M1, then the latest.
fn best_stage(candidates: Vec<&StagingObservation>) -> Option<Stage> {
    candidates
        .into_iter()
        .filter(|o| o.group.is_some())
        .max_by(|a, b| {
            let rank = |o: &StagingObservation| {
                (
                    o.kind == StagingCode::StageGroup,
                    o.date,
                    Reverse(o.source.clone()),
                )
            };
            rank(a).cmp(&rank(b))
        })
        .map(|o| Stage {
            group: o.group,
            label: o.label.clone(),
            text: o.text.clone(),
            basis: if o.kind == StagingCode::StageGroup {
                StageBasis::StageGroupObservation
            } else {
                StageBasis::DistantMetastasisObservation
            },
            source: o.source.clone(),
            date: o.date,
        })
}

/// A staging Observation, or `None` when `obs` is not one. Returns `Err` with
/// a reason when it is one but cannot be used.
pub(crate) fn staging_observation(
    obs: &Observation,
    kind: StagingCode,
    source: SourceRef,
    index_date: NaiveDate,
) -> Result<StagingObservation, String> {
    if matches!(
        obs.status,
        ObservationStatus::EnteredInError | ObservationStatus::Cancelled
    ) {
        return Err(format!("observation status is {}", obs.status));
    }
    let date = match &obs.effective {
        Some(ObservationEffective::DateTime(dt)) => dates::first_day(dt),
        Some(ObservationEffective::Period(p)) => p.start.as_ref().and_then(dates::first_day),
        Some(ObservationEffective::Instant(i)) => dates::instant_date(i),
        _ => None,
    }
    .or_else(|| obs.issued.as_ref().and_then(dates::instant_date));
    if let Some(d) = date.filter(|d| *d > index_date) {
        return Err(format!("observed {d}, after the index date {index_date}"));
    }
    let m_category = |text: String| {
        let g = read_m_category(&text, kind);
        (g, g.map(|g| g.roman().to_owned()), text)
    };
    let (group, label, text) = match (&obs.value, kind) {
        (Some(ObservationValue::CodeableConcept(cc)), StagingCode::StageGroup) => {
            read_stage_concept(cc)
        }
        (Some(ObservationValue::CodeableConcept(cc)), _) => concept_text(cc).map(m_category),
        (Some(ObservationValue::String(s)), StagingCode::StageGroup) => {
            let (group, label) = parse_stage_text(s).unzip();
            Some((group, label, s.clone()))
        }
        (Some(ObservationValue::String(s)), _) => Some(m_category(s.clone())),
        _ => None,
    }
    .ok_or("staging observation has no coded or text value")?;
    Ok(StagingObservation {
        kind,
        text,
        group,
        label,
        date,
        source,
        focus: obs
            .focus
            .iter()
            .flatten()
            .filter_map(|r| r.reference.clone())
            .collect(),
    })
}

/// Text of a concept: its `text`, else the first display, else the first code.
fn concept_text(cc: &CodeableConcept) -> Option<String> {
    cc.text
        .clone()
        .or_else(|| cc.coding.iter().flatten().find_map(|c| c.display.clone()))
        .or_else(|| cc.coding.iter().flatten().find_map(|c| c.code.clone()))
        .filter(|t| !t.trim().is_empty())
}

/// SNOMED CT stage group qualifier values.
fn snomed_stage(code: &str) -> Option<StageGroup> {
    Some(match code {
        "258215001" => StageGroup::I,
        "258219007" => StageGroup::II,
        "258224005" => StageGroup::III,
        "258228008" => StageGroup::IV,
        _ => return None,
    })
}

/// Read a stage concept: SNOMED stage codes, AJCC codes (`3B`, `IIIB`), then
/// coding displays and `text`. Returns `(group, label, original text)`; the
/// group is `None` when there is text but no recognisable stage.
fn read_stage_concept(
    cc: &CodeableConcept,
) -> Option<(Option<StageGroup>, Option<String>, String)> {
    let text = concept_text(cc)?;
    for coding in cc.coding.iter().flatten() {
        let (Some(system), Some(code)) = (coding.system.as_deref(), coding.code.as_deref()) else {
            continue;
        };
        if system == SNOMED
            && let Some(g) = snomed_stage(code.trim())
        {
            return Some((Some(g), Some(g.roman().to_owned()), text));
        }
        if (system == AJCC || system.to_ascii_lowercase().contains("ajcc"))
            && let Some((g, label)) = parse_stage_token(&code.trim().to_uppercase())
        {
            return Some((Some(g), Some(label), text));
        }
    }
    let candidates = cc
        .coding
        .iter()
        .flatten()
        .filter_map(|c| c.display.as_deref())
        .chain(cc.text.as_deref());
    for t in candidates {
        if let Some((g, label)) = parse_stage_text(t) {
            return Some((Some(g), Some(label), text));
        }
    }
    Some((None, None, text))
}

/// `Stage IIIB`, `stage 3b`, `IIIB`, `Stage 4 (qualifier value)`, `AJCC stage IA1`.
///
/// The stage is the token after the word "stage", or the whole text when it
/// is a single token. Returns the group and the normalised label (`IIIB`).
pub(crate) fn parse_stage_text(text: &str) -> Option<(StageGroup, String)> {
    let upper = text.to_uppercase();
    let tokens: Vec<&str> = upper
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .collect();
    let candidate = match tokens.iter().position(|t| *t == "STAGE") {
        Some(i) => tokens.get(i + 1)?,
        None if tokens.len() == 1 => tokens.first()?,
        None => return None,
    };
    parse_stage_token(candidate)
}

/// `IIIB`, `3B`, `IA1`, `IV`, `0`, `0IS` (upper case).
fn parse_stage_token(token: &str) -> Option<(StageGroup, String)> {
    const HEADS: [(&str, StageGroup); 9] = [
        ("IV", StageGroup::IV),
        ("III", StageGroup::III),
        ("II", StageGroup::II),
        ("I", StageGroup::I),
        ("4", StageGroup::IV),
        ("3", StageGroup::III),
        ("2", StageGroup::II),
        ("1", StageGroup::I),
        ("0", StageGroup::Zero),
    ];
    let (group, rest) = HEADS
        .iter()
        .find_map(|(head, g)| token.strip_prefix(head).map(|rest| (*g, rest)))?;
    let valid_rest = match group {
        StageGroup::Zero => matches!(rest, "" | "A" | "IS"),
        _ => {
            let mut chars = rest.chars();
            matches!(
                (chars.next(), chars.next(), chars.next()),
                (None, _, _)
                    | (Some('A'..='C'), None, _)
                    | (Some('A'..='C'), Some('1'..='3'), None)
            )
        }
    };
    valid_rest.then(|| (group, format!("{}{rest}", group.roman())))
}

/// `M1`, `cM1`, `pM1a`, `M1 category` → IV, only for distant-metastasis
/// observations. `M0`/`MX` give no stage.
fn read_m_category(text: &str, kind: StagingCode) -> Option<StageGroup> {
    if kind != StagingCode::DistantMetastases {
        return None;
    }
    text.to_uppercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|t| {
            t.trim_start_matches(['C', 'P', 'Y', 'R'])
                .strip_prefix("M1")
                .is_some_and(|r| r.chars().all(|c| c.is_ascii_alphabetic()))
        })
        .then_some(StageGroup::IV)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_text_forms() {
        let p = parse_stage_text;
        assert_eq!(p("Stage IIIB"), Some((StageGroup::III, "IIIB".into())));
        assert_eq!(p("stage 3b"), Some((StageGroup::III, "IIIB".into())));
        assert_eq!(p("IV"), Some((StageGroup::IV, "IV".into())));
        assert_eq!(
            p("Stage 4 (qualifier value)"),
            Some((StageGroup::IV, "IV".into()))
        );
        assert_eq!(p("AJCC stage IA1"), Some((StageGroup::I, "IA1".into())));
        assert_eq!(p("Stage 0is"), Some((StageGroup::Zero, "0IS".into())));
        assert_eq!(p("Stage IIA"), Some((StageGroup::II, "IIA".into())));
        assert_eq!(p("T2N1M0"), None);
        assert_eq!(p("Stage unknown"), None);
        assert_eq!(p("Stage IVX"), None);
        assert_eq!(p("lung cancer IV"), None);
    }

    #[test]
    fn m_category_gives_stage_four_only_for_m1() {
        let m = StagingCode::DistantMetastases;
        assert_eq!(read_m_category("cM1", m), Some(StageGroup::IV));
        assert_eq!(read_m_category("pM1a", m), Some(StageGroup::IV));
        assert_eq!(
            read_m_category("M1 category (finding)", m),
            Some(StageGroup::IV)
        );
        assert_eq!(read_m_category("cM0", m), None);
        assert_eq!(read_m_category("MX", m), None);
        assert_eq!(read_m_category("M1", StagingCode::PrimaryTumor), None);
    }

    #[test]
    fn icd10_categories() {
        let t = |c: &str| match icd10_concept(c) {
            Some(ConceptKind::Cancer {
                cancer_type,
                secondary,
                ..
            }) => Some((cancer_type, secondary)),
            _ => None,
        };
        assert_eq!(t("C34.11"), Some((CancerType::Lung, false)));
        assert_eq!(t("C25.0"), Some((CancerType::Pancreas, false)));
        assert_eq!(t("C18.7"), Some((CancerType::Colorectal, false)));
        assert_eq!(t("C20"), Some((CancerType::Colorectal, false)));
        assert_eq!(t("C21.0"), Some((CancerType::Other, false)));
        assert_eq!(t("C16.9"), Some((CancerType::Gastric, false)));
        assert_eq!(t("C15.5"), Some((CancerType::Oesophageal, false)));
        assert_eq!(t("C50.911"), Some((CancerType::Breast, false)));
        assert_eq!(t("C61"), Some((CancerType::Prostate, false)));
        assert_eq!(t("C22.0"), Some((CancerType::Liver, false)));
        assert_eq!(t("C02.1"), Some((CancerType::HeadAndNeck, false)));
        assert_eq!(t("C32.9"), Some((CancerType::HeadAndNeck, false)));
        assert_eq!(t("C76.0"), Some((CancerType::HeadAndNeck, false)));
        assert_eq!(t("C76.2"), Some((CancerType::Other, false)));
        assert_eq!(t("C78.7"), Some((CancerType::Other, true)));
        assert_eq!(t("C7B.02"), Some((CancerType::Other, true)));
        assert_eq!(t("D02.2"), None);
        assert_eq!(t("J44.9"), None);
        assert_eq!(icd10_concept("R64"), Some(ConceptKind::Cachexia));
        assert_eq!(icd10_concept("E88.A"), Some(ConceptKind::Cachexia));
        assert_eq!(icd10_concept("e88a"), Some(ConceptKind::Cachexia));
        assert_eq!(icd10_concept("E88.9"), None);
    }
}
