//! Where each node of a package's graphs runs on this host (`vqad compat`): each graph is
//! opened on the requested providers, run once on a zero input with ONNX Runtime's profiler on,
//! and the profile's per-node provider is counted. The profile describes the graph as ONNX
//! Runtime runs it, after its own fusions (an INT8 Conv group shows as one `QLinearConv`).

use super::session::{open_graph, Provider, SessionError, SessionOptions};
use super::variant::graphs_for;
use crate::onnx::proto::ModelProto;
use crate::onnx::Precision;
use crate::package::{ModelShape, GRAPH_FILES};
use ndarray::{ArrayD, IxDyn};
use prost::Message;
use std::collections::BTreeMap;
use std::path::Path;

/// One graph's placement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GraphPlacement {
    pub graph: String,
    /// Archive entry that was loaded (a variant's, or the FP32 graph).
    pub file: String,
    pub opset: i64,
    pub ir_version: i64,
    /// The provider the session was created on (the first of the list that took the graph).
    pub session_provider: Provider,
    /// Nodes as ONNX Runtime ran them, per provider (`CPUExecutionProvider`, …).
    pub nodes_by_provider: BTreeMap<String, usize>,
    /// Nodes as run, per op type (shows whether INT8 convolutions became `QLinearConv`).
    pub ops: BTreeMap<String, usize>,
    /// Nodes left to the CPU provider although the session is on another one, with their op
    /// type: ONNX Runtime assigns a node to CPU when the provider offers no kernel for it.
    pub fell_back: Vec<(String, String)>,
}

impl GraphPlacement {
    pub fn total(&self) -> usize {
        self.nodes_by_provider.values().sum()
    }
}

/// ONNX Runtime's name of a provider in its profile.
pub fn ort_name(p: Provider) -> &'static str {
    match p {
        Provider::TensorRT => "TensorrtExecutionProvider",
        Provider::Cuda => "CUDAExecutionProvider",
        Provider::Cpu => "CPUExecutionProvider",
        Provider::Plugin => "plugin",
    }
}

/// Reads a profile's node events: (node name, op type, provider), one per node.
pub fn profile_nodes(json: &[u8]) -> Result<Vec<(String, String, String)>, String> {
    let events: Vec<serde_json::Value> = serde_json::from_slice(json).map_err(|e| format!("profile is not JSON: {e}"))?;
    let mut seen = BTreeMap::new();
    for e in events.iter().filter(|e| e["cat"] == "Node") {
        let (Some(name), Some(args)) = (e["name"].as_str(), e["args"].as_object()) else { continue };
        let Some(node) = name.strip_suffix("_kernel_time") else { continue };
        let op = args.get("op_name").and_then(|v| v.as_str()).unwrap_or("?");
        let provider = args.get("provider").and_then(|v| v.as_str()).unwrap_or("?");
        seen.entry(node.to_string()).or_insert((op.to_string(), provider.to_string()));
    }
    Ok(seen.into_iter().map(|(n, (o, p))| (n, o, p)).collect())
}

/// Opens and profiles each graph of `files` (a verified package's) in `precision`.
pub fn placement(files: &BTreeMap<String, Vec<u8>>, precision: Precision, shape: &ModelShape, opts: &SessionOptions, scratch: &Path) -> Result<Vec<GraphPlacement>, SessionError> {
    let graphs = graphs_for(files, precision);
    let mut out = vec![];
    for g in GRAPH_FILES {
        let bytes = &graphs[g];
        let file = if bytes == &files[g] { g.to_string() } else { precision.file_name(g) };
        let model = ModelProto::decode(bytes.as_slice()).map_err(|e| SessionError::Run { graph: file.clone(), reason: e.to_string() })?;
        let opset = model.opset_import.iter().find(|o| o.domain.as_deref().unwrap_or("").is_empty()).and_then(|o| o.version).unwrap_or(0);
        let mut o = opts.clone();
        o.profile = Some(scratch.join(g.trim_end_matches(".onnx")));
        let mut graph = open_graph(&file, bytes, &o)?;
        let (c, s, m, n) = (shape.channels as usize, shape.image_size as usize, shape.grid_m as usize, shape.grid_n as usize);
        if g == "encoder.onnx" {
            let _: ArrayD<i64> = graph.run_one(ArrayD::<f32>::zeros(IxDyn(&[1, c, s, s])))?;
        } else {
            let _: ArrayD<f32> = graph.run_one(ArrayD::<i64>::zeros(IxDyn(&[1, m, n])))?;
        }
        let path = graph.end_profiling()?;
        let json = std::fs::read(&path).map_err(|e| SessionError::Run { graph: file.clone(), reason: format!("reading the profile {}: {e}", path.display()) })?;
        let _ = std::fs::remove_file(&path);
        let nodes = profile_nodes(&json).map_err(|reason| SessionError::Run { graph: file.clone(), reason })?;
        let mut by = BTreeMap::new();
        let mut ops = BTreeMap::new();
        let mut fell_back = vec![];
        for (node, op, prov) in nodes {
            *by.entry(prov.clone()).or_insert(0) += 1;
            *ops.entry(op.clone()).or_insert(0) += 1;
            if graph.provider != Provider::Cpu && prov == ort_name(Provider::Cpu) {
                fell_back.push((node, op));
            }
        }
        out.push(GraphPlacement { graph: g.to_string(), file, opset, ir_version: model.ir_version.unwrap_or(0), session_provider: graph.provider, nodes_by_provider: by, ops, fell_back });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_nodes_counts_each_node_once_with_its_provider() {
        let json = br#"[
            {"cat": "Session", "name": "model_run", "args": {}},
            {"cat": "Node", "name": "Conv_0_kernel_time", "args": {"op_name": "Conv", "provider": "CUDAExecutionProvider"}},
            {"cat": "Node", "name": "Conv_0_fence_before", "args": {"op_name": "Conv"}},
            {"cat": "Node", "name": "Conv_0_kernel_time", "args": {"op_name": "Conv", "provider": "CUDAExecutionProvider"}},
            {"cat": "Node", "name": "ArgMin_1_kernel_time", "args": {"op_name": "ArgMin", "provider": "CPUExecutionProvider"}}
        ]"#;
        let n = profile_nodes(json).unwrap();
        assert_eq!(n, vec![("ArgMin_1".into(), "ArgMin".into(), "CPUExecutionProvider".into()), ("Conv_0".into(), "Conv".into(), "CUDAExecutionProvider".into())]);
        assert!(profile_nodes(b"not json").is_err());
    }
}
