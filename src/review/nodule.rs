//! The review page of a `lung-nodule-malignancy` prediction (issue 6 item 4:
//! "for nodules the CT patch with the mask outline and the radiomics that
//! drove the prompt").
//!
//! One prediction covers one chest CT and holds every nodule of it
//! (`result.nodules`, shape in `/work/shared/schema.md`); each nodule had its
//! own card, matched here by `card_uuid`, so each nodule gets its own
//! verdict form and its own feedback list. Per nodule: what it is (label,
//! location, size, type), the model's answer (probability, the members'
//! interval, confidence, the split-conformal prediction set and why review
//! was suggested), Brock, Mayo and Lung-RADS beside it, the axial centre
//! plane of the CT patch as a PNG with the mask outline drawn over it in
//! SVG, and the radiomics drivers (AutoRad-Lung, `shared/papers.md` §2:
//! hand-crafted radiomics feed the meta-network that shifts the prompt
//! context, CoCoOp-style), then every radiomics value, folded.
//!
//! Everything read from the stored result is escaped; numbers are formatted
//! here. A malformed patch is reported on the page, never a panic.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::{NEEDS_WRITE, ReviewOptions, esc, feedback_list, header, text, verdict_form};
use crate::ml::cachexia::plot::encode_png;

/// The service whose predictions this page renders.
pub const SERVICE_ID: &str = "lung-nodule-malignancy";

/// Largest patch side accepted from a stored result (the model's is 64):
/// bounds the work a malformed record can cause.
const MAX_PATCH: usize = 512;
/// The patch is drawn at an integer multiple of its size close to this,
/// so its pixels stay square and crisp.
const DISPLAY_PX: usize = 256;

/// Percent with one decimal under 10 % (nodule probabilities are often a
/// few percent, where "0%" and "3%" would hide the difference).
fn pct1(v: f64) -> String {
    if v.abs() < 0.1 {
        format!("{:.1}%", v * 100.0)
    } else {
        format!("{:.0}%", v * 100.0)
    }
}

