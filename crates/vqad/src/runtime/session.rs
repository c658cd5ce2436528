//! ONNX Runtime: one environment loaded from the set-up's library, and sessions placed on the
//! first execution provider of an ordered list that really registers.
//!
//! Each provider is registered alone with `error_on_failure`, so a provider that cannot run is
//! noticed and the next one tried; the provider that took the session is recorded. With
//! `strict`, only the first provider in the list is acceptable.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Failures of the ONNX Runtime layer.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    NotFound(#[from] crate::native::NativeError),
    #[error("loading ONNX Runtime from {0}: {1}")]
    Load(PathBuf, String),
    #[error("ONNX Runtime was already loaded from {0}; cannot switch to {1} in one process")]
    Conflict(PathBuf, PathBuf),
    #[error("{graph}: execution provider {provider} is not usable here: {reason}")]
    Provider { graph: String, provider: Provider, reason: String },
    #[error("{graph}: no execution provider could run it (tried {tried})")]
    NoProvider { graph: String, tried: String },
    #[error("{graph}: {reason}")]
    Run { graph: String, reason: String },
    #[error("unknown execution provider '{0}' (expected tensorrt, cuda or cpu)")]
    UnknownProvider(String),
    #[error("--ep-library '{0}': expected NAME=PATH (e.g. openvino=/path/libonnxruntime_providers_openvino_plugin.so)")]
    BadLibrary(String),
    #[error("execution provider plugin {name} ({path}): {reason}")]
    Plugin { name: String, path: PathBuf, reason: String },
}

/// Execution providers vqad knows, in the order it prefers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    TensorRT,
    Cuda,
    Cpu,
    /// A device offered by a plugin execution-provider library (`--ep-library`).
    Plugin,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::TensorRT => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
            Provider::Plugin => "plugin",
        })
    }
}

impl std::str::FromStr for Provider {
    type Err = SessionError;
    fn from_str(s: &str) -> Result<Self, SessionError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tensorrt" | "trt" => Ok(Provider::TensorRT),
            "cuda" => Ok(Provider::Cuda),
            "cpu" => Ok(Provider::Cpu),
            o => Err(SessionError::UnknownProvider(o.into())),
        }
    }
}

/// Parses `tensorrt,cuda,cpu`.
pub fn parse_providers(list: &str) -> Result<Vec<Provider>, SessionError> {
    list.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect()
}

/// The default order: fastest first, CPU always works.
pub const DEFAULT_PROVIDERS: [Provider; 3] = [Provider::TensorRT, Provider::Cuda, Provider::Cpu];

struct Loaded {
    lib: PathBuf,
    env: ort::environment::Environment,
}

static ORT: OnceLock<Loaded> = OnceLock::new();

/// Loads ONNX Runtime once per process (search order in [`crate::native::find_ort_library`]).
pub fn environment(lib_flag: Option<&Path>) -> Result<&'static ort::environment::Environment, SessionError> {
    if let Some(l) = ORT.get() {
        if let Some(flag) = lib_flag {
            let want = std::fs::canonicalize(flag).unwrap_or_else(|_| flag.to_path_buf());
            if want.is_file() && want != l.lib {
                return Err(SessionError::Conflict(l.lib.clone(), want));
            }
        }
        return Ok(&l.env);
    }
    let lib = crate::native::find_ort_library(lib_flag)?;
    let env = ort::init_from(&lib)
        .map_err(|e| SessionError::Load(lib.clone(), e.to_string()))?
        .with_name("vqad")
        .build()
        .map_err(|e| SessionError::Load(lib.clone(), e.to_string()))?;
    let _ = ORT.set(Loaded { lib, env });
    Ok(&ORT.get().expect("just set").env)
}

/// ONNX Runtime's version, once loaded: from the versioned library file name
/// (`libonnxruntime.so.1.31.1`), else ONNX Runtime's build-info string.
pub fn ort_version() -> Option<String> {
    let l = ORT.get()?;
    let name = l.lib.file_name()?.to_string_lossy().into_owned();
    Some(match name.split_once(".so.") {
        Some((_, v)) if !v.is_empty() => v.to_string(),
        _ => ort::info().to_string(),
    })
}

/// Where and how sessions are created.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub providers: Vec<Provider>,
    /// Fail instead of falling back when the first provider cannot take a graph.
    pub strict: bool,
    /// TensorRT engine cache folder (already keyed by the caller: package digest, GPU, versions).
    pub trt_cache: Option<PathBuf>,
    /// Intra-op threads (0 = ONNX Runtime's default: all cores).
    pub threads: usize,
    pub ort_lib: Option<PathBuf>,
    /// Plugin execution-provider libraries to register and try first (their devices).
    pub ep_libraries: Vec<EpLibrary>,
    /// Provider options passed to the plugins' devices (`KEY=VALUE`).
    pub ep_options: Vec<(String, String)>,
    /// Write ONNX Runtime's profile (per-node kernel times and providers) with this file
    /// prefix; read back with [`Graph::end_profiling`].
    pub profile: Option<PathBuf>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { providers: DEFAULT_PROVIDERS.to_vec(), strict: false, trt_cache: None, threads: 0, ort_lib: None, ep_libraries: vec![], ep_options: vec![], profile: None }
    }
}

