//! Metrics against hand-computed values and brute-force references; the threshold protocol and
//! synthetic negatives.

use ndarray::{array, Array2, Array3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vqad::eval::metrics::{
    aupro, auroc, image_accuracy, image_auroc, image_f1, pixel_auroc, pixel_confusion, pixel_f1, pro_at_threshold,
    Confusion, EvalError,
};
use vqad::eval::threshold::{largest_area_over, paint_negative, select_threshold, NEGATIVE_FRACTION};
use vqad::runtime::score::{connected_components, is_anomalous};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn image_accuracy_by_hand() {
    let labels = [false, false, false, true, true];
    let pred = [true, false, false, true, true];
    let a = image_accuracy(&pred, &labels).unwrap();
    assert!(close(a.good.unwrap(), 2.0 / 3.0) && close(a.defective.unwrap(), 1.0));
    assert!(close(a.mean.unwrap(), 5.0 / 6.0));
    // One class missing: that class and the mean are undefined, the other still reported.
    let a = image_accuracy(&[false, true], &[false, false]).unwrap();
    assert_eq!((a.good, a.defective, a.mean), (Some(0.5), None, None));
    assert!(matches!(image_accuracy(&[true], &[true, false]), Err(EvalError::LengthMismatch { .. })));
}

#[test]
fn f1_by_hand_and_its_empty_cases() {
    let c = Confusion { tp: 2, fp: 1, tn: 5, fn_: 1 };
    assert!(close(c.precision().unwrap(), 2.0 / 3.0) && close(c.recall().unwrap(), 2.0 / 3.0));
    assert!(close(c.f1().unwrap(), 2.0 / 3.0));
    let c = Confusion { tp: 3, fp: 1, tn: 0, fn_: 5 };
    let (p, r) = (0.75, 3.0 / 8.0);
    assert!(close(c.f1().unwrap(), 2.0 * p * r / (p + r)));
    // No positives and none predicted: nothing to measure.
    assert_eq!(Confusion { tp: 0, fp: 0, tn: 7, fn_: 0 }.f1(), None);
    // No positives but some predicted; positives all missed: 0.
    assert_eq!(Confusion { tp: 0, fp: 2, tn: 7, fn_: 0 }.f1(), Some(0.0));
    assert_eq!(Confusion { tp: 0, fp: 0, tn: 7, fn_: 3 }.f1(), Some(0.0));
    assert_eq!(Confusion { tp: 0, fp: 0, tn: 7, fn_: 3 }.precision(), None);

    assert_eq!(image_f1(&[true, true, false, false], &[true, false, true, false]).unwrap(), Some(0.5));
    let maps = vec![array![[0.9f32, 0.1], [0.6, 0.2]]];
    let gts = vec![array![[1u8, 1], [0, 0]]];
    let c = pixel_confusion(&maps, &gts, 0.5).unwrap();
    assert_eq!(c, Confusion { tp: 1, fp: 1, tn: 1, fn_: 1 });
    assert_eq!(pixel_f1(&maps, &gts, 0.5).unwrap(), Some(0.5));
    assert_eq!(pixel_f1(&maps, &gts, 0.9).unwrap(), Some(0.0), "strictly above the threshold");
}

#[test]
fn pro_pools_components_over_the_set() {
    // Image 1: two components (sizes 2 and 4); image 2: one of size 3 (8-connected diagonal);
    // image 3: good. Coverage 1/2, 4/4, 0/3 -> PRO = 0.5.
    let g1 = array![[1u8, 1, 0, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1]];
    let m1 = array![[0.9f32, 0.1, 0.8, 0.7, 0.7], [0.0, 0.0, 0.0, 0.7, 0.7], [0.0, 0.0, 0.0, 0.7, 0.7]];
    let g2 = array![[1u8, 0, 0], [0, 1, 0], [0, 0, 1]];
    let m2 = Array2::<f32>::from_elem((3, 3), 0.4);
    let g3 = Array2::<u8>::zeros((2, 2));
    let m3 = Array2::<f32>::from_elem((2, 2), 0.9);
    assert_eq!(connected_components(&g2).1, vec![3]);
    let (maps, gts) = (vec![m1, m2, m3], vec![g1, g2, g3]);
    assert!(close(pro_at_threshold(&maps, &gts, 0.5).unwrap().unwrap(), 0.5));
    assert!(close(pro_at_threshold(&maps, &gts, 0.0).unwrap().unwrap(), 1.0));
    assert_eq!(pro_at_threshold(&maps[2..], &gts[2..], 0.5).unwrap(), None, "no defect region");
    let bad = vec![Array2::<u8>::zeros((3, 4))];
    assert!(matches!(pro_at_threshold(&maps[..1], &bad, 0.5), Err(EvalError::ShapeMismatch { image: 0, .. })));
}

#[test]
fn auroc_by_hand_with_ties_and_empty_classes() {
    assert!(close(auroc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap().unwrap(), 0.75));
    // Ties count one half: pos {0.5, 0.9}, neg {0.5, 0.5} -> (0.5 + 0.5 + 1 + 1) / 4.
    assert!(close(auroc(&[0.5, 0.5, 0.5, 0.9], &[false, true, false, true]).unwrap().unwrap(), 0.75));
    assert!(close(auroc(&[1.0, 1.0, 1.0], &[true, false, false]).unwrap().unwrap(), 0.5));
    assert_eq!(auroc(&[0.1, 0.2], &[true, true]).unwrap(), None);
    assert_eq!(auroc(&[], &[]).unwrap(), None);
    assert!(matches!(auroc(&[f64::NAN, 0.2], &[true, false]), Err(EvalError::NaN(0))));
    assert!(matches!(auroc(&[0.2], &[true, false]), Err(EvalError::LengthMismatch { .. })));
}

fn brute_auroc(s: &[f64], l: &[bool]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..s.len() {
        for j in 0..s.len() {
            if l[i] && !l[j] {
                den += 1.0;
                num += if s[i] > s[j] {
                    1.0
                } else if s[i] == s[j] {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    num / den
}

#[test]
fn auroc_equals_brute_force_pairs_on_random_tied_scores() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for trial in 0..300 {
        let n = rng.random_range(2..60);
        let levels = rng.random_range(1..12);
        let s: Vec<f64> = (0..n).map(|_| rng.random_range(0..levels) as f64 / 3.0).collect();
        let l: Vec<bool> = (0..n).map(|_| rng.random_bool(0.4)).collect();
        let got = auroc(&s, &l).unwrap();
        if l.iter().all(|&x| x) || l.iter().all(|&x| !x) {
            assert_eq!(got, None);
        } else {
            assert!((got.unwrap() - brute_auroc(&s, &l)).abs() < 1e-12, "trial {trial}");
        }
    }
}

#[test]
fn pixel_and_image_auroc() {
    let maps = vec![array![[0.1f32, 0.7], [0.3, 0.3]], array![[0.3f32, 0.0], [0.9, 0.2]]];
    let gts = vec![array![[0u8, 1], [0, 0]], array![[1u8, 0], [0, 0]]];
    let s: Vec<f64> = maps.iter().flat_map(|m| m.iter().map(|&v| v as f64)).collect();
    let l: Vec<bool> = gts.iter().flat_map(|g| g.iter().map(|&v| v != 0)).collect();
    assert!(close(pixel_auroc(&maps, &gts).unwrap().unwrap(), brute_auroc(&s, &l)));
    // Image scores are the maxima 0.7 and 0.9.
    assert_eq!(image_auroc(&maps, &[true, false]).unwrap(), Some(0.0));
    assert_eq!(image_auroc(&maps, &[false, true]).unwrap(), Some(1.0));
}

#[test]
fn aupro_by_hand() {
    // Regions: R1 = image A pixels 0,1 (scores 0.9, 0.2); R2 = image B pixel 3 (0.5).
    // Five defect-free pixels: 0.8, 0.1 (A) and 0.3, 0.7, 0.0 (B).
    // Curve: (0,0) (0,.25) (.2,.25) (.4,.25) (.4,.75) (.6,.75) (.6,1) (.8,1) (1,1) (1,1).
    let maps = vec![array![[0.9f32, 0.2, 0.8, 0.1]], array![[0.3f32, 0.7, 0.0, 0.5]]];
    let gts = vec![array![[1u8, 1, 0, 0]], array![[0u8, 0, 0, 1]]];
    // to 0.3: 0.2*0.25 + 0.1*0.25 = 0.075 -> /0.3
    assert!(close(aupro(&maps, &gts, 0.3).unwrap().unwrap(), 0.25));
    // to 0.5: 0.05 + 0.05 + 0.1*0.75 = 0.175 -> /0.5
    assert!(close(aupro(&maps, &gts, 0.5).unwrap().unwrap(), 0.35));
    // to 1: 0.05 + 0.05 + 0.15 + 0.2 + 0.2
    assert!(close(aupro(&maps, &gts, 1.0).unwrap().unwrap(), 0.65));

    // A tie between a defect and a defect-free pixel is one threshold: (0,0) -> (0.5,1), so the
    // curve at FPR 0.3 is interpolated to 0.6: area 0.09 / 0.3.
    let maps = vec![array![[0.5f32, 0.5, 0.1]]];
    let gts = vec![array![[1u8, 0, 0]]];
    assert!(close(aupro(&maps, &gts, 0.3).unwrap().unwrap(), 0.3));

    assert_eq!(aupro(&maps, &[array![[0u8, 0, 0]]], 0.3).unwrap(), None);
    assert!(matches!(aupro(&maps, &gts, 0.0), Err(EvalError::InvalidArgument(_))));
}

/// AUPRO the slow way: for every distinct score t (descending), recompute FPR and PRO from
/// scratch, then integrate like MVTec.
fn brute_aupro(maps: &[Array2<f32>], gts: &[Array2<u8>], max_fpr: f64) -> f64 {
    let mut ts: Vec<f32> = maps.iter().flat_map(|m| m.iter().copied()).collect();
    ts.sort_by(|a, b| b.partial_cmp(a).unwrap());
    ts.dedup();
    let comps: Vec<_> = gts.iter().map(connected_components).collect();
    let n_regions: usize = comps.iter().map(|c| c.1.len()).sum();
    let n_ok: usize = gts.iter().map(|g| g.iter().filter(|&&v| v == 0).count()).sum();
    let mut pts = vec![(0.0, 0.0)];
    for &t in &ts {
        let mut fp = 0usize;
        let mut pro = 0.0;
        for ((m, g), (labels, areas)) in maps.iter().zip(gts).zip(&comps) {
            fp += m.iter().zip(g.iter()).filter(|(s, g)| **g == 0 && **s >= t).count();
            for (k, &a) in areas.iter().enumerate() {
                let hit = m.iter().zip(labels.iter()).filter(|(s, l)| **l as usize == k + 1 && **s >= t).count();
                pro += hit as f64 / a as f64;
            }
        }
        pts.push((fp as f64 / n_ok as f64, pro / n_regions as f64));
    }
    pts.push((1.0, 1.0));
    let mut area = 0.0;
    for w in pts.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x1 <= max_fpr {
            area += (x1 - x0) * (y0 + y1) / 2.0;
        } else {
            if x0 < max_fpr {
                let y = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0);
                area += (max_fpr - x0) * (y0 + y) / 2.0;
            }
            break;
        }
    }
    area / max_fpr
}

#[test]
fn aupro_equals_the_per_threshold_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for trial in 0..40 {
        let n_img = rng.random_range(1..5);
        let (h, w) = (rng.random_range(3..10), rng.random_range(3..10));
        let levels = rng.random_range(3..30);
        let maps: Vec<Array2<f32>> =
            (0..n_img).map(|_| Array2::from_shape_fn((h, w), |_| rng.random_range(0..levels) as f32 / 7.0)).collect();
        let gts: Vec<Array2<u8>> =
            (0..n_img).map(|_| Array2::from_shape_fn((h, w), |_| u8::from(rng.random_bool(0.25)))).collect();
        for &max_fpr in &[0.05, 0.3, 1.0] {
            let got = aupro(&maps, &gts, max_fpr).unwrap();
            let has = gts.iter().any(|g| g.iter().any(|&v| v != 0)) && gts.iter().any(|g| g.iter().any(|&v| v == 0));
            match got {
                None => assert!(!has),
                Some(v) => {
                    assert!((v - brute_aupro(&maps, &gts, max_fpr)).abs() < 1e-9, "trial {trial} max_fpr {max_fpr}")
                }
            }
        }
    }
}

#[test]
fn aupro_is_fast_on_a_test_set_sized_input() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let maps: Vec<Array2<f32>> = (0..100).map(|_| Array2::from_shape_fn((64, 64), |_| rng.random::<f32>())).collect();
    let gts: Vec<Array2<u8>> = (0..100)
        .map(|i| {
            Array2::from_shape_fn((64, 64), |(y, x)| {
                u8::from(i % 2 == 0 && (10..20).contains(&y) && (5..30).contains(&x))
            })
        })
        .collect();
    let v = aupro(&maps, &gts, 0.3).unwrap().unwrap();
    // Random scores: PRO ≈ FPR, so the normalised area up to 0.3 is ≈ 0.15.
    assert!((v - 0.15).abs() < 0.02, "{v}");
}

