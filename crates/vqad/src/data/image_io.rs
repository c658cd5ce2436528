//! Decoding files into `[C, H, W]` f32 arrays in [0, 1] and back.
//!
//! Conversions are done here on raw samples rather than through the `image` crate's
//! colour conversions, so the numbers are stated: 8-bit samples are divided by 255, 16-bit by
//! 65535; alpha is dropped (MVTec has none; compositing would invent a background); colour
//! to gray uses ITU-R BT.601 weights (0.299, 0.587, 0.114), as PIL's `convert("L")` does, so
//! gray models see the values MVTec reference code sees; gray to colour repeats the channel.

use super::decode::{decode_bytes, decode_file, DecodeLimits};
use super::resize::{resize_mask_nearest, RowResizer};
use super::DataError;
use image::DynamicImage;
use ndarray::{Array2, Array3, ArrayView3};
use std::path::{Path, PathBuf};

/// File extensions treated as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// Whether the path has one of [`IMAGE_EXTENSIONS`].
pub fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

/// Decodes a file within `limits`, guessing the format from its bytes (a misnamed file still
/// loads).
pub(crate) fn decode(path: &Path, limits: &DecodeLimits) -> Result<DynamicImage, DataError> {
    decode_file(path, limits)
}

/// Interleaved samples in [0, 1] of one row, channel count and whether the last is alpha,
/// handed to `row(y, samples)` for each row in turn. Row by row, so a large image is never
/// converted to floats whole (16 bytes a pixel for RGBA: 256 MiB at 16 Mpx).
fn for_each_row(img: &DynamicImage, mut row: impl FnMut(usize, &[f32], usize, bool)) {
    fn rows<T: Copy>(raw: &[T], w: usize, n: usize, alpha: bool, conv: impl Fn(T) -> f32, row: &mut impl FnMut(usize, &[f32], usize, bool)) {
        let mut buf = vec![0f32; w * n];
        for (y, r) in raw.chunks_exact((w * n).max(1)).enumerate() {
            for (d, &v) in buf.iter_mut().zip(r) {
                *d = conv(v);
            }
            row(y, &buf, n, alpha);
        }
    }
    let w = img.width() as usize;
    if w == 0 || img.height() == 0 {
        return;
    }
    let u8s = |x: u8| x as f32 / 255.0;
    let u16s = |x: u16| x as f32 / 65535.0;
    let f32s = |v: f32| v.clamp(0.0, 1.0);
    match img {
        DynamicImage::ImageLuma8(b) => rows(b.as_raw(), w, 1, false, u8s, &mut row),
        DynamicImage::ImageLumaA8(b) => rows(b.as_raw(), w, 2, true, u8s, &mut row),
        DynamicImage::ImageRgb8(b) => rows(b.as_raw(), w, 3, false, u8s, &mut row),
        DynamicImage::ImageRgba8(b) => rows(b.as_raw(), w, 4, true, u8s, &mut row),
        DynamicImage::ImageLuma16(b) => rows(b.as_raw(), w, 1, false, u16s, &mut row),
        DynamicImage::ImageLumaA16(b) => rows(b.as_raw(), w, 2, true, u16s, &mut row),
        DynamicImage::ImageRgb16(b) => rows(b.as_raw(), w, 3, false, u16s, &mut row),
        DynamicImage::ImageRgba16(b) => rows(b.as_raw(), w, 4, true, u16s, &mut row),
        DynamicImage::ImageRgb32F(b) => rows(b.as_raw(), w, 3, false, f32s, &mut row),
        DynamicImage::ImageRgba32F(b) => rows(b.as_raw(), w, 4, true, f32s, &mut row),
        other => rows(other.to_rgba32f().as_raw(), w, 4, true, f32s, &mut row),
    }
}

