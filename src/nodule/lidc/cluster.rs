//! Grouping the readers' annotations of one physical nodule.
//!
//! The rule is pylidc's `Scan.cluster_annotations` with its defaults
//! (metric `min`, `tol = slice_thickness`, `factor = 0.9`, `min_tol = 0.1`):
//!
//! 1. The distance between two annotations is the smallest Euclidean
//!    distance between their contour vertices, in **index** coordinates
//!    `(i, j, k)` (row, column, slice index; pylidc does not scale by the
//!    spacing, so the tolerance in "mm" is really compared with pixel and
//!    slice steps — we keep that to reproduce its grouping).
//! 2. Annotations closer than or at `tol` are linked; nodules are the
//!    connected components of that graph.
//! 3. While a component holds more than 4 annotations (LIDC had 4 readers),
//!    `tol` shrinks by the factor 0.9 and the graph is rebuilt; if `tol`
//!    would drop below 0.1 the last grouping is kept.
//! 4. Nodules are ordered by the mean slice index of their annotations'
//!    centroids (ties keep component order).
//!
//! Since `tol` only shrinks, a pair further apart than the initial `tol` can
//! never be linked: such distances are not computed exactly (bounding boxes
//! prove them too large), and the exact minimum of a close pair is searched
//! slice by slice and row by row with lower-bound pruning instead of over
//! all vertex pairs (the same minimum, found without the quadratic scan that
//! took ~9 min over the database in a debug build).

use super::{Annotation, LidcError, Scan};

pub const FACTOR: f64 = 0.9;
pub const MIN_TOL: f64 = 0.1;
/// LIDC-IDRI had four readers per scan.
pub const MAX_READERS: usize = 4;

