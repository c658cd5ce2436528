//! `vqad serve`: an Open Inference Protocol (KServe V2 / NVIDIA Triton) server over the
//! runtime, so inspection lines behind KServe or Triton clients can call vqad unchanged.
//!
//! ```text
//! HTTP/REST (axum) ─┐                                   ┌─ worker thread per model version
//!                   ├─▶ infer (parse, check) ─▶ queue ──┤   (owns the Detector, dynamic batching)
//! gRPC (tonic)     ─┘                                   └─ models: registry poll, verify, hot swap
//! ```
//!
//! Both front ends share [`App`]: the [`models::ModelStore`], the batching policy, the
//! [`metrics::Metrics`] and the in-flight memory [`budget::Budget`]. Nothing here
//! reimplements detection: workers call [`crate::runtime::Detector`].
//!
//! What a client controls is bounded before it costs memory: connections and their timeouts
//! ([`conn`]), body size and time, the structure of a request ([`rest_json`], [`wire`]),
//! image headers ([`crate::data::DecodeLimits`]), and every request's bytes in memory
//! ([`budget`]). `tests/serve_fuzz.rs` fuzzes that path.

pub mod budget;
pub mod conn;
pub mod grpc;
pub mod http;
pub mod infer;
pub mod metrics;
pub mod models;
pub mod proto;
pub mod rest_json;
pub mod wire;
pub mod worker;

use crate::data::DecodeLimits;
use crate::package::TrustedKey;
use crate::runtime::session::Provider;
use crate::runtime::DetectorOptions;
use budget::{Budget, Reservation};
use conn::ConnLimits;
use infer::{InputSpec, InputTensor, OutputTensor};
use metrics::Metrics;
use models::ModelStore;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
use worker::{BatchPolicy, Job, ModelInfo};

/// Protocol extensions the server implements (names as Triton reports them).
pub const EXTENSIONS: [&str; 3] = ["binary_tensor_data", "model_repository", "statistics_prometheus"];

/// The kinds of request failure and their status in each protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    NotFound,
    TooLarge,
    /// Over the in-flight memory budget now; the same request may succeed later.
    Busy,
    /// The request's body did not arrive in time.
    Timeout,
    Unavailable,
    Internal,
}

/// A failed request: the protocol's error response carries `message`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn bad(m: impl Into<String>) -> Self {
        ApiError { kind: ErrorKind::BadRequest, message: m.into() }
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        ApiError { kind: ErrorKind::NotFound, message: m.into() }
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        ApiError { kind: ErrorKind::TooLarge, message: m.into() }
    }
    pub fn busy(m: impl Into<String>) -> Self {
        ApiError { kind: ErrorKind::Busy, message: m.into() }
    }
    pub fn timeout(m: impl Into<String>) -> Self {
        ApiError { kind: ErrorKind::Timeout, message: m.into() }
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        ApiError { kind: ErrorKind::Unavailable, message: m.into() }
    }
    pub fn internal(m: impl Into<String>) -> Self {
        ApiError { kind: ErrorKind::Internal, message: m.into() }
    }
    /// Label for the failures metric.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NotFound => "not_found",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Busy => "over_budget",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("registry {}: {reason}", path.display())]
    Registry { path: PathBuf, reason: String },
    #[error("{0}")]
    Server(String),
}

/// Everything `vqad serve` is configured with.
#[derive(Clone)]
pub struct ServeConfig {
    pub registry: PathBuf,
    pub key: TrustedKey,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub detector: DetectorOptions,
    pub max_batch: usize,
    pub max_queue_delay: Duration,
    /// Worker instances per model version; 0 = automatic (see [`worker::spawn`]).
    pub instances: usize,
    pub max_body_bytes: usize,
    pub poll: Duration,
    /// Serve, per model, the version this channel's signed head names (`NAME@CHANNEL`)
    /// instead of the newest published one.
    pub channel: Option<String>,
    /// Execution providers for particular models (by name), in order of preference; other
    /// models use `detector`'s list.
    pub model_providers: BTreeMap<String, Vec<Provider>>,
    /// How many of each model's newest versions serve side by side (without a channel).
    pub versions: usize,
    /// Limits on each image a request carries (checked from its header).
    pub decode: DecodeLimits,
    /// Bytes all requests in flight may hold together (body, decoding, queue, compute).
    pub max_inflight_bytes: u64,
    /// Connections per port and their idle, header and write timeouts.
    pub conn: ConnLimits,
    /// How long a request's body (HTTP) or message (gRPC) may take to arrive in full.
    pub body_timeout: Duration,
    /// HTTP/2 PING interval on gRPC connections, and how long an answer may take.
    pub grpc_keepalive: Duration,
    pub grpc_keepalive_timeout: Duration,
}

/// A parsed inference request, whichever protocol it came by.
pub struct InferCall {
    pub model: String,
    pub version: String,
    pub id: String,
    pub inputs: Vec<InputTensor>,
    pub outputs: Vec<String>,
}

