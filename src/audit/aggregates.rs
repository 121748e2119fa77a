//! Aggregates per service and model version, folded over a stream of
//! stored predictions (memory grows with the number of groups and time
//! buckets, never with the number of predictions).
//!
//! - volume, review rate (share with `review_suggested`);
//! - override rate: overridden / predictions with any feedback (CDS Hooks
//!   2.0 §Feedback outcomes `accepted` and `overridden`), and the override
//!   reasons by count;
//! - risk distribution over time: per day or month, volume, tiers and mean
//!   risk (where the method yields a probability), plus a 10-bin histogram;
//! - calibration against recorded outcomes (`POST /audit/outcomes`): for
//!   predictions with a later outcome, observed rate per risk decile
//!   against the mean predicted risk, Brier score, and observed rate per
//!   tier (for methods without a probability).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::export::override_reason_text;
use crate::store::PredictionRow;

const BINS: usize = 10;

/// How finely "over time" is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Day,
    Month,
}

impl Bucket {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Self::Day),
            "month" => Some(Self::Month),
            _ => None,
        }
    }

    fn key(self, row: &PredictionRow) -> String {
        let fmt = match self {
            Bucket::Day => "%Y-%m-%d",
            Bucket::Month => "%Y-%m",
        };
        row.record.created_at.format(fmt).to_string()
    }
}

#[derive(Default)]
struct Counts {
    n: u64,
    review: u64,
    risk_n: u64,
    risk_sum: f64,
    tiers: BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, row: &PredictionRow) {
        self.n += 1;
        self.review += u64::from(row.record.review_suggested);
        if let Some(r) = row.record.risk {
            self.risk_n += 1;
            self.risk_sum += r;
        }
        *self.tiers.entry(row.record.risk_tier.clone()).or_default() += 1;
    }

    fn json(&self) -> Value {
        json!({
            "volume": self.n,
            "review_rate": rate(self.review, self.n),
            "mean_risk": (self.risk_n > 0).then(|| self.risk_sum / self.risk_n as f64),
            "tiers": self.tiers,
        })
    }
}

#[derive(Default)]
struct Calib {
    n: u64,
    positives: u64,
    /// Per risk decile: (n, sum of predicted risk, positives).
    bins: [(u64, f64, u64); BINS],
    brier_sum: f64,
    brier_n: u64,
    by_tier: BTreeMap<String, (u64, u64)>,
}

#[derive(Default)]
struct Group {
    all: Counts,
    accepted: u64,
    overridden: u64,
    reasons: BTreeMap<String, u64>,
    histogram: [u64; BINS],
    over_time: BTreeMap<String, Counts>,
    calib: Calib,
}

fn rate(k: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| k as f64 / n as f64)
}

