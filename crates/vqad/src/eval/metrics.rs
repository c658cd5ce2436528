//! Detection metrics: the paper's (image accuracy, PRO at a threshold, pixel AUROC, F1; §4.2)
//! and MVTec's current ones (image AUROC, AUPRO up to an FPR limit).
//!
//! Conventions shared by every function here:
//! - Ground-truth masks are `u8`, non-zero = defective pixel; maps are f32 score maps of the same
//!   shape (images may differ in size from each other).
//! - A pixel/image is *predicted* anomalous when its score is `> threshold`, the same rule as
//!   [`crate::runtime::score::binarize`], so metrics agree with the masks vqad emits.
//! - Undefined values are `None`, never NaN or a silent 0 (see each function).
//! - Bad inputs (length/shape mismatch, NaN scores) are errors.

use crate::runtime::score::{binarize, connected_components};
use ndarray::Array2;

/// Errors of the metric functions.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvalError {
    #[error("{what}: {a} vs {b} items")]
    LengthMismatch { what: &'static str, a: usize, b: usize },
    #[error("image {image}: score map {map:?} vs ground truth {gt:?}")]
    ShapeMismatch { image: usize, map: Vec<usize>, gt: Vec<usize> },
    #[error("score is NaN (image/item {0})")]
    NaN(usize),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Counts of a binary decision against labels (positive = anomalous).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Confusion {
    pub tp: usize,
    pub fp: usize,
    pub tn: usize,
    pub fn_: usize,
}

impl Confusion {
    /// Count `predicted` against `labels` (true = anomalous).
    pub fn from_decisions(predicted: &[bool], labels: &[bool]) -> Result<Self, EvalError> {
        check_len("predictions vs labels", predicted.len(), labels.len())?;
        let mut c = Confusion::default();
        for (&p, &l) in predicted.iter().zip(labels) {
            c.add(p, l);
        }
        Ok(c)
    }

    #[inline]
    fn add(&mut self, predicted: bool, label: bool) {
        match (predicted, label) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, false) => self.tn += 1,
            (false, true) => self.fn_ += 1,
        }
    }

    /// Eq. 9, TP/(TP+FP); None when nothing was predicted anomalous.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    /// Eq. 8, TP/(TP+FN); None when there are no anomalous items.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Eq. 10 written as 2·TP / (2·TP + FP + FN), which equals 2PR/(P+R) whenever precision and
    /// recall are both defined and extends it without dividing by zero: 0 when TP = 0 but there
    /// was an error (e.g. no positives yet something predicted, or positives all missed), and
    /// `None` only when TP + FP + FN = 0 (no positives and none predicted: nothing to measure).
    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn check_len(what: &'static str, a: usize, b: usize) -> Result<(), EvalError> {
    if a == b {
        Ok(())
    } else {
        Err(EvalError::LengthMismatch { what, a, b })
    }
}

fn check_maps(maps: &[Array2<f32>], gts: &[Array2<u8>]) -> Result<(), EvalError> {
    check_len("score maps vs ground truths", maps.len(), gts.len())?;
    for (i, (m, g)) in maps.iter().zip(gts).enumerate() {
        if m.shape() != g.shape() {
            return Err(EvalError::ShapeMismatch { image: i, map: m.shape().to_vec(), gt: g.shape().to_vec() });
        }
        if m.iter().any(|v| v.is_nan()) {
            return Err(EvalError::NaN(i));
        }
    }
    Ok(())
}

/// Paper Table 1: accuracy on good images, on defective images, and their mean.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageAccuracy {
    /// Fraction of good images predicted good (None if there are none).
    pub good: Option<f64>,
    /// Fraction of defective images predicted anomalous (None if there are none).
    pub defective: Option<f64>,
    /// (good + defective) / 2; None unless both classes are present, because a balanced mean
    /// over one class would silently become a plain accuracy.
    pub mean: Option<f64>,
}

/// Image accuracy as in the paper's Table 1 from decisions (`true` = anomalous) and labels.
pub fn image_accuracy(predicted: &[bool], labels: &[bool]) -> Result<ImageAccuracy, EvalError> {
    let c = Confusion::from_decisions(predicted, labels)?;
    let good = ratio(c.tn, c.tn + c.fp);
    let defective = ratio(c.tp, c.tp + c.fn_);
    let mean = match (good, defective) {
        (Some(g), Some(d)) => Some((g + d) / 2.0),
        _ => None,
    };
    Ok(ImageAccuracy { good, defective, mean })
}

/// Image-level F1 (eq. 8–10) from decisions and labels; see [`Confusion::f1`] for `None`.
pub fn image_f1(predicted: &[bool], labels: &[bool]) -> Result<Option<f64>, EvalError> {
    Ok(Confusion::from_decisions(predicted, labels)?.f1())
}

