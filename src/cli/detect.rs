//! detect and bench.

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vqad::package::{TrustedKey, VerifiedPackage};
use vqad::runtime::output::{stem_for, write_detection, RecordContext};
use vqad::runtime::session::{parse_providers, SessionOptions};
use vqad::runtime::{Detector, DetectorOptions, ResampleMode};

/// Flags shared by everything that runs a package.
#[derive(Args, Clone)]
pub struct RunFlags {
    /// Execution providers in order of preference: tensorrt, cuda, cpu.
    #[arg(long, default_value = "tensorrt,cuda,cpu")]
    pub ep: String,
    /// Fail if the first provider in --ep cannot run a graph instead of falling back.
    #[arg(long)]
    pub strict_ep: bool,
    /// TensorRT engine cache folder (keyed by package digest inside).
    #[arg(long)]
    pub trt_cache: Option<PathBuf>,
    /// Path to libonnxruntime (default: $VQAD_ORT_LIB, beside the executable, the set-up cache).
    #[arg(long, env = "VQAD_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
    /// Override the package's η.
    #[arg(long)]
    pub eta: Option<f64>,
    /// Resample on p < η alone (the paper's ablation).
    #[arg(long)]
    pub no_local_constraint: bool,
    /// incremental (one prior pass + one per change) or naive (M·N passes; same result).
    #[arg(long, default_value = "incremental", value_parser = ["incremental", "naive"])]
    pub resample: String,
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Intra-op threads for ONNX Runtime (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub plugins: PluginFlags,
    /// Which of the package's precisions runs: auto (GPU provider → fp16, CPU → fp32 unless
    /// int8 pays; only variants within their signed parity bound), fp32, fp16 or int8.
    #[arg(long, default_value = "auto")]
    pub precision: String,
}

impl RunFlags {
    pub fn options(&self) -> anyhow::Result<DetectorOptions> {
        anyhow::ensure!(!self.precision.contains(','), "--precision {}: name one precision (only `vqad bench` compares several)", self.precision);
        self.options_any_precision().and_then(|o| Ok(DetectorOptions { precision: self.precision.parse()?, ..o }))
    }

    /// [`RunFlags::options`] with precision `auto` (the caller chooses it).
    pub fn options_any_precision(&self) -> anyhow::Result<DetectorOptions> {
        let providers = parse_providers(&self.ep)?;
        anyhow::ensure!(!providers.is_empty(), "--ep names no provider");
        Ok(DetectorOptions {
            session: SessionOptions {
                providers,
                strict: self.strict_ep,
                trt_cache: self.trt_cache.clone(),
                threads: self.threads,
                ort_lib: self.ort_lib.clone(),
                ep_libraries: self.plugins.libraries()?,
                ep_options: self.plugins.options()?,
                profile: None,
            },
            eta: self.eta,
            local_constraint: self.no_local_constraint.then_some(false),
            mode: if self.resample == "naive" { ResampleMode::Naive } else { ResampleMode::Incremental },
            batch: self.batch.max(1),
            precision: Default::default(),
        })
    }
}

/// ONNX Runtime plugin execution providers (detect, bench, eval, compat, serve).
#[derive(Args, Clone, Default)]
pub struct PluginFlags {
    /// Register an ONNX Runtime plugin execution provider (NAME=PATH to its library, e.g.
    /// PyPI onnxruntime-ep-openvino's) and run on the devices it offers first (repeatable).
    #[arg(long = "ep-library", value_name = "NAME=PATH")]
    pub ep_library: Vec<String>,
    /// Provider option for the plugin's devices, KEY=VALUE (repeatable).
    #[arg(long = "ep-option", value_name = "KEY=VALUE")]
    pub ep_option: Vec<String>,
}

impl PluginFlags {
    pub fn libraries(&self) -> anyhow::Result<Vec<vqad::runtime::session::EpLibrary>> {
        Ok(self.ep_library.iter().map(|s| s.parse()).collect::<Result<_, _>>()?)
    }

    /// The `KEY=VALUE` provider options.
    pub fn options(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.ep_option
            .iter()
            .map(|s| s.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).ok_or_else(|| anyhow::anyhow!("--ep-option '{s}': expected KEY=VALUE")))
            .collect()
    }
}

