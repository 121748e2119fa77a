//! Eigenvalues of small real symmetric matrices: Householder reduction to
//! tridiagonal form, then the implicit QL method with Wilkinson-style shifts
//! (Golub & Van Loan, "Matrix Computations", §8.3; Wilkinson & Reinsch,
//! Handbook for Automatic Computation II). Used for the shape PCA (3×3) and the
//! GLCM maximal correlation coefficient (Ng×Ng).

/// Eigenvalues of the symmetric `n×n` matrix `a` (row-major; only symmetry is
/// assumed, `a` is overwritten), in ascending order.
pub fn symmetric_eigenvalues(a: &mut [f64], n: usize) -> Vec<f64> {
    assert_eq!(a.len(), n * n, "matrix buffer must be n×n");
    if n == 0 {
        return Vec::new();
    }
    let (mut d, mut e) = tridiagonalise(a, n);
    tridiagonal_ql(&mut d, &mut e);
    d.sort_unstable_by(f64::total_cmp);
    d
}

/// Householder reduction; returns the diagonal and the off-diagonal
/// (`e[i]` couples `i` and `i + 1`, `e[n - 1] = 0`).
fn tridiagonalise(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut e = vec![0.0; n];
    let mut v = vec![0.0; n];
    let mut p = vec![0.0; n];
    for k in 0..n.saturating_sub(2) {
        let m = n - k - 1; // size of the trailing block
        let norm = (k + 1..n).map(|i| a[i * n + k].powi(2)).sum::<f64>().sqrt();
        if norm == 0.0 {
            e[k] = 0.0;
            continue;
        }
        let x0 = a[(k + 1) * n + k];
        let alpha = if x0 > 0.0 { -norm } else { norm };
        for i in 0..m {
            v[i] = a[(k + 1 + i) * n + k];
        }
        v[0] -= alpha;
        let vnorm = v[..m].iter().map(|x| x * x).sum::<f64>().sqrt();
        if vnorm == 0.0 {
            e[k] = x0;
            continue;
        }
        for x in &mut v[..m] {
            *x /= vnorm;
        }
        // B ← H B H with H = I − 2vvᵀ, via p = Bv, q = p − (vᵀp)v,
        // B ← B − 2vqᵀ − 2qvᵀ.
        for (i, pi) in p[..m].iter_mut().enumerate() {
            let row = (k + 1 + i) * n + k + 1;
            *pi = (0..m).map(|j| a[row + j] * v[j]).sum();
        }
        let kk: f64 = (0..m).map(|i| v[i] * p[i]).sum();
        for i in 0..m {
            p[i] -= kk * v[i];
        }
        for i in 0..m {
            let row = (k + 1 + i) * n + k + 1;
            for j in 0..m {
                a[row + j] -= 2.0 * (v[i] * p[j] + p[i] * v[j]);
            }
        }
        e[k] = alpha;
    }
    if n >= 2 {
        e[n - 2] = a[(n - 1) * n + (n - 2)];
    }
    let d = (0..n).map(|i| a[i * n + i]).collect();
    (d, e)
}

/// Implicit QL on a symmetric tridiagonal matrix; eigenvalues end up in `d`.
fn tridiagonal_ql(d: &mut [f64], e: &mut [f64]) {
    let n = d.len();
    for l in 0..n {
        let mut iterations = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iterations += 1;
            if iterations > 100 {
                // Not reached for symmetric input; stop rather than spin.
                break;
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0f64, 1.0f64, 0.0f64);
            let mut i = m;
            let mut deflated = false;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    deflated = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
            }
            if deflated {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cyclic Jacobi as an independent reference.
    fn jacobi(mut a: Vec<f64>, n: usize) -> Vec<f64> {
        for _ in 0..100 {
            let off: f64 = (0..n)
                .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
                .map(|(i, j)| a[i * n + j].powi(2))
                .sum();
            if off < 1e-30 {
                break;
            }
            for p in 0..n {
                for q in p + 1..n {
                    let apq = a[p * n + q];
                    if apq.abs() < 1e-300 {
                        continue;
                    }
                    let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                    let t = if theta == 0.0 { 1.0 } else { t };
                    let c = 1.0 / (t * t + 1.0).sqrt();
                    let s = t * c;
                    for k in 0..n {
                        let akp = a[k * n + p];
                        let akq = a[k * n + q];
                        a[k * n + p] = c * akp - s * akq;
                        a[k * n + q] = s * akp + c * akq;
                    }
                    for k in 0..n {
                        let apk = a[p * n + k];
                        let aqk = a[q * n + k];
                        a[p * n + k] = c * apk - s * aqk;
                        a[q * n + k] = s * apk + c * aqk;
                    }
                }
            }
        }
        let mut d: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
        d.sort_unstable_by(f64::total_cmp);
        d
    }

    #[test]
    fn matches_jacobi_on_pseudo_random_matrices() {
        let mut seed = 12345u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        for n in [1usize, 2, 3, 5, 8, 17, 40] {
            let mut a = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..=i {
                    let v = rnd();
                    a[i * n + j] = v;
                    a[j * n + i] = v;
                }
            }
            let got = symmetric_eigenvalues(&mut a.clone(), n);
            let want = jacobi(a, n);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-12, "n={n}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn diagonal_and_degenerate_matrices() {
        let mut a = vec![3.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0];
        assert_eq!(symmetric_eigenvalues(&mut a, 3), vec![1.0, 2.0, 3.0]);
        let mut a = vec![1.0; 16];
        let ev = symmetric_eigenvalues(&mut a, 4);
        assert!((ev[3] - 4.0).abs() < 1e-12);
        assert!(ev[..3].iter().all(|v| v.abs() < 1e-12));
    }
}
