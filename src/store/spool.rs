//! The local spool: a hook whose database write fails still answers, and its
//! record goes to a file that is replayed when the database is back, so no
//! accepted invocation (or feedback) is lost.
//!
//! Format (`<dir>/spool.jsonl`, mode 0600): one [`SpoolEntry`] per line as
//! JSON, `{"kind":"hook","record":{…}}` or `{"kind":"feedback","record":{…}}`,
//! each appended with one `write` and `fdatasync`'d before `append` returns.
//!
//! Replay writes entries in order through the idempotent inserts, then
//! replaces the file with what is left (a fsync'd temporary file renamed
//! over it, then the folder fsync'd). A crash at any point leaves either the
//! old file or the new one, never a mix; entries already written are written
//! again on the next replay as no-ops. Entries appended during a replay are
//! carried over. A line that is not a valid entry, or that the database
//! refuses for good (a constraint violation), is moved to
//! `<dir>/spool.rejected` with the reason, never dropped.
//!
//! One process owns a spool folder at a time (an exclusive lock on
//! `<dir>/spool.lock`): give each replica its own folder.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::records::{FeedbackInsert, FeedbackRecord, HookRecord};
use super::{Store, StoreError};

const SPOOL_FILE: &str = "spool.jsonl";
const TEMP_FILE: &str = "spool.jsonl.tmp";
const REJECTED_FILE: &str = "spool.rejected";
const LOCK_FILE: &str = "spool.lock";

/// One spooled write.
// Entries live one at a time on the way to or from disk; boxing the hook
// record would only make every caller write `Box::new`.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
pub enum SpoolEntry {
    Hook(HookRecord),
    Feedback(FeedbackRecord),
}

/// Where a record ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persisted {
    Database,
    /// The database write failed or timed out; the record is in the spool.
    Spooled,
}

/// Where a feedback record ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedbackPersisted {
    Database(FeedbackInsert),
    Spooled,
}

/// What one replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Entries written to the database (replays of known records included).
    pub replayed: usize,
    /// Entries still in the spool (the database went away mid-replay, or
    /// they were appended meanwhile).
    pub remaining: usize,
    /// Entries moved to `spool.rejected`.
    pub rejected: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O failed while {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool folder {path} is in use by another process (lock on spool.lock held)")]
    InUse { path: PathBuf },
    #[error("could not serialise a spool entry")]
    Serialize(#[source] serde_json::Error),
    #[error("spool file task did not finish")]
    Task(#[source] tokio::task::JoinError),
}

/// Both the database and the spool failed: the record is not persisted and
/// the caller must say so (log it, answer 503, keep it in memory...).
#[derive(Debug, thiserror::Error)]
#[error(
    "the record could not be persisted: the database write failed ({database}) and spooling it failed too"
)]
pub struct PersistError {
    pub database: String,
    #[source]
    pub spool: SpoolError,
}

/// Handle on a spool folder. Cheap to clone; appends are serialised.
#[derive(Clone, Debug)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    path: PathBuf,
    /// Guards the spool file: appends, the replay's snapshot and its swap.
    file: Arc<Mutex<()>>,
    /// One replay at a time.
    replay: Mutex<()>,
    /// Held for the life of the handle: the advisory lock on `spool.lock`.
    _owner: File,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError {
    move |source| SpoolError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Opens (creating with mode 0600 if missing) a file for appending.
fn open_private(path: &Path, append: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true);
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    // A rename or a new file is durable only once its folder is synced.
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing folder", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(SpoolError::Task)?
}

impl Spool {
    /// Opens the spool in `dir` (created 0700 if missing), takes the
    /// folder's lock, repairs a torn last line left by a crash mid-append
    /// (terminates it so it is rejected on replay instead of corrupting the
    /// next entry) and removes a replay's leftover temporary file.
    pub async fn open(dir: &Path) -> Result<Spool, SpoolError> {
        let dir = dir.to_path_buf();
        blocking(move || Self::open_blocking(dir)).await
    }

