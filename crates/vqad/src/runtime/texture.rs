//! Local texture statistics and how far a pixel's neighbourhood departs from the normals'.
//!
//! Why: where the VQ-VAE renders a stochastic or fibrous surface as a blur, a defect that is
//! smoother or darker than the surface (a hole in grass) leaves *less* residual than the
//! surface around it, and a map that counts excess residual cannot see it. The surface's local
//! statistics see it in either direction: per pixel, over a window, the grey level's mean, the
//! log of its standard deviation and the log of the gradient energy, optionally the colour
//! channels' means, scored by the Mahalanobis distance to the same features pooled over normal
//! images, then Gaussian-smoothed. With the grey features alone this is the model-free
//! baseline every report shows beside ℓ2 (`eval --ablation`'s `texture_stats`); with colour it
//! is the second half of the packaged map (see `runtime::detector`).
//!
//! Windows and σ scale with the image side: 9×9 and σ = 2 px at 128².

use super::score::reflect101;
use super::whiten::invert_spd;
use crate::config::TextureMap;
use ndarray::{Array2, Array3, ArrayView3, Axis};

/// Why statistics could not be fitted or used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TextureError {
    #[error("no normal images to fit the texture statistics on")]
    Empty,
    #[error("image shapes differ: {0:?} vs {1:?}")]
    Shape(Vec<usize>, Vec<usize>),
    #[error("the normal images' texture statistics are degenerate (a constant image?)")]
    Degenerate,
    #[error("texture statistics: {0}")]
    Invalid(String),
}

/// Box window side for images of side `size`: 9 at 128², odd, at least 3.
pub fn window_for(size: usize) -> usize {
    let w = (9.0 * size as f64 / 128.0).round() as usize;
    (w | 1).max(3)
}

/// Gaussian σ of the smoothing for images of side `size`: 2 px at 128².
pub fn sigma_for(size: usize) -> f64 {
    2.0 * size as f64 / 128.0
}

/// Grey level of a [C, H, W] image: ITU-R 601 luma for three channels, the channel itself for
/// one, the channel mean otherwise.
pub fn grey(img: ArrayView3<f32>) -> Array2<f64> {
    let (c, h, w) = img.dim();
    Array2::from_shape_fn((h, w), |(y, x)| match c {
        3 => 0.299 * img[[0, y, x]] as f64 + 0.587 * img[[1, y, x]] as f64 + 0.114 * img[[2, y, x]] as f64,
        _ => (0..c).map(|ch| img[[ch, y, x]] as f64).sum::<f64>() / c.max(1) as f64,
    })
}

/// Mean over the `k`×`k` window centred on each pixel, reflected at the border (OpenCV's
/// BORDER_REFLECT_101), by separable running sums.
pub fn box_mean(a: &Array2<f64>, k: usize) -> Array2<f64> {
    let (h, w) = a.dim();
    let r = (k / 2) as isize;
    let pass = |src: &Array2<f64>, along_rows: bool| -> Array2<f64> {
        let (n_lines, len) = if along_rows { (h, w) } else { (w, h) };
        let mut out = Array2::<f64>::zeros((h, w));
        let at = |line: usize, p: usize| if along_rows { src[[line, p]] } else { src[[p, line]] };
        for line in 0..n_lines {
            let mut sum: f64 = (-r..=r).map(|d| at(line, reflect101(d, len))).sum();
            for p in 0..len {
                let v = sum / k as f64;
                if along_rows {
                    out[[line, p]] = v;
                } else {
                    out[[p, line]] = v;
                }
                let (add, drop) = (p as isize + r + 1, p as isize - r);
                sum += at(line, reflect101(add, len)) - at(line, reflect101(drop, len));
            }
        }
        out
    };
    pass(&pass(a, true), false)
}

