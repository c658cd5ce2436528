//! Decoding every supported format and channel layout, resizing, masks and load errors.

use image::{DynamicImage, ImageBuffer, Luma, Rgb, Rgba};
use ndarray::Array3;
use std::path::{Path, PathBuf};
use vqad::data::*;

const N: u32 = 8;

/// Pixel values that differ per position and channel, so a transposed or swapped channel shows.
fn rgb_at(x: u32, y: u32) -> [u8; 3] {
    [
        (x * 30 + 5) as u8,
        (y * 30 + 7) as u8,
        ((x + y) * 13 + 11) as u8,
    ]
}

fn save(img: &DynamicImage, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    img.save(&p).unwrap();
    p
}

fn rgb8() -> DynamicImage {
    DynamicImage::ImageRgb8(ImageBuffer::from_fn(N, N, |x, y| Rgb(rgb_at(x, y))))
}

fn assert_rgb_exact(a: &Array3<f32>) {
    assert_eq!(a.dim(), (3, N as usize, N as usize));
    for y in 0..N {
        for x in 0..N {
            let want = rgb_at(x, y);
            for c in 0..3 {
                let got = a[[c, y as usize, x as usize]];
                assert!(
                    (got - want[c] as f32 / 255.0).abs() < 1e-6,
                    "c{c} ({x},{y}): {got} vs {}",
                    want[c]
                );
            }
        }
    }
}

#[test]
fn gray8_loads_as_one_or_three_equal_channels() {
    let d = tempfile::tempdir().unwrap();
    let img = DynamicImage::ImageLuma8(ImageBuffer::from_fn(N, N, |x, y| {
        Luma([(x * 20 + y) as u8])
    }));
    let p = save(&img, d.path(), "g.png");
    let one = load_image(&p, 1, N as usize).unwrap();
    let three = load_image(&p, 3, N as usize).unwrap();
    assert_eq!(one.dim(), (1, 8, 8));
    assert_eq!(three.dim(), (3, 8, 8));
    for y in 0..8 {
        for x in 0..8 {
            let v = (x * 20 + y) as f32 / 255.0;
            assert_eq!(one[[0, y, x]], v);
            for c in 0..3 {
                assert_eq!(three[[c, y, x]], v);
            }
        }
    }
}

#[test]
fn rgb8_png_bmp_tiff_are_exact_and_gray_uses_bt601() {
    let d = tempfile::tempdir().unwrap();
    for name in ["c.png", "c.bmp", "c.tif"] {
        let p = save(&rgb8(), d.path(), name);
        assert_rgb_exact(&load_image(&p, 3, N as usize).unwrap());
        let g = load_image(&p, 1, N as usize).unwrap();
        let [r, gg, b] = rgb_at(3, 5).map(|v| v as f32 / 255.0);
        assert!(
            (g[[0, 5, 3]] - (0.299 * r + 0.587 * gg + 0.114 * b)).abs() < 1e-6,
            "{name}"
        );
    }
}

#[test]
fn rgba8_drops_alpha() {
    let d = tempfile::tempdir().unwrap();
    let img = DynamicImage::ImageRgba8(ImageBuffer::from_fn(N, N, |x, y| {
        let [r, g, b] = rgb_at(x, y);
        Rgba([r, g, b, (x * 30) as u8]) // alpha varies, including fully transparent
    }));
    let p = save(&img, d.path(), "a.png");
    assert_rgb_exact(&load_image(&p, 3, N as usize).unwrap());
}

#[test]
fn sixteen_bit_png_and_tiff_keep_full_precision() {
    let d = tempfile::tempdir().unwrap();
    // 40000/65535 is not a multiple of 1/255: an 8-bit detour would show.
    let gray =
        DynamicImage::ImageLuma16(ImageBuffer::from_fn(N, N, |x, _| Luma([40000 + x as u16])));
    let rgb = DynamicImage::ImageRgb16(ImageBuffer::from_fn(N, N, |x, _| {
        Rgb([40000 + x as u16, 1000, 65535])
    }));
    for (img, name) in [(&gray, "g16.png"), (&gray, "g16.tif"), (&rgb, "c16.png")] {
        let p = save(img, d.path(), name);
        let a = load_image(&p, 3, N as usize).unwrap();
        let want = 40003.0 / 65535.0;
        assert!(
            (a[[0, 0, 3]] - want).abs() < 1e-6,
            "{name}: {}",
            a[[0, 0, 3]]
        );
        assert!(
            (a[[0, 0, 3]] - (a[[0, 0, 3]] * 255.0).round() / 255.0).abs() > 1e-4,
            "{name} was quantised to 8 bits"
        );
    }
    let a = load_image(&d.path().join("c16.png"), 3, N as usize).unwrap();
    assert!((a[[1, 2, 2]] - 1000.0 / 65535.0).abs() < 1e-6);
    assert_eq!(a[[2, 2, 2]], 1.0);
}