/// Converts an image to `[channels, size, size]` in [0, 1]: channel conversion as in the
/// module notes, then area (shrink) / bilinear (enlarge) resampling. Non-square images are
/// stretched. `channels` 1 or 3 are what the model takes; 2 and 4 keep alpha (1.0 when the
/// image has none); any other value is treated as 3. Memory beside the image: `C × H × size`
/// floats (the resize's first pass runs as rows are converted).
pub fn image_to_array(img: &DynamicImage, channels: usize, size: usize) -> Array3<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let out_c = if (1..=4).contains(&channels) { channels } else { 3 };
    let want_colour = if out_c >= 3 { 3 } else { 1 };
    // One converted row, planar: [out_c][w].
    let mut planar = vec![0f32; out_c * w];
    let convert = |planar: &mut [f32], s: &[f32], n: usize, alpha: bool| {
        let colour = if alpha { n - 1 } else { n };
        for x in 0..w {
            let p = &s[x * n..(x + 1) * n];
            match (colour, want_colour) {
                (1, 1) => planar[x] = p[0],
                (1, _) => (0..3).for_each(|c| planar[c * w + x] = p[0]),
                (_, 1) => planar[x] = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2],
                _ => (0..3).for_each(|c| planar[c * w + x] = p[c]),
            }
            if out_c == 2 || out_c == 4 {
                planar[(out_c - 1) * w + x] = if alpha { p[n - 1] } else { 1.0 };
            }
        }
    };
    if (h, w) == (size, size) {
        let mut a = Array3::<f32>::zeros((out_c, h, w));
        for_each_row(img, |y, s, n, alpha| {
            convert(&mut planar, s, n, alpha);
            for c in 0..out_c {
                for x in 0..w {
                    a[[c, y, x]] = planar[c * w + x];
                }
            }
        });
        return a;
    }
    let mut r = RowResizer::new(out_c, h, w, size, size);
    for_each_row(img, |y, s, n, alpha| {
        convert(&mut planar, s, n, alpha);
        r.push_row(y, |c, x| planar[c * w + x]);
    });
    // Averages of values in [0, 1] are in [0, 1]; in f32 a wide shrink (hundreds of taps)
    // can round past 1 (1.000003 for 16432 px → 64, found by tests/serve_fuzz.rs), which the
    // server refuses in an FP32 input. Only those rounding errors are clamped.
    let mut out = r.finish();
    out.mapv_inplace(|v| v.clamp(0.0, 1.0));
    out
}

/// Loads an image file as `[channels, size, size]` in [0, 1] within the default
/// [`DecodeLimits`]; `channels` must be 1 or 3.
pub fn load_image(path: &Path, channels: usize, size: usize) -> Result<Array3<f32>, DataError> {
    load_image_within(path, channels, size, &DecodeLimits::default())
}

/// [`load_image`] within `limits`: an image over them is refused from its header.
pub fn load_image_within(path: &Path, channels: usize, size: usize, limits: &DecodeLimits) -> Result<Array3<f32>, DataError> {
    check_shape(channels, size)?;
    Ok(image_to_array(&decode(path, limits)?, channels, size))
}

fn check_shape(channels: usize, size: usize) -> Result<(), DataError> {
    if channels != 1 && channels != 3 {
        return Err(DataError::Invalid(format!("channels must be 1 or 3, got {channels}")));
    }
    if size == 0 {
        return Err(DataError::Invalid("image size must be positive".into()));
    }
    Ok(())
}

/// Decodes an encoded image held in memory (PNG, JPEG, BMP, TIFF; format guessed from the
/// bytes) as `[channels, size, size]` in [0, 1], exactly as [`load_image`] does for a file, so
/// a server answers what `vqad detect` answers. `what` names the input in errors.
pub fn decode_image_bytes(bytes: &[u8], what: &str, channels: usize, size: usize) -> Result<Array3<f32>, DataError> {
    decode_image_bytes_within(bytes, what, channels, size, &DecodeLimits::default())
}

/// [`decode_image_bytes`] within `limits`.
pub fn decode_image_bytes_within(bytes: &[u8], what: &str, channels: usize, size: usize, limits: &DecodeLimits) -> Result<Array3<f32>, DataError> {
    check_shape(channels, size)?;
    let img = decode_bytes(bytes, Path::new(what), limits)?;
    Ok(image_to_array(&img, channels, size))
}

