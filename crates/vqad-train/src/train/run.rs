//! The run folder: everything a training run decided and produced, written atomically so a
//! kill at any moment leaves the last complete checkpoint usable.
//!
//! ```text
//! RUN_DIR/config.json        exact Config
//! RUN_DIR/run.json           seed, dataset digest, image counts, versions, device
//! RUN_DIR/log.jsonl          one JSON object per epoch and event
//! RUN_DIR/vqvae.safetensors  + vqvae.json   (weights; stage state after the last full epoch)
//! RUN_DIR/prior.safetensors  + prior.json
//! ```

use super::TrainError;
use vqad::config::Config;
use vqad::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Facts about the run that provenance needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub category: String,
    pub category_dir: String,
    pub seed: u64,
    /// sha256 over the training images (see `data::dataset_digest`).
    pub dataset_digest: String,
    pub train_images: usize,
    pub val_images: usize,
    pub vqad_version: String,
    /// The source commit that built the trainer (empty when it could not be shown, see
    /// `vqad::source`).
    pub git_commit: String,
    /// Whether that checkout had no uncommitted change at all; absent in older runs.
    #[serde(default)]
    pub source_clean: Option<bool>,
    pub rustc: String,
    pub tch_version: String,
    pub libtorch_version: String,
    pub device: String,
    /// in-toto `dirHash` of train/good (`vqad::data::dir_hash`); absent in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_dir_hash: Option<String>,
    /// The validation images, relative to the category folder; absent in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_files: Option<Vec<String>>,
    /// The augmentation kind training used (`texture`/`object`); absent in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A random id of this run (kept on resume); absent in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Training start, RFC 3339; absent in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Threads, backends and environment that decide bit-reproducibility; absent in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<vqad::provenance::build::InternalParameters>,
}

/// Progress and final figures of one stage, saved after each complete epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StageState {
    pub epochs_done: i64,
    pub epochs_total: i64,
    /// Last epoch's metrics (losses, validation figures).
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// The same figures before any training step (epoch 0), for comparison.
    pub initial: serde_json::Map<String, serde_json::Value>,
}

impl StageState {
    pub fn complete(&self) -> bool {
        self.epochs_total > 0 && self.epochs_done >= self.epochs_total
    }
    pub fn metric(&self, k: &str) -> Option<f64> {
        self.metrics.get(k).and_then(|v| v.as_f64())
    }
}

/// Paths inside a run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io(path.display().to_string(), e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Corrupt(path.display().to_string(), e.to_string()))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), TrainError> {
    let mut bytes = serde_json::to_vec_pretty(v).expect("serialisable");
    bytes.push(b'\n');
    write_atomic(path, &bytes).map_err(|e| TrainError::Io(path.display().to_string(), e))
}

impl RunDir {
    pub fn new(root: &Path) -> Self {
        RunDir { root: root.to_path_buf() }
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }
    pub fn info_path(&self) -> PathBuf {
        self.root.join("run.json")
    }
    pub fn log_path(&self) -> PathBuf {
        self.root.join("log.jsonl")
    }
    pub fn weights(&self, stage: &str) -> PathBuf {
        self.root.join(format!("{stage}.safetensors"))
    }
    pub fn state_path(&self, stage: &str) -> PathBuf {
        self.root.join(format!("{stage}.json"))
    }

    pub fn config(&self) -> Result<Config, TrainError> {
        read_json(&self.config_path())
    }
    pub fn save_config(&self, c: &Config) -> Result<(), TrainError> {
        write_json(&self.config_path(), c)
    }
    pub fn info(&self) -> Result<RunInfo, TrainError> {
        read_json(&self.info_path())
    }
    pub fn save_info(&self, i: &RunInfo) -> Result<(), TrainError> {
        write_json(&self.info_path(), i)
    }
    /// The stage's state, or a fresh one when the stage never completed an epoch.
    pub fn state(&self, stage: &str) -> Result<StageState, TrainError> {
        let p = self.state_path(stage);
        if p.exists() {
            read_json(&p)
        } else {
            Ok(StageState::default())
        }
    }
    pub fn save_state(&self, stage: &str, s: &StageState) -> Result<(), TrainError> {
        write_json(&self.state_path(stage), s)
    }

    /// Saves weights atomically (temp file, then rename) so a kill never leaves a torn file.
    pub fn save_weights(&self, stage: &str, vs: &tch::nn::VarStore) -> Result<(), TrainError> {
        let target = self.weights(stage);
        let tmp = self.root.join(format!(".{stage}.tmp.safetensors"));
        vs.save(&tmp).map_err(|e| TrainError::Torch(format!("saving {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, &target).map_err(|e| TrainError::Io(target.display().to_string(), e))
    }

    pub fn load_weights(&self, stage: &str, vs: &mut tch::nn::VarStore) -> Result<(), TrainError> {
        let p = self.weights(stage);
        if !p.exists() {
            return Err(TrainError::Missing(p.display().to_string()));
        }
        vs.load(&p).map_err(|e| TrainError::Corrupt(p.display().to_string(), e.to_string()))
    }

    /// Appends one JSON object to the training log.
    pub fn log(&self, event: serde_json::Value) -> Result<(), TrainError> {
        let p = self.log_path();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p).map_err(|e| TrainError::Io(p.display().to_string(), e))?;
        writeln!(f, "{event}").map_err(|e| TrainError::Io(p.display().to_string(), e))
    }
}
