//! Choosing η, the pixel threshold and the minimum area without test labels.
//!
//! η (default rule): from the validation normals alone. One prior pass over their own codes
//! gives, for every position, the value the rule of eq. 5 compares with η on the first visit:
//! max(p, I) with the local constraint, p without. η is set at the `fire_fraction` quantile of
//! those values, so resampling fires on about that fraction of normal positions. On real
//! photographs the paper's grid search picked an η that fired on a quarter of the normal
//! positions, moving the restored image everywhere; it also cost minutes per η since every
//! change is a full prior pass. The §4.3.3 search — validation normals with a black or gray
//! rectangle of 1 % of the image, keeping the η with the best pixel AUROC — stays available
//! by naming its grid (`vqad tune --etas …`).
//!
//! Pixel threshold: Bergmann et al.'s protocol on the validation normals at that η, with a
//! tolerated false-alarm rate (see [`select_threshold_tolerant`]).

use super::metrics::{aupro, auroc, pixel_auroc, pro_at_threshold, EvalError};
use super::threshold::{paint_negative, select_threshold_tolerant, NEGATIVE_FRACTION};
use crate::config::{DetectConfig, RestoreRule, ScoreKind, TextureMap};
use crate::runtime::resample::bottom_half;
use crate::runtime::detector::{detection_map, normal_residual_metric};
use crate::runtime::border;
use crate::runtime::texture::{package_model, TextureDetector};
use crate::runtime::whiten::RIDGE;
use crate::runtime::{DetectError, Detector};
use ndarray::{Array2, Array3};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// The η values of the §4.3.3 search (log-spaced around the paper's 0.0005).
pub const ETA_GRID: [f64; 9] = [1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1];
/// Default share of validation normals allowed to keep a component of `min_area` pixels.
pub const FALSE_ALARM: f64 = 0.05;

/// How `tune` works.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneOptions {
    /// Empty: η from the normals' firing rate; else the §4.3.3 search over these values.
    pub grid: Vec<f64>,
    /// Replace the run's fire fraction.
    pub fire_fraction: Option<f64>,
    pub false_alarm: f64,
    /// Replace the run's anomaly map (thresholds are then chosen for this one).
    pub score: Option<ScoreKind>,
    /// Replace the run's restoration rule.
    pub restore: Option<RestoreRule>,
    /// Replace the run's minimum defect area (pixels at the model's input size).
    pub min_area: Option<usize>,
    /// Replace the run's choice of measuring the residual in the normals' metric.
    pub whiten: Option<bool>,
    /// Replace the run's residual patch side (see `runtime::whiten`).
    pub residual_patch: Option<usize>,
    /// Replace the run's choice of a border profile.
    pub border: Option<bool>,
    /// Replace the run's choice of a texture half of the map (see `runtime::texture`).
    pub texture: Option<bool>,
    /// Replace the run's texture weight.
    pub texture_weight: Option<f64>,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            grid: vec![],
            fire_fraction: None,
            false_alarm: FALSE_ALARM,
            score: None,
            restore: None,
            min_area: None,
            whiten: None,
            residual_patch: None,
            border: None,
            texture: None,
            texture_weight: None,
        }
    }
}

/// Normal training images the texture half of the map is fitted on (the thresholds are then
/// chosen on the validation normals, which it never saw).
pub const TEXTURE_NORMALS: usize = 40;

/// One point of the §4.3.3 η search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EtaPoint {
    pub eta: f64,
    pub pixel_auroc: Option<f64>,
    pub image_auroc: Option<f64>,
    /// Mean resampled positions per image.
    pub mean_resampled: f64,
}

/// One texture weight of the search and how it did on the synthetic blobs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WeightPoint {
    pub weight: f64,
    pub pixel_auroc: Option<f64>,
    /// AUPRO up to 30% false-positive rate on the blobs.
    #[serde(default)]
    pub aupro: Option<f64>,
    /// At the threshold the normals' fused maps give (the tuning rule): mean per-blob overlap,
    /// and the share of blob images with a component of the minimum area above it.
    #[serde(default)]
    pub pro_at_threshold: Option<f64>,
    #[serde(default)]
    pub blobs_found: Option<f64>,
}

impl WeightPoint {
    /// What the weight search maximises: the mean of the blobs' pixel AUROC, PRO at the
    /// label-free threshold and share of blobs found at it. Pixel AUROC alone ignores the
    /// threshold the package will use; with it the search chose the top of the grid on a
    /// starfield and let normal sky reach the threshold (dev set: hubble PRO 0.098).
    pub fn objective(&self) -> Option<f64> {
        Some((self.pixel_auroc? + self.pro_at_threshold? + self.blobs_found?) / 3.0)
    }
}

