//! FHIR outputs and access control: stored predictions served as FHIR R4
//! RiskAssessment (parsed back with fhir-sdk), paging, the
//! CapabilityStatement, bearer access tokens (401/403), and the AuditEvent
//! every successful access leaves.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fhir_sdk::r4b::resources::{
    AuditEvent, Bundle, CapabilityStatement, Provenance, Resource, RiskAssessment,
};
use oncohooks::auth::access::{DEMO_AUDIENCE, DEMO_USER_ISSUER};
use serde_json::{Value, json};

use crate::helpers::{TestApp, fixture, spawn_app, spawn_app_with};
use crate::support::db::Backend;

pub const PATIENT: &str = "cachexia-full";

pub fn user_token(app: &TestApp, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    oncohooks::auth::dev_access_token(
        &app.settings.access,
        "dr-test",
        &scopes,
        Duration::from_secs(300),
    )
    .unwrap()
}

pub async fn get(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = app.http.get(format!("{}{path}", app.address));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

/// `n` hook calls for the fixture patient: `n` stored predictions.
pub async fn make_predictions(app: &TestApp, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        let resp = app
            .post_hook("cachexia-risk", &fixture("hooks/cachexia-full.json"))
            .await;
        assert_eq!(resp.status(), 200);
        out.push(resp.json().await.unwrap());
    }
    out
}

