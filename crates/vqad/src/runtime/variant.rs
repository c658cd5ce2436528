//! Which precision of a package's graphs runs, and writing the variants (calibration).
//!
//! `auto` follows the execution provider that will run the graphs: a GPU provider gets the
//! FP16 variant, the CPU provider the INT8 one when INT8 pays there ([`AUTO_INT8_ON_CPU`]);
//! either only when the package carries it within its parity bound, else FP32. An explicit
//! precision is honoured even outside the bound (it was packaged under a recorded override),
//! with a warning.
//!
//! INT8 is written through [`Int8Writer`], which keeps its calibration so that accuracy
//! control (`eval::accuracy`) can rewrite it with some convolutions left in float32.

use super::session::{open_graph, Provider, SessionError, SessionOptions};
use crate::onnx::precision::{self, PrecisionError, Ranges};
use crate::onnx::Precision;
use crate::package::{Manifest, GRAPH_FILES};
use ndarray::{Array3, ArrayD, Axis};
use std::collections::{BTreeMap, BTreeSet};

/// Whether `auto` picks INT8 on the CPU provider. Off: on this project's reference CPU (AMD
/// EPYC, AVX-512 VNNI, 2 cores) INT8 did not reach the speed that would justify its parity
/// cost end to end (README, "Precision variants"); `--precision int8` still runs it.
pub const AUTO_INT8_ON_CPU: bool = false;

/// The graphs the INT8 variant quantizes; the others run their FP32 graph. Only the prior:
/// it is ~85% of the time; the encoder's codes flip when quantized, and the decoder's INT8
/// output (max error 0.01–0.02 of the [0, 1] range) moved masks for ~1% of the time.
pub const INT8_GRAPHS: [&str; 1] = ["pixelsnail.onnx"];

