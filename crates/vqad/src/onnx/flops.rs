//! Static cost of an exported graph: multiply-accumulates of the matrix ops and the count of
//! elementwise work, for a roofline against the machine's measured peak (`runtime::peak`).
//!
//! Shapes are propagated from the graph inputs (the dynamic `batch` dimension set by the
//! caller) and initializers through the operators vqad's graphs use. Any other operator is an
//! error rather than zero, so a new op in an exporter cannot make the count silently low.

use super::proto::{attribute_type, AttributeProto, DimValue, ModelProto, NodeProto, TensorProto};
use prost::Message;
use std::collections::{BTreeMap, HashMap};

/// Why a graph could not be costed.
#[derive(Debug, thiserror::Error)]
pub enum FlopError {
    #[error("not an ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the model has no graph")]
    NoGraph,
    #[error("graph input {input}: {problem}")]
    Input { input: String, problem: String },
    #[error("node {node} ({op}): {problem}")]
    Node { node: String, op: String, problem: String },
    #[error("graph output {output}: declared {declared:?}, propagated {propagated:?}")]
    Output { output: String, declared: Vec<i64>, propagated: Vec<i64> },
}

/// Cost of one operator type, summed over its nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCost {
    pub nodes: u64,
    pub macs: u64,
    pub elementwise: u64,
}

/// Cost of a whole graph at one batch size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphCost {
    /// Multiply-accumulates of Conv, ConvTranspose, MatMul and MatMulInteger.
    pub macs: u64,
    /// One per output element of pointwise ops (one per input element of reductions): the work
    /// that is not matrix work. Data movement (Reshape, Transpose, Slice, Gather) counts zero.
    pub elementwise: u64,
    pub by_op: BTreeMap<String, OpCost>,
}

impl GraphCost {
    /// Matrix FLOPs: a multiply-accumulate is two.
    pub fn flops(&self) -> u64 {
        2 * self.macs
    }
}

type Shape = Vec<i64>;

fn numel(s: &[i64]) -> u64 {
    s.iter().map(|&d| d as u64).product()
}

/// Costs the serialised model `model_bytes` with the dynamic dimension `batch` set to `batch`.
pub fn count(model_bytes: &[u8], batch: i64) -> Result<GraphCost, FlopError> {
    let model = ModelProto::decode(model_bytes)?;
    let graph = model.graph.ok_or(FlopError::NoGraph)?;
    let mut shapes: HashMap<String, Shape> = HashMap::new();
    let mut consts: HashMap<String, &TensorProto> = HashMap::new();
    for t in &graph.initializer {
        let name = t.name.clone().unwrap_or_default();
        shapes.insert(name.clone(), t.dims.clone());
        consts.insert(name, t);
    }
    for vi in &graph.input {
        let name = vi.name.clone().unwrap_or_default();
        if shapes.contains_key(&name) {
            continue; // an initializer also listed as input (older IR): its dims are known
        }
        let dims = declared_dims(vi, batch).map_err(|problem| FlopError::Input { input: name.clone(), problem })?;
        shapes.insert(name, dims);
    }
    let mut cost = GraphCost::default();
    for node in &graph.node {
        let op = node.op_type.clone().unwrap_or_default();
        let node_name = node.name.clone().or_else(|| node.output.first().cloned()).unwrap_or_default();
        let err = |problem: String| FlopError::Node { node: node_name.clone(), op: op.clone(), problem };
        let cx = Ctx { node, shapes: &shapes, consts: &consts };
        let (outs, macs, elementwise) = infer(&op, &cx).map_err(err)?;
        if outs.len() < node.output.len() {
            return Err(err(format!("{} outputs, shapes known for {}", node.output.len(), outs.len())));
        }
        for (name, s) in node.output.iter().zip(outs) {
            if !name.is_empty() {
                shapes.insert(name.clone(), s);
            }
        }
        let e = cost.by_op.entry(op.clone()).or_default();
        e.nodes += 1;
        e.macs += macs;
        e.elementwise += elementwise;
        cost.macs += macs;
        cost.elementwise += elementwise;
    }
    // Declared output shapes double-check the propagation.
    for vi in &graph.output {
        let name = vi.name.clone().unwrap_or_default();
        let Some(got) = shapes.get(&name) else {
            return Err(FlopError::Output { output: name, declared: vec![], propagated: vec![] });
        };
        if let Ok(declared) = declared_dims(vi, batch) {
            if &declared != got {
                return Err(FlopError::Output { output: name, declared, propagated: got.clone() });
            }
        }
    }
    Ok(cost)
}

