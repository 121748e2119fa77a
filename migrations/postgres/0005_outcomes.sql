-- Observed outcomes (PostgreSQL), posted by informatics teams through
-- POST /audit/outcomes, for calibration of stored predictions against what
-- happened. Append-only: a corrected label is a new row (the newest wins).

CREATE TABLE outcomes (
    id          uuid PRIMARY KEY,
    service_id  text NOT NULL,
    patient_id  text NOT NULL,
    label       boolean NOT NULL,
    observed_on date NOT NULL,
    recorded_at timestamptz NOT NULL,
    recorded_by text NOT NULL
);
CREATE INDEX outcomes_service_patient ON outcomes (service_id, patient_id, observed_on);

CREATE TRIGGER outcomes_append_only BEFORE UPDATE OR DELETE ON outcomes
    FOR EACH ROW EXECUTE FUNCTION oncohooks_reject_mutation();
CREATE TRIGGER outcomes_no_truncate BEFORE TRUNCATE ON outcomes
    FOR EACH STATEMENT EXECUTE FUNCTION oncohooks_reject_mutation();
