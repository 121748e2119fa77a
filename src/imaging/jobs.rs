//! The `ct-body-composition` job: fetch one CT series over DICOMweb, find
//! the L3 slice, measure body composition, cache the result.
//!
//! Imaging never runs inside a hook (a series is 50–300 MB; CDS Hooks asks
//! for answers in about 500 ms — DESIGN.md "Latency design", issue 3 item 8).
//! The hook looks the series up in the imaging cache and, when it is
//! missing, enqueues this job ([`super::cache`]); a worker pool
//! ([`run_imaging_workers`], in `serve` or in `oncohooks worker`) runs it:
//!
//! 1. parse the payload ([`BodyCompositionJob`]: DICOMweb base, study and
//!    series UID, [`SliceLocator`]); a payload that does not parse is a
//!    permanent failure;
//! 2. if the cache already holds this series, pipeline version and locator,
//!    stop (delivery is at least once: a job may run twice);
//! 3. WADO-RS retrieval, decoding on a blocking thread as parts arrive
//!    ([`DicomWebClient::retrieve_ct_volume`]);
//! 4. on a blocking thread: locate the slice, segment and measure it
//!    ([`body_composition`] with the [`ThresholdSegmenter`]);
//! 5. `put_imaging_result(series, PIPELINE_VERSION, "body-composition", …)`.
//!
//! Failures are classified ([`classify`]): network trouble, PACS 5xx/404/429
//! and database errors are **retryable** (backoff, then dead letter after
//! `max_attempts`); a series that is not an axial CT, is inconsistent, or
//! does not contain the L3 slice is **permanent**: the job is dead-lettered
//! at once and a `not-measurable` result is cached, so later hooks say why
//! instead of enqueueing the same series again. Configuration problems (PACS
//! not allowed, 401/403) are permanent too but not cached: fixing the
//! configuration must let the next hook try again.
//!
//! The hook's FHIR access token never reaches a job (jobs are persisted);
//! workers authenticate to the PACS with their own configured credential.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::body_composition::{
    AxialSlice, BodyComposition, ThresholdSegmenter, TissueSegmenter, body_composition,
};
use super::dicom::{AssembleOptions, CtVolume, DicomError};
use super::dicomweb::{BearerToken, DicomUid, DicomWebClient, DicomWebError, SeriesRef};
use super::nodule_job::{JOB_KIND as NODULE_JOB_KIND, NoduleWorker};
use crate::config::ImagingSettings;
use crate::store::jobs::{JobHandler, WorkerPoolConfig, WorkerPoolStats, run_workers};
use crate::store::{Job, JobFailure, NewJob, Store};

/// Version of everything that shapes a result: decoding, assembly, slice
/// location, segmentation and measurement. Cached results are keyed by it,
/// so bumping it makes every series be analysed again by the new code.
pub const PIPELINE_VERSION: &str = "ct-bc-1";
/// `jobs.kind` of this job.
pub const JOB_KIND: &str = "ct-body-composition";
/// `imaging_results.kind` of its result.
pub const RESULT_KIND: &str = "body-composition";

// ------------------------------------------------------------ slice locator

/// Which axial slice is "L3" (the middle of the third lumbar vertebra).
///
/// Finding L3 is not done here: no vertebra labelling model exists in this
/// code base, and guessing (say, the middle slice) would produce plausible
/// but wrong muscle areas. The position comes from the data: an
/// Observation `l3-slice` that a radiologist or an upstream vertebra
/// labeller recorded against the ImagingStudy (see [`super::cache`] and
/// `docs/imaging.md`). This enum is the seam where an automatic locator
/// (a DICOM SR, a learned model) plugs in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SliceLocator {
    /// The slice with this SOPInstanceUID (a key image).
    SopInstanceUid { uid: String },
    /// The slice nearest to this patient-space z (mm, DICOM LPS: the third
    /// component of ImagePositionPatient, growing towards the head), within
    /// half a slice spacing.
    PatientZ { z_mm: f64 },
    /// The slice at this index in volume order (ascending along the slice
    /// normal). For tests and tools: an index means nothing across series.
    Index { index: usize },
}

/// The slice a locator found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocatedSlice {
    /// Index in volume order.
    pub index: usize,
    pub sop_instance_uid: String,
    /// Patient-space z (mm) of the slice centre.
    pub z_mm: f64,
}

