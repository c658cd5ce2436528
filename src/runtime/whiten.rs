//! Residual whitening: the squared residual of the anomaly map measured in the metric of the
//! residuals seen on normal images, not in plain ℓ2.
//!
//! Why: on real photographs the decoder's error on normal images lies almost entirely along a
//! few colour directions (on grey textures, along (1, 1, 1): brightness at edges), while a
//! defect often differs in a direction normal images never do (a coloured stain on a grey
//! part). Plain ℓ2 ranks a bright normal edge above a faint stain; the metric
//! M ∝ (Σ + λI)⁻¹, with Σ the second moment of the per-pixel residual over validation normals,
//! divides each direction by how much normal images vary along it. The ridge λ = [`RIDGE`]·tr Σ
//! keeps an unseen direction from being scored infinitely, and M is scaled so that normal
//! images keep the mean value of the ℓ2 map (tr(MΣ) = tr Σ): thresholds, the bilateral
//! filter's σ_color and the surprise weight keep their units.

use crate::config::DetectConfig;
use ndarray::{Array2, ArrayView3};

/// Ridge added to Σ, as a fraction of its trace (measured on the development set: 1 %–10 %
/// of the largest eigenvalue all beat ℓ2; 10 % of the trace was the most even).
pub const RIDGE: f64 = 0.1;

/// Why a metric could not be estimated or used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricError {
    #[error("no residuals to estimate the metric from")]
    Empty,
    #[error("residual pair shapes differ: {0:?} vs {1:?}")]
    Shape(Vec<usize>, Vec<usize>),
    #[error("the residuals of the normal images are all zero; no metric can be estimated")]
    Degenerate,
    #[error("{why} (image channels: {c})")]
    Invalid { c: usize, why: String },
}

/// Estimates M from (a, b) image pairs [C, H, W] whose difference a − b is the residual on
/// normal images (input and direct reconstruction). Rows of the result are M's rows.
pub fn estimate<'a>(pairs: impl IntoIterator<Item = (ArrayView3<'a, f32>, ArrayView3<'a, f32>)>) -> Result<Vec<Vec<f64>>, MetricError> {
    let mut sigma: Option<Array2<f64>> = None;
    let mut count = 0usize;
    for (a, b) in pairs {
        if a.shape() != b.shape() {
            return Err(MetricError::Shape(a.shape().to_vec(), b.shape().to_vec()));
        }
        let (c, h, w) = a.dim();
        let s = sigma.get_or_insert_with(|| Array2::zeros((c, c)));
        if s.dim() != (c, c) {
            return Err(MetricError::Shape(vec![s.nrows()], vec![c]));
        }
        let mut r = vec![0f64; c];
        for i in 0..h {
            for j in 0..w {
                for (k, rk) in r.iter_mut().enumerate() {
                    *rk = (a[[k, i, j]] - b[[k, i, j]]) as f64;
                }
                for p in 0..c {
                    for q in 0..c {
                        s[[p, q]] += r[p] * r[q];
                    }
                }
            }
        }
        count += h * w;
    }
    let mut s = sigma.ok_or(MetricError::Empty)?;
    if count == 0 {
        return Err(MetricError::Empty);
    }
    s /= count as f64;
    let c = s.nrows();
    let trace: f64 = (0..c).map(|i| s[[i, i]]).sum();
    if !(trace > 0.0 && trace.is_finite()) {
        return Err(MetricError::Degenerate);
    }
    let mut ridged = s.clone();
    for i in 0..c {
        ridged[[i, i]] += RIDGE * trace;
    }
    let inv = invert_spd(&ridged).ok_or(MetricError::Degenerate)?;
    // Scale so that E_normal[rᵀ M r] = tr(M Σ) equals E_normal[|r|²] = tr Σ.
    let tr_ms: f64 = (0..c).map(|i| (0..c).map(|k| inv[[i, k]] * s[[k, i]]).sum::<f64>()).sum();
    let scale = trace / tr_ms;
    Ok((0..c).map(|i| (0..c).map(|j| 0.5 * (inv[[i, j]] + inv[[j, i]]) * scale).collect()).collect())
}