fn declared_dims(vi: &super::proto::ValueInfoProto, batch: i64) -> Result<Shape, String> {
    let shape = vi
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .ok_or("no tensor shape declared")?;
    shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(DimValue::DimValue(v)) => Ok(*v),
            Some(DimValue::DimParam(p)) if p == "batch" => Ok(batch),
            Some(DimValue::DimParam(p)) => Err(format!("dynamic dimension '{p}' has no value (only 'batch' does)")),
            None => Err("dimension without value or name".into()),
        })
        .collect()
}

struct Ctx<'a> {
    node: &'a NodeProto,
    shapes: &'a HashMap<String, Shape>,
    consts: &'a HashMap<String, &'a TensorProto>,
}

impl Ctx<'_> {
    fn has_input(&self, i: usize) -> bool {
        self.node.input.get(i).is_some_and(|n| !n.is_empty())
    }

    fn shape(&self, i: usize) -> Result<&Shape, String> {
        let name = self.node.input.get(i).filter(|n| !n.is_empty()).ok_or(format!("input {i} missing"))?;
        self.shapes.get(name).ok_or(format!("input {i} '{name}' has no known shape (not a graph input, initializer or earlier output)"))
    }

    /// An int64 initializer's values (Reshape's shape, Slice's bounds).
    fn ints_input(&self, i: usize) -> Result<Vec<i64>, String> {
        let name = self.node.input.get(i).filter(|n| !n.is_empty()).ok_or(format!("input {i} missing"))?;
        let t = self.consts.get(name).ok_or(format!("input {i} '{name}' must be an int64 initializer, and is not one"))?;
        if t.data_type != Some(super::proto::data_type::INT64) {
            return Err(format!("initializer '{name}' is not int64"));
        }
        let raw = t.raw_data.as_deref().ok_or(format!("initializer '{name}' has no raw_data"))?;
        if raw.len() % 8 != 0 || raw.len() as u64 / 8 != numel(&t.dims) {
            return Err(format!("initializer '{name}': raw_data length {} does not fit dims {:?}", raw.len(), t.dims));
        }
        Ok(raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
    }

    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name.as_deref() == Some(name))
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).and_then(|a| a.i).unwrap_or(default)
    }

    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).filter(|a| a.r#type == Some(attribute_type::INTS) || !a.ints.is_empty()).map(|a| a.ints.clone())
    }
}

/// Normalises a possibly negative axis against `rank`.
fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} out of range for rank {rank}"))
    }
}

/// Numpy broadcasting of two shapes.
fn broadcast(a: &[i64], b: &[i64]) -> Result<Shape, String> {
    let n = a.len().max(b.len());
    let get = |s: &[i64], i: usize| if i + s.len() >= n { s[i + s.len() - n] } else { 1 };
    (0..n)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            (x, y) => Err(format!("shapes {a:?} and {b:?} do not broadcast ({x} vs {y})")),
        })
        .collect()
}

