//! The CT body-composition job (issue 3 item 8): imaging work is a job,
//! never inline in a hook; results are cached per SeriesInstanceUID and
//! pipeline version; workers run jobs with CPU work off the async runtime.
//!
//! - two worker pools on one database never take the same imaging job;
//! - a PACS answering 500 gets the job retried, then dead-lettered;
//! - a series that is not CT is dead-lettered at once (no pointless
//!   retries), remembered, and the next hook says why instead of queueing it
//!   again;
//! - end to end with Orthanc: the first hook queues the analysis, the
//!   in-process worker runs it, the second hook uses the cached body
//!   composition and queues nothing;
//! - with the database gone the hook still answers, CT counted as missing.

use std::sync::Arc;
use std::time::Duration;

use oncohooks::config::ImagingSettings;
use oncohooks::imaging::dicom::list_files;
use oncohooks::imaging::dicomweb::{DicomUid, DicomWebBase, SeriesRef};
use oncohooks::imaging::jobs::{
    BodyCompositionJob, BodyCompositionOutcome, BodyCompositionResult, BodyCompositionWorker,
    JOB_KIND, PIPELINE_VERSION, RESULT_KIND, SliceLocator, run_imaging_workers,
};
use oncohooks::store::jobs::WorkerPoolStats;
use oncohooks::store::{Backoff, Job, JobStatus, Store};
use serde_json::Value;
use uuid::Uuid;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::both_backends;
use crate::helpers::{TestApp, fixture, fixture_path, spawn_app_with};
use crate::support::db::{Backend, TestDb};
use crate::support::orthanc::{start_orthanc, upload_folder};

both_backends!(
    two_imaging_worker_pools_never_take_the_same_job,
    a_pacs_error_is_retried_then_dead_lettered,
    a_series_that_is_not_ct_is_dead_lettered_at_once_and_remembered,
);

const HOOK: &str = "hooks/cachexia-ct.json";
const SERVICE: &str = "cachexia-risk";
const PATIENT: &str = "cachexia-full";

fn expected() -> Value {
    fixture("dicom/abdomen_expected.json")
}

fn settings_for(allowed: &str) -> ImagingSettings {
    let mut s = ImagingSettings::default();
    s.dicomweb.client.allowed_base_urls = vec![allowed.to_owned()];
    s.dicomweb.client.deadline_secs = 30;
    s.poll_interval_ms = 20;
    s
}

fn job_for(base: &str, series_uid: &str) -> BodyCompositionJob {
    BodyCompositionJob::new(
        &SeriesRef {
            base_url: DicomWebBase::parse(base).unwrap(),
            study_uid: DicomUid::parse("1.2.826.0.1.3680043.8.498.1").unwrap(),
            series_uid: DicomUid::parse(series_uid).unwrap(),
        },
        SliceLocator::PatientZ { z_mm: -154.0 },
    )
}