#[test]
fn jpeg_gray_and_colour_are_close() {
    let d = tempfile::tempdir().unwrap();
    // Flat colours: JPEG is lossy, but a flat block survives within a few levels.
    let rgb = DynamicImage::ImageRgb8(ImageBuffer::from_pixel(16, 16, Rgb([200, 60, 30])));
    let gray = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(16, 16, Luma([90])));
    let pc = save(&rgb, d.path(), "c.jpg");
    let pg = save(&gray, d.path(), "g.jpeg");
    let a = load_image(&pc, 3, 16).unwrap();
    for (c, want) in [200.0f32, 60.0, 30.0].iter().enumerate() {
        let mean = a.index_axis(ndarray::Axis(0), c).mean().unwrap() * 255.0;
        assert!((mean - want).abs() < 4.0, "channel {c}: {mean}");
    }
    let g = load_image(&pg, 1, 16).unwrap();
    assert!(g.iter().all(|v| (v * 255.0 - 90.0).abs() < 3.0));
}

#[test]
fn format_is_taken_from_the_bytes_not_the_name() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("really_a_png.jpg");
    rgb8()
        .save_with_format(&p, image::ImageFormat::Png)
        .unwrap();
    assert_rgb_exact(&load_image(&p, 3, N as usize).unwrap());
}

#[test]
fn resize_shrinks_by_area_and_enlarges_bilinearly() {
    let d = tempfile::tempdir().unwrap();
    // 1-pixel checkerboard: area averaging gives flat 0.5; nearest or bilinear at centres would not.
    let img = DynamicImage::ImageLuma8(ImageBuffer::from_fn(16, 16, |x, y| {
        Luma([if (x + y) % 2 == 0 { 0 } else { 255 }])
    }));
    let p = save(&img, d.path(), "chk.png");
    let a = load_image(&p, 1, 8).unwrap();
    assert_eq!(a.dim(), (1, 8, 8));
    assert!(a.iter().all(|&v| (v - 0.5).abs() < 1e-6));
    // Left half black, right half white, 4 px → 8 px: edges stay flat, the middle interpolates.
    let img = DynamicImage::ImageLuma8(ImageBuffer::from_fn(4, 4, |x, _| {
        Luma([if x < 2 { 0 } else { 255 }])
    }));
    let p = save(&img, d.path(), "half.png");
    let a = load_image(&p, 1, 8).unwrap();
    let row: Vec<f32> = (0..8).map(|x| a[[0, 3, x]]).collect();
    assert_eq!(row, vec![0.0, 0.0, 0.0, 0.25, 0.75, 1.0, 1.0, 1.0]);
}

#[test]
fn array_to_image_round_trips_8_bit_values() {
    let d = tempfile::tempdir().unwrap();
    let p = save(&rgb8(), d.path(), "c.png");
    let a = load_image(&p, 3, N as usize).unwrap();
    let back = array_to_image(&a.view());
    assert_eq!(back.as_rgb8().unwrap(), rgb8().as_rgb8().unwrap());
    let g = array_to_image(&Array3::from_elem((1, 2, 3), 2.0f32).view());
    let g = g.as_luma8().unwrap();
    assert_eq!((g.width(), g.height()), (3, 2));
    assert!(g.as_raw().iter().all(|&v| v == 255), "values are clamped");
}

#[test]
fn masks_resize_nearest_and_stay_binary_in_place() {
    let d = tempfile::tempdir().unwrap();
    // Defect block: rows 6..12, columns 0..6 of a 12×12 mask.
    let m = DynamicImage::ImageLuma8(ImageBuffer::from_fn(12, 12, |x, y| {
        Luma([if y >= 6 && x < 6 { 255 } else { 0 }])
    }));
    let p = save(&m, d.path(), "m_mask.png");
    let up = load_mask(&p, 24).unwrap();
    assert_eq!(up.dim(), (24, 24));
    for ((y, x), &v) in up.indexed_iter() {
        assert_eq!(v, u8::from(y >= 12 && x < 12), "up ({y},{x})");
    }
    let down = load_mask(&p, 4).unwrap();
    for ((y, x), &v) in down.indexed_iter() {
        assert_eq!(v, u8::from(y >= 2 && x < 2), "down ({y},{x})");
    }
    // Odd factor (12 → 7): still only 0/1, and the count is close to a quarter.
    let odd = load_mask(&p, 7).unwrap();
    assert!(odd.iter().all(|&v| v <= 1));
    let ones = odd.iter().filter(|&&v| v == 1).count();
    assert!((9..=16).contains(&ones), "{ones}");
}