#[test]
fn threshold_protocol_by_hand() {
    // One map: a 3-pixel blob at 0.8 and a 1-pixel spot at 0.9, background 0.1.
    let m = array![[0.1f32, 0.8, 0.8, 0.1], [0.1, 0.8, 0.1, 0.1], [0.1, 0.1, 0.1, 0.9]];
    // min_area 3: at 0.1 the blob (3) is not below 3; at 0.8 only the spot (1) remains.
    let c = select_threshold(std::slice::from_ref(&m), 3).unwrap();
    assert_eq!((c.threshold, c.largest_area, c.candidates), (0.8, 1, 3));
    assert!(!is_anomalous(&m, c.threshold, 3) && is_anomalous(&m, 0.1, 3));
    // min_area 4: already at 0.1 the largest component (3) is below 4. And below every value
    // the whole 12-pixel map is on, so the smallest value is the answer.
    assert_eq!(select_threshold(std::slice::from_ref(&m), 4).unwrap().threshold, 0.1);
    // min_area 1 (and 0, which acts as 1): nothing may be above -> the maximum.
    assert_eq!(select_threshold(std::slice::from_ref(&m), 1).unwrap().threshold, 0.9);
    assert_eq!(select_threshold(std::slice::from_ref(&m), 0).unwrap().threshold, 0.9);
    assert!(select_threshold(&[], 3).is_err());
    assert!(matches!(select_threshold(&[array![[f32::NAN]]], 3), Err(EvalError::NaN(0))));
}

