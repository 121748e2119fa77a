//! Body composition on one axial CT slice (usually at the third lumbar
//! vertebra, L3): skeletal muscle area (SMA), skeletal muscle index (SMI),
//! mean muscle attenuation, visceral (VAT) and subcutaneous (SAT) fat areas.
//!
//! L3 SMA/SMI is the reference CT measure of sarcopenia in cancer cachexia
//! (Mourtzakis et al., Appl Physiol Nutr Metab 2008; Prado et al., Lancet
//! Oncol 2008; Fearon et al., Lancet Oncol 2011 consensus). The HU ranges are
//! the ones those papers use: muscle −29..150, subcutaneous and intermuscular
//! fat −190..−30, visceral fat −150..−50.
//!
//! The masks come from a [`TissueSegmenter`]. [`ThresholdSegmenter`] is the
//! classical threshold-only method; **it overcounts muscle**: bowel wall,
//! liver, kidneys, pancreas and vessels share the muscle HU range, and
//! everything in that range inside the abdominal wall is counted. It is a
//! baseline and a fallback; a learned segmenter implementing the same trait
//! should replace it (see `docs/imaging.md`). Slice selection (which z is L3)
//! is the caller's.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::Volume;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyCompositionError {
    #[error("the slice is {rows}×{cols} but holds {len} values")]
    SizeMismatch {
        rows: usize,
        cols: usize,
        len: usize,
    },
    #[error("invalid pixel spacing {0:?}")]
    InvalidSpacing([f64; 2]),
    #[error("slice {z} is outside the volume (0..{depth})")]
    SliceOutOfRange { z: usize, depth: usize },
    #[error("height {0} m is not plausible (expected 0.5..2.5 m)")]
    InvalidHeight(f64),
    #[error("the segmenter returned masks of the wrong size")]
    MaskSizeMismatch,
    #[error("segmentation failed: {0}")]
    Segmenter(String),
}

/// One axial slice in HU with its pixel spacing.
#[derive(Debug, Clone, Copy)]
pub struct AxialSlice<'a> {
    hu: &'a [f32],
    rows: usize,
    cols: usize,
    /// (row spacing, column spacing) mm, as DICOM PixelSpacing.
    spacing: [f64; 2],
}

impl<'a> AxialSlice<'a> {
    pub fn new(
        hu: &'a [f32],
        rows: usize,
        cols: usize,
        pixel_spacing_mm: [f64; 2],
    ) -> Result<Self, BodyCompositionError> {
        if hu.len() != rows * cols || rows == 0 || cols == 0 {
            return Err(BodyCompositionError::SizeMismatch {
                rows,
                cols,
                len: hu.len(),
            });
        }
        if pixel_spacing_mm
            .iter()
            .any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(BodyCompositionError::InvalidSpacing(pixel_spacing_mm));
        }
        Ok(Self {
            hu,
            rows,
            cols,
            spacing: pixel_spacing_mm,
        })
    }

    /// Slice `z` of an axial HU volume.
    pub fn from_volume(volume: &'a Volume<f32>, z: usize) -> Result<Self, BodyCompositionError> {
        let [nx, ny, nz] = volume.dims;
        if z >= nz {
            return Err(BodyCompositionError::SliceOutOfRange { z, depth: nz });
        }
        Self::new(
            &volume.data[z * nx * ny..(z + 1) * nx * ny],
            ny,
            nx,
            [volume.spacing[1], volume.spacing[0]],
        )
    }

    pub fn hu(&self) -> &'a [f32] {
        self.hu
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// (row spacing, column spacing) mm.
    pub fn pixel_spacing_mm(&self) -> [f64; 2] {
        self.spacing
    }
    fn pixel_area_mm2(&self) -> f64 {
        self.spacing[0] * self.spacing[1]
    }
}

/// Per-pixel tissue masks, row-major like the slice.
#[derive(Debug, Clone, PartialEq)]
pub struct TissueMasks {
    pub body: Vec<bool>,
    pub muscle: Vec<bool>,
    pub subcutaneous_fat: Vec<bool>,
    pub visceral_fat: Vec<bool>,
}

