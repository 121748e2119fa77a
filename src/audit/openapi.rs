//! The OpenAPI 3.0 document of `/audit` (served at `/audit/openapi.json`).
//! Written by hand next to the handlers it describes; a test checks that
//! every route registered under `/audit` is documented.

use serde_json::{Value, json};

fn filter_params() -> Vec<Value> {
    let p = |name: &str, desc: &str, schema: Value| json!({"name": name, "in": "query", "required": false, "description": desc, "schema": schema});
    vec![
        p(
            "service",
            "CDS service id, e.g. cachexia-risk",
            json!({"type": "string"}),
        ),
        p(
            "patient",
            "patient id (or Patient/ID)",
            json!({"type": "string"}),
        ),
        p(
            "since",
            "predictions made on or after (YYYY-MM-DD or RFC 3339)",
            json!({"type": "string"}),
        ),
        p(
            "until",
            "predictions made on or before (a date includes that whole day)",
            json!({"type": "string"}),
        ),
        p(
            "model_version",
            "model version, bare or as model_id/version",
            json!({"type": "string"}),
        ),
        p(
            "review",
            "only predictions whose review flag is this",
            json!({"type": "boolean"}),
        ),
        p(
            "feedback",
            "latest feedback on the prediction's cards",
            json!({"type": "string", "enum": ["accepted", "overridden", "none"]}),
        ),
    ]
}

fn with(mut v: Vec<Value>, extra: Vec<Value>) -> Vec<Value> {
    v.extend(extra);
    v
}

fn errors() -> Value {
    json!({
        "400": {"$ref": "#/components/responses/BadRequest"},
        "401": {"$ref": "#/components/responses/Unauthorized"},
        "403": {"$ref": "#/components/responses/Forbidden"}
    })
}

fn responses(ok: Value) -> Value {
    let mut r = errors();
    r["200"] = ok;
    r
}

