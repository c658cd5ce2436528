//! `vqad eval`: run a package over a category's test split and report the paper's metrics
//! (Tables 1–4) and MVTec's (image AUROC, AUPRO@0.3), per defect type and overall, with the
//! Figure 8 ablations side by side.
//!
//! Thresholds are never fitted here: the full method uses the package's; each ablation variant
//! gets its own by the same label-free protocol on the validation normals of `train/good`
//! (the deterministic split the training used), so the comparison is fair.

use super::metrics::{aupro, auroc, image_accuracy, image_f1, pixel_auroc, pixel_f1, pro_at_threshold, EvalError};
use super::threshold::{best_image_accuracy, select_threshold_tolerant};
use super::tune::FALSE_ALARM;
use crate::config::{DetectConfig, ScoreKind};
use crate::runtime::detector::detection_map;
use crate::data::{self, Category, DataError};
use crate::runtime::detector::l2_input_output_map;
use crate::runtime::output::{map_image, stem_for, write_detection, RecordContext};
use crate::runtime::border;
use crate::runtime::detector::normal_residual_metric;
use crate::config::TextureMap;
use crate::runtime::texture::{fused, percentile, FeatureSet, TextureDetector};
use crate::runtime::whiten::to_array;
use crate::runtime::{DetectError, Detection, Detector, ScoreError};
use ndarray::{Array2, Array3};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Score(#[from] crate::runtime::ScoreError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The metrics of one set of test images.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetricRow {
    /// Defect type, `overall`, or `mean` (over categories).
    pub subset: String,
    pub images: usize,
    /// Table 1: mean of the accuracy on good and on defective images.
    pub image_accuracy: Option<f64>,
    pub accuracy_good: Option<f64>,
    pub accuracy_defective: Option<f64>,
    /// Table 2: PRO at the pixel threshold (eq. 7).
    pub pro: Option<f64>,
    /// Table 3.
    pub pixel_auroc: Option<f64>,
    /// Table 4.
    pub image_f1: Option<f64>,
    pub pixel_f1: Option<f64>,
    /// Images ranked by the decision rule's score (the package's `image_score`: the highest
    /// threshold at which a component of the minimum area stays above it).
    pub image_auroc: Option<f64>,
    /// Images ranked by the map's maximum, MVTec's convention (kept for comparison with
    /// published figures).
    #[serde(default)]
    pub image_auroc_max: Option<f64>,
    /// MVTec's AU-PRO up to a false-positive rate of 0.3.
    pub aupro_30: Option<f64>,
}

/// One ablation variant's overall row (Fig. 8).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VariantRow {
    /// `full`, `l2_input_output` or `no_local_constraint`.
    pub variant: String,
    /// Pixel threshold used (the package's for `full`, chosen on validation normals otherwise).
    pub pixel_threshold: f64,
    pub row: MetricRow,
}

/// Results of one category.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CategoryReport {
    pub category: String,
    pub package: String,
    pub version: String,
    pub eta: f64,
    pub pixel_threshold: f64,
    pub min_area: i64,
    /// Per defect type (each with the good images), then `overall`.
    pub rows: Vec<MetricRow>,
    pub ablation: Vec<VariantRow>,
    /// What the prior and the resampling did (absent in reports of older versions).
    #[serde(default)]
    pub diagnostics: Option<Diagnostics>,
    pub failed: Vec<String>,
}

/// Why a category wins or loses: the prior's confidence and how often resampling fired.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Diagnostics {
    /// Share of latent positions resampled on good test images.
    pub fired_fraction_good: f64,
    /// Share of latent positions resampled on defective test images.
    pub fired_fraction_defective: f64,
    /// Share of the latent cells touching a ground-truth defect that were resampled.
    pub fired_fraction_in_defects: f64,
    /// Mean −log p(z_mn | z_<mn) (nats) of the input codes on good / defective test images.
    pub prior_nll_good: f64,
    pub prior_nll_defective: f64,
    /// Mean eq. 6 value per pixel on good test images: how far restoration moves normals.
    pub restored_drift_good: f64,
    /// AUROC of the prior's −log p(z_mn | z_<mn) separating latent cells that lie mostly
    /// (> half their pixels) inside a defect from the cells of good test images: whether the
    /// prior, the part of the method resampling stands on, finds defects surprising at all.
    #[serde(default)]
    pub defect_cell_nll_auroc: Option<f64>,
    /// Best image accuracy any pixel threshold reaches on the package's maps with its minimum
    /// area, taking the test labels (diagnosis only; never used to choose anything), and that
    /// threshold: the gap to the reported image accuracy is what the label-free threshold loses.
    #[serde(default)]
    pub oracle_image_accuracy: Option<f64>,
    #[serde(default)]
    pub oracle_threshold: Option<f64>,
    /// Mean over good test images of the direct reconstruction's MSE as a share of the image's
    /// own variance: a detector for a surface must first reconstruct it (a blurred texture
    /// keeps most of its variance in the residual, where a defect can hide).
    #[serde(default)]
    pub recon_ratio_good: Option<f64>,
}

