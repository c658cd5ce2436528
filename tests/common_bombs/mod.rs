//! Decompression bombs: small, valid image files whose headers declare huge images, written
//! without ever holding their pixels (issue 25). Shared by `tests/serve.rs`,
//! `tests/serve_fuzz.rs` and `examples/image_bombs.rs` (which `tools/bench-hostile.sh` runs).
//!
//! - PNG: 8-bit gray, all black, one IDAT of zlib-compressed zero rows (20000² is 388 KB).
//! - JPEG: baseline 8-bit gray, every 8×8 block DC difference 0 and end-of-block, with the
//!   standard luminance Huffman tables (6 bits a block: 20000² is 4.7 MB).
//! - BMP: 8-bit RLE8 whose data is one end-of-bitmap code (the rest is palette index 0).
//! - TIFF: 8-bit gray, one Deflate strip of zero rows.
#![allow(dead_code)]

use std::io::Write;

/// The formats, as file extensions.
pub const FORMATS: [&str; 4] = ["png", "jpg", "bmp", "tif"];

/// A `w × h` all-dark image in `format` (one of [`FORMATS`]).
pub fn bomb(format: &str, w: u32, h: u32) -> Vec<u8> {
    match format {
        "png" => png(w, h),
        "jpg" => jpeg(w as u16, h as u16),
        "bmp" => bmp(w, h),
        "tif" => tiff(w, h),
        other => panic!("no bomb for {other}"),
    }
}

fn zeros_deflated(rows: u32, row_bytes: usize, zlib: bool) -> Vec<u8> {
    let row = vec![0u8; row_bytes];
    let level = flate2::Compression::best();
    if zlib {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), level);
        for _ in 0..rows {
            z.write_all(&row).unwrap();
        }
        z.finish().unwrap()
    } else {
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), level);
        for _ in 0..rows {
            z.write_all(&row).unwrap();
        }
        z.finish().unwrap()
    }
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut c = crc32fast::Hasher::new();
    c.update(kind);
    c.update(data);
    out.extend_from_slice(&c.finalize().to_be_bytes());
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = vec![];
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray, deflate, adaptive filters, no interlace
    png_chunk(&mut out, b"IHDR", &ihdr);
    // Each row: filter type 0, then w zero bytes.
    png_chunk(&mut out, b"IDAT", &zeros_deflated(h, w as usize + 1, true));
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// JPEG Annex K.3 luminance tables: (bits per code length 1..16, symbols).
const DC_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_VALS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
const AC_VALS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52,
    0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
    0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
    0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
    0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8,
    0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
];

fn segment(out: &mut Vec<u8>, marker: u8, data: &[u8]) {
    out.extend_from_slice(&[0xff, marker]);
    out.extend_from_slice(&((data.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(data);
}

fn jpeg(w: u16, h: u16) -> Vec<u8> {
    let mut out = vec![0xff, 0xd8];
    let mut dqt = vec![0u8];
    dqt.extend_from_slice(&[1u8; 64]);
    segment(&mut out, 0xdb, &dqt);
    let mut sof = vec![8];
    sof.extend_from_slice(&h.to_be_bytes());
    sof.extend_from_slice(&w.to_be_bytes());
    sof.extend_from_slice(&[1, 1, 0x11, 0]);
    segment(&mut out, 0xc0, &sof);
    let mut dht = vec![0x00];
    dht.extend_from_slice(&DC_BITS);
    dht.extend_from_slice(&DC_VALS);
    dht.push(0x10);
    dht.extend_from_slice(&AC_BITS);
    dht.extend_from_slice(&AC_VALS);
    segment(&mut out, 0xc4, &dht);
    segment(&mut out, 0xda, &[1, 1, 0x00, 0, 63, 0]);
    // Per block: DC category 0 ("00"), then EOB ("1010"). Four blocks are 24 bits: 0x28a28a.
    let blocks = (w as u64).div_ceil(8) * (h as u64).div_ceil(8);
    let triples = blocks / 4;
    out.reserve(triples as usize * 3 + 8);
    for _ in 0..triples {
        out.extend_from_slice(&[0x28, 0xa2, 0x8a]);
    }
    let mut bits: u32 = 0;
    let mut n = 0;
    for _ in 0..blocks % 4 {
        bits = (bits << 6) | 0b001010;
        n += 6;
    }
    if n > 0 {
        let pad = (8 - n % 8) % 8;
        bits = (bits << pad) | ((1 << pad) - 1);
        n += pad;
        for i in (0..n / 8).rev() {
            out.push((bits >> (i * 8)) as u8);
        }
    }
    out.extend_from_slice(&[0xff, 0xd9]);
    out
}

fn bmp(w: u32, h: u32) -> Vec<u8> {
    let palette = 256 * 4;
    let data = [0u8, 1]; // RLE8 end of bitmap
    let offset = 14 + 40 + palette;
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&((offset + data.len()) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(offset as u32).to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&(w as i32).to_le_bytes());
    out.extend_from_slice(&(h as i32).to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&8u16.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // BI_RLE8
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 8]); // resolution
    out.extend_from_slice(&256u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for i in 0..256u32 {
        let v = i as u8;
        out.extend_from_slice(&[v, v, v, 0]);
    }
    out.extend_from_slice(&data);
    out
}

fn tiff(w: u32, h: u32) -> Vec<u8> {
    let strip = zeros_deflated(h, w as usize, true);
    // Header, then the strip, then the IFD.
    let strip_at = 8u32;
    let ifd_at = strip_at + strip.len() as u32 + (strip.len() as u32 & 1);
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&ifd_at.to_le_bytes());
    out.extend_from_slice(&strip);
    if strip.len() & 1 == 1 {
        out.push(0);
    }
    // (tag, type, count, value): type 3 SHORT, 4 LONG.
    let entries: [(u16, u16, u32, u32); 9] = [
        (256, 4, 1, w),                  // ImageWidth
        (257, 4, 1, h),                  // ImageLength
        (258, 3, 1, 8),                  // BitsPerSample
        (259, 3, 1, 8),                  // Compression: Deflate
        (262, 3, 1, 1),                  // Photometric: BlackIsZero
        (273, 4, 1, strip_at),           // StripOffsets
        (277, 3, 1, 1),                  // SamplesPerPixel
        (278, 4, 1, h),                  // RowsPerStrip
        (279, 4, 1, strip.len() as u32), // StripByteCounts
    ];
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, ty, count, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        if ty == 3 {
            out.extend_from_slice(&(value as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// A `w × h` RGB image of noise (incompressible, so legitimately large), PNG-encoded: what a
/// real large camera frame costs to send and decode.
pub fn noise_png(w: u32, h: u32, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let img = image::RgbImage::from_fn(w, h, |_, _| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        image::Rgb([x as u8, (x >> 8) as u8, (x >> 16) as u8])
    });
    let mut out = std::io::Cursor::new(vec![]);
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}