/// Four significant digits, scientific outside 1e-3..1e5 (radiomics values
/// span from ~1e-6 (uniformity of a big ROI) to ~1e7 (energy)).
fn sig(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn mm(v: &Value) -> Option<String> {
    v.as_f64().map(|x| format!("{x:.1}"))
}

/// The element id of the nodule whose card is `card` on this prediction's
/// page (`nodule-N`), so the redirect after a verdict lands back on it.
pub fn anchor_for_card(detail: &Value, card: &str) -> Option<String> {
    let p = &detail["prediction"];
    if p["service_id"].as_str() != Some(SERVICE_ID) {
        return None;
    }
    p["result"]["nodules"]
        .as_array()?
        .iter()
        .position(|n| n["card_uuid"].as_str() == Some(card))
        .map(|i| format!("nodule-{}", i + 1))
}

/// The nodule page's `<main>` content.
pub(super) fn body(detail: &Value, opts: &ReviewOptions<'_>) -> String {
    let p = &detail["prediction"];
    let r = &p["result"];
    let pid = p["id"].as_str().unwrap_or_default();
    let mut b = header(detail, opts);
    let status = r["status"].as_str().unwrap_or("unknown");
    let nodules = r["nodules"].as_array().cloned().unwrap_or_default();
    let cards = detail["cards"].as_array().cloned().unwrap_or_default();

    b.push_str(&summary(p, r, &nodules));
    if let Some(s) = status_section(status, r["status_detail"].as_str()) {
        b.push_str(&s);
    }
    let mut matched = vec![false; cards.len()];
    for (i, n) in nodules.iter().enumerate() {
        let card_idx = n["card_uuid"]
            .as_str()
            .and_then(|u| cards.iter().position(|c| c["uuid"].as_str() == Some(u)));
        if let Some(k) = card_idx {
            matched[k] = true;
        }
        b.push_str(&nodule_section(
            i + 1,
            n,
            &r["model"],
            card_idx.map(|k| &cards[k]),
            pid,
            opts,
        ));
    }
    // Cards not about one nodule (e.g. "imaging pending") still take feedback.
    let others: Vec<(usize, &Value)> = cards
        .iter()
        .enumerate()
        .filter(|(k, _)| !matched[*k])
        .collect();
    if !others.is_empty() {
        b.push_str("<section id=\"other-cards\"><h2>Cards</h2>");
        for (k, c) in others {
            let uuid = c["uuid"].as_str().unwrap_or_default();
            b.push_str(&format!(
                "<div class=\"card\" data-card=\"{}\"><p><strong>{}</strong></p>",
                esc(uuid),
                esc(c["card"]["summary"].as_str().unwrap_or_default())
            ));
            let fb = c["feedback"].as_array().cloned().unwrap_or_default();
            b.push_str(&feedback_list(
                &fb,
                &format!("feedback-list-card-{}", k + 1),
            ));
            if opts.can_write {
                b.push_str(&verdict_form(pid, uuid, &format!("card-{}", k + 1)));
            } else {
                b.push_str(NEEDS_WRITE);
            }
            b.push_str("</div>");
        }
        b.push_str("</section>");
    } else if nodules.is_empty() {
        b.push_str("<section id=\"other-cards\"><p class=\"muted\">No card was shown for this prediction, so there is nothing to give feedback on.</p></section>");
    }
    b
}

/// Study, model and the patient-level figures.
fn summary(p: &Value, r: &Value, nodules: &[Value]) -> String {
    let mut b =
        String::from("<section id=\"summary\"><h2>Chest CT and model</h2><table class=\"kv\">");
    let status = r["status"].as_str().unwrap_or("unknown");
    b.push_str(&format!(
        "<tr><td>Status</td><td id=\"status-value\">{}</td></tr>",
        esc(status)
    ));
    let study = &r["study"];
    if study.is_object() {
        b.push_str(&format!(
            "<tr><td>Study</td><td id=\"study\">{} · started {}<br><span class=\"muted\">study {} · series {}</span></td></tr>",
            esc(&text(&study["imaging_study"])),
            esc(&text(&study["started"])),
            esc(&text(&study["study_uid"])),
            esc(&text(&study["series_uid"])),
        ));
    }
    let m = &r["model"];
    if m.is_object() {
        b.push_str(&format!(
            "<tr><td>Model</td><td id=\"model\">{} {} · conformal α = {}</td></tr>\
<tr><td>Source</td><td id=\"source-label\">{}</td></tr>",
            esc(&text(&m["id"])),
            esc(&text(&m["version"])),
            m["alpha"]
                .as_f64()
                .map(|a| format!("{a:.2}"))
                .unwrap_or_else(|| "—".into()),
            esc(&text(&m["source_label"])),
        ));
        if m["trained_on_rendered_pixels"].as_bool() == Some(true) {
            b.push_str(
                "<tr><td>Image training data</td><td id=\"rendered-pixels\" class=\"warn\">The image branch learned from CT patches \
rendered from LIDC-IDRI readers' masks (real size and shape, synthetic grey levels), not from real CT pixels: \
weigh its probability with that in mind.</td></tr>",
            );
        }
    } else {
        b.push_str(&format!(
            "<tr><td>Model</td><td id=\"model\">none installed ({}): Brock, Mayo and Lung-RADS only</td></tr>",
            esc(p["model_id"].as_str().unwrap_or_default())
        ));
    }
    let tier = p["risk_tier"].as_str().unwrap_or("unknown");
    b.push_str(&format!(
        "<tr><td>Highest malignancy probability</td><td><span id=\"risk-value\">{}</span> \
<span id=\"risk-tier\" class=\"badge tier-{t}\">{t}</span> <span class=\"muted\">({} nodule{})</span></td></tr>",
        p["risk"]
            .as_f64()
            .map(pct1)
            .unwrap_or_else(|| "—".into()),
        nodules.len(),
        if nodules.len() == 1 { "" } else { "s" },
        t = esc(tier),
    ));
    let flagged: Vec<String> = nodules
        .iter()
        .filter(|n| n["model"]["review_suggested"].as_bool() == Some(true))
        .map(|n| esc(n["label"].as_str().unwrap_or("unnamed nodule")))
        .collect();
    let review = if p["review_suggested"].as_bool() == Some(true) {
        if flagged.is_empty() {
            "suggested (the service recorded no nodule-level reason)".to_owned()
        } else {
            format!("suggested for {} (see below)", flagged.join(", "))
        }
    } else {
        "not suggested".to_owned()
    };
    b.push_str(&format!(
        "<tr><td>Expert review</td><td id=\"review\">{review}</td></tr>"
    ));
    if let Some(w) = list(&r["warnings"]) {
        b.push_str(&format!(
            "<tr><td>Imaging notes</td><td id=\"imaging-warnings\" class=\"warn\">{w}</td></tr>"
        ));
    }
    b.push_str("</table></section>");
    b
}

/// A list of strings as `<ul>`, `None` when absent or empty.
fn list(v: &Value) -> Option<String> {
    let items: Vec<String> = v
        .as_array()?
        .iter()
        .map(|x| format!("<li>{}</li>", esc(&text(x))))
        .collect();
    (!items.is_empty()).then(|| format!("<ul>{}</ul>", items.join("")))
}

/// Where the outline's mask came from (`mask_source` as the imaging job
/// stores it): a reviewer weighs a reader's SEG differently from a
/// threshold segmentation around a reported point.
fn mask_provenance(v: &Value) -> Option<String> {
    match v["method"].as_str()? {
        "seg" => Some("mask from a DICOM SEG segment".into()),
        "point-seeded" => Some(format!(
            "mask segmented around the reported point (voxels ≥ {} HU within {} mm)",
            v["threshold_hu"]
                .as_f64()
                .map(|t| format!("{t:.0}"))
                .unwrap_or_else(|| "?".into()),
            v["radius_mm"]
                .as_f64()
                .map(sig)
                .unwrap_or_else(|| "?".into()),
        )),
        other => Some(format!("mask from {}", esc(other))),
    }
}

/// A plain sentence for every status other than `scored`.
fn status_section(status: &str, detail: Option<&str>) -> Option<String> {
    let (title, what) = match status {
        "scored" => return None,
        "imaging_pending" => (
            "Imaging in progress",
            "The patient's chest CT is still being analysed, so no nodule is scored yet. Open this page again once the imaging job has finished.",
        ),
        "no_chest_ct" => (
            "No chest CT",
            "No chest CT was found for this patient, so no nodule could be assessed.",
        ),
        "no_nodule_findings" => (
            "No nodule findings",
            "A chest CT was found, but no nodule finding (Observation, DICOM SEG or SR) is recorded for it, so there was nothing to score.",
        ),
        "imaging_failed" => (
            "Imaging failed",
            "The analysis of the chest CT failed, so no nodule was scored.",
        ),
        _ => (
            "Unknown status",
            "The service recorded a status this page does not know.",
        ),
    };
    Some(format!(
        "<section id=\"status\" data-status=\"{}\"><h2>{title}</h2><p>{what}</p>{}</section>",
        esc(status),
        detail
            .filter(|d| !d.is_empty())
            .map(|d| format!("<p class=\"muted\" id=\"status-detail\">{}</p>", esc(d)))
            .unwrap_or_default()
    ))
}

/// One nodule: facts, model, baselines, patch, drivers, feedback.
fn nodule_section(
    n_idx: usize,
    n: &Value,
    model_info: &Value,
    card: Option<&Value>,
    pid: &str,
    opts: &ReviewOptions<'_>,
) -> String {
    let label = n["label"].as_str().unwrap_or("Nodule");
    let card_uuid = card.and_then(|c| c["uuid"].as_str()).unwrap_or_default();
    let mut b = format!(
        "<section class=\"nodule\" id=\"nodule-{n_idx}\" data-card=\"{}\"><h2>{}</h2>",
        esc(card_uuid),
        esc(label)
    );
    if let Some(c) = card {
        b.push_str(&format!(
            "<p>Card: <strong class=\"card-summary\">{}</strong></p>",
            esc(c["card"]["summary"].as_str().unwrap_or_default())
        ));
    }
    b.push_str("<div class=\"nodule-grid\"><div>");
    match decode_patch(&n["patch"]) {
        Err(_) if n["patch"].is_null() && n["error"].is_string() => b.push_str(&format!(
            "<p class=\"muted patch-missing\">CT patch not shown: the nodule was not measured on the CT ({}).</p>",
            esc(&text(&n["error"]))
        )),
        Ok(patch) => b.push_str(&patch_figure(
            n_idx,
            &patch,
            mask_provenance(&n["mask_source"]).as_deref(),
        )),
        Err(e) => b.push_str(&format!(
            "<p class=\"muted patch-missing\">CT patch not shown: {}</p>",
            esc(&e)
        )),
    }
    b.push_str("</div><table class=\"kv\">");

    // What it is.
    let loc = &n["location"];
    let centre = loc["center_mm"]
        .as_array()
        .filter(|a| a.len() == 3 && a.iter().all(Value::is_number))
        .map(|a| {
            format!(
                " · centre ({}) mm LPS",
                a.iter().filter_map(mm).collect::<Vec<_>>().join(", ")
            )
        })
        .unwrap_or_default();
    b.push_str(&format!(
        "<tr><td>Location</td><td class=\"location\">{}{}</td></tr>",
        esc(loc["body_site"].as_str().unwrap_or("site not recorded")),
        esc(&centre)
    ));
    let size = &n["size"];
    let axes = match (mm(&size["long_axis_mm"]), mm(&size["short_axis_mm"])) {
        (Some(l), Some(s)) => format!(" · axes {l} × {s} mm"),
        _ => String::new(),
    };
    b.push_str(&format!(
        "<tr><td>Size</td><td class=\"size\">{}{}{axes}{}</td></tr>",
        mm(&size["mean_diameter_mm"])
            .map(|d| format!("{d} mm mean diameter"))
            .unwrap_or_else(|| "diameter not recorded".into()),
        size["volume_mm3"]
            .as_f64()
            .map(|v| format!(" · {v:.0} mm³"))
            .unwrap_or_default(),
        size["source"]
            .as_str()
            .map(|s| format!(" <span class=\"muted\">({})</span>", esc(s)))
            .unwrap_or_default()
    ));
    b.push_str(&format!(
        "<tr><td>Type</td><td class=\"nodule-type\">{}{}</td></tr><tr><td>Finding</td><td class=\"finding\">{}</td></tr>",
        esc(n["nodule_type"].as_str().unwrap_or("not recorded")),
        n["nodule_type_source"]
            .as_str()
            .map(|s| format!(" <span class=\"muted\">({})</span>", esc(s)))
            .unwrap_or_default(),
        esc(&text(&n["finding"])),
    ));
    if n["error"].is_string() {
        b.push_str(&format!(
            "<tr><td>Measurement</td><td class=\"measurement-error warn\">{}</td></tr>",
            esc(&text(&n["error"]))
        ));
    }

    // The model.
    let m = &n["model"];
    let alpha = model_info["alpha"].as_f64();
    if m.is_object() {
        let interval = m["interval"]
            .as_array()
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_f64()?, a[1].as_f64()?)));
        b.push_str(&format!(
            "<tr><td>Model probability</td><td><span class=\"model-probability\">{}</span> <span class=\"model-interval muted\">{}</span></td></tr>",
            m["probability"]
                .as_f64()
                .map(pct1)
                .unwrap_or_else(|| "—".into()),
            interval
                .map(|(lo, hi)| format!("members {}–{}", pct1(lo), pct1(hi)))
                .unwrap_or_else(|| "no interval".into()),
        ));
        b.push_str(&format!(
            "<tr><td>Confidence</td><td class=\"model-confidence\">{} ({})</td></tr>",
            m["confidence"]
                .as_f64()
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "—".into()),
            esc(m["confidence_level"].as_str().unwrap_or("not reported")),
        ));
        let set: Vec<&str> = m["prediction_set"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        b.push_str(&format!(
            "<tr><td>Prediction set</td><td class=\"prediction-set\">{{{}}}{}</td></tr>",
            esc(&set.join(", ")),
            alpha.map(|a| format!(" at α = {a:.2}")).unwrap_or_default()
        ));
        b.push_str(&format!(
            "<tr><td>Expert review</td><td class=\"nodule-review\">{}</td></tr>",
            review_why(m["review_suggested"].as_bool() == Some(true), &set, alpha)
        ));
    } else {
        b.push_str(&format!(
            "<tr><td>Model probability</td><td class=\"model-probability muted\">no model output ({})</td></tr>",
            n["model_missing"]
                .as_str()
                .map(esc)
                .unwrap_or_else(|| "baselines only".into())
        ));
    }

    // Clinical baselines, side by side with the model.
    b.push_str(&baseline_row(n, "brock", "Brock (PanCan)"));
    b.push_str(&baseline_row(n, "mayo", "Mayo Clinic"));
    let lr = &n["lung_rads"];
    let lr_text = if lr.is_object() && !lr["category"].is_null() {
        format!(
            "<strong>{}</strong> · {}{}",
            esc(&text(&lr["category"])),
            esc(&text(&lr["management"])),
            inputs(&lr["inputs"])
        )
    } else {
        format!(
            "<span class=\"muted\">not computable: {}</span>",
            esc(&missing_reason(n, "lung_rads"))
        )
    };
    b.push_str(&format!(
        "<tr><td>Lung-RADS v2022</td><td class=\"lung-rads\">{lr_text}</td></tr>"
    ));
    if let Some(a) = list(&n["assumed"]) {
        b.push_str(&format!(
            "<tr><td>Assumed for the baselines</td><td class=\"assumed\">{a}</td></tr>"
        ));
    }
    b.push_str("</table></div>");

    // The radiomics that drove the prompt, and all of them.
    if m.is_object() {
        b.push_str(&drivers_table(n_idx, &m["radiomics_drivers"]));
    }
    if let Some(all) = n["radiomics"].as_object().filter(|o| !o.is_empty()) {
        let mut keys: Vec<&String> = all.keys().collect();
        keys.sort();
        b.push_str(&format!(
            "<details class=\"radiomics\" id=\"radiomics-{n_idx}\"><summary>All {} radiomics values (pyradiomics names)</summary><table>",
            keys.len()
        ));
        for k in keys {
            let v = &all[k];
            b.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(k),
                v.as_f64().map(sig).unwrap_or_else(|| esc(&text(v)))
            ));
        }
        b.push_str("</table></details>");
    }

    // Feedback on this nodule's card, and the verdict.
    b.push_str("<h3>Feedback on this nodule</h3>");
    match card {
        None => b.push_str(
            "<p class=\"muted\">No stored card matches this nodule, so there is nothing to give feedback on.</p>",
        ),
        Some(c) => {
            let fb = c["feedback"].as_array().cloned().unwrap_or_default();
            b.push_str(&feedback_list(&fb, &format!("feedback-list-{n_idx}")));
            if opts.can_write {
                b.push_str(&verdict_form(pid, card_uuid, &n_idx.to_string()));
            } else {
                b.push_str(NEEDS_WRITE);
            }
        }
    }
    b.push_str("</section>");
    b
}

