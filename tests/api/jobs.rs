//! The imaging job queue and result cache, run against SQLite and
//! PostgreSQL (issue 3 item 8).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use oncohooks::store::jobs::{JobHandler, WorkerPoolConfig, run_workers};
use oncohooks::store::{Backoff, Enqueued, FailOutcome, JobFailure, JobStatus, NewJob, StoreError};
use serde_json::json;
use uuid::Uuid;

use crate::both_backends;
use crate::support::db::TestDb;

both_backends!(
    concurrent_workers_never_take_the_same_job,
    a_failing_job_backs_off_then_is_dead_lettered,
    an_expired_lease_is_reclaimed_and_the_old_worker_is_refused,
    a_job_that_outlives_its_last_lease_is_dead_lettered,
    a_heartbeat_keeps_a_long_job_leased,
    a_dedupe_key_admits_one_unfinished_job,
    claims_only_take_the_kinds_asked_for,
    imaging_results_are_cached_per_series_and_pipeline_version,
    a_worker_pool_completes_retries_and_dead_letters,
);

fn job(kind: &str, n: usize, max_attempts: i32) -> NewJob {
    NewJob {
        kind: kind.to_string(),
        payload: json!({"series_uid": format!("1.2.840.10008.{n}"), "n": n}),
        dedupe_key: None,
        max_attempts,
    }
}

const LONG: Duration = Duration::from_secs(60);

async fn concurrent_workers_never_take_the_same_job(db: &mut TestDb) {
    const JOBS: usize = 120;
    const WORKERS: usize = 6;
    for n in 0..JOBS {
        db.store
            .enqueue(&job("body-composition", n, 3))
            .await
            .unwrap();
    }
    let claims: Arc<Mutex<HashMap<Uuid, Vec<String>>>> = Arc::default();

    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        // Each worker has its own pool: separate sessions, real concurrency.
        let store = db.connect_again().await;
        let claims = claims.clone();
        tasks.push(tokio::spawn(async move {
            let me = format!("worker-{w}");
            let mut mine = 0usize;
            while let Some(j) = store.claim(&me, &["body-composition"], LONG).await.unwrap() {
                assert_eq!(j.locked_by.as_deref(), Some(me.as_str()));
                claims
                    .lock()
                    .unwrap()
                    .entry(j.id)
                    .or_default()
                    .push(me.clone());
                // Hold the job for a moment so claims overlap in time.
                tokio::task::yield_now().await;
                // A double claim would surface here as LeaseLost; it is
                // reported below with the claim counts instead.
                if store
                    .complete(j.id, &me, Some(&json!({"ok": w})))
                    .await
                    .is_ok()
                {
                    mine += 1;
                }
            }
            store.close().await;
            mine
        }));
    }
    let mut per_worker = Vec::new();
    for t in tasks {
        per_worker.push(t.await.unwrap());
    }

    let claims = claims.lock().unwrap().clone();
    let doubles: Vec<_> = claims.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(
        doubles.is_empty(),
        "jobs claimed more than once: {doubles:?}"
    );
    assert_eq!(claims.len(), JOBS, "every job claimed");
    assert_eq!(per_worker.iter().sum::<usize>(), JOBS);
    assert!(
        per_worker.iter().filter(|&&n| n > 0).count() > 1,
        "more than one worker took part: {per_worker:?}"
    );
    for id in claims.keys() {
        let j = db.store.job(*id).await.unwrap().unwrap();
        assert_eq!(j.status, JobStatus::Done);
        assert_eq!(j.attempts, 1);
        assert!(j.locked_by.is_none());
    }
}