/// Texture weights `tune` tries (0: the residual map alone).
pub const TEXTURE_WEIGHTS: [f64; 8] = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0];
/// Synthetic blobs pasted into each validation normal for the weight search.
pub const BLOBS_PER_NORMAL: usize = 3;

/// What `tune` chose and on what (`RUN_DIR/tune.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TuneResult {
    /// The detection settings with η and the pixel threshold filled in.
    pub detect: DetectConfig,
    pub validation_images: usize,
    pub negatives: usize,
    /// The §4.3.3 search, when it was used.
    pub eta_search: Vec<EtaPoint>,
    /// The texture weights tried and how each did on synthetic blobs, when `tune` chose
    /// the weight.
    #[serde(default)]
    pub texture_search: Vec<WeightPoint>,
    /// Largest validation component at the chosen threshold.
    pub largest_validation_area: usize,
    /// Share of the validation normals' latent positions resampled at the chosen η.
    #[serde(default)]
    pub fired_fraction_normal: f64,
    /// Mean validation NLL of the prior on the normals' own codes, and log K for scale.
    #[serde(default)]
    pub prior_nll_normal: f64,
    #[serde(default)]
    pub log_k: f64,
    pub notes: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error("tuning needs at least one validation image")]
    NoImages,
    #[error("invalid tuning option: {0}")]
    Invalid(String),
}

/// What eq. 5 compares with ln η at (m, n) on the first visit of an unchanged table:
/// max(ln p, ln I) with the local constraint (ln p where no bottom-half neighbour exists).
pub fn first_visit_scores(log_prob: &Array2<f32>, local: bool) -> Vec<f64> {
    let (rows, cols) = log_prob.dim();
    let mut out = Vec::with_capacity(rows * cols);
    for m in 0..rows {
        for n in 0..cols {
            let own = log_prob[[m, n]] as f64;
            if !local {
                out.push(own);
                continue;
            }
            let nb = bottom_half(m, n, rows, cols).map(|(a, b)| log_prob[[a, b]] as f64).fold(f64::INFINITY, f64::min);
            out.push(if nb.is_finite() { own.max(nb) } else { own });
        }
    }
    out
}

/// η at which the rule fires on the first visit of at most `fraction` of the positions whose
/// scores are given (strictly below: `score < ln η`), clamped to [1e-12, 0.5].
pub fn eta_for_fire_fraction(scores: &mut [f64], fraction: f64) -> f64 {
    if scores.is_empty() {
        return 1e-12;
    }
    scores.sort_unstable_by(|a, b| a.total_cmp(b));
    let idx = ((fraction * scores.len() as f64).floor() as usize).min(scores.len() - 1);
    scores[idx].exp().clamp(1e-12, 0.5)
}

