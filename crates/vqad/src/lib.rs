//! vqad: image anomaly detection by latent space resampling (Wang et al. 2020).
//!
//! The pipeline: a VQ-VAE and a PixelSNAIL prior are trained on normal images and written as
//! ONNX graphs ([`onnx`]) by the training stack (the `vqad-train` crate, the only part that
//! needs libtorch), packed into signed archives ([`package`]), published and assigned to
//! channels in a folder registry ([`registry`]), audited ([`audit`]: diffs and ML-BOMs; [`provenance`]: SLSA build provenance, signed
//! evaluation and `vqad audit`) and
//! run by ONNX Runtime with the resampling loop in Rust ([`runtime`], served by [`serve`]).
//! [`eval`] measures the result the way the paper and MVTec do.

pub mod audit;
pub mod config;
pub mod data;
pub mod eval;
pub mod fsutil;
pub mod heap;
pub mod linalg;
pub mod native;
pub mod onnx;
pub mod package;
pub mod provenance;
pub mod registry;
pub mod runtime;
pub mod serve;
pub mod source;

/// vqad's own version, recorded in package provenance.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The rustc that compiled vqad, recorded in package provenance.
pub const RUSTC_VERSION: &str = env!("VQAD_RUSTC_VERSION");