/// Graph → archive entry of `precision`'s variant when nothing is kept in FP32 (INT8 keeps
/// the encoder and decoder: [`INT8_GRAPHS`]).
pub fn variant_files(precision: Precision) -> BTreeMap<String, String> {
    GRAPH_FILES
        .iter()
        .map(|g| {
            let own = match precision {
                Precision::Fp32 => false,
                Precision::Fp16 => true,
                Precision::Int8 => INT8_GRAPHS.contains(g),
            };
            (g.to_string(), if own { precision.file_name(g) } else { g.to_string() })
        })
        .collect()
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrecisionRequest {
    #[default]
    Auto,
    Exact(Precision),
}

impl std::str::FromStr for PrecisionRequest {
    type Err = PrecisionError;
    fn from_str(s: &str) -> Result<Self, PrecisionError> {
        if s.trim().eq_ignore_ascii_case("auto") {
            Ok(PrecisionRequest::Auto)
        } else {
            s.parse().map(PrecisionRequest::Exact)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VariantError {
    #[error("package {package} has no {precision} variant (it carries: {available}); repackage with `vqad package --precisions fp32,{precision}`")]
    Missing { package: String, precision: Precision, available: String },
    #[error(transparent)]
    Precision(#[from] PrecisionError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("calibration: {0}")]
    Calibration(String),
}

/// The provider `auto` plans for: the first in the list this ONNX Runtime build offers.
fn planned_provider(providers: &[Provider]) -> Provider {
    use ort::ep::ExecutionProvider;
    for &p in providers {
        let ok = match p {
            Provider::TensorRT => <ort::ep::TensorRT as ExecutionProvider>::is_available().unwrap_or(false),
            Provider::Cuda => <ort::ep::CUDA as ExecutionProvider>::is_available().unwrap_or(false),
            Provider::Cpu | Provider::Plugin => true,
        };
        if ok {
            return p;
        }
    }
    Provider::Cpu
}

/// The precision that will run `manifest`'s graphs, and why.
pub fn resolve(request: PrecisionRequest, manifest: &Manifest, providers: &[Provider]) -> Result<(Precision, String), VariantError> {
    let variants = manifest.variants.as_ref();
    let within = |p: Precision| variants.and_then(|v| v.get(&p)).is_some_and(|v| v.parity.within_bound);
    match request {
        PrecisionRequest::Exact(Precision::Fp32) => Ok((Precision::Fp32, "requested".into())),
        PrecisionRequest::Exact(p) => {
            let Some(v) = variants.and_then(|v| v.get(&p)) else {
                let mut available = vec!["fp32".to_string()];
                available.extend(variants.into_iter().flat_map(|v| v.keys()).map(|p| p.to_string()));
                return Err(VariantError::Missing { package: manifest.id(), precision: p, available: available.join(", ") });
            };
            if let Some(why) = v.parity.violation() {
                tracing::warn!("{}: running the {p} variant, which is outside its parity bound ({why}); packaged with override: {}", manifest.id(), v.parity.override_reason.as_deref().unwrap_or("-"));
            }
            Ok((p, "requested".into()))
        }
        PrecisionRequest::Auto => {
            let provider = planned_provider(providers);
            let (want, rule) = match provider {
                Provider::TensorRT | Provider::Cuda | Provider::Plugin => (Precision::Fp16, format!("auto: {provider} → fp16 when packaged within bound")),
                Provider::Cpu if AUTO_INT8_ON_CPU => (Precision::Int8, "auto: cpu → int8 when packaged within bound".to_string()),
                Provider::Cpu => (Precision::Fp32, "auto: cpu → fp32 (int8 is not faster enough here to be the default)".to_string()),
            };
            if want == Precision::Fp32 || within(want) {
                Ok((want, rule))
            } else {
                Ok((Precision::Fp32, format!("{rule}; the package has no {want} variant within bound, so fp32")))
            }
        }
    }
}

/// The three graphs of one precision under their plain names (`encoder.onnx`, …), with the
/// package's other files, ready for [`super::Detector::from_graphs`].
pub fn graphs_for(files: &BTreeMap<String, Vec<u8>>, precision: Precision) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = files.iter().filter(|(n, _)| !crate::package::VARIANT_FILES.contains(&n.as_str())).map(|(n, b)| (n.clone(), b.clone())).collect();
    if precision != Precision::Fp32 {
        for g in GRAPH_FILES {
            if let Some(b) = files.get(&precision.file_name(g)) {
                out.insert(g.to_string(), b.clone());
            }
        }
    }
    out
}

/// Ranges of every convolution input and output of `model` (a graph reading index tables)
/// over the given batches of codes.
fn calibrate(name: &str, model: &[u8], batches: &[ArrayD<i64>], opts: &SessionOptions) -> Result<Ranges, VariantError> {
    let (cal, names) = precision::calibration_graph(model)?;
    let mut g = open_graph(&format!("{name} (calibration)"), &cal, opts)?;
    let mut ranges = Ranges::new();
    for z in batches {
        for (n, v) in g.run_all_f32(z.clone())?.iter().filter(|(n, _)| names.contains(n)) {
            precision::observe(&mut ranges, n, v.iter().copied());
        }
    }
    for n in &names {
        if !ranges.get(n).is_some_and(|(lo, hi)| lo.is_finite() && hi.is_finite()) {
            return Err(VariantError::Calibration(format!("{name}: tensor {n} produced no finite value")));
        }
    }
    Ok(ranges)
}

/// Signal-to-noise ratio (dB) of `variant` against `reference`: 10·log10(Σr² / Σ(r − v)²);
/// +∞ when they are identical.
pub fn sqnr_db(reference: &[f32], variant: &[f32]) -> f64 {
    let (mut s, mut e) = (0f64, 0f64);
    for (r, v) in reference.iter().zip(variant) {
        if r.is_finite() && v.is_finite() {
            s += (*r as f64).powi(2);
            e += (*r as f64 - *v as f64).powi(2);
        }
    }
    if e == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (s / e).log10()
    }
}

/// The INT8 graph of [`INT8_GRAPHS`] with its calibration kept, so it can be written again
/// with some convolutions left in float32 (accuracy control) without calibrating again.
pub struct Int8Writer {
    fp32: Vec<u8>,
    ranges: Ranges,
    /// The calibration normals' FP32 codes, batched: the inputs sensitivity is measured on.
    codes: Vec<ArrayD<i64>>,
}

impl Int8Writer {
    /// Calibrates activation ranges on `normals` (images [C, H, W] in [0, 1]) through their
    /// FP32 codes.
    pub fn calibrate(graphs: &BTreeMap<String, Vec<u8>>, normals: &[Array3<f32>], opts: &SessionOptions, progress: &dyn Fn(&str)) -> Result<Self, VariantError> {
        let get = |g: &str| graphs.get(g).ok_or_else(|| VariantError::Calibration(format!("{g} missing")));
        if normals.is_empty() {
            return Err(VariantError::Calibration("INT8 needs calibration images (the validation normals); there are none".into()));
        }
        progress(&format!("calibrating INT8 activation ranges on {} validation normals…", normals.len()));
        let mut enc = open_graph("encoder.onnx", get("encoder.onnx")?, opts)?;
        let mut codes = vec![];
        for c in normals.chunks(8) {
            let x = ndarray::stack(Axis(0), &c.iter().map(|a| a.view()).collect::<Vec<_>>()).expect("same shape").into_dyn();
            let z: ArrayD<i64> = enc.run_one(x)?;
            codes.push(z);
        }
        let [g] = INT8_GRAPHS;
        let fp32 = get(g)?.clone();
        let ranges = calibrate(g, &fp32, &codes, opts)?;
        Ok(Int8Writer { fp32, ranges, codes })
    }

    /// The archive entry name and bytes of the INT8 graph with the convolutions in `keep` left
    /// in float32.
    pub fn write(&self, keep: &BTreeSet<String>) -> Result<(String, Vec<u8>), VariantError> {
        let [g] = INT8_GRAPHS;
        Ok((Precision::Int8.file_name(g), precision::to_int8_keeping(&self.fp32, &self.ranges, keep)?))
    }

    /// Every convolution with the log-prob SQNR (dB, against FP32, on the calibration codes)
    /// the graph reaches when only that convolution stays float32, most helpful first: the
    /// order accuracy control keeps them in.
    pub fn sensitivity(&self, opts: &SessionOptions) -> Result<Vec<(String, f64)>, VariantError> {
        let run = |name: &str, bytes: &[u8]| -> Result<Vec<f32>, VariantError> {
            let mut s = open_graph(name, bytes, opts)?;
            let mut out = vec![];
            for z in &self.codes {
                let lp: ArrayD<f32> = s.run_one(z.clone())?;
                out.extend(lp.iter().copied());
            }
            Ok(out)
        };
        let reference = run("pixelsnail.onnx", &self.fp32)?;
        let mut out = vec![];
        for conv in precision::conv_nodes(&self.fp32)? {
            let (name, bytes) = self.write(&BTreeSet::from([conv.clone()]))?;
            out.push((conv, sqnr_db(&reference, &run(&name, &bytes)?)));
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(out)
    }
}
