//! Inference: ONNX Runtime sessions, resampling (eq. 5), scoring (eq. 6 + post-processing)
//! and the detector that ties them together.

pub mod detector;
pub mod output;
pub mod peak;
pub mod resample;
pub mod score;
pub mod session;
pub mod texture;
pub mod whiten;
pub mod border;
pub mod variant;
pub mod compat;
pub mod roofline;

pub use resample::{
    resample, resample_batch, BatchStats, Prior, PriorError, ResampleMode, ResampleOptions, ResampleOutcome,
};
pub use score::{
    bilateral_filter, binarize, connected_components, image_score, is_anomalous, largest_component, score_map,
    ScoreError,
};
pub use detector::{Detection, DetectError, Detector, DetectorOptions, StageMillis};
