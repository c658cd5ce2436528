//! The `vqad` command line, shared by both executables: `vqad` (src/main.rs) and
//! `vqad-train` (src/bin/vqad-train.rs) parse the same flags; each subcommand parses, then calls
//! the library. Commands that train ([`Training`]) run in `vqad-train`, the only executable
//! that links libtorch; `vqad` hands them over.
//!
//! Exit codes: 0 success; 1 error; 2 bad usage; 3 a package or channel record was refused;
//! 4 some inputs of a batch failed (the rest were processed); 5 `vqad diff`: the packages differ;
//! 6 `vqad audit`: a check failed, `vqad eval --require`: a requirement was not met;
//! 7 `vqad compat --strict-ep`: the required execution provider is unavailable or left nodes to CPU.

pub mod audit;
pub mod data;
pub mod demo;
pub mod detect;
pub mod eval;
pub mod package;
pub mod registry;
pub mod serve;
pub mod train;

use clap::{Parser, Subcommand};

/// Image anomaly detection by latent space resampling: train a VQ-VAE and a PixelSNAIL
/// prior, export them to ONNX, sign them into per-category packages, and run them with
/// ONNX Runtime.
#[derive(Parser)]
#[command(name = "vqad", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Exit codes: 0 success, 1 error, 2 bad usage, 3 package or channel record refused, \
                         4 some inputs of a batch failed, 5 packages differ (diff), 6 an audit check or --require failed, \
                         7 a required execution provider is unavailable (compat --strict-ep).\nStart with `vqad demo`.")]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// End to end on generated data: synth, train (tiny preset, CPU), export, keygen,
    /// package, publish, verify, detect, eval.
    Demo(demo::DemoArgs),
    /// Write a synthetic category in MVTec AD layout.
    Synth(data::SynthArgs),
    /// Inspect category folders.
    Data {
        #[command(subcommand)]
        cmd: data::DataCmd,
    },
    /// Train the VQ-VAE and the PixelSNAIL prior on a category's train/good images.
    Train(train::TrainArgs),
    /// Training throughput (images/s) of both stages for a preset and device.
    BenchTrain(train::BenchTrainArgs),
    /// Write encoder.onnx, decoder.onnx, pixelsnail.onnx and codebook.npy from a run.
    Export(train::ExportArgs),
    /// Choose η, the pixel threshold and the minimum area without test labels.
    Tune(eval::TuneArgs),
    /// Create an ECDSA P-256 signing key pair (PREFIX.key, PREFIX.pub).
    Keygen(package::KeygenArgs),
    /// Export (if needed), tune (if needed) and sign a run into <name>-<version>.vqad.
    Package(package::PackageArgs),
    /// Verify a package's signature and every file in it.
    Verify(package::VerifyArgs),
    /// Show a package's manifest, provenance and digests.
    Inspect(package::InspectArgs),
    /// Verify, then unpack a package into a folder (which `model_signing` can verify too).
    Unpack(package::UnpackArgs),
    /// Verify, then add a package to a registry folder.
    Publish(package::PublishArgs),
    /// List the packages of a registry folder and the channels that run them.
    List(package::ListArgs),
    /// Assign a published version to a channel with a new signed record.
    Promote(registry::PromoteArgs),
    /// Point a channel back at the version it ran before, with a new signed record.
    Rollback(registry::RollbackArgs),
    /// Every record of a category's channels, newest first.
    History(registry::HistoryArgs),
    /// Verify two packages, then show what changed between them (exit 0 identical, 5 differ).
    Diff(audit::DiffArgs),
    /// Verify a package, then write its ML bill of materials (CycloneDX 1.6 JSON).
    Bom(audit::BomArgs),
    /// Check a package's claims against the world: signature, provenance, parameters, data,
    /// source, attested evaluation, rebuild (exit 0 only when every check that ran passed).
    Audit(audit::AuditArgs),
    /// Detect anomalies in images with a verified package.
    Detect(detect::DetectArgs),
    /// Per-stage timings, prior passes and throughput of a package (incremental vs naive;
    /// precisions side by side), with each graph's share of the measured machine peak.
    Bench(detect::BenchArgs),
    /// Where each graph's nodes run on this host (per execution provider, CPU fallbacks).
    Compat(detect::CompatArgs),
    /// Evaluate a package on a category's test split (paper Tables 1–4 and MVTec metrics).
    Eval(eval::EvalArgs),
    /// Serve a registry's packages over the Open Inference Protocol (KServe V2 / Triton):
    /// HTTP/REST, gRPC, Prometheus /metrics.
    Serve(serve::ServeArgs),
}