/// The answer to an [`InferCall`].
pub struct InferAnswer {
    pub info: Arc<ModelInfo>,
    pub id: String,
    pub outputs: Vec<OutputTensor>,
    /// Images in the batch the request ran in.
    pub batch_size: usize,
    pub prior_passes: usize,
    pub resampled_positions: usize,
}

/// Shared state of both front ends.
pub struct App {
    pub models: Arc<ModelStore>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub budget: Arc<Budget>,
    pub decode: DecodeLimits,
    pub body_timeout: Duration,
    /// Set once the first registry pass has finished.
    started: AtomicBool,
    /// Set when shutdown begins: readiness goes false while requests drain.
    draining: AtomicBool,
    next_id: AtomicU64,
}

impl App {
    pub fn live(&self) -> bool {
        true
    }

    /// Ready: the first registry pass is done, some model serves, and no shutdown is under way.
    pub fn ready(&self) -> bool {
        self.started.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst) && self.models.any_ready()
    }

    /// A request id for logs: the client's, else a server-assigned one.
    pub fn request_id(&self, given: &str) -> String {
        if given.is_empty() {
            format!("vqad-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
        } else {
            given.to_string()
        }
    }

    /// Runs one inference request through the model's queue, recording metrics. `res` holds
    /// what the request has in memory (its body, so far); it grows by what decoding needs
    /// before anything is decoded and shrinks to the model-ready images afterwards.
    pub async fn infer(&self, call: InferCall, protocol: &'static str, res: Arc<Reservation>) -> Result<InferAnswer, ApiError> {
        let rid = self.request_id(&call.id);
        let span = tracing::info_span!("infer", request_id = %rid, model = %call.model, version = %call.version, protocol);
        self.infer_inner(call, protocol, res).instrument(span).await
    }

    async fn infer_inner(&self, call: InferCall, protocol: &'static str, res: Arc<Reservation>) -> Result<InferAnswer, ApiError> {
        let start = Instant::now();
        let handle = match self.models.get(&call.model, &call.version) {
            Ok(h) => h,
            Err(e) => {
                let known = self.models.versions(&call.model).is_some();
                let label = if known { call.model.as_str() } else { "<unknown>" };
                self.metrics.requests.with_label_values(&[label, &call.version, protocol]).inc();
                self.metrics.failures.with_label_values(&[label, &call.version, e.reason()]).inc();
                tracing::info!(error = %e, "refused");
                return Err(e);
            }
        };
        let info = handle.info.clone();
        let l = [info.name.as_str(), info.version.as_str()];
        self.metrics.requests.with_label_values(&[l[0], l[1], protocol]).inc();
        // In flight until this function returns, whichever way (also if the client goes away
        // and the future is dropped): what an autoscaler can scale on.
        let inflight = self.metrics.inflight.with_label_values(&[l[0]]);
        inflight.inc();
        let _inflight = GaugeGuard(inflight);
        let result = async {
            let wanted = infer::requested_outputs(&call.outputs)?;
            let spec = InputSpec { channels: info.channels, size: info.image_size, limits: self.decode };
            let inputs = call.inputs;
            let per_image = info.inflight_bytes_per_image;
            let held = res.clone();
            // Headers first: admitted against the budget before a pixel is decoded.
            let images = tokio::task::spawn_blocking(move || {
                let plan = infer::plan_inputs(inputs, spec)?;
                held.grow(plan.decode_bytes() + plan.images() as u64 * per_image)?;
                plan.decode()
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
            // The body and the decoders' buffers are gone; the images wait and compute.
            res.set(images.len() as u64 * (spec.image_bytes() + per_image))?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            handle
                .submit(Job {
                    images,
                    want_map: wanted.contains(&"map"),
                    want_restored: wanted.contains(&"restored"),
                    enqueued: Instant::now(),
                    reply: tx,
                    reservation: res.clone(),
                })
                .map_err(ApiError::unavailable)?;
            drop(handle);
            let reply = rx.await.map_err(|_| ApiError::internal("the model's worker stopped"))?.map_err(ApiError::internal)?;
            let outputs = infer::build_outputs(&reply.results, &wanted)?;
            Ok::<_, ApiError>(InferAnswer {
                info: info.clone(),
                id: call.id.clone(),
                outputs,
                batch_size: reply.batch_size,
                prior_passes: reply.results.iter().map(|r| r.prior_passes).sum(),
                resampled_positions: reply.results.iter().map(|r| r.resampled).sum(),
            })
        }
        .await;
        let secs = start.elapsed().as_secs_f64();
        match &result {
            Ok(a) => {
                self.metrics.request_seconds.with_label_values(&l).observe(secs);
                tracing::info!(ms = secs * 1e3, batch = a.batch_size, "done");
            }
            Err(e) => {
                self.metrics.failures.with_label_values(&[l[0], l[1], e.reason()]).inc();
                tracing::info!(error = %e, "failed");
            }
        }
        result
    }
}

/// Response parameters every inference answer carries: the settings in force and the
/// provider that ran each graph.
pub fn answer_parameters(a: &InferAnswer) -> Vec<(String, ParamValue)> {
    let i = &a.info;
    let mut p = vec![
        ("eta".to_string(), ParamValue::F64(i.eta)),
        ("local_constraint".to_string(), ParamValue::Bool(i.local_constraint)),
        ("min_area".to_string(), ParamValue::I64(i.min_area)),
        ("score_kind".to_string(), ParamValue::Str(i.score.clone())),
        ("restore_rule".to_string(), ParamValue::Str(i.restore.clone())),
        ("archive_sha256".to_string(), ParamValue::Str(i.archive_sha256.clone())),
        ("precision".to_string(), ParamValue::Str(i.precision.clone())),
        ("batch_size".to_string(), ParamValue::I64(a.batch_size as i64)),
        ("prior_passes".to_string(), ParamValue::I64(a.prior_passes as i64)),
        ("resampled_positions".to_string(), ParamValue::I64(a.resampled_positions as i64)),
    ];
    if let Some(t) = i.pixel_threshold {
        p.push(("pixel_threshold".to_string(), ParamValue::F64(t)));
    }
    for (graph, prov) in &i.providers {
        let g = graph.trim_end_matches(".onnx");
        p.push((format!("provider_{g}"), ParamValue::Str(prov.to_string())));
    }
    p
}

/// A response parameter's value.
#[derive(Debug, Clone)]
pub enum ParamValue {
    Bool(bool),
    I64(i64),
    F64(f64),
    Str(String),
}

/// Addresses the server listens on (the real ports when 0 was asked for).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Bound {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
}

/// Binds both ports, loads the registry, serves until SIGTERM or Ctrl-C, then stops taking
/// connections, lets in-flight requests finish and returns. `on_bound` learns the ports once
/// both listen (before the first registry pass finishes: liveness answers meanwhile).
pub async fn serve(cfg: ServeConfig, on_bound: impl FnOnce(Bound)) -> Result<(), ServeError> {
    if !cfg.registry.is_dir() {
        return Err(ServeError::Registry { path: cfg.registry.clone(), reason: "no such folder".into() });
    }
    let metrics = Arc::new(Metrics::new());
    let policy = BatchPolicy { max_batch: cfg.max_batch.max(1), max_queue_delay: cfg.max_queue_delay, instances: cfg.instances };
    let models = Arc::new(ModelStore::new(&cfg, policy, metrics.clone()));
    metrics.inflight_budget.set(cfg.max_inflight_bytes as i64);
    let app = Arc::new(App {
        models: models.clone(),
        budget: Budget::new(cfg.max_inflight_bytes, metrics.inflight_bytes.clone(), metrics.inflight_refusals.clone()),
        metrics,
        max_body_bytes: cfg.max_body_bytes,
        decode: cfg.decode,
        body_timeout: cfg.body_timeout,
        started: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        next_id: AtomicU64::new(1),
    });
    let http_l = tokio::net::TcpListener::bind(cfg.http).await.map_err(|e| ServeError::Bind { addr: cfg.http, source: e })?;
    let grpc_l = tokio::net::TcpListener::bind(cfg.grpc).await.map_err(|e| ServeError::Bind { addr: cfg.grpc, source: e })?;
    let bound = Bound {
        http: http_l.local_addr().map_err(|e| ServeError::Bind { addr: cfg.http, source: e })?,
        grpc: grpc_l.local_addr().map_err(|e| ServeError::Bind { addr: cfg.grpc, source: e })?,
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let conn_metrics = |protocol| conn::ConnMetrics {
        open: app.metrics.open_connections.with_label_values(&[protocol]),
        timeouts: app.metrics.connection_timeouts.clone(),
        protocol,
    };
    let http_l = conn::Listener::new(http_l, cfg.conn, true, conn_metrics("http"));
    let grpc_l = conn::Listener::new(grpc_l, cfg.conn, false, conn_metrics("grpc"));
    let keepalive = (cfg.grpc_keepalive, cfg.grpc_keepalive_timeout);
    let http_task = tokio::spawn(http::run(http_l, app.clone(), stopped(stop_rx.clone())));
    let grpc_task = tokio::spawn(grpc::run(grpc_l, app.clone(), keepalive, stopped(stop_rx.clone())));
    on_bound(bound);
    tracing::info!(http = %bound.http, grpc = %bound.grpc, "listening");

    // First registry pass, then poll.
    let poller = {
        let (app, models, poll) = (app.clone(), models.clone(), cfg.poll);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            if let Err(e) = models.reconcile(None, false).await {
                tracing::error!(error = %e, "first registry pass failed");
            }
            app.started.store(true, Ordering::SeqCst);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                if let Err(e) = models.reconcile(None, false).await {
                    tracing::warn!(error = %e, "registry poll failed; serving what is loaded");
                }
            }
        })
    };

    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    app.draining.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    poller.abort();
    let h = http_task.await.map_err(|e| ServeError::Server(e.to_string()))?;
    let g = grpc_task.await.map_err(|e| ServeError::Server(e.to_string()))?;
    h?;
    g?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Decrements the gauge when dropped.
struct GaugeGuard(prometheus::IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
