//! Evaluation as in the paper (image accuracy, PRO at a threshold, pixel AUROC, F1) and as in
//! MVTec's current protocol (image AUROC, AUPRO up to FPR 0.3), plus the label-free threshold
//! protocol and the §4.3.3 synthetic negatives.

pub mod metrics;
pub mod accuracy;
pub mod parity;
pub mod report;
pub mod threshold;
pub mod tune;

pub use metrics::{
    aupro, auroc, image_accuracy, image_auroc, image_f1, pixel_auroc, pixel_confusion, pixel_f1, pro_at_threshold,
    pro_curve, Confusion, EvalError, ImageAccuracy,
};
pub use threshold::{largest_area_over, paint_negative, select_threshold, select_threshold_tolerant, ThresholdChoice, NEGATIVE_FRACTION};