/// `report.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalReport {
    pub vqad_version: String,
    pub categories: Vec<CategoryReport>,
    /// Mean of the categories' overall rows (present with more than one category).
    pub mean: Option<MetricRow>,
    /// Mean of each ablation variant over categories.
    pub ablation_mean: Vec<VariantRow>,
}

/// Computes every metric for maps, ground truths and image decisions; image AUROC ranks images
/// by the decision rule's score with `min_area` ([`crate::runtime::score::image_score`]), and
/// `image_auroc_max` by the map's maximum, as MVTec does.
pub fn metric_row(subset: &str, maps: &[Array2<f32>], gts: &[Array2<u8>], decisions: &[bool], threshold: f32, min_area: usize) -> Result<MetricRow, EvalError> {
    let labels: Vec<bool> = gts.iter().map(|g| g.iter().any(|&v| v > 0)).collect();
    let acc = image_accuracy(decisions, &labels)?;
    let scores: Vec<f64> = maps.iter().map(|m| crate::runtime::score::image_score(m, min_area).unwrap_or(f32::NEG_INFINITY) as f64).collect();
    let max_scores: Vec<f64> = maps.iter().map(|m| m.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64).collect();
    Ok(MetricRow {
        subset: subset.into(),
        images: maps.len(),
        image_accuracy: acc.mean,
        accuracy_good: acc.good,
        accuracy_defective: acc.defective,
        pro: pro_at_threshold(maps, gts, threshold)?,
        pixel_auroc: pixel_auroc(maps, gts)?,
        image_f1: image_f1(decisions, &labels)?,
        pixel_f1: pixel_f1(maps, gts, threshold)?,
        image_auroc: auroc(&scores, &labels)?,
        image_auroc_max: auroc(&max_scores, &labels)?,
        aupro_30: aupro(maps, gts, 0.3)?,
    })
}