/// Pixel confusion of all maps binarised at `threshold` (`> threshold`) against the masks.
pub fn pixel_confusion(maps: &[Array2<f32>], gts: &[Array2<u8>], threshold: f32) -> Result<Confusion, EvalError> {
    check_maps(maps, gts)?;
    let mut c = Confusion::default();
    for (m, g) in maps.iter().zip(gts) {
        for (&s, &l) in m.iter().zip(g.iter()) {
            c.add(s > threshold, l != 0);
        }
    }
    Ok(c)
}

/// Pixel-level F1 over all pixels of the set at `threshold`; see [`Confusion::f1`] for `None`.
pub fn pixel_f1(maps: &[Array2<f32>], gts: &[Array2<u8>], threshold: f32) -> Result<Option<f64>, EvalError> {
    Ok(pixel_confusion(maps, gts, threshold)?.f1())
}

/// PRO at one threshold (eq. 7): the mean, over every 8-connected ground-truth component of every
/// image (pooled across the set, as MVTec does), of the fraction of the component's pixels with
/// score `> threshold`. `None` when the set has no defective pixel.
pub fn pro_at_threshold(maps: &[Array2<f32>], gts: &[Array2<u8>], threshold: f32) -> Result<Option<f64>, EvalError> {
    check_maps(maps, gts)?;
    let mut sum = 0.0f64;
    let mut regions = 0usize;
    for (m, g) in maps.iter().zip(gts) {
        let (labels, areas) = connected_components(g);
        let pred = binarize(m, threshold);
        let mut hit = vec![0usize; areas.len()];
        for (&l, &p) in labels.iter().zip(pred.iter()) {
            if l != 0 && p != 0 {
                hit[l as usize - 1] += 1;
            }
        }
        for (h, a) in hit.iter().zip(&areas) {
            sum += *h as f64 / *a as f64;
        }
        regions += areas.len();
    }
    Ok(ratio_f(sum, regions))
}

fn ratio_f(a: f64, b: usize) -> Option<f64> {
    (b > 0).then(|| a / b as f64)
}

/// ROC AUC as the Mann-Whitney U statistic with midranks for ties: P(s⁺ > s⁻) + ½·P(s⁺ = s⁻),
/// which equals the trapezoid area under the ROC curve over distinct thresholds.
/// `labels`: true = anomalous (positive). `None` when a class is empty. NaN scores are errors.
pub fn auroc(scores: &[f64], labels: &[bool]) -> Result<Option<f64>, EvalError> {
    check_len("scores vs labels", scores.len(), labels.len())?;
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(EvalError::NaN(i));
    }
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    Ok(auroc_pairs(&mut pairs))
}

