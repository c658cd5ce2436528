//! Anomaly score (paper eq. 6) and its post-processing: OpenCV-exact bilateral smoothing,
//! binarisation, 8-connected components and the Bergmann et al. image decision.

use ndarray::{Array2, ArrayBase, ArrayView3, Data, Ix2, Zip};

/// Errors of the scoring functions.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScoreError {
    #[error("shape mismatch: {a:?} vs {b:?}")]
    ShapeMismatch { a: Vec<usize>, b: Vec<usize> },
    #[error("map holds a non-finite value ({0}); the bilateral filter needs finite values")]
    NonFinite(f32),
    #[error("residual metric: {0}")]
    Metric(#[from] super::whiten::MetricError),
}

/// Eq. 6: A(i, j) = Σ_c (x_r(c, i, j) − x_d(c, i, j))², summed over channels in f32.
///
/// `restored` is the decoded resampled table, `direct` the decoded original table, both
/// [C, H, W] in [0, 1]. The §4.5 ablation (input vs reconstruction) is the same function with
/// `(input, direct)`.
pub fn score_map(restored: ArrayView3<f32>, direct: ArrayView3<f32>) -> Result<Array2<f32>, ScoreError> {
    if restored.shape() != direct.shape() {
        return Err(ScoreError::ShapeMismatch { a: restored.shape().to_vec(), b: direct.shape().to_vec() });
    }
    let (_, h, w) = restored.dim();
    let mut out = Array2::<f32>::zeros((h, w));
    for (r, d) in restored.outer_iter().zip(direct.outer_iter()) {
        Zip::from(&mut out).and(&r).and(&d).for_each(|o, &r, &d| {
            let e = r - d;
            *o += e * e;
        });
    }
    Ok(out)
}

/// OpenCV's `borderInterpolate` for BORDER_REFLECT_101 (`gfedcb|abcdefgh|gfedcba`), repeated
/// for offsets larger than the image like OpenCV does.
pub(crate) fn reflect101(mut p: isize, len: usize) -> usize {
    let len = len as isize;
    if len == 1 {
        return 0;
    }
    while p < 0 || p >= len {
        if p < 0 {
            p = -p;
        } else {
            p = 2 * len - 2 - p;
        }
    }
    p as usize
}

/// Number of exp lookup-table bins per channel in OpenCV's float path
/// (`kExpNumBinsPerChannel = 1 << 12`).
const EXP_BINS: usize = 1 << 12;