async fn a_failing_job_backs_off_then_is_dead_lettered(db: &mut TestDb) {
    let base = Duration::from_secs(1);
    let store = db.store.clone().with_backoff(Backoff {
        base,
        cap: Duration::from_secs(5),
        jitter: 0.25,
    });
    let id = store
        .enqueue(&job("nodule-patches", 1, 3))
        .await
        .unwrap()
        .id();
    // Clocks are the same machine's; only latency can add to the delay.
    let early = chrono::Duration::milliseconds(50);
    let late = chrono::Duration::seconds(1);

    for attempt in 1..=2 {
        let j = store
            .claim("w", &["nodule-patches"], LONG)
            .await
            .unwrap()
            .expect("ready");
        assert_eq!((j.id, j.attempts), (id, attempt));
        let before = Utc::now();
        let outcome = store
            .fail(id, "w", &format!("PACS timeout #{attempt}"))
            .await
            .unwrap();
        let FailOutcome::Retry { run_after } = outcome else {
            panic!("attempt {attempt} of 3 must be retried, got {outcome:?}");
        };
        // Exponential: base·2^(attempt-1), jitter shortens by at most 25 %.
        let full = chrono::Duration::from_std(base * 2u32.pow(attempt as u32 - 1)).unwrap();
        let shortest = full * 3 / 4;
        let delay = run_after - before;
        assert!(
            delay >= shortest - early && delay <= full + late,
            "attempt {attempt}: delay {delay:?} not within [{shortest:?}, {full:?}]"
        );
        // Not claimable before run_after.
        assert!(
            store
                .claim("w", &["nodule-patches"], LONG)
                .await
                .unwrap()
                .is_none()
        );
        let wait = (run_after - Utc::now() + chrono::Duration::milliseconds(30))
            .to_std()
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
    }
    let j = store
        .claim("w", &["nodule-patches"], LONG)
        .await
        .unwrap()
        .expect("third try");
    assert_eq!(j.attempts, 3);
    assert_eq!(j.last_error.as_deref(), Some("PACS timeout #2"));

    let outcome = store.fail(id, "w", "PACS timeout #3").await.unwrap();

    assert_eq!(outcome, FailOutcome::DeadLettered);
    let dead = store.dead_letters("nodule-patches").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].status, JobStatus::Dead);
    assert_eq!(dead[0].last_error.as_deref(), Some("PACS timeout #3"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        store
            .claim("w", &["nodule-patches"], LONG)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.dead_letters("other-kind").await.unwrap().is_empty());
}

async fn an_expired_lease_is_reclaimed_and_the_old_worker_is_refused(db: &mut TestDb) {
    let id = db
        .store
        .enqueue(&job("body-composition", 1, 3))
        .await
        .unwrap()
        .id();
    let lease = Duration::from_millis(500);
    let a = db
        .store
        .claim("crashed", &["body-composition"], lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.id, id);
    assert!(
        db.store
            .claim("b", &["body-composition"], lease)
            .await
            .unwrap()
            .is_none(),
        "a live lease is not stolen"
    );

    tokio::time::sleep(lease + Duration::from_millis(150)).await;
    let b = db
        .store
        .claim("b", &["body-composition"], LONG)
        .await
        .unwrap();

    let b = b.expect("the expired lease is reclaimed");
    assert_eq!((b.id, b.attempts), (id, 2));
    assert_eq!(b.locked_by.as_deref(), Some("b"));
    let late = db.store.complete(id, "crashed", None).await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost { .. })),
        "{late:?}"
    );
    let late = db.store.fail(id, "crashed", "late").await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost { .. })),
        "{late:?}"
    );
    db.store
        .complete(id, "b", Some(&json!({"l3_smi": 41.2})))
        .await
        .unwrap();
    let done = db.store.job(id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Done);
    assert_eq!(done.result, Some(json!({"l3_smi": 41.2})));
}

async fn a_job_that_outlives_its_last_lease_is_dead_lettered(db: &mut TestDb) {
    let id = db
        .store
        .enqueue(&job("body-composition", 1, 1))
        .await
        .unwrap()
        .id();
    let lease = Duration::from_millis(500);
    db.store
        .claim("oom-killed", &["body-composition"], lease)
        .await
        .unwrap()
        .unwrap();

    tokio::time::sleep(lease + Duration::from_millis(150)).await;
    let again = db
        .store
        .claim("b", &["body-composition"], LONG)
        .await
        .unwrap();

    assert!(again.is_none(), "no attempts left: {again:?}");
    let dead = db.store.dead_letters("body-composition").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    let why = dead[0].last_error.clone().unwrap_or_default();
    assert!(
        why.contains("lease expired") && why.contains("oom-killed"),
        "{why}"
    );
}

