//! The hook side of the lung-nodule pipeline: which chest CT a patient has,
//! which nodule findings belong to it, and whether the imaging cache already
//! holds their measurements — enqueueing a [`super::nodule_job`] job when it
//! does not. Nothing here touches pixels (see docs/nodule-service.md).
//!
//! # The chest CT
//! The newest `ImagingStudy` (not cancelled or entered in error, started on
//! or before the index date) with a CT series ([`super::cache::ct_studies`])
//! that is a chest CT: its description, procedure code, or a series'
//! description or body site names the chest, thorax or lung (SNOMED CT
//! 51185008 thoracic structure, 39607008 lung structure, DICOM body part
//! `CHEST`), or nodule findings are recorded against it. The first CT series
//! is analysed; SEG series of the same study are read for nodule masks.
//!
//! # Nodule findings (the profile we accept)
//! 1. An `Observation` with status final, amended or corrected, coded SNOMED
//!    CT 786838002 "Pulmonary nodule" or `NODULE_SYSTEM|nodule`, whose
//!    `derivedFrom` or `partOf` references the ImagingStudy. It may carry:
//!    * `bodySite` (the lobe; SNOMED CT 45653009 right upper lobe,
//!      44714003 left upper lobe, 72481006 right middle lobe, 266005 right
//!      lower lobe, 90572001 left lower lobe, or text — "upper" or
//!      "lingula" count as upper lobe for Brock and Mayo);
//!    * components coded in [`NODULE_SYSTEM`]: `center-x`, `center-y`,
//!      `center-z` (`valueQuantity` in mm or cm: the nodule centre in DICOM
//!      LPS patient coordinates of the series), `diameter` (mean diameter)
//!      or `long-axis` + `short-axis`, `solid-component-diameter`, `type`
//!      (`valueCodeableConcept` code `solid`, `part-solid` or `ground-glass`),
//!      `spiculation` (`valueBoolean`);
//!    * a `valueQuantity` in mm or cm: the mean diameter, when no
//!      `diameter` component is given.
//! 2. A DICOM SEG series in the study (modality `SEG` in the ImagingStudy):
//!    one nodule per segment. A point finding that falls inside a segment is
//!    the same nodule (the SEG gives the mask, the Observation the lobe and
//!    type).
//! 3. DICOM SR TID 1500 measurement reports are not read yet: a study whose
//!    only findings are in an SR is reported as "no nodule findings" with
//!    that reason.
//!
//! A finding with coordinates but no mask is segmented around its point by
//! the job ([`super::nodule_job::segment_at_point`]).

use std::time::Duration;

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::ImagingCache;
use super::cache::{CtStudy, ct_studies};
use super::dicomweb::DicomWebBase;
use super::nodule_job::{
    NoduleImagingOutcome, NoduleImagingResult, NoduleJob, PIPELINE_VERSION, PointFinding,
};
use super::patch::PatchConfig;
use crate::clinical::nodule::NoduleType;
use crate::clinical::provenance::SourceRef;
use crate::fhir::PatientRecord;

/// Our code system for nodule finding codes and components.
pub const NODULE_SYSTEM: &str = "https://oncohooks.invalid/fhir/CodeSystem/lung-nodule";
pub const SNOMED: &str = "http://snomed.info/sct";
/// SNOMED CT 786838002 |Pulmonary nodule (disorder)|.
pub const SNOMED_PULMONARY_NODULE: &str = "786838002";

const UPPER_LOBES: [&str; 2] = ["45653009", "44714003"];
const OTHER_LOBES: [&str; 3] = ["72481006", "266005", "90572001"];
const CHEST_SITES: [&str; 2] = ["51185008", "39607008"];
const CHEST_WORDS: [&str; 5] = ["chest", "thora", "lung", "pulmonary", "thx"];

