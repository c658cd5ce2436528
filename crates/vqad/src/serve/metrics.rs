//! Prometheus metrics of the server, in one registry rendered at `GET /metrics`.
//!
//! Labels are the model name and version (failures for a name not in the registry count under
//! `model="<unknown>"`, so a client cannot grow the label set without bound).

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All of the server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Inference requests received, per model, version and protocol.
    pub requests: IntCounterVec,
    /// Inference requests that failed, per model, version and reason (bad_request, not_found, …).
    pub failures: IntCounterVec,
    /// End-to-end request latency, seconds.
    pub request_seconds: HistogramVec,
    /// Per-stage time per image, seconds: queue, encode, prior, decode, filter.
    pub stage_seconds: HistogramVec,
    /// Images per executed batch.
    pub batch_size: HistogramVec,
    /// Prior passes each image took part in.
    pub prior_passes: HistogramVec,
    /// Latent positions resampled per image.
    pub resampled_positions: HistogramVec,
    /// Images processed and images flagged anomalous.
    pub images: IntCounterVec,
    pub anomalies: IntCounterVec,
    /// 1 while a model version serves, 0 otherwise.
    pub model_ready: IntGaugeVec,
    /// Batches executed per worker instance (shows the instances share the load).
    pub instance_batches: IntCounterVec,
    /// Inference requests received and not yet answered, per model (queued or running).
    pub inflight: IntGaugeVec,
    /// Worker instances of a model version (what `--instances` chose; see `serve::worker`).
    pub instances: IntGaugeVec,
    /// 1 for the precision (fp32, fp16, int8) a model version's graphs run in.
    pub model_precision: IntGaugeVec,
    /// Bytes held by requests in flight, and the budget they are admitted against
    /// (`serve::budget`).
    pub inflight_bytes: IntGauge,
    pub inflight_budget: IntGauge,
    /// Requests refused by the budget (429 and its 413), whatever stage they were in.
    pub inflight_refusals: IntCounter,
    /// Open connections per protocol, and connections closed by a timeout (per protocol and
    /// reason: idle, header, write).
    pub open_connections: IntGaugeVec,
    pub connection_timeouts: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let mv = &["model", "version"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let secs = exponential_buckets(0.0005, 2.0, 16).expect("buckets");
        let requests = counter("vqad_requests_total", "Inference requests received.", &["model", "version", "protocol"]);
        let failures = counter("vqad_request_failures_total", "Inference requests that failed.", &["model", "version", "reason"]);
        let request_seconds = histogram("vqad_request_duration_seconds", "End-to-end inference request latency.", mv, secs.clone());
        let stage_seconds = histogram(
            "vqad_stage_duration_seconds",
            "Time per image in each stage (queue, encode, prior, decode, filter).",
            &["model", "version", "stage"],
            secs,
        );
        let batch_size = histogram("vqad_batch_size", "Images per executed batch.", mv, exponential_buckets(1.0, 2.0, 8).expect("buckets"));
        let prior_passes = histogram("vqad_prior_passes", "Prior passes per image.", mv, exponential_buckets(1.0, 2.0, 12).expect("buckets"));
        let resampled_positions = histogram(
            "vqad_resampled_positions",
            "Latent positions resampled per image.",
            mv,
            [0.0].into_iter().chain(exponential_buckets(1.0, 2.0, 12).expect("buckets")).collect(),
        );
        let images = counter("vqad_images_total", "Images processed.", mv);
        let anomalies = counter("vqad_anomalies_total", "Images flagged anomalous.", mv);
        let instance_batches = counter("vqad_instance_batches_total", "Batches executed by each worker instance.", &["model", "version", "instance"]);
        let model_ready = IntGaugeVec::new(Opts::new("vqad_model_ready", "1 while the model version serves."), mv).expect("valid metric");
        registry.register(Box::new(model_ready.clone())).expect("unique metric");
        let inflight = IntGaugeVec::new(Opts::new("vqad_inflight_requests", "Inference requests not yet answered (queued or running)."), &["model"]).expect("valid metric");
        registry.register(Box::new(inflight.clone())).expect("unique metric");
        let instances = IntGaugeVec::new(Opts::new("vqad_model_instances", "Worker instances of the model version."), mv).expect("valid metric");
        registry.register(Box::new(instances.clone())).expect("unique metric");
        let model_precision = IntGaugeVec::new(Opts::new("vqad_model_precision", "1 for the precision a model version's graphs run in."), &["model", "version", "precision"]).expect("valid metric");
        registry.register(Box::new(model_precision.clone())).expect("unique metric");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let inflight_bytes = gauge("vqad_inflight_bytes", "Bytes held by inference requests in flight (body, decoding, queue, compute).");
        let inflight_budget = gauge("vqad_inflight_budget_bytes", "The in-flight memory budget (--max-inflight-mb).");
        let inflight_refusals = IntCounter::new("vqad_inflight_refusals_total", "Requests refused by the in-flight memory budget, at any stage.").expect("valid metric");
        registry.register(Box::new(inflight_refusals.clone())).expect("unique metric");
        let open_connections = IntGaugeVec::new(Opts::new("vqad_open_connections", "Open client connections."), &["protocol"]).expect("valid metric");
        registry.register(Box::new(open_connections.clone())).expect("unique metric");
        let connection_timeouts = counter("vqad_connection_timeouts_total", "Connections closed by a timeout (idle, header, write).", &["protocol", "reason"]);
        Metrics {
            registry,
            requests,
            failures,
            request_seconds,
            stage_seconds,
            batch_size,
            prior_passes,
            resampled_positions,
            images,
            anomalies,
            model_ready,
            instance_batches,
            inflight,
            instances,
            model_precision,
            inflight_bytes,
            inflight_budget,
            inflight_refusals,
            open_connections,
            connection_timeouts,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = vec![];
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding never fails");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
