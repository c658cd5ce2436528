//! Choosing η, the pixel threshold and the minimum area without test labels.
//!
//! η: the paper's §4.3.3 grid search on synthetic negatives — validation normals with a black
//! or gray rectangle of 1 % of the image painted in — keeping the η with the highest pixel
//! AUROC (image AUROC breaks ties, then the smaller η). Pixel threshold: Bergmann et al.'s
//! protocol on the validation normals at that η — the lowest threshold at which no validation
//! map has a component of `min_area` pixels or more.

use super::metrics::{auroc, pixel_auroc, EvalError};
use super::threshold::{paint_negative, select_threshold, NEGATIVE_FRACTION};
use crate::config::DetectConfig;
use crate::runtime::{DetectError, Detector};
use ndarray::{Array2, Array3};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// The η values searched (log-spaced around the paper's 0.0005).
pub const ETA_GRID: [f64; 9] = [1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1];

/// One point of the η search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EtaPoint {
    pub eta: f64,
    pub pixel_auroc: Option<f64>,
    pub image_auroc: Option<f64>,
    /// Mean resampled positions per image.
    pub mean_resampled: f64,
}

/// What `tune` chose and on what (`RUN_DIR/tune.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TuneResult {
    /// The detection settings with η and the pixel threshold filled in.
    pub detect: DetectConfig,
    pub validation_images: usize,
    pub negatives: usize,
    pub eta_search: Vec<EtaPoint>,
    /// Largest validation component at the chosen threshold.
    pub largest_validation_area: usize,
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
}

/// Runs the η search and the threshold protocol with `det` on `normals` (validation images).
/// `grid` defaults to [`ETA_GRID`]; `seed` fixes the synthetic negatives.
pub fn tune(det: &mut Detector, normals: &[Array3<f32>], grid: &[f64], seed: u64, progress: &dyn Fn(&str)) -> Result<TuneResult, TuneError> {
    if normals.is_empty() {
        return Err(TuneError::NoImages);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // Two negatives per normal: more rectangles, same images.
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
    let grid = if grid.is_empty() { &ETA_GRID[..] } else { grid };
    let original = det.settings.clone();
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
        .expect("grid is not empty");
    let eta = best.eta;
    det.settings = original;
    det.settings.eta = eta;
    let dets = det.detect_arrays(normals)?;
    let maps: Vec<Array2<f32>> = dets.into_iter().map(|d| d.smoothed).collect();
    let min_area = det.settings.min_area.max(1) as usize;
    let choice = select_threshold(&maps, min_area)?;
    let mut detect = det.settings.clone();
    detect.pixel_threshold = Some(choice.threshold as f64);
    det.settings.pixel_threshold = detect.pixel_threshold;
    Ok(TuneResult {
        detect,
        validation_images: normals.len(),
        negatives: images.len() - normals.len(),
        eta_search: points,
        largest_validation_area: choice.largest_area,
        notes: format!(
            "η by max pixel AUROC on {} validation normals + {} synthetic negatives (§4.3.3, rectangles of {}% area); \
             pixel threshold: lowest value leaving every validation component below {} px (Bergmann et al.)",
            normals.len(),
            images.len() - normals.len(),
            NEGATIVE_FRACTION * 100.0,
            min_area
        ),
    })
}
