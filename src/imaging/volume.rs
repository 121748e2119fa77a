//! A 3-D image on a regular grid in patient space (LPS, as DICOM and ITK use).
//!
//! Memory layout follows ITK/SimpleITK (and therefore pyradiomics): x varies
//! fastest, then y, then z: `data[(z * ny + y) * nx + x]`.

/// A voxel grid with its geometry. `T` is `f32` for HU images and `u8` for masks.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    pub data: Vec<T>,
    /// Size along x (columns), y (rows), z (slices).
    pub dims: [usize; 3],
    /// Voxel spacing in mm along x, y, z.
    pub spacing: [f64; 3],
    /// Patient-space position (mm) of voxel (0, 0, 0).
    pub origin: [f64; 3],
    /// Direction cosines: column `i` (`direction[r][i]`) is the patient-space
    /// unit vector of index axis `i`, as in ITK's direction matrix.
    pub direction: [[f64; 3]; 3],
}

impl<T: Copy> Volume<T> {
    /// A volume with identity direction and zero origin.
    pub fn new(data: Vec<T>, dims: [usize; 3], spacing: [f64; 3]) -> Self {
        assert_eq!(
            data.len(),
            dims[0] * dims[1] * dims[2],
            "volume data length must equal the product of its dimensions"
        );
        Self {
            data,
            dims,
            spacing,
            origin: [0.0; 3],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    #[inline]
    pub fn index(&self, x: usize, y: usize, z: usize) -> usize {
        (z * self.dims[1] + y) * self.dims[0] + x
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize, z: usize) -> T {
        self.data[self.index(x, y, z)]
    }

    /// Patient-space position (mm) of a continuous index.
    pub fn index_to_physical(&self, idx: [f64; 3]) -> [f64; 3] {
        let mut p = self.origin;
        for (r, pr) in p.iter_mut().enumerate() {
            for (i, &ii) in idx.iter().enumerate() {
                *pr += self.direction[r][i] * self.spacing[i] * ii;
            }
        }
        p
    }

    /// Continuous index of a patient-space position (mm). The direction matrix
    /// is orthonormal, so its inverse is its transpose.
    pub fn physical_to_index(&self, p: [f64; 3]) -> [f64; 3] {
        let d = [
            p[0] - self.origin[0],
            p[1] - self.origin[1],
            p[2] - self.origin[2],
        ];
        let mut idx = [0.0; 3];
        for (i, ii) in idx.iter_mut().enumerate() {
            let proj: f64 = (0..3).map(|r| self.direction[r][i] * d[r]).sum();
            *ii = proj / self.spacing[i];
        }
        idx
    }

    /// True when both volumes share dimensions and (within 1e-3 mm) geometry.
    pub fn same_grid<U>(&self, other: &Volume<U>) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-3;
        self.dims == other.dims
            && self
                .spacing
                .iter()
                .zip(other.spacing)
                .all(|(a, b)| close(*a, b))
            && self
                .origin
                .iter()
                .zip(other.origin)
                .all(|(a, b)| close(*a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_round_trip() {
        let mut v = Volume::new(vec![0u8; 24], [2, 3, 4], [0.7, 0.7, 2.5]);
        v.origin = [-100.0, -50.0, 20.0];
        let p = v.index_to_physical([1.0, 2.0, 3.0]);
        assert_eq!(p, [-99.3, -48.6, 27.5]);
        let i = v.physical_to_index(p);
        for (a, b) in i.iter().zip([1.0, 2.0, 3.0]) {
            assert!((a - b).abs() < 1e-9);
        }
    }
}
