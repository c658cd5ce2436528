//! Steps that join the stages of a training run into a package: export, tune, sign.
//! Shared by `vqad tune`, `vqad package` and `vqad demo`.

use vqad::eval::tune::{tune, TuneError, TuneOptions, TuneResult};
use vqad::fsutil::write_atomic;
use vqad::package::{self, DatasetInfo, Epochs, Manifest, ModelShape, PackageError, PackageInfo, Provenance, SigningKey, Software, TuningData};
use vqad::provenance::BuildFacts;
use vqad::runtime::session::{Provider, SessionOptions};
use vqad::onnx::Precision;
use vqad::runtime::{DetectError, Detector, DetectorOptions};
use crate::train::run::RunDir;
use crate::train::{load_dataset, TrainError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub mod export;
use export::export_run;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Tune(#[from] TuneError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Variant(#[from] vqad::runtime::variant::VariantError),
    #[error(transparent)]
    Parity(#[from] vqad::eval::parity::ParityError),
    #[error(transparent)]
    Control(#[from] vqad::eval::accuracy::ControlError),
}

/// `RUN_DIR/tune.json`.
pub fn tune_path(run: &Path) -> PathBuf {
    run.join("tune.json")
}

/// Reads a run's tuning result, if it has one.
pub fn read_tune(run: &Path) -> Result<Option<TuneResult>, PipelineError> {
    let p = tune_path(run);
    if !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(|e| TrainError::Io(p.display().to_string(), e))?;
    Ok(Some(serde_json::from_str(&text).map_err(|e| TrainError::Corrupt(p.display().to_string(), e.to_string()))?))
}

/// Chooses η and the thresholds of a trained run on its validation normals (CPU ONNX Runtime,
/// the graphs exactly as they will be packaged) and writes `RUN_DIR/tune.json`.
pub fn tune_run(run: &Path, ort_lib: Option<&Path>, opts: &TuneOptions, progress: &dyn Fn(&str)) -> Result<TuneResult, PipelineError> {
    tune_exported(run, &export_run(run)?.files, ort_lib, opts, progress)
}

/// [`tune_run`] on graphs already exported from the run.
pub fn tune_exported(
    run: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    ort_lib: Option<&Path>,
    opts: &TuneOptions,
    progress: &dyn Fn(&str),
) -> Result<TuneResult, PipelineError> {
    let rd = RunDir::new(run);
    let cfg = rd.config()?;
    let info = rd.info()?;
    let ds = load_dataset(Path::new(&info.category_dir), &cfg)?;
    let normals = if ds.val.is_empty() { ds.train.iter().take(8).cloned().collect() } else { ds.val.clone() };
    let det_opts = DetectorOptions {
        session: SessionOptions { providers: vec![Provider::Cpu], ort_lib: ort_lib.map(Path::to_path_buf), ..Default::default() },
        ..Default::default()
    };
    let mut det = Detector::from_graphs(files, ModelShape::from_config(&cfg.model, vqad::onnx::OPSET), cfg.detect.clone(), det_opts)?;
    let result = tune(&mut det, &normals, &ds.train, opts, info.seed, progress)?;
    let mut bytes = serde_json::to_vec_pretty(&result).expect("serialisable");
    bytes.push(b'\n');
    let p = tune_path(run);
    write_atomic(&p, &bytes).map_err(|e| TrainError::Io(p.display().to_string(), e))?;
    Ok(result)
}

/// What `vqad package` was asked to do.
#[derive(Debug, Clone)]
pub struct PackageRequest {
    pub run_dir: PathBuf,
    pub name: String,
    pub version: String,
    /// Folder, or a path ending in `<name>-<version>.vqad`.
    pub out: PathBuf,
    pub overwrite: bool,
    pub ort_lib: Option<PathBuf>,
    pub progress: bool,
    /// Precisions to carry; FP32 always. FP16/INT8 are written, run beside FP32 and recorded.
    pub precisions: Vec<Precision>,
    /// Package a variant outside its parity bound anyway; the reason is signed into it.
    pub parity_override: Option<String>,
    /// The least a variant must reach; accuracy control works towards it.
    pub parity_bound: package::ParityBound,
}

fn num(m: &serde_json::Map<String, serde_json::Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(|v| v.as_f64())
}

/// Exports, tunes (when the run has no `tune.json`), writes the manifest and signs the package.
pub fn package_run(req: &PackageRequest, key: &SigningKey) -> Result<PackageInfo, PipelineError> {
    let rd = RunDir::new(&req.run_dir);
    let cfg = rd.config()?;
    let info = rd.info()?;
    let (vq, pr) = (rd.state("vqvae")?, rd.state("prior")?);
    if !vq.complete() || !pr.complete() {
        return Err(PipelineError::Refused(format!(
            "{}: training is not complete (vqvae {}/{}, prior {}/{} epochs); finish it with `vqad train --resume`",
            req.run_dir.display(), vq.epochs_done, vq.epochs_total, pr.epochs_done, pr.epochs_total
        )));
    }
    let say = |s: &str| {
        if req.progress {
            eprintln!("{s}");
        }
    };
    let exported = export_run(&req.run_dir)?;
    let tuned = match read_tune(&req.run_dir)? {
        Some(t) => t,
        None => {
            say("tuning η and thresholds on validation normals (no tune.json yet)…");
            tune_exported(&req.run_dir, &exported.files, req.ort_lib.as_deref(), &TuneOptions::default(), &say)?
        }
    };
    let mut final_losses = BTreeMap::new();
    for (k, v) in [
        ("vqvae_train_loss", num(&vq.metrics, "train_loss")),
        ("vqvae_val_recon_mse", num(&vq.metrics, "val_recon_mse")),
        ("prior_train_nll", num(&pr.metrics, "train_nll")),
        ("prior_val_nll", num(&pr.metrics, "val_nll")),
    ] {
        if let Some(v) = v {
            final_losses.insert(k.to_string(), v);
        }
    }
    let mut software = Software::this_build();
    software.git_commit = Some(info.git_commit.clone()).filter(|s| !s.is_empty());
    software.tch = Some(info.tch_version.clone());
    software.libtorch = Some(info.libtorch_version.clone());
    software.onnxruntime = vqad::runtime::session::ort_version().or_else(|| {
        // Make sure the version recorded is the one the graphs were checked with.
        vqad::runtime::session::environment(req.ort_lib.as_deref()).ok().and_then(|_| vqad::runtime::session::ort_version())
    });
    let manifest = Manifest {
        format_version: 0, // set below from the detection settings it carries
        name: req.name.clone(),
        version: req.version.clone(),
        model: ModelShape::from_config(&cfg.model, vqad::onnx::OPSET),
        detection: package::DetectionSettings::from_config(
            &tuned.detect,
            TuningData { source: "validation-normals+synthetic-negatives".into(), images: Some(tuned.validation_images as u64), notes: Some(tuned.notes.clone()) },
        )?,
        provenance: Provenance {
            dataset: DatasetInfo {
                digest: info.dataset_digest.clone(),
                images: (info.train_images + info.val_images) as u64,
                description: Some(format!("{} train/good ({} train, {} validation)", info.category, info.train_images, info.val_images)),
            },
            training_config: serde_json::to_value(&cfg).expect("serialisable"),
            seed: info.seed,
            epochs: Epochs { vqvae: vq.epochs_done as u64, prior: pr.epochs_done as u64 },
            final_losses,
            codebook_usage: package::CodebookUsage {
                used_codes: num(&vq.metrics, "codebook_used").unwrap_or(0.0) as u64,
                perplexity: num(&vq.metrics, "perplexity"),
            },
            software,
            created: package::created_timestamp()?,
        },
        metrics: None,
        variants: None,
    };
    let mut manifest = manifest;
    // The provenance entry needs format 6 (older vqad then refuses the package as too new).
    manifest.format_version = manifest.detection.format_needed().max(package::PROVENANCE_FORMAT);
    let mut files: BTreeMap<String, Vec<u8>> = exported.files.into_iter().collect();
    if req.precisions.iter().any(|p| *p != Precision::Fp32) {
        let (variants, extra) = package_variants(req, &cfg, &info, &manifest, &files, &say)?;
        files.extend(extra);
        manifest.variants = Some(variants);
        manifest.format_version = manifest.format_version.max(package::VARIANTS_FORMAT);
    }
    let facts = build_facts(&rd, &cfg, &info, manifest.provenance.software.onnxruntime.clone(), &manifest.provenance.created)?;
    let provenance = vqad::provenance::build::sign(&manifest, &files, &facts, key).map_err(|e| PipelineError::Refused(e.to_string()))?;
    files.insert(package::PROVENANCE_FILE.to_string(), provenance);
    Ok(package::build_package_with(&manifest, &files, key, &req.out, &package::BuildOptions { overwrite: req.overwrite })?)
}

/// Writes the requested reduced-precision variants, runs each beside FP32 on the validation
/// normals and synthetic defects, and refuses one outside its bound unless overridden.
fn package_variants(
    req: &PackageRequest,
    cfg: &vqad::config::Config,
    info: &crate::train::run::RunInfo,
    manifest: &Manifest,
    files: &BTreeMap<String, Vec<u8>>,
    say: &dyn Fn(&str),
) -> Result<(BTreeMap<Precision, package::Variant>, BTreeMap<String, Vec<u8>>), PipelineError> {
    let ds = load_dataset(Path::new(&info.category_dir), cfg)?;
    let normals = if ds.val.is_empty() { ds.train.iter().take(8).cloned().collect() } else { ds.val.clone() };
    let session = SessionOptions { providers: vec![Provider::Cpu], ort_lib: req.ort_lib.clone(), ..Default::default() };
    let precisions: Vec<Precision> = req.precisions.iter().copied().filter(|p| *p != Precision::Fp32).collect();
    let (model, settings) = (&manifest.model, manifest.detection.to_config());
    let bound = req.parity_bound;
    // The FP32 side once, compared with each precision and each accuracy-control candidate.
    let reference = vqad::eval::parity::Reference::compute(files, model, &settings, &normals, info.seed, &session, say)?;
    let mut extra = BTreeMap::new();
    let mut variants = BTreeMap::new();
    for p in precisions {
        let controlled = match p {
            Precision::Fp32 => continue,
            Precision::Fp16 => vqad::eval::accuracy::fp16(&reference, files, bound, say)?,
            Precision::Int8 => {
                let writer = vqad::runtime::variant::Int8Writer::calibrate(files, &normals, &session, say)?;
                vqad::eval::accuracy::int8(&reference, files, &writer, &session, bound, say)?
            }
        };
        let mut parity = controlled.parity;
        say(&format!(
            "{p}: decisions {:.2}% agree, mask IoU {}, resampled positions {:.2}%, codes {:.2}%, prior SQNR {:.1} dB and argmax {:.2}%, decoder max {:.2e} / RMS {:.2e}, raw map RMS {:.2e} of the threshold, pixel AUROC {:+.4} vs fp32",
            parity.decision_agreement * 100.0,
            parity.mask_iou.map_or("-".into(), |v| format!("{v:.3}")),
            parity.resampled_agreement * 100.0,
            parity.encoder_code_agreement * 100.0,
            parity.prior_logprob_sqnr_db,
            parity.prior_argmax_agreement * 100.0,
            parity.decoder_max_error,
            parity.decoder_rms_error,
            parity.raw_map_rms_error,
            parity.auroc_difference
        ));
        if let Some(why) = parity.violation() {
            match &req.parity_override {
                Some(reason) => {
                    say(&format!("{p}: outside its parity bound ({why}); packaged anyway under the override: {reason}"));
                    parity.override_reason = Some(reason.clone());
                }
                None => {
                    return Err(PipelineError::Refused(format!(
                        "the {p} variant is outside its parity bound: {why}; leave it out of --precisions, or package it anyway with --parity-override REASON (recorded in the manifest)"
                    )))
                }
            }
        }
        let mut method = match p {
            Precision::Int8 => format!("static QDQ of the prior (encoder and decoder stay fp32: codes flip, masks move): uint8 activations calibrated (min/max) on {} validation normals, per-channel symmetric int8 weights, int32 biases; convolutions only", normals.len()),
            _ => "float16 weights and activations; softmax, log-softmax, RMS-norm reductions and the nearest-code search in float32".to_string(),
        };
        if !controlled.float32.is_empty() {
            method.push_str(&format!("; accuracy control kept {} in float32", controlled.float32.join(", ")));
            say(&format!("{p}: accuracy control kept {} in float32", controlled.float32.join(", ")));
        }
        extra.extend(controlled.entries);
        variants.insert(p, package::Variant { files: controlled.files, method, float32: controlled.float32, parity });
    }
    Ok((variants, extra))
}

/// What the provenance says about a run: mostly recorded by `train` in run.json; runs trained
/// before vqad recorded the dirHash and split get them recomputed here when the data is still
/// there unchanged (else the provenance says less, and `vqad audit --data` says so).
fn build_facts(rd: &RunDir, cfg: &vqad::config::Config, info: &crate::train::run::RunInfo, onnxruntime: Option<String>, created: &str) -> Result<BuildFacts, PipelineError> {
    use vqad::provenance::build::{DataAnnotations, DataFacts, TRAIN_PATH};
    let root = Path::new(&info.category_dir);
    let mut dir_hash = info.dataset_dir_hash.clone();
    let mut validation_files = info.validation_files.clone();
    if dir_hash.is_none() || validation_files.is_none() {
        if let Ok(cat) = vqad::data::Category::open_train_only(root) {
            if vqad::data::dataset_digest(&cat.root, &cat.train_good).ok().as_deref() == Some(info.dataset_digest.as_str()) {
                dir_hash = dir_hash.or_else(|| vqad::data::dir_hash(&cat.root, &[TRAIN_PATH]).ok());
                let (_, val) = vqad::data::split_validation(&cat.train_good, cfg.train.val_fraction);
                validation_files = validation_files.or_else(|| Some(val.iter().map(|p| p.strip_prefix(&cat.root).unwrap_or(p).to_string_lossy().into_owned()).collect()));
            }
        }
    }
    let location = std::fs::canonicalize(root).map(|p| p.display().to_string()).unwrap_or_else(|_| info.category_dir.clone());
    let kind = info
        .kind
        .clone()
        .or_else(|| cfg.kind.and_then(|k| serde_json::to_value(k).ok()).and_then(|v| v.as_str().map(str::to_string)))
        .or_else(|| vqad::data::kind_from_name(&info.category).and_then(|k| serde_json::to_value(k).ok()).and_then(|v| v.as_str().map(str::to_string)))
        .unwrap_or_else(|| "object".into());
    let log = rd.log_path();
    let byproducts = std::fs::read(&log)
        .map(|b| vec![vqad::package::ResourceDescriptor::file("log.jsonl", &vqad::fsutil::sha256_hex(&b))])
        .unwrap_or_default();
    let commit = Some(info.git_commit.clone()).filter(|c| !c.is_empty());
    let note = commit.is_none().then(|| "the trainer that made this run could not show which commit it was built from".to_string());
    Ok(BuildFacts {
        category: info.category.clone(),
        kind,
        seed: info.seed,
        config: serde_json::to_value(cfg).expect("serialisable"),
        data: DataFacts {
            digest: info.dataset_digest.clone(),
            dir_hash,
            annotations: DataAnnotations {
                path: TRAIN_PATH.into(),
                images: (info.train_images + info.val_images) as u64,
                train_images: info.train_images as u64,
                validation_images: info.val_images as u64,
                validation_files: validation_files.unwrap_or_default(),
            },
            location,
        },
        source: vqad::source::SourceState { commit, clean: info.source_clean, note },
        libtorch: Some(info.libtorch_version.clone()),
        tch: Some(info.tch_version.clone()),
        onnxruntime,
        rustc: Some(info.rustc.clone()),
        internal: info.platform.clone().unwrap_or_else(|| vqad::provenance::build::InternalParameters { device: info.device.clone(), ..Default::default() }),
        started: info.started.clone().unwrap_or_else(|| created.to_string()),
        finished: created.to_string(),
        // Older runs have no id: name them by their run.json, which identifies the run.
        run_id: info.run_id.clone().unwrap_or_else(|| {
            std::fs::read(rd.info_path()).map(|b| vqad::fsutil::sha256_hex(&b)[..32].to_string()).unwrap_or_else(|_| "unknown".into())
        }),
        builder: vqad::provenance::builder::Builder::from_env().map_err(|e| PipelineError::Refused(e.to_string()))?,
        byproducts,
    })
}