/// Bilateral filter with the semantics of OpenCV's `cv::bilateralFilter` on a single-channel
/// float32 image (`bilateralFilter_32f`, OpenCV 4.x), so packages behave like the Python
/// pipelines people compare against:
///
/// - A σ ≤ 0 returns the map unchanged (what OpenCV 4.12 does); radius = d/2 when d > 0,
///   else round(1.5·σ_space); at least 1.
/// - Space weights exp(−r²/(2σ_space²)) only for offsets with r ≤ radius (a disc, not the
///   square), the centre excluded and added afterwards with weight 1:
///   out = (Σ w·v + centre) / (Σ w + 1).
/// - Range weights come from OpenCV's lookup table: 4096 bins spanning [0, max − min] of *this
///   map*, exp(−x²/(2σ_color²)) per bin edge (0 after the first underflow), linearly
///   interpolated at |v − centre|·4096/(max − min). A constant map (max − min < f32::EPSILON)
///   is returned unchanged.
/// - Border: BORDER_REFLECT_101 (OpenCV's default).
///
/// **Intensity scale of σ_color:** raw score-map units — squared [0, 1] intensity differences
/// summed over channels (eq. 6), so values lie in [0, C]. At the paper's σ_color = 75 the range
/// term is exp(−Δ²/11250) ≈ 1 for every Δ ≤ 3: the filter acts as a disc-truncated Gaussian
/// (σ_space = 75 over a radius-10 disc, i.e. nearly a disc mean). σ_color matters only when it is
/// comparable to the score differences (e.g. ≤ 1).
///
/// Matches `cv2.bilateralFilter` within 1e-4 (tested); sums are in f32 like OpenCV's.
/// Errors on non-finite input (OpenCV's result would be undefined there).
pub fn bilateral_filter<S: Data<Elem = f32>>(
    map: &ArrayBase<S, Ix2>,
    d: i32,
    sigma_color: f64,
    sigma_space: f64,
) -> Result<Array2<f32>, ScoreError> {
    let (h, w) = map.dim();
    if h == 0 || w == 0 {
        return Ok(map.to_owned());
    }
    let mut min_v = f32::INFINITY;
    let mut max_v = f32::NEG_INFINITY;
    for &v in map.iter() {
        if !v.is_finite() {
            return Err(ScoreError::NonFinite(v));
        }
        min_v = min_v.min(v);
        max_v = max_v.max(v);
    }
    // OpenCV 4.12 returns the input when a sigma is not positive (measured with cv2).
    if !(sigma_color > 0.0 && sigma_space > 0.0) {
        return Ok(map.to_owned());
    }
    let gauss_color = -0.5 / (sigma_color * sigma_color);
    let gauss_space = -0.5 / (sigma_space * sigma_space);
    let radius: usize = if d <= 0 { (sigma_space * 1.5).round() as i64 } else { (d / 2) as i64 }.max(1) as usize;
    // OpenCV compares the double min/max difference against FLT_EPSILON.
    if ((max_v as f64) - (min_v as f64)).abs() < f32::EPSILON as f64 {
        return Ok(map.to_owned());
    }

    // Exp lookup table exactly as OpenCV builds it (float `len` and `scale_index`).
    let len = (max_v as f64 - min_v as f64) as f32;
    let scale_index = EXP_BINS as f32 / len;
    let mut lut = vec![0f32; EXP_BINS + 2];
    let mut last = 1f32;
    for (i, e) in lut.iter_mut().enumerate() {
        if last > 0.0 {
            let val = (i as f32 / scale_index) as f64;
            *e = (val * val * gauss_color).exp() as f32;
            last = *e;
        } else {
            *e = 0.0;
        }
    }

    // Padded copy (BORDER_REFLECT_101), row-major, so every offset is a fixed stride.
    let pw = w + 2 * radius;
    let ph = h + 2 * radius;
    let col_src: Vec<usize> = (0..pw).map(|x| reflect101(x as isize - radius as isize, w)).collect();
    let mut pad = vec![0f32; pw * ph];
    for y in 0..ph {
        let sy = reflect101(y as isize - radius as isize, h);
        let row = &mut pad[y * pw..(y + 1) * pw];
        for (x, &sx) in col_src.iter().enumerate() {
            row[x] = map[[sy, sx]];
        }
    }

    // Disc offsets and space weights, centre excluded (same order as OpenCV: rows, then cols).
    let r = radius as isize;
    let mut offs: Vec<usize> = Vec::new();
    let mut sw: Vec<f32> = Vec::new();
    for i in -r..=r {
        for j in -r..=r {
            let rr = ((i * i + j * j) as f64).sqrt();
            if rr > radius as f64 || (i == 0 && j == 0) {
                continue;
            }
            sw.push((rr * rr * gauss_space).exp() as f32);
            offs.push(((i + r) as usize) * pw + (j + r) as usize);
        }
    }

    let mut out = Array2::<f32>::zeros((h, w));
    let mut sum = vec![0f32; w];
    let mut wsum = vec![0f32; w];
    for y in 0..h {
        sum.iter_mut().for_each(|v| *v = 0.0);
        wsum.iter_mut().for_each(|v| *v = 0.0);
        // Window origin for output row y is padded row y (top-left of the (2r+1)² square).
        let base = y * pw;
        let centre = &pad[base + radius * pw + radius..base + radius * pw + radius + w];
        for (&off, &swk) in offs.iter().zip(sw.iter()) {
            let src = &pad[base + off..base + off + w];
            for j in 0..w {
                let val = src[j];
                let mut alpha = (val - centre[j]).abs() * scale_index;
                // alpha ≤ 4096 by construction; the clamp only guards rounding at the top bin.
                let idx = (alpha.floor() as usize).min(EXP_BINS);
                alpha -= idx as f32;
                let wgt = swk * (lut[idx] + alpha * (lut[idx + 1] - lut[idx]));
                wsum[j] += wgt;
                sum[j] += val * wgt;
            }
        }
        let mut orow = out.row_mut(y);
        for j in 0..w {
            orow[j] = (sum[j] + centre[j]) / (wsum[j] + 1.0);
        }
    }
    Ok(out)
}

/// 1 where `map > threshold`, else 0 (strictly above: a threshold equal to the map's maximum
/// marks nothing).
pub fn binarize<S: Data<Elem = f32>>(map: &ArrayBase<S, Ix2>, threshold: f32) -> Array2<u8> {
    map.mapv(|v| u8::from(v > threshold))
}