#[test]
fn threshold_search_equals_a_linear_scan() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for trial in 0..30 {
        let maps: Vec<Array2<f32>> = (0..rng.random_range(1..4))
            .map(|_| {
                let raw = Array2::from_shape_fn((12, 12), |_| rng.random_range(0..40) as f32 / 10.0);
                vqad::runtime::score::bilateral_filter(&raw, 3, 75.0, 1.0).unwrap()
            })
            .collect();
        let min_area = rng.random_range(0..20);
        let c = select_threshold(&maps, min_area).unwrap();
        let mut vals: Vec<f32> = maps.iter().flat_map(|m| m.iter().copied()).collect();
        vals.sort_by(|a, b| a.partial_cmp(b).unwrap());
        vals.dedup();
        let linear = *vals.iter().find(|&&t| largest_area_over(&maps, t) < min_area.max(1)).unwrap();
        assert_eq!(c.threshold, linear, "trial {trial}");
        assert!(maps.iter().all(|m| !is_anomalous(m, c.threshold, min_area)));
        assert!(c.evaluations <= 1 + (vals.len() as f64).log2().ceil() as usize);
    }
}

#[test]
fn synthetic_negatives_paint_one_percent() {
    let img = Array3::<f32>::from_elem((3, 64, 80), 0.8);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut colours = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let (out, mask) = paint_negative(&img, &mut rng, NEGATIVE_FRACTION).unwrap();
        let area = mask.iter().filter(|&&v| v == 1).count();
        let target = 0.01 * 64.0 * 80.0;
        assert!((area as f64 - target).abs() <= 0.2 * target + 2.0, "area {area}");
        let (_, areas) = connected_components(&mask);
        assert_eq!(areas.len(), 1, "one rectangle");
        for ((y, x), &m) in mask.indexed_iter() {
            for c in 0..3 {
                let v = out[[c, y, x]];
                if m == 1 {
                    assert!(v == 0.0 || v == 0.5);
                    colours.insert((v * 10.0) as i32);
                } else {
                    assert_eq!(v, 0.8);
                }
            }
        }
    }
    assert_eq!(colours.len(), 2, "black and gray both occur");
    // Seeded: reproducible.
    let a = paint_negative(&img, &mut ChaCha8Rng::seed_from_u64(9), 0.01).unwrap();
    let b = paint_negative(&img, &mut ChaCha8Rng::seed_from_u64(9), 0.01).unwrap();
    assert_eq!(a, b);
    assert!(paint_negative(&img, &mut rng, 0.0).is_err());
    assert!(paint_negative(&Array3::zeros((3, 0, 4)), &mut rng, 0.01).is_err());
    // Tiny image: still at least one pixel.
    let (_, mask) = paint_negative(&Array3::zeros((1, 4, 4)), &mut rng, 0.01).unwrap();
    assert_eq!(mask.iter().filter(|&&v| v == 1).count(), 1);
}

