//! The job queue: imaging work (and anything else too slow for a hook's
//! ~500 ms budget) runs as a job, outside the request (DESIGN.md "Latency
//! design"; issue 3 item 8).
//!
//! Semantics (both backends):
//! - [`NewJob::dedupe_key`] is unique among unfinished (`queued`/`running`)
//!   jobs: enqueueing the same series twice while it waits returns
//!   [`Enqueued::AlreadyQueued`] with the existing id.
//! - `claim` hands one ready job to one worker under a lease
//!   (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: one `BEGIN IMMEDIATE`
//!   transaction). A job whose lease expired (crashed worker) is claimable
//!   again; if that was its last attempt it is dead-lettered instead.
//! - `fail` schedules a retry after an exponential, capped, jittered backoff
//!   ([`Backoff`]) or dead-letters the job once `attempts == max_attempts`.
//! - Delivery is at-least-once: a handler must be idempotent (write results
//!   keyed by series and pipeline version, as `put_imaging_result` does).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use super::{Store, StoreError};

/// A job to put on the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    pub kind: String,
    pub payload: Value,
    /// At most one unfinished job per key (e.g. `"l3-body-composition:<SeriesInstanceUID>"`).
    pub dedupe_key: Option<String>,
    /// Attempts before the job is dead-lettered (at least 1).
    pub max_attempts: i32,
}

impl NewJob {
    /// A job of `kind` whose payload is `payload` serialised, with at most
    /// one unfinished job per `dedupe_key` and at least one attempt. A payload
    /// that cannot be serialised is stored as `null` and fails in its handler
    /// (payloads here are plain structs of strings and numbers).
    pub fn deduplicated(
        kind: &str,
        payload: &impl Serialize,
        dedupe_key: String,
        max_attempts: i32,
    ) -> Self {
        Self {
            kind: kind.to_owned(),
            payload: serde_json::to_value(payload).unwrap_or(Value::Null),
            dedupe_key: Some(dedupe_key),
            max_attempts: max_attempts.max(1),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        if self.kind.trim().is_empty() {
            return Err(StoreError::InvalidRecord("job kind is empty".into()));
        }
        if self.max_attempts < 1 {
            return Err(StoreError::InvalidRecord(format!(
                "job of kind {:?}: max_attempts must be at least 1, got {}",
                self.kind, self.max_attempts
            )));
        }
        Ok(())
    }
}

/// Result of `enqueue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    New(Uuid),
    /// An unfinished job with the same dedupe key exists; this is its id.
    AlreadyQueued(Uuid),
}