/// One nodule finding recorded as an Observation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoduleFinding {
    /// `Observation/<id>`.
    pub source: String,
    pub date: Option<NaiveDate>,
    pub body_site: Option<String>,
    /// Upper lobe (lingula included); `None` when the site does not say.
    pub upper_lobe: Option<bool>,
    pub center_mm: Option<[f64; 3]>,
    /// Stated mean diameter, mm.
    pub diameter_mm: Option<f64>,
    pub solid_component_mm: Option<f64>,
    pub nodule_type: Option<NoduleType>,
    pub spiculated: Option<bool>,
    /// Parts of the Observation that were present but not usable, and why.
    pub problems: Vec<String>,
}

fn codings(v: &Value) -> impl Iterator<Item = (&str, &str)> {
    v.get("coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c.get("system").and_then(Value::as_str).unwrap_or(""),
                c.get("code").and_then(Value::as_str).unwrap_or("").trim(),
            )
        })
}

fn has_code(v: &Value, system: &str, code: &str) -> bool {
    codings(v).any(|(s, c)| s == system && c == code)
}

/// A length in mm from a FHIR Quantity (UCUM `mm` or `cm`).
fn length_mm(q: &Value) -> Result<f64, String> {
    let unit = q
        .get("code")
        .or_else(|| q.get("unit"))
        .and_then(Value::as_str)
        .map(str::trim);
    let scale = match unit {
        Some("mm") => 1.0,
        Some("cm") => 10.0,
        other => return Err(format!("unit {other:?} is not mm or cm")),
    };
    if q.get("comparator").is_some() {
        return Err("a value with a comparator is not a measurement".into());
    }
    match q.get("value").and_then(Value::as_f64) {
        Some(v) if v.is_finite() => Ok(v * scale),
        _ => Err("no numeric value".into()),
    }
}

/// A lung nodule finding, if `obs` (an Observation as JSON) is one.
/// `source` names it (`Observation/<id>`). Not about nodules → `None`.
pub fn parse_finding(obs: &Value, source: &str) -> Option<NoduleFinding> {
    let code = obs.get("code")?;
    let coded =
        has_code(code, SNOMED, SNOMED_PULMONARY_NODULE) || has_code(code, NODULE_SYSTEM, "nodule");
    let status = obs.get("status").and_then(Value::as_str).unwrap_or("");
    if !coded || !matches!(status, "final" | "amended" | "corrected") {
        return None;
    }
    let mut f = NoduleFinding {
        source: source.to_owned(),
        date: effective_day(obs),
        body_site: None,
        upper_lobe: None,
        center_mm: None,
        diameter_mm: None,
        solid_component_mm: None,
        nodule_type: None,
        spiculated: None,
        problems: Vec::new(),
    };
    if let Some(site) = obs.get("bodySite") {
        let codes: Vec<(&str, &str)> = codings(site).collect();
        let display = site
            .get("text")
            .and_then(Value::as_str)
            .or_else(|| {
                site.get("coding")
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find_map(|c| c.get("display")?.as_str()))
            })
            .map(str::to_owned);
        let lower = display.as_deref().unwrap_or("").to_ascii_lowercase();
        f.upper_lobe = if codes
            .iter()
            .any(|(s, c)| *s == SNOMED && UPPER_LOBES.contains(c))
            || lower.contains("upper")
            || lower.contains("lingula")
        {
            Some(true)
        } else if codes
            .iter()
            .any(|(s, c)| *s == SNOMED && OTHER_LOBES.contains(c))
            || lower.contains("lower")
            || lower.contains("middle")
        {
            Some(false)
        } else {
            None
        };
        f.body_site = display.or_else(|| {
            codes.iter().find_map(|(s, c)| {
                let name = match (*s, *c) {
                    (SNOMED, "45653009") => "Right upper lobe",
                    (SNOMED, "44714003") => "Left upper lobe",
                    (SNOMED, "72481006") => "Right middle lobe",
                    (SNOMED, "266005") => "Right lower lobe",
                    (SNOMED, "90572001") => "Left lower lobe",
                    _ => return None,
                };
                Some(name.to_owned())
            })
        });
    }
    let mut center = [None; 3];
    let (mut long, mut short) = (None, None);
    for comp in obs
        .get("component")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(code) = comp.get("code") else {
            continue;
        };
        let Some(name) = codings(code).find_map(|(s, c)| (s == NODULE_SYSTEM).then_some(c)) else {
            continue;
        };
        let mut length = |what: &str| match comp.get("valueQuantity").map(length_mm) {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                f.problems.push(format!("component {what}: {e}"));
                None
            }
            None => {
                f.problems
                    .push(format!("component {what}: no valueQuantity"));
                None
            }
        };
        match name {
            "center-x" => center[0] = length(name),
            "center-y" => center[1] = length(name),
            "center-z" => center[2] = length(name),
            "diameter" => f.diameter_mm = length(name),
            "long-axis" => long = length(name),
            "short-axis" => short = length(name),
            "solid-component-diameter" => f.solid_component_mm = length(name),
            "type" => {
                let t = comp
                    .get("valueCodeableConcept")
                    .and_then(|v| codings(v).find_map(|(s, c)| (s == NODULE_SYSTEM).then_some(c)));
                f.nodule_type = match t {
                    Some("solid") => Some(NoduleType::Solid),
                    Some("part-solid") => Some(NoduleType::PartSolid),
                    Some("ground-glass") | Some("non-solid") => Some(NoduleType::NonSolid),
                    other => {
                        f.problems.push(format!(
                            "component type: {other:?} is not solid, part-solid or ground-glass"
                        ));
                        None
                    }
                };
            }
            "spiculation" => match comp.get("valueBoolean").and_then(Value::as_bool) {
                Some(b) => f.spiculated = Some(b),
                None => f
                    .problems
                    .push("component spiculation: no valueBoolean".into()),
            },
            _ => {}
        }
    }
    match center {
        [Some(x), Some(y), Some(z)] => f.center_mm = Some([x, y, z]),
        [None, None, None] => {}
        _ => f
            .problems
            .push("the centre needs all of center-x, center-y and center-z".into()),
    }
    if f.diameter_mm.is_none() {
        f.diameter_mm = match (long, short) {
            (Some(l), Some(s)) => Some((l + s) / 2.0),
            (Some(l), None) => Some(l),
            _ => match obs.get("valueQuantity").map(length_mm) {
                Some(Ok(v)) => Some(v),
                Some(Err(e)) => {
                    f.problems.push(format!("valueQuantity: {e}"));
                    None
                }
                None => None,
            },
        };
    }
    if let Some(d) = f.diameter_mm
        && !(d > 0.0 && d <= 300.0)
    {
        f.problems
            .push(format!("the diameter {d} mm is not a nodule size"));
        f.diameter_mm = None;
    }
    Some(f)
}

