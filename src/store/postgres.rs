//! PostgreSQL backend (production): JSONB, `timestamptz`, `FOR UPDATE SKIP
//! LOCKED` for the job queue. Migrations: `migrations/postgres/`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Connection, Postgres, Row, SqlSafeStr};
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
use super::{POSTGRES, Settings, StoreError, StoreOptions, json_text};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "audit records",
        include_str!("../../migrations/postgres/0001_audit_records.sql"),
    ),
    (
        2,
        "jobs and imaging cache",
        include_str!("../../migrations/postgres/0002_jobs_and_imaging_cache.sql"),
    ),
    (
        3,
        "note embeddings",
        include_str!("../../migrations/postgres/0003_note_embeddings.sql"),
    ),
    (
        4,
        "audit events",
        include_str!("../../migrations/postgres/0004_audit_events.sql"),
    ),
    (
        5,
        "outcomes",
        include_str!("../../migrations/postgres/0005_outcomes.sql"),
    ),
    (
        6,
        "lz4 toast",
        include_str!("../../migrations/postgres/0006_lz4_toast.sql"),
    ),
    (
        7,
        "hook record json",
        include_str!("../../migrations/postgres/0007_hook_record_json.sql"),
    ),
];

/// An idle connection is pinged before reuse after this long (see
/// [`PgStore::options`]); under load connections idle for milliseconds.
pub(crate) const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// The reuse rule of both the pool and [`WriteConnections`]: a connection
/// idle for [`PING_IF_IDLE_FOR`] or longer is pinged first.
async fn ping_if_idle(conn: &mut PgConnection, idle_for: Duration) -> Result<(), sqlx::Error> {
    if idle_for >= PING_IF_IDLE_FOR {
        conn.ping().await?;
    }
    Ok(())
}

fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    StoreError::db(POSTGRES, action)
}

/// The PostgreSQL implementation of [`super::Store`].
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// Hook records go through these, not the pool (see [`WriteConnections`]).
    writers: Arc<WriteConnections>,
    pub(crate) settings: Settings,
}

/// Connections for hook records, kept outside sqlx's pool. sqlx pings a
/// pooled connection every time it goes back (sqlx-core 0.9
/// `PoolConnection::return_to_pool`, not configurable): one more round trip
/// and one more wake-up of a backend per hook, the busiest write there is.
/// These go back without it. As in the pool, a connection idle for
/// [`PING_IF_IDLE_FOR`] or longer is pinged before reuse, and one whose
/// statement failed other than in the database, or was cancelled (the
/// write's deadline), is closed instead of reused.
struct WriteConnections {
    connect: PgConnectOptions,
    /// At most `[database] max_connections` of them open at once.
    permits: tokio::sync::Semaphore,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
}

impl std::fmt::Debug for WriteConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteConnections")
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl WriteConnections {
    fn new(connect: PgConnectOptions, max: u32) -> Self {
        Self {
            connect,
            permits: tokio::sync::Semaphore::new(max.max(1) as usize),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn pop(&self) -> Option<(PgConnection, Instant)> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    /// Run `statement` on an idle connection (or a new one) and put the
    /// connection back afterwards if it is still fit for use.
    async fn execute<'q>(
        &self,
        statement: Query<'q, Postgres, PgArguments>,
    ) -> Result<(), sqlx::Error> {
        // Closed with the store ([`Self::close`]), as the pool is.
        let Ok(_permit) = self.permits.acquire().await else {
            return Err(sqlx::Error::PoolClosed);
        };
        let mut conn = loop {
            match self.pop() {
                Some((mut conn, since)) => {
                    if ping_if_idle(&mut conn, since.elapsed()).await.is_ok() {
                        break conn;
                    }
                    // Dropped by the server or a proxy while idle: closed here.
                }
                None => break PgConnection::connect_with(&self.connect).await?,
            }
        };
        let outcome = statement.execute(&mut conn).await;
        // A statement the database refused leaves the connection ready for
        // the next one; any other error (I/O, protocol) may not. After
        // `close` the connection is dropped (closed) here instead.
        let fit = matches!(&outcome, Ok(_) | Err(sqlx::Error::Database(_)));
        if fit && !self.permits.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((conn, Instant::now()));
        }
        outcome.map(|_| ())
    }

    /// Refuse new writes, then close the idle connections; one in use is
    /// closed when its write ends ([`Self::execute`]).
    async fn close(&self) {
        self.permits.close();
        while let Some((conn, _)) = self.pop() {
            let _ = conn.close().await;
        }
    }
}

