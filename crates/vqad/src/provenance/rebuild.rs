//! `vqad audit --rebuild`: retrain from what the provenance records and compare the trained
//! files bit for bit; where they differ, measure by how much (largest weight difference, final
//! losses) instead of passing or failing silently. The training itself is the caller's
//! ([`Rebuilder`]): the CLI runs `vqad-train` in child processes, so the recorded thread and
//! instruction-set variables are set before libtorch starts.

use super::build::BuildProvenance;
use crate::package::VerifiedPackage;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// What a rebuild asks the training stack for.
#[derive(Debug, Clone)]
pub struct RebuildRequest<'a> {
    /// The category folder (its train/good was checked against the provenance).
    pub data: &'a Path,
    pub config: &'a serde_json::Value,
    pub seed: u64,
    pub kind: &'a str,
    pub preset: &'a str,
    /// Environment to train with (threads, instruction set), as recorded.
    pub environment: &'a BTreeMap<String, String>,
    pub device: &'a str,
}

/// What a rebuild produced.
#[derive(Debug, Clone, Default)]
pub struct Rebuilt {
    /// The three graphs and `codebook.npy`.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The run's final losses, named as the manifest names them.
    pub final_losses: BTreeMap<String, f64>,
    pub seconds: f64,
}

/// Retrains and exports (the CLI runs `vqad-train`; vqad itself has no libtorch).
pub type Rebuilder<'a> = &'a dyn Fn(&RebuildRequest) -> Result<Rebuilt, String>;

/// The rebuild's comparison, for the JSON report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildResult {
    pub seconds: f64,
    pub identical: bool,
    /// File → (packaged sha256, rebuilt sha256).
    pub files: BTreeMap<String, (String, String)>,
    /// Largest absolute weight difference per differing file (graph initializers, codebook).
    pub max_weight_difference: BTreeMap<String, f64>,
    /// Final loss → rebuilt − packaged.
    pub loss_differences: BTreeMap<String, f64>,
}

pub(crate) fn check_rebuild(p: &BuildProvenance, pkg: &VerifiedPackage, data: &Path, rebuild: Rebuilder) -> (Result<String, String>, Option<RebuildResult>) {
    let ext = p.external();
    let int = p.internal();
    let req = RebuildRequest {
        data,
        config: &ext.config,
        seed: ext.seed,
        kind: &ext.kind,
        preset: &ext.preset,
        environment: &int.environment,
        device: &int.device,
    };
    let rebuilt = match rebuild(&req) {
        Ok(r) => r,
        Err(e) => return (Err(format!("the rebuild failed: {e}")), None),
    };
    let mut res = RebuildResult { seconds: rebuilt.seconds, identical: true, ..Default::default() };
    for name in crate::package::GRAPH_FILES.iter().chain([&crate::package::CODEBOOK_FILE]) {
        let packaged = crate::fsutil::sha256_hex(&pkg.files[*name]);
        let ours = rebuilt.files.get(*name).map(|b| crate::fsutil::sha256_hex(b)).unwrap_or_else(|| "(missing)".into());
        if packaged != ours {
            res.identical = false;
            let diff = rebuilt.files.get(*name).map(|b| max_weight_difference(name, &pkg.files[*name], b)).unwrap_or(f64::INFINITY);
            res.max_weight_difference.insert(name.to_string(), diff);
        }
        res.files.insert(name.to_string(), (packaged, ours));
    }
    for (k, v) in &pkg.manifest.provenance.final_losses {
        if let Some(x) = rebuilt.final_losses.get(k) {
            res.loss_differences.insert(k.clone(), x - v);
        }
    }
    let env = if int.environment.is_empty() { "no thread or ISA variables set".to_string() } else { int.environment.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ") };
    let text = if res.identical {
        Ok(format!(
            "bit-identical in {:.1} s on {} ({env}): {}",
            res.seconds,
            int.device,
            res.files.iter().map(|(n, (d, _))| format!("{n} {}…", &d[..12])).collect::<Vec<_>>().join(", ")
        ))
    } else {
        let weights: Vec<String> = res.max_weight_difference.iter().map(|(n, d)| format!("{n} max |Δw| {d:.3e}")).collect();
        let losses: Vec<String> = res.loss_differences.iter().map(|(n, d)| format!("{n} Δ {d:+.3e}")).collect();
        Err(format!(
            "rebuilt in {:.1} s ({env}); {} of 4 files differ: {}; final losses: {}",
            res.seconds,
            res.max_weight_difference.len(),
            weights.join(", "),
            if losses.is_empty() { "not compared".into() } else { losses.join(", ") }
        ))
    };
    (text, Some(res))
}

/// Largest absolute difference between the float weights of two versions of a file: the
/// codebook's values, or a graph's initializers matched by name (∞ where shapes differ).
pub fn max_weight_difference(name: &str, a: &[u8], b: &[u8]) -> f64 {
    let floats = |bytes: &[u8]| -> Option<BTreeMap<String, Vec<f32>>> {
        if name.ends_with(".npy") {
            let arr: ndarray::ArrayD<f32> = ndarray_npy::ReadNpyExt::read_npy(std::io::Cursor::new(bytes)).ok()?;
            return Some(BTreeMap::from([(String::new(), arr.iter().copied().collect())]));
        }
        let m: crate::onnx::proto::ModelProto = prost::Message::decode(bytes).ok()?;
        Some(
            m.graph?
                .initializer
                .into_iter()
                .filter(|t| t.data_type == Some(1))
                .map(|t| {
                    let raw = t.raw_data.unwrap_or_default();
                    (t.name.unwrap_or_default(), raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
                })
                .collect(),
        )
    };
    let (Some(x), Some(y)) = (floats(a), floats(b)) else { return f64::INFINITY };
    let mut worst = 0f64;
    for (k, va) in &x {
        match y.get(k) {
            Some(vb) if vb.len() == va.len() => {
                for (p, q) in va.iter().zip(vb) {
                    worst = worst.max((*p as f64 - *q as f64).abs());
                }
            }
            _ => return f64::INFINITY,
        }
    }
    if y.keys().any(|k| !x.contains_key(k)) {
        return f64::INFINITY;
    }
    worst
}