fn effective_day(obs: &Value) -> Option<NaiveDate> {
    let s = obs
        .get("effectiveDateTime")
        .or_else(|| obs.get("effectivePeriod").and_then(|p| p.get("start")))
        .or_else(|| obs.get("issued"))
        .and_then(Value::as_str)?;
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

/// Whether `obs` references `study` in `derivedFrom` or `partOf`.
fn references(obs: &Value, study: &SourceRef) -> bool {
    ["derivedFrom", "partOf"].iter().any(|k| {
        obs.get(*k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("reference").and_then(Value::as_str))
            .any(|r| study.matches_reference(r))
    })
}

/// The patient's latest chest CT with its nodule findings.
#[derive(Debug, Clone)]
pub struct ChestCt {
    pub study: CtStudy,
    /// `ImagingStudy.started` as recorded.
    pub started: Option<String>,
    /// The DICOM StudyInstanceUID.
    pub study_uid: Option<String>,
    /// SEG series of the study.
    pub seg_series: Vec<String>,
    /// SR series of the study: not read yet (TID 1500), reported as such.
    pub sr_series: Vec<String>,
    /// Nodule Observations derived from it, in record order.
    pub findings: Vec<NoduleFinding>,
}

fn mentions_chest(text: Option<&str>) -> bool {
    text.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        CHEST_WORDS.iter().any(|w| t.contains(w))
    })
}

