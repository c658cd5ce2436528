//! §4.3.1 augmentation: image and mask move together; dihedral moves are exact permutations;
//! non-symmetric objects only turn a little; textures are also cropped.

use ndarray::{s, Array2, Array3, Axis};
use vqad::config::CategoryKind;
use vqad::data::*;

const N: usize = 64;

/// Mask with an off-centre block (rows 8..20, columns 26..38: top middle).
fn block_mask() -> Array2<u8> {
    Array2::from_shape_fn((N, N), |(y, x)| {
        u8::from((8..20).contains(&y) && (26..38).contains(&x))
    })
}

/// Channel 0 paints the mask (the marker), channel 1 is a unique index per pixel, channel 2 a
/// smooth ramp.
fn marked_image(m: &Array2<u8>) -> Array3<f32> {
    Array3::from_shape_fn((3, N, N), |(c, y, x)| match c {
        0 => m[[y, x]] as f32,
        1 => (y * N + x) as f32 / (N * N) as f32,
        _ => x as f32 / N as f32,
    })
}

/// The 8 images of the dihedral group, computed independently of the library.
fn dihedral_candidates(a: &Array2<f32>) -> Vec<Array2<f32>> {
    let rot = |m: &Array2<f32>| {
        // Counter-clockwise quarter turn: transpose, then reverse rows.
        let mut t = m.t().to_owned();
        t.invert_axis(Axis(0));
        t
    };
    let mut out = Vec::new();
    let mut cur = a.clone();
    for _ in 0..4 {
        let mut f = cur.clone();
        f.invert_axis(Axis(1));
        out.push(cur.clone());
        out.push(f);
        cur = rot(&cur);
    }
    out
}

/// Where the 3×3 (radius r) neighbourhood of the output mask is uniform, the painted marker
/// must agree with it: the image and the mask went through the same transform.
fn assert_marker_follows(img: &Array3<f32>, m: &Array2<u8>, r: usize) {
    assert!(m.iter().all(|&v| v <= 1), "mask stays binary");
    let mut inside = 0;
    for y in r..N - r {
        for x in r..N - r {
            let nb = m.slice(s![y - r..=y + r, x - r..=x + r]);
            let v = img[[0, y, x]];
            if nb.iter().all(|&b| b == 1) {
                assert!(v > 0.99, "marker lost at ({y},{x}): {v}");
                inside += 1;
            } else if nb.iter().all(|&b| b == 0) {
                assert!(v < 0.01, "marker where mask is 0 at ({y},{x}): {v}");
            }
        }
    }
    assert!(inside > 10, "mask interior vanished");
}

#[test]
fn policies_follow_section_4_3_1() {
    let tex = Augmenter::new(CategoryKind::Texture, "carpet", 0).policy();
    assert!(tex.dihedral && tex.crop_min.is_some() && tex.max_rotation_deg == 0.0);
    for o in ["bottle", "hazelnut", "metal_nut", "screw"] {
        let p = Augmenter::new(CategoryKind::Object, o, 0).policy();
        assert!(
            p.dihedral && p.crop_min.is_none() && p.max_rotation_deg == 0.0,
            "{o}"
        );
    }
    for o in [
        "cable",
        "capsule",
        "pill",
        "toothbrush",
        "transistor",
        "zipper",
    ] {
        let p = Augmenter::new(CategoryKind::Object, o, 0).policy();
        assert!(
            !p.dihedral && p.crop_min.is_none() && p.max_rotation_deg == 10.0,
            "{o}"
        );
    }
}

#[test]
fn dihedral_moves_are_exact_permutations_and_cover_the_group() {
    let m = block_mask();
    let img = marked_image(&m);
    let policy = AugmentPolicy {
        crop_min: None,
        ..Augmenter::new(CategoryKind::Texture, "grid", 0).policy()
    };
    let mut aug = Augmenter::with_policy(policy, 7);
    let candidates = dihedral_candidates(&img.index_axis(Axis(0), 1).to_owned());
    let mut seen = [false; 8];
    for _ in 0..64 {
        let (out, om) = aug.apply(&img, Some(&m));
        let om = om.unwrap();
        assert_eq!(out.dim(), img.dim());
        let idx = candidates
            .iter()
            .position(|c| c == out.index_axis(Axis(0), 1))
            .expect("output is one of the 8 dihedral images");
        seen[idx] = true;
        // Every channel got the same permutation, and the mask too.
        assert_eq!(out.index_axis(Axis(0), 0), om.mapv(|v| v as f32));
        let ramp = dihedral_candidates(&img.index_axis(Axis(0), 2).to_owned());
        assert_eq!(out.index_axis(Axis(0), 2), ramp[idx]);
    }
    assert!(
        seen.iter().all(|&s| s),
        "all 8 dihedral elements occur: {seen:?}"
    );
}

