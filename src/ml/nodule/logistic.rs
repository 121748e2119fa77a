//! The radiomics-only baseline of the nodule evaluation: L2-penalised
//! logistic regression on standardised radiomics, fitted by Newton's method
//! (iteratively reweighted least squares) with a Cholesky solve. Full batch
//! and no random start, so a fit is a deterministic function of its rows.
//!
//! The standardiser (mean and population standard deviation per feature) is
//! fitted on the training rows only and travels with the coefficients; a
//! feature constant on the training rows gets weight 0 (its z-score is 0).

use serde::Serialize;

/// Per-feature mean and standard deviation of the training rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standardizer {
    pub mean: Vec<f64>,
    pub sd: Vec<f64>,
}

impl Standardizer {
    pub fn fit(rows: &[&[f64]]) -> Self {
        let d = rows.first().map_or(0, |r| r.len());
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0.0; d];
        for r in rows {
            for (m, v) in mean.iter_mut().zip(r.iter()) {
                *m += v / n;
            }
        }
        let mut sd = vec![0.0; d];
        for r in rows {
            for ((s, v), m) in sd.iter_mut().zip(r.iter()).zip(&mean) {
                *s += (v - m).powi(2) / n;
            }
        }
        let sd = sd.into_iter().map(f64::sqrt).collect();
        Self { mean, sd }
    }

    /// z-scores; 0 for a feature without spread on the training rows.
    pub fn apply(&self, row: &[f64]) -> Vec<f64> {
        row.iter()
            .zip(self.mean.iter().zip(&self.sd))
            .map(|(v, (m, s))| if *s > 1e-12 { (v - m) / s } else { 0.0 })
            .collect()
    }
}

/// A fitted model: `p = σ(bias + w · z(x))`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogisticModel {
    pub standardizer: Standardizer,
    pub weights: Vec<f64>,
    pub bias: f64,
    /// Penalty `λ/2 · |w|²` added to the summed log loss (bias unpenalised).
    pub lambda: f64,
    pub iterations: usize,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Solves `a x = b` for a symmetric positive definite `a` (`n × n`,
/// row-major) by Cholesky; `None` when `a` is not positive definite.
fn cholesky_solve(a: &[f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * n + i];
    }
    Some(x)
}

impl LogisticModel {
    /// Fits on `rows` (raw features) and binary `labels` with penalty
    /// `lambda` (> 0 keeps the Hessian positive definite, also on separable
    /// data). Newton steps until the largest coefficient change is below
    /// 1e-8 (at most 100 steps).
    pub fn fit(rows: &[&[f64]], labels: &[bool], lambda: f64) -> Result<Self, String> {
        if rows.is_empty() || rows.len() != labels.len() {
            return Err(format!(
                "{} rows and {} labels: need the same, non-zero number",
                rows.len(),
                labels.len()
            ));
        }
        if !(lambda.is_finite() && lambda > 0.0) {
            return Err(format!("lambda must be positive, got {lambda}"));
        }
        let d = rows[0].len();
        if rows.iter().any(|r| r.len() != d) {
            return Err("rows of different lengths".into());
        }
        if rows.iter().any(|r| r.iter().any(|v| !v.is_finite())) {
            return Err("a feature is not finite".into());
        }
        let standardizer = Standardizer::fit(rows);
        let z: Vec<Vec<f64>> = rows.iter().map(|r| standardizer.apply(r)).collect();
        // Parameters: [bias, w_1 … w_d].
        let n = d + 1;
        let mut beta = vec![0.0; n];
        let mut iterations = 0;
        for it in 0..100 {
            iterations = it + 1;
            let mut grad = vec![0.0; n];
            let mut hess = vec![0.0; n * n];
            for (x, &y) in z.iter().zip(labels) {
                let eta = beta[0] + x.iter().zip(&beta[1..]).map(|(a, b)| a * b).sum::<f64>();
                let p = sigmoid(eta);
                let r = p - f64::from(u8::from(y));
                let w = (p * (1.0 - p)).max(1e-12);
                let xe = |i: usize| if i == 0 { 1.0 } else { x[i - 1] };
                for i in 0..n {
                    let xi = xe(i);
                    grad[i] += r * xi;
                    let wi = w * xi;
                    for j in 0..=i {
                        hess[i * n + j] += wi * xe(j);
                    }
                }
            }
            for i in 1..n {
                grad[i] += lambda * beta[i];
                hess[i * n + i] += lambda;
            }
            // The bias is unpenalised; a tiny ridge keeps the solve stable
            // when every prediction saturates.
            hess[0] += 1e-9;
            for i in 0..n {
                for j in 0..i {
                    hess[j * n + i] = hess[i * n + j];
                }
            }
            let step = cholesky_solve(&hess, &grad, n)
                .ok_or_else(|| "the Hessian is not positive definite".to_string())?;
            let mut max_change = 0.0f64;
            for (b, s) in beta.iter_mut().zip(&step) {
                *b -= s;
                max_change = max_change.max(s.abs());
            }
            if max_change < 1e-8 {
                break;
            }
        }
        if beta.iter().any(|b| !b.is_finite()) {
            return Err("the fit diverged".into());
        }
        Ok(Self {
            standardizer,
            bias: beta[0],
            weights: beta[1..].to_vec(),
            lambda,
            iterations,
        })
    }