fn is_chest(study: &Value) -> bool {
    fn text(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str)
    }
    if mentions_chest(text(study.get("description"))) {
        return true;
    }
    let concept_mentions = |c: &Value| {
        mentions_chest(text(c.get("text")))
            || c.get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|cd| mentions_chest(text(cd.get("display"))))
    };
    if study
        .get("procedureCode")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(concept_mentions)
    {
        return true;
    }
    study
        .get("series")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|s| {
            mentions_chest(text(s.get("description")))
                || s.get("bodySite").is_some_and(|b| {
                    let code = text(b.get("code")).unwrap_or("").trim();
                    let system = text(b.get("system")).unwrap_or("");
                    (system == SNOMED && CHEST_SITES.contains(&code))
                        || code.eq_ignore_ascii_case("CHEST")
                        || mentions_chest(text(b.get("display")))
                })
        })
}

/// The newest chest CT (see the module docs), or `None` with nothing to
/// analyse.
pub fn latest_chest_ct(
    record: &PatientRecord,
    index_date: NaiveDate,
    default_base: Option<&DicomWebBase>,
) -> Option<ChestCt> {
    let observations: Vec<(String, Value)> = record
        .observations
        .iter()
        .enumerate()
        .filter_map(|(i, o)| {
            let source = SourceRef::new("Observation", o.id.as_deref(), i).to_string();
            serde_json::to_value(o).ok().map(|v| (source, v))
        })
        .collect();
    let studies: Vec<(SourceRef, Value)> = record
        .imaging_studies
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let source = SourceRef::new("ImagingStudy", s.id.as_deref(), i);
            serde_json::to_value(s).ok().map(|v| (source, v))
        })
        .collect();
    for ct in ct_studies(record, index_date, default_base) {
        if ct.date.is_some_and(|d| d > index_date) {
            continue;
        }
        let Some((source, study)) = studies.iter().find(|(s, _)| s.as_str() == ct.study) else {
            continue;
        };
        let findings: Vec<NoduleFinding> = observations
            .iter()
            .filter(|(_, o)| references(o, source))
            .filter_map(|(src, o)| parse_finding(o, src))
            .filter(|f| f.date.is_none_or(|d| d <= index_date))
            .collect();
        let series = study.get("series").and_then(Value::as_array);
        let of_modality = |modality: &str| -> Vec<String> {
            series
                .into_iter()
                .flatten()
                .filter(|s| {
                    s.get("modality")
                        .and_then(|m| m.get("code"))
                        .and_then(Value::as_str)
                        .is_some_and(|c| c.trim() == modality)
                })
                .filter_map(|s| s.get("uid").and_then(Value::as_str))
                .map(|u| u.trim().to_owned())
                .collect()
        };
        let seg_series = of_modality("SEG");
        let sr_series = of_modality("SR");
        if !(is_chest(study) || !findings.is_empty() || !seg_series.is_empty()) {
            continue;
        }
        let study_uid = ct.series.as_ref().map(|s| s.study_uid.to_string());
        return Some(ChestCt {
            started: study
                .get("started")
                .and_then(Value::as_str)
                .map(str::to_owned),
            study_uid,
            seg_series,
            sr_series,
            findings,
            study: ct,
        });
    }
    None
}

impl ChestCt {
    /// The job for this study; `Err` says why it cannot be analysed (no
    /// DICOMweb location). Point findings get keys `f<i>` in findings order.
    pub fn job(&self, patch: PatchConfig) -> Result<NoduleJob, String> {
        let series = self.study.series.as_ref().ok_or_else(|| {
            self.study
                .problem
                .clone()
                .unwrap_or_else(|| "its DICOMweb location is unknown".into())
        })?;
        Ok(NoduleJob {
            dicomweb_base: series.base_url.to_string(),
            study_uid: series.study_uid.to_string(),
            series_uid: series.series_uid.to_string(),
            seg_series: self.seg_series.clone(),
            points: self
                .findings
                .iter()
                .enumerate()
                .filter_map(|(i, f)| {
                    Some(PointFinding {
                        key: point_key(i),
                        center_mm: f.center_mm?,
                        diameter_mm: f.diameter_mm,
                        ground_glass: f.nodule_type == Some(NoduleType::NonSolid),
                    })
                })
                .collect(),
            patch,
        })
    }
}

