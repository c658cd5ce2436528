//! Training through the `vqad` binary: the tiny preset learns a synthetic texture, and a
//! killed run resumes to completion.
#![cfg(feature = "train")]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Trainings in one process share 2 cores badly (each libtorch pool wants them all): run the
/// tests of this file one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn vqad() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vqad"))
}

fn synth(dir: &Path, train: usize) -> std::path::PathBuf {
    let o = vqad()
        .args(["synth", "--category", "synth_texture", "--kind", "texture", "--size", "64", "--seed", "3", "--test-good", "1", "--test-bad", "1", "--train"])
        .arg(train.to_string())
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir.join("synth_texture")
}

fn state(run: &Path, stage: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(run.join(format!("{stage}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

/// The acceptance of the trainer issue, with the real tiny preset on the CPU.
#[test]
fn tiny_preset_learns_a_synthetic_texture() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let cat = synth(tmp.path(), 64);
    let run = tmp.path().join("run");
    let o = vqad().arg("train").arg(&cat).arg("--out").arg(&run).args(["--device", "cpu"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let vq = state(&run, "vqvae").unwrap();
    let pr = state(&run, "prior").unwrap();
    let (before, after) = (vq["initial"]["val_recon_mse"].as_f64().unwrap(), vq["metrics"]["val_recon_mse"].as_f64().unwrap());
    eprintln!("validation reconstruction MSE: untrained {before:.5}, trained {after:.5}");
    assert!(after < before / 5.0, "MSE {after} is not well below the untrained {before}");
    let usage = vq["metrics"]["codebook_usage"].as_f64().unwrap();
    eprintln!("codebook usage {usage:.3}, perplexity {}", vq["metrics"]["perplexity"]);
    assert!(usage >= 0.25, "codebook collapsed: usage {usage}");
    let (nll, log_k) = (pr["metrics"]["val_nll"].as_f64().unwrap(), pr["metrics"]["log_k"].as_f64().unwrap());
    eprintln!("PixelSNAIL validation NLL {nll:.3} (log K = {log_k:.3}, untrained {})", pr["initial"]["val_nll"]);
    assert!(nll < log_k, "prior NLL {nll} not below log K {log_k}");
    // Every epoch is logged with the figures the issue lists.
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    for k in ["epoch", "train_loss", "val_recon_mse", "codebook_usage", "perplexity", "seconds", "reseeded_codes"] {
        assert!(first.get(k).is_some(), "log line lacks {k}: {first}");
    }
    assert!(log.lines().any(|l| l.contains("\"val_nll\"")));
    // Provenance the packager needs.
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["dataset_digest"].as_str().unwrap().len(), 64);
    assert!(info["libtorch_version"].as_str().unwrap().starts_with("2.13"));
}

#[test]
fn a_killed_run_resumes_to_the_same_epoch_count() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let cat = synth(tmp.path(), 24);
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "[train]\nvqvae_epochs = 40\nprior_epochs = 6\n").unwrap();
    let run = tmp.path().join("run");
    let mut child = vqad().arg("train").arg(&cat).arg("--out").arg(&run).args(["--device", "cpu", "--config"]).arg(&cfg).spawn().unwrap();
    // Kill it once a checkpoint exists but before the VQ-VAE stage ends.
    let start = Instant::now();
    loop {
        if let Some(s) = state(&run, "vqvae") {
            if s["epochs_done"].as_i64().unwrap() >= 2 {
                break;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint appeared");
        assert!(child.try_wait().unwrap().is_none(), "training ended before it could be interrupted");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let interrupted = state(&run, "vqvae").unwrap()["epochs_done"].as_i64().unwrap();
    assert!(interrupted < 40, "the run finished before the kill");
    // Without --resume the folder is protected.
    let o = vqad().arg("train").arg(&cat).arg("--out").arg(&run).args(["--device", "cpu", "--config"]).arg(&cfg).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    let o = vqad().arg("train").arg(&cat).arg("--out").arg(&run).args(["--device", "cpu", "--resume", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming after epoch"), "{err}");
    assert_eq!(state(&run, "vqvae").unwrap()["epochs_done"], 40);
    assert_eq!(state(&run, "prior").unwrap()["epochs_done"], 6);
    // The result is a valid model: it exports and its graphs load.
    let out = tmp.path().join("export");
    let o = vqad().arg("export").arg(&run).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for g in ["encoder.onnx", "decoder.onnx", "pixelsnail.onnx", "codebook.npy", "shapes.json"] {
        assert!(out.join(g).is_file(), "{g} missing");
    }
    // Epochs are logged once each across the interruption... at least every epoch appears.
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    for e in 1..=40 {
        assert!(log.lines().any(|l| l.contains("\"stage\":\"vqvae\"") && l.contains(&format!("\"epoch\":{e},"))), "epoch {e} missing from the log");
    }
    // Exporting twice gives identical bytes.
    let out2 = tmp.path().join("export2");
    assert!(vqad().arg("export").arg(&run).arg("--out").arg(&out2).status().unwrap().success());
    for g in ["encoder.onnx", "decoder.onnx", "pixelsnail.onnx", "codebook.npy"] {
        assert_eq!(std::fs::read(out.join(g)).unwrap(), std::fs::read(out2.join(g)).unwrap(), "{g} differs between exports");
    }
}
