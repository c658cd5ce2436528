//! The model repository: every `(name, version)` of the registry's index is a model version.
//! Each is verified with [`verify_in_registry`] before it loads; per name the newest version
//! that verifies and loads serves, and requests without a version go to it; with
//! `--versions N` the newest N serve side by side (Triton's "latest N" policy; N = 1 by
//! default) and a request may name any of them. A version that fails stays UNAVAILABLE with
//! its reason and is never served; the others keep serving. A newer version found by [`ModelStore::reconcile`] loads
//! in the background and takes over only once ready; the one it replaces drains its queue.
//! With a channel (`vqad serve --channel production`) the serving version is instead the one
//! the channel's signed head names ([`resolve`]), so a promotion or a rollback takes over the
//! same way; a refused channel record (expired, replayed, bad signature) is reported and
//! leaves the version already serving in place.

use super::metrics::Metrics;
use super::worker::{self, BatchPolicy, WorkerHandle};
use super::{ApiError, ServeConfig};
use crate::registry::{channel_head, list, resolve, verify_in_registry, ResolveOptions};
use crate::package::TrustedKey;
use crate::runtime::session::Provider;
use crate::runtime::DetectorOptions;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A version's state, as the repository index reports it.
#[derive(Clone)]
pub enum VersionState {
    Loading,
    Ready(WorkerHandle),
    Unavailable(String),
}

impl VersionState {
    pub fn label(&self) -> &'static str {
        match self {
            VersionState::Loading => "LOADING",
            VersionState::Ready(_) => "READY",
            VersionState::Unavailable(_) => "UNAVAILABLE",
        }
    }
}

/// One row of the repository index.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IndexRow {
    pub name: String,
    pub version: String,
    pub state: String,
    pub reason: String,
}

#[derive(Default)]
struct ModelEntry {
    /// Every indexed version, oldest first (semver order).
    versions: Vec<(semver::Version, String, VersionState)>,
    /// The version that serves requests without a version.
    serving: Option<String>,
    /// Unloaded through the repository API: polling leaves it alone until loaded again.
    unloaded: bool,
    /// Versions that failed, so polling does not retry them (load retries).
    failed: Vec<String>,
}

/// The repository of model versions behind the server.
pub struct ModelStore {
    registry: PathBuf,
    key: TrustedKey,
    options: DetectorOptions,
    policy: BatchPolicy,
    metrics: Arc<Metrics>,
    models: Mutex<BTreeMap<String, ModelEntry>>,
    /// Serialises reconciliation (loads happen one at a time, outside `models`' lock).
    reconcile_lock: tokio::sync::Mutex<()>,
    /// Follow this channel's head instead of the newest version.
    channel: Option<String>,
    /// Execution providers per model name, overriding `options`' list (`--model-providers`).
    model_providers: BTreeMap<String, Vec<Provider>>,
    /// How many of a model's newest versions serve at once (Triton's "latest N"; 1 with a
    /// channel).
    keep: usize,
}

impl ModelStore {
    /// The store for `cfg`'s registry (nothing is loaded until [`ModelStore::reconcile`]).
    pub fn new(cfg: &ServeConfig, policy: BatchPolicy, metrics: Arc<Metrics>) -> Self {
        ModelStore {
            registry: cfg.registry.clone(),
            key: cfg.key.clone(),
            options: cfg.detector.clone(),
            policy,
            metrics,
            models: Mutex::new(BTreeMap::new()),
            reconcile_lock: tokio::sync::Mutex::new(()),
            channel: cfg.channel.clone(),
            model_providers: cfg.model_providers.clone(),
            keep: cfg.versions.max(1),
        }
    }

    /// The detector options of model `name`: its own provider list where one is given.
    fn options_for(&self, name: &str) -> DetectorOptions {
        let mut o = self.options.clone();
        if let Some(p) = self.model_providers.get(name) {
            o.session.providers = p.clone();
        }
        o
    }