/// Runs the η rule and the threshold protocol with `det` on `normals` (validation images).
/// `seed` fixes the synthetic negatives of the §4.3.3 search. `train_normals` (training
/// images, not validation ones; the first [`TEXTURE_NORMALS`] are used) fit the texture half
/// of the map when the settings ask for one.
pub fn tune(
    det: &mut Detector,
    normals: &[Array3<f32>],
    train_normals: &[Array3<f32>],
    opts: &TuneOptions,
    seed: u64,
    progress: &dyn Fn(&str),
) -> Result<TuneResult, TuneError> {
    if normals.is_empty() {
        return Err(TuneError::NoImages);
    }
    if let Some(f) = opts.fire_fraction {
        if !(f > 0.0 && f < 1.0) {
            return Err(TuneError::Invalid(format!("fire fraction must be in (0, 1), got {f}")));
        }
        det.settings.fire_fraction = f;
    }
    let fire_fraction = det.settings.fire_fraction;
    if let Some(k) = opts.score {
        det.settings.score = k;
    }
    if let Some(r) = opts.restore {
        det.settings.restore = r;
    }
    if let Some(a) = opts.min_area {
        if a == 0 {
            return Err(TuneError::Invalid("minimum area must be at least 1 pixel".into()));
        }
        det.settings.min_area = a as i64;
    }
    if let Some(w) = opts.whiten {
        det.settings.whiten = w;
    }
    if let Some(k) = opts.residual_patch {
        DetectConfig::check_residual_patch(k).map_err(TuneError::Invalid)?;
        det.settings.residual_patch = k;
    }
    if let Some(b) = opts.border {
        det.settings.border = b;
    }
    if let Some(t) = opts.texture {
        det.settings.texture = t;
    }
    if let Some(w) = opts.texture_weight {
        if !(w >= 0.0 && w.is_finite()) {
            return Err(TuneError::Invalid(format!("texture weight must be finite and ≥ 0, got {w}")));
        }
        det.settings.texture_weight = Some(w);
    }
    // The metric, the border profile and the texture half are estimated below from this
    // run's own normals, never inherited.
    det.settings.residual_metric = None;
    det.settings.border_profile = None;
    det.settings.texture_map = None;
    let original = det.settings.clone();
    let surprise = det.input_surprise(normals)?;
    let positions: usize = surprise.iter().map(|(lp, _)| lp.len()).sum();
    let nll = -surprise.iter().map(|(lp, _)| lp.iter().map(|&v| v as f64).sum::<f64>()).sum::<f64>() / positions.max(1) as f64;
    let log_k = (det.shape.num_codes as f64).ln();
    progress(&format!("prior NLL on the validation normals' codes: {nll:.3} nats (log K = {log_k:.3})"));
    let (eta, points, negatives, eta_note) = if opts.grid.is_empty() {
        let mut scores: Vec<f64> = surprise.iter().flat_map(|(lp, _)| first_visit_scores(lp, original.local_constraint)).collect();
        let eta = eta_for_fire_fraction(&mut scores, fire_fraction);
        (eta, vec![], 0, format!("η so that eq. 5 fires on ≤ {:.1}% of the validation normals' positions at their first visit", fire_fraction * 100.0))
    } else {
        let (eta, points, negatives) = synthetic_search(det, normals, &opts.grid, seed, progress)?;
        (eta, points, negatives, format!("η by max pixel AUROC on {} validation normals + {negatives} synthetic negatives (§4.3.3, rectangles of {}% area)", normals.len(), NEGATIVE_FRACTION * 100.0))
    };
    det.settings = original;
    det.settings.eta = eta;
    let dets = det.detect_arrays(normals)?;
    let fired = dets.iter().map(|d| d.resampled.len()).sum::<usize>() as f64 / positions.max(1) as f64;
    progress(&format!("η = {eta:.3e}: resampling fires on {:.2}% of the normal positions", fired * 100.0));
    let metric_note = if det.settings.whiten {
        let k = det.settings.residual_patch;
        let metric = normal_residual_metric(&dets, k).map_err(|e| TuneError::Invalid(format!("residual metric: {e}")))?;
        let diag: Vec<f64> = (0..metric.len()).map(|i| metric[i][i]).collect();
        let (lo, hi) = diag.iter().fold((f64::INFINITY, 0f64), |(l, h), &v| (l.min(v), h.max(v)));
        progress(&format!("residual metric over {k}×{k} patches of the validation normals' input − reconstruction: {n}×{n}, diagonal {lo:.3}–{hi:.3}", n = metric.len()));
        det.settings.residual_metric = Some(metric);
        format!("; residual whitened over {k}×{k} patches in the metric of the validation normals' residuals (ridge {RIDGE} of its mean eigenvalue)")
    } else {
        String::new()
    };
    let m = det.metric()?;
    let (kind, weight) = (det.settings.score, det.settings.surprise_weight);
    let raw = dets.iter().map(|d| detection_map(d, kind, weight, m.as_ref())).collect::<Result<Vec<_>, _>>().map_err(DetectError::from)?;
    let border_note = if det.settings.border {
        let profile = border::estimate(&raw).map_err(|e| TuneError::Invalid(format!("border profile: {e}")))?;
        progress(&format!("border profile (map excess on the {} outermost rings of the validation normals): {profile:.3?}", profile.len()));
        det.settings.border_profile = Some(profile);
        "; map divided by the validation normals' border excess ring by ring"
    } else {
        ""
    };
    let mut maps = raw.iter().map(|r| det.smooth(r)).collect::<Result<Vec<_>, _>>()?;
    let mut texture_search = vec![];
    let texture_note = if det.settings.texture {
        let fit: Vec<_> = train_normals.iter().take(TEXTURE_NORMALS).map(|a| a.view()).collect();
        if fit.is_empty() {
            return Err(TuneError::Invalid("the texture half of the map needs normal training images to fit on".into()));
        }
        let why = |e: crate::runtime::texture::TextureError| TuneError::Invalid(format!("texture statistics: {e}"));
        let (set, components) = package_model(&fit);
        let td = TextureDetector::fit(&fit, set, components).map_err(why)?;
        let val: Vec<_> = normals.iter().map(|a| a.view()).collect();
        let mut t = td.to_texture_map(&maps, &val, 1.0).map_err(why)?;
        let (weight, how) = match det.settings.texture_weight {
            Some(w) => (w, "as configured".to_string()),
            None => {
                let (w, points) = texture_weight_search(det, &td, &t, normals, &maps, seed, opts.false_alarm, progress)?;
                let best = points.iter().find(|p| p.weight == w).and_then(WeightPoint::objective).unwrap_or(f64::NAN);
                texture_search = points;
                (w, format!("best mean of pixel AUROC, PRO at the threshold and share found ({best:.3}) on {} validation normals with {} synthetic blobs pasted in", normals.len(), normals.len() * BLOBS_PER_NORMAL))
            }
        };
        t.weight = weight;
        progress(&format!(
            "texture statistics ({} over {w}×{w} windows) fitted on {} training normals; scales on the validation normals: residual {:.3e}, texture {:.3}; weight {weight} ({how})",
            t.summary(),
            fit.len(),
            t.residual_scale,
            t.texture_scale,
            w = t.window
        ));
        det.settings.texture_map = Some(t);
        maps = maps.into_iter().zip(normals).map(|(m, x)| det.add_texture(m, x)).collect::<Result<Vec<_>, _>>()?;
        format!("; plus the texture-statistics map fitted on {} training normals, weight {weight} ({how})", fit.len())
    } else {
        String::new()
    };
    let min_area = det.settings.min_area.max(1) as usize;
    let choice = select_threshold_tolerant(&maps, min_area, opts.false_alarm)?;
    let mut detect = det.settings.clone();
    detect.pixel_threshold = Some(choice.threshold as f64);
    det.settings.pixel_threshold = detect.pixel_threshold;
    Ok(TuneResult {
        detect,
        validation_images: normals.len(),
        negatives,
        eta_search: points,
        texture_search,
        largest_validation_area: choice.largest_area,
        fired_fraction_normal: fired,
        prior_nll_normal: nll,
        log_k,
        notes: format!(
            "{eta_note}{metric_note}{border_note}{texture_note}; pixel threshold: lowest value leaving all but {:.0}% of the {} validation normals without a component of {} px (Bergmann et al.)",
            opts.false_alarm * 100.0,
            normals.len(),
            min_area
        ),
    })
}