/// `[C, H, W]` in [0, 1] → 8-bit image: 1 channel → Luma8, 2 → LumaA8, 3 → Rgb8, 4 or more
/// → Rgba8 of the first four. Values are clamped and rounded; NaN becomes 0.
pub fn array_to_image(a: &ArrayView3<f32>) -> DynamicImage {
    let (c, h, w) = a.dim();
    let q = |v: f32| {
        if v.is_nan() {
            0
        } else {
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        }
    };
    let take = match c {
        0 => 0,
        1..=4 => c,
        _ => 4,
    };
    let mut buf = Vec::with_capacity(h * w * take.max(1));
    for y in 0..h {
        for x in 0..w {
            if take == 0 {
                buf.push(0);
            }
            for ch in 0..take {
                buf.push(q(a[[ch, y, x]]));
            }
        }
    }
    let (w, h) = (w as u32, h as u32);
    let img = match take {
        0 | 1 => image::GrayImage::from_raw(w, h, buf).map(DynamicImage::ImageLuma8),
        2 => image::GrayAlphaImage::from_raw(w, h, buf).map(DynamicImage::ImageLumaA8),
        3 => image::RgbImage::from_raw(w, h, buf).map(DynamicImage::ImageRgb8),
        _ => image::RgbaImage::from_raw(w, h, buf).map(DynamicImage::ImageRgba8),
    };
    // The buffer length is h*w*channels by construction, so from_raw cannot fail.
    img.unwrap_or_else(|| DynamicImage::new_luma8(w, h))
}

/// 0/1 mask → 8-bit 0/255 image (the MVTec convention on disk).
pub fn mask_to_image(m: &ndarray::ArrayView2<u8>) -> image::GrayImage {
    let (h, w) = m.dim();
    image::GrayImage::from_fn(w as u32, h as u32, |x, y| {
        image::Luma([if m[[y as usize, x as usize]] > 0 {
            255
        } else {
            0
        }])
    })
}

/// Loads a ground-truth mask as 0/1 at `size × size`: gray value above half scale (>127 of
/// 255) is defect; colour masks go through luma first. Nearest-neighbour resize keeps it binary.
pub fn load_mask(path: &Path, size: usize) -> Result<Array2<u8>, DataError> {
    load_mask_within(path, size, &DecodeLimits::default())
}

/// [`load_mask`] within `limits`.
pub fn load_mask_within(path: &Path, size: usize, limits: &DecodeLimits) -> Result<Array2<u8>, DataError> {
    if size == 0 {
        return Err(DataError::Invalid("mask size must be positive".into()));
    }
    let img = decode(path, limits)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut m = Array2::<u8>::zeros((h, w));
    for_each_row(&img, |y, s, n, alpha| {
        let colour = if alpha { n - 1 } else { n };
        for x in 0..w {
            let p = &s[x * n..(x + 1) * n];
            let v = if colour == 1 { p[0] } else { 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2] };
            m[[y, x]] = u8::from(v > 127.5 / 255.0);
        }
    });
    Ok(resize_mask_nearest(&m.view(), size, size))
}

/// Loads many images, decoding on all cores. Bad files do not stop the batch: they come back
/// in the second list with their error, in input order, and the good ones in the first.
/// Runs `f` over `paths` on all cores (at most 16 threads); results in input order. A panic
/// inside `f` becomes a decode error for that chunk's files instead of taking the batch down.
pub(crate) fn par_map_paths<T: Send>(
    paths: &[PathBuf],
    f: impl Fn(&Path) -> Result<T, DataError> + Sync,
) -> Vec<Result<T, DataError>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16);
    let chunk = paths.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|p| f(p)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .zip(paths.chunks(chunk))
            .flat_map(|(h, part)| {
                h.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|p| {
                            Err(DataError::Decode {
                                path: p.clone(),
                                reason: "decoder panicked".into(),
                            })
                        })
                        .collect()
                })
            })
            .collect()
    })
}

#[allow(clippy::type_complexity)] // the signature other modules call
pub fn load_many(
    paths: &[PathBuf],
    channels: usize,
    size: usize,
) -> (Vec<(PathBuf, Array3<f32>)>, Vec<(PathBuf, DataError)>) {
    load_many_within(paths, channels, size, &DecodeLimits::default())
}

/// [`load_many`] within `limits`.
#[allow(clippy::type_complexity)]
pub fn load_many_within(
    paths: &[PathBuf],
    channels: usize,
    size: usize,
    limits: &DecodeLimits,
) -> (Vec<(PathBuf, Array3<f32>)>, Vec<(PathBuf, DataError)>) {
    let results = par_map_paths(paths, |p| load_image_within(p, channels, size, limits));
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for (p, r) in paths.iter().zip(results) {
        match r {
            Ok(a) => ok.push((p.clone(), a)),
            Err(e) => {
                tracing::warn!("skipping {e}");
                bad.push((p.clone(), e))
            }
        }
    }
    (ok, bad)
}

/// Image files directly in `dir` (by extension), sorted by path so every run sees the same order.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let p = entry.path();
        if p.is_file() && is_image_path(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}
