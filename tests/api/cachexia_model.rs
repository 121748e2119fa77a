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
    /// `x-model-batch`: hooks scored in the same model pass.
    model_batch: Option<usize>,
}

async fn model_card(app: &crate::helpers::TestApp, rel: &str) -> ModelCard {
    let mut body = fixture(rel);
    // Each call its own hook instance, as an EHR sends it.
    body["hookInstance"] = Value::from(uuid::Uuid::new_v4().to_string());
    let resp = app.post_hook("cachexia-risk", &body).await;
    assert_eq!(resp.status(), 200);
    let model_version = resp
        .headers()
        .get("x-model-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let model_batch = resp
        .headers()
        .get("x-model-batch")
        .and_then(|v| v.to_str().ok()?.parse().ok());
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
        model_batch,
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
        // Every modality on record, notes through MiniLM included.
        "Modalities used: demographics and disease status, laboratory results, weight history, CT body composition, clinical notes.",
        "Top factors (computed by the model",
        // The classic content stays.
        "Fearon 2011 | cachexia",
        "Observation/cachexia-full-obs-alb",
    ] {
        assert!(d.contains(needle), "missing `{needle}` in\n{d}");
    }
    assert!(!d.contains("Missing (the model used"), "{d}");
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

/// The model's lines of a card: risk and spread, confidence and set, the
/// review gate, modalities and factors (not the notes' cache status).
fn model_lines(detail: &str) -> Vec<&str> {
    detail
        .lines()
        .filter(|l| {
            [
                "**Model:",
                "- Confidence:",
                "- **Expert review",
                "- Modalities used:",
            ]
            .iter()
            .any(|p| l.starts_with(p))
                || l.contains("(computed by the model")
        })
        .collect()
}

/// Hooks that arrive together share model passes ("batched when
/// concurrent", issue 4 §6) and each still gets its own patient's numbers:
/// the same lines as when it was scored alone, and every call stored.
#[tokio::test]
async fn concurrent_hooks_share_model_passes_and_get_their_own_cards() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        // One model thread, so that hooks queue behind each other's pass.
        s.models.inference_threads = 1;
        s.models.inference_batch = 4;
    })
    .await;
    let fixtures = ["hooks/cachexia-full.json", "hooks/demographics-only.json"];
    let mut alone = Vec::new();
    for f in fixtures {
        let c = model_card(&app, f).await;
        assert_eq!(
            c.model_batch,
            Some(1),
            "a hook on an idle server is scored alone"
        );
        alone.push(c.detail);
    }
    assert_ne!(model_lines(&alone[0]), model_lines(&alone[1]));
    let calls = 24;
    let cards =
        futures_util::future::join_all((0..calls).map(|i| model_card(&app, fixtures[i % 2]))).await;
    for (i, c) in cards.iter().enumerate() {
        assert_eq!(
            model_lines(&c.detail),
            model_lines(&alone[i % 2]),
            "call {i} ({})",
            fixtures[i % 2]
        );
        let n = c.model_batch.expect("x-model-batch");
        assert!((1..=4).contains(&n), "{n}");
    }
    // Passes held several hooks: calls queued while the model thread was
    // busy.
    let shared = cards.iter().filter(|c| c.model_batch > Some(1)).count();
    assert!(shared > 0, "no model pass held more than one hook");
    assert_eq!(app.db.count("predictions").await, 2 + calls as i64);
    app.cleanup().await;
}

#[tokio::test]
async fn without_a_model_folder_the_classic_card_still_works() {
    let services = service_folder(false);
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

/// A services folder holding a copy of `cachexia-risk`'s definition and
/// model card, and of the shipped weights when `with_model`.
fn service_folder(with_model: bool) -> tempfile::TempDir {
    let services = tempfile::tempdir().unwrap();
    let svc = services.path().join("cachexia-risk");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cds-hooks/cachexia-risk");
    std::fs::create_dir_all(&svc).unwrap();
    for f in ["service.toml", "model-card.md"] {
        std::fs::copy(src.join(f), svc.join(f)).unwrap();
    }
    if with_model {
        std::fs::create_dir_all(svc.join("model")).unwrap();
        for e in std::fs::read_dir(src.join("model")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), svc.join("model").join(e.file_name())).unwrap();
        }
    }
    services
}

