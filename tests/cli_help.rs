//! The command line explains itself and fails politely.

use std::path::Path;
use std::process::Command;

fn vqad() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vqad"))
}

#[test]
fn every_subcommand_documents_every_flag() {
    let top = vqad().arg("--help").output().unwrap();
    assert!(top.status.success());
    let text = String::from_utf8_lossy(&top.stdout).into_owned();
    assert!(text.contains("Exit codes"), "{text}");
    let subs = [
        "demo", "synth", "data", "keygen", "verify", "inspect", "unpack", "publish", "list", "promote", "rollback", "history", "diff", "bom",
        "detect", "bench", "eval", "serve", "train", "bench-train", "export", "tune", "package", "audit",
    ];
    for sub in subs {
        assert!(text.contains(sub), "top-level help does not list {sub}");
        let o = vqad().args([sub, "--help"]).output().unwrap();
        assert!(o.status.success(), "{sub} --help failed");
        let help = String::from_utf8_lossy(&o.stdout).into_owned();
        let lines: Vec<&str> = help.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            if !(t.starts_with("--") || (t.starts_with('-') && t.len() > 1 && t.as_bytes()[1].is_ascii_alphabetic())) {
                continue;
            }
            // clap puts the description after the flag or on the next, deeper-indented line.
            let described = t.split("  ").filter(|s| !s.trim().is_empty()).count() > 1
                || lines.get(i + 1).is_some_and(|n| n.len() - n.trim_start().len() > l.len() - t.len() && !n.trim().is_empty());
            assert!(described, "`vqad {sub}`: flag without a description: {l}");
        }
    }
}

#[test]
fn bad_usage_exits_2_without_a_panic() {
    let o = vqad().arg("frobnicate").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = vqad().args(["verify", "/nonexistent.vqad", "--pubkey", "/nonexistent.pub"]).output().unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: ") && err.contains("/nonexistent.pub"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"));
}

/// `vqad` hands training commands to `vqad-train`; without it (a runtime-only install) it says
/// what is missing instead of failing obscurely, and everything else still works.
#[test]
fn without_vqad_train_a_training_command_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("vqad");
    std::fs::copy(env!("CARGO_BIN_EXE_vqad"), &lone).unwrap();
    let run = |args: &[&str]| Command::new(&lone).args(args).env("PATH", dir.path()).output().unwrap();
    let o = run(&["train", "/nonexistent", "--out", "/nonexistent/run"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("vqad-train") && err.contains("runtime-only"), "{err}");
    assert!(!Path::new("/nonexistent/run").exists());
    let o = run(&["verify", "--help"]);
    assert!(o.status.success());
}

/// With `vqad-train` beside it, `vqad` runs training commands through it: the same exit codes
/// and messages as the trainer's own.
#[test]
fn a_training_command_runs_in_vqad_train_with_its_exit_code() {
    let o = vqad().args(["export", "/nonexistent-run", "--out", "/nonexistent-out"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: ") && err.contains("/nonexistent-run"), "{err}");
    let direct = Command::new(env!("CARGO_BIN_EXE_vqad-train")).args(["export", "/nonexistent-run", "--out", "/nonexistent-out"]).output().unwrap();
    assert_eq!(direct.stderr, o.stderr);
}