/// A loaded graph and the provider that runs it.
pub struct Graph {
    pub name: String,
    pub session: ort::session::Session,
    pub provider: Provider,
}

fn dispatch(p: Provider, opts: &SessionOptions) -> ort::ep::ExecutionProviderDispatch {
    match p {
        Provider::TensorRT => {
            let mut trt = ort::ep::TensorRT::default();
            if let Some(dir) = &opts.trt_cache {
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display().to_string())
                    .with_timing_cache(true)
                    .with_timing_cache_path(dir.display().to_string());
            }
            trt.build().error_on_failure()
        }
        Provider::Cuda => ort::ep::CUDA::default().build().error_on_failure(),
        Provider::Cpu | Provider::Plugin => ort::ep::CPU::default().build().error_on_failure(),
    }
}

/// A plugin execution-provider library: `NAME=PATH` (ONNX Runtime ≥ 1.23's plugin EP API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpLibrary {
    pub name: String,
    pub path: PathBuf,
}

impl std::str::FromStr for EpLibrary {
    type Err = SessionError;
    fn from_str(s: &str) -> Result<Self, SessionError> {
        match s.split_once('=') {
            Some((n, p)) if !n.trim().is_empty() && !p.trim().is_empty() => Ok(EpLibrary { name: n.trim().into(), path: PathBuf::from(p.trim()) }),
            _ => Err(SessionError::BadLibrary(s.into())),
        }
    }
}

/// What a registered plugin offers on this host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub path: PathBuf,
    /// Execution providers of the devices it added (e.g. `OpenVINOExecutionProvider`).
    pub eps: Vec<String>,
    /// Those devices, described (`OpenVINOExecutionProvider: Intel GPU 0`).
    pub devices: Vec<String>,
}

static PLUGINS: std::sync::Mutex<Vec<PluginStatus>> = std::sync::Mutex::new(Vec::new());

fn describe(d: &ort::device::Device<'_>) -> (String, String) {
    let ep = d.ep().unwrap_or("?").to_string();
    let hw = d.hardware_device();
    (ep.clone(), format!("{ep}: {} {:?} {}", hw.vendor().unwrap_or("?"), hw.ty(), hw.id()))
}

/// Registers each library once per process and reports the devices it added.
pub fn register_plugins(libs: &[EpLibrary], ort_lib: Option<&Path>) -> Result<Vec<PluginStatus>, SessionError> {
    let env = environment(ort_lib)?;
    let mut known = PLUGINS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = vec![];
    for lib in libs {
        if let Some(s) = known.iter().find(|s| s.name == lib.name) {
            out.push(s.clone());
            continue;
        }
        let bad = |reason: String| SessionError::Plugin { name: lib.name.clone(), path: lib.path.clone(), reason };
        if !lib.path.is_file() {
            return Err(bad("no such library file".into()));
        }
        let before: Vec<String> = env.devices().map(|d| describe(&d).1).collect();
        env.register_ep_library(&lib.name, &lib.path).map_err(|e| bad(format!("ONNX Runtime could not register it: {e}")))?;
        let added: Vec<(String, String)> = env.devices().map(|d| describe(&d)).filter(|(_, desc)| !before.contains(desc)).collect();
        let mut eps: Vec<String> = added.iter().map(|(e, _)| e.clone()).collect();
        eps.dedup();
        let status = PluginStatus { name: lib.name.clone(), path: lib.path.clone(), eps, devices: added.into_iter().map(|(_, d)| d).collect() };
        if status.devices.is_empty() {
            tracing::warn!("execution provider plugin {} ({}) registered and offered no device on this host", lib.name, lib.path.display());
        } else {
            tracing::info!("execution provider plugin {} offers {}", lib.name, status.devices.join(", "));
        }
        known.push(status.clone());
        out.push(status);
    }
    Ok(out)
}

/// A session builder with what every session shares, on a provider or on plugin devices:
/// intra-op threads, ONNX Runtime's profiler when [`SessionOptions::profile`] asks for it, and
/// no per-node CPU fallback when `no_cpu_fallback`.
fn builder(env: &ort::environment::Environment, opts: &SessionOptions, no_cpu_fallback: bool) -> Result<ort::session::builder::SessionBuilder, String> {
    let mut b = ort::session::Session::builder(env).map_err(|e| e.to_string())?;
    if opts.threads > 0 {
        b = b.with_intra_threads(opts.threads).map_err(|e| e.to_string())?;
    }
    if no_cpu_fallback {
        b = b.with_disable_cpu_fallback().map_err(|e| e.to_string())?;
    }
    if let Some(prefix) = &opts.profile {
        b = b.with_profiling(prefix).map_err(|e| e.to_string())?;
    }
    Ok(b)
}

