//! Model, training and detection settings, with the paper's preset and a CPU-sized one.
//!
//! A run folder stores the exact [`Config`] it was trained with; a package manifest copies
//! the model shape and detection settings, so every number that changes a result is on disk.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Errors reading or checking a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: invalid config: {reason}")]
    Parse { path: String, reason: String },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("unknown preset '{0}' (expected 'paper', 'small' or 'tiny')")]
    UnknownPreset(String),
}

/// Whether a category is a texture (any rotation/flip, random crops) or an object (§4.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CategoryKind {
    Texture,
    Object,
}

impl std::str::FromStr for CategoryKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "texture" => Ok(Self::Texture),
            "object" => Ok(Self::Object),
            o => Err(format!("unknown category kind '{o}' (expected texture or object)")),
        }
    }
}

/// VQ-VAE shape (§3.1, §4.3.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Square input side in pixels.
    pub image_size: i64,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: i64,
    /// Stride-2 4×4 convolutions; the latent grid is `image_size >> downsamples`.
    /// The paper says six, but a 32×32 grid from 256² needs three; we follow the grid.
    pub downsamples: i64,
    /// Channels of the convolutional trunk.
    pub hidden: i64,
    /// Residual blocks after the 3×3 convolution (paper: 8).
    pub res_blocks: i64,
    /// Inner channels of a residual block.
    pub res_channels: i64,
    /// Codebook size K.
    pub num_codes: i64,
    /// Code dimension D.
    pub code_dim: i64,
}

impl ModelConfig {
    /// Side of the latent grid (M = N).
    pub fn grid(&self) -> i64 {
        self.image_size >> self.downsamples
    }
}

/// PixelSNAIL prior shape (§3.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorConfig {
    /// Channels of the causal trunk.
    pub channels: i64,
    /// How often (residual blocks + attention block) repeats (paper: 3).
    pub blocks: i64,
    /// Gated residual blocks in each repeat (paper: 1).
    pub res_per_block: i64,
    /// Attention heads.
    pub heads: i64,
    /// Key/query width of the attention, across all heads.
    pub attn_dim: i64,
    /// Width of the learned code embedding fed to the trunk.
    pub embed_dim: i64,
    /// Dropout inside residual blocks during training.
    pub dropout: f64,
}

/// Training schedule (§4.3.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub vqvae_epochs: i64,
    pub vqvae_batch: i64,
    pub prior_epochs: i64,
    pub prior_batch: i64,
    /// Adam learning rate for both stages.
    pub lr: f64,
    /// Commitment weight β of eq. 3.
    pub beta: f64,
    /// Fraction of train/good held out for validation (deterministic split).
    pub val_fraction: f64,
    /// Random rotations/flips/crops of §4.3.1.
    pub augment: bool,
    /// Codes used by fewer than this fraction of the epoch's vectors are re-seeded from
    /// encoder outputs at the end of the epoch (0 disables).
    pub dead_code_fraction: f64,
    /// Upper bound on optimiser steps per epoch (0 = all batches); keeps CPU runs bounded.
    pub max_steps_per_epoch: i64,
    /// Augmented copies of each training image whose index tables the prior also learns.
    pub prior_augment_copies: i64,
    /// Draw those augmented copies afresh every prior epoch (re-encoding them is cheap next to
    /// a prior step), so the prior sees new tables each epoch instead of memorising a fixed set.
    #[serde(default)]
    pub prior_fresh_augment: bool,
    /// Learning rate over the epochs of each stage: constant, or cosine decay to 5% of `lr`.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Fraction of VQ-VAE training images given a random pasted blob (another image's patch,
    /// a flat colour, or a darkened/brightened region) while the loss still asks for the clean
    /// image: a denoising VQ-VAE, beyond the paper, so defects get normal codes. 0 = the
    /// paper's plain reconstruction (and the field is left out of saved configs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub denoise_fraction: f64,
    /// Bound on the VQ-VAE decoder's pre-sigmoid output: training adds
    /// 0.01 · mean(max(0, |logit| − bound)²) to eq. 3 (0 = off, the paper's loss). Why: on a dark
    /// texture (the Hubble field) a wider decoder drove its logits far below 0 in the first
    /// epoch, where the sigmoid's gradient vanishes, and stayed black for good (validation MSE
    /// 1.48× the images' variance); gradient clipping and other codebook starts did not help.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vqvae_logit_bound: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Learning-rate schedule of both stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    #[default]
    Constant,
    Cosine,
}

impl LrSchedule {
    /// Learning rate at `progress` ∈ [0, 1] of a stage.
    pub fn at(self, lr: f64, progress: f64) -> f64 {
        match self {
            LrSchedule::Constant => lr,
            LrSchedule::Cosine => {
                let floor = 0.05 * lr;
                floor + (lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress.clamp(0.0, 1.0)).cos())
            }
        }
    }
}

/// How the anomaly map is formed from a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    /// Eq. 6 alone: Σ_c (x_r − x_d)² between the restored and the direct reconstruction.
    #[default]
    Paper,
    /// Eq. 6 plus `surprise_weight` × the prior's excess surprise at the input's codes,
    /// max(0, −log p(z_mn | z_<mn) − H_mn), spread over each latent cell's pixels. Gives every
    /// pixel a graded score where eq. 6 is exactly 0 (no resampling nearby).
    Surprise,
    /// Σ_c (x − x_r)² between the input and the restored image: the input–output residual
    /// where nothing was resampled, raised where resampling replaced a code by a normal one.
    RestoredInput,
}