/// Why a locator found no slice. Permanent: the same series and locator
/// will never give another answer.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LocateError {
    #[error(
        "the series is not axial: its slice normal is {angle_degrees:.1}° from the head-foot axis (at most {max_degrees}° accepted)"
    )]
    NotAxial {
        angle_degrees: f64,
        max_degrees: f64,
    },
    #[error("no slice of the series has SOPInstanceUID {uid}")]
    NoSuchInstance { uid: String },
    #[error(
        "L3 position z = {z_mm} mm is outside the series (slices from {first_mm:.1} to {last_mm:.1} mm, {spacing_mm:.2} mm apart)"
    )]
    OutsideSeries {
        z_mm: f64,
        first_mm: f64,
        last_mm: f64,
        spacing_mm: f64,
    },
    #[error("slice index {index} is outside the series ({depth} slices)")]
    IndexOutOfRange { index: usize, depth: usize },
    #[error("invalid slice locator: {0}")]
    Invalid(String),
}

/// Largest angle between the slice normal and the patient's z axis for a
/// slice to count as axial. Gantry tilt is already refused by assembly; this
/// refuses coronal and sagittal reconstructions, on which an "L3 slice"
/// means nothing.
const MAX_OBLIQUITY_DEGREES: f64 = 10.0;

impl SliceLocator {
    /// Checks what can be checked without the series.
    pub fn validate(&self) -> Result<(), LocateError> {
        match self {
            SliceLocator::SopInstanceUid { uid } => DicomUid::parse(uid)
                .map(|_| ())
                .map_err(|e| LocateError::Invalid(e.to_string())),
            SliceLocator::PatientZ { z_mm } if !z_mm.is_finite() => {
                Err(LocateError::Invalid(format!("z = {z_mm} is not a number")))
            }
            _ => Ok(()),
        }
    }

    /// A short stable digest, so that a corrected L3 position is a new job
    /// (and the cached result of the old position is not served).
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&Sha256::digest(json)[..6])
    }

    /// The slice of `ct` this locator names.
    pub fn locate(&self, ct: &CtVolume) -> Result<LocatedSlice, LocateError> {
        self.validate()?;
        let v = &ct.volume;
        let depth = v.dims[2];
        // Column 2 of the direction matrix is the slice normal in LPS.
        let normal_z = v.direction[2][2].clamp(-1.0, 1.0);
        let angle_degrees = normal_z.abs().acos().to_degrees();
        if angle_degrees > MAX_OBLIQUITY_DEGREES {
            return Err(LocateError::NotAxial {
                angle_degrees,
                max_degrees: MAX_OBLIQUITY_DEGREES,
            });
        }
        let centre = |k: usize| {
            let c = [
                (v.dims[0].saturating_sub(1)) as f64 / 2.0,
                (v.dims[1].saturating_sub(1)) as f64 / 2.0,
                k as f64,
            ];
            v.index_to_physical(c)[2]
        };
        let index = match self {
            SliceLocator::Index { index } => {
                if *index >= depth {
                    return Err(LocateError::IndexOutOfRange {
                        index: *index,
                        depth,
                    });
                }
                *index
            }
            SliceLocator::SopInstanceUid { uid } => {
                let uid = uid.trim();
                ct.sop_instance_uids
                    .iter()
                    .position(|u| u == uid)
                    .ok_or_else(|| LocateError::NoSuchInstance {
                        uid: uid.to_owned(),
                    })?
            }
            SliceLocator::PatientZ { z_mm } => {
                let best = (0..depth)
                    .min_by(|a, b| {
                        (centre(*a) - z_mm)
                            .abs()
                            .total_cmp(&(centre(*b) - z_mm).abs())
                    })
                    .ok_or(LocateError::IndexOutOfRange { index: 0, depth })?;
                let step = v.spacing[2] * normal_z.abs();
                // Half a slice either side, plus the assembly tolerance.
                if (centre(best) - z_mm).abs() > step / 2.0 + 0.1 {
                    let (a, b) = (centre(0), centre(depth - 1));
                    return Err(LocateError::OutsideSeries {
                        z_mm: *z_mm,
                        first_mm: a.min(b),
                        last_mm: a.max(b),
                        spacing_mm: step,
                    });
                }
                best
            }
        };
        Ok(LocatedSlice {
            index,
            sop_instance_uid: ct.sop_instance_uids.get(index).cloned().unwrap_or_default(),
            z_mm: centre(index),
        })
    }
}

