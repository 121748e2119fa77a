//! The review app and the dashboard: server-rendered HTML with inline CSS
//! and SVG, no script and no external assets (works offline, behind strict
//! CSPs, and without any CDN). The lung-nodule service has its own page
//! layout (`nodule`): one block per nodule, each with its own verdict.
//!
//! Pure: the HTTP layer hands in what the store holds (the prediction
//! detail of `/audit/predictions/{id}`, the aggregates of
//! `/audit/aggregates`) and gets a page back. Fields a service did not
//! record (risk, interval, confidence, review reasons) are shown as absent,
//! never invented.

pub mod nodule;
pub mod svg;

use chrono::NaiveDate;
use serde_json::Value;

/// HTML-escape text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}\
header{background:#1f3a5f;color:#fff;padding:10px 20px}header a{color:#cfe0ff}\
main{max-width:1100px;margin:0 auto;padding:16px 20px}\
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 16px;margin:12px 0}\
h1{font-size:20px;margin:4px 0}h2{font-size:16px;margin:4px 0 8px}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eee;padding:4px 6px;text-align:left;vertical-align:top}\
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-weight:600}\
.tier-high{background:#fbe3e0;color:#8a1f11}.tier-elevated,.tier-moderate{background:#fff1d6;color:#7a4b00}\
.tier-low{background:#e2f3e6;color:#1e5b2e}.tier-unknown,.tier-not-applicable{background:#eceff3;color:#444}\
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:12px}\
.kv td:first-child{color:#555;width:220px}.muted{color:#666}.ok{color:#1e5b2e;font-weight:600}\
svg.chart{max-width:100%;height:auto;border:1px solid #eee}textarea{width:100%;min-height:60px}\
button{padding:6px 14px;margin-right:8px}\
.warn{background:#fff1d6;color:#7a4b00}figure{margin:0}\
.nodule-grid{display:grid;grid-template-columns:auto 1fr;gap:16px;align-items:start}\
.patch-view{position:relative}.patch-view img{display:block;image-rendering:pixelated}\
.patch-view svg{position:absolute;left:0;top:0}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{t}</title><style>{CSS}</style></head><body>\
<header><strong>oncohooks</strong> · {t} · <a href=\"/dashboard\">dashboard</a></header>\
<main>{body}</main></body></html>",
        t = esc(title)
    )
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn pct(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        // Derived values (BMI, ratios) are stored at full precision; two
        // decimals are what a reader can use.
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            let r = format!("{x:.2}");
            r.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// What the review page may offer the viewer.
pub struct ReviewOptions<'a> {
    /// The viewer may record a verdict (`review.write`).
    pub can_write: bool,
    /// The viewer (`sub`), shown on the page.
    pub viewer: &'a str,
    /// A verdict was just stored (after the POST/redirect/GET).
    pub saved: bool,
}

/// The review page of one prediction (`detail` as built by the audit API).
pub fn review_page(detail: &Value, opts: &ReviewOptions<'_>) -> String {
    let p = &detail["prediction"];
    if p["service_id"].as_str() == Some(nodule::SERVICE_ID) {
        return page("Review", &nodule::body(detail, opts));
    }
    let id = p["id"].as_str().unwrap_or_default();
    let tier = p["risk_tier"].as_str().unwrap_or("unknown");
    let mut b = header(detail, opts);

    // Risk, interval, confidence, review.
    let risk = num(&p["risk"]);
    let interval = detail["interval"]
        .as_array()
        .filter(|a| a.len() == 2)
        .and_then(|a| Some((a[0].as_f64()?, a[1].as_f64()?)));
    let confidence = num(&p["confidence"]);
    let review = p["review_suggested"].as_bool().unwrap_or(false);
    let review_reasons: Vec<String> = detail["review_reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    b.push_str("<section id=\"risk\"><h2>Risk</h2><table class=\"kv\">");
    b.push_str(&format!(
        "<tr><td>Risk level</td><td><span id=\"risk-tier\" class=\"badge tier-{t}\">{t}</span></td></tr>",
        t = esc(tier)
    ));
    b.push_str(&format!(
        "<tr><td>Probability</td><td id=\"risk-value\">{}</td></tr>",
        risk.map(pct)
            .unwrap_or_else(|| "not computed by this method (classic indices only)".into())
    ));
    b.push_str(&format!(
        "<tr><td>Interval</td><td id=\"risk-interval\">{}</td></tr>",
        interval
            .map(|(lo, hi)| format!("{}–{}", pct(lo), pct(hi)))
            .unwrap_or_else(|| "not reported".into())
    ));
    b.push_str(&format!(
        "<tr><td>Confidence</td><td id=\"confidence\">{}</td></tr>",
        confidence
            .map(|c| format!("{c:.2}"))
            .unwrap_or_else(|| "not reported".into())
    ));
    let why = if !review {
        "not suggested".to_owned()
    } else if review_reasons.is_empty() {
        "suggested (the service recorded no reason)".to_owned()
    } else {
        format!(
            "suggested: <ul>{}</ul>",
            review_reasons
                .iter()
                .map(|r| format!("<li>{}</li>", esc(r)))
                .collect::<String>()
        )
    };
    b.push_str(&format!(
        "<tr><td>Expert review</td><td id=\"review\">{why}</td></tr>"
    ));
    let reasons: Vec<String> = detail["reasons"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(esc).collect())
        .unwrap_or_default();
    if !reasons.is_empty() {
        b.push_str(&format!(
            "<tr><td>Why this level</td><td id=\"reasons\"><ul>{}</ul></td></tr>",
            reasons
                .iter()
                .map(|r| format!("<li>{r}</li>"))
                .collect::<String>()
        ));
    }
    b.push_str(&format!(
        "<tr><td>Input digest</td><td><code>{}</code></td></tr></table></section>",
        esc(p["input_digest"].as_str().unwrap_or_default())
    ));

    // Classic indices.
    if let Some(Value::Object(baselines)) = p["result"].get("baselines") {
        b.push_str("<section id=\"indices\"><h2>Classic indices</h2><table><tr><th>Index</th><th>Status</th><th>Value</th><th>Why</th></tr>");
        for (name, v) in baselines {
            if !v.is_object() {
                continue;
            }
            let value = match (&v["value"], &v["cutoff"]) {
                (Value::Null, _) => "—".to_owned(),
                (val, Value::Null) => text(val),
                (val, cut) => format!("{} (cut-off {})", text(val), text(cut)),
            };
            b.push_str(&format!(
                "<tr class=\"index\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(v["index"].as_str().unwrap_or(name)),
                esc(&text(&v["status"])),
                esc(&value),
                esc(&text(if v["reason"].is_null() {
                    &v["detail"]
                } else {
                    &v["reason"]
                })),
            ));
        }
        b.push_str("</table></section>");
    }

    // Trends.
    let trends = &p["features"]["trends"];
    b.push_str("<section id=\"trends\"><h2>Trends</h2><div class=\"grid\">");
    for (key, title) in [
        ("weight", "Weight"),
        ("albumin", "Albumin"),
        ("crp", "C-reactive protein"),
        ("hemoglobin", "Haemoglobin"),
    ] {
        let s = &trends[key];
        let points: Vec<(NaiveDate, f64)> = s["points"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|pt| {
                        let d = NaiveDate::parse_from_str(pt["date"].as_str()?, "%Y-%m-%d").ok()?;
                        Some((d, pt["value"].as_f64()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if points.is_empty() && key == "hemoglobin" {
            continue;
        }
        let unit = s["unit"].as_str().unwrap_or("");
        b.push_str(&svg::line_chart(
            &format!("trend-{key}"),
            &format!("{title} ({unit})"),
            unit,
            &points,
        ));
    }
    b.push_str("</div></section>");

    // Inputs.
    if let Some(features) = p["features"]["features"].as_array() {
        b.push_str("<section id=\"inputs\"><h2>Inputs</h2><table><tr><th>Input</th><th>Value</th><th>Date</th><th>Source</th></tr>");
        for f in features {
            let present = f["present"].as_bool().unwrap_or(false);
            let value = if present {
                format!("{} {}", text(&f["value"]), f["unit"].as_str().unwrap_or(""))
            } else {
                "missing".to_owned()
            };
            b.push_str(&format!(
                "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if present { "" } else { " class=\"muted\"" },
                esc(f["name"].as_str().unwrap_or_default()),
                esc(&value),
                esc(f["date"].as_str().unwrap_or("")),
                esc(f["source"].as_str().unwrap_or("")),
            ));
        }
        b.push_str("</table></section>");
    }

    // Cards, feedback and the verdict form.
    let cards = detail["cards"].as_array().cloned().unwrap_or_default();
    b.push_str("<section id=\"feedback\"><h2>Card and feedback</h2>");
    for (i, c) in cards.iter().enumerate() {
        b.push_str(&format!(
            "<p><strong>{}</strong></p>",
            esc(c["card"]["summary"].as_str().unwrap_or_default())
        ));
        let fb = c["feedback"].as_array().cloned().unwrap_or_default();
        b.push_str(&feedback_list(&fb, &format!("feedback-list-{}", i + 1)));
    }
    match (cards.first(), opts.can_write) {
        (None, _) => b.push_str(
            "<p class=\"muted\">No card was shown for this prediction, so there is nothing to give feedback on.</p>",
        ),
        (Some(_), false) => b.push_str(NEEDS_WRITE),
        (Some(card), true) => b.push_str(&verdict_form(
            id,
            card["uuid"].as_str().unwrap_or_default(),
            "",
        )),
    }
    b.push_str("</section>");
    page("Review", &b)
}

/// The heading line every review page starts with, and the banner after a
/// verdict was stored.
fn header(detail: &Value, opts: &ReviewOptions<'_>) -> String {
    let p = &detail["prediction"];
    let mut b = format!(
        "<h1>Prediction review: {}</h1><p class=\"muted\">Patient <span id=\"patient\">{}</span> · {} · made {} · model {} {} · viewer {}</p>",
        esc(p["service_id"].as_str().unwrap_or_default()),
        esc(p["patient_id"].as_str().unwrap_or_default()),
        esc(p["id"].as_str().unwrap_or_default()),
        esc(p["created_at"].as_str().unwrap_or_default()),
        esc(p["model_id"].as_str().unwrap_or_default()),
        esc(p["model_version"].as_str().unwrap_or_default()),
        esc(opts.viewer),
    );
    if opts.saved {
        b.push_str("<section id=\"saved\" class=\"ok\">Your verdict was recorded.</section>");
    }
    b
}

const NEEDS_WRITE: &str =
    "<p class=\"muted\">Recording a verdict needs the review.write scope.</p>";

/// The feedback stored for one card (EHR feedback and review verdicts), as a
/// table with the page-unique `id`.
fn feedback_list(fb: &[Value], id: &str) -> String {
    if fb.is_empty() {
        return "<p class=\"muted\">No feedback yet.</p>".to_owned();
    }
    let mut b = format!(
        "<table id=\"{}\" class=\"feedback-list\"><tr><th>When</th><th>Outcome</th><th>By</th><th>Comment / reason</th></tr>",
        esc(id)
    );
    for f in fb {
        let reason = &f["override_reason"];
        let by = reason["reviewer"]
            .as_str()
            .or_else(|| f["client_iss"].as_str())
            .unwrap_or("");
        let note = reason["userComment"]
            .as_str()
            .or_else(|| reason["reason"]["display"].as_str())
            .unwrap_or("");
        b.push_str(&format!(
            "<tr class=\"feedback-item\"><td>{}</td><td class=\"feedback-outcome\">{}</td><td>{}</td><td class=\"feedback-comment\">{}</td></tr>",
            esc(f["received_at"].as_str().unwrap_or_default()),
            esc(f["outcome"].as_str().unwrap_or_default()),
            esc(by),
            esc(note)
        ));
    }
    b.push_str("</table>");
    b
}

/// The agree / disagree / comment form for one card, posted to
/// `/review/{id}/verdict` (stored as CDS Hooks feedback on that card).
/// `suffix` keeps element ids unique when a page has several forms (one
/// per nodule); the empty suffix gives the single-card page its plain ids.
fn verdict_form(prediction_id: &str, card_uuid: &str, suffix: &str) -> String {
    let sfx = if suffix.is_empty() {
        String::new()
    } else {
        format!("-{}", esc(suffix))
    };
    format!(
        "<form id=\"verdict-form{sfx}\" class=\"verdict-form\" method=\"post\" action=\"/review/{id}/verdict\">\
<input type=\"hidden\" name=\"card\" value=\"{card}\">\
<p><label><input type=\"radio\" name=\"verdict\" value=\"agree\" required> Agree</label> \
<label><input type=\"radio\" name=\"verdict\" value=\"disagree\"> Disagree</label></p>\
<p><label for=\"comment{sfx}\">Comment</label><br><textarea id=\"comment{sfx}\" name=\"comment\" maxlength=\"2000\"></textarea></p>\
<button type=\"submit\" id=\"submit-verdict{sfx}\">Record verdict</button></form>",
        id = esc(prediction_id),
        card = esc(card_uuid),
    )
}

/// The dashboard: `/audit/aggregates` as charts, one block per service and
/// model version.
pub fn dashboard_page(agg: &Value, bucket: &str) -> String {
    let mut b = String::new();
    b.push_str(&format!(
        "<h1>Predictions dashboard</h1><p class=\"muted\">{} predictions · by {} · <a href=\"?bucket=day\">by day</a> · <a href=\"?bucket=month\">by month</a></p>",
        agg["predictions"],
        esc(bucket)
    ));
    let groups = agg["groups"].as_array().cloned().unwrap_or_default();
    if groups.is_empty() {
        b.push_str("<section><p>No predictions stored yet.</p></section>");
    }
    for (i, g) in groups.iter().enumerate() {
        let rate = |v: &Value| v.as_f64().map(pct).unwrap_or_else(|| "—".into());
        b.push_str(&format!(
            "<section class=\"group\"><h2>{} · {} {}</h2><table class=\"kv\">\
<tr><td>Volume</td><td class=\"volume\">{}</td></tr>\
<tr><td>Review rate</td><td>{}</td></tr>\
<tr><td>Override rate</td><td>{} (accepted {}, overridden {}, no feedback {})</td></tr>\
<tr><td>Mean risk</td><td>{}</td></tr>\
<tr><td>Outcomes recorded</td><td>{} (Brier score {})</td></tr></table>",
            esc(g["service_id"].as_str().unwrap_or_default()),
            esc(g["model_id"].as_str().unwrap_or_default()),
            esc(g["model_version"].as_str().unwrap_or_default()),
            g["volume"],
            rate(&g["review_rate"]),
            rate(&g["override_rate"]),
            g["feedback"]["accepted"],
            g["feedback"]["overridden"],
            g["feedback"]["none"],
            g["mean_risk"]
                .as_f64()
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "— (no probability)".into()),
            g["calibration"]["with_outcome"],
            g["calibration"]["brier_score"]
                .as_f64()
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "—".into()),
        ));
        let over_time = g["over_time"].as_array().cloned().unwrap_or_default();
        let volume: Vec<(String, f64)> = over_time
            .iter()
            .map(|t| (text(&t["period"]), t["volume"].as_f64().unwrap_or(0.0)))
            .collect();
        let review: Vec<(String, f64)> = over_time
            .iter()
            .map(|t| (text(&t["period"]), t["review_rate"].as_f64().unwrap_or(0.0)))
            .collect();
        let tiers: Vec<(String, f64)> = g["tiers"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default();
        let hist: Vec<(String, f64)> = g["risk_histogram"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|h| {
                        (
                            format!("{:.1}", h["from"].as_f64().unwrap_or(0.0)),
                            h["count"].as_f64().unwrap_or(0.0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        b.push_str("<div class=\"grid\">");
        b.push_str(&svg::bar_chart(
            &format!("volume-{i}"),
            "Volume over time",
            &volume,
        ));
        b.push_str(&svg::bar_chart(
            &format!("review-{i}"),
            "Review rate over time",
            &review,
        ));
        b.push_str(&svg::bar_chart(
            &format!("tiers-{i}"),
            "Risk levels",
            &tiers,
        ));
        if hist.iter().any(|h| h.1 > 0.0) {
            b.push_str(&svg::bar_chart(
                &format!("histogram-{i}"),
                "Risk distribution",
                &hist,
            ));
        }
        let bins: Vec<(f64, f64, u64)> = g["calibration"]["bins"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| {
                        Some((
                            x["mean_predicted"].as_f64()?,
                            x["observed_rate"].as_f64()?,
                            x["n"].as_u64()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !bins.is_empty() {
            b.push_str(&svg::calibration_chart(
                &format!("calibration-{i}"),
                "Calibration: observed vs predicted",
                &bins,
            ));
        }
        let by_tier: Vec<(String, f64)> = g["calibration"]["by_tier"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| Some((text(&x["tier"]), x["observed_rate"].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        if !by_tier.is_empty() {
            b.push_str(&svg::bar_chart(
                &format!("observed-by-tier-{i}"),
                "Observed outcome rate by risk level",
                &by_tier,
            ));
        }
        b.push_str("</div>");
        if let Some(reasons) = g["override_reasons"].as_array().filter(|a| !a.is_empty()) {
            b.push_str("<h2>Override reasons</h2><table><tr><th>Reason</th><th>Count</th></tr>");
            for r in reasons {
                b.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td></tr>",
                    esc(&text(&r["reason"])),
                    r["count"]
                ));
            }
            b.push_str("</table>");
        }
        b.push_str("</section>");
    }
    page("Dashboard", &b)
}

/// Where a browser without a token lands: paste an access token (kept in
/// an HttpOnly, SameSite=Strict cookie for this site only).
pub fn signin_page(next: &str, error: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<p class=\"tier-high badge\">{}</p>", esc(e)))
        .unwrap_or_default();
    page(
        "Sign in",
        &format!(
            "<section><h1>Sign in</h1>{err}<p>Paste an access token from your organisation's authorization server \
(demo: <code>oncohooks dev-token --scope \"review.write user/RiskAssessment.rs audit.read\"</code>).</p>\
<form method=\"post\" action=\"/review/session\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
<textarea name=\"token\" required></textarea><p><button type=\"submit\">Continue</button></p></form></section>",
            esc(next)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detail(with_card: bool) -> Value {
        json!({
            "prediction": {
                "id": "p-1", "service_id": "cachexia-risk", "patient_id": "pat<1>",
                "created_at": "2026-11-20T10:00:00Z", "model_id": "m", "model_version": "1",
                "risk": null, "risk_tier": "high", "confidence": null, "review_suggested": true,
                "input_digest": "ab",
                "features": {"features": [{"name": "weight", "value": 60.0, "unit": "kg", "present": true}],
                    "trends": {"weight": {"unit": "kg", "points": [
                        {"date": "2026-05-01", "value": 70.0}, {"date": "2026-11-01", "value": 62.0}]}}},
                "result": {"baselines": {"fearon": {"index": "fearon_2011", "status": "cachexia", "reason": "weight loss > 5%"}}}
            },
            "cards": if with_card { json!([{"uuid": "c-1", "card": {"summary": "High risk"}, "feedback": []}]) } else { json!([]) },
            "interval": null, "reasons": ["weight loss 11%"], "review_reasons": []
        })
    }

    #[test]
    fn the_review_page_shows_what_was_stored_and_escapes_it() {
        let html = review_page(
            &detail(true),
            &ReviewOptions {
                can_write: true,
                viewer: "dr",
                saved: false,
            },
        );
        assert!(html.contains("pat&lt;1&gt;"));
        assert!(!html.contains("pat<1>"));
        assert!(html.contains("id=\"trend-weight\""));
        assert!(html.contains("data-points=\"2\""));
        assert!(html.contains("not computed by this method"));
        assert!(html.contains("fearon_2011"));
        assert!(html.contains("action=\"/review/p-1/verdict\""));
        assert!(!html.contains("<script"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external assets"
        );
    }

    #[test]
    fn two_cards_get_two_feedback_tables_with_distinct_ids() {
        let mut d = detail(true);
        let fb = json!([{"received_at": "t", "outcome": "accepted", "override_reason": null}]);
        d["cards"] = json!([
            {"uuid": "c-1", "card": {"summary": "a"}, "feedback": fb},
            {"uuid": "c-2", "card": {"summary": "b"}, "feedback": fb}
        ]);
        let html = review_page(
            &d,
            &ReviewOptions {
                can_write: true,
                viewer: "dr",
                saved: false,
            },
        );
        assert!(html.contains("id=\"feedback-list-1\"") && html.contains("id=\"feedback-list-2\""));
        assert_eq!(html.matches("class=\"feedback-item\"").count(), 2);
    }

    #[test]
    fn the_dashboard_shows_each_service_in_its_own_block() {
        let group = |service: &str, model: &str, volume: u64, review: f64| {
            json!({"service_id": service, "model_id": model, "model_version": "1", "volume": volume,
                   "review_rate": review, "override_rate": null, "mean_risk": 0.2,
                   "feedback": {"accepted": 0, "overridden": 0, "none": volume},
                   "calibration": {"with_outcome": 0, "brier_score": null, "bins": [], "by_tier": []},
                   "over_time": [{"period": "2026-12", "volume": volume, "review_rate": review}],
                   "tiers": {"low": 1, "high": 2}, "risk_histogram": [], "override_reasons": []})
        };
        let agg = json!({"predictions": 5, "groups": [
            group("cachexia-risk", "cachexia-fusion", 3, 0.0),
            group(nodule::SERVICE_ID, "autorad-lung", 2, 0.5)
        ]});
        let html = dashboard_page(&agg, "month");
        assert_eq!(html.matches("<section class=\"group\"").count(), 2);
        let nod = &html[html
            .find("<h2>lung-nodule-malignancy")
            .expect("nodule group")..];
        assert!(nod.contains("<td class=\"volume\">2</td>"));
        assert!(nod.contains("<td>Review rate</td><td>50%</td>"));
        let mut ids: Vec<&str> = html
            .split(" id=\"")
            .skip(1)
            .map(|s| &s[..s.find('"').unwrap()])
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "chart ids are unique across services");
    }

    #[test]
    fn no_form_without_a_card_or_without_the_scope() {
        let o = ReviewOptions {
            can_write: true,
            viewer: "dr",
            saved: false,
        };
        assert!(!review_page(&detail(false), &o).contains("verdict-form"));
        let o = ReviewOptions {
            can_write: false,
            ..o
        };
        assert!(!review_page(&detail(true), &o).contains("verdict-form"));
    }
}
