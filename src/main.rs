//! The `vqad` command line: each subcommand parses its flags, then calls the library.
//!
//! Exit codes: 0 success; 1 error; 2 bad usage; 3 a package or channel record was refused;
//! 4 some inputs of a batch failed (the rest were processed); 5 `vqad diff`: the packages differ.

mod cli;

use clap::{Parser, Subcommand};

/// Image anomaly detection by latent space resampling: train a VQ-VAE and a PixelSNAIL
/// prior, export them to ONNX, sign them into per-category packages, and run them with
/// ONNX Runtime.
#[derive(Parser)]
#[command(name = "vqad", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Exit codes: 0 success, 1 error, 2 bad usage, 3 package or channel record refused, \
                         4 some inputs of a batch failed, 5 packages differ (diff).\nStart with `vqad demo`.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// End to end on generated data: synth, train (tiny preset, CPU), export, keygen,
    /// package, publish, verify, detect, eval.
    Demo(cli::demo::DemoArgs),
    /// Write a synthetic category in MVTec AD layout.
    Synth(cli::data::SynthArgs),
    /// Inspect category folders.
    Data {
        #[command(subcommand)]
        cmd: cli::data::DataCmd,
    },
    /// Train the VQ-VAE and the PixelSNAIL prior on a category's train/good images.
    #[cfg(feature = "train")]
    Train(cli::train::TrainArgs),
    /// Training throughput (images/s) of both stages for a preset and device.
    #[cfg(feature = "train")]
    BenchTrain(cli::train::BenchTrainArgs),
    /// Write encoder.onnx, decoder.onnx, pixelsnail.onnx and codebook.npy from a run.
    #[cfg(feature = "train")]
    Export(cli::train::ExportArgs),
    /// Choose η, the pixel threshold and the minimum area without test labels.
    #[cfg(feature = "train")]
    Tune(cli::eval::TuneArgs),
    /// Create an ECDSA P-256 signing key pair (PREFIX.key, PREFIX.pub).
    Keygen(cli::package::KeygenArgs),
    /// Export (if needed), tune (if needed) and sign a run into <name>-<version>.vqad.
    #[cfg(feature = "train")]
    Package(cli::package::PackageArgs),
    /// Verify a package's signature and every file in it.
    Verify(cli::package::VerifyArgs),
    /// Show a package's manifest, provenance and digests.
    Inspect(cli::package::InspectArgs),
    /// Verify, then unpack a package into a folder (which `model_signing` can verify too).
    Unpack(cli::package::UnpackArgs),
    /// Verify, then add a package to a registry folder.
    Publish(cli::package::PublishArgs),
    /// List the packages of a registry folder and the channels that run them.
    List(cli::package::ListArgs),
    /// Assign a published version to a channel with a new signed record.
    Promote(cli::registry::PromoteArgs),
    /// Point a channel back at the version it ran before, with a new signed record.
    Rollback(cli::registry::RollbackArgs),
    /// Every record of a category's channels, newest first.
    History(cli::registry::HistoryArgs),
    /// Verify two packages, then show what changed between them (exit 0 identical, 5 differ).
    Diff(cli::audit::DiffArgs),
    /// Verify a package, then write its ML bill of materials (CycloneDX 1.6 JSON).
    Bom(cli::audit::BomArgs),
    /// Detect anomalies in images with a verified package.
    Detect(cli::detect::DetectArgs),
    /// Per-stage timings, prior passes and throughput of a package (incremental vs naive).
    Bench(cli::detect::BenchArgs),
    /// Evaluate a package on a category's test split (paper Tables 1–4 and MVTec metrics).
    Eval(cli::eval::EvalArgs),
    /// Serve a registry's packages over the Open Inference Protocol (KServe V2 / Triton):
    /// HTTP/REST, gRPC, Prometheus /metrics.
    Serve(cli::serve::ServeArgs),
}

fn main() {
    // Before anything allocates: large training and inference buffers stay mapped (see heap.rs).
    vqad::heap::keep_large_blocks();
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
        Cmd::Demo(a) => cli::demo::run(a),
        Cmd::Synth(a) => cli::data::synth(a),
        Cmd::Data { cmd } => cli::data::run(cmd),
        #[cfg(feature = "train")]
        Cmd::Train(a) => cli::train::train(a),
        #[cfg(feature = "train")]
        Cmd::BenchTrain(a) => cli::train::bench_train(a),
        #[cfg(feature = "train")]
        Cmd::Export(a) => cli::train::export(a),
        #[cfg(feature = "train")]
        Cmd::Tune(a) => cli::eval::tune(a),
        Cmd::Keygen(a) => cli::package::keygen(a),
        #[cfg(feature = "train")]
        Cmd::Package(a) => cli::package::package(a),
        Cmd::Verify(a) => cli::package::verify(a),
        Cmd::Inspect(a) => cli::package::inspect(a),
        Cmd::Unpack(a) => cli::package::unpack(a),
        Cmd::Publish(a) => cli::package::publish(a),
        Cmd::List(a) => cli::package::list(a),
        Cmd::Promote(a) => cli::registry::promote(a),
        Cmd::Rollback(a) => cli::registry::rollback(a),
        Cmd::History(a) => cli::registry::history(a),
        Cmd::Diff(a) => cli::audit::diff(a),
        Cmd::Bom(a) => cli::audit::bom(a),
        Cmd::Detect(a) => cli::detect::detect(a),
        Cmd::Bench(a) => cli::detect::bench(a),
        Cmd::Eval(a) => cli::eval::eval(a),
        Cmd::Serve(a) => cli::serve::run(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            let refused = |c: &(dyn std::error::Error + 'static)| {
                c.downcast_ref::<vqad::package::PackageError>().is_some()
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
