-- Observed outcomes (SQLite): same table as migrations/postgres/0005.
-- Dates as 'YYYY-MM-DD' text. Append-only.

CREATE TABLE outcomes (
    id          TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    service_id  TEXT NOT NULL,
    patient_id  TEXT NOT NULL,
    label       INTEGER NOT NULL CHECK (label IN (0, 1)),
    observed_on TEXT NOT NULL CHECK (length(observed_on) = 10),
    recorded_at TEXT NOT NULL,
    recorded_by TEXT NOT NULL
) STRICT;
CREATE INDEX outcomes_service_patient ON outcomes (service_id, patient_id, observed_on);

CREATE TRIGGER outcomes_no_update BEFORE UPDATE ON outcomes
BEGIN SELECT RAISE(ABORT, 'append-only table outcomes: UPDATE is not allowed (corrections are new rows)'); END;
CREATE TRIGGER outcomes_no_delete BEFORE DELETE ON outcomes
BEGIN SELECT RAISE(ABORT, 'append-only table outcomes: DELETE is not allowed (corrections are new rows)'); END;
