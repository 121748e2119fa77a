-- Job queue and imaging result cache (PostgreSQL). See docs/storage.md.
-- Jobs are mutable work items, not audit records: no append-only triggers.

CREATE TABLE jobs (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL,
    payload      jsonb NOT NULL,
    dedupe_key   text,
    status       text NOT NULL CHECK (status IN ('queued', 'running', 'done', 'dead')),
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts integer NOT NULL CHECK (max_attempts >= 1),
    run_after    timestamptz NOT NULL,
    locked_by    text,
    locked_until timestamptz,
    last_error   text,
    result       jsonb,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
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
    series_uid       text NOT NULL,
    pipeline_version text NOT NULL,
    kind             text NOT NULL,
    result           jsonb NOT NULL,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (series_uid, pipeline_version, kind)
);
