//! Running verified packages: ONNX Runtime sessions, the resampling loop, scoring.

pub mod session;