/// Why a radiologist's review was (or was not) suggested, from the
/// split-conformal prediction set (Angelopoulos & Bates 2021, §1): the set
/// holds every class whose nonconformity is within the calibrated quantile,
/// so it covers the true class with probability ≥ 1 − α; a set of two says
/// the model cannot single out one class at that level, an empty set that
/// the nodule looks unlike the calibration nodules.
fn review_why(suggested: bool, set: &[&str], alpha: Option<f64>) -> String {
    let level = alpha
        .map(|a| format!("α = {a:.2} ({:.0}% coverage)", (1.0 - a) * 100.0))
        .unwrap_or_else(|| "the model's α".into());
    match (suggested, set.len()) {
        (true, 2) => format!(
            "<strong>suggested</strong>: the conformal prediction set at {level} contains both benign and malignant, \
so the model cannot single out one class for this nodule"
        ),
        (true, 0) => format!(
            "<strong>suggested</strong>: the conformal prediction set at {level} is empty — neither class is plausible \
enough, the nodule looks unlike those the model was calibrated on"
        ),
        (true, _) => format!(
            "<strong>suggested</strong> by the service (prediction set {{{}}} at {level})",
            esc(&set.join(", "))
        ),
        (false, _) => format!(
            "not suggested: the conformal prediction set at {level} is {{{}}} alone",
            esc(&set.join(", "))
        ),
    }
}

