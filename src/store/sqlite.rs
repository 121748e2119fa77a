//! SQLite backend (the embedded default): one file in WAL mode, foreign keys
//! on, every write in a `BEGIN IMMEDIATE` transaction so that writers queue
//! on the busy timeout instead of failing with `SQLITE_BUSY` when a deferred
//! transaction tries to upgrade (SQLite docs, "Transaction", §2.1).
//! Migrations: `migrations/sqlite/`.
//!
//! Types: UUIDs as hyphenated text, JSON as text, timestamps as fixed-width
//! `YYYY-MM-DDTHH:MM:SS.ffffffZ` text so that text order is time order (the
//! job queue compares them in SQL). Times come from this process's clock:
//! a SQLite file has one host.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr, Sqlite};
use uuid::Uuid;

use super::embeddings::{self, NoteEmbedding};
use super::jobs::{Enqueued, FailOutcome, Job, JobStatus, NewJob};
use super::query::{
    Arg, Args, AuditEventFilter, AuditEventRecord, Dialect, OutcomeRecord, PredictionFilter,
    PredictionRow,
};
use super::records::{
    CardRecord, FeedbackInsert, FeedbackRecord, HookRecord, InvocationRecord, PredictionRecord,
    StoredInvocation,
};
use super::{SQLITE, Settings, StoreError, StoreOptions, json_text};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "audit records",
        include_str!("../../migrations/sqlite/0001_audit_records.sql"),
    ),
    (
        2,
        "jobs and imaging cache",
        include_str!("../../migrations/sqlite/0002_jobs_and_imaging_cache.sql"),
    ),
    (
        3,
        "note embeddings",
        include_str!("../../migrations/sqlite/0003_note_embeddings.sql"),
    ),
    (
        4,
        "audit events",
        include_str!("../../migrations/sqlite/0004_audit_events.sql"),
    ),
    (
        5,
        "outcomes",
        include_str!("../../migrations/sqlite/0005_outcomes.sql"),
    ),
];

/// How long a writer waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    StoreError::db(SQLITE, action)
}

/// The SQLite implementation of [`super::Store`].
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    pub(crate) settings: Settings,
}

impl SqliteStore {
    pub(crate) async fn connect(url: &str, opts: &StoreOptions) -> Result<Self, StoreError> {
        let (pool_opts, conn) = Self::options(url, opts)?;
        let pool = pool_opts
            .connect_with(conn)
            .await
            .map_err(|source| StoreError::Connect {
                backend: SQLITE,
                source,
            })?;
        Ok(SqliteStore {
            pool,
            settings: Settings::from(opts),
        })
    }

    pub(crate) fn connect_lazy(url: &str, opts: &StoreOptions) -> Result<Self, StoreError> {
        let (pool_opts, conn) = Self::options(url, opts)?;
        Ok(SqliteStore {
            pool: pool_opts.connect_lazy_with(conn),
            settings: Settings::from(opts),
        })
    }

