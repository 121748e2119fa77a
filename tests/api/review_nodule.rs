//! The review page of a `lung-nodule-malignancy` prediction (issue 6 item 4):
//! a fixture prediction in the shape of `shared/schema.md` is stored through
//! the store (as the hook path stores one: invocation, prediction, one card
//! per nodule), then read through `/review/{id}` over HTTP and, in a real
//! headless chromium, checked pixel by pixel and verdict by verdict.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use flate2::read::ZlibDecoder;
use oncohooks::store::{CardRecord, HookRecord, InvocationRecord, PredictionRecord};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};
use crate::outputs::{make_predictions, user_token};
use crate::review_browser::have;

const SERVICE: &str = "lung-nodule-malignancy";
const SIZE: usize = 64;
const PATIENT: &str = "lidc-like-1";

/// One nodule's axial plane: lung background with a fine deterministic
/// texture, a vessel crossing, and the nodule, a disk of radius `r` pixels
/// at the centre whose mask is exactly that disk.
struct Plane {
    image: Vec<u8>,
    mask: Vec<u8>,
    bbox: [usize; 4],
}

fn plane(r: usize, grey: u8) -> Plane {
    let c = SIZE / 2;
    let mut image = vec![0u8; SIZE * SIZE];
    let mut mask = vec![0u8; SIZE * SIZE];
    for y in 0..SIZE {
        for x in 0..SIZE {
            let i = y * SIZE + x;
            image[i] = 40 + ((y * 7 + x * 13) % 11) as u8;
            if x.abs_diff(y + 20) <= 1 {
                image[i] = 120; // a vessel, away from the nodule
            }
            if (y.abs_diff(c).pow(2) + x.abs_diff(c).pow(2)) <= r * r {
                image[i] = grey;
                mask[i] = 1;
            }
        }
    }
    Plane {
        image,
        mask,
        bbox: [c - r, c - r, c + r + 1, c + r + 1],
    }
}

struct Fixture {
    record: HookRecord,
    prediction: Uuid,
    cards: Vec<Uuid>,
    planes: Vec<Plane>,
}

fn hook_record(result: Value, risk: Option<f64>, cards: Vec<(Uuid, String)>) -> HookRecord {
    let inv = Uuid::new_v4();
    let pred = Uuid::new_v4();
    let now = Utc::now();
    HookRecord {
        invocation: InvocationRecord {
            id: inv,
            hook_instance: Uuid::new_v4().to_string(),
            service_id: SERVICE.into(),
            hook: "patient-view".into(),
            patient_id: Some(PATIENT.into()),
            user_id: Some("Practitioner/rad-1".into()),
            encounter_id: None,
            fhir_server_host: Some("fhir.example.org".into()),
            client_iss: Some("https://ehr.example.org".into()),
            client_sub: Some("ehr-client-1".into()),
            received_at: now,
            total_ms: 812.0,
            fhir_ms: 40.0,
            inference_ms: 700.0,
            http_status: 200,
            outcome: "cards".into(),
            error: None,
        },
        prediction: Some(PredictionRecord {
            id: pred,
            invocation_id: inv,
            service_id: SERVICE.into(),
            patient_id: PATIENT.into(),
            model_id: "autorad-lung".into(),
            model_version: "fixture".into(),
            risk,
            risk_tier: if risk.is_some() {
                "elevated"
            } else {
                "unknown"
            }
            .into(),
            confidence: risk.map(|r| r.max(1.0 - r)),
            review_suggested: risk.is_some(),
            input_digest: hex::encode(Sha256::digest(result.to_string().as_bytes())),
            features: json!({}),
            result,
            created_at: now,
        }),
        cards: cards
            .into_iter()
            .map(|(uuid, summary)| CardRecord {
                uuid,
                invocation_id: inv,
                prediction_id: Some(pred),
                service_id: SERVICE.into(),
                card: json!({"summary": summary, "indicator": "warning",
                             "source": {"label": "oncohooks lung nodule (fixture)"}}),
                created_at: now,
            })
            .collect(),
        jobs: Vec::new(),
    }
}