// ------------------------------------------------------------------ payload

/// The job's payload: where the series is and which slice to measure.
/// Nothing else — in particular no access token and no patient identifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyCompositionJob {
    pub dicomweb_base: String,
    pub study_uid: String,
    pub series_uid: String,
    pub locator: SliceLocator,
}

impl BodyCompositionJob {
    pub fn new(series: &SeriesRef, locator: SliceLocator) -> Self {
        Self {
            dicomweb_base: series.base_url.to_string(),
            study_uid: series.study_uid.to_string(),
            series_uid: series.series_uid.to_string(),
            locator,
        }
    }

    /// The validated series reference (a payload is data from the database:
    /// it is checked again before anything is contacted).
    pub fn series_ref(&self) -> Result<SeriesRef, DicomWebError> {
        SeriesRef::parse(&self.dicomweb_base, &self.study_uid, &self.series_uid)
    }

    /// At most one unfinished job per series, pipeline version and L3
    /// position.
    pub fn dedupe_key(&self) -> String {
        format!(
            "{JOB_KIND}:{}:{PIPELINE_VERSION}:{}",
            self.series_uid,
            self.locator.digest()
        )
    }

    pub fn to_new_job(&self, max_attempts: i32) -> NewJob {
        NewJob::deduplicated(JOB_KIND, self, self.dedupe_key(), max_attempts)
    }
}

// ------------------------------------------------------------------- result

/// What is cached per (SeriesInstanceUID, [`PIPELINE_VERSION`],
/// [`RESULT_KIND`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BodyCompositionResult {
    pub pipeline_version: String,
    pub study_uid: String,
    pub series_uid: String,
    /// The locator the result answers; a result for another L3 position is
    /// not used.
    pub locator: SliceLocator,
    #[serde(flatten)]
    pub outcome: BodyCompositionOutcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum BodyCompositionOutcome {
    Measured {
        slice: LocatedSlice,
        /// SMA, muscle HU, VAT, SAT, body area; SMI is left to the reader,
        /// who knows the patient's height at the time of the question.
        composition: BodyComposition,
        series_slices: usize,
        /// Accepted series irregularities (`SeriesWarning`s), for audit.
        #[serde(default)]
        warnings: Vec<Value>,
    },
    /// The series can never be measured with this pipeline (not CT, not
    /// axial, L3 not in it, …): why, for the card.
    NotMeasurable { reason: String },
}

// ---------------------------------------------------------- classification

/// How a failure should be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// Try again after the backoff.
    Retryable,
    /// The series itself cannot be measured: dead-letter and cache a
    /// `not-measurable` result.
    Unmeasurable,
    /// Configuration or payload problem: dead-letter, cache nothing.
    Permanent,
}

/// Sorts DICOMweb and DICOM errors into retryable and permanent.
/// What the queue does with a failed imaging job: retry, give up, or — for a
/// series that can never be measured — cache that verdict (through
/// `cache_unmeasurable`, so later hooks say why instead of queueing again)
/// and give up.
pub async fn job_failure<F, Fut>(e: &DicomWebError, cache_unmeasurable: F) -> JobFailure
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), JobFailure>>,
{
    let message = e.to_string();
    match classify(e) {
        FailureClass::Retryable => JobFailure::retryable(message),
        FailureClass::Permanent => JobFailure::permanent(message),
        FailureClass::Unmeasurable => match cache_unmeasurable(message.clone()).await {
            Ok(()) => JobFailure::permanent(message),
            Err(cache) => cache,
        },
    }
}

