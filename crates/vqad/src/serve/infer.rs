//! Protocol-neutral inference: the tensors both front ends (REST, gRPC) parse into, the
//! checks on them, and the outputs built from [`Detection`]s.
//!
//! Inputs: `image`, either BYTES `[B]` (one encoded PNG/JPEG/BMP/TIFF per element, decoded
//! exactly as `vqad detect` decodes files) or FP32 `[B, C, H, W]` in [0, 1] at the model's
//! size. Outputs: `score` FP32 `[B]`, `anomalous` BOOL `[B]`, `mask` UINT8 `[B, H, W]`, and on
//! request `map` FP32 `[B, H, W]` (the filtered map the mask thresholds) and `restored` FP32
//! `[B, C, H, W]`.

use super::ApiError;
use ndarray::{Array2, Array3};

/// Name of the one input tensor.
pub const INPUT: &str = "image";
/// Outputs sent when a request names none.
pub const DEFAULT_OUTPUTS: [&str; 3] = ["score", "anomalous", "mask"];
/// Every output a request may name.
pub const ALL_OUTPUTS: [&str; 5] = ["score", "anomalous", "mask", "map", "restored"];

/// Tensor elements as a front end received them.
#[derive(Debug, Clone)]
pub enum Elements {
    /// BYTES elements.
    Bytes(Vec<Vec<u8>>),
    F32(Vec<f32>),
    /// Raw little-endian bytes still to be interpreted by datatype (binary extension, gRPC raw).
    Raw(Vec<u8>),
    /// Elements of a datatype vqad takes in no input (kept for the error message).
    Other,
}

/// One input tensor of a request.
#[derive(Debug, Clone)]
pub struct InputTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: Elements,
}

/// What the model needs to know about its inputs.
#[derive(Debug, Clone, Copy)]
pub struct InputSpec {
    pub channels: usize,
    pub size: usize,
}

/// Splits BYTES serialised the protocol's way: each element a 4-byte little-endian length,
/// then its bytes.
pub fn split_bytes(raw: &[u8]) -> Result<Vec<Vec<u8>>, ApiError> {
    let mut out = vec![];
    let mut i = 0;
    while i < raw.len() {
        if raw.len() - i < 4 {
            return Err(ApiError::bad(format!("input '{INPUT}': BYTES data ends inside an element's 4-byte length")));
        }
        let n = u32::from_le_bytes(raw[i..i + 4].try_into().expect("4 bytes")) as usize;
        i += 4;
        if raw.len() - i < n {
            return Err(ApiError::bad(format!("input '{INPUT}': BYTES element {} claims {n} bytes, {} remain", out.len(), raw.len() - i)));
        }
        out.push(raw[i..i + n].to_vec());
        i += n;
    }
    Ok(out)
}

/// Serialises BYTES elements the protocol's way (inverse of [`split_bytes`]).
pub fn join_bytes(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(elements.iter().map(|e| e.len() + 4).sum());
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// Checks a request's inputs and turns them into model-ready arrays `[C, H, W]` in [0, 1].
pub fn prepare_inputs(inputs: Vec<InputTensor>, spec: InputSpec) -> Result<Vec<Array3<f32>>, ApiError> {
    let input = match <[InputTensor; 1]>::try_from(inputs) {
        Ok([i]) => i,
        Err(v) if v.is_empty() => return Err(ApiError::bad(format!("the request has no input; expected '{INPUT}'"))),
        Err(v) => {
            return Err(ApiError::bad(format!(
                "expected one input '{INPUT}', got {} ({})",
                v.len(),
                v.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            )))
        }
    };
    if input.name != INPUT {
        return Err(ApiError::bad(format!("unknown input '{}'; the model takes '{INPUT}'", input.name)));
    }
    if input.shape.iter().any(|&d| d < 0) {
        return Err(ApiError::bad(format!("input '{INPUT}': negative dimension in shape {:?}", input.shape)));
    }
    let count: usize = input.shape.iter().map(|&d| d as usize).product();
    let (c, s) = (spec.channels, spec.size);
    match input.datatype.as_str() {
        "BYTES" => {
            let b = match input.shape.as_slice() {
                [b] | [b, 1] => *b as usize,
                other => return Err(ApiError::bad(format!("input '{INPUT}': BYTES shape must be [B] (one encoded image per element), got {other:?}"))),
            };
            let elements = match input.data {
                Elements::Bytes(e) => e,
                Elements::Raw(raw) => split_bytes(&raw)?,
                _ => return Err(ApiError::bad(format!("input '{INPUT}': BYTES data expected"))),
            };
            if elements.len() != b {
                return Err(ApiError::bad(format!("input '{INPUT}': shape {:?} says {b} elements, the data has {}", input.shape, elements.len())));
            }
            if b == 0 {
                return Err(ApiError::bad(format!("input '{INPUT}': empty batch")));
            }
            elements
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    crate::data::decode_image_bytes(e, &format!("input '{INPUT}' element {i}"), c, s)
                        .map_err(|e| ApiError::bad(e.to_string()))
                })
                .collect()
        }
        "FP32" => {
            let want = [-1, c as i64, s as i64, s as i64];
            if input.shape.len() != 4 || input.shape[1..] != want[1..] {
                return Err(ApiError::bad(format!("input '{INPUT}': FP32 shape must be [B, {c}, {s}, {s}], got {:?}", input.shape)));
            }
            let values = match input.data {
                Elements::F32(v) => v,
                Elements::Raw(raw) => {
                    if raw.len() % 4 != 0 {
                        return Err(ApiError::bad(format!("input '{INPUT}': {} raw bytes is not a whole number of FP32 values", raw.len())));
                    }
                    raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()
                }
                _ => return Err(ApiError::bad(format!("input '{INPUT}': FP32 data expected"))),
            };
            if values.len() != count {
                return Err(ApiError::bad(format!("input '{INPUT}': shape {:?} needs {count} values, the data has {}", input.shape, values.len())));
            }
            if count == 0 {
                return Err(ApiError::bad(format!("input '{INPUT}': empty batch")));
            }
            if let Some(i) = values.iter().position(|v| !(0.0..=1.0).contains(v)) {
                return Err(ApiError::bad(format!("input '{INPUT}': value {} at flat index {i} is outside [0, 1]", values[i])));
            }
            let per = c * s * s;
            Ok(values.chunks_exact(per).map(|v| Array3::from_shape_vec((c, s, s), v.to_vec()).expect("sized")).collect())
        }
        other => Err(ApiError::bad(format!("input '{INPUT}': datatype {other} is not accepted; send BYTES (encoded images) or FP32 [B, {c}, {s}, {s}]"))),
    }
}

