//! `GET /audit/export.ndjson` of 10,000 predictions streams with flat
//! memory: the rows come from the database through `fetch()` and a bounded
//! channel, and go out in chunks as they arrive.
//!
//! Its own test binary (its own process), so the resident set size measured
//! here is this server's alone. Each seeded prediction carries a ~10 KB
//! feature snapshot, so the export is ~100 MB: were it collected before
//! sending (a `Vec` of rows, or one body string), RSS would grow by at
//! least that much. The test asserts that the peak growth while streaming
//! stays under a quarter of the bytes sent (measured figures are printed
//! and recorded in docs/benchmarks.md).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oncohooks::Application;
use oncohooks::config::Settings;
use oncohooks::store::Store;

const N: i64 = 10_000;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// 10,000 invocations and predictions, each prediction with a ~10 KB
/// snapshot, in two INSERT … SELECT statements (recursive CTE).
const SEED: [&str; 2] = [
    "INSERT INTO invocations (id, hook_instance, service_id, hook, patient_id, received_at, \
     total_ms, fhir_ms, inference_ms, http_status, outcome) \
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) \
     SELECT printf('00000000-0000-4000-8000-%012d', i), 'h' || i, 'cachexia-risk', 'patient-view', \
       'p' || (i % 500), printf('2026-11-20T10:%02d:%02d.%06dZ', (i / 60) % 60, i % 60, i), \
       1.0, 0.5, 0.2, 200, 'cards' FROM n",
    "INSERT INTO predictions (id, invocation_id, service_id, patient_id, model_id, model_version, \
     risk, risk_tier, confidence, review_suggested, input_digest, features, result, created_at) \
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) \
     SELECT printf('10000000-0000-4000-8000-%012d', i), printf('00000000-0000-4000-8000-%012d', i), \
       'cachexia-risk', 'p' || (i % 500), 'seeded', '1', (i % 100) / 100.0, 'low', NULL, i % 7 = 0, \
       substr(hex(zeroblob(32)), 1, 64), \
       '{\"features\":[],\"pad\":\"' || replace(hex(zeroblob(5000)), '0', 'x') || '\"}', \
       '{}', printf('2026-11-20T10:%02d:%02d.%06dZ', (i / 60) % 60, i % 60, i) FROM n",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporting_10000_predictions_streams_with_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/export.db", dir.path().display());
    let store = Store::connect(&url, 2).await.unwrap();
    store.migrate().await.unwrap();
    for sql in SEED {
        store.execute_raw(sql).await.unwrap();
    }
    store.close().await;

    let mut settings = Settings::load_with_env(None, Vec::<(String, String)>::new()).unwrap();
    settings.server.bind = "127.0.0.1:0".into();
    settings.database.url = url.into();
    settings.database.spool_dir = dir.path().join("spool");
    settings.services.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cds-hooks");
    settings.server.workers = Some(2);
    settings.imaging.workers_in_serve = 0;
    let app = Application::build(settings.clone()).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let token = oncohooks::auth::dev_access_token(
        &settings.access,
        "exporter",
        &["audit.export".to_string()],
        Duration::from_secs(600),
    )
    .unwrap();
    let http = reqwest::Client::new();

    // Warm up (first-use allocations of the server, the client and SQLite)
    // with a small export, then take the baseline.
    let warm = http
        .get(format!("{address}/audit/export.ndjson?patient=p1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(warm.lines().count(), 20);
    let baseline = rss_kib();
    let peak = Arc::new(AtomicU64::new(baseline));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    let started = Instant::now();
    let resp = http
        .get(format!("{address}/audit/export.ndjson"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first_byte = started.elapsed();
    let (mut bytes, mut lines) = (0u64, 0i64);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as i64;
    }
    let total = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let growth_kib = peak.load(Ordering::Relaxed).saturating_sub(baseline);

    println!(
        "export.ndjson: {lines} predictions, {:.1} MB in {:.2} s (first byte after {:.0} ms); \
         RSS baseline {:.1} MB, peak growth {:.1} MB",
        bytes as f64 / 1e6,
        total.as_secs_f64(),
        first_byte.as_secs_f64() * 1e3,
        baseline as f64 / 1024.0,
        growth_kib as f64 / 1024.0,
    );
    assert_eq!(lines, N);
    assert!(bytes > 100_000_000, "{bytes} bytes");
    assert!(
        (growth_kib * 1024) < bytes / 4,
        "RSS grew by {growth_kib} KiB while streaming {bytes} bytes: not flat"
    );
}
