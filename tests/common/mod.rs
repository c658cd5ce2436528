//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The set-up venv's Python (independent references: onnx, OpenCV, model_signing).
/// Fails loudly: CI always runs the set-up, so a missing venv is a broken environment.
pub fn python() -> PathBuf {
    vqad::native::setup_python()
        .filter(|p| p.exists())
        .expect("the set-up venv's python is missing: run `bash tools/setup-native.sh` (or use `make test`)")
}

/// Runs a Python snippet with the set-up venv; panics with its output on failure.
pub fn run_python(code: &str, args: &[&str]) -> String {
    let out = Command::new(python()).arg("-c").arg(code).args(args).output().expect("python runs");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// ONNX Runtime session options for tests: CPU only, strict.
pub fn cpu_sessions() -> vqad::runtime::session::SessionOptions {
    vqad::runtime::session::SessionOptions {
        providers: vec![vqad::runtime::session::Provider::Cpu],
        strict: true,
        ..Default::default()
    }
}