/// Limits on every image read (detect, eval, data check, serve).
#[derive(Args, Clone)]
pub struct DecodeFlags {
    /// Largest image accepted, in pixels (width × height), read from the header before
    /// decoding: a larger one is refused (and, in a batch, skipped and named). Guards against
    /// small files that declare huge images (a 388 KB PNG can declare 20000 × 20000).
    #[arg(long, default_value_t = vqad::data::DecodeLimits::DEFAULT_MAX_PIXELS, value_name = "PIXELS")]
    pub max_image_pixels: u64,
}

impl Default for DecodeFlags {
    fn default() -> Self {
        DecodeFlags { max_image_pixels: vqad::data::DecodeLimits::DEFAULT_MAX_PIXELS }
    }
}

impl DecodeFlags {
    pub fn limits(&self) -> anyhow::Result<vqad::data::DecodeLimits> {
        anyhow::ensure!(self.max_image_pixels >= 1, "--max-image-pixels must be at least 1");
        Ok(vqad::data::DecodeLimits::new(self.max_image_pixels))
    }
}

/// Where a package comes from: a file, or (with `--registry`) a reference resolved there.
#[derive(Args, Clone, Default)]
pub struct SourceFlags {
    /// Registry folder: PACKAGE is then a reference — NAME@CHANNEL (the channel's signed
    /// assignment), NAME@VERSION or NAME (newest) — or a file inside the registry.
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Trust state file (with --registry): remembers the highest channel record sequence
    /// accepted, so a registry whose newer records were deleted is refused.
    #[arg(long, env = "VQAD_TRUST_STATE")]
    pub trust_state: Option<PathBuf>,
}

/// What was opened: the verified package and, for a channel reference, how it resolved.
pub struct Opened {
    pub package: VerifiedPackage,
    /// `{"reference", "channel", "sequence", "expires"}` when resolved in a registry.
    pub resolved: Option<serde_json::Value>,
}

/// Verifies a package — a file, a file in a registry, or a registry reference — with the
/// CLI's error wording. Nothing runs unless this succeeds.
pub fn open_package(package: &Path, pubkey: &Path, src: &SourceFlags) -> anyhow::Result<Opened> {
    let key = TrustedKey::load(pubkey)?;
    let refuse = || format!("{}: refusing to run: verification failed", package.display());
    let Some(reg) = &src.registry else {
        let pkg = VerifiedPackage::open(package, &key).with_context(refuse)?;
        return Ok(Opened { package: pkg, resolved: None });
    };
    if package.is_file() {
        let pkg = vqad::registry::verify_in_registry(package, reg, &key).with_context(refuse)?;
        return Ok(Opened { package: pkg, resolved: None });
    }
    let reference = package.to_str().with_context(|| format!("{}: not a file, and not a UTF-8 reference", package.display()))?;
    let opts = vqad::registry::ResolveOptions { now: None, trust_state: src.trust_state.clone() };
    let r = vqad::registry::resolve(reg, reference, &key, &opts)
        .with_context(|| format!("{reference} in registry {}: refusing to run", reg.display()))?;
    eprintln!(
        "{reference} → {} {}{}",
        r.name,
        r.version,
        r.sequence.map(|s| format!(" (channel record sequence {s}, expires {})", r.expires.as_deref().unwrap_or("?"))).unwrap_or_default()
    );
    let resolved = serde_json::json!({"reference": reference, "channel": r.channel, "sequence": r.sequence, "expires": r.expires});
    Ok(Opened { package: r.package, resolved: Some(resolved) })
}

/// Verifies a package file and opens a detector, with the CLI's error wording.
pub fn open_detector(package: &Path, pubkey: &Path, opts: DetectorOptions) -> anyhow::Result<(VerifiedPackage, Detector)> {
    open_detector_from(package, pubkey, &SourceFlags::default(), opts).map(|(o, d)| (o.package, d))
}

/// [`open_package`], then a detector over the verified bytes.
pub fn open_detector_from(package: &Path, pubkey: &Path, src: &SourceFlags, opts: DetectorOptions) -> anyhow::Result<(Opened, Detector)> {
    let o = open_package(package, pubkey, src)?;
    let det = Detector::from_verified(&o.package, opts)?;
    Ok((o, det))
}