/// The job key of the `i`-th finding.
pub fn point_key(i: usize) -> String {
    format!("f{i}")
}

/// What the imaging cache said about a chest CT's nodules.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum NoduleImagingStatus {
    Ready {
        result: Box<NoduleImagingResult>,
    },
    Queued {
        job_id: Uuid,
        already_queued: bool,
    },
    /// The pipeline ran and cannot analyse this series.
    NotMeasurable {
        reason: String,
    },
    /// Cannot be analysed as recorded (no endpoint, PACS not allowed).
    NotAnalysable {
        reason: String,
    },
    /// The cache could not be asked (database down or slow, offline).
    Unavailable {
        reason: String,
    },
}

impl ImagingCache {
    /// Looks the job's result up and enqueues the job when it is missing,
    /// within the hook's imaging budget. Never fails: problems are statuses.
    #[tracing::instrument(name = "Looking up lung nodule measurements", skip_all)]
    pub async fn nodules(&self, job: &NoduleJob) -> NoduleImagingStatus {
        match job.series_ref() {
            Ok(s) if !self.client.is_allowed(&s.base_url) => {
                return NoduleImagingStatus::NotAnalysable {
                    reason: format!("its PACS {} is not on the DICOMweb allow-list", s.base_url),
                };
            }
            Ok(_) => {}
            Err(e) => {
                return NoduleImagingStatus::NotAnalysable {
                    reason: e.to_string(),
                };
            }
        }
        let budget: Duration = self.budget;
        match tokio::time::timeout(budget, self.nodules_lookup(job)).await {
            Ok(s) => s,
            Err(_) => {
                tracing::warn!(
                    budget_ms = budget.as_millis() as u64,
                    "Imaging cache did not answer within the hook budget"
                );
                NoduleImagingStatus::Unavailable {
                    reason: format!(
                        "the imaging cache did not answer within {} ms",
                        budget.as_millis()
                    ),
                }
            }
        }
    }