fn next_link(b: &Value) -> Option<String> {
    b["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str().map(str::to_owned))
}

async fn risk_assessments_round_trip_and_page(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    make_predictions(&app, 3).await;
    let stored_model = app
        .db
        .store
        .recent_predictions("cachexia-risk", PATIENT, 1)
        .await
        .unwrap()[0]
        .model_id
        .clone();
    let token = user_token(&app, &["user/RiskAssessment.rs"]);

    let resp = get(
        &app,
        &format!("/fhir/RiskAssessment?subject=Patient/{PATIENT}&_count=2"),
        Some(&token),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/fhir+json"
    );
    let first: Value = resp.json().await.unwrap();
    // What we serve parses as a FHIR Bundle of RiskAssessments with fhir-sdk.
    let bundle: Bundle = serde_json::from_value(first.clone()).expect("a FHIR Bundle");
    assert_eq!(bundle.total, Some(3));
    assert_eq!(bundle.entry.len(), 2);
    let mut ids = Vec::new();
    for e in bundle.entry.iter().flatten() {
        let Some(Resource::RiskAssessment(ra)) = &e.resource else {
            panic!("not a RiskAssessment: {e:?}");
        };
        assert_eq!(
            ra.subject.reference.as_deref(),
            Some(format!("Patient/{PATIENT}").as_str())
        );
        assert!(!ra.basis.is_empty(), "basis cites the inputs");
        let method = ra.method.as_ref().unwrap();
        // The method names the model that made the stored prediction: the
        // fusion model when its weights are shipped, else the classic indices.
        assert_eq!(
            method.coding[0].as_ref().unwrap().code.as_deref(),
            Some(stored_model.as_str())
        );
        assert!(
            ra.note[0]
                .as_ref()
                .unwrap()
                .text
                .contains("expert review suggested")
        );
        ids.push(ra.id.clone().unwrap());
    }

    // Paging: the next link gives the rest, and then there is no next.
    let next = next_link(&first).expect("a next link");
    let second: Value = app
        .http
        .get(&next)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second_bundle: Bundle = serde_json::from_value(second.clone()).unwrap();
    assert_eq!(second_bundle.entry.len(), 1);
    assert!(next_link(&second).is_none());
    let last = &second["entry"][0]["resource"]["id"];
    ids.push(last.as_str().unwrap().to_owned());
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct predictions over two pages");

    // Read one, with its Provenance.
    let ra: RiskAssessment = get(
        &app,
        &format!("/fhir/RiskAssessment/{}", ids[0]),
        Some(&token),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(ra.id.as_deref(), Some(ids[0].as_str()));
    let prov: Provenance = get(&app, &format!("/fhir/Provenance/{}", ids[0]), Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        prov.target[0].as_ref().unwrap().reference.as_deref(),
        Some(format!("RiskAssessment/{}", ids[0]).as_str())
    );

    // Date filters: nothing in the future, everything since 2020.
    let none: Value = get(&app, "/fhir/RiskAssessment?date=ge2099-01-01", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["total"], 0);
    let all: Value = get(
        &app,
        "/fhir/RiskAssessment?date=ge2020&_revinclude=Provenance:target",
        Some(&token),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(all["total"], 3);
    assert_eq!(
        all["entry"].as_array().unwrap().len(),
        6,
        "3 matches + 3 Provenance"
    );

    // Unknown id, bad parameters.
    assert_eq!(
        get(&app, "/fhir/RiskAssessment/not-a-uuid", Some(&token))
            .await
            .status(),
        404
    );
    let bad = get(&app, "/fhir/RiskAssessment?subjet=Patient/x", Some(&token)).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["field"], "subjet");
    let bad = get(&app, "/fhir/RiskAssessment?date=sa2026", Some(&token)).await;
    assert_eq!(bad.status(), 400);
    app.cleanup().await;
}

#[tokio::test]
async fn risk_assessments_round_trip_through_fhir_sdk_and_page_sqlite() {
    risk_assessments_round_trip_and_page(Backend::Sqlite).await;
}

#[tokio::test]
async fn risk_assessments_round_trip_through_fhir_sdk_and_page_postgres() {
    risk_assessments_round_trip_and_page(Backend::Postgres).await;
}

#[tokio::test]
async fn metadata_is_a_capability_statement_and_needs_no_token() {
    let app = spawn_app().await;
    let resp = get(&app, "/fhir/metadata", None).await;
    assert_eq!(resp.status(), 200);
    let cs: CapabilityStatement = resp.json().await.unwrap();
    let types: Vec<String> = cs.rest[0]
        .as_ref()
        .unwrap()
        .resource
        .iter()
        .flatten()
        .map(|r| format!("{:?}", r.r#type))
        .collect();
    assert!(
        types.iter().any(|t| t.contains("RiskAssessment")),
        "{types:?}"
    );
    app.cleanup().await;
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn missing_expired_foreign_or_underscoped_tokens_are_refused_with_json() {
    let app = spawn_app().await;
    make_predictions(&app, 1).await;
    let path = format!("/fhir/RiskAssessment?subject={PATIENT}");

    let resp = get(&app, &path, None).await;
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );

    let expired = oncohooks::auth::sign_demo(&json!({
        "iss": DEMO_USER_ISSUER, "sub": "dr-test", "aud": DEMO_AUDIENCE,
        "iat": now() - 900, "exp": now() - 600, "scope": "user/RiskAssessment.rs"
    }))
    .unwrap();
    let resp = get(&app, &path, Some(&expired)).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // A CDS client token (another issuer, aud = a URL) is not an access token.
    let cds = app.token_for(&path);
    assert_eq!(get(&app, &path, Some(&cds)).await.status(), 401);
    // Garbage.
    assert_eq!(get(&app, &path, Some("abc.def.ghi")).await.status(), 401);

    // Valid token, wrong scope.
    let audit_only = user_token(&app, &["audit.read"]);
    let resp = get(&app, &path, Some(&audit_only)).await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    assert!(body["message"].as_str().unwrap().contains("RiskAssessment"));
    // Patient-level SMART scopes are not honoured (no launch context here).
    let patient_scope = user_token(&app, &["patient/RiskAssessment.read"]);
    assert_eq!(get(&app, &path, Some(&patient_scope)).await.status(), 403);
    // AuditEvent needs audit.read, not a RiskAssessment scope.
    let ra_only = user_token(&app, &["user/RiskAssessment.read"]);
    assert_eq!(
        get(&app, "/fhir/AuditEvent", Some(&ra_only)).await.status(),
        403
    );
    // The audit API needs its scopes too.
    assert_eq!(
        get(&app, "/audit/export.ndjson", Some(&audit_only))
            .await
            .status(),
        403
    );
    assert_eq!(get(&app, "/audit/predictions", None).await.status(), 401);

    // Refusals leave no access event.
    assert_eq!(app.db.count("audit_events").await, 0);
    // v1 scope works.
    assert_eq!(get(&app, &path, Some(&ra_only)).await.status(), 200);
    assert_eq!(app.db.count("audit_events").await, 1);
    app.cleanup().await;
}

async fn every_access_is_an_audit_event(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    make_predictions(&app, 2).await;
    let reader = user_token(&app, &["user/RiskAssessment.read"]);
    let search: Value = get(
        &app,
        &format!("/fhir/RiskAssessment?subject=Patient/{PATIENT}"),
        Some(&reader),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = search["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        get(&app, &format!("/fhir/RiskAssessment/{id}"), Some(&reader))
            .await
            .status(),
        200
    );
    assert_eq!(app.db.count("audit_events").await, 2);

    let auditor = user_token(&app, &["audit.read"]);
    let resp = get(
        &app,
        &format!("/fhir/AuditEvent?patient={PATIENT}"),
        Some(&auditor),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let events: Value = resp.json().await.unwrap();
    let bundle: Bundle = serde_json::from_value(events.clone()).unwrap();
    assert_eq!(bundle.total, Some(2));
    let mut ops = Vec::new();
    for e in bundle.entry.iter().flatten() {
        let Some(Resource::AuditEvent(ev)) = &e.resource else {
            panic!("not an AuditEvent");
        };
        let ev: &AuditEvent = ev;
        // Who: the token's subject, under its issuer.
        let who = ev.agent[0].as_ref().unwrap().who.as_ref().unwrap();
        let ident = who.identifier.as_ref().unwrap();
        assert_eq!(ident.value.as_deref(), Some("dr-test"));
        assert_eq!(ident.system.as_deref(), Some(DEMO_USER_ISSUER));
        // Which patient.
        assert!(ev.entity.iter().flatten().any(|en| {
            en.what.as_ref().and_then(|w| w.reference.as_deref())
                == Some(format!("Patient/{PATIENT}").as_str())
        }));
        ops.push(ev.outcome_desc.clone().unwrap());
    }
    ops.sort();
    assert_eq!(
        ops,
        ["fhir.RiskAssessment.read", "fhir.RiskAssessment.search"]
    );
    // The read names the resource; when is recorded.
    let read = events["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["outcomeDesc"] == "fhir.RiskAssessment.read")
        .unwrap();
    assert!(
        read["resource"]["entity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|en| en["what"]["reference"] == format!("RiskAssessment/{id}"))
    );
    assert!(read["resource"]["recorded"].as_str().is_some());
    // Reading the trail is itself on the trail; the table refuses edits.
    assert_eq!(app.db.count("audit_events").await, 3);
    assert!(
        app.db
            .store
            .execute_raw("DELETE FROM audit_events")
            .await
            .is_err()
    );
    app.cleanup().await;
}

#[tokio::test]
async fn every_access_is_an_audit_event_sqlite() {
    every_access_is_an_audit_event(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_access_is_an_audit_event_postgres() {
    every_access_is_an_audit_event(Backend::Postgres).await;
}

#[tokio::test]
async fn cards_link_to_the_review_app_with_the_prediction_id() {
    let app = spawn_app().await;
    let resp = make_predictions(&app, 1).await.remove(0);
    let links = resp["cards"][0]["links"].as_array().unwrap();
    let smart = links.iter().find(|l| l["type"] == "smart").unwrap();
    let ctx: Value = serde_json::from_str(smart["appContext"].as_str().unwrap()).unwrap();
    let id = ctx["predictionId"].as_str().unwrap();
    let absolute = links.iter().find(|l| l["type"] == "absolute").unwrap();
    assert_eq!(
        absolute["url"],
        format!("{}/review/{id}", app.address),
        "absolute fallback"
    );
    // The id is the stored prediction's.
    let stored = app
        .db
        .store
        .get_prediction(id.parse().unwrap())
        .await
        .unwrap();
    assert!(stored.is_some());
    // The SMART launch URL with the app context lands on the page.
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("appContext", smart["appContext"].as_str().unwrap())
        .finish();
    let launch = app
        .http
        .get(format!("{}/review/launch?{q}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(launch.status(), 303);
    assert_eq!(launch.headers()["location"], format!("/review/{id}"));
    app.cleanup().await;
}