pub fn classify(e: &DicomWebError) -> FailureClass {
    use FailureClass::*;
    match e {
        // The network, a slow PACS, a cut connection, a thread that died.
        DicomWebError::Http { .. }
        | DicomWebError::Deadline { .. }
        | DicomWebError::Multipart(_)
        | DicomWebError::Decoder(_) => Retryable,
        DicomWebError::Status { status, .. } => match status {
            // 404: the series may not have reached the PACS yet (the EHR can
            // know of a study before its images are archived).
            404 | 408 | 429 => Retryable,
            s if *s >= 500 => Retryable,
            // 401/403 and other client errors: our request or credential.
            _ => Permanent,
        },
        // A PACS answering HTML from a proxy error page, or an empty
        // series still being ingested: worth another try.
        DicomWebError::ContentType { .. }
        | DicomWebError::Json { .. }
        | DicomWebError::NoInstances => Retryable,
        DicomWebError::SeriesTooLarge { .. } => Unmeasurable,
        DicomWebError::Dicom(d) => match d {
            DicomError::Io { .. } => Retryable,
            _ => Unmeasurable,
        },
        DicomWebError::NotAllowed { .. }
        | DicomWebError::InvalidBaseUrl { .. }
        | DicomWebError::InvalidUid { .. }
        | DicomWebError::InvalidQuery { .. }
        | DicomWebError::NoStudyUid
        | DicomWebError::NoEndpoint { .. }
        | DicomWebError::InvalidToken => Permanent,
    }
}

// ------------------------------------------------------------------- worker

/// Runs `ct-body-composition` jobs. Cheap to share (`Arc`).
pub struct BodyCompositionWorker {
    client: DicomWebClient,
    store: Store,
    segmenter: Arc<dyn TissueSegmenter>,
    assemble: AssembleOptions,
}

/// Errors building a worker (configuration).
#[derive(Debug, thiserror::Error)]
pub enum WorkerSetupError {
    #[error("imaging.dicomweb: {0}")]
    DicomWeb(#[from] DicomWebError),
}

impl BodyCompositionWorker {
    /// The DICOMweb client from `[imaging.dicomweb]`, with the configured
    /// PACS credential if any; the threshold segmenter.
    pub fn new(settings: &ImagingSettings, store: Store) -> Result<Self, WorkerSetupError> {
        let mut client = DicomWebClient::new(&settings.dicomweb.client)?;
        if let Some(secret) = &settings.dicomweb.bearer_token {
            let token = BearerToken::new(secret.clone())?;
            client = client.with_bearer_token(token);
        }
        Ok(Self {
            client,
            store,
            segmenter: Arc::new(ThresholdSegmenter::default()),
            assemble: AssembleOptions::default(),
        })
    }

    /// Replace the segmenter (a learned model; tests).
    pub fn with_segmenter(mut self, segmenter: Arc<dyn TissueSegmenter>) -> Self {
        self.segmenter = segmenter;
        self
    }

    /// The function the worker pool calls. The imaging pool also runs the
    /// lung-nodule jobs ([`super::nodule_job`]) with the same PACS client
    /// and store, so one `[imaging]` configuration serves both.
    pub fn handler(self: Arc<Self>) -> JobHandler {
        let nodules = Arc::new(NoduleWorker::new(
            self.client.clone(),
            self.store.clone(),
            self.assemble,
        ));
        Arc::new(move |job: Job| {
            let worker = self.clone();
            let nodules = nodules.clone();
            async move {
                if job.kind == NODULE_JOB_KIND {
                    nodules.run(&job).await
                } else {
                    worker.run(&job).await
                }
            }
            .boxed()
        })
    }

    /// One job. `Ok` carries a short summary for the job row (no patient
    /// data); the result itself goes to the imaging cache.
    #[tracing::instrument(name = "Measuring CT body composition", skip_all, fields(job_id = %job.id))]
    pub async fn run(&self, job: &Job) -> Result<Value, JobFailure> {
        let payload: BodyCompositionJob = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobFailure::permanent(format!("invalid {JOB_KIND} payload: {e}")))?;
        let series = payload
            .series_ref()
            .map_err(|e| JobFailure::permanent(format!("invalid {JOB_KIND} payload: {e}")))?;
        if let Err(e) = payload.locator.validate() {
            return self
                .unmeasurable(&payload, e.to_string())
                .await
                .and(Err(JobFailure::permanent(e.to_string())));
        }

        // At-least-once delivery: a job that already ran (its worker lost the
        // lease after writing) must not fetch the series again.
        match self.cached(&payload).await {
            Ok(Some(done)) => {
                tracing::info!("Result already cached; nothing to do");
                return Ok(summary(&done, true));
            }
            Ok(None) => {}
            Err(e) => return Err(e),
        }