impl Enqueued {
    pub fn id(self) -> Uuid {
        match self {
            Enqueued::New(id) | Enqueued::AlreadyQueued(id) => id,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    /// Dead-lettered: failed `max_attempts` times; kept for inspection.
    Dead,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Dead => "dead",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "done" => JobStatus::Done,
            "dead" => JobStatus::Dead,
            other => {
                return Err(StoreError::CorruptRow {
                    table: "jobs",
                    column: "status",
                    reason: format!("unknown status {other:?}"),
                });
            }
        })
    }
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    pub payload: Value,
    pub dedupe_key: Option<String>,
    pub status: JobStatus,
    /// Claims so far, the current one included.
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_after: DateTime<Utc>,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// What the handler returned on success.
    pub result: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Result of `fail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back on the queue, claimable from `run_after`.
    Retry { run_after: DateTime<Utc> },
    /// `max_attempts` reached: the job is in `dead_letters`.
    DeadLettered,
}

/// Retry delay after the n-th failed attempt: `min(cap, base · 2^(n-1))`,
/// shortened by a random fraction up to `jitter` so that jobs that failed
/// together (say, the PACS was down) do not all come back in the same second
/// ("exponential backoff and jitter", AWS Architecture Blog, 2015).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// In `[0, 1]`: 0 is no jitter, 1 is "full jitter".
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(15 * 60),
            jitter: 0.25,
        }
    }
}

impl Backoff {
    /// Delay before the next try after `attempts` failed attempts (≥ 1);
    /// `unit_random` is a uniform sample in `[0, 1)`.
    pub fn delay(&self, attempts: i32, unit_random: f64) -> Duration {
        let exp = attempts.saturating_sub(1).clamp(0, 62) as u32;
        let factor = 2f64.powi(exp as i32);
        let raw = self.base.as_secs_f64() * factor;
        let capped = raw.min(self.cap.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0) * unit_random.clamp(0.0, 1.0);
        Duration::try_from_secs_f64((capped * (1.0 - jitter)).max(0.0)).unwrap_or(self.cap)
    }

    /// [`Self::delay`] with a fresh random sample.
    pub fn sample(&self, attempts: i32) -> Duration {
        self.delay(attempts, rand::random::<f64>())
    }
}

/// Why a handler gave up on a job. `message` goes to `last_error`: keep
/// patient data out of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFailure {
    pub message: String,
    /// True when trying again cannot help (the input itself is unusable: a
    /// series that is not CT, a payload that does not parse). The job is
    /// dead-lettered at once instead of spending its remaining attempts.
    pub permanent: bool,
}

impl JobFailure {
    /// A failure worth another attempt after the backoff (network, a PACS
    /// answering 5xx, the database away).
    pub fn retryable(message: impl Into<String>) -> Self {
        JobFailure {
            message: message.into(),
            permanent: false,
        }
    }

    /// A failure no retry can fix: dead-letter now.
    pub fn permanent(message: impl Into<String>) -> Self {
        JobFailure {
            message: message.into(),
            permanent: true,
        }
    }
}

impl std::fmt::Display for JobFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.permanent {
            "permanent"
        } else {
            "retryable"
        };
        write!(f, "{} ({kind})", self.message)
    }
}

/// What a worker pool does with a job. CPU-heavy work inside is the
/// handler's business (`tokio::task::spawn_blocking`). A retryable `Err` is
/// retried after the backoff until `max_attempts`; a permanent one is
/// dead-lettered at once.
pub type JobHandler =
    Arc<dyn Fn(Job) -> BoxFuture<'static, Result<Value, JobFailure>> + Send + Sync>;

/// Settings of [`run_workers`].
#[derive(Clone, Debug)]
pub struct WorkerPoolConfig {
    /// Number of concurrent workers (each handles one job at a time).
    pub workers: usize,
    pub kinds: Vec<String>,
    /// Lease per claim; renewed every `lease / 3` while the handler runs.
    pub lease: Duration,
    /// Sleep when the queue is empty.
    pub poll_interval: Duration,
    /// Worker ids are `"{prefix}-{n}"`; use something unique per process
    /// (host name and pid) so leases name who holds them.
    pub worker_prefix: String,
}

impl WorkerPoolConfig {
    pub fn new(workers: usize, kinds: &[&str]) -> Self {
        WorkerPoolConfig {
            workers,
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            lease: Duration::from_secs(120),
            poll_interval: Duration::from_millis(500),
            worker_prefix: format!("worker-{}-{}", std::process::id(), Uuid::new_v4().simple()),
        }
    }
}

/// Counts of what a pool did, returned when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerPoolStats {
    pub completed: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    /// Jobs whose lease another worker took over before this one finished.
    pub lease_lost: u64,
    pub store_errors: u64,
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    lease_lost: AtomicU64,
    store_errors: AtomicU64,
}

/// Runs `config.workers` workers that claim jobs of `config.kinds` and pass
/// them to `handler`, until `shutdown` turns `true` (or its sender is
/// dropped). A job in progress is finished first; a process killed mid-job
/// leaves a lease that expires and is reclaimed.
pub async fn run_workers(
    store: Store,
    config: WorkerPoolConfig,
    handler: JobHandler,
    shutdown: watch::Receiver<bool>,
) -> WorkerPoolStats {
    let counters = Arc::new(Counters::default());
    let mut set = tokio::task::JoinSet::new();
    for n in 0..config.workers.max(1) {
        let worker_id = format!("{}-{n}", config.worker_prefix);
        set.spawn(worker_loop(
            store.clone(),
            config.clone(),
            worker_id,
            handler.clone(),
            shutdown.clone(),
            counters.clone(),
        ));
    }
    while let Some(res) = set.join_next().await {
        if let Err(e) = res {
            tracing::error!(error = %e, "A job worker task ended abnormally");
        }
    }
    WorkerPoolStats {
        completed: counters.completed.load(Ordering::Relaxed),
        retried: counters.retried.load(Ordering::Relaxed),
        dead_lettered: counters.dead_lettered.load(Ordering::Relaxed),
        lease_lost: counters.lease_lost.load(Ordering::Relaxed),
        store_errors: counters.store_errors.load(Ordering::Relaxed),
    }
}

fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Sleeps `d` or until shutdown is signalled.
async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

async fn worker_loop(
    store: Store,
    config: WorkerPoolConfig,
    worker_id: String,
    handler: JobHandler,
    mut shutdown: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let kinds: Vec<&str> = config.kinds.iter().map(String::as_str).collect();
    while !stopping(&shutdown) {
        match store.claim(&worker_id, &kinds, config.lease).await {
            Ok(Some(job)) => run_one(&store, &config, &worker_id, &handler, job, &counters).await,
            Ok(None) => pause(config.poll_interval, &mut shutdown).await,
            Err(e) => {
                counters.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, worker = %worker_id, "Claiming a job failed");
                pause(config.poll_interval, &mut shutdown).await;
            }
        }
    }
}

#[tracing::instrument(name = "Running a job", skip_all, fields(job_id = %job.id, kind = %job.kind, attempt = job.attempts))]
async fn run_one(
    store: &Store,
    config: &WorkerPoolConfig,
    worker_id: &str,
    handler: &JobHandler,
    job: Job,
    counters: &Counters,
) {
    let job_id = job.id;
    // Its own task, so that a panicking handler fails the job instead of
    // killing the worker.
    let mut task = tokio::spawn((handler)(job));
    let renew_every = (config.lease / 3).max(Duration::from_millis(10));
    let mut renew =
        tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
    let outcome = loop {
        tokio::select! {
            res = &mut task => break res,
            _ = renew.tick() => match store.heartbeat(job_id, worker_id, config.lease).await {
                Ok(()) => {}
                Err(StoreError::LeaseLost { .. }) => {
                    // Another worker owns the job now; our result would be
                    // refused anyway.
                    task.abort();
                    counters.lease_lost.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("Lease lost while the job was running; abandoning it");
                    return;
                }
                Err(e) => {
                    counters.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "Renewing a job lease failed");
                }
            },
        }
    };
    let reported = match outcome {
        Ok(Ok(result)) => store
            .complete(job_id, worker_id, Some(&result))
            .await
            .map(|()| counters.completed.fetch_add(1, Ordering::Relaxed)),
        Ok(Err(failure)) if failure.permanent => {
            tracing::warn!(error = %failure.message, "Job failed permanently; dead-lettered without retrying");
            store
                .dead_letter(job_id, worker_id, &failure.message)
                .await
                .map(|()| counters.dead_lettered.fetch_add(1, Ordering::Relaxed))
        }
        Ok(Err(failure)) => {
            record_failure(store, job_id, worker_id, &failure.message, counters).await
        }
        Err(join) => {
            let message = if join.is_panic() {
                "job handler panicked".to_string()
            } else {
                "job handler was cancelled".to_string()
            };
            record_failure(store, job_id, worker_id, &message, counters).await
        }
    };
    match reported {
        Ok(_) => {}
        Err(StoreError::LeaseLost { .. }) => {
            counters.lease_lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("Lease lost before the job's outcome was recorded");
        }
        Err(e) => {
            // The lease will expire and the job will run again
            // (at-least-once delivery).
            counters.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "Recording a job's outcome failed");
        }
    }
}

async fn record_failure(
    store: &Store,
    job_id: Uuid,
    worker_id: &str,
    message: &str,
    counters: &Counters,
) -> Result<u64, StoreError> {
    match store.fail(job_id, worker_id, message).await? {
        FailOutcome::Retry { .. } => {
            tracing::info!("Job failed; retry scheduled");
            Ok(counters.retried.fetch_add(1, Ordering::Relaxed))
        }
        FailOutcome::DeadLettered => {
            tracing::warn!("Job failed on its last attempt; dead-lettered");
            Ok(counters.dead_lettered.fetch_add(1, Ordering::Relaxed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_and_stops_at_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(20),
            jitter: 0.0,
        };
        let secs: Vec<f64> = (1..=6).map(|n| b.delay(n, 0.7).as_secs_f64()).collect();
        assert_eq!(secs, vec![2.0, 4.0, 8.0, 16.0, 20.0, 20.0]);
    }

    #[test]
    fn jitter_only_shortens_the_delay_and_stays_within_its_fraction() {
        let b = Backoff {
            base: Duration::from_secs(8),
            cap: Duration::from_secs(3600),
            jitter: 0.25,
        };
        assert_eq!(b.delay(1, 0.0), Duration::from_secs(8));
        let shortest = b.delay(1, 0.999_999).as_secs_f64();
        assert!((6.0..6.001).contains(&shortest), "{shortest}");
        for _ in 0..1000 {
            let d = b.sample(3).as_secs_f64();
            assert!((24.0..=32.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let b = Backoff::default();
        assert!(b.delay(i32::MAX, 0.0) <= b.cap);
        assert_eq!(b.delay(0, 0.0), b.base);
        let unbounded = Backoff {
            cap: Duration::MAX,
            ..b
        };
        let _ = unbounded.delay(i32::MAX, f64::NAN);
    }

    #[test]
    fn a_job_needs_a_kind_and_at_least_one_attempt() {
        let mut j = NewJob {
            kind: "x".into(),
            payload: Value::Null,
            dedupe_key: None,
            max_attempts: 0,
        };
        assert!(j.validate().is_err());
        j.max_attempts = 1;
        assert!(j.validate().is_ok());
        j.kind = " ".into();
        assert!(j.validate().is_err());
    }
}
