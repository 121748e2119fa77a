//! Read-side queries of the audit API, the FHIR outputs and the review app:
//! prediction search and streaming, access audit events, outcomes.
//!
//! The filter → SQL translation is shared by both backends; only a few
//! expressions differ (JSON to text, timestamp to date), and each backend
//! binds `Arg`s with its own types (PostgreSQL `timestamptz`, SQLite
//! fixed-width text).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::records::PredictionRecord;

/// Which predictions to read. Every field narrows the set; `None` is "any".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PredictionFilter {
    pub service_id: Option<String>,
    pub patient_id: Option<String>,
    /// Inclusive lower bound on `created_at`.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound on `created_at`.
    pub until: Option<DateTime<Utc>>,
    pub model_version: Option<String>,
    pub review_suggested: Option<bool>,
    pub feedback: Option<FeedbackFilter>,
}

/// The latest feedback on any card of the prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackFilter {
    Accepted,
    Overridden,
    /// No feedback at all.
    None,
}

impl FeedbackFilter {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(Self::Accepted),
            "overridden" => Some(Self::Overridden),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// A prediction with what later happened to it: the latest feedback on its
/// cards and the first outcome observed on or after its date.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PredictionRow {
    #[serde(flatten)]
    pub record: PredictionRecord,
    /// `accepted` / `overridden`, from the latest feedback on its cards.
    pub feedback_outcome: Option<String>,
    /// That feedback's `overrideReason` as stored.
    pub feedback_override_reason: Option<Value>,
    /// The first outcome label for this service and patient observed on or
    /// after the prediction's date.
    pub outcome_label: Option<bool>,
}

/// Generic readers of what a service stored in `result`: services differ
/// (classic indices only, or a model with an interval and a review gate),
/// so each reader looks for the documented keys and returns nothing when a
/// service did not record them.
impl PredictionRow {
    /// `result.prediction`, where services put their own details.
    fn details(&self) -> Option<&Value> {
        self.record.result.get("prediction")
    }

    /// The reasons the service gave for its risk level.
    pub fn reasons(&self) -> Vec<String> {
        strings(self.details().and_then(|d| d.get("reasons")))
    }

    /// A risk interval: `interval` / `risk_interval` / `prediction_interval`
    /// as `[lo, hi]` or `{lower|low|lo, upper|high|hi}`.
    pub fn interval(&self) -> Option<(f64, f64)> {
        let d = self.details()?;
        ["interval", "risk_interval", "prediction_interval"]
            .iter()
            .find_map(|k| d.get(*k).and_then(as_interval))
    }