impl PgStore {
    pub(crate) async fn connect(url: &str, opts: &StoreOptions) -> Result<Self, StoreError> {
        let (pool_opts, conn) = Self::options(url, opts)?;
        let pool = pool_opts
            .connect_with(conn.clone())
            .await
            .map_err(|source| StoreError::Connect {
                backend: POSTGRES,
                source,
            })?;
        Ok(PgStore {
            pool,
            writers: Arc::new(WriteConnections::new(conn, opts.max_connections)),
            settings: Settings::from(opts),
        })
    }

    pub(crate) fn connect_lazy(url: &str, opts: &StoreOptions) -> Result<Self, StoreError> {
        let (pool_opts, conn) = Self::options(url, opts)?;
        Ok(PgStore {
            pool: pool_opts.connect_lazy_with(conn.clone()),
            writers: Arc::new(WriteConnections::new(conn, opts.max_connections)),
            settings: Settings::from(opts),
        })
    }

    fn options(
        url: &str,
        opts: &StoreOptions,
    ) -> Result<(PgPoolOptions, PgConnectOptions), StoreError> {
        let conn = PgConnectOptions::from_str(url).map_err(|source| StoreError::InvalidUrl {
            backend: POSTGRES,
            source,
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.acquire_timeout)
            // sqlx already pings every connection as it goes back to the pool
            // (sqlx-core 0.9 `PoolConnection::return_to_pool`); its default
            // second ping on every acquire was one more round trip, and one
            // more wake-up of a backend, per query (on the hook write it cost
            // 8-16 % of the hooks per second under load: docs/benchmarks.md,
            // "One ping per hook write").
            // A connection that sat idle can have been dropped by the server
            // or a proxy since that ping, so it is still tested then.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    ping_if_idle(conn, meta.idle_for).await?;
                    Ok(true)
                })
            });
        Ok((pool, conn))
    }

    /// The pool, for tests and ad-hoc maintenance queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) async fn close(&self) {
        self.writers.close().await;
        self.pool.close().await;
    }

    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        super::migrator(MIGRATIONS)
            .run(&self.pool)
            .await
            .map_err(|source| StoreError::Migrate {
                backend: POSTGRES,
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

    // ---------------------------------------------------------------- audit

    /// One statement, one round trip, one implicit transaction: the
    /// invocation, its prediction and its cards as data-modifying CTEs
    /// (PostgreSQL 15 §7.8.4). `ON CONFLICT DO NOTHING` on the invocation
    /// makes a replay a no-op: the prediction and the cards select from the
    /// invocation's `RETURNING`, so they are skipped with it. The foreign
    /// keys of the later rows are checked at the end of the statement, when
    /// the invocation and prediction rows exist. (Before: BEGIN, three or
    /// four INSERTs, COMMIT — five round trips per hook under load.)
    pub(crate) async fn record_hook(&self, rec: &HookRecord) -> Result<(), StoreError> {
        const SQL: &str = "WITH inv AS (\
             INSERT INTO invocations (id, hook_instance, service_id, hook, patient_id, user_id, \
             encounter_id, fhir_server_host, client_iss, client_sub, received_at, total_ms, fhir_ms, \
             inference_ms, http_status, outcome, error) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17) \
             ON CONFLICT (id) DO NOTHING RETURNING id), \
             pred AS (\
             INSERT INTO predictions (id, invocation_id, service_id, patient_id, model_id, \
             model_version, risk, risk_tier, confidence, review_suggested, input_digest, features, \
             result, created_at) \
             SELECT $18, inv.id, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28::json, $29::json, $30 \
             FROM inv WHERE $18 IS NOT NULL RETURNING id), \
             job AS (\
             INSERT INTO jobs (id, kind, payload, dedupe_key, status, attempts, max_attempts, \
             run_after, created_at, updated_at) \
             SELECT j.id, j.kind, j.payload, j.dedupe_key, 'queued', 0, j.max_attempts, now(), now(), now() \
             FROM inv, unnest($36::uuid[], $37::text[], $38::jsonb[], $39::text[], $40::int4[]) \
             AS j(id, kind, payload, dedupe_key, max_attempts) \
             ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running') \
             DO NOTHING RETURNING id) \
             INSERT INTO cards (uuid, invocation_id, prediction_id, service_id, card, created_at) \
             SELECT c.uuid, inv.id, c.prediction_id, c.service_id, c.card::json, c.created_at \
             FROM inv, unnest($31::uuid[], $32::uuid[], $33::text[], $34::text[], $35::timestamptz[]) \
             AS c(uuid, prediction_id, service_id, card, created_at)";
        let inv = &rec.invocation;
        let p = rec.prediction.as_ref();
        let cards = &rec.cards;
        let jobs = &rec.jobs;
        // The documents go as text into `json` columns (migration 7): PostgreSQL
        // only checks their syntax instead of building jsonb.
        let features = p.map(|p| json_text(&p.features)).transpose()?;
        let result = p.map(|p| json_text(&p.result)).transpose()?;
        let card_texts = cards
            .iter()
            .map(|c| json_text(&c.card))
            .collect::<Result<Vec<_>, _>>()?;
        let statement = sqlx::query(SQL)
            .bind(inv.id)
            .bind(&inv.hook_instance)
            .bind(&inv.service_id)
            .bind(&inv.hook)
            .bind(&inv.patient_id)
            .bind(&inv.user_id)
            .bind(&inv.encounter_id)
            .bind(&inv.fhir_server_host)
            .bind(&inv.client_iss)
            .bind(&inv.client_sub)
            .bind(inv.received_at)
            .bind(inv.total_ms)
            .bind(inv.fhir_ms)
            .bind(inv.inference_ms)
            .bind(inv.http_status)
            .bind(&inv.outcome)
            .bind(&inv.error)
            .bind(p.map(|p| p.id))
            .bind(p.map(|p| p.service_id.as_str()))
            .bind(p.map(|p| p.patient_id.as_str()))
            .bind(p.map(|p| p.model_id.as_str()))
            .bind(p.map(|p| p.model_version.as_str()))
            .bind(p.and_then(|p| p.risk))
            .bind(p.map(|p| p.risk_tier.as_str()))
            .bind(p.and_then(|p| p.confidence))
            .bind(p.map(|p| p.review_suggested))
            .bind(p.map(|p| p.input_digest.as_str()))
            .bind(features)
            .bind(result)
            .bind(p.map(|p| p.created_at))
            .bind(cards.iter().map(|c| c.uuid).collect::<Vec<_>>())
            .bind(cards.iter().map(|c| c.prediction_id).collect::<Vec<_>>())
            .bind(
                cards
                    .iter()
                    .map(|c| c.service_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(card_texts)
            .bind(cards.iter().map(|c| c.created_at).collect::<Vec<_>>())
            .bind(jobs.iter().map(|_| Uuid::new_v4()).collect::<Vec<_>>())
            .bind(jobs.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>())
            .bind(jobs.iter().map(|j| Json(&j.payload)).collect::<Vec<_>>())
            .bind(
                jobs.iter()
                    .map(|j| j.dedupe_key.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(jobs.iter().map(|j| j.max_attempts).collect::<Vec<_>>());
        self.writers
            .execute(statement)
            .await
            .map_err(db("inserting a hook record"))
    }

    pub(crate) async fn record_feedback(
        &self,
        f: &FeedbackRecord,
    ) -> Result<FeedbackInsert, StoreError> {
        let n = sqlx::query(
            "INSERT INTO feedback (id, service_id, card_uuid, outcome, override_reason, \
             accepted_suggestions, outcome_timestamp, received_at, client_iss, feedback_digest) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) ON CONFLICT (feedback_digest) DO NOTHING",
        )
        .bind(f.id)
        .bind(&f.service_id)
        .bind(f.card_uuid)
        .bind(&f.outcome)
        .bind(f.override_reason.as_ref().map(Json))
        .bind(Json(&f.accepted_suggestions))
        .bind(f.outcome_timestamp)
        .bind(f.received_at)
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
        let read = db("reading an invocation");
        let Some(row) = sqlx::query("SELECT * FROM invocations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading an invocation"))?
        else {
            return Ok(None);
        };
        let invocation = invocation_from_row(&row).map_err(read)?;
        let prediction = sqlx::query(
            "SELECT * FROM predictions WHERE invocation_id = $1 ORDER BY created_at, id LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a prediction"))?
        .map(|r| prediction_from_row(&r))
        .transpose()
        .map_err(db("reading a prediction"))?;
        let cards =
            sqlx::query("SELECT * FROM cards WHERE invocation_id = $1 ORDER BY created_at, uuid")
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(db("reading cards"))?
                .iter()
                .map(card_from_row)
                .collect::<Result<Vec<_>, _>>()
                .map_err(db("reading cards"))?;
        Ok(Some(StoredInvocation {
            invocation,
            prediction,
            cards,
            jobs: Vec::new(),
        }))
    }

    pub(crate) async fn find_card(&self, uuid: Uuid) -> Result<Option<CardRecord>, StoreError> {
        sqlx::query("SELECT * FROM cards WHERE uuid = $1")
            .bind(uuid)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a card"))?
            .map(|r| card_from_row(&r))
            .transpose()
            .map_err(db("reading a card"))
    }

    pub(crate) async fn feedback_for_card(
        &self,
        uuid: Uuid,
    ) -> Result<Vec<FeedbackRecord>, StoreError> {
        sqlx::query("SELECT * FROM feedback WHERE card_uuid = $1 ORDER BY received_at, id")
            .bind(uuid)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading feedback"))?
            .iter()
            .map(feedback_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(db("reading feedback"))
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
        .collect::<Result<Vec<_>, _>>()
        .map_err(db("reading recent predictions"))
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
            super::query::predictions_page_sql(Dialect::Postgres, filter, limit, offset, &mut args);
        bind(sqlx::query(AssertSqlSafe(sql)), args.0)
            .fetch_all(&self.pool)
            .await
            .map_err(db("searching predictions"))?
            .iter()
            .map(prediction_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(db("reading predictions"))
    }

    pub(crate) async fn count_predictions(
        &self,
        filter: &PredictionFilter,
    ) -> Result<i64, StoreError> {
        let mut args = Args::default();
        let sql = super::query::predictions_count_sql(Dialect::Postgres, filter, &mut args);
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
        let base = super::query::predictions_sql(
            Dialect::Postgres,
            &PredictionFilter::default(),
            &mut args,
        );
        let sql = format!("{base} WHERE id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a prediction"))?
            .map(|r| prediction_row(&r))
            .transpose()
            .map_err(db("reading a prediction"))
    }

    /// Streams the matching predictions, oldest first, into `tx` with
    /// `fetch()` (rows are decoded one at a time; nothing is collected).
    /// Stops early when the receiver is dropped.
    pub(crate) async fn stream_predictions(
        &self,
        filter: &PredictionFilter,
        tx: &tokio::sync::mpsc::Sender<Result<PredictionRow, StoreError>>,
    ) {
        let mut args = Args::default();
        let sql = super::query::predictions_stream_sql(Dialect::Postgres, filter, &mut args);
        let mut rows = bind(sqlx::query(AssertSqlSafe(sql)), args.0).fetch(&self.pool);
        loop {
            let item = match rows.try_next().await {
                Ok(Some(r)) => prediction_row(&r).map_err(db("reading predictions")),
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
        sqlx::query(
            "INSERT INTO audit_events (id, recorded_at, agent_iss, agent_sub, action, operation, \
             path, patient_id, entity, resource) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        )
        .bind(e.id)
        .bind(e.recorded_at)
        .bind(&e.agent_iss)
        .bind(&e.agent_sub)
        .bind(&e.action)
        .bind(&e.operation)
        .bind(&e.path)
        .bind(&e.patient_id)
        .bind(&e.entity)
        .bind(Json(&e.resource))
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db("inserting an audit event"))
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
            .collect::<Result<Vec<_>, _>>()
            .map_err(db("reading audit events"))?;
        Ok((rows, total))
    }

    pub(crate) async fn record_outcome(&self, o: &OutcomeRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO outcomes (id, service_id, patient_id, label, observed_on, recorded_at, \
             recorded_by) VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(o.id)
        .bind(&o.service_id)
        .bind(&o.patient_id)
        .bind(o.label)
        .bind(o.observed_on)
        .bind(o.recorded_at)
        .bind(&o.recorded_by)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db("inserting an outcome"))
    }

    // ----------------------------------------------------------------- jobs

    pub(crate) async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, StoreError> {
        // A finished job may free the key between our INSERT and SELECT;
        // then the INSERT is tried again.
        for _ in 0..5 {
            let id = Uuid::new_v4();
            let inserted = sqlx::query(
                "INSERT INTO jobs (id, kind, payload, dedupe_key, status, attempts, max_attempts, \
                 run_after, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'queued', 0, $5, now(), now(), now()) \
                 ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running') \
                 DO NOTHING RETURNING id",
            )
            .bind(id)
            .bind(&job.kind)
            .bind(Json(&job.payload))
            .bind(&job.dedupe_key)
            .bind(job.max_attempts)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("enqueueing a job"))?;
            if inserted.is_some() {
                return Ok(Enqueued::New(id));
            }
            let existing: Option<Uuid> = sqlx::query_scalar(
                "SELECT id FROM jobs WHERE dedupe_key = $1 AND status IN ('queued', 'running')",
            )
            .bind(&job.dedupe_key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("looking up a queued job"))?;
            if let Some(existing) = existing {
                return Ok(Enqueued::AlreadyQueued(existing));
            }
        }
        Err(StoreError::InvalidRecord(format!(
            "job of kind {:?}: its dedupe key kept flipping between queued and finished",
            job.kind
        )))
    }

    pub(crate) async fn claim(
        &self,
        worker_id: &str,
        kinds: &[&str],
        lease: Duration,
    ) -> Result<Option<Job>, StoreError> {
        let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
        // A lease that expired on the last attempt: the worker died (or hung)
        // max_attempts times on this job; stop handing it out.
        sqlx::query(
            "UPDATE jobs SET status = 'dead', locked_by = NULL, locked_until = NULL, updated_at = now(), \
             last_error = 'lease expired on the last attempt (worker ' || coalesce(locked_by, '?') \
               || ' did not report back)' || coalesce('; previous error: ' || last_error, '') \
             WHERE status = 'running' AND locked_until < now() AND attempts >= max_attempts \
               AND kind = ANY($1)",
        )
        .bind(&kinds)
        .execute(&self.pool)
        .await
        .map_err(db("dead-lettering expired jobs"))?;
        let row = sqlx::query(
            "WITH next AS ( \
               SELECT id FROM jobs \
               WHERE kind = ANY($2) \
                 AND ((status = 'queued' AND run_after <= now()) \
                   OR (status = 'running' AND locked_until < now() AND attempts < max_attempts)) \
               ORDER BY run_after, created_at \
               LIMIT 1 \
               FOR UPDATE SKIP LOCKED) \
             UPDATE jobs AS j SET status = 'running', attempts = j.attempts + 1, locked_by = $1, \
               locked_until = now() + make_interval(secs => $3), updated_at = now() \
             FROM next WHERE j.id = next.id \
             RETURNING j.*",
        )
        .bind(worker_id)
        .bind(&kinds)
        .bind(super::clamp_span(lease).as_secs_f64())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("claiming a job"))?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    pub(crate) async fn heartbeat(
        &self,
        job_id: Uuid,
        worker_id: &str,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let n = sqlx::query(
            "UPDATE jobs SET locked_until = now() + make_interval(secs => $3), updated_at = now() \
             WHERE id = $1 AND status = 'running' AND locked_by = $2",
        )
        .bind(job_id)
        .bind(worker_id)
        .bind(super::clamp_span(lease).as_secs_f64())
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
        let n = sqlx::query(
            "UPDATE jobs SET status = 'done', locked_by = NULL, locked_until = NULL, result = $3, \
             updated_at = now() WHERE id = $1 AND status = 'running' AND locked_by = $2",
        )
        .bind(job_id)
        .bind(worker_id)
        .bind(result.map(Json))
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
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        let row = sqlx::query(
            "SELECT attempts, max_attempts FROM jobs \
             WHERE id = $1 AND status = 'running' AND locked_by = $2 FOR UPDATE",
        )
        .bind(job_id)
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
        let outcome = if attempts >= max_attempts {
            sqlx::query(
                "UPDATE jobs SET status = 'dead', locked_by = NULL, locked_until = NULL, \
                 last_error = $2, updated_at = now() WHERE id = $1",
            )
            .bind(job_id)
            .bind(error)
            .execute(&mut *tx)
            .await
            .map_err(db("dead-lettering a job"))?;
            FailOutcome::DeadLettered
        } else {
            let delay = self.settings.backoff.sample(attempts);
            let run_after = sqlx::query_scalar(
                "UPDATE jobs SET status = 'queued', locked_by = NULL, locked_until = NULL, \
                 last_error = $2, run_after = now() + make_interval(secs => $3), updated_at = now() \
                 WHERE id = $1 RETURNING run_after",
            )
            .bind(job_id)
            .bind(error)
            .bind(super::clamp_span(delay).as_secs_f64())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("rescheduling a job"))?;
            FailOutcome::Retry { run_after }
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
             last_error = $3, updated_at = now() \
             WHERE id = $1 AND status = 'running' AND locked_by = $2",
        )
        .bind(job_id)
        .bind(worker_id)
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(db("dead-lettering a job"))?
        .rows_affected();
        lease_held(n, job_id, worker_id)
    }

    pub(crate) async fn job(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
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
             VALUES ($1, $2, $3, $4, now()) \
             ON CONFLICT (series_uid, pipeline_version, kind) \
             DO UPDATE SET result = excluded.result, created_at = excluded.created_at",
        )
        .bind(series_uid)
        .bind(pipeline_version)
        .bind(kind)
        .bind(Json(result))
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
        let v: Option<Json<Value>> = sqlx::query_scalar(
            "SELECT result FROM imaging_results \
             WHERE series_uid = $1 AND pipeline_version = $2 AND kind = $3",
        )
        .bind(series_uid)
        .bind(pipeline_version)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading an imaging result"))?;
        Ok(v.map(|j| j.0))
    }

    pub(crate) async fn get_note_embeddings(
        &self,
        encoder: &str,
        digests: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT text_sha256, embedding FROM note_embeddings \
             WHERE encoder = $1 AND text_sha256 = ANY($2)",
        )
        .bind(encoder)
        .bind(digests)
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
        // One statement for the whole batch: arrays unnested row by row.
        let digests: Vec<&str> = items.iter().map(|i| i.text_sha256.as_str()).collect();
        let dims: Vec<i32> = items.iter().map(|i| i.vector.len() as i32).collect();
        let blobs: Vec<Vec<u8>> = items
            .iter()
            .map(|i| embeddings::to_bytes(&i.vector))
            .collect();
        sqlx::query(
            "INSERT INTO note_embeddings (encoder, text_sha256, dim, embedding, created_at) \
             SELECT $1, d, n, e, now() FROM UNNEST($2::text[], $3::integer[], $4::bytea[]) AS t(d, n, e) \
             ON CONFLICT (encoder, text_sha256) DO NOTHING",
        )
        .bind(encoder)
        .bind(&digests)
        .bind(&dims)
        .bind(&blobs)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db("caching note embeddings"))
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

fn invocation_from_row(r: &PgRow) -> Result<InvocationRecord, sqlx::Error> {
    Ok(InvocationRecord {
        id: r.try_get("id")?,
        hook_instance: r.try_get("hook_instance")?,
        service_id: r.try_get("service_id")?,
        hook: r.try_get("hook")?,
        patient_id: r.try_get("patient_id")?,
        user_id: r.try_get("user_id")?,
        encounter_id: r.try_get("encounter_id")?,
        fhir_server_host: r.try_get("fhir_server_host")?,
        client_iss: r.try_get("client_iss")?,
        client_sub: r.try_get("client_sub")?,
        received_at: r.try_get("received_at")?,
        total_ms: r.try_get("total_ms")?,
        fhir_ms: r.try_get("fhir_ms")?,
        inference_ms: r.try_get("inference_ms")?,
        http_status: r.try_get("http_status")?,
        outcome: r.try_get("outcome")?,
        error: r.try_get("error")?,
    })
}

fn prediction_from_row(r: &PgRow) -> Result<PredictionRecord, sqlx::Error> {
    Ok(PredictionRecord {
        id: r.try_get("id")?,
        invocation_id: r.try_get("invocation_id")?,
        service_id: r.try_get("service_id")?,
        patient_id: r.try_get("patient_id")?,
        model_id: r.try_get("model_id")?,
        model_version: r.try_get("model_version")?,
        risk: r.try_get("risk")?,
        risk_tier: r.try_get("risk_tier")?,
        confidence: r.try_get("confidence")?,
        review_suggested: r.try_get("review_suggested")?,
        input_digest: r.try_get("input_digest")?,
        features: r.try_get::<Json<Value>, _>("features")?.0,
        result: r.try_get::<Json<Value>, _>("result")?.0,
        created_at: r.try_get("created_at")?,
    })
}

fn bind(
    mut q: Query<'static, Postgres, PgArguments>,
    args: impl IntoIterator<Item = Arg>,
) -> Query<'static, Postgres, PgArguments> {
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s),
            Arg::Time(t) => q.bind(t),
            Arg::Bool(b) => q.bind(b),
            Arg::Int(i) => q.bind(i),
        };
    }
    q
}

