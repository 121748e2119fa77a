//! Export formats of `/audit/export.ndjson` and `/audit/export.csv`: one
//! prediction per line, written row by row as the store streams them.

use serde_json::{Value, json};

use crate::store::PredictionRow;

/// Columns of the CSV export, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "prediction_id",
    "created_at",
    "service_id",
    "patient_id",
    "model_id",
    "model_version",
    "risk",
    "risk_tier",
    "confidence",
    "review_suggested",
    "input_digest",
    "invocation_id",
    "feedback_outcome",
    "override_reason",
    "outcome_label",
];

pub fn csv_header() -> String {
    let mut s = CSV_COLUMNS.join(",");
    s.push_str("\r\n");
    s
}

/// The code or display of a stored CDS Hooks `overrideReason`
/// (`{reason: Coding, userComment}`), or `userComment` alone.
pub fn override_reason_text(v: Option<&Value>) -> Option<String> {
    let v = v?;
    let reason = v.get("reason");
    reason
        .and_then(|r| r.get("display").or_else(|| r.get("code")))
        .and_then(Value::as_str)
        .or_else(|| v.get("display").and_then(Value::as_str))
        .or_else(|| v.get("code").and_then(Value::as_str))
        .or_else(|| v.get("userComment").and_then(Value::as_str))
        .map(str::to_owned)
}

/// One CSV record (RFC 4180: CRLF, fields quoted when they hold a comma,
/// quote or line break; quotes doubled).
pub fn csv_line(row: &PredictionRow) -> String {
    let p = &row.record;
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let fields = [
        p.id.to_string(),
        p.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        p.service_id.clone(),
        p.patient_id.clone(),
        p.model_id.clone(),
        p.model_version.clone(),
        opt(p.risk),
        p.risk_tier.clone(),
        opt(p.confidence),
        p.review_suggested.to_string(),
        p.input_digest.clone(),
        p.invocation_id.to_string(),
        row.feedback_outcome.clone().unwrap_or_default(),
        override_reason_text(row.feedback_override_reason.as_ref()).unwrap_or_default(),
        row.outcome_label.map(|b| b.to_string()).unwrap_or_default(),
    ];
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

fn csv_field(f: &str) -> String {
    // A leading = + - @ would be read as a formula by spreadsheet software
    // (CSV injection): quote it with a leading apostrophe.
    let f = if f.starts_with(['=', '+', '@']) || (f.starts_with('-') && f.parse::<f64>().is_err()) {
        format!("'{f}")
    } else {
        f.to_owned()
    };
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}

/// One NDJSON line: the whole stored prediction (feature snapshot and
/// result included) with its latest feedback and outcome.
pub fn ndjson_line(row: &PredictionRow) -> String {
    let mut v = serde_json::to_value(row).unwrap_or_else(|e| json!({"error": e.to_string()}));
    if let Value::Object(o) = &mut v {
        o.insert(
            "override_reason".into(),
            override_reason_text(row.feedback_override_reason.as_ref())
                .map(Value::String)
                .unwrap_or(Value::Null),
        );
    }
    let mut s = v.to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-0.5"), "-0.5");
    }

    #[test]
    fn override_reason_prefers_the_coding_display() {
        let v = json!({"reason": {"code": "c", "display": "Not cachectic"}, "userComment": "x"});
        assert_eq!(
            override_reason_text(Some(&v)).as_deref(),
            Some("Not cachectic")
        );
        let v = json!({"userComment": "only a comment"});
        assert_eq!(
            override_reason_text(Some(&v)).as_deref(),
            Some("only a comment")
        );
        assert_eq!(override_reason_text(None), None);
    }
}
