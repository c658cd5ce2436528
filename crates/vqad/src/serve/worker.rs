//! Worker threads per loaded model version (Triton's instance group): each instance owns its
//! own [`Detector`] (ONNX Runtime sessions are not `Sync`) and all share one queue with
//! Triton-style dynamic batching: the first queued request opens a batch, which closes when it
//! holds `max_batch` images or `max_queue_delay` has passed since that request arrived.
//! Requests are never split; one larger than `max_batch` runs alone.
//!
//! Why instances: the prior is compute-bound per table row, so a bigger batch alone does not
//! make a CPU faster (ONNX Runtime's intra-op threads barely help these small convolutions);
//! two single-threaded instances, each running its own batch, use two cores fully. For the
//! same reason a batch gathered while another instance is idle is shared out between them.
//!
//! Dropping every [`WorkerHandle`] closes the queue; the instances finish what is queued (the
//! old version drains) and exit.

use super::infer::ImageResult;
use super::metrics::Metrics;
use crate::package::VerifiedPackage;
use crate::runtime::session::Provider;
use crate::runtime::{Detector, DetectorOptions};
use ndarray::Array3;
use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_batch: usize,
    pub max_queue_delay: Duration,
    /// Worker threads (each with its own sessions) per model version; 0 = auto (see
    /// [`spawn`]).
    pub instances: usize,
}

/// What a loaded model version is, for metadata and response parameters.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub channels: usize,
    pub image_size: usize,
    pub eta: f64,
    pub local_constraint: bool,
    pub pixel_threshold: Option<f64>,
    pub min_area: i64,
    pub score: String,
    pub restore: String,
    pub archive_sha256: String,
    pub providers: BTreeMap<String, Provider>,
    /// Precision of the graphs that run (fp32, fp16, int8).
    pub precision: String,
    /// Worker instances serving this version, and intra-op threads per session (0: ONNX
    /// Runtime's default).
    pub instances: usize,
    pub threads: usize,
    /// What one image holds in memory while it waits and is computed, an estimate charged
    /// against the in-flight budget ([`inflight_bytes_per_image`]).
    pub inflight_bytes_per_image: u64,
}

/// An upper estimate of the memory one image of a batch takes from the queue to its answer:
/// its input, the two decodings and the restored image (`C × S²` floats each), the maps and
/// mask, the prior's log-probabilities (`K × M × N` floats, the pass running and the one
/// kept), and the convolutions' activations (counted as 32 full-size planes: 128 channels at
/// half resolution, what the paper's encoder keeps at its widest).
pub fn inflight_bytes_per_image(shape: &crate::package::ModelShape) -> u64 {
    let d = |v: i64| v.max(0) as u64;
    let (c, s, m, n, k) = (d(shape.channels), d(shape.image_size), d(shape.grid_m), d(shape.grid_n), d(shape.num_codes));
    let plane = s * s * 4;
    (4 * c + 8 + 32) * plane + 3 * k * m * n * 4 + (64 << 10)
}

/// One request's images, waiting in a model's queue.
pub struct Job {
    pub images: Vec<Array3<f32>>,
    pub want_map: bool,
    pub want_restored: bool,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<BatchReply, String>>,
    /// The request's share of the in-flight budget, held until the job has run (or is
    /// dropped), so a client that goes away does not free budget its images still take.
    pub reservation: Arc<super::budget::Reservation>,
}

/// A request's results and the size of the batch it ran in.
pub struct BatchReply {
    pub results: Vec<ImageResult>,
    pub batch_size: usize,
}

/// The sending side of a worker's queue; cheap to clone.
#[derive(Clone)]
pub struct WorkerHandle {
    pub info: Arc<ModelInfo>,
    tx: mpsc::Sender<Job>,
}

impl WorkerHandle {
    /// Queues a job; fails only when the worker has exited.
    pub fn submit(&self, job: Job) -> Result<(), String> {
        self.tx.send(job).map_err(|_| format!("model {} version {} has stopped", self.info.name, self.info.version))
    }
}

/// The shared queue: the receiver and requests taken from it but not yet run (one that did
/// not fit the last batch, or a batch's share handed to an idle instance); they go first. An
/// instance holds the lock only while it gathers a batch, so another instance can gather the
/// next batch while this one computes.
struct Queue {
    rx: mpsc::Receiver<Job>,
    pending: VecDeque<Job>,
}

/// What the instances of one model version share.
struct Shared {
    queue: Mutex<Queue>,
    /// Instances running (loaded and not yet exited) and, of those, computing a batch.
    alive: AtomicUsize,
    busy: AtomicUsize,
}