    fn options(
        url: &str,
        opts: &StoreOptions,
    ) -> Result<(SqlitePoolOptions, SqliteConnectOptions), StoreError> {
        let conn =
            SqliteConnectOptions::from_str(url).map_err(|source| StoreError::InvalidUrl {
                backend: SQLITE,
                source,
            })?;
        let in_memory = url.starts_with("sqlite::memory:") || url.contains("mode=memory");
        let conn = conn.foreign_keys(true).busy_timeout(BUSY_TIMEOUT);
        if in_memory {
            // An in-memory database lives as long as its connections: keep
            // exactly one, forever (several would also share one cache
            // with table-level locks that ignore the busy timeout).
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(opts.acquire_timeout);
            return Ok((pool, conn));
        }
        prepare_file(conn.get_filename())?;
        let conn = conn
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed audit record survives a power cut, not just
            // a process crash (NORMAL in WAL mode only guarantees the latter).
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.acquire_timeout);
        Ok((pool, conn))
    }

    /// The pool, for tests and ad-hoc maintenance queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        super::migrator(MIGRATIONS)
            .run(&self.pool)
            .await
            .map_err(|source| StoreError::Migrate {
                backend: SQLITE,
                source,
            })
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db("pinging the database"))
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db("starting a write transaction"))
    }

    // ---------------------------------------------------------------- audit

    pub(crate) async fn record_hook(&self, rec: &HookRecord) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let inv = &rec.invocation;
        let inserted = sqlx::query(
            "INSERT INTO invocations (id, hook_instance, service_id, hook, patient_id, user_id, \
             encounter_id, fhir_server_host, client_iss, client_sub, received_at, total_ms, fhir_ms, \
             inference_ms, http_status, outcome, error) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(inv.id.to_string())
        .bind(&inv.hook_instance)
        .bind(&inv.service_id)
        .bind(&inv.hook)
        .bind(&inv.patient_id)
        .bind(&inv.user_id)
        .bind(&inv.encounter_id)
        .bind(&inv.fhir_server_host)
        .bind(&inv.client_iss)
        .bind(&inv.client_sub)
        .bind(ts(inv.received_at))
        .bind(inv.total_ms)
        .bind(inv.fhir_ms)
        .bind(inv.inference_ms)
        .bind(inv.http_status)
        .bind(&inv.outcome)
        .bind(&inv.error)
        .execute(&mut *tx)
        .await
        .map_err(db("inserting an invocation"))?
        .rows_affected();
        if inserted == 0 {
            // Already recorded (a spool replay, or a retry): a no-op.
            return Ok(());
        }
        if let Some(p) = &rec.prediction {
            sqlx::query(
                "INSERT INTO predictions (id, invocation_id, service_id, patient_id, model_id, \
                 model_version, risk, risk_tier, confidence, review_suggested, input_digest, features, \
                 result, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
            )
            .bind(p.id.to_string())
            .bind(p.invocation_id.to_string())
            .bind(&p.service_id)
            .bind(&p.patient_id)
            .bind(&p.model_id)
            .bind(&p.model_version)
            .bind(p.risk)
            .bind(&p.risk_tier)
            .bind(p.confidence)
            .bind(p.review_suggested)
            .bind(&p.input_digest)
            .bind(json_text(&p.features)?)
            .bind(json_text(&p.result)?)
            .bind(ts(p.created_at))
            .execute(&mut *tx)
            .await
            .map_err(db("inserting a prediction"))?;
        }
        for c in &rec.cards {
            sqlx::query(
                "INSERT INTO cards (uuid, invocation_id, prediction_id, service_id, card, created_at) \
                 VALUES ($1,$2,$3,$4,$5,$6)",
            )
            .bind(c.uuid.to_string())
            .bind(c.invocation_id.to_string())
            .bind(c.prediction_id.map(|u| u.to_string()))
            .bind(&c.service_id)
            .bind(json_text(&c.card)?)
            .bind(ts(c.created_at))
            .execute(&mut *tx)
            .await
            .map_err(db("inserting a card"))?;
        }
        let now = ts(Utc::now());
        for j in &rec.jobs {
            sqlx::query(
                "INSERT INTO jobs (id, kind, payload, dedupe_key, status, attempts, max_attempts, \
                 run_after, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $6, $6) \
                 ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running') \
                 DO NOTHING",
            )
            .bind(Uuid::new_v4().to_string())
            .bind(&j.kind)
            .bind(json_text(&j.payload)?)
            .bind(&j.dedupe_key)
            .bind(j.max_attempts)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db("enqueueing a hook's job"))?;
        }
        tx.commit().await.map_err(db("committing a hook record"))
    }

    pub(crate) async fn record_feedback(
        &self,
        f: &FeedbackRecord,
    ) -> Result<FeedbackInsert, StoreError> {
        let override_reason = f.override_reason.as_ref().map(json_text).transpose()?;
        let n = sqlx::query(
            "INSERT INTO feedback (id, service_id, card_uuid, outcome, override_reason, \
             accepted_suggestions, outcome_timestamp, received_at, client_iss, feedback_digest) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) ON CONFLICT (feedback_digest) DO NOTHING",
        )
        .bind(f.id.to_string())
        .bind(&f.service_id)
        .bind(f.card_uuid.to_string())
        .bind(&f.outcome)
        .bind(override_reason)
        .bind(json_text(&f.accepted_suggestions)?)
        .bind(ts(f.outcome_timestamp))
        .bind(ts(f.received_at))
        .bind(&f.client_iss)
        .bind(&f.feedback_digest)
        .execute(&self.pool)
        .await
        .map_err(db("inserting feedback"))?
        .rows_affected();
        Ok(if n == 0 {
            FeedbackInsert::Duplicate
        } else {
            FeedbackInsert::Inserted
        })
    }

    pub(crate) async fn get_invocation(
        &self,
        id: Uuid,
    ) -> Result<Option<StoredInvocation>, StoreError> {
        let id = id.to_string();
        let Some(row) = sqlx::query("SELECT * FROM invocations WHERE id = $1")
            .bind(&id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading an invocation"))?
        else {
            return Ok(None);
        };
        let invocation = invocation_from_row(&row)?;
        let prediction = sqlx::query(
            "SELECT * FROM predictions WHERE invocation_id = $1 ORDER BY created_at, id LIMIT 1",
        )
        .bind(&id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a prediction"))?
        .map(|r| prediction_from_row(&r))
        .transpose()?;
        let cards =
            sqlx::query("SELECT * FROM cards WHERE invocation_id = $1 ORDER BY created_at, uuid")
                .bind(&id)
                .fetch_all(&self.pool)
                .await
                .map_err(db("reading cards"))?
                .iter()
                .map(card_from_row)
                .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(StoredInvocation {
            invocation,
            prediction,
            cards,
            jobs: Vec::new(),
        }))
    }

    pub(crate) async fn find_card(&self, uuid: Uuid) -> Result<Option<CardRecord>, StoreError> {
        sqlx::query("SELECT * FROM cards WHERE uuid = $1")
            .bind(uuid.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a card"))?
            .map(|r| card_from_row(&r))
            .transpose()
    }

    pub(crate) async fn feedback_for_card(
        &self,
        uuid: Uuid,
    ) -> Result<Vec<FeedbackRecord>, StoreError> {
        sqlx::query("SELECT * FROM feedback WHERE card_uuid = $1 ORDER BY received_at, id")
            .bind(uuid.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading feedback"))?
            .iter()
            .map(feedback_from_row)
            .collect()
    }

    pub(crate) async fn recent_predictions(
        &self,
        service_id: &str,
        patient_id: &str,
        limit: i64,
    ) -> Result<Vec<PredictionRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM predictions WHERE service_id = $1 AND patient_id = $2 \
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(service_id)
        .bind(patient_id)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading recent predictions"))?
        .iter()
        .map(prediction_from_row)
        .collect()
    }

    // ------------------------------------------------------------ read side

    pub(crate) async fn search_predictions(
        &self,
        filter: &PredictionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<PredictionRow>, StoreError> {
        let mut args = Args::default();
        let sql =
            super::query::predictions_page_sql(Dialect::Sqlite, filter, limit, offset, &mut args);
        bind(sqlx::query(AssertSqlSafe(sql)), args.0)
            .fetch_all(&self.pool)
            .await
            .map_err(db("searching predictions"))?
            .iter()
            .map(prediction_row)
            .collect()
    }

    pub(crate) async fn count_predictions(
        &self,
        filter: &PredictionFilter,
    ) -> Result<i64, StoreError> {
        let mut args = Args::default();
        let sql = super::query::predictions_count_sql(Dialect::Sqlite, filter, &mut args);
        let row = bind(sqlx::query(AssertSqlSafe(sql)), args.0)
            .fetch_one(&self.pool)
            .await
            .map_err(db("counting predictions"))?;
        row.try_get::<i64, _>(0).map_err(db("counting predictions"))
    }

    pub(crate) async fn get_prediction(
        &self,
        id: Uuid,
    ) -> Result<Option<PredictionRow>, StoreError> {
        let mut args = Args::default();
        let base =
            super::query::predictions_sql(Dialect::Sqlite, &PredictionFilter::default(), &mut args);
        let sql = format!("{base} WHERE id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a prediction"))?
            .map(|r| prediction_row(&r))
            .transpose()
    }

    /// See `PgStore::stream_predictions`.
    pub(crate) async fn stream_predictions(
        &self,
        filter: &PredictionFilter,
        tx: &tokio::sync::mpsc::Sender<Result<PredictionRow, StoreError>>,
    ) {
        let mut args = Args::default();
        let sql = super::query::predictions_stream_sql(Dialect::Sqlite, filter, &mut args);
        let mut rows = bind(sqlx::query(AssertSqlSafe(sql)), args.0).fetch(&self.pool);
        loop {
            let item = match rows.try_next().await {
                Ok(Some(r)) => prediction_row(&r),
                Ok(None) => return,
                Err(e) => Err(db("streaming predictions")(e)),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    }

    pub(crate) async fn record_audit_event(&self, e: &AuditEventRecord) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO audit_events (id, recorded_at, agent_iss, agent_sub, action, operation, \
             path, patient_id, entity, resource) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        )
        .bind(e.id.to_string())
        .bind(ts(e.recorded_at))
        .bind(&e.agent_iss)
        .bind(&e.agent_sub)
        .bind(&e.action)
        .bind(&e.operation)
        .bind(&e.path)
        .bind(&e.patient_id)
        .bind(&e.entity)
        .bind(json_text(&e.resource)?)
        .execute(&mut *tx)
        .await
        .map_err(db("inserting an audit event"))?;
        tx.commit().await.map_err(db("committing an audit event"))
    }

    pub(crate) async fn search_audit_events(
        &self,
        filter: &AuditEventFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AuditEventRecord>, i64), StoreError> {
        let mut args = Args::default();
        let cond = super::query::audit_events_where(filter, &mut args);
        let count_sql = format!("SELECT count(*) FROM audit_events{cond}");
        let total: i64 = bind(sqlx::query(AssertSqlSafe(count_sql)), args.0.clone())
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(db("counting audit events"))?;
        let l = args.push(Arg::Int(limit.max(0)));
        let o = args.push(Arg::Int(offset.max(0)));
        let sql = format!(
            "SELECT * FROM audit_events{cond} ORDER BY recorded_at DESC, id DESC LIMIT {l} OFFSET {o}"
        );
        let rows = bind(sqlx::query(AssertSqlSafe(sql)), args.0)
            .fetch_all(&self.pool)
            .await
            .map_err(db("searching audit events"))?
            .iter()
            .map(audit_event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, total))
    }

    pub(crate) async fn record_outcome(&self, o: &OutcomeRecord) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO outcomes (id, service_id, patient_id, label, observed_on, recorded_at, \
             recorded_by) VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(o.id.to_string())
        .bind(&o.service_id)
        .bind(&o.patient_id)
        .bind(o.label)
        .bind(o.observed_on.format("%Y-%m-%d").to_string())
        .bind(ts(o.recorded_at))
        .bind(&o.recorded_by)
        .execute(&mut *tx)
        .await
        .map_err(db("inserting an outcome"))?;
        tx.commit().await.map_err(db("committing an outcome"))
    }

    // ----------------------------------------------------------------- jobs

    pub(crate) async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, StoreError> {
        // One IMMEDIATE transaction: nobody can finish the conflicting job
        // between our INSERT and SELECT.
        let mut tx = self.begin_write().await?;
        let id = Uuid::new_v4();
        let now = ts(Utc::now());
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, kind, payload, dedupe_key, status, attempts, max_attempts, \
             run_after, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $6, $6) \
             ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running') \
             DO NOTHING",
        )
        .bind(id.to_string())
        .bind(&job.kind)
        .bind(json_text(&job.payload)?)
        .bind(&job.dedupe_key)
        .bind(job.max_attempts)
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(db("enqueueing a job"))?
        .rows_affected();
        let out = if inserted == 1 {
            Enqueued::New(id)
        } else {
            let existing: String = sqlx::query_scalar(
                "SELECT id FROM jobs WHERE dedupe_key = $1 AND status IN ('queued', 'running')",
            )
            .bind(&job.dedupe_key)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("looking up a queued job"))?;
            Enqueued::AlreadyQueued(parse_uuid("jobs", "id", &existing)?)
        };
        tx.commit().await.map_err(db("committing a job"))?;
        Ok(out)
    }

    pub(crate) async fn claim(
        &self,
        worker_id: &str,
        kinds: &[&str],
        lease: Duration,
    ) -> Result<Option<Job>, StoreError> {
        let kinds = serde_json::to_string(kinds)
            .map_err(|e| StoreError::InvalidRecord(format!("job kinds: {e}")))?;
        let now = Utc::now();
        let until = later(now, lease);
        let (now, until) = (ts(now), ts(until));
        let mut tx = self.begin_write().await?;
        // A lease that expired on the last attempt: the worker died (or hung)
        // max_attempts times on this job; stop handing it out.
        sqlx::query(
            "UPDATE jobs SET status = 'dead', locked_by = NULL, locked_until = NULL, updated_at = $1, \
             last_error = 'lease expired on the last attempt (worker ' || coalesce(locked_by, '?') \
               || ' did not report back)' || coalesce('; previous error: ' || last_error, '') \
             WHERE status = 'running' AND locked_until < $1 AND attempts >= max_attempts \
               AND kind IN (SELECT value FROM json_each($2))",
        )
        .bind(&now)
        .bind(&kinds)
        .execute(&mut *tx)
        .await
        .map_err(db("dead-lettering expired jobs"))?;
        let row = sqlx::query(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = $1, \
               locked_until = $4, updated_at = $3 \
             WHERE id = ( \
               SELECT id FROM jobs \
               WHERE kind IN (SELECT value FROM json_each($2)) \
                 AND ((status = 'queued' AND run_after <= $3) \
                   OR (status = 'running' AND locked_until < $3 AND attempts < max_attempts)) \
               ORDER BY run_after, created_at \
               LIMIT 1) \
             RETURNING *",
        )
        .bind(worker_id)
        .bind(&kinds)
        .bind(&now)
        .bind(&until)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("claiming a job"))?;
        let job = row.map(|r| job_from_row(&r)).transpose()?;
        tx.commit().await.map_err(db("committing a claim"))?;
        Ok(job)
    }

    pub(crate) async fn heartbeat(
        &self,
        job_id: Uuid,
        worker_id: &str,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let until = later(now, lease);
        let n = sqlx::query(
            "UPDATE jobs SET locked_until = $3, updated_at = $4 \
             WHERE id = $1 AND status = 'running' AND locked_by = $2",
        )
        .bind(job_id.to_string())
        .bind(worker_id)
        .bind(ts(until))
        .bind(ts(now))
        .execute(&self.pool)
        .await
        .map_err(db("renewing a job lease"))?
        .rows_affected();
        lease_held(n, job_id, worker_id)
    }

    pub(crate) async fn complete(
        &self,
        job_id: Uuid,
        worker_id: &str,
        result: Option<&Value>,
    ) -> Result<(), StoreError> {
        let result = result.map(json_text).transpose()?;
        let n = sqlx::query(
            "UPDATE jobs SET status = 'done', locked_by = NULL, locked_until = NULL, result = $3, \
             updated_at = $4 WHERE id = $1 AND status = 'running' AND locked_by = $2",
        )
        .bind(job_id.to_string())
        .bind(worker_id)
        .bind(result)
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(db("completing a job"))?
        .rows_affected();
        lease_held(n, job_id, worker_id)
    }

    pub(crate) async fn fail(
        &self,
        job_id: Uuid,
        worker_id: &str,
        error: &str,
    ) -> Result<FailOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT attempts, max_attempts FROM jobs \
             WHERE id = $1 AND status = 'running' AND locked_by = $2",
        )
        .bind(job_id.to_string())
        .bind(worker_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("failing a job"))?;
        let Some(row) = row else {
            return Err(StoreError::LeaseLost {
                job_id,
                worker_id: worker_id.to_string(),
            });
        };
        let attempts: i32 = row.try_get("attempts").map_err(db("failing a job"))?;
        let max_attempts: i32 = row.try_get("max_attempts").map_err(db("failing a job"))?;
        let now = Utc::now();
        let outcome = if attempts >= max_attempts {
            sqlx::query(
                "UPDATE jobs SET status = 'dead', locked_by = NULL, locked_until = NULL, \
                 last_error = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(job_id.to_string())
            .bind(error)
            .bind(ts(now))
            .execute(&mut *tx)
            .await
            .map_err(db("dead-lettering a job"))?;
            FailOutcome::DeadLettered
        } else {
            let delay = self.settings.backoff.sample(attempts);
            let run_after = later(now, delay);
            let run_after_text = ts(run_after);
            sqlx::query(
                "UPDATE jobs SET status = 'queued', locked_by = NULL, locked_until = NULL, \
                 last_error = $2, run_after = $3, updated_at = $4 WHERE id = $1",
            )
            .bind(job_id.to_string())
            .bind(error)
            .bind(&run_after_text)
            .bind(ts(now))
            .execute(&mut *tx)
            .await
            .map_err(db("rescheduling a job"))?;
            FailOutcome::Retry {
                run_after: parse_ts("jobs", "run_after", &run_after_text)?,
            }
        };
        tx.commit().await.map_err(db("committing a job failure"))?;
        Ok(outcome)
    }

    pub(crate) async fn dead_letter(
        &self,
        job_id: Uuid,
        worker_id: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        let n = sqlx::query(
            "UPDATE jobs SET status = 'dead', locked_by = NULL, locked_until = NULL, \
             last_error = $3, updated_at = $4 \
             WHERE id = $1 AND status = 'running' AND locked_by = $2",
        )
        .bind(job_id.to_string())
        .bind(worker_id)
        .bind(error)
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(db("dead-lettering a job"))?
        .rows_affected();
        lease_held(n, job_id, worker_id)
    }

    pub(crate) async fn job(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a job"))?
            .map(|r| job_from_row(&r))
            .transpose()
    }

    pub(crate) async fn jobs_by_dedupe_key(&self, key: &str) -> Result<Vec<Job>, StoreError> {
        sqlx::query("SELECT * FROM jobs WHERE dedupe_key = $1 ORDER BY created_at DESC, id")
            .bind(key)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading jobs by dedupe key"))?
            .iter()
            .map(job_from_row)
            .collect()
    }

    pub(crate) async fn dead_letters(&self, kind: &str) -> Result<Vec<Job>, StoreError> {
        sqlx::query(
            "SELECT * FROM jobs WHERE kind = $1 AND status = 'dead' ORDER BY updated_at, id",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading dead letters"))?
        .iter()
        .map(job_from_row)
        .collect()
    }

    pub(crate) async fn put_imaging_result(
        &self,
        series_uid: &str,
        pipeline_version: &str,
        kind: &str,
        result: &Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO imaging_results (series_uid, pipeline_version, kind, result, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (series_uid, pipeline_version, kind) \
             DO UPDATE SET result = excluded.result, created_at = excluded.created_at",
        )
        .bind(series_uid)
        .bind(pipeline_version)
        .bind(kind)
        .bind(json_text(result)?)
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db("caching an imaging result"))
    }

    pub(crate) async fn get_imaging_result(
        &self,
        series_uid: &str,
        pipeline_version: &str,
        kind: &str,
    ) -> Result<Option<Value>, StoreError> {
        let v: Option<String> = sqlx::query_scalar(
            "SELECT result FROM imaging_results \
             WHERE series_uid = $1 AND pipeline_version = $2 AND kind = $3",
        )
        .bind(series_uid)
        .bind(pipeline_version)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading an imaging result"))?;
        v.map(|s| parse_json("imaging_results", "result", &s))
            .transpose()
    }

    pub(crate) async fn get_note_embeddings(
        &self,
        encoder: &str,
        digests: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        // SQLite has no array binds: the digests travel as one JSON array.
        let keys = serde_json::to_string(digests)
            .map_err(|e| StoreError::InvalidRecord(format!("note digests as JSON: {e}")))?;
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT text_sha256, embedding FROM note_embeddings \
             WHERE encoder = $1 AND text_sha256 IN (SELECT value FROM json_each($2))",
        )
        .bind(encoder)
        .bind(keys)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading note embeddings"))?;
        rows.into_iter()
            .map(|(d, b)| Ok((d, embeddings::from_bytes(&b)?)))
            .collect()
    }

    pub(crate) async fn put_note_embeddings(
        &self,
        encoder: &str,
        items: &[NoteEmbedding],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let now = ts(Utc::now());
        for it in items {
            sqlx::query(
                "INSERT INTO note_embeddings (encoder, text_sha256, dim, embedding, created_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (encoder, text_sha256) DO NOTHING",
            )
            .bind(encoder)
            .bind(&it.text_sha256)
            .bind(it.vector.len() as i64)
            .bind(embeddings::to_bytes(&it.vector))
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db("caching note embeddings"))?;
        }
        tx.commit().await.map_err(db("committing note embeddings"))
    }

    /// Runs one statement, for tests and maintenance (e.g. proving that the
    /// append-only triggers refuse an UPDATE).
    pub async fn execute_raw(&self, sql: impl SqlSafeStr) -> Result<u64, StoreError> {
        sqlx::query(sql)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(db("running a raw statement"))
    }
}

