//! train, bench-train, export.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use vqad::config::Config;
use vqad::train::{self, Stage, TrainOptions};

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

pub fn train(a: TrainArgs) -> anyhow::Result<i32> {
    let mut config = Config::load(&a.preset, a.config.as_deref())?;
    if a.kind.is_some() {
        config.kind = a.kind;
    }
    let s = train::train(&TrainOptions {
        category_dir: a.category_dir,
        out: a.out,
        config,
        stage: a.stage,
        device: a.device,
        seed: a.seed,
        resume: a.resume,
        progress: true,
    })?;
    println!("run folder: {}", s.run_dir.display());
    for (name, st) in [("vqvae", &s.vqvae), ("prior", &s.prior)] {
        if st.epochs_done > 0 {
            println!("{name}: {}/{} epochs, {}", st.epochs_done, st.epochs_total, serde_json::Value::Object(st.metrics.clone()));
        }
    }
    Ok(0)
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

pub fn bench_train(a: BenchTrainArgs) -> anyhow::Result<i32> {
    let mut rows = vec![];
    for preset in a.presets.split(',') {
        let cfg = Config::preset(preset.trim())?;
        for dev in a.devices.split(',') {
            let device = match train::device::select_device(dev.trim()) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("skipping {dev}: {e}");
                    continue;
                }
            };
            let r = train::bench::bench_train(&cfg, device, a.steps, a.max_batch)?;
            if !a.json {
                println!(
                    "{:<6} {:<7} vqvae {:>8.1} images/s (batch {})   prior {:>8.1} tables/s (batch {})",
                    r.preset, r.device, r.vqvae_images_per_s, r.vqvae_batch, r.prior_tables_per_s, r.prior_batch
                );
            }
            rows.push(r);
        }
    }
    if a.json {
        super::print_json(&rows)?;
    }
    Ok(0)
}

#[derive(Args)]
pub struct ExportArgs {
    /// Training run folder.
    pub run_dir: PathBuf,
    /// Folder for encoder.onnx, decoder.onnx, pixelsnail.onnx, codebook.npy, shapes.json.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn export(a: ExportArgs) -> anyhow::Result<i32> {
    let e = vqad::pipeline::export::export_run(&a.run_dir).with_context(|| format!("exporting {}", a.run_dir.display()))?;
    vqad::pipeline::export::write_export(&e, &a.out)?;
    for (name, bytes) in &e.files {
        println!("{:<16} {:>10} bytes  sha256 {}", name, bytes.len(), vqad::fsutil::sha256_hex(bytes));
    }
    Ok(0)
}
