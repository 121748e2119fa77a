-- Audit records of oncohooks (PostgreSQL). See docs/storage.md.
--
-- Append-only: invocations, predictions, cards and feedback reject UPDATE,
-- DELETE and TRUNCATE (triggers at the end). A correction is a new row.
-- There is no column for an access token, a JWT or any other secret.

CREATE TABLE invocations (
    id               uuid PRIMARY KEY,
    hook_instance    text NOT NULL,
    service_id       text NOT NULL,
    hook             text NOT NULL,
    patient_id       text,
    user_id          text,
    encounter_id     text,
    fhir_server_host text,
    client_iss       text,
    client_sub       text,
    received_at      timestamptz NOT NULL,
    total_ms         double precision NOT NULL,
    fhir_ms          double precision NOT NULL,
    inference_ms     double precision NOT NULL,
    http_status      integer NOT NULL,
    outcome          text NOT NULL,
    error            text
);
CREATE INDEX invocations_patient_service_time ON invocations (patient_id, service_id, received_at DESC);
CREATE INDEX invocations_service_time ON invocations (service_id, received_at DESC);

CREATE TABLE predictions (
    id               uuid PRIMARY KEY,
    invocation_id    uuid NOT NULL REFERENCES invocations (id),
    service_id       text NOT NULL,
    patient_id       text NOT NULL,
    model_id         text NOT NULL,
    model_version    text NOT NULL,
    risk             double precision,
    risk_tier        text NOT NULL,
    confidence       double precision,
    review_suggested boolean NOT NULL,
    input_digest     text NOT NULL CHECK (input_digest ~ '^[0-9a-f]{64}$'),
    features         jsonb NOT NULL,
    result           jsonb NOT NULL,
    created_at       timestamptz NOT NULL
);
CREATE INDEX predictions_patient_service_time ON predictions (patient_id, service_id, created_at DESC);
CREATE INDEX predictions_model_version ON predictions (model_id, model_version, created_at);
CREATE INDEX predictions_invocation ON predictions (invocation_id);

CREATE TABLE cards (
    uuid          uuid PRIMARY KEY,
    invocation_id uuid NOT NULL REFERENCES invocations (id),
    prediction_id uuid REFERENCES predictions (id),
    service_id    text NOT NULL,
    card          jsonb NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE INDEX cards_invocation ON cards (invocation_id);
CREATE INDEX cards_prediction ON cards (prediction_id);

-- No foreign key to cards: feedback may name a card this database has not
-- seen (CDS Hooks 2.0 §Feedback is sent by the EHR, possibly to any replica).
CREATE TABLE feedback (
    id                   uuid PRIMARY KEY,
    service_id           text NOT NULL,
    card_uuid            uuid NOT NULL,
    outcome              text NOT NULL CHECK (outcome IN ('accepted', 'overridden')),
    override_reason      jsonb,
    accepted_suggestions jsonb NOT NULL,
    outcome_timestamp    timestamptz NOT NULL,
    received_at          timestamptz NOT NULL,
    client_iss           text,
    feedback_digest      text NOT NULL UNIQUE
);
CREATE INDEX feedback_card_uuid ON feedback (card_uuid, received_at);
CREATE INDEX feedback_service_time ON feedback (service_id, received_at);

CREATE FUNCTION oncohooks_reject_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'append-only table %: % is not allowed (corrections are new rows)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER invocations_append_only BEFORE UPDATE OR DELETE ON invocations
    FOR EACH ROW EXECUTE FUNCTION oncohooks_reject_mutation();
CREATE TRIGGER invocations_no_truncate BEFORE TRUNCATE ON invocations
    FOR EACH STATEMENT EXECUTE FUNCTION oncohooks_reject_mutation();
CREATE TRIGGER predictions_append_only BEFORE UPDATE OR DELETE ON predictions
    FOR EACH ROW EXECUTE FUNCTION oncohooks_reject_mutation();
CREATE TRIGGER predictions_no_truncate BEFORE TRUNCATE ON predictions
    FOR EACH STATEMENT EXECUTE FUNCTION oncohooks_reject_mutation();
CREATE TRIGGER cards_append_only BEFORE UPDATE OR DELETE ON cards
    FOR EACH ROW EXECUTE FUNCTION oncohooks_reject_mutation();
CREATE TRIGGER cards_no_truncate BEFORE TRUNCATE ON cards
    FOR EACH STATEMENT EXECUTE FUNCTION oncohooks_reject_mutation();
CREATE TRIGGER feedback_append_only BEFORE UPDATE OR DELETE ON feedback
    FOR EACH ROW EXECUTE FUNCTION oncohooks_reject_mutation();
CREATE TRIGGER feedback_no_truncate BEFORE TRUNCATE ON feedback
    FOR EACH STATEMENT EXECUTE FUNCTION oncohooks_reject_mutation();
