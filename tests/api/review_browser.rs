//! The review app in a real browser: headless Debian `chromium` driven over
//! the DevTools protocol by `tests/browser/review.mjs` (Node, no packages).
//! Opens the page a card links to, checks values and trend plots, records a
//! verdict through the form, and checks that it is stored as feedback on
//! the card with an AuditEvent. Screenshots go to `target/screenshots/`.
//!
//! Needs `chromium` and `node` (scripts/test.sh installs chromium with
//! apt). Without them the test fails with the reason, unless
//! `ONCOHOOKS_SKIP_BROWSER_TESTS=1` says to skip.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::spawn_app;
use crate::outputs::{PATIENT, make_predictions, user_token};

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

pub(crate) fn have(cmd: &str) -> bool {
    std::process::Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_app_renders_plots_and_stores_a_verdict_in_headless_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    if !(have(&chromium) && have("node")) {
        if std::env::var("ONCOHOOKS_SKIP_BROWSER_TESTS").as_deref() == Ok("1") {
            eprintln!("skipping the browser test: chromium or node missing");
            return;
        }
        panic!(
            "the browser test needs `{chromium}` and `node` (apt-get install -y chromium nodejs; \
             scripts/test.sh does it), or ONCOHOOKS_SKIP_BROWSER_TESTS=1"
        );
    }
    let app = spawn_app().await;
    let hook = make_predictions(&app, 2).await.remove(1);
    let card = hook["cards"][0]["uuid"].as_str().unwrap().to_owned();
    let review_url = hook["cards"][0]["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["type"] == "absolute")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = user_token(
        &app,
        &["review.write", "user/RiskAssessment.read", "audit.read"],
    );
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let comment = format!(
        "Disagree: weight loss explained by surgery ({})",
        uuid::Uuid::new_v4()
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/review.mjs");
    let mut cmd = std::process::Command::new("node");
    cmd.arg(script)
        .env("REVIEW_URL", &review_url)
        .env(
            "DASHBOARD_URL",
            format!("{}/dashboard?bucket=day", app.address),
        )
        .env("ACCESS_TOKEN", &token)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .env("EXPECT_PATIENT", PATIENT)
        .env("VERDICT_COMMENT", &comment)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The script has its own timeouts (20 s per page load); the server
    // keeps running on this runtime while a blocking thread waits.
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .expect("the browser run finished within 120 s")
    .unwrap()
    .expect("starting node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "browser script output is not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && report["ok"] == true,
        "browser checks failed: {report:#}"
    );
    assert!(shots.join("review-app.png").metadata().unwrap().len() > 10_000);
    assert!(shots.join("review-app-saved.png").exists());

    // The verdict is stored as feedback on the card, with who and why.
    let fb = app
        .db
        .store
        .feedback_for_card(card.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(fb.len(), 1, "{fb:?}");
    assert_eq!(fb[0].outcome, "overridden");
    let reason = fb[0].override_reason.as_ref().unwrap();
    assert_eq!(reason["userComment"], comment);
    assert_eq!(reason["reviewer"], "dr-test");
    assert_eq!(reason["reason"]["code"], "expert-disagrees");
    // Views and the verdict are on the access trail.
    let (events, _) = app
        .db
        .store
        .search_audit_events(&Default::default(), 100, 0)
        .await
        .unwrap();
    let ops: Vec<&str> = events.iter().map(|e| e.operation.as_str()).collect();
    assert!(ops.contains(&"review.read"), "{ops:?}");
    assert!(ops.contains(&"review.verdict"), "{ops:?}");
    assert!(ops.contains(&"dashboard"), "{ops:?}");
    app.cleanup().await;
}

#[tokio::test]
async fn the_review_page_needs_a_token_and_sends_browsers_to_sign_in() {
    let app = spawn_app().await;
    let hook = make_predictions(&app, 1).await.remove(0);
    let url = hook["cards"][0]["links"][1]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = app
        .http
        .get(&url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/review/signin?next=%2Freview%2F")
    );
    let resp = app.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // A verdict needs review.write, even with read access.
    let reader = user_token(&app, &["user/RiskAssessment.read"]);
    let card = hook["cards"][0]["uuid"].as_str().unwrap();
    let resp = app
        .http
        .post(format!("{url}/verdict"))
        .bearer_auth(&reader)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("card", card), ("verdict", "agree")]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // The signed-in cookie works for the page (and is HttpOnly, SameSite=Strict).
    let writer = user_token(&app, &["review.write"]);
    let resp = app
        .http
        .post(format!("{}/review/session", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", writer.as_str()), ("next", "/review/x")]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let pair = cookie.split(';').next().unwrap();
    let resp = app
        .http
        .get(&url)
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("verdict-form"));
    // A bad verdict is a 400 naming the field.
    let resp = app
        .http
        .post(format!("{url}/verdict"))
        .bearer_auth(&writer)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("card", card), ("verdict", "maybe")]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["field"], "verdict");
    app.cleanup().await;
}
