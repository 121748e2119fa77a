//! The hook side of CT body composition: which CT studies a patient has,
//! where their L3 slice is, and whether the imaging cache already holds the
//! measurement — enqueueing a [`super::jobs`] job when it does not.
//!
//! Nothing here touches pixels. Per CT study the hook costs at most one
//! indexed read (`imaging_results` primary key) and, on a miss, one insert
//! into `jobs`; all of it under one time budget
//! (`imaging.hook_budget_ms`). A database that is down or slow makes the
//! imaging modality "unavailable" for this hook, never fails the hook.
//!
//! # Where L3 comes from
//! An Observation coded `https://oncohooks.invalid/fhir/CodeSystem/body-composition|l3-slice`
//! ([`L3_SLICE_CODE`]) whose `derivedFrom` references the ImagingStudy, with
//! status final/amended/corrected, dated on or before the index date, and
//! either
//! * `valueQuantity` in `mm` (UCUM; `cm` is converted): the patient-space z
//!   of the L3 slice (DICOM LPS, the third component of
//!   ImagePositionPatient), or
//! * `valueString`: the SOPInstanceUID of the L3 slice (a key image).
//!
//! The latest such Observation per study wins. Without one, the study is not
//! analysed: guessing a level would give plausible but wrong muscle areas.
//!
//! # Which series
//! One series per study: the CT series listing the L3 SOPInstanceUID among
//! its `instance`s when the position is given that way, else the first CT
//! series of the ImagingStudy. A study with several reconstructions should
//! name the slice by SOPInstanceUID.

use std::time::Duration;

use chrono::NaiveDate;
use fhir_sdk::r4b::codes::{ImagingStudyStatus, ObservationStatus};
use fhir_sdk::r4b::resources::{ImagingStudy, Observation, ObservationEffective, ObservationValue};
use serde::Serialize;
use uuid::Uuid;

use super::dicomweb::fhir::series_refs;
use super::dicomweb::{DicomWebBase, DicomWebClient, DicomWebError, SeriesRef};
use super::jobs::{
    BodyCompositionJob, BodyCompositionOutcome, BodyCompositionResult, PIPELINE_VERSION,
    RESULT_KIND, SliceLocator,
};
use crate::clinical::codes::BODY_COMPOSITION;
use crate::clinical::dates;
use crate::clinical::provenance::SourceRef;
use crate::config::ImagingSettings;
use crate::fhir::PatientRecord;
use crate::store::{Enqueued, NewJob, Store};

/// Code (in our body-composition code system) of the Observation that says
/// where L3 is in a CT study.
pub const L3_SLICE_CODE: &str = "l3-slice";

/// A CT study of the patient, before any database work.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CtStudy {
    /// `ImagingStudy/<id>`.
    pub study: String,
    /// The series chosen for body composition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_uid: Option<String>,
    /// `series.started`, else `ImagingStudy.started`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<NaiveDate>,
    #[serde(skip)]
    pub series: Option<SeriesRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locator: Option<SliceLocator>,
    /// The Observation that gave the L3 position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locator_source: Option<String>,
    /// Why the series cannot be located (no endpoint, no study UID…).
    #[serde(skip)]
    pub problem: Option<String>,
}

/// What happened to one CT study in this hook.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum CtStatus {
    /// The cached measurement is used.
    Used { result: Box<BodyCompositionResult> },
    /// Analysis enqueued now (or already waiting): the next hook uses it.
    Queued { job_id: Uuid, already_queued: bool },
    /// The pipeline ran and cannot measure this series.
    NotMeasurable { reason: String },
    /// A body-composition Observation at least as recent exists; it wins.
    Superseded,
    /// Not relevant on the index date (after it, older than the look-back,
    /// undated): not looked up.
    NotCurrent { reason: String },
    /// Cannot be analysed as recorded (no L3 position, no endpoint, PACS not
    /// on the allow-list).
    NotAnalysable { reason: String },
    /// The cache could not be asked (database down or slow, offline scoring).
    Unavailable { reason: String },
}

