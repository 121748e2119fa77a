//! Persistence: audit records (invocations, predictions, cards, feedback),
//! the local spool that keeps them while the database is away, the imaging
//! job queue, the imaging result cache and the note-embedding cache. See
//! `docs/storage.md`.
//!
//! Two typed sqlx backends behind one [`Store`]: PostgreSQL for production
//! (several replicas share it) and SQLite as the embedded default. sqlx's
//! `Any` driver cannot bind JSON, UUID or time types (STACK.md), so each
//! backend has its own SQL and its own migrations folder, embedded in the
//! binary so it runs from any working directory. The same "story" tests
//! (`tests/api/store_story.rs`, `tests/api/jobs.rs`) run against both.

pub mod embeddings;
mod error;
pub mod jobs;
mod postgres;
pub mod query;
pub mod records;
pub mod spool;
mod sqlite;

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use uuid::Uuid;

pub use embeddings::NoteEmbedding;
pub use error::StoreError;
pub use jobs::{Backoff, Enqueued, FailOutcome, Job, JobFailure, JobStatus, NewJob};
pub use postgres::PgStore;
pub use query::{
    AuditEventFilter, AuditEventRecord, FeedbackFilter, OutcomeRecord, PredictionFilter,
    PredictionRow,
};
pub use records::{
    CardRecord, FeedbackInsert, FeedbackRecord, HookRecord, InvocationRecord, PredictionRecord,
    StoredInvocation,
};
pub use spool::{
    FeedbackPersisted, PersistError, Persisted, ReplayStats, Spool, SpoolEntry, SpoolError,
    persist_feedback, persist_hook, spawn_replayer,
};
pub use sqlite::SqliteStore;

pub(crate) const POSTGRES: &str = "postgres";
/// Rows in flight between a streaming query and its reader.
const STREAM_BUFFER: usize = 64;
pub(crate) const SQLITE: &str = "sqlite";

/// Connection settings. `Default` fits a single server process.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// How long a query waits for a free connection. Short, because a hook
    /// must answer in ~500 ms (CDS Hooks 2.0 §"Performance"): past this the
    /// record goes to the spool instead.
    pub acquire_timeout: Duration,
    /// Deadline of one audit write in `spool::persist_hook`/`persist_feedback`;
    /// past it the record is spooled (idempotent inserts make a late commit
    /// plus a replay harmless).
    pub write_timeout: Duration,
    /// Retry delays of failed jobs.
    pub backoff: Backoff,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(2),
            backoff: Backoff::default(),
        }
    }
}

/// Per-store settings that are not connection settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub(crate) backoff: Backoff,
    pub(crate) write_timeout: Duration,
}

impl From<&StoreOptions> for Settings {
    fn from(o: &StoreOptions) -> Self {
        Settings {
            backoff: o.backoff,
            write_timeout: o.write_timeout,
        }
    }
}

/// The database, PostgreSQL or SQLite. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// Calls the same method on whichever backend this is.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Postgres(s) => s.$method($($arg),*).await,
            Store::Sqlite(s) => s.$method($($arg),*).await,
        }
    };
}

enum Backend {
    Postgres,
    Sqlite,
}

fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else {
        // Only the scheme is echoed: the rest may carry a password.
        let scheme = url.split(':').next().unwrap_or_default();
        Err(StoreError::UnsupportedUrl {
            scheme: scheme.chars().take(32).collect(),
        })
    }
}