/// Loads a verified package into `policy.instances` new worker threads and returns once every
/// instance's sessions are ready (blocking: call from a blocking context). If any instance
/// fails to load, the error is returned and the others exit.
///
/// `policy.instances == 0` decides from what really runs: the first instance loads, and if
/// every graph landed on the CPU provider, one instance per core (as `available_parallelism`
/// counts them, which honours a container's CPU quota) serves, each single-threaded unless
/// `options.session.threads` says otherwise; where a GPU provider took a graph, that one
/// instance serves alone. Explicit instances with `threads == 0` share the cores out.
pub fn spawn(pkg: VerifiedPackage, options: DetectorOptions, policy: BatchPolicy, metrics: Arc<Metrics>) -> Result<WorkerHandle, String> {
    let (tx, rx) = mpsc::channel::<Job>();
    let shared = Arc::new(Shared { queue: Mutex::new(Queue { rx, pending: VecDeque::new() }), alive: AtomicUsize::new(0), busy: AtomicUsize::new(0) });
    let pkg = Arc::new(pkg);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let auto = policy.instances == 0;
    let threads = match options.session.threads {
        0 if auto => 1,
        0 if policy.instances > 1 => (cores / policy.instances).max(1),
        t => t,
    };
    let (ready_tx, ready_rx) = mpsc::channel::<Result<ModelInfo, String>>();
    let start = |i: usize| -> Result<(), String> {
        let (pkg, shared, metrics, ready_tx) = (pkg.clone(), shared.clone(), metrics.clone(), ready_tx.clone());
        let mut opts = options.clone();
        opts.session.threads = threads;
        opts.batch = policy.max_batch.max(1);
        std::thread::Builder::new()
            .name(format!("vqad-{}-{}-{i}", pkg.manifest.name, pkg.manifest.version))
            .spawn(move || {
                let mut det = match Detector::from_verified(&pkg, opts) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("loading the graphs: {e}")));
                        return;
                    }
                };
                let info = model_info(&pkg, &det);
                let labels = [info.name.clone(), info.version.clone()];
                drop(pkg);
                let _ = ready_tx.send(Ok(info));
                drop(ready_tx);
                shared.alive.fetch_add(1, Ordering::SeqCst);
                run(&mut det, &shared, policy, &metrics, &labels, i);
            })
            .map(drop)
            .map_err(|e| format!("starting a worker thread: {e}"))
    };
    // Dropping `tx` on an early return closes the queue, so the loaded instances exit.
    let recv = || ready_rx.recv().map_err(|_| "a worker thread died while loading".to_string());
    start(0)?;
    let mut info = recv()??;
    let instances = match policy.instances {
        0 if info.providers.values().all(|&p| p == Provider::Cpu) => cores,
        0 => 1,
        n => n,
    };
    for i in 1..instances {
        start(i)?;
    }
    drop(ready_tx);
    for _ in 1..instances {
        recv()??;
    }
    info.instances = instances;
    info.threads = threads;
    metrics.instances.with_label_values(&[&info.name, &info.version]).set(instances as i64);
    Ok(WorkerHandle { info: Arc::new(info), tx })
}

fn model_info(pkg: &VerifiedPackage, det: &Detector) -> ModelInfo {
    let m = &pkg.manifest;
    let s = &det.settings;
    ModelInfo {
        name: m.name.clone(),
        version: m.version.clone(),
        channels: det.shape.channels as usize,
        image_size: det.shape.image_size as usize,
        eta: s.eta,
        local_constraint: s.local_constraint,
        pixel_threshold: s.pixel_threshold,
        min_area: s.min_area,
        score: serde_json::to_value(s.score).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        restore: serde_json::to_value(s.restore).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        archive_sha256: pkg.archive_sha256.clone(),
        providers: det.providers(),
        precision: det.precision.to_string(),
        instances: 1,
        threads: 0,
        inflight_bytes_per_image: inflight_bytes_per_image(&det.shape),
    }
}

