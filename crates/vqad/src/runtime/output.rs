//! Files a detection leaves behind: per-image JSON (schema `schemas/detection.schema.json`),
//! mask, heat-map overlay and restored image PNGs, optional raw/smoothed maps as `.npy`.

use super::detector::{Detection, StageMillis};
use super::session::Provider;
use crate::config::{RestoreRule, ScoreKind};
use crate::data::{array_to_image, mask_to_image};
use crate::fsutil::write_atomic;
use image::{Rgb, RgbImage};
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One image's result as written to `<stem>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectionRecord {
    pub image: String,
    pub image_score: f32,
    pub anomalous: bool,
    /// Number of latent positions resampled, and which.
    pub resampled_positions: usize,
    pub resampled: Vec<[usize; 2]>,
    pub prior_passes: usize,
    pub millis: StageMillisRecord,
    pub providers: BTreeMap<String, Provider>,
    /// Precision of the graphs that ran (fp32, fp16, int8); absent in records of older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<crate::onnx::Precision>,
    pub eta: f64,
    pub local_constraint: bool,
    pub pixel_threshold: Option<f64>,
    pub min_area: i64,
    /// The map (eq. 6 or a named variant) and restoration rule that produced this result.
    pub score: ScoreKind,
    pub restore: RestoreRule,
    /// Anomalous pixels in the mask.
    pub mask_pixels: usize,
    /// Output files, relative to the output folder.
    pub outputs: BTreeMap<String, String>,
}

/// [`StageMillis`] as stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct StageMillisRecord {
    pub encode: f64,
    pub prior: f64,
    pub decode: f64,
    pub filter: f64,
    pub total: f64,
}

impl From<StageMillis> for StageMillisRecord {
    fn from(m: StageMillis) -> Self {
        StageMillisRecord { encode: m.encode, prior: m.prior, decode: m.decode, filter: m.filter, total: m.total }
    }
}

/// A jet-like colour for t in [0, 1].
fn colour(t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    let r = (1.5 - (4.0 * t - 3.0).abs()).clamp(0.0, 1.0);
    let g = (1.5 - (4.0 * t - 2.0).abs()).clamp(0.0, 1.0);
    let b = (1.5 - (4.0 * t - 1.0).abs()).clamp(0.0, 1.0);
    [r, g, b]
}

/// The input blended with a heat map of `map`; full colour at `scale` (e.g. 2 × threshold).
pub fn heatmap_overlay(det: &Detection, map: &ArrayView2<f32>, scale: f32) -> RgbImage {
    let base = array_to_image(&det.input.view()).to_rgb8();
    let (h, w) = map.dim();
    let scale = if scale > 0.0 && scale.is_finite() { scale } else { map.iter().copied().fold(f32::MIN_POSITIVE, f32::max) };
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let t = map[[y as usize, x as usize]] / scale;
        let c = colour(t);
        let p = base.get_pixel(x, y).0;
        let a = 0.5;
        Rgb([0, 1, 2].map(|i| ((1.0 - a) * p[i] as f32 + a * 255.0 * c[i]).round() as u8))
    })
}

/// A grayscale rendering of a score map, normalised by `scale`.
pub fn map_image(map: &ArrayView2<f32>, scale: f32) -> RgbImage {
    let (h, w) = map.dim();
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let c = colour(map[[y as usize, x as usize]] / scale.max(f32::MIN_POSITIVE));
        Rgb(c.map(|v| (v * 255.0).round() as u8))
    })
}

fn png_bytes(img: &image::DynamicImage) -> std::io::Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).map_err(std::io::Error::other)?;
    Ok(buf.into_inner())
}

fn write_png(dir: &Path, name: &str, img: image::DynamicImage) -> std::io::Result<String> {
    write_atomic(&dir.join(name), &png_bytes(&img)?)?;
    Ok(name.to_string())
}

fn write_npy<D: ndarray::Dimension>(dir: &Path, name: &str, a: &ndarray::Array<f32, D>) -> std::io::Result<String> {
    let mut buf = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(a, &mut buf).map_err(std::io::Error::other)?;
    write_atomic(&dir.join(name), &buf)?;
    Ok(name.to_string())
}

