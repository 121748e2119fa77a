//! Small inline SVG charts (no script, no external assets): a dated line
//! chart for trends, a bar chart, and a calibration plot.

use chrono::NaiveDate;

use super::esc;

const W: f64 = 520.0;
const H: f64 = 200.0;
const L: f64 = 52.0; // left margin (y labels)
const R: f64 = 14.0;
const T: f64 = 24.0; // top margin (the visible title)
const B: f64 = 34.0; // bottom margin (x labels)

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn frame(id: &str, title: &str, body: &str, extra_attrs: &str) -> String {
    format!(
        "<svg id=\"{id}\" class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{t}\" {extra_attrs}><title>{t}</title>\
<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fff\"/>\
<text x=\"{L}\" y=\"14\" font-size=\"12\" font-weight=\"600\">{t}</text>\
<line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{yb}\" stroke=\"#888\"/>\
<line x1=\"{L}\" y1=\"{yb}\" x2=\"{xr}\" y2=\"{yb}\" stroke=\"#888\"/>{body}</svg>",
        id = esc(id),
        t = esc(title),
        yb = H - B,
        xr = W - R,
    )
}

fn y_axis(lo: f64, hi: f64) -> String {
    let mut s = String::new();
    for i in 0..=4 {
        let v = lo + (hi - lo) * f64::from(i) / 4.0;
        let y = H - B - (H - B - T) * f64::from(i) / 4.0;
        s.push_str(&format!(
            "<line x1=\"{L}\" y1=\"{y:.1}\" x2=\"{xr}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
<text x=\"{tx}\" y=\"{ty:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            fmt_num(v),
            xr = W - R,
            tx = L - 4.0,
            ty = y + 3.0,
        ));
    }
    s
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if (hi - lo).abs() < 1e-9 {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    } else {
        let pad = (hi - lo) * 0.1;
        (lo - pad, hi + pad)
    }
}

/// A dated series as a polyline with one circle (class `point`) per value.
/// `data-points` holds the count, so tests can check what was drawn.
pub fn line_chart(id: &str, title: &str, unit: &str, points: &[(NaiveDate, f64)]) -> String {
    if points.is_empty() {
        return frame(
            id,
            title,
            &format!(
                "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">no values</text>",
                W / 2.0,
                H / 2.0
            ),
            "data-points=\"0\"",
        );
    }
    let (d0, d1) = (
        points.iter().map(|p| p.0).min().expect("non-empty"),
        points.iter().map(|p| p.0).max().expect("non-empty"),
    );
    let span = ((d1 - d0).num_days() as f64).max(1.0);
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = padded(lo, hi);
    let x = |d: NaiveDate| {
        if d0 == d1 {
            L + (W - L - R) / 2.0
        } else {
            L + (W - L - R) * ((d - d0).num_days() as f64 / span)
        }
    };
    let y = |v: f64| H - B - (H - B - T) * ((v - lo) / (hi - lo));
    let mut body = y_axis(lo, hi);
    let path: Vec<String> = points
        .iter()
        .map(|(d, v)| format!("{:.1},{:.1}", x(*d), y(*v)))
        .collect();
    body.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"2\" points=\"{}\"/>",
        path.join(" ")
    ));
    for (d, v) in points {
        body.push_str(&format!(
            "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"#1f5fa8\" data-date=\"{d}\" data-value=\"{v}\"><title>{d}: {} {}</title></circle>",
            x(*d),
            y(*v),
            fmt_num(*v),
            esc(unit)
        ));
    }
    body.push_str(&format!(
        "<text x=\"{L}\" y=\"{ty}\" font-size=\"10\">{d0}</text><text x=\"{xr}\" y=\"{ty}\" font-size=\"10\" text-anchor=\"end\">{d1}</text>\
<text x=\"{cx}\" y=\"{ty2}\" font-size=\"10\" text-anchor=\"middle\">{u}</text>",
        ty = H - B + 14.0,
        ty2 = H - 4.0,
        xr = W - R,
        cx = (W + L) / 2.0,
        u = esc(unit),
    ));
    frame(
        id,
        title,
        &body,
        &format!("data-points=\"{}\"", points.len()),
    )
}

/// Bars with labels (class `bar`, `data-value`).
pub fn bar_chart(id: &str, title: &str, bars: &[(String, f64)]) -> String {
    // All-zero bars (a review rate of 0 %) still get a readable 0..1 axis.
    let hi = bars.iter().map(|b| b.1).fold(0.0_f64, f64::max);
    let hi = if hi > 0.0 { hi } else { 1.0 };
    let n = bars.len().max(1) as f64;
    let slot = (W - L - R) / n;
    let mut body = y_axis(0.0, hi);
    for (i, (label, v)) in bars.iter().enumerate() {
        let h = (H - B - T) * (v / hi);
        let x = L + slot * i as f64 + slot * 0.15;
        body.push_str(&format!(
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#4a8c5c\" data-value=\"{v}\"><title>{}: {}</title></rect>",
            H - B - h,
            slot * 0.7,
            esc(label),
            fmt_num(*v)
        ));
        // Label every bar when few, else every few.
        let every = (bars.len() / 8).max(1);
        if i % every == 0 {
            body.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"9\" text-anchor=\"middle\">{}</text>",
                x + slot * 0.35,
                H - B + 12.0,
                esc(label)
            ));
        }
    }
    frame(id, title, &body, &format!("data-bars=\"{}\"", bars.len()))
}

/// Observed rate against mean predicted risk per bin, with the diagonal of
/// perfect calibration.
pub fn calibration_chart(id: &str, title: &str, bins: &[(f64, f64, u64)]) -> String {
    let x = |v: f64| L + (W - L - R) * v.clamp(0.0, 1.0);
    let y = |v: f64| H - B - (H - B - T) * v.clamp(0.0, 1.0);
    let mut body = y_axis(0.0, 1.0);
    body.push_str(&format!(
        "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#bbb\" stroke-dasharray=\"4 3\"/>",
        x(0.0),
        y(0.0),
        x(1.0),
        y(1.0)
    ));
    for (pred, obs, n) in bins {
        body.push_str(&format!(
            "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{:.1}\" fill=\"#a8431f\"><title>predicted {}, observed {} (n={n})</title></circle>",
            x(*pred),
            y(*obs),
            (3.0 + (*n as f64).ln().max(0.0)).min(9.0),
            fmt_num(*pred),
            fmt_num(*obs)
        ));
    }
    body.push_str(&format!(
        "<text x=\"{cx}\" y=\"{ty}\" font-size=\"10\" text-anchor=\"middle\">mean predicted risk</text>",
        cx = (W + L) / 2.0,
        ty = H - 4.0
    ));
    frame(id, title, &body, &format!("data-points=\"{}\"", bins.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_chart_draws_one_point_per_value_and_escapes_text() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let svg = line_chart(
            "trend-weight",
            "Weight <kg>",
            "kg",
            &[
                (d("2026-01-01"), 70.0),
                (d("2026-06-01"), 64.5),
                (d("2026-11-01"), 60.0),
            ],
        );
        assert_eq!(svg.matches("class=\"point\"").count(), 3);
        assert!(svg.contains("data-points=\"3\""));
        assert!(svg.contains("Weight &lt;kg&gt;"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn degenerate_inputs_still_draw() {
        let d = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let svg = line_chart("x", "x", "u", &[(d, 5.0)]);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(line_chart("x", "x", "u", &[]).contains("no values"));
        assert!(!bar_chart("b", "b", &[]).contains("NaN"));
    }
}