/// Waits for the first job and gathers a batch behind it; `None` when the queue is closed and
/// empty (the instance then counts itself out, under the lock).
///
/// When other instances are idle, the batch is shared out: this instance keeps its part and
/// puts the rest back at the front of the queue for them. On a CPU a batch costs in proportion
/// to its images, so two half batches on two instances finish in half the time.
fn gather(shared: &Shared, policy: BatchPolicy) -> Option<(Vec<Job>, usize)> {
    let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
    let first = loop {
        let j = match q.pending.pop_front() {
            Some(j) => j,
            None => match q.rx.recv() {
                Ok(j) => j,
                Err(_) => {
                    // Every handle dropped and nothing is pending: drained.
                    shared.alive.fetch_sub(1, Ordering::SeqCst);
                    return None;
                }
            },
        };
        // Nobody waits for it any more (the client went away): not worth computing.
        if !j.reply.is_closed() {
            break j;
        }
    };
    let deadline = first.enqueued + policy.max_queue_delay;
    let mut n = first.images.len();
    let mut jobs = vec![first];
    while n < policy.max_batch {
        let next = match q.pending.pop_front() {
            Some(j) => Ok(j),
            None => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => q.rx.recv_timeout(left),
                _ => q.rx.try_recv().map_err(|e| match e {
                    mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                }),
            },
        };
        match next {
            Ok(j) if j.reply.is_closed() => {}
            Ok(j) if n + j.images.len() <= policy.max_batch => {
                n += j.images.len();
                jobs.push(j);
            }
            Ok(j) => {
                q.pending.push_front(j);
                break;
            }
            Err(_) => break,
        }
    }
    let idle = shared.alive.load(Ordering::SeqCst).saturating_sub(shared.busy.load(Ordering::SeqCst) + 1);
    if idle > 0 && jobs.len() > 1 {
        let keep = jobs.len().div_ceil(idle + 1);
        for j in jobs.drain(keep..).rev() {
            q.pending.push_front(j);
        }
        n = jobs.iter().map(|j| j.images.len()).sum();
    }
    shared.busy.fetch_add(1, Ordering::SeqCst);
    Some((jobs, n))
}

fn run(det: &mut Detector, shared: &Shared, policy: BatchPolicy, metrics: &Metrics, labels: &[String; 2], instance: usize) {
    let l = [labels[0].as_str(), labels[1].as_str()];
    let instance_batches = metrics.instance_batches.with_label_values(&[l[0], l[1], &instance.to_string()]);
    while let Some((jobs, n)) = gather(shared, policy) {
        run_batch(det, jobs, n, metrics, &l, &instance_batches);
        shared.busy.fetch_sub(1, Ordering::SeqCst);
    }
    tracing::info!(model = l[0], version = l[1], instance, "worker drained and stopped");
}

/// Runs one gathered batch and answers its requests.
fn run_batch(det: &mut Detector, jobs: Vec<Job>, n: usize, metrics: &Metrics, l: &[&str; 2], instance_batches: &prometheus::IntCounter) {
    let stage = |s: &str, secs: f64| metrics.stage_seconds.with_label_values(&[l[0], l[1], s]).observe(secs);
    let started = Instant::now();
    for j in &jobs {
        stage("queue", started.duration_since(j.enqueued).as_secs_f64());
    }
    let images: Vec<Array3<f32>> = jobs.iter().flat_map(|j| j.images.iter().cloned()).collect();
    metrics.batch_size.with_label_values(l).observe(images.len() as f64);
    instance_batches.inc();
    // A panic inside detection fails this batch, not the server.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| det.detect_arrays(&images)));
    let dets = match outcome {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            tracing::error!(model = l[0], version = l[1], error = %e, "detection failed");
            fail(jobs, &format!("detection failed: {e}"));
            return;
        }
        Err(_) => {
            tracing::error!(model = l[0], version = l[1], "detection panicked");
            fail(jobs, "detection failed (internal error)");
            return;
        }
    };
    if let Some(d) = dets.first() {
        for (s, ms) in [("encode", d.millis.encode), ("prior", d.millis.prior), ("decode", d.millis.decode), ("filter", d.millis.filter)] {
            stage(s, ms / 1e3);
        }
    }
    let mut it = dets.into_iter();
    for j in jobs {
        let results: Vec<ImageResult> = it
            .by_ref()
            .take(j.images.len())
            .map(|d| {
                metrics.prior_passes.with_label_values(l).observe(d.prior_passes as f64);
                metrics.resampled_positions.with_label_values(l).observe(d.resampled.len() as f64);
                metrics.images.with_label_values(l).inc();
                if d.anomalous {
                    metrics.anomalies.with_label_values(l).inc();
                }
                ImageResult {
                    score: d.image_score,
                    anomalous: d.anomalous,
                    mask: d.mask,
                    map: j.want_map.then_some(d.smoothed),
                    restored: j.want_restored.then_some(d.restored),
                    prior_passes: d.prior_passes,
                    resampled: d.resampled.len(),
                }
            })
            .collect();
        let _ = j.reply.send(Ok(BatchReply { results, batch_size: n }));
    }
}

fn fail(jobs: Vec<Job>, msg: &str) {
    for j in jobs {
        let _ = j.reply.send(Err(msg.to_string()));
    }
}
