//! Border profile: the anomaly map divided, ring by ring near the image edge, by how much
//! larger it is there than inside on normal images.
//!
//! Why: the convolutions of the VQ-VAE pad with zeros, so its reconstruction is worst in the
//! outermost pixels. Measured on the validation normals of the real-photo development set,
//! the raw residual is 2.5–4.4× the interior mean in the outermost ring and still ≈ 1.5× two
//! pixels in; after the bilateral filter (reflect border) the excess reaches 4–5 pixels. The
//! largest component of a normal image — which sets the label-free pixel threshold — therefore
//! sat at the border on most validation images, and an interior defect had to beat that.
//! Dividing each ring by its normal excess (factors ≥ 1, estimated by `tune` on the validation
//! normals, stored in the package) leaves the interior unchanged and puts border pixels on the
//! interior's scale.

use crate::config::DetectConfig;
use ndarray::Array2;

/// Rings (pixels from the edge) the profile covers; at 128² the excess is gone by ring 5.
pub const RINGS: usize = 8;

/// Why a profile could not be estimated or used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BorderError {
    #[error("no maps to estimate the border profile from")]
    Empty,
    #[error("maps of {0}×{1} px are too small for a {RINGS}-ring border profile")]
    TooSmall(usize, usize),
    #[error("the maps' interior mean is {0}; no border profile can be estimated")]
    Degenerate(f64),
    #[error("{1} (profile {0:?})")]
    Invalid(Vec<f64>, String),
}

/// Distance of (i, j) to the nearest edge of an h×w map (0 on the outermost ring).
fn ring(i: usize, j: usize, h: usize, w: usize) -> usize {
    i.min(j).min(h - 1 - i).min(w - 1 - j)
}

/// Factor per ring d = 0..RINGS−1: mean map value on ring d over mean beyond the last ring,
/// over all `maps` (unfiltered, same size), clamped to ≥ 1 so no ring is ever amplified.
pub fn estimate(maps: &[Array2<f32>]) -> Result<Vec<f64>, BorderError> {
    let first = maps.first().ok_or(BorderError::Empty)?;
    let (h, w) = first.dim();
    if h < 2 * RINGS + 1 || w < 2 * RINGS + 1 {
        return Err(BorderError::TooSmall(h, w));
    }
    let mut sum = [0f64; RINGS + 1];
    let mut count = [0usize; RINGS + 1];
    for m in maps {
        if m.dim() != (h, w) {
            return Err(BorderError::TooSmall(m.nrows().min(h), m.ncols().min(w)));
        }
        for ((i, j), &v) in m.indexed_iter() {
            let d = ring(i, j, h, w).min(RINGS);
            sum[d] += v as f64;
            count[d] += 1;
        }
    }
    let inner = sum[RINGS] / count[RINGS] as f64;
    if !(inner > 0.0 && inner.is_finite()) {
        return Err(BorderError::Degenerate(inner));
    }
    Ok((0..RINGS).map(|d| (sum[d] / count[d] as f64 / inner).max(1.0)).collect())
}

/// Checks a stored profile (see [`DetectConfig::check_border_profile`]).
pub fn check(profile: &[f64]) -> Result<(), BorderError> {
    DetectConfig::check_border_profile(profile).map_err(|why| BorderError::Invalid(profile.to_vec(), why))
}

/// Divides ring d of `map` by `profile[d]` (rings beyond the profile are unchanged).
pub fn apply(map: &mut Array2<f32>, profile: &[f64]) {
    let (h, w) = map.dim();
    for ((i, j), v) in map.indexed_iter_mut() {
        if let Some(&f) = profile.get(ring(i, j, h, w)) {
            *v = (*v as f64 / f) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_profile() {
        // 20×20 map: 1 inside, 4 on the outermost ring, 2 on the next; interior mean 1.
        let m = Array2::from_shape_fn((20, 20), |(i, j)| match ring(i, j, 20, 20) {
            0 => 4.0f32,
            1 => 2.0,
            _ => 1.0,
        });
        let p = estimate(&[m.clone(), m.clone()]).unwrap();
        assert_eq!(p.len(), RINGS);
        assert!((p[0] - 4.0).abs() < 1e-12 && (p[1] - 2.0).abs() < 1e-12, "{p:?}");
        assert!(p[2..].iter().all(|&v| (v - 1.0).abs() < 1e-12), "{p:?}");
        let mut flat = m;
        apply(&mut flat, &p);
        assert!(flat.iter().all(|&v| (v - 1.0).abs() < 1e-6), "normalised map is flat");
    }

    #[test]
    fn quieter_border_is_never_amplified() {
        let m = Array2::from_shape_fn((24, 24), |(i, j)| if ring(i, j, 24, 24) == 0 { 0.5f32 } else { 1.0 });
        let p = estimate(&[m.clone()]).unwrap();
        assert_eq!(p[0], 1.0);
        let mut out = m.clone();
        apply(&mut out, &p);
        assert_eq!(out, m);
    }

    #[test]
    fn a_defect_inside_is_unchanged_and_border_specks_drop() {
        let mut m = Array2::from_elem((32, 32), 1.0f32);
        m[[16, 16]] = 9.0;
        m[[0, 10]] = 9.0;
        let mut out = m.clone();
        apply(&mut out, &[3.0, 1.5]);
        assert_eq!(out[[16, 16]], 9.0);
        assert!((out[[0, 10]] - 3.0).abs() < 1e-6 && (out[[1, 10]] - 1.0 / 1.5).abs() < 1e-6);
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert_eq!(estimate(&[]), Err(BorderError::Empty));
        assert_eq!(estimate(&[Array2::zeros((10, 10))]), Err(BorderError::TooSmall(10, 10)));
        assert!(matches!(estimate(&[Array2::zeros((20, 20))]), Err(BorderError::Degenerate(_))));
        assert!(check(&[]).is_err());
        assert!(check(&[0.5]).is_err());
        assert!(check(&[f64::NAN]).is_err());
        assert!(check(&[1.0; DetectConfig::MAX_BORDER_RINGS + 1]).is_err());
        assert!(check(&[2.5, 1.2, 1.0]).is_ok());
    }
}