fn bin_of(risk: f64) -> usize {
    ((risk.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1)
}

/// Folds rows into per-(service, model version) aggregates.
pub struct Aggregator {
    bucket: Bucket,
    groups: BTreeMap<(String, String, String), Group>,
    rows: u64,
}

impl Aggregator {
    pub fn new(bucket: Bucket) -> Self {
        Self {
            bucket,
            groups: BTreeMap::new(),
            rows: 0,
        }
    }

    pub fn add(&mut self, row: &PredictionRow) {
        self.rows += 1;
        let p = &row.record;
        let g = self
            .groups
            .entry((
                p.service_id.clone(),
                p.model_id.clone(),
                p.model_version.clone(),
            ))
            .or_default();
        g.all.add(row);
        g.over_time
            .entry(self.bucket.key(row))
            .or_default()
            .add(row);
        if let Some(r) = p.risk {
            g.histogram[bin_of(r)] += 1;
        }
        match row.feedback_outcome.as_deref() {
            Some("accepted") => g.accepted += 1,
            Some("overridden") => {
                g.overridden += 1;
                let reason = override_reason_text(row.feedback_override_reason.as_ref())
                    .unwrap_or_else(|| "(no reason given)".to_owned());
                *g.reasons.entry(reason).or_default() += 1;
            }
            _ => {}
        }
        if let Some(label) = row.outcome_label {
            let c = &mut g.calib;
            c.n += 1;
            c.positives += u64::from(label);
            let t = c.by_tier.entry(p.risk_tier.clone()).or_default();
            t.0 += 1;
            t.1 += u64::from(label);
            if let Some(r) = p.risk {
                let b = &mut c.bins[bin_of(r)];
                b.0 += 1;
                b.1 += r;
                b.2 += u64::from(label);
                let y = if label { 1.0 } else { 0.0 };
                c.brier_sum += (r - y) * (r - y);
                c.brier_n += 1;
            }
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn finish(self) -> Value {
        let groups: Vec<Value> = self
            .groups
            .into_iter()
            .map(|((service, model_id, version), g)| {
                let with_feedback = g.accepted + g.overridden;
                let mut reasons: Vec<(String, u64)> = g.reasons.into_iter().collect();
                reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let histogram: Vec<Value> = g
                    .histogram
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        json!({"from": i as f64 / BINS as f64, "to": (i + 1) as f64 / BINS as f64, "count": n})
                    })
                    .collect();
                let over_time: Vec<Value> = g
                    .over_time
                    .iter()
                    .map(|(k, c)| {
                        let mut v = c.json();
                        v["period"] = json!(k);
                        v
                    })
                    .collect();
                let c = &g.calib;
                let bins: Vec<Value> = c
                    .bins
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.0 > 0)
                    .map(|(i, b)| {
                        json!({
                            "from": i as f64 / BINS as f64,
                            "to": (i + 1) as f64 / BINS as f64,
                            "n": b.0,
                            "mean_predicted": b.1 / b.0 as f64,
                            "observed_rate": b.2 as f64 / b.0 as f64,
                        })
                    })
                    .collect();
                let by_tier: Vec<Value> = c
                    .by_tier
                    .iter()
                    .map(|(t, (n, pos))| {
                        json!({"tier": t, "n": n, "observed_rate": rate(*pos, *n)})
                    })
                    .collect();
                json!({
                    "service_id": service,
                    "model_id": model_id,
                    "model_version": version,
                    "volume": g.all.n,
                    "review_rate": rate(g.all.review, g.all.n),
                    "mean_risk": g.all.json()["mean_risk"],
                    "tiers": g.all.tiers,
                    "feedback": {
                        "accepted": g.accepted,
                        "overridden": g.overridden,
                        "none": g.all.n - with_feedback,
                    },
                    "override_rate": rate(g.overridden, with_feedback),
                    "override_reasons": reasons
                        .iter()
                        .map(|(r, n)| json!({"reason": r, "count": n}))
                        .collect::<Vec<_>>(),
                    "risk_histogram": histogram,
                    "over_time": over_time,
                    "calibration": {
                        "with_outcome": c.n,
                        "observed_rate": rate(c.positives, c.n),
                        "brier_score": (c.brier_n > 0).then(|| c.brier_sum / c.brier_n as f64),
                        "bins": bins,
                        "by_tier": by_tier,
                    },
                })
            })
            .collect();
        json!({"bucket": self.bucket, "predictions": self.rows, "groups": groups})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PredictionRecord;
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    fn row(
        day: u32,
        risk: Option<f64>,
        review: bool,
        fb: Option<&str>,
        label: Option<bool>,
    ) -> PredictionRow {
        PredictionRow {
            record: PredictionRecord {
                id: Uuid::new_v4(),
                invocation_id: Uuid::new_v4(),
                service_id: "svc".into(),
                patient_id: "p".into(),
                model_id: "m".into(),
                model_version: "1".into(),
                risk,
                risk_tier: if risk.unwrap_or(0.0) > 0.5 {
                    "high"
                } else {
                    "low"
                }
                .into(),
                confidence: None,
                review_suggested: review,
                input_digest: "0".repeat(64),
                features: json!({}),
                result: json!({}),
                created_at: Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0).unwrap(),
            },
            feedback_outcome: fb.map(str::to_owned),
            feedback_override_reason: (fb == Some("overridden"))
                .then(|| json!({"reason": {"code": "x", "display": "Disagree"}})),
            outcome_label: label,
        }
    }

    #[test]
    fn rates_histogram_time_and_calibration_are_counted() {
        let mut a = Aggregator::new(Bucket::Day);
        a.add(&row(1, Some(0.9), true, Some("overridden"), Some(false)));
        a.add(&row(1, Some(0.8), false, Some("accepted"), Some(true)));
        a.add(&row(2, Some(0.1), false, None, Some(false)));
        a.add(&row(2, None, true, None, None));
        let v = a.finish();
        let g = &v["groups"][0];
        assert_eq!(g["volume"], 4);
        assert_eq!(g["review_rate"], 0.5);
        assert_eq!(g["override_rate"], 0.5);
        assert_eq!(g["feedback"]["none"], 2);
        assert_eq!(g["override_reasons"][0]["reason"], "Disagree");
        assert_eq!(g["risk_histogram"][9]["count"], 1);
        assert_eq!(g["risk_histogram"][8]["count"], 1);
        assert_eq!(g["over_time"].as_array().unwrap().len(), 2);
        assert_eq!(g["over_time"][0]["period"], "2026-11-01");
        let c = &g["calibration"];
        assert_eq!(c["with_outcome"], 3);
        // (0.9-0)^2 + (0.8-1)^2 + (0.1-0)^2 = 0.81 + 0.04 + 0.01
        assert!((c["brier_score"].as_f64().unwrap() - 0.86 / 3.0).abs() < 1e-12);
        assert_eq!(c["bins"].as_array().unwrap().len(), 3);
    }
}
