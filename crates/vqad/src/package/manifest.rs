//! `manifest.json`: what a package holds, how to run it, and where it came from.
//!
//! Everything that changes a detection result is here (model shape, η, filter, thresholds)
//! and signed with the graphs, so a deployed model cannot lose its thresholds or drift from
//! the settings it was evaluated with. `schemas/manifest.schema.json` describes the same
//! layout for tools outside Rust; a test keeps the two in step.

use super::{PackageError, FORMAT_VERSION, GRAPH_FILES};
use crate::onnx::Precision;
use crate::config::{Config, DetectConfig, ModelConfig, RestoreRule, ScoreKind, TextureMap};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The signed description of a package. Unknown fields are refused: adding one needs a
/// [`FORMAT_VERSION`] bump, so an old verifier never silently ignores a new setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Layout version of this file; see [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Category (e.g. MVTec `bottle`): `[a-z0-9]` then `[a-z0-9_-]`, at most 64 characters.
    pub name: String,
    /// Canonical semver of this package (e.g. `1.2.0`).
    pub version: String,
    pub model: ModelShape,
    pub detection: DetectionSettings,
    pub provenance: Provenance,
    /// Evaluation metrics when known (e.g. `image_auroc`, `pixel_auroc`, `aupro_0.3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<BTreeMap<String, f64>>,
    /// Reduced-precision graph sets beside the FP32 reference, each with its measured parity
    /// (format 7). The FP32 graphs stay the reference and always run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variants: Option<BTreeMap<Precision, Variant>>,
}

/// The first format whose packages may carry [`Manifest::variants`].
pub const VARIANTS_FORMAT: u32 = 7;

/// One reduced-precision set of the three graphs and how far its results are from FP32.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Graph (`encoder.onnx`) → the archive entry holding this precision of it.
    pub files: BTreeMap<String, String>,
    /// How the variant was written (calibration data for INT8).
    pub method: String,
    /// What accuracy control kept in float32 to bring the variant within its bound: graphs
    /// (`decoder.onnx`) or convolution nodes (`Conv_2`). Empty when nothing was kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub float32: Vec<String>,
    pub parity: Parity,
}

/// A variant run beside FP32 on the validation normals and on synthetic defects painted on
/// them (figures are fractions in [0, 1] unless named otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parity {
    /// Validation normals and synthetic-defect images compared.
    pub normals: u64,
    pub defects: u64,
    /// Encoder: share of grid positions given the same code.
    pub encoder_code_agreement: f64,
    /// Prior on the reference's codes: signal-to-quantisation-noise of the log-probs (dB)
    /// and share of positions with the same most likely code.
    pub prior_logprob_sqnr_db: f64,
    pub prior_argmax_agreement: f64,
    /// Decoder on the reference's codes: largest and RMS difference of the output image.
    pub decoder_max_error: f64,
    pub decoder_rms_error: f64,
    /// End to end: share of grid positions with the same resample decision.
    pub resampled_agreement: f64,
    /// RMS difference of the raw anomaly maps, relative to the reference's pixel threshold.
    pub raw_map_rms_error: f64,
    /// Share of images with the same anomalous/normal decision, over the images not on the
    /// decision boundary.
    pub decision_agreement: f64,
    /// Images whose reference score is the pixel threshold itself (within 1e-5 relative): the
    /// tuning rule sets the threshold at one validation normal's score, so that image is
    /// decided either way by any change; they are left out of `decision_agreement`.
    pub boundary_images: u64,
    /// Mean IoU of the masks over images where the reference has a mask (none: no masks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_iou: Option<f64>,
    /// Pixel AUROC on the synthetic defects: reference, variant, and variant − reference.
    pub pixel_auroc_reference: f64,
    pub pixel_auroc: f64,
    pub auroc_difference: f64,
    pub bound: ParityBound,
    /// Whether the figures meet [`Parity::bound`].
    pub within_bound: bool,
    /// Why a variant outside its bound was packaged anyway (the user's explicit override).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<String>,
}

/// The least a variant must reach to be packaged without an override.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParityBound {
    pub min_decision_agreement: f64,
    pub min_mask_iou: f64,
}

impl Default for ParityBound {
    fn default() -> Self {
        ParityBound { min_decision_agreement: 0.99, min_mask_iou: 0.95 }
    }
}