/// Runs a pool of `workers` until every job in `ids` is finished (done or
/// dead), then stops it.
async fn drain(
    stores: &[Store],
    settings: &ImagingSettings,
    workers: usize,
    ids: &[Uuid],
) -> Vec<WorkerPoolStats> {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let pools: Vec<_> = stores
        .iter()
        .map(|store| {
            let worker = Arc::new(BodyCompositionWorker::new(settings, store.clone()).unwrap());
            let (settings, shutdown) = (settings.clone(), shutdown.clone());
            tokio::spawn(
                async move { run_imaging_workers(worker, &settings, workers, shutdown).await },
            )
        })
        .collect();
    let store = &stores[0];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut open = 0;
        for id in ids {
            let j = store.job(*id).await.unwrap().unwrap();
            if matches!(j.status, JobStatus::Queued | JobStatus::Running) {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} imaging jobs still open"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.send(true).unwrap();
    let mut stats = Vec::new();
    for p in pools {
        stats.push(p.await.unwrap());
    }
    stats
}

async fn job(store: &Store, id: Uuid) -> Job {
    store.job(id).await.unwrap().unwrap()
}

// ------------------------------------------------------------- worker level

async fn two_imaging_worker_pools_never_take_the_same_job(db: &mut TestDb) {
    // A PACS that is slow and always unavailable: each claim costs one
    // request, so the request log shows who fetched what. Slow enough that
    // a pool's three workers sit waiting on it most of the time: SQLite's
    // busy handler is not fair, and with a 30 ms PACS on a machine with slow
    // fsync one pool's commits kept the other pool out for the whole run
    // (seen once in CI), which proves nothing about exclusivity.
    let pacs = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex("^/dicom-web/studies/.*/series/.*$"))
        .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_millis(250)))
        .mount(&pacs)
        .await;
    let base = format!("{}/dicom-web", pacs.uri());
    let mut ids = Vec::new();
    for n in 0..24 {
        let j = job_for(&base, &format!("1.2.826.0.1.3680043.8.498.1.{n}"));
        // One attempt: the 503 dead-letters it, so each job is fetched once
        // unless two workers took it.
        ids.push(db.store.enqueue(&j.to_new_job(1)).await.unwrap().id());
    }
    // Two "processes": two pools of three workers on two connection pools.
    let other = db.connect_again().await;
    let stats = drain(
        &[db.store.clone(), other],
        &settings_for("loopback"),
        3,
        &ids,
    )
    .await;

    let requests = pacs.received_requests().await.unwrap();
    let mut paths: Vec<String> = requests.iter().map(|r| r.url.path().to_owned()).collect();
    assert_eq!(paths.len(), 24, "one request per job");
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 24, "no series was fetched twice");
    let dead: u64 = stats.iter().map(|s| s.dead_lettered).sum();
    assert_eq!(dead, 24, "{stats:?}");
    assert!(
        stats.iter().all(|s| s.dead_lettered > 0),
        "both pools worked: {stats:?}"
    );
    for id in ids {
        let j = job(&db.store, id).await;
        assert_eq!((j.status, j.attempts), (JobStatus::Dead, 1));
    }
}

async fn a_pacs_error_is_retried_then_dead_lettered(db: &mut TestDb) {
    let pacs = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex("^/dicom-web/studies/.*/series/.*$"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&pacs)
        .await;
    let store = db.store.clone().with_backoff(Backoff {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(50),
        jitter: 0.0,
    });
    let j = job_for(
        &format!("{}/dicom-web", pacs.uri()),
        "1.2.826.0.1.3680043.8.498.7",
    );
    let id = store.enqueue(&j.to_new_job(3)).await.unwrap().id();
    let stats = drain(
        std::slice::from_ref(&store),
        &settings_for("loopback"),
        2,
        &[id],
    )
    .await;

    let j = job(&store, id).await;
    assert_eq!((j.status, j.attempts), (JobStatus::Dead, 3));
    assert!(
        j.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("HTTP 500"),
        "{:?}",
        j.last_error
    );
    assert_eq!(pacs.received_requests().await.unwrap().len(), 3);
    assert_eq!((stats[0].retried, stats[0].dead_lettered), (2, 1));
    assert_eq!(
        store.dead_letters(JOB_KIND).await.unwrap()[0].id,
        id,
        "in the dead letters"
    );
    // A retryable failure leaves no verdict in the cache: a later hook may
    // queue the series again once the PACS is back.
    assert_eq!(
        store
            .get_imaging_result("1.2.826.0.1.3680043.8.498.7", PIPELINE_VERSION, RESULT_KIND)
            .await
            .unwrap(),
        None
    );
}

/// A WADO-RS answer holding the fixture SEG instance (modality SEG).
async fn pacs_serving_a_seg() -> MockServer {
    let pacs = MockServer::start().await;
    let seg = std::fs::read(fixture_path("dicom/seg_nodule.dcm")).unwrap();
    let mut body = b"--oncohooks-test\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend_from_slice(&seg);
    body.extend_from_slice(b"\r\n--oncohooks-test--\r\n");
    Mock::given(method("GET"))
        .and(path_regex("^/dicom-web/studies/.*/series/.*$"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            body,
            "multipart/related; type=\"application/dicom\"; boundary=oncohooks-test",
        ))
        .mount(&pacs)
        .await;
    pacs
}

