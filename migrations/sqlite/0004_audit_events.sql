-- Access audit (SQLite): same table as migrations/postgres/0004, SQLite
-- types (UUID and timestamps as fixed-width text, JSON as checked text).
-- Append-only: UPDATE and DELETE are refused. No secret is stored.

CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    recorded_at TEXT NOT NULL,
    agent_iss   TEXT NOT NULL,
    agent_sub   TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('C', 'R', 'U', 'D', 'E')),
    operation   TEXT NOT NULL,
    path        TEXT NOT NULL,
    patient_id  TEXT,
    entity      TEXT,
    resource    TEXT NOT NULL CHECK (json_valid(resource))
) STRICT;
CREATE INDEX audit_events_time ON audit_events (recorded_at DESC, id DESC);
CREATE INDEX audit_events_patient_time ON audit_events (patient_id, recorded_at DESC);
CREATE INDEX audit_events_agent_time ON audit_events (agent_sub, recorded_at DESC);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'append-only table audit_events: UPDATE is not allowed (corrections are new rows)'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'append-only table audit_events: DELETE is not allowed (corrections are new rows)'); END;
