//! `vqad demo`: the whole workflow on a generated category, on the CPU, in minutes.

use crate::cli::demo::DemoArgs;
use crate::cli::detect::{DetectArgs, RunFlags};
use anyhow::Context;
use std::path::Path;
use std::time::Instant;

const MARKER: &str = ".vqad-demo";

fn prepare_out(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?.next().is_none();
        if !empty {
            anyhow::ensure!(
                out.join(MARKER).exists(),
                "{} exists and was not made by `vqad demo`; choose another --out (nothing was changed)",
                out.display()
            );
            std::fs::remove_dir_all(out).with_context(|| format!("removing the earlier demo in {}", out.display()))?;
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join(MARKER), b"made by vqad demo; safe to delete\n")?;
    Ok(())
}

pub fn run(a: DemoArgs) -> anyhow::Result<i32> {
    use vqad::config::{CategoryKind, Config};
    use vqad::package::{self, SigningKey, TrustedKey};

    let t0 = Instant::now();
    let steps = 9;
    let step = |i: usize, what: &str| eprintln!("\n[{i}/{steps}] {what}  ({:.0}s elapsed)", t0.elapsed().as_secs_f64());
    prepare_out(&a.out)?;
    let out = a.out.clone();
    let name = match a.kind {
        CategoryKind::Texture => "synth_texture",
        CategoryKind::Object => "synth_object",
    };

    step(1, "generating a synthetic category (MVTec AD layout)");
    let spec = vqad::data::SynthSpec {
        category: name.into(),
        kind: a.kind,
        size: 64,
        seed: a.seed,
        train: a.train,
        test_good: 10,
        test_bad: a.test_bad,
    };
    let cat_dir = vqad::data::synth_category(&spec, &out.join("data"))?;
    let check = vqad::data::check_category(&cat_dir)?;
    anyhow::ensure!(!check.has_problems(), "generated data has problems:\n{check}");
    eprintln!("{}: {} train/good, {} test images", cat_dir.display(), check.train_good, check.test.values().sum::<usize>());

    step(2, "training the VQ-VAE and PixelSNAIL (tiny preset, CPU)");
    let config = Config::load("tiny", a.config.as_deref())?;
    let run_dir = out.join("run");
    let summary = vqad_train::train::train(&vqad_train::train::TrainOptions {
        category_dir: cat_dir.clone(),
        out: run_dir.clone(),
        config,
        stage: vqad_train::train::Stage::All,
        device: "cpu".into(),
        seed: a.seed,
        resume: false,
        progress: true,
    })?;

    step(3, "exporting encoder.onnx, decoder.onnx, pixelsnail.onnx");
    let exported = vqad_train::pipeline::export::export_run(&run_dir)?;
    vqad_train::pipeline::export::write_export(&exported, &out.join("export"))?;

    step(4, "choosing η and the pixel threshold on validation normals (no labels)");
    let tuned = vqad_train::pipeline::tune_exported(&run_dir, &exported.files, None, &Default::default(), &|s| eprintln!("  {s}"))?;

    step(5, "creating a signing key and a signed package");
    let (key_path, pub_path) = package::keygen(&out.join("keys").join("demo"))?;
    let key = SigningKey::load(&key_path)?;
    let info = vqad_train::pipeline::package_run(
        &vqad_train::pipeline::PackageRequest {
            run_dir: run_dir.clone(),
            name: name.into(),
            version: "1.0.0".into(),
            out: out.join("packages"),
            overwrite: false,
            ort_lib: None,
            progress: true,
            precisions: vec![vqad::onnx::Precision::Fp32],
            parity_override: None,
            parity_bound: Default::default(),
        },
        &key,
    )?;
    eprintln!("{} ({} bytes)", info.path.display(), info.size);

    step(6, "publishing into a registry and verifying it there");
    let trust = TrustedKey::load(&pub_path)?;
    let registry = out.join("registry");
    let published = vqad::registry::publish(&info.path, &registry, &trust)?;
    let verified = vqad::registry::verify_in_registry(&published, &registry, &trust)?;
    eprintln!("{}", verified.summary());

    step(7, "detecting anomalies on the test split");
    let detect_dir = out.join("detect");
    let (line, detect_failed) = crate::cli::detect::run_detect(&DetectArgs {
        package: published.clone(),
        pubkey: pub_path.clone(),
        inputs: vec![cat_dir.join("test")],
        out: detect_dir.clone(),
        save_maps: false,
        source: Default::default(),
        run: RunFlags {
            ep: "cpu".into(),
            strict_ep: false,
            trt_cache: None,
            ort_lib: None,
            eta: None,
            no_local_constraint: false,
            resample: "incremental".into(),
            batch: 8,
            threads: 0,
            precision: "auto".into(),
            plugins: Default::default(),
        },
        decode: Default::default(),
    })?;
    eprintln!("{line}");
    anyhow::ensure!(detect_failed == 0, "detection reported {detect_failed} failed images");

    step(8, "evaluating (paper Tables 1–4, image AUROC, AUPRO, ablations)");
    let eval_dir = out.join("eval");
    let (_, mut det) = crate::cli::detect::open_detector(&published, &pub_path, vqad::runtime::DetectorOptions {
        session: vqad::runtime::session::SessionOptions { providers: vec![vqad::runtime::session::Provider::Cpu], ..Default::default() },
        ..Default::default()
    })?;
    let cat = vqad::data::Category::open(&cat_dir)?;
    let report = vqad::eval::report::evaluate_category(
        &mut det,
        &cat,
        &published.display().to_string(),
        "1.0.0",
        &vqad::eval::report::EvalOptions { out: &eval_dir, ablation: true, variants: None, val_fraction: vqad::config::Config::tiny().train.val_fraction, progress: &|_, _| {}, decode: Default::default() },
    )?;
    let report = vqad::eval::report::combine(vec![report]);
    let (report_json, report_md) = vqad::eval::report::write_report(&report, &eval_dir)?;

    step(9, "done");
    let overall = report.categories[0].rows.iter().find(|r| r.subset == "overall").cloned().unwrap_or_default();
    let ablation_row = |name: &str| report.categories[0].ablation.iter().find(|v| v.variant == name).map(|v| v.row.clone());
    let secs = t0.elapsed().as_secs_f64();
    let result = serde_json::json!({
        "seconds": secs,
        "data": cat_dir,
        "run": run_dir,
        "export": out.join("export"),
        "package": info.path,
        "public_key": pub_path,
        "registry": registry,
        "published": published,
        "detections": detect_dir,
        "report_json": report_json,
        "report_md": report_md,
        "panels": eval_dir.join("panels"),
        "training": {
            "vqvae_val_recon_mse": summary.vqvae.metric("val_recon_mse"),
            "vqvae_val_recon_mse_untrained": summary.vqvae.initial.get("val_recon_mse"),
            "codebook_usage": summary.vqvae.metric("codebook_usage"),
            "prior_val_nll": summary.prior.metric("val_nll"),
            "log_k": summary.prior.metric("log_k"),
        },
        "eta": tuned.detect.eta,
        "pixel_threshold": tuned.detect.pixel_threshold,
        "metrics": overall,
        "l2_ablation": ablation_row("l2_input_output"),
        "l2_whitened": ablation_row("l2_whitened"),
    });
    if a.json {
        crate::cli::print_json(&result)?;
    } else {
        let f = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "–".into());
        let e = |v: Option<f64>| v.map(|x| format!("{x:.2e}")).unwrap_or_else(|| "–".into());
        println!("vqad demo finished in {:.0}s. Everything is in {}:", secs, out.display());
        println!("  data          {}", cat_dir.display());
        println!("  training run  {}   (val recon MSE {} → {}, prior val NLL {} vs log K {})",
            run_dir.display(),
            e(summary.vqvae.initial.get("val_recon_mse").and_then(|v| v.as_f64())),
            e(summary.vqvae.metric("val_recon_mse")),
            f(summary.prior.metric("val_nll")),
            f(summary.prior.metric("log_k")));
        println!("  package       {}   (signed; public key {})", info.path.display(), pub_path.display());
        println!("  registry      {}", published.display());
        println!("  detections    {}/summary.json", detect_dir.display());
        println!("  report        {}  (panels in {})", report_md.display(), eval_dir.join("panels").display());
        println!("  η = {}, pixel threshold = {}", tuned.detect.eta, e(tuned.detect.pixel_threshold));
        println!(
            "  image AUROC {}  pixel AUROC {}  PRO {}  AUPRO@0.3 {}  image accuracy {}",
            f(overall.image_auroc), f(overall.pixel_auroc), f(overall.pro), f(overall.aupro_30), f(overall.image_accuracy)
        );
        // Against the paper's ℓ2 ablation, and against ℓ2 with the same whitening and border
        // profile (everything but resampling), so the share of the gain that resampling
        // itself brings is visible.
        let baselines = [("l2_input_output", "the ℓ2 ablation", "ℓ2 input–output ablation"), ("l2_whitened", "ℓ2 with the same corrections", "ℓ2 whitened + border")];
        for (name, what, label) in baselines {
            let Some(b) = report.categories[0].ablation.iter().find(|v| v.variant == name).map(|v| &v.row) else { continue };
            println!(
                "  {label}: pixel AUROC {}  PRO {}  AUPRO@0.3 {}  image accuracy {}",
                f(b.pixel_auroc), f(b.pro), f(b.aupro_30), f(b.image_accuracy)
            );
            // Compared at the three printed decimals: a difference nobody can see is a tie.
            let cmp = |a: Option<f64>, b: Option<f64>| ((a.unwrap_or(0.0) * 1e3).round() as i64).cmp(&((b.unwrap_or(0.0) * 1e3).round() as i64));
            let figures = [
                ("pixel AUROC", cmp(overall.pixel_auroc, b.pixel_auroc)),
                ("AUPRO@0.3", cmp(overall.aupro_30, b.aupro_30)),
                ("PRO at the threshold", cmp(overall.pro, b.pro)),
                ("image accuracy", cmp(overall.image_accuracy, b.image_accuracy)),
            ];
            let with = |o: std::cmp::Ordering| figures.iter().filter(|(_, c)| *c == o).map(|(n, _)| *n).collect::<Vec<&str>>();
            let (behind, level) = (with(std::cmp::Ordering::Less), with(std::cmp::Ordering::Equal));
            if behind.is_empty() && level.is_empty() {
                println!("  verdict: the full method is ahead of {what} on every one of these figures.");
            } else if behind.is_empty() {
                println!("  verdict: the full method is ahead of {what} or level with it (level on {}) on this data.", level.join(", "));
            } else {
                println!("  verdict: the full method is NOT ahead of {what}: behind on {}{} on this data.", behind.join(", "), if level.is_empty() { String::new() } else { format!(", level on {}", level.join(", ")) });
            }
        }
        println!("Next: vqad inspect {} --pubkey {}", info.path.display(), pub_path.display());
    }
    Ok(0)
}