impl ScoreKind {
    pub const ALL: [ScoreKind; 3] = [ScoreKind::Paper, ScoreKind::Surprise, ScoreKind::RestoredInput];

    /// The name used in configs, manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ScoreKind::Paper => "paper",
            ScoreKind::Surprise => "surprise",
            ScoreKind::RestoredInput => "restored_input",
        }
    }
}

impl std::str::FromStr for ScoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown score '{s}' (expected paper, surprise or restored_input)"))
    }
}


/// Which code a position gets when eq. 5 fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreRule {
    /// argmax_k P(Z_mn = k | z_<mn) (the paper).
    #[default]
    Argmax,
    /// The likely code nearest to the current one in codebook space (see
    /// `runtime::resample::Restore::NearestLikely`).
    NearestLikely,
}

impl RestoreRule {
    /// The name used in configs, manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RestoreRule::Argmax => "argmax",
            RestoreRule::NearestLikely => "nearest_likely",
        }
    }

    /// The rule that is not this one (the ablation's counterpart).
    pub fn other(self) -> Self {
        match self {
            RestoreRule::Argmax => RestoreRule::NearestLikely,
            RestoreRule::NearestLikely => RestoreRule::Argmax,
        }
    }
}

impl std::str::FromStr for RestoreRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Argmax, Self::NearestLikely]
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("unknown restore rule '{s}' (expected argmax or nearest_likely)"))
    }
}

/// Detection settings stored in a package (§3.3, §3.4, §4.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Resampling threshold η of eq. 5 (paper: 0.0005).
    pub eta: f64,
    /// The local constraint I(m, n) < η of eq. 5.
    pub local_constraint: bool,
    /// Bilateral filter diameter d (paper: 20 at 256²).
    pub bilateral_d: i64,
    /// σ_color, applied to the raw score map of eq. 6 (units: squared [0, 1] intensity summed
    /// over channels), as OpenCV's float bilateralFilter does.
    pub sigma_color: f64,
    /// σ_space in pixels.
    pub sigma_space: f64,
    /// Pixel threshold on the smoothed map; chosen without test labels by `tune`.
    pub pixel_threshold: Option<f64>,
    /// Minimum connected-component area (pixels) for an image to count as anomalous.
    pub min_area: i64,
    /// Map of the paper (eq. 6) or eq. 6 plus the prior's surprise.
    #[serde(default)]
    pub score: ScoreKind,
    /// Weight of the surprise term (map units per nat) when `score` is `surprise`.
    #[serde(default = "DetectConfig::default_surprise_weight")]
    pub surprise_weight: f64,
    /// The code a fired position gets: the paper's argmax, or the nearest likely code.
    #[serde(default)]
    pub restore: RestoreRule,
    /// Whether `tune` measures the anomaly map's residual in the metric of the validation
    /// normals' residuals (see `runtime::whiten`) instead of plain ℓ2.
    #[serde(default)]
    pub whiten: bool,
    /// Side k (odd) of the residual patch the metric is over: 1 = per pixel (colour only),
    /// larger also learns how neighbouring pixels' residuals move together on normal images.
    #[serde(default = "DetectConfig::default_residual_patch")]
    pub residual_patch: usize,
    /// That (C·k²)² metric, rows first, once `tune` has estimated it; absent = plain ℓ2 (the
    /// paper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual_metric: Option<Vec<Vec<f64>>>,
    /// Share of the validation normals' latent positions at which `tune` sets η to fire
    /// (see `eval::tune`).
    #[serde(default = "DetectConfig::default_fire_fraction")]
    pub fire_fraction: f64,
    /// Whether `tune` estimates a border profile (see `runtime::border`) from the validation
    /// normals' maps, so the reconstruction's weak outermost pixels stop setting the threshold.
    #[serde(default)]
    pub border: bool,
    /// That profile, once `tune` has estimated it: the factor each ring of pixels from the
    /// edge is divided by; absent = no correction (the paper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub border_profile: Option<Vec<f64>>,
    /// Whether `tune` adds the texture-statistics map (see `runtime::texture`) to the
    /// package's map: the departure of each neighbourhood's local statistics from the normals'
    /// in either direction (too dark, too smooth), which a residual map cannot see where the
    /// VQ-VAE blurs the surface.
    #[serde(default)]
    pub texture: bool,
    /// Weight of the texture map against the residual map, each divided by its scale on the
    /// validation normals (see [`TextureMap`]); absent = chosen by `tune` on synthetic defects
    /// pasted into the validation normals (see `eval::tune`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub texture_weight: Option<f64>,
    /// The texture map, once `tune` has fitted it; absent = the residual map alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub texture_map: Option<TextureMap>,
}