/// The texture weight with the best [`WeightPoint::objective`] (the smaller weight on a tie) on
/// the validation normals and, for each, [`BLOBS_PER_NORMAL`] copies with one random blob pasted in
/// ([`crate::data::paste_blob`]: another normal's patch, possibly inverted, a flat colour, or
/// the image darkened or brightened; its pixels are the positives). No test image and no
/// label of a real defect is involved. `residual` are the normals' smoothed residual maps.
fn texture_weight_search(
    det: &mut Detector,
    td: &TextureDetector,
    t: &TextureMap,
    normals: &[Array3<f32>],
    residual: &[Array2<f32>],
    seed: u64,
    false_alarm: f64,
    progress: &dyn Fn(&str),
) -> Result<(f64, Vec<WeightPoint>), TuneError> {
    let min_area = det.settings.min_area.max(1) as usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x7e47_u64);
    let mut blobs = vec![];
    let mut masks = vec![];
    for (i, x) in normals.iter().enumerate() {
        for b in 0..BLOBS_PER_NORMAL {
            let donor = &normals[(i + 1 + b) % normals.len()];
            let y = crate::data::paste_blob(x, donor, &mut rng);
            let (_, h, w) = x.dim();
            let mask = Array2::from_shape_fn((h, w), |(r, c)| u8::from((0..x.dim().0).any(|ch| (y[[ch, r, c]] - x[[ch, r, c]]).abs() > 1e-3)));
            blobs.push(y);
            masks.push(mask);
        }
    }
    let blob_residual: Vec<Array2<f32>> = det.detect_arrays(&blobs)?.into_iter().map(|d| d.smoothed).collect();
    let why = |e: crate::runtime::texture::TextureError| TuneError::Invalid(format!("texture statistics: {e}"));
    let texture = |xs: &[Array3<f32>]| xs.iter().map(|x| td.map(x.view())).collect::<Result<Vec<_>, _>>().map_err(why);
    let (tn, tb) = (texture(normals)?, texture(&blobs)?);
    let gts: Vec<Array2<u8>> = normals.iter().map(|x| Array2::zeros((x.dim().1, x.dim().2))).chain(masks).collect();
    let mut points = vec![];
    for &w in &TEXTURE_WEIGHTS {
        let (a, b) = ((1.0 / t.residual_scale) as f32, (w / t.texture_scale) as f32);
        let fused: Vec<Array2<f32>> = residual.iter().chain(&blob_residual).zip(tn.iter().chain(&tb)).map(|(r, tx)| r * a + &(tx * b)).collect();
        let n = normals.len();
        let thr = select_threshold_tolerant(&fused[..n], min_area, false_alarm)?.threshold;
        let found = fused[n..].iter().filter(|m| crate::runtime::score::image_score(*m, min_area).is_some_and(|v| v > thr)).count() as f64 / (fused.len() - n).max(1) as f64;
        let p = WeightPoint {
            weight: w,
            pixel_auroc: pixel_auroc(&fused, &gts)?,
            aupro: aupro(&fused, &gts, 0.3)?,
            pro_at_threshold: pro_at_threshold(&fused[n..], &gts[n..], thr)?,
            blobs_found: Some(found),
        };
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        progress(&format!("texture weight {w}: blobs' pixel AUROC {}, AUPRO@0.3 {}, at the threshold PRO {} and found {}", f(p.pixel_auroc), f(p.aupro), f(p.pro_at_threshold), f(p.blobs_found)));
        points.push(p);
    }
    let best = points
        .iter()
        .filter_map(|p| p.objective().map(|a| (p.weight, a)))
        .fold(None, |acc: Option<(f64, f64)>, (w, a)| match acc {
            Some((_, best)) if best >= a => acc,
            _ => Some((w, a)),
        })
        .map_or(1.0, |(w, _)| w);
    Ok((best, points))
}

