//! Inference: resampling (eq. 5) and scoring (eq. 6 + post-processing). ONNX Runtime sessions
//! and the detector are added beside these modules.

pub mod resample;
pub mod score;

pub use resample::{
    resample, resample_batch, BatchStats, Prior, PriorError, ResampleMode, ResampleOptions, ResampleOutcome,
};
pub use score::{
    bilateral_filter, binarize, connected_components, image_score, is_anomalous, largest_component, score_map,
    ScoreError,
};
