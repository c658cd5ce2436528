//! The detector: a verified package's three graphs on ONNX Runtime, the resampling loop of
//! eq. 5 in Rust, and the score of eq. 6 with the package's filter and thresholds.
//!
//! ```text
//! image ─▶ encoder ─▶ z ─▶ resample (prior passes) ─▶ z'
//!                      └────────── decoder([z; z']) ─▶ x_d, x_r ─▶ Σ_c (x_r − x_d)² ─▶ bilateral ─▶ map, mask, score
//! ```

use super::resample::{resample_batch, resample_batch_with, CodeDistances, Prior, PriorError, ResampleMode, ResampleOptions, Restore};
use super::score::{bilateral_filter, binarize, image_score, is_anomalous, score_map, surprise_map, ScoreError};
use super::session::{open_graph, Graph, Provider, SessionError, SessionOptions};
use super::whiten::{to_array, weighted_map, ResidualMetric};
use super::variant::PrecisionRequest;
use crate::onnx::Precision;
use crate::config::{DetectConfig, RestoreRule, ScoreKind};
use crate::package::{ModelShape, PackageError, TrustedKey, VerifiedPackage};
use ndarray::{s, Array2, Array3, Array4, ArrayD, Axis};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Why detection could not run.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("resampling: {0}")]
    Prior(#[from] PriorError),
    #[error("scoring: {0}")]
    Score(#[from] ScoreError),
    #[error("{0}")]
    Shape(String),
}

/// How a detector runs, beyond what the package fixes.
#[derive(Debug, Clone)]
pub struct DetectorOptions {
    pub session: SessionOptions,
    /// Overrides the package's η.
    pub eta: Option<f64>,
    /// Overrides the package's local-constraint switch.
    pub local_constraint: Option<bool>,
    pub mode: ResampleMode,
    /// Images per encoder/prior/decoder batch.
    pub batch: usize,
    /// Which of the package's precisions runs (see [`super::variant::resolve`]).
    pub precision: PrecisionRequest,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        DetectorOptions { session: SessionOptions::default(), eta: None, local_constraint: None, mode: ResampleMode::Incremental, batch: 8, precision: PrecisionRequest::Auto }
    }
}

/// One image's (log p(z_mn | z_<mn), predictive entropy), both [M, N].
pub type SurpriseMaps = (Array2<f32>, Array2<f32>);

/// Milliseconds per stage, for one image (a batch's time divided by its size).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct StageMillis {
    pub encode: f64,
    pub prior: f64,
    pub decode: f64,
    pub filter: f64,
    pub total: f64,
}

/// The result for one image.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The image's score under the decision rule: anomalous exactly when the pixel threshold is
    /// below it (see [`super::score::image_score`]).
    pub image_score: f32,
    /// Some component above the pixel threshold has at least the minimum area.
    pub anomalous: bool,
    /// Latent positions whose code was resampled, raster order.
    pub resampled: Vec<(usize, usize)>,
    /// Prior passes this image took part in.
    pub prior_passes: usize,
    /// log p(z_mn | z_<mn) of the input's codes and the predictive entropy, [M, N].
    pub log_prob: Array2<f32>,
    pub entropy: Array2<f32>,
    pub millis: StageMillis,
    /// Input as the model saw it, [C, H, W] in [0, 1].
    pub input: Array3<f32>,
    /// Direct reconstruction x_d (original table decoded).
    pub direct: Array3<f32>,
    /// Restored image x_r (resampled table decoded).
    pub restored: Array3<f32>,
    /// Eq. 6 alone, Σ_c (x_r − x_d)², before filtering.
    pub eq6_map: Array2<f32>,
    /// The package's map before its border profile and filter (see [`Detector::smooth`]).
    pub raw_map: Array2<f32>,
    /// After the bilateral filter and, where the package has one, with its texture half
    /// added (see [`Detector::finish`]): the map the threshold applies to.
    pub smoothed: Array2<f32>,
    /// Binarised smoothed map (1 = anomalous pixel).
    pub mask: Array2<u8>,
}

/// PixelSNAIL behind ONNX Runtime, as the resampling loop's [`Prior`].
struct OrtPrior {
    graph: Graph,
    k: usize,
}