/// Inverse of a symmetric positive definite matrix by Gauss–Jordan elimination with partial
/// pivoting (C is the number of image channels, so a few multiplications; no LAPACK needed).
fn invert_spd(m: &Array2<f64>) -> Option<Array2<f64>> {
    let n = m.nrows();
    let mut a = m.clone();
    let mut inv = Array2::<f64>::eye(n);
    for col in 0..n {
        let piv = (col..n).max_by(|&x, &y| a[[x, col]].abs().total_cmp(&a[[y, col]].abs()))?;
        if a[[piv, col]].abs() < 1e-300 {
            return None;
        }
        for k in 0..n {
            a.swap([col, k], [piv, k]);
            inv.swap([col, k], [piv, k]);
        }
        let p = a[[col, col]];
        for k in 0..n {
            a[[col, k]] /= p;
            inv[[col, k]] /= p;
        }
        for row in (0..n).filter(|&r| r != col) {
            let f = a[[row, col]];
            for k in 0..n {
                a[[row, k]] -= f * a[[col, k]];
                inv[[row, k]] -= f * inv[[col, k]];
            }
        }
    }
    Some(inv)
}

/// Checks a stored metric for `channels` channels and converts it for [`weighted_map`].
pub fn to_array(metric: &[Vec<f64>], channels: usize) -> Result<Array2<f32>, MetricError> {
    DetectConfig::check_residual_metric(metric, channels).map_err(|why| MetricError::Invalid { c: channels, why })?;
    Ok(Array2::from_shape_fn((channels, channels), |(i, j)| metric[i][j] as f32))
}

