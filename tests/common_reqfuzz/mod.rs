//! A mutation harness for `vqad serve`'s request path, shared by `tests/serve_fuzz.rs` (a
//! fixed CI-sized run) and `examples/fuzz_requests.rs` (long runs from the command line).
//!
//! Every input is a whole inference request as a client would send it — REST with the binary
//! tensor data extension (what `tritonclient.http` sends), REST JSON, or a gRPC
//! `ModelInferRequest` as protobuf bytes — and goes through what the server runs before the
//! model: the wire check and prost (gRPC), the typed JSON parser (REST), the input checks and
//! header probes (`infer::plan_inputs`), then decoding (`Plan::decode`), inside
//! `catch_unwind`. Mutants come from a ChaCha RNG: damaged PNG, JPEG, BMP and TIFF files
//! (bytes, header dimensions with checksums fixed, chunk, segment and IFD fields,
//! truncation), BYTES tensors whose counts or length prefixes lie, binary-extension headers
//! that lie about lengths, FP32 tensors with NaN, infinities and overflowing shapes, hostile
//! JSON and protobuf structure.
//!
//! Four things are checked on each: no panic; an input of a must-refuse operator is refused;
//! an accepted input yields one finite `[C, S, S]` array in [0, 1] per image; and what
//! parsing and decoding allocated at the peak — counted by this binary's allocator, per
//! thread — stays within what the server charges the request to its memory budget
//! (`infer::body_charge` + `REQUEST_BASE_BYTES` + `Plan::decode_bytes`), so no request can
//! hold more than the budget admitted.
#![allow(dead_code)]

#[path = "../common_bombs/mod.rs"]
pub mod common_bombs;

use ::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use vqad::data::DecodeLimits;
use vqad::serve::infer::{self, InputSpec};
use vqad::serve::proto::{InferInputTensor, InferRequestedOutputTensor, InferTensorContents, ModelInferRequest};
use vqad::serve::{http, grpc, wire, ErrorKind};

// ---------------------------------------------------------------- counting allocator

/// Counts the bytes each thread has allocated and not freed, and their peak.
pub struct Counting;