/// One CT study and its status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CtFinding {
    #[serde(flatten)]
    pub study: CtStudy,
    #[serde(flatten)]
    pub status: CtStatus,
}

/// The clinical context the hook decides with.
#[derive(Debug, Clone, Copy)]
pub struct CtRules {
    pub index_date: NaiveDate,
    /// CTs older than this (days before the index date) are not used —
    /// the timeline's `body_composition_lookback_days`.
    pub lookback_days: u32,
    /// Date of the newest body-composition Observation (SMI or SMA), if any.
    pub observed_until: Option<NaiveDate>,
}

// --------------------------------------------------------------- FHIR side

/// The patient's CT studies (ImagingStudies with at least one CT series),
/// newest first, with the series to measure and the recorded L3 position.
pub fn ct_studies(
    record: &PatientRecord,
    index_date: NaiveDate,
    default_base: Option<&DicomWebBase>,
) -> Vec<CtStudy> {
    let mut out = Vec::new();
    for (position, study) in record.imaging_studies.iter().enumerate() {
        if matches!(
            study.status,
            ImagingStudyStatus::Cancelled | ImagingStudyStatus::EnteredInError
        ) {
            continue;
        }
        let is_ct = |code: Option<&str>| code.is_some_and(|c| c.trim() == "CT");
        let ct_series: Vec<_> = study
            .series
            .iter()
            .flatten()
            .filter(|s| is_ct(s.modality.code.as_deref()))
            .collect();
        if ct_series.is_empty() {
            continue;
        }
        let source = SourceRef::new("ImagingStudy", study.id.as_deref(), position);
        let located = l3_position(&record.observations, &source, index_date);
        let chosen = match located.as_ref().map(|(l, _)| l) {
            Some(SliceLocator::SopInstanceUid { uid }) => ct_series
                .iter()
                .find(|s| {
                    s.instance
                        .iter()
                        .flatten()
                        .any(|i| i.uid.trim() == uid.trim())
                })
                .unwrap_or(&ct_series[0]),
            _ => &ct_series[0],
        };
        let date = chosen
            .started
            .as_ref()
            .or(study.started.as_ref())
            .and_then(|d| dates::exact_day(d).ok());
        let (series, problem) = match locate_series(study, &chosen.uid, default_base) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let (locator, locator_source) = match located {
            Some((l, src)) => (Some(l), Some(src)),
            None => (None, None),
        };
        out.push(CtStudy {
            study: source.to_string(),
            series_uid: Some(chosen.uid.trim().to_owned()),
            date,
            series,
            locator,
            locator_source,
            problem,
        });
    }
    // Newest first; undated last.
    out.sort_by_key(|s| std::cmp::Reverse(s.date));
    out
}

/// The DICOMweb location of one series of `study`. Non-contained Endpoint
/// references are not resolved (we never fetch Endpoints inside a hook).
fn locate_series(
    study: &ImagingStudy,
    series_uid: &str,
    default_base: Option<&DicomWebBase>,
) -> Result<SeriesRef, DicomWebError> {
    let refs = series_refs(study, &|_| None, default_base)?;
    refs.into_iter()
        .map(|s| s.series)
        .find(|s| s.series_uid.as_str() == series_uid.trim())
        .ok_or_else(|| DicomWebError::NoEndpoint {
            series_uid: series_uid.trim().to_owned(),
        })
}