impl Prior for OrtPrior {
    fn log_probs(&mut self, tables: &Array3<i64>) -> Result<Array4<f32>, PriorError> {
        let out: ArrayD<f32> = self.graph.run_one(tables.clone().into_dyn()).map_err(|e| PriorError::Backend(Box::new(e)))?;
        out.into_dimensionality().map_err(|e| PriorError::InvalidInput(format!("pixelsnail.onnx output: {e}")))
    }
    fn num_codes(&self) -> usize {
        self.k
    }
}

/// A loaded package, ready to detect.
pub struct Detector {
    /// Codebook distances, for the nearest-likely restoration rule.
    distances: Option<CodeDistances>,
    encoder: Graph,
    decoder: Graph,
    prior: OrtPrior,
    pub shape: ModelShape,
    /// The settings in force (the package's, with any overrides applied).
    pub settings: DetectConfig,
    pub mode: ResampleMode,
    pub batch: usize,
    /// The precision of the graphs that run, and why it was chosen.
    pub precision: Precision,
    pub precision_reason: String,
}

impl Detector {
    /// Verifies `package` with `trust`, then loads it. Nothing runs unless it verifies.
    pub fn open(package: &Path, trust: &TrustedKey, options: DetectorOptions) -> Result<Self, DetectError> {
        let pkg = VerifiedPackage::open(package, trust)?;
        Self::from_verified(&pkg, options)
    }

    /// Loads an already verified package.
    pub fn from_verified(pkg: &VerifiedPackage, options: DetectorOptions) -> Result<Self, DetectError> {
        let mut opts = options;
        if let Some(dir) = &opts.session.trt_cache {
            // Engines are not portable: key the cache by package digest (and, inside the
            // folder, TensorRT keys by GPU and versions itself).
            opts.session.trt_cache = Some(dir.join(&pkg.archive_sha256[..16.min(pkg.archive_sha256.len())]));
        }
        super::session::environment(opts.session.ort_lib.as_deref())?; // `auto` asks it which providers it has
        let (precision, why) = super::variant::resolve(opts.precision, &pkg.manifest, &opts.session.providers).map_err(|e| DetectError::Shape(e.to_string()))?;
        let files = super::variant::graphs_for(&pkg.files, precision);
        let mut det = Self::from_graphs(&files, pkg.manifest.model.clone(), pkg.manifest.detection.to_config(), opts)?;
        det.precision = precision;
        det.precision_reason = why;
        tracing::info!("{}: running the {precision} graphs ({})", pkg.manifest.id(), det.precision_reason);
        Ok(det)
    }

    /// Loads graphs that did not come from a package: a training run's own export, while its
    /// thresholds are being chosen (`tune`). Deployed models go through [`Detector::open`].
    pub fn from_graphs(
        files: &BTreeMap<String, Vec<u8>>,
        shape: ModelShape,
        mut settings: DetectConfig,
        options: DetectorOptions,
    ) -> Result<Self, DetectError> {
        let get = |n: &str| files.get(n).ok_or_else(|| DetectError::Shape(format!("{n} missing")));
        let encoder = open_graph("encoder.onnx", get("encoder.onnx")?, &options.session)?;
        let decoder = open_graph("decoder.onnx", get("decoder.onnx")?, &options.session)?;
        let prior = open_graph("pixelsnail.onnx", get("pixelsnail.onnx")?, &options.session)?;
        for (g, input, output) in [(&encoder, "image", "indices"), (&decoder, "indices", "image"), (&prior, "indices", "log_probs")] {
            let ins: Vec<&str> = g.session.inputs().iter().map(|i| i.name()).collect();
            let outs: Vec<&str> = g.session.outputs().iter().map(|o| o.name()).collect();
            if ins != [input] || outs != [output] {
                return Err(DetectError::Shape(format!("{}: expected {input} → {output}, found {ins:?} → {outs:?}", g.name)));
            }
        }
        if let Some(e) = options.eta {
            settings.eta = e;
        }
        if let Some(l) = options.local_constraint {
            settings.local_constraint = l;
        }
        let k = shape.num_codes as usize;
        let distances = match files.get(crate::package::CODEBOOK_FILE) {
            Some(bytes) => {
                let cb: Array2<f32> = ndarray_npy::ReadNpyExt::read_npy(std::io::Cursor::new(bytes))
                    .map_err(|e| DetectError::Shape(format!("{}: {e}", crate::package::CODEBOOK_FILE)))?;
                if cb.dim() != (k, shape.code_dim as usize) {
                    return Err(DetectError::Shape(format!("{}: shape {:?}, expected ({k}, {})", crate::package::CODEBOOK_FILE, cb.dim(), shape.code_dim)));
                }
                Some(CodeDistances::new(&cb))
            }
            None => None,
        };
        let det = Detector {
            distances,
            encoder,
            decoder,
            prior: OrtPrior { graph: prior, k },
            shape,
            settings,
            mode: options.mode,
            batch: options.batch.max(1),
            precision: Precision::Fp32,
            precision_reason: "graphs given directly".into(),
        };
        det.metric()?;
        if let Some(p) = &det.settings.border_profile {
            super::border::check(p).map_err(|e| DetectError::Shape(e.to_string()))?;
        }
        if let Some(t) = &det.settings.texture_map {
            t.check(det.shape.channels as usize).map_err(DetectError::Shape)?;
        }
        Ok(det)
    }