    fn open_blocking(dir: PathBuf) -> Result<Spool, SpoolError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .map_err(io_err("creating folder", &dir))?;

        let lock_path = dir.join(LOCK_FILE);
        let owner = open_private(&lock_path, true).map_err(io_err("opening", &lock_path))?;
        match owner.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::InUse { path: dir });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err("locking", &lock_path)(e));
            }
        }

        let tmp = dir.join(TEMP_FILE);
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &tmp)(e)),
        }

        let path = dir.join(SPOOL_FILE);
        if path.exists() {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io_err("restricting permissions of", &path))?;
            }
            let mut f = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io_err("opening", &path))?;
            let len = f.metadata().map_err(io_err("reading", &path))?.len();
            if len > 0 {
                let mut last = [0u8; 1];
                f.seek(SeekFrom::Start(len - 1))
                    .and_then(|_| f.read_exact(&mut last))
                    .map_err(io_err("reading", &path))?;
                if last[0] != b'\n' {
                    tracing::warn!(
                        "Spool ends with a torn line (crash mid-append); it will be rejected on replay"
                    );
                    f.write_all(b"\n")
                        .and_then(|()| f.sync_data())
                        .map_err(io_err("repairing", &path))?;
                }
            }
        }

        Ok(Spool {
            inner: Arc::new(Inner {
                path,
                dir,
                file: Arc::new(Mutex::new(())),
                replay: Mutex::new(()),
                _owner: owner,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The spool file (`<dir>/spool.jsonl`).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Where unusable entries go (`<dir>/spool.rejected`).
    pub fn rejected_path(&self) -> PathBuf {
        self.inner.dir.join(REJECTED_FILE)
    }

    /// Appends one entry; returns once it is on disk.
    pub async fn append(&self, entry: &SpoolEntry) -> Result<(), SpoolError> {
        let mut line = serde_json::to_vec(entry).map_err(SpoolError::Serialize)?;
        // serde_json escapes control characters inside strings, so the only
        // newline is this terminator.
        line.push(b'\n');
        let guard = self.inner.file.clone().lock_owned().await;
        let path = self.inner.path.clone();
        let dir = self.inner.dir.clone();
        // The guard moves into the blocking task: even if this future is
        // dropped, no other append interleaves with a write in progress.
        blocking(move || {
            let _guard = guard;
            let created = !path.exists();
            let mut f = open_private(&path, true).map_err(io_err("opening", &path))?;
            f.write_all(&line)
                .and_then(|()| f.sync_data())
                .map_err(io_err("appending to", &path))?;
            if created {
                sync_dir(&dir)?;
            }
            Ok(())
        })
        .await
    }

    /// Number of entries waiting (lines in the spool file).
    pub async fn pending(&self) -> Result<usize, SpoolError> {
        let guard = self.inner.file.clone().lock_owned().await;
        let path = self.inner.path.clone();
        blocking(move || {
            let _guard = guard;
            Ok(split_lines(&read_or_empty(&path)?).len())
        })
        .await
    }

    /// Writes every spooled entry to `store`, in order, and removes what was
    /// written. Stops at the first entry the database could not take for a
    /// reason other than the record itself (it is down again): that entry
    /// and the rest stay for the next replay.
    pub async fn replay(&self, store: &Store) -> Result<ReplayStats, SpoolError> {
        let _one_replay = self.inner.replay.lock().await;

        // 1. Snapshot the file. Appends may continue meanwhile; they only
        //    add bytes after `snapshot_len`.
        let guard = self.inner.file.clone().lock_owned().await;
        let path = self.inner.path.clone();
        let snapshot = blocking(move || {
            let _guard = guard;
            read_or_empty(&path)
        })
        .await?;
        let snapshot_len = snapshot.len() as u64;
        let lines = split_lines(&snapshot);
        if lines.is_empty() {
            return Ok(ReplayStats::default());
        }

        // 2. Write entries in order.
        let mut stats = ReplayStats::default();
        let mut rejected: Vec<Vec<u8>> = Vec::new();
        let mut kept_from = lines.len();
        for (i, raw) in lines.iter().enumerate() {
            let entry: SpoolEntry = match serde_json::from_slice(raw) {
                Ok(e) => e,
                Err(e) => {
                    rejected.push(rejection(raw, &format!("not a spool entry: {e}")));
                    continue;
                }
            };
            match write_entry(store, &entry).await {
                Ok(()) => stats.replayed += 1,
                Err(e) if e.is_record_rejected() => {
                    rejected.push(rejection(
                        raw,
                        &format!("refused by the database: {}", causes(&e)),
                    ));
                }
                Err(e) => {
                    tracing::info!(error = %causes(&e), "Database unavailable during spool replay; keeping the rest");
                    kept_from = i;
                    break;
                }
            }
        }
        stats.rejected = rejected.len();
        if stats.replayed == 0 && stats.rejected == 0 {
            stats.remaining = lines.len();
            return Ok(stats);
        }
        let kept: Vec<Vec<u8>> = lines[kept_from..].iter().map(|l| l.to_vec()).collect();

        // 3. Rejected lines are on disk before they leave the spool (a crash
        //    in between leaves them in both: duplicated, never lost).
        let rejected_path = self.rejected_path();
        let dir = self.inner.dir.clone();
        if !rejected.is_empty() {
            let rp = rejected_path.clone();
            let d = dir.clone();
            blocking(move || {
                let created = !rp.exists();
                let mut f = open_private(&rp, true).map_err(io_err("opening", &rp))?;
                for r in &rejected {
                    f.write_all(r).map_err(io_err("appending to", &rp))?;
                }
                f.sync_data().map_err(io_err("syncing", &rp))?;
                if created {
                    sync_dir(&d)?;
                }
                Ok(())
            })
            .await?;
            tracing::warn!(
                count = stats.rejected,
                "Spool entries moved to spool.rejected (see the file for reasons)"
            );
        }

        // 4. Swap in the remainder plus whatever was appended meanwhile.
        let guard = self.inner.file.clone().lock_owned().await;
        let path = self.inner.path.clone();
        let tmp = dir.join(TEMP_FILE);
        let remaining = blocking(move || {
            let _guard = guard;
            let now = read_or_empty(&path)?;
            let tail = now.get(snapshot_len as usize..).unwrap_or_default();
            let mut f = open_private(&tmp, false).map_err(io_err("creating", &tmp))?;
            for l in &kept {
                f.write_all(l)
                    .and_then(|()| f.write_all(b"\n"))
                    .map_err(io_err("writing", &tmp))?;
            }
            f.write_all(tail).map_err(io_err("writing", &tmp))?;
            f.sync_all().map_err(io_err("syncing", &tmp))?;
            drop(f);
            std::fs::rename(&tmp, &path).map_err(io_err("replacing", &path))?;
            sync_dir(&dir)?;
            Ok(kept.len() + split_lines(tail).len())
        })
        .await?;
        stats.remaining = remaining;
        Ok(stats)
    }
}

/// The error and its causes on one line ("…: connection refused"). Store
/// errors carry no record contents, so this is safe to log.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

fn read_or_empty(path: &Path) -> Result<Vec<u8>, SpoolError> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

/// Non-blank lines, without their terminator.
fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect()
}

/// One `spool.rejected` line: the original line exactly (as text, or as
/// base64 if it is not UTF-8), when and why.
fn rejection(raw: &[u8], reason: &str) -> Vec<u8> {
    let mut v = serde_json::json!({
        "rejected_at": Utc::now().to_rfc3339(),
        "reason": reason,
    });
    match std::str::from_utf8(raw) {
        Ok(s) => v["line"] = serde_json::Value::String(s.to_string()),
        Err(_) => {
            v["line_base64"] =
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(raw));
        }
    }
    let mut out = serde_json::to_vec(&v).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

async fn write_entry(store: &Store, entry: &SpoolEntry) -> Result<(), StoreError> {
    let deadline = store.write_timeout();
    let write = async {
        match entry {
            SpoolEntry::Hook(h) => store.record_hook(h).await,
            SpoolEntry::Feedback(f) => store.record_feedback(f).await.map(|_| ()),
        }
    };
    match tokio::time::timeout(deadline, write).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Timeout {
            action: "writing a spooled record",
            after: deadline,
        }),
    }
}