    /// The version `name@channel` names now, after verifying the channel's records (cheap:
    /// the package itself is verified, with the record's digest, only when it is loaded).
    #[allow(clippy::result_large_err)] // the closure returns a RegistryError, see registry/mod.rs
    async fn channel_head(&self, name: &str, channel: &str) -> Result<String, String> {
        let (reg, key, name, ch) = (self.registry.clone(), self.key.clone(), name.to_string(), channel.to_string());
        tokio::task::spawn_blocking(move || channel_head(&reg, &name, &ch, &key, &ResolveOptions::default()).map(|h| h.record.version))
            .await
            .map_err(|e| format!("resolving the channel panicked: {e}"))?
            .map_err(|e| format!("channel '{channel}' refused: {e}"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ModelEntry>> {
        self.models.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the registry index and loads, per name, the newest version not yet tried, unless
    /// it already serves. `only`: one name, with `force` (repository load) clearing its
    /// unloaded flag and past failures first.
    pub async fn reconcile(self: &Arc<Self>, only: Option<&str>, force: bool) -> Result<(), ApiError> {
        let _guard = self.reconcile_lock.lock().await;
        let reg = self.registry.clone();
        let entries = tokio::task::spawn_blocking(move || list(&reg, None))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(format!("reading the registry: {e}")))?;
        let mut by_name: BTreeMap<String, Vec<(semver::Version, String, PathBuf)>> = BTreeMap::new();
        for e in entries {
            let v = semver::Version::parse(&e.version).unwrap_or_else(|_| semver::Version::new(0, 0, 0));
            by_name.entry(e.name.clone()).or_default().push((v, e.version.clone(), self.registry.join(&e.path)));
        }
        if let Some(n) = only {
            if !by_name.contains_key(n) {
                return Err(ApiError::not_found(format!("model '{n}' is not in the registry {}", self.registry.display())));
            }
        }
        for (name, mut versions) in by_name {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            versions.sort();
            // With a channel, its signed head is the only candidate.
            let head = match &self.channel {
                None => None,
                Some(ch) => match self.channel_head(&name, ch).await {
                    Ok(v) => Some(v),
                    Err(reason) => {
                        tracing::warn!(model = %name, %reason, "channel head not usable; nothing new loads");
                        let mut models = self.lock();
                        let entry = models.entry(name.clone()).or_default();
                        if entry.serving.is_none() {
                            if let Some((sv, v, _)) = versions.last() {
                                match entry.versions.iter_mut().find(|(_, x, _)| x == v) {
                                    Some(slot) => slot.2 = VersionState::Unavailable(reason),
                                    None => entry.versions.push((sv.clone(), v.clone(), VersionState::Unavailable(reason))),
                                }
                            }
                        }
                        continue;
                    }
                },
            };
            let candidates: Vec<(String, PathBuf)> = {
                let mut models = self.lock();
                let entry = models.entry(name.clone()).or_default();
                if force {
                    entry.unloaded = false;
                    entry.failed.clear();
                }
                // Record every indexed version.
                for (sv, v, _) in &versions {
                    if !entry.versions.iter().any(|(_, x, _)| x == v) {
                        entry.versions.push((sv.clone(), v.clone(), VersionState::Unavailable("not loaded".into())));
                    }
                }
                entry.versions.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
                if entry.unloaded {
                    continue;
                }
                let mut c = vec![];
                if let Some(h) = &head {
                    if entry.serving.as_deref() != Some(h.as_str()) && !entry.failed.contains(h) {
                        if let Some((_, v, path)) = versions.iter().find(|(_, v, _)| v == h) {
                            c.push((v.clone(), path.clone()));
                        }
                    }
                }
                // Newest first, down to the `keep`-th version already serving: what is missing
                // above it loads (an older candidate only if a newer one fails).
                let mut serving_seen = 0;
                for (_, v, path) in versions.iter().rev().filter(|_| head.is_none()) {
                    if serving_seen >= self.keep {
                        break;
                    }
                    if entry.versions.iter().any(|(_, x, st)| x == v && matches!(st, VersionState::Ready(_))) {
                        serving_seen += 1;
                    } else if !entry.failed.contains(v) {
                        c.push((v.clone(), path.clone()));
                    }
                }
                c
            };
            let want = if head.is_some() { 1 } else { self.keep };
            let mut loaded_now = 0;
            for (version, path) in candidates {
                if loaded_now >= want {
                    break;
                }
                self.set_state(&name, &version, VersionState::Loading);
                tracing::info!(model = %name, version = %version, "verifying and loading");
                let (reg, key, opts, policy, metrics, channel, n, v) = (
                    self.registry.clone(),
                    self.key.clone(),
                    self.options_for(&name),
                    self.policy,
                    self.metrics.clone(),
                    self.channel.clone(),
                    name.clone(),
                    version.clone(),
                );
                let loaded = tokio::task::spawn_blocking(move || {
                    let pkg = match channel {
                        // The package with the digest the channel's record signs, verified once.
                        Some(ch) => {
                            let r = resolve(&reg, &format!("{n}@{ch}"), &key, &ResolveOptions::default())
                                .map_err(|e| format!("refused: channel '{ch}': {e}"))?;
                            if r.version != v {
                                return Err(format!("channel '{ch}' moved to {} while {v} was loading", r.version));
                            }
                            r.package
                        }
                        None => verify_in_registry(&path, &reg, &key).map_err(|e| format!("refused: verification failed: {e}"))?,
                    };
                    worker::spawn(pkg, opts, policy, metrics)
                })
                .await
                .unwrap_or_else(|e| Err(format!("loading panicked: {e}")));
                match loaded {
                    Ok(handle) => {
                        tracing::info!(
                            model = %name,
                            version = %version,
                            providers = ?handle.info.providers,
                            precision = %handle.info.precision,
                            instances = handle.info.instances,
                            threads = handle.info.threads,
                            "ready"
                        );
                        self.install(&name, &version, handle, want, head.is_some());
                        loaded_now += 1;
                    }
                    Err(reason) => {
                        tracing::warn!(model = %name, version = %version, %reason, "not serving");
                        self.set_state(&name, &version, VersionState::Unavailable(reason));
                        self.lock().entry(name.clone()).or_default().failed.push(version.clone());
                    }
                }
            }
        }
        Ok(())
    }

    fn set_state(&self, name: &str, version: &str, state: VersionState) {
        let mut models = self.lock();
        if let Some(e) = models.get_mut(name) {
            if let Some(slot) = e.versions.iter_mut().find(|(_, v, _)| v == version) {
                slot.2 = state;
            }
        }
    }

    /// Marks `version` ready. The newest `keep` ready versions serve; the newest of them takes
    /// requests without a version; a ready version beyond `keep` stops taking requests and
    /// drains (its workers exit once the last handle is dropped).
    /// With `pinned` (a channel's head) `version` serves whatever its number.
    fn install(&self, name: &str, version: &str, handle: WorkerHandle, keep: usize, pinned: bool) {
        let mut models = self.lock();
        let e = models.entry(name.to_string()).or_default();
        self.metrics.model_precision.with_label_values(&[name, version, &handle.info.precision]).set(1);
        if let Some(slot) = e.versions.iter_mut().find(|(_, v, _)| v == version) {
            slot.2 = VersionState::Ready(handle);
        }
        self.metrics.model_ready.with_label_values(&[name, version]).set(1);
        // Newest first; a pinned version first of all (a rollback makes an older one the head).
        let mut order: Vec<usize> = (0..e.versions.len()).filter(|&i| matches!(e.versions[i].2, VersionState::Ready(_))).collect();
        let first = |i: usize| pinned && e.versions[i].1 == version;
        order.sort_by(|&a, &b| first(b).cmp(&first(a)).then(e.versions[b].0.cmp(&e.versions[a].0)));
        let newest = e.versions[order[0]].1.clone();
        for &i in order.iter().skip(keep.max(1)) {
            let old = e.versions[i].1.clone();
            e.versions[i].2 = VersionState::Unavailable(format!("superseded by version {newest}"));
            self.metrics.model_ready.with_label_values(&[name, &old]).set(0);
            self.metrics.instances.with_label_values(&[name, &old]).set(0);
        }
        e.serving = Some(newest);
    }

    /// Stops serving every version of `name` until it is loaded again.
    pub fn unload(&self, name: &str) -> Result<(), ApiError> {
        let mut models = self.lock();
        let e = models.get_mut(name).ok_or_else(|| ApiError::not_found(format!("unknown model '{name}'")))?;
        e.unloaded = true;
        e.serving = None;
        for (_, v, s) in e.versions.iter_mut() {
            if matches!(s, VersionState::Ready(_)) {
                self.metrics.model_ready.with_label_values(&[name, v]).set(0);
                self.metrics.instances.with_label_values(&[name, v]).set(0);
                *s = VersionState::Unavailable("unloaded".into());
            }
        }
        Ok(())
    }

    /// The worker for a request: `version` empty means the serving one.
    pub fn get(&self, name: &str, version: &str) -> Result<WorkerHandle, ApiError> {
        let models = self.lock();
        let e = models.get(name).ok_or_else(|| ApiError::not_found(format!("unknown model '{name}'")))?;
        let version = if version.is_empty() {
            match &e.serving {
                Some(v) => v.clone(),
                None => {
                    let why = e.versions.last().map(|(_, v, s)| match s {
                        VersionState::Unavailable(r) => format!("; version {v}: {r}"),
                        VersionState::Loading => format!("; version {v} is loading"),
                        VersionState::Ready(_) => String::new(),
                    });
                    return Err(ApiError::unavailable(format!("model '{name}' has no ready version{}", why.unwrap_or_default())));
                }
            }
        } else {
            version.to_string()
        };
        match e.versions.iter().find(|(_, v, _)| *v == version) {
            None => Err(ApiError::not_found(format!("model '{name}' has no version '{version}'"))),
            Some((_, _, VersionState::Ready(h))) => Ok(h.clone()),
            Some((_, _, VersionState::Loading)) => Err(ApiError::unavailable(format!("model '{name}' version {version} is loading"))),
            Some((_, _, VersionState::Unavailable(r))) => {
                Err(ApiError::unavailable(format!("model '{name}' version {version} is not ready: {r}")))
            }
        }
    }

    /// Known versions of a model, oldest first.
    pub fn versions(&self, name: &str) -> Option<Vec<String>> {
        self.lock().get(name).map(|e| e.versions.iter().map(|(_, v, _)| v.clone()).collect())
    }

    /// Every indexed version and its state, sorted by name then version.
    pub fn index(&self, ready_only: bool) -> Vec<IndexRow> {
        let models = self.lock();
        let mut rows = vec![];
        for (name, e) in models.iter() {
            for (_, v, s) in &e.versions {
                if ready_only && !matches!(s, VersionState::Ready(_)) {
                    continue;
                }
                let reason = match s {
                    VersionState::Unavailable(r) => r.clone(),
                    _ => String::new(),
                };
                rows.push(IndexRow { name: name.clone(), version: v.clone(), state: s.label().into(), reason });
            }
        }
        rows
    }

    /// Whether any version serves.
    pub fn any_ready(&self) -> bool {
        self.lock().values().any(|e| e.serving.is_some())
    }
}