#[derive(Args)]
pub struct DetectArgs {
    /// The .vqad package, or with --registry a reference: NAME@CHANNEL, NAME@VERSION, NAME.
    pub package: PathBuf,
    /// Trusted public key; the package must verify with it.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// Image files and/or folders (searched recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output folder (created; existing result files of the same names are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write float32 .npy arrays: the raw and smoothed score maps, the prior's log p and
    /// entropy per latent cell, and the input, direct reconstruction and restored image [C, H, W]
    /// (to try other maps offline).
    #[arg(long)]
    pub save_maps: bool,
    #[command(flatten)]
    pub source: SourceFlags,
    #[command(flatten)]
    pub run: RunFlags,
    #[command(flatten)]
    pub decode: DecodeFlags,
}

/// (image file, the input root it came from) pairs, and (path, problem) for inputs that failed.
pub type Collected = (Vec<(PathBuf, PathBuf)>, Vec<(PathBuf, String)>);

/// Image files under each input (folders recursively, sorted), with the root they came from.
pub fn collect_inputs(inputs: &[PathBuf]) -> Collected {
    let mut files = vec![];
    let mut bad = vec![];
    fn walk(root: &Path, dir: &Path, files: &mut Vec<(PathBuf, PathBuf)>, bad: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                bad.push((dir.to_path_buf(), e.to_string()));
                return;
            }
        };
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(root, &p, files, bad);
            } else if vqad::data::is_image_path(&p) {
                files.push((root.to_path_buf(), p));
            }
        }
    }
    for i in inputs {
        if i.is_dir() {
            walk(i, i, &mut files, &mut bad);
        } else if i.is_file() {
            files.push((i.parent().unwrap_or(Path::new("")).to_path_buf(), i.clone()));
        } else {
            bad.push((i.clone(), "no such file or folder".into()));
        }
    }
    (files, bad)
}

/// The error with its file named once (data errors already start with the path).
fn named(p: &Path, e: &dyn std::fmt::Display) -> String {
    let (m, path) = (e.to_string(), p.display().to_string());
    if m.starts_with(&path) {
        m
    } else {
        format!("{path}: {m}")
    }
}

fn bar(n: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(n);
    pb.set_style(ProgressStyle::with_template("{prefix:>7} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}").expect("template").progress_chars("=> "));
    pb.set_prefix(what.to_string());
    pb
}

pub fn detect(a: DetectArgs) -> anyhow::Result<i32> {
    let (line, failed) = run_detect(&a)?;
    println!("{line}");
    Ok(if failed == 0 { 0 } else { 4 })
}

