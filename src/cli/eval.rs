//! eval and tune.

use super::detect::{open_detector_from, DecodeFlags, RunFlags, SourceFlags};
use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};
use vqad::data::Category;
use vqad::eval::report::{combine, evaluate_category, write_report, EvalOptions};

#[derive(Args)]
pub struct EvalArgs {
    /// A .vqad package, or a folder of packages (a registry) when CATEGORY_DIR holds several
    /// categories: each category uses the newest `<category>-<version>.vqad` found there.
    /// With --registry: a reference (NAME@CHANNEL, NAME@VERSION, NAME), or `@CHANNEL` for
    /// `<category>@CHANNEL` of every category.
    pub package: PathBuf,
    /// Trusted public key.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// A category folder (MVTec layout), or a folder of category folders.
    pub category_dir: PathBuf,
    /// Output folder: report.json, report.md, results/, panels/.
    #[arg(long)]
    pub out: PathBuf,
    /// Add the Fig. 8 ablations: ℓ2 input–output score, and no local constraint.
    #[arg(long)]
    pub ablation: bool,
    /// With --ablation, compute only these variants (comma separated): score_paper,
    /// score_surprise, score_restored_input, restore_argmax, restore_nearest_likely,
    /// l2_input_output, l2_whitened, no_whitening, whiten_per_pixel, no_border,
    /// no_local_constraint. Default: all.
    #[arg(long, value_delimiter = ',')]
    pub variants: Option<Vec<String>>,
    /// Sign the evaluation with this key (the package's): per category an in-toto test-result
    /// statement, PASSED or FAILED against the stated thresholds, and the figures themselves
    /// (schemas/evaluation.schema.json), both about the package's archive digest, written to
    /// OUT/attestations/<category>/.
    #[arg(long, value_name = "KEY")]
    pub attest: Option<PathBuf>,
    /// A threshold the overall figures must meet, e.g. image_auroc>=0.95 (repeatable;
    /// needed with --attest). Exit code 6 when one is not met.
    #[arg(long, value_name = "METRIC>=X")]
    pub require: Vec<String>,
    #[command(flatten)]
    pub source: SourceFlags,
    #[command(flatten)]
    pub run: RunFlags,
    #[command(flatten)]
    pub decode: DecodeFlags,
}

/// Category folders under `dir`: itself if it has `test/`, else its subfolders that do.
fn categories(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if dir.join("test").is_dir() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("test").is_dir())
        .collect();
    v.sort();
    anyhow::ensure!(!v.is_empty(), "{}: neither a category folder (no test/) nor a folder of categories", dir.display());
    Ok(v)
}

/// The newest `<name>-<semver>.vqad` under `dir` (searched recursively).
fn find_package(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut best: Option<(semver::Version, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(v) = p.file_name().and_then(|f| f.to_str()).and_then(|f| f.strip_prefix(&format!("{name}-"))).and_then(|f| f.strip_suffix(".vqad")).and_then(|v| semver::Version::parse(v).ok()) {
                if best.as_ref().is_none_or(|(b, _)| v > *b) {
                    best = Some((v, p));
                }
            }
        }
    }
    best.map(|(_, p)| p)
}

