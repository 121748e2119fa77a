-- Audit records of oncohooks (SQLite). See docs/storage.md.
--
-- Same tables as migrations/postgres, with SQLite types: UUIDs as hyphenated
-- text, JSON as text (checked with json_valid), timestamps as fixed-width
-- ISO 8601 UTC text 'YYYY-MM-DDTHH:MM:SS.ffffffZ' so that text order is time
-- order. STRICT tables make SQLite enforce the declared types.
--
-- Append-only: invocations, predictions, cards and feedback reject UPDATE and
-- DELETE (triggers at the end). A correction is a new row.
-- There is no column for an access token, a JWT or any other secret.

CREATE TABLE invocations (
    id               TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    hook_instance    TEXT NOT NULL,
    service_id       TEXT NOT NULL,
    hook             TEXT NOT NULL,
    patient_id       TEXT,
    user_id          TEXT,
    encounter_id     TEXT,
    fhir_server_host TEXT,
    client_iss       TEXT,
    client_sub       TEXT,
    received_at      TEXT NOT NULL,
    total_ms         REAL NOT NULL,
    fhir_ms          REAL NOT NULL,
    inference_ms     REAL NOT NULL,
    http_status      INTEGER NOT NULL,
    outcome          TEXT NOT NULL,
    error            TEXT
) STRICT;
CREATE INDEX invocations_patient_service_time ON invocations (patient_id, service_id, received_at DESC);
CREATE INDEX invocations_service_time ON invocations (service_id, received_at DESC);

CREATE TABLE predictions (
    id               TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    invocation_id    TEXT NOT NULL REFERENCES invocations (id),
    service_id       TEXT NOT NULL,
    patient_id       TEXT NOT NULL,
    model_id         TEXT NOT NULL,
    model_version    TEXT NOT NULL,
    risk             REAL,
    risk_tier        TEXT NOT NULL,
    confidence       REAL,
    review_suggested INTEGER NOT NULL CHECK (review_suggested IN (0, 1)),
    input_digest     TEXT NOT NULL CHECK (length(input_digest) = 64 AND input_digest NOT GLOB '*[^0-9a-f]*'),
    features         TEXT NOT NULL CHECK (json_valid(features)),
    result           TEXT NOT NULL CHECK (json_valid(result)),
    created_at       TEXT NOT NULL
) STRICT;
CREATE INDEX predictions_patient_service_time ON predictions (patient_id, service_id, created_at DESC);
CREATE INDEX predictions_model_version ON predictions (model_id, model_version, created_at);
CREATE INDEX predictions_invocation ON predictions (invocation_id);

CREATE TABLE cards (
    uuid          TEXT PRIMARY KEY NOT NULL CHECK (length(uuid) = 36),
    invocation_id TEXT NOT NULL REFERENCES invocations (id),
    prediction_id TEXT REFERENCES predictions (id),
    service_id    TEXT NOT NULL,
    card          TEXT NOT NULL CHECK (json_valid(card)),
    created_at    TEXT NOT NULL
) STRICT;
CREATE INDEX cards_invocation ON cards (invocation_id);
CREATE INDEX cards_prediction ON cards (prediction_id);

-- No foreign key to cards: feedback may name a card this database has not
-- seen (CDS Hooks 2.0 §Feedback is sent by the EHR, possibly to any replica).
CREATE TABLE feedback (
    id                   TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    service_id           TEXT NOT NULL,
    card_uuid            TEXT NOT NULL,
    outcome              TEXT NOT NULL CHECK (outcome IN ('accepted', 'overridden')),
    override_reason      TEXT CHECK (override_reason IS NULL OR json_valid(override_reason)),
    accepted_suggestions TEXT NOT NULL CHECK (json_valid(accepted_suggestions)),
    outcome_timestamp    TEXT NOT NULL,
    received_at          TEXT NOT NULL,
    client_iss           TEXT,
    feedback_digest      TEXT NOT NULL UNIQUE
) STRICT;
CREATE INDEX feedback_card_uuid ON feedback (card_uuid, received_at);
CREATE INDEX feedback_service_time ON feedback (service_id, received_at);

CREATE TRIGGER invocations_no_update BEFORE UPDATE ON invocations
BEGIN SELECT RAISE(ABORT, 'append-only table invocations: UPDATE is not allowed (corrections are new rows)'); END;
CREATE TRIGGER invocations_no_delete BEFORE DELETE ON invocations
BEGIN SELECT RAISE(ABORT, 'append-only table invocations: DELETE is not allowed (corrections are new rows)'); END;
CREATE TRIGGER predictions_no_update BEFORE UPDATE ON predictions
BEGIN SELECT RAISE(ABORT, 'append-only table predictions: UPDATE is not allowed (corrections are new rows)'); END;
CREATE TRIGGER predictions_no_delete BEFORE DELETE ON predictions
BEGIN SELECT RAISE(ABORT, 'append-only table predictions: DELETE is not allowed (corrections are new rows)'); END;
CREATE TRIGGER cards_no_update BEFORE UPDATE ON cards
BEGIN SELECT RAISE(ABORT, 'append-only table cards: UPDATE is not allowed (corrections are new rows)'); END;
CREATE TRIGGER cards_no_delete BEFORE DELETE ON cards
BEGIN SELECT RAISE(ABORT, 'append-only table cards: DELETE is not allowed (corrections are new rows)'); END;
CREATE TRIGGER feedback_no_update BEFORE UPDATE ON feedback
BEGIN SELECT RAISE(ABORT, 'append-only table feedback: UPDATE is not allowed (corrections are new rows)'); END;
CREATE TRIGGER feedback_no_delete BEFORE DELETE ON feedback
BEGIN SELECT RAISE(ABORT, 'append-only table feedback: DELETE is not allowed (corrections are new rows)'); END;
