//! How far a reduced-precision variant's results are from the FP32 reference: each graph on
//! the same inputs, then whole detections on validation normals and on synthetic defects
//! painted on them. The figures go into the signed manifest ([`crate::package::Parity`]).

use super::metrics::{pixel_auroc, EvalError};
use crate::config::DetectConfig;
use crate::data::paste_blob;
use crate::package::{ModelShape, Parity, ParityBound};
use crate::runtime::session::{open_graph, SessionError, SessionOptions};
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
/// boundary (see [`Reference::compare`]).
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

pub use crate::runtime::variant::sqnr_db;

/// The FP32 side of a parity measurement, computed once and compared with any number of
/// variants (packaging compares each precision, and accuracy control each candidate).
pub struct Reference {
    normals: usize,
    images: Vec<Array3<f32>>,
    masks: Vec<Array2<u8>>,
    /// Encoder codes per batch of up to 8 images (they feed both priors and both decoders).
    codes: Vec<ArrayD<i64>>,
    log_probs: Vec<f32>,
    argmax: Vec<usize>,
    decoded: Vec<f32>,
    detections: Vec<Detection>,
    pixel_auroc: f64,
    shape: ModelShape,
    settings: DetectConfig,
    session: SessionOptions,
}

fn argmax_lanes(a: &ArrayD<f32>) -> impl Iterator<Item = usize> + '_ {
    a.lanes(Axis(1)).into_iter().map(|l| l.iter().enumerate().fold((0, f32::NEG_INFINITY), |m, (k, v)| if *v > m.1 { (k, *v) } else { m }).0)
}

impl Reference {
    /// Runs the FP32 graphs (`fp32`, plain names) on the validation normals and one painted
    /// defect per normal ([`parity_images`]): each graph, then whole detections.
    #[allow(clippy::too_many_arguments)]
    pub fn compute(
        fp32: &BTreeMap<String, Vec<u8>>,
        shape: &ModelShape,
        settings: &DetectConfig,
        normals: &[Array3<f32>],
        seed: u64,
        session: &SessionOptions,
        progress: &dyn Fn(&str),
    ) -> Result<Self, ParityError> {
        if normals.is_empty() {
            return Err(ParityError::Invalid("no validation normals to compare on".into()));
        }
        let graph = |g: &str| fp32.get(g).ok_or_else(|| ParityError::Invalid(format!("the fp32 graphs lack {g}")));
        let (images, masks) = parity_images(normals, seed);
        progress(&format!("fp32 reference: each graph and whole detections on {} images…", images.len()));
        let views: Vec<_> = images.iter().map(|a| a.view().into_dyn()).collect();
        let mut enc = open_graph("encoder.onnx", graph("encoder.onnx")?, session)?;
        let mut prior = open_graph("pixelsnail.onnx", graph("pixelsnail.onnx")?, session)?;
        let mut dec = open_graph("decoder.onnx", graph("decoder.onnx")?, session)?;
        let (mut codes, mut log_probs, mut argmax, mut decoded) = (vec![], vec![], vec![], vec![]);
        for chunk in views.chunks(8) {
            let z: ArrayD<i64> = enc.run_one(batch(chunk))?;
            let lp: ArrayD<f32> = prior.run_one(z.clone())?;
            argmax.extend(argmax_lanes(&lp));
            log_probs.extend(lp.iter().copied());
            let x: ArrayD<f32> = dec.run_one(z.clone())?;
            decoded.extend(x.iter().copied());
            codes.push(z);
        }
        let opts = DetectorOptions { session: session.clone(), ..Default::default() };
        let detections = Detector::from_graphs(fp32, shape.clone(), settings.clone(), opts)?.detect_arrays(&images)?;
        let pixel_auroc = auc(&detections, &masks)?;
        Ok(Reference {
            normals: normals.len(),
            images,
            masks,
            codes,
            log_probs,
            argmax,
            decoded,
            detections,
            pixel_auroc,
            shape: shape.clone(),
            settings: settings.clone(),
            session: session.clone(),
        })
    }