/// Settings that go into each record.
pub struct RecordContext<'a> {
    pub providers: &'a BTreeMap<String, Provider>,
    pub precision: crate::onnx::Precision,
    pub settings: &'a crate::config::DetectConfig,
}

/// Writes `<stem>.json`, `<stem>_mask.png`, `<stem>_heatmap.png`, `<stem>_restored.png` and,
/// with `save_maps`, `<stem>_raw.npy` / `<stem>_smoothed.npy` and the latent `<stem>_logprob.npy` /
/// `<stem>_entropy.npy`, and the input, direct reconstruction and restored image as
/// `<stem>_input.npy` / `<stem>_direct.npy` / `<stem>_restored.npy` into `dir`.
pub fn write_detection(dir: &Path, stem: &str, image: &str, det: &Detection, ctx: &RecordContext, save_maps: bool) -> std::io::Result<DetectionRecord> {
    std::fs::create_dir_all(dir)?;
    let mut outputs = BTreeMap::new();
    outputs.insert("mask".into(), write_png(dir, &format!("{stem}_mask.png"), image::DynamicImage::ImageLuma8(mask_to_image(&det.mask.view())))?);
    let scale = ctx.settings.pixel_threshold.map(|t| 2.0 * t as f32).unwrap_or(0.0);
    outputs.insert("heatmap".into(), write_png(dir, &format!("{stem}_heatmap.png"), image::DynamicImage::ImageRgb8(heatmap_overlay(det, &det.smoothed.view(), scale)))?);
    outputs.insert("restored".into(), write_png(dir, &format!("{stem}_restored.png"), array_to_image(&det.restored.view()))?);
    if save_maps {
        outputs.insert("raw_map".into(), write_npy(dir, &format!("{stem}_raw.npy"), &det.raw_map)?);
        outputs.insert("smoothed_map".into(), write_npy(dir, &format!("{stem}_smoothed.npy"), &det.smoothed)?);
        // The prior's view of the input's own codes, [M, N]: where it was surprised, and how sure it was.
        outputs.insert("log_prob".into(), write_npy(dir, &format!("{stem}_logprob.npy"), &det.log_prob)?);
        outputs.insert("entropy".into(), write_npy(dir, &format!("{stem}_entropy.npy"), &det.entropy)?);
        // The images the maps come from, [C, H, W] in [0, 1] at the model's input size.
        outputs.insert("input".into(), write_npy(dir, &format!("{stem}_input.npy"), &det.input)?);
        outputs.insert("direct".into(), write_npy(dir, &format!("{stem}_direct.npy"), &det.direct)?);
        outputs.insert("restored_array".into(), write_npy(dir, &format!("{stem}_restored.npy"), &det.restored)?);
    }
    let rec = DetectionRecord {
        image: image.to_string(),
        image_score: det.image_score,
        anomalous: det.anomalous,
        resampled_positions: det.resampled.len(),
        resampled: det.resampled.iter().map(|&(m, n)| [m, n]).collect(),
        prior_passes: det.prior_passes,
        millis: det.millis.into(),
        providers: ctx.providers.clone(),
        precision: Some(ctx.precision),
        eta: ctx.settings.eta,
        local_constraint: ctx.settings.local_constraint,
        pixel_threshold: ctx.settings.pixel_threshold,
        min_area: ctx.settings.min_area,
        score: ctx.settings.score,
        restore: ctx.settings.restore,
        mask_pixels: det.mask.iter().filter(|&&v| v > 0).count(),
        outputs,
    };
    let mut json = serde_json::to_vec_pretty(&rec).expect("serialisable");
    json.push(b'\n');
    write_atomic(&dir.join(format!("{stem}.json")), &json)?;
    Ok(rec)
}

/// A unique, readable file stem for an input: its path relative to the input root it was
/// found under, with separators replaced (`test/scratch/000.png` → `test__scratch__000`).
pub fn stem_for(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let rel: PathBuf = rel.with_extension("");
    let s = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("__");
    let s: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    if s.is_empty() {
        "image".into()
    } else {
        s
    }
}
