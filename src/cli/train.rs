//! Flags of train, bench-train and export (run by `vqad-train`: src/trainer/).

use clap::Args;
use std::path::PathBuf;
use vqad::config::Stage;

#[derive(Args)]
pub struct TrainArgs {
    /// Category folder in MVTec AD layout (only train/good is read).
    pub category_dir: PathBuf,
    /// Run folder to create (or continue with --resume).
    #[arg(long)]
    pub out: PathBuf,
    /// Settings to start from: paper (256², 32×32 grid, K=512; GPU), small (128², 32×32
    /// grid; about 10 minutes on 2 CPU cores) or tiny (64², for tests and the demo).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// texture (any rotation, flips, random crops) or object (small rotations only). Default:
    /// from the MVTec category name, else the config file, else object with a warning.
    #[arg(long)]
    pub kind: Option<vqad::config::CategoryKind>,
    /// TOML or JSON file overriding any preset field (e.g. [train] vqvae_epochs = 50).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Which stage(s) to train: vqvae, prior or all.
    #[arg(long, default_value = "all")]
    pub stage: Stage,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Seed for initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue an interrupted run from its last complete epoch.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Args)]
pub struct BenchTrainArgs {
    /// Presets to measure, comma separated.
    #[arg(long, default_value = "tiny,paper")]
    pub presets: String,
    /// Devices to measure, comma separated (cuda is skipped where there is none).
    #[arg(long, default_value = "cpu,cuda")]
    pub devices: String,
    /// Timed optimiser steps per stage (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Cap on the batch size (the paper's 256 is slow on a CPU).
    #[arg(long, default_value_t = 16)]
    pub max_batch: i64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Training run folder.
    pub run_dir: PathBuf,
    /// Folder for encoder.onnx, decoder.onnx, pixelsnail.onnx, codebook.npy, shapes.json.
    #[arg(long)]
    pub out: PathBuf,
}