/// 8-connected components of the non-zero pixels of `mask`.
///
/// Returns the label image (0 = background, components numbered 1.. in raster order of their
/// first pixel) and the areas: `areas[l - 1]` is the pixel count of label `l`.
pub fn connected_components<S: Data<Elem = u8>>(mask: &ArrayBase<S, Ix2>) -> (Array2<u32>, Vec<usize>) {
    let (h, w) = mask.dim();
    let mut labels = Array2::<u32>::zeros((h, w));
    let mut areas = Vec::new();
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for y in 0..h {
        for x in 0..w {
            if mask[[y, x]] == 0 || labels[[y, x]] != 0 {
                continue;
            }
            let label = areas.len() as u32 + 1;
            let mut area = 0usize;
            labels[[y, x]] = label;
            stack.push((y, x));
            while let Some((cy, cx)) = stack.pop() {
                area += 1;
                for ny in cy.saturating_sub(1)..=(cy + 1).min(h - 1) {
                    for nx in cx.saturating_sub(1)..=(cx + 1).min(w - 1) {
                        if mask[[ny, nx]] != 0 && labels[[ny, nx]] == 0 {
                            labels[[ny, nx]] = label;
                            stack.push((ny, nx));
                        }
                    }
                }
            }
            areas.push(area);
        }
    }
    (labels, areas)
}

/// Area of the largest 8-connected component of the non-zero pixels (0 when there is none).
pub fn largest_component<S: Data<Elem = u8>>(mask: &ArrayBase<S, Ix2>) -> usize {
    connected_components(mask).1.into_iter().max().unwrap_or(0)
}

/// Bergmann et al.'s image decision: anomalous when some 8-connected component of pixels
/// `> threshold` has area ≥ `min_area` (a `min_area` of 0 acts as 1: any pixel above).
pub fn is_anomalous<S: Data<Elem = f32>>(smoothed: &ArrayBase<S, Ix2>, threshold: f32, min_area: usize) -> bool {
    largest_component(&binarize(smoothed, threshold)) >= min_area.max(1)
}

/// The maximum of the smoothed map (None for an empty map; NaN is ignored): MVTec's image
/// score, which a few bright pixels of a busy normal surface raise as much as a defect.
pub fn max_score<S: Data<Elem = f32>>(smoothed: &ArrayBase<S, Ix2>) -> Option<f32> {
    smoothed.iter().copied().filter(|v| !v.is_nan()).reduce(f32::max)
}

/// The image score of Bergmann et al.'s decision: the smallest of the map's values t at which
/// no 8-connected component of pixels `> t` has `min_area` pixels (0 acts as 1), so the image
/// is anomalous at a pixel threshold exactly when the threshold is below this score
/// ([`is_anomalous`]). Unlike the map's maximum, it needs `min_area` pixels together above a
/// value; on stochastic surfaces the maximum of a normal image's map is often one such spike.
/// None for an empty map; NaN pixels never count as above. A map with no component of
/// `min_area` pixels at any threshold (fewer pixels than that) scores its lowest value and is
/// never anomalous.
///
/// Pixels join in descending order, merged with their already-joined 8-neighbours
/// (union–find): the value at which a component first reaches `min_area` is the score.
pub fn image_score<S: Data<Elem = f32>>(smoothed: &ArrayBase<S, Ix2>, min_area: usize) -> Option<f32> {
    let (h, w) = smoothed.dim();
    let limit = min_area.max(1);
    let mut order: Vec<usize> = (0..h * w).filter(|&i| !smoothed[[i / w, i % w]].is_nan()).collect();
    let lowest = order.iter().map(|&i| smoothed[[i / w, i % w]]).reduce(f32::min)?;
    order.sort_unstable_by(|&a, &b| smoothed[[b / w, b % w]].total_cmp(&smoothed[[a / w, a % w]]));
    let mut parent: Vec<usize> = (0..h * w).collect();
    let mut size = vec![0usize; h * w];
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for &i in &order {
        size[i] = 1;
        let (y, x) = (i / w, i % w);
        for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
            for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                let j = ny * w + nx;
                if size[j] == 0 || j == i {
                    continue;
                }
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                if a != b {
                    let (big, small) = if size[a] >= size[b] { (a, b) } else { (b, a) };
                    parent[small] = big;
                    size[big] += size[small];
                }
            }
        }
        if size[root(&mut parent, i)] >= limit {
            return Some(smoothed[[y, x]]);
        }
    }
    // No component ever reaches the area: every value qualifies, the smallest is the score.
    Some(lowest)
}