/// Output shapes, MACs and elementwise count of one node.
fn infer(op: &str, cx: &Ctx) -> Result<(Vec<Shape>, u64, u64), String> {
    Ok(match op {
        "Conv" => {
            let (x, w) = (cx.shape(0)?, cx.shape(1)?);
            let out = conv_out(cx, x, w, false)?;
            let group = cx.int("group", 1);
            if x[1] != w[1] * group {
                return Err(format!("input channels {} ≠ weight {:?} dim 1 × group {group}", x[1], w));
            }
            let macs = numel(&out) * (w[1] as u64) * numel(&w[2..]);
            (vec![out], macs, 0)
        }
        "ConvTranspose" => {
            let (x, w) = (cx.shape(0)?, cx.shape(1)?);
            if x[1] != w[0] {
                return Err(format!("input channels {} ≠ weight {:?} dim 0", x[1], w));
            }
            let out = conv_out(cx, x, w, true)?;
            // Every input pixel scatters into Cout/group channels × the kernel.
            let macs = numel(x) * (w[1] as u64) * numel(&w[2..]);
            (vec![out], macs, 0)
        }
        "MatMul" | "MatMulInteger" => {
            let (out, macs) = matmul(cx.shape(0)?, cx.shape(1)?)?;
            (vec![out], macs, 0)
        }
        "Add" | "Sub" | "Mul" | "Div" => {
            let out = broadcast(cx.shape(0)?, cx.shape(1)?)?;
            let n = numel(&out);
            (vec![out], 0, n)
        }
        "Relu" | "Elu" | "Sigmoid" | "Sqrt" | "Softmax" | "LogSoftmax" | "QuantizeLinear" | "DequantizeLinear" | "Cast" => {
            let out = cx.shape(0)?.clone();
            if matches!(op, "Softmax" | "LogSoftmax") {
                axis(cx.int("axis", -1), out.len())?;
            }
            let n = numel(&out);
            (vec![out], 0, n)
        }
        "DynamicQuantizeLinear" => {
            let out = cx.shape(0)?.clone();
            let n = numel(&out);
            (vec![out, vec![], vec![]], 0, n)
        }
        "Transpose" => {
            let x = cx.shape(0)?;
            let perm = cx.ints("perm").unwrap_or_else(|| (0..x.len() as i64).rev().collect());
            if perm.len() != x.len() {
                return Err(format!("perm {perm:?} does not fit rank {}", x.len()));
            }
            let mut seen = vec![false; x.len()];
            let mut out = vec![];
            for &p in &perm {
                let a = axis(p, x.len())?;
                if std::mem::replace(&mut seen[a], true) {
                    return Err(format!("perm {perm:?} repeats axis {p}"));
                }
                out.push(x[a]);
            }
            (vec![out], 0, 0)
        }
        "Reshape" => (vec![reshape(cx.shape(0)?, &cx.ints_input(1)?, cx.int("allowzero", 0) != 0)?], 0, 0),
        "Slice" => (vec![slice(cx)?], 0, 0),
        "Gather" => {
            let (data, idx) = (cx.shape(0)?, cx.shape(1)?);
            let a = axis(cx.int("axis", 0), data.len())?;
            let out: Shape = data[..a].iter().chain(idx).chain(&data[a + 1..]).copied().collect();
            (vec![out], 0, 0)
        }
        "ReduceMean" => {
            let x = cx.shape(0)?;
            // Axes as attribute (opset < 18) or as an int64 initializer input (opset 18+).
            let axes = match cx.ints("axes") {
                Some(a) => a,
                None if cx.has_input(1) => cx.ints_input(1)?,
                None => (0..x.len() as i64).collect(),
            };
            let axes = axes.iter().map(|&a| axis(a, x.len())).collect::<Result<Vec<_>, _>>()?;
            let keep = cx.int("keepdims", 1) != 0;
            let out = reduce(x, &axes, keep);
            (vec![out], 0, numel(x))
        }
        "ArgMin" | "ArgMax" => {
            let x = cx.shape(0)?;
            let a = axis(cx.int("axis", 0), x.len())?;
            let out = reduce(x, &[a], cx.int("keepdims", 1) != 0);
            (vec![out], 0, numel(x))
        }
        _ => return Err("operator not known to the cost model (add its shape rule and cost)".into()),
    })
}

