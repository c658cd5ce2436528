//! Residual whitening: the squared residual of the anomaly map measured in the metric of the
//! residuals seen on normal images, not in plain ℓ2, over a small patch around each pixel.
//!
//! Why: on real photographs the decoder's error on normal images is structured. Per pixel it
//! lies almost entirely along a few colour directions (on grey textures, along (1, 1, 1):
//! brightness at edges), and across neighbouring pixels it has the texture's own spatial
//! pattern (a blurred edge is a smooth ramp). A defect differs in ways normal images never do:
//! a coloured stain on a grey part, or a patch whose residual is not shaped like a blurred
//! edge. Plain ℓ2 ranks a bright normal edge above a faint stain. So each pixel is scored by
//! the k×k×C residual patch p centred on it (reflect-padded at the border, like the bilateral
//! filter): pᵀMp / k², with M ∝ (Σ + λI)⁻¹ and Σ the second moment of such patches over the
//! validation normals' residuals, which divides each direction by how much normal images vary
//! along it. The ridge λ = [`RIDGE`]·tr Σ / dim keeps an unseen direction from being scored
//! infinitely, and M is scaled so that normal images keep the mean value of the ℓ2 map
//! (tr(MΣ) = tr Σ): thresholds, the bilateral filter's σ_color and the surprise weight keep
//! their units. k = 1 is the per-pixel colour metric.

use crate::config::DetectConfig;
use crate::runtime::score::reflect101;
use ndarray::{Array2, ArrayView3};

/// Ridge added to Σ, as a fraction of its mean eigenvalue tr Σ / dim (measured on the
/// development set with 5×5 patches: 0.1 and 0.3 were within 0.01 of each other on every
/// figure; 0.1 gave the higher PRO at the threshold).
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
    #[error("{why} (image channels: {c}, patch {k}×{k})")]
    Invalid { c: usize, k: usize, why: String },
    #[error("a {k}×{k} patch needs images of at least {need}×{need} pixels, got {h}×{w}")]
    TooSmall { k: usize, need: usize, h: usize, w: usize },
}

/// A checked metric, ready to score maps: M as a dense f32 matrix over patch vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualMetric {
    /// Patch side k (odd).
    pub patch: usize,
    /// Image channels C.
    pub channels: usize,
    /// (C·k²)² matrix; a patch vector is ordered channel, then row offset, then column offset.
    pub matrix: Array2<f32>,
}

/// Fills `out` (length C·k²) with the residual a − b of the k×k patch centred on (i, j),
/// reflected at the image border (OpenCV's BORDER_REFLECT_101).
fn patch_at(a: &ArrayView3<f32>, b: &ArrayView3<f32>, k: usize, i: usize, j: usize, rows: &[usize], cols: &[usize], out: &mut [f32]) {
    let (c, _, _) = a.dim();
    let mut n = 0;
    for ch in 0..c {
        for &y in &rows[i..i + k] {
            for &x in &cols[j..j + k] {
                out[n] = a[[ch, y, x]] - b[[ch, y, x]];
                n += 1;
            }
        }
    }
}

/// Source row/column of each padded index: index p of the padded axis reads pixel
/// reflect101(p − k/2).
fn padded_index(len: usize, k: usize) -> Vec<usize> {
    (0..len + k - 1).map(|p| reflect101(p as isize - (k / 2) as isize, len)).collect()
}

/// The patch side is one the config and manifest accept, and the image is large enough for it.
fn check_patch(k: usize, c: usize, h: usize, w: usize) -> Result<(), MetricError> {
    DetectConfig::check_residual_patch(k).map_err(|why| MetricError::Invalid { c, k, why })?;
    // Reflection without repeating the edge pixel needs k/2 < side.
    let need = k / 2 + 1;
    if h < need || w < need {
        return Err(MetricError::TooSmall { k, need, h, w });
    }
    Ok(())
}

