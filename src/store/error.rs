//! Errors of the storage layer.

use std::path::PathBuf;

use uuid::Uuid;

/// Everything that can go wrong in `store/`. Messages never contain the
/// database URL (it may carry a password) nor record contents (patient data).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database URL scheme {scheme:?}: expected postgres://, postgresql://, sqlite:// or sqlite::memory:"
    )]
    UnsupportedUrl { scheme: String },

    #[error("invalid {backend} database URL: {source}")]
    InvalidUrl {
        backend: &'static str,
        #[source]
        source: sqlx::Error,
    },

    #[error("could not prepare the SQLite database file {path}")]
    SqliteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("could not connect to the {backend} database")]
    Connect {
        backend: &'static str,
        #[source]
        source: sqlx::Error,
    },

    #[error("migrating the {backend} database failed")]
    Migrate {
        backend: &'static str,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    #[error("{backend} database error while {action}")]
    Database {
        backend: &'static str,
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },

    #[error("the database did not answer within {after:?} while {action}")]
    Timeout {
        action: &'static str,
        after: std::time::Duration,
    },

    /// The caller handed over a record that can never be stored as it is.
    #[error("invalid record: {0}")]
    InvalidRecord(String),

    /// A stored row could not be turned back into a record (e.g. a SQLite
    /// text column that is not valid JSON or not a timestamp).
    #[error("stored row in {table} is unreadable: column {column}: {reason}")]
    CorruptRow {
        table: &'static str,
        column: &'static str,
        reason: String,
    },

    /// `complete`/`fail`/`heartbeat` on a job this worker no longer holds
    /// (its lease expired and another worker reclaimed it, or it finished).
    #[error("job {job_id} is not leased by worker {worker_id:?}")]
    LeaseLost { job_id: Uuid, worker_id: String },
}

impl StoreError {
    pub(crate) fn db(
        backend: &'static str,
        action: &'static str,
    ) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| StoreError::Database {
            backend,
            action,
            source,
        }
    }

    /// True when the database looked at this very record and refused it
    /// (constraint or data error): retrying will never succeed, so the spool
    /// moves such an entry to `spool.rejected` instead of retrying forever.
    ///
    /// Everything else — connection refused, pool closed, timeouts, missing
    /// tables, unknown errors — counts as "database unavailable" and the entry
    /// stays in the spool. Erring on that side never loses a record.
    pub fn is_record_rejected(&self) -> bool {
        match self {
            StoreError::InvalidRecord(_) => true,
            StoreError::Database {
                backend, source, ..
            } => sqlx_rejects_record(backend, source),
            _ => false,
        }
    }
}

fn sqlx_rejects_record(backend: &'static str, err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Encode(_) => true,
        sqlx::Error::Database(db) => {
            use sqlx::error::ErrorKind;
            if matches!(
                db.kind(),
                ErrorKind::UniqueViolation
                    | ErrorKind::ForeignKeyViolation
                    | ErrorKind::NotNullViolation
                    | ErrorKind::CheckViolation
                    | ErrorKind::ExclusionViolation
            ) {
                return true;
            }
            let Some(code) = db.code() else { return false };
            if backend == super::POSTGRES {
                // SQLSTATE (PostgreSQL Appendix A): class 22 data exception,
                // class 23 integrity constraint violation. Other classes
                // (08 connection, 3D missing database, 42 undefined table,
                // 57 shutdown...) are about the database, not the record.
                code.starts_with("22") || code.starts_with("23")
            } else {
                // SQLite extended result code; the primary code is the low
                // byte: 18 TOOBIG, 19 CONSTRAINT, 20 MISMATCH, 25 RANGE.
                code.parse::<i32>()
                    .is_ok_and(|c| matches!(c & 0xff, 18 | 19 | 20 | 25))
            }
        }
        _ => false,
    }
}
