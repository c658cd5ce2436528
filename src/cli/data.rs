//! synth and data check.

use clap::{Args, Subcommand};
use std::path::PathBuf;
use vqad::config::CategoryKind;
use vqad::data::{self, SynthSpec};

#[derive(Args)]
pub struct SynthArgs {
    /// Folder to write the category into (OUT/<category>/...).
    #[arg(long)]
    pub out: PathBuf,
    /// Category name (an MVTec name such as carpet or bottle picks the matching pattern).
    #[arg(long, default_value = "synth_texture")]
    pub category: String,
    /// texture or object.
    #[arg(long, default_value = "texture")]
    pub kind: CategoryKind,
    /// Image side in pixels.
    #[arg(long, default_value_t = 128)]
    pub size: u32,
    /// Random seed; the same seed gives byte-identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Normal training images.
    #[arg(long, default_value_t = 64)]
    pub train: usize,
    /// Normal test images.
    #[arg(long, default_value_t = 10)]
    pub test_good: usize,
    /// Defective test images per defect type (scratch, hole, stain, contamination, missing part).
    #[arg(long, default_value_t = 4)]
    pub test_bad: usize,
}

impl SynthArgs {
    pub fn spec(&self) -> SynthSpec {
        SynthSpec {
            category: self.category.clone(),
            kind: self.kind,
            size: self.size,
            seed: self.seed,
            train: self.train,
            test_good: self.test_good,
            test_bad: self.test_bad,
        }
    }
}

pub fn synth(a: SynthArgs) -> anyhow::Result<i32> {
    let dir = data::synth_category(&a.spec(), &a.out)?;
    println!("wrote {}", dir.display());
    Ok(0)
}

#[derive(Subcommand)]
pub enum DataCmd {
    /// Validate a category folder: counts per split and defect type, sizes, channels, problems.
    Check {
        /// The category folder (CATEGORY/train/good, CATEGORY/test/..., CATEGORY/ground_truth/...).
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        decode: super::detect::DecodeFlags,
    },
}

pub fn run(cmd: DataCmd) -> anyhow::Result<i32> {
    match cmd {
        DataCmd::Check { dir, json, decode } => {
            let r = data::check_category_within(&dir, &decode.limits()?)?;
            if json {
                super::print_json(&r)?;
            } else {
                print!("{r}");
            }
            Ok(if r.has_problems() { 4 } else { 0 })
        }
    }
}