#[test]
fn symmetric_objects_are_permuted_exactly() {
    let m = block_mask();
    let img = marked_image(&m);
    let mut aug = Augmenter::new(CategoryKind::Object, "screw", 3);
    let candidates = dihedral_candidates(&img.index_axis(Axis(0), 1).to_owned());
    for _ in 0..16 {
        let (out, om) = aug.apply(&img, Some(&m));
        assert!(candidates.iter().any(|c| c == out.index_axis(Axis(0), 1)));
        assert_eq!(out.index_axis(Axis(0), 0), om.unwrap().mapv(|v| v as f32));
    }
}

#[test]
fn texture_crops_rescale_image_and_mask_together() {
    let m = block_mask();
    let img = marked_image(&m);
    let mut aug = Augmenter::new(CategoryKind::Texture, "carpet", 11);
    let mut cropped = 0;
    for _ in 0..24 {
        let (out, om) = aug.apply(&img, Some(&m));
        let om = om.unwrap();
        assert_eq!(out.dim(), (3, N, N));
        assert_marker_follows(&out, &om, 1);
        // A crop rescales, so the index channel is no longer a permutation of the input values.
        let mut a: Vec<f32> = out.index_axis(Axis(0), 1).iter().copied().collect();
        let mut b: Vec<f32> = img.index_axis(Axis(0), 1).iter().copied().collect();
        a.sort_by(f32::total_cmp);
        b.sort_by(f32::total_cmp);
        if a != b {
            cropped += 1;
            // Zooming in never shrinks the defect.
            assert!(
                om.iter().filter(|&&v| v == 1).count() >= m.iter().filter(|&&v| v == 1).count()
            );
        }
    }
    assert!(cropped > 12, "crops happen ({cropped}/24)");
}

fn centroid_angle(m: &Array2<u8>) -> f64 {
    let (mut sy, mut sx, mut n) = (0.0, 0.0, 0.0);
    for ((y, x), &v) in m.indexed_iter() {
        if v == 1 {
            sy += y as f64;
            sx += x as f64;
            n += 1.0;
        }
    }
    let c = (N as f64 - 1.0) / 2.0;
    (sy / n - c).atan2(sx / n - c).to_degrees()
}

#[test]
fn other_objects_turn_at_most_ten_degrees_with_the_mask() {
    let m = block_mask();
    let img = marked_image(&m);
    let a0 = centroid_angle(&m);
    let mut aug = Augmenter::new(CategoryKind::Object, "transistor", 5);
    let (mut pos, mut neg) = (0, 0);
    for _ in 0..30 {
        let (out, om) = aug.apply(&img, Some(&m));
        let om = om.unwrap();
        assert_eq!(out.dim(), img.dim());
        assert_marker_follows(&out, &om, 2);
        let d = centroid_angle(&om) - a0;
        assert!(d.abs() <= 11.0, "turned {d}°");
        if d > 2.0 {
            pos += 1;
        }
        if d < -2.0 {
            neg += 1;
        }
        // No flip: the ramp channel still rises left to right along the middle row.
        assert!(out[[2, N / 2, N - 8]] > out[[2, N / 2, 8]]);
    }
    assert!(pos > 3 && neg > 3, "both directions ({pos} / {neg})");
}

#[test]
fn same_seed_same_sequence_and_masks_are_optional() {
    let m = block_mask();
    let img = marked_image(&m);
    let mut a = Augmenter::new(CategoryKind::Texture, "tile", 42);
    let mut b = Augmenter::new(CategoryKind::Texture, "tile", 42);
    let mut c = Augmenter::new(CategoryKind::Texture, "tile", 43);
    let mut differs = false;
    for _ in 0..5 {
        let (x, _) = a.apply(&img, None);
        let (y, ym) = b.apply(&img, None);
        let (z, _) = c.apply(&img, None);
        assert!(ym.is_none());
        assert_eq!(x, y);
        differs |= x != z;
    }
    assert!(differs, "another seed gives other transforms");
    // A mask of another size is brought to the image size first.
    let small = Array2::from_shape_fn((N / 2, N / 2), |(y, x)| m[[y * 2, x * 2]]);
    let (_, om) = Augmenter::with_policy(AugmentPolicy::none(), 0).apply(&img, Some(&small));
    assert_eq!(om.unwrap(), m);
}