#[test]
fn best_image_accuracy_by_hand() {
    use vqad::eval::threshold::best_image_accuracy;
    // Blob peaks (min_area 2): good 0.2, 0.6; defective 0.5, 0.9. Thresholds at each peak:
    // t = 0.2 → goods 1/2 right, defects 2/2 → 0.75; t = 0.5 → 2/2, 1/2 → 0.75;
    // t = 0.6 → 2/2, 1/2 → 0.75; below everything → 0/2, 2/2 → 0.5; t = 0.9 → 2/2, 0/2.
    let blob = |v: f32| Array2::from_shape_fn((3, 4), |(y, x)| if y == 1 && (1..3).contains(&x) { v } else { 0.1 });
    let maps = vec![blob(0.2), blob(0.6), blob(0.5), blob(0.9)];
    let labels = [false, false, true, true];
    let (acc, t) = best_image_accuracy(&maps, &labels, 2).unwrap().unwrap();
    assert_eq!((acc, t), (0.75, 0.2), "first of the equally good thresholds");
    // Separable: 0.6 good, 0.9 defective → 1.0 at t = 0.6, and every decision agrees.
    let (acc, t) = best_image_accuracy(&[blob(0.6), blob(0.9)], &[false, true], 2).unwrap().unwrap();
    assert_eq!(acc, 1.0);
    assert!(!is_anomalous(&blob(0.6), t, 2) && is_anomalous(&blob(0.9), t, 2));
    // A one-pixel speck never makes a component of 2 by itself; only a threshold below the
    // background flags that image, and the good one with it: 0.5 at best.
    let speck = Array2::from_shape_fn((3, 4), |(y, x)| if (y, x) == (1, 1) { 0.9 } else { 0.1 });
    assert_eq!(best_image_accuracy(&[blob(0.6), speck], &[false, true], 2).unwrap().unwrap().0, 0.5);
    assert_eq!(best_image_accuracy(&maps, &[false; 4], 2).unwrap(), None);
    assert!(best_image_accuracy(&maps, &[false], 2).is_err());
}