/// The texture-statistics half of the anomaly map, as `tune` fitted it and a package carries
/// it: the map is `residual / residual_scale + weight · texture / texture_scale`, where
/// `residual` is the smoothed residual map and `texture` the Gaussian-smoothed distance of each
/// pixel's local statistics (`runtime::texture`) to the normals' density: a single Gaussian
/// (`mean`, `precision`: the Mahalanobis distance; format 5) or a Gaussian mixture
/// (`components`; format 8), whose distance reduces to Mahalanobis' for one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextureMap {
    /// Each colour channel's local mean beside the grey level's statistics (colour images).
    pub colour: bool,
    /// With `colour`, the log of the local spread of the channels around their mean too: paint,
    /// print or a hole without the surface's colour noise is "too grey" even where its
    /// brightness and contrast pass (format 8).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chroma: bool,
    /// Side of the box window of the statistics, pixels at the model's input size.
    pub window: usize,
    /// σ of the Gaussian smoothing of the distance, pixels.
    pub sigma: f64,
    /// Mean of the normals' features (the single-Gaussian form; empty with `components`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mean: Vec<f64>,
    /// Inverse covariance of the normals' features, rows first (empty with `components`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub precision: Vec<Vec<f64>>,
    /// The normals' features as a Gaussian mixture (empty in the single-Gaussian form).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<MixtureComponent>,
    /// 99th percentile of the validation normals' residual and texture maps: both halves
    /// then count in units of what normal images reach.
    pub residual_scale: f64,
    pub texture_scale: f64,
    /// Weight of the texture half.
    pub weight: f64,
}

/// One Gaussian of the normals' feature density: its share of the pixels, mean and inverse
/// covariance (rows first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureComponent {
    pub weight: f64,
    pub mean: Vec<f64>,
    pub precision: Vec<Vec<f64>>,
}

impl TextureMap {
    /// Largest box window a config or manifest may carry.
    pub const MAX_WINDOW: usize = 63;
    /// Largest smoothing σ (pixels) a manifest may carry: the kernel's radius, 3σ, is
    /// allocated per map, so a file must not choose it freely.
    pub const MAX_SIGMA: f64 = 32.0;
    /// Most mixture components a manifest may carry (each costs a quadratic form per pixel).
    pub const MAX_COMPONENTS: usize = 16;

    /// Features per pixel for `channels` image channels: 3 grey statistics, plus each channel's
    /// mean and (with `chroma`) the chroma spread for colour images.
    pub fn features(colour: bool, chroma: bool, channels: usize) -> usize {
        3 + if colour && channels > 1 { channels + usize::from(chroma) } else { 0 }
    }

    /// The density as mixture components; the single-Gaussian form is one of weight 1.
    pub fn mixture(&self) -> Vec<MixtureComponent> {
        if self.components.is_empty() {
            vec![MixtureComponent { weight: 1.0, mean: self.mean.clone(), precision: self.precision.clone() }]
        } else {
            self.components.clone()
        }
    }

    /// What the map measures, for progress lines and `inspect`: "7 features (grey, colour,
    /// chroma), 4 Gaussians".
    pub fn summary(&self) -> String {
        let m = self.mixture();
        let parts = [Some("grey"), self.colour.then_some("colour"), self.chroma.then_some("chroma")];
        let n = m.len();
        format!("{} features ({}), {n} Gaussian{}", m[0].mean.len(), parts.iter().flatten().copied().collect::<Vec<_>>().join(", "), if n == 1 { "" } else { "s" })
    }

    /// The lowest manifest format that can carry this map: 8 for a mixture or the chroma
    /// feature, else 5.
    pub fn format_needed(&self) -> u32 {
        if self.components.is_empty() && !self.chroma {
            5
        } else {
            8
        }
    }

    /// Checks what a manifest may carry: an odd window of 3 to [`Self::MAX_WINDOW`] pixels,
    /// either `mean` and `precision` or 1 to [`Self::MAX_COMPONENTS`] components whose weights
    /// are positive and sum to 1, each with as many features as [`Self::features`] gives and a
    /// finite, symmetric, positive definite precision; positive finite scales, σ in
    /// (0, [`Self::MAX_SIGMA`]], a finite weight ≥ 0.
    pub fn check(&self, channels: usize) -> Result<(), String> {
        if self.window % 2 == 0 || !(3..=Self::MAX_WINDOW).contains(&self.window) {
            return Err(format!("texture_map.window must be odd and 3 to {}, got {}", Self::MAX_WINDOW, self.window));
        }
        let want = Self::features(self.colour, self.chroma, channels);
        let what = || format!("{channels} channels, colour {}, chroma {}", self.colour, self.chroma);
        let single = !self.mean.is_empty() || !self.precision.is_empty();
        match (single, self.components.len()) {
            (true, 0) => check_gaussian(None, &self.mean, &self.precision, want, &what)?,
            (true, _) => return Err("texture_map carries both mean/precision and components; one density only".into()),
            (false, 0) => return Err("texture_map needs mean and precision or components".into()),
            (false, n) if n > Self::MAX_COMPONENTS => return Err(format!("texture_map.components: at most {}, got {n}", Self::MAX_COMPONENTS)),
            (false, _) => {
                for (k, c) in self.components.iter().enumerate() {
                    if !(c.weight > 0.0 && c.weight <= 1.0) {
                        return Err(format!("texture_map.components[{k}].weight must be in (0, 1], got {}", c.weight));
                    }
                    check_gaussian(Some(k), &c.mean, &c.precision, want, &what)?;
                }
                let total: f64 = self.components.iter().map(|c| c.weight).sum();
                if (total - 1.0).abs() > 1e-6 {
                    return Err(format!("texture_map.components' weights must sum to 1, got {total}"));
                }
            }
        }
        for (name, v) in [("sigma", self.sigma), ("residual_scale", self.residual_scale), ("texture_scale", self.texture_scale)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(format!("texture_map.{name} must be positive and finite, got {v}"));
            }
        }
        if self.sigma > Self::MAX_SIGMA {
            return Err(format!("texture_map.sigma must be at most {} px, got {}", Self::MAX_SIGMA, self.sigma));
        }
        if !(self.weight >= 0.0 && self.weight.is_finite()) {
            return Err(format!("texture_map.weight must be finite and ≥ 0, got {}", self.weight));
        }
        Ok(())
    }
}