async fn a_series_that_is_not_ct_is_dead_lettered_at_once_and_remembered(db: &mut TestDb) {
    let pacs = pacs_serving_a_seg().await;
    let series = "1.2.826.0.1.3680043.8.498.9";
    let j = job_for(&format!("{}/dicom-web", pacs.uri()), series);
    let id = db.store.enqueue(&j.to_new_job(5)).await.unwrap().id();
    let stats = drain(
        std::slice::from_ref(&db.store),
        &settings_for("loopback"),
        1,
        &[id],
    )
    .await;

    let done = job(&db.store, id).await;
    assert_eq!(
        (done.status, done.attempts),
        (JobStatus::Dead, 1),
        "no retries for a permanent failure"
    );
    assert_eq!((stats[0].retried, stats[0].dead_lettered), (0, 1));
    assert_eq!(pacs.received_requests().await.unwrap().len(), 1);
    let cached: BodyCompositionResult = serde_json::from_value(
        db.store
            .get_imaging_result(series, PIPELINE_VERSION, RESULT_KIND)
            .await
            .unwrap()
            .expect("the verdict is cached"),
    )
    .unwrap();
    match cached.outcome {
        BodyCompositionOutcome::NotMeasurable { reason } => {
            assert!(reason.contains("modality SEG"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

// --------------------------------------------------------------- hook level

fn detail(body: &Value) -> String {
    body["cards"][0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The CT hook fixture with its ImagingStudy's Endpoint pointing at `base`.
fn ct_hook(base: &str) -> Value {
    let mut h = fixture(HOOK);
    h["prefetch"]["imaging"]["entry"][0]["resource"]["contained"][0]["address"] =
        Value::String(base.to_owned());
    h
}

async fn post(app: &TestApp, hook: &Value) -> Value {
    let resp = app.post_hook(SERVICE, hook).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// The CT findings stored with the latest prediction.
async fn ct_findings(app: &TestApp) -> Vec<Value> {
    let p = app
        .db
        .store
        .recent_predictions(SERVICE, PATIENT, 1)
        .await
        .unwrap();
    p[0].result["prediction"]["ct_body_composition"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn feature<'a>(snapshot: &'a Value, name: &str) -> &'a Value {
    snapshot["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no feature {name}"))
}

async fn wait_for_job(app: &TestApp, id: Uuid) -> Job {
    let store = app.db.store.clone();
    let mut last = None;
    for _ in 0..600 {
        let j = job(&store, id).await;
        if matches!(j.status, JobStatus::Done | JobStatus::Dead) {
            return j;
        }
        last = Some(j);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("imaging job did not finish: {last:?}");
}

fn job_id(finding: &Value) -> Uuid {
    finding["job_id"].as_str().unwrap().parse().unwrap()
}

async fn a_ct_is_queued_on_first_view_and_used_on_the_next(backend: Backend) {
    let Some(orthanc) = start_orthanc().await else {
        return;
    };
    let files = list_files(&fixture_path("dicom/ct_abdomen")).unwrap();
    upload_folder(&orthanc, &files).await;
    let app = spawn_app_with(backend, |s| {
        s.imaging.workers_in_serve = 1;
        s.imaging.poll_interval_ms = 50;
    })
    .await;
    let hook = ct_hook(&orthanc.dicomweb_base());
    let exp = expected();
    let series_uid = exp["series_uid"].as_str().unwrap();

    // First view: nothing cached, the analysis is queued, nothing fetched
    // inline (the answer does not wait for the worker).
    let first = post(&app, &hook).await;
    let d = detail(&first);
    assert!(
        d.contains("CT body-composition analysis queued; this card will use it on the next view"),
        "{d}"
    );
    let findings = ct_findings(&app).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["status"], "queued");
    assert_eq!(findings[0]["series_uid"], series_uid);
    let id = job_id(&findings[0]);
    let queued = job(&app.db.store, id).await;
    assert_eq!(queued.kind, JOB_KIND);
    assert_eq!(queued.payload["locator"]["z_mm"], -154.0);
    assert!(
        !queued.payload.to_string().contains("cachexia-full"),
        "no patient identifier in the job: {}",
        queued.payload
    );
    assert_eq!(app.db.count("jobs").await, 1);

    // The in-process worker fetches the series from Orthanc and measures it.
    let done = wait_for_job(&app, id).await;
    assert_eq!(
        done.status,
        JobStatus::Done,
        "{:?}\n{}",
        done.last_error,
        orthanc.log_tail()
    );
    assert_eq!(done.attempts, 1);

    // Second view: the cached result is used, nothing new is queued.
    let second = post(&app, &hook).await;
    let d = detail(&second);
    let l3 = &exp["slices"][exp["l3_index"].as_u64().unwrap() as usize]["threshold"];
    let sma = l3["sma_cm2"].as_f64().unwrap();
    let source = format!(
        "ImagingStudy/cachexia-full-img-1 series {series_uid} (pipeline {PIPELINE_VERSION})"
    );
    assert!(!d.contains("queued"), "{d}");
    assert!(
        d.contains(&format!("SMA {} cm²", (sma * 10.0).round() / 10.0)),
        "{d}"
    );
    assert!(
        d.contains("L3 slice at z = -154 mm from Observation/cachexia-full-obs-l3"),
        "{d}"
    );
    assert!(d.contains(&source), "the SMI cites the CT: {d}");
    assert_eq!(app.db.count("jobs").await, 1, "nothing new was queued");
    let findings = ct_findings(&app).await;
    assert_eq!(findings[0]["status"], "used");

    // The stored feature snapshot carries the CT-derived values and source.
    let p = app
        .db
        .store
        .recent_predictions(SERVICE, PATIENT, 1)
        .await
        .unwrap();
    let smi = feature(&p[0].features, "l3_smi");
    let height_m: f64 = 1.75;
    assert!(
        (smi["value"].as_f64().unwrap() - sma / (height_m * height_m)).abs() < 1e-6,
        "{smi}"
    );
    assert!(smi["source"].as_str().unwrap().contains(&source), "{smi}");
    let hu = feature(&p[0].features, "l3_muscle_hu");
    assert!(
        (hu["value"].as_f64().unwrap() - l3["muscle_mean_hu"].as_f64().unwrap()).abs() < 1e-6,
        "{hu}"
    );
    assert_eq!(hu["date"], "2026-10-21");
    for name in ["l3_vat", "l3_sat", "l3_sma"] {
        assert_eq!(feature(&p[0].features, name)["source"], source.as_str());
    }
    // The modality now counts as present.
    assert!(
        p[0].result["prediction"]["modalities_present"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "body-composition"),
        "{}",
        p[0].result
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ct_is_queued_on_first_view_and_used_on_the_next_sqlite() {
    a_ct_is_queued_on_first_view_and_used_on_the_next(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ct_is_queued_on_first_view_and_used_on_the_next_postgres() {
    a_ct_is_queued_on_first_view_and_used_on_the_next(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_ct_series_is_not_queued_again_and_the_card_says_why() {
    let pacs = pacs_serving_a_seg().await;
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.imaging.workers_in_serve = 1;
        s.imaging.poll_interval_ms = 50;
    })
    .await;
    let hook = ct_hook(&format!("{}/dicom-web", pacs.uri()));
    post(&app, &hook).await;
    let id = job_id(&ct_findings(&app).await[0]);
    let dead = wait_for_job(&app, id).await;
    assert_eq!((dead.status, dead.attempts), (JobStatus::Dead, 1));

    let body = post(&app, &hook).await;
    let d = detail(&body);
    assert!(d.contains("the CT could not be analysed"), "{d}");
    assert!(d.contains("modality SEG"), "{d}");
    assert_eq!(app.db.count("jobs").await, 1, "not queued again");
    assert_eq!(ct_findings(&app).await[0]["status"], "not-measurable");
    assert_eq!(pacs.received_requests().await.unwrap().len(), 1);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pacs_off_the_allow_list_is_never_queued() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.imaging.dicomweb.client.allowed_base_urls =
            vec!["https://pacs.example.org/dicom-web".into()];
    })
    .await;
    let body = post(&app, &ct_hook("http://127.0.0.1:9/dicom-web")).await;
    let d = detail(&body);
    assert!(d.contains("not on the DICOMweb allow-list"), "{d}");
    assert_eq!(app.db.count("jobs").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_database_the_hook_answers_and_ct_counts_as_missing() {
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.imaging.workers_in_serve = 0;
    })
    .await;
    crate::persistence::set_database_available(app.db.url(), false).await;
    let started = std::time::Instant::now();
    let body = post(&app, &ct_hook("http://127.0.0.1:9/dicom-web")).await;
    let d = detail(&body);
    assert!(
        d.contains("CT body composition could not be looked up"),
        "{d}"
    );
    assert!(
        !d.contains("queued"),
        "nothing can be queued without the database: {d}"
    );
    // The imaging budget (300 ms) bounds the wait; the spool takes the record.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    crate::persistence::set_database_available(app.db.url(), true).await;
    app.cleanup().await;
}