/// Writes a hook record to the database, or to the spool if the database
/// fails or does not answer within `store.write_timeout()`.
#[tracing::instrument(name = "Persisting a hook record", skip_all, fields(invocation_id = %rec.invocation.id))]
pub async fn persist_hook(
    store: &Store,
    spool: &Spool,
    rec: &HookRecord,
) -> Result<Persisted, PersistError> {
    let deadline = store.write_timeout();
    let err = match tokio::time::timeout(deadline, store.record_hook(rec)).await {
        Ok(Ok(())) => return Ok(Persisted::Database),
        Ok(Err(e)) => e,
        Err(_) => StoreError::Timeout {
            action: "recording a hook",
            after: deadline,
        },
    };
    tracing::warn!(error = %causes(&err), "Database write failed; spooling the hook record");
    spool
        .append(&SpoolEntry::Hook(rec.clone()))
        .await
        .map(|()| Persisted::Spooled)
        .map_err(|spool| PersistError {
            database: causes(&err),
            spool,
        })
}

/// [`persist_hook`] for feedback.
#[tracing::instrument(name = "Persisting feedback", skip_all, fields(feedback_id = %rec.id))]
pub async fn persist_feedback(
    store: &Store,
    spool: &Spool,
    rec: &FeedbackRecord,
) -> Result<FeedbackPersisted, PersistError> {
    let deadline = store.write_timeout();
    let err = match tokio::time::timeout(deadline, store.record_feedback(rec)).await {
        Ok(Ok(ins)) => return Ok(FeedbackPersisted::Database(ins)),
        Ok(Err(e)) => e,
        Err(_) => StoreError::Timeout {
            action: "recording feedback",
            after: deadline,
        },
    };
    tracing::warn!(error = %causes(&err), "Database write failed; spooling the feedback");
    spool
        .append(&SpoolEntry::Feedback(rec.clone()))
        .await
        .map(|()| FeedbackPersisted::Spooled)
        .map_err(|spool| PersistError {
            database: causes(&err),
            spool,
        })
}