impl std::str::FromStr for ParityBound {
    type Err = String;
    /// `DECISIONS,IOU`, both fractions in [0, 1], e.g. `0.99,0.95` (the default).
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [d, i] = parts.as_slice() else {
            return Err(format!("parity bound '{s}': expected DECISIONS,IOU, e.g. 0.99,0.95"));
        };
        let frac = |v: &str, what: &str| -> Result<f64, String> {
            let x: f64 = v.parse().map_err(|_| format!("parity bound '{s}': {what} '{v}' is not a number"))?;
            if (0.0..=1.0).contains(&x) {
                Ok(x)
            } else {
                Err(format!("parity bound '{s}': {what} {x} is not a fraction in [0, 1]"))
            }
        };
        Ok(ParityBound { min_decision_agreement: frac(d, "decision agreement")?, min_mask_iou: frac(i, "mask IoU")? })
    }
}

impl Parity {
    /// The first figure outside the bound, named, or None when within it.
    pub fn violation(&self) -> Option<String> {
        let b = &self.bound;
        if !(self.decision_agreement >= b.min_decision_agreement) {
            return Some(format!("decision agreement {:.4} is below the bound {}", self.decision_agreement, b.min_decision_agreement));
        }
        match self.mask_iou {
            Some(iou) if !(iou >= b.min_mask_iou) => Some(format!("mask IoU {iou:.4} is below the bound {}", b.min_mask_iou)),
            _ => None,
        }
    }

    fn check(&self) -> Result<(), String> {
        let fractions = [
            ("encoder_code_agreement", self.encoder_code_agreement),
            ("prior_argmax_agreement", self.prior_argmax_agreement),
            ("resampled_agreement", self.resampled_agreement),
            ("decision_agreement", self.decision_agreement),
            ("pixel_auroc_reference", self.pixel_auroc_reference),
            ("pixel_auroc", self.pixel_auroc),
            ("bound.min_decision_agreement", self.bound.min_decision_agreement),
            ("bound.min_mask_iou", self.bound.min_mask_iou),
        ];
        for (n, v) in fractions.iter().chain(self.mask_iou.as_ref().map(|v| ("mask_iou", *v)).as_slice()) {
            if !(0.0..=1.0).contains(v) {
                return Err(format!("{n} = {v} is not a fraction"));
            }
        }
        for (n, v) in [("decoder_max_error", self.decoder_max_error), ("decoder_rms_error", self.decoder_rms_error), ("raw_map_rms_error", self.raw_map_rms_error)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("{n} = {v} is not a finite non-negative number"));
            }
        }
        if self.prior_logprob_sqnr_db.is_nan() || (self.auroc_difference - (self.pixel_auroc - self.pixel_auroc_reference)).abs() > 1e-9 {
            return Err("prior_logprob_sqnr_db or auroc_difference is inconsistent".into());
        }
        if self.within_bound != self.violation().is_none() {
            return Err(format!("within_bound says {} but the figures say otherwise", self.within_bound));
        }
        if !self.within_bound && self.override_reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err("a variant outside its parity bound needs the override that packaged it recorded".into());
        }
        Ok(())
    }
}

/// Shapes the runtime checks the graphs against before running them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelShape {
    /// Input side in pixels (square images).
    pub image_size: i64,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: i64,
    /// Latent grid rows M.
    pub grid_m: i64,
    /// Latent grid columns N.
    pub grid_n: i64,
    /// Codebook size K.
    pub num_codes: i64,
    /// Code dimension D.
    pub code_dim: i64,
    /// ONNX opset the graphs were written with.
    pub opset: i64,
}

impl ModelShape {
    /// The shape a [`ModelConfig`] trains (square grid).
    pub fn from_config(m: &ModelConfig, opset: i64) -> Self {
        ModelShape {
            image_size: m.image_size,
            channels: m.channels,
            grid_m: m.grid(),
            grid_n: m.grid(),
            num_codes: m.num_codes,
            code_dim: m.code_dim,
            opset,
        }
    }
}

