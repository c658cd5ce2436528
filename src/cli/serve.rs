//! `vqad serve`: flags only; the server is `vqad::serve`.

use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use vqad::package::TrustedKey;
use vqad::runtime::session::{parse_providers, SessionOptions};
use vqad::runtime::{DetectorOptions, ResampleMode};
use vqad::serve::{serve, ServeConfig};

#[derive(Args)]
pub struct ServeArgs {
    /// Registry folder (`vqad publish` layout); every package version in its index is a model.
    #[arg(long)]
    pub registry: PathBuf,
    /// Trusted public key; a package that does not verify with it is never served.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// HTTP/REST address (also /metrics).
    #[arg(long, default_value = "0.0.0.0:8000")]
    pub http: SocketAddr,
    /// gRPC address.
    #[arg(long, default_value = "0.0.0.0:8001")]
    pub grpc: SocketAddr,
    /// Execution providers in order of preference: tensorrt, cuda, cpu.
    #[arg(long, default_value = "tensorrt,cuda,cpu")]
    pub providers: String,
    /// Execution providers for one model, NAME=LIST (e.g. `bottle=tensorrt,cuda,cpu`);
    /// repeat per model. Models not named use --providers.
    #[arg(long = "model-providers", value_name = "NAME=LIST")]
    pub model_providers: Vec<String>,
    /// How many of each model's newest versions serve side by side; a request may name any
    /// of them, one without a version gets the newest (Triton's "latest N" version policy).
    /// Ignored with --channel (the channel's head alone serves).
    #[arg(long, default_value_t = 1)]
    pub versions: usize,
    /// Most images per dynamic batch.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Longest a request waits for others to join its batch, in microseconds.
    #[arg(long, default_value_t = 2000)]
    pub max_queue_delay_us: u64,
    /// Largest request body (HTTP) or message (gRPC), in MiB.
    #[arg(long, default_value_t = 64)]
    pub max_body_mb: usize,
    /// Seconds between registry polls for new versions.
    #[arg(long, default_value_t = 10)]
    pub poll_secs: u64,
    /// TensorRT engine cache folder (keyed by package digest inside).
    #[arg(long)]
    pub trt_cache: Option<PathBuf>,
    /// Path to libonnxruntime (default: $VQAD_ORT_LIB, beside the executable, the set-up cache).
    #[arg(long, env = "VQAD_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
    /// Intra-op threads per ONNX Runtime session (0 = automatic: 1 with automatic
    /// instances, else the cores shared out among the instances).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Worker instances per model version, each with its own sessions, sharing one batching
    /// queue (Triton's instance group). 0 = automatic: one single-threaded instance per core
    /// for a model whose graphs all run on the CPU provider (the most images/s under load),
    /// one instance where a GPU provider runs them. 1 keeps memory lowest.
    #[arg(long, default_value_t = 0)]
    pub instances: usize,
    /// Serve the version each model's CHANNEL names (signed channel records, see `vqad
    /// promote`) instead of the newest published version; follows promotions and rollbacks.
    #[arg(long)]
    pub channel: Option<String>,
}

pub fn run(a: ServeArgs) -> anyhow::Result<i32> {
    let providers = parse_providers(&a.providers)?;
    anyhow::ensure!(!providers.is_empty(), "--providers names no provider");
    anyhow::ensure!(a.max_batch >= 1, "--max-batch must be at least 1");
    anyhow::ensure!(a.max_body_mb >= 1, "--max-body-mb must be at least 1");
    anyhow::ensure!(a.poll_secs >= 1, "--poll-secs must be at least 1");
    anyhow::ensure!(a.versions >= 1, "--versions must be at least 1");
    let mut model_providers = std::collections::BTreeMap::new();
    for spec in &a.model_providers {
        let (name, list) = spec
            .split_once('=')
            .filter(|(n, _)| !n.trim().is_empty())
            .with_context(|| format!("--model-providers {spec:?}: expected NAME=LIST, e.g. bottle=cuda,cpu"))?;
        let list = parse_providers(list).with_context(|| format!("--model-providers {spec:?}"))?;
        anyhow::ensure!(!list.is_empty(), "--model-providers {spec:?} names no provider");
        anyhow::ensure!(
            model_providers.insert(name.trim().to_string(), list).is_none(),
            "--model-providers names model '{}' twice",
            name.trim()
        );
    }
    let key = TrustedKey::load(&a.pubkey)?;
    // Load ONNX Runtime now, so a missing library is reported before the ports open.
    vqad::runtime::session::environment(a.ort_lib.as_deref())?;
    let cfg = ServeConfig {
        registry: a.registry.clone(),
        key,
        http: a.http,
        grpc: a.grpc,
        detector: DetectorOptions {
            session: SessionOptions { providers, strict: false, trt_cache: a.trt_cache, threads: a.threads, ort_lib: a.ort_lib },
            eta: None,
            local_constraint: None,
            mode: ResampleMode::Incremental,
            batch: a.max_batch,
        },
        max_batch: a.max_batch,
        max_queue_delay: Duration::from_micros(a.max_queue_delay_us),
        instances: a.instances,
        max_body_bytes: a.max_body_mb << 20,
        poll: Duration::from_secs(a.poll_secs),
        channel: a.channel,
        model_providers,
        versions: a.versions,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = |t: usize| if t == 0 { "automatic".to_string() } else { t.to_string() };
    eprintln!(
        "vqad serve: {}",
        match a.instances {
            0 => format!(
                "instances automatic: {cores} per model whose graphs run on the CPU provider ({cores} cores, {} thread(s) each), 1 where a GPU provider runs them (--instances N to choose)",
                if a.threads == 0 { "1".to_string() } else { a.threads.to_string() }
            ),
            n => format!("{n} instance(s) per model, threads per session {}", threads(a.threads)),
        }
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(serve(cfg, |b| {
        // One JSON line on stdout with the real ports (tests and scripts pass port 0).
        println!("{}", serde_json::json!({"http": b.http.to_string(), "grpc": b.grpc.to_string()}));
    }))?;
    Ok(0)
}