    async fn nodules_lookup(&self, job: &NoduleJob) -> NoduleImagingStatus {
        let parsed = match self
            .cached::<NoduleImagingResult>(&job.series_uid, PIPELINE_VERSION, &job.result_kind())
            .await
        {
            Ok(parsed) => parsed,
            Err(reason) => return NoduleImagingStatus::Unavailable { reason },
        };
        match parsed {
            Some(r) => match &r.outcome {
                NoduleImagingOutcome::Measured { .. } => NoduleImagingStatus::Ready {
                    result: Box::new(r),
                },
                NoduleImagingOutcome::NotMeasurable { reason } => {
                    NoduleImagingStatus::NotMeasurable {
                        reason: reason.clone(),
                    }
                }
            },
            None => match self.request(&job.to_new_job(self.max_attempts)).await {
                Ok((job_id, already_queued)) => NoduleImagingStatus::Queued {
                    job_id,
                    already_queued,
                },
                Err(reason) => NoduleImagingStatus::Unavailable { reason },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obs(extra: Value) -> Value {
        let mut o = json!({
            "resourceType": "Observation", "id": "n1", "status": "final",
            "code": {"coding": [{"system": SNOMED, "code": SNOMED_PULMONARY_NODULE, "display": "Pulmonary nodule"}]},
            "subject": {"reference": "Patient/p"},
            "effectiveDateTime": "2026-10-15",
            "derivedFrom": [{"reference": "ImagingStudy/ct1"}]
        });
        o.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        o
    }

    fn comp(code: &str, value: Value) -> Value {
        let mut c = json!({"code": {"coding": [{"system": NODULE_SYSTEM, "code": code}]}});
        c.as_object_mut()
            .unwrap()
            .extend(value.as_object().unwrap().clone());
        c
    }

    fn mm(v: f64) -> Value {
        json!({"valueQuantity": {"value": v, "unit": "mm", "system": "http://unitsofmeasure.org", "code": "mm"}})
    }

    #[test]
    fn a_full_finding_is_parsed_with_lobe_centre_size_type_and_spiculation() {
        let o = obs(json!({
            "bodySite": {"coding": [{"system": SNOMED, "code": "45653009", "display": "Right upper lobe"}]},
            "component": [
                comp("center-x", mm(-21.9)),
                comp("center-y", mm(-120.5)),
                comp("center-z", json!({"valueQuantity": {"value": -61.15, "unit": "cm", "code": "cm"}})),
                comp("long-axis", mm(16.0)),
                comp("short-axis", mm(12.0)),
                comp("type", json!({"valueCodeableConcept": {"coding": [{"system": NODULE_SYSTEM, "code": "part-solid"}]}})),
                comp("solid-component-diameter", mm(7.0)),
                comp("spiculation", json!({"valueBoolean": true})),
            ]
        }));
        let f = parse_finding(&o, "Observation/n1").unwrap();
        assert_eq!(f.body_site.as_deref(), Some("Right upper lobe"));
        assert_eq!(f.upper_lobe, Some(true));
        let c = f.center_mm.unwrap();
        assert_eq!((c[0], c[1]), (-21.9, -120.5));
        assert!((c[2] + 611.5).abs() < 1e-9, "cm converted: {c:?}");
        assert_eq!(f.diameter_mm, Some(14.0), "mean of long and short axis");
        assert_eq!(f.nodule_type, Some(NoduleType::PartSolid));
        assert_eq!(f.solid_component_mm, Some(7.0));
        assert_eq!(f.spiculated, Some(true));
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert_eq!(f.date, NaiveDate::from_ymd_opt(2026, 10, 15));
    }

    #[test]
    fn other_observations_and_unusable_parts_are_told_apart() {
        // Not a nodule code, or not final: not a finding.
        let weight = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}});
        assert!(parse_finding(&weight, "Observation/w").is_none());
        assert!(parse_finding(&obs(json!({"status": "preliminary"})), "x").is_none());
        assert!(parse_finding(&obs(json!({"status": "entered-in-error"})), "x").is_none());

        let f = parse_finding(
            &obs(json!({
                "bodySite": {"text": "left lower lobe"},
                "valueQuantity": {"value": 0.9, "unit": "cm"},
                "component": [
                    comp("center-x", mm(1.0)),
                    comp("center-y", json!({"valueQuantity": {"value": 2.0, "unit": "in"}})),
                    comp("type", json!({"valueCodeableConcept": {"coding": [{"system": NODULE_SYSTEM, "code": "calcified"}]}})),
                ]
            })),
            "Observation/n1",
        )
        .unwrap();
        assert_eq!(f.upper_lobe, Some(false));
        assert_eq!(f.diameter_mm, Some(9.0), "valueQuantity in cm");
        assert_eq!(f.center_mm, None, "an incomplete centre is not used");
        assert_eq!(f.nodule_type, None);
        let problems = f.problems.join("; ");
        assert!(problems.contains("center-y: unit"), "{problems}");
        assert!(problems.contains("\"calcified\""), "{problems}");
        assert!(problems.contains("needs all of center-x"), "{problems}");

        let silly = parse_finding(
            &obs(json!({"valueQuantity": {"value": -3.0, "unit": "mm"}})),
            "x",
        )
        .unwrap();
        assert_eq!(silly.diameter_mm, None);
        assert!(silly.problems[0].contains("not a nodule size"));
        // A lobe given by code alone is named.
        let coded = parse_finding(
            &obs(json!({"bodySite": {"coding": [{"system": SNOMED, "code": "44714003"}]}})),
            "x",
        )
        .unwrap();
        assert_eq!(coded.body_site.as_deref(), Some("Left upper lobe"));
        assert_eq!(coded.upper_lobe, Some(true));
        // Our own code works as well as SNOMED CT.
        let ours = obs(json!({"code": {"coding": [{"system": NODULE_SYSTEM, "code": "nodule"}]}}));
        assert!(parse_finding(&ours, "x").is_some());
    }

    fn record(resources: Vec<Value>) -> PatientRecord {
        let mut r = PatientRecord::default();
        for (i, v) in resources.into_iter().enumerate() {
            r.add_resource(&format!("test[{i}]"), v);
        }
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        r
    }