/// Checks one Gaussian of a texture map (`component` k of a mixture, or the single one):
/// `want` finite features, a `want`×`want` finite, symmetric precision that, in a mixture, is
/// positive definite (the mixture's distance needs its determinant; the single Gaussian only
/// needs a positive diagonal, as format 5 promised). Messages are built only on failure: the
/// runtime checks the map once per image.
fn check_gaussian(component: Option<usize>, mean: &[f64], precision: &[Vec<f64>], want: usize, what: &dyn Fn() -> String) -> Result<(), String> {
    let at = || component.map_or("texture_map".to_string(), |k| format!("texture_map.components[{k}]"));
    if mean.len() != want {
        return Err(format!("{}.mean must hold {want} features ({}), got {}", at(), what(), mean.len()));
    }
    if precision.len() != want || precision.iter().any(|r| r.len() != want) {
        return Err(format!("{}.precision must be {want}×{want}", at()));
    }
    if mean.iter().chain(precision.iter().flatten()).any(|v| !v.is_finite()) {
        return Err(format!("{}.mean and precision must be finite", at()));
    }
    for (i, row) in precision.iter().enumerate() {
        if row[i] <= 0.0 {
            return Err(format!("{}.precision diagonal entry {i} must be positive", at()));
        }
        for (j, &a) in row.iter().enumerate().take(i) {
            let b = precision[j][i];
            if (a - b).abs() > 1e-9 * a.abs().max(b.abs()).max(1.0) {
                return Err(format!("{}.precision is not symmetric at ({i}, {j})", at()));
            }
        }
    }
    if component.is_some() && crate::linalg::log_det_spd(precision).is_none() {
        return Err(format!("{}.precision must be positive definite", at()));
    }
    Ok(())
}

impl DetectConfig {
    /// Checks a residual patch side: odd, 1 to [`Self::MAX_RESIDUAL_PATCH`].
    pub fn check_residual_patch(patch: usize) -> Result<(), String> {
        if patch % 2 == 0 || patch > Self::MAX_RESIDUAL_PATCH {
            return Err(format!("residual_patch must be odd and 1 to {}, got {patch}", Self::MAX_RESIDUAL_PATCH));
        }
        Ok(())
    }

    /// Checks a residual metric for `channels` image channels and `patch`×`patch` patches:
    /// (C·k²)², finite, symmetric, with a positive diagonal. Shared by the config, the
    /// manifest and the runtime.
    pub fn check_residual_metric(metric: &[Vec<f64>], channels: usize, patch: usize) -> Result<(), String> {
        Self::check_residual_patch(patch)?;
        let n = channels * patch * patch;
        if metric.len() != n || metric.iter().any(|r| r.len() != n) {
            return Err(format!(
                "residual_metric must be {n}×{n} ({channels} channels × {patch}×{patch} patch), got {} rows of lengths {:?}",
                metric.len(),
                metric.iter().map(Vec::len).collect::<Vec<_>>()
            ));
        }
        for i in 0..n {
            if !(metric[i][i] > 0.0 && metric[i][i].is_finite()) {
                return Err(format!("residual_metric diagonal entry {i} is {}, must be positive and finite", metric[i][i]));
            }
            for j in 0..n {
                let (x, y) = (metric[i][j], metric[j][i]);
                if !x.is_finite() || (x - y).abs() > 1e-9 * x.abs().max(y.abs()).max(1.0) {
                    return Err(format!("residual_metric is not symmetric and finite: ({i}, {j}) = {x}, ({j}, {i}) = {y}"));
                }
            }
        }
        Ok(())
    }

    /// Checks a border profile: 1 to [`Self::MAX_BORDER_RINGS`] finite factors, each ≥ 1 (a
    /// factor below 1 would amplify the border). Shared by the config, the manifest and the
    /// runtime.
    pub fn check_border_profile(profile: &[f64]) -> Result<(), String> {
        if profile.is_empty() || profile.len() > Self::MAX_BORDER_RINGS {
            return Err(format!("border_profile needs 1 to {} factors, got {}", Self::MAX_BORDER_RINGS, profile.len()));
        }
        if let Some((d, v)) = profile.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 1.0)) {
            return Err(format!("border_profile factor {d} is {v}, must be finite and ≥ 1"));
        }
        Ok(())
    }

    /// Longest border profile a config or manifest may carry.
    pub const MAX_BORDER_RINGS: usize = 32;

    /// Largest residual patch side: 9×9×3 is a 243² metric, already 60 000 products a pixel.
    pub const MAX_RESIDUAL_PATCH: usize = 9;

    /// Residual patch when none is configured: per pixel (packages of format ≤ 3).
    pub fn default_residual_patch() -> usize {
        1
    }

    /// Fire fraction when none is configured (1 %).
    pub fn default_fire_fraction() -> f64 {
        0.01
    }

    /// Surprise weight when none is configured.
    pub fn default_surprise_weight() -> f64 {
        0.05
    }

}