#[test]
fn mask_threshold_is_half_scale_and_colour_masks_work() {
    let d = tempfile::tempdir().unwrap();
    let m = DynamicImage::ImageLuma8(ImageBuffer::from_fn(4, 1, |x, _| {
        Luma([[0, 127, 128, 255][x as usize]])
    }));
    let p = save(&m, d.path(), "t.png");
    assert_eq!(load_mask(&p, 4).unwrap().row(0).to_vec(), vec![0, 0, 1, 1]);
    let c = DynamicImage::ImageRgb8(ImageBuffer::from_fn(2, 2, |x, _| {
        Rgb(if x == 1 { [255; 3] } else { [0; 3] })
    }));
    let p = save(&c, d.path(), "c.png");
    assert_eq!(load_mask(&p, 2).unwrap().as_slice().unwrap(), &[0, 1, 0, 1]);
}

#[test]
fn unreadable_and_missing_files_are_named_with_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("broken_007.png");
    std::fs::write(&bad, b"this is not a png").unwrap();
    let e = load_image(&bad, 3, 8).unwrap_err();
    assert!(matches!(e, DataError::Decode { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("broken_007.png") && msg.contains("cannot decode"),
        "{msg}"
    );

    // A truncated PNG: header fine, data cut off.
    let p = save(&rgb8(), d.path(), "cut.png");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_image(&p, 3, 8).unwrap_err().to_string();
    assert!(msg.contains("cut.png"), "{msg}");

    let missing = d.path().join("nowhere.png");
    let e = load_image(&missing, 3, 8).unwrap_err();
    assert!(
        matches!(e, DataError::Io { .. }) && e.to_string().contains("nowhere.png"),
        "{e}"
    );
    let e = load_mask(&bad, 8).unwrap_err();
    assert!(e.to_string().contains("broken_007.png"));
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let d = tempfile::tempdir().unwrap();
    let p = save(&rgb8(), d.path(), "c.png");
    assert!(matches!(load_image(&p, 2, 8), Err(DataError::Invalid(_))));
    assert!(matches!(load_image(&p, 3, 0), Err(DataError::Invalid(_))));
    assert!(matches!(load_mask(&p, 0), Err(DataError::Invalid(_))));
}

#[test]
fn load_many_reports_bad_files_and_keeps_the_rest_in_order() {
    let d = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for i in 0..5 {
        let p = d.path().join(format!("{i}.png"));
        if i == 2 {
            std::fs::write(&p, b"garbage").unwrap();
        } else {
            DynamicImage::ImageLuma8(ImageBuffer::from_pixel(4, 4, Luma([i * 50])))
                .save(&p)
                .unwrap();
        }
        paths.push(p);
    }
    paths.push(d.path().join("missing.png"));
    let (ok, bad) = load_many(&paths, 1, 4);
    assert_eq!(
        ok.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        vec![&paths[0], &paths[1], &paths[3], &paths[4]]
            .into_iter()
            .cloned()
            .collect::<Vec<_>>()
    );
    for (p, a) in &ok {
        let i: u8 = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        assert_eq!(a[[0, 0, 0]], (i * 50) as f32 / 255.0);
    }
    assert_eq!(bad.len(), 2);
    assert_eq!(bad[0].0, paths[2]);
    assert!(bad[0].1.to_string().contains("2.png"));
    assert_eq!(bad[1].0, paths[5]);
}

#[test]
fn list_images_is_sorted_and_filters_by_extension() {
    let d = tempfile::tempdir().unwrap();
    for n in [
        "b.png",
        "a.JPG",
        "c.tiff",
        "notes.txt",
        "d.bmp",
        "e.jpeg",
        "f.tif",
    ] {
        std::fs::write(d.path().join(n), b"x").unwrap();
    }
    std::fs::create_dir(d.path().join("sub.png")).unwrap(); // a folder, not an image
    let names: Vec<String> = list_images(d.path())
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["a.JPG", "b.png", "c.tiff", "d.bmp", "e.jpeg", "f.tif"]
    );
    let e = list_images(&d.path().join("absent")).unwrap_err();
    assert!(e.to_string().contains("absent"));
}

#[path = "common_bombs/mod.rs"]
mod common_bombs;