/// Turns a slice into tissue masks. Implemented by [`ThresholdSegmenter`]
/// and meant to be implemented by a learned model.
pub trait TissueSegmenter: Send + Sync {
    /// Recorded with each result, e.g. `threshold-v1`.
    fn name(&self) -> &str;
    fn segment(&self, slice: &AxialSlice<'_>) -> Result<TissueMasks, BodyCompositionError>;
}

/// Measurements on one slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BodyComposition {
    /// Skeletal muscle area, cm².
    pub sma_cm2: f64,
    /// SMA / height², cm²/m² (needs height).
    pub smi_cm2_per_m2: Option<f64>,
    /// Mean HU of the muscle mask (myosteatosis marker); `None` if no muscle.
    pub muscle_mean_hu: Option<f64>,
    pub vat_cm2: f64,
    pub sat_cm2: f64,
    pub body_area_cm2: f64,
    pub segmenter: String,
}

/// Segment `slice` and measure it. `height_m` gives SMI.
pub fn body_composition(
    slice: &AxialSlice<'_>,
    segmenter: &dyn TissueSegmenter,
    height_m: Option<f64>,
) -> Result<BodyComposition, BodyCompositionError> {
    let masks = segmenter.segment(slice)?;
    let mut m = measure(slice, &masks, height_m)?;
    m.segmenter = segmenter.name().to_owned();
    Ok(m)
}

/// Areas and muscle attenuation from given masks.
pub fn measure(
    slice: &AxialSlice<'_>,
    masks: &TissueMasks,
    height_m: Option<f64>,
) -> Result<BodyComposition, BodyCompositionError> {
    let n = slice.rows * slice.cols;
    if [
        &masks.body,
        &masks.muscle,
        &masks.subcutaneous_fat,
        &masks.visceral_fat,
    ]
    .iter()
    .any(|m| m.len() != n)
    {
        return Err(BodyCompositionError::MaskSizeMismatch);
    }
    if let Some(h) = height_m
        && !(h.is_finite() && (0.5..=2.5).contains(&h))
    {
        return Err(BodyCompositionError::InvalidHeight(h));
    }
    let cm2 = slice.pixel_area_mm2() / 100.0;
    let count = |m: &[bool]| m.iter().filter(|v| **v).count() as f64;
    let (mut sum, mut cnt) = (0.0f64, 0usize);
    for (hu, _) in slice.hu.iter().zip(&masks.muscle).filter(|(_, m)| **m) {
        sum += f64::from(*hu);
        cnt += 1;
    }
    let sma = count(&masks.muscle) * cm2;
    Ok(BodyComposition {
        sma_cm2: sma,
        smi_cm2_per_m2: height_m.map(|h| sma / (h * h)),
        muscle_mean_hu: (cnt > 0).then(|| sum / cnt as f64),
        vat_cm2: count(&masks.visceral_fat) * cm2,
        sat_cm2: count(&masks.subcutaneous_fat) * cm2,
        body_area_cm2: count(&masks.body) * cm2,
        segmenter: String::new(),
    })
}

/// Threshold-only segmentation (see the module docs for what it gets wrong).
///
/// 1. Body: HU > `body_threshold_hu`, largest 4-connected component, holes
///    (bowel gas, lungs) filled.
/// 2. Muscle: body pixels in `muscle_hu`, more than `skin_margin_mm` inside
///    the body outline (skin is in the muscle range), in 8-connected
///    components of at least `min_muscle_component_mm2` (drops vessels and
///    septa in the subcutaneous fat).
/// 3. SAT vs VAT: the abdominal-wall muscle encloses the visceral cavity but
///    is often not a closed ring (linea alba, thin obliques), so the inner
///    region is the **convex hull of the muscle**: fat outside it is
///    subcutaneous (`sat_hu`), fat inside it is visceral (`vat_hu`). The hull
///    also takes in the posterior subcutaneous fat lying in the concavity
///    beside the spine, counting it as visceral; and intermuscular fat is
///    counted with VAT when inside the hull (IMAT is not separated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdSegmenter {
    pub body_threshold_hu: f32,
    pub muscle_hu: (f32, f32),
    pub sat_hu: (f32, f32),
    pub vat_hu: (f32, f32),
    pub skin_margin_mm: f64,
    pub min_muscle_component_mm2: f64,
}

