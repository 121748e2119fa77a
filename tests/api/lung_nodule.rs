//! `lung-nodule-malignancy` end to end (issue 5 "Service"): the fixture
//! patient's chest CT (the real lung1 crop as a DICOM series, with a DICOM
//! SEG of its nodule: `fixtures/dicom/generate_nodule.py`) sits in a test
//! Orthanc;
//!
//! - the first view answers one "imaging pending" card and queues one
//!   `nodule-radiomics` job (no patient identifier in it);
//! - the in-process worker retrieves the series and the SEG, measures the
//!   nodule and caches it;
//! - the second view answers one card per nodule: size, type, location,
//!   the (test) model's probability with interval and review flag, Brock,
//!   Mayo, Lung-RADS; a finding whose coordinates lie outside the CT gets a
//!   card that says so, with its baselines, and never a 500;
//! - the stored prediction has the shape of `shared/schema.md`, and each
//!   nodule's `card_uuid` is its card's uuid;
//! - without the SEG the same finding is segmented around its point;
//! - a patient without a chest CT gets a clear card and no job.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use oncohooks::imaging::dicom::list_files;
use oncohooks::imaging::nodule_job::JOB_KIND;
use oncohooks::imaging::patch::PatchConfig;
use oncohooks::ml::nodule::{
    NoduleClassifier, NoduleModelError, NoduleModelInfo, NoduleModelInput, NoduleModelOutput,
    RadiomicsDriver,
};
use oncohooks::startup::ServiceOverrides;
use oncohooks::store::{Job, JobStatus};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, fixture, fixture_path, spawn_app_with_overrides};
use crate::support::db::Backend;
use crate::support::orthanc::{start_orthanc, upload_folder};

const SERVICE: &str = "lung-nodule-malignancy";
const PATIENT: &str = "lung-nodule-1";
const HOOK: &str = "hooks/lung-nodule.json";

/// A test double: probability = 1 − sphericity, members ±0.1 around it,
/// both classes in the conformal set (review suggested) when the
/// probability lies in [0.2, 0.8]. It records what it was given.
struct SphericityClassifier {
    info: NoduleModelInfo,
    seen: Mutex<Vec<(usize, [usize; 3])>>,
}

impl SphericityClassifier {
    fn new() -> Self {
        Self {
            info: NoduleModelInfo {
                id: "test-sphericity".into(),
                version: "0.0.1".into(),
                source_label: "test double, trained on nothing".into(),
                trained_on_rendered_pixels: true,
                patch: PatchConfig {
                    size: 32,
                    ..PatchConfig::default()
                },
                alpha: 0.1,
            },
            seen: Mutex::new(Vec::new()),
        }
    }
}

impl NoduleClassifier for SphericityClassifier {
    fn info(&self) -> &NoduleModelInfo {
        &self.info
    }

    fn predict(
        &self,
        inputs: &[NoduleModelInput],
    ) -> Result<Vec<NoduleModelOutput>, NoduleModelError> {
        inputs
            .iter()
            .map(|i| {
                self.seen.lock().unwrap().push((
                    i.radiomics.len(),
                    [i.views[0].len(), i.views[1].len(), i.views[2].len()],
                ));
                let s = i
                    .radiomics
                    .get("original_shape_Sphericity")
                    .ok_or_else(|| NoduleModelError::Input("no sphericity".into()))?;
                let p = (1.0 - s).clamp(0.0, 1.0);
                let review = (0.2..=0.8).contains(&p);
                Ok(NoduleModelOutput {
                    probability: p,
                    interval: ((p - 0.1).max(0.0), (p + 0.1).min(1.0)),
                    confidence: p.max(1.0 - p),
                    confidence_level: if review { "low" } else { "high" },
                    prediction_set: if review {
                        vec!["benign", "malignant"]
                    } else if p >= 0.5 {
                        vec!["malignant"]
                    } else {
                        vec!["benign"]
                    },
                    review_suggested: review,
                    radiomics_drivers: vec![RadiomicsDriver {
                        name: "original_shape_Sphericity".into(),
                        value: s,
                        contribution: -s,
                    }],
                })
            })
            .collect()
    }
}