/// Detection settings (§3.3, §3.4, §4.2). The threshold is required: a package without one
/// cannot make image-level decisions, and silently defaulting it is the bug DESIGN.md names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionSettings {
    /// Resampling threshold η of eq. 5.
    pub eta: f64,
    /// Whether the local constraint I(m, n) < η of eq. 5 is applied.
    pub local_constraint: bool,
    /// Bilateral filter diameter d.
    pub bilateral_d: i64,
    /// σ_color on the raw eq. 6 map (squared [0, 1] intensity summed over channels).
    pub sigma_color: f64,
    /// σ_space in pixels.
    pub sigma_space: f64,
    /// Pixel threshold on the smoothed map.
    pub pixel_threshold: f64,
    /// Minimum connected-component area (pixels) for an anomalous image.
    pub min_area: i64,
    /// The data η and the thresholds were chosen on (never the test set).
    pub tuned_on: TuningData,
    /// The anomaly map when it is not the paper's eq. 6 alone (absent = `paper`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<ScoreKind>,
    /// Weight of the prior's surprise in the map (only with `score` = `surprise`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surprise_weight: Option<f64>,
    /// The code a fired position gets when it is not the paper's argmax (absent = `argmax`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreRule>,
    /// Side k of the residual patch the metric is over (absent = 1, per pixel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual_patch: Option<u32>,
    /// (C·k²)² metric of the map's residual, rows first (absent = plain ℓ2; see
    /// `runtime::whiten`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual_metric: Option<Vec<Vec<f64>>>,
    /// Factor per ring of pixels from the edge the map is divided by (absent = none; see
    /// `runtime::border`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub border_profile: Option<Vec<f64>>,
    /// The texture-statistics half of the map (absent = the residual map alone; see
    /// `runtime::texture`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub texture_map: Option<TextureMap>,
}

/// What the thresholds were chosen on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuningData {
    /// e.g. `validation-normals` or `synthetic-negatives` (§4.3.3).
    pub source: String,
    /// Number of images used, when known.
    pub images: Option<u64>,
    /// Free text: the rule used (e.g. "99.5th percentile of validation pixels").
    pub notes: Option<String>,
}

impl DetectionSettings {
    /// Copies a tuned [`DetectConfig`]; refuses one with no pixel threshold.
    pub fn from_config(d: &DetectConfig, tuned_on: TuningData) -> Result<Self, PackageError> {
        Ok(DetectionSettings {
            eta: d.eta,
            local_constraint: d.local_constraint,
            bilateral_d: d.bilateral_d,
            sigma_color: d.sigma_color,
            sigma_space: d.sigma_space,
            pixel_threshold: d.pixel_threshold.ok_or(PackageError::MissingThreshold)?,
            min_area: d.min_area,
            tuned_on,
            score: (d.score != ScoreKind::Paper).then_some(d.score),
            surprise_weight: (d.score == ScoreKind::Surprise).then_some(d.surprise_weight),
            restore: (d.restore != RestoreRule::Argmax).then_some(d.restore),
            residual_patch: (d.residual_metric.is_some() && d.residual_patch != 1).then_some(d.residual_patch as u32),
            residual_metric: d.residual_metric.clone(),
            border_profile: d.border_profile.clone(),
            texture_map: d.texture_map.clone(),
        })
    }

    /// The lowest manifest format that can carry these settings (see [`FORMAT_VERSION`]).
    pub fn format_needed(&self) -> u32 {
        if let Some(t) = &self.texture_map {
            t.format_needed()
        } else if self.residual_patch.is_some() {
            4
        } else if self.residual_metric.is_some() || self.border_profile.is_some() {
            3
        } else if self.score.is_some() || self.surprise_weight.is_some() || self.restore.is_some() {
            2
        } else {
            1
        }
    }

    /// Back to the runtime's settings type.
    pub fn to_config(&self) -> DetectConfig {
        DetectConfig {
            eta: self.eta,
            local_constraint: self.local_constraint,
            bilateral_d: self.bilateral_d,
            sigma_color: self.sigma_color,
            sigma_space: self.sigma_space,
            pixel_threshold: Some(self.pixel_threshold),
            min_area: self.min_area,
            score: self.score.unwrap_or_default(),
            surprise_weight: self.surprise_weight.unwrap_or(0.0),
            restore: self.restore.unwrap_or_default(),
            whiten: self.residual_metric.is_some(),
            residual_patch: self.residual_patch.map_or(1, |k| k as usize),
            residual_metric: self.residual_metric.clone(),
            // A tuning input (η is its result, stored above); packages do not carry it.
            fire_fraction: DetectConfig::default_fire_fraction(),
            border: self.border_profile.is_some(),
            border_profile: self.border_profile.clone(),
            texture: self.texture_map.is_some(),
            texture_weight: self.texture_map.as_ref().map(|t| t.weight),
            texture_map: self.texture_map.clone(),
        }
    }
}