/// Creates the database file's folder (0700) and the file itself (0600) if
/// missing: it holds clinical data, so it is never world-readable, whatever
/// the process umask.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::SqliteFile {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(parent).map_err(io)?;
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    open.open(path).map(drop).map_err(io)
}

fn lease_held(rows: u64, job_id: Uuid, worker_id: &str) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::LeaseLost {
            job_id,
            worker_id: worker_id.to_string(),
        })
    } else {
        Ok(())
    }
}

/// `now + span`, with the span clamped like PostgreSQL's (see
/// [`super::clamp_span`]) so that absurd leases cannot overflow.
fn later(now: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    let span =
        chrono::Duration::from_std(super::clamp_span(span)).unwrap_or(chrono::Duration::zero());
    now + span
}

/// Fixed-width UTC text, microsecond precision (same as PostgreSQL).
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(
    table: &'static str,
    column: &'static str,
    s: &str,
) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::CorruptRow {
            table,
            column,
            reason: format!("not an RFC 3339 timestamp: {e}"),
        })
}

fn parse_uuid(table: &'static str, column: &'static str, s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::CorruptRow {
        table,
        column,
        reason: format!("not a UUID: {e}"),
    })
}

fn parse_json(table: &'static str, column: &'static str, s: &str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::CorruptRow {
        table,
        column,
        reason: format!("not JSON: {e}"),
    })
}