fn expected() -> Value {
    fixture("dicom/nodule_expected.json")
}

fn hook(base: &str) -> Value {
    let mut h = fixture(HOOK);
    h["prefetch"]["imaging"]["entry"][0]["resource"]["contained"][0]["address"] =
        Value::String(base.to_owned());
    h
}

async fn post(app: &TestApp, hook: &Value) -> Value {
    let resp = app.post_hook(SERVICE, hook).await;
    let status = resp.status();
    // For docs/benchmarks.md (`-- --nocapture`).
    eprintln!(
        "hook: x-total-time {:?} ms, x-inference-time {:?} ms",
        resp.headers().get("x-total-time"),
        resp.headers().get("x-inference-time")
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

async fn latest(app: &TestApp) -> oncohooks::store::PredictionRecord {
    app.db
        .store
        .recent_predictions(SERVICE, PATIENT, 1)
        .await
        .unwrap()
        .remove(0)
}

async fn wait_for_job(app: &TestApp, id: Uuid) -> Job {
    for _ in 0..1200 {
        let j = app.db.store.job(id).await.unwrap().unwrap();
        if matches!(j.status, JobStatus::Done | JobStatus::Dead) {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nodule job did not finish");
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

/// First view → pending card and one job; the job runs; returns the second
/// view's body.
async fn pending_then_scored(app: &TestApp, hook: &Value, jobs_before: i64) -> Value {
    let first = post(app, hook).await;
    let cards = first["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 1, "{first}");
    assert_eq!(cards[0]["indicator"], "info");
    let summary = cards[0]["summary"].as_str().unwrap();
    assert!(summary.contains("in progress"), "{summary}");
    assert!(
        cards[0]["detail"]
            .as_str()
            .unwrap()
            .contains("107 radiomics features"),
        "{first}"
    );
    // The recorded sizes already give the baselines (nodule 2: 6 mm solid).
    assert!(
        cards[0]["detail"]
            .as_str()
            .unwrap()
            .contains("- Nodule 2 (Left lower lobe): 6 mm solid as recorded; Brock "),
        "{first}"
    );
    let p = latest(app).await;
    let r = &p.result["prediction"];
    assert_eq!(r["status"], "imaging_pending");
    assert_eq!(
        r["recorded_findings"][1]["baselines"]["lung_rads"]["category"],
        "3"
    );
    assert_eq!(r["nodules"], serde_json::json!([]));
    assert_eq!(p.risk, None);
    assert_eq!(app.db.count("jobs").await, jobs_before + 1);
    let id: Uuid = r["study"]["job_id"].as_str().unwrap().parse().unwrap();
    let queued = app.db.store.job(id).await.unwrap().unwrap();
    assert_eq!(queued.kind, JOB_KIND);
    assert!(
        !queued.payload.to_string().contains(PATIENT),
        "no patient identifier in the job: {}",
        queued.payload
    );
    assert_eq!(
        queued.payload["patch"]["size"], 32,
        "the model's patch size"
    );

    let done = wait_for_job(app, id).await;
    assert_eq!(done.status, JobStatus::Done, "{:?}", done.last_error);
    eprintln!(
        "nodule job: {} ms from enqueue to done; {}",
        (done.updated_at - done.created_at).num_milliseconds(),
        done.result.clone().unwrap_or_default()
    );
    let second = post(app, hook).await;
    assert_eq!(
        app.db.count("jobs").await,
        jobs_before + 1,
        "nothing new was queued"
    );
    second
}

async fn nodules_are_scored_after_the_imaging_job(backend: Backend) {
    let Some(orthanc) = start_orthanc().await else {
        return;
    };
    let mut files = list_files(&fixture_path("dicom/ct_nodule")).unwrap();
    files.extend(list_files(&fixture_path("dicom/seg_nodule_lung1")).unwrap());
    upload_folder(&orthanc, &files).await;
    let classifier = Arc::new(SphericityClassifier::new());
    let app = spawn_app_with_overrides(
        backend,
        |s| {
            s.imaging.workers_in_serve = 1;
            s.imaging.poll_interval_ms = 50;
        },
        ServiceOverrides {
            nodule_classifier: Some(classifier.clone()),
        },
    )
    .await;
    let exp = expected();
    let hook = hook(&orthanc.dicomweb_base());
    let body = pending_then_scored(&app, &hook, 0).await;

    // ---- the cards: one per nodule
    let cards = body["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 2, "{body}");
    let p = latest(&app).await;
    let r = &p.result["prediction"];
    assert_eq!(r["status"], "scored", "{r}");
    let nodules = r["nodules"].as_array().unwrap();
    assert_eq!(nodules.len(), 2);
    for (card, n) in cards.iter().zip(nodules) {
        assert_eq!(card["uuid"], n["card_uuid"], "card_uuid is the card's uuid");
        let stored = app
            .db
            .store
            .find_card(card["uuid"].as_str().unwrap().parse().unwrap())
            .await
            .unwrap()
            .expect("the card is stored");
        assert_eq!(stored.prediction_id, Some(p.id));
        let links: Vec<&str> = card["links"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["type"].as_str().unwrap())
            .collect();
        assert_eq!(links, ["smart", "absolute"], "review app links");
        assert!(
            card["source"]["url"]
                .as_str()
                .unwrap()
                .ends_with("/model-cards/lung-nodule-malignancy")
        );
        assert!(
            card["source"]["label"]
                .as_str()
                .unwrap()
                .contains("test double, trained on nothing")
        );
    }

    // ---- nodule 1: the SEG's mask, the Observation's lobe and type
    let n1 = &nodules[0];
    assert_eq!(n1["finding"], "Observation/lung-nodule-1-obs-n1");
    assert_eq!(n1["label"], "Nodule 1");
    assert_eq!(n1["seg"]["sop_instance_uid"], exp["seg_sop_instance_uid"]);
    assert_eq!(n1["mask_source"]["method"], "seg");
    assert_eq!(n1["location"]["body_site"], "Right upper lobe");
    let centre = n1["location"]["center_mm"].as_array().unwrap();
    for (a, b) in centre
        .iter()
        .zip(exp["mask_centroid_mm"].as_array().unwrap())
    {
        assert!(
            close(a.as_f64().unwrap(), b.as_f64().unwrap(), 1e-9),
            "{centre:?}"
        );
    }
    // The SEG mask is the crop's mask voxel for voxel.
    let volume = n1["size"]["volume_mm3"].as_f64().unwrap();
    assert!(
        close(volume, exp["mask_volume_mm3"].as_f64().unwrap(), 1e-9),
        "{volume}"
    );
    assert_eq!(n1["size"]["mean_diameter_mm"], 14.0, "the stated diameter");
    assert_eq!(n1["size"]["source"], "stated");
    let measured = n1["size"]["measured_mean_diameter_mm"].as_f64().unwrap();
    assert!((8.0..20.0).contains(&measured), "{measured}");
    assert_eq!(n1["nodule_type"], "solid");
    // Radiomics through DICOMweb equal pyradiomics on the same crop.
    let reference = fixture("radiomics/lung1_crop_features.json");
    let features = n1["radiomics"].as_object().unwrap();
    assert_eq!(features.len(), 107);
    for (name, want) in reference["features"].as_object().unwrap() {
        let got = features[name].as_f64().unwrap();
        assert!(
            close(got, want.as_f64().unwrap(), 1e-6),
            "{name}: {got} vs {want}"
        );
    }
    // The model saw 107 features and three 32 × 32 views, per nodule measured.
    assert_eq!(
        classifier.seen.lock().unwrap().as_slice(),
        &[(107, [1024, 1024, 1024])]
    );
    let sphericity = features["original_shape_Sphericity"].as_f64().unwrap();
    let prob = n1["model"]["probability"].as_f64().unwrap();
    assert!(close(prob, 1.0 - sphericity, 1e-12));
    assert_eq!(n1["model"]["review_suggested"], true);
    assert_eq!(
        n1["model"]["interval"],
        serde_json::json!([prob - 0.1, prob + 0.1])
    );
    // Patch for the review app: the window, the plane and the mask on it.
    let patch = &n1["patch"];
    assert_eq!(patch["size"], 32);
    assert_eq!(patch["window"]["lower"], -1000.0);
    let b64 = base64::engine::general_purpose::STANDARD;
    let axial = b64.decode(patch["axial"].as_str().unwrap()).unwrap();
    let mask = b64.decode(patch["mask_axial"].as_str().unwrap()).unwrap();
    assert_eq!((axial.len(), mask.len()), (1024, 1024));
    assert!(mask.iter().all(|m| *m <= 1));
    assert!(
        mask[16 * 32 + 16] == 1,
        "the centre of the patch is in the nodule"
    );
    // Baselines from the record: 68-year-old woman, ex-smoker, emphysema.
    let brock = &n1["brock"];
    assert_eq!(brock["inputs"]["female"], true);
    assert_eq!(brock["inputs"]["emphysema"], true);
    assert_eq!(brock["inputs"]["age_years"], 68.0);
    assert_eq!(brock["inputs"]["upper_lobe"], true);
    assert_eq!(brock["inputs"]["spiculation"], true);
    assert_eq!(brock["inputs"]["nodule_count"], 2);
    assert_eq!(n1["mayo"]["inputs"]["ever_smoker"], true);
    assert!(brock["probability"].as_f64().unwrap() > 0.0);
    // Solid 14 mm is 4A; spiculation makes it 4X.
    assert_eq!(n1["lung_rads"]["category"], "4X");
    assert!(
        n1["lung_rads"]["management"]
            .as_str()
            .unwrap()
            .contains("tissue sampling")
    );
    let c1 = &cards[0];
    let s1 = c1["summary"].as_str().unwrap();
    assert!(
        s1.starts_with("Nodule 1 (right upper lobe): 14 mm solid; model "),
        "{s1}"
    );
    assert!(
        s1.contains("Lung-RADS 4X") && s1.contains("review suggested"),
        "{s1}"
    );
    let d1 = c1["detail"].as_str().unwrap();
    assert!(d1.contains("Radiologist review suggested"), "{d1}");
    assert!(d1.contains("mask from the DICOM SEG"), "{d1}");
    assert!(d1.contains("| Mayo (Swensen 1997) |"), "{d1}");

    // ---- nodule 2: coordinates outside the CT; baselines from the stated size
    let n2 = &nodules[1];
    assert_eq!(n2["finding"], "Observation/lung-nodule-1-obs-n2");
    assert!(n2["model"].is_null());
    assert!(n2["patch"].is_null());
    let why = n2["error"].as_str().unwrap();
    assert!(why.contains("outside the CT series"), "{why}");
    assert!(
        n2["model_missing"]
            .as_str()
            .unwrap()
            .contains("outside the CT series")
    );
    assert_eq!(n2["size"]["mean_diameter_mm"], 6.0);
    assert!(n2["size"]["volume_mm3"].is_null());
    assert_eq!(n2["lung_rads"]["category"], "3");
    assert!(n2["brock"]["probability"].as_f64().is_some());
    let c2 = &cards[1];
    assert!(
        c2["summary"]
            .as_str()
            .unwrap()
            .starts_with("Nodule 2 (left lower lobe): 6 mm solid; model: not scored"),
        "{c2}"
    );
    assert!(
        c2["detail"]
            .as_str()
            .unwrap()
            .contains("**Not measured on the CT**: the stated position"),
        "{c2}"
    );

    eprintln!(
        "nodule 1: measured mean {measured:.2} mm (long {} / short {}), volume {volume:.1} mm³, model {prob:.4}, Brock {}, Mayo {}, Lung-RADS {}; nodule 2: Brock {}, Mayo {}",
        n1["size"]["long_axis_mm"],
        n1["size"]["short_axis_mm"],
        n1["brock"]["probability"],
        n1["mayo"]["probability"],
        n1["lung_rads"]["category"],
        n2["brock"]["probability"],
        n2["mayo"]["probability"],
    );
    // ---- the prediction row
    assert_eq!(p.model_id, "test-sphericity");
    assert!(p.review_suggested);
    let top = nodules
        .iter()
        .filter_map(|n| n["model"]["probability"].as_f64())
        .fold(0.0f64, f64::max);
    assert!(close(
        p.risk.unwrap(),
        top.max(n2["brock"]["probability"].as_f64().unwrap_or(0.0)),
        1e-12
    ));
    assert_eq!(r["model"]["id"], "test-sphericity");
    assert_eq!(r["study"]["series_uid"], exp["series_uid"]);
    assert_eq!(
        r["study"]["imaging_study"],
        "ImagingStudy/lung-nodule-1-img-1"
    );

    // ---- the stored prediction is served like any other: FHIR
    // RiskAssessment and the review page
    let token = crate::outputs::user_token(&app, &["user/RiskAssessment.read", "review.write"]);
    let ra = crate::outputs::get(
        &app,
        &format!("/fhir/RiskAssessment/{}", p.id),
        Some(&token),
    )
    .await;
    assert_eq!(ra.status(), 200);
    let ra: Value = ra.json().await.unwrap();
    assert_eq!(ra["resourceType"], "RiskAssessment");
    let review = crate::outputs::get(&app, &format!("/review/{}", p.id), Some(&token)).await;
    assert_eq!(review.status(), 200);
    let page = review.text().await.unwrap();
    assert!(page.contains("lung-nodule-malignancy"), "{page}");

    // ---- without the SEG: the same finding is segmented around its point
    let mut no_seg = hook.clone();
    no_seg["prefetch"]["imaging"]["entry"][0]["resource"]["series"]
        .as_array_mut()
        .unwrap()
        .truncate(1);
    let body = pending_then_scored(&app, &no_seg, 1).await;
    assert_eq!(body["cards"].as_array().unwrap().len(), 2);
    let p = latest(&app).await;
    let n1 = &p.result["prediction"]["nodules"][0];
    assert_eq!(n1["mask_source"]["method"], "point-seeded", "{n1}");
    assert!(n1["seg"].is_null());
    let seeded = n1["size"]["volume_mm3"].as_f64().unwrap();
    let seg = exp["mask_volume_mm3"].as_f64().unwrap();
    eprintln!(
        "point-seeded: {seeded:.1} mm³ (sphere radius {} mm) vs SEG {seg:.1} mm³; measured mean {}",
        n1["mask_source"]["radius_mm"], n1["size"]["measured_mean_diameter_mm"]
    );
    assert!(
        (0.99 * seg..1.5 * seg).contains(&seeded),
        "seeded {seeded} mm³ vs SEG {seg} mm³"
    );
    assert!(
        body["cards"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("segmented around the stated point"),
        "{body}"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodules_are_scored_after_the_imaging_job_sqlite() {
    nodules_are_scored_after_the_imaging_job(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodules_are_scored_after_the_imaging_job_postgres() {
    nodules_are_scored_after_the_imaging_job(Backend::Postgres).await;
}

/// The shipped model (`cds-hooks/lung-nodule-malignancy/model`, with the
/// text encoder from `scripts/setup-models.sh`) is what `serve` loads: the
/// fixture's nodules get its probability, interval, conformal set and
/// radiomics drivers, and the cards say it learned from rendered pixels.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shipped_model_scores_the_fixture_nodules() {
    let Some(orthanc) = start_orthanc().await else {
        return;
    };
    let mut files = list_files(&fixture_path("dicom/ct_nodule")).unwrap();
    files.extend(list_files(&fixture_path("dicom/seg_nodule_lung1")).unwrap());
    upload_folder(&orthanc, &files).await;
    let app = spawn_app_with_overrides(
        Backend::Sqlite,
        |s| {
            s.imaging.workers_in_serve = 1;
            s.imaging.poll_interval_ms = 50;
        },
        ServiceOverrides::default(),
    )
    .await;
    let body = pending_then_scored(&app, &hook(&orthanc.dicomweb_base()), 0).await;

    let cards = body["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 2, "{body}");
    let p = latest(&app).await;
    assert_eq!(p.model_id, "autorad-lung", "the shipped model was loaded");
    let r = &p.result["prediction"];
    assert_eq!(r["status"], "scored", "{r}");
    assert_eq!(r["model"]["trained_on_rendered_pixels"], true);
    let mut highest: f64 = 0.0;
    for (card, n) in cards.iter().zip(r["nodules"].as_array().unwrap()) {
        if n["model"].is_null() {
            // The fixture's second finding lies outside the series on
            // purpose: its card says why and shows the baselines only.
            assert!(n["error"].as_str().unwrap().contains("outside"), "{n}");
            assert!(n["brock"]["probability"].as_f64().is_some(), "{n}");
            continue;
        }
        let m = &n["model"];
        let prob = m["probability"].as_f64().unwrap_or_else(|| panic!("{n}"));
        let (lo, hi) = (
            m["interval"][0].as_f64().unwrap(),
            m["interval"][1].as_f64().unwrap(),
        );
        assert!(0.0 < prob && prob < 1.0, "{prob}");
        assert!(lo <= hi && (0.0..=1.0).contains(&lo) && hi <= 1.0, "{m}");
        let set = m["prediction_set"].as_array().unwrap();
        assert!(!set.is_empty() || m["review_suggested"] == true, "{m}");
        assert_eq!(m["review_suggested"], set.len() != 1, "the gate is the set");
        let drivers = m["radiomics_drivers"].as_array().unwrap();
        assert!(!drivers.is_empty(), "drivers computed by the model");
        assert!(drivers.iter().all(|d| d["contribution"].as_f64().is_some()));
        assert!(
            card["source"]["label"]
                .as_str()
                .unwrap()
                .contains("rendered"),
            "{}",
            card["source"]
        );
        assert!(
            card["summary"]
                .as_str()
                .unwrap()
                .contains(&format!("model {:.0} %", prob * 100.0)),
            "the card shows the model's probability {prob}: {card}"
        );
        highest = highest.max(prob);
    }
    assert!(highest > 0.0, "at least one nodule scored by the model");
    assert!(
        (p.risk.unwrap() - highest).abs() < 1e-12,
        "risk = highest nodule"
    );
    app.cleanup().await;
}

/// A service folder without the model (e.g. a deployment that has not
/// installed it): the service still answers, with the baselines, and the
/// card says no model is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_model_folder_the_cards_say_so_and_keep_the_baselines() {
    let services = tempfile::tempdir().unwrap();
    let dir = services.path().join(SERVICE);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("cds-hooks")
            .join(SERVICE)
            .join("service.toml"),
        dir.join("service.toml"),
    )
    .unwrap();
    let folder = services.path().to_path_buf();
    let app = spawn_app_with_overrides(
        Backend::Sqlite,
        move |s| s.services.dir = folder.clone(),
        ServiceOverrides::default(),
    )
    .await;
    let mut h = fixture(HOOK);
    h["prefetch"]["imaging"] =
        serde_json::json!({"resourceType": "Bundle", "type": "searchset", "total": 0});
    let body = post(&app, &h).await;
    let card = &body["cards"][0];
    assert!(
        card["source"]["label"]
            .as_str()
            .unwrap()
            .contains("no nodule model installed"),
        "{card}"
    );
    let p = latest(&app).await;
    assert_eq!(p.model_id, "baselines-only");
    assert_eq!(p.model_version, "brock-mayo-lungrads");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_patient_without_a_chest_ct_gets_a_clear_card_and_no_job() {
    let app = spawn_app_with_overrides(Backend::Sqlite, |_| {}, ServiceOverrides::default()).await;
    let mut h = fixture(HOOK);
    h["prefetch"]["imaging"] =
        serde_json::json!({"resourceType": "Bundle", "type": "searchset", "total": 0});
    let body = post(&app, &h).await;
    let cards = body["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 1);
    assert!(
        cards[0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("No chest CT on record"),
        "{body}"
    );
    // The source names the shipped model (loaded from the service folder).
    assert!(
        cards[0]["source"]["label"]
            .as_str()
            .unwrap()
            .contains("autorad-lung 1.0.0-full"),
        "{}",
        cards[0]["source"]
    );
    assert_eq!(app.db.count("jobs").await, 0);
    let p = latest(&app).await;
    assert_eq!(p.result["prediction"]["status"], "no_chest_ct");
    assert_eq!(p.model_id, "autorad-lung", "the shipped model is loaded");
    assert_eq!(p.model_version, "1.0.0-full");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pacs_off_the_allow_list_is_not_queued_and_the_card_says_why() {
    let app = spawn_app_with_overrides(
        Backend::Sqlite,
        |s| {
            s.imaging.dicomweb.client.allowed_base_urls =
                vec!["https://pacs.example.org/dicom-web".into()];
        },
        ServiceOverrides::default(),
    )
    .await;
    let body = post(&app, &hook("http://127.0.0.1:9/dicom-web")).await;
    let card = &body["cards"][0];
    assert!(
        card["summary"]
            .as_str()
            .unwrap()
            .contains("could not be analysed"),
        "{body}"
    );
    assert!(
        card["detail"]
            .as_str()
            .unwrap()
            .contains("not on the DICOMweb allow-list"),
        "{body}"
    );
    assert_eq!(app.db.count("jobs").await, 0);
    assert_eq!(
        latest(&app).await.result["prediction"]["status"],
        "imaging_failed"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovery_lists_the_nodule_service() {
    let app = spawn_app_with_overrides(Backend::Sqlite, |_| {}, ServiceOverrides::default()).await;
    let body: Value = app.discovery().await.json().await.unwrap();
    let s = body["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == SERVICE)
        .expect("listed");
    assert_eq!(s["hook"], "patient-view");
    assert!(
        s["prefetch"]["imaging"]
            .as_str()
            .unwrap()
            .starts_with("ImagingStudy?")
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chest_ct_whose_findings_are_only_in_an_sr_says_sr_is_not_read_yet() {
    let app = spawn_app_with_overrides(Backend::Sqlite, |_| {}, ServiceOverrides::default()).await;
    let mut h = hook("http://127.0.0.1:9/dicom-web");
    // Only the smoking status stays; the second series becomes an SR.
    h["prefetch"]["observations"]["entry"]
        .as_array_mut()
        .unwrap()
        .truncate(1);
    let series = &mut h["prefetch"]["imaging"]["entry"][0]["resource"]["series"][1];
    series["modality"]["code"] = Value::String("SR".into());
    series["uid"] = Value::String("1.2.826.0.1.3680043.8.498.77".into());
    let body = post(&app, &h).await;
    let card = &body["cards"][0];
    assert!(
        card["summary"]
            .as_str()
            .unwrap()
            .starts_with("No lung nodule findings recorded for the chest CT of 2026-10-15"),
        "{body}"
    );
    assert!(
        card["detail"].as_str().unwrap().contains(
            "DICOM SR (TID 1500) measurement reports are not read yet: the study's SR series (1.2.826.0.1.3680043.8.498.77) were not used"
        ),
        "{body}"
    );
    assert_eq!(app.db.count("jobs").await, 0);
    let p = latest(&app).await;
    assert_eq!(p.result["prediction"]["status"], "no_nodule_findings");
    app.cleanup().await;
}