impl Store {
    /// Connects now (fails fast on a wrong URL or an unreachable server).
    /// `postgres://…` → PostgreSQL; `sqlite://path/file.db` (folder and file
    /// created if missing, WAL, foreign keys, busy timeout) or
    /// `sqlite::memory:` → SQLite. Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        Self::connect_with(
            url,
            &StoreOptions {
                max_connections,
                ..StoreOptions::default()
            },
        )
        .await
    }

    pub async fn connect_with(url: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        Ok(match backend_of(url)? {
            Backend::Postgres => Store::Postgres(PgStore::connect(url, opts).await?),
            Backend::Sqlite => Store::Sqlite(SqliteStore::connect(url, opts).await?),
        })
    }

    /// Like [`Store::connect_with`] but opens connections on first use, so
    /// the server can start (and spool) while the database is down.
    pub fn connect_lazy(url: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        Ok(match backend_of(url)? {
            Backend::Postgres => Store::Postgres(PgStore::connect_lazy(url, opts)?),
            Backend::Sqlite => Store::Sqlite(SqliteStore::connect_lazy(url, opts)?),
        })
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Postgres(_) => POSTGRES,
            Store::Sqlite(_) => SQLITE,
        }
    }

    /// The same store with other job retry delays.
    pub fn with_backoff(mut self, backoff: Backoff) -> Store {
        match &mut self {
            Store::Postgres(s) => s.settings.backoff = backoff,
            Store::Sqlite(s) => s.settings.backoff = backoff,
        }
        self
    }

    pub fn write_timeout(&self) -> Duration {
        match self {
            Store::Postgres(s) => s.settings.write_timeout,
            Store::Sqlite(s) => s.settings.write_timeout,
        }
    }

    /// Applies the embedded migrations (`migrations/<backend>/`). Safe to
    /// run from several replicas at once (sqlx takes an advisory lock on
    /// PostgreSQL).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        dispatch!(self.migrate())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self.ping())
    }

    /// Closes the pool; every later call fails (and `persist_*` spools).
    pub async fn close(&self) {
        dispatch!(self.close())
    }

    // ---------------------------------------------------------------- audit

    /// Writes invocation, prediction, cards and the call's jobs in one
    /// transaction.
    /// Idempotent on `invocation.id`: if that invocation is already stored,
    /// nothing is written and the call succeeds (a spool replay, a retry).
    pub async fn record_hook(&self, rec: &HookRecord) -> Result<(), StoreError> {
        rec.validate()?;
        dispatch!(self.record_hook(rec))
    }

    /// Idempotent on `feedback_digest`.
    pub async fn record_feedback(
        &self,
        rec: &FeedbackRecord,
    ) -> Result<FeedbackInsert, StoreError> {
        rec.validate()?;
        dispatch!(self.record_feedback(rec))
    }

    pub async fn get_invocation(&self, id: Uuid) -> Result<Option<StoredInvocation>, StoreError> {
        dispatch!(self.get_invocation(id))
    }

    pub async fn find_card(&self, uuid: Uuid) -> Result<Option<CardRecord>, StoreError> {
        dispatch!(self.find_card(uuid))
    }

    /// Oldest first.
    pub async fn feedback_for_card(&self, uuid: Uuid) -> Result<Vec<FeedbackRecord>, StoreError> {
        dispatch!(self.feedback_for_card(uuid))
    }

    /// Newest first, at most `limit`.
    pub async fn recent_predictions(
        &self,
        service_id: &str,
        patient_id: &str,
        limit: i64,
    ) -> Result<Vec<PredictionRecord>, StoreError> {
        dispatch!(self.recent_predictions(service_id, patient_id, limit))
    }

    // ------------------------------------------------------------ read side

    /// Newest first; `limit`/`offset` page through the matches.
    pub async fn search_predictions(
        &self,
        filter: &PredictionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<PredictionRow>, StoreError> {
        dispatch!(self.search_predictions(filter, limit, offset))
    }

    pub async fn count_predictions(&self, filter: &PredictionFilter) -> Result<i64, StoreError> {
        dispatch!(self.count_predictions(filter))
    }

    /// One page of a search and the total number of matches (for paging
    /// links and `Bundle.total`).
    pub async fn search_predictions_page(
        &self,
        filter: &PredictionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(i64, Vec<PredictionRow>), StoreError> {
        let total = self.count_predictions(filter).await?;
        let rows = self.search_predictions(filter, limit, offset).await?;
        Ok((total, rows))
    }

    pub async fn get_prediction(&self, id: Uuid) -> Result<Option<PredictionRow>, StoreError> {
        dispatch!(self.get_prediction(id))
    }

    /// The matching predictions, oldest first, streamed from the database
    /// with `fetch()` through a bounded channel: memory stays flat however
    /// many rows match (the reader's pace limits the query's). A database
    /// error ends the stream with one `Err`.
    pub fn stream_predictions(
        &self,
        filter: PredictionFilter,
    ) -> tokio::sync::mpsc::Receiver<Result<PredictionRow, StoreError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let store = self.clone();
        tokio::spawn(async move {
            match &store {
                Store::Postgres(s) => s.stream_predictions(&filter, &tx).await,
                Store::Sqlite(s) => s.stream_predictions(&filter, &tx).await,
            }
        });
        rx
    }

    /// Append-only, like every audit table.
    pub async fn record_audit_event(&self, event: &AuditEventRecord) -> Result<(), StoreError> {
        dispatch!(self.record_audit_event(event))
    }

    /// Newest first, with the total number of matches.
    pub async fn search_audit_events(
        &self,
        filter: &AuditEventFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AuditEventRecord>, i64), StoreError> {
        dispatch!(self.search_audit_events(filter, limit, offset))
    }

    pub async fn record_outcome(&self, outcome: &OutcomeRecord) -> Result<(), StoreError> {
        dispatch!(self.record_outcome(outcome))
    }

    // ----------------------------------------------------------------- jobs

    pub async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, StoreError> {
        job.validate()?;
        dispatch!(self.enqueue(job))
    }

    /// Takes the oldest ready job of one of `kinds` (or one whose lease
    /// expired) for `lease`, or `None` when there is nothing to do.
    pub async fn claim(
        &self,
        worker_id: &str,
        kinds: &[&str],
        lease: Duration,
    ) -> Result<Option<Job>, StoreError> {
        dispatch!(self.claim(worker_id, kinds, lease))
    }

    /// Extends the lease of a running job; `LeaseLost` if it is not ours.
    pub async fn heartbeat(
        &self,
        job_id: Uuid,
        worker_id: &str,
        lease: Duration,
    ) -> Result<(), StoreError> {
        dispatch!(self.heartbeat(job_id, worker_id, lease))
    }

    /// Marks a job done (`LeaseLost` if this worker no longer holds it).
    /// `result` is kept on the job row for inspection.
    pub async fn complete(
        &self,
        job_id: Uuid,
        worker_id: &str,
        result: Option<&Value>,
    ) -> Result<(), StoreError> {
        dispatch!(self.complete(job_id, worker_id, result))
    }

    /// Records a failed attempt: back on the queue after the backoff, or
    /// dead-lettered when the attempts are used up.
    pub async fn fail(
        &self,
        job_id: Uuid,
        worker_id: &str,
        error: &str,
    ) -> Result<FailOutcome, StoreError> {
        dispatch!(self.fail(job_id, worker_id, error))
    }

    /// Dead-letters a running job now, whatever attempts it has left: for
    /// failures no retry can fix (`LeaseLost` if this worker no longer holds
    /// it).
    pub async fn dead_letter(
        &self,
        job_id: Uuid,
        worker_id: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self.dead_letter(job_id, worker_id, error))
    }

    pub async fn job(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        dispatch!(self.job(id))
    }

    /// Every job (any status) with this dedupe key, newest first: where
    /// the work for one thing (a series, a prediction's write-back) stands.
    pub async fn jobs_by_dedupe_key(&self, key: &str) -> Result<Vec<Job>, StoreError> {
        dispatch!(self.jobs_by_dedupe_key(key))
    }

    /// Dead-lettered jobs of one kind, oldest first.
    pub async fn dead_letters(&self, kind: &str) -> Result<Vec<Job>, StoreError> {
        dispatch!(self.dead_letters(kind))
    }

    // -------------------------------------------------------- imaging cache

    /// Caches a result per (SeriesInstanceUID, pipeline version, kind);
    /// replaces an existing one for the same key.
    pub async fn put_imaging_result(
        &self,
        series_uid: &str,
        pipeline_version: &str,
        kind: &str,
        result: &Value,
    ) -> Result<(), StoreError> {
        dispatch!(self.put_imaging_result(series_uid, pipeline_version, kind, result))
    }

    pub async fn get_imaging_result(
        &self,
        series_uid: &str,
        pipeline_version: &str,
        kind: &str,
    ) -> Result<Option<Value>, StoreError> {
        dispatch!(self.get_imaging_result(series_uid, pipeline_version, kind))
    }

    // ------------------------------------------------- note-embedding cache

    /// Cached vectors of `encoder` (`ml::TextEncoder::identity`) for the
    /// given note digests (`ml::note_digest`), keyed by digest; digests not
    /// cached are absent from the map. Malformed digests simply miss.
    pub async fn get_note_embeddings(
        &self,
        encoder: &str,
        digests: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        let digests: Vec<String> = digests
            .iter()
            .filter(|d| embeddings::is_digest(d))
            .cloned()
            .collect();
        if digests.is_empty() {
            return Ok(HashMap::new());
        }
        dispatch!(self.get_note_embeddings(encoder, &digests))
    }

    /// Caches vectors in one transaction. A key already cached keeps its
    /// vector (the same encoder on the same text gives the same vector, so
    /// concurrent replicas racing on a note are harmless).
    pub async fn put_note_embeddings(
        &self,
        encoder: &str,
        items: &[NoteEmbedding],
    ) -> Result<(), StoreError> {
        embeddings::validate(encoder, items)?;
        if items.is_empty() {
            return Ok(());
        }
        dispatch!(self.put_note_embeddings(encoder, items))
    }

    /// Runs one SQL statement as is; for tests and maintenance only (the
    /// append-only triggers still apply).
    pub async fn execute_raw(&self, sql: &'static str) -> Result<u64, StoreError> {
        dispatch!(self.execute_raw(sql))
    }
}