    /// Provider that runs each graph.
    pub fn providers(&self) -> BTreeMap<String, Provider> {
        [(&self.encoder, "encoder.onnx"), (&self.decoder, "decoder.onnx"), (&self.prior.graph, "pixelsnail.onnx")]
            .into_iter()
            .map(|(g, n)| (n.to_string(), g.provider))
            .collect()
    }

    /// Converts decoded images to the model's input tensor layout.
    pub fn prepare(&self, img: &image::DynamicImage) -> Array3<f32> {
        crate::data::image_to_array(img, self.shape.channels as usize, self.shape.image_size as usize)
    }

    /// Detects anomalies in decoded images (converted and resized to the model's input).
    pub fn detect(&mut self, images: &[image::DynamicImage]) -> Result<Vec<Detection>, DetectError> {
        let arrays: Vec<Array3<f32>> = images.iter().map(|i| self.prepare(i)).collect();
        self.detect_arrays(&arrays)
    }

    fn check_input(&self, a: &Array3<f32>, i: usize) -> Result<(), DetectError> {
        let (c, s) = (self.shape.channels as usize, self.shape.image_size as usize);
        if a.dim() != (c, s, s) {
            return Err(DetectError::Shape(format!("image {i}: shape {:?}, the model takes ({c}, {s}, {s})", a.dim())));
        }
        Ok(())
    }

    /// Index tables [B, M, N] of images [C, H, W].
    pub fn encode(&mut self, images: &[Array3<f32>]) -> Result<Array3<i64>, DetectError> {
        for (i, a) in images.iter().enumerate() {
            self.check_input(a, i)?;
        }
        let views: Vec<_> = images.iter().map(|a| a.view()).collect();
        let x = ndarray::stack(Axis(0), &views).map_err(|e| DetectError::Shape(e.to_string()))?;
        let z: ArrayD<i64> = self.encoder.run_one(x.into_dyn())?;
        z.into_dimensionality().map_err(|e| DetectError::Shape(format!("encoder.onnx output: {e}")))
    }