/// The latest usable `l3-slice` Observation derived from `study`.
fn l3_position(
    observations: &[Observation],
    study: &SourceRef,
    index_date: NaiveDate,
) -> Option<(SliceLocator, String)> {
    let mut best: Option<(NaiveDate, SliceLocator, String)> = None;
    for (position, obs) in observations.iter().enumerate() {
        let coded = obs.code.coding.iter().flatten().any(|c| {
            c.system.as_deref() == Some(BODY_COMPOSITION)
                && c.code.as_deref().map(str::trim) == Some(L3_SLICE_CODE)
        });
        if !coded
            || !matches!(
                obs.status,
                ObservationStatus::Final
                    | ObservationStatus::Amended
                    | ObservationStatus::Corrected
            )
        {
            continue;
        }
        let derived = obs.derived_from.iter().flatten().any(|r| {
            r.reference
                .as_deref()
                .is_some_and(|r| study.matches_reference(r))
        });
        let Some(date) = effective_day(obs) else {
            continue;
        };
        if !derived || date > index_date {
            continue;
        }
        let locator = match &obs.value {
            Some(ObservationValue::Quantity(q)) => {
                let unit = q.code.as_deref().or(q.unit.as_deref()).map(str::trim);
                let scale = match unit {
                    Some("mm") => 1.0,
                    Some("cm") => 10.0,
                    _ => continue,
                };
                match (q.value, &q.comparator) {
                    (Some(v), None) if v.is_finite() => SliceLocator::PatientZ { z_mm: v * scale },
                    _ => continue,
                }
            }
            Some(ObservationValue::String(uid)) => SliceLocator::SopInstanceUid {
                uid: uid.trim().to_owned(),
            },
            _ => continue,
        };
        if locator.validate().is_err() {
            continue;
        }
        let source = SourceRef::new("Observation", obs.id.as_deref(), position).to_string();
        let newer = best
            .as_ref()
            .is_none_or(|(d, _, s)| (date, &source) > (*d, s));
        if newer {
            best = Some((date, locator, source));
        }
    }
    best.map(|(_, l, s)| (l, s))
}

fn effective_day(obs: &Observation) -> Option<NaiveDate> {
    match &obs.effective {
        Some(ObservationEffective::DateTime(dt)) => dates::exact_day(dt).ok(),
        Some(ObservationEffective::Period(p)) => {
            p.start.as_ref().and_then(|s| dates::exact_day(s).ok())
        }
        Some(ObservationEffective::Instant(i)) => dates::instant_date(i),
        _ => obs.issued.as_ref().and_then(dates::instant_date),
    }
}

// ------------------------------------------------------------------ triage

/// What can be decided without the database: `Ok` with the job to look up,
/// or the final status.
fn triage(
    study: &CtStudy,
    rules: &CtRules,
    allowed: &dyn Fn(&DicomWebBase) -> bool,
) -> Result<BodyCompositionJob, CtStatus> {
    let Some(date) = study.date else {
        return Err(CtStatus::NotCurrent {
            reason: "the ImagingStudy has no start date".into(),
        });
    };
    if date > rules.index_date {
        return Err(CtStatus::NotCurrent {
            reason: "acquired after the index date".into(),
        });
    }
    if (rules.index_date - date).num_days() > i64::from(rules.lookback_days) {
        return Err(CtStatus::NotCurrent {
            reason: format!("older than {} days", rules.lookback_days),
        });
    }
    if rules.observed_until.is_some_and(|o| o >= date) {
        return Err(CtStatus::Superseded);
    }
    let Some(locator) = &study.locator else {
        return Err(CtStatus::NotAnalysable {
            reason: format!(
                "no L3 slice position is recorded for it (an Observation {BODY_COMPOSITION}|{L3_SLICE_CODE} derived from the study)"
            ),
        });
    };
    let Some(series) = &study.series else {
        return Err(CtStatus::NotAnalysable {
            reason: study
                .problem
                .clone()
                .unwrap_or_else(|| "its DICOMweb location is unknown".into()),
        });
    };
    if !allowed(&series.base_url) {
        return Err(CtStatus::NotAnalysable {
            reason: format!(
                "its PACS {} is not on the DICOMweb allow-list",
                series.base_url
            ),
        });
    }
    Ok(BodyCompositionJob::new(series, locator.clone()))
}

/// Statuses without a cache (offline `score`): what would be looked up is
/// "unavailable".
pub fn resolve_offline(studies: Vec<CtStudy>, rules: &CtRules) -> Vec<CtFinding> {
    studies
        .into_iter()
        .map(|study| {
            let status = match triage(&study, rules, &|_| true) {
                Ok(_) => CtStatus::Unavailable {
                    reason: "no imaging cache (offline scoring)".into(),
                },
                Err(status) => status,
            };
            CtFinding { study, status }
        })
        .collect()
}