        let ct = match self.client.retrieve_ct_volume(&series, self.assemble).await {
            Ok(ct) => ct,
            Err(e) => return Err(self.failure(&payload, &e).await),
        };
        // The PACS answered for the study and series we asked for; check
        // it, as a mix-up would attach one patient's muscle to another.
        if ct.series_uid != payload.series_uid || ct.study_uid != payload.study_uid {
            let reason = "the PACS returned instances of another study or series".to_owned();
            return self
                .unmeasurable(&payload, reason.clone())
                .await
                .and(Err(JobFailure::permanent(reason)));
        }

        let segmenter = self.segmenter.clone();
        let locator = payload.locator.clone();
        let span = tracing::Span::current();
        let measured = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            measure(&ct, &locator, segmenter.as_ref())
        })
        .await
        .map_err(|e| JobFailure::retryable(format!("the measuring thread failed: {e}")))?;
        let outcome = match measured {
            Ok(outcome) => outcome,
            Err(reason) => {
                return self
                    .unmeasurable(&payload, reason.clone())
                    .await
                    .and(Err(JobFailure::permanent(reason)));
            }
        };
        let result = BodyCompositionResult {
            pipeline_version: PIPELINE_VERSION.to_owned(),
            study_uid: payload.study_uid.clone(),
            series_uid: payload.series_uid.clone(),
            locator: payload.locator.clone(),
            outcome,
        };
        self.put(&result).await?;
        tracing::info!("CT body composition cached");
        Ok(summary(&result, false))
    }

    /// The cached result for this payload, if it answers the same locator.
    async fn cached(
        &self,
        payload: &BodyCompositionJob,
    ) -> Result<Option<BodyCompositionResult>, JobFailure> {
        let value = self
            .store
            .get_imaging_result(&payload.series_uid, PIPELINE_VERSION, RESULT_KIND)
            .await
            .map_err(|e| JobFailure::retryable(format!("reading the imaging cache: {e}")))?;
        Ok(value
            .and_then(|v| serde_json::from_value::<BodyCompositionResult>(v).ok())
            .filter(|r| r.locator == payload.locator))
    }

    async fn put(&self, result: &BodyCompositionResult) -> Result<(), JobFailure> {
        let value = serde_json::to_value(result)
            .map_err(|e| JobFailure::permanent(format!("serialising the result: {e}")))?;
        self.store
            .put_imaging_result(&result.series_uid, PIPELINE_VERSION, RESULT_KIND, &value)
            .await
            .map_err(|e| JobFailure::retryable(format!("writing the imaging cache: {e}")))
    }

    /// Caches a `not-measurable` result. `Err` only when the cache write
    /// failed (then the job is retried, so that the reason is not lost).
    async fn unmeasurable(
        &self,
        payload: &BodyCompositionJob,
        reason: String,
    ) -> Result<(), JobFailure> {
        tracing::warn!(%reason, "CT series cannot be measured");
        self.put(&BodyCompositionResult {
            pipeline_version: PIPELINE_VERSION.to_owned(),
            study_uid: payload.study_uid.clone(),
            series_uid: payload.series_uid.clone(),
            locator: payload.locator.clone(),
            outcome: BodyCompositionOutcome::NotMeasurable { reason },
        })
        .await
    }

    async fn failure(&self, payload: &BodyCompositionJob, e: &DicomWebError) -> JobFailure {
        job_failure(e, |reason| self.unmeasurable(payload, reason)).await
    }
}

/// Locate, segment, measure: CPU work, run on a blocking thread. `Err` is
/// the reason the series cannot be measured (permanent).
fn measure(
    ct: &CtVolume,
    locator: &SliceLocator,
    segmenter: &dyn TissueSegmenter,
) -> Result<BodyCompositionOutcome, String> {
    let slice = locator.locate(ct).map_err(|e| e.to_string())?;
    let axial = AxialSlice::from_volume(&ct.volume, slice.index).map_err(|e| e.to_string())?;
    // SMI needs the height at the time of the question: the hook computes it.
    let composition = body_composition(&axial, segmenter, None).map_err(|e| e.to_string())?;
    Ok(BodyCompositionOutcome::Measured {
        slice,
        composition,
        series_slices: ct.volume.dims[2],
        warnings: ct
            .warnings
            .iter()
            .filter_map(|w| serde_json::to_value(w).ok())
            .collect(),
    })
}