/// Mean of rows field by field (fields missing in some rows average the rest).
pub fn mean_row(subset: &str, rows: &[&MetricRow]) -> MetricRow {
    let avg = |f: &dyn Fn(&MetricRow) -> Option<f64>| {
        let v: Vec<f64> = rows.iter().filter_map(|r| f(r)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    MetricRow {
        subset: subset.into(),
        images: rows.iter().map(|r| r.images).sum(),
        image_accuracy: avg(&|r| r.image_accuracy),
        accuracy_good: avg(&|r| r.accuracy_good),
        accuracy_defective: avg(&|r| r.accuracy_defective),
        pro: avg(&|r| r.pro),
        pixel_auroc: avg(&|r| r.pixel_auroc),
        image_f1: avg(&|r| r.image_f1),
        pixel_f1: avg(&|r| r.pixel_f1),
        image_auroc: avg(&|r| r.image_auroc),
        image_auroc_max: avg(&|r| r.image_auroc_max),
        aupro_30: avg(&|r| r.aupro_30),
    }
}

/// Decision rule of the package: a component above `threshold` with at least `min_area` pixels.
fn decide(maps: &[Array2<f32>], threshold: f32, min_area: usize) -> Vec<bool> {
    maps.iter().map(|m| crate::runtime::is_anomalous(m, threshold, min_area)).collect()
}

/// Tile side of a panel: at least 128 px so a person can read it (small models are scaled up
/// by pixel repetition, never smoothed).
const PANEL_TILE: u32 = 128;
// Short enough for 16 px glyphs on a 128 px tile: input, direct reconstruction x_d, restored x_r,
// smoothed score map, binary mask, ground truth.
const PANEL_LABELS: [&str; 6] = ["input", "recon", "restored", "map", "mask", "truth"];

/// A Figure-3 panel: a labelled header row over input, direct reconstruction, restored image,
/// score map, mask and ground truth.
fn panel(det: &Detection, gt: &Array2<u8>, scale: f32) -> image::RgbImage {
    let tiles = [
        data::array_to_image(&det.input.view()).to_rgb8(),
        data::array_to_image(&det.direct.view()).to_rgb8(),
        data::array_to_image(&det.restored.view()).to_rgb8(),
        map_image(&det.smoothed.view(), scale),
        image::DynamicImage::ImageLuma8(data::mask_to_image(&det.mask.view())).to_rgb8(),
        image::DynamicImage::ImageLuma8(data::mask_to_image(&gt.view())).to_rgb8(),
    ];
    let side = tiles[0].width().max(1);
    let factor = PANEL_TILE.div_ceil(side).max(1);
    let w = side * factor;
    let h = tiles[0].height() * factor;
    let (gap, header) = (4u32, 24u32);
    let mut out = image::RgbImage::from_pixel(tiles.len() as u32 * (w + gap) - gap, header + h, image::Rgb([255, 255, 255]));
    // Glyphs are 8 px: scale 2 when every label fits its tile, else 1, the same for all.
    let longest = PANEL_LABELS.iter().map(|l| l.len() as u32).max().unwrap_or(1);
    let s = if longest * 16 <= w { 2 } else { 1 };
    for (i, t) in tiles.iter().enumerate() {
        let x = i as u32 * (w + gap);
        let big = image::imageops::resize(t, w, h, image::imageops::FilterType::Nearest);
        image::imageops::overlay(&mut out, &big, x as i64, header as i64);
        let label = PANEL_LABELS[i];
        let lx = x + (w.saturating_sub(label.len() as u32 * 8 * s)) / 2;
        draw_text(&mut out, label, lx, (header - 8 * s) / 2, s);
    }
    out
}

/// Draws ASCII text in black with the 8×8 bitmap font, each glyph pixel `scale`² pixels.
fn draw_text(img: &mut image::RgbImage, text: &str, x: u32, y: u32, scale: u32) {
    for (ci, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::legacy::BASIC_LEGACY.get(ch as usize) else { continue };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (ci as u32 * 8 + col) * scale + dx;
                        let py = y + row as u32 * scale + dy;
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, image::Rgb([0, 0, 0]));
                        }
                    }
                }
            }
        }
    }
}

fn save_png(path: &Path, img: &image::RgbImage) -> Result<(), ReportError> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).map_err(|e| ReportError::Io(path.display().to_string(), std::io::Error::other(e)))?;
    crate::fsutil::write_atomic(path, &buf.into_inner()).map_err(|e| ReportError::Io(path.display().to_string(), e))
}

/// Names of the ablation variants beside `full`.
/// `texture_stats` is the model-free baseline of [`crate::runtime::texture`] (grey local mean,
/// log standard deviation and log gradient energy, Mahalanobis distance to the same features
/// of [`TEXTURE_NORMALS`] normal training images): a learned method that loses to it has not
/// earned its compute.
/// `l2_input_output` is the paper's ablation exactly (plain ℓ2, bilateral filter alone);
/// `l2_whitened` is ℓ2 with the package's metric, border profile and texture half, i.e.
/// everything but the resampling; `no_texture` the package's map without its texture half
/// (only for packages with one). `l2_whitened` and `no_whitening` exist only for packages with
/// a residual metric, `whiten_per_pixel` (the metric re-estimated per pixel, as `tune --residual-patch 1`
/// would) only for one over patches, `no_border` only for packages with a border profile.
pub const VARIANTS: [&str; 13] = [
    "texture_stats",
    "no_texture",
    "score_paper",
    "score_surprise",
    "score_restored_input",
    "restore_argmax",
    "restore_nearest_likely",
    "l2_input_output",
    "l2_whitened",
    "no_whitening",
    "whiten_per_pixel",
    "no_border",
    "no_local_constraint",
];

/// Normal training images the `texture_stats` baseline is fitted on (the first ones of the
/// training split, validation images excluded).
pub const TEXTURE_NORMALS: usize = 40;

/// Options of one category's evaluation.
pub struct EvalOptions<'a> {
    pub out: &'a Path,
    pub ablation: bool,
    /// With `ablation`: only these variants (names as in the report); `None` computes all.
    /// The no-local-constraint rerun fires often and costs most of an evaluation's time.
    pub variants: Option<&'a [String]>,
    /// Validation split fraction used at training time (from the package's provenance).
    pub val_fraction: f64,
    pub progress: &'a dyn Fn(usize, usize),
    /// Limits on every image read; one over them is skipped and listed in `failed`.
    pub decode: data::DecodeLimits,
}

