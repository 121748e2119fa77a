//! The multimodal cachexia model on the `cachexia-risk` card, with the
//! shipped weights in `cds-hooks/cachexia-risk/model/`.

use serde_json::Value;

use crate::helpers::{fixture, spawn_app, spawn_app_with};
use crate::support::db::Backend;

struct ModelCard {
    summary: String,
    label: String,
    detail: String,
    model_version: String,
}

async fn model_card(app: &crate::helpers::TestApp, rel: &str) -> ModelCard {
    let resp = app.post_hook("cachexia-risk", &fixture(rel)).await;
    assert_eq!(resp.status(), 200);
    let model_version = resp
        .headers()
        .get("x-model-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = resp.json().await.unwrap();
    assert!(
        oncohooks::cds::card::json_rule_violations(&body).is_empty(),
        "{body:#}"
    );
    let card = &body["cards"][0];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    ModelCard {
        summary: s(&card["summary"]),
        label: s(&card["source"]["label"]),
        detail: s(&card["detail"]),
        model_version,
    }
}

/// `high` 2, `moderate` 1, `low` 0, from "Confidence: **level**".
fn confidence_rank(detail: &str) -> u8 {
    let level = detail
        .split("Confidence: **")
        .nth(1)
        .and_then(|r| r.split("**").next())
        .unwrap_or_else(|| panic!("no confidence level in {detail}"));
    match level {
        "high" => 2,
        "moderate" => 1,
        "low" => 0,
        other => panic!("unknown confidence level {other}"),
    }
}

#[tokio::test]
async fn full_record_gets_the_model_risk_beside_the_classic_indices() {
    let app = spawn_app().await;
    let c = model_card(&app, "hooks/cachexia-full.json").await;
    assert!(c.summary.chars().count() <= 140, "{}", c.summary);
    assert!(
        c.summary.contains("within 6 months (model"),
        "{}",
        c.summary
    );
    assert!(c.label.contains("trained on synthetic data"), "{}", c.label);
    assert!(c.label.contains("classic indices"), "{}", c.label);
    assert!(
        c.model_version.starts_with("cachexia-fusion/"),
        "{}",
        c.model_version
    );
    let d = &c.detail;
    for needle in [
        "**Model: risk of cachexia",
        "ensemble members",
        "conformal prediction set",
        "Modalities used: demographics and disease status, laboratory results, weight history, CT body composition.",
        "Top factors (computed by the model",
        // The classic content stays.
        "Fearon 2011 | cachexia",
        "Observation/cachexia-full-obs-alb",
    ] {
        assert!(d.contains(needle), "missing `{needle}` in\n{d}");
    }
    // The record has notes, and the shipped model says why they are unused.
    assert!(d.contains(" on record, not used: "), "{d}");
    assert_eq!(app.db.count("predictions").await, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn demographics_only_still_gets_a_model_card_with_lower_confidence() {
    let app = spawn_app().await;
    let full = model_card(&app, "hooks/cachexia-full.json").await;
    let demo = model_card(&app, "hooks/demographics-only.json").await;
    let d = &demo.detail;
    assert!(d.contains("**Model: risk of cachexia"), "{d}");
    assert!(
        d.contains("Modalities used: demographics and disease status."),
        "{d}"
    );
    assert!(
        d.contains("Missing (the model used its learned “missing” input instead): laboratory results; weight history; CT body composition; clinical notes."),
        "{d}"
    );
    assert!(
        confidence_rank(d) < confidence_rank(&full.detail),
        "demographics only:\n{d}\nfull:\n{}",
        full.detail
    );
    app.cleanup().await;
}

#[tokio::test]
async fn without_a_model_folder_the_classic_card_still_works() {
    let services = tempfile::tempdir().unwrap();
    let svc = services.path().join("cachexia-risk");
    std::fs::create_dir_all(&svc).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cds-hooks/cachexia-risk");
    for f in ["service.toml", "model-card.md"] {
        std::fs::copy(src.join(f), svc.join(f)).unwrap();
    }
    let dir = services.path().to_owned();
    let app = spawn_app_with(Backend::Sqlite, move |s| s.services.dir = dir).await;
    let c = model_card(&app, "hooks/cachexia-full.json").await;
    assert!(c.label.contains("no ML model"), "{}", c.label);
    assert!(
        c.detail.contains("No multimodal model is loaded"),
        "{}",
        c.detail
    );
    assert!(c.detail.contains("Fearon 2011 | cachexia"));
    assert!(c.model_version.starts_with("cachexia-classic-indices/"));
    app.cleanup().await;
}