#[test]
fn small_versions_of_the_bombs_decode_so_the_large_ones_are_genuine_images() {
    let d = tempfile::tempdir().unwrap();
    for f in common_bombs::FORMATS {
        let p = d.path().join(format!("small.{f}"));
        std::fs::write(&p, common_bombs::bomb(f, 72, 40)).unwrap();
        let img = image::open(&p).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!((img.width(), img.height()), (72, 40), "{f}");
        let a = load_image(&p, 1, 16).unwrap_or_else(|e| panic!("{f}: {e}"));
        let v = a[[0, 0, 0]];
        assert!(a.iter().all(|&x| (x - v).abs() < 1e-6) && v <= 0.51, "{f}: not a uniform dark image");
    }
}

#[test]
fn bombs_are_refused_from_their_header_naming_the_file_the_size_and_the_limit() {
    let d = tempfile::tempdir().unwrap();
    let limits = DecodeLimits::default();
    for f in common_bombs::FORMATS {
        let p = d.path().join(format!("bomb.{f}"));
        std::fs::write(&p, common_bombs::bomb(f, 20000, 20000)).unwrap();
        let e = load_image_within(&p, 3, 64, &limits).unwrap_err();
        assert!(matches!(e, DataError::TooLarge { width: 20000, height: 20000, .. }), "{f}: {e:?}");
        let m = e.to_string();
        assert!(
            m.starts_with(&p.display().to_string()) && m.contains("20000×20000 (400000000 pixels)") && m.contains("limit of 16777216 pixels"),
            "{m}"
        );
        // A lower limit refuses a smaller image the same way; a higher one lets it through to
        // the header (and only there: the probe reads no pixels).
        let info = probe_image_bytes(&std::fs::read(&p).unwrap(), &p, &DecodeLimits::new(400_000_000)).unwrap();
        assert_eq!((info.width, info.height), (20000, 20000), "{f}");
    }
    if std::fs::metadata(d.path().join("bomb.png")).unwrap().len() > 400_000 {
        panic!("the PNG bomb should stay under 400 KB");
    }
}

#[test]
fn masks_and_many_images_are_bounded_too() {
    let d = tempfile::tempdir().unwrap();
    let bomb = d.path().join("mask.png");
    std::fs::write(&bomb, common_bombs::bomb("png", 5000, 5000)).unwrap();
    let small = DecodeLimits::new(1 << 20);
    assert!(matches!(load_mask_within(&bomb, 32, &small), Err(DataError::TooLarge { .. })));
    let ok = d.path().join("ok.png");
    std::fs::write(&ok, common_bombs::bomb("png", 10, 10)).unwrap();
    let (good, bad) = load_many_within(&[bomb.clone(), ok.clone()], 1, 8, &small);
    assert_eq!(good.len(), 1);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, bomb);
}

#[test]
fn a_file_larger_than_any_admitted_image_is_refused_unread() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("big.png");
    let mut b = common_bombs::bomb("png", 10, 10);
    b.resize(4 << 20, 0);
    std::fs::write(&p, b).unwrap();
    // 1000 pixels admit at most 16 KB of samples plus 1 MiB of decoder state.
    let e = load_image_within(&p, 1, 8, &DecodeLimits::new(1000)).unwrap_err();
    assert!(matches!(e, DataError::FileTooLarge { bytes: 4194304, .. }), "{e:?}");
    assert!(e.to_string().contains("file is 4194304 bytes"), "{e}");
}

#[test]
fn float_tiffs_with_nan_are_refused_and_finite_ones_load() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f.tif");
    let img = DynamicImage::ImageRgb32F(ImageBuffer::from_fn(4, 4, |x, _| Rgb([x as f32 / 4.0, 0.5, 0.25])));
    img.save(&p).unwrap();
    assert_eq!(load_image(&p, 3, 4).unwrap()[[0, 0, 1]], 0.25);
    let nan = DynamicImage::ImageRgb32F(ImageBuffer::from_fn(4, 4, |x, _| Rgb([if x == 2 { f32::NAN } else { 0.5 }, 0.5, 0.5])));
    nan.save(&p).unwrap();
    let e = load_image(&p, 3, 4).unwrap_err();
    assert!(e.to_string().contains("NaN or infinite"), "{e}");
}

#[test]
fn a_wide_shrink_stays_within_zero_and_one() {
    // 16432 × 40 white → 64 × 64 averages ~257 columns per output pixel: in f32 the sum used
    // to round to 1.000003 (a request fuzzer find).
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("wide.png");
    DynamicImage::ImageLuma8(ImageBuffer::from_pixel(16432, 40, Luma([255u8]))).save(&p).unwrap();
    let a = load_image(&p, 3, 64).unwrap();
    assert!(a.iter().all(|&v| (0.0..=1.0).contains(&v) && v > 0.9999), "{:?}", a.iter().copied().fold(f32::MIN, f32::max));
}
