//! The bilateral filter against OpenCV's own `cv2.bilateralFilter` (float32, single channel),
//! run in the set-up Python venv through .npy files.

use ndarray::Array2;
use ndarray_npy::{read_npy, write_npy};
use std::path::PathBuf;
use std::process::Command;
use vqad::runtime::score::bilateral_filter;

fn python() -> PathBuf {
    let py = std::env::var_os("VQAD_PYTHON").map(PathBuf::from).or_else(vqad::native::setup_python);
    match py {
        Some(p) if p.exists() => p,
        other => panic!(
            "no reference Python found ({other:?}); run `bash tools/setup-native.sh` (or set VQAD_PYTHON to a python with numpy and opencv-python-headless)"
        ),
    }
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn uniform(seed: u64, h: usize, w: usize, scale: f32) -> Array2<f32> {
    let mut s = mix(seed);
    Array2::from_shape_fn((h, w), |_| {
        s = mix(s);
        (s >> 40) as f32 / (1u64 << 24) as f32 * scale
    })
}

fn maps() -> Vec<(&'static str, Array2<f32>)> {
    let random = uniform(1, 37, 53, 1.0);
    let smooth = Array2::from_shape_fn((64, 64), |(y, x)| {
        let (y, x) = (y as f32 / 64.0, x as f32 / 64.0);
        1.5 + (6.0 * x).sin() * (4.0 * y).cos() + 0.5 * (11.0 * (x + y)).sin()
    });
    // Score-map-like: mostly near 0 with a few sharp blobs up to ~3 (three channels summed).
    let mut spiky = uniform(2, 256, 256, 0.01);
    let sp = uniform(3, 256, 256, 1.0);
    for ((y, x), v) in spiky.indexed_iter_mut() {
        if sp[[y, x]] > 0.997 {
            *v += 2.5;
        }
        if (y as isize - 100).pow(2) + (x as isize - 60).pow(2) < 64 {
            *v += 1.2;
        }
    }
    let tiny = uniform(4, 6, 8, 2.0); // smaller than the d=20 radius: repeated reflection
    let row = uniform(5, 1, 17, 1.0);
    vec![("random", random), ("smooth", smooth), ("spiky", spiky), ("tiny", tiny), ("row", row)]
}

#[test]
fn bilateral_matches_opencv_within_1e_4() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    // (d, sigma_color, sigma_space): the paper's, small sigma_color so the range term matters,
    // d <= 0 (radius from sigma_space, at least 1), and non-positive sigmas (OpenCV returns the
    // input then).
    let params: [(i32, f64, f64); 9] = [
        (20, 75.0, 75.0),
        (5, 0.1, 2.0),
        (9, 0.3, 3.0),
        (0, 0.5, 2.0),
        (-3, 0.5, 0.2),
        (3, 0.05, 1.0),
        (7, 0.0, -1.0),
        (5, 2.0, 0.0),
        (20, 0.2, 5.0),
    ];
    let maps = maps();
    let mut jobs = Vec::new();
    for (mi, (name, m)) in maps.iter().enumerate() {
        write_npy(dir.path().join(format!("in{mi}.npy")), m).unwrap();
        for (pi, &(d, sc, ss)) in params.iter().enumerate() {
            jobs.push(format!("({mi},{pi},{d},{sc:?},{ss:?})"));
            let _ = name;
        }
    }
    let script = format!(
        r#"
import numpy as np, cv2, os
d0 = {dir:?}
for mi, pi, d, sc, ss in [{jobs}]:
    m = np.load(os.path.join(d0, f"in{{mi}}.npy")).astype(np.float32)
    out = cv2.bilateralFilter(m, d, sc, ss)
    np.save(os.path.join(d0, f"out{{mi}}_{{pi}}.npy"), out.astype(np.float32))
print("cv2", cv2.__version__)
"#,
        dir = dir.path().to_str().unwrap(),
        jobs = jobs.join(",")
    );
    let out = Command::new(&py)
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py:?}: {e}; run `bash tools/setup-native.sh`"));
    assert!(
        out.status.success(),
        "reference Python failed (run `bash tools/setup-native.sh`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut worst = 0f32;
    for (mi, (name, m)) in maps.iter().enumerate() {
        for (pi, &(d, sc, ss)) in params.iter().enumerate() {
            let want: Array2<f32> = read_npy(dir.path().join(format!("out{mi}_{pi}.npy"))).unwrap();
            let got = bilateral_filter(m, d, sc, ss).unwrap();
            assert_eq!(got.dim(), want.dim());
            let err = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            worst = worst.max(err);
            assert!(err <= 1e-4, "{name} d={d} sc={sc} ss={ss}: max |diff| {err}");
            // The comparison is only meaningful if the filter did something.
            if m.len() > 20 && sc > 0.0 && ss > 0.0 && !(d <= 0 && ss < 0.5) {
                let moved = got.iter().zip(m.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(moved > 1e-3, "{name} d={d}: filter left the map unchanged");
            }
        }
    }
    eprintln!("bilateral vs {}: worst |diff| {worst:e}", String::from_utf8_lossy(&out.stdout).trim());
}

#[test]
fn small_sigma_color_preserves_edges_and_large_acts_as_a_disc_gaussian() {
    // A step from 0 to 1: with σ_color = 0.05 the edge stays; with 75 it is blurred.
    let step = Array2::from_shape_fn((16, 16), |(_, x)| if x < 8 { 0.0f32 } else { 1.0 });
    let sharp = bilateral_filter(&step, 9, 0.05, 3.0).unwrap();
    let blurred = bilateral_filter(&step, 9, 75.0, 3.0).unwrap();
    assert!((sharp[[8, 7]] - 0.0).abs() < 1e-3 && (sharp[[8, 8]] - 1.0).abs() < 1e-3);
    assert!(blurred[[8, 7]] > 0.2 && blurred[[8, 8]] < 0.8);
}