/// Estimates M for k×k patches from (a, b) image pairs [C, H, W] whose difference a − b is the
/// residual on normal images (input and direct reconstruction). Rows of the result are M's
/// rows, (C·k²)².
pub fn estimate<'a>(pairs: impl IntoIterator<Item = (ArrayView3<'a, f32>, ArrayView3<'a, f32>)>, patch: usize) -> Result<Vec<Vec<f64>>, MetricError> {
    let k = patch;
    let mut sigma: Option<(usize, Vec<f64>)> = None;
    let mut count = 0usize;
    for (a, b) in pairs {
        if a.shape() != b.shape() {
            return Err(MetricError::Shape(a.shape().to_vec(), b.shape().to_vec()));
        }
        let (c, h, w) = a.dim();
        check_patch(k, c, h, w)?;
        let d = c * k * k;
        let (dim, s) = sigma.get_or_insert_with(|| (d, vec![0f64; d * d]));
        if *dim != d {
            return Err(MetricError::Shape(vec![*dim], vec![d]));
        }
        let (rows, cols) = (padded_index(h, k), padded_index(w, k));
        let mut p = vec![0f32; d];
        let mut pd = vec![0f64; d];
        for i in 0..h {
            for j in 0..w {
                patch_at(&a, &b, k, i, j, &rows, &cols, &mut p);
                for (x, &y) in pd.iter_mut().zip(&p) {
                    *x = y as f64;
                }
                // Upper triangle only; mirrored below.
                for q in 0..d {
                    let pq = pd[q];
                    for (sv, &pr) in s[q * d + q..(q + 1) * d].iter_mut().zip(&pd[q..]) {
                        *sv += pq * pr;
                    }
                }
            }
        }
        count += h * w;
    }
    let (d, s) = sigma.ok_or(MetricError::Empty)?;
    if count == 0 {
        return Err(MetricError::Empty);
    }
    let s = Array2::from_shape_fn((d, d), |(i, j)| s[i.min(j) * d + i.max(j)] / count as f64);
    let trace: f64 = (0..d).map(|i| s[[i, i]]).sum();
    if !(trace > 0.0 && trace.is_finite()) {
        return Err(MetricError::Degenerate);
    }
    let mut ridged = s.clone();
    for i in 0..d {
        ridged[[i, i]] += RIDGE * trace / d as f64;
    }
    let inv = invert_spd(&ridged).ok_or(MetricError::Degenerate)?;
    // Scale so that E_normal[pᵀ M p] = tr(M Σ) equals E_normal[|p|²] = tr Σ.
    let tr_ms: f64 = (0..d).map(|i| (0..d).map(|k| inv[[i, k]] * s[[k, i]]).sum::<f64>()).sum();
    let scale = trace / tr_ms;
    Ok((0..d).map(|i| (0..d).map(|j| 0.5 * (inv[[i, j]] + inv[[j, i]]) * scale).collect()).collect())
}

/// Inverse of a symmetric positive definite matrix by Gauss–Jordan elimination with partial
/// pivoting (at most a few hundred rows; no LAPACK needed).
pub(crate) fn invert_spd(m: &Array2<f64>) -> Option<Array2<f64>> {
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
            if f == 0.0 {
                continue;
            }
            for k in 0..n {
                a[[row, k]] -= f * a[[col, k]];
                inv[[row, k]] -= f * inv[[col, k]];
            }
        }
    }
    Some(inv)
}

/// Dot product in eight independent lanes, so the compiler can vectorise it (a plain f32 sum
/// must keep its order and stays scalar); the map costs (C·k²)² products per pixel.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

/// Checks a stored metric for `channels` channels and `patch`×`patch` patches and converts it
/// for [`weighted_map`].
pub fn to_array(metric: &[Vec<f64>], channels: usize, patch: usize) -> Result<ResidualMetric, MetricError> {
    DetectConfig::check_residual_metric(metric, channels, patch).map_err(|why| MetricError::Invalid { c: channels, k: patch, why })?;
    let d = channels * patch * patch;
    Ok(ResidualMetric { patch, channels, matrix: Array2::from_shape_fn((d, d), |(i, j)| metric[i][j] as f32) })
}