#[test]
fn tolerant_threshold_by_hand() {
    use vqad::eval::threshold::select_threshold_tolerant;
    // Three validation maps whose own smallest qualifying thresholds (min_area 2) are 0.2, 0.5
    // and 0.9: each has one 2-pixel blob at that value on a 0.1 background.
    let blob = |v: f32| Array2::from_shape_fn((3, 4), |(y, x)| if y == 1 && (1..3).contains(&x) { v } else { 0.1 });
    let maps = vec![blob(0.5), blob(0.9), blob(0.2)];
    // Strict (0): the largest, as Bergmann et al.
    assert_eq!(select_threshold_tolerant(&maps, 2, 0.0).unwrap().threshold, 0.9);
    assert_eq!(select_threshold(&maps, 2).unwrap().threshold, 0.9);
    // 1/3 tolerated: one map may stay anomalous -> the second largest.
    let c = select_threshold_tolerant(&maps, 2, 0.34).unwrap();
    assert_eq!((c.threshold, c.largest_area), (0.5, 2));
    let flagged = maps.iter().filter(|m| is_anomalous(m, c.threshold, 2)).count();
    assert_eq!(flagged, 1, "exactly the tolerated share stays anomalous");
    // Below one map's worth, nothing is tolerated.
    assert_eq!(select_threshold_tolerant(&maps, 2, 0.3).unwrap().threshold, 0.9);
    assert!(select_threshold_tolerant(&maps, 2, 1.0).is_err());
    assert!(select_threshold_tolerant(&maps, 2, -0.1).is_err());
    assert!(matches!(select_threshold_tolerant(&[array![[f32::NAN]]], 2, 0.1), Err(EvalError::NaN(0))));
}