/// Where the model came from: enough to reproduce the run and to audit it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub dataset: DatasetInfo,
    /// The full training [`Config`], as JSON (kept as a value so a later config field does
    /// not make old manifests unreadable; see [`Provenance::config`]).
    pub training_config: serde_json::Value,
    pub seed: u64,
    pub epochs: Epochs,
    /// Final losses by name (e.g. `recon`, `commit`, `prior_nll`).
    pub final_losses: BTreeMap<String, f64>,
    pub codebook_usage: CodebookUsage,
    pub software: Software,
    /// Creation time, RFC 3339 UTC; from `SOURCE_DATE_EPOCH` when set (see [`created_timestamp`]).
    pub created: String,
}

impl Provenance {
    /// The training config, if it still parses with this vqad's [`Config`].
    pub fn config(&self) -> Result<Config, PackageError> {
        serde_json::from_value(self.training_config.clone())
            .map_err(|e| PackageError::BadManifest(format!("provenance.training_config: {e}")))
    }
}

/// The training images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetInfo {
    /// sha256 (hex) over the training image set, as computed by the data module.
    pub digest: String,
    /// Number of training images.
    pub images: u64,
    /// Free text, e.g. "MVTec AD bottle train/good".
    pub description: Option<String>,
}

/// Epochs actually run for each stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Epochs {
    pub vqvae: u64,
    pub prior: u64,
}

/// How much of the codebook the encoder really uses (a collapsed codebook is a bad model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodebookUsage {
    /// Codes used at least once on the training set.
    pub used_codes: u64,
    /// Perplexity of the code distribution, when measured.
    pub perplexity: Option<f64>,
}

/// Tool versions; `None` where a component was not involved or not known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Software {
    pub vqad_version: String,
    pub git_commit: Option<String>,
    pub rustc: Option<String>,
    pub tch: Option<String>,
    pub libtorch: Option<String>,
    /// The ONNX Runtime version the graphs were checked with.
    pub onnxruntime: Option<String>,
}

impl Software {
    /// This build's vqad version, git commit and rustc (recorded by build.rs); the caller
    /// fills in tch, libtorch and ONNX Runtime.
    pub fn this_build() -> Self {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Software {
            vqad_version: crate::VERSION.to_string(),
            git_commit: crate::source::source_state().commit.clone(),
            rustc: opt(crate::RUSTC_VERSION),
            tch: None,
            libtorch: None,
            onnxruntime: None,
        }
    }
}

/// Creation time for a manifest: `SOURCE_DATE_EPOCH` (seconds) when set, so reproducible
/// builds get identical manifests, else now; RFC 3339 UTC with second precision.
pub fn created_timestamp() -> Result<String, PackageError> {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.trim().parse::<i64>().map_err(|_| {
            PackageError::BadInput(format!("SOURCE_DATE_EPOCH='{s}' is not an integer number of seconds"))
        })?,
        Err(_) => time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    format_rfc3339(secs)
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(secs: i64) -> Result<String, PackageError> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| PackageError::BadInput(format!("timestamp {secs}: {e}")))?;
    t.format(time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"))
        .map_err(|e| PackageError::BadInput(format!("timestamp {secs}: {e}")))
}

/// `YYYY-MM-DDTHH:MM:SSZ` naming a real instant (the form [`format_rfc3339`] writes).
fn is_rfc3339_utc_seconds(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| s.get(r).filter(|t| t.bytes().all(|c| c.is_ascii_digit())).and_then(|t| t.parse::<i32>().ok());
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
        return false;
    }
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) =
        (num(0..4), num(5..7), num(8..10), num(11..13), num(14..16), num(17..19))
    else {
        return false;
    };
    let Ok(month) = time::Month::try_from(mo as u8) else { return false };
    time::Date::from_calendar_date(y, month, d as u8).is_ok() && time::Time::from_hms(h as u8, mi as u8, se as u8).is_ok()
}

/// A category name that is safe as a file and folder name on every platform.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok_first || !ok_rest || name.len() > 64 {
        return Err(format!(
            "name '{name}' must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"
        ));
    }
    Ok(())
}