/// Evaluates one category with `det` and writes per-image results and panels under `out`.
pub fn evaluate_category(det: &mut Detector, cat: &Category, package: &str, version: &str, o: &EvalOptions) -> Result<CategoryReport, ReportError> {
    let (c, s) = (det.shape.channels as usize, det.shape.image_size as usize);
    let threshold = det
        .settings
        .pixel_threshold
        .ok_or_else(|| ReportError::Invalid("the package has no pixel threshold".into()))? as f32;
    let min_area = det.settings.min_area.max(1) as usize;
    let results_dir = o.out.join("results").join(&cat.name);
    let panels_dir = o.out.join("panels").join(&cat.name);
    let providers = det.providers();
    let mut maps = vec![];
    let mut l2_maps = vec![];
    let mut test_dets: Vec<Detection> = vec![];
    let mut gts = vec![];
    let mut defects = vec![];
    let mut failed = vec![];
    let mut inputs: Vec<(usize, Array3<f32>, Array2<u8>)> = vec![];
    for (i, item) in cat.test.iter().enumerate() {
        let img = match data::load_image_within(&item.path, c, s, &o.decode) {
            Ok(a) => a,
            Err(e) => {
                failed.push(format!("{}: {e}", item.path.display()));
                continue;
            }
        };
        let gt = match &item.mask {
            Some(m) => match data::load_mask_within(m, s, &o.decode) {
                Ok(g) => g,
                Err(e) => {
                    failed.push(format!("{}: {e}", m.display()));
                    continue;
                }
            },
            None => Array2::zeros((s, s)),
        };
        inputs.push((i, img, gt));
    }
    let total = inputs.len();
    let mut done = 0;
    for chunk in inputs.chunks(det.batch) {
        let arrays: Vec<Array3<f32>> = chunk.iter().map(|(_, a, _)| a.clone()).collect();
        let dets = det.detect_arrays(&arrays)?;
        let ctx = RecordContext { providers: &providers, precision: det.precision, settings: &det.settings };
        for ((i, _, gt), d) in chunk.iter().zip(dets) {
            let item = &cat.test[*i];
            let stem = stem_for(&cat.root.join("test"), &item.path);
            write_detection(&results_dir, &stem, &item.path.display().to_string(), &d, &ctx, false)
                .map_err(|e| ReportError::Io(results_dir.display().to_string(), e))?;
            save_png(&panels_dir.join(format!("{stem}.png")), &panel(&d, gt, 2.0 * threshold))?;
            if o.ablation {
                l2_maps.push(det.filter(&l2_input_output_map(&d, None)?)?);
            }
            maps.push(d.smoothed.clone());
            let d = Detection { raw_map: Array2::zeros((0, 0)), smoothed: Array2::zeros((0, 0)), mask: Array2::zeros((0, 0)), ..d };
            test_dets.push(d);
            gts.push(gt.clone());
            defects.push(item.defect.clone());
        }
        done += chunk.len();
        (o.progress)(done, total);
    }
    if maps.is_empty() {
        return Err(ReportError::Invalid(format!("{}: no readable test images", cat.root.display())));
    }
    let decisions = decide(&maps, threshold, min_area);
    let mut rows = vec![];
    let mut kinds: Vec<String> = defects.iter().filter(|d| *d != "good").cloned().collect();
    kinds.sort();
    kinds.dedup();
    let pick = |want: &dyn Fn(&str) -> bool| -> Vec<usize> { (0..defects.len()).filter(|&i| want(&defects[i])).collect() };
    for k in &kinds {
        let idx = pick(&|d: &str| d == "good" || d == k);
        let sel = |v: &[Array2<f32>]| idx.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
        let g: Vec<Array2<u8>> = idx.iter().map(|&i| gts[i].clone()).collect();
        let dsel: Vec<bool> = idx.iter().map(|&i| decisions[i]).collect();
        rows.push(metric_row(k, &sel(&maps), &g, &dsel, threshold, min_area)?);
    }
    let overall = metric_row("overall", &maps, &gts, &decisions, threshold, min_area)?;
    rows.push(overall.clone());

    let mut ablation = vec![];
    if o.ablation {
        ablation.push(VariantRow { variant: "full".into(), pixel_threshold: threshold as f64, row: overall });
        // Validation normals of the training split, for the variants' own thresholds (same
        // tolerant protocol as `tune`).
        let (_, val) = data::split_validation(&cat.train_good, o.val_fraction);
        let (val_imgs, _) = data::load_many_within(&val, c, s, &o.decode);
        let val_arrays: Vec<Array3<f32>> = val_imgs.into_iter().map(|(_, a)| a).collect();
        if val_arrays.is_empty() {
            return Err(ReportError::Invalid(format!("{}: no validation normals for the ablation thresholds", cat.root.display())));
        }
        let val_dets = det.detect_arrays(&val_arrays)?;
        let variant = |name: &str, test: &[Array2<f32>], val: &[Array2<f32>]| -> Result<VariantRow, ReportError> {
            let t = select_threshold_tolerant(val, min_area, FALSE_ALARM)?.threshold;
            Ok(VariantRow { variant: name.into(), pixel_threshold: t as f64, row: metric_row("overall", test, &gts, &decide(test, t, min_area), t, min_area)? })
        };
        // The other score kinds, from the same detections (same η, same restored images).
        let weight = if det.settings.surprise_weight > 0.0 { det.settings.surprise_weight } else { DetectConfig::default_surprise_weight() };
        let want = |name: &str| o.variants.is_none_or(|v| v.iter().any(|x| x == name));
        let metric = det.metric()?;
        // The package's texture half (if any) over a variant's own smoothed residual maps, its
        // residual scale measured on the variant's validation maps as `tune` measures the
        // package's.
        let add_texture = |test: Vec<Array2<f32>>, val: Vec<Array2<f32>>| -> Result<(Vec<Array2<f32>>, Vec<Array2<f32>>), ReportError> {
            let Some(t) = &det.settings.texture_map else { return Ok((test, val)) };
            let t = TextureMap { residual_scale: percentile(&val, 0.99).max(f64::MIN_POSITIVE), ..t.clone() };
            let fuse = |maps: Vec<Array2<f32>>, dets: &[Detection]| -> Result<Vec<Array2<f32>>, ReportError> {
                maps.iter().zip(dets).map(|(m, d)| fused(m, d.input.view(), &t).map_err(|e| ReportError::Invalid(format!("texture map: {e}")))).collect()
            };
            Ok((fuse(test, &test_dets)?, fuse(val, &val_dets)?))
        };
        let smoothed_only = |f: &dyn Fn(&Detection) -> Result<Array2<f32>, ScoreError>| -> Result<(Vec<Array2<f32>>, Vec<Array2<f32>>), ReportError> {
            let apply = |d: &Detection| -> Result<Array2<f32>, ReportError> { Ok(det.smooth(&f(d)?)?) };
            Ok((test_dets.iter().map(apply).collect::<Result<_, _>>()?, val_dets.iter().map(apply).collect::<Result<_, _>>()?))
        };
        let rescored = |f: &dyn Fn(&Detection) -> Result<Array2<f32>, ScoreError>| -> Result<(Vec<Array2<f32>>, Vec<Array2<f32>>), ReportError> {
            let (test, val) = smoothed_only(f)?;
            add_texture(test, val)
        };
        if det.settings.texture_map.is_some() && want("no_texture") {
            // The package's residual map alone: what the texture half adds.
            let (kind, w) = (det.settings.score, det.settings.surprise_weight);
            let (test, val) = smoothed_only(&|d| detection_map(d, kind, w, metric.as_ref()))?;
            ablation.push(variant("no_texture", &test, &val)?);
        }
        for kind in ScoreKind::ALL.into_iter().filter(|&k| k != det.settings.score && want(&format!("score_{}", k.name()))) {
            let (test, val) = rescored(&|d| detection_map(d, kind, weight, metric.as_ref()))?;
            ablation.push(variant(&format!("score_{}", kind.name()), &test, &val)?);
        }
        if want("l2_input_output") {
            let val_l2: Vec<Array2<f32>> = val_dets.iter().map(|d| det.filter(&l2_input_output_map(d, None)?)).collect::<Result<_, _>>()?;
            ablation.push(variant("l2_input_output", &l2_maps, &val_l2)?);
        }
        if want("texture_stats") {
            // The model-free baseline: grey local statistics of normals from the training split,
            // scored by Mahalanobis distance (`runtime::texture`); no package involved.
            let (train, _) = data::split_validation(&cat.train_good, o.val_fraction);
            let picked: Vec<PathBuf> = train.into_iter().take(TEXTURE_NORMALS).collect();
            let (normals, _) = data::load_many_within(&picked, c, s, &o.decode);
            let why = |e: crate::runtime::texture::TextureError| ReportError::Invalid(format!("texture_stats: {e}"));
            let views: Vec<_> = normals.iter().map(|(_, a)| a.view()).collect();
            let td = TextureDetector::fit(&views, FeatureSet::GREY, 1).map_err(why)?;
            let test: Vec<Array2<f32>> = inputs.iter().map(|(_, a, _)| td.map(a.view())).collect::<Result<_, _>>().map_err(why)?;
            let val: Vec<Array2<f32>> = val_arrays.iter().map(|a| td.map(a.view())).collect::<Result<_, _>>().map_err(why)?;
            ablation.push(variant("texture_stats", &test, &val)?);
        }
        if let Some(m) = metric.as_ref() {
            // What the metric alone does (ℓ2's residual, whitened) and what the package's map
            // does without it: separates the metric's share of any gain from resampling's.
            if want("l2_whitened") {
                let (test, val) = rescored(&|d| l2_input_output_map(d, Some(m)))?;
                ablation.push(variant("l2_whitened", &test, &val)?);
            }
            if want("no_whitening") {
                let (kind, w) = (det.settings.score, det.settings.surprise_weight);
                let (test, val) = rescored(&|d| detection_map(d, kind, w, None))?;
                ablation.push(variant("no_whitening", &test, &val)?);
            }
            if m.patch > 1 && want("whiten_per_pixel") {
                // What the patch buys: the per-pixel metric and its own border profile, both
                // estimated from the same validation normals exactly as `tune` does.
                let (kind, w) = (det.settings.score, det.settings.surprise_weight);
                let why = |e: &dyn std::fmt::Display| ReportError::Invalid(format!("whiten_per_pixel: {e}"));
                let m1 = normal_residual_metric(&val_dets, 1).map_err(|e| why(&e))?;
                let m1 = to_array(&m1, m.channels, 1).map_err(|e| why(&e))?;
                let raw = |ds: &[Detection]| ds.iter().map(|d| detection_map(d, kind, w, Some(&m1))).collect::<Result<Vec<_>, _>>();
                let (raw_test, raw_val) = (raw(&test_dets)?, raw(&val_dets)?);
                let profile = match det.settings.border_profile {
                    Some(_) => Some(border::estimate(&raw_val).map_err(|e| why(&e))?),
                    None => None,
                };
                let post = |maps: &[Array2<f32>]| maps.iter().map(|r| det.smooth_with(r, profile.as_deref())).collect::<Result<Vec<_>, _>>();
                let (test, val) = add_texture(post(&raw_test)?, post(&raw_val)?)?;
                ablation.push(variant("whiten_per_pixel", &test, &val)?);
            }
        }
        if det.settings.border_profile.is_some() && want("no_border") {
            // The package's map with the bilateral filter alone.
            let (kind, w) = (det.settings.score, det.settings.surprise_weight);
            let plain = |ds: &[Detection]| ds.iter().map(|d| Ok(det.filter(&detection_map(d, kind, w, metric.as_ref())?)?)).collect::<Result<Vec<_>, ReportError>>();
            let (test, val) = add_texture(plain(&test_dets)?, plain(&val_dets)?)?;
            ablation.push(variant("no_border", &test, &val)?);
        }
        let test_arrays: Vec<Array3<f32>> = inputs.iter().map(|(_, a, _)| a.clone()).collect();
        // The other restoration rule: a full rerun (it changes which codes the prior sees).
        let keep_restore = det.settings.restore;
        let restore_name = format!("restore_{}", keep_restore.other().name());
        if want(&restore_name) {
            det.settings.restore = keep_restore.other();
            let val_r: Vec<Array2<f32>> = det.detect_arrays(&val_arrays)?.into_iter().map(|d| d.smoothed).collect();
            let test_r: Vec<Array2<f32>> = det.detect_arrays(&test_arrays)?.into_iter().map(|d| d.smoothed).collect();
            det.settings.restore = keep_restore;
            ablation.push(variant(&restore_name, &test_r, &val_r)?);
        }
        if want("no_local_constraint") {
            let keep = det.settings.local_constraint;
            det.settings.local_constraint = false;
            let val_nl: Vec<Array2<f32>> = det.detect_arrays(&val_arrays)?.into_iter().map(|d| d.smoothed).collect();
            let nl_maps: Vec<Array2<f32>> = det.detect_arrays(&test_arrays)?.into_iter().map(|d| d.smoothed).collect();
            det.settings.local_constraint = keep;
            ablation.push(variant("no_local_constraint", &nl_maps, &val_nl)?);
        }
    }
    Ok(CategoryReport {
        category: cat.name.clone(),
        package: package.into(),
        version: version.into(),
        eta: det.settings.eta,
        pixel_threshold: threshold as f64,
        min_area: min_area as i64,
        rows,
        ablation,
        diagnostics: Some(diagnostics(&test_dets, &gts, &maps, min_area)?),
        failed,
    })
}

