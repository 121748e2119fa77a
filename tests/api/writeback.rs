//! Write-back of RiskAssessments to the EHR's FHIR server (issue 6 item 1),
//! with a wiremock standing in for the EHR:
//!
//! - the hook answers at once (the EHR takes seconds) and the job PUTs a
//!   RiskAssessment and a Provenance that fhir-sdk parses, with the
//!   workers' own token, never the hook's;
//! - a transaction Bundle with a client-credentials token; a token the
//!   FHIR server refuses is replaced once; a token endpoint refusing our
//!   client dead-letters the job without echoing the secret;
//! - a 503 is retried and then succeeds;
//! - a 400 is dead-lettered at once with the OperationOutcome's text;
//! - with write-back off (the default), or for a service not listed, no job.

use std::time::{Duration, Instant};

use fhir_sdk::r4b::resources::{Bundle, Provenance, Resource, RiskAssessment};
use oncohooks::config::{Settings, WritebackAuthMethod, WritebackMode};
use oncohooks::store::{Job, JobStatus};
use oncohooks::writeback::{JOB_KIND, dedupe_key};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::{FHIR_TOKEN, TestApp, fixture, spawn_app_with};
use crate::support::db::Backend;

const SERVICE: &str = "cachexia-risk";
const PATIENT: &str = "cachexia-full";
/// The workers' static credential for the EHR.
const WORKER_TOKEN: &str = "writeback-worker-token-not-a-secret";

fn enable(s: &mut Settings, ehr: &MockServer, mode: WritebackMode) {
    s.writeback.enabled = true;
    s.writeback.base_url = Some(format!("{}/fhir", ehr.uri()));
    s.writeback.mode = mode;
    s.writeback.retry_base_ms = 200;
    s.writeback.poll_interval_ms = 50;
    s.writeback.auth.method = WritebackAuthMethod::Bearer;
    s.writeback.auth.bearer_token = Some(WORKER_TOKEN.to_owned().into());
}

/// The full-prefetch hook, naming the EHR as its FHIR server and carrying
/// the hook's own access token (which the write-back must not use).
fn hook(ehr: &MockServer) -> Value {
    let mut h = fixture("hooks/cachexia-full.json");
    h["fhirServer"] = json!(format!("{}/fhir", ehr.uri()));
    h["fhirAuthorization"] = json!({
        "access_token": FHIR_TOKEN, "token_type": "Bearer", "expires_in": 300,
        "scope": "user/*.read", "subject": "oncohooks"
    });
    h
}