/// Typed access to a SQLite row, naming table and column on failure.
struct Cols<'r> {
    row: &'r SqliteRow,
    table: &'static str,
}

impl<'r> Cols<'r> {
    fn get<T>(&self, column: &'static str) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        self.row
            .try_get(column)
            .map_err(|e| StoreError::CorruptRow {
                table: self.table,
                column,
                reason: e.to_string(),
            })
    }

    fn uuid(&self, column: &'static str) -> Result<Uuid, StoreError> {
        parse_uuid(self.table, column, &self.get::<String>(column)?)
    }

    fn opt_uuid(&self, column: &'static str) -> Result<Option<Uuid>, StoreError> {
        self.get::<Option<String>>(column)?
            .map(|s| parse_uuid(self.table, column, &s))
            .transpose()
    }

    fn ts(&self, column: &'static str) -> Result<DateTime<Utc>, StoreError> {
        parse_ts(self.table, column, &self.get::<String>(column)?)
    }

    fn opt_ts(&self, column: &'static str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.get::<Option<String>>(column)?
            .map(|s| parse_ts(self.table, column, &s))
            .transpose()
    }

    fn json(&self, column: &'static str) -> Result<Value, StoreError> {
        parse_json(self.table, column, &self.get::<String>(column)?)
    }

    fn opt_json(&self, column: &'static str) -> Result<Option<Value>, StoreError> {
        self.get::<Option<String>>(column)?
            .map(|s| parse_json(self.table, column, &s))
            .transpose()
    }
}