/// The commands that need the training stack. `vqad` reads none of their flags: it hands the
/// whole command line to `vqad-train`, which parses it again.
#[allow(dead_code)]
pub enum Training {
    Demo(demo::DemoArgs),
    Train(train::TrainArgs),
    BenchTrain(train::BenchTrainArgs),
    Export(train::ExportArgs),
    Tune(eval::TuneArgs),
    Package(package::PackageArgs),
}

/// Exit code of `vqad audit` when a check failed, and of `vqad eval --require` when a
/// requirement was not met.
pub const EXIT_CHECK_FAILED: i32 = 6;

/// The `vqad-train` executable: this one if it is it, else beside this one, else on PATH.
pub fn trainer_exe() -> Option<std::path::PathBuf> {
    let me = std::env::current_exe().ok()?;
    if me.file_name().is_some_and(|n| n == "vqad-train") {
        return Some(me);
    }
    let beside = me.with_file_name("vqad-train");
    if beside.is_file() {
        return Some(beside);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("vqad-train")).find(|p| p.is_file())
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Both executables' `main`: sets up the heap, panic message and logging, parses the command
/// line, runs the command (training commands through `training`) and exits with its code.
pub fn main(training: fn(Training) -> anyhow::Result<i32>) -> ! {
    // Before anything allocates: large training and inference buffers stay mapped (see heap.rs).
    vqad::heap::keep_large_blocks();
    vqad::source::register_build(vqad::build_identity!());
    // Users see a message, never a Rust backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("vqad: internal error: {msg}{at}\nThis is a bug in vqad; please report it with the command you ran.");
    }));
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VQAD_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Demo(a) => training(Training::Demo(a)),
        Cmd::Train(a) => training(Training::Train(a)),
        Cmd::BenchTrain(a) => training(Training::BenchTrain(a)),
        Cmd::Export(a) => training(Training::Export(a)),
        Cmd::Tune(a) => training(Training::Tune(a)),
        Cmd::Package(a) => training(Training::Package(a)),
        Cmd::Synth(a) => data::synth(a),
        Cmd::Data { cmd } => data::run(cmd),
        Cmd::Keygen(a) => package::keygen(a),
        Cmd::Verify(a) => package::verify(a),
        Cmd::Inspect(a) => package::inspect(a),
        Cmd::Unpack(a) => package::unpack(a),
        Cmd::Publish(a) => package::publish(a),
        Cmd::List(a) => package::list(a),
        Cmd::Promote(a) => registry::promote(a),
        Cmd::Rollback(a) => registry::rollback(a),
        Cmd::History(a) => registry::history(a),
        Cmd::Diff(a) => audit::diff(a),
        Cmd::Bom(a) => audit::bom(a),
        Cmd::Audit(a) => audit::audit(a),
        Cmd::Detect(a) => detect::detect(a),
        Cmd::Bench(a) => detect::bench(a),
        Cmd::Compat(a) => detect::compat(a),
        Cmd::Eval(a) => eval::eval(a),
        Cmd::Serve(a) => serve::run(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            let refused = |c: &(dyn std::error::Error + 'static)| {
                c.downcast_ref::<vqad::package::PackageError>().is_some_and(|p| !matches!(p, vqad::package::PackageError::RegistryLocked { .. }))
                    || c.downcast_ref::<vqad::registry::RegistryError>().is_some_and(|r| {
                        use vqad::registry::RegistryError as R;
                        !matches!(r, R::Io { .. } | R::Invalid(_) | R::BadReference { .. } | R::BadChannelName(_))
                    })
            };
            let code = if e.chain().any(refused) { 3 } else { 1 };
            std::process::exit(code);
        }
    }
}

/// The error and its causes on one line, skipping causes a message already quotes (library
/// errors name their file and include the OS reason themselves).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c);
    }
    text
}
