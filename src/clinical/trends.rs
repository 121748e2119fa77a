//! Trend series for people: the dated values of the analytes a clinician
//! looks at for cachexia (weight, albumin, CRP, haemoglobin), as stored in
//! a prediction's snapshot and plotted by the review app.

use serde_json::{Value, json};

use super::codes::Analyte;
use super::timeline::Timeline;

/// At most this many points per series (the most recent), so a long
/// record cannot bloat the stored snapshot.
const MAX_POINTS: usize = 200;

const TRENDS: &[(&str, Analyte)] = &[
    ("weight", Analyte::BodyWeight),
    ("albumin", Analyte::Albumin),
    ("crp", Analyte::Crp),
    ("hemoglobin", Analyte::Hemoglobin),
];

/// `{name: {unit, points: [{date, value, source}]}}`, oldest first; series
/// without values are left out.
pub fn trends(t: &Timeline) -> Value {
    let mut out = serde_json::Map::new();
    for (name, analyte) in TRENDS {
        let Some(series) = t.series.get(analyte).filter(|s| !s.is_empty()) else {
            continue;
        };
        let skip = series.len().saturating_sub(MAX_POINTS);
        let points: Vec<Value> = series
            .iter()
            .skip(skip)
            .map(|m| json!({"date": m.date.to_string(), "value": m.value, "source": m.source.to_string()}))
            .collect();
        out.insert(
            (*name).to_owned(),
            json!({"unit": series[0].unit, "points": points}),
        );
    }
    Value::Object(out)
}