/// Calls the hook; returns the stored prediction's id and how long the
/// call took.
async fn call_hook(app: &TestApp, ehr: &MockServer) -> (Uuid, Duration) {
    let started = Instant::now();
    let resp = app.post_hook(SERVICE, &hook(ehr)).await;
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let url = body["cards"][0]["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["type"] == "absolute")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = Uuid::parse_str(url.rsplit('/').next().unwrap()).unwrap();
    (id, elapsed)
}

async fn jobs(app: &TestApp, prediction: Uuid) -> Vec<Job> {
    app.db
        .store
        .jobs_by_dedupe_key(&dedupe_key(prediction))
        .await
        .unwrap()
}

/// The prediction's write-back job once it is finished (done or dead).
async fn finished(app: &TestApp, prediction: Uuid) -> Job {
    for _ in 0..300 {
        if let Some(j) = jobs(app, prediction)
            .await
            .into_iter()
            .find(|j| matches!(j.status, JobStatus::Done | JobStatus::Dead))
        {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the write-back job did not finish: {:?}",
        jobs(app, prediction).await
    );
}

fn requests_to(all: &[Request], verb: &str, p: &str) -> Vec<Request> {
    all.iter()
        .filter(|r| r.method.as_str() == verb && r.url.path() == p)
        .cloned()
        .collect()
}

fn authorization(r: &Request) -> String {
    r.headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn the_hook_answers_at_once_and_the_job_puts_what_fhir_sdk_parses(backend: Backend) {
    let ehr = MockServer::start().await;
    // The EHR is slow: a hook that waited for it would take 3 s.
    Mock::given(method("PUT"))
        .and(path_regex(r"^/fhir/RiskAssessment/[0-9a-f-]{36}$"))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(3)))
        .mount(&ehr)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex(r"^/fhir/Provenance/[0-9a-f-]{36}$"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&ehr)
        .await;
    let app = spawn_app_with(backend, |s| enable(s, &ehr, WritebackMode::Update)).await;

    let (id, elapsed) = call_hook(&app, &ehr).await;
    assert!(
        elapsed < Duration::from_secs(3),
        "the hook waited for the write-back: {elapsed:?}"
    );
    // The job was stored with the prediction, before the answer went out.
    let queued = jobs(&app, id).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].kind, JOB_KIND);
    assert_eq!(queued[0].payload, json!({"prediction_id": id}));

    let job = finished(&app, id).await;
    assert_eq!(job.status, JobStatus::Done, "{job:?}");
    assert_eq!(job.attempts, 1);
    let result = job.result.unwrap();
    assert_eq!(
        result["written"],
        json!([format!("RiskAssessment/{id}"), format!("Provenance/{id}")])
    );
    assert_eq!(result["http_status"], json!([201, 201]));

    let all = ehr.received_requests().await.unwrap();
    let ra_put = requests_to(&all, "PUT", &format!("/fhir/RiskAssessment/{id}"));
    assert_eq!(ra_put.len(), 1);
    let ra_req = &ra_put[0];
    // The workers' own credential, never the hook's token.
    assert_eq!(authorization(ra_req), format!("Bearer {WORKER_TOKEN}"));
    assert!(all.iter().all(|r| !authorization(r).contains(FHIR_TOKEN)));
    assert_eq!(
        ra_req.headers.get("content-type").unwrap(),
        "application/fhir+json"
    );
    let ra: RiskAssessment = serde_json::from_slice(&ra_req.body).expect("a FHIR RiskAssessment");
    assert_eq!(ra.id.as_deref(), Some(id.to_string().as_str()));
    assert_eq!(
        ra.subject.reference.as_deref(),
        Some(format!("Patient/{PATIENT}").as_str())
    );
    assert!(ra.meta.is_none(), "our meta.lastUpdated is not sent");
    assert!(!ra.prediction.is_empty() && !ra.basis.is_empty());
    let stored = app.db.store.get_prediction(id).await.unwrap().unwrap();
    assert_eq!(
        ra.method.as_ref().unwrap().coding[0]
            .as_ref()
            .unwrap()
            .code
            .as_deref(),
        Some(stored.record.model_id.as_str())
    );
    let prov_put = requests_to(&all, "PUT", &format!("/fhir/Provenance/{id}"));
    let prov: Provenance = serde_json::from_slice(&prov_put[0].body).expect("a FHIR Provenance");
    assert_eq!(
        prov.target[0].as_ref().unwrap().reference.as_deref(),
        Some(format!("RiskAssessment/{id}").as_str())
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_answers_at_once_and_the_job_puts_what_fhir_sdk_parses_sqlite() {
    the_hook_answers_at_once_and_the_job_puts_what_fhir_sdk_parses(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_answers_at_once_and_the_job_puts_what_fhir_sdk_parses_postgres() {
    the_hook_answers_at_once_and_the_job_puts_what_fhir_sdk_parses(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_bundle_goes_out_with_a_client_credentials_token() {
    let ehr = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "cc-token-1", "token_type": "bearer", "expires_in": 300,
            "scope": "system/RiskAssessment.write system/Provenance.write"
        })))
        .mount(&ehr)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "Bundle", "type": "transaction-response",
            "entry": [{"response": {"status": "201 Created"}}, {"response": {"status": "200 OK"}}]
        })))
        .mount(&ehr)
        .await;
    let app = spawn_app_with(Backend::Sqlite, |s| {
        enable(s, &ehr, WritebackMode::Transaction);
        s.writeback.auth.method = WritebackAuthMethod::ClientCredentials;
        s.writeback.auth.bearer_token = None;
        s.writeback.auth.token_url = Some(format!("{}/oauth/token", ehr.uri()));
        s.writeback.auth.client_id = Some("oncohooks writer".into());
        s.writeback.auth.client_secret = Some("s3cret/with:chars".to_owned().into());
    })
    .await;

    let (first, _) = call_hook(&app, &ehr).await;
    let (second, _) = call_hook(&app, &ehr).await;
    for id in [first, second] {
        let job = finished(&app, id).await;
        assert_eq!(job.status, JobStatus::Done, "{job:?}");
        assert_eq!(job.result.unwrap()["http_status"], json!([200, 201, 200]));
    }
    let all = ehr.received_requests().await.unwrap();
    // One token for both jobs (cached), asked for with HTTP Basic
    // (RFC 6749 §2.3.1: id and secret form-encoded first).
    let token_calls = requests_to(&all, "POST", "/oauth/token");
    assert_eq!(token_calls.len(), 1);
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "oncohooks+writer:s3cret%2Fwith%3Achars",
    );
    assert_eq!(authorization(&token_calls[0]), format!("Basic {basic}"));
    let form = String::from_utf8(token_calls[0].body.clone()).unwrap();
    assert!(form.contains("grant_type=client_credentials"), "{form}");

    let posts = requests_to(&all, "POST", "/fhir");
    assert_eq!(posts.len(), 2);
    for (post, id) in posts.iter().zip([first, second]) {
        assert_eq!(authorization(post), "Bearer cc-token-1");
        let bundle: Bundle = serde_json::from_slice(&post.body).expect("a FHIR Bundle");
        assert_eq!(bundle.r#type.to_string(), "transaction");
        let entries: Vec<_> = bundle.entry.iter().flatten().collect();
        assert_eq!(entries.len(), 2);
        match &entries[0].resource {
            Some(Resource::RiskAssessment(ra)) => {
                assert_eq!(ra.id.as_deref(), Some(id.to_string().as_str()))
            }
            other => panic!("first entry is not a RiskAssessment: {other:?}"),
        }
        assert!(matches!(entries[1].resource, Some(Resource::Provenance(_))));
        let req = entries[0].request.as_ref().unwrap();
        assert_eq!(req.method.to_string(), "PUT");
        assert_eq!(req.url, format!("RiskAssessment/{id}"));
    }
    app.cleanup().await;
}