/// The paper's §4.3.3 search: η with the best pixel AUROC (then image AUROC, then the smaller
/// η) on the normals plus two painted negatives per normal. Returns (η, points, negatives).
fn synthetic_search(det: &mut Detector, normals: &[Array3<f32>], grid: &[f64], seed: u64, progress: &dyn Fn(&str)) -> Result<(f64, Vec<EtaPoint>, usize), TuneError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut images: Vec<Array3<f32>> = normals.to_vec();
    let (_, h, w) = normals[0].dim();
    let mut gts: Vec<Array2<u8>> = vec![Array2::zeros((h, w)); normals.len()];
    for _round in 0..2 {
        for img in normals {
            let (neg, mask) = paint_negative(img, &mut rng, NEGATIVE_FRACTION)?;
            images.push(neg);
            gts.push(mask);
        }
    }
    let labels: Vec<bool> = gts.iter().map(|g| g.iter().any(|&v| v > 0)).collect();
    let mut points = vec![];
    for &eta in grid {
        det.settings.eta = eta;
        let dets = det.detect_arrays(&images)?;
        let maps: Vec<Array2<f32>> = dets.iter().map(|d| d.smoothed.clone()).collect();
        let scores: Vec<f64> = dets.iter().map(|d| d.image_score as f64).collect();
        let p = EtaPoint {
            eta,
            pixel_auroc: pixel_auroc(&maps, &gts)?,
            image_auroc: auroc(&scores, &labels)?,
            mean_resampled: dets.iter().map(|d| d.resampled.len() as f64).sum::<f64>() / dets.len() as f64,
        };
        progress(&format!("η {eta:e}: pixel AUROC {:.4} image AUROC {:.4} ({:.1} resampled/image)", p.pixel_auroc.unwrap_or(f64::NAN), p.image_auroc.unwrap_or(f64::NAN), p.mean_resampled));
        points.push(p);
    }
    let key = |p: &EtaPoint| (p.pixel_auroc.unwrap_or(0.0), p.image_auroc.unwrap_or(0.0));
    let best = points
        .iter()
        .fold(None::<&EtaPoint>, |best, p| match best {
            Some(b) if key(b) >= key(p) => Some(b),
            _ => Some(p),
        })
        .ok_or_else(|| TuneError::Invalid("empty η grid".into()))?;
    Ok((best.eta, points.clone(), images.len() - normals.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_objective_is_the_mean_of_three_blob_figures_and_needs_all() {
        let p = WeightPoint { weight: 1.0, pixel_auroc: Some(0.9), aupro: Some(0.1), pro_at_threshold: Some(0.6), blobs_found: Some(0.3) };
        assert!((p.objective().unwrap() - 0.6).abs() < 1e-12, "AUPRO is reported, not part of it");
        assert_eq!(WeightPoint { blobs_found: None, ..p.clone() }.objective(), None);
        assert_eq!(WeightPoint { pro_at_threshold: None, ..p }.objective(), None);
    }
}