    pub fn predict(&self, row: &[f64]) -> f64 {
        let z = self.standardizer.apply(row);
        sigmoid(self.bias + z.iter().zip(&self.weights).map(|(a, b)| a * b).sum::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        // [[4, 2], [2, 3]] x = [2, 1] → x = [0.5, 0].
        let x = cholesky_solve(&[4.0, 2.0, 2.0, 3.0], &[2.0, 1.0], 2).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
        assert!(cholesky_solve(&[1.0, 2.0, 2.0, 1.0], &[1.0, 1.0], 2).is_none());
    }

    #[test]
    fn beats_chance_on_a_separable_toy_set_and_is_deterministic() {
        // Label = x0 + 0.5 x1 > 10, a constant third feature, a noise-free
        // grid (separable): the penalised fit must rank the classes apart.
        let mut rows = vec![];
        let mut labels = vec![];
        for i in 0..20 {
            for j in 0..10 {
                let x = vec![i as f64, j as f64 * 2.0, 7.0];
                labels.push(x[0] + 0.5 * x[1] > 10.0);
                rows.push(x);
            }
        }
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let m = LogisticModel::fit(&refs, &labels, 1.0).unwrap();
        let again = LogisticModel::fit(&refs, &labels, 1.0).unwrap();
        assert_eq!(m, again);
        assert_eq!(m.weights[2], 0.0, "a constant feature gets no weight");
        assert!(m.weights[0] > 0.0 && m.weights[1] > 0.0, "{:?}", m.weights);
        let correct = refs
            .iter()
            .zip(&labels)
            .filter(|(r, y)| (m.predict(r) >= 0.5) == **y)
            .count();
        assert!(correct as f64 / refs.len() as f64 > 0.95, "{correct}/200");
        let scores: Vec<(f64, bool)> = refs
            .iter()
            .map(|r| m.predict(r))
            .zip(labels.iter().copied())
            .collect();
        assert!(crate::synth::stats::auroc(&scores).unwrap() > 0.99);
        // A stronger penalty shrinks the weights.
        let strong = LogisticModel::fit(&refs, &labels, 1000.0).unwrap();
        assert!(strong.weights[0].abs() < m.weights[0].abs());
    }

    #[test]
    fn refuses_bad_inputs() {
        let r = [1.0, 2.0];
        assert!(LogisticModel::fit(&[&r], &[true, false], 1.0).is_err());
        assert!(LogisticModel::fit(&[&r], &[true], 0.0).is_err());
        let nan = [f64::NAN, 1.0];
        assert!(LogisticModel::fit(&[&r, &nan], &[true, false], 1.0).is_err());
    }
}