/// Midrank AUROC of (score, positive) pairs without NaN; sorts in place.
fn auroc_pairs<T: PartialOrd + Copy>(pairs: &mut [(T, bool)]) -> Option<f64> {
    let pos = pairs.iter().filter(|p| p.1).count();
    let neg = pairs.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    pairs.sort_unstable_by(|a, b| a.0.partial_cmp(&b.0).expect("NaN rejected by callers"));
    let mut rank_sum = 0.0f64; // sum of (1-based) midranks of positives
    let mut i = 0usize;
    while i < pairs.len() {
        let mut j = i;
        let mut p_in = 0usize;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            p_in += usize::from(pairs[j].1);
            j += 1;
        }
        // ranks i+1 ..= j, mean (i + 1 + j) / 2
        rank_sum += p_in as f64 * (i + 1 + j) as f64 / 2.0;
        i = j;
    }
    let (p, n) = (pos as f64, neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Pixel AUROC over all pixels of the set (masks non-zero = positive). `None` when the set has
/// no defective or no defect-free pixel.
pub fn pixel_auroc(maps: &[Array2<f32>], gts: &[Array2<u8>]) -> Result<Option<f64>, EvalError> {
    check_maps(maps, gts)?;
    let mut pairs: Vec<(f32, bool)> = Vec::with_capacity(maps.iter().map(|m| m.len()).sum());
    for (m, g) in maps.iter().zip(gts) {
        pairs.extend(m.iter().copied().zip(g.iter().map(|&l| l != 0)));
    }
    Ok(auroc_pairs(&mut pairs))
}

/// Image AUROC with each image scored by the maximum of its map (`labels`: true = defective).
/// Empty maps are errors; `None` when a class is empty.
pub fn image_auroc(maps: &[Array2<f32>], labels: &[bool]) -> Result<Option<f64>, EvalError> {
    check_len("score maps vs labels", maps.len(), labels.len())?;
    let mut scores = Vec::with_capacity(maps.len());
    for (i, m) in maps.iter().enumerate() {
        if m.iter().any(|v| v.is_nan()) {
            return Err(EvalError::NaN(i));
        }
        let s = m
            .iter()
            .copied()
            .reduce(f32::max)
            .ok_or_else(|| EvalError::InvalidArgument(format!("score map {i} is empty")))?;
        scores.push(s as f64);
    }
    auroc(&scores, labels)
}

/// MVTec AD's normalised AU-PRO up to `max_fpr` (they use 0.3), computed like their reference
/// `compute_pro` + `trapezoid`:
///
/// - GT regions are 8-connected components of each mask; FPR counts over every defect-free
///   pixel of the whole set (good images included).
/// - Every distinct score is a threshold t, a pixel counts as positive when score ≥ t; at each t
///   PRO = mean over all regions of the fraction of its pixels counted, FPR = positives among
///   defect-free pixels / their number. The curve is (0,0), the points by decreasing t, (1,1).
/// - Trapezoid area over FPR ∈ [0, max_fpr], the curve linearly interpolated at exactly
///   `max_fpr` when no point lies there, divided by `max_fpr`.
///
/// One sort of all pixels (O(P log P)), then cumulative sums. `None` when the set has no
/// defective or no defect-free pixel; `max_fpr` must be in (0, 1].
pub fn aupro(maps: &[Array2<f32>], gts: &[Array2<u8>], max_fpr: f64) -> Result<Option<f64>, EvalError> {
    if !(max_fpr > 0.0 && max_fpr <= 1.0) {
        return Err(EvalError::InvalidArgument(format!("max_fpr must be in (0, 1], got {max_fpr}")));
    }
    let curve = match pro_curve(maps, gts)? {
        Some(c) => c,
        None => return Ok(None),
    };
    Ok(Some(trapezoid_to(&curve, max_fpr) / max_fpr))
}

/// The PRO curve as (FPR, PRO) points, ascending FPR, including (0,0) and (1,1).
/// `None` when there is no region or no defect-free pixel.
pub fn pro_curve(maps: &[Array2<f32>], gts: &[Array2<u8>]) -> Result<Option<Vec<(f64, f64)>>, EvalError> {
    check_maps(maps, gts)?;
    let total: usize = maps.iter().map(|m| m.len()).sum();
    // Per pixel: score, and its contribution: 1/region size for a defective pixel, or a negative
    // marker for a defect-free one (counted in the FPR).
    let mut scores: Vec<f32> = Vec::with_capacity(total);
    let mut weight: Vec<f64> = Vec::with_capacity(total);
    let mut num_ok = 0usize;
    let mut num_regions = 0usize;
    for (m, g) in maps.iter().zip(gts) {
        let (labels, areas) = connected_components(g);
        num_regions += areas.len();
        for (&s, &l) in m.iter().zip(labels.iter()) {
            scores.push(s);
            if l == 0 {
                num_ok += 1;
                weight.push(-1.0);
            } else {
                weight.push(1.0 / areas[l as usize - 1] as f64);
            }
        }
    }
    if num_ok == 0 || num_regions == 0 {
        return Ok(None);
    }
    if total > u32::MAX as usize {
        return Err(EvalError::InvalidArgument(format!("{total} pixels exceed the 2^32 supported by the PRO curve")));
    }
    let mut order: Vec<u32> = (0..total as u32).collect();
    order.sort_unstable_by(|&a, &b| scores[b as usize].partial_cmp(&scores[a as usize]).expect("NaN rejected"));
    let mut curve = Vec::with_capacity(total + 2);
    curve.push((0.0, 0.0));
    let (mut fp, mut pro) = (0usize, 0.0f64);
    for (idx, &o) in order.iter().enumerate() {
        let w = weight[o as usize];
        if w < 0.0 {
            fp += 1;
        } else {
            pro += w;
        }
        let last_of_group = idx + 1 == order.len() || scores[order[idx + 1] as usize] != scores[o as usize];
        if last_of_group {
            let f = (fp as f64 / num_ok as f64).min(1.0);
            let p = (pro / num_regions as f64).min(1.0);
            curve.push((f, p));
        }
    }
    curve.push((1.0, 1.0));
    Ok(Some(curve))
}

/// Trapezoid area under (x, y) points with ascending x, over [x₀, x_max], linearly
/// interpolating the segment that crosses x_max.
fn trapezoid_to(curve: &[(f64, f64)], x_max: f64) -> f64 {
    let mut area = 0.0;
    for w in curve.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x1 <= x_max {
            area += (x1 - x0) * (y0 + y1) / 2.0;
        } else {
            if x0 < x_max {
                let y = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0);
                area += (x_max - x0) * (y0 + y) / 2.0;
            }
            break;
        }
    }
    area
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trapezoid_interpolates_at_the_limit() {
        let c = [(0.0, 0.0), (0.2, 0.4), (0.6, 0.8), (1.0, 1.0)];
        // 0..0.2: 0.04; 0.2..0.3: y(0.3) = 0.5, area 0.1*0.45 = 0.045
        assert!((trapezoid_to(&c, 0.3) - 0.085).abs() < 1e-12);
        assert!((trapezoid_to(&c, 0.2) - 0.04).abs() < 1e-12);
    }
}