pub fn eval(a: EvalArgs) -> anyhow::Result<i32> {
    for v in a.variants.iter().flatten() {
        anyhow::ensure!(vqad::eval::report::VARIANTS.contains(&v.as_str()), "--variants: unknown variant '{v}' (known: {})", vqad::eval::report::VARIANTS.join(", "));
    }
    let requirements = a.require.iter().map(|r| vqad::provenance::Requirement::parse(r)).collect::<Result<Vec<_>, _>>()?;
    let attest_key = a.attest.as_deref().map(vqad::package::SigningKey::load).transpose()?;
    anyhow::ensure!(attest_key.is_none() || !requirements.is_empty(), "--attest needs at least one --require (e.g. --require image_auroc>=0.95): a test result passes or fails against stated thresholds");
    let decode = a.decode.limits()?;
    let cats = categories(&a.category_dir)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut reports = vec![];
    let mut unmet = vec![];
    for cat_dir in &cats {
        let cat = Category::open(cat_dir)?;
        let per_category = a.source.registry.is_some() && a.package.to_str().is_some_and(|s| s.starts_with('@'));
        let pkg_path = if per_category {
            PathBuf::from(format!("{}{}", cat.name, a.package.display()))
        } else if a.package.is_dir() && a.source.registry.is_none() {
            find_package(&a.package, &cat.name).with_context(|| format!("no {}-<version>.vqad under {}", cat.name, a.package.display()))?
        } else {
            a.package.clone()
        };
        let (opened, mut det) = open_detector_from(&pkg_path, &a.pubkey, &a.source, a.run.options()?)?;
        let pkg = opened.package;
        let pkg_path = pkg.path.clone();
        if !a.package.is_dir() && !per_category && pkg.manifest.name != cat.name {
            eprintln!("note: package '{}' evaluated on category folder '{}'", pkg.manifest.name, cat.name);
        }
        let val_fraction = pkg.manifest.provenance.config().map(|c| c.train.val_fraction).unwrap_or(0.1);
        eprintln!("evaluating {} with {} {} ({} test images)", cat.name, pkg.manifest.name, pkg.manifest.version, cat.test.len());
        let pb = indicatif::ProgressBar::new(cat.test.len() as u64);
        let progress = |done: usize, _total: usize| pb.set_position(done as u64);
        let r = evaluate_category(&mut det, &cat, &pkg_path.display().to_string(), &pkg.manifest.version, &EvalOptions { out: &a.out, ablation: a.ablation, variants: a.variants.as_deref(), val_fraction, progress: &progress, decode })?;
        pb.finish_and_clear();
        let overall = vqad::provenance::evaluation::figures_of(&r.rows).remove("overall").unwrap_or_default();
        for req in &requirements {
            if !req.met(overall.get(&req.metric).copied()) {
                unmet.push(format!("{}: {req} (got {})", cat.name, overall.get(&req.metric).map(|v| format!("{v:.4}")).unwrap_or_else(|| "no value".into())));
            }
        }
        if let Some(key) = &attest_key {
            let config = vqad::provenance::evaluation::EvalConfig {
                eta: a.run.eta,
                local_constraint: a.run.no_local_constraint.then_some(false),
                resample: a.run.resample.clone(),
                batch: a.run.batch.max(1),
                val_fraction,
            };
            let providers = det.providers().into_iter().map(|(g, p)| (g, p.to_string())).collect();
            let dir = a.out.join("attestations").join(&cat.name);
            let done = vqad::provenance::evaluation::attest(&pkg, &cat, &r, &config, &requirements, providers, key, &dir)?;
            eprintln!(
                "{}: {} — signed {} and {}",
                cat.name,
                if done.passed { "PASSED" } else { "FAILED" },
                done.test_result.display(),
                done.evaluation.display()
            );
        }
        reports.push(r);
    }
    let failed: usize = reports.iter().map(|r| r.failed.len()).sum();
    let report = combine(reports);
    let (j, m) = write_report(&report, &a.out)?;
    print!("{}", vqad::eval::report::markdown(&report));
    println!("\nwrote {} and {}", j.display(), m.display());
    // Exit 4: the report covers the rest, the skipped files are listed in it.
    for f in report.categories.iter().flat_map(|c| c.failed.iter()) {
        eprintln!("skipped: {f}");
    }
    if !unmet.is_empty() {
        eprintln!("requirement(s) not met: {}", unmet.join("; "));
        return Ok(super::EXIT_CHECK_FAILED);
    }
    Ok(if failed == 0 { 0 } else { 4 })
}

#[derive(Args)]
pub struct TuneArgs {
    /// Training run folder; writes RUN_DIR/tune.json (used by `vqad package`).
    pub run_dir: PathBuf,
    /// Use the paper's §4.3.3 search over these η values (comma separated) on painted
    /// negatives instead of the default rule (η from the normals' firing rate).
    #[arg(long)]
    pub etas: Option<String>,
    /// Share of normal latent positions at which resampling may fire (sets η). Default: the
    /// run's config (1 %, 0.5 % for the small preset).
    #[arg(long)]
    pub fire_fraction: Option<f64>,
    /// Share of validation normals allowed to keep a component of min_area px (sets the pixel
    /// threshold; 0 is Bergmann et al.'s strict rule).
    #[arg(long, default_value_t = vqad::eval::tune::FALSE_ALARM)]
    pub false_alarm: f64,
    /// Anomaly map to package: paper (eq. 6), surprise (eq. 6 + the prior's surprise) or
    /// restored_input (input vs restored image). Default: the run's config.
    #[arg(long)]
    pub score: Option<vqad::config::ScoreKind>,
    /// Code a fired position gets: argmax (the paper) or nearest_likely. Default: the run's config.
    #[arg(long)]
    pub restore: Option<vqad::config::RestoreRule>,
    /// Minimum defect area in pixels at the model's input size (a smaller component is not a
    /// defect). Default: the run's config.
    #[arg(long)]
    pub min_area: Option<usize>,
    /// Measure the map's residual in the metric of the validation normals' residuals (on)
    /// or in plain ℓ2 (off). Default: the run's config (on for the small preset).
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub whiten: Option<bool>,
    /// Side of the residual patch the metric is over (odd, 1–9): 1 whitens each pixel's
    /// colour, 5 also how neighbouring pixels' residuals move together. Default: the run's
    /// config (5 for the small preset).
    #[arg(long, value_name = "K")]
    pub residual_patch: Option<usize>,
    /// Divide the map near the image edge by the validation normals' border excess (on) or
    /// not (off). Default: the run's config (on for the small preset).
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub border: Option<bool>,
    /// Add the texture-statistics map (local mean, contrast and gradient energy against the
    /// normals', in either direction) to the package's map (on), or not (off). Default: the
    /// run's config (on for the small preset).
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub texture: Option<bool>,
    /// Weight of the texture map against the residual map, both in units of their 99th
    /// percentile on the validation normals. Default: the run's config (1).
    #[arg(long, value_name = "W")]
    pub texture_weight: Option<f64>,
    /// The paper's rule exactly: eq. 6 map, argmax restoration, plain ℓ2, no border profile
    /// and no texture map: score paper, restore argmax, whiten off, border off, texture off.
    #[arg(long, conflicts_with_all = ["score", "restore", "whiten", "residual_patch", "border", "texture", "texture_weight"])]
    pub paper_rule: bool,
    /// Path to libonnxruntime.
    #[arg(long, env = "VQAD_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        o => Err(format!("expected on or off, got '{o}'")),
    }
}