/// Why a baseline is missing: `<key>_missing` beside it (schema), or a
/// `missing` field inside it.
fn missing_reason(n: &Value, key: &str) -> String {
    n[format!("{key}_missing")]
        .as_str()
        .or_else(|| n[key]["missing"].as_str())
        .unwrap_or("no reason recorded")
        .to_owned()
}

fn inputs(v: &Value) -> String {
    match v.as_object() {
        Some(o) if !o.is_empty() => format!(
            "<br><span class=\"muted inputs\">inputs: {}</span>",
            o.iter()
                .map(|(k, v)| format!("{} {}", esc(k), esc(&text(v))))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        _ => String::new(),
    }
}

fn baseline_row(n: &Value, key: &str, name: &str) -> String {
    let v = &n[key];
    let cell = match v["probability"].as_f64() {
        Some(prob) => format!("<strong>{}</strong>{}", pct1(prob), inputs(&v["inputs"])),
        None => format!(
            "<span class=\"muted\">not computable: {}</span>",
            esc(&missing_reason(n, key))
        ),
    };
    format!("<tr><td>{name}</td><td class=\"{key}\">{cell}</td></tr>")
}

/// The drivers, largest |contribution| first (re-sorted here: the page
/// must not depend on the writer's order), each with a signed bar.
fn drivers_table(n_idx: usize, drivers: &Value) -> String {
    let mut ds: Vec<(String, Option<f64>, f64)> = drivers
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| {
                    Some((
                        d["name"].as_str()?.to_owned(),
                        d["value"].as_f64(),
                        d["contribution"].as_f64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    if ds.is_empty() {
        return format!(
            "<p class=\"muted\" id=\"drivers-{n_idx}\">The model recorded no radiomics drivers for this nodule.</p>"
        );
    }
    ds.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
    let scale = ds.iter().map(|d| d.2.abs()).fold(0.0_f64, f64::max);
    let mut b = format!(
        "<h3>Radiomics that drove the prompt</h3><p class=\"muted\">Signed contribution to the malignant-class logit \
through the meta-network that shifts the prompt context (positive, red: towards malignant; negative, blue: towards benign).</p>\
<table class=\"drivers\" id=\"drivers-{n_idx}\"><tr><th>Feature</th><th>Value</th><th>Contribution</th><th></th></tr>"
    );
    for (name, value, c) in &ds {
        // A centred bar: half the width is the largest |contribution|.
        let half = 60.0;
        let w = if scale > 0.0 {
            (c.abs() / scale * (half - 2.0)).max(0.5)
        } else {
            0.5
        };
        let (x, fill) = if *c >= 0.0 {
            (half, "#b3261e")
        } else {
            (half - w, "#1f5fa8")
        };
        b.push_str(&format!(
            "<tr class=\"driver\" data-contribution=\"{c}\"><td>{}</td><td>{}</td><td>{:+.3}</td>\
<td><svg class=\"driver-bar\" viewBox=\"0 0 120 12\" width=\"120\" height=\"12\" aria-hidden=\"true\">\
<line x1=\"{half}\" y1=\"0\" x2=\"{half}\" y2=\"12\" stroke=\"#888\"/>\
<rect x=\"{x:.1}\" y=\"2\" width=\"{w:.1}\" height=\"8\" fill=\"{fill}\"/></svg></td></tr>",
            esc(name),
            value.map(sig).unwrap_or_else(|| "—".into()),
            c
        ));
    }
    b.push_str("</table>");
    b
}

/// The stored patch, checked.
#[derive(Debug)]
struct Patch {
    size: usize,
    spacing_mm: f64,
    /// Windowed centre axial plane, 0..255, row-major.
    axial: Vec<u8>,
    /// The mask on that plane, non-zero inside; `None` when not stored.
    mask: Option<Vec<u8>>,
    window: String,
}

fn decode_patch(v: &Value) -> Result<Patch, String> {
    if !v.is_object() {
        return Err("no patch stored with this nodule".into());
    }
    let size = v["size"]
        .as_u64()
        .filter(|s| (1..=MAX_PATCH as u64).contains(s))
        .ok_or_else(|| format!("patch.size must be an integer 1..{MAX_PATCH}"))?
        as usize;
    let spacing_mm = v["spacing_mm"]
        .as_f64()
        .filter(|s| s.is_finite() && *s > 0.0)
        .ok_or("patch.spacing_mm must be a positive number")?;
    let plane = |key: &str| -> Result<Vec<u8>, String> {
        let s = v[key]
            .as_str()
            .ok_or_else(|| format!("patch.{key} is missing"))?;
        let bytes = STANDARD
            .decode(s)
            .map_err(|e| format!("patch.{key} is not base64 ({e})"))?;
        if bytes.len() != size * size {
            return Err(format!(
                "patch.{key} holds {} bytes, expected {size}×{size} = {}",
                bytes.len(),
                size * size
            ));
        }
        Ok(bytes)
    };
    let axial = plane("axial")?;
    let mask = if v["mask_axial"].is_null() {
        None
    } else {
        Some(plane("mask_axial")?)
    };
    // `imaging::patch::HuWindow` serialises as {lower, upper}; a
    // {center, width} window is also read.
    let w = &v["window"];
    let window = match (
        w["lower"].as_f64(),
        w["upper"].as_f64(),
        w["center"].as_f64(),
        w["width"].as_f64(),
    ) {
        (Some(lo), Some(hi), _, _) => format!("window {lo:.0} to {hi:.0} HU"),
        (_, _, Some(c), Some(wd)) => format!("window level {c:.0} HU, width {wd:.0} HU"),
        _ => "window not recorded".to_owned(),
    };
    Ok(Patch {
        size,
        spacing_mm,
        axial,
        mask,
        window,
    })
}

/// A mask's outline on its pixel grid.
#[derive(Debug, PartialEq)]
pub struct Outline {
    /// SVG path data in pixel units: pixel (row r, column c) covers
    /// x c..c+1, y r..r+1.
    pub path: String,
    /// Unit pixel edges on the boundary (the outline's length in pixels).
    pub edges: usize,
    /// Mask pixels.
    pub pixels: usize,
    /// Bounding box of the mask, `[x0, y0, x1, y1]` in pixel units (x1, y1
    /// exclusive); `None` for an empty mask.
    pub bbox: Option<[usize; 4]>,
}

/// Every pixel edge between a mask pixel and a non-mask pixel (or the image
/// border), with collinear neighbouring edges merged into one segment, so
/// the outline is exact at the pixel level (no smoothing that could move it
/// off the voxels the radiomics were computed on). `mask` is `size × size`
/// row-major; missing bytes count as outside.
pub fn mask_outline(mask: &[u8], size: usize) -> Outline {
    let inside = |r: isize, c: isize| {
        r >= 0
            && c >= 0
            && (r as usize) < size
            && (c as usize) < size
            && mask
                .get(r as usize * size + c as usize)
                .is_some_and(|&m| m != 0)
    };
    let mut path = String::new();
    let mut edges = 0;
    // Horizontal lines y = 0..=size: an edge at column c separates pixel
    // (y-1, c) from (y, c).
    for y in 0..=size as isize {
        let mut run: Option<isize> = None;
        for c in 0..=size as isize {
            let edge = c < size as isize && inside(y - 1, c) != inside(y, c);
            match (edge, run) {
                (true, None) => run = Some(c),
                (false, Some(c0)) => {
                    path.push_str(&format!("M{c0} {y}H{c}"));
                    edges += (c - c0) as usize;
                    run = None;
                }
                _ => {}
            }
        }
    }
    // Vertical lines x = 0..=size: an edge at row r separates (r, x-1) from (r, x).
    for x in 0..=size as isize {
        let mut run: Option<isize> = None;
        for r in 0..=size as isize {
            let edge = r < size as isize && inside(r, x - 1) != inside(r, x);
            match (edge, run) {
                (true, None) => run = Some(r),
                (false, Some(r0)) => {
                    path.push_str(&format!("M{x} {r0}V{r}"));
                    edges += (r - r0) as usize;
                    run = None;
                }
                _ => {}
            }
        }
    }
    let mut pixels = 0;
    let mut bbox: Option<[usize; 4]> = None;
    for (i, &m) in mask.iter().enumerate().take(size * size) {
        if m == 0 {
            continue;
        }
        pixels += 1;
        let (r, c) = (i / size, i % size);
        let bb = bbox.get_or_insert([c, r, c + 1, r + 1]);
        bb[0] = bb[0].min(c);
        bb[1] = bb[1].min(r);
        bb[2] = bb[2].max(c + 1);
        bb[3] = bb[3].max(r + 1);
    }
    Outline {
        path,
        edges,
        pixels,
        bbox,
    }
}

/// The patch as an `<img>` (greyscale PNG data URI: the page's CSP allows
/// `img-src data:`; no file, no external asset) with an SVG overlay in the
/// patch's pixel coordinates: the mask outline and a millimetre scale bar.
fn patch_figure(n_idx: usize, p: &Patch, provenance: Option<&str>) -> String {
    let png = match encode_png(p.size, p.size, 1, &p.axial) {
        Ok(png) => png,
        Err(e) => {
            return format!(
                "<p class=\"muted patch-missing\">CT patch not shown: {}</p>",
                esc(&e.to_string())
            );
        }
    };
    let s = p.size;
    let disp = s * (DISPLAY_PX / s).max(1);
    let field_mm = s as f64 * p.spacing_mm;
    // The longest round length up to a quarter of the field.
    let bar_mm = [50.0, 20.0, 10.0, 5.0, 2.0, 1.0]
        .into_iter()
        .find(|l| *l <= field_mm / 4.0)
        .unwrap_or(field_mm / 4.0);
    let bar_px = bar_mm / p.spacing_mm;
    let (x0, y0) = (s as f64 * 0.06, s as f64 * 0.92);
    let font = s as f64 / 16.0;
    let (outline, note) = match &p.mask {
        Some(mask) => {
            let o = mask_outline(mask, s);
            let bbox = o
                .bbox
                .map(|b| format!("{} {} {} {}", b[0], b[1], b[2], b[3]))
                .unwrap_or_default();
            let note = if o.pixels == 0 {
                "the mask is empty on this plane"
            } else {
                "red: the nodule's mask outline"
            };
            (
                format!(
                    "<path class=\"mask-outline\" d=\"{}\" data-edges=\"{}\" data-mask-pixels=\"{}\" data-mask-bbox=\"{bbox}\" \
fill=\"none\" stroke=\"#ff3b30\" stroke-width=\"1.5\" vector-effect=\"non-scaling-stroke\" stroke-linecap=\"square\"/>",
                    o.path, o.edges, o.pixels
                ),
                note,
            )
        }
        None => (String::new(), "no mask stored, so no outline"),
    };
    format!(
        "<figure class=\"patch\" style=\"width:{disp}px\"><div class=\"patch-view\" style=\"width:{disp}px;height:{disp}px\">\
<img id=\"patch-{n_idx}\" class=\"patch-image\" alt=\"Axial CT patch of nodule {n_idx}\" width=\"{disp}\" height=\"{disp}\" \
src=\"data:image/png;base64,{b64}\">\
<svg class=\"patch-overlay\" viewBox=\"0 0 {s} {s}\" width=\"{disp}\" height=\"{disp}\" data-size=\"{s}\" aria-hidden=\"true\">{outline}\
<g class=\"scale-bar\" data-mm=\"{bar_mm}\"><line x1=\"{x0:.2}\" y1=\"{y0:.2}\" x2=\"{x1:.2}\" y2=\"{y0:.2}\" stroke=\"#fff\" stroke-width=\"3\" vector-effect=\"non-scaling-stroke\"/>\
<text x=\"{x0:.2}\" y=\"{ty:.2}\" font-size=\"{font:.2}\" fill=\"#fff\">{bar_mm} mm</text></g></svg></div>\
<figcaption class=\"muted\">Axial centre plane, {s}×{s} px at {sp} mm ({fov:.0} mm field), {w}; {note}{prov}.</figcaption></figure>",
        b64 = STANDARD.encode(&png),
        x1 = x0 + bar_px,
        ty = y0 - font * 0.5,
        sp = sig(p.spacing_mm),
        fov = field_mm,
        w = esc(&p.window),
        prov = provenance.map(|v| format!(" ({v})")).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::review_page;
    use serde_json::json;

    fn b64(v: &[u8]) -> String {
        STANDARD.encode(v)
    }

    /// A 4×4 patch with a 2×2 mask at rows 1-2, columns 1-2.
    fn small_patch() -> Value {
        let mut mask = vec![0u8; 16];
        for (r, c) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
            mask[r * 4 + c] = 1;
        }
        let img: Vec<u8> = (0..16).map(|i| (i * 16) as u8).collect();
        json!({"size": 4, "spacing_mm": 1.0, "window": {"lower": -1000.0, "upper": 400.0},
               "axial": b64(&img), "mask_axial": b64(&mask)})
    }

    fn nodule(card: &str, label: &str, drivers: Value, review: bool, set: Value) -> Value {
        json!({
            "card_uuid": card, "finding": "Observation/n<1>", "label": label,
            "location": {"body_site": "Right upper lobe", "center_mm": [12.25, -40.0, 101.5]},
            "size": {"mean_diameter_mm": 8.44, "volume_mm3": 310.2},
            "nodule_type": "part-solid",
            "model": {"probability": 0.62, "interval": [0.41, 0.77], "confidence": 0.62,
                      "confidence_level": "low", "prediction_set": set, "review_suggested": review,
                      "radiomics_drivers": drivers},
            "brock": {"probability": 0.081, "inputs": {"age": 64, "sex": "female"}},
            "mayo": null, "mayo_missing": "smoking history <unknown>",
            "lung_rads": {"category": "4A", "management": "3-month LDCT", "inputs": {}},
            "radiomics": {"original_shape_Sphericity": 0.71, "original_firstorder_Energy": 12345678.0},
            "patch": small_patch(),
            "mask_source": {"method": "point-seeded", "threshold_hu": -500.0, "radius_mm": 15.0},
            "assumed": ["male (sex <not> recorded)"]
        })
    }

    fn detail(status: &str, nodules: Vec<Value>, cards: Value) -> Value {
        json!({
            "prediction": {
                "id": "p-9", "service_id": SERVICE_ID, "patient_id": "pat-7",
                "created_at": "2026-12-01T10:00:00Z", "model_id": "autorad-lung", "model_version": "0.1",
                "risk": 0.62, "risk_tier": "high", "confidence": 0.62, "review_suggested": true,
                "input_digest": "00",
                "result": {
                    "status": status, "status_detail": "job <42> queued",
                    "study": {"imaging_study": "ImagingStudy/ct-1", "study_uid": "1.2.3", "series_uid": "1.2.3.4", "started": "2026-11-30T09:00:00Z"},
                    "model": {"id": "autorad-lung", "version": "0.1", "source_label": "LIDC-IDRI <rendered>",
                              "trained_on_rendered_pixels": true, "alpha": 0.1},
                    "nodules": nodules, "warnings": ["SEG 1.2.3 <x> was not used"]
                }
            },
            "cards": cards, "interval": null, "reasons": [], "review_reasons": []
        })
    }

    const OPTS: ReviewOptions<'static> = ReviewOptions {
        can_write: true,
        viewer: "dr",
        saved: false,
    };

    #[test]
    fn a_two_by_two_square_mask_has_four_merged_boundary_segments() {
        let mut mask = vec![0u8; 16];
        for (r, c) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
            mask[r * 4 + c] = 1;
        }
        let o = mask_outline(&mask, 4);
        assert_eq!(o.path, "M1 1H3M1 3H3M1 1V3M3 1V3");
        assert_eq!(o.edges, 8);
        assert_eq!(o.pixels, 4);
        assert_eq!(o.bbox, Some([1, 1, 3, 3]));
    }

    #[test]
    fn the_outline_follows_the_image_border_holes_and_concavities() {
        // Row 0 fully inside along the border; an L shape; empty mask.
        let o = mask_outline(&[1, 1, 0, 0], 2);
        assert_eq!(o.path, "M0 0H2M0 1H2M0 0V1M2 0V1");
        // L: (0,0), (1,0), (1,1): perimeter 8 unit edges.
        let o = mask_outline(&[1, 0, 1, 1], 2);
        assert_eq!(o.edges, 8);
        assert_eq!(o.path, "M0 0H1M1 1H2M0 2H2M0 0V2M1 0V1M2 1V2");
        // A ring of 8 around a hole: outer 12 + inner 4 edges.
        let o = mask_outline(&[1, 1, 1, 1, 0, 1, 1, 1, 1], 3);
        assert_eq!(o.edges, 16);
        assert_eq!(o.pixels, 8);
        let o = mask_outline(&[0; 9], 3);
        assert_eq!((o.path.as_str(), o.edges, o.bbox), ("", 0, None));
    }

    #[test]
    fn the_nodule_page_shows_patch_outline_baselines_and_drivers_in_order() {
        let card = "6b7f6b2e-0d7c-4a3c-9f8e-0c1d2e3f4a5b";
        let drivers = json!([
            {"name": "original_glcm_Idm", "value": 0.31, "contribution": -0.05},
            {"name": "original_shape_Sphericity", "value": 0.71, "contribution": -0.42},
            {"name": "original_firstorder_<b>", "value": 3.0, "contribution": 0.2}
        ]);
        let html = review_page(
            &detail(
                "scored",
                vec![nodule(
                    card,
                    "Nodule <1>",
                    drivers,
                    true,
                    json!(["benign", "malignant"]),
                )],
                json!([{"uuid": card, "card": {"summary": "Nodule 1: 62%"}, "feedback": []}]),
            ),
            &OPTS,
        );
        // The patch: a PNG data URI and the outline of the 2×2 mask.
        assert!(html.contains("src=\"data:image/png;base64,iVBORw0KGgo"));
        assert!(html.contains("d=\"M1 1H3M1 3H3M1 1V3M3 1V3\""));
        assert!(html.contains("data-mask-bbox=\"1 1 3 3\""));
        // 4 px at 1 mm: the scale bar is 1 mm (a quarter of the 4 mm field).
        assert!(html.contains("data-mm=\"1\""), "{html}");
        assert!(html.contains("window -1000 to 400 HU"));
        // Drivers by |contribution|: Sphericity, <b>, Idm.
        let at = |s: &str| html.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(at("original_shape_Sphericity</td>") < at("original_firstorder_&lt;b&gt;"));
        assert!(at("original_firstorder_&lt;b&gt;") < at("original_glcm_Idm"));
        assert!(html.contains("<td>-0.420</td>") && html.contains("<td>+0.200</td>"));
        // Model, review reason, baselines.
        assert!(html.contains("62%") && html.contains("members 41%–77%"));
        assert!(html.contains("{benign, malignant} at α = 0.10"));
        assert!(html.contains("contains both benign and malignant"));
        assert!(html.contains("<strong>8.1%</strong>"), "Brock");
        assert!(html.contains("not computable: smoking history &lt;unknown&gt;"));
        assert!(html.contains("<strong>4A</strong> · 3-month LDCT"));
        assert!(html.contains("8.4 mm mean diameter · 310 mm³"));
        assert!(html.contains("part-solid") && html.contains("Right upper lobe"));
        assert!(html.contains("id=\"rendered-pixels\""));
        assert!(html.contains("(voxels ≥ -500 HU within 15 mm)"));
        assert!(html.contains("<li>male (sex &lt;not&gt; recorded)</li>"));
        assert!(html.contains("<li>SEG 1.2.3 &lt;x&gt; was not used</li>"));
        // Everything from the result escaped.
        for raw in ["Nodule <1>", "n<1>", "<rendered>", "<unknown>", "_<b>"] {
            assert!(!html.contains(raw), "{raw} unescaped");
        }
        assert!(html.contains("Nodule &lt;1&gt;"));
        // Full radiomics, folded, big values in scientific notation.
        assert!(html.contains("<details class=\"radiomics\" id=\"radiomics-1\">"));
        assert!(html.contains("1.235e7"));
        // One verdict form for the nodule's card, with unique ids.
        assert!(html.contains("id=\"verdict-form-1\""));
        assert!(html.contains(&format!("name=\"card\" value=\"{card}\"")));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn every_id_on_a_page_with_two_nodules_is_unique() {
        let (c1, c2) = ("c-1", "c-2");
        let fb = json!([{"received_at": "t", "outcome": "accepted", "override_reason": null}]);
        let html = review_page(
            &detail(
                "scored",
                vec![
                    nodule(c1, "Nodule 1", json!([]), false, json!(["benign"])),
                    nodule(c2, "Nodule 2", json!([]), true, json!([])),
                ],
                json!([
                    {"uuid": c1, "card": {"summary": "one"}, "feedback": fb},
                    {"uuid": c2, "card": {"summary": "two"}, "feedback": fb},
                    {"uuid": "c-3", "card": {"summary": "summary card"}, "feedback": fb}
                ]),
            ),
            &OPTS,
        );
        let mut ids: Vec<&str> = html
            .split(" id=\"")
            .skip(1)
            .map(|s| &s[..s.find('"').unwrap()])
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate ids: {ids:?}");
        assert_eq!(html.matches("class=\"verdict-form\"").count(), 3);
        assert!(html.contains("not suggested: the conformal prediction set at α = 0.10 (90% coverage) is {benign} alone"));
        assert!(html.contains("is empty"));
        assert!(
            html.contains("summary card"),
            "the unmatched card keeps its form"
        );
    }

    #[test]
    fn status_pages_say_plainly_why_there_is_no_nodule() {
        for (status, words) in [
            ("imaging_pending", "still being analysed"),
            ("no_chest_ct", "No chest CT was found"),
            ("no_nodule_findings", "no nodule finding"),
            ("imaging_failed", "analysis of the chest CT failed"),
        ] {
            let html = review_page(&detail(status, vec![], json!([])), &OPTS);
            assert!(
                html.contains(&format!("data-status=\"{status}\"")),
                "{status}"
            );
            assert!(html.contains(words), "{status}");
            assert!(
                html.contains("job &lt;42&gt; queued"),
                "{status}: detail escaped"
            );
            assert!(!html.contains("class=\"nodule\""));
        }
        let html = review_page(&detail("scored", vec![], json!([])), &OPTS);
        assert!(!html.contains("id=\"status\""));
    }

    #[test]
    fn a_malformed_patch_is_reported_not_a_panic() {
        let mut n = nodule("c", "N", json!([]), false, json!(["benign"]));
        n["patch"]["axial"] = json!(b64(&[1, 2, 3]));
        let html = review_page(&detail("scored", vec![n.clone()], json!([])), &OPTS);
        assert!(html.contains("patch.axial holds 3 bytes, expected 4×4 = 16"));
        n["patch"]["axial"] = json!("not base64!");
        let html = review_page(&detail("scored", vec![n.clone()], json!([])), &OPTS);
        assert!(html.contains("patch.axial is not base64"));
        n["patch"]["size"] = json!(100000);
        let html = review_page(&detail("scored", vec![n.clone()], json!([])), &OPTS);
        assert!(html.contains("patch.size must be an integer"));
        n["patch"] = Value::Null;
        n["model"] = Value::Null;
        let html = review_page(&detail("scored", vec![n.clone()], json!([])), &OPTS);
        assert!(html.contains("no patch stored"));
        assert!(html.contains("no model output (baselines only)"));
        assert!(html.contains("No stored card matches this nodule"));
        n["error"] = json!("outside the <CT>");
        n["model_missing"] = json!("nodule model input: radiomics <missing>");
        let html = review_page(&detail("scored", vec![n], json!([])), &OPTS);
        assert!(html.contains("not measured on the CT (outside the &lt;CT&gt;)"));
        assert!(html.contains("no model output (nodule model input: radiomics &lt;missing&gt;)"));
    }

    #[test]
    fn any_field_of_the_wrong_type_still_renders() {
        let base = nodule("c", "N", json!([]), true, json!(["benign", "malignant"]));
        let weird = [
            Value::Null,
            json!("<x>"),
            json!(-1.5),
            json!(1e308),
            json!([1, "a", null]),
            json!({"k": {"deep": [1]}}),
        ];
        let keys: Vec<String> = base.as_object().unwrap().keys().cloned().collect();
        for k in &keys {
            for w in &weird {
                let mut n = base.clone();
                n[k.as_str()] = w.clone();
                let html = review_page(&detail("scored", vec![n], json!([])), &OPTS);
                assert!(html.contains("class=\"nodule\""), "{k} = {w}");
                assert!(!html.contains("<x>"), "{k} = {w} unescaped");
            }
        }
        for k in ["model", "patch", "size", "location"] {
            for sub in base[k].as_object().unwrap().keys() {
                for w in &weird {
                    let mut n = base.clone();
                    n[k][sub.as_str()] = w.clone();
                    let html = review_page(&detail("scored", vec![n], json!([])), &OPTS);
                    assert!(!html.contains("<x>"), "{k}.{sub} = {w} unescaped");
                }
            }
        }
        // The result itself malformed.
        for w in &weird {
            let mut d = detail("scored", vec![], json!([]));
            d["prediction"]["result"] = w.clone();
            let html = review_page(&d, &OPTS);
            assert!(html.contains("id=\"summary\""));
            let mut d = detail("scored", vec![], json!([]));
            d["prediction"]["result"]["nodules"] = w.clone();
            review_page(&d, &OPTS);
        }
    }

    #[test]
    fn a_verdict_lands_back_on_its_nodule() {
        let d = detail(
            "scored",
            vec![
                nodule("c-1", "N1", json!([]), false, json!(["benign"])),
                nodule("c-2", "N2", json!([]), false, json!(["benign"])),
            ],
            json!([]),
        );
        assert_eq!(anchor_for_card(&d, "c-2").as_deref(), Some("nodule-2"));
        assert_eq!(anchor_for_card(&d, "c-9"), None);
        let mut other = d.clone();
        other["prediction"]["service_id"] = json!("cachexia-risk");
        assert_eq!(anchor_for_card(&other, "c-2"), None);
    }

    #[test]
    fn numbers_are_formatted_for_readers() {
        assert_eq!(sig(0.71234), "0.7123");
        assert_eq!(sig(123.456), "123.5");
        assert_eq!(sig(12345678.0), "1.235e7");
        assert_eq!(sig(0.0), "0");
        assert_eq!(sig(-2.5), "-2.5");
        assert_eq!(pct1(0.081), "8.1%");
        assert_eq!(pct1(0.62), "62%");
    }
}