pub fn document(server: &str) -> Value {
    let page = vec![
        json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}}),
        json!({"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}}),
    ];
    let bucket = vec![json!({
        "name": "bucket", "in": "query",
        "schema": {"type": "string", "enum": ["day", "month"], "default": "month"},
        "description": "granularity of the risk distribution over time"
    })];
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "oncohooks audit API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Stored predictions of the oncohooks CDS services for informatics teams: search, one prediction with its inputs, cards and feedback, streamed exports, aggregates, and recorded outcomes for calibration. Every successful call is recorded as a FHIR AuditEvent (GET /fhir/AuditEvent)."
        },
        "servers": [{"url": server}],
        "security": [{"bearer": []}],
        "paths": {
            "/audit/predictions": {"get": {
                "summary": "Search stored predictions (newest first)",
                "description": "Scope audit.read.",
                "parameters": with(filter_params(), page),
                "responses": responses(json!({"description": "a page of predictions",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictionPage"}}}}))
            }},
            "/audit/predictions/{id}": {"get": {
                "summary": "One prediction with its input snapshot, digest, timings, cards, feedback and outcome",
                "description": "Scope audit.read.",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
                "responses": {
                    "200": {"description": "the prediction", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictionDetail"}}}},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "403": {"$ref": "#/components/responses/Forbidden"},
                    "404": {"$ref": "#/components/responses/NotFound"}
                }
            }},
            "/audit/export.ndjson": {"get": {
                "summary": "Export matching predictions as NDJSON (oldest first, streamed)",
                "description": "Scope audit.export. One JSON object per line: the stored prediction (feature snapshot and result included), its latest feedback and outcome. Streamed from the database row by row: memory stays flat.",
                "parameters": filter_params(),
                "responses": responses(json!({"description": "NDJSON", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}))
            }},
            "/audit/export.csv": {"get": {
                "summary": "Export matching predictions as CSV (RFC 4180, streamed)",
                "description": "Scope audit.export. Columns: prediction_id, created_at, service_id, patient_id, model_id, model_version, risk, risk_tier, confidence, review_suggested, input_digest, invocation_id, feedback_outcome, override_reason, outcome_label.",
                "parameters": filter_params(),
                "responses": responses(json!({"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}}))
            }},
            "/audit/aggregates": {"get": {
                "summary": "Aggregates per service and model version",
                "description": "Scope audit.read. Volume, review rate, override rate and reasons, risk distribution over time, and calibration against recorded outcomes.",
                "parameters": with(filter_params(), bucket),
                "responses": responses(json!({"description": "aggregates", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Aggregates"}}}}))
            }},
            "/audit/outcomes": {"post": {
                "summary": "Record observed outcomes (for calibration)",
                "description": "Scope audit.write. One outcome or an array of them. A prediction is calibrated against the first outcome for its service and patient observed on or after its date.",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/Outcome"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/Outcome"}, "maxItems": 10000}
                ]}}}},
                "responses": {
                    "201": {"description": "stored", "content": {"application/json": {"schema": {"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "string", "format": "uuid"}}}}}}},
                    "400": {"$ref": "#/components/responses/BadRequest"},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "403": {"$ref": "#/components/responses/Forbidden"}
                }
            }},
            "/audit/openapi.json": {"get": {
                "summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.0 document"}}
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "Access token from a configured OAuth issuer (`[access]`), with scopes audit.read, audit.export, audit.write."}},
            "responses": {
                "BadRequest": {"description": "a parameter or the body is wrong", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Unauthorized": {"description": "no, invalid or expired token", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Forbidden": {"description": "the token lacks the scope", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "NotFound": {"description": "no such prediction", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"}, "field": {"type": "string"}, "message": {"type": "string"}}},
                "PredictionSummary": {"type": "object", "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "invocation_id": {"type": "string", "format": "uuid"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "service_id": {"type": "string"}, "patient_id": {"type": "string"},
                    "model_id": {"type": "string"}, "model_version": {"type": "string"},
                    "risk": {"type": "number", "nullable": true},
                    "risk_tier": {"type": "string"},
                    "confidence": {"type": "number", "nullable": true},
                    "review_suggested": {"type": "boolean"},
                    "input_digest": {"type": "string"},
                    "feedback_outcome": {"type": "string", "nullable": true},
                    "override_reason": {"type": "string", "nullable": true},
                    "outcome_label": {"type": "boolean", "nullable": true}
                }},
                "PredictionPage": {"type": "object", "properties": {
                    "total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"},
                    "next": {"type": "string", "nullable": true},
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/PredictionSummary"}}}},
                "PredictionDetail": {"type": "object", "properties": {
                    "prediction": {"type": "object", "description": "the stored prediction: features (input snapshot), result, input_digest"},
                    "invocation": {"type": "object", "description": "the hook call: received_at, total_ms, fhir_ms, inference_ms, http_status"},
                    "cards": {"type": "array", "items": {"type": "object", "properties": {
                        "card": {"type": "object"}, "feedback": {"type": "array", "items": {"type": "object"}}}}},
                    "feedback_outcome": {"type": "string", "nullable": true},
                    "outcome_label": {"type": "boolean", "nullable": true},
                    "fhir": {"type": "string", "description": "URL of the RiskAssessment"}}},
                "Aggregates": {"type": "object", "properties": {
                    "predictions": {"type": "integer"},
                    "groups": {"type": "array", "items": {"type": "object", "properties": {
                        "service_id": {"type": "string"}, "model_id": {"type": "string"}, "model_version": {"type": "string"},
                        "volume": {"type": "integer"}, "review_rate": {"type": "number", "nullable": true},
                        "override_rate": {"type": "number", "nullable": true},
                        "override_reasons": {"type": "array", "items": {"type": "object"}},
                        "risk_histogram": {"type": "array", "items": {"type": "object"}},
                        "over_time": {"type": "array", "items": {"type": "object"}},
                        "calibration": {"type": "object"}}}}}},
                "Outcome": {"type": "object", "required": ["patient", "service", "label", "date"], "properties": {
                    "patient": {"type": "string", "description": "patient id (or Patient/ID)"},
                    "service": {"type": "string", "description": "CDS service id"},
                    "label": {"type": "boolean", "description": "the observed label (true: the predicted outcome occurred); 0/1 accepted"},
                    "date": {"type": "string", "format": "date", "description": "when it was observed"}}}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ref_resolves() {
        let doc = document("http://x");
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/").skip(1) {
            let path = part.split('"').next().unwrap();
            let mut v = &doc;
            for seg in path.split('/') {
                v = v
                    .get(seg)
                    .unwrap_or_else(|| panic!("unresolved $ref #/{path}"));
            }
        }
    }
}