/// Everything a training run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Preset the config started from.
    pub preset: String,
    pub model: ModelConfig,
    pub prior: PriorConfig,
    pub train: TrainConfig,
    pub detect: DetectConfig,
    /// Texture or object; `None` infers it from the MVTec category name.
    pub kind: Option<CategoryKind>,
}

impl Config {
    /// The paper's setting: 256², 32×32 grid, K = 512, D = 32.
    pub fn paper() -> Self {
        Config {
            preset: "paper".into(),
            model: ModelConfig {
                image_size: 256,
                channels: 3,
                downsamples: 3,
                hidden: 128,
                res_blocks: 8,
                res_channels: 64,
                num_codes: 512,
                code_dim: 32,
            },
            prior: PriorConfig {
                channels: 128,
                blocks: 3,
                res_per_block: 1,
                heads: 8,
                attn_dim: 64,
                embed_dim: 64,
                dropout: 0.1,
            },
            train: TrainConfig {
                vqvae_epochs: 100,
                vqvae_batch: 256,
                prior_epochs: 150,
                prior_batch: 64,
                lr: 3e-4,
                beta: 0.25,
                val_fraction: 0.1,
                augment: true,
                dead_code_fraction: 0.0001,
                max_steps_per_epoch: 0,
                prior_augment_copies: 0,
                prior_fresh_augment: false,
                lr_schedule: LrSchedule::Constant,
                denoise_fraction: 0.0,
                vqvae_logit_bound: 0.0,
            },
            detect: DetectConfig {
                eta: 0.0005,
                local_constraint: true,
                bilateral_d: 20,
                sigma_color: 75.0,
                sigma_space: 75.0,
                pixel_threshold: None,
                min_area: 32,
                score: ScoreKind::Paper,
                surprise_weight: DetectConfig::default_surprise_weight(),
                restore: RestoreRule::Argmax,
                whiten: false,
                residual_patch: 1,
                residual_metric: None,
                fire_fraction: DetectConfig::default_fire_fraction(),
                border: false,
                border_profile: None,
                texture: false,
                texture_weight: None,
                texture_map: None,
            },
            kind: None,
        }
    }

    /// Small enough that both stages train on 2 CPU cores in a few minutes.
    pub fn tiny() -> Self {
        let mut c = Self::paper();
        c.preset = "tiny".into();
        // Chosen by experiment on synthetic categories (see the closing notes of the evaluation
        // issue): no residual blocks keeps the encoder's receptive field, and so the restored
        // region around a defect, small; K = 128, D = 32 reconstructs the 64² images well.
        c.model = ModelConfig {
            image_size: 64,
            channels: 3,
            downsamples: 2,
            hidden: 64,
            res_blocks: 0,
            res_channels: 32,
            num_codes: 128,
            code_dim: 32,
        };
        c.prior = PriorConfig {
            channels: 64,
            blocks: 2,
            res_per_block: 1,
            heads: 2,
            attn_dim: 16,
            embed_dim: 16,
            dropout: 0.1,
        };
        c.train.vqvae_epochs = 40;
        c.train.vqvae_batch = 16;
        c.train.prior_epochs = 20;
        c.train.prior_batch = 16;
        c.train.lr = 1e-3;
        c.train.dead_code_fraction = 0.002;
        c.train.prior_augment_copies = 1;
        c.detect.eta = 0.01;
        // d and σ_space scale with the image side (64 / 256 of the paper's).
        c.detect.bilateral_d = 5;
        c.detect.sigma_space = 18.75;
        c.detect.min_area = 4;
        // On the real-photo development set (tools/devset-eval.sh) these beat the paper's
        // eq. 6 with argmax restoration on every category (mean pixel AUROC 0.970 vs 0.892,
        // AUPRO@0.3 0.925 vs 0.730); `vqad tune --paper-rule` packages the paper's rule.
        c.detect.score = ScoreKind::RestoredInput;
        c.detect.restore = RestoreRule::NearestLikely;
        // On the same set, measuring that residual in the metric of the normals' residuals
        // raised image AUROC on every category (e.g. coins 0.58 → 0.73 for input vs
        // reconstruction) and pixel AUROC / AUPRO with it; `--paper-rule` turns it off.
        c.detect.whiten = true;
        // The validation normals' largest components sat on the image border, where the
        // zero-padded VQ-VAE reconstructs worst; dividing the map by its normal border excess
        // raised image AUROC on every category (e.g. coins 0.82 → 0.96 for whitened ℓ2).
        c.detect.border = true;
        // Resampling fires on fewer normal positions: measured with whitening and the border
        // profile on the same runs, 0.2 % / 0.5 % / 1 % gave mean image AUROC 0.907 / 0.894 /
        // 0.885; on the unseen coins of the object category the prior fired on 3.8 % of the
        // good test positions at 1 %, and each firing there is a false alarm.
        c.detect.fire_fraction = 0.005;
        // On the demo's generated texture (100 training images) the paper's rule fired on
        // 10 % of the normal positions and left PRO at the threshold 0; this rule gave pixel
        // AUROC 0.991 and PRO 0.780. `vqad tune --paper-rule` gives the paper's rule back.
        c
    }

