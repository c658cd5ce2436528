//! Bounded image decoding: an image's size is read from its header and checked before any
//! pixel buffer exists, and the decoder's own allocations are capped.
//!
//! Why: a 388 KB PNG can declare 20000 × 20000 pixels. Decoded unchecked it took 400 MB of
//! samples and, through the float conversion, 6.7 GB and 16 s (issue 25) — one request could
//! OOM-kill a 2 GiB pod. Every decode in vqad goes through here: `detect`, `eval`, `data check`,
//! training inputs and `serve`. What decoding an admitted image costs at its peak is known from
//! the header too ([`ImageInfo::decode_bytes`]), so a server can admit it against a memory
//! budget before decoding; `tests/serve_fuzz.rs` checks that bound with a counting allocator
//! on every mutant it decodes.

use super::DataError;
use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use std::path::Path;

/// Limits on one image, checked from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most pixels (width × height) an image may have.
    pub max_pixels: u64,
}

impl DecodeLimits {
    /// 16 Mpx (4096 × 4096): 16× an MVTec AD image (1024²) and 256× the paper's model input
    /// (256²), so any inspection camera's frame fits, while the worst admitted image stays a
    /// few hundred MiB to decode (16-bit RGBA: 128 MiB of samples).
    pub const DEFAULT_MAX_PIXELS: u64 = 16 << 20;

    pub fn new(max_pixels: u64) -> Self {
        DecodeLimits { max_pixels }
    }

    /// What the decoder itself may allocate (`image::Limits::max_alloc`): the sample buffer of
    /// the largest admitted image in the widest layout (RGBA f32, 16 bytes a pixel) plus 1 MiB
    /// of decoder state. The image crate's own default (512 MiB) admits a 20000² gray PNG.
    pub fn max_alloc(&self) -> u64 {
        self.max_pixels.saturating_mul(16).saturating_add(1 << 20)
    }

    /// The largest encoded file read: an image within the limits is never larger than its
    /// samples (uncompressed TIFF or BMP) plus headers, and files are read whole (the JPEG
    /// decoder and the TIFF check need all of it), so a larger file is refused unread.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_alloc()
    }

    fn image_limits(&self) -> image::Limits {
        let mut l = image::Limits::default();
        l.max_alloc = Some(self.max_alloc());
        // A side can be no longer than the pixel limit; the decoders check this strict limit
        // themselves, the product is checked here.
        let side = u32::try_from(self.max_pixels).unwrap_or(u32::MAX);
        l.max_image_width = Some(side);
        l.max_image_height = Some(side);
        l
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits::new(Self::DEFAULT_MAX_PIXELS)
    }
}

/// What an image's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    pub color: ColorType,
    /// Decoder memory the header itself commits (a TIFF's directory values).
    pub header_bytes: u64,
}

impl ImageInfo {
    pub fn pixels(&self) -> u64 {
        self.width as u64 * self.height as u64
    }

    /// Bytes of the decoded samples (what the decoder allocates for the image itself).
    pub fn sample_bytes(&self) -> u64 {
        self.pixels() * self.color.bytes_per_pixel() as u64
    }

    /// An upper bound on the bytes decoding this image from `encoded` bytes in memory and
    /// converting it to `[channels, size, size]` allocates at its peak: the sample buffer, the
    /// decoder's working memory (a copy of the input for JPEG, whose progressive mode also
    /// keeps 16-bit coefficients of every component; rows and strips for the others), the
    /// conversion's `C × H × size` floats and the result. Measured with a counting allocator
    /// in `tests/serve_fuzz.rs` on every format, layout and mutant; the margins are generous.
    pub fn decode_bytes(&self, encoded: u64, channels: usize, size: usize) -> u64 {
        let (w, h) = (self.width as u64, self.height as u64);
        let samples = self.sample_bytes();
        let decoder = match self.format {
            // Input copy + coefficients (2 bytes per component sample, padded to MCUs of up
            // to 32×32) + per-component planes before colour conversion.
            ImageFormat::Jpeg => {
                let padded = w.div_ceil(32) * 32 * h.div_ceil(32) * 32;
                encoded + padded * 4 * 2 + padded * 4
            }
            // The image decoder's own result buffer (copied into the output), strips read
            // whole, and the directory.
            ImageFormat::Tiff => samples + 2 * encoded + self.header_bytes,
            // Rows, strips or chunks: bounded by a few rows or by the encoded size.
            _ => encoded + 8 * w * self.color.bytes_per_pixel() as u64,
        };
        let c = channels.clamp(1, 4) as u64;
        let s = size as u64;
        let convert = (c * h * s + c * s * s) * 4 + c * w * 4 + (s + 2) * (w.div_ceil(s.max(1)) + 2) * 16 + (s + 2) * (h.div_ceil(s.max(1)) + 2) * 16;
        // A quarter more on the conversion, which the others do not share: margin for the
        // allocator's rounding of its many small row buffers.
        samples + decoder + convert + convert / 4 + (256 << 10)
    }
}

/// Reads only the header of an encoded image in memory (format guessed from the bytes) and
/// refuses one over `limits` before any pixel buffer exists. `what` names the input in errors.
pub fn probe_image_bytes(bytes: &[u8], what: &Path, limits: &DecodeLimits) -> Result<ImageInfo, DataError> {
    open(bytes, what, limits).map(|(_, info)| info)
}

/// Decodes an encoded image in memory within `limits`.
pub(crate) fn decode_bytes(bytes: &[u8], what: &Path, limits: &DecodeLimits) -> Result<DynamicImage, DataError> {
    let (decoder, info) = open(bytes, what, limits)?;
    finish(decoder, info, what, limits)
}

