//! How close each graph runs to the machine's limit: operations per pass counted from the graph
//! ([`crate::onnx::flops`]), times passes per image, over the measured time per image, against
//! the matrix-multiply peak measured in the same process ([`super::peak`]).

use super::peak::Peak;
use super::variant::{graphs_for, INT8_GRAPHS};
use crate::onnx::flops::{count, FlopError};
use crate::onnx::Precision;
use std::collections::BTreeMap;

/// One graph's place under the roof.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GraphRoofline {
    pub graph: String,
    /// Runs in integer kernels (the INT8 variant's quantized graphs).
    pub integer: bool,
    /// Operations (2 × multiply-accumulates of Conv, ConvTranspose and MatMul) per pass, batch 1.
    pub gop_per_pass: f64,
    /// Elementwise operations per pass (not matrix work; memory-bound), in millions.
    pub elementwise_mops_per_pass: f64,
    pub passes_per_image: f64,
    pub ms_per_image: f64,
    pub achieved_gops: f64,
    /// The peak that applies: int8 GOP/s for integer graphs, else fp32 GFLOP/s.
    pub peak_gops: f64,
    pub share_of_peak: f64,
}

/// Per graph: `ms` = (encode, prior, decode) milliseconds per image, `prior_passes` per image;
/// the decoder runs twice per image (direct and restored).
pub fn roofline(files: &BTreeMap<String, Vec<u8>>, precision: Precision, ms: (f64, f64, f64), prior_passes: f64, peak: &Peak) -> Result<Vec<GraphRoofline>, FlopError> {
    let graphs = graphs_for(files, precision);
    let mut out = vec![];
    for (g, ms, passes) in [("encoder.onnx", ms.0, 1.0), ("pixelsnail.onnx", ms.1, prior_passes), ("decoder.onnx", ms.2, 2.0)] {
        let Some(bytes) = graphs.get(g) else { continue };
        let cost = count(bytes, 1)?;
        let integer = precision == Precision::Int8 && INT8_GRAPHS.contains(&g);
        let gop = cost.flops() as f64 / 1e9;
        let achieved = if ms > 0.0 { gop * passes / (ms / 1e3) } else { 0.0 };
        let peak_gops = if integer { peak.int8_gops } else { peak.fp32_gflops };
        out.push(GraphRoofline {
            graph: g.to_string(),
            integer,
            gop_per_pass: gop,
            elementwise_mops_per_pass: cost.elementwise as f64 / 1e6,
            passes_per_image: passes,
            ms_per_image: ms,
            achieved_gops: achieved,
            peak_gops,
            share_of_peak: if peak_gops > 0.0 { achieved / peak_gops } else { 0.0 },
        });
    }
    Ok(out)
}
