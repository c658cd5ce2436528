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
    #[command(flatten)]
    pub plugins: super::detect::PluginFlags,
    /// Which of each package's precisions runs: auto, fp32, fp16 or int8 (see `vqad detect`).
    #[arg(long, default_value = "auto")]
    pub precision: String,
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
    #[command(flatten)]
    pub decode: super::detect::DecodeFlags,
    /// Memory all requests in flight may hold together, in MiB: bodies, decoding, queue and
    /// compute. A request that would exceed it gets 429 / RESOURCE_EXHAUSTED at once.
    /// Default: a quarter of the container's memory limit (cgroup) when one is visible, else
    /// 1024. Must hold one binary request of --max-body-mb (3 × its size).
    #[arg(long, value_name = "MIB")]
    pub max_inflight_mb: Option<u64>,
    /// Most open connections per port (HTTP, gRPC); further clients wait in the listen
    /// backlog until one closes.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// A connection with no request in progress is closed after this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub idle_timeout_secs: u64,
    /// HTTP: seconds from a request's first byte to the end of its headers.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub header_timeout_secs: u64,
    /// Seconds a request body (HTTP) or message (gRPC) may take to arrive in full after its
    /// headers; a slower one gets 408 / DEADLINE_EXCEEDED and its connection is closed.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub body_timeout_secs: u64,
    /// A response write that makes no progress for this many seconds (a client that does
    /// not read) closes the connection.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub write_timeout_secs: u64,
    /// gRPC: seconds between HTTP/2 keepalive PINGs to each client.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub grpc_keepalive_secs: u64,
    /// gRPC: seconds a PING may go unanswered before the connection is dropped.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub grpc_keepalive_timeout_secs: u64,
}

pub fn run(a: ServeArgs) -> anyhow::Result<i32> {
    // Request-sized buffers back to the kernel when freed (see the function).
    vqad::heap::for_serving();
    let providers = parse_providers(&a.providers)?;
    anyhow::ensure!(!providers.is_empty(), "--providers names no provider");
    anyhow::ensure!(a.max_batch >= 1, "--max-batch must be at least 1");
    anyhow::ensure!(a.max_body_mb >= 1, "--max-body-mb must be at least 1");
    anyhow::ensure!(a.poll_secs >= 1, "--poll-secs must be at least 1");
    anyhow::ensure!(a.versions >= 1, "--versions must be at least 1");
    for (flag, v) in [
        ("--idle-timeout-secs", a.idle_timeout_secs),
        ("--header-timeout-secs", a.header_timeout_secs),
        ("--body-timeout-secs", a.body_timeout_secs),
        ("--write-timeout-secs", a.write_timeout_secs),
        ("--grpc-keepalive-secs", a.grpc_keepalive_secs),
        ("--grpc-keepalive-timeout-secs", a.grpc_keepalive_timeout_secs),
    ] {
        anyhow::ensure!(v >= 1, "{flag} must be at least 1");
    }
    anyhow::ensure!(a.max_connections >= 1, "--max-connections must be at least 1");
    let decode = a.decode.limits()?;
    let (budget, budget_from) = match a.max_inflight_mb {
        Some(mb) => (mb << 20, "--max-inflight-mb".to_string()),
        None => vqad::serve::budget::default_budget(),
    };
    let body_bytes = (a.max_body_mb as u64) << 20;
    let need = vqad::serve::infer::body_charge(body_bytes, Some(0)) + vqad::serve::infer::REQUEST_BASE_BYTES;
    anyhow::ensure!(
        budget >= need,
        "the in-flight memory budget ({} MiB, from {budget_from}) must hold one request of --max-body-mb {} (it is charged {} MiB); raise --max-inflight-mb or lower --max-body-mb",
        budget >> 20,
        a.max_body_mb,
        need >> 20
    );
    // Two ports of connections, plus the registry's files and the runtime's own.
    let mut max_connections = a.max_connections;
    if let Some(files) = vqad::serve::conn::raise_open_files_limit() {
        let room = (files.saturating_sub(256) / 2) as usize;
        if room < max_connections {
            eprintln!("vqad serve: the open-files limit is {files}: --max-connections lowered from {max_connections} to {room} per port");
            max_connections = room.max(1);
        }
    }
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
            session: SessionOptions {
                providers,
                strict: false,
                trt_cache: a.trt_cache,
                threads: a.threads,
                ort_lib: a.ort_lib,
                ep_libraries: a.plugins.libraries()?,
                ep_options: a.plugins.options()?,
                profile: None,
            },
            eta: None,
            local_constraint: None,
            mode: ResampleMode::Incremental,
            batch: a.max_batch,
            precision: a.precision.parse()?,
        },
        max_batch: a.max_batch,
        max_queue_delay: Duration::from_micros(a.max_queue_delay_us),
        instances: a.instances,
        max_body_bytes: a.max_body_mb << 20,
        poll: Duration::from_secs(a.poll_secs),
        channel: a.channel,
        model_providers,
        versions: a.versions,
        decode,
        max_inflight_bytes: budget,
        conn: vqad::serve::conn::ConnLimits {
            max_connections,
            idle: Duration::from_secs(a.idle_timeout_secs),
            header: Duration::from_secs(a.header_timeout_secs),
            write: Duration::from_secs(a.write_timeout_secs),
        },
        body_timeout: Duration::from_secs(a.body_timeout_secs),
        grpc_keepalive: Duration::from_secs(a.grpc_keepalive_secs),
        grpc_keepalive_timeout: Duration::from_secs(a.grpc_keepalive_timeout_secs),
    };
    eprintln!(
        "vqad serve: limits: images up to {} pixels, in-flight budget {} MiB ({budget_from}), {max_connections} connections per port, timeouts idle {} s, header {} s, body {} s, write {} s",
        decode.max_pixels,
        budget >> 20,
        a.idle_timeout_secs,
        a.header_timeout_secs,
        a.body_timeout_secs,
        a.write_timeout_secs
    );
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