fn prediction_row(r: &PgRow) -> Result<PredictionRow, sqlx::Error> {
    let reason: Option<String> = r.try_get("feedback_override_reason")?;
    Ok(PredictionRow {
        record: prediction_from_row(r)?,
        feedback_outcome: r.try_get("feedback_outcome")?,
        feedback_override_reason: reason.and_then(|s| serde_json::from_str(&s).ok()),
        outcome_label: r.try_get("outcome_label")?,
    })
}

fn audit_event_from_row(r: &PgRow) -> Result<AuditEventRecord, sqlx::Error> {
    Ok(AuditEventRecord {
        id: r.try_get("id")?,
        recorded_at: r.try_get("recorded_at")?,
        agent_iss: r.try_get("agent_iss")?,
        agent_sub: r.try_get("agent_sub")?,
        action: r.try_get("action")?,
        operation: r.try_get("operation")?,
        path: r.try_get("path")?,
        patient_id: r.try_get("patient_id")?,
        entity: r.try_get("entity")?,
        resource: r.try_get::<Json<Value>, _>("resource")?.0,
    })
}

fn card_from_row(r: &PgRow) -> Result<CardRecord, sqlx::Error> {
    Ok(CardRecord {
        uuid: r.try_get("uuid")?,
        invocation_id: r.try_get("invocation_id")?,
        prediction_id: r.try_get("prediction_id")?,
        service_id: r.try_get("service_id")?,
        card: r.try_get::<Json<Value>, _>("card")?.0,
        created_at: r.try_get("created_at")?,
    })
}

