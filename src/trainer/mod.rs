//! The commands that need the training stack (libtorch), run in the `vqad-train` executable:
//! `vqad` hands them over (src/main.rs), so nothing else ever loads libtorch. Their flags are
//! in [`crate::cli`], shared by both executables.

mod demo;

use crate::cli::eval::TuneArgs;
use crate::cli::package::PackageArgs;
use crate::cli::train::{BenchTrainArgs, ExportArgs, TrainArgs};
use crate::cli::Training;
use anyhow::Context;
use vqad::config::Config;

/// Runs one training command in this process.
pub fn run(t: Training) -> anyhow::Result<i32> {
    match t {
        Training::Demo(a) => demo::run(a),
        Training::Train(a) => train(a),
        Training::BenchTrain(a) => bench_train(a),
        Training::Export(a) => export(a),
        Training::Tune(a) => tune(a),
        Training::Package(a) => package(a),
    }
}

fn train(a: TrainArgs) -> anyhow::Result<i32> {
    let mut config = Config::load(&a.preset, a.config.as_deref())?;
    if a.kind.is_some() {
        config.kind = a.kind;
    }
    let s = vqad_train::train::train(&vqad_train::train::TrainOptions {
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

fn bench_train(a: BenchTrainArgs) -> anyhow::Result<i32> {
    let mut rows = vec![];
    for preset in a.presets.split(',') {
        let cfg = Config::preset(preset.trim())?;
        for dev in a.devices.split(',') {
            let device = match vqad_train::train::device::select_device(dev.trim()) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("skipping {dev}: {e}");
                    continue;
                }
            };
            let r = vqad_train::train::bench::bench_train(&cfg, device, a.steps, a.max_batch)?;
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
        crate::cli::print_json(&rows)?;
    }
    Ok(0)
}

fn export(a: ExportArgs) -> anyhow::Result<i32> {
    let e = vqad_train::pipeline::export::export_run(&a.run_dir).with_context(|| format!("exporting {}", a.run_dir.display()))?;
    vqad_train::pipeline::export::write_export(&e, &a.out)?;
    for (name, bytes) in &e.files {
        println!("{:<16} {:>10} bytes  sha256 {}", name, bytes.len(), vqad::fsutil::sha256_hex(bytes));
    }
    Ok(0)
}

fn tune(a: TuneArgs) -> anyhow::Result<i32> {
    let grid: Vec<f64> = match &a.etas {
        Some(s) => s.split(',').map(|x| x.trim().parse::<f64>().with_context(|| format!("bad η '{x}'"))).collect::<anyhow::Result<_>>()?,
        None => vec![],
    };
    let opts = vqad::eval::tune::TuneOptions { grid, fire_fraction: a.fire_fraction, false_alarm: a.false_alarm, score: if a.paper_rule { Some(vqad::config::ScoreKind::Paper) } else { a.score },
        restore: if a.paper_rule { Some(vqad::config::RestoreRule::Argmax) } else { a.restore },
        min_area: a.min_area,
        whiten: if a.paper_rule { Some(false) } else { a.whiten },
        residual_patch: a.residual_patch,
        border: if a.paper_rule { Some(false) } else { a.border },
        texture: if a.paper_rule { Some(false) } else { a.texture },
        texture_weight: a.texture_weight,
    };
    let r = vqad_train::pipeline::tune_run(&a.run_dir, a.ort_lib.as_deref(), &opts, &|s| eprintln!("{s}"))?;
    println!(
        "η = {:.3e} (fires on {:.2}% of normal positions), pixel threshold = {:.3e}, minimum area = {} px, prior NLL {:.3} vs log K {:.3} ({} validation normals, {} synthetic negatives); wrote {}",
        r.detect.eta,
        r.fired_fraction_normal * 100.0,
        r.detect.pixel_threshold.unwrap_or(f64::NAN),
        r.detect.min_area,
        r.prior_nll_normal,
        r.log_k,
        r.validation_images,
        r.negatives,
        vqad_train::pipeline::tune_path(&a.run_dir).display()
    );
    Ok(0)
}

fn package(a: PackageArgs) -> anyhow::Result<i32> {
    let key = vqad::package::SigningKey::load(&a.key)?;
    let info = vqad_train::pipeline::package_run(&vqad_train::pipeline::PackageRequest {
        run_dir: a.run_dir.clone(),
        name: a.name,
        version: a.version,
        out: a.out,
        overwrite: a.overwrite,
        ort_lib: a.ort_lib,
        progress: true,
        precisions: vqad::onnx::precision::parse_precisions(&a.precisions)?,
        parity_override: a.parity_override,
        parity_bound: a.parity_bound,
    }, &key)?;
    println!("{} ({} bytes, sha256 {})", info.path.display(), info.size, info.sha256);
    Ok(0)
}
