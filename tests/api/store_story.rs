//! The storage story, told once and run against SQLite and PostgreSQL:
//! audit records round-trip, are idempotent and append-only, and survive a
//! database outage through the spool.

use std::time::Duration;

use chrono::Utc;
use oncohooks::store::spool::{FeedbackPersisted, persist_feedback, persist_hook};
use oncohooks::store::{
    FeedbackInsert, JobStatus, Persisted, ReplayStats, Spool, SpoolEntry, SpoolError, Store,
    StoreOptions,
};
use oncohooks::writeback::WritebackJob;
use serde_json::json;
use uuid::Uuid;

use crate::both_backends;
use crate::support::db::{Backend, TestDb, error_chain};
use crate::support::records::{as_stored, feedback_as_stored, feedback_for, hook_record};

both_backends!(
    a_recorded_hook_reads_back_field_for_field,
    recording_the_same_hook_twice_is_a_no_op,
    the_same_feedback_twice_is_one_row,
    feedback_for_an_unknown_card_is_kept,
    audit_tables_refuse_update_and_delete,
    recent_predictions_are_newest_first_for_one_patient_and_service,
    migrating_twice_changes_nothing,
    a_hook_spooled_during_an_outage_is_replayed_exactly_once,
    replay_stops_at_an_outage_and_keeps_the_rest,
    unusable_spool_lines_go_to_rejected_with_a_reason,
    a_record_already_in_the_database_replays_as_a_no_op,
    an_invalid_hook_record_is_refused_by_name,
    appends_during_a_replay_are_never_lost,
    the_replayer_drains_the_spool_once_the_database_answers,
    a_record_the_database_refuses_is_rolled_back_and_rejected_not_retried,
    a_hooks_jobs_reach_the_queue_once_even_through_the_spool,
    concurrent_hooks_are_all_stored_and_a_refused_one_fails_alone,
    a_closed_store_refuses_hook_records,
);

/// After `close` a store writes nothing more (on PostgreSQL hook records use
/// their own connections, outside the pool: those close with it).
async fn a_closed_store_refuses_hook_records(db: &mut TestDb) {
    let store = db.connect_again().await;
    store
        .record_hook(&hook_record("cachexia", "Patient/p-1", Utc::now()))
        .await
        .expect("open: stored");
    store.close().await;
    let refused = store
        .record_hook(&hook_record("cachexia", "Patient/p-2", Utc::now()))
        .await;
    assert!(refused.is_err(), "closed: refused");
    assert_eq!(db.count("invocations").await, 1);
}

async fn a_recorded_hook_reads_back_field_for_field(db: &mut TestDb) {
    let rec = hook_record("cachexia", "Patient/p-1", Utc::now());

    db.store.record_hook(&rec).await.expect("recording a hook");

    let back = db
        .store
        .get_invocation(rec.invocation.id)
        .await
        .unwrap()
        .expect("the invocation is found");
    let expected = as_stored(rec.clone());
    assert_eq!(back.invocation, expected.invocation);
    assert_eq!(back.prediction, expected.prediction);
    let mut cards = back.cards.clone();
    cards.sort_by_key(|c| c.created_at);
    assert_eq!(cards, expected.cards);
    // JSON intact, including the u64 beyond f64 precision and the escapes.
    let features = &back.prediction.as_ref().unwrap().features;
    assert_eq!(features["big"], json!(9007199254740993u64));
    assert_eq!(
        features["note_excerpt"],
        "Appétit diminué — «patient fatigué»\tline\nbreak"
    );

    let card = db
        .store
        .find_card(rec.cards[1].uuid)
        .await
        .unwrap()
        .expect("card found by uuid");
    assert_eq!(card, expected.cards[1]);
    assert!(db.store.find_card(Uuid::new_v4()).await.unwrap().is_none());
    assert!(
        db.store
            .get_invocation(Uuid::new_v4())
            .await
            .unwrap()
            .is_none()
    );
}

