//! Fixed-bin-width discretisation (IBSI 2.6 "fixed bin size", but with
//! pyradiomics' choice of the first edge).
//!
//! pyradiomics (`imageoperations.getBinEdges` + `numpy.digitize`) puts the first
//! edge at `min - (min mod w)` (Python's floor modulo), i.e. the ROI minimum
//! rounded *down to a multiple of w*, not at the minimum itself as IBSI does.
//! Edges are `low + k·w`; a value gets the number of edges ≤ it, so levels
//! start at 1. For integer HU and an integer width this equals
//! `floor(x / w) - floor(min / w) + 1`.

/// Python's `a % b` for floats (the sign follows the divisor).
fn py_mod(a: f64, b: f64) -> f64 {
    let m = a % b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        m + b
    } else {
        m
    }
}

/// Bin edges as numpy builds them: `arange(low, max + 2w, w)`.
#[derive(Debug, Clone)]
pub struct BinEdges {
    low: f64,
    width: f64,
    count: usize,
}

impl BinEdges {
    pub fn new(min: f64, max: f64, width: f64) -> Self {
        let low = min - py_mod(min, width);
        let high = max + 2.0 * width;
        // numpy.arange length: ceil((stop - start) / step).
        let count = ((high - low) / width).ceil().max(1.0) as usize;
        Self { low, width, count }
    }

    #[inline]
    fn edge(&self, k: usize) -> f64 {
        self.low + k as f64 * self.width
    }

    /// `numpy.digitize(x, edges)`: the number of edges ≤ x (1-based level).
    #[inline]
    pub fn level(&self, x: f64) -> usize {
        let mut k = ((x - self.low) / self.width).floor() + 1.0;
        if k < 0.0 {
            k = 0.0;
        }
        let mut k = (k as usize).min(self.count);
        // Guard against rounding in the division: compare with the edges
        // themselves, as digitize does.
        while k < self.count && self.edge(k) <= x {
            k += 1;
        }
        while k > 0 && self.edge(k - 1) > x {
            k -= 1;
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_modulo_follows_the_divisor() {
        assert_eq!(py_mod(-506.0, 25.0), 19.0);
        assert_eq!(py_mod(506.0, 25.0), 6.0);
        assert_eq!(py_mod(-500.0, 25.0), 0.0);
    }

    #[test]
    fn levels_start_at_one_at_the_rounded_down_minimum() {
        // ROI min −506 → first edge −525: −506 is in [−525, −500) → level 1.
        let e = BinEdges::new(-506.0, 106.0, 25.0);
        assert_eq!(e.level(-506.0), 1);
        assert_eq!(e.level(-500.0), 2);
        assert_eq!(e.level(-501.0), 1);
        assert_eq!(e.level(106.0), 26);
        // floor(x/w) − floor(min/w) + 1 for integer data.
        for x in -506..=106 {
            let expect = (x as f64 / 25.0).floor() - (-506f64 / 25.0).floor() + 1.0;
            assert_eq!(e.level(x as f64), expect as usize, "x = {x}");
        }
    }

    #[test]
    fn fractional_widths_use_the_edges_exactly() {
        let e = BinEdges::new(0.1, 1.0, 0.1);
        // Edges 0.0, 0.1, 0.2, … (0.1 − 0.1 % 0.1 may be 0.0 or 0.1 by rounding,
        // either way every value falls into a bin ≥ 1).
        assert!(e.level(0.1) >= 1);
        assert!(e.level(1.0) > e.level(0.5));
    }
}
