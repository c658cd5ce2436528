//! How far a reduced-precision variant's results are from the FP32 reference: each graph on
//! the same inputs, then whole detections on validation normals and on synthetic defects
//! painted on them. The figures go into the signed manifest ([`crate::package::Parity`]).

use super::metrics::{pixel_auroc, EvalError};
use crate::config::DetectConfig;
use crate::data::paste_blob;
use crate::onnx::Precision;
use crate::package::{ModelShape, Parity, ParityBound, GRAPH_FILES};
use crate::runtime::session::{open_graph, SessionError, SessionOptions};
use crate::runtime::variant::graphs_for;
use crate::runtime::{Detection, DetectError, Detector, DetectorOptions};
use ndarray::{Array2, Array3, ArrayD, Axis};
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, thiserror::Error)]
pub enum ParityError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error("parity: {0}")]
    Invalid(String),
}

/// Relative distance from the pixel threshold within which an image counts as on the decision
/// boundary (see [`measure`]).
pub const BOUNDARY_TOLERANCE: f32 = 1e-5;

/// SQNR recorded for identical outputs.
pub const MAX_SQNR_DB: f64 = 200.0;

/// Synthetic defects per normal (one blob each, from another normal's pixels).
pub const DEFECTS_PER_NORMAL: usize = 1;

/// The images parity is measured on: the normals, then one copy of each with a blob pasted
/// in (seeded), with the blob's pixels as its mask.
pub fn parity_images(normals: &[Array3<f32>], seed: u64) -> (Vec<Array3<f32>>, Vec<Array2<u8>>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x7061_7269_7479);
    let mut images: Vec<Array3<f32>> = normals.to_vec();
    let (_, h, w) = normals.first().map_or((0, 0, 0), |a| a.dim());
    let mut masks = vec![Array2::<u8>::zeros((h, w)); normals.len()];
    for (i, n) in normals.iter().enumerate() {
        for _ in 0..DEFECTS_PER_NORMAL {
            let donor = &normals[(i + 1) % normals.len()];
            let d = paste_blob(n, donor, &mut rng);
            let diff = (&d - n).mapv(f32::abs).sum_axis(Axis(0));
            masks.push(diff.mapv(|v| u8::from(v > 1e-6)));
            images.push(d);
        }
    }
    (images, masks)
}

fn batch<T: Clone>(items: &[ndarray::ArrayView<T, ndarray::IxDyn>]) -> ArrayD<T> {
    ndarray::stack(Axis(0), items).expect("same shapes")
}

fn agreement(a: impl Iterator<Item = bool>) -> f64 {
    let (mut same, mut n) = (0usize, 0usize);
    for s in a {
        same += usize::from(s);
        n += 1;
    }
    if n == 0 {
        1.0
    } else {
        same as f64 / n as f64
    }
}

fn rms(a: impl Iterator<Item = (f32, f32)>) -> (f64, f64) {
    let (mut sq, mut max, mut n) = (0f64, 0f64, 0usize);
    for (x, y) in a {
        let d = (x as f64 - y as f64).abs();
        sq += d * d;
        max = max.max(d);
        n += 1;
    }
    ((sq / n.max(1) as f64).sqrt(), max)
}

/// Mean IoU over images where the reference has a mask; None when it has none anywhere.
pub fn mean_mask_iou(reference: &[Array2<u8>], variant: &[Array2<u8>]) -> Option<f64> {
    let ious: Vec<f64> = reference
        .iter()
        .zip(variant)
        .filter(|(r, _)| r.iter().any(|&v| v > 0))
        .map(|(r, v)| {
            let inter = r.iter().zip(v).filter(|(a, b)| **a > 0 && **b > 0).count();
            let union = r.iter().zip(v).filter(|(a, b)| **a > 0 || **b > 0).count();
            inter as f64 / union.max(1) as f64
        })
        .collect();
    (!ious.is_empty()).then(|| ious.iter().sum::<f64>() / ious.len() as f64)
}

/// Signal-to-noise ratio (dB) of `variant` against `reference`: 10·log10(Σr² / Σ(r − v)²);
/// +∞ when they are identical.
pub fn sqnr_db(reference: &[f32], variant: &[f32]) -> f64 {
    let (mut s, mut e) = (0f64, 0f64);
    for (r, v) in reference.iter().zip(variant) {
        if r.is_finite() && v.is_finite() {
            s += (*r as f64).powi(2);
            e += (*r as f64 - *v as f64).powi(2);
        }
    }
    if e == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (s / e).log10()
    }
}

