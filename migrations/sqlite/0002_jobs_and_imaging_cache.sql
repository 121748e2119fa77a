-- Job queue and imaging result cache (SQLite). See docs/storage.md.
-- Jobs are mutable work items, not audit records: no append-only triggers.

CREATE TABLE jobs (
    id           TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL CHECK (json_valid(payload)),
    dedupe_key   TEXT,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
    run_after    TEXT NOT NULL,
    locked_by    TEXT,
    locked_until TEXT,
    last_error   TEXT,
    result       TEXT CHECK (result IS NULL OR json_valid(result)),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
) STRICT;
-- One unfinished job per dedupe key; finished (done/dead) jobs do not block
-- a new one.
CREATE UNIQUE INDEX jobs_dedupe_unfinished ON jobs (dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');
CREATE INDEX jobs_ready ON jobs (kind, run_after, created_at) WHERE status = 'queued';
CREATE INDEX jobs_leases ON jobs (locked_until) WHERE status = 'running';
CREATE INDEX jobs_dead ON jobs (kind, updated_at) WHERE status = 'dead';

-- Results are keyed by the pipeline version as well: a new pipeline version
-- recomputes instead of serving a result made by older code.
CREATE TABLE imaging_results (
    series_uid       TEXT NOT NULL,
    pipeline_version TEXT NOT NULL,
    kind             TEXT NOT NULL,
    result           TEXT NOT NULL CHECK (json_valid(result)),
    created_at       TEXT NOT NULL,
    PRIMARY KEY (series_uid, pipeline_version, kind)
) STRICT;
