//! `vqad demo`'s flags (the demo itself runs in `vqad-train`: src/trainer/demo.rs).

use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct DemoArgs {
    /// Folder for everything the demo makes (replaced if it holds an earlier demo; any other
    /// non-empty folder is refused).
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// texture or object category.
    #[arg(long, default_value = "texture")]
    pub kind: vqad::config::CategoryKind,
    /// Normal training images to generate.
    #[arg(long, default_value_t = 200)]
    pub train: usize,
    /// Defective test images per defect type.
    #[arg(long, default_value_t = 4)]
    pub test_bad: usize,
    /// TOML/JSON overrides of the tiny preset (e.g. fewer epochs).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seed for data and training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the final summary as JSON.
    #[arg(long)]
    pub json: bool,
}