async fn a_heartbeat_keeps_a_long_job_leased(db: &mut TestDb) {
    let id = db
        .store
        .enqueue(&job("body-composition", 1, 3))
        .await
        .unwrap()
        .id();
    let lease = Duration::from_millis(500);
    db.store
        .claim("a", &["body-composition"], lease)
        .await
        .unwrap()
        .unwrap();

    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        db.store.heartbeat(id, "a", lease).await.unwrap();
    }

    assert!(
        db.store
            .claim("b", &["body-composition"], lease)
            .await
            .unwrap()
            .is_none()
    );
    let hb = db.store.heartbeat(id, "b", lease).await;
    assert!(matches!(hb, Err(StoreError::LeaseLost { .. })), "{hb:?}");
    db.store.complete(id, "a", None).await.unwrap();
}

async fn a_dedupe_key_admits_one_unfinished_job(db: &mut TestDb) {
    let series = NewJob {
        dedupe_key: Some("body-composition:1.2.3.4".into()),
        ..job("body-composition", 1, 3)
    };
    let first = db.store.enqueue(&series).await.unwrap();
    let Enqueued::New(id) = first else {
        panic!("first enqueue: {first:?}")
    };

    assert_eq!(
        db.store.enqueue(&series).await.unwrap(),
        Enqueued::AlreadyQueued(id)
    );
    db.store
        .claim("w", &["body-composition"], LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        db.store.enqueue(&series).await.unwrap(),
        Enqueued::AlreadyQueued(id),
        "a running job also blocks its key"
    );
    db.store.complete(id, "w", None).await.unwrap();
    let after = db.store.enqueue(&series).await.unwrap();
    assert!(
        matches!(after, Enqueued::New(other) if other != id),
        "{after:?}"
    );
    // Without a key there is no deduplication.
    let a = db
        .store
        .enqueue(&job("body-composition", 2, 3))
        .await
        .unwrap();
    let b = db
        .store
        .enqueue(&job("body-composition", 2, 3))
        .await
        .unwrap();
    assert!(matches!((a, b), (Enqueued::New(x), Enqueued::New(y)) if x != y));
    assert_eq!(db.count("jobs").await, 4);
    let invalid = db.store.enqueue(&job("body-composition", 3, 0)).await;
    assert!(
        matches!(invalid, Err(StoreError::InvalidRecord(_))),
        "{invalid:?}"
    );
}

async fn claims_only_take_the_kinds_asked_for(db: &mut TestDb) {
    let a = db
        .store
        .enqueue(&job("body-composition", 1, 3))
        .await
        .unwrap()
        .id();
    let b = db
        .store
        .enqueue(&job("nodule-patches", 2, 3))
        .await
        .unwrap()
        .id();

    assert!(
        db.store
            .claim("w", &["radiomics"], LONG)
            .await
            .unwrap()
            .is_none()
    );
    let got = db
        .store
        .claim("w", &["nodule-patches"], LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, b);
    assert_eq!(got.payload["n"], 2);
    let got = db
        .store
        .claim("w", &["radiomics", "body-composition"], LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, a);
    assert!(db.store.claim("w", &[], LONG).await.unwrap().is_none());
}