fn reduce(x: &[i64], axes: &[usize], keep: bool) -> Shape {
    x.iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

/// Output shape of Conv / ConvTranspose (N×C×spatial, explicit pads).
fn conv_out(cx: &Ctx, x: &[i64], w: &[i64], transpose: bool) -> Result<Shape, String> {
    if x.len() < 3 || w.len() != x.len() {
        return Err(format!("input {x:?} and weight {w:?} are not N×C×spatial of equal rank"));
    }
    if let Some(ap) = cx.attr("auto_pad").and_then(|a| a.s.as_deref()) {
        if ap != b"NOTSET" {
            return Err(format!("auto_pad {} not supported (vqad writes explicit pads)", String::from_utf8_lossy(ap)));
        }
    }
    if transpose && cx.attr("output_shape").is_some() {
        return Err("output_shape not supported (vqad writes pads)".into());
    }
    let sp = x.len() - 2;
    let kernel = cx.ints("kernel_shape").unwrap_or_else(|| w[2..].to_vec());
    if kernel != w[2..] {
        return Err(format!("kernel_shape {kernel:?} ≠ weight {w:?}"));
    }
    let strides = cx.ints("strides").unwrap_or_else(|| vec![1; sp]);
    let dil = cx.ints("dilations").unwrap_or_else(|| vec![1; sp]);
    let pads = cx.ints("pads").unwrap_or_else(|| vec![0; 2 * sp]);
    let opad = cx.ints("output_padding").unwrap_or_else(|| vec![0; sp]);
    if strides.len() != sp || dil.len() != sp || pads.len() != 2 * sp || opad.len() != sp {
        return Err(format!("strides/dilations/pads/output_padding do not fit {sp} spatial dims"));
    }
    let group = cx.int("group", 1);
    let cout = if transpose { w[1] * group } else { w[0] };
    let mut out = vec![x[0], cout];
    for i in 0..sp {
        let k_eff = dil[i] * (kernel[i] - 1) + 1;
        let d = if transpose {
            strides[i] * (x[2 + i] - 1) + opad[i] + k_eff - pads[i] - pads[i + sp]
        } else {
            (x[2 + i] + pads[i] + pads[i + sp] - k_eff).div_euclid(strides[i]) + 1
        };
        if d <= 0 {
            return Err(format!("spatial dim {i} of the output is {d}"));
        }
        out.push(d);
    }
    Ok(out)
}

/// Numpy matmul shape and MACs (batch dims broadcast; 1-D operands promoted then squeezed).
fn matmul(a: &[i64], b: &[i64]) -> Result<(Shape, u64), String> {
    if a.is_empty() || b.is_empty() {
        return Err("MatMul of a scalar".into());
    }
    let (a2, b2) = (
        if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() },
        if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() },
    );
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(format!("inner dimensions differ: {a:?} · {b:?}"));
    }
    let batch = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    let macs = numel(&batch) * (m as u64) * (k as u64) * (n as u64);
    let mut out = batch;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok((out, macs))
}

