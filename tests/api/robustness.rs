//! Third-party synthetic FHIR R4 (clinosim; see fixtures/clinosim/README.md)
//! goes through the whole hook: parsed entry by entry, scored, stored.

use serde_json::Value;

use crate::helpers::{fixture, fixture_path, spawn_app};

#[tokio::test]
async fn clinosim_patients_are_scored_without_errors() {
    let app = spawn_app().await;
    let mut files: Vec<_> = std::fs::read_dir(fixture_path("clinosim"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5);
    for name in &files {
        let hook = fixture(&format!("clinosim/{name}"));
        let resp = app.post_hook("cachexia-risk", &hook).await;
        assert_eq!(resp.status(), 200, "{name}");
        let body: Value = resp.json().await.unwrap();
        // Every one of them has an active cancer: one card each.
        assert_eq!(body["cards"].as_array().unwrap().len(), 1, "{name}: {body}");
        assert!(
            oncohooks::cds::card::json_rule_violations(&body).is_empty(),
            "{name}"
        );
    }
    assert_eq!(app.db.count("predictions").await, files.len() as i64);
    app.cleanup().await;
}