impl Default for ThresholdSegmenter {
    fn default() -> Self {
        Self {
            body_threshold_hu: -500.0,
            muscle_hu: (-29.0, 150.0),
            sat_hu: (-190.0, -30.0),
            vat_hu: (-150.0, -50.0),
            skin_margin_mm: 3.0,
            min_muscle_component_mm2: 50.0,
        }
    }
}

impl TissueSegmenter for ThresholdSegmenter {
    fn name(&self) -> &str {
        "threshold-v1"
    }

    fn segment(&self, slice: &AxialSlice<'_>) -> Result<TissueMasks, BodyCompositionError> {
        let (rows, cols) = (slice.rows, slice.cols);
        let hu = slice.hu;
        let in_range = |v: f32, r: (f32, f32)| v >= r.0 && v <= r.1;

        let above: Vec<bool> = hu.iter().map(|v| *v > self.body_threshold_hu).collect();
        let body = fill_holes(&largest_component(&above, rows, cols), rows, cols);

        let depth = distance_inside(&body, rows, cols, slice.spacing);
        let candidates: Vec<bool> = (0..rows * cols)
            .map(|i| body[i] && depth[i] > self.skin_margin_mm && in_range(hu[i], self.muscle_hu))
            .collect();
        let min_px = (self.min_muscle_component_mm2 / slice.pixel_area_mm2()).ceil() as usize;
        let muscle = drop_small_components(&candidates, rows, cols, min_px.max(1));

        let hull = convex_hull_rows(&muscle, rows, cols);
        let mut sat = vec![false; rows * cols];
        let mut vat = vec![false; rows * cols];
        for (y, span) in hull.iter().enumerate() {
            for x in 0..cols {
                let i = y * cols + x;
                if !body[i] || muscle[i] {
                    continue;
                }
                let inside = span.is_some_and(|(lo, hi)| (x as f64) >= lo && (x as f64) <= hi);
                if inside {
                    vat[i] = in_range(hu[i], self.vat_hu);
                } else {
                    sat[i] = in_range(hu[i], self.sat_hu);
                }
            }
        }
        Ok(TissueMasks {
            body,
            muscle,
            subcutaneous_fat: sat,
            visceral_fat: vat,
        })
    }
}

const N4: [(isize, isize); 4] = [(1, 0), (-1, 0), (0, 1), (0, -1)];
const N8: [(isize, isize); 8] = [
    (1, 0),
    (-1, 0),
    (0, 1),
    (0, -1),
    (1, 1),
    (1, -1),
    (-1, 1),
    (-1, -1),
];

/// Label connected components of `mask`; returns labels (0 = background)
/// and the size of each label (index = label).
fn components(
    mask: &[bool],
    rows: usize,
    cols: usize,
    nbh: &[(isize, isize)],
) -> (Vec<u32>, Vec<usize>) {
    let mut label = vec![0u32; mask.len()];
    let mut sizes = vec![0usize];
    let mut queue = VecDeque::new();
    for start in 0..mask.len() {
        if !mask[start] || label[start] != 0 {
            continue;
        }
        let id = sizes.len() as u32;
        let mut size = 0;
        label[start] = id;
        queue.push_back(start);
        while let Some(i) = queue.pop_front() {
            size += 1;
            let (y, x) = ((i / cols) as isize, (i % cols) as isize);
            for (dy, dx) in nbh {
                let (ny, nx) = (y + dy, x + dx);
                if ny < 0 || nx < 0 || ny >= rows as isize || nx >= cols as isize {
                    continue;
                }
                let j = ny as usize * cols + nx as usize;
                if mask[j] && label[j] == 0 {
                    label[j] = id;
                    queue.push_back(j);
                }
            }
        }
        sizes.push(size);
    }
    (label, sizes)
}

