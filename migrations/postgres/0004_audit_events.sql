-- Access audit (PostgreSQL): one row per successful access to the FHIR
-- outputs, the audit API and the review app, each with the FHIR R4
-- AuditEvent it is served as (GET /fhir/AuditEvent). See docs/audit.md.
--
-- Append-only like the other audit tables (UPDATE, DELETE and TRUNCATE are
-- refused by the trigger function of 0001). No token, JWT or other secret
-- is stored: only the verified identity (iss, sub) and what was accessed.

CREATE TABLE audit_events (
    id          uuid PRIMARY KEY,
    recorded_at timestamptz NOT NULL,
    agent_iss   text NOT NULL,
    agent_sub   text NOT NULL,
    -- FHIR AuditEvent.action: C R U D E.
    action      text NOT NULL CHECK (action IN ('C', 'R', 'U', 'D', 'E')),
    -- What was done, e.g. 'fhir.RiskAssessment.search', 'audit.export'.
    operation   text NOT NULL,
    path        text NOT NULL,
    patient_id  text,
    entity      text,
    resource    jsonb NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (recorded_at DESC, id DESC);
CREATE INDEX audit_events_patient_time ON audit_events (patient_id, recorded_at DESC);
CREATE INDEX audit_events_agent_time ON audit_events (agent_sub, recorded_at DESC);

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION oncohooks_reject_mutation();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION oncohooks_reject_mutation();