/// Decodes an image file within `limits` (format guessed from the bytes, so a misnamed file
/// still loads). A file larger than [`DecodeLimits::max_file_bytes`] is refused unread.
pub(crate) fn decode_file(path: &Path, limits: &DecodeLimits) -> Result<DynamicImage, DataError> {
    let len = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?.len();
    if len > limits.max_file_bytes() {
        return Err(DataError::FileTooLarge { path: path.to_path_buf(), bytes: len, max_bytes: limits.max_file_bytes() });
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_bytes(&bytes, path, limits)
}

/// The format from the bytes, a decoder over the header, and the pixel limit checked.
fn open<'a>(bytes: &'a [u8], what: &Path, limits: &DecodeLimits) -> Result<(impl ImageDecoder + 'a, ImageInfo), DataError> {
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| DataError::io(what, e))?;
    let Some(format) = reader.format() else {
        return Err(decode_error(what, "not a PNG, JPEG, BMP or TIFF image"));
    };
    // The TIFF decoder sizes its directory vectors by what the file declares, before any
    // limit reaches it: checked here first.
    let header_bytes = match format {
        ImageFormat::Tiff => super::tiff_check::check(bytes).map_err(|r| decode_error(what, &r))?.directory_bytes,
        _ => 0,
    };
    reader.limits(limits.image_limits());
    let decoder = reader.into_decoder().map_err(|e| image_error(what, e))?;
    let (width, height) = decoder.dimensions();
    let info = ImageInfo { format, width, height, color: decoder.color_type(), header_bytes };
    if info.pixels() > limits.max_pixels {
        return Err(DataError::TooLarge { path: what.to_path_buf(), width, height, max_pixels: limits.max_pixels });
    }
    if info.pixels() == 0 {
        return Err(decode_error(what, &format!("the header says {width}×{height}: no pixels")));
    }
    Ok((decoder, info))
}

/// Decodes the samples the way `ImageReader::decode` does (the buffer is reserved against the
/// allocation limit first), then refuses float samples that are not finite.
fn finish(mut decoder: impl ImageDecoder, info: ImageInfo, what: &Path, limits: &DecodeLimits) -> Result<DynamicImage, DataError> {
    let mut l = limits.image_limits();
    l.reserve(decoder.total_bytes()).map_err(|e| image_error(what, e))?;
    decoder.set_limits(l).map_err(|e| image_error(what, e))?;
    let img = DynamicImage::from_decoder(decoder).map_err(|e| image_error(what, e))?;
    let finite = match &img {
        DynamicImage::ImageRgb32F(b) => b.as_raw().iter().all(|v| v.is_finite()),
        DynamicImage::ImageRgba32F(b) => b.as_raw().iter().all(|v| v.is_finite()),
        _ => true,
    };
    if !finite {
        return Err(decode_error(what, &format!("{}×{} {:?} image has NaN or infinite samples", info.width, info.height, info.color)));
    }
    Ok(img)
}

fn decode_error(what: &Path, reason: &str) -> DataError {
    DataError::Decode { path: what.to_path_buf(), reason: reason.to_string() }
}

fn image_error(what: &Path, e: image::ImageError) -> DataError {
    match e {
        // Over a file or in memory, a short read means the image is cut off.
        image::ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            DataError::Decode { path: what.to_path_buf(), reason: "truncated: the data ends early".into() }
        }
        image::ImageError::IoError(e) => DataError::io(what, e),
        image::ImageError::Limits(l) => DataError::Decode { path: what.to_path_buf(), reason: format!("over the decoder's memory limit: {l}") },
        other => DataError::Decode { path: what.to_path_buf(), reason: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = std::io::Cursor::new(vec![]);
        image::DynamicImage::new_luma8(w, h).write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn the_pixel_limit_is_checked_from_the_header_and_named() {
        let limits = DecodeLimits::new(100);
        let ok = probe_image_bytes(&png(10, 10), Path::new("a"), &limits).unwrap();
        assert_eq!((ok.width, ok.height, ok.format), (10, 10, ImageFormat::Png));
        let e = decode_bytes(&png(11, 10), Path::new("input 'image' element 0"), &limits).unwrap_err();
        assert!(matches!(e, DataError::TooLarge { width: 11, height: 10, max_pixels: 100, .. }), "{e:?}");
        let m = e.to_string();
        assert!(m.starts_with("input 'image' element 0: image is 11×10 (110 pixels), over the limit of 100 pixels"), "{m}");
    }

    #[test]
    fn garbage_and_empty_input_are_decode_errors() {
        let l = DecodeLimits::default();
        for bytes in [&b""[..], b"not an image", b"\x89PNG\r\n\x1a\n"] {
            let e = decode_bytes(bytes, Path::new("x"), &l).unwrap_err();
            assert!(matches!(e, DataError::Decode { .. }), "{bytes:?}: {e:?}");
        }
    }

    #[test]
    fn the_decoder_allocation_cap_covers_every_admitted_layout() {
        let l = DecodeLimits::default();
        assert!(l.max_alloc() >= l.max_pixels * ColorType::Rgba32F.bytes_per_pixel() as u64);
        let info = ImageInfo { format: ImageFormat::Png, width: 4096, height: 4096, color: ColorType::Rgb8, header_bytes: 0 };
        // Samples, plus conversion to 3×256×256: a few MiB over 48 MiB.
        let b = info.decode_bytes(1 << 20, 3, 256);
        assert!(b > info.sample_bytes() && b < info.sample_bytes() + (32 << 20), "{b}");
    }
}