fn largest_component(mask: &[bool], rows: usize, cols: usize) -> Vec<bool> {
    let (label, sizes) = components(mask, rows, cols, &N4);
    let Some((best, _)) = sizes.iter().enumerate().skip(1).max_by_key(|(_, s)| **s) else {
        return vec![false; mask.len()];
    };
    label.iter().map(|l| *l == best as u32).collect()
}

fn drop_small_components(mask: &[bool], rows: usize, cols: usize, min: usize) -> Vec<bool> {
    let (label, sizes) = components(mask, rows, cols, &N8);
    label
        .iter()
        .map(|l| *l != 0 && sizes[*l as usize] >= min)
        .collect()
}

/// Everything not reachable from the image border through background
/// (4-connected) belongs to the object.
fn fill_holes(mask: &[bool], rows: usize, cols: usize) -> Vec<bool> {
    let mut outside = vec![false; mask.len()];
    let mut queue = VecDeque::new();
    for y in 0..rows {
        for x in 0..cols {
            if (y == 0 || x == 0 || y == rows - 1 || x == cols - 1) && !mask[y * cols + x] {
                outside[y * cols + x] = true;
                queue.push_back(y * cols + x);
            }
        }
    }
    while let Some(i) = queue.pop_front() {
        let (y, x) = ((i / cols) as isize, (i % cols) as isize);
        for (dy, dx) in N4 {
            let (ny, nx) = (y + dy, x + dx);
            if ny < 0 || nx < 0 || ny >= rows as isize || nx >= cols as isize {
                continue;
            }
            let j = ny as usize * cols + nx as usize;
            if !mask[j] && !outside[j] {
                outside[j] = true;
                queue.push_back(j);
            }
        }
    }
    outside.iter().map(|o| !o).collect()
}

/// Chamfer (3×3, two-pass) distance in mm from each object pixel to the
/// nearest background pixel or image edge, with anisotropic spacing.
/// Exact along rows and columns, within ~8 % on diagonals-ish directions,
/// which is plenty for a few-millimetre skin margin.
fn distance_inside(mask: &[bool], rows: usize, cols: usize, spacing: [f64; 2]) -> Vec<f64> {
    let (dy, dx) = (spacing[0], spacing[1]);
    let dd = dx.hypot(dy);
    let mut d: Vec<f64> = mask
        .iter()
        .map(|m| if *m { f64::INFINITY } else { 0.0 })
        .collect();
    let at = |y: isize, x: isize| -> Option<usize> {
        (y >= 0 && x >= 0 && y < rows as isize && x < cols as isize)
            .then(|| y as usize * cols + x as usize)
    };
    let forward = [(-1, -1, dd), (-1, 0, dy), (-1, 1, dd), (0, -1, dx)];
    let backward = [(1, 1, dd), (1, 0, dy), (1, -1, dd), (0, 1, dx)];
    for y in 0..rows as isize {
        for x in 0..cols as isize {
            let i = y as usize * cols + x as usize;
            if d[i] == 0.0 {
                continue;
            }
            for (oy, ox, w) in forward {
                // Outside the image counts as background.
                let v = at(y + oy, x + ox).map_or(0.0, |j| d[j]) + w;
                d[i] = d[i].min(v);
            }
        }
    }
    for y in (0..rows as isize).rev() {
        for x in (0..cols as isize).rev() {
            let i = y as usize * cols + x as usize;
            if d[i] == 0.0 {
                continue;
            }
            for (oy, ox, w) in backward {
                let v = at(y + oy, x + ox).map_or(0.0, |j| d[j]) + w;
                d[i] = d[i].min(v);
            }
        }
    }
    d
}

