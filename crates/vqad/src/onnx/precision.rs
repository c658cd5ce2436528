//! Reduced-precision variants of vqad's FP32 graphs, written as graph rewrites of the FP32
//! model that the one network definition emitted (so a variant can never describe another
//! network than the reference it is compared with).
//!
//! * FP16 ([`to_fp16`]): float16 weights and activations; inputs and outputs stay float32, and
//!   the nodes whose result decides something discrete or needs range stay float32: softmax,
//!   log-softmax, the RMS-norm reduction, the nearest-code search (a flipped argmin is a
//!   different code) and every node that only feeds those.
//! * INT8 ([`to_int8`]): static QDQ. Each convolution reads its input through its own
//!   QuantizeLinear→DequantizeLinear pair (uint8, asymmetric, from calibrated ranges), its
//!   weight through a per-output-channel symmetric int8 DequantizeLinear and its bias as int32
//!   at input-scale × weight-scale, and its output is quantized again, which is the pattern ONNX
//!   Runtime's CPU provider fuses into an integer `QLinearConv`. Dedicated pairs matter: a
//!   quantized tensor with several consumers is not fused on x86. Other ops stay float32 (ELU,
//!   softmax and the elementwise glue have no integer kernels worth the extra Q/DQ; measured,
//!   quantizing the attention MatMuls as well was slower here).
//!
//! Calibration ranges come from running [`calibration_graph`] (the FP32 graph with every
//! convolution's input and output exposed as outputs) on the validation normals.

use super::proto::*;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Numeric precision of a graph set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Fp16,
    Int8,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Fp16, Precision::Int8];

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }

    /// The package entry of `graph` (`encoder.onnx`) in this precision: FP32 keeps the plain
    /// name, so packages without variants read unchanged.
    pub fn file_name(self, graph: &str) -> String {
        match self {
            Precision::Fp32 => graph.to_string(),
            p => match graph.strip_suffix(".onnx") {
                Some(stem) => format!("{stem}.{}.onnx", p.as_str()),
                None => format!("{graph}.{}", p.as_str()),
            },
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = PrecisionError;
    fn from_str(s: &str) -> Result<Self, PrecisionError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "float32" => Ok(Precision::Fp32),
            "fp16" | "float16" => Ok(Precision::Fp16),
            "int8" => Ok(Precision::Int8),
            o => Err(PrecisionError::Unknown(o.to_string())),
        }
    }
}

/// Parses `fp32,fp16,int8`.
pub fn parse_precisions(list: &str) -> Result<Vec<Precision>, PrecisionError> {
    let mut out: Vec<Precision> = list.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum PrecisionError {
    #[error("unknown precision '{0}' (expected fp32, fp16 or int8)")]
    Unknown(String),
    #[error("not an ONNX model: {0}")]
    Decode(String),
    #[error("graph {graph}: {reason}")]
    Graph { graph: String, reason: String },
    #[error("graph {graph}: no calibration range for tensor '{tensor}' (run the calibration graph on some images first)")]
    NoRange { graph: String, tensor: String },
}

/// Observed [min, max] of each calibrated tensor.
pub type Ranges = BTreeMap<String, (f32, f32)>;

fn decode(bytes: &[u8]) -> Result<(ModelProto, GraphProto), PrecisionError> {
    let mut m = ModelProto::decode(bytes).map_err(|e| PrecisionError::Decode(e.to_string()))?;
    let g = m.graph.take().ok_or_else(|| PrecisionError::Decode("model has no graph".into()))?;
    Ok((m, g))
}

fn encode(mut m: ModelProto, g: GraphProto, doc_suffix: &str) -> Vec<u8> {
    m.doc_string = Some(format!("{} ({doc_suffix})", m.doc_string.unwrap_or_default()));
    m.graph = Some(g);
    m.encode_to_vec()
}

fn gname(g: &GraphProto) -> String {
    g.name.clone().unwrap_or_default()
}

fn op(n: &NodeProto) -> &str {
    n.op_type.as_deref().unwrap_or("")
}

fn float_output(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto { tensor_type: Some(TypeProtoTensor { elem_type: Some(data_type::FLOAT), shape: None }) }),
    }
}