    /// One prior pass over each image's own codes: (log p(z_mn | z_<mn), predictive entropy),
    /// both [M, N]. What a label-free η is chosen from.
    pub fn input_surprise(&mut self, images: &[Array3<f32>]) -> Result<Vec<SurpriseMaps>, DetectError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch) {
            let z = self.encode(chunk)?;
            // η = 0 never fires: exactly one pass per image.
            let never = ResampleOptions { eta: 0.0, local_constraint: false };
            let (outcomes, _) = resample_batch(&mut self.prior, &z, &never, ResampleMode::Incremental)?;
            out.extend(outcomes.into_iter().map(|o| (o.input_log_prob, o.input_entropy)));
        }
        Ok(out)
    }

    /// Images [B, C, H, W] of index tables [B, M, N].
    pub fn decode(&mut self, tables: &Array3<i64>) -> Result<Array4<f32>, DetectError> {
        let x: ArrayD<f32> = self.decoder.run_one(tables.clone().into_dyn())?;
        x.into_dimensionality().map_err(|e| DetectError::Shape(format!("decoder.onnx output: {e}")))
    }

    /// The settings' residual metric, checked against the model's channels (none: plain ℓ2).
    pub fn metric(&self) -> Result<Option<ResidualMetric>, DetectError> {
        self.settings
            .residual_metric
            .as_deref()
            .map(|m| to_array(m, self.shape.channels as usize, self.settings.residual_patch).map_err(|e| DetectError::Score(e.into())))
            .transpose()
    }

    /// The package's post-processing of an unfiltered map: its border profile (if any, see
    /// [`super::border`]), then the bilateral filter.
    pub fn smooth(&self, raw: &Array2<f32>) -> Result<Array2<f32>, DetectError> {
        self.smooth_with(raw, self.settings.border_profile.as_deref())
    }

    /// [`Self::smooth`] with another border profile (a variant's own, estimated like `tune`'s).
    pub fn smooth_with(&self, raw: &Array2<f32>, profile: Option<&[f64]>) -> Result<Array2<f32>, DetectError> {
        match profile {
            Some(p) => {
                let mut m = raw.clone();
                super::border::apply(&mut m, p);
                self.filter(&m)
            }
            None => self.filter(raw),
        }
    }

    /// The package's whole post-processing of an unfiltered map of `input`: [`Self::smooth`],
    /// then, where the package has one, its texture half (see [`super::texture::fused`]).
    pub fn finish(&self, raw: &Array2<f32>, input: &Array3<f32>) -> Result<Array2<f32>, DetectError> {
        self.add_texture(self.smooth(raw)?, input)
    }

    /// A smoothed residual map with the package's texture half added (unchanged without one).
    pub fn add_texture(&self, smoothed: Array2<f32>, input: &Array3<f32>) -> Result<Array2<f32>, DetectError> {
        match &self.settings.texture_map {
            Some(t) => super::texture::fused(&smoothed, input.view(), t).map_err(|e| DetectError::Shape(e.to_string())),
            None => Ok(smoothed),
        }
    }

    /// The bilateral filter alone, with this package's settings (the paper's post-processing).
    pub fn filter(&self, raw: &Array2<f32>) -> Result<Array2<f32>, DetectError> {
        Ok(bilateral_filter(raw, self.settings.bilateral_d as i32, self.settings.sigma_color, self.settings.sigma_space)?)
    }

    /// Detects anomalies in model-ready arrays [C, H, W] in [0, 1], batch by batch.
    pub fn detect_arrays(&mut self, images: &[Array3<f32>]) -> Result<Vec<Detection>, DetectError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch) {
            out.extend(self.detect_batch(chunk)?);
        }
        Ok(out)
    }

    fn detect_batch(&mut self, images: &[Array3<f32>]) -> Result<Vec<Detection>, DetectError> {
        let b = images.len();
        let t0 = Instant::now();
        let z = self.encode(images)?;
        let t_enc = t0.elapsed().as_secs_f64() * 1e3;

        let t1 = Instant::now();
        let opts = ResampleOptions { eta: self.settings.eta, local_constraint: self.settings.local_constraint };
        let restore = match self.settings.restore {
            RestoreRule::Argmax => Restore::Argmax,
            RestoreRule::NearestLikely => Restore::NearestLikely(
                self.distances.as_ref().ok_or_else(|| DetectError::Shape("the nearest-likely rule needs codebook.npy".into()))?,
            ),
        };
        let (outcomes, _stats) = resample_batch_with(&mut self.prior, &z, &opts, self.mode, restore)?;
        let t_prior = t1.elapsed().as_secs_f64() * 1e3;

        // Decode the original and the resampled tables in one call.
        let t2 = Instant::now();
        let (m, n) = (z.shape()[1], z.shape()[2]);
        let mut both = Array3::<i64>::zeros((2 * b, m, n));
        both.slice_mut(s![..b, .., ..]).assign(&z);
        for (i, o) in outcomes.iter().enumerate() {
            both.slice_mut(s![b + i, .., ..]).assign(&o.table);
        }
        let decoded = self.decode(&both)?;
        let t_dec = t2.elapsed().as_secs_f64() * 1e3;

        let t3 = Instant::now();
        let thr = self.settings.pixel_threshold.unwrap_or(f64::INFINITY) as f32;
        let metric = self.metric()?;
        let min_area = self.settings.min_area.max(0) as usize;
        let mut dets = Vec::with_capacity(b);
        for (i, o) in outcomes.into_iter().enumerate() {
            let direct = decoded.index_axis(Axis(0), i).to_owned();
            let restored = decoded.index_axis(Axis(0), b + i).to_owned();
            let eq6_map = score_map(restored.view(), direct.view())?;
            let parts = MapParts { input: &images[i], direct: &direct, restored: &restored, eq6: &eq6_map, log_prob: &o.input_log_prob, entropy: &o.input_entropy };
            let raw_map = variant_map(self.settings.score, self.settings.surprise_weight, metric.as_ref(), &parts)?;
            let smoothed = self.finish(&raw_map, &images[i])?;
            let mask = binarize(&smoothed, thr);
            dets.push(Detection {
                image_score: image_score(&smoothed, min_area).unwrap_or(0.0),
                anomalous: is_anomalous(&smoothed, thr, min_area),
                resampled: o.resampled,
                prior_passes: o.prior_passes,
                log_prob: o.input_log_prob,
                entropy: o.input_entropy,
                millis: StageMillis::default(),
                input: images[i].clone(),
                direct,
                restored,
                eq6_map,
                raw_map,
                smoothed,
                mask,
            });
        }
        let t_filter = t3.elapsed().as_secs_f64() * 1e3;
        let per = |t: f64| t / b as f64;
        let millis = StageMillis {
            encode: per(t_enc),
            prior: per(t_prior),
            decode: per(t_dec),
            filter: per(t_filter),
            total: per(t_enc + t_prior + t_dec + t_filter),
        };
        for d in &mut dets {
            d.millis = millis;
        }
        Ok(dets)
    }
}