/// A session on the devices the plugins offer; `Ok(None)` when they offer none.
fn open_on_plugins(name: &str, bytes: &[u8], opts: &SessionOptions) -> Result<Option<Graph>, SessionError> {
    let plugins = register_plugins(&opts.ep_libraries, opts.ort_lib.as_deref())?;
    let eps: Vec<String> = plugins.iter().flat_map(|p| p.eps.clone()).collect();
    if eps.is_empty() {
        let names: Vec<String> = plugins.iter().map(|p| format!("{} ({})", p.name, p.path.display())).collect();
        let reason = format!("registered and offered no device on this host: {}", names.join(", "));
        if opts.strict {
            return Err(SessionError::Provider { graph: name.into(), provider: Provider::Plugin, reason });
        }
        tracing::info!("{name}: execution provider plugin {reason}; using {}", opts.providers.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","));
        return Ok(None);
    }
    let env = environment(opts.ort_lib.as_deref())?;
    let attempt = (|| -> Result<ort::session::Session, String> {
        let devices = env.devices().filter(|d| d.ep().is_ok_and(|e| eps.iter().any(|x| x == e)));
        let mut b = builder(env, opts, opts.strict)?.with_devices(devices, Some(&opts.ep_options)).map_err(|e| e.to_string())?;
        b.commit_from_memory(bytes).map_err(|e| e.to_string())
    })();
    match attempt {
        Ok(session) => Ok(Some(Graph { name: name.into(), session, provider: Provider::Plugin })),
        Err(reason) if opts.strict => Err(SessionError::Provider { graph: name.into(), provider: Provider::Plugin, reason }),
        Err(reason) => {
            tracing::info!("{name}: plugin devices ({}) could not take it ({reason}); trying the next provider", eps.join(", "));
            Ok(None)
        }
    }
}

/// Creates a session for `bytes` on the first provider of `opts.providers` that works.
pub fn open_graph(name: &str, bytes: &[u8], opts: &SessionOptions) -> Result<Graph, SessionError> {
    let env = environment(opts.ort_lib.as_deref())?;
    if !opts.ep_libraries.is_empty() {
        if let Some(g) = open_on_plugins(name, bytes, opts)? {
            return Ok(g);
        }
    }
    let mut tried = vec![];
    for (i, &p) in opts.providers.iter().enumerate() {
        let attempt = (|| -> Result<ort::session::Session, String> {
            // Strict means every node on this provider: no silent per-node CPU fallback.
            let b = builder(env, opts, opts.strict && p != Provider::Cpu)?;
            let b = b.with_no_environment_execution_providers().map_err(|e| e.to_string())?;
            let mut b = b.with_execution_providers([dispatch(p, opts)]).map_err(|e| e.to_string())?;
            b.commit_from_memory(bytes).map_err(|e| e.to_string())
        })();
        match attempt {
            Ok(session) => return Ok(Graph { name: name.into(), session, provider: p }),
            Err(reason) => {
                if opts.strict && i == 0 {
                    return Err(SessionError::Provider { graph: name.into(), provider: p, reason });
                }
                tracing::info!("{name}: provider {p} unavailable ({reason}); trying the next");
                tried.push(format!("{p}: {reason}"));
            }
        }
    }
    Err(SessionError::NoProvider { graph: name.into(), tried: tried.join("; ") })
}

impl Graph {
    /// Runs a single-input, single-output graph.
    pub fn run_one<I, O>(&mut self, input: ndarray::ArrayD<I>) -> Result<ndarray::ArrayD<O>, SessionError>
    where
        I: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
        O: ort::value::PrimitiveTensorElementType + Clone + 'static,
    {
        let err = |e: ort::Error| SessionError::Run { graph: self.name.clone(), reason: e.to_string() };
        let t = ort::value::Tensor::from_array(input).map_err(err)?;
        let name = self.name.clone();
        let outputs = self.session.run(ort::inputs![t]).map_err(|e| SessionError::Run { graph: name.clone(), reason: e.to_string() })?;
        let arr = outputs[0].try_extract_array::<O>().map_err(|e| SessionError::Run { graph: name, reason: e.to_string() })?;
        Ok(arr.to_owned())
    }

    /// Ends profiling (sessions opened with [`SessionOptions::profile`]); returns the JSON file.
    pub fn end_profiling(&mut self) -> Result<PathBuf, SessionError> {
        self.session.end_profiling().map(PathBuf::from).map_err(|e| SessionError::Run { graph: self.name.clone(), reason: e.to_string() })
    }

    /// Runs a single-input graph and returns every float32 output by name (calibration).
    pub fn run_all_f32<I>(&mut self, input: ndarray::ArrayD<I>) -> Result<Vec<(String, ndarray::ArrayD<f32>)>, SessionError>
    where
        I: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
    {
        let name = self.name.clone();
        let err = |e: ort::Error| SessionError::Run { graph: name.clone(), reason: e.to_string() };
        let t = ort::value::Tensor::from_array(input).map_err(err)?;
        let outputs = self.session.run(ort::inputs![t]).map_err(err)?;
        let mut out = vec![];
        for (n, v) in &outputs {
            if let Ok(a) = v.try_extract_array::<f32>() {
                out.push((n.to_string(), a.to_owned()));
            }
        }
        Ok(out)
    }
}