/// The tensors whose ranges [`to_int8`] needs: every convolution's activation input and output.
pub fn calibrated_tensors(model: &[u8]) -> Result<Vec<String>, PrecisionError> {
    let (_, g) = decode(model)?;
    let mut set = BTreeSet::new();
    for n in g.node.iter().filter(|n| op(n) == "Conv") {
        set.insert(n.input[0].clone());
        set.insert(n.output[0].clone());
    }
    Ok(set.into_iter().collect())
}

/// The FP32 graph with every tensor of [`calibrated_tensors`] added as a float output (after
/// the original outputs), for collecting ranges.
pub fn calibration_graph(model: &[u8]) -> Result<(Vec<u8>, Vec<String>), PrecisionError> {
    let names = calibrated_tensors(model)?;
    let (m, mut g) = decode(model)?;
    let existing: BTreeSet<String> = g.output.iter().filter_map(|o| o.name.clone()).collect();
    for n in names.iter().filter(|n| !existing.contains(*n)) {
        g.output.push(float_output(n));
    }
    Ok((encode(m, g, "calibration"), names))
}

/// Widens `ranges` with the values of one calibration run.
pub fn observe(ranges: &mut Ranges, name: &str, values: impl Iterator<Item = f32>) {
    let (mut lo, mut hi) = ranges.get(name).copied().unwrap_or((f32::INFINITY, f32::NEG_INFINITY));
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    ranges.insert(name.to_string(), (lo, hi));
}

fn f32_data(t: &TensorProto) -> Option<Vec<f32>> {
    (t.data_type == Some(data_type::FLOAT)).then(|| t.raw_data.as_ref().map(|r| r.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())).flatten()
}

fn tensor(name: &str, dtype: i32, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    TensorProto { dims: dims.to_vec(), data_type: Some(dtype), name: Some(name.into()), raw_data: Some(raw) }
}

fn node(op_type: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: Some(format!("{op_type}_{output}")),
        op_type: Some(op_type.into()),
        attribute: attrs,
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), i: Some(v), r#type: Some(attribute_type::INT), ..Default::default() }
}

/// uint8 asymmetric parameters covering [lo, hi] ∪ {0} (zero must be exact: padding and ReLU).
pub fn uint8_params(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let span = hi - lo;
    if !(span > 0.0) || !span.is_finite() {
        return (1.0, 0);
    }
    let scale = span / 255.0;
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

/// Per-output-channel symmetric int8 weights: (values, scale per channel). Channel = axis 0.
pub fn quantize_weight(w: &[f32], channels: usize) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / channels.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(channels);
    for c in w.chunks(per.max(1)) {
        let amax = c.iter().fold(0f32, |a, v| a.max(v.abs()));
        let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        scales.push(s);
        q.extend(c.iter().map(|v| (v / s).round().clamp(-127.0, 127.0) as i8));
    }
    (q, scales)
}

/// The INT8 QDQ variant of an FP32 graph (see the module doc). `ranges` must hold every
/// tensor of [`calibrated_tensors`].
pub fn to_int8(model: &[u8], ranges: &Ranges) -> Result<Vec<u8>, PrecisionError> {
    to_int8_keeping(model, ranges, &BTreeSet::new())
}

/// Names of the graph's convolution nodes, in graph order (what [`to_int8_keeping`] can keep).
pub fn conv_nodes(model: &[u8]) -> Result<Vec<String>, PrecisionError> {
    let (_, g) = decode(model)?;
    Ok(g.node.iter().filter(|n| op(n) == "Conv").map(|n| n.name.clone().unwrap_or_default()).collect())
}