    /// Runs a variant's graphs (`variant`, plain names; `label` names it in messages and
    /// errors) beside the reference and returns its parity record with `bound` applied.
    pub fn compare(&self, variant: &BTreeMap<String, Vec<u8>>, label: &str, bound: ParityBound, progress: &dyn Fn(&str)) -> Result<Parity, ParityError> {
        let graph = |g: &str| variant.get(g).ok_or_else(|| ParityError::Invalid(format!("the {label} graphs lack {g}")));
        progress(&format!("{label}: comparing each graph and whole detections with fp32 on {} images…", self.images.len()));
        let session = &self.session;
        let views: Vec<_> = self.images.iter().map(|a| a.view().into_dyn()).collect();
        let mut enc = open_graph(&format!("encoder.onnx ({label})"), graph("encoder.onnx")?, session)?;
        let mut prior = open_graph(&format!("pixelsnail.onnx ({label})"), graph("pixelsnail.onnx")?, session)?;
        let mut dec = open_graph(&format!("decoder.onnx ({label})"), graph("decoder.onnx")?, session)?;
        let (mut codes_var, mut lp_var, mut argmax_var, mut decoded_var) = (vec![], vec![], vec![], vec![]);
        for (chunk, z) in views.chunks(8).zip(&self.codes) {
            let zv: ArrayD<i64> = enc.run_one(batch(chunk))?;
            codes_var.extend(zv.iter().copied());
            let lp: ArrayD<f32> = prior.run_one(z.clone())?;
            argmax_var.extend(argmax_lanes(&lp));
            lp_var.extend(lp.iter().copied());
            let x: ArrayD<f32> = dec.run_one(z.clone())?;
            decoded_var.extend(x.iter().copied());
        }
        let encoder_code_agreement = agreement(self.codes.iter().flat_map(|z| z.iter()).zip(&codes_var).map(|(a, b)| a == b));
        // Capped so identical outputs (∞ dB) stay a JSON number.
        let prior_logprob_sqnr_db = sqnr_db(&self.log_probs, &lp_var).min(MAX_SQNR_DB);
        let prior_argmax_agreement = agreement(self.argmax.iter().zip(&argmax_var).map(|(a, b)| a == b));
        let (decoder_rms_error, decoder_max_error) = rms(self.decoded.iter().copied().zip(decoded_var.iter().copied()));
        drop((lp_var, decoded_var));

        let opts = DetectorOptions { session: session.clone(), ..Default::default() };
        let d_var = Detector::from_graphs(variant, self.shape.clone(), self.settings.clone(), opts)?.detect_arrays(&self.images)?;
        let d_ref = &self.detections;
        let (gm, gn) = (self.shape.grid_m as usize, self.shape.grid_n as usize);
        let resampled_agreement = agreement(d_ref.iter().zip(&d_var).flat_map(|(a, b)| {
            let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (a.resampled.iter().collect(), b.resampled.iter().collect());
            (0..gm).flat_map(move |m| (0..gn).map(move |n| (m, n))).map(move |p| sa.contains(&p) == sb.contains(&p)).collect::<Vec<_>>()
        }));
        let threshold = self.settings.pixel_threshold.unwrap_or(1.0).abs().max(f64::MIN_POSITIVE);
        let (raw_rms, _) = rms(d_ref.iter().zip(&d_var).flat_map(|(a, b)| a.raw_map.iter().copied().zip(b.raw_map.iter().copied()).collect::<Vec<_>>()));
        // The pixel threshold is, by construction, the score of one validation normal (the
        // tuning rule puts it exactly there): that image sits on the decision boundary, and any
        // change at all decides it either way. Images within BOUNDARY_TOLERANCE of the threshold
        // are counted apart instead of as disagreements.
        let t = self.settings.pixel_threshold.map(|t| t as f32);
        let at_boundary = |d: &Detection| t.is_some_and(|t| (d.image_score - t).abs() <= BOUNDARY_TOLERANCE * t.abs().max(f32::MIN_POSITIVE));
        let boundary_images = d_ref.iter().filter(|d| at_boundary(d)).count();
        let decision_agreement = agreement(d_ref.iter().zip(&d_var).filter(|(a, _)| !at_boundary(a)).map(|(a, b)| a.anomalous == b.anomalous));
        if let Some(t) = t {
            for (i, (a, b)) in d_ref.iter().zip(&d_var).enumerate().filter(|(_, (a, b))| !at_boundary(a) && a.anomalous != b.anomalous) {
                let kind = if i < self.normals { "normal" } else { "painted defect" };
                progress(&format!("{label}: decision flipped on image {i} ({kind}): score {:.5}× the threshold in fp32, {:.5}× in {label}", a.image_score / t, b.image_score / t));
            }
        }
        let mask_ref: Vec<Array2<u8>> = d_ref.iter().map(|d| d.mask.clone()).collect();
        let mask_var: Vec<Array2<u8>> = d_var.iter().map(|d| d.mask.clone()).collect();
        let mask_iou = mean_mask_iou(&mask_ref, &mask_var);
        let pixel_auroc = auc(&d_var, &self.masks)?;
        let mut p = Parity {
            normals: self.normals as u64,
            defects: (self.images.len() - self.normals) as u64,
            encoder_code_agreement,
            prior_logprob_sqnr_db,
            prior_argmax_agreement,
            decoder_max_error,
            decoder_rms_error,
            resampled_agreement,
            raw_map_rms_error: raw_rms / threshold,
            decision_agreement,
            boundary_images: boundary_images as u64,
            mask_iou,
            pixel_auroc_reference: self.pixel_auroc,
            pixel_auroc,
            auroc_difference: pixel_auroc - self.pixel_auroc,
            bound,
            within_bound: true,
            override_reason: None,
        };
        p.within_bound = p.violation().is_none();
        Ok(p)
    }
}

fn auc(ds: &[Detection], masks: &[Array2<u8>]) -> Result<f64, ParityError> {
    let maps: Vec<Array2<f32>> = ds.iter().map(|d| d.smoothed.clone()).collect();
    pixel_auroc(&maps, masks)?.ok_or_else(|| ParityError::Invalid("the synthetic defects left no defect pixel".into()))
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