    /// Why expert review was suggested: any string or list of strings under
    /// a key naming review (`review_reasons`, `review.reasons`, …).
    pub fn review_reasons(&self) -> Vec<String> {
        let Some(Value::Object(d)) = self.details() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in d {
            if !k.contains("review") {
                continue;
            }
            match v {
                Value::Object(o) => {
                    for (k2, v2) in o {
                        if k2.contains("reason") || k2 == "why" {
                            out.extend(strings(Some(v2)));
                        }
                    }
                }
                other => out.extend(strings(Some(other))),
            }
        }
        out
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| match x {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o
                    .get("reason")
                    .or_else(|| o.get("text"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn as_interval(v: &Value) -> Option<(f64, f64)> {
    let pair = match v {
        Value::Array(a) if a.len() == 2 => (a[0].as_f64()?, a[1].as_f64()?),
        Value::Object(o) => {
            let get = |keys: &[&str]| keys.iter().find_map(|k| o.get(*k).and_then(Value::as_f64));
            (
                get(&["lower", "low", "lo"])?,
                get(&["upper", "high", "hi"])?,
            )
        }
        _ => return None,
    };
    (pair.0 <= pair.1).then_some(pair)
}

/// One observed outcome (`POST /audit/outcomes`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub id: Uuid,
    pub service_id: String,
    pub patient_id: String,
    pub label: bool,
    pub observed_on: NaiveDate,
    pub recorded_at: DateTime<Utc>,
    /// `sub` of the token that posted it.
    pub recorded_by: String,
}

/// One access to protected data, and its FHIR AuditEvent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEventRecord {
    pub id: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub agent_iss: String,
    pub agent_sub: String,
    /// FHIR AuditEvent.action (`C`, `R`, `U`, `D`, `E`).
    pub action: String,
    pub operation: String,
    pub path: String,
    pub patient_id: Option<String>,
    pub entity: Option<String>,
    /// The FHIR R4 AuditEvent as served.
    pub resource: Value,
}

/// Which audit events to read (newest first).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditEventFilter {
    pub patient_id: Option<String>,
    pub agent_sub: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A value bound to a placeholder; each backend picks the column type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Arg {
    Text(String),
    Time(DateTime<Utc>),
    Bool(bool),
    Int(i64),
}

/// The few SQL expressions that differ between the backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    fn json_as_text(self, col: &str) -> String {
        match self {
            Dialect::Postgres => format!("{col}::text"),
            Dialect::Sqlite => col.to_owned(),
        }
    }

    fn date_of(self, col: &str) -> String {
        match self {
            Dialect::Postgres => format!("({col} AT TIME ZONE 'UTC')::date"),
            Dialect::Sqlite => format!("substr({col}, 1, 10)"),
        }
    }
}

/// Collects bound arguments and hands out `$n` placeholders.
#[derive(Default)]
pub(crate) struct Args(pub(crate) Vec<Arg>);

impl Args {
    pub(crate) fn push(&mut self, a: Arg) -> String {
        self.0.push(a);
        format!("${}", self.0.len())
    }
}

/// `SELECT … FROM (predictions + latest feedback + first outcome) q WHERE …`
/// without ORDER/LIMIT. Columns: every predictions column plus
/// `feedback_outcome`, `feedback_override_reason` (text), `outcome_label`.
pub(crate) fn predictions_sql(d: Dialect, f: &PredictionFilter, args: &mut Args) -> String {
    let latest_feedback = |col: &str| {
        format!(
            "(SELECT {col} FROM cards c JOIN feedback fb ON fb.card_uuid = c.uuid \
             WHERE c.prediction_id = p.id ORDER BY fb.received_at DESC, fb.id DESC LIMIT 1)"
        )
    };
    let inner = format!(
        "SELECT p.*, {} AS feedback_outcome, {} AS feedback_override_reason, \
         (SELECT o.label FROM outcomes o WHERE o.service_id = p.service_id \
            AND o.patient_id = p.patient_id AND o.observed_on >= {} \
            ORDER BY o.observed_on, o.recorded_at DESC, o.id LIMIT 1) AS outcome_label \
         FROM predictions p",
        latest_feedback("fb.outcome"),
        latest_feedback(&d.json_as_text("fb.override_reason")),
        d.date_of("p.created_at"),
    );
    let mut conds = Vec::new();
    if let Some(s) = &f.service_id {
        conds.push(format!("service_id = {}", args.push(Arg::Text(s.clone()))));
    }
    if let Some(s) = &f.patient_id {
        conds.push(format!("patient_id = {}", args.push(Arg::Text(s.clone()))));
    }
    if let Some(t) = f.since {
        conds.push(format!("created_at >= {}", args.push(Arg::Time(t))));
    }
    if let Some(t) = f.until {
        conds.push(format!("created_at < {}", args.push(Arg::Time(t))));
    }
    if let Some(s) = &f.model_version {
        // Either the bare version or `model_id/version` (as x-model-version says).
        let p = args.push(Arg::Text(s.clone()));
        conds.push(format!(
            "(model_version = {p} OR model_id || '/' || model_version = {p})"
        ));
    }
    if let Some(b) = f.review_suggested {
        conds.push(format!("review_suggested = {}", args.push(Arg::Bool(b))));
    }
    match f.feedback {
        Some(FeedbackFilter::Accepted) => conds.push("feedback_outcome = 'accepted'".into()),
        Some(FeedbackFilter::Overridden) => conds.push("feedback_outcome = 'overridden'".into()),
        Some(FeedbackFilter::None) => conds.push("feedback_outcome IS NULL".into()),
        None => {}
    }
    let mut sql = format!("SELECT * FROM ({inner}) q");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql
}

/// Newest first, paged.
pub(crate) fn predictions_page_sql(
    d: Dialect,
    f: &PredictionFilter,
    limit: i64,
    offset: i64,
    args: &mut Args,
) -> String {
    let base = predictions_sql(d, f, args);
    let l = args.push(Arg::Int(limit.max(0)));
    let o = args.push(Arg::Int(offset.max(0)));
    format!("{base} ORDER BY created_at DESC, id DESC LIMIT {l} OFFSET {o}")
}

/// Oldest first, for exports and aggregates (a stable order to stream in).
pub(crate) fn predictions_stream_sql(d: Dialect, f: &PredictionFilter, args: &mut Args) -> String {
    format!("{} ORDER BY created_at, id", predictions_sql(d, f, args))
}

pub(crate) fn predictions_count_sql(d: Dialect, f: &PredictionFilter, args: &mut Args) -> String {
    format!("SELECT count(*) FROM ({}) c", predictions_sql(d, f, args))
}

pub(crate) fn audit_events_where(f: &AuditEventFilter, args: &mut Args) -> String {
    let mut conds = Vec::new();
    if let Some(s) = &f.patient_id {
        conds.push(format!("patient_id = {}", args.push(Arg::Text(s.clone()))));
    }
    if let Some(s) = &f.agent_sub {
        conds.push(format!("agent_sub = {}", args.push(Arg::Text(s.clone()))));
    }
    if let Some(t) = f.since {
        conds.push(format!("recorded_at >= {}", args.push(Arg::Time(t))));
    }
    if let Some(t) = f.until {
        conds.push(format!("recorded_at < {}", args.push(Arg::Time(t))));
    }
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_becomes_one_bound_condition() {
        let f = PredictionFilter {
            service_id: Some("s".into()),
            patient_id: Some("p".into()),
            since: Some(Utc::now()),
            until: Some(Utc::now()),
            model_version: Some("v".into()),
            review_suggested: Some(true),
            feedback: Some(FeedbackFilter::None),
        };
        let mut args = Args::default();
        let sql = predictions_page_sql(Dialect::Sqlite, &f, 10, 20, &mut args);
        assert_eq!(args.0.len(), 8, "{sql}");
        assert!(sql.contains("feedback_outcome IS NULL"), "{sql}");
        assert!(sql.ends_with("LIMIT $7 OFFSET $8"), "{sql}");
        // Values are bound, never spliced into the SQL.
        assert!(!sql.contains("'p'"), "{sql}");
    }

    #[test]
    fn feedback_filter_parses_the_three_documented_values() {
        assert_eq!(FeedbackFilter::parse("none"), Some(FeedbackFilter::None));
        assert_eq!(
            FeedbackFilter::parse("overridden"),
            Some(FeedbackFilter::Overridden)
        );
        assert_eq!(FeedbackFilter::parse("rejected"), None);
    }
}