/// For each row, the x interval covered by the convex hull of the mask's
/// pixel centres (`None` outside the hull's vertical extent).
fn convex_hull_rows(mask: &[bool], rows: usize, cols: usize) -> Vec<Option<(f64, f64)>> {
    // Leftmost and rightmost pixel of each row are enough to span the hull.
    let mut pts: Vec<(f64, f64)> = Vec::new();
    for y in 0..rows {
        let row = &mask[y * cols..(y + 1) * cols];
        if let (Some(l), Some(r)) = (row.iter().position(|v| *v), row.iter().rposition(|v| *v)) {
            pts.push((l as f64, y as f64));
            if r != l {
                pts.push((r as f64, y as f64));
            }
        }
    }
    let hull = monotone_chain(pts);
    let mut out = vec![None; rows];
    if hull.is_empty() {
        return out;
    }
    let (ymin, ymax) = hull.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    for (y, o) in out.iter_mut().enumerate() {
        let yf = y as f64;
        if yf < ymin || yf > ymax {
            continue;
        }
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        let k = hull.len();
        for e in 0..k {
            let (a, b) = (hull[e], hull[(e + 1) % k]);
            if (a.1 - yf) * (b.1 - yf) > 0.0 {
                continue;
            }
            if (a.1 - b.1).abs() < 1e-12 {
                lo = lo.min(a.0.min(b.0));
                hi = hi.max(a.0.max(b.0));
            } else {
                let t = (yf - a.1) / (b.1 - a.1);
                let x = a.0 + t * (b.0 - a.0);
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
        if lo <= hi {
            // Half a pixel of slack absorbs rounding at vertices.
            *o = Some((lo - 1e-9, hi + 1e-9));
        }
    }
    out
}

/// Andrew's monotone chain; returns the hull counter-clockwise without
/// repeating the first point (a single point or a segment for degenerate input).
fn monotone_chain(mut pts: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    let cross = |o: (f64, f64), a: (f64, f64), b: (f64, f64)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut lower: Vec<(f64, f64)> = Vec::new();
    for p in &pts {
        while lower.len() >= 2 && cross(lower[lower.len() - 2], lower[lower.len() - 1], *p) <= 0.0 {
            lower.pop();
        }
        lower.push(*p);
    }
    let mut upper: Vec<(f64, f64)> = Vec::new();
    for p in pts.iter().rev() {
        while upper.len() >= 2 && cross(upper[upper.len() - 2], upper[upper.len() - 1], *p) <= 0.0 {
            upper.pop();
        }
        upper.push(*p);
    }
    lower.pop();
    upper.pop();
    lower.extend(upper);
    lower
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    const ROWS: usize = 300;
    const COLS: usize = 340;
    /// (row, column) spacing: anisotropic on purpose.
    const SP: [f64; 2] = [0.8, 0.7];
    /// Phantom centre, mm from the first pixel centre.
    const C: (f64, f64) = (120.0, 115.0);

    struct Phantom {
        hu: Vec<f32>,
    }

    fn inside(x_mm: f64, y_mm: f64, a: f64, b: f64) -> bool {
        ((x_mm - C.0) / a).powi(2) + ((y_mm - C.1) / b).powi(2) <= 1.0
    }

    /// Ramanujan's perimeter approximation.
    fn perimeter(a: f64, b: f64) -> f64 {
        PI * (3.0 * (a + b) - ((3.0 * a + b) * (a + 3.0 * b)).sqrt())
    }

    // Ellipses (semi-axes x, y in mm), outermost first.
    const BODY: (f64, f64) = (110.0, 85.0);
    const SKIN: f64 = 1.5;
    const WALL_OUT: (f64, f64) = (95.0, 70.0);
    const WALL_IN: (f64, f64) = (80.0, 55.0);
    const GAS: (f64, f64, f64) = (140.0, 110.0, 10.0); // x, y, radius

    /// Air, skin (+50 HU) 1.5 mm thick, subcutaneous fat (−100), a muscle
    /// ring (left half 30 HU, right half 60 HU), visceral fat (−100) and a
    /// bowel-gas bubble (−1000) inside.
    fn phantom(gap_mm: f64) -> Phantom {
        let mut hu = vec![-1000.0f32; ROWS * COLS];
        for r in 0..ROWS {
            for c in 0..COLS {
                let (x, y) = (c as f64 * SP[1], r as f64 * SP[0]);
                let v = if !inside(x, y, BODY.0, BODY.1) {
                    -1000.0
                } else if !inside(x, y, BODY.0 - SKIN, BODY.1 - SKIN) {
                    50.0
                } else if !inside(x, y, WALL_OUT.0, WALL_OUT.1) {
                    -100.0
                } else if !inside(x, y, WALL_IN.0, WALL_IN.1) {
                    // A linea-alba-like gap at the anterior midline.
                    if (x - C.0).abs() < gap_mm / 2.0 && y < C.1 {
                        -100.0
                    } else if x < C.0 {
                        30.0
                    } else {
                        60.0
                    }
                } else if (x - GAS.0).hypot(y - GAS.1) <= GAS.2 {
                    -1000.0
                } else {
                    -100.0
                };
                hu[r * COLS + c] = v;
            }
        }
        Phantom { hu }
    }

    fn area(a: (f64, f64)) -> f64 {
        PI * a.0 * a.1 / 100.0
    }

    /// Counting pixel centres misclassifies only pixels that the boundary
    /// crosses; they lie within half a pixel diagonal of it, so the error is
    /// at most perimeter × half-diagonal per boundary (in cm²).
    fn band(a: (f64, f64)) -> f64 {
        perimeter(a.0, a.1) * 0.5 * SP[0].hypot(SP[1]) / 100.0
    }

    fn run(p: &Phantom, height: Option<f64>) -> BodyComposition {
        let slice = AxialSlice::new(&p.hu, ROWS, COLS, SP).unwrap();
        body_composition(&slice, &ThresholdSegmenter::default(), height).unwrap()
    }

    #[test]
    fn phantom_areas_match_geometry_within_pixel_discretisation() {
        let m = run(&phantom(0.0), Some(1.7));
        let skin_in = (BODY.0 - SKIN, BODY.1 - SKIN);
        let gas = PI * GAS.2 * GAS.2 / 100.0;

        let body = area(BODY);
        assert!(
            (m.body_area_cm2 - body).abs() <= band(BODY),
            "body {} vs {body}",
            m.body_area_cm2
        );

        let muscle = area(WALL_OUT) - area(WALL_IN);
        let tol = band(WALL_OUT) + band(WALL_IN);
        assert!(
            (m.sma_cm2 - muscle).abs() <= tol,
            "SMA {} vs {muscle} ± {tol}",
            m.sma_cm2
        );

        let sat = area(skin_in) - area(WALL_OUT);
        let tol = band(skin_in) + band(WALL_OUT);
        assert!(
            (m.sat_cm2 - sat).abs() <= tol,
            "SAT {} vs {sat} ± {tol}",
            m.sat_cm2
        );

        let vat = area(WALL_IN) - gas;
        let tol = band(WALL_IN) + 2.0 * PI * GAS.2 * 0.5 * SP[0].hypot(SP[1]) / 100.0;
        assert!(
            (m.vat_cm2 - vat).abs() <= tol,
            "VAT {} vs {vat} ± {tol}",
            m.vat_cm2
        );

        let smi = m.smi_cm2_per_m2.unwrap();
        assert!((smi - m.sma_cm2 / (1.7 * 1.7)).abs() < 1e-9);
        // Half the ring is 30 HU, half 60 HU: the mean is 45 up to the
        // pixel-count difference of the two halves.
        let mean = m.muscle_mean_hu.unwrap();
        assert!((mean - 45.0).abs() < 0.5, "mean muscle HU {mean}");
        assert_eq!(m.segmenter, "threshold-v1");
    }

    #[test]
    fn an_open_muscle_ring_still_separates_vat_from_sat() {
        let closed = run(&phantom(0.0), None);
        let open = run(&phantom(8.0), None);
        // The gap's fat lies inside the hull, so it joins VAT, not SAT.
        let gap_cm2 = 8.0 * (WALL_OUT.1 - WALL_IN.1) / 100.0;
        assert!(
            (open.sat_cm2 - closed.sat_cm2).abs() < 0.5,
            "{open:?} vs {closed:?}"
        );
        assert!(open.vat_cm2 > closed.vat_cm2);
        assert!(open.vat_cm2 - closed.vat_cm2 <= gap_cm2 * 1.2);
        assert!((closed.sma_cm2 - open.sma_cm2 - gap_cm2).abs() < gap_cm2 * 0.2);
    }

    #[test]
    fn thresholds_count_an_organ_as_muscle() {
        // The documented limitation: a liver-like 55 HU blob inside the
        // cavity is indistinguishable from muscle by HU alone.
        let mut p = phantom(0.0);
        let base = run(&p, None);
        let mut organ_px = 0;
        for r in 0..ROWS {
            for c in 0..COLS {
                let (x, y) = (c as f64 * SP[1], r as f64 * SP[0]);
                if (x - 100.0).hypot(y - 120.0) <= 15.0 {
                    p.hu[r * COLS + c] = 55.0;
                    organ_px += 1;
                }
            }
        }
        let with_organ = run(&p, None);
        let organ_cm2 = organ_px as f64 * SP[0] * SP[1] / 100.0;
        assert!((with_organ.sma_cm2 - base.sma_cm2 - organ_cm2).abs() < 1e-9);
    }

    #[test]
    fn a_learned_segmenter_can_replace_the_thresholds() {
        struct Everything;
        impl TissueSegmenter for Everything {
            fn name(&self) -> &str {
                "all-muscle"
            }
            fn segment(&self, s: &AxialSlice<'_>) -> Result<TissueMasks, BodyCompositionError> {
                let n = s.rows() * s.cols();
                Ok(TissueMasks {
                    body: vec![true; n],
                    muscle: vec![true; n],
                    subcutaneous_fat: vec![false; n],
                    visceral_fat: vec![false; n],
                })
            }
        }
        let hu = vec![10.0f32; 20 * 10];
        let slice = AxialSlice::new(&hu, 20, 10, [0.5, 0.5]).unwrap();
        let m = body_composition(&slice, &Everything, None).unwrap();
        assert_eq!(m.segmenter, "all-muscle");
        assert!((m.sma_cm2 - 200.0 * 0.25 / 100.0).abs() < 1e-12);
        assert_eq!(m.muscle_mean_hu, Some(10.0));
        assert_eq!(m.smi_cm2_per_m2, None);
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let hu = vec![0.0f32; 10];
        assert!(matches!(
            AxialSlice::new(&hu, 3, 4, [1.0, 1.0]),
            Err(BodyCompositionError::SizeMismatch { .. })
        ));
        assert!(matches!(
            AxialSlice::new(&hu, 2, 5, [0.0, 1.0]),
            Err(BodyCompositionError::InvalidSpacing(_))
        ));
        let slice = AxialSlice::new(&hu, 2, 5, [1.0, 1.0]).unwrap();
        assert_eq!(
            body_composition(&slice, &ThresholdSegmenter::default(), Some(17.0)),
            Err(BodyCompositionError::InvalidHeight(17.0))
        );
        let v = Volume::new(vec![0.0f32; 24], [2, 3, 4], [1.0; 3]);
        assert!(matches!(
            AxialSlice::from_volume(&v, 4),
            Err(BodyCompositionError::SliceOutOfRange { z: 4, depth: 4 })
        ));
        // An all-air slice gives zeros, not a panic.
        let air = vec![-1000.0f32; 100];
        let s = AxialSlice::new(&air, 10, 10, [1.0, 1.0]).unwrap();
        let m = body_composition(&s, &ThresholdSegmenter::default(), None).unwrap();
        assert_eq!(
            (m.sma_cm2, m.body_area_cm2, m.muscle_mean_hu),
            (0.0, 0.0, None)
        );
    }

    #[test]
    fn hull_rows_cover_a_triangle() {
        let pts = monotone_chain(vec![(0.0, 0.0), (4.0, 0.0), (0.0, 4.0), (1.0, 1.0)]);
        assert_eq!(pts.len(), 3);
        let mut mask = vec![false; 5 * 5];
        for (x, y) in [(0, 0), (4, 0), (0, 4)] {
            mask[y * 5 + x] = true;
        }
        let rows = convex_hull_rows(&mask, 5, 5);
        let (lo, hi) = rows[2].unwrap();
        assert!(lo.abs() < 1e-6 && (hi - 2.0).abs() < 1e-6);
        assert!(rows[4].is_some());
    }
}