fn model_json() -> Value {
    json!({"id": "autorad-lung", "version": "fixture",
           "source_label": "AutoRad-Lung, trained on LIDC-IDRI reader annotations with rendered CT patches",
           "trained_on_rendered_pixels": true, "alpha": 0.1})
}

/// A scored chest CT with two nodules, one card each.
fn scored() -> Fixture {
    let cards = vec![Uuid::new_v4(), Uuid::new_v4()];
    let planes = vec![plane(6, 210), plane(9, 150)];
    let patch = |p: &Plane| {
        json!({"size": SIZE, "spacing_mm": 1.0, "window": {"lower": -1000.0, "upper": 400.0},
               "axial": STANDARD.encode(&p.image), "mask_axial": STANDARD.encode(&p.mask)})
    };
    let result = json!({
        "status": "scored",
        "status_detail": "2 nodules from 1 SEG",
        "study": {"imaging_study": "ImagingStudy/ct-1", "study_uid": "1.2.826.0.1.1", "series_uid": "1.2.826.0.1.1.2",
                  "started": "2026-11-30T09:00:00Z"},
        "model": model_json(),
        "nodules": [
            {"card_uuid": cards[0], "finding": "SEG 1.2.826.0.1.9 segment 1", "label": "Nodule 1",
             "location": {"body_site": "Right upper lobe", "center_mm": [-71.2, -12.5, -140.0]},
             "size": {"mean_diameter_mm": 12.1, "volume_mm3": 905.0, "source": "measured",
                      "long_axis_mm": 13.0, "short_axis_mm": 11.2},
             "nodule_type": "solid", "nodule_type_source": "Observation",
             "mask_source": {"method": "seg"},
             "model": {"probability": 0.34, "interval": [0.21, 0.48], "confidence": 0.66, "confidence_level": "low",
                       "prediction_set": ["benign", "malignant"], "review_suggested": true,
                       "radiomics_drivers": [
                           {"name": "original_shape_Sphericity", "value": 0.62, "contribution": -0.11},
                           {"name": "original_shape_Maximum3DDiameter", "value": 14.8, "contribution": 0.57},
                           {"name": "original_glcm_Correlation", "value": 0.41, "contribution": 0.08}]},
             "brock": {"probability": 0.081, "inputs": {"age": 64, "sex": "female", "spiculation": false}},
             "mayo": {"probability": 0.12, "inputs": {"age": 64, "smoker": true}},
             "lung_rads": {"category": "4A", "management": "3-month LDCT; PET/CT may be used", "inputs": {}},
             "radiomics": {"original_shape_Sphericity": 0.62, "original_shape_Maximum3DDiameter": 14.8,
                           "original_glcm_Correlation": 0.41, "original_firstorder_Energy": 3.2e7},
             "patch": patch(&planes[0])},
            {"card_uuid": cards[1], "finding": "SEG 1.2.826.0.1.9 segment 2", "label": "Nodule 2",
             "location": {"body_site": null, "center_mm": [60.0, 5.0, -170.5]},
             "size": {"mean_diameter_mm": 18.3, "volume_mm3": null}, "nodule_type": "part-solid",
             "model": {"probability": 0.07, "interval": [0.04, 0.11], "confidence": 0.93, "confidence_level": "high",
                       "prediction_set": ["benign"], "review_suggested": false,
                       "radiomics_drivers": [
                           {"name": "original_firstorder_Mean", "value": -420.0, "contribution": -0.73},
                           {"name": "original_shape_Elongation", "value": 0.81, "contribution": 0.02}]},
             "brock": null, "brock_missing": "the nodule count of the scan is unknown",
             "mayo": {"probability": 0.05, "inputs": {}},
             "lung_rads": {"category": "3", "management": "6-month LDCT", "inputs": {}},
             "radiomics": {"original_firstorder_Mean": -420.0, "original_shape_Elongation": 0.81},
             "patch": patch(&planes[1])}
        ]
    });
    let record = hook_record(
        result,
        Some(0.34),
        vec![
            (cards[0], "Nodule 1 (RUL, 12 mm): malignancy 34%".into()),
            (cards[1], "Nodule 2 (18 mm): malignancy 7.0%".into()),
        ],
    );
    Fixture {
        prediction: record.prediction.as_ref().unwrap().id,
        record,
        cards,
        planes,
    }
}