fn client_credentials(s: &mut Settings, ehr: &MockServer) {
    s.writeback.auth.method = WritebackAuthMethod::ClientCredentials;
    s.writeback.auth.bearer_token = None;
    s.writeback.auth.token_url = Some(format!("{}/oauth/token", ehr.uri()));
    s.writeback.auth.client_id = Some("oncohooks".into());
    s.writeback.auth.client_secret = Some("client-secret-value".to_owned().into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_replaced_once_within_the_same_attempt() {
    let ehr = MockServer::start().await;
    // The first token is refused by the FHIR server (revoked early).
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "revoked-token", "token_type": "Bearer", "expires_in": 3600}),
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&ehr)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "fresh-token", "token_type": "Bearer", "expires_in": 3600}),
        ))
        .with_priority(2)
        .mount(&ehr)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer fresh-token",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"resourceType": "Bundle", "type": "transaction-response", "entry": []}),
        ))
        .with_priority(1)
        .mount(&ehr)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .respond_with(ResponseTemplate::new(401))
        .with_priority(2)
        .mount(&ehr)
        .await;
    let app = spawn_app_with(Backend::Sqlite, |s| {
        enable(s, &ehr, WritebackMode::Transaction);
        client_credentials(s, &ehr);
    })
    .await;
    let (id, _) = call_hook(&app, &ehr).await;
    let job = finished(&app, id).await;
    assert_eq!(job.status, JobStatus::Done, "{job:?}");
    assert_eq!(job.attempts, 1, "the refresh happens inside the attempt");
    let all = ehr.received_requests().await.unwrap();
    assert_eq!(requests_to(&all, "POST", "/oauth/token").len(), 2);
    assert_eq!(requests_to(&all, "POST", "/fhir").len(), 2);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_refusing_our_client_dead_letters_without_the_secret() {
    let ehr = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": "invalid_client",
            "error_description": "client authentication failed for client-secret-value"
        })))
        .mount(&ehr)
        .await;
    let app = spawn_app_with(Backend::Sqlite, |s| {
        enable(s, &ehr, WritebackMode::Transaction);
        client_credentials(s, &ehr);
    })
    .await;
    let (id, _) = call_hook(&app, &ehr).await;
    let job = finished(&app, id).await;
    assert_eq!(job.status, JobStatus::Dead, "{job:?}");
    assert_eq!(job.attempts, 1);
    let error = job.last_error.unwrap();
    assert!(error.contains("invalid_client"), "{error}");
    assert!(!error.contains("client-secret-value"), "{error}");
    let all = ehr.received_requests().await.unwrap();
    assert!(requests_to(&all, "POST", "/fhir").is_empty());
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_and_then_succeeds() {
    let ehr = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "transient", "diagnostics": "database restarting"}]
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&ehr)
        .await;
    Mock::given(method("POST"))
        .and(path("/fhir"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "Bundle", "type": "transaction-response", "entry": []
        })))
        .with_priority(2)
        .mount(&ehr)
        .await;
    let app = spawn_app_with(Backend::Sqlite, |s| {
        enable(s, &ehr, WritebackMode::Transaction)
    })
    .await;

    let (id, _) = call_hook(&app, &ehr).await;
    let job = finished(&app, id).await;
    assert_eq!(job.status, JobStatus::Done, "{job:?}");
    assert_eq!(job.attempts, 2, "one failure, one success");
    let posts = requests_to(&ehr.received_requests().await.unwrap(), "POST", "/fhir");
    assert_eq!(posts.len(), 2);
    // The same Bundle both times: PUTs to the same ids, so the retry
    // cannot duplicate anything.
    assert_eq!(posts[0].body, posts[1].body);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_dead_lettered_at_once_with_the_operation_outcome() {
    let ehr = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path_regex(r"^/fhir/RiskAssessment/"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid",
                       "diagnostics": "Patient/cachexia-full is not known to this server",
                       "expression": ["RiskAssessment.subject"]}]
        })))
        .mount(&ehr)
        .await;
    let app = spawn_app_with(Backend::Sqlite, |s| enable(s, &ehr, WritebackMode::Update)).await;

    let (id, _) = call_hook(&app, &ehr).await;
    let job = finished(&app, id).await;
    assert_eq!(job.status, JobStatus::Dead, "{job:?}");
    assert_eq!(job.attempts, 1, "a 400 is not retried");
    let error = job.last_error.unwrap();
    assert!(error.contains("HTTP 400"), "{error}");
    assert!(
        error.contains(
            "error invalid: Patient/cachexia-full is not known to this server (at RiskAssessment.subject)"
        ),
        "{error}"
    );
    assert!(!error.contains(WORKER_TOKEN), "{error}");
    let dead = app.db.store.dead_letters(JOB_KIND).await.unwrap();
    assert_eq!(dead.len(), 1);
    // Nothing more is sent, and the Provenance is not sent after a refused
    // RiskAssessment.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let all = ehr.received_requests().await.unwrap();
    assert_eq!(
        all.len(),
        1,
        "{:?}",
        all.iter()
            .map(|r| r.url.path().to_owned())
            .collect::<Vec<_>>()
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_write_back_off_or_for_another_service_no_job_is_created() {
    let ehr = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(201))
        .mount(&ehr)
        .await;
    // Off: the embedded default.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        assert!(!s.writeback.enabled, "write-back is off by default");
    })
    .await;
    let (id, _) = call_hook(&app, &ehr).await;
    assert!(jobs(&app, id).await.is_empty());
    assert_eq!(app.db.count("jobs").await, 0);
    app.cleanup().await;

    // On, for another service only.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        enable(s, &ehr, WritebackMode::Update);
        s.writeback.services = vec!["lung-nodule-malignancy".into()];
    })
    .await;
    let (id, _) = call_hook(&app, &ehr).await;
    assert!(jobs(&app, id).await.is_empty());
    assert_eq!(app.db.count("jobs").await, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(ehr.received_requests().await.unwrap().is_empty());
    app.cleanup().await;
}
