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

#[derive(Args)]
pub struct AuditArgs {
    /// The .vqad package.
    pub file: PathBuf,
    /// Trusted public key: the package, its provenance and the attestations must verify with it.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// The category folder the package was trained on: its train/good must give the recorded
    /// dataset digest, dirHash and train/validation split.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The category folder of the attested evaluation: its test/ and ground_truth/ must give
    /// the attested digests, and evaluating the package on them the attested figures.
    #[arg(long, value_name = "DIR")]
    pub test: Option<PathBuf>,
    /// A git checkout of vqad: it must be at the recorded commit, and clean.
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// An evaluation attestation (repeatable); those in attestations/ beside the package (a
    /// registry version folder) are read too.
    #[arg(long, value_name = "FILE")]
    pub attestation: Vec<PathBuf>,
    /// Retrain from the recorded config, seed and --data with the recorded thread and
    /// instruction-set settings (runs `vqad-train`), export, and compare the three graphs and
    /// the codebook bit for bit; where they differ, report the largest weight difference and
    /// the final losses' differences.
    #[arg(long)]
    pub rebuild: bool,
    /// Keep the rebuild's run and export folders here instead of a temporary folder.
    #[arg(long, value_name = "DIR", requires = "rebuild")]
    pub rebuild_dir: Option<PathBuf>,
    /// Path to libonnxruntime (for the evaluation rerun).
    #[arg(long, env = "VQAD_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
    /// Print JSON (schemas/audit.schema.json) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Exit 0 when every check that ran passed, [`super::EXIT_CHECK_FAILED`] otherwise.
pub fn audit(a: AuditArgs) -> anyhow::Result<i32> {
    let key = TrustedKey::load(&a.pubkey)?;
    let rebuild_dir = match &a.rebuild_dir {
        Some(d) => Rebuild::Kept(d.clone()),
        None => Rebuild::Temp(tempfile::Builder::new().prefix("vqad-rebuild-").tempdir()?),
    };
    let rebuild = |req: &vqad::provenance::RebuildRequest| rebuild_with_trainer(req, rebuild_dir.path());
    let detector = vqad::runtime::DetectorOptions {
        session: vqad::runtime::session::SessionOptions {
            providers: vec![vqad::runtime::session::Provider::Cpu],
            strict: true,
            ort_lib: a.ort_lib.clone(),
            ..Default::default()
        },
        // The recorded metrics were measured on the FP32 reference graphs.
        precision: vqad::runtime::variant::PrecisionRequest::Exact(vqad::onnx::Precision::Fp32),
        ..Default::default()
    };
    let opts = vqad::provenance::AuditOptions {
        data: a.data.as_deref(),
        test: a.test.as_deref(),
        source: a.source.as_deref(),
        attestations: a.attestation.clone(),
        detector,
        rebuild: if a.rebuild { Some(&rebuild) } else { None },
    };
    let report = vqad::provenance::audit::audit(&a.file, &key, &opts);
    if a.json {
        super::print_json(&report)?;
    } else {
        print!("{}", report.table());
    }
    Ok(if report.passed { 0 } else { super::EXIT_CHECK_FAILED })
}

enum Rebuild {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl Rebuild {
    fn path(&self) -> &Path {
        match self {
            Rebuild::Kept(p) => p,
            Rebuild::Temp(t) => t.path(),
        }
    }
}

/// Trains and exports with `vqad-train` in child processes, so the recorded thread and
/// instruction-set variables are in place before libtorch starts (and `vqad` itself never
/// loads libtorch).
fn rebuild_with_trainer(req: &vqad::provenance::RebuildRequest, dir: &Path) -> Result<vqad::provenance::Rebuilt, String> {
    let exe = super::trainer_exe().ok_or("--rebuild trains, which needs the `vqad-train` executable beside vqad or on PATH")?;
    let start = std::time::Instant::now();
    let run = dir.join("run");
    let export = dir.join("export");
    if run.exists() {
        return Err(format!("{} already exists; give an empty --rebuild-dir", run.display()));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, serde_json::to_vec_pretty(req.config).map_err(|e| e.to_string())?).map_err(|e| format!("{}: {e}", cfg.display()))?;
    let step = |args: &[&std::ffi::OsStr], what: &str| -> Result<(), String> {
        let mut c = std::process::Command::new(&exe);
        c.args(args);
        // Exactly the recorded settings: none inherited that were not recorded.
        for k in vqad::provenance::build::DETERMINISM_VARS {
            c.env_remove(k);
        }
        c.envs(req.environment);
        eprintln!("rebuild: {what}…");
        let o = c.output().map_err(|e| format!("starting {}: {e}", exe.display()))?;
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            return Err(format!("`vqad-train {what}` failed: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | ")));
        }
        Ok(())
    };
    let seed = req.seed.to_string();
    let device = if req.device.starts_with("cuda") { req.device } else { "cpu" };
    step(
        &["train".as_ref(), req.data.as_os_str(), "--out".as_ref(), run.as_os_str(), "--preset".as_ref(), req.preset.as_ref(), "--config".as_ref(), cfg.as_os_str(), "--seed".as_ref(), seed.as_ref(), "--device".as_ref(), device.as_ref(), "--kind".as_ref(), req.kind.as_ref()],
        "train",
    )?;
    step(&["export".as_ref(), run.as_os_str(), "--out".as_ref(), export.as_os_str()], "export")?;
    let mut files = std::collections::BTreeMap::new();
    for name in vqad::package::GRAPH_FILES.iter().chain([&vqad::package::CODEBOOK_FILE]) {
        let p = export.join(name);
        files.insert(name.to_string(), std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    let metric = |stage: &str, k: &str| -> Option<f64> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join(format!("{stage}.json"))).ok()?).ok()?;
        v.get("metrics")?.get(k)?.as_f64()
    };
    let final_losses = [
        ("vqvae_train_loss", metric("vqvae", "train_loss")),
        ("vqvae_val_recon_mse", metric("vqvae", "val_recon_mse")),
        ("prior_train_nll", metric("prior", "train_nll")),
        ("prior_val_nll", metric("prior", "val_nll")),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
    .collect();
    Ok(vqad::provenance::Rebuilt { files, final_losses, seconds: start.elapsed().as_secs_f64() })
}