/// Runs `precision`'s graphs from `files` (a package's entries, or an export plus variants)
/// beside the FP32 ones and returns the parity record with `bound` applied.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    files: &BTreeMap<String, Vec<u8>>,
    precision: Precision,
    shape: &ModelShape,
    settings: &DetectConfig,
    normals: &[Array3<f32>],
    seed: u64,
    session: &SessionOptions,
    bound: ParityBound,
    progress: &dyn Fn(&str),
) -> Result<Parity, ParityError> {
    if normals.is_empty() {
        return Err(ParityError::Invalid("no validation normals to compare on".into()));
    }
    let reference = graphs_for(files, Precision::Fp32);
    let variant = graphs_for(files, precision);
    if !GRAPH_FILES.iter().any(|g| files.contains_key(&precision.file_name(g))) {
        return Err(ParityError::Invalid(format!("there are no {precision} graphs to compare")));
    }
    let (images, masks) = parity_images(normals, seed);
    progress(&format!("{precision}: comparing each graph with fp32 on {} images…", images.len()));
    let views: Vec<_> = images.iter().map(|a| a.view().into_dyn()).collect();
    // Per graph, on identical inputs: the reference's codes feed both priors and decoders.
    let run = |name: &str, bytes: &[u8]| open_graph(name, bytes, session);
    let (mut codes_ref, mut codes_var) = (vec![], vec![]);
    let (mut lp_ref, mut lp_var) = (vec![], vec![]);
    let (mut argmax_same, mut argmax_n) = (0usize, 0usize);
    let (mut dec_sq, mut dec_max, mut dec_n) = (0f64, 0f64, 0usize);
    {
        let mut e_ref = run("encoder.onnx", &reference["encoder.onnx"])?;
        let mut e_var = run(&precision.file_name("encoder.onnx"), &variant["encoder.onnx"])?;
        let mut p_ref = run("pixelsnail.onnx", &reference["pixelsnail.onnx"])?;
        let mut p_var = run(&precision.file_name("pixelsnail.onnx"), &variant["pixelsnail.onnx"])?;
        let mut d_ref = run("decoder.onnx", &reference["decoder.onnx"])?;
        let mut d_var = run(&precision.file_name("decoder.onnx"), &variant["decoder.onnx"])?;
        for chunk in views.chunks(8) {
            let x = batch(chunk);
            let z: ArrayD<i64> = e_ref.run_one(x.clone())?;
            let zv: ArrayD<i64> = e_var.run_one(x)?;
            codes_ref.extend(z.iter().copied());
            codes_var.extend(zv.iter().copied());
            let a: ArrayD<f32> = p_ref.run_one(z.clone())?;
            let b: ArrayD<f32> = p_var.run_one(z.clone())?;
            for (ra, rb) in a.lanes(Axis(1)).into_iter().zip(b.lanes(Axis(1))) {
                let am = |l: &ndarray::ArrayView1<f32>| l.iter().enumerate().fold((0, f32::NEG_INFINITY), |m, (k, v)| if *v > m.1 { (k, *v) } else { m }).0;
                argmax_same += usize::from(am(&ra) == am(&rb));
                argmax_n += 1;
            }
            lp_ref.extend(a.iter().copied());
            lp_var.extend(b.iter().copied());
            let xa: ArrayD<f32> = d_ref.run_one(z.clone())?;
            let xb: ArrayD<f32> = d_var.run_one(z)?;
            for (p, q) in xa.iter().zip(xb.iter()) {
                let d = (*p as f64 - *q as f64).abs();
                dec_sq += d * d;
                dec_max = dec_max.max(d);
                dec_n += 1;
            }
        }
    }
    let encoder_code_agreement = agreement(codes_ref.iter().zip(&codes_var).map(|(a, b)| a == b));
    // Capped so identical outputs (∞ dB) stay a JSON number.
    let prior_logprob_sqnr_db = sqnr_db(&lp_ref, &lp_var).min(MAX_SQNR_DB);
    let prior_argmax_agreement = argmax_same as f64 / argmax_n.max(1) as f64;
    let decoder_rms_error = (dec_sq / dec_n.max(1) as f64).sqrt();
    drop((lp_ref, lp_var));

    progress(&format!("{precision}: detecting end to end beside fp32…"));
    let opts = DetectorOptions { session: session.clone(), ..Default::default() };
    let detect = |files: &BTreeMap<String, Vec<u8>>| -> Result<Vec<Detection>, ParityError> {
        let mut det = Detector::from_graphs(files, shape.clone(), settings.clone(), opts.clone())?;
        Ok(det.detect_arrays(&images)?)
    };
    let d_ref = detect(&reference)?;
    let d_var = detect(&variant)?;
    let (gm, gn) = (shape.grid_m as usize, shape.grid_n as usize);
    let resampled_agreement = agreement(d_ref.iter().zip(&d_var).flat_map(|(a, b)| {
        let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (a.resampled.iter().collect(), b.resampled.iter().collect());
        (0..gm).flat_map(move |m| (0..gn).map(move |n| (m, n))).map(move |p| sa.contains(&p) == sb.contains(&p)).collect::<Vec<_>>()
    }));
    let threshold = settings.pixel_threshold.unwrap_or(1.0).abs().max(f64::MIN_POSITIVE);
    let (raw_rms, _) = rms(d_ref.iter().zip(&d_var).flat_map(|(a, b)| a.raw_map.iter().copied().zip(b.raw_map.iter().copied()).collect::<Vec<_>>()));
    // The pixel threshold is, by construction, the score of one validation normal (the
    // tuning rule puts it exactly there): that image sits on the decision boundary, and any
    // change at all decides it either way. Images within BOUNDARY_TOLERANCE of the threshold
    // are counted apart instead of as disagreements.
    let t = settings.pixel_threshold.map(|t| t as f32);
    let at_boundary = |d: &Detection| t.is_some_and(|t| (d.image_score - t).abs() <= BOUNDARY_TOLERANCE * t.abs().max(f32::MIN_POSITIVE));
    let boundary_images = d_ref.iter().filter(|d| at_boundary(d)).count();
    let decision_agreement = agreement(d_ref.iter().zip(&d_var).filter(|(a, _)| !at_boundary(a)).map(|(a, b)| a.anomalous == b.anomalous));
    let mask_ref: Vec<Array2<u8>> = d_ref.iter().map(|d| d.mask.clone()).collect();
    let mask_var: Vec<Array2<u8>> = d_var.iter().map(|d| d.mask.clone()).collect();
    let mask_iou = mean_mask_iou(&mask_ref, &mask_var);
    let maps = |ds: &[Detection]| ds.iter().map(|d| d.smoothed.clone()).collect::<Vec<_>>();
    let auc = |ds: &[Detection]| -> Result<f64, ParityError> {
        pixel_auroc(&maps(ds), &masks)?.ok_or_else(|| ParityError::Invalid("the synthetic defects left no defect pixel".into()))
    };
    let (pixel_auroc_reference, pixel_auroc) = (auc(&d_ref)?, auc(&d_var)?);
    let mut p = Parity {
        normals: normals.len() as u64,
        defects: (images.len() - normals.len()) as u64,
        encoder_code_agreement,
        prior_logprob_sqnr_db,
        prior_argmax_agreement,
        decoder_max_error: dec_max,
        decoder_rms_error,
        resampled_agreement,
        raw_map_rms_error: raw_rms / threshold,
        decision_agreement,
        boundary_images: boundary_images as u64,
        mask_iou,
        pixel_auroc_reference,
        pixel_auroc,
        auroc_difference: pixel_auroc - pixel_auroc_reference,
        bound,
        within_bound: true,
        override_reason: None,
    };
    p.within_bound = p.violation().is_none();
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_iou_and_sqnr_match_hand_computed_cases() {
        let a = Array2::from_shape_vec((2, 2), vec![1u8, 1, 0, 0]).unwrap();
        let b = Array2::from_shape_vec((2, 2), vec![1u8, 0, 1, 0]).unwrap();
        let none = Array2::<u8>::zeros((2, 2));
        // Image 1: ∩ = 1, ∪ = 3; image 2 has no reference mask and is not counted.
        assert!((mean_mask_iou(&[a.clone(), none.clone()], &[b, a.clone()]).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(mean_mask_iou(&[none.clone()], &[a]), None);
        // Σr² = 1 + 4 = 5, Σe² = 0.25 + 0.25 → 10·log10(10) = 10 dB.
        assert!((sqnr_db(&[1.0, 2.0], &[1.5, 1.5]) - 10.0).abs() < 1e-9);
        assert_eq!(sqnr_db(&[1.0], &[1.0]), f64::INFINITY);
    }

    #[test]
    fn parity_images_paint_one_masked_defect_per_normal() {
        let normals: Vec<Array3<f32>> = (0..3).map(|i| Array3::from_elem((3, 32, 32), 0.2 + 0.2 * i as f32)).collect();
        let (imgs, masks) = parity_images(&normals, 7);
        assert_eq!(imgs.len(), 6);
        assert!(masks[..3].iter().all(|m| m.iter().all(|&v| v == 0)));
        for (img, (m, n)) in imgs[3..].iter().zip(masks[3..].iter().zip(&normals)) {
            let changed = (img - n).mapv(f32::abs).sum_axis(Axis(0)).mapv(|v| u8::from(v > 1e-6));
            assert_eq!(&changed, m);
        }
        assert!(masks[3..].iter().any(|m| m.iter().any(|&v| v > 0)));
    }
}