fn invocation_from_row(row: &SqliteRow) -> Result<InvocationRecord, StoreError> {
    let c = Cols {
        row,
        table: "invocations",
    };
    Ok(InvocationRecord {
        id: c.uuid("id")?,
        hook_instance: c.get("hook_instance")?,
        service_id: c.get("service_id")?,
        hook: c.get("hook")?,
        patient_id: c.get("patient_id")?,
        user_id: c.get("user_id")?,
        encounter_id: c.get("encounter_id")?,
        fhir_server_host: c.get("fhir_server_host")?,
        client_iss: c.get("client_iss")?,
        client_sub: c.get("client_sub")?,
        received_at: c.ts("received_at")?,
        total_ms: c.get("total_ms")?,
        fhir_ms: c.get("fhir_ms")?,
        inference_ms: c.get("inference_ms")?,
        http_status: c.get("http_status")?,
        outcome: c.get("outcome")?,
        error: c.get("error")?,
    })
}

fn prediction_from_row(row: &SqliteRow) -> Result<PredictionRecord, StoreError> {
    let c = Cols {
        row,
        table: "predictions",
    };
    Ok(PredictionRecord {
        id: c.uuid("id")?,
        invocation_id: c.uuid("invocation_id")?,
        service_id: c.get("service_id")?,
        patient_id: c.get("patient_id")?,
        model_id: c.get("model_id")?,
        model_version: c.get("model_version")?,
        risk: c.get("risk")?,
        risk_tier: c.get("risk_tier")?,
        confidence: c.get("confidence")?,
        review_suggested: c.get("review_suggested")?,
        input_digest: c.get("input_digest")?,
        features: c.json("features")?,
        result: c.json("result")?,
        created_at: c.ts("created_at")?,
    })
}

