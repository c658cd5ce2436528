//! Protocol-neutral inference: the tensors both front ends (REST, gRPC) parse into, the
//! checks on them, and the outputs built from [`Detection`]s.
//!
//! Inputs: `image`, either BYTES `[B]` (one encoded PNG/JPEG/BMP/TIFF per element, decoded
//! exactly as `vqad detect` decodes files) or FP32 `[B, C, H, W]` in [0, 1] at the model's
//! size. Outputs: `score` FP32 `[B]`, `anomalous` BOOL `[B]`, `mask` UINT8 `[B, H, W]`, and on
//! request `map` FP32 `[B, H, W]` (the filtered map the mask thresholds) and `restored` FP32
//! `[B, C, H, W]`.

use super::ApiError;
use crate::data::{DecodeLimits, ImageInfo};
use bytes::Bytes;
use ndarray::{Array2, Array3};
use std::path::Path;

/// Name of the one input tensor.
pub const INPUT: &str = "image";
/// Outputs sent when a request names none.
pub const DEFAULT_OUTPUTS: [&str; 3] = ["score", "anomalous", "mask"];
/// Every output a request may name.
pub const ALL_OUTPUTS: [&str; 5] = ["score", "anomalous", "mask", "map", "restored"];

/// Caps on a request's structure, enforced while it is parsed (JSON) or before it is decoded
/// (protobuf, `serve::wire`): what parsing allocates then stays within a small multiple of
/// the body, however the body is shaped (a JSON array of empty objects, a protobuf of empty
/// repeated fields — each a few bytes on the wire and tens of bytes in memory).
pub const MAX_TENSORS: usize = 16;
/// Most dimensions in a tensor's shape.
pub const MAX_DIMS: usize = 8;
/// Most parameters in one parameters map (protobuf; JSON keeps only the ones it uses).
pub const MAX_PARAMETERS: usize = 64;
/// Most BYTES elements in one request (images in a batch).
pub const MAX_ELEMENTS: usize = 4096;

/// Charged to the budget for every request before its body: the parsed structure's fixed
/// part (tensors, shapes, parameters and element lists, all capped above) and error text.
pub const REQUEST_BASE_BYTES: u64 = 256 << 10;
/// Charged per byte of binary tensor data (HTTP binary extension, gRPC message): the bytes
/// themselves, a buffer's growth and one copy while decoding.
pub const BINARY_FACTOR: u64 = 3;
/// Charged per byte of a JSON header: tensor data in JSON becomes `f32`s (4 bytes for as few
/// as 2 characters, in a vector that grows by doubling) or strings.
pub const JSON_FACTOR: u64 = 6;

/// What a body of `len` bytes, the first `json_len` of them JSON (all of it when `None`), is
/// charged to the budget before it is parsed.
pub fn body_charge(len: u64, json_len: Option<u64>) -> u64 {
    let json = json_len.unwrap_or(len).min(len);
    (len - json) * BINARY_FACTOR + json * JSON_FACTOR
}

