//! The audit API: search with every filter, one prediction in full, the
//! streamed exports, outcomes and the aggregates, the OpenAPI document.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with};
use crate::outputs::{PATIENT, get, make_predictions, user_token};
use crate::support::db::Backend;

async fn post_outcomes(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(format!("{}/audit/outcomes", app.address))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn json_of(app: &TestApp, path: &str, token: &str) -> Value {
    let resp = get(app, path, Some(token)).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

async fn search_detail_export_outcomes_and_aggregates(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let responses = make_predictions(&app, 3).await;
    let reader = user_token(&app, &["audit.read"]);

    // Override the first prediction's card.
    let card = responses[0]["cards"][0]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let fb = json!({"feedback": [{"card": card, "outcome": "overridden",
        "overrideReason": {"reason": responses[0]["cards"][0]["overrideReasons"][0], "userComment": "known"},
        "outcomeTimestamp": "2026-11-20T10:05:00Z"}]});
    assert_eq!(app.post_feedback("cachexia-risk", &fb).await.status(), 200);

    let all = json_of(&app, "/audit/predictions", &reader).await;
    assert_eq!(all["total"], 3);
    let overridden = json_of(&app, "/audit/predictions?feedback=overridden", &reader).await;
    assert_eq!(overridden["total"], 1);
    assert_eq!(overridden["items"][0]["feedback_outcome"], "overridden");
    assert!(overridden["items"][0]["override_reason"].is_string());
    let none = json_of(&app, "/audit/predictions?feedback=none", &reader).await;
    assert_eq!(none["total"], 2);
    let version = all["items"][0]["model_version"]
        .as_str()
        .unwrap()
        .to_owned();
    let model_id = all["items"][0]["model_id"].as_str().unwrap().to_owned();
    for q in [
        format!("service=cachexia-risk&patient={PATIENT}"),
        format!("model_version={version}"),
        format!("model_version={model_id}/{version}"),
        "review=false".to_owned(),
        "since=2020-01-01&until=2099-12-31".to_owned(),
    ] {
        let r = json_of(&app, &format!("/audit/predictions?{q}"), &reader).await;
        assert_eq!(r["total"], 3, "{q}");
    }
    for q in [
        "service=other",
        "patient=someone-else",
        "model_version=0.0.0",
        "review=true",
        "since=2099-01-01",
        "until=2020-01-01",
    ] {
        let r = json_of(&app, &format!("/audit/predictions?{q}"), &reader).await;
        assert_eq!(r["total"], 0, "{q}");
    }
    let paged = json_of(&app, "/audit/predictions?limit=2", &reader).await;
    assert_eq!(paged["items"].as_array().unwrap().len(), 2);
    assert!(paged["next"].as_str().unwrap().contains("offset=2"));
    for (q, field) in [
        ("feedback=maybe", "feedback"),
        ("review=yes", "review"),
        ("since=last-week", "since"),
        ("limit=0", "limit"),
        ("colour=red", "colour"),
    ] {
        let r = get(&app, &format!("/audit/predictions?{q}"), Some(&reader)).await;
        assert_eq!(r.status(), 400, "{q}");
        assert_eq!(r.json::<Value>().await.unwrap()["field"], field, "{q}");
    }

    // One prediction in full.
    let id = overridden["items"][0]["id"].as_str().unwrap();
    let d = json_of(&app, &format!("/audit/predictions/{id}"), &reader).await;
    assert_eq!(d["prediction"]["id"], id);
    assert!(
        d["prediction"]["features"]["features"]
            .as_array()
            .unwrap()
            .len()
            > 10
    );
    assert!(
        d["prediction"]["features"]["trends"]["weight"]["points"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );
    assert_eq!(d["prediction"]["input_digest"].as_str().unwrap().len(), 64);
    assert!(d["invocation"]["total_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(d["cards"][0]["uuid"], card);
    assert_eq!(d["cards"][0]["feedback"][0]["outcome"], "overridden");
    assert!(
        d["fhir"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/fhir/RiskAssessment/{id}"))
    );
    assert_eq!(
        get(
            &app,
            "/audit/predictions/00000000-0000-0000-0000-000000000000",
            Some(&reader)
        )
        .await
        .status(),
        404
    );

    // Exports: one line per prediction, oldest first.
    let exporter = user_token(&app, &["audit.export"]);
    let resp = get(&app, "/audit/export.ndjson", Some(&exporter)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["created_at"].as_str() <= lines[2]["created_at"].as_str());
    assert!(lines.iter().any(|l| l["feedback_outcome"] == "overridden"));
    assert!(lines[0]["features"]["features"].is_array());
    let csv = get(&app, "/audit/export.csv?feedback=none", Some(&exporter))
        .await
        .text()
        .await
        .unwrap();
    let rows: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 3, "header + 2 rows: {csv}");
    assert!(rows[0].starts_with("prediction_id,created_at,service_id,patient_id"));
    assert!(rows[1].contains(",cachexia-risk,cachexia-full,"));

    // Outcomes, then calibration in the aggregates.
    let writer = user_token(&app, &["audit.write"]);
    let today = chrono::Utc::now().date_naive().to_string();
    let r = post_outcomes(
        &app,
        &writer,
        &json!({"patient": format!("Patient/{PATIENT}"), "service": "cachexia-risk", "label": true, "date": today}),
    )
    .await;
    assert_eq!(r.status(), 201);
    for (body, field) in [
        (
            json!({"patient": PATIENT, "service": "cachexia-risk", "label": "yes", "date": today}),
            "label",
        ),
        (
            json!({"patient": PATIENT, "service": "nope", "label": true, "date": today}),
            "service",
        ),
        (
            json!({"patient": PATIENT, "service": "cachexia-risk", "label": true, "date": "20/11/2026"}),
            "date",
        ),
        (
            json!([{"patient": PATIENT, "service": "cachexia-risk", "label": 1, "date": today, "x": 1}]),
            "[0].x",
        ),
    ] {
        let r = post_outcomes(&app, &writer, &body).await;
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["field"], field, "{body}");
    }
    assert_eq!(post_outcomes(&app, &reader, &json!({})).await.status(), 403);

    let agg = json_of(&app, "/audit/aggregates?bucket=day", &reader).await;
    let g = &agg["groups"][0];
    assert_eq!(agg["predictions"], 3);
    assert_eq!(g["service_id"], "cachexia-risk");
    assert_eq!(g["volume"], 3);
    assert_eq!(g["feedback"]["overridden"], 1);
    assert_eq!(g["override_rate"], 1.0);
    assert_eq!(g["override_reasons"][0]["count"], 1);
    assert_eq!(g["over_time"][0]["volume"], 3);
    assert_eq!(g["calibration"]["with_outcome"], 3);
    assert_eq!(g["calibration"]["observed_rate"], 1.0);
    let with_outcome = json_of(&app, "/audit/predictions?limit=1", &reader).await;
    assert_eq!(with_outcome["items"][0]["outcome_label"], true);
    app.cleanup().await;
}

#[tokio::test]
async fn audit_api_searches_exports_and_aggregates_sqlite() {
    search_detail_export_outcomes_and_aggregates(Backend::Sqlite).await;
}

#[tokio::test]
async fn audit_api_searches_exports_and_aggregates_postgres() {
    search_detail_export_outcomes_and_aggregates(Backend::Postgres).await;
}

#[tokio::test]
async fn openapi_document_lists_every_audit_route() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let doc: Value = get(&app, "/audit/openapi.json", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    for p in [
        "/audit/predictions",
        "/audit/predictions/{id}",
        "/audit/export.ndjson",
        "/audit/export.csv",
        "/audit/aggregates",
        "/audit/outcomes",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} undocumented");
    }
    app.cleanup().await;
}