    /// The paper's latent grid (32×32) at half its input size (128²), sized so that both stages
    /// and `tune` of one category (150–250 images) finish within 15 minutes on 2 CPU cores.
    /// Filter diameter, σ_space and the minimum area scale with the input side (128 / 256).
    pub fn small() -> Self {
        let mut c = Self::tiny();
        c.preset = "small".into();
        c.model.image_size = 128;
        // Issue 21: stochastic and fibrous surfaces need a VQ-VAE that reconstructs them (a
        // blurred texture keeps its variance in the residual, where a defect hides). Against
        // the earlier hidden 64, one residual block and K = 128 (validation MSE 0.23 of the
        // image variance on the dev set's fur, 0.21 on the Hubble field, 30 epochs): hidden 128
        // gave 0.17 on fur but collapsed on the Hubble field (1.5× the variance, sigmoid
        // saturated at black); hidden 96 trains on both (Hubble 0.21). A 64×64 latent grid gave
        // fur 0.14 but makes every prior pass 4× dearer.
        c.model.hidden = 96;
        // Without it the wider decoder went black on the Hubble field for good (see the field);
        // with it, the same 8 epochs reached 0.56 of the variance instead of staying at 1.48.
        c.train.vqvae_logit_bound = 5.0;
        c.model.res_blocks = 2;
        c.model.num_codes = 512;
        // At most half a code's uniform share (1/512), see `validate`.
        c.train.dead_code_fraction = 0.0008;
        c.prior.attn_dim = 32;
        c.prior.embed_dim = 32;
        // Measured on 2 cores: a VQ-VAE epoch of 180 images ≈ 2 s, a prior epoch of 360 tables
        // ≈ 10–14 s; both stages 5–6 minutes (tools/devset-eval.sh).
        c.train.vqvae_epochs = 30;
        c.train.prior_epochs = 24;
        c.train.prior_fresh_augment = true;
        c.train.lr_schedule = LrSchedule::Cosine;
        c.detect.eta = 0.001;
        c.detect.bilateral_d = 10;
        c.detect.sigma_space = 37.5;
        // Two latent cells (2 × 4×4 px): a smaller component is below what the 32×32 code grid
        // can restore, and counting it let one speck on a validation normal set the threshold.
        // On the development set it raised mean PRO at the threshold 0.25 → 0.35 (ℓ2 too).
        c.detect.min_area = 32;
        // Whitening over 5×5 patches rather than per pixel: on the development set's larger test
        // split (64 good / 128 defective per category) it raised mean image accuracy at the
        // label-free threshold 0.843 → 0.910 (worst category 0.746 → 0.855) and PRO at the
        // threshold 0.673 → 0.796 (`eval --ablation`'s `whiten_per_pixel` against the default);
        // 3×3 and 7×7 gave 0.90 and 0.92 (measured offline on the same runs' saved arrays).
        c.detect.residual_patch = 5;
        // Issue 21: the texture-statistics map beside the residual map (see
        // `runtime::texture`), its weight chosen by `tune` on synthetic blobs.
        c.detect.texture = true;
        // Restoration rule, map, border profile and fire fraction come from tiny.
        c
    }

    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        match name {
            "paper" => Ok(Self::paper()),
            "small" => Ok(Self::small()),
            "tiny" => Ok(Self::tiny()),
            o => Err(ConfigError::UnknownPreset(o.into())),
        }
    }

    /// Starts from `preset` and overlays a TOML or JSON file: any field may be given, others
    /// keep the preset's value.
    pub fn load(preset: &str, file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut base = serde_json::to_value(Self::preset(preset)?).expect("config serialises");
        if let Some(path) = file {
            let p = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: p.clone(), source })?;
            let overlay: serde_json::Value = if p.ends_with(".json") {
                serde_json::from_str(&text)
                    .map_err(|e| ConfigError::Parse { path: p.clone(), reason: e.to_string() })?
            } else {
                let t: toml::Value = toml::from_str(&text)
                    .map_err(|e| ConfigError::Parse { path: p.clone(), reason: e.to_string() })?;
                serde_json::to_value(t).expect("toml converts to json")
            };
            merge(&mut base, overlay);
            let cfg: Config = serde_json::from_value(base)
                .map_err(|e| ConfigError::Parse { path: p, reason: e.to_string() })?;
            cfg.validate()?;
            return Ok(cfg);
        }
        Ok(serde_json::from_value(base).expect("preset round-trips"))
    }

    fn check_metric(metric: &[Vec<f64>], channels: i64, patch: usize) -> Result<(), ConfigError> {
        DetectConfig::check_residual_metric(metric, channels.max(0) as usize, patch).map_err(|e| ConfigError::Invalid(format!("detect.{e}")))
    }

    /// Rejects shapes the networks cannot be built with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.model;
        let bad = |s: String| Err(ConfigError::Invalid(s));
        if m.channels != 1 && m.channels != 3 {
            return bad(format!("model.channels must be 1 or 3, got {}", m.channels));
        }
        if m.downsamples < 1 || m.image_size % (1 << m.downsamples) != 0 {
            return bad(format!(
                "model.image_size {} must be divisible by 2^downsamples ({})",
                m.image_size,
                1i64 << m.downsamples.max(0)
            ));
        }
        if m.num_codes < 2 || m.code_dim < 1 || m.hidden < 1 || m.res_channels < 1 {
            return bad("model sizes must be positive and num_codes ≥ 2".into());
        }
        let p = &self.prior;
        if p.heads < 1 || p.attn_dim % p.heads != 0 {
            return bad(format!("prior.attn_dim {} must be a multiple of prior.heads {}", p.attn_dim, p.heads));
        }
        if !(0.0..1.0).contains(&self.train.val_fraction) {
            return bad("train.val_fraction must be in [0, 1)".into());
        }
        if !(self.detect.fire_fraction > 0.0 && self.detect.fire_fraction < 1.0) {
            return bad(format!("detect.fire_fraction must be in (0, 1), got {}", self.detect.fire_fraction));
        }
        if !(self.detect.eta > 0.0 && self.detect.eta < 1.0) {
            return bad("detect.eta must be in (0, 1)".into());
        }
        if self.detect.bilateral_d < 1 {
            return bad("detect.bilateral_d must be ≥ 1".into());
        }
        DetectConfig::check_residual_patch(self.detect.residual_patch).map_err(|e| ConfigError::Invalid(format!("detect.{e}")))?;
        if let Some(metric) = &self.detect.residual_metric {
            Self::check_metric(metric, m.channels, self.detect.residual_patch)?;
        }
        if let Some(p) = &self.detect.border_profile {
            DetectConfig::check_border_profile(p).map_err(|e| ConfigError::Invalid(format!("detect.{e}")))?;
        }
        // At or above a uniform code's share every code counts as dead and is re-seeded each
        // epoch, so the codebook never settles (seen with num_codes = 512 and 0.002).
        if !(0.0..=1.0).contains(&self.train.denoise_fraction) {
            return bad(format!("train.denoise_fraction must be in [0, 1], got {}", self.train.denoise_fraction));
        }
        let share = 1.0 / m.num_codes as f64;
        let d = self.train.dead_code_fraction;
        if !(0.0..=0.5 * share).contains(&d) {
            return bad(format!(
                "train.dead_code_fraction {d} must be in [0, {:.3e}] (half of a uniform code's share 1/num_codes = 1/{}); lower it when raising num_codes",
                0.5 * share,
                m.num_codes
            ));
        }
        Ok(())
    }
}