#[test]
fn strict_tolerant_threshold_equals_the_global_search() {
    use vqad::eval::threshold::select_threshold_tolerant;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..40 {
        let maps: Vec<Array2<f32>> = (0..rng.random_range(1..5))
            .map(|_| Array2::from_shape_fn((6, 7), |_| (rng.random_range(0..12) as f32) / 10.0))
            .collect();
        let area = rng.random_range(0..6);
        assert_eq!(select_threshold_tolerant(&maps, area, 0.0).unwrap().threshold, select_threshold(&maps, area).unwrap().threshold);
    }
}

#[test]
fn label_free_eta_by_hand() {
    use vqad::eval::tune::{eta_for_fire_fraction, first_visit_scores};
    // 2×2 grid of log-probs. Visit (0,0): own −5, neighbours (0,1) −1, (1,0) −4, (1,1) −2
    // -> max(−5, min(−1, −4, −2)) = −4. (0,1): own −1, neighbours (1,0) −4, (1,1) −2 -> −1.
    // (1,0): own −4, neighbour (1,1) −2 -> −2. (1,1): no bottom-half neighbour -> own −2.
    let lp = array![[-5.0f32, -1.0], [-4.0, -2.0]];
    assert_eq!(first_visit_scores(&lp, true), vec![-4.0, -1.0, -2.0, -2.0]);
    assert_eq!(first_visit_scores(&lp, false), vec![-5.0, -1.0, -4.0, -2.0]);
    // With 8 scores and a quarter allowed to fire: the 3rd smallest (−6) is ln η, so exactly
    // the two below it (−9, −7) satisfy score < ln η.
    let mut s = vec![-9.0, -1.0, -3.0, -7.0, -2.0, -5.0, -4.0, -6.0];
    let eta = eta_for_fire_fraction(&mut s, 0.25);
    assert!((eta.ln() - -6.0).abs() < 1e-12, "{eta}");
    assert_eq!(s.iter().filter(|&&v| v < eta.ln()).count(), 2);
    // A confident prior (all near log 1) is clamped to 0.5, an empty set to the floor.
    assert_eq!(eta_for_fire_fraction(&mut [0.0, -0.01], 0.01), 0.5);
    assert_eq!(eta_for_fire_fraction(&mut [], 0.01), 1e-12);
}
