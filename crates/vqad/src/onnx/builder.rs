//! Builds an ONNX graph node by node with deterministic names, so the same weights always
//! serialise to the same bytes.

use super::proto::*;
use prost::Message;

/// Element types of graph inputs and outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    I64,
    /// Quantized graphs (`runtime::peak`): uint8 activations, int8 weights, int32 accumulators.
    U8,
    I8,
    I32,
}

impl Elem {
    fn code(self) -> i32 {
        match self {
            Elem::F32 => data_type::FLOAT,
            Elem::I64 => data_type::INT64,
            Elem::U8 => data_type::UINT8,
            Elem::I8 => data_type::INT8,
            Elem::I32 => data_type::INT32,
        }
    }
}

/// One dimension of a graph input or output: fixed, or named and dynamic (the batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Dynamic(&'static str),
}

/// Node attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(&'static str, i64),
    Ints(&'static str, Vec<i64>),
    Float(&'static str, f32),
}

impl Attr {
    fn proto(&self) -> AttributeProto {
        let mut a = AttributeProto::default();
        match self {
            Attr::Int(n, v) => {
                a.name = Some((*n).into());
                a.i = Some(*v);
                a.r#type = Some(attribute_type::INT);
            }
            Attr::Ints(n, v) => {
                a.name = Some((*n).into());
                a.ints = v.clone();
                a.r#type = Some(attribute_type::INTS);
            }
            Attr::Float(n, v) => {
                a.name = Some((*n).into());
                a.f = Some(*v);
                a.r#type = Some(attribute_type::FLOAT);
            }
        }
        a
    }
}

/// Accumulates nodes, initializers and the graph signature.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    name: String,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
}

fn value_info(name: &str, elem: Elem, dims: &[Dim]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: Some(elem.code()),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Dim::Fixed(v) => DimValue::DimValue(*v),
                                Dim::Dynamic(s) => DimValue::DimParam((*s).into()),
                            }),
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        GraphBuilder { name: name.into(), ..Default::default() }
    }

    /// Declares a graph input; returns its name for use as a node input.
    pub fn input(&mut self, name: &str, elem: Elem, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, elem, dims));
        name.into()
    }

    /// Declares a graph output. The value must be produced under exactly this name
    /// (see [`GraphBuilder::node_as`]).
    pub fn output(&mut self, name: &str, elem: Elem, dims: &[Dim]) {
        self.outputs.push(value_info(name, elem, dims));
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Adds a float constant (weights); `hint` names it for people reading the graph.
    pub fn init_f32(&mut self, hint: &str, dims: &[i64], data: &[f32]) -> String {
        assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "initializer {hint}: shape and data disagree");
        let name = self.fresh(hint);
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: Some(data_type::FLOAT),
            name: Some(name.clone()),
            raw_data: Some(raw),
        });
        name
    }

    /// Adds an int64 constant (shapes, axes).
    pub fn init_i64(&mut self, hint: &str, dims: &[i64], data: &[i64]) -> String {
        assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "initializer {hint}: shape and data disagree");
        let name = self.fresh(hint);
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: Some(data_type::INT64),
            name: Some(name.clone()),
            raw_data: Some(raw),
        });
        name
    }

    /// Adds a uint8 constant (quantization zero points).
    pub fn init_u8(&mut self, hint: &str, dims: &[i64], data: &[u8]) -> String {
        assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "initializer {hint}: shape and data disagree");
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: Some(data_type::UINT8),
            name: Some(name.clone()),
            raw_data: Some(data.to_vec()),
        });
        name
    }

    /// Adds an int8 constant (quantized weights).
    pub fn init_i8(&mut self, hint: &str, dims: &[i64], data: &[i8]) -> String {
        assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "initializer {hint}: shape and data disagree");
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: Some(data_type::INT8),
            name: Some(name.clone()),
            raw_data: Some(data.iter().map(|&v| v as u8).collect()),
        });
        name
    }

    /// A float scalar constant.
    pub fn scalar(&mut self, hint: &str, v: f32) -> String {
        self.init_f32(hint, &[], &[v])
    }

    /// Adds a node with one output named after the operator; returns that name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[Attr]) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_as(op, inputs, attrs, &out);
        out
    }

    /// Adds a node whose single output gets the given name (graph outputs).
    pub fn node_as(&mut self, op: &str, inputs: &[&str], attrs: &[Attr], out: &str) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            name: Some(format!("{op}_{}", self.nodes.len())),
            op_type: Some(op.into()),
            attribute: attrs.iter().map(Attr::proto).collect(),
        });
    }

    /// The finished model.
    pub fn finish(self, doc: &str) -> ModelProto {
        ModelProto {
            ir_version: Some(super::IR_VERSION),
            producer_name: Some("vqad".into()),
            producer_version: Some(crate::VERSION.into()),
            doc_string: Some(doc.into()),
            graph: Some(GraphProto {
                node: self.nodes,
                name: Some(self.name),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
            }),
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(super::OPSET) }],
        }
    }

    /// Serialised protobuf bytes of the finished model.
    pub fn to_bytes(self, doc: &str) -> Vec<u8> {
        self.finish(doc).encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_protobuf() {
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", Elem::F32, &[Dim::Dynamic("batch"), Dim::Fixed(3)]);
        let w = g.init_f32("w", &[3], &[1.0, 2.0, 3.0]);
        g.node_as("Mul", &[&x, &w], &[], "y");
        g.output("y", Elem::F32, &[Dim::Dynamic("batch"), Dim::Fixed(3)]);
        let bytes = g.to_bytes("doc");
        let m = ModelProto::decode(bytes.as_slice()).unwrap();
        let graph = m.graph.unwrap();
        assert_eq!(graph.node[0].op_type.as_deref(), Some("Mul"));
        assert_eq!(graph.initializer[0].raw_data.as_ref().unwrap().len(), 12);
        assert_eq!(m.opset_import[0].version, Some(super::super::OPSET));
    }
}