/// The job row's result: which series, what happened, no values that
/// identify the patient.
fn summary(r: &BodyCompositionResult, already_cached: bool) -> Value {
    let outcome = match &r.outcome {
        BodyCompositionOutcome::Measured { .. } => "measured",
        BodyCompositionOutcome::NotMeasurable { .. } => "not-measurable",
    };
    serde_json::json!({
        "series_uid": r.series_uid,
        "pipeline_version": r.pipeline_version,
        "outcome": outcome,
        "already_cached": already_cached,
    })
}

/// Worker pool settings from `[imaging]`.
pub fn pool_config(settings: &ImagingSettings, workers: usize) -> WorkerPoolConfig {
    WorkerPoolConfig {
        lease: Duration::from_secs(settings.lease_seconds.max(10)),
        poll_interval: Duration::from_millis(settings.poll_interval_ms.max(10)),
        ..WorkerPoolConfig::new(workers.max(1), &[JOB_KIND, NODULE_JOB_KIND])
    }
}

/// Runs `workers` imaging workers with `worker` until `shutdown` turns true
/// (jobs in hand are finished first). Used by `serve` (`workers_in_serve`)
/// and by `oncohooks worker`; build the worker first
/// ([`BodyCompositionWorker::new`]) so that configuration errors stop the
/// process at start-up.
pub async fn run_imaging_workers(
    worker: Arc<BodyCompositionWorker>,
    settings: &ImagingSettings,
    workers: usize,
    shutdown: watch::Receiver<bool>,
) -> WorkerPoolStats {
    let config = pool_config(settings, workers);
    tracing::info!(workers = config.workers, "Imaging workers started");
    let store = worker.store.clone();
    let stats = run_workers(store, config, worker.handler(), shutdown).await;
    tracing::info!(?stats, "Imaging workers stopped");
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::Volume;

    fn ct(dims: [usize; 3], spacing: [f64; 3], origin: [f64; 3]) -> CtVolume {
        let mut volume = Volume::new(vec![0.0f32; dims.iter().product()], dims, spacing);
        volume.origin = origin;
        CtVolume {
            volume,
            study_uid: "1.2.3".into(),
            series_uid: "1.2.3.4".into(),
            frame_of_reference_uid: None,
            sop_instance_uids: (0..dims[2]).map(|k| format!("1.2.3.4.{k}")).collect(),
            transfer_syntaxes: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn locators_find_the_slice_by_z_uid_or_index() {
        let v = ct([4, 4, 5], [3.0, 3.0, 3.0], [0.0, 0.0, -160.0]);
        let z = SliceLocator::PatientZ { z_mm: -154.0 }.locate(&v).unwrap();
        assert_eq!((z.index, z.z_mm), (2, -154.0));
        assert_eq!(z.sop_instance_uid, "1.2.3.4.2");
        // Within half a slice (1.5 mm) plus tolerance; not beyond.
        let near = SliceLocator::PatientZ { z_mm: -155.4 }.locate(&v).unwrap();
        assert_eq!(near.index, 2);
        let err = SliceLocator::PatientZ { z_mm: -170.0 }
            .locate(&v)
            .unwrap_err();
        assert!(matches!(err, LocateError::OutsideSeries { .. }), "{err}");
        let uid = SliceLocator::SopInstanceUid {
            uid: "1.2.3.4.4".into(),
        };
        assert_eq!(uid.locate(&v).unwrap().index, 4);
        assert!(matches!(
            SliceLocator::SopInstanceUid { uid: "9.9".into() }.locate(&v),
            Err(LocateError::NoSuchInstance { .. })
        ));
        assert!(matches!(
            SliceLocator::Index { index: 5 }.locate(&v),
            Err(LocateError::IndexOutOfRange { index: 5, depth: 5 })
        ));
        assert!(matches!(
            SliceLocator::SopInstanceUid { uid: "x".into() }.validate(),
            Err(LocateError::Invalid(_))
        ));
    }

    /// The abdominal phantom (`fixtures/dicom/generate_abdomen.py`): every
    /// slice gives exactly the areas its generator counted, so the L3 slice
    /// is told apart from its neighbours by value.
    #[test]
    fn the_abdominal_phantom_measures_as_generated_at_every_slice() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dicom");
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("abdomen_expected.json")).unwrap(),
        )
        .unwrap();
        let ct = crate::imaging::dicom::read_ct_dir(
            &dir.join("ct_abdomen"),
            None,
            &AssembleOptions::default(),
        )
        .unwrap();
        for s in expected["slices"].as_array().unwrap() {
            let z = s["z_mm"].as_f64().unwrap();
            let BodyCompositionOutcome::Measured {
                slice, composition, ..
            } = measure(
                &ct,
                &SliceLocator::PatientZ { z_mm: z },
                &ThresholdSegmenter::default(),
            )
            .unwrap()
            else {
                panic!("not measured")
            };
            assert_eq!(slice.index as u64, s["index"].as_u64().unwrap());
            let t = &s["threshold"];
            let close = |a: f64, key: &str| {
                let b = t[key].as_f64().unwrap();
                assert!((a - b).abs() < 1e-6, "slice {z}: {key} {a} vs {b}");
            };
            close(composition.sma_cm2, "sma_cm2");
            close(composition.vat_cm2, "vat_cm2");
            close(composition.sat_cm2, "sat_cm2");
            close(composition.body_area_cm2, "body_area_cm2");
            close(composition.muscle_mean_hu.unwrap(), "muscle_mean_hu");
        }
    }

    #[test]
    fn a_coronal_series_has_no_l3_slice() {
        let mut v = ct([4, 4, 5], [1.0; 3], [0.0; 3]);
        // Rows along x, columns along z, normal along −y: coronal.
        v.volume.direction = [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]];
        let err = SliceLocator::Index { index: 0 }.locate(&v).unwrap_err();
        assert!(matches!(err, LocateError::NotAxial { .. }), "{err}");
    }

    #[test]
    fn payloads_and_results_round_trip_and_keys_follow_the_locator() {
        let series =
            SeriesRef::parse("http://127.0.0.1:8042/dicom-web/", "1.2.3", "1.2.3.4").unwrap();
        let job = BodyCompositionJob::new(&series, SliceLocator::PatientZ { z_mm: -154.0 });
        let new = job.to_new_job(3);
        assert_eq!(new.kind, JOB_KIND);
        let back: BodyCompositionJob = serde_json::from_value(new.payload.clone()).unwrap();
        assert_eq!(back, job);
        assert_eq!(back.series_ref().unwrap(), series);
        assert_eq!(
            new.payload["locator"],
            serde_json::json!({"by": "patient-z", "z_mm": -154.0})
        );
        let key = job.dedupe_key();
        assert!(key.starts_with(&format!("{JOB_KIND}:1.2.3.4:{PIPELINE_VERSION}:")));
        let moved = BodyCompositionJob::new(&series, SliceLocator::PatientZ { z_mm: -151.0 });
        assert_ne!(moved.dedupe_key(), key);
        assert_eq!(job.clone().dedupe_key(), key);
        // No token, no patient identifier: only these four fields.
        assert_eq!(new.payload.as_object().unwrap().len(), 4);

        let result = BodyCompositionResult {
            pipeline_version: PIPELINE_VERSION.into(),
            study_uid: "1.2.3".into(),
            series_uid: "1.2.3.4".into(),
            locator: job.locator.clone(),
            outcome: BodyCompositionOutcome::NotMeasurable {
                reason: "not CT".into(),
            },
        };
        let value = serde_json::to_value(&result).unwrap();
        assert_eq!(value["outcome"], "not-measurable");
        assert_eq!(
            serde_json::from_value::<BodyCompositionResult>(value).unwrap(),
            result
        );
    }

    #[test]
    fn errors_are_sorted_into_retryable_and_permanent() {
        let status = |s| DicomWebError::Status {
            operation: "WADO-RS series retrieval",
            status: s,
        };
        assert_eq!(classify(&status(503)), FailureClass::Retryable);
        assert_eq!(classify(&status(500)), FailureClass::Retryable);
        assert_eq!(classify(&status(404)), FailureClass::Retryable);
        assert_eq!(classify(&status(403)), FailureClass::Permanent);
        assert_eq!(
            classify(&DicomWebError::Deadline {
                operation: "x",
                seconds: 1
            }),
            FailureClass::Retryable
        );
        assert_eq!(
            classify(&DicomWebError::Dicom(DicomError::NotCt {
                file: "WADO-RS part 1".into(),
                modality: "SEG".into()
            })),
            FailureClass::Unmeasurable
        );
        assert_eq!(
            classify(&DicomWebError::NotAllowed { base: "x".into() }),
            FailureClass::Permanent
        );
    }
}
