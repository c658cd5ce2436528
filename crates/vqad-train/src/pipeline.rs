//! Steps that join the stages of a training run into a package: export, tune, sign.
//! Shared by `vqad tune`, `vqad package` and `vqad demo`.

use vqad::eval::tune::{tune, TuneError, TuneOptions, TuneResult};
use vqad::fsutil::write_atomic;
use vqad::package::{self, DatasetInfo, Epochs, Manifest, ModelShape, PackageError, PackageInfo, Provenance, SigningKey, Software, TuningData};
use vqad::runtime::session::{Provider, SessionOptions};
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
    let result = tune(&mut det, &normals, opts, info.seed, progress)?;
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
    };
    let mut manifest = manifest;
    manifest.format_version = manifest.detection.format_needed();
    let files: BTreeMap<String, Vec<u8>> = exported.files.into_iter().collect();
    Ok(package::build_package_with(&manifest, &files, key, &req.out, &package::BuildOptions { overwrite: req.overwrite })?)
}