/// [`to_int8`] with the convolutions named in `keep` left in float32 (accuracy control: the
/// ones whose quantization costs the most are kept, see `eval::parity`).
pub fn to_int8_keeping(model: &[u8], ranges: &Ranges, keep: &BTreeSet<String>) -> Result<Vec<u8>, PrecisionError> {
    let (m, g) = decode(model)?;
    let graph = gname(&g);
    let inits: HashMap<String, TensorProto> = g.initializer.iter().map(|t| (t.name.clone().unwrap_or_default(), t.clone())).collect();
    let mut used_inits: BTreeSet<String> = BTreeSet::new();
    let mut new_inits: Vec<TensorProto> = vec![];
    let mut act_params: BTreeMap<String, (String, String, f32)> = BTreeMap::new();
    let mut nodes = vec![];
    let range = |t: &str| ranges.get(t).copied().ok_or_else(|| PrecisionError::NoRange { graph: graph.clone(), tensor: t.to_string() });
    // Scale and zero-point initializers of one activation tensor, shared by its Q/DQ pairs.
    let mut params = |t: &str, new_inits: &mut Vec<TensorProto>| -> Result<(String, String, f32), PrecisionError> {
        if let Some(p) = act_params.get(t) {
            return Ok(p.clone());
        }
        let (lo, hi) = range(t)?;
        let (s, z) = uint8_params(lo, hi);
        let (sn, zn) = (format!("{t}_qscale"), format!("{t}_qzero"));
        new_inits.push(tensor(&sn, data_type::FLOAT, &[], s.to_le_bytes().to_vec()));
        new_inits.push(tensor(&zn, data_type::UINT8, &[], vec![z]));
        act_params.insert(t.to_string(), (sn.clone(), zn.clone(), s));
        Ok((sn, zn, s))
    };
    for (i, n) in g.node.iter().enumerate() {
        if op(n) != "Conv" || n.name.as_ref().is_some_and(|name| keep.contains(name)) {
            for inp in &n.input {
                used_inits.insert(inp.clone());
            }
            nodes.push(n.clone());
            continue;
        }
        let bad = |reason: String| PrecisionError::Graph { graph: graph.clone(), reason: format!("node {}: {reason}", n.name.clone().unwrap_or_default()) };
        if n.input.len() != 3 {
            return Err(bad("a convolution without a bias is not written by vqad".into()));
        }
        let (x, w, b, y) = (&n.input[0], &n.input[1], &n.input[2], &n.output[0]);
        let wt = inits.get(w).ok_or_else(|| bad(format!("weight '{w}' is not an initializer")))?;
        let wv = f32_data(wt).ok_or_else(|| bad(format!("weight '{w}' is not float32 raw data")))?;
        let bv = inits.get(b).and_then(f32_data).ok_or_else(|| bad(format!("bias '{b}' is not a float32 initializer")))?;
        let cout = *wt.dims.first().ok_or_else(|| bad("weight has no dimensions".into()))? as usize;
        if bv.len() != cout || cout == 0 || wv.len() % cout != 0 {
            return Err(bad(format!("weight {:?} and bias of {} values disagree", wt.dims, bv.len())));
        }
        // Input: a dedicated Q→DQ pair for this consumer.
        let (xs, xz, xscale) = params(x, &mut new_inits)?;
        let (xq, xdq) = (format!("{x}_q{i}"), format!("{x}_dq{i}"));
        nodes.push(node("QuantizeLinear", &[x, &xs, &xz], &xq, vec![]));
        nodes.push(node("DequantizeLinear", &[&xq, &xs, &xz], &xdq, vec![]));
        // Weight: int8 per output channel, symmetric.
        let (wq, wscale) = quantize_weight(&wv, cout);
        let (wqn, wsn, wzn, wdq) = (format!("{w}_int8"), format!("{w}_scale"), format!("{w}_zero"), format!("{w}_dq"));
        new_inits.push(tensor(&wqn, data_type::INT8, &wt.dims, wq.iter().map(|v| *v as u8).collect()));
        new_inits.push(tensor(&wsn, data_type::FLOAT, &[cout as i64], wscale.iter().flat_map(|v| v.to_le_bytes()).collect()));
        new_inits.push(tensor(&wzn, data_type::INT8, &[cout as i64], vec![0; cout]));
        nodes.push(node("DequantizeLinear", &[&wqn, &wsn, &wzn], &wdq, vec![int_attr("axis", 0)]));
        // Bias: int32 at input scale × weight scale, as the integer kernel accumulates.
        let bscale: Vec<f32> = wscale.iter().map(|s| s * xscale).collect();
        let bq: Vec<i32> = bv.iter().zip(&bscale).map(|(v, s)| (*v as f64 / *s as f64).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32).collect();
        let (bqn, bsn, bzn, bdq) = (format!("{b}_int32"), format!("{b}_scale"), format!("{b}_zero"), format!("{b}_dq"));
        new_inits.push(tensor(&bqn, data_type::INT32, &[cout as i64], bq.iter().flat_map(|v| v.to_le_bytes()).collect()));
        new_inits.push(tensor(&bsn, data_type::FLOAT, &[cout as i64], bscale.iter().flat_map(|v| v.to_le_bytes()).collect()));
        new_inits.push(tensor(&bzn, data_type::INT32, &[cout as i64], vec![0; 4 * cout]));
        nodes.push(node("DequantizeLinear", &[&bqn, &bsn, &bzn], &bdq, vec![int_attr("axis", 0)]));
        // The convolution, then its output quantized and dequantized under the original name.
        let raw = format!("{y}_f32");
        let mut conv = n.clone();
        conv.input = vec![xdq, wdq, bdq];
        conv.output = vec![raw.clone()];
        nodes.push(conv);
        let (ys, yz, _) = params(y, &mut new_inits)?;
        let yq = format!("{y}_q");
        nodes.push(node("QuantizeLinear", &[&raw, &ys, &yz], &yq, vec![]));
        nodes.push(node("DequantizeLinear", &[&yq, &ys, &yz], y, vec![]));
    }
    let mut out = g.clone();
    out.initializer = g.initializer.iter().filter(|t| t.name.as_ref().is_some_and(|n| used_inits.contains(n))).cloned().chain(new_inits).collect();
    out.node = nodes;
    Ok(encode(m, out, "int8 QDQ variant written by vqad"))
}