/// Leases and retry delays beyond ten years are caller bugs; clamping them
/// keeps timestamps within four-digit years (SQLite's fixed-width text) and
/// within PostgreSQL's interval range.
pub(crate) fn clamp_span(d: Duration) -> Duration {
    d.min(Duration::from_secs(10 * 366 * 24 * 3600))
}

/// A migrator over SQL embedded at compile time (no `migrate!` macro, so no
/// second sqlx build for the macro host — STACK.md). Versions and checksums
/// match what `sqlx migrate run --source migrations/<backend>` would record.
/// A document as the JSON text both backends store (SQLite: text checked
/// by `json_valid`; PostgreSQL: `json`, migration 7).
pub(crate) fn json_text(v: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::InvalidRecord(format!("JSON value: {e}")))
}

fn migrator(migrations: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend_and_errors_do_not_echo_credentials() {
        assert!(matches!(
            backend_of("postgres://u:p@h/db"),
            Ok(Backend::Postgres)
        ));
        assert!(matches!(
            backend_of("postgresql://h/db"),
            Ok(Backend::Postgres)
        ));
        assert!(matches!(backend_of("sqlite::memory:"), Ok(Backend::Sqlite)));
        assert!(matches!(
            backend_of("sqlite://data/x.db"),
            Ok(Backend::Sqlite)
        ));
        let err = backend_of("mysql://root:hunter2@db/x")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("\"mysql\""), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