// ------------------------------------------------------------------- cache

/// The hook's handle on the imaging cache and job queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ImagingCache {
    // `pub(super)`: the lung-nodule look-up (`findings`) uses the same
    // store, allow-list, attempts and budget.
    pub(super) store: Store,
    /// For the allow-list and the default base only: the hook never fetches.
    pub(super) client: DicomWebClient,
    pub(super) max_attempts: i32,
    pub(super) budget: Duration,
    max_studies: usize,
}

impl ImagingCache {
    pub fn new(store: Store, settings: &ImagingSettings) -> Result<Self, DicomWebError> {
        Ok(Self {
            store,
            client: DicomWebClient::new(&settings.dicomweb.client)?,
            max_attempts: settings.max_attempts.max(1),
            budget: Duration::from_millis(settings.hook_budget_ms.max(1)),
            max_studies: settings.max_studies_per_hook,
        })
    }

    /// The configured default DICOMweb base (for ImagingStudies without an
    /// endpoint).
    /// The cached result of a series for a pipeline version and result kind,
    /// or, when the store cannot be read, the reason a card shows. An entry
    /// that no longer parses counts as absent: recompute rather than trust
    /// an entry we cannot read.
    pub(super) async fn cached<T: serde::de::DeserializeOwned>(
        &self,
        series_uid: &str,
        pipeline_version: &str,
        kind: &str,
    ) -> Result<Option<T>, String> {
        let cached = self
            .store
            .get_imaging_result(series_uid, pipeline_version, kind)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, kind, "Imaging cache lookup failed");
                "the imaging cache is unavailable".to_owned()
            })?;
        Ok(cached.and_then(|v| {
            serde_json::from_value::<T>(v)
                .map_err(|e| {
                    tracing::warn!(error = %e, kind, "Unreadable imaging cache entry; analysing again")
                })
                .ok()
        }))
    }

    /// Puts an imaging job on the queue: its id and whether an unfinished
    /// job with the same key was already there, or, when the queue cannot be
    /// reached, the reason a card shows.
    pub(super) async fn request(&self, job: &NewJob) -> Result<(Uuid, bool), String> {
        match self.store.enqueue(job).await {
            Ok(Enqueued::New(job_id)) => {
                tracing::info!(%job_id, kind = %job.kind, "Imaging job enqueued");
                Ok((job_id, false))
            }
            Ok(Enqueued::AlreadyQueued(job_id)) => Ok((job_id, true)),
            Err(e) => {
                tracing::warn!(error = %e, kind = %job.kind, "Enqueueing an imaging job failed");
                Err("the imaging job queue is unavailable".into())
            }
        }
    }

    pub fn default_base(&self) -> Option<&DicomWebBase> {
        self.client.default_base()
    }

    /// Looks each current CT study up and enqueues what is missing, within
    /// the hook budget. Never fails: problems become statuses (and a log
    /// line without patient data).
    #[tracing::instrument(name = "Looking up CT body composition", skip_all)]
    pub async fn resolve(&self, studies: Vec<CtStudy>, rules: &CtRules) -> Vec<CtFinding> {
        let deadline = tokio::time::Instant::now() + self.budget;
        let allowed = |b: &DicomWebBase| self.client.is_allowed(b);
        let mut out = Vec::with_capacity(studies.len());
        let mut looked_up = 0usize;
        for study in studies {
            let status = match triage(&study, rules, &allowed) {
                Err(status) => status,
                Ok(_) if looked_up >= self.max_studies => CtStatus::NotCurrent {
                    reason: format!(
                        "only the {} most recent CT studies are considered",
                        self.max_studies
                    ),
                },
                Ok(job) => {
                    looked_up += 1;
                    match tokio::time::timeout_at(deadline, self.lookup_or_enqueue(&job)).await {
                        Ok(status) => status,
                        Err(_) => {
                            tracing::warn!(
                                budget_ms = self.budget.as_millis() as u64,
                                "Imaging cache did not answer within the hook budget; CT treated as missing"
                            );
                            CtStatus::Unavailable {
                                reason: format!(
                                    "the imaging cache did not answer within {} ms",
                                    self.budget.as_millis()
                                ),
                            }
                        }
                    }
                }
            };
            out.push(CtFinding { study, status });
        }
        out
    }

    async fn lookup_or_enqueue(&self, job: &BodyCompositionJob) -> CtStatus {
        let parsed = match self
            .cached::<BodyCompositionResult>(&job.series_uid, PIPELINE_VERSION, RESULT_KIND)
            .await
        {
            Ok(parsed) => parsed,
            Err(reason) => return CtStatus::Unavailable { reason },
        };
        match parsed {
            Some(r) if r.locator == job.locator => match &r.outcome {
                BodyCompositionOutcome::Measured { .. } => CtStatus::Used {
                    result: Box::new(r),
                },
                BodyCompositionOutcome::NotMeasurable { reason } => CtStatus::NotMeasurable {
                    reason: reason.clone(),
                },
            },
            // Missing, or measured at another L3 position (corrected since).
            _ => match self.request(&job.to_new_job(self.max_attempts)).await {
                Ok((job_id, already_queued)) => CtStatus::Queued {
                    job_id,
                    already_queued,
                },
                Err(reason) => CtStatus::Unavailable { reason },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(resources: Vec<serde_json::Value>) -> PatientRecord {
        let mut r = PatientRecord::default();
        for (i, v) in resources.into_iter().enumerate() {
            r.add_resource(&format!("test[{i}]"), v);
        }
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        r
    }

    fn study(id: &str, started: &str, series: serde_json::Value) -> serde_json::Value {
        json!({
            "resourceType": "ImagingStudy", "id": id, "status": "available",
            "subject": {"reference": "Patient/p"},
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
            "started": started,
            "contained": [{"resourceType": "Endpoint", "id": "pacs", "status": "active",
                "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "dicom-wado-rs"},
                "payloadType": [{"text": "DICOM"}],
                "address": "http://127.0.0.1:8042/dicom-web"}],
            "endpoint": [{"reference": "#pacs"}],
            "series": series
        })
    }

    fn l3(id: &str, study: &str, date: &str, value: serde_json::Value) -> serde_json::Value {
        let mut o = json!({
            "resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": BODY_COMPOSITION, "code": L3_SLICE_CODE}]},
            "subject": {"reference": "Patient/p"},
            "effectiveDateTime": date,
            "derivedFrom": [{"reference": study}]
        });
        o.as_object_mut()
            .unwrap()
            .extend(value.as_object().unwrap().clone());
        o
    }

    fn rules() -> CtRules {
        CtRules {
            index_date: NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
            lookback_days: 90,
            observed_until: None,
        }
    }

    #[test]
    fn ct_studies_pick_the_series_and_the_latest_l3_position() {
        let series = json!([
            {"uid": "1.2.3.1", "modality": {"code": "CT"}},
            {"uid": "1.2.3.2", "modality": {"code": "CT"},
             "instance": [{"uid": "1.2.3.2.7", "sopClass": {"code": "1.2.840.10008.5.1.4.1.1.2"}}]},
            {"uid": "1.2.3.3", "modality": {"code": "SEG"}}
        ]);
        let r = record(vec![
            study("ct1", "2026-10-21T10:00:00Z", series),
            study(
                "mr",
                "2026-10-22",
                json!([{"uid": "1.2.9", "modality": {"code": "MR"}}]),
            ),
            l3(
                "old",
                "ImagingStudy/ct1",
                "2026-10-21",
                json!({"valueQuantity": {"value": -150.0, "unit": "mm", "code": "mm"}}),
            ),
            l3(
                "new",
                "https://ehr/fhir/ImagingStudy/ct1",
                "2026-10-23",
                json!({"valueString": "1.2.3.2.7"}),
            ),
            l3(
                "future",
                "ImagingStudy/ct1",
                "2026-12-01",
                json!({"valueQuantity": {"value": -1.0, "unit": "mm"}}),
            ),
            l3(
                "other",
                "ImagingStudy/xx",
                "2026-10-24",
                json!({"valueQuantity": {"value": -2.0, "unit": "mm"}}),
            ),
        ]);
        let found = ct_studies(&r, rules().index_date, None);
        assert_eq!(found.len(), 1, "the MR study is not a CT study");
        let s = &found[0];
        assert_eq!(s.study, "ImagingStudy/ct1");
        assert_eq!(s.locator_source.as_deref(), Some("Observation/new"));
        assert_eq!(
            s.locator,
            Some(SliceLocator::SopInstanceUid {
                uid: "1.2.3.2.7".into()
            })
        );
        assert_eq!(
            s.series_uid.as_deref(),
            Some("1.2.3.2"),
            "the series holding the key image"
        );
        assert_eq!(s.date, NaiveDate::from_ymd_opt(2026, 10, 21));
        let series = s.series.as_ref().unwrap();
        assert_eq!(series.base_url.as_str(), "http://127.0.0.1:8042/dicom-web");
        assert_eq!(series.study_uid.as_str(), "1.2.3");
    }

    #[test]
    fn a_z_position_in_cm_is_converted_and_picks_the_first_ct_series() {
        let r = record(vec![
            study(
                "ct1",
                "2026-10-21",
                json!([{"uid": "1.2.3.1", "modality": {"code": "CT"}}]),
            ),
            l3(
                "z",
                "ImagingStudy/ct1",
                "2026-10-21",
                json!({"valueQuantity": {"value": -15.4, "unit": "cm"}}),
            ),
        ]);
        let s = &ct_studies(&r, rules().index_date, None)[0];
        match s.locator {
            Some(SliceLocator::PatientZ { z_mm }) => assert!((z_mm + 154.0).abs() < 1e-9),
            ref other => panic!("{other:?}"),
        }
        assert_eq!(s.series_uid.as_deref(), Some("1.2.3.1"));
    }

    #[test]
    fn triage_decides_what_needs_the_cache() {
        let r = record(vec![
            study(
                "ct1",
                "2026-10-21",
                json!([{"uid": "1.2.3.1", "modality": {"code": "CT"}}]),
            ),
            l3(
                "z",
                "ImagingStudy/ct1",
                "2026-10-21",
                json!({"valueQuantity": {"value": -154.0, "unit": "mm"}}),
            ),
        ]);
        let s = ct_studies(&r, rules().index_date, None).remove(0);
        let yes = |_: &DicomWebBase| true;
        let job = triage(&s, &rules(), &yes).unwrap();
        assert_eq!(job.series_uid, "1.2.3.1");
        assert_eq!(job.dicomweb_base, "http://127.0.0.1:8042/dicom-web");

        let newer_obs = CtRules {
            observed_until: NaiveDate::from_ymd_opt(2026, 10, 21),
            ..rules()
        };
        assert_eq!(triage(&s, &newer_obs, &yes), Err(CtStatus::Superseded));
        let later = CtRules {
            index_date: NaiveDate::from_ymd_opt(2027, 3, 1).unwrap(),
            ..rules()
        };
        assert!(matches!(
            triage(&s, &later, &yes),
            Err(CtStatus::NotCurrent { .. })
        ));
        let no = |_: &DicomWebBase| false;
        match triage(&s, &rules(), &no) {
            Err(CtStatus::NotAnalysable { reason }) => assert!(reason.contains("allow-list")),
            other => panic!("{other:?}"),
        }
        let mut unlocated = s.clone();
        unlocated.locator = None;
        match triage(&unlocated, &rules(), &yes) {
            Err(CtStatus::NotAnalysable { reason }) => assert!(reason.contains(L3_SLICE_CODE)),
            other => panic!("{other:?}"),
        }
        let offline = resolve_offline(vec![s], &rules());
        assert!(matches!(offline[0].status, CtStatus::Unavailable { .. }));
    }
}