/// Σ_cd (a − b)_c M_cd (a − b)_d per pixel: eq. 6's squared residual in the metric M.
/// With M = I this is exactly `score::score_map`.
pub fn weighted_map(a: ArrayView3<f32>, b: ArrayView3<f32>, m: &Array2<f32>) -> Result<Array2<f32>, MetricError> {
    if a.shape() != b.shape() {
        return Err(MetricError::Shape(a.shape().to_vec(), b.shape().to_vec()));
    }
    let (c, h, w) = a.dim();
    if m.dim() != (c, c) {
        return Err(MetricError::Shape(vec![c, c], m.shape().to_vec()));
    }
    let mut out = Array2::<f32>::zeros((h, w));
    let mut r = vec![0f32; c];
    for i in 0..h {
        for j in 0..w {
            for (k, rk) in r.iter_mut().enumerate() {
                *rk = a[[k, i, j]] - b[[k, i, j]];
            }
            let mut acc = 0f32;
            for p in 0..c {
                let mut row = 0f32;
                for q in 0..c {
                    row += m[[p, q]] * r[q];
                }
                acc += r[p] * row;
            }
            out[[i, j]] = acc;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::score::score_map;
    use ndarray::Array3;

    /// Grey residuals: every channel moves together (as on a grey texture), plus a little
    /// independent noise per channel.
    fn grey_pair(seed: u64) -> (Array3<f32>, Array3<f32>) {
        let mut state = seed;
        let mut rnd = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let a = Array3::from_elem((3, 16, 16), 0.5f32);
        let mut b = a.clone();
        for i in 0..16 {
            for j in 0..16 {
                let g = 0.2 * rnd();
                for c in 0..3 {
                    b[[c, i, j]] += g + 0.01 * rnd();
                }
            }
        }
        (a, b)
    }

    #[test]
    fn hand_computed_two_channel_metric() {
        // Residuals (1, 1) and (1, −1) with equal weight: Σ = I, tr Σ = 2, ridge 0.2 → Σ + λI =
        // 1.2·I, inverse I/1.2, tr(MΣ) = 2/1.2, scale 1.2 → M = I.
        let a = Array3::from_shape_vec((2, 1, 2), vec![1.0f32, 1.0, 1.0, -1.0]).unwrap();
        let b = Array3::<f32>::zeros((2, 1, 2));
        let m = estimate([(a.view(), b.view())]).unwrap();
        for (i, row) in m.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12, "{m:?}");
            }
        }
        // Residuals only along channel 0, (2, 0): Σ = diag(4, 0), λ = 0.4, inverse diag(1/4.4,
        // 1/0.4), tr(MΣ) = 4/4.4, scale 4 / (4/4.4) = 4.4 → M = diag(1, 11).
        let a = Array3::from_shape_vec((2, 1, 1), vec![2.0f32, 0.0]).unwrap();
        let b = Array3::<f32>::zeros((2, 1, 1));
        let m = estimate([(a.view(), b.view())]).unwrap();
        assert!((m[0][0] - 1.0).abs() < 1e-12 && (m[1][1] - 11.0).abs() < 1e-12 && m[0][1].abs() < 1e-12, "{m:?}");
    }

    #[test]
    fn normal_mean_is_kept_and_off_direction_residuals_rise() {
        let pairs: Vec<_> = (0..4).map(grey_pair).collect();
        let m = estimate(pairs.iter().map(|(a, b)| (a.view(), b.view()))).unwrap();
        let ma = to_array(&m, 3).unwrap();
        // Mean over the normals is unchanged (the scale rule).
        let (mut plain, mut white) = (0f64, 0f64);
        for (a, b) in &pairs {
            plain += score_map(a.view(), b.view()).unwrap().sum() as f64;
            white += weighted_map(a.view(), b.view(), &ma).unwrap().sum() as f64;
        }
        assert!((plain - white).abs() / plain < 1e-4, "{plain} vs {white}");
        // A residual of the same ℓ2 size scores far higher across the grey axis than along it.
        let x = Array3::<f32>::zeros((3, 1, 1));
        let along = Array3::from_elem((3, 1, 1), 0.1f32);
        let across = Array3::from_shape_vec((3, 1, 1), vec![0.1f32 * 1.5f32.sqrt(), -0.1 * 1.5f32.sqrt(), 0.0]).unwrap();
        assert!((score_map(along.view(), x.view()).unwrap()[[0, 0]] - score_map(across.view(), x.view()).unwrap()[[0, 0]]).abs() < 1e-6);
        let wa = weighted_map(along.view(), x.view(), &ma).unwrap()[[0, 0]];
        let wc = weighted_map(across.view(), x.view(), &ma).unwrap()[[0, 0]];
        assert!(wc > 5.0 * wa, "across {wc} vs along {wa}");
    }

    #[test]
    fn identity_metric_is_eq6() {
        let (a, b) = grey_pair(9);
        let eye = Array2::<f32>::eye(3);
        let w = weighted_map(a.view(), b.view(), &eye).unwrap();
        let p = score_map(a.view(), b.view()).unwrap();
        assert!(w.iter().zip(p.iter()).all(|(x, y)| (x - y).abs() <= 1e-7 * y.abs().max(1e-6)));
    }

    #[test]
    fn bad_metrics_and_inputs_are_refused() {
        assert_eq!(estimate(std::iter::empty()), Err(MetricError::Empty));
        let z = Array3::<f32>::zeros((3, 4, 4));
        assert_eq!(estimate([(z.view(), z.view())]), Err(MetricError::Degenerate));
        assert!(matches!(to_array(&[vec![1.0, 0.0]], 2), Err(MetricError::Invalid { .. })));
        assert!(matches!(to_array(&[vec![1.0, 0.5], vec![0.0, 1.0]], 2), Err(MetricError::Invalid { .. })));
        assert!(matches!(to_array(&[vec![0.0, 0.0], vec![0.0, 1.0]], 2), Err(MetricError::Invalid { .. })));
        assert!(matches!(to_array(&[vec![f64::NAN, 0.0], vec![0.0, 1.0]], 2), Err(MetricError::Invalid { .. })));
        assert!(to_array(&[vec![2.0, 0.5], vec![0.5, 1.0]], 2).is_ok());
    }
}