/// Overlays `b` onto `a`, object by object.
fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Which training stages to run (`vqad train --stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    VqVae,
    Prior,
    All,
}

impl std::str::FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vqvae" => Ok(Stage::VqVae),
            "prior" => Ok(Stage::Prior),
            "all" => Ok(Stage::All),
            o => Err(format!("unknown stage '{o}' (expected vqvae, prior or all)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_preset_matches_the_paper() {
        let c = Config::paper();
        assert_eq!(c.model.grid(), 32);
        assert_eq!((c.model.num_codes, c.model.code_dim), (512, 32));
        assert_eq!((c.train.vqvae_epochs, c.train.vqvae_batch), (100, 256));
        assert_eq!((c.train.prior_epochs, c.train.prior_batch), (150, 64));
        assert_eq!(c.detect.eta, 0.0005);
        assert_eq!((c.detect.bilateral_d, c.detect.sigma_color, c.detect.sigma_space), (20, 75.0, 75.0));
        c.validate().unwrap();
        Config::tiny().validate().unwrap();
        let s = Config::small();
        s.validate().unwrap();
        assert_eq!((s.model.image_size, s.model.grid(), s.model.num_codes, s.model.res_blocks, s.model.hidden), (128, 32, 512, 2, 96));
        assert_eq!((s.prior.channels, s.prior.blocks, s.prior.attn_dim, s.prior.embed_dim), (64, 2, 32, 32));
        assert_eq!((s.train.vqvae_epochs, s.train.prior_epochs, s.train.vqvae_batch, s.train.prior_batch), (30, 24, 16, 16));
        assert_eq!((s.detect.bilateral_d, s.detect.sigma_space, s.detect.min_area), (10, 37.5, 32));
        assert_eq!(Config::preset("small").unwrap(), s);
    }

    #[test]
    fn overlay_changes_only_named_fields() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[model]\nnum_codes = 128\n[detect]\neta = 0.002\n").unwrap();
        let c = Config::load("tiny", Some(&f)).unwrap();
        assert_eq!(c.model.num_codes, 128);
        assert_eq!(c.detect.eta, 0.002);
        assert_eq!(c.model.code_dim, Config::tiny().model.code_dim);
    }

    #[test]
    fn overlay_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.json");
        std::fs::write(&f, r#"{"model": {"nmu_codes": 3}}"#).unwrap();
        let e = Config::load("tiny", Some(&f)).unwrap_err().to_string();
        assert!(e.contains("c.json") && e.contains("nmu_codes"), "{e}");
        std::fs::write(&f, r#"{"model": {"channels": 2}}"#).unwrap();
        assert!(Config::load("tiny", Some(&f)).unwrap_err().to_string().contains("channels"));
    }

    #[test]
    fn denoise_fraction_is_validated_and_saved_only_when_set() {
        let mut c = Config::preset("small").unwrap();
        assert!(!serde_json::to_string(&c).unwrap().contains("denoise_fraction"));
        c.train.denoise_fraction = 0.5;
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains("\"denoise_fraction\":0.5"), "{text}");
        assert_eq!(serde_json::from_str::<Config>(&text).unwrap(), c);
        c.train.denoise_fraction = 1.5;
        assert!(c.validate().unwrap_err().to_string().contains("denoise_fraction"));
    }

    #[test]
    fn a_texture_map_is_checked_before_use() {
        let good = TextureMap {
            colour: true,
            chroma: false,
            components: vec![],
            window: 9,
            sigma: 2.0,
            mean: vec![0.5, -3.0, -6.0, 0.4, 0.5, 0.6],
            precision: (0..6).map(|i| (0..6).map(|j| if i == j { 2.0 } else { 0.1 }).collect()).collect(),
            residual_scale: 0.01,
            texture_scale: 5.0,
            weight: 1.0,
        };
        good.check(3).unwrap();
        // Grey only for one channel: three features, so the colour map does not fit it.
        assert!(good.check(1).unwrap_err().contains("3 features"));
        let bad = |f: &dyn Fn(&mut TextureMap), want: &str| {
            let mut t = good.clone();
            f(&mut t);
            let e = t.check(3).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        };
        bad(&|t| t.window = 8, "window");
        bad(&|t| t.window = 65, "window");
        bad(&|t| t.mean.pop().map(|_| ()).unwrap(), "6 features");
        bad(&|t| t.precision[2].pop().map(|_| ()).unwrap(), "6×6");
        bad(&|t| t.mean[1] = f64::NAN, "finite");
        bad(&|t| t.precision[0][1] = 0.3, "symmetric");
        bad(&|t| t.precision[4][4] = 0.0, "diagonal");
        bad(&|t| t.sigma = 1e300, "sigma");
        bad(&|t| t.texture_scale = 0.0, "texture_scale");
        bad(&|t| t.weight = -1.0, "weight");
        bad(&|t| t.weight = f64::INFINITY, "weight");
        assert_eq!(good.format_needed(), 5);
        assert_eq!(good.summary(), "6 features (grey, colour), 1 Gaussian");

        // The mixture form (format 8): components instead of mean/precision, and chroma.
        let eye = |n: usize, v: f64| -> Vec<Vec<f64>> { (0..n).map(|i| (0..n).map(|j| if i == j { v } else { 0.0 }).collect()).collect() };
        let mix = TextureMap {
            chroma: true,
            mean: vec![],
            precision: vec![],
            components: vec![
                MixtureComponent { weight: 0.75, mean: vec![0.0; 7], precision: eye(7, 2.0) },
                MixtureComponent { weight: 0.25, mean: vec![1.0; 7], precision: eye(7, 0.5) },
            ],
            ..good.clone()
        };
        mix.check(3).unwrap();
        assert_eq!((mix.format_needed(), mix.summary().as_str()), (8, "7 features (grey, colour, chroma), 2 Gaussians"));
        assert!(mix.check(1).unwrap_err().contains("3 features"));
        let json = serde_json::to_string(&mix).unwrap();
        assert!(!json.contains("\"mean\":[],") && json.contains("\"chroma\":true"), "{json}");
        assert_eq!(serde_json::from_str::<TextureMap>(&json).unwrap(), mix);
        let bad_mix = |f: &dyn Fn(&mut TextureMap), want: &str| {
            let mut t = mix.clone();
            f(&mut t);
            let e = t.check(3).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        };
        bad_mix(&|t| t.mean = vec![0.0; 7], "both");
        bad_mix(&|t| t.components.clear(), "needs mean and precision or components");
        bad_mix(&|t| t.components[0].weight = 0.5, "sum to 1");
        bad_mix(&|t| t.components[1].weight = 0.0, "weight must be in (0, 1]");
        bad_mix(&|t| t.components[1].mean.pop().map(|_| ()).unwrap(), "components[1].mean must hold 7");
        bad_mix(&|t| t.components[0].precision[0][0] = -1.0, "diagonal");
        // Symmetric with a positive diagonal but indefinite: its determinant has no logarithm.
        bad_mix(&|t| (t.components[0].precision[0][1], t.components[0].precision[1][0]) = (3.0, 3.0), "positive definite");
        bad_mix(&|t| t.components = vec![t.components[0].clone(); TextureMap::MAX_COMPONENTS + 1], "at most");
    }

    #[test]
    fn a_dead_code_threshold_above_a_codes_share_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        // 0.002 suits K = 128 (share 0.0078) but not small's K = 512 (share 0.00195).
        std::fs::write(&f, "[train]\ndead_code_fraction = 0.002\n").unwrap();
        let e = Config::load("small", Some(&f)).unwrap_err().to_string();
        assert!(e.contains("dead_code_fraction") && e.contains("1/512"), "{e}");
        std::fs::write(&f, "[model]\nnum_codes = 512\n[train]\ndead_code_fraction = 0.0004\n").unwrap();
        assert_eq!(Config::load("small", Some(&f)).unwrap().train.dead_code_fraction, 0.0004);
    }
}