fn feedback_from_row(r: &PgRow) -> Result<FeedbackRecord, sqlx::Error> {
    Ok(FeedbackRecord {
        id: r.try_get("id")?,
        service_id: r.try_get("service_id")?,
        card_uuid: r.try_get("card_uuid")?,
        outcome: r.try_get("outcome")?,
        override_reason: r
            .try_get::<Option<Json<Value>>, _>("override_reason")?
            .map(|j| j.0),
        accepted_suggestions: r.try_get::<Json<Value>, _>("accepted_suggestions")?.0,
        outcome_timestamp: r.try_get("outcome_timestamp")?,
        received_at: r.try_get("received_at")?,
        client_iss: r.try_get("client_iss")?,
        feedback_digest: r.try_get("feedback_digest")?,
    })
}

fn job_from_row(r: &PgRow) -> Result<Job, StoreError> {
    let get = db("reading a job");
    let status: String = r.try_get("status").map_err(db("reading a job"))?;
    let job = (|| -> Result<Job, sqlx::Error> {
        Ok(Job {
            id: r.try_get("id")?,
            kind: r.try_get("kind")?,
            payload: r.try_get::<Json<Value>, _>("payload")?.0,
            dedupe_key: r.try_get("dedupe_key")?,
            status: JobStatus::Queued,
            attempts: r.try_get("attempts")?,
            max_attempts: r.try_get("max_attempts")?,
            run_after: r.try_get("run_after")?,
            locked_by: r.try_get("locked_by")?,
            locked_until: r.try_get("locked_until")?,
            last_error: r.try_get("last_error")?,
            result: r.try_get::<Option<Json<Value>>, _>("result")?.map(|j| j.0),
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    })()
    .map_err(get)?;
    Ok(Job {
        status: JobStatus::parse(&status)?,
        ..job
    })
}