/// Per-pixel feature maps [F, H, W] of a [C, H, W] image in [0, 1] over `window`×`window`:
/// the grey level's local mean, ln(local standard deviation + 10⁻³) and ln(mean gradient
/// energy + 10⁻⁶) (central differences, reflected), then with `colour` each channel's local
/// mean (for C > 1).
pub fn features(img: ArrayView3<f32>, window: usize, colour: bool) -> Array3<f32> {
    let (c, h, w) = img.dim();
    let g = grey(img);
    let mean = box_mean(&g, window);
    let sq = box_mean(&g.mapv(|v| v * v), window);
    let grad = Array2::from_shape_fn((h, w), |(y, x)| {
        let at = |dy: isize, dx: isize| g[[reflect101(y as isize + dy, h), reflect101(x as isize + dx, w)]];
        let gx = 0.5 * (at(0, 1) - at(0, -1));
        let gy = 0.5 * (at(1, 0) - at(-1, 0));
        gx * gx + gy * gy
    });
    let energy = box_mean(&grad, window);
    let extra = if colour && c > 1 { c } else { 0 };
    let mut out = Array3::<f32>::zeros((3 + extra, h, w));
    for y in 0..h {
        for x in 0..w {
            let m = mean[[y, x]];
            let sd = (sq[[y, x]] - m * m).max(0.0).sqrt();
            out[[0, y, x]] = m as f32;
            out[[1, y, x]] = (sd + 1e-3).ln() as f32;
            out[[2, y, x]] = (energy[[y, x]] + 1e-6).ln() as f32;
        }
    }
    for ch in 0..extra {
        let m = box_mean(&img.index_axis(Axis(0), ch).mapv(|v| v as f64), window);
        out.index_axis_mut(Axis(0), 3 + ch).assign(&m.mapv(|v| v as f32));
    }
    out
}

/// The normals' features as a Gaussian: their mean and the inverse of their covariance (with
/// a ridge of 10⁻⁶ of its mean eigenvalue, so a feature that never varied on the normals is
/// scored finitely).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsModel {
    pub mean: Vec<f64>,
    /// F×F, rows first.
    pub precision: Vec<Vec<f64>>,
}