impl Manifest {
    /// Checks what the types cannot: the format version, a safe name, a canonical semver
    /// version (so `1.0` and `1.0.0` cannot name the same package twice), sane numbers.
    pub fn validate(&self) -> Result<(), PackageError> {
        if !(1..=FORMAT_VERSION).contains(&self.format_version) {
            return Err(PackageError::UnsupportedFormatVersion {
                found: self.format_version.to_string(),
                supported: FORMAT_VERSION,
            });
        }
        if self.format_version < self.detection.format_needed() {
            return Err(PackageError::InvalidManifest(format!(
                "detection.score/surprise_weight/restore need format_version 2, detection.residual_metric/border_profile 3, detection.residual_patch 4, detection.texture_map 5 (8 as a mixture or with chroma); these settings need {}, the manifest says {}",
                self.detection.format_needed(),
                self.format_version
            )));
        }
        check_name(&self.name).map_err(PackageError::InvalidManifest)?;
        let v = semver::Version::parse(&self.version)
            .map_err(|e| PackageError::InvalidManifest(format!("version '{}' is not semver: {e}", self.version)))?;
        if v.to_string() != self.version || !v.build.is_empty() {
            return Err(PackageError::InvalidManifest(format!(
                "version '{}' must be canonical semver without build metadata",
                self.version
            )));
        }
        let m = &self.model;
        if [m.image_size, m.grid_m, m.grid_n, m.num_codes, m.code_dim, m.opset].iter().any(|&x| x < 1)
            || !(m.channels == 1 || m.channels == 3)
        {
            return Err(PackageError::InvalidManifest(format!("model shape {m:?} is not valid")));
        }
        let d = &self.detection;
        if !(d.eta > 0.0 && d.eta < 1.0) || d.bilateral_d < 1 || d.min_area < 0 || !d.pixel_threshold.is_finite() {
            return Err(PackageError::InvalidManifest(format!("detection settings {d:?} are not valid")));
        }
        if d.residual_patch.is_some() && d.residual_metric.is_none() {
            return Err(PackageError::InvalidManifest("detection.residual_patch is set but there is no detection.residual_metric".into()));
        }
        if let Some(metric) = &d.residual_metric {
            // Checks the patch side too.
            let k = d.residual_patch.map_or(1, |k| k as usize);
            DetectConfig::check_residual_metric(metric, m.channels.max(0) as usize, k).map_err(|e| PackageError::InvalidManifest(format!("detection.{e}")))?;
        }
        if let Some(p) = &d.border_profile {
            DetectConfig::check_border_profile(p).map_err(|e| PackageError::InvalidManifest(format!("detection.{e}")))?;
        }
        if let Some(t) = &d.texture_map {
            t.check(m.channels.max(0) as usize).map_err(|e| PackageError::InvalidManifest(format!("detection.{e}")))?;
        }
        if let Some(vs) = &self.variants {
            if self.format_version < VARIANTS_FORMAT {
                return Err(PackageError::InvalidManifest(format!("variants need format_version {VARIANTS_FORMAT}, the manifest says {}", self.format_version)));
            }
            for (p, v) in vs {
                let bad = |e: String| PackageError::InvalidManifest(format!("variants.{p}: {e}"));
                if *p == Precision::Fp32 {
                    return Err(bad("fp32 is the reference, not a variant".into()));
                }
                // Each graph runs from its variant entry or, where the variant keeps it, FP32's.
                let keys_ok = v.files.keys().map(String::as_str).eq(GRAPH_FILES.iter().copied().collect::<std::collections::BTreeSet<_>>());
                if !keys_ok || v.files.iter().any(|(g, f)| *f != *g && *f != p.file_name(g)) || v.files.iter().all(|(g, f)| f == g) {
                    return Err(bad(format!("files must map each of {GRAPH_FILES:?} to itself or to its {p} entry, at least one to the latter")));
                }
                if v.float32.len() > 64 || v.float32.iter().any(|n| n.is_empty() || n.len() > 128 || n.chars().any(char::is_control)) {
                    return Err(bad("float32 must list at most 64 non-empty graph or node names of at most 128 characters".into()));
                }
                v.parity.check().map_err(bad)?;
            }
        }
        let digest = &self.provenance.dataset.digest;
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(PackageError::InvalidManifest("provenance.dataset.digest must be 64 lower-case hex digits".into()));
        }
        let created = &self.provenance.created;
        if !is_rfc3339_utc_seconds(created) {
            return Err(PackageError::InvalidManifest(format!("provenance.created '{created}' is not RFC 3339 UTC")));
        }
        Ok(())
    }

    /// The bytes stored as `manifest.json`: pretty JSON with a final newline (struct field
    /// order and sorted maps make it deterministic).
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, PackageError> {
        let mut v = serde_json::to_vec_pretty(self).map_err(|e| PackageError::InvalidManifest(e.to_string()))?;
        v.push(b'\n');
        Ok(v)
    }

    /// Parses signed `manifest.json` bytes: the format version first, with its own error,
    /// so a newer package is reported as such rather than as a pile of unknown fields.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, PackageError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| PackageError::BadManifest(e.to_string()))?;
        match value.get("format_version") {
            Some(serde_json::Value::Number(n)) if n.as_u64().is_some_and(|v| (1..=FORMAT_VERSION as u64).contains(&v)) => {}
            Some(other) => {
                return Err(PackageError::UnsupportedFormatVersion { found: other.to_string(), supported: FORMAT_VERSION })
            }
            None => return Err(PackageError::BadManifest("no format_version".into())),
        }
        let m: Manifest = serde_json::from_value(value).map_err(|e| PackageError::BadManifest(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// `<name>-<version>`: the package's identity in file names and in the signed subject.
    pub fn id(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }

    /// A complete manifest for tests and examples; every field filled with plausible values.
    #[doc(hidden)]
    pub fn example(name: &str, version: &str) -> Self {
        let cfg = Config::tiny();
        // The paper's rule, so that the example needs only format 1 and each test adds the
        // fields it is about.
        let mut detect = Config::paper().detect;
        detect.pixel_threshold = Some(0.0125);
        Manifest {
            format_version: FORMAT_VERSION,
            name: name.into(),
            version: version.into(),
            model: ModelShape::from_config(&cfg.model, 17),
            detection: DetectionSettings::from_config(
                &detect,
                TuningData {
                    source: "validation-normals".into(),
                    images: Some(21),
                    notes: Some("99.5th percentile of validation pixel scores".into()),
                },
            )
            .expect("threshold set"),
            provenance: Provenance {
                dataset: DatasetInfo {
                    digest: super::sha256_hex(b"example dataset"),
                    images: 209,
                    description: Some(format!("synthetic {name} train/good")),
                },
                training_config: serde_json::to_value(&cfg).expect("config serialises"),
                seed: 42,
                epochs: Epochs { vqvae: 30, prior: 40 },
                final_losses: BTreeMap::from([("recon".into(), 0.0021), ("prior_nll".into(), 1.37)]),
                codebook_usage: CodebookUsage { used_codes: 58, perplexity: Some(41.5) },
                software: Software {
                    tch: Some("0.26.0".into()),
                    libtorch: Some("2.13.0".into()),
                    onnxruntime: Some("1.31.1".into()),
                    ..Software::this_build()
                },
                created: "2025-01-02T03:04:05Z".into(),
            },
            metrics: Some(BTreeMap::from([("image_auroc".into(), 0.97), ("pixel_auroc".into(), 0.95)])),
            variants: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_round_trips_and_validates() {
        let m = Manifest::example("bottle", "1.0.0");
        m.validate().unwrap();
        let b = m.to_json_bytes().unwrap();
        assert_eq!(Manifest::from_json_bytes(&b).unwrap(), m);
        assert_eq!(m.detection.to_config().pixel_threshold, Some(0.0125));
        m.provenance.config().unwrap();
    }

    #[test]
    fn bad_names_and_versions_are_refused() {
        for (n, v) in [("Bottle", "1.0.0"), ("../x", "1.0.0"), ("", "1.0.0"), ("a b", "1.0.0"), ("ok", "1.0"), ("ok", "01.0.0"), ("ok", "1.0.0+build")] {
            assert!(Manifest::example(n, v).validate().is_err(), "{n} {v}");
        }
    }

    fn parity(decisions: f64, iou: Option<f64>) -> Parity {
        let mut p = Parity {
            normals: 20,
            defects: 20,
            encoder_code_agreement: 1.0,
            prior_logprob_sqnr_db: 30.0,
            prior_argmax_agreement: 0.9,
            decoder_max_error: 0.01,
            decoder_rms_error: 0.001,
            resampled_agreement: 0.99,
            raw_map_rms_error: 1e-4,
            decision_agreement: decisions,
            boundary_images: 1,
            mask_iou: iou,
            pixel_auroc_reference: 0.9,
            pixel_auroc: 0.9,
            auroc_difference: 0.0,
            bound: ParityBound::default(),
            within_bound: true,
            override_reason: None,
        };
        p.within_bound = p.violation().is_none();
        p
    }

    #[test]
    fn variants_need_format_7_a_consistent_parity_record_and_an_override_outside_the_bound() {
        let mut m = Manifest::example("bottle", "1.0.0");
        let files = |p: Precision| GRAPH_FILES.iter().map(|g| (g.to_string(), p.file_name(g))).collect::<BTreeMap<_, _>>();
        m.variants = Some(BTreeMap::from([(Precision::Fp16, Variant { files: files(Precision::Fp16), method: "m".into(), float32: vec![], parity: parity(1.0, Some(0.99)) })]));
        m.format_version = VARIANTS_FORMAT - 1;
        assert!(m.validate().unwrap_err().to_string().contains("format_version 7"));
        m.format_version = VARIANTS_FORMAT;
        m.validate().unwrap();
        let edit = |f: &dyn Fn(&mut Variant)| {
            let mut m2 = m.clone();
            f(m2.variants.as_mut().unwrap().get_mut(&Precision::Fp16).unwrap());
            m2.validate().map_err(|e| e.to_string())
        };
        // Figures that do not meet the bound, while claiming they do.
        assert!(edit(&|v| v.parity.decision_agreement = 0.98).unwrap_err().contains("within_bound"));
        assert!(edit(&|v| v.parity.mask_iou = Some(0.5)).unwrap_err().contains("within_bound"));
        // Outside the bound: only with the override that packaged it.
        assert!(edit(&|v| v.parity = parity(0.9, None)).unwrap_err().contains("override"));
        edit(&|v| {
            v.parity = parity(0.9, None);
            v.parity.override_reason = Some("accepted for line 3".into());
        })
        .unwrap();
        // Not fractions, inconsistent differences, wrong or absent entries.
        assert!(edit(&|v| v.parity.encoder_code_agreement = 1.5).unwrap_err().contains("fraction"));
        assert!(edit(&|v| v.parity.auroc_difference = 0.1).unwrap_err().contains("inconsistent"));
        assert!(edit(&|v| { v.files.insert("encoder.onnx".into(), "other.onnx".into()); }).is_err());
        assert!(edit(&|v| { v.files.remove("decoder.onnx"); }).is_err());
        assert!(edit(&|v| v.files = GRAPH_FILES.iter().map(|g| (g.to_string(), g.to_string())).collect()).is_err(), "a variant of nothing");
        // What accuracy control kept: names, bounded.
        edit(&|v| v.float32 = vec!["encoder.onnx".into()]).unwrap();
        assert!(edit(&|v| v.float32 = vec![String::new()]).unwrap_err().contains("float32"));
        assert!(edit(&|v| v.float32 = vec!["Conv_2".into(); 65]).unwrap_err().contains("float32"));
        assert!(edit(&|v| v.float32 = vec!["x".repeat(129)]).unwrap_err().contains("float32"));
        // The bound as `package --parity-bound` reads it.
        assert_eq!("0.99,0.95".parse::<ParityBound>().unwrap(), ParityBound::default());
        assert_eq!("1, 0.5".parse::<ParityBound>().unwrap(), ParityBound { min_decision_agreement: 1.0, min_mask_iou: 0.5 });
        for bad in ["0.99", "1.5,0.9", "0.9,-0.1", "a,b", "0.9,0.9,0.9", "NaN,0.9"] {
            assert!(bad.parse::<ParityBound>().is_err(), "{bad}");
        }
        let mut fp32 = m.clone();
        let v = fp32.variants.as_mut().unwrap().remove(&Precision::Fp16).unwrap();
        fp32.variants.as_mut().unwrap().insert(Precision::Fp32, v);
        assert!(fp32.validate().unwrap_err().to_string().contains("reference"));
        // The JSON round trip keeps everything (sorted keys: bytes are deterministic).
        let back = Manifest::from_json_bytes(&m.to_json_bytes().unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn unknown_format_version_has_its_own_error() {
        let mut v = serde_json::to_value(Manifest::example("bottle", "1.0.0")).unwrap();
        v["format_version"] = (FORMAT_VERSION + 1).into();
        let e = Manifest::from_json_bytes(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(e, PackageError::UnsupportedFormatVersion { .. }), "{e}");
    }

    #[test]
    fn new_detection_fields_need_format_2() {
        let mut m = Manifest::example("bottle", "1.0.0");
        m.format_version = 1;
        assert_eq!(m.detection.format_needed(), 1);
        m.validate().unwrap();
        m.detection.restore = Some(RestoreRule::NearestLikely);
        m.detection.score = Some(ScoreKind::RestoredInput);
        assert_eq!(m.detection.format_needed(), 2);
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("format_version 2"), "{e}");
        m.format_version = 2;
        let back = Manifest::from_json_bytes(&m.to_json_bytes().unwrap()).unwrap();
        assert_eq!(back.detection.to_config().restore, RestoreRule::NearestLikely);
        assert_eq!(back.detection.to_config().score, ScoreKind::RestoredInput);
    }

    #[test]
    fn residual_metric_needs_format_3_and_a_valid_matrix() {
        let mut m = Manifest::example("bottle", "1.0.0");
        m.format_version = 2;
        m.detection.residual_metric = Some(vec![vec![1.0, 0.2, 0.0], vec![0.2, 8.0, 0.0], vec![0.0, 0.0, 8.0]]);
        assert_eq!(m.detection.format_needed(), 3);
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("need 3") && e.contains("says 2"), "{e}");
        m.format_version = 3;
        let back = Manifest::from_json_bytes(&m.to_json_bytes().unwrap()).unwrap();
        let cfg = back.detection.to_config();
        assert!(cfg.whiten);
        assert_eq!(cfg.residual_metric, m.detection.residual_metric);
        // Wrong size for a 3-channel model, asymmetric, non-positive diagonal: refused by name.
        for (bad, why) in [
            (vec![vec![1.0, 0.0], vec![0.0, 1.0]], "3×3"),
            (vec![vec![1.0, 0.5, 0.0], vec![0.0, 1.0, 0.0], vec![0.0, 0.0, 1.0]], "symmetric"),
            (vec![vec![1.0, 0.0, 0.0], vec![0.0, -1.0, 0.0], vec![0.0, 0.0, 1.0]], "diagonal entry 1"),
        ] {
            m.detection.residual_metric = Some(bad);
            let e = m.validate().unwrap_err().to_string();
            assert!(e.contains("detection.residual_metric") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn residual_patch_needs_format_4_a_metric_and_the_matching_size() {
        let mut m = Manifest::example("bottle", "1.0.0");
        m.format_version = 3;
        let eye = |n: usize| (0..n).map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect::<Vec<Vec<f64>>>();
        m.detection.residual_patch = Some(3);
        m.detection.residual_metric = Some(eye(27));
        assert_eq!(m.detection.format_needed(), 4);
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("need 4") && e.contains("says 3"), "{e}");
        m.format_version = 4;
        let back = Manifest::from_json_bytes(&m.to_json_bytes().unwrap()).unwrap();
        let cfg = back.detection.to_config();
        assert_eq!((cfg.residual_patch, cfg.residual_metric.as_ref().map(Vec::len)), (3, Some(27)));
        // And back: a config with a per-pixel metric writes no patch (format 3 suffices).
        let mut c1 = cfg.clone();
        c1.residual_patch = 1;
        c1.residual_metric = Some(eye(3));
        let d1 = DetectionSettings::from_config(&c1, m.detection.tuned_on.clone()).unwrap();
        assert_eq!((d1.residual_patch, d1.format_needed()), (None, 3));
        // A 3×3 metric where a 3×3×3 patch needs 27×27; an even patch; a patch without metric.
        m.detection.residual_metric = Some(eye(3));
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("27×27"), "{e}");
        m.detection.residual_patch = Some(4);
        m.detection.residual_metric = Some(eye(48));
        assert!(m.validate().unwrap_err().to_string().contains("odd"));
        m.detection.residual_patch = Some(3);
        m.detection.residual_metric = None;
        assert!(m.validate().unwrap_err().to_string().contains("no detection.residual_metric"));
    }

    #[test]
    fn border_profile_needs_format_3_and_factors_of_at_least_one() {
        let mut m = Manifest::example("bottle", "1.0.0");
        m.format_version = 2;
        m.detection.border_profile = Some(vec![2.8, 1.5, 1.2]);
        assert_eq!(m.detection.format_needed(), 3);
        assert!(m.validate().unwrap_err().to_string().contains("says 2"));
        m.format_version = 3;
        let back = Manifest::from_json_bytes(&m.to_json_bytes().unwrap()).unwrap();
        let cfg = back.detection.to_config();
        assert!(cfg.border);
        assert_eq!(cfg.border_profile, Some(vec![2.8, 1.5, 1.2]));
        for bad in [vec![], vec![0.9], vec![f64::INFINITY]] {
            m.detection.border_profile = Some(bad.clone());
            let e = m.validate().unwrap_err().to_string();
            assert!(e.contains("detection.border_profile"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn missing_threshold_is_refused() {
        let d = Config::tiny().detect;
        let t = TuningData { source: "x".into(), images: None, notes: None };
        assert!(matches!(DetectionSettings::from_config(&d, t), Err(PackageError::MissingThreshold)));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(format_rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
    }
}