async fn imaging_results_are_cached_per_series_and_pipeline_version(db: &mut TestDb) {
    let uid = "1.2.826.0.1.3680043.8.498.1";
    let result = json!({"l3_slice": 57, "smi_cm2_m2": 38.9, "sat_cm2": 120.5, "mask_sha256": "ab"});
    assert!(
        db.store
            .get_imaging_result(uid, "bc-1.0", "body-composition")
            .await
            .unwrap()
            .is_none()
    );

    db.store
        .put_imaging_result(uid, "bc-1.0", "body-composition", &result)
        .await
        .unwrap();

    assert_eq!(
        db.store
            .get_imaging_result(uid, "bc-1.0", "body-composition")
            .await
            .unwrap(),
        Some(result.clone())
    );
    assert!(
        db.store
            .get_imaging_result(uid, "bc-1.1", "body-composition")
            .await
            .unwrap()
            .is_none(),
        "another pipeline version misses"
    );
    assert!(
        db.store
            .get_imaging_result(uid, "bc-1.0", "nodules")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        db.store
            .get_imaging_result("1.2.3", "bc-1.0", "body-composition")
            .await
            .unwrap()
            .is_none()
    );
    // Recomputing under the same version replaces the entry.
    let newer = json!({"l3_slice": 58});
    db.store
        .put_imaging_result(uid, "bc-1.0", "body-composition", &newer)
        .await
        .unwrap();
    assert_eq!(
        db.store
            .get_imaging_result(uid, "bc-1.0", "body-composition")
            .await
            .unwrap(),
        Some(newer)
    );
    assert_eq!(db.count("imaging_results").await, 1);
}

async fn a_worker_pool_completes_retries_and_dead_letters(db: &mut TestDb) {
    let store = db.store.clone().with_backoff(Backoff {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(50),
        jitter: 0.0,
    });
    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(store.enqueue(&job("radiomics", n, 2)).await.unwrap().id());
    }
    let runs: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let runs_in_handler = runs.clone();
    // n % 10 == 3 always fails, n % 10 == 7 panics, n % 10 == 5 fails once.
    let handler: JobHandler = Arc::new(move |job| {
        let runs = runs_in_handler.clone();
        async move {
            let n = job.payload["n"].as_u64().unwrap();
            let count = {
                let mut r = runs.lock().unwrap();
                let c = r.entry(n).or_default();
                *c += 1;
                *c
            };
            match n % 10 {
                3 => Err(JobFailure::retryable(format!(
                    "segmentation failed for job {n}"
                ))),
                7 => panic!("handler bug"),
                5 if count == 1 => Err(JobFailure::retryable("transient")),
                _ => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok(json!({"n": n, "runs": count}))
                }
            }
        }
        .boxed()
    });
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let config = WorkerPoolConfig {
        poll_interval: Duration::from_millis(20),
        lease: Duration::from_secs(30),
        ..WorkerPoolConfig::new(4, &["radiomics"])
    };
    let pool = tokio::spawn(run_workers(store.clone(), config, handler, shutdown));

    // Wait until every job is finished (done or dead).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut open = 0;
        for id in &ids {
            let s = store.job(*id).await.unwrap().unwrap().status;
            if matches!(s, JobStatus::Queued | JobStatus::Running) {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} jobs still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    let stats = pool.await.unwrap();

    // 3 always-failing + 3 panicking jobs, 2 attempts each.
    assert_eq!(stats.dead_lettered, 6, "{stats:?}");
    assert_eq!(stats.retried, 6 + 3, "{stats:?}");
    assert_eq!(stats.completed, 24, "{stats:?}");
    assert_eq!(stats.lease_lost, 0);
    let dead = store.dead_letters("radiomics").await.unwrap();
    assert_eq!(dead.len(), 6);
    assert!(
        dead.iter()
            .any(|j| j.last_error.as_deref() == Some("job handler panicked"))
    );
    for id in &ids {
        let j = store.job(*id).await.unwrap().unwrap();
        let n = j.payload["n"].as_u64().unwrap();
        match n % 10 {
            3 | 7 => assert_eq!((j.status, j.attempts), (JobStatus::Dead, 2)),
            5 => assert_eq!(j.result, Some(json!({"n": n, "runs": 2}))),
            _ => assert_eq!(j.result, Some(json!({"n": n, "runs": 1}))),
        }
    }
}