impl StatsModel {
    /// Fits the model on feature maps [F, H, W] of normal images, every pixel counted.
    pub fn fit(maps: &[Array3<f32>]) -> Result<Self, TextureError> {
        let first = maps.first().ok_or(TextureError::Empty)?;
        let f = first.dim().0;
        let (mut n, mut sum, mut outer) = (0f64, vec![0f64; f], vec![vec![0f64; f]; f]);
        for m in maps {
            if m.dim() != first.dim() {
                return Err(TextureError::Shape(first.shape().to_vec(), m.shape().to_vec()));
            }
            let (_, h, w) = m.dim();
            let mut v = vec![0f64; f];
            for y in 0..h {
                for x in 0..w {
                    for (i, vi) in v.iter_mut().enumerate() {
                        *vi = m[[i, y, x]] as f64;
                    }
                    for i in 0..f {
                        sum[i] += v[i];
                        for j in 0..=i {
                            outer[i][j] += v[i] * v[j];
                        }
                    }
                    n += 1.0;
                }
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let mut cov = Array2::<f64>::zeros((f, f));
        for i in 0..f {
            for j in 0..=i {
                let c = outer[i][j] / n - mean[i] * mean[j];
                cov[[i, j]] = c;
                cov[[j, i]] = c;
            }
        }
        let trace: f64 = (0..f).map(|i| cov[[i, i]]).sum();
        if !(trace > 0.0 && trace.is_finite()) {
            return Err(TextureError::Degenerate);
        }
        for i in 0..f {
            cov[[i, i]] += 1e-6 * trace / f as f64;
        }
        let inv = invert_spd(&cov).ok_or(TextureError::Degenerate)?;
        let precision = (0..f).map(|i| (0..f).map(|j| 0.5 * (inv[[i, j]] + inv[[j, i]])).collect()).collect();
        Ok(StatsModel { mean, precision })
    }

    /// Features per pixel.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Checks the shapes and values (what a manifest may carry).
    pub fn check(&self) -> Result<(), TextureError> {
        let f = self.mean.len();
        if f == 0 || self.precision.len() != f || self.precision.iter().any(|r| r.len() != f) {
            return Err(TextureError::Invalid(format!("precision must be {f}×{f} for {f} features")));
        }
        if self.mean.iter().chain(self.precision.iter().flatten()).any(|v| !v.is_finite()) {
            return Err(TextureError::Invalid("mean and precision must be finite".into()));
        }
        for i in 0..f {
            if self.precision[i][i] <= 0.0 {
                return Err(TextureError::Invalid(format!("precision diagonal entry {i} must be positive")));
            }
            for j in 0..f {
                let (a, b) = (self.precision[i][j], self.precision[j][i]);
                if (a - b).abs() > 1e-9 * a.abs().max(b.abs()).max(1.0) {
                    return Err(TextureError::Invalid("precision must be symmetric".into()));
                }
            }
        }
        Ok(())
    }

    /// Mahalanobis distance of each pixel's features to the normals', [H, W].
    pub fn distance(&self, feats: &Array3<f32>) -> Result<Array2<f32>, TextureError> {
        let (f, h, w) = feats.dim();
        if f != self.dim() {
            return Err(TextureError::Invalid(format!("{f} features per pixel, the model has {}", self.dim())));
        }
        let mut d = vec![0f64; f];
        Ok(Array2::from_shape_fn((h, w), |(y, x)| {
            for (i, di) in d.iter_mut().enumerate() {
                *di = feats[[i, y, x]] as f64 - self.mean[i];
            }
            let q: f64 = (0..f).map(|i| d[i] * (0..f).map(|j| self.precision[i][j] * d[j]).sum::<f64>()).sum();
            q.max(0.0).sqrt() as f32
        }))
    }
}

/// Separable Gaussian blur with σ in pixels, kernel radius ⌈3σ⌉, reflected at the border.
pub fn gaussian_blur(map: &Array2<f32>, sigma: f64) -> Array2<f32> {
    if sigma <= 0.0 {
        return map.clone();
    }
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f64> = (-r..=r).map(|d| (-(d * d) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let norm: f64 = k.iter().sum();
    let (h, w) = map.dim();
    let rows = Array2::from_shape_fn((h, w), |(y, x)| {
        (-r..=r).zip(&k).map(|(d, kv)| kv * map[[y, reflect101(x as isize + d, w)]] as f64).sum::<f64>() / norm
    });
    Array2::from_shape_fn((h, w), |(y, x)| {
        ((-r..=r).zip(&k).map(|(d, kv)| kv * rows[[reflect101(y as isize + d, h), x]]).sum::<f64>() / norm) as f32
    })
}

/// The package's map from its smoothed residual map and the input image, with the texture half
/// `t` (see [`crate::config::TextureMap`]): residual / residual_scale + weight · texture /
/// texture_scale.
pub fn fused(residual: &Array2<f32>, input: ArrayView3<f32>, t: &TextureMap) -> Result<Array2<f32>, TextureError> {
    let (c, h, w) = input.dim();
    if residual.dim() != (h, w) {
        return Err(TextureError::Shape(residual.shape().to_vec(), vec![h, w]));
    }
    t.check(c).map_err(TextureError::Invalid)?;
    let model = StatsModel { mean: t.mean.clone(), precision: t.precision.clone() };
    let texture = gaussian_blur(&model.distance(&features(input, t.window, t.colour))?, t.sigma);
    let (a, b) = ((1.0 / t.residual_scale) as f32, (t.weight / t.texture_scale) as f32);
    let mut out = residual * a;
    out.zip_mut_with(&texture, |o, &v| *o += b * v);
    Ok(out)
}

/// The texture-statistics detector: features fitted on `normals`, each map the smoothed
/// distance (grey features alone: the model-free baseline).
pub struct TextureDetector {
    pub model: StatsModel,
    pub window: usize,
    pub sigma: f64,
    pub colour: bool,
}

impl TextureDetector {
    /// Fits on normal images [C, H, W] (all the same shape).
    pub fn fit(normals: &[ArrayView3<f32>], colour: bool) -> Result<Self, TextureError> {
        let first = normals.first().ok_or(TextureError::Empty)?;
        let size = first.dim().1.min(first.dim().2);
        let window = window_for(size);
        let maps: Vec<Array3<f32>> = normals.iter().map(|n| features(n.view(), window, colour)).collect();
        Ok(TextureDetector { model: StatsModel::fit(&maps)?, window, sigma: sigma_for(size), colour })
    }

    /// The smoothed distance map of one image.
    pub fn map(&self, img: ArrayView3<f32>) -> Result<Array2<f32>, TextureError> {
        Ok(gaussian_blur(&self.model.distance(&features(img, self.window, self.colour))?, self.sigma))
    }

    /// The texture half of a package's map, with both halves' scales measured on the
    /// validation normals (`residual_val` their smoothed residual maps, `val` their images):
    /// the 99th percentile of each map over all their pixels.
    pub fn to_texture_map(&self, residual_val: &[Array2<f32>], val: &[ArrayView3<f32>], weight: f64) -> Result<TextureMap, TextureError> {
        let texture_val = val.iter().map(|v| self.map(*v)).collect::<Result<Vec<_>, _>>()?;
        let (rs, ts) = (percentile(residual_val, 0.99), percentile(&texture_val, 0.99));
        if !(rs > 0.0 && ts > 0.0) {
            return Err(TextureError::Degenerate);
        }
        Ok(TextureMap {
            colour: self.colour,
            window: self.window,
            sigma: self.sigma,
            mean: self.model.mean.clone(),
            precision: self.model.precision.clone(),
            residual_scale: rs,
            texture_scale: ts,
            weight,
        })
    }
}

/// The `q` quantile (0–1, nearest rank) of every pixel of `maps`; 0 for no pixels.
pub fn percentile(maps: &[Array2<f32>], q: f64) -> f64 {
    let mut v: Vec<f32> = maps.iter().flat_map(|m| m.iter().copied()).filter(|v| v.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)] as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn windows_and_sigma_scale_with_the_image_side() {
        assert_eq!((window_for(128), sigma_for(128)), (9, 2.0));
        assert_eq!(window_for(64), 5);
        assert_eq!(window_for(256), 19);
        assert_eq!(window_for(16), 3);
    }

    #[test]
    fn box_mean_matches_a_hand_computation_with_reflection() {
        let a = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]];
        let m = box_mean(&a, 3);
        // Centre: the plain mean. Corner (0, 0): rows −1→1 and columns −1→1 reflected:
        // [[5,4,5],[2,1,2],[5,4,5]] → 33 / 9.
        assert!((m[[1, 1]] - 5.0).abs() < 1e-12);
        assert!((m[[0, 0]] - 33.0 / 9.0).abs() < 1e-12, "{}", m[[0, 0]]);
        // Edge (0, 1): rows [4,5,6],[1,2,3],[4,5,6] → 36 / 9.
        assert!((m[[0, 1]] - 4.0).abs() < 1e-12, "{}", m[[0, 1]]);
    }

    #[test]
    fn features_of_a_flat_and_a_striped_image() {
        let flat = Array3::from_elem((1, 12, 12), 0.25f32);
        let f = features(flat.view(), 3, false);
        assert_eq!(f.dim(), (3, 12, 12));
        assert!(f.index_axis(Axis(0), 0).iter().all(|&v| (v - 0.25).abs() < 1e-6));
        assert!(f.index_axis(Axis(0), 1).iter().all(|&v| (v - (1e-3f32).ln()).abs() < 1e-4));
        assert!(f.index_axis(Axis(0), 2).iter().all(|&v| (v - (1e-6f32).ln()).abs() < 1e-3));
        // Vertical stripes 0/1: a 3×3 window holds 3 or 6 ones of 9 (mean 1/3 or 2/3, variance
        // 2/9); a central difference spans two columns of the same parity, so the gradient
        // energy stays at its floor.
        let stripes = Array3::from_shape_fn((1, 12, 12), |(_, _, x)| (x % 2) as f32);
        let f = features(stripes.view(), 3, false);
        let m = f[[0, 5, 5]];
        assert!((m - 1.0 / 3.0).abs() < 1e-6 || (m - 2.0 / 3.0).abs() < 1e-6, "{m}");
        let sd = ((2.0f64 / 9.0) as f32).sqrt();
        assert!((f[[1, 5, 5]] - (sd + 1e-3).ln()).abs() < 1e-4, "{}", f[[1, 5, 5]]);
        // Colour adds one local mean per channel.
        let rgb = Array3::from_shape_fn((3, 8, 8), |(c, _, _)| c as f32 / 4.0);
        let f = features(rgb.view(), 3, true);
        assert_eq!(f.dim().0, 6);
        assert!((f[[5, 4, 4]] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn mahalanobis_distance_matches_a_hand_computation() {
        let m = StatsModel { mean: vec![1.0, 2.0], precision: vec![vec![4.0, 0.0], vec![0.0, 0.25]] };
        m.check().unwrap();
        let f = Array3::from_shape_vec((2, 1, 2), vec![1.5, 1.0, 2.0, 6.0]).unwrap();
        let d = m.distance(&f).unwrap();
        // (0.5² · 4 + 0) = 1 → 1; (0 + 4² · 0.25) = 4 → 2.
        assert!((d[[0, 0]] - 1.0).abs() < 1e-6 && (d[[0, 1]] - 2.0).abs() < 1e-6, "{d:?}");
    }

    #[test]
    fn the_fit_recovers_mean_and_covariance() {
        // Two features, pixels (0, 0), (2, 0), (0, 2), (2, 2): mean (1, 1), covariance I.
        let maps = vec![Array3::from_shape_vec((2, 2, 2), vec![0.0, 2.0, 0.0, 2.0, 0.0, 0.0, 2.0, 2.0]).unwrap()];
        let m = StatsModel::fit(&maps).unwrap();
        assert_eq!(m.mean, vec![1.0, 1.0]);
        for i in 0..2 {
            for j in 0..2 {
                let want = if i == j { 1.0 / (1.0 + 1e-6) } else { 0.0 };
                assert!((m.precision[i][j] - want).abs() < 1e-9, "{:?}", m.precision);
            }
        }
        assert_eq!(StatsModel::fit(&[]), Err(TextureError::Empty));
        assert_eq!(StatsModel::fit(&[Array3::zeros((2, 3, 3))]), Err(TextureError::Degenerate));
    }

    #[test]
    fn a_flat_hole_in_a_texture_stands_out_where_the_residual_of_a_blur_would_not() {
        // Normals: a fine random texture. Test: the same texture with a flat dark hole.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut texture = || Array3::from_shape_fn((1, 48, 48), |_| rng.random_range(0.3f32..0.9));
        let normals: Vec<Array3<f32>> = (0..6).map(|_| texture()).collect();
        let views: Vec<_> = normals.iter().map(|n| n.view()).collect();
        let det = TextureDetector::fit(&views, false).unwrap();
        let mut test = texture();
        for y in 18..30 {
            for x in 18..30 {
                test[[0, y, x]] = 0.05;
            }
        }
        let map = det.map(test.view()).unwrap();
        let inside = map[[24, 24]];
        let outside = map.iter().enumerate().filter(|(i, _)| {
            let (y, x) = (i / 48, i % 48);
            !(10..38).contains(&y) || !(10..38).contains(&x)
        }).map(|(_, v)| *v).fold(0f32, f32::max);
        assert!(inside > 3.0 * outside, "hole {inside} vs surface {outside}");
    }

    #[test]
    fn gaussian_blur_keeps_a_constant_and_spreads_a_point() {
        let c = Array2::from_elem((9, 9), 2.0f32);
        assert!(gaussian_blur(&c, 1.5).iter().all(|v| (v - 2.0).abs() < 1e-5));
        let mut p = Array2::<f32>::zeros((11, 11));
        p[[5, 5]] = 1.0;
        let b = gaussian_blur(&p, 1.0);
        assert!((b.sum() - 1.0).abs() < 1e-4);
        assert!(b[[5, 5]] > b[[5, 6]] && (b[[5, 6]] - b[[6, 5]]).abs() < 1e-7);
    }
}