thread_local! {
    static CURRENT: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn track(delta: i64) {
    let _ = CURRENT.try_with(|c| {
        let v = c.get() + delta;
        c.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            track(l.size() as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            track(l.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        track(-(l.size() as i64));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            track(new as i64 - l.size() as i64);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f`; returns its result and the most bytes it had allocated at once on this thread.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let start = CURRENT.with(|c| c.get());
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(|p| p.get());
    (r, (peak - start).max(0) as u64)
}

// ---------------------------------------------------------------- operators

/// Every operator, and whether each of its inputs must be refused.
pub const OPERATORS: &[(&str, bool)] = &[
    ("img_bit_flip", false),
    ("img_byte_set", false),
    ("img_insert", false),
    ("img_delete", false),
    ("img_truncate", false),
    ("img_splice", false),
    ("img_huge_dims", true),
    ("img_zero_dims", true),
    ("img_other_dims", false),
    ("png_chunk_length", false),
    ("png_field_crc_fixed", false),
    ("jpeg_segment", false),
    ("tiff_ifd", false),
    ("bmp_header", false),
    ("not_an_image", true),
    ("float_tiff_nan", true),
    ("bytes_count_lies", true),
    ("bytes_length_lies", true),
    ("binary_header_lies", true),
    ("fp32_non_finite", true),
    ("fp32_shape_lies", true),
    ("wrong_tensor", true),
    ("json_bytes_mutated", false),
    ("json_structure_bomb", true),
    ("json_ignored_bulk", false),
    ("grpc_wire_mutated", false),
    ("grpc_structure", true),
];

/// The model the requests are for: RGB 64×64, like the demo package.
pub const CHANNELS: usize = 3;
pub const SIZE: usize = 64;

/// Pixel limit of the run: 1 Mpx, so a mutated header that stays under it decodes quickly;
/// the checks are the same at any limit.
pub const MAX_PIXELS: u64 = 1 << 20;

pub fn spec() -> InputSpec {
    InputSpec { channels: CHANNELS, size: SIZE, limits: DecodeLimits::new(MAX_PIXELS) }
}

/// Genuine encoded images of every format and several sample layouts.
pub struct Seeds {
    pub images: Vec<(&'static str, Vec<u8>)>,
}

fn encode(img: image::DynamicImage, f: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(vec![]);
    img.write_to(&mut out, f).unwrap();
    out.into_inner()
}

impl Seeds {
    pub fn new() -> Self {
        use image::{DynamicImage as D, ImageBuffer, ImageFormat as F};
        let rgb = ImageBuffer::from_fn(48, 40, |x, y| image::Rgb([(x * 5) as u8, (y * 6) as u8, ((x * y) % 251) as u8]));
        let d = D::ImageRgb8(rgb);
        let mut images: Vec<(&'static str, Vec<u8>)> = vec![
            ("png", encode(d.clone(), F::Png)),
            ("png", encode(D::ImageLuma8(d.to_luma8()), F::Png)),
            ("png", encode(D::ImageRgba8(d.to_rgba8()), F::Png)),
            ("png", encode(D::ImageRgb16(d.to_rgb16()), F::Png)),
            ("png", encode(D::ImageLumaA16(d.to_luma_alpha16()), F::Png)),
            ("jpg", encode(d.clone(), F::Jpeg)),
            ("jpg", encode(D::ImageLuma8(d.to_luma8()), F::Jpeg)),
            ("bmp", encode(d.clone(), F::Bmp)),
            ("bmp", encode(D::ImageRgba8(d.to_rgba8()), F::Bmp)),
            ("bmp", encode(D::ImageLuma8(d.to_luma8()), F::Bmp)),
            ("tif", encode(d.clone(), F::Tiff)),
            ("tif", encode(D::ImageLuma8(d.to_luma8()), F::Tiff)),
            ("tif", encode(D::ImageRgb16(d.to_rgb16()), F::Tiff)),
            ("tif", encode(D::ImageRgb32F(d.to_rgb32f()), F::Tiff)),
            // Progressive JPEG (made with Pillow): the decoder keeps every coefficient.
            ("jpg", include_bytes!("../serve/progressive.jpg").to_vec()),
        ];
        for f in common_bombs::FORMATS {
            images.push((f, common_bombs::bomb(f, 40, 24)));
        }
        Seeds { images }
    }
}

impl Default for Seeds {
    fn default() -> Self {
        Self::new()
    }
}

/// How a request travels.
#[derive(Debug, Clone)]
pub enum Request {
    /// REST: the body and its `Inference-Header-Content-Length` (None: plain JSON).
    Http { body: Vec<u8>, header_len: Option<String> },
    /// gRPC: the encoded `ModelInferRequest`.
    Grpc(Vec<u8>),
}

impl Request {
    pub fn len(&self) -> usize {
        match self {
            Request::Http { body, .. } => body.len(),
            Request::Grpc(b) => b.len(),
        }
    }
}

/// A BYTES request for `elements` the way `tritonclient` sends it; `way` picks REST binary,
/// gRPC raw contents or gRPC typed `bytes_contents`.
pub fn bytes_request(elements: &[Vec<u8>], shape: Vec<i64>, way: usize) -> Request {
    let raw = infer::join_bytes(elements);
    match way % 3 {
        0 => http_binary("BYTES", &shape, &raw),
        1 => grpc_request(vec![tensor("image", "BYTES", shape, None)], vec![raw]),
        _ => grpc_request(vec![tensor("image", "BYTES", shape, Some(InferTensorContents { bytes_contents: elements.to_vec(), ..Default::default() }))], vec![]),
    }
}

fn http_binary(datatype: &str, shape: &[i64], raw: &[u8]) -> Request {
    let head = serde_json::json!({
        "inputs": [{"name": "image", "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": raw.len()}}],
        "outputs": [{"name": "score", "parameters": {"binary_data": true}}, {"name": "mask", "parameters": {"binary_data": true}}],
    });
    let mut body = serde_json::to_vec(&head).unwrap();
    let n = body.len();
    body.extend_from_slice(raw);
    Request::Http { body, header_len: Some(n.to_string()) }
}

fn tensor(name: &str, datatype: &str, shape: Vec<i64>, contents: Option<InferTensorContents>) -> InferInputTensor {
    InferInputTensor { name: name.into(), datatype: datatype.into(), shape, parameters: Default::default(), contents }
}

fn grpc_request(inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> Request {
    let r = ModelInferRequest {
        model_name: "m".into(),
        inputs,
        outputs: vec![InferRequestedOutputTensor { name: "score".into(), parameters: Default::default() }],
        raw_input_contents: raw,
        ..Default::default()
    };
    Request::Grpc(r.encode_to_vec())
}

/// An FP32 request of `values` with `shape`; `way` picks REST binary, REST JSON (finite
/// values only), gRPC raw or gRPC typed.
pub fn fp32_request(values: &[f32], shape: Vec<i64>, way: usize) -> Request {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let finite = values.iter().all(|v| v.is_finite());
    match way % 4 {
        0 => http_binary("FP32", &shape, &raw),
        1 if finite => {
            let body = serde_json::to_vec(&serde_json::json!({"inputs": [{"name": "image", "shape": shape, "datatype": "FP32", "data": values}]})).unwrap();
            Request::Http { body, header_len: None }
        }
        1 | 2 => grpc_request(vec![tensor("image", "FP32", shape, None)], vec![raw]),
        _ => grpc_request(vec![tensor("image", "FP32", shape, Some(InferTensorContents { fp32_contents: values.to_vec(), ..Default::default() }))], vec![]),
    }
}

// ---------------------------------------------------------------- running one input

/// What became of one input.
#[derive(Debug)]
pub enum Outcome {
    Refused(ErrorKind, String),
    /// Arrays decoded.
    Accepted(usize),
    /// Accepted, but an array is malformed (wrong shape, value outside [0, 1]).
    BadOutput(String),
    Panicked(String),
}

/// The request through the server's path; the outcome, the peak bytes allocated, and the
/// bytes the server charges the request beyond its body's own.
pub fn run_one(req: &Request) -> (Outcome, u64, u64) {
    let spec = spec();
    let (charge_body, body_len) = match req {
        Request::Http { body, header_len } => (infer::body_charge(body.len() as u64, header_len.as_ref().and_then(|h| h.trim().parse().ok())), body.len() as u64),
        Request::Grpc(b) => (infer::body_charge(b.len() as u64 + 5, Some(0)), b.len() as u64),
    };
    let mut charged = charge_body - body_len + infer::REQUEST_BASE_BYTES;
    let decode_charge = Cell::new(0u64);
    let body = match req {
        Request::Http { body, .. } => Bytes::from(body.clone()),
        Request::Grpc(b) => Bytes::from(b.clone()),
    };
    let ((outcome, _), peak) = measure(|| {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<Vec<ndarray::Array3<f32>>, vqad::serve::ApiError> {
            let call = match req {
                Request::Http { header_len, .. } => {
                    let mut headers = HeaderMap::new();
                    if let Some(h) = header_len {
                        if let Ok(v) = HeaderValue::from_str(h) {
                            headers.insert(http::HEADER_LENGTH, v);
                        }
                    }
                    http::parse_infer(body, &headers, "m".into(), String::new())?.0
                }
                Request::Grpc(_) => {
                    wire::check_infer_request(&body).map_err(vqad::serve::ApiError::bad)?;
                    let m = ModelInferRequest::decode(body).map_err(|e| vqad::serve::ApiError::bad(e.to_string()))?;
                    grpc::parse_infer(m)?
                }
            };
            infer::requested_outputs(&call.outputs)?;
            let plan = infer::plan_inputs(call.inputs, spec)?;
            decode_charge.set(plan.decode_bytes());
            plan.decode()
        }));
        let o = match r {
            Ok(Ok(arrays)) => match check_arrays(&arrays) {
                Ok(()) => Outcome::Accepted(arrays.len()),
                Err(m) => Outcome::BadOutput(m),
            },
            Ok(Err(e)) => Outcome::Refused(e.kind, e.message),
            Err(p) => Outcome::Panicked(p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()),
        };
        (o, ())
    });
    charged += decode_charge.get();
    (outcome, peak, charged)
}

fn check_arrays(arrays: &[ndarray::Array3<f32>]) -> Result<(), String> {
    if arrays.is_empty() {
        return Err("no arrays".into());
    }
    for a in arrays {
        if a.dim() != (CHANNELS, SIZE, SIZE) {
            return Err(format!("array of shape {:?}", a.dim()));
        }
        if let Some(v) = a.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(format!("value {v} outside [0, 1]"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- mutations

fn pick<'a, T>(rng: &mut ChaCha20Rng, v: &'a [T]) -> &'a T {
    &v[rng.random_range(0..v.len())]
}

fn random_bytes(rng: &mut ChaCha20Rng, max: usize) -> Vec<u8> {
    let n = rng.random_range(1..=max);
    (0..n).map(|_| rng.random()).collect()
}

fn interesting_u32(rng: &mut ChaCha20Rng, real: u32) -> u32 {
    let r = rng.random();
    *pick(rng, &[0, 1, real.wrapping_add(1), real.wrapping_sub(1), real.wrapping_mul(2), 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x8000_0000, r])
}

/// Dimensions over the run's pixel limit (and some over every limit) that `max_side` can
/// express.
fn huge_dims(rng: &mut ChaCha20Rng, max_side: u32) -> (u32, u32) {
    let over = (MAX_PIXELS as f64).sqrt() as u32 + 1;
    let all = [(20000, 20000), (over, over), (1, MAX_PIXELS as u32 + 1), (MAX_PIXELS as u32 + 1, 1), (65535, 65535), (0x7FFF_FFFF, 0x7FFF_FFFF), (max_side, max_side), (over, over - 1)];
    let ok: Vec<(u32, u32)> = all.iter().map(|&(w, h)| (w.min(max_side), h.min(max_side))).filter(|&(w, h)| w as u64 * h as u64 > MAX_PIXELS).collect();
    *pick(rng, &ok)
}

/// A genuine seed of format `fmt`.
fn seed_of(seeds: &Seeds, fmt: &str, rng: &mut ChaCha20Rng) -> Vec<u8> {
    let v: Vec<&Vec<u8>> = seeds.images.iter().filter(|(f, _)| *f == fmt).map(|(_, b)| b).collect();
    v[rng.random_range(0..v.len())].clone()
}

fn png_chunks(b: &[u8]) -> Vec<(usize, usize)> {
    // (offset of the length field, data length) of each chunk, while well formed.
    let mut out = vec![];
    let mut i = 8;
    while i + 12 <= b.len() {
        let n = u32::from_be_bytes(b[i..i + 4].try_into().unwrap()) as usize;
        if i + 12 + n > b.len() {
            break;
        }
        out.push((i, n));
        i += 12 + n;
    }
    out
}

fn png_fix_crc(b: &mut [u8], at: usize, n: usize) {
    let crc = crc32fast::hash(&b[at + 4..at + 8 + n]);
    b[at + 8 + n..at + 12 + n].copy_from_slice(&crc.to_be_bytes());
}

fn jpeg_sof(b: &[u8]) -> Option<usize> {
    (0..b.len().saturating_sub(9)).find(|&i| b[i] == 0xff && (0xc0..=0xc2).contains(&b[i + 1]))
}

fn jpeg_segments(b: &[u8]) -> Vec<usize> {
    let mut out = vec![];
    let mut i = 2;
    while i + 4 <= b.len() && b[i] == 0xff {
        let marker = b[i + 1];
        if marker == 0xda || marker == 0xd9 {
            out.push(i);
            break;
        }
        out.push(i);
        let n = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        i += 2 + n;
    }
    out
}

/// TIFF IFD entries (offset of each 12-byte entry) of the first IFD, little-endian only.
fn tiff_entries(b: &[u8]) -> Vec<usize> {
    if b.len() < 8 || &b[..2] != b"II" {
        return vec![];
    }
    let ifd = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
    if ifd + 2 > b.len() {
        return vec![];
    }
    let n = u16::from_le_bytes([b[ifd], b[ifd + 1]]) as usize;
    (0..n).map(|k| ifd + 2 + 12 * k).filter(|&e| e + 12 <= b.len()).collect()
}

fn set_dims(fmt: &str, b: &mut Vec<u8>, w: u32, h: u32) -> bool {
    match fmt {
        "png" => {
            if b.len() < 33 {
                return false;
            }
            b[16..20].copy_from_slice(&w.to_be_bytes());
            b[20..24].copy_from_slice(&h.to_be_bytes());
            png_fix_crc(b, 8, 13);
            true
        }
        "jpg" => match jpeg_sof(b) {
            Some(i) => {
                b[i + 5..i + 7].copy_from_slice(&(h.min(65535) as u16).to_be_bytes());
                b[i + 7..i + 9].copy_from_slice(&(w.min(65535) as u16).to_be_bytes());
                true
            }
            None => false,
        },
        "bmp" => {
            if b.len() < 26 {
                return false;
            }
            b[18..22].copy_from_slice(&(w.min(i32::MAX as u32)).to_le_bytes());
            let hh = h.min(i32::MAX as u32) as i32;
            // BMP rows may run top-down (negative height).
            let hh = if b[22..26].iter().any(|&x| x != 0) && i32::from_le_bytes(b[22..26].try_into().unwrap()) < 0 { -hh } else { hh };
            b[22..26].copy_from_slice(&hh.to_le_bytes());
            true
        }
        "tif" => {
            let mut done = 0;
            for e in tiff_entries(b) {
                let tag = u16::from_le_bytes([b[e], b[e + 1]]);
                let v = if tag == 256 { w } else if tag == 257 { h } else { continue };
                b[e + 2..e + 4].copy_from_slice(&4u16.to_le_bytes());
                b[e + 4..e + 8].copy_from_slice(&1u32.to_le_bytes());
                b[e + 8..e + 12].copy_from_slice(&v.to_le_bytes());
                done += 1;
            }
            done == 2
        }
        _ => false,
    }
}

/// Which dimensions `fmt` can express at most per side.
fn max_side(fmt: &str) -> u32 {
    match fmt {
        "jpg" => 65535,
        "bmp" => i32::MAX as u32,
        _ => u32::MAX,
    }
}

/// One mutant of operator `op`: the request and whether it must be refused.
pub fn mutate(op: &str, seeds: &Seeds, rng: &mut ChaCha20Rng, i: u64) -> Request {
    let (fmt, seed) = seeds.images[rng.random_range(0..seeds.images.len())].clone();
    let mut b = seed.clone();
    let way = i as usize;
    // Sometimes a second, genuine image rides along (the batch must fail or pass as a whole).
    let batch = |rng: &mut ChaCha20Rng, img: Vec<u8>| -> Vec<Vec<u8>> {
        if rng.random_bool(0.2) {
            let other = seeds.images[rng.random_range(0..seeds.images.len())].1.clone();
            vec![other, img]
        } else {
            vec![img]
        }
    };
    let send = |rng: &mut ChaCha20Rng, img: Vec<u8>| {
        let els = batch(rng, img);
        let n = els.len() as i64;
        bytes_request(&els, vec![n], way)
    };
    match op {
        "img_bit_flip" => {
            for _ in 0..rng.random_range(1..=4) {
                let k = rng.random_range(0..b.len());
                b[k] ^= 1 << rng.random_range(0..8);
            }
            send(rng, b)
        }
        "img_byte_set" => {
            let k = rng.random_range(0..b.len());
            let r = rng.random();
            b[k] = *pick(rng, &[0u8, 0xff, 0x7f, 0x80, 1, r]);
            send(rng, b)
        }
        "img_insert" => {
            let k = rng.random_range(0..=b.len());
            let ins = random_bytes(rng, 32);
            b.splice(k..k, ins);
            send(rng, b)
        }
        "img_delete" => {
            let k = rng.random_range(0..b.len());
            let n = rng.random_range(1..=32).min(b.len() - k);
            b.drain(k..k + n);
            send(rng, b)
        }
        "img_truncate" => {
            b.truncate(rng.random_range(0..b.len()));
            send(rng, b)
        }
        "img_splice" => {
            let other = &seeds.images[rng.random_range(0..seeds.images.len())].1;
            let k = rng.random_range(0..b.len());
            let j = rng.random_range(0..other.len());
            let n = rng.random_range(1..=256).min(other.len() - j).min(b.len() - k);
            b[k..k + n].copy_from_slice(&other[j..j + n]);
            send(rng, b)
        }
        "img_huge_dims" | "img_zero_dims" | "img_other_dims" => {
            let (w, h) = match op {
                "img_huge_dims" => huge_dims(rng, max_side(fmt)),
                "img_zero_dims" => *pick(rng, &[(0, 40), (48, 0), (0, 0)]),
                // Within the limit: small, or up to the limit (the decoder allocates for
                // what the header says before it finds the data missing).
                _ if rng.random_bool(0.8) => (rng.random_range(1..300), rng.random_range(1..300)),
                _ => {
                    let w = rng.random_range(1..=1024u32);
                    (w, rng.random_range(1..=(MAX_PIXELS / w as u64) as u32))
                }
            };
            if !set_dims(fmt, &mut b, w, h) {
                // A format with no editable header in this seed: use a bomb of the size.
                b = common_bombs::bomb("png", w.max(1).min(4096), h.max(1).min(4096));
                set_dims("png", &mut b, w, h);
            }
            send(rng, b)
        }
        "png_chunk_length" | "png_field_crc_fixed" => {
            let mut png = seed_of(seeds, "png", rng);
            let chunks = png_chunks(&png);
            let &(at, n) = pick(rng, &chunks);
            if op == "png_chunk_length" {
                let v = interesting_u32(rng, n as u32);
                png[at..at + 4].copy_from_slice(&v.to_be_bytes());
                if rng.random_bool(0.5) && at + 12 + n <= png.len() {
                    png_fix_crc(&mut png, at, n);
                }
            } else if n > 0 {
                // Edit a field inside the chunk (IHDR: depth, colour type, interlace…), then
                // make the CRC right so the decoder looks at the value.
                let k = at + 8 + rng.random_range(0..n);
                let r = rng.random();
                png[k] = *pick(rng, &[0u8, 1, 2, 3, 4, 6, 8, 16, 0xff, r]);
                png_fix_crc(&mut png, at, n);
            }
            send(rng, png)
        }
        "jpeg_segment" => {
            let mut jpg = seed_of(seeds, "jpg", rng);
            let segs = jpeg_segments(&jpg);
            let &at = pick(rng, &segs);
            if at + 4 <= jpg.len() {
                match rng.random_range(0..3) {
                    0 => {
                        let r: u16 = rng.random();
                        let v = *pick(rng, &[0u16, 1, 2, 0xffff, r]);
                        jpg[at + 2..at + 4].copy_from_slice(&v.to_be_bytes());
                    }
                    1 => {
                        let k = (at + 4 + rng.random_range(0..8)).min(jpg.len() - 1);
                        let r = rng.random();
                        jpg[k] = *pick(rng, &[0u8, 1, 2, 3, 4, 0x11, 0x22, 0x44, 0xff, r]);
                    }
                    _ => jpg[at + 1] = *pick(rng, &[0xc0u8, 0xc1, 0xc2, 0xc3, 0xc4, 0xdb, 0xdd, 0xda, 0xe1]),
                }
            }
            send(rng, jpg)
        }
        "tiff_ifd" => {
            let mut tif = seed_of(seeds, "tif", rng);
            let entries = tiff_entries(&tif);
            if let Some(&e) = entries.get(rng.random_range(0..entries.len().max(1))) {
                match rng.random_range(0..3) {
                    0 => {
                        let t = *pick(rng, &[0u16, 1, 2, 3, 4, 5, 11, 12, 16, 0xffff]);
                        tif[e + 2..e + 4].copy_from_slice(&t.to_le_bytes());
                    }
                    1 => {
                        let c = u32::from_le_bytes(tif[e + 4..e + 8].try_into().unwrap());
                        let v = interesting_u32(rng, c);
                        tif[e + 4..e + 8].copy_from_slice(&v.to_le_bytes());
                    }
                    _ => {
                        let c = u32::from_le_bytes(tif[e + 8..e + 12].try_into().unwrap());
                        let v = interesting_u32(rng, c);
                        tif[e + 8..e + 12].copy_from_slice(&v.to_le_bytes());
                    }
                }
            } else {
                let k = rng.random_range(0..tif.len());
                tif[k] ^= 0xff;
            }
            send(rng, tif)
        }
        "bmp_header" => {
            let mut bmp = seed_of(seeds, "bmp", rng);
            // File size, data offset, header size, planes, bit count, compression, image size,
            // colours used.
            let fields: [(usize, usize); 8] = [(2, 4), (10, 4), (14, 4), (26, 2), (28, 2), (30, 4), (34, 4), (46, 4)];
            let &(at, n) = pick(rng, &fields);
            if at + n <= bmp.len() {
                let cur = if n == 4 { u32::from_le_bytes(bmp[at..at + 4].try_into().unwrap()) } else { u16::from_le_bytes([bmp[at], bmp[at + 1]]) as u32 };
                let v = match (at, rng.random_range(0..2)) {
                    (28, 0) => *pick(rng, &[0u32, 1, 2, 4, 8, 15, 16, 24, 32, 64]),
                    (30, 0) => *pick(rng, &[0u32, 1, 2, 3, 4, 5, 6]),
                    _ => interesting_u32(rng, cur),
                };
                bmp[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
            }
            send(rng, bmp)
        }
        "not_an_image" => {
            let junk = match rng.random_range(0..5) {
                0 => b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
                1 => b"RIFF\x1a\x00\x00\x00WEBPVP8 ".to_vec(),
                2 => b"P5\n2 2\n255\n\x00\x00\x00\x00".to_vec(),
                3 => vec![],
                _ => random_bytes(rng, 64),
            };
            let junk = if junk.len() >= 2 && (junk.starts_with(b"\x89P") || junk.starts_with(b"\xff\xd8") || junk.starts_with(b"BM") || junk.starts_with(b"II") || junk.starts_with(b"MM")) { b"xx".to_vec() } else { junk };
            send(rng, junk)
        }
        "float_tiff_nan" => {
            let bad = *pick(rng, &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
            let (x0, y0) = (rng.random_range(0..8), rng.random_range(0..8));
            let img = image::ImageBuffer::from_fn(8, 8, |x, y| image::Rgb([if (x, y) == (x0, y0) { bad } else { 0.5 }, 0.25, 0.75]));
            send(rng, encode(image::DynamicImage::ImageRgb32F(img), image::ImageFormat::Tiff))
        }
        "bytes_count_lies" => {
            let els = batch(rng, b);
            let n = els.len() as i64;
            let shape = match rng.random_range(0..5) {
                0 => vec![n + rng.random_range(1..4)],
                1 => vec![n - 1],
                2 => vec![*pick(rng, &[1i64 << 40, i64::MAX, -1])],
                3 => vec![n, 2],
                _ => vec![],
            };
            bytes_request(&els, shape, way)
        }
        "bytes_length_lies" => {
            let els = batch(rng, b);
            let mut raw = infer::join_bytes(&els);
            match rng.random_range(0..3) {
                0 => {
                    let real = els[0].len() as u32;
                    let r = rng.random_range(real + 1..=real.saturating_add(1000).max(real + 1));
                    let v = *pick(rng, &[u32::MAX, real + 1, r]);
                    raw[0..4].copy_from_slice(&v.to_le_bytes());
                }
                1 => raw.extend_from_slice(&random_bytes(rng, 3)),
                _ => {
                    let cut = rng.random_range(1..4);
                    raw.truncate(raw.len() - cut);
                }
            }
            let shape = vec![els.len() as i64];
            match way % 2 {
                0 => http_binary("BYTES", &shape, &raw),
                _ => grpc_request(vec![tensor("image", "BYTES", shape, None)], vec![raw]),
            }
        }
        "binary_header_lies" => {
            let raw = infer::join_bytes(&[b]);
            let Request::Http { mut body, header_len } = http_binary("BYTES", &[1], &raw) else { unreachable!() };
            let n: usize = header_len.unwrap().parse().unwrap();
            let header = match rng.random_range(0..6) {
                0 => (body.len() + rng.random_range(1..1000)).to_string(),
                1 => (n - rng.random_range(1..n.min(20))).to_string(),
                2 => (n + rng.random_range(1..raw.len().clamp(2, 100))).to_string(),
                3 => pick(rng, &["-1", "abc", "", "1e3", "18446744073709551616"]).to_string(),
                _ => {
                    // The JSON's binary_data_size lies instead.
                    let lie = raw.len() as i64 + *pick(rng, &[-1i64, 1, 100, -(raw.len() as i64)]);
                    let head = serde_json::json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": lie}}]});
                    let mut b2 = serde_json::to_vec(&head).unwrap();
                    let n2 = b2.len();
                    b2.extend_from_slice(&raw);
                    body = b2;
                    n2.to_string()
                }
            };
            Request::Http { body, header_len: Some(header) }
        }
        "fp32_non_finite" => {
            let mut v = vec![0.5f32; CHANNELS * SIZE * SIZE];
            let k = rng.random_range(0..v.len());
            v[k] = *pick(rng, &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.001, 1.0001, f32::MAX, -f32::MIN_POSITIVE]);
            let mut req = fp32_request(&v, vec![1, CHANNELS as i64, SIZE as i64, SIZE as i64], way);
            if v[k].is_finite() && way % 4 == 1 {
                // Plain JSON can carry it too.
                req = fp32_request(&v, vec![1, CHANNELS as i64, SIZE as i64, SIZE as i64], 1);
            }
            req
        }
        "fp32_shape_lies" => {
            let per = CHANNELS * SIZE * SIZE;
            let (values, shape): (Vec<f32>, Vec<i64>) = match rng.random_range(0..6) {
                0 => (vec![0.5; per], vec![2, CHANNELS as i64, SIZE as i64, SIZE as i64]),
                1 => (vec![0.5; per + 1], vec![1, CHANNELS as i64, SIZE as i64, SIZE as i64]),
                2 => (vec![0.5; per], vec![1 << 62, CHANNELS as i64, SIZE as i64, SIZE as i64]),
                3 => (vec![0.5; per], vec![-1, CHANNELS as i64, SIZE as i64, SIZE as i64]),
                4 => (vec![0.5; per], vec![1, CHANNELS as i64, SIZE as i64 / 2, SIZE as i64 * 2]),
                _ => (vec![], vec![0, CHANNELS as i64, SIZE as i64, SIZE as i64]),
            };
            if rng.random_bool(0.3) {
                // Raw bytes that are not a whole number of floats.
                let mut raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                raw.push(0);
                let s = vec![1, CHANNELS as i64, SIZE as i64, SIZE as i64];
                return if way % 2 == 0 { http_binary("FP32", &s, &raw) } else { grpc_request(vec![tensor("image", "FP32", s, None)], vec![raw]) };
            }
            fp32_request(&values, shape, way)
        }
        "wrong_tensor" => {
            let raw = infer::join_bytes(&[b.clone()]);
            match rng.random_range(0..5) {
                0 => grpc_request(vec![tensor("img", "BYTES", vec![1], None)], vec![raw]),
                1 => grpc_request(vec![tensor("image", *pick(rng, &["INT32", "UINT8", "FP16", "BOOL", ""]), vec![1], None)], vec![raw]),
                2 => grpc_request(vec![tensor("image", "BYTES", vec![1], None), tensor("image", "BYTES", vec![1], None)], vec![raw.clone(), raw]),
                3 => grpc_request(vec![], vec![]),
                _ => grpc_request(vec![tensor("image", "BYTES", vec![1], None)], vec![raw.clone(), raw]),
            }
        }
        "json_bytes_mutated" => {
            let raw = infer::join_bytes(&[b]);
            let Request::Http { mut body, header_len } = http_binary("BYTES", &[1], &raw) else { unreachable!() };
            let n: usize = header_len.clone().unwrap().parse().unwrap();
            for _ in 0..rng.random_range(1..=3) {
                let k = rng.random_range(0..n);
                body[k] = *pick(rng, &[b'{', b'}', b'[', b']', b'"', b',', b':', b'0', b'9', b'-', b'e', b' ', 0, 0xff, body[k] ^ 0x20]);
            }
            Request::Http { body, header_len }
        }
        "json_structure_bomb" => {
            let body = match rng.random_range(0..7) {
                // Many outputs, each a few bytes of JSON.
                0 => format!(r#"{{"inputs":[],"outputs":[{}]}}"#, vec![r#"{"name":""}"#; rng.random_range(17..20000)].join(",")),
                1 => format!(r#"{{"inputs":[{}]}}"#, vec![r#"{"name":"image","datatype":"BYTES","shape":[1],"data":[""]}"#; rng.random_range(17..5000)].join(",")),
                2 => format!(r#"{{"inputs":[{{"name":"image","datatype":"BYTES","shape":[{}],"data":[]}}]}}"#, vec!["1"; rng.random_range(9..50000)].join(",")),
                3 => {
                    let d = rng.random_range(129..5000);
                    format!(r#"{{"inputs":[{{"name":"image","datatype":"FP32","shape":[1],"data":{}0{}}}]}}"#, "[".repeat(d), "]".repeat(d))
                }
                4 => format!(r#"{{"inputs":[{{"name":"image","datatype":"BYTES","shape":[1],"data":[{}]}}]}}"#, vec![r#""""#; rng.random_range(4097..60000)].join(",")),
                5 => format!(r#"{{"inputs":[{{"name":"image","datatype":"BYTES","shape":[1],"data":[{}]}}]}}"#, vec!["0"; rng.random_range(10..200000)].join(",")),
                _ => format!(r#"{{"inputs":[{{"name":"image","datatype":"FP32","shape":[1,3,64,64],"data":[{}]}}]}}"#, vec!["0"; rng.random_range(1..12288)].join(",")),
            };
            Request::Http { body: body.into_bytes(), header_len: None }
        }
        "json_ignored_bulk" => {
            // Valid requests carrying bulk vqad ignores: unknown fields and parameters.
            let raw = infer::join_bytes(&[b]);
            let n = rng.random_range(1..20000);
            let junk: Vec<String> = (0..n).map(|k| format!(r#""p{k}":{{"a":[1,2,{{"b":"x"}}]}}"#)).collect();
            let head = format!(
                r#"{{"id":"x","parameters":{{{}}},"unknown":[[[{{}}]]],"inputs":[{{"name":"image","datatype":"BYTES","shape":[1],"parameters":{{"binary_data_size":{},"other":"y"}}}}]}}"#,
                junk.join(","),
                raw.len()
            );
            let mut body = head.into_bytes();
            let hl = body.len();
            body.extend_from_slice(&raw);
            Request::Http { body, header_len: Some(hl.to_string()) }
        }
        "grpc_wire_mutated" => {
            let els = batch(rng, b);
            let n = els.len() as i64;
            let Request::Grpc(mut m) = bytes_request(&els, vec![n], 1 + (way % 2)) else { unreachable!() };
            for _ in 0..rng.random_range(1..=3) {
                let k = rng.random_range(0..m.len().min(200));
                m[k] ^= 1 << rng.random_range(0..8);
            }
            Request::Grpc(m)
        }
        "grpc_structure" => {
            let raw = infer::join_bytes(&[b]);
            let r = match rng.random_range(0..6) {
                0 => ModelInferRequest { inputs: (0..rng.random_range(17..5000)).map(|_| InferInputTensor::default()).collect(), ..Default::default() },
                1 => ModelInferRequest { outputs: (0..rng.random_range(17..5000)).map(|_| InferRequestedOutputTensor::default()).collect(), ..Default::default() },
                2 => ModelInferRequest { inputs: vec![tensor("image", "BYTES", vec![1; rng.random_range(9..5000)], None)], raw_input_contents: vec![raw], ..Default::default() },
                3 => ModelInferRequest {
                    inputs: vec![tensor("image", "BYTES", vec![1], Some(InferTensorContents { bytes_contents: vec![vec![]; rng.random_range(4097..30000)], ..Default::default() }))],
                    ..Default::default()
                },
                4 => ModelInferRequest {
                    inputs: vec![tensor("image", "BYTES", vec![1], Some(InferTensorContents { int64_contents: vec![1; rng.random_range(1..50000)], ..Default::default() }))],
                    ..Default::default()
                },
                _ => ModelInferRequest { inputs: vec![tensor("image", "BYTES", vec![1], None)], raw_input_contents: vec![vec![]; rng.random_range(17..5000)], ..Default::default() },
            };
            Request::Grpc(r.encode_to_vec())
        }
        other => panic!("unknown operator {other}"),
    }
}

// ---------------------------------------------------------------- a run

/// Counts of a run.
#[derive(Default)]
pub struct Stats {
    pub inputs: u64,
    /// Per operator: (inputs, refused).
    pub per_operator: BTreeMap<&'static str, (u64, u64)>,
    /// Refusals per error kind (`BadRequest`, `TooLarge`, …).
    pub per_kind: BTreeMap<String, u64>,
    /// Inputs of must-refuse operators that were accepted: (operator, index, request).
    pub accepted_bad: Vec<(&'static str, u64, Request)>,
    pub bad_output: Vec<(&'static str, u64, String)>,
    pub panics: Vec<(&'static str, u64, String)>,
    /// Inputs whose peak allocation exceeded the server's charge: (op, index, peak, charged).
    pub over_budget: Vec<(&'static str, u64, u64, u64)>,
    /// Refusals with an empty message or blamed on the server (internal).
    pub unclear: Vec<(&'static str, u64, String)>,
    /// Largest peak seen and the ratio peak / charged at its worst (with its operator and
    /// index).
    pub max_peak: u64,
    pub worst_ratio: f64,
    pub worst: Option<(&'static str, u64)>,
}

impl Stats {
    pub fn report(&self) -> String {
        let refused: u64 = self.per_operator.values().map(|v| v.1).sum();
        let mut s = format!(
            "inputs: {}, refused: {refused}, accepted: {}, must-refuse inputs accepted: {}, malformed outputs: {}, panics: {}, over the memory charge: {}, unclear refusals: {}\nlargest peak allocation {:.1} MiB; worst peak / charge {:.3} ({:?})\nper operator (inputs / refused):\n",
            self.inputs,
            self.inputs - refused,
            self.accepted_bad.len(),
            self.bad_output.len(),
            self.panics.len(),
            self.over_budget.len(),
            self.unclear.len(),
            self.max_peak as f64 / (1 << 20) as f64,
            self.worst_ratio,
            self.worst
        );
        for (op, (n, r)) in &self.per_operator {
            s += &format!("  {op:<22} {n:>9} / {r}\n");
        }
        s += "refusals per kind:\n";
        for (k, n) in &self.per_kind {
            s += &format!("  {k:<22} {n:>9}\n");
        }
        for (op, i, _) in self.accepted_bad.iter().take(10) {
            s += &format!("ACCEPTED: input #{i} by {op}\n");
        }
        for (op, i, m) in self.bad_output.iter().take(10) {
            s += &format!("MALFORMED OUTPUT: input #{i} by {op}: {m}\n");
        }
        for (op, i, m) in self.panics.iter().take(10) {
            s += &format!("PANIC: input #{i} by {op}: {m}\n");
        }
        for (op, i, peak, charged) in self.over_budget.iter().take(10) {
            s += &format!("OVER THE CHARGE: input #{i} by {op}: peak {peak} bytes, charged {charged}\n");
        }
        for (op, i, m) in self.unclear.iter().take(10) {
            s += &format!("UNCLEAR: input #{i} by {op}: {m:?}\n");
        }
        s
    }

    pub fn clean(&self) -> bool {
        self.accepted_bad.is_empty() && self.bad_output.is_empty() && self.panics.is_empty() && self.over_budget.is_empty() && self.unclear.is_empty()
    }
}

/// Input `i` of the run from `seed`, with its operator (to look at one the run reported).
pub fn replay(seed: u64, i: u64) -> (&'static str, Request) {
    let seeds = Seeds::new();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    for k in 0..=i {
        let (op, _) = OPERATORS[(k % OPERATORS.len() as u64) as usize];
        let req = mutate(op, &seeds, &mut rng, k);
        if k == i {
            return (op, req);
        }
    }
    unreachable!()
}

/// Runs `n` inputs from `seed`; operators are drawn in turn so every one runs n/ops times.
pub fn run(seed: u64, n: u64) -> Stats {
    let seeds = Seeds::new();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut stats = Stats::default();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..n {
        if n > 100_000 && i > 0 && i % 100_000 == 0 {
            eprintln!("{i} inputs: {} panics, {} must-refuse accepted, {} over the charge", stats.panics.len(), stats.accepted_bad.len(), stats.over_budget.len());
        }
        let (op, must_refuse) = OPERATORS[(i % OPERATORS.len() as u64) as usize];
        let req = mutate(op, &seeds, &mut rng, i);
        let (outcome, peak, charged) = run_one(&req);
        stats.inputs += 1;
        stats.max_peak = stats.max_peak.max(peak);
        let ratio = peak as f64 / charged.max(1) as f64;
        if ratio > stats.worst_ratio {
            stats.worst_ratio = ratio;
            stats.worst = Some((op, i));
        }
        if peak > charged {
            stats.over_budget.push((op, i, peak, charged));
        }
        let c = stats.per_operator.entry(op).or_default();
        c.0 += 1;
        match outcome {
            Outcome::Refused(kind, msg) => {
                c.1 += 1;
                *stats.per_kind.entry(format!("{kind:?}")).or_default() += 1;
                if msg.trim().is_empty() || !matches!(kind, ErrorKind::BadRequest | ErrorKind::TooLarge) {
                    stats.unclear.push((op, i, format!("{kind:?}: {msg}")));
                }
            }
            Outcome::Accepted(_) if must_refuse => stats.accepted_bad.push((op, i, req)),
            Outcome::Accepted(_) => {}
            Outcome::BadOutput(m) => stats.bad_output.push((op, i, m)),
            Outcome::Panicked(m) => stats.panics.push((op, i, m)),
        }
    }
    std::panic::set_hook(prev);
    stats
}