/// Runs detection and writes all files; returns the one-line summary and the number of
/// inputs that failed.
pub fn run_detect(a: &DetectArgs) -> anyhow::Result<(String, usize)> {
    let limits = a.decode.limits()?;
    let (opened, mut det) = open_detector_from(&a.package, &a.pubkey, &a.source, a.run.options()?)?;
    let pkg = &opened.package;
    eprintln!("{}", pkg.summary());
    let providers = det.providers();
    eprintln!("providers: {}", providers.iter().map(|(g, p)| format!("{g}={p}")).collect::<Vec<_>>().join(" "));
    let (files, mut failed) = collect_inputs(&a.inputs);
    anyhow::ensure!(!files.is_empty() || !failed.is_empty(), "no images found in {:?}", a.inputs);
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let (c, s) = (det.shape.channels as usize, det.shape.image_size as usize);
    let pb = bar(files.len() as u64, "detect");
    let mut records = vec![];
    let start = Instant::now();
    let mut stems = std::collections::HashSet::new();
    for chunk in files.chunks(det.batch) {
        let mut ok = vec![];
        for (root, p) in chunk {
            match vqad::data::load_image_within(p, c, s, &limits) {
                Ok(img) => ok.push((root, p, img)),
                Err(e) => {
                    pb.suspend(|| eprintln!("skipping {}", named(p, &e)));
                    failed.push((p.clone(), e.to_string()));
                }
            }
        }
        if ok.is_empty() {
            pb.inc(chunk.len() as u64);
            continue;
        }
        let arrays: Vec<_> = ok.iter().map(|(_, _, a)| a.clone()).collect();
        let dets = det.detect_arrays(&arrays)?;
        let ctx = RecordContext { providers: &providers, precision: det.precision, settings: &det.settings };
        for ((root, p, _), d) in ok.iter().zip(dets.iter()) {
            let mut stem = stem_for(root, p);
            while !stems.insert(stem.clone()) {
                stem.push('_');
            }
            let rec = write_detection(&a.out, &stem, &p.display().to_string(), d, &ctx, a.save_maps)
                .with_context(|| format!("writing results for {} into {}", p.display(), a.out.display()))?;
            records.push(rec);
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let anomalous = records.iter().filter(|r| r.anomalous).count();
    let summary = serde_json::json!({
        "package": pkg.path.display().to_string(),
        "resolved": opened.resolved,
        "name": pkg.manifest.name,
        "version": pkg.manifest.version,
        "archive_sha256": pkg.archive_sha256,
        "providers": providers,
        "images": records.len(),
        "anomalous": anomalous,
        "failed": failed.iter().map(|(p, e)| serde_json::json!({"path": p.display().to_string(), "error": e})).collect::<Vec<_>>(),
        "seconds": secs,
        "images_per_s": records.len() as f64 / secs.max(1e-9),
        "results": records.iter().map(|r| serde_json::json!({"image": r.image, "image_score": r.image_score, "anomalous": r.anomalous})).collect::<Vec<_>>(),
    });
    let p = a.out.join("summary.json");
    vqad::fsutil::write_atomic(&p, format!("{}\n", serde_json::to_string_pretty(&summary)?).as_bytes())?;
    for (p, e) in &failed {
        eprintln!("failed: {}: {e}", p.display());
    }
    let line = format!("{} images, {} anomalous, {} failed; results in {} ({:.1} images/s)", records.len(), anomalous, failed.len(), a.out.display(), records.len() as f64 / secs.max(1e-9));
    Ok((line, failed.len()))
}

#[derive(Args)]
pub struct BenchArgs {
    /// The .vqad package.
    pub package: PathBuf,
    /// Trusted public key.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// Folder of images to run (default: synthetic normal images of the package's size).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Batch sizes to measure, comma separated.
    #[arg(long, default_value = "1,8")]
    pub batches: String,
    /// Images per measurement.
    #[arg(long, default_value_t = 16)]
    pub count: usize,
    /// Also run the naive M·N-pass loop side by side (slow at the paper grid).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub naive: bool,
    /// Images for the naive loop (it needs M·N prior passes each).
    #[arg(long, default_value_t = 2)]
    pub naive_count: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: RunFlags,
}

/// Peak resident memory of this process (Linux VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn bench(a: BenchArgs) -> anyhow::Result<i32> {
    let base = a.run.options_any_precision()?;
    // `--precision` may list several (fp32,int8): each runs on the same images, side by side.
    let requests: Vec<vqad::runtime::variant::PrecisionRequest> = a.run.precision.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect::<Result<_, _>>()?;
    anyhow::ensure!(!requests.is_empty(), "--precision names no precision");
    let (pkg, mut det) = open_detector(&a.package, &a.pubkey, DetectorOptions { precision: requests[0], ..base.clone() })?;
    let peak = vqad::runtime::peak::measure(&base.session, &Default::default())?;
    if !a.json {
        println!("machine peak (ONNX Runtime MatMul {n}×{n}, {t} thread(s), {p}): fp32 {f:.1} GFLOP/s, int8 {i:.1} GOP/s", n = peak.n, t = peak.threads, p = peak.provider, f = peak.fp32_gflops, i = peak.int8_gops);
    }
    let (c, s) = (det.shape.channels as usize, det.shape.image_size as usize);
    let images: Vec<ndarray::Array3<f32>> = match &a.images {
        Some(dir) => {
            let (files, _) = collect_inputs(std::slice::from_ref(dir));
            let paths: Vec<PathBuf> = files.into_iter().map(|(_, p)| p).take(a.count).collect();
            let (ok, bad) = vqad::data::load_many(&paths, c, s);
            for (p, e) in bad {
                eprintln!("skipping {}", named(&p, &e));
            }
            ok.into_iter().map(|(_, a)| a).collect()
        }
        None => {
            let spec = vqad::data::SynthSpec { size: s as u32, ..vqad::data::SynthSpec::new("bench_texture", vqad::config::CategoryKind::Texture) };
            (0..a.count).map(|i| vqad::data::synth_sample(&spec, "test", None, i).image).map(|img| det.prepare(&image::DynamicImage::ImageRgb8(img))).collect()
        }
    };
    anyhow::ensure!(!images.is_empty(), "no images to benchmark");
    let grid = (det.shape.grid_m * det.shape.grid_n) as f64;
    let mut rows = vec![];
    let batches: Vec<usize> = a.batches.split(',').filter_map(|b| b.trim().parse().ok()).collect();
    let mut rooflines = vec![];
    for (ri, req) in requests.iter().enumerate() {
    if ri > 0 {
        det = Detector::from_verified(&pkg, DetectorOptions { precision: *req, ..base.clone() })?;
    }
    let precision = det.precision;
    if !a.json {
        println!("— {precision} ({}) —", det.precision_reason);
    }
    let _ = det.detect_arrays(&images[..1])?; // warm-up: session initialisation is not throughput
    for &b in &batches {
        // The incremental run's changes, to compare the naive loop with on the same images.
        let mut incremental_changes: Vec<Vec<(usize, usize)>> = vec![];
        for mode in [ResampleMode::Incremental, ResampleMode::Naive] {
            if mode == ResampleMode::Naive && (!a.naive || ri > 0) {
                continue;
            }
            let n = if mode == ResampleMode::Naive { a.naive_count.min(images.len()).max(1) } else { images.len() };
            det.mode = mode;
            det.batch = b;
            let t = Instant::now();
            let dets = det.detect_arrays(&images[..n])?;
            let secs = t.elapsed().as_secs_f64();
            let mut ms: BTreeMap<&str, f64> = BTreeMap::new();
            for d in &dets {
                *ms.entry("encode").or_default() += d.millis.encode / n as f64;
                *ms.entry("prior").or_default() += d.millis.prior / n as f64;
                *ms.entry("decode").or_default() += d.millis.decode / n as f64;
                *ms.entry("filter").or_default() += d.millis.filter / n as f64;
            }
            let passes = dets.iter().map(|d| d.prior_passes as f64).sum::<f64>() / n as f64;
            let resampled = dets.iter().map(|d| d.resampled.len() as f64).sum::<f64>() / n as f64;
            // The naive loop runs a subset; its "resampled" is then per those images, so say
            // what the incremental path changed on the same ones, and whether the two agree.
            let (same_images, agrees) = match mode {
                ResampleMode::Incremental => {
                    incremental_changes = dets.iter().map(|d| d.resampled.clone()).collect();
                    (None, None)
                }
                ResampleMode::Naive => {
                    let inc = &incremental_changes[..n.min(incremental_changes.len())];
                    let same = inc.iter().map(|r| r.len() as f64).sum::<f64>() / n as f64;
                    (Some(same), Some(inc.len() == n && inc.iter().zip(&dets).all(|(r, d)| *r == d.resampled)))
                }
            };
            let row = serde_json::json!({
                "precision": precision,
                "mode": if mode == ResampleMode::Naive { "naive" } else { "incremental" },
                "batch": b,
                "images": n,
                "images_per_s": n as f64 / secs,
                "ms_per_image": ms,
                "ms_per_prior_pass": ms["prior"] / passes.max(1.0),
                "prior_passes_per_image": passes,
                "resampled_per_image": resampled,
                "grid_positions": grid,
                "peak_rss_mib": peak_rss_mib(),
                "incremental_resampled_same_images": same_images,
                "agrees_with_incremental": agrees,
            });
            if !a.json {
                println!(
                    "{:<11} batch {:>2}: {:>8.2} images/s  encode {:>7.2} ms  prior {:>8.2} ms ({:>6.1} passes, {:.2} ms/pass)  decode {:>7.2} ms  filter {:>6.2} ms  resampled {:>5.1}  peak {:>6.0} MiB",
                    row["mode"].as_str().unwrap_or(""), b, n as f64 / secs, ms["encode"], ms["prior"], passes, ms["prior"] / passes.max(1.0), ms["decode"], ms["filter"], resampled, peak_rss_mib().unwrap_or(0.0)
                );
                if let (Some(same), Some(ok)) = (same_images, agrees) {
                    let verdict = if ok { "the same positions" } else { "DIFFERENT positions" };
                    println!("            naive ran the first {n} image(s): incremental resampled {same:.1} on those, {verdict}");
                }
            }
            if mode == ResampleMode::Incremental {
                let roof = vqad::runtime::roofline::roofline(&pkg.files, precision, (ms["encode"], ms["prior"], ms["decode"]), passes, &peak)?;
                if !a.json {
                    for r in &roof {
                        println!(
                            "            {:<16} {:>7.3} GOP/pass × {:>5.1} passes in {:>8.2} ms: {:>6.1} GOP/s = {:>5.1}% of the {} peak ({:.1}); {:.1} M elementwise/pass",
                            r.graph, r.gop_per_pass, r.passes_per_image, r.ms_per_image, r.achieved_gops, r.share_of_peak * 100.0, if r.integer { "int8" } else { "fp32" }, r.peak_gops, r.elementwise_mops_per_pass
                        );
                    }
                }
                rooflines.push(serde_json::json!({"precision": precision, "batch": b, "graphs": roof}));
            }
            rows.push(row);
        }
    }
    }
    let speedups: Vec<serde_json::Value> = batches
        .iter()
        .filter_map(|&b| {
            let first = rows.first().map(|r| r["precision"].clone()).unwrap_or_default();
            let get = |m: &str| rows.iter().find(|r| r["mode"] == m && r["batch"] == b && r["precision"] == first).and_then(|r| r["images_per_s"].as_f64());
            let pass = |m: &str| rows.iter().find(|r| r["mode"] == m && r["batch"] == b && r["precision"] == first).and_then(|r| r["prior_passes_per_image"].as_f64());
            Some(serde_json::json!({"batch": b, "speedup": get("incremental")? / get("naive")?, "pass_ratio": pass("naive")? / pass("incremental")?}))
        })
        .collect();
    // Each precision against the first one listed, incremental, per batch size.
    let mut versus = vec![];
    for &b in &batches {
        let ips = |p: &serde_json::Value| rows.iter().find(|r| r["mode"] == "incremental" && r["batch"] == b && r["precision"] == *p).and_then(|r| r["images_per_s"].as_f64());
        let first = rows.first().map(|r| r["precision"].clone()).unwrap_or_default();
        let mut seen = vec![];
        for r in rows.iter().filter(|r| r["mode"] == "incremental" && r["batch"] == b) {
            if r["precision"] != first && !seen.contains(&r["precision"]) {
                seen.push(r["precision"].clone());
                if let (Some(x), Some(y)) = (ips(&r["precision"]), ips(&first)) {
                    versus.push(serde_json::json!({"batch": b, "precision": r["precision"], "against": first, "speedup": x / y}));
                }
            }
        }
    }
    if !a.json {
        for v in &versus {
            println!("batch {}: {} runs {:.2}× the images/s of {}", v["batch"], v["precision"].as_str().unwrap_or(""), v["speedup"].as_f64().unwrap_or(0.0), v["against"].as_str().unwrap_or(""));
        }
        for s in &speedups {
            println!("batch {}: incremental is {:.1}× the naive loop's images/s with {:.1}× fewer prior passes", s["batch"], s["speedup"].as_f64().unwrap_or(0.0), s["pass_ratio"].as_f64().unwrap_or(0.0));
        }
        println!("providers: {:?}; package {} {}; peak memory {:.0} MiB", det.providers(), pkg.manifest.name, pkg.manifest.version, peak_rss_mib().unwrap_or(0.0));
    } else {
        super::print_json(&serde_json::json!({"package": pkg.manifest.name, "version": pkg.manifest.version, "providers": det.providers(), "rows": rows, "speedups": speedups, "precision_speedups": versus, "peak": {"fp32_gflops": peak.fp32_gflops, "int8_gops": peak.int8_gops, "n": peak.n, "threads": peak.threads}, "roofline": rooflines, "peak_rss_mib": peak_rss_mib()}))?;
    }
    Ok(0)
}

#[derive(Args)]
pub struct CompatArgs {
    /// The .vqad package.
    pub package: PathBuf,
    /// Trusted public key.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// Execution providers in order of preference: tensorrt, cuda, cpu.
    #[arg(long, default_value = "tensorrt,cuda,cpu")]
    pub ep: String,
    /// Require the first provider for every graph and every node (CPU fallback disabled);
    /// exit code 7 when it is unavailable or refuses a node.
    #[arg(long)]
    pub strict_ep: bool,
    #[command(flatten)]
    pub plugins: PluginFlags,
    /// Which of the package's precisions to place: fp32, fp16 or int8.
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// Path to libonnxruntime (default: $VQAD_ORT_LIB, beside the executable, the set-up cache).
    #[arg(long, env = "VQAD_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Exit code of `vqad compat` when a required provider is unavailable here.
pub const EXIT_PROVIDER_UNAVAILABLE: i32 = 7;

pub fn compat(a: CompatArgs) -> anyhow::Result<i32> {
    use vqad::runtime::session::SessionError;
    let providers = parse_providers(&a.ep)?;
    anyhow::ensure!(!providers.is_empty(), "--ep names no provider");
    let precision: vqad::onnx::Precision = a.precision.parse()?;
    let key = TrustedKey::load(&a.pubkey)?;
    let pkg = VerifiedPackage::open(&a.package, &key).with_context(|| format!("{}: verification failed", a.package.display()))?;
    if precision != vqad::onnx::Precision::Fp32 {
        vqad::runtime::variant::resolve(vqad::runtime::variant::PrecisionRequest::Exact(precision), &pkg.manifest, &providers)?;
    }
    let opts = SessionOptions {
        providers: providers.clone(),
        strict: a.strict_ep,
        ort_lib: a.ort_lib.clone(),
        ep_libraries: a.plugins.libraries()?,
        ep_options: a.plugins.options()?,
        ..Default::default()
    };
    let plugins = vqad::runtime::session::register_plugins(&opts.ep_libraries, a.ort_lib.as_deref())?;
    for p in &plugins {
        if p.devices.is_empty() {
            eprintln!("plugin {} ({}): registered, and offered no device on this host", p.name, p.path.display());
        } else {
            eprintln!("plugin {} ({}): offers {}", p.name, p.path.display(), p.devices.join(", "));
        }
    }
    let scratch = tempfile::Builder::new().prefix("vqad-compat-").tempdir()?;
    let placed = match vqad::runtime::compat::placement(&pkg.files, precision, &pkg.manifest.model, &opts, scratch.path()) {
        Ok(p) => p,
        Err(SessionError::Provider { graph, provider, reason }) => {
            let name = match provider {
                vqad::runtime::session::Provider::TensorRT => "TensorRT",
                vqad::runtime::session::Provider::Cuda => "CUDA",
                vqad::runtime::session::Provider::Cpu => "CPU",
                vqad::runtime::session::Provider::Plugin => "plugin",
            };
            eprintln!("error: {name} provider unavailable for {graph} on this host (--strict-ep allows no fallback): {reason}");
            if a.json {
                super::print_json(&serde_json::json!({"verdict": "unavailable", "provider": provider, "graph": graph, "reason": reason}))?;
            }
            return Ok(EXIT_PROVIDER_UNAVAILABLE);
        }
        Err(e) => return Err(e.into()),
    };
    let fell_back: usize = placed.iter().map(|p| p.fell_back.len()).sum();
    let first = providers[0];
    let off_first: Vec<&str> = placed.iter().filter(|p| p.session_provider != first).map(|p| p.graph.as_str()).collect();
    let verdict = if !off_first.is_empty() {
        format!("{} ran on a later provider than {first} ({})", off_first.join(", "), placed.iter().map(|p| format!("{}: {}", p.graph, p.session_provider)).collect::<Vec<_>>().join(", "))
    } else if fell_back > 0 {
        format!("{fell_back} node(s) fell back to CPU")
    } else {
        format!("every node on {first}")
    };
    let ort = vqad::runtime::session::ort_version().unwrap_or_else(|| "?".into());
    if a.json {
        super::print_json(&serde_json::json!({"package": pkg.manifest.id(), "precision": precision, "onnxruntime": ort, "plugins": plugins, "graphs": placed, "verdict": verdict}))?;
    } else {
        println!("{} ({precision}) on ONNX Runtime {ort}, providers {}:", pkg.manifest.id(), a.ep);
        for p in &placed {
            let by: Vec<String> = p.nodes_by_provider.iter().map(|(k, v)| format!("{v} on {k}")).collect();
            println!("  {:<22} opset {} IR {}: session on {}, {} nodes as run ({})", p.file, p.opset, p.ir_version, p.session_provider, p.total(), by.join(", "));
            for (node, op) in p.fell_back.iter().take(20) {
                println!("      {node} ({op}) fell back to CPU: {} offers no kernel for it", p.session_provider);
            }
        }
        println!("verdict: {verdict}");
    }
    Ok(if a.strict_ep && (fell_back > 0 || !off_first.is_empty()) { EXIT_PROVIDER_UNAVAILABLE } else { 0 })
}
