//! The two networks of the method, each block written once: its tch `forward` and its
//! `emit` into an ONNX graph sit side by side and read the same weights, so the exported
//! graphs cannot drift from what was trained.

pub mod layers;
pub mod pixelsnail;
pub mod vqvae;

pub use pixelsnail::PixelSnail;
pub use vqvae::VqVae;