/// The chest CT is still being analysed: no nodule, one card saying so.
fn pending() -> Fixture {
    let card = Uuid::new_v4();
    let record = hook_record(
        json!({"status": "imaging_pending", "status_detail": "imaging job queued",
               "study": {"imaging_study": "ImagingStudy/ct-2", "study_uid": "1.2.3", "series_uid": "1.2.3.4",
                         "started": "2026-12-01T08:00:00Z"},
               "model": model_json(), "nodules": []}),
        None,
        vec![(card, "Chest CT being analysed".into())],
    );
    Fixture {
        prediction: record.prediction.as_ref().unwrap().id,
        record,
        cards: vec![card],
        planes: Vec::new(),
    }
}

async fn store(app: &TestApp, f: &Fixture) {
    app.db.store.record_hook(&f.record).await.unwrap();
}

/// The pixels of an 8-bit greyscale PNG (colour type 0, filter 0 rows, as
/// the server writes them): a reader written against PNG 1.2, not the
/// server's code.
fn png_grey_pixels(png: &[u8]) -> (usize, usize, Vec<u8>) {
    use std::io::Read;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (mut i, mut w, mut h, mut idat) = (8, 0, 0, Vec::new());
    while i < png.len() {
        let len = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
        let kind = &png[i + 4..i + 8];
        let data = &png[i + 8..i + 8 + len];
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(&data[8..10], &[8, 0], "8-bit greyscale");
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        i += 12 + len;
    }
    let mut raw = Vec::new();
    ZlibDecoder::new(&idat[..]).read_to_end(&mut raw).unwrap();
    assert_eq!(raw.len(), h * (w + 1));
    let mut px = Vec::with_capacity(w * h);
    for row in raw.chunks(w + 1) {
        assert_eq!(row[0], 0, "filter type 0");
        px.extend_from_slice(&row[1..]);
    }
    (w, h, px)
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[tokio::test]
async fn the_nodule_review_page_shows_each_nodules_patch_and_takes_a_verdict_per_card() {
    let app = spawn_app().await;
    let f = scored();
    store(&app, &f).await;
    let url = format!("{}/review/{}", app.address, f.prediction);

    let resp = app.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401, "the page needs a token");
    let reader = user_token(&app, &["audit.read"]);
    let resp = app
        .http
        .get(&url)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();

    // One section per nodule, matched to its card.
    assert_eq!(html.matches("<section class=\"nodule\"").count(), 2);
    for (i, card) in f.cards.iter().enumerate() {
        assert!(
            html.contains(&format!("id=\"nodule-{}\" data-card=\"{card}\"", i + 1)),
            "nodule {} card",
            i + 1
        );
    }
    // The patches: each PNG holds exactly the stored pixels, and each
    // outline is around exactly the stored disk.
    let pngs: Vec<Vec<u8>> = html
        .split("src=\"data:image/png;base64,")
        .skip(1)
        .map(|s| STANDARD.decode(&s[..s.find('"').unwrap()]).unwrap())
        .collect();
    assert_eq!(pngs.len(), 2);
    for (png, p) in pngs.iter().zip(&f.planes) {
        let (w, h, px) = png_grey_pixels(png);
        assert_eq!((w, h), (SIZE, SIZE));
        assert!(px == p.image, "the PNG is the stored plane");
        let b = p.bbox;
        assert!(html.contains(&format!(
            "data-mask-bbox=\"{} {} {} {}\"",
            b[0], b[1], b[2], b[3]
        )));
    }
    // A disk of radius 6 has this many boundary pixel edges: count them
    // independently of the page's code.
    let m = &f.planes[0].mask;
    let inside = |y: i64, x: i64| {
        (0..SIZE as i64).contains(&y)
            && (0..SIZE as i64).contains(&x)
            && m[(y as usize) * SIZE + x as usize] == 1
    };
    let mut edges = 0;
    for y in 0..SIZE as i64 {
        for x in 0..SIZE as i64 {
            if inside(y, x) {
                edges += [(-1, 0), (1, 0), (0, -1), (0, 1)]
                    .iter()
                    .filter(|(dy, dx)| !inside(y + dy, x + dx))
                    .count();
            }
        }
    }
    assert!(
        html.contains(&format!("data-edges=\"{edges}\"")),
        "{edges} edges"
    );
    // Values beside each other: model, Brock, Mayo, Lung-RADS.
    for needle in [
        "34%",
        "members 21%–48%",
        "{benign, malignant} at α = 0.10",
        "contains both benign and malignant",
        "<strong>8.1%</strong>",
        "<strong>12%</strong>",
        "<strong>4A</strong> · 3-month LDCT; PET/CT may be used",
        "not computable: the nodule count of the scan is unknown",
        "7.0%",
        "is {benign} alone",
        "original_shape_Maximum3DDiameter",
        "id=\"rendered-pixels\"",
        "with rendered CT patches",
        "12.1 mm mean diameter · 905 mm³ · axes 13.0 × 11.2 mm",
        "mask from a DICOM SEG segment",
    ] {
        assert!(html.contains(needle), "{needle} missing");
    }
    assert!(
        html.find("original_shape_Maximum3DDiameter</td>").unwrap()
            < html.find("original_shape_Sphericity</td>").unwrap(),
        "largest |contribution| first"
    );
    assert!(
        !html.contains("verdict-form-1"),
        "no form without review.write"
    );

    // A verdict on nodule 2 goes to its card only.
    let writer = user_token(&app, &["review.write"]);
    let resp = app
        .http
        .post(format!("{url}/verdict"))
        .bearer_auth(&writer)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("card", &f.cards[1].to_string()),
            ("verdict", "agree"),
            ("comment", "stable part-solid, follow up as planned"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("?saved=1#nodule-2"),
        "back to the nodule judged"
    );
    let fb = app.db.store.feedback_for_card(f.cards[1]).await.unwrap();
    assert_eq!(fb.len(), 1);
    assert_eq!(fb[0].outcome, "accepted");
    assert_eq!(fb[0].service_id, SERVICE);
    assert_eq!(
        fb[0].override_reason.as_ref().unwrap()["userComment"],
        "stable part-solid, follow up as planned"
    );
    assert!(
        app.db
            .store
            .feedback_for_card(f.cards[0])
            .await
            .unwrap()
            .is_empty()
    );
    let html = app
        .http
        .get(&url)
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let n2 = &html[html.find("id=\"nodule-2\"").unwrap()..];
    assert!(n2.contains("id=\"feedback-list-2\""));
    assert!(n2.contains("stable part-solid, follow up as planned"));
    assert!(html.contains("id=\"verdict-form-1\"") && html.contains("id=\"verdict-form-2\""));

    // A card of another prediction is refused, naming the field.
    let other = pending();
    store(&app, &other).await;
    let resp = app
        .http
        .post(format!("{url}/verdict"))
        .bearer_auth(&writer)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("card", &other.cards[0].to_string()),
            ("verdict", "agree"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["field"], "card");

    // The pending prediction's page says so plainly, and its card still
    // takes a verdict.
    let html = app
        .http
        .get(format!("{}/review/{}", app.address, other.prediction))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("data-status=\"imaging_pending\""));
    assert!(html.contains("still being analysed") && html.contains("imaging job queued"));
    assert!(!html.contains("<section class=\"nodule\""));
    assert!(html.contains("Chest CT being analysed") && html.contains("class=\"verdict-form\""));

    // The dashboard keeps the services apart: the nodule service's two
    // predictions (one reviewed-suggested, one pending) beside cachexia's.
    make_predictions(&app, 1).await;
    let auditor = user_token(&app, &["audit.read"]);
    let html = app
        .http
        .get(format!("{}/dashboard", app.address))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        html.matches("<section class=\"group\"").count(),
        2,
        "{html}"
    );
    let nod = &html[html
        .find("<h2>lung-nodule-malignancy")
        .expect("a nodule group")..];
    let nod = &nod[..nod.find("</section>").unwrap()];
    assert!(nod.contains("<td class=\"volume\">2</td>"), "{nod}");
    assert!(nod.contains("<td>Review rate</td><td>50%</td>"), "{nod}");
    assert!(html.contains("<h2>cachexia-risk"));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodule_review_renders_patch_outline_and_values_and_stores_a_verdict_in_headless_chromium()
{
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
    let f = scored();
    let p = pending();
    store(&app, &f).await;
    store(&app, &p).await;
    let token = user_token(&app, &["review.write", "audit.read"]);
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let comment = format!(
        "Disagree: benign calcification pattern ({})",
        Uuid::new_v4()
    );
    let sample =
        |p: &Plane, x: usize, y: usize| json!({"x": x, "y": y, "grey": p.image[y * SIZE + x]});
    let expect = json!({
        "nodules": [
            {"label": "Nodule 1", "probability": "34%", "lung_rads": "4A", "brock": "8.1%",
             "top_driver": "original_shape_Maximum3DDiameter", "size": SIZE, "mask_bbox": f.planes[0].bbox,
             "samples": [sample(&f.planes[0], 32, 32), sample(&f.planes[0], 2, 2), sample(&f.planes[0], 45, 25)]},
            {"label": "Nodule 2", "probability": "7.0%", "lung_rads": "3", "brock": "not computable",
             "top_driver": "original_firstorder_Mean", "size": SIZE, "mask_bbox": f.planes[1].bbox,
             "samples": [sample(&f.planes[1], 32, 32), sample(&f.planes[1], 60, 3)]}
        ],
        "verdict": {"nodule": 1, "comment": comment}
    });

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/review_nodule.mjs");
    let mut cmd = std::process::Command::new("node");
    cmd.arg(script)
        .env(
            "REVIEW_URL",
            format!("{}/review/{}", app.address, f.prediction),
        )
        .env(
            "PENDING_URL",
            format!("{}/review/{}", app.address, p.prediction),
        )
        .env("ACCESS_TOKEN", &token)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .env("EXPECT", expect.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
    assert!(shots.join("review-nodule.png").metadata().unwrap().len() > 10_000);
    assert!(shots.join("review-nodule-saved.png").exists());
    assert!(shots.join("review-nodule-pending.png").exists());

    // Stored as feedback on nodule 1's card only, with who and why.
    let fb = app.db.store.feedback_for_card(f.cards[0]).await.unwrap();
    assert_eq!(fb.len(), 1, "{fb:?}");
    assert_eq!(fb[0].outcome, "overridden");
    let reason = fb[0].override_reason.as_ref().unwrap();
    assert_eq!(reason["userComment"], comment);
    assert_eq!(reason["reviewer"], "dr-test");
    assert_eq!(reason["reason"]["code"], "expert-disagrees");
    assert!(
        app.db
            .store
            .feedback_for_card(f.cards[1])
            .await
            .unwrap()
            .is_empty()
    );
    app.cleanup().await;
}
