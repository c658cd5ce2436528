//! A minimal ONNX writer: the protobuf messages ([`proto`]) and a graph builder ([`GraphBuilder`])
//! that the network blocks in `nn` write themselves into.

pub mod builder;
pub mod flops;
pub mod precision;
pub mod proto;

pub use builder::{Attr, Dim, Elem, GraphBuilder};
pub use precision::Precision;

/// Opset the exported graphs declare. 17 has every operator vqad needs with today's semantics
/// (Softmax/LogSoftmax over one axis, ReduceSum with axes as input).
pub const OPSET: i64 = 17;
/// IR version matching opset 17; ONNX Runtime 1.31 reads up to 13.
pub const IR_VERSION: i64 = 8;