fn reshape(x: &[i64], spec: &[i64], allowzero: bool) -> Result<Shape, String> {
    let total = numel(x) as i64;
    let mut out = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            -1 if infer_at.is_some() => return Err(format!("shape {spec:?} has two -1")),
            -1 => {
                infer_at = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*x.get(i).ok_or(format!("shape {spec:?}: 0 at {i} but input {x:?} has no dim {i}"))?),
            s if s >= 0 => out.push(s),
            s => return Err(format!("shape {spec:?}: invalid dim {s}")),
        }
    }
    let known: i64 = out.iter().product();
    if let Some(i) = infer_at {
        if known == 0 || total % known != 0 {
            return Err(format!("cannot infer -1 reshaping {x:?} to {spec:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!("cannot reshape {x:?} ({total} elements) to {spec:?}"));
    }
    Ok(out)
}

fn slice(cx: &Ctx) -> Result<Shape, String> {
    let x = cx.shape(0)?;
    let starts = cx.ints_input(1)?;
    let ends = cx.ints_input(2)?;
    let axes = if cx.has_input(3) { cx.ints_input(3)? } else { (0..starts.len() as i64).collect() };
    let steps = if cx.has_input(4) { cx.ints_input(4)? } else { vec![1; starts.len()] };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(format!("starts {starts:?}, ends {ends:?}, axes {axes:?}, steps {steps:?} differ in length"));
    }
    let mut out = x.clone();
    for i in 0..starts.len() {
        let a = axis(axes[i], x.len())?;
        let (d, st) = (x[a] as i128, steps[i] as i128);
        let fix = |v: i64| if v < 0 { v as i128 + d } else { v as i128 };
        let (s, e) = (fix(starts[i]), fix(ends[i]));
        let len = if st > 0 {
            let (s, e) = (s.clamp(0, d), e.clamp(0, d));
            (e - s + st - 1).div_euclid(st).max(0)
        } else if st < 0 {
            let (s, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
            (s - e - st - 1).div_euclid(-st).max(0)
        } else {
            return Err("slice step 0".into());
        };
        out[a] = len as i64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{Attr, Dim, Elem, GraphBuilder};

    fn zeros(n: i64) -> Vec<f32> {
        vec![0.0; n as usize]
    }

    #[test]
    fn conv_convtranspose_matmul_macs() {
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", Elem::F32, &[Dim::Dynamic("batch"), Dim::Fixed(3), Dim::Fixed(16), Dim::Fixed(16)]);
        // Conv 3→8, 4×4 stride 2 pad 1: 16 → 8.
        let w = g.init_f32("w", &[8, 3, 4, 4], &zeros(8 * 3 * 16));
        let b = g.init_f32("b", &[8], &zeros(8));
        let attrs = [Attr::Ints("kernel_shape", vec![4, 4]), Attr::Ints("pads", vec![1; 4]), Attr::Ints("strides", vec![2, 2])];
        let h = g.node("Conv", &[&x, &w, &b], &attrs);
        let h = g.node("Relu", &[&h], &[]);
        // ConvTranspose 8→5, 4×4 stride 2 pad 1: 8 → 16.
        let wt = g.init_f32("wt", &[8, 5, 4, 4], &zeros(8 * 5 * 16));
        let bt = g.init_f32("bt", &[5], &zeros(5));
        let h = g.node("ConvTranspose", &[&h, &wt, &bt], &attrs);
        // [B,5,16,16] · [16,7] → [B,5,16,7].
        let m = g.init_f32("m", &[16, 7], &zeros(16 * 7));
        g.node_as("MatMul", &[&h, &m], &[], "y");
        g.output("y", Elem::F32, &[Dim::Dynamic("batch"), Dim::Fixed(5), Dim::Fixed(16), Dim::Fixed(7)]);
        let bytes = g.to_bytes("t");

        let c = count(&bytes, 2).unwrap();
        let conv = 2 * 8 * 8 * 8 * 3 * 4 * 4; // N·Cout·Hout·Wout·Cin·kh·kw
        let convt = 2 * 8 * 8 * 8 * 5 * 4 * 4; // N·Cin·Hin·Win·Cout·kh·kw
        let mm = 2 * 5 * 16 * 16 * 7; // batch·M·K·N
        assert_eq!(c.by_op["Conv"].macs, conv);
        assert_eq!(c.by_op["ConvTranspose"].macs, convt);
        assert_eq!(c.by_op["MatMul"].macs, mm);
        assert_eq!(c.macs, conv + convt + mm);
        assert_eq!(c.flops(), 2 * (conv + convt + mm));
        assert_eq!(c.elementwise, 2 * 8 * 8 * 8); // the Relu
        assert_eq!(c.by_op["Relu"], OpCost { nodes: 1, macs: 0, elementwise: 1024 });
        // Cost is linear in the batch.
        assert_eq!(count(&bytes, 6).unwrap().macs, 3 * c.macs);
    }

    #[test]
    fn reshape_transpose_slice_chain() {
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", Elem::F32, &[Dim::Dynamic("batch"), Dim::Fixed(12), Dim::Fixed(4), Dim::Fixed(5)]);
        let shape = g.init_i64("shape", &[4], &[0, 3, -1, 20]); // [B,3,4,20]
        let h = g.node("Reshape", &[&x, &shape], &[]);
        let h = g.node("Transpose", &[&h], &[Attr::Ints("perm", vec![0, 3, 1, 2])]); // [B,20,3,4]
        let (s, e, ax) = (g.init_i64("s", &[2], &[2, 0]), g.init_i64("e", &[2], &[i64::MAX, -1]), g.init_i64("ax", &[2], &[1, -1]));
        let h = g.node("Slice", &[&h, &s, &e, &ax], &[]); // [B,18,3,3]
        let step = g.init_i64("st", &[1], &[2]);
        let (s1, e1, ax1) = (g.init_i64("s", &[1], &[1]), g.init_i64("e", &[1], &[100]), g.init_i64("ax", &[1], &[1]));
        let h = g.node("Slice", &[&h, &s1, &e1, &ax1, &step], &[]); // [B,9,3,3]: 1,3,…,17
        let r = g.node("ReduceMean", &[&h], &[Attr::Ints("axes", vec![1]), Attr::Int("keepdims", 1)]); // [B,1,3,3]
        let h = g.node("Div", &[&h, &r], &[]);
        g.node_as("ArgMin", &[&h], &[Attr::Int("axis", 1), Attr::Int("keepdims", 0)], "y");
        g.output("y", Elem::I64, &[Dim::Dynamic("batch"), Dim::Fixed(3), Dim::Fixed(3)]);
        let c = count(&g.to_bytes("t"), 2).unwrap();
        assert_eq!(c.macs, 0);
        let n = 2 * 9 * 3 * 3;
        assert_eq!(c.by_op["ReduceMean"].elementwise, n);
        assert_eq!(c.by_op["Div"].elementwise, n);
        assert_eq!(c.by_op["ArgMin"].elementwise, n);
        assert_eq!(c.by_op["Slice"], OpCost { nodes: 2, macs: 0, elementwise: 0 });
        assert_eq!(c.elementwise, 3 * n);
    }

    #[test]
    fn errors_name_the_node_and_problem() {
        // An unknown op is an error, not zero.
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", Elem::F32, &[Dim::Dynamic("batch"), Dim::Fixed(4)]);
        g.node_as("Tanh", &[&x], &[], "y");
        let e = count(&g.to_bytes("t"), 1).unwrap_err().to_string();
        assert!(e.contains("Tanh_0") && e.contains("not known"), "{e}");

        // Reshape's shape must be an initializer.
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", Elem::F32, &[Dim::Fixed(4)]);
        let s = g.input("s", Elem::I64, &[Dim::Fixed(2)]);
        g.node_as("Reshape", &[&x, &s], &[], "y");
        let e = count(&g.to_bytes("t"), 1).unwrap_err().to_string();
        assert!(e.contains("Reshape_0") && e.contains("must be an int64 initializer"), "{e}");

        // A missing value, mismatched MatMul, an unknown dynamic dim, a wrong declared output.
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", Elem::F32, &[Dim::Fixed(4)]);
        g.node_as("Add", &[&x, "nowhere"], &[], "y");
        assert!(count(&g.to_bytes("t"), 1).unwrap_err().to_string().contains("'nowhere' has no known shape"));
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", Elem::F32, &[Dim::Fixed(2), Dim::Fixed(3)]);
        g.node_as("MatMul", &[&x, &x], &[], "y");
        assert!(count(&g.to_bytes("t"), 1).unwrap_err().to_string().contains("inner dimensions"));
        let mut g = GraphBuilder::new("t");
        g.input("x", Elem::F32, &[Dim::Dynamic("height")]);
        assert!(matches!(count(&g.to_bytes("t"), 1), Err(FlopError::Input { .. })));
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", Elem::F32, &[Dim::Fixed(3)]);
        g.node_as("Relu", &[&x], &[], "y");
        g.output("y", Elem::F32, &[Dim::Fixed(4)]);
        assert!(matches!(count(&g.to_bytes("t"), 1), Err(FlopError::Output { .. })));
        assert!(matches!(count(b"\xff\xff", 1), Err(FlopError::Decode(_))));
    }
}
