//! Label-free operating point (Bergmann et al., paper §4.2) and the §4.3.3 synthetic negatives.

use super::metrics::EvalError;
use crate::runtime::score::{binarize, largest_component};
use ndarray::{s, Array2, Array3};
use rand::Rng;

/// Area fraction of a §4.3.3 synthetic defect (1% of the image).
pub const NEGATIVE_FRACTION: f64 = 0.01;

/// The chosen pixel threshold and how it was found.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ThresholdChoice {
    /// Pixel threshold; a pixel is anomalous when its smoothed score is `> threshold`.
    pub threshold: f32,
    /// The minimum defect area it was chosen for (as given).
    pub min_area: usize,
    /// Largest 8-connected component over all validation maps at `threshold` (< max(min_area, 1)).
    pub largest_area: usize,
    /// Distinct map values searched.
    pub candidates: usize,
    /// Largest-component evaluations done by the binary search.
    pub evaluations: usize,
}

/// Largest 8-connected component of pixels `> threshold` over all `maps`.
pub fn largest_area_over(maps: &[Array2<f32>], threshold: f32) -> usize {
    maps.iter().map(|m| largest_component(&binarize(m, threshold))).max().unwrap_or(0)
}

/// Bergmann et al.'s protocol: raise the pixel threshold over the validation normals' smoothed
/// maps until the largest connected component is *below* the minimum defect area, and return the
/// smallest such threshold.
///
/// "Below" is strict so that the threshold agrees with
/// [`crate::runtime::score::is_anomalous`] (anomalous when a component has area ≥ `min_area`):
/// at the chosen threshold every validation normal is classified good, and at the next lower
/// distinct value at least one would not be. `min_area` 0 acts as 1.
///
/// Exact search: `> t` changes only at the maps' distinct values, so the candidates are those
/// values (the maximum always qualifies: nothing is above it); the largest-component area is
/// non-increasing in t, so a binary search over the sorted values finds the smallest qualifying
/// one with ⌈log₂(#values)⌉ + 1 evaluations.
pub fn select_threshold(maps: &[Array2<f32>], min_area: usize) -> Result<ThresholdChoice, EvalError> {
    let limit = min_area.max(1);
    let mut values: Vec<f32> = Vec::with_capacity(maps.iter().map(|m| m.len()).sum());
    for (i, m) in maps.iter().enumerate() {
        if m.iter().any(|v| v.is_nan()) {
            return Err(EvalError::NaN(i));
        }
        values.extend(m.iter().copied());
    }
    if values.is_empty() {
        return Err(EvalError::InvalidArgument("no validation pixels to choose a threshold from".into()));
    }
    values.sort_unstable_by(|a, b| a.partial_cmp(b).expect("NaN rejected"));
    values.dedup();
    // Smallest index whose value qualifies; the last always does.
    let (mut lo, mut hi) = (0usize, values.len() - 1);
    let mut evaluations = 0;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        evaluations += 1;
        if largest_area_over(maps, values[mid]) < limit {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let threshold = values[lo];
    evaluations += 1;
    let largest_area = largest_area_over(maps, threshold);
    Ok(ThresholdChoice { threshold, min_area, largest_area, candidates: values.len(), evaluations })
}

/// Smallest threshold at which one map's largest component is below `limit` pixels: the
/// image's score under the package's decision rule ([`crate::runtime::score::image_score`]).
/// The image is anomalous at threshold t exactly when t is below this value.
pub fn image_threshold(map: &Array2<f32>, limit: usize) -> f32 {
    crate::runtime::score::image_score(map, limit).unwrap_or(f32::NEG_INFINITY)
}

/// Bergmann et al.'s protocol with a tolerated false-alarm rate: the smallest threshold at
/// which at most `false_alarm` of the validation normals (rounded down) still have a component
/// of `min_area` pixels or more. `false_alarm` 0 is [`select_threshold`] exactly: the strict
/// rule lets one unusual validation image set the threshold for every defect, which on real
/// photographs left PRO at the threshold near 0.
///
/// Each image's own smallest qualifying threshold t_i is found by binary search (its largest
/// component is non-increasing in t); the threshold is the ⌈(1 − false_alarm)·n⌉-th smallest
/// t_i, so exactly the images with larger t_i (at most ⌊false_alarm·n⌋) stay anomalous.
pub fn select_threshold_tolerant(maps: &[Array2<f32>], min_area: usize, false_alarm: f64) -> Result<ThresholdChoice, EvalError> {
    if !(0.0..1.0).contains(&false_alarm) {
        return Err(EvalError::InvalidArgument(format!("false_alarm must be in [0, 1), got {false_alarm}")));
    }
    if maps.iter().all(|m| m.is_empty()) {
        return Err(EvalError::InvalidArgument("no validation pixels to choose a threshold from".into()));
    }
    for (i, m) in maps.iter().enumerate() {
        if m.iter().any(|v| v.is_nan()) {
            return Err(EvalError::NaN(i));
        }
    }
    let limit = min_area.max(1);
    let mut per: Vec<f32> = maps.iter().filter(|m| !m.is_empty()).map(|m| image_threshold(m, limit)).collect();
    per.sort_unstable_by(|a, b| a.partial_cmp(b).expect("NaN rejected"));
    let allowed = (false_alarm * per.len() as f64).floor() as usize;
    let threshold = per[per.len() - 1 - allowed.min(per.len() - 1)];
    let largest_area = largest_area_over(maps, threshold);
    Ok(ThresholdChoice { threshold, min_area, largest_area, candidates: per.len(), evaluations: per.len() })
}

/// The best image accuracy (mean of the accuracy on good and on defective images) that any
/// pixel threshold reaches on these maps with the minimum area, and that threshold, taking
/// the labels: a diagnosis only — how much of the label-free threshold's shortfall is the
/// threshold's, and how much the maps' own. `None` without both classes.
pub fn best_image_accuracy(maps: &[Array2<f32>], labels: &[bool], min_area: usize) -> Result<Option<(f64, f32)>, EvalError> {
    if maps.len() != labels.len() {
        return Err(EvalError::InvalidArgument(format!("{} maps vs {} labels", maps.len(), labels.len())));
    }
    let (n_bad, n_good) = (labels.iter().filter(|&&l| l).count(), labels.iter().filter(|&&l| !l).count());
    if n_bad == 0 || n_good == 0 {
        return Ok(None);
    }
    let limit = min_area.max(1);
    let per: Vec<f32> = maps.iter().map(|m| if m.is_empty() { f32::NEG_INFINITY } else { image_threshold(m, limit) }).collect();
    // Anomalous at t ⇔ t < t_i, so only the t_i themselves (and below the smallest) matter.
    let mut candidates = per.clone();
    candidates.push(per.iter().copied().fold(f32::INFINITY, f32::min) - 1.0);
    let mut best: Option<(f64, f32)> = None;
    for &t in &candidates {
        let good = per.iter().zip(labels).filter(|(&p, &l)| !l && !(t < p)).count() as f64 / n_good as f64;
        let bad = per.iter().zip(labels).filter(|(&p, &l)| l && t < p).count() as f64 / n_bad as f64;
        let acc = 0.5 * (good + bad);
        if best.is_none_or(|(b, _)| acc > b) {
            best = Some((acc, t));
        }
    }
    Ok(best)
}

/// §4.3.3 synthetic negative: a copy of `img` ([C, H, W], values in [0, 1]) with a black (0.0)
/// or gray (0.5) rectangle covering `fraction` of the image area (rounded, ≥ 1 pixel; aspect
/// ratio log-uniform in [1/2, 2], clipped to the image) at a uniformly random place inside the
/// image, and the rectangle's mask (1 inside). Everything comes from `rng`, so a seeded
/// generator reproduces the validation set.
pub fn paint_negative<R: Rng + ?Sized>(
    img: &Array3<f32>,
    rng: &mut R,
    fraction: f64,
) -> Result<(Array3<f32>, Array2<u8>), EvalError> {
    let (c, h, w) = img.dim();
    if c == 0 || h == 0 || w == 0 {
        return Err(EvalError::InvalidArgument(format!("cannot paint on an empty image {:?}", img.shape())));
    }
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(EvalError::InvalidArgument(format!("fraction must be in (0, 1], got {fraction}")));
    }
    let area = (fraction * (h * w) as f64).max(1.0);
    let ratio = (rng.random::<f64>() * 2.0 - 1.0) * std::f64::consts::LN_2; // ln of h/w
    let rh = ((area * ratio.exp()).sqrt().round() as usize).clamp(1, h);
    let rw = ((area / rh as f64).round() as usize).clamp(1, w);
    let y = rng.random_range(0..=h - rh);
    let x = rng.random_range(0..=w - rw);
    let colour = if rng.random_bool(0.5) { 0.0f32 } else { 0.5f32 };
    let mut out = img.clone();
    out.slice_mut(s![.., y..y + rh, x..x + rw]).fill(colour);
    let mut mask = Array2::<u8>::zeros((h, w));
    mask.slice_mut(s![y..y + rh, x..x + rw]).fill(1);
    Ok((out, mask))
}