/// Replays the spool every `interval` while it has entries and the database
/// answers a ping. Abort the handle to stop it (a replay cut short is
/// crash-safe, see the module docs).
pub fn spawn_replayer(store: Store, spool: Spool, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match spool.pending().await {
                Ok(0) => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Reading the spool failed");
                    continue;
                }
            }
            if store.ping().await.is_err() {
                continue;
            }
            match spool.replay(&store).await {
                Ok(s) => tracing::info!(
                    replayed = s.replayed,
                    remaining = s.remaining,
                    rejected = s.rejected,
                    "Spool replayed"
                ),
                Err(e) => tracing::warn!(error = %e, "Spool replay failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_are_not_entries_and_a_torn_tail_is() {
        let lines = split_lines(b"{\"a\":1}\n\n  \n{\"b\"");
        assert_eq!(lines, vec![&b"{\"a\":1}"[..], &b"{\"b\""[..]]);
    }

    #[test]
    fn a_rejection_keeps_the_line_exactly() {
        let r = rejection(b"{oops", "why");
        let v: serde_json::Value = serde_json::from_slice(&r).unwrap();
        assert_eq!(v["line"], "{oops");
        assert_eq!(v["reason"], "why");
        let r = rejection(&[0xff, 0x00, b'x'], "bin");
        let v: serde_json::Value = serde_json::from_slice(&r).unwrap();
        let back = base64::engine::general_purpose::STANDARD
            .decode(v["line_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(back, vec![0xff, 0x00, b'x']);
    }
}