/// What the prior and the resampling did on the test images (see [`Diagnostics`]).
fn diagnostics(dets: &[Detection], gts: &[Array2<u8>], maps: &[Array2<f32>], min_area: usize) -> Result<Diagnostics, ReportError> {
    let labels: Vec<bool> = gts.iter().map(|g| g.iter().any(|&v| v > 0)).collect();
    let oracle = best_image_accuracy(maps, &labels, min_area)?;
    let (mut cell_scores, mut cell_labels) = (vec![], vec![]);
    let (mut fired_g, mut pos_g, mut fired_d, mut pos_d, mut fired_in, mut cells_in) = (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    let (mut nll_g, mut nll_d, mut drift, mut n_good) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    let mut recon_ratio = 0.0f64;
    for (d, gt) in dets.iter().zip(gts) {
        let (m, n) = d.log_prob.dim();
        let nll = -d.log_prob.iter().map(|&v| v as f64).sum::<f64>();
        if gt.iter().any(|&v| v > 0) {
            fired_d += d.resampled.len();
            pos_d += m * n;
            nll_d += nll;
            let (h, w) = gt.dim();
            let mut hit = Array2::<bool>::from_elem((m, n), false);
            for ((i, j), &v) in gt.indexed_iter() {
                if v > 0 {
                    hit[[i * m / h, j * n / w]] = true;
                }
            }
            cells_in += hit.iter().filter(|&&b| b).count();
            // Defect share of each latent cell, for the prior's per-cell separability.
            let mut inside = Array2::<usize>::zeros((m, n));
            for ((i, j), &v) in gt.indexed_iter() {
                if v > 0 {
                    inside[[i * m / h, j * n / w]] += 1;
                }
            }
            let cell = (h / m) * (w / n);
            for ((a, b), &k) in inside.indexed_iter() {
                if 2 * k > cell {
                    cell_scores.push(-d.log_prob[[a, b]] as f64);
                    cell_labels.push(true);
                }
            }
            fired_in += d.resampled.iter().filter(|&&(a, b)| hit[[a, b]]).count();
        } else {
            fired_g += d.resampled.len();
            pos_g += m * n;
            nll_g += nll;
            drift += d.eq6_map.mean().unwrap_or(0.0) as f64;
            recon_ratio += recon_ratio_of(&d.input, &d.direct);
            n_good += 1;
            cell_scores.extend(d.log_prob.iter().map(|&v| -v as f64));
            cell_labels.extend(std::iter::repeat_n(false, m * n));
        }
    }
    let ratio = |a: f64, b: usize| if b > 0 { a / b as f64 } else { f64::NAN };
    Ok(Diagnostics {
        fired_fraction_good: ratio(fired_g as f64, pos_g),
        fired_fraction_defective: ratio(fired_d as f64, pos_d),
        fired_fraction_in_defects: ratio(fired_in as f64, cells_in),
        prior_nll_good: ratio(nll_g, pos_g),
        prior_nll_defective: ratio(nll_d, pos_d),
        restored_drift_good: ratio(drift, n_good),
        defect_cell_nll_auroc: auroc(&cell_scores, &cell_labels)?,
        oracle_image_accuracy: oracle.map(|(a, _)| a),
        oracle_threshold: oracle.map(|(_, t)| t as f64),
        recon_ratio_good: (n_good > 0).then(|| recon_ratio / n_good as f64),
    })
}

/// MSE of `recon` against `img` divided by `img`'s variance over all its pixels and channels.
pub fn recon_ratio_of(img: &Array3<f32>, recon: &Array3<f32>) -> f64 {
    let n = img.len().max(1) as f64;
    let mean = img.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = img.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let mse = img.iter().zip(recon.iter()).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>() / n;
    mse / var.max(1e-12)
}

/// Combines category reports, adding mean rows.
pub fn combine(categories: Vec<CategoryReport>) -> EvalReport {
    let overall: Vec<&MetricRow> = categories.iter().filter_map(|c| c.rows.iter().find(|r| r.subset == "overall")).collect();
    let mean = (categories.len() > 1).then(|| mean_row("mean", &overall));
    let mut ablation_mean = vec![];
    if categories.iter().all(|c| !c.ablation.is_empty()) && !categories.is_empty() {
        for v in std::iter::once("full").chain(VARIANTS) {
            let rows: Vec<&MetricRow> = categories.iter().filter_map(|c| c.ablation.iter().find(|a| a.variant == v)).map(|a| &a.row).collect();
            if rows.is_empty() {
                continue;
            }
            ablation_mean.push(VariantRow { variant: v.into(), pixel_threshold: f64::NAN, row: mean_row("mean", &rows) });
        }
    }
    EvalReport { vqad_version: crate::VERSION.into(), categories, mean, ablation_mean }
}

fn f(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "–".into())
}

