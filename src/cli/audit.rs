//! diff and bom: audit views of verified packages.

use anyhow::Context;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use vqad::package::{TrustedKey, VerifiedPackage};

/// Exit code of `vqad diff` when both packages verified and differ (0: identical). Not 1,
/// which is an error, nor 3, a refused package.
pub const EXIT_DIFFER: i32 = 5;

#[derive(Args)]
pub struct DiffArgs {
    /// The older package (A).
    pub a: PathBuf,
    /// The newer package (B).
    pub b: PathBuf,
    /// Trusted public key; both packages must verify with it before anything is compared.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// Print JSON (schemas/diff.schema.json) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show unchanged fields too.
    #[arg(long)]
    pub all: bool,
}

fn open(path: &Path, key: &TrustedKey) -> anyhow::Result<VerifiedPackage> {
    VerifiedPackage::open(path, key).with_context(|| format!("{}: verification failed", path.display()))
}

/// Exit 0 when identical, [`EXIT_DIFFER`] when they differ, 3 when either fails verification.
pub fn diff(a: DiffArgs) -> anyhow::Result<i32> {
    let key = TrustedKey::load(&a.pubkey)?;
    let (pa, pb) = (open(&a.a, &key)?, open(&a.b, &key)?);
    let d = vqad::audit::PackageDiff::between(&pa, &pb);
    if a.json {
        super::print_json(&d.to_json(a.all))?;
    } else {
        print!("{}", d.table(a.all));
    }
    Ok(if d.identical() { 0 } else { EXIT_DIFFER })
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BomFormat {
    /// CycloneDX 1.6 JSON (ML-BOM).
    Cyclonedx,
}

#[derive(Args)]
pub struct BomArgs {
    /// The .vqad package.
    pub file: PathBuf,
    /// Trusted public key; nothing is written unless the package verifies.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// BOM format.
    #[arg(long, value_enum, default_value = "cyclonedx")]
    pub format: BomFormat,
    /// Write the BOM to this file (atomically; refuses an existing file unless --overwrite)
    /// instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn bom(a: BomArgs) -> anyhow::Result<i32> {
    let key = TrustedKey::load(&a.pubkey)?;
    let p = open(&a.file, &key)?;
    let bom = match a.format {
        BomFormat::Cyclonedx => vqad::audit::cyclonedx(&p),
    };
    let mut text = serde_json::to_vec_pretty(&bom)?;
    text.push(b'\n');
    match &a.out {
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&text)?;
        }
        Some(out) => {
            vqad::fsutil::write_file(out, &text, a.overwrite).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    anyhow::anyhow!("{} already exists; pass --overwrite to replace it", out.display())
                } else {
                    anyhow::anyhow!("{}: {e}", out.display())
                }
            })?;
            eprintln!("wrote {}", out.display());
        }
    }
    Ok(0)
}