/// Tensor elements as a front end received them.
#[derive(Debug, Clone)]
pub enum Elements {
    /// BYTES elements.
    Bytes(Vec<Vec<u8>>),
    F32(Vec<f32>),
    /// Raw little-endian bytes still to be interpreted by datatype (binary extension, gRPC
    /// raw contents); a slice of the request body, not a copy.
    Raw(Bytes),
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

/// What the model needs to know about its inputs, and the limits on what a client sends.
#[derive(Debug, Clone, Copy)]
pub struct InputSpec {
    pub channels: usize,
    pub size: usize,
    pub limits: DecodeLimits,
}

impl InputSpec {
    /// Bytes of one model-ready image `[C, H, W]` f32.
    pub fn image_bytes(&self) -> u64 {
        (self.channels * self.size * self.size * 4) as u64
    }
}

/// Splits BYTES serialised the protocol's way (each element a 4-byte little-endian length,
/// then its bytes) into slices of `raw`. Lengths are walked first, so a count over
/// [`MAX_ELEMENTS`] or a length past the end is refused before anything is allocated.
pub fn split_bytes(raw: &Bytes) -> Result<Vec<Bytes>, ApiError> {
    let mut n = 0usize;
    let mut i = 0usize;
    while i < raw.len() {
        if raw.len() - i < 4 {
            return Err(ApiError::bad(format!("input '{INPUT}': BYTES data ends inside an element's 4-byte length")));
        }
        let len = u32::from_le_bytes(raw[i..i + 4].try_into().expect("4 bytes")) as usize;
        i += 4;
        if raw.len() - i < len {
            return Err(ApiError::bad(format!("input '{INPUT}': BYTES element {n} claims {len} bytes, {} remain", raw.len() - i)));
        }
        i += len;
        n += 1;
        if n > MAX_ELEMENTS {
            return Err(ApiError::bad(format!("input '{INPUT}': more than {MAX_ELEMENTS} BYTES elements")));
        }
    }
    let mut out = Vec::with_capacity(n);
    let mut i = 0usize;
    while i < raw.len() {
        let len = u32::from_le_bytes(raw[i..i + 4].try_into().expect("walked above")) as usize;
        out.push(raw.slice(i + 4..i + 4 + len));
        i += 4 + len;
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

/// A request's input, checked in everything that can be checked without decoding pixels:
/// name, datatype, shape against the data, value range, and each image's header against the
/// decode limits. What decoding will cost is known from it ([`Plan::decode_bytes`]), so a
/// server admits the request against its memory budget before any pixel is decoded.
pub struct Plan {
    spec: InputSpec,
    data: PlanData,
}

enum PlanData {
    /// Encoded images and their headers.
    Images(Vec<(Bytes, ImageInfo)>),
    /// `[B, C, H, W]` values in [0, 1], checked.
    Floats(Floats),
}

enum Floats {
    Values(Vec<f32>),
    /// Little-endian f32 bytes, a whole number of images.
    Raw(Bytes),
}

impl Plan {
    /// Images in the request.
    pub fn images(&self) -> usize {
        match &self.data {
            PlanData::Images(v) => v.len(),
            PlanData::Floats(Floats::Values(v)) => v.len() / (self.spec.image_bytes() as usize / 4),
            PlanData::Floats(Floats::Raw(r)) => r.len() / self.spec.image_bytes() as usize,
        }
    }

    /// An upper bound on what [`Plan::decode`] allocates at its peak: the model-ready
    /// arrays of every image plus, for encoded images (decoded one after another), the
    /// costliest one's decode.
    pub fn decode_bytes(&self) -> u64 {
        let (c, s) = (self.spec.channels, self.spec.size);
        let arrays = self.images() as u64 * self.spec.image_bytes();
        let decode = match &self.data {
            PlanData::Images(v) => v.iter().map(|(b, info)| info.decode_bytes(b.len() as u64, c, s)).max().unwrap_or(0),
            PlanData::Floats(_) => 0,
        };
        arrays + decode
    }

    /// Decodes the images (or slices the values) into model-ready `[C, H, W]` arrays.
    pub fn decode(self) -> Result<Vec<Array3<f32>>, ApiError> {
        let (c, s) = (self.spec.channels, self.spec.size);
        let per = c * s * s;
        match self.data {
            PlanData::Images(v) => v
                .into_iter()
                .enumerate()
                .map(|(i, (b, _))| {
                    crate::data::decode_image_bytes_within(&b, &format!("input '{INPUT}' element {i}"), c, s, &self.spec.limits)
                        .map_err(|e| ApiError::bad(e.to_string()))
                })
                .collect(),
            PlanData::Floats(Floats::Values(v)) => {
                Ok(v.chunks_exact(per).map(|v| Array3::from_shape_vec((c, s, s), v.to_vec()).expect("sized")).collect())
            }
            PlanData::Floats(Floats::Raw(raw)) => Ok(raw
                .chunks_exact(per * 4)
                .map(|img| Array3::from_shape_vec((c, s, s), img.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()).expect("sized"))
                .collect()),
        }
    }
}

/// Checks a request's inputs and turns them into model-ready arrays `[C, H, W]` in [0, 1]
/// ([`plan_inputs`], then [`Plan::decode`]).
pub fn prepare_inputs(inputs: Vec<InputTensor>, spec: InputSpec) -> Result<Vec<Array3<f32>>, ApiError> {
    plan_inputs(inputs, spec)?.decode()
}

/// Checks a request's inputs without decoding pixels; see [`Plan`].
pub fn plan_inputs(inputs: Vec<InputTensor>, spec: InputSpec) -> Result<Plan, ApiError> {
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
    let (c, s) = (spec.channels, spec.size);
    match input.datatype.as_str() {
        "BYTES" => {
            let b = match input.shape.as_slice() {
                [b] | [b, 1] => *b as u64,
                other => return Err(ApiError::bad(format!("input '{INPUT}': BYTES shape must be [B] (one encoded image per element), got {other:?}"))),
            };
            let elements: Vec<Bytes> = match input.data {
                Elements::Bytes(e) => e.into_iter().map(Bytes::from).collect(),
                Elements::Raw(raw) => split_bytes(&raw)?,
                _ => return Err(ApiError::bad(format!("input '{INPUT}': BYTES data expected"))),
            };
            if elements.len() as u64 != b {
                return Err(ApiError::bad(format!("input '{INPUT}': shape {:?} says {b} elements, the data has {}", input.shape, elements.len())));
            }
            if b == 0 {
                return Err(ApiError::bad(format!("input '{INPUT}': empty batch")));
            }
            let mut images = Vec::with_capacity(elements.len());
            for (i, e) in elements.into_iter().enumerate() {
                let what = format!("input '{INPUT}' element {i}");
                let info = crate::data::probe_image_bytes(&e, Path::new(&what), &spec.limits).map_err(|e| ApiError::bad(e.to_string()))?;
                images.push((e, info));
            }
            Ok(Plan { spec, data: PlanData::Images(images) })
        }
        "FP32" => {
            let want = [-1, c as i64, s as i64, s as i64];
            if input.shape.len() != 4 || input.shape[1..] != want[1..] {
                return Err(ApiError::bad(format!("input '{INPUT}': FP32 shape must be [B, {c}, {s}, {s}], got {:?}", input.shape)));
            }
            let count = (input.shape[0] as u64).checked_mul((c * s * s) as u64).filter(|&n| n <= usize::MAX as u64 / 4);
            let Some(count) = count else {
                return Err(ApiError::bad(format!("input '{INPUT}': shape {:?} is larger than any request can be", input.shape)));
            };
            let count = count as usize;
            let (len, values) = match input.data {
                Elements::F32(v) => (v.len(), Floats::Values(v)),
                Elements::Raw(raw) => {
                    if raw.len() % 4 != 0 {
                        return Err(ApiError::bad(format!("input '{INPUT}': {} raw bytes is not a whole number of FP32 values", raw.len())));
                    }
                    (raw.len() / 4, Floats::Raw(raw))
                }
                _ => return Err(ApiError::bad(format!("input '{INPUT}': FP32 data expected"))),
            };
            if len != count {
                return Err(ApiError::bad(format!("input '{INPUT}': shape {:?} needs {count} values, the data has {len}", input.shape)));
            }
            if count == 0 {
                return Err(ApiError::bad(format!("input '{INPUT}': empty batch")));
            }
            let outside = |i: usize, v: f32| ApiError::bad(format!("input '{INPUT}': value {v} at flat index {i} is outside [0, 1]"));
            match &values {
                Floats::Values(v) => {
                    if let Some(i) = v.iter().position(|v| !(0.0..=1.0).contains(v)) {
                        return Err(outside(i, v[i]));
                    }
                }
                Floats::Raw(raw) => {
                    for (i, b) in raw.chunks_exact(4).enumerate() {
                        let v = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                        if !(0.0..=1.0).contains(&v) {
                            return Err(outside(i, v));
                        }
                    }
                }
            }
            Ok(Plan { spec, data: PlanData::Floats(values) })
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