/// The prior's excess surprise at the input's codes as a pixel map [h, w]:
/// max(0, −log p(z_mn | z_<mn) − H_mn) of the latent cell each pixel falls in. Subtracting the
/// entropy H keeps positions the prior is always unsure about (busy texture) near 0 while a code
/// the prior confidently did not expect stands out.
pub fn surprise_map(log_prob: &Array2<f32>, entropy: &Array2<f32>, h: usize, w: usize) -> Array2<f32> {
    let (m, n) = log_prob.dim();
    Array2::from_shape_fn((h, w), |(i, j)| {
        let (a, b) = (i * m / h.max(1), j * n / w.max(1));
        (-log_prob[[a, b]] - entropy[[a, b]]).max(0.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array3};

    #[test]
    fn score_is_the_channel_sum_of_squares() {
        let a = Array3::from_shape_vec((2, 1, 2), vec![1.0f32, 0.5, 0.0, 0.25]).unwrap();
        let b = Array3::from_shape_vec((2, 1, 2), vec![0.0f32, 0.5, 0.5, 0.0]).unwrap();
        let s = score_map(a.view(), b.view()).unwrap();
        assert_eq!(s, array![[1.25f32, 0.0625]]);
        let c = Array3::<f32>::zeros((2, 2, 2));
        assert!(matches!(score_map(a.view(), c.view()), Err(ScoreError::ShapeMismatch { .. })));
    }

    /// The definition itself: the smallest distinct map value t whose pixels `> t` hold no
    /// component of `limit` pixels, by a scan over every value.
    fn image_score_naive(map: &Array2<f32>, limit: usize) -> f32 {
        let mut values: Vec<f32> = map.iter().copied().collect();
        values.sort_by(f32::total_cmp);
        values.dedup();
        *values.iter().find(|&&t| largest_component(&binarize(map, t)) < limit.max(1)).expect("the maximum qualifies")
    }

    #[test]
    fn the_area_score_equals_the_decision_rule_by_definition() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for case in 0..300 {
            let (h, w) = (rng.random_range(1..14), rng.random_range(1..14));
            // Few levels, so ties are common.
            let levels = rng.random_range(1..6);
            let map = Array2::from_shape_fn((h, w), |_| rng.random_range(0..levels) as f32 / 4.0);
            for limit in [0, 1, 2, 3, 5, 8, 200] {
                let fast = image_score(&map, limit).unwrap();
                assert_eq!(fast, image_score_naive(&map, limit), "case {case}, limit {limit}, map {map:?}");
                // Anomalous at a threshold exactly when the threshold is below the score (where
                // the map can hold a component of that size at all).
                if largest_component(&binarize(&map, f32::NEG_INFINITY)) < limit.max(1) {
                    assert!(!is_anomalous(&map, f32::NEG_INFINITY, limit));
                    continue;
                }
                for t in [fast - 0.1, fast, fast + 0.1] {
                    assert_eq!(is_anomalous(&map, t, limit), t < fast, "case {case}, limit {limit}, t {t}");
                }
            }
        }
        // One bright pixel on a flat map scores nothing above the flat level for an area of 2;
        // a 2-pixel blob scores its lower value.
        let mut m = Array2::<f32>::zeros((5, 5));
        m[[2, 2]] = 9.0;
        assert_eq!((image_score(&m, 1), image_score(&m, 2)), (Some(9.0), Some(0.0)));
        m[[2, 3]] = 4.0;
        assert_eq!(image_score(&m, 2), Some(4.0));
        assert_eq!(image_score(&Array2::<f32>::zeros((0, 3)), 1), None);
    }

    #[test]
    fn reflect101_matches_opencv() {
        // gfedcb|abcdefgh|gfedcba for len 8
        let got: Vec<usize> = (-3..11).map(|p| reflect101(p, 8)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 4, 5, 6, 7, 6, 5, 4]);
        assert_eq!(reflect101(-5, 2), 1);
        assert_eq!(reflect101(7, 1), 0);
    }

    #[test]
    fn components_are_8_connected() {
        let m = array![[1u8, 0, 0, 1], [0, 1, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1]];
        let (labels, areas) = connected_components(&m);
        assert_eq!(areas, vec![2, 2, 2, 1]);
        assert_eq!(labels[[1, 1]], 1);
        assert_eq!(labels[[3, 3]], 4);
        assert_eq!(largest_component(&m), 2);
        assert_eq!(largest_component(&Array2::<u8>::zeros((3, 3))), 0);
    }

    #[test]
    fn decision_and_score() {
        let s = array![[0.0f32, 0.9, 0.9], [0.0, 0.0, 0.9], [0.5, 0.0, 0.0]];
        assert!(is_anomalous(&s, 0.4, 3));
        assert!(!is_anomalous(&s, 0.4, 4));
        assert!(!is_anomalous(&s, 0.9, 0));
        assert!(is_anomalous(&s, 0.8, 0));
        assert_eq!(max_score(&s), Some(0.9));
        assert_eq!(max_score(&Array2::<f32>::zeros((0, 0))), None);
    }

    #[test]
    fn bilateral_rejects_nan_and_keeps_constant_maps() {
        let mut m = Array2::<f32>::from_elem((4, 4), 0.3);
        assert_eq!(bilateral_filter(&m, 5, 1.0, 1.0).unwrap(), m);
        m[[1, 1]] = f32::NAN;
        assert!(matches!(bilateral_filter(&m, 5, 1.0, 1.0), Err(ScoreError::NonFinite(_))));
    }
}
