//! Binary-classification metrics shared by the models' evaluation reports
//! (`ml::cachexia::evaluate`, `ml::nodule::evaluate`). AUROC itself is
//! `synth::stats::auroc` (the cohort generator reports it too).

/// Expected calibration error over `bins` equal-width probability bins
/// (Guo et al. 2017): the count-weighted mean |mean predicted − observed rate|.
pub fn ece(probs: &[f64], labels: &[bool], bins: usize) -> f64 {
    let n = probs.len().max(1) as f64;
    let mut sum = vec![(0.0, 0.0, 0usize); bins];
    for (p, y) in probs.iter().zip(labels) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        sum[b].0 += p;
        sum[b].1 += f64::from(u8::from(*y));
        sum[b].2 += 1;
    }
    sum.iter()
        .filter(|s| s.2 > 0)
        .map(|(p, y, c)| (*c as f64 / n) * ((p - y) / *c as f64).abs())
        .sum()
}

/// ROC points (FPR, TPR) from the highest score down, ties as one step.
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = v.iter().filter(|x| x.1).count().max(1) as f64;
    let neg = v.iter().filter(|x| !x.1).count().max(1) as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut pts = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            if v[j].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        pts.push((fp / neg, tp / pos));
        i = j;
    }
    pts
}