/// `report.md`: tables shaped like the paper's.
pub fn markdown(r: &EvalReport) -> String {
    let mut s = String::from("# vqad evaluation\n\n");
    let header = "| | images | image acc. (T1) | PRO (T2) | pixel AUROC (T3) | image F1 (T4) | pixel F1 (T4) | image AUROC | AUPRO@0.3 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    let line = |name: &str, row: &MetricRow| {
        format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.images,
            f(row.image_accuracy),
            f(row.pro),
            f(row.pixel_auroc),
            f(row.image_f1),
            f(row.pixel_f1),
            f(row.image_auroc),
            f(row.aupro_30)
        )
    };
    if r.categories.len() > 1 {
        s.push_str("## Categories\n\n");
        s.push_str(header);
        for c in &r.categories {
            if let Some(o) = c.rows.iter().find(|x| x.subset == "overall") {
                s.push_str(&line(&c.category, o));
            }
        }
        if let Some(m) = &r.mean {
            s.push_str(&line("**mean**", m));
        }
        s.push('\n');
    }
    for c in &r.categories {
        s.push_str(&format!(
            "## {} ({} {})\n\nη = {}, pixel threshold = {:.3e}, minimum area = {} px. Rows per defect type include the good images.\n\n",
            c.category, c.package, c.version, c.eta, c.pixel_threshold, c.min_area
        ));
        s.push_str(header);
        for row in &c.rows {
            let name = if row.subset == "overall" { "**overall**".to_string() } else { row.subset.clone() };
            s.push_str(&line(&name, row));
        }
        if !c.ablation.is_empty() {
            s.push_str("\n### Ablation (Fig. 8)\n\nEach variant's threshold is chosen on validation normals by the same protocol.\n\n");
            s.push_str(&header.replacen("| |", "| variant |", 1));
            for v in &c.ablation {
                s.push_str(&line(&v.variant, &v.row));
            }
        }
        if !c.failed.is_empty() {
            s.push_str(&format!("\nSkipped {} unreadable files:\n\n", c.failed.len()));
            for e in &c.failed {
                s.push_str(&format!("- {e}\n"));
            }
        }
        s.push('\n');
    }
    if !r.ablation_mean.is_empty() && r.categories.len() > 1 {
        s.push_str("## Ablation, mean over categories\n\n");
        s.push_str(&header.replacen("| |", "| variant |", 1));
        for v in &r.ablation_mean {
            s.push_str(&line(&v.variant, &v.row));
        }
    }
    s
}

/// Writes `report.json` and `report.md` into `out`.
pub fn write_report(r: &EvalReport, out: &Path) -> Result<(PathBuf, PathBuf), ReportError> {
    let j = out.join("report.json");
    let m = out.join("report.md");
    let mut bytes = serde_json::to_vec_pretty(r).expect("serialisable");
    bytes.push(b'\n');
    crate::fsutil::write_atomic(&j, &bytes).map_err(|e| ReportError::Io(j.display().to_string(), e))?;
    crate::fsutil::write_atomic(&m, markdown(r).as_bytes()).map_err(|e| ReportError::Io(m.display().to_string(), e))?;
    Ok((j, m))
}
