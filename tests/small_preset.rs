//! The `small` preset (128², 32×32 grid) on a real photograph: a short training must already
//! show the learning signals the method stands on — a prior below log K, and a label-free η at
//! which resampling fires on only a small share of normal positions. The full-quality run is
//! `tools/devset-eval.sh` (a benchmark, not a test).
#![cfg(feature = "train")]

use std::path::{Path, PathBuf};
use std::process::Command;

fn vqad() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vqad"))
}

/// The dev-set generator's Python (scikit-image, PyWavelets), installed by the set-up.
fn devset_python() -> PathBuf {
    let o = Command::new("bash").arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/setup-devset.sh")).output().unwrap();
    assert!(o.status.success(), "setup-devset failed: {}", String::from_utf8_lossy(&o.stderr));
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{:?} failed:\n{}", c, String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn small_preset_learns_a_real_texture_briefly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/make-devset.py");
    run_ok(Command::new(devset_python()).arg(&script).arg(&data).args(["--categories", "ihc", "--train", "60", "--test-good", "2", "--test-bad", "4"]));
    let cfg = tmp.path().join("brief.toml");
    std::fs::write(&cfg, "[train]\nvqvae_epochs = 8\nprior_epochs = 12\nprior_augment_copies = 0\n").unwrap();
    let run = tmp.path().join("run");
    run_ok(vqad().arg("train").arg(data.join("ihc")).arg("--out").arg(&run).args(["--preset", "small", "--kind", "texture", "--device", "cpu", "--config"]).arg(&cfg));
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["preset"], "small");
    assert_eq!(config["kind"], "texture", "--kind must reach the run's config");
    let prior: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("prior.json")).unwrap()).unwrap();
    let (nll, log_k) = (prior["metrics"]["val_nll"].as_f64().unwrap(), prior["metrics"]["log_k"].as_f64().unwrap());
    eprintln!("prior validation NLL {nll:.3} nats, log K {log_k:.3}");
    assert!(nll < log_k - 0.2, "the prior learned nothing: validation NLL {nll:.3} vs log K {log_k:.3}");

    // The preset's own fire fraction (no flag): η is set from it.
    let fire = config["detect"]["fire_fraction"].as_f64().unwrap();
    assert_eq!(fire, 0.005);
    run_ok(vqad().arg("tune").arg(&run));
    let tuned: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("tune.json")).unwrap()).unwrap();
    let fired = tuned["fired_fraction_normal"].as_f64().unwrap();
    let eta = tuned["detect"]["eta"].as_f64().unwrap();
    eprintln!("η {eta:.3e}: resampling fires on {:.2}% of normal validation positions", fired * 100.0);
    assert!(tuned["eta_search"].as_array().unwrap().is_empty(), "the default rule needs no synthetic search");
    assert!(eta > 0.0 && eta < 0.5);
    // The rule bounds first-visit firings by `fire`; a change can make later positions fire
    // too, so the sequential total may exceed it a little, never by much.
    assert!(fired <= 2.0 * fire, "resampling fires on {:.2}% of normal positions (bound {:.2}%)", fired * 100.0, 2.0 * fire * 100.0);
    assert!(tuned["prior_nll_normal"].as_f64().unwrap() < log_k);
    // The small preset's default map and rule won on the development set; the paper's rule is
    // one flag away and is what then gets tuned.
    assert_eq!((tuned["detect"]["score"].as_str(), tuned["detect"]["restore"].as_str()), (Some("restored_input"), Some("nearest_likely")));
    run_ok(vqad().arg("tune").arg(&run).arg("--paper-rule"));
    let paper: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("tune.json")).unwrap()).unwrap();
    assert_eq!((paper["detect"]["score"].as_str(), paper["detect"]["restore"].as_str()), (Some("paper"), Some("argmax")));
    // The preset measures the residual in the normals' own metric and corrects the border;
    // the paper's rule does neither.
    let metric = tuned["detect"]["residual_metric"].as_array().expect("small preset estimates a residual metric");
    // Over 5×5×3 residual patches.
    assert_eq!((tuned["detect"]["residual_patch"].as_u64(), metric.len()), (Some(5), 75));
    let profile: Vec<f64> = tuned["detect"]["border_profile"].as_array().expect("small preset estimates a border profile").iter().map(|v| v.as_f64().unwrap()).collect();
    eprintln!("border profile {profile:.3?}");
    assert!(profile.iter().all(|&f| f >= 1.0) && profile[0] > 1.2, "the zero-padded reconstruction is worst on the outermost ring: {profile:?}");
    assert!(paper["detect"].get("residual_metric").is_none() && paper["detect"].get("border_profile").is_none());
    // Issue 21: the texture-statistics half of the map, fitted on training normals, its weight
    // chosen on synthetic blobs over the validation normals; absent under the paper's rule.
    let texture = &tuned["detect"]["texture_map"];
    let search: Vec<f64> = tuned["texture_search"].as_array().expect("tune records the weight search").iter().map(|p| p["weight"].as_f64().unwrap()).collect();
    assert_eq!(search, [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]);
    assert!(search.contains(&texture["weight"].as_f64().unwrap()), "chosen weight {} is not one of the search's", texture["weight"]);
    // The chosen weight has the best mean of pixel AUROC, PRO at the threshold and blobs found
    // (the first, i.e. smallest, on a tie).
    let objective: Vec<f64> = tuned["texture_search"].as_array().unwrap().iter().map(|p| ["pixel_auroc", "pro_at_threshold", "blobs_found"].iter().map(|k| p[*k].as_f64().expect(k)).sum::<f64>() / 3.0).collect();
    let best = objective.iter().enumerate().fold(0, |b, (i, v)| if *v > objective[b] { i } else { b });
    eprintln!("texture weight search objective {objective:.3?}, chosen {}", texture["weight"]);
    assert_eq!(texture["weight"].as_f64(), Some(search[best]), "objective {objective:?}");
    // ihc is in colour: grey mean, log sd, log gradient energy, three channel means and the
    // chroma spread over 9×9 windows at 128², as a mixture (see `runtime::texture::package_model`).
    let comps = texture["components"].as_array().expect("colour normals get a mixture");
    assert_eq!((texture["window"].as_u64(), texture["chroma"].as_bool(), texture.get("mean")), (Some(9), Some(true), None));
    assert!((2..=4).contains(&comps.len()) && comps.iter().all(|c| c["mean"].as_array().map(Vec::len) == Some(7)), "{comps:?}");
    let total: f64 = comps.iter().map(|c| c["weight"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-9, "mixture weights sum to {total}");
    assert!(texture["residual_scale"].as_f64().unwrap() > 0.0 && texture["texture_scale"].as_f64().unwrap() > 0.0);
    assert!(paper["detect"].get("texture_map").is_none(), "--paper-rule must be the paper's map alone");
    run_ok(vqad().arg("tune").arg(&run).args(["--texture-weight", "3"]));
    let fixed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("tune.json")).unwrap()).unwrap();
    assert_eq!(fixed["detect"]["texture_map"]["weight"].as_f64(), Some(3.0));
    assert!(fixed["texture_search"].as_array().is_none_or(|a| a.is_empty()), "a configured weight needs no search");
    run_ok(vqad().arg("tune").arg(&run).args(["--texture", "off"]));
    let off: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("tune.json")).unwrap()).unwrap();
    assert!(off["detect"].get("texture_map").is_none());
    let o = vqad().arg("tune").arg(&run).args(["--texture-weight=-1"]).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("texture weight"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = vqad().arg("tune").arg(&run).args(["--paper-rule", "--score", "surprise"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "--paper-rule with --score is a usage error");
    // The preset's minimum area is two latent cells; --min-area overrides it, and a smaller
    // area can only need an equal or higher threshold (fewer specks may stay above it).
    assert_eq!(tuned["detect"]["min_area"].as_i64(), Some(32));
    let thr = |v: &serde_json::Value| v["detect"]["pixel_threshold"].as_f64().unwrap();
    run_ok(vqad().arg("tune").arg(&run).args(["--min-area", "4"]));
    let speck: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("tune.json")).unwrap()).unwrap();
    assert_eq!(speck["detect"]["min_area"].as_i64(), Some(4));
    assert!(thr(&speck) >= thr(&tuned), "min area 4 gave threshold {} below min area 32's {}", thr(&speck), thr(&tuned));
    let o = vqad().arg("tune").arg(&run).args(["--min-area", "0"]).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("minimum area"), "--min-area 0 must be refused");

    // The patch side: --residual-patch overrides it, an even one is refused by name.
    run_ok(vqad().arg("tune").arg(&run).args(["--residual-patch", "3"]));
    let p3: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("tune.json")).unwrap()).unwrap();
    assert_eq!((p3["detect"]["residual_patch"].as_u64(), p3["detect"]["residual_metric"].as_array().map(Vec::len)), (Some(3), Some(27)));
    let o = vqad().arg("tune").arg(&run).args(["--residual-patch", "4"]).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("residual_patch must be odd"), "{}", String::from_utf8_lossy(&o.stderr));

    // Packaged with the preset's 5×5 metric, `eval --ablation` shows what the patch buys
    // (per-pixel metric re-estimated from the same normals) beside ℓ2 with the same corrections.
    run_ok(vqad().arg("tune").arg(&run));
    let key = tmp.path().join("k");
    run_ok(vqad().arg("keygen").arg("--out").arg(&key));
    let pkgs = tmp.path().join("pkgs");
    run_ok(vqad().arg("package").arg(&run).args(["--name", "ihc", "--version", "1.0.0", "--key"]).arg(key.with_extension("key")).arg("--out").arg(&pkgs));
    let ev = tmp.path().join("eval");
    let o = vqad().arg("inspect").arg(pkgs.join("ihc-1.0.0.vqad")).output().unwrap();
    let inspect = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(inspect.contains("plus texture statistics (7 features (grey, colour, chroma), ") && inspect.contains(" Gaussians, 9×9 windows"), "inspect must show the texture map: {inspect}");
    run_ok(vqad().arg("eval").arg(&pkgs).arg("--pubkey").arg(key.with_extension("pub")).arg(&data).arg("--out").arg(&ev).args(["--ablation", "--ep", "cpu", "--variants", "whiten_per_pixel,l2_whitened,texture_stats,no_texture"]));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ev.join("report.json")).unwrap()).unwrap();
    let rows = report["categories"][0]["ablation"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["variant"].as_str().unwrap()).collect();
    assert_eq!(names, ["full", "no_texture", "texture_stats", "l2_whitened", "whiten_per_pixel"]);
    // The baseline and the map without its texture half are maps of their own.
    let auroc = |i: usize| rows[i]["row"]["pixel_auroc"].as_f64().unwrap();
    assert!(auroc(1) != auroc(0) && auroc(2) != auroc(0), "{rows:?}");
    let recon = report["categories"][0]["diagnostics"]["recon_ratio_good"].as_f64().expect("the report states the reconstruction error");
    assert!(recon > 0.0 && recon < 1.0, "recon mse / variance {recon}");
    let thr_of = |i: usize| rows[i]["pixel_threshold"].as_f64().unwrap();
    assert!(thr_of(2).is_finite() && thr_of(2) > 0.0 && thr_of(2) != thr_of(0), "per-pixel map must be its own map: {} vs {}", thr_of(2), thr_of(0));
}

#[test]
fn the_dev_set_generator_refuses_the_held_out_textures() {
    let tmp = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/make-devset.py");
    for cat in ["brick", "ihc,gravel", "grass"] {
        let o = Command::new(devset_python()).arg(&script).arg(tmp.path()).args(["--categories", cat]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("held out for acceptance"), "{cat}: {err}");
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "a refused run wrote something");
}
