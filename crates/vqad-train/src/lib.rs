//! vqad's training stack: the VQ-VAE and PixelSNAIL prior as libtorch modules that also write
//! themselves as ONNX graphs ([`nn`], one definition of each network for trainer and
//! exporter), their training loops and run folders ([`train`]), and the steps that turn a
//! run into a signed package ([`pipeline`]: export → tune → package).
//!
//! It is a crate of its own so that only the `vqad-train` executable links libtorch: `vqad`
//! (verify, list, detect, serve, …) never loads it, and hands training commands to
//! `vqad-train`. Everything below the training stack is the `vqad` library.

pub mod nn;
pub mod pipeline;
pub mod train;