fn bind(
    mut q: Query<'static, Sqlite, SqliteArguments>,
    args: impl IntoIterator<Item = Arg>,
) -> Query<'static, Sqlite, SqliteArguments> {
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s),
            Arg::Time(t) => q.bind(ts(t)),
            Arg::Bool(b) => q.bind(b),
            Arg::Int(i) => q.bind(i),
        };
    }
    q
}

fn prediction_row(row: &SqliteRow) -> Result<PredictionRow, StoreError> {
    let c = Cols {
        row,
        table: "predictions",
    };
    Ok(PredictionRow {
        record: prediction_from_row(row)?,
        feedback_outcome: c.get("feedback_outcome")?,
        feedback_override_reason: c.opt_json("feedback_override_reason")?,
        outcome_label: c.get("outcome_label")?,
    })
}

fn audit_event_from_row(row: &SqliteRow) -> Result<AuditEventRecord, StoreError> {
    let c = Cols {
        row,
        table: "audit_events",
    };
    Ok(AuditEventRecord {
        id: c.uuid("id")?,
        recorded_at: c.ts("recorded_at")?,
        agent_iss: c.get("agent_iss")?,
        agent_sub: c.get("agent_sub")?,
        action: c.get("action")?,
        operation: c.get("operation")?,
        path: c.get("path")?,
        patient_id: c.get("patient_id")?,
        entity: c.get("entity")?,
        resource: c.json("resource")?,
    })
}