async fn recording_the_same_hook_twice_is_a_no_op(db: &mut TestDb) {
    let rec = hook_record("cachexia", "Patient/p-2", Utc::now());
    db.store.record_hook(&rec).await.unwrap();

    db.store
        .record_hook(&rec)
        .await
        .expect("a replay is not an error");
    // Even a different body under the same invocation id changes nothing:
    // the first record is the audit truth.
    let mut altered = rec.clone();
    altered.invocation.outcome = "error-500".into();
    db.store.record_hook(&altered).await.unwrap();

    assert_eq!(db.count("invocations").await, 1);
    assert_eq!(db.count("predictions").await, 1);
    assert_eq!(db.count("cards").await, 2);
    let back = db
        .store
        .get_invocation(rec.invocation.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.invocation.outcome, "cards");
}

async fn the_same_feedback_twice_is_one_row(db: &mut TestDb) {
    let rec = hook_record("cachexia", "Patient/p-3", Utc::now());
    db.store.record_hook(&rec).await.unwrap();
    let fb = feedback_for(&rec.cards[0], "overridden");

    let first = db.store.record_feedback(&fb).await.unwrap();
    // A client retry: same content (same digest), new server-side id.
    let retry = oncohooks::store::FeedbackRecord {
        id: Uuid::new_v4(),
        ..fb.clone()
    };
    let second = db.store.record_feedback(&retry).await.unwrap();

    assert_eq!(first, FeedbackInsert::Inserted);
    assert_eq!(second, FeedbackInsert::Duplicate);
    assert_eq!(db.count("feedback").await, 1);
    let stored = db.store.feedback_for_card(rec.cards[0].uuid).await.unwrap();
    assert_eq!(stored, vec![feedback_as_stored(fb)]);
    assert!(
        db.store
            .feedback_for_card(rec.cards[1].uuid)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn feedback_for_an_unknown_card_is_kept(db: &mut TestDb) {
    let orphan_card = hook_record("cachexia", "Patient/p-4", Utc::now()).cards[0].clone();
    let fb = feedback_for(&orphan_card, "accepted");

    let res = db.store.record_feedback(&fb).await;

    assert_eq!(res.unwrap(), FeedbackInsert::Inserted);
    assert!(
        db.store
            .find_card(orphan_card.uuid)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        db.store
            .feedback_for_card(orphan_card.uuid)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn audit_tables_refuse_update_and_delete(db: &mut TestDb) {
    let rec = hook_record("cachexia", "Patient/p-5", Utc::now());
    db.store.record_hook(&rec).await.unwrap();
    db.store
        .record_feedback(&feedback_for(&rec.cards[0], "accepted"))
        .await
        .unwrap();

    let statements: [(&'static str, &'static str); 8] = [
        ("invocations", "UPDATE invocations SET outcome = 'tampered'"),
        ("invocations", "DELETE FROM invocations"),
        ("predictions", "UPDATE predictions SET risk_tier = 'low'"),
        ("predictions", "DELETE FROM predictions"),
        ("cards", "UPDATE cards SET service_id = 'x'"),
        ("cards", "DELETE FROM cards"),
        ("feedback", "UPDATE feedback SET outcome = 'accepted'"),
        ("feedback", "DELETE FROM feedback"),
    ];
    for (table, sql) in statements {
        let err = db
            .store
            .execute_raw(sql)
            .await
            .expect_err(&format!("`{sql}` must be refused"));
        let msg = error_chain(&err);
        assert!(
            msg.contains("append-only table") && msg.contains(table),
            "`{sql}` failed for another reason: {msg}"
        );
    }
    if db.backend == Backend::Postgres {
        let err = db
            .store
            .execute_raw("TRUNCATE predictions CASCADE")
            .await
            .unwrap_err();
        assert!(
            error_chain(&err).contains("append-only"),
            "{}",
            error_chain(&err)
        );
    }

    // Nothing changed.
    let back = db
        .store
        .get_invocation(rec.invocation.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.invocation.outcome, "cards");
    assert_eq!(back.prediction.unwrap().risk_tier, "high");
    assert_eq!(db.count("cards").await, 2);
    assert_eq!(db.count("feedback").await, 1);
}

async fn recent_predictions_are_newest_first_for_one_patient_and_service(db: &mut TestDb) {
    let t0 = Utc::now() - chrono::Duration::hours(1);
    let mut ids = Vec::new();
    for i in 0..4 {
        let rec = hook_record("cachexia", "Patient/p-6", t0 + chrono::Duration::minutes(i));
        ids.push(rec.prediction.as_ref().unwrap().id);
        db.store.record_hook(&rec).await.unwrap();
    }
    // Noise: another patient, another service.
    db.store
        .record_hook(&hook_record(
            "cachexia",
            "Patient/other",
            t0 + chrono::Duration::minutes(10),
        ))
        .await
        .unwrap();
    db.store
        .record_hook(&hook_record(
            "lung-nodule",
            "Patient/p-6",
            t0 + chrono::Duration::minutes(10),
        ))
        .await
        .unwrap();

    let recent = db
        .store
        .recent_predictions("cachexia", "Patient/p-6", 3)
        .await
        .unwrap();

    let got: Vec<Uuid> = recent.iter().map(|p| p.id).collect();
    assert_eq!(got, vec![ids[3], ids[2], ids[1]]);
    assert!(
        db.store
            .recent_predictions("cachexia", "Patient/none", 5)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn migrating_twice_changes_nothing(db: &mut TestDb) {
    let rec = hook_record("cachexia", "Patient/p-7", Utc::now());
    db.store.record_hook(&rec).await.unwrap();

    db.store
        .migrate()
        .await
        .expect("a second migrate is a no-op");

    assert_eq!(db.count("invocations").await, 1);
    db.store.ping().await.unwrap();

    // Migrations 6 and 7: the snapshot is `json`, TOAST-compressed with
    // lz4 wherever the server has it (a table declared with it tells).
    if let Store::Postgres(s) = &db.store {
        for (table, column) in [
            ("predictions", "features"),
            ("predictions", "result"),
            ("cards", "card"),
        ] {
            let ty: String = sqlx::query_scalar(
                "SELECT data_type::text FROM information_schema.columns \
                 WHERE table_name = $1 AND column_name = $2",
            )
            .bind(table)
            .bind(column)
            .fetch_one(s.pool())
            .await
            .unwrap();
            assert_eq!(ty, "json", "{table}.{column}");
        }
        let lz4 = sqlx::query("CREATE TEMP TABLE lz4_probe (j jsonb COMPRESSION lz4)")
            .execute(s.pool())
            .await
            .is_ok();
        let method: String = sqlx::query_scalar(
            "SELECT attcompression::text FROM pg_attribute \
             WHERE attrelid = 'predictions'::regclass AND attname = 'features'",
        )
        .fetch_one(s.pool())
        .await
        .unwrap();
        assert_eq!(method, if lz4 { "l" } else { "" });
    }
}

fn spool_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

async fn a_hook_spooled_during_an_outage_is_replayed_exactly_once(db: &mut TestDb) {
    let mut down = TestDb::new(db.backend).await;
    down.sabotage().await;
    let dir = spool_dir();
    let spool = Spool::open(&dir.path().join("spool")).await.unwrap();
    let rec = hook_record("cachexia", "Patient/p-8", Utc::now());
    let fb = feedback_for(&rec.cards[0], "accepted");

    let hook_outcome = persist_hook(&down.store, &spool, &rec).await.unwrap();
    let fb_outcome = persist_feedback(&down.store, &spool, &fb).await.unwrap();

    assert_eq!(hook_outcome, Persisted::Spooled);
    assert_eq!(fb_outcome, FeedbackPersisted::Spooled);
    assert_eq!(spool.pending().await.unwrap(), 2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(spool.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "the spool holds clinical data");
    }

    // The database is back (a working one): replay writes both, once.
    let first = spool.replay(&db.store).await.unwrap();
    assert_eq!(
        first,
        ReplayStats {
            replayed: 2,
            remaining: 0,
            rejected: 0
        }
    );
    let back = db
        .store
        .get_invocation(rec.invocation.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.invocation, as_stored(rec.clone()).invocation);
    assert_eq!(
        db.store
            .feedback_for_card(rec.cards[0].uuid)
            .await
            .unwrap()
            .len(),
        1
    );

    let second = spool.replay(&db.store).await.unwrap();
    assert_eq!(second, ReplayStats::default());
    assert_eq!(db.count("invocations").await, 1);
    assert_eq!(db.count("feedback").await, 1);
    assert!(!spool.rejected_path().exists());

    // With the database up, persisting goes straight there.
    let live = hook_record("cachexia", "Patient/p-8", Utc::now());
    assert_eq!(
        persist_hook(&db.store, &spool, &live).await.unwrap(),
        Persisted::Database
    );
    assert_eq!(spool.pending().await.unwrap(), 0);
    down.cleanup().await;
}

/// A hook record's jobs (the RiskAssessment write-back) are written with
/// it: through the spool too, once however often the record is replayed,
/// and never twice for a key still queued.
async fn a_hooks_jobs_reach_the_queue_once_even_through_the_spool(db: &mut TestDb) {
    let mut down = TestDb::new(db.backend).await;
    down.sabotage().await;
    let dir = spool_dir();
    let spool = Spool::open(&dir.path().join("spool")).await.unwrap();
    let mut rec = hook_record("cachexia", "Patient/p-9", Utc::now());
    let prediction = rec.prediction.as_ref().unwrap().id;
    let job = WritebackJob {
        prediction_id: prediction,
    };
    rec.jobs.push(job.to_new_job(4));

    assert_eq!(
        persist_hook(&down.store, &spool, &rec).await.unwrap(),
        Persisted::Spooled
    );
    assert_eq!(db.count("jobs").await, 0);
    spool.replay(&db.store).await.unwrap();
    let queued = db
        .store
        .jobs_by_dedupe_key(&job.dedupe_key())
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].status, JobStatus::Queued);
    assert_eq!(queued[0].payload, json!({"prediction_id": prediction}));
    assert_eq!(queued[0].max_attempts, 4);

    // Replays and retries of the same record add nothing.
    db.store.record_hook(&rec).await.unwrap();
    spool.replay(&db.store).await.unwrap();
    // Another record naming the same key while it is queued: no second job.
    let mut again = hook_record("cachexia", "Patient/p-9", Utc::now());
    again.jobs.push(job.to_new_job(4));
    db.store.record_hook(&again).await.unwrap();
    assert_eq!(db.count("jobs").await, 1);
    assert_eq!(db.count("invocations").await, 2);
    down.cleanup().await;
}

async fn replay_stops_at_an_outage_and_keeps_the_rest(db: &mut TestDb) {
    let mut down = TestDb::new(db.backend).await;
    down.sabotage().await;
    let dir = spool_dir();
    let spool = Spool::open(dir.path()).await.unwrap();
    let recs: Vec<_> = (0..3)
        .map(|i| hook_record("cachexia", &format!("Patient/q-{i}"), Utc::now()))
        .collect();
    for r in &recs {
        spool.append(&SpoolEntry::Hook(r.clone())).await.unwrap();
    }

    let stats = spool.replay(&down.store).await.unwrap();

    assert_eq!(
        stats,
        ReplayStats {
            replayed: 0,
            remaining: 3,
            rejected: 0
        }
    );
    assert_eq!(spool.pending().await.unwrap(), 3);
    // A reopened handle (process restart) sees the same entries, in order.
    drop(spool);
    let spool = Spool::open(dir.path()).await.unwrap();
    assert_eq!(spool.replay(&db.store).await.unwrap().replayed, 3);
    for r in &recs {
        assert!(
            db.store
                .get_invocation(r.invocation.id)
                .await
                .unwrap()
                .is_some()
        );
    }
    down.cleanup().await;
}

async fn unusable_spool_lines_go_to_rejected_with_a_reason(db: &mut TestDb) {
    let dir = spool_dir();
    let good1 = hook_record("cachexia", "Patient/r-1", Utc::now());
    let good2 = hook_record("cachexia", "Patient/r-2", Utc::now());
    // Valid JSON, but the database can never take it (CDS Hooks 2.0 knows
    // only "accepted" and "overridden").
    let mut refused = feedback_for(&good1.cards[0], "accepted");
    refused.outcome = "maybe".into();
    let line = |e: &SpoolEntry| serde_json::to_string(e).unwrap();
    let content = format!(
        "{}\n{{\"kind\":\"hook\",\"record\":{{\"invocation\":\n{}\n\n{}\n{{\"kind\":\"hook\",\"rec",
        line(&SpoolEntry::Hook(good1.clone())),
        line(&SpoolEntry::Feedback(refused)),
        line(&SpoolEntry::Hook(good2.clone())),
    );
    std::fs::write(dir.path().join("spool.jsonl"), content).unwrap();
    // A crash mid-replay left a temporary file: it must not resurrect.
    std::fs::write(dir.path().join("spool.jsonl.tmp"), "garbage").unwrap();

    let spool = Spool::open(dir.path()).await.unwrap();
    let stats = spool.replay(&db.store).await.unwrap();

    assert_eq!(
        stats,
        ReplayStats {
            replayed: 2,
            remaining: 0,
            rejected: 3
        }
    );
    assert!(!dir.path().join("spool.jsonl.tmp").exists());
    assert!(
        db.store
            .get_invocation(good1.invocation.id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        db.store
            .get_invocation(good2.invocation.id)
            .await
            .unwrap()
            .is_some()
    );
    let rejected = std::fs::read_to_string(spool.rejected_path()).unwrap();
    let rejected: Vec<serde_json::Value> = rejected
        .lines()
        .map(|l| serde_json::from_str(l).expect("rejected lines are JSON"))
        .collect();
    assert_eq!(rejected.len(), 3);
    assert_eq!(
        rejected[0]["line"],
        "{\"kind\":\"hook\",\"record\":{\"invocation\":"
    );
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("not a spool entry")
    );
    assert!(
        rejected[1]["reason"].as_str().unwrap().contains("outcome"),
        "{}",
        rejected[1]
    );
    assert_eq!(
        rejected[2]["line"], "{\"kind\":\"hook\",\"rec",
        "the torn tail, exactly"
    );
    assert_eq!(spool.pending().await.unwrap(), 0);
    // Rejects are not retried.
    assert_eq!(
        spool.replay(&db.store).await.unwrap(),
        ReplayStats::default()
    );
}

async fn a_record_already_in_the_database_replays_as_a_no_op(db: &mut TestDb) {
    // The situation after a crash between a replayed write and the spool
    // rewrite, or a write that committed after its deadline had passed.
    let rec = hook_record("cachexia", "Patient/s-1", Utc::now());
    db.store.record_hook(&rec).await.unwrap();
    let dir = spool_dir();
    let spool = Spool::open(dir.path()).await.unwrap();
    spool.append(&SpoolEntry::Hook(rec.clone())).await.unwrap();
    spool.append(&SpoolEntry::Hook(rec.clone())).await.unwrap();

    let stats = spool.replay(&db.store).await.unwrap();

    assert_eq!(stats.replayed, 2);
    assert_eq!(stats.remaining, 0);
    assert_eq!(db.count("invocations").await, 1);
    assert_eq!(db.count("cards").await, 2);
}

async fn an_invalid_hook_record_is_refused_by_name(db: &mut TestDb) {
    let mut rec = hook_record("cachexia", "Patient/t-1", Utc::now());
    rec.cards[1].invocation_id = Uuid::new_v4();

    let err = db.store.record_hook(&rec).await.unwrap_err();

    assert!(
        err.to_string().contains(&rec.cards[1].uuid.to_string()),
        "{err}"
    );
    assert!(err.is_record_rejected());
    assert_eq!(db.count("invocations").await, 0, "nothing half-written");
}

async fn appends_during_a_replay_are_never_lost(db: &mut TestDb) {
    let dir = spool_dir();
    let spool = Spool::open(dir.path()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..60 {
        let r = hook_record("cachexia", &format!("Patient/v-{i}"), Utc::now());
        ids.push(r.invocation.id);
        spool.append(&SpoolEntry::Hook(r)).await.unwrap();
    }
    let late: Vec<_> = (0..20)
        .map(|i| hook_record("cachexia", &format!("Patient/w-{i}"), Utc::now()))
        .collect();
    ids.extend(late.iter().map(|r| r.invocation.id));

    // Whatever the interleaving, every entry ends up either written or
    // still in the spool.
    let appender = {
        let spool = spool.clone();
        tokio::spawn(async move {
            for r in late {
                spool.append(&SpoolEntry::Hook(r)).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let first = spool.replay(&db.store).await.unwrap();
    appender.await.unwrap();
    let pending = spool.pending().await.unwrap();

    assert_eq!(first.rejected, 0);
    assert_eq!(
        db.count("invocations").await as usize + pending,
        80,
        "{first:?}"
    );
    let second = spool.replay(&db.store).await.unwrap();
    assert_eq!(second.replayed, pending);
    assert_eq!(spool.pending().await.unwrap(), 0);
    for id in ids {
        assert!(db.store.get_invocation(id).await.unwrap().is_some());
    }
}

async fn the_replayer_drains_the_spool_once_the_database_answers(db: &mut TestDb) {
    let dir = spool_dir();
    let spool = Spool::open(dir.path()).await.unwrap();
    let rec = hook_record("cachexia", "Patient/x-1", Utc::now());
    spool.append(&SpoolEntry::Hook(rec.clone())).await.unwrap();
    let fb = feedback_for(&rec.cards[0], "accepted");
    spool
        .append(&SpoolEntry::Feedback(fb.clone()))
        .await
        .unwrap();

    let replayer = oncohooks::store::spawn_replayer(
        db.store.clone(),
        spool.clone(),
        Duration::from_millis(50),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while spool.pending().await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "spool not drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replayer.abort();

    assert!(
        db.store
            .get_invocation(rec.invocation.id)
            .await
            .unwrap()
            .is_some()
    );
    // The feedback is now known: persisting it again is a duplicate.
    assert_eq!(
        persist_feedback(&db.store, &spool, &fb).await.unwrap(),
        FeedbackPersisted::Database(FeedbackInsert::Duplicate)
    );
}

async fn a_record_the_database_refuses_is_rolled_back_and_rejected_not_retried(db: &mut TestDb) {
    let first = hook_record("cachexia", "Patient/y-1", Utc::now());
    db.store.record_hook(&first).await.unwrap();
    // A consistent record whose second card reuses a stored card's uuid:
    // the primary key refuses it after the invocation row went in.
    let mut clash = hook_record("cachexia", "Patient/y-2", Utc::now());
    clash.cards[1].uuid = first.cards[0].uuid;

    let err = db.store.record_hook(&clash).await.unwrap_err();

    assert!(err.is_record_rejected(), "{}", error_chain(&err));
    assert!(
        db.store
            .get_invocation(clash.invocation.id)
            .await
            .unwrap()
            .is_none(),
        "one transaction: nothing of the refused record remains"
    );
    assert_eq!(db.count("invocations").await, 1);
    assert_eq!(db.count("predictions").await, 1);

    // Through the spool it ends in spool.rejected instead of blocking
    // the entries behind it forever.
    let dir = spool_dir();
    let spool = Spool::open(dir.path()).await.unwrap();
    assert_eq!(
        persist_hook(&db.store, &spool, &clash).await.unwrap(),
        Persisted::Spooled
    );
    let behind = hook_record("cachexia", "Patient/y-3", Utc::now());
    spool
        .append(&SpoolEntry::Hook(behind.clone()))
        .await
        .unwrap();
    let stats = spool.replay(&db.store).await.unwrap();
    assert_eq!(
        stats,
        ReplayStats {
            replayed: 1,
            remaining: 0,
            rejected: 1
        }
    );
    assert!(
        db.store
            .get_invocation(behind.invocation.id)
            .await
            .unwrap()
            .is_some()
    );

    // A NUL character in a text column: PostgreSQL text cannot hold it
    // (SQLSTATE class 22), SQLite can. Documented in docs/storage.md.
    let mut nul = hook_record("cachexia", "Patient/y-4", Utc::now());
    nul.invocation.error = Some("before\u{0}after".into());
    let res = db.store.record_hook(&nul).await;
    match db.backend {
        Backend::Sqlite => {
            res.unwrap();
        }
        Backend::Postgres => {
            let err = res.unwrap_err();
            assert!(err.is_record_rejected(), "{}", error_chain(&err));
        }
    }
    // Inside a card's JSON both keep it: the `json` column stores the
    // escape as written (migration 7), and it reads back as the character.
    let mut nul = hook_record("cachexia", "Patient/y-5", Utc::now());
    nul.cards[0].card["detail"] = json!("before\u{0}after");
    db.store.record_hook(&nul).await.unwrap();
    let back = db
        .store
        .find_card(nul.cards[0].uuid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.card["detail"], "before\u{0}after");
}

// ------------------------------------------------- single-backend stories

#[tokio::test]
async fn a_spool_folder_has_one_owner() {
    let dir = spool_dir();
    let first = Spool::open(dir.path()).await.unwrap();

    let second = Spool::open(dir.path()).await;

    assert!(
        matches!(second, Err(SpoolError::InUse { .. })),
        "{second:?}"
    );
    drop(first);
    Spool::open(dir.path())
        .await
        .expect("free again once the owner is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_whole_lines() {
    let dir = spool_dir();
    let spool = Spool::open(dir.path()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            let rec = hook_record("cachexia", &format!("Patient/c-{i}"), Utc::now());
            spool.append(&SpoolEntry::Hook(rec)).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let text = std::fs::read_to_string(spool.path()).unwrap();
    let entries: Vec<SpoolEntry> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is a whole entry"))
        .collect();
    assert_eq!(entries.len(), 40);
}

#[tokio::test]
async fn sqlite_files_and_folders_are_created_private() {
    let dir = spool_dir();
    let path = dir.path().join("nested/deeper/oncohooks.db");
    let store = Store::connect(&format!("sqlite://{}", path.display()), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.backend_name(), "sqlite");
    assert!(path.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    store.close().await;
}

#[tokio::test]
async fn an_in_memory_sqlite_store_keeps_its_data_across_calls() {
    let store = Store::connect("sqlite::memory:", 4).await.unwrap();
    store.migrate().await.unwrap();
    let rec = hook_record("cachexia", "Patient/m-1", Utc::now());

    store.record_hook(&rec).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    assert!(
        store
            .get_invocation(rec.invocation.id)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn an_unreachable_postgres_server_spools_instead_of_failing_the_hook() {
    // Nothing listens on port 1: connections are refused at once.
    let store = Store::connect_lazy(
        "postgres://postgres@127.0.0.1:1/oncohooks",
        &StoreOptions {
            acquire_timeout: Duration::from_millis(500),
            write_timeout: Duration::from_secs(1),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let dir = spool_dir();
    let spool = Spool::open(dir.path()).await.unwrap();
    let rec = hook_record("cachexia", "Patient/u-1", Utc::now());

    let started = std::time::Instant::now();
    let outcome = persist_hook(&store, &spool, &rec).await.unwrap();

    assert_eq!(outcome, Persisted::Spooled);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(spool.pending().await.unwrap(), 1);
}

/// Many hooks at once: every one is stored, and a record the database
/// refuses fails on its own, with the same error as alone, without taking
/// any other down (a guard for any future batching of the writes).
async fn concurrent_hooks_are_all_stored_and_a_refused_one_fails_alone(db: &mut TestDb) {
    let first = hook_record("cachexia", "Patient/g-0", Utc::now());
    db.store.record_hook(&first).await.unwrap();
    let mut recs: Vec<_> = (1..=40)
        .map(|i| hook_record("cachexia", &format!("Patient/g-{i}"), Utc::now()))
        .collect();
    recs[17].cards[1].uuid = first.cards[0].uuid;

    let results =
        futures_util::future::join_all(recs.iter().map(|r| db.store.record_hook(r))).await;

    for (i, r) in results.iter().enumerate() {
        match r {
            Err(e) if i == 17 => assert!(e.is_record_rejected(), "{}", error_chain(e)),
            Err(e) => panic!("hook {i}: {}", error_chain(e)),
            Ok(()) if i == 17 => panic!("the clashing record was stored"),
            Ok(()) => {}
        }
    }
    assert_eq!(db.count("invocations").await, 40);
    assert_eq!(db.count("cards").await, 80);
    for (i, r) in recs.iter().enumerate() {
        let stored = db.store.get_invocation(r.invocation.id).await.unwrap();
        assert_eq!(stored.is_some(), i != 17, "hook {i}");
    }
}