/// What a map is computed from: one image's input, reconstructions and prior outputs.
pub struct MapParts<'a> {
    pub input: &'a Array3<f32>,
    pub direct: &'a Array3<f32>,
    pub restored: &'a Array3<f32>,
    /// Σ_c (x_r − x_d)², already computed.
    pub eq6: &'a Array2<f32>,
    pub log_prob: &'a Array2<f32>,
    pub entropy: &'a Array2<f32>,
}

impl<'a> MapParts<'a> {
    pub fn of(d: &'a Detection) -> Self {
        MapParts { input: &d.input, direct: &d.direct, restored: &d.restored, eq6: &d.eq6_map, log_prob: &d.log_prob, entropy: &d.entropy }
    }
}

/// The residual metric over `patch`×`patch` patches of normal images' detections: estimated
/// from their input − direct reconstruction (see [`super::whiten::estimate`]). What `tune`
/// packages and what `eval`'s variants re-estimate.
pub fn normal_residual_metric(normals: &[Detection], patch: usize) -> Result<Vec<Vec<f64>>, super::whiten::MetricError> {
    super::whiten::estimate(normals.iter().map(|d| (d.input.view(), d.direct.view())), patch)
}

/// Squared residual a − b per pixel: plain ℓ2 (eq. 6's form), or in `metric` (see
/// [`super::whiten`]).
pub fn residual_map(a: &Array3<f32>, b: &Array3<f32>, metric: Option<&ResidualMetric>) -> Result<Array2<f32>, ScoreError> {
    match metric {
        None => score_map(a.view(), b.view()),
        Some(m) => Ok(weighted_map(a.view(), b.view(), m)?),
    }
}

/// The unfiltered map of a score kind, `weight` the surprise weight, `metric` the residual
/// metric (none: plain ℓ2).
pub fn variant_map(kind: ScoreKind, weight: f64, metric: Option<&ResidualMetric>, p: &MapParts) -> Result<Array2<f32>, ScoreError> {
    let eq6 = || match metric {
        None => Ok(p.eq6.clone()),
        Some(_) => residual_map(p.restored, p.direct, metric),
    };
    Ok(match kind {
        ScoreKind::Paper => eq6()?,
        ScoreKind::Surprise => {
            let mut m = eq6()?;
            let (h, w) = m.dim();
            m.scaled_add(weight as f32, &surprise_map(p.log_prob, p.entropy, h, w));
            m
        }
        ScoreKind::RestoredInput => residual_map(p.restored, p.input, metric)?,
    })
}

/// [`variant_map`] of a finished detection.
pub fn detection_map(d: &Detection, kind: ScoreKind, weight: f64, metric: Option<&ResidualMetric>) -> Result<Array2<f32>, ScoreError> {
    variant_map(kind, weight, metric, &MapParts::of(d))
}

/// The ℓ2 input–output map of the paper's ablation (Fig. 8): Σ_c (x − x_d)², same filter;
/// with a metric, the same residual whitened.
pub fn l2_input_output_map(det: &Detection, metric: Option<&ResidualMetric>) -> Result<Array2<f32>, ScoreError> {
    residual_map(&det.input, &det.direct, metric)
}