/// Which outputs a request asked for, checked against [`ALL_OUTPUTS`].
pub fn requested_outputs(names: &[String]) -> Result<Vec<&'static str>, ApiError> {
    if names.is_empty() {
        return Ok(DEFAULT_OUTPUTS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            ALL_OUTPUTS
                .iter()
                .find(|o| **o == n)
                .copied()
                .ok_or_else(|| ApiError::bad(format!("unknown output '{n}'; the model has {}", ALL_OUTPUTS.join(", "))))
        })
        .collect()
}

/// One image's results, as the worker returns them.
#[derive(Debug, Clone)]
pub struct ImageResult {
    pub score: f32,
    pub anomalous: bool,
    pub mask: Array2<u8>,
    pub map: Option<Array2<f32>>,
    pub restored: Option<Array3<f32>>,
    pub prior_passes: usize,
    pub resampled: usize,
}

/// Output tensor data, row-major.
#[derive(Debug, Clone)]
pub enum OutData {
    F32(Vec<f32>),
    Bool(Vec<bool>),
    U8(Vec<u8>),
}

impl OutData {
    pub fn datatype(&self) -> &'static str {
        match self {
            OutData::F32(_) => "FP32",
            OutData::Bool(_) => "BOOL",
            OutData::U8(_) => "UINT8",
        }
    }
    /// Little-endian bytes (BOOL as one byte per element), for the binary forms.
    pub fn raw(&self) -> Vec<u8> {
        match self {
            OutData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            OutData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
            OutData::U8(v) => v.clone(),
        }
    }
}

/// One output tensor of a response.
#[derive(Debug, Clone)]
pub struct OutputTensor {
    pub name: &'static str,
    pub shape: Vec<i64>,
    pub data: OutData,
}

/// Builds the requested outputs from per-image results.
pub fn build_outputs(results: &[ImageResult], names: &[&'static str]) -> Result<Vec<OutputTensor>, ApiError> {
    let b = results.len() as i64;
    names
        .iter()
        .map(|&name| {
            let (shape, data) = match name {
                "score" => (vec![b], OutData::F32(results.iter().map(|r| r.score).collect())),
                "anomalous" => (vec![b], OutData::Bool(results.iter().map(|r| r.anomalous).collect())),
                "mask" => {
                    let (h, w) = results.first().map(|r| r.mask.dim()).unwrap_or((0, 0));
                    (vec![b, h as i64, w as i64], OutData::U8(results.iter().flat_map(|r| r.mask.iter().copied()).collect()))
                }
                "map" => {
                    let maps: Vec<&Array2<f32>> = results.iter().map(|r| r.map.as_ref().ok_or_else(|| ApiError::internal("map not computed"))).collect::<Result<_, _>>()?;
                    let (h, w) = maps.first().map(|m| m.dim()).unwrap_or((0, 0));
                    (vec![b, h as i64, w as i64], OutData::F32(maps.iter().flat_map(|m| m.iter().copied()).collect()))
                }
                "restored" => {
                    let imgs: Vec<&Array3<f32>> = results.iter().map(|r| r.restored.as_ref().ok_or_else(|| ApiError::internal("restored image not computed"))).collect::<Result<_, _>>()?;
                    let (c, h, w) = imgs.first().map(|m| m.dim()).unwrap_or((0, 0, 0));
                    (vec![b, c as i64, h as i64, w as i64], OutData::F32(imgs.iter().flat_map(|m| m.iter().copied()).collect()))
                }
                other => return Err(ApiError::bad(format!("unknown output '{other}'"))),
            };
            Ok(OutputTensor { name, shape, data })
        })
        .collect()
}