fn card_from_row(row: &SqliteRow) -> Result<CardRecord, StoreError> {
    let c = Cols {
        row,
        table: "cards",
    };
    Ok(CardRecord {
        uuid: c.uuid("uuid")?,
        invocation_id: c.uuid("invocation_id")?,
        prediction_id: c.opt_uuid("prediction_id")?,
        service_id: c.get("service_id")?,
        card: c.json("card")?,
        created_at: c.ts("created_at")?,
    })
}

fn feedback_from_row(row: &SqliteRow) -> Result<FeedbackRecord, StoreError> {
    let c = Cols {
        row,
        table: "feedback",
    };
    Ok(FeedbackRecord {
        id: c.uuid("id")?,
        service_id: c.get("service_id")?,
        card_uuid: c.uuid("card_uuid")?,
        outcome: c.get("outcome")?,
        override_reason: c.opt_json("override_reason")?,
        accepted_suggestions: c.json("accepted_suggestions")?,
        outcome_timestamp: c.ts("outcome_timestamp")?,
        received_at: c.ts("received_at")?,
        client_iss: c.get("client_iss")?,
        feedback_digest: c.get("feedback_digest")?,
    })
}

fn job_from_row(row: &SqliteRow) -> Result<Job, StoreError> {
    let c = Cols { row, table: "jobs" };
    Ok(Job {
        id: c.uuid("id")?,
        kind: c.get("kind")?,
        payload: c.json("payload")?,
        dedupe_key: c.get("dedupe_key")?,
        status: JobStatus::parse(&c.get::<String>("status")?)?,
        attempts: c.get("attempts")?,
        max_attempts: c.get("max_attempts")?,
        run_after: c.ts("run_after")?,
        locked_by: c.get("locked_by")?,
        locked_until: c.opt_ts("locked_until")?,
        last_error: c.get("last_error")?,
        result: c.opt_json("result")?,
        created_at: c.ts("created_at")?,
        updated_at: c.ts("updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_are_fixed_width_so_text_order_is_time_order() {
        let a = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        let b = a + chrono::Duration::microseconds(1);
        let c = a + chrono::Duration::milliseconds(500);
        let (ta, tb, tc) = (ts(a), ts(b), ts(c));
        assert_eq!(ta, "2024-01-02T03:04:05.000000Z");
        assert_eq!(ta.len(), tb.len());
        assert!(ta < tb && tb < tc);
        assert_eq!(parse_ts("t", "c", &tc).unwrap(), c);
    }

    #[test]
    fn an_absurd_lease_stays_a_four_digit_year() {
        let t = later(Utc::now(), Duration::MAX);
        assert_eq!(ts(t).len(), "2024-01-02T03:04:05.000000Z".len());
    }

    #[test]
    fn sub_microsecond_digits_are_truncated_like_postgres() {
        let a = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::nanoseconds(1_999);
        assert_eq!(ts(a), "2024-01-02T03:04:05.000001Z");
    }
}