    fn study(id: &str, started: &str, description: Option<&str>, series: Value) -> Value {
        let mut s = json!({
            "resourceType": "ImagingStudy", "id": id, "status": "available",
            "subject": {"reference": "Patient/p"},
            "identifier": [{"system": "urn:dicom:uid", "value": format!("urn:oid:1.2.{}", id.len())}],
            "started": started,
            "contained": [{"resourceType": "Endpoint", "id": "pacs", "status": "active",
                "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "dicom-wado-rs"},
                "payloadType": [{"text": "DICOM"}],
                "address": "http://127.0.0.1:8042/dicom-web"}],
            "endpoint": [{"reference": "#pacs"}],
            "series": series
        });
        if let Some(d) = description {
            s["description"] = json!(d);
        }
        s
    }

    #[test]
    fn the_latest_chest_ct_is_chosen_with_its_seg_series_and_findings() {
        let ct = |uid: &str| json!({"uid": uid, "modality": {"code": "CT"}});
        let r = record(vec![
            study(
                "old",
                "2026-01-10",
                Some("CT chest"),
                json!([ct("1.2.3.1")]),
            ),
            study(
                "abd",
                "2026-11-01",
                Some("CT abdomen"),
                json!([ct("1.2.3.2")]),
            ),
            study(
                "future",
                "2026-12-24",
                Some("CT chest"),
                json!([ct("1.2.3.9")]),
            ),
            study(
                "new",
                "2026-10-15T09:30:00Z",
                None,
                json!([
                    {"uid": "1.2.3.3", "modality": {"code": "CT"}, "bodySite": {"system": SNOMED, "code": "51185008"}},
                    {"uid": "1.2.3.4", "modality": {"code": "SEG"}},
                    {"uid": "1.2.3.5", "modality": {"code": "SR"}}
                ]),
            ),
            obs(json!({"id": "n-new", "derivedFrom": [{"reference": "ImagingStudy/new"}]})),
            obs(json!({"id": "n-old", "derivedFrom": [{"reference": "ImagingStudy/old"}]})),
        ]);
        let index = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let c = latest_chest_ct(&r, index, None).unwrap();
        assert_eq!(
            c.study.study, "ImagingStudy/new",
            "the abdomen CT is not a chest CT"
        );
        assert_eq!(c.study.series_uid.as_deref(), Some("1.2.3.3"));
        assert_eq!(c.seg_series, vec!["1.2.3.4".to_owned()]);
        assert_eq!(c.sr_series, vec!["1.2.3.5".to_owned()]);
        assert_eq!(c.findings.len(), 1);
        assert_eq!(c.findings[0].source, "Observation/n-new");
        assert_eq!(c.started.as_deref(), Some("2026-10-15T09:30:00Z"));
        let job = c.job(PatchConfig::default()).unwrap();
        assert_eq!(job.seg_series, vec!["1.2.3.4".to_owned()]);
        assert!(job.points.is_empty(), "the finding has no coordinates");

        // Only an abdominal CT: no chest CT.
        let r = record(vec![study(
            "abd",
            "2026-11-01",
            Some("CT abdomen"),
            json!([ct("1.2.3.2")]),
        )]);
        assert!(latest_chest_ct(&r, index, None).is_none());
        // An abdominal CT with a nodule finding recorded against it counts.
        let r = record(vec![
            study(
                "abd",
                "2026-11-01",
                Some("CT abdomen"),
                json!([ct("1.2.3.2")]),
            ),
            obs(json!({"derivedFrom": [{"reference": "ImagingStudy/abd"}],
                "component": [comp("center-x", mm(1.0)), comp("center-y", mm(2.0)), comp("center-z", mm(3.0))]})),
        ]);
        let c = latest_chest_ct(&r, index, None).unwrap();
        let job = c.job(PatchConfig::default()).unwrap();
        assert_eq!(job.points.len(), 1);
        assert_eq!(job.points[0].key, "f0");
        assert_eq!(job.points[0].center_mm, [1.0, 2.0, 3.0]);
    }
}