fn bbox(points: &[[i32; 3]]) -> ([i32; 3], [i32; 3]) {
    let mut lo = [i32::MAX; 3];
    let mut hi = [i32::MIN; 3];
    for p in points {
        for a in 0..3 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    (lo, hi)
}

/// `b`'s vertices bucketed by slice `k`, each bucket sorted by `(i, j)`, so
/// a nearest-vertex search visits only the slices and rows that can still
/// beat the best distance found so far.
struct SliceIndex {
    /// `(k, points of that slice sorted by (i, j))`, ascending `k`.
    slices: Vec<(i32, Vec<[i32; 2]>)>,
}

impl SliceIndex {
    fn new(points: &[[i32; 3]]) -> Self {
        let mut sorted: Vec<[i32; 3]> = points.to_vec();
        sorted.sort_unstable_by_key(|p| (p[2], p[0], p[1]));
        let mut slices: Vec<(i32, Vec<[i32; 2]>)> = Vec::new();
        for p in sorted {
            match slices.last_mut() {
                Some((k, v)) if *k == p[2] => v.push([p[0], p[1]]),
                _ => slices.push((p[2], vec![[p[0], p[1]]])),
            }
        }
        Self { slices }
    }

    /// Smallest squared distance from `p` to any indexed vertex when it is
    /// below `best` (else `best`). Exact: a candidate is skipped only when a
    /// lower bound of its distance (its slice gap, then its row gap) already
    /// reaches `best`.
    fn nearest_sq(&self, p: [i32; 3], mut best: i64) -> i64 {
        let start = self.slices.partition_point(|(k, _)| *k < p[2]);
        let visit = |s: &[[i32; 2]], dk2: i64, best: &mut i64| {
            let pos = s.partition_point(|q| q[0] < p[0]);
            for q in &s[pos..] {
                let di = i64::from(q[0] - p[0]);
                if dk2 + di * di >= *best {
                    break;
                }
                let dj = i64::from(q[1] - p[1]);
                *best = (*best).min(dk2 + di * di + dj * dj);
            }
            for q in s[..pos].iter().rev() {
                let di = i64::from(p[0] - q[0]);
                if dk2 + di * di >= *best {
                    break;
                }
                let dj = i64::from(q[1] - p[1]);
                *best = (*best).min(dk2 + di * di + dj * dj);
            }
        };
        // Slices at and above p's, then below, each walk stopping once the
        // slice gap alone reaches `best`.
        for (k, s) in &self.slices[start..] {
            let dk = i64::from(k - p[2]);
            if dk * dk >= best {
                break;
            }
            visit(s, dk * dk, &mut best);
        }
        for (k, s) in self.slices[..start].iter().rev() {
            let dk = i64::from(p[2] - k);
            if dk * dk >= best {
                break;
            }
            visit(s, dk * dk, &mut best);
        }
        best
    }
}

/// Smallest vertex distance, or `None` when it certainly exceeds `tol`.
///
/// Only squared distances up to `limit = ceil(tol²) + 1` are searched: a
/// pair further apart can never be linked (tol only shrinks), and when the
/// true minimum is within `limit` the search returns it exactly, so the
/// final `d <= tol` test is the same comparison as an all-pairs scan.
pub(crate) fn min_distance_within(a: &[[i32; 3]], b: &[[i32; 3]], tol: f64) -> Option<f64> {
    let (alo, ahi) = bbox(a);
    let (blo, bhi) = bbox(b);
    let mut gap2 = 0.0;
    for ax in 0..3 {
        let g = (blo[ax] - ahi[ax]).max(alo[ax] - bhi[ax]).max(0);
        gap2 += f64::from(g) * f64::from(g);
    }
    if gap2 > tol * tol {
        return None;
    }
    let limit = (tol * tol).ceil() as i64 + 1;
    let index = SliceIndex::new(b);
    let mut best = limit + 1;
    for p in a {
        best = index.nearest_sq(*p, best);
        if best == 0 {
            break;
        }
    }
    if best > limit {
        return None;
    }
    let d = (best as f64).sqrt();
    (d <= tol).then_some(d)
}

/// All-pairs reference for the tests: the smallest vertex distance.
#[cfg(test)]
pub(crate) fn min_distance_all_pairs(a: &[[i32; 3]], b: &[[i32; 3]]) -> f64 {
    let mut best = i64::MAX;
    for p in a {
        for q in b {
            let d: i64 = (0..3)
                .map(|ax| {
                    let d = i64::from(p[ax] - q[ax]);
                    d * d
                })
                .sum();
            best = best.min(d);
        }
    }
    (best as f64).sqrt()
}

/// Connected components, labelled in order of their first member (as
/// scipy's `connected_components`).
fn components(n: usize, linked: impl Fn(usize, usize) -> bool) -> Vec<Vec<usize>> {
    let mut label = vec![usize::MAX; n];
    let mut out: Vec<Vec<usize>> = Vec::new();
    for start in 0..n {
        if label[start] != usize::MAX {
            continue;
        }
        let id = out.len();
        label[start] = id;
        let mut stack = vec![start];
        let mut members = vec![];
        while let Some(u) = stack.pop() {
            members.push(u);
            for (v, lab) in label.iter_mut().enumerate() {
                if *lab == usize::MAX && linked(u, v) {
                    *lab = id;
                    stack.push(v);
                }
            }
        }
        members.sort_unstable();
        out.push(members);
    }
    out
}

/// Groups `anns` (one scan's annotations, in id order) into nodules; returns
/// indices into `anns`.
pub fn cluster_annotations(
    scan: &Scan,
    anns: &[&Annotation],
) -> Result<Vec<Vec<usize>>, LidcError> {
    let n = anns.len();
    let points: Vec<Vec<[i32; 3]>> = anns.iter().map(|a| a.contours_matrix()).collect();
    for (a, p) in anns.iter().zip(&points) {
        if p.is_empty() {
            return Err(LidcError::EmptyAnnotation {
                annotation_id: a.id,
            });
        }
    }
    let tol0 = scan.slice_thickness;
    let mut dist = vec![f64::INFINITY; n * n];
    for i in 0..n {
        dist[i * n + i] = 0.0;
        for j in i + 1..n {
            if let Some(d) = min_distance_within(&points[i], &points[j], tol0) {
                dist[i * n + j] = d;
                dist[j * n + i] = d;
            }
        }
    }
    let mut tol = tol0;
    let mut groups = components(n, |u, v| dist[u * n + v] <= tol);
    while groups.iter().any(|g| g.len() > MAX_READERS) {
        let next = tol * FACTOR;
        if next < MIN_TOL {
            break;
        }
        tol = next;
        groups = components(n, |u, v| dist[u * n + v] <= tol);
    }
    // Order by the mean centroid slice index (mean k of each annotation's
    // vertices, averaged over the group); a stable sort as Python's.
    let mean_k = |p: &[[i32; 3]]| p.iter().map(|q| f64::from(q[2])).sum::<f64>() / p.len() as f64;
    let key = |g: &Vec<usize>| g.iter().map(|&i| mean_k(&points[i])).sum::<f64>() / g.len() as f64;
    groups.sort_by(|a, b| key(a).total_cmp(&key(b)));
    Ok(groups)
}