/// Ops kept in float32 in the FP16 variant, with every node that only feeds them.
const FP32_OPS: [&str; 6] = ["LogSoftmax", "Softmax", "ReduceMean", "Sqrt", "Div", "ArgMin"];
/// Ops never pulled into float32 by that closure: the heavy layers the variant exists for.
const FP16_ALWAYS: [&str; 3] = ["Conv", "ConvTranspose", "Gather"];

fn to_f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| half::f16::from_f32(x.clamp(-65504.0, 65504.0)).to_le_bytes()).collect()
}

/// The FP16 variant of an FP32 graph (see the module doc).
pub fn to_fp16(model: &[u8]) -> Result<Vec<u8>, PrecisionError> {
    let (m, g) = decode(model)?;
    let graph_outputs: BTreeSet<String> = g.output.iter().filter_map(|o| o.name.clone()).collect();
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for inp in &n.input {
            consumers.entry(inp.as_str()).or_default().push(i);
        }
    }
    // Which nodes stay float32: the listed ops, then (to a fixpoint) any node all of whose
    // results go only to float32 nodes or out of the graph.
    let mut keep: Vec<bool> = g.node.iter().map(|n| FP32_OPS.contains(&op(n))).collect();
    loop {
        let mut changed = false;
        for (i, n) in g.node.iter().enumerate() {
            if keep[i] || FP16_ALWAYS.contains(&op(n)) {
                continue;
            }
            let all_fp32 = n.output.iter().all(|o| graph_outputs.contains(o) || consumers.get(o.as_str()).is_some_and(|c| c.iter().all(|&j| keep[j])));
            if all_fp32 {
                keep[i] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // Element kinds: None = not float (indices, shapes), Some(true) = float16, Some(false) = float32.
    let mut kind: HashMap<String, Option<bool>> = HashMap::new();
    for i in &g.input {
        let f = i.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()).and_then(|t| t.elem_type) == Some(data_type::FLOAT);
        kind.insert(i.name.clone().unwrap_or_default(), f.then_some(false));
    }
    let mut initializers = vec![];
    for t in &g.initializer {
        let name = t.name.clone().unwrap_or_default();
        let users = consumers.get(name.as_str()).cloned().unwrap_or_default();
        match f32_data(t) {
            Some(v) if !users.is_empty() && users.iter().all(|&j| !keep[j]) => {
                initializers.push(tensor(&name, data_type::FLOAT16, &t.dims, to_f16_bytes(&v)));
                kind.insert(name, Some(true));
            }
            Some(_) => {
                initializers.push(t.clone());
                kind.insert(name, Some(false));
            }
            None => {
                initializers.push(t.clone());
                kind.insert(name, None);
            }
        }
    }
    let mut nodes = vec![];
    let mut casts: HashMap<(String, bool), String> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        let half = !keep[i];
        let mut n2 = n.clone();
        for inp in n2.input.iter_mut() {
            if let Some(Some(is_half)) = kind.get(inp.as_str()) {
                if *is_half != half {
                    let key = (inp.clone(), half);
                    let cast = casts.entry(key).or_insert_with(|| {
                        let out = format!("{inp}_{}", if half { "f16" } else { "f32" });
                        let to = if half { data_type::FLOAT16 } else { data_type::FLOAT };
                        nodes.push(node("Cast", &[inp], &out, vec![int_attr("to", to as i64)]));
                        out
                    });
                    *inp = cast.clone();
                }
            }
        }
        let float_in = n.input.first().and_then(|x| kind.get(x)).copied().flatten().is_some();
        let float_out = float_in && op(n) != "ArgMin";
        for o in &n.output {
            kind.insert(o.clone(), float_out.then_some(half));
        }
        nodes.push(n2);
    }
    // Graph outputs leave as float32 whatever produced them.
    for o in g.output.iter().filter_map(|o| o.name.clone()) {
        if kind.get(&o) == Some(&Some(true)) {
            let inner = format!("{o}_f16");
            for n in nodes.iter_mut() {
                for out in n.output.iter_mut().filter(|x| **x == o) {
                    *out = inner.clone();
                }
                for inp in n.input.iter_mut().filter(|x| **x == o) {
                    *inp = inner.clone();
                }
            }
            nodes.push(node("Cast", &[&inner], &o, vec![int_attr("to", data_type::FLOAT as i64)]));
        }
    }
    let mut out = g.clone();
    out.initializer = initializers;
    out.node = nodes;
    Ok(encode(m, out, "fp16 variant written by vqad"))
}