/// The `cachexia-risk` folder with the shipped weights, its `model.json`
/// made to say the model reads notes from the installed MiniLM (the shipped
/// model does; the edit keeps these tests about the serving path — cache,
/// budget, queue, card — whatever model is shipped).
fn services_with_a_notes_model() -> tempfile::TempDir {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let services = service_folder(true);
    let svc = services.path().join("cachexia-risk");
    let encoder = oncohooks::ml::TextEncoder::load(
        &root.join("models/all-MiniLM-L6-v2"),
        &candle_core::Device::Cpu,
    )
    .expect("run scripts/setup-models.sh");
    let meta_path = svc.join("model/model.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let mods = meta["trained_modalities"].as_array_mut().unwrap();
    if !mods.iter().any(|m| m == "notes") {
        mods.push(Value::from("notes"));
    }
    meta["notes_embedder"] = Value::from(encoder.identity());
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    services
}

/// The server on [`services_with_a_notes_model`]; keep the folder alive as
/// long as the app.
async fn spawn_notes_app(
    configure: impl FnOnce(&mut oncohooks::config::Settings) + Send + 'static,
) -> (tempfile::TempDir, crate::helpers::TestApp) {
    let services = services_with_a_notes_model();
    let dir = services.path().to_owned();
    let app = spawn_app_with(Backend::Sqlite, move |s| {
        s.services.dir = dir;
        configure(s);
    })
    .await;
    (services, app)
}

fn stored_note_vectors(
    app: &crate::helpers::TestApp,
) -> impl std::future::Future<Output = i64> + '_ {
    app.db.count("note_embeddings")
}

/// Until the background cache write (inline or queued notes) has landed.
async fn wait_for_note_vectors(app: &crate::helpers::TestApp, what: &str) {
    app.wait_for(what, || async { stored_note_vectors(app).await >= 1 })
        .await;
}

#[tokio::test]
async fn a_model_trained_with_notes_gets_them_embedded_inline_then_from_the_cache() {
    let (_services, app) = spawn_notes_app(|_| {}).await;
    let c = model_card(&app, "hooks/cachexia-full.json").await;
    assert!(
        c.detail.contains("Modalities used: demographics and disease status, laboratory results, weight history, CT body composition, clinical notes."),
        "{}",
        c.detail
    );
    // Embedded inline (within the default budget), then cached in the
    // background for every later hook and replica.
    wait_for_note_vectors(&app, "note vectors cached").await;
    let cached = stored_note_vectors(&app).await;
    let again = model_card(&app, "hooks/cachexia-full.json").await;
    assert!(
        again
            .detail
            .contains("CT body composition, clinical notes.")
    );
    // Same notes, same vectors: the same risk, and nothing new embedded.
    assert_eq!(again.summary, c.summary);
    assert_eq!(stored_note_vectors(&app).await, cached);
    app.cleanup().await;
}

#[tokio::test]
async fn notes_over_the_inline_budget_are_queued_treated_as_missing_and_used_once_embedded() {
    let (_services, app) = spawn_notes_app(|s| s.models.notes_inline_token_budget = 0).await;
    let first = model_card(&app, "hooks/cachexia-full.json").await;
    assert!(
        first
            .detail
            .contains("queued for embedding in the background; the next view will use them"),
        "{}",
        first.detail
    );
    assert!(
        first.detail.contains("Modalities used: demographics and disease status, laboratory results, weight history, CT body composition."),
        "{}",
        first.detail
    );
    wait_for_note_vectors(&app, "queued notes embedded and cached").await;
    let later = model_card(&app, "hooks/cachexia-full.json").await;
    assert!(
        later
            .detail
            .contains("CT body composition, clinical notes."),
        "{}",
        later.detail
    );
    app.cleanup().await;
}

#[tokio::test]
async fn without_the_text_encoder_notes_are_missing_and_the_card_says_why() {
    let (_services, app) =
        spawn_notes_app(|s| s.models.text_encoder_dir = "/nonexistent/all-MiniLM-L6-v2".into())
            .await;
    let c = model_card(&app, "hooks/cachexia-full.json").await;
    assert!(
        c.detail
            .contains("not used: no text encoder is installed on this server"),
        "{}",
        c.detail
    );
    app.cleanup().await;
}
