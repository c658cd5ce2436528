//! The command line explains itself and fails politely.

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
    let mut subs = vec!["demo", "synth", "data", "keygen", "verify", "inspect", "unpack", "publish", "list", "promote", "rollback", "history", "diff", "bom", "detect", "bench", "eval", "serve"];
    if cfg!(feature = "train") {
        subs.extend(["train", "bench-train", "export", "tune", "package"]);
    }
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