/// How many nodes of each op type a graph holds (used to check a variant's placement).
pub fn op_counts(model: &[u8]) -> Result<BTreeMap<String, usize>, PrecisionError> {
    let (_, g) = decode(model)?;
    let mut out = BTreeMap::new();
    for n in &g.node {
        *out.entry(op(n).to_string()).or_insert(0) += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{Attr, Dim, Elem, GraphBuilder};

    fn conv_model() -> Vec<u8> {
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", Elem::F32, &[Dim::Dynamic("batch"), Dim::Fixed(2), Dim::Fixed(4), Dim::Fixed(4)]);
        let w = g.init_f32("w", &[3, 2, 1, 1], &[0.5, -1.0, 0.25, 0.0, -0.125, 2.0]);
        let b = g.init_f32("b", &[3], &[0.1, 0.0, -0.2]);
        let h = g.node("Conv", &[&x, &w, &b], &[Attr::Ints("kernel_shape", vec![1, 1])]);
        let h = g.node("Relu", &[&h], &[]);
        g.node_as("Softmax", &[&h], &[Attr::Int("axis", 1)], "y");
        g.output("y", Elem::F32, &[Dim::Dynamic("batch"), Dim::Fixed(3), Dim::Fixed(4), Dim::Fixed(4)]);
        g.to_bytes("test")
    }

    #[test]
    fn file_names_keep_fp32_plain() {
        assert_eq!(Precision::Fp32.file_name("encoder.onnx"), "encoder.onnx");
        assert_eq!(Precision::Int8.file_name("pixelsnail.onnx"), "pixelsnail.int8.onnx");
        assert_eq!(parse_precisions("int8, fp32,int8").unwrap(), vec![Precision::Fp32, Precision::Int8]);
        assert!(parse_precisions("bf16").is_err());
    }

    #[test]
    fn weights_round_trip_within_half_a_step_per_channel() {
        let w = [0.5f32, -1.0, 0.3, 0.0, 0.0, 0.0];
        let (q, s) = quantize_weight(&w, 2);
        assert_eq!(q[1], -127);
        assert_eq!(s[1], 1.0, "an all-zero channel gets scale 1, not 0");
        for (i, v) in w.iter().enumerate() {
            assert!((q[i] as f32 * s[i / 3] - v).abs() <= s[i / 3] / 2.0 + 1e-7);
        }
        assert_eq!(uint8_params(0.0, 2.55), (0.01, 0));
        let (s, z) = uint8_params(-1.0, 1.0);
        assert!((s - 2.0 / 255.0).abs() < 1e-7 && (z as f32 - 127.5).abs() <= 0.5, "{s} {z}");
        assert_eq!(uint8_params(0.0, 0.0), (1.0, 0));
    }

    #[test]
    fn int8_wraps_each_convolution_in_its_own_qdq_and_needs_every_range() {
        let m = conv_model();
        let names = calibrated_tensors(&m).unwrap();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(matches!(to_int8(&m, &Ranges::new()), Err(PrecisionError::NoRange { .. })));
        let ranges: Ranges = names.iter().map(|n| (n.clone(), (-1.0, 1.0))).collect();
        let q = to_int8(&m, &ranges).unwrap();
        let ops = op_counts(&q).unwrap();
        assert_eq!(ops["QuantizeLinear"], 2);
        assert_eq!(ops["DequantizeLinear"], 4, "input, weight, bias and output");
        assert_eq!(ops["Conv"], 1);
        let (_, g) = decode(&q).unwrap();
        assert!(g.initializer.iter().all(|t| t.name.as_deref() != Some("w_1")), "the float weight is gone");
        let (cal, _) = calibration_graph(&m).unwrap();
        let (_, cg) = decode(&cal).unwrap();
        assert_eq!(cg.output.len(), 3);
        // Kept in float32: the same node as the FP32 graph's, its float weight still there.
        let convs = conv_nodes(&m).unwrap();
        assert_eq!(convs.len(), 1);
        let kept = to_int8_keeping(&m, &Ranges::new(), &convs.iter().cloned().collect()).unwrap();
        let ops = op_counts(&kept).unwrap();
        assert_eq!((ops.get("QuantizeLinear"), ops["Conv"]), (None, 1), "{ops:?}");
        let (_, kg) = decode(&kept).unwrap();
        assert!(kg.initializer.iter().any(|t| t.name.as_deref() == Some("w_1")));
    }

    #[test]
    fn fp16_keeps_softmax_in_float32_and_the_interface_float32() {
        let h = to_fp16(&conv_model()).unwrap();
        let (_, g) = decode(&h).unwrap();
        let casts: Vec<_> = g.node.iter().filter(|n| op(n) == "Cast").collect();
        // x → f16 before the Conv; Relu's result → f32 before... Relu only feeds Softmax, so it
        // stays f32 itself: the cast sits between Conv and Relu.
        assert_eq!(casts.len(), 2, "{:?}", g.node.iter().map(|n| (op(n).to_string(), n.input.clone(), n.output.clone())).collect::<Vec<_>>());
        let w = g.initializer.iter().find(|t| t.name.as_deref() == Some("w_1")).unwrap();
        assert_eq!(w.data_type, Some(data_type::FLOAT16));
        assert_eq!(w.raw_data.as_ref().unwrap().len(), 12);
        assert!(g.node.iter().any(|n| op(n) == "Softmax" && n.output == ["y"]));
    }
}