/// pᵀ M p / k² per pixel, p the k×k patch of a − b around it: eq. 6's squared residual in the
/// metric M. With k = 1 and M = I this is exactly `score::score_map`.
pub fn weighted_map(a: ArrayView3<f32>, b: ArrayView3<f32>, m: &ResidualMetric) -> Result<Array2<f32>, MetricError> {
    if a.shape() != b.shape() {
        return Err(MetricError::Shape(a.shape().to_vec(), b.shape().to_vec()));
    }
    let (c, h, w) = a.dim();
    let k = m.patch;
    let d = c * k * k;
    if c != m.channels || m.matrix.dim() != (d, d) {
        return Err(MetricError::Shape(vec![d, d], m.matrix.shape().to_vec()));
    }
    check_patch(k, c, h, w)?;
    let (rows, cols) = (padded_index(h, k), padded_index(w, k));
    let mat = m.matrix.as_standard_layout();
    let mat = mat.as_slice().expect("standard layout");
    let norm = 1.0 / (k * k) as f32;
    let mut out = Array2::<f32>::zeros((h, w));
    let mut p = vec![0f32; d];
    for i in 0..h {
        for j in 0..w {
            patch_at(&a, &b, k, i, j, &rows, &cols, &mut p);
            let mut acc = 0f32;
            for (row, &pi) in mat.chunks_exact(d).zip(&p) {
                acc += pi * dot(row, &p);
            }
            out[[i, j]] = acc * norm;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::score::score_map;
    use ndarray::Array3;

    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        }
    }

    /// Grey residuals: every channel moves together (as on a grey texture), plus a little
    /// independent noise per channel.
    fn grey_pair(seed: u64) -> (Array3<f32>, Array3<f32>) {
        let mut rnd = rng(seed);
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

    /// Residuals that are smooth across pixels (a blurred edge is a ramp): each pixel is the
    /// mean of a 3×3 neighbourhood of white noise.
    fn smooth_pair(seed: u64) -> (Array3<f32>, Array3<f32>) {
        let mut rnd = rng(seed);
        let noise = Array3::from_shape_fn((1, 20, 20), |_| rnd());
        let b = Array3::from_shape_fn((1, 16, 16), |(_, i, j)| {
            let mut s = 0.0;
            for di in 0..3 {
                for dj in 0..3 {
                    s += noise[[0, i + 1 + di, j + 1 + dj]];
                }
            }
            s / 9.0
        });
        (Array3::zeros((1, 16, 16)), b)
    }

    fn metric(pairs: &[(Array3<f32>, Array3<f32>)], k: usize) -> ResidualMetric {
        let c = pairs[0].0.shape()[0];
        to_array(&estimate(pairs.iter().map(|(a, b)| (a.view(), b.view())), k).unwrap(), c, k).unwrap()
    }

    #[test]
    fn hand_computed_two_channel_metric() {
        // Residuals (1, 1) and (1, −1) with equal weight: Σ = I, tr Σ = 2, ridge 0.1·2/2 → Σ +
        // λI = 1.1·I, inverse I/1.1, tr(MΣ) = 2/1.1, scale 1.1 → M = I.
        let a = Array3::from_shape_vec((2, 1, 2), vec![1.0f32, 1.0, 1.0, -1.0]).unwrap();
        let b = Array3::<f32>::zeros((2, 1, 2));
        let m = estimate([(a.view(), b.view())], 1).unwrap();
        for (i, row) in m.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12, "{m:?}");
            }
        }
        // Residuals only along channel 0, (2, 0): Σ = diag(4, 0), λ = 0.1·4/2 = 0.2, inverse
        // diag(1/4.2, 1/0.2), tr(MΣ) = 4/4.2, scale 4.2 → M = diag(1, 21).
        let a = Array3::from_shape_vec((2, 1, 1), vec![2.0f32, 0.0]).unwrap();
        let b = Array3::<f32>::zeros((2, 1, 1));
        let m = estimate([(a.view(), b.view())], 1).unwrap();
        assert!((m[0][0] - 1.0).abs() < 1e-12 && (m[1][1] - 21.0).abs() < 1e-12 && m[0][1].abs() < 1e-12, "{m:?}");
    }

    #[test]
    fn hand_computed_patch_metric() {
        // One channel, 2×3 image, both rows with residual (1, 0, 0); 3×3 patches reflected at
        // the border (`…cb|abc|ba…`). Every patch row is the same triple of its centre column:
        // j = 0 reads columns (1, 0, 1) → (0, 1, 0); j = 1 reads (0, 1, 2) → (1, 0, 0); j = 2
        // reads (1, 2, 1) → (0, 0, 0). A patch vector (row-major) is its triple three times.
        // Over the 6 pixels E[t tᵀ] = diag(1/3, 1/3, 0), so Σ = J₃ ⊗ diag(1/3, 1/3, 0) (J₃ all
        // ones): the projector P onto the two "same triple in every row" directions, with
        // eigenvalue 1, and 0 elsewhere. tr Σ = 2, λ = 0.1·2/9 = 1/45; (Σ + λ)⁻¹ = P/(1 + λ) +
        // (I − P)/λ, tr((Σ + λ)⁻¹Σ) = 2/(1 + λ), scale 1 + λ → M = P + (1 + λ)/λ·(I − P).
        let a = Array3::from_shape_vec((1, 2, 3), vec![1.0f32, 0.0, 0.0, 1.0, 0.0, 0.0]).unwrap();
        let b = Array3::<f32>::zeros((1, 2, 3));
        let m = estimate([(a.view(), b.view())], 3).unwrap();
        let lam = 1.0 / 45.0;
        for i in 0..9 {
            for j in 0..9 {
                let p = if i % 3 == j % 3 && i % 3 != 2 { 1.0 / 3.0 } else { 0.0 };
                let id = if i == j { 1.0 } else { 0.0 };
                let want = p + (1.0 + lam) / lam * (id - p);
                assert!((m[i][j] - want).abs() < 1e-9, "({i}, {j}): {} vs {want}", m[i][j]);
            }
        }
        // The map of the same residual: every patch lies in P's range, so pᵀMp = |p|² = 3 for
        // j = 0, 1 and 0 for j = 2, over k² = 9.
        let rm = to_array(&m, 1, 3).unwrap();
        let map = weighted_map(a.view(), b.view(), &rm).unwrap();
        for ((_, j), &v) in map.indexed_iter() {
            let want = if j < 2 { 1.0 / 3.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-5, "{map:?}");
        }
    }

    /// pᵀMp / k² computed the slow, obvious way: pad by reflection, read each patch, multiply.
    fn naive_map(a: &Array3<f32>, b: &Array3<f32>, m: &ResidualMetric) -> Array2<f32> {
        let (c, h, w) = a.dim();
        let k = m.patch as isize;
        let refl = |p: isize, n: usize| -> usize {
            let n = n as isize;
            let q = if p < 0 { -p } else if p >= n { 2 * n - 2 - p } else { p };
            q as usize
        };
        Array2::from_shape_fn((h, w), |(i, j)| {
            let mut p = Vec::new();
            for ch in 0..c {
                for di in -(k / 2)..=(k / 2) {
                    for dj in -(k / 2)..=(k / 2) {
                        let (y, x) = (refl(i as isize + di, h), refl(j as isize + dj, w));
                        p.push((a[[ch, y, x]] - b[[ch, y, x]]) as f64);
                    }
                }
            }
            let mut s = 0.0;
            for (u, pu) in p.iter().enumerate() {
                for (v, pv) in p.iter().enumerate() {
                    s += pu * m.matrix[[u, v]] as f64 * pv;
                }
            }
            (s / (k * k) as f64) as f32
        })
    }

    #[test]
    fn patch_map_matches_the_naive_reference() {
        let pairs: Vec<_> = (0..3).map(grey_pair).collect();
        for k in [1, 3, 5] {
            let m = metric(&pairs, k);
            assert_eq!(m.matrix.dim(), (3 * k * k, 3 * k * k));
            let (a, b) = grey_pair(77);
            let fast = weighted_map(a.view(), b.view(), &m).unwrap();
            let slow = naive_map(&a, &b, &m);
            for (f, s) in fast.iter().zip(slow.iter()) {
                assert!((f - s).abs() <= 1e-4 * s.abs().max(1e-3), "k = {k}: {f} vs {s}");
            }
        }
    }

    #[test]
    fn normal_mean_is_kept_and_off_direction_residuals_rise() {
        let pairs: Vec<_> = (0..4).map(grey_pair).collect();
        let ma = metric(&pairs, 1);
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
    fn patches_separate_a_sharp_speck_from_smooth_normal_residuals() {
        // Normal residuals are smooth across pixels. A one-pixel speck of the same ℓ2 energy
        // as a smooth bump is invisible to the per-pixel metric's ranking but stands out in
        // the 5×5 metric, which has learnt that neighbours move together.
        let pairs: Vec<_> = (0..6).map(smooth_pair).collect();
        let (m1, m5) = (metric(&pairs, 1), metric(&pairs, 5));
        let zero = Array3::<f32>::zeros((1, 16, 16));
        let mut speck = zero.clone();
        speck[[0, 8, 8]] = 0.3;
        let mut bump = zero.clone();
        // The same ℓ2 energy spread over a 3×3 block.
        for i in 7..10 {
            for j in 7..10 {
                bump[[0, i, j]] = 0.1;
            }
        }
        let peak = |m: &ResidualMetric, r: &Array3<f32>| weighted_map(r.view(), zero.view(), m).unwrap().iter().sum::<f32>();
        let ratio1 = peak(&m1, &speck) / peak(&m1, &bump);
        let ratio5 = peak(&m5, &speck) / peak(&m5, &bump);
        assert!((ratio1 - 1.0).abs() < 1e-3, "per-pixel metric is ℓ2 up to scale here: {ratio1}");
        assert!(ratio5 > 3.0, "speck vs bump in the 5×5 metric: {ratio5}");
    }

    #[test]
    fn identity_metric_is_eq6() {
        let (a, b) = grey_pair(9);
        let eye = ResidualMetric { patch: 1, channels: 3, matrix: Array2::<f32>::eye(3) };
        let w = weighted_map(a.view(), b.view(), &eye).unwrap();
        let p = score_map(a.view(), b.view()).unwrap();
        assert!(w.iter().zip(p.iter()).all(|(x, y)| (x - y).abs() <= 1e-7 * y.abs().max(1e-6)));
    }

    #[test]
    fn bad_metrics_and_inputs_are_refused() {
        assert_eq!(estimate(std::iter::empty(), 1), Err(MetricError::Empty));
        let z = Array3::<f32>::zeros((3, 4, 4));
        assert_eq!(estimate([(z.view(), z.view())], 1), Err(MetricError::Degenerate));
        assert!(matches!(estimate([(z.view(), z.view())], 2), Err(MetricError::Invalid { .. })));
        assert!(matches!(estimate([(z.view(), z.view())], 9), Err(MetricError::TooSmall { k: 9, need: 5, h: 4, w: 4 })));
        assert!(matches!(to_array(&[vec![1.0, 0.0]], 2, 1), Err(MetricError::Invalid { .. })));
        assert!(matches!(to_array(&[vec![1.0, 0.5], vec![0.0, 1.0]], 2, 1), Err(MetricError::Invalid { .. })));
        assert!(matches!(to_array(&[vec![0.0, 0.0], vec![0.0, 1.0]], 2, 1), Err(MetricError::Invalid { .. })));
        assert!(matches!(to_array(&[vec![f64::NAN, 0.0], vec![0.0, 1.0]], 2, 1), Err(MetricError::Invalid { .. })));
        assert!(to_array(&[vec![2.0, 0.5], vec![0.5, 1.0]], 2, 1).is_ok());
        // A 2×2 metric is one channel's 1×1 or two channels' 1×1, never a 3×3 patch.
        assert!(matches!(to_array(&[vec![2.0, 0.5], vec![0.5, 1.0]], 1, 3), Err(MetricError::Invalid { .. })));
        let eye9: Vec<Vec<f64>> = (0..9).map(|i| (0..9).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect();
        assert!(to_array(&eye9, 1, 3).is_ok());
    }
}
