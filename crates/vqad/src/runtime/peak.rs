//! Attainable matrix-multiply peak of this machine through ONNX Runtime, measured in-process
//! with the same session options as the benchmark, so a roofline compares like with like
//! (threads, provider, ONNX Runtime build) instead of a datasheet number.
//!
//! Two graphs: a float [n×n]·[n×n] MatMul, and its int8 counterpart (QuantizeLinear of the
//! input to uint8, then MatMulInteger with an int8 weight) as a quantized model would run it.
//! The weight is an initializer in both, so ONNX Runtime may pre-pack it as it does for real
//! models. The input is fed from the host on every pass; on a GPU provider that copy is timed
//! too.

use super::session::{open_graph, Graph, Provider, SessionError, SessionOptions};
use crate::onnx::{Dim, Elem, GraphBuilder};
use std::time::{Duration, Instant};

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum PeakError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("matrix size must be positive, got {0}")]
    Size(usize),
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct PeakOptions {
    /// Matrix side. 512 makes the product compute-bound (2n³ FLOPs over 3n² values: about 85
    /// FLOP/byte in f32) while the operands still fit in cache-sized tiles.
    pub n: usize,
    /// Timed wall time per graph, after warm-up.
    pub min_time: Duration,
    /// Untimed passes first (arena allocation, weight pre-packing, thread pool start).
    pub warmup: usize,
}

impl Default for PeakOptions {
    fn default() -> Self {
        PeakOptions { n: 512, min_time: Duration::from_millis(300), warmup: 2 }
    }
}

/// Measured peak rates; one operation is a multiply or an add (2n³ per pass).
#[derive(Debug, Clone, PartialEq)]
pub struct Peak {
    pub fp32_gflops: f64,
    pub int8_gops: f64,
    pub n: usize,
    /// Intra-op threads used: the session option, or all cores when it is 0 (ONNX Runtime's
    /// default).
    pub threads: usize,
    pub provider: Provider,
}

/// Deterministic values in [-1, 1): benchmark inputs need no randomness, only no special
/// structure (zeros) that a kernel could shortcut.
fn pattern(len: usize, salt: u64) -> impl Iterator<Item = f32> {
    (0..len as u64).map(move |i| {
        let h = (i ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        (h % 2001) as f32 / 1000.0 - 1.0
    })
}

/// `x` f32 [n,n] → `y` f32 [n,n] = x · W.
pub fn fp32_graph(n: usize, w: &[f32]) -> Vec<u8> {
    let d = n as i64;
    let mut g = GraphBuilder::new("peak_fp32");
    let x = g.input("x", Elem::F32, &[Dim::Fixed(d), Dim::Fixed(d)]);
    let w = g.init_f32("w", &[d, d], w);
    g.node_as("MatMul", &[&x, &w], &[], "y");
    g.output("y", Elem::F32, &[Dim::Fixed(d), Dim::Fixed(d)]);
    g.to_bytes("fp32 matmul peak")
}

/// `x` f32 [n,n] → `y` i32 [n,n] = (q(x) − zp) · W, with q(x) = sat_u8(round(x / scale) + zp)
/// (QuantizeLinear) and the int8 weight W (MatMulInteger inputs: A, B, a_zero_point).
pub fn int8_graph(n: usize, w: &[i8], scale: f32, zero_point: u8) -> Vec<u8> {
    let d = n as i64;
    let mut g = GraphBuilder::new("peak_int8");
    let x = g.input("x", Elem::F32, &[Dim::Fixed(d), Dim::Fixed(d)]);
    let s = g.scalar("scale", scale);
    let zp = g.init_u8("zero_point", &[], &[zero_point]);
    let q = g.node("QuantizeLinear", &[&x, &s, &zp], &[]);
    let w = g.init_i8("w", &[d, d], w);
    g.node_as("MatMulInteger", &[&q, &w, &zp], &[], "y");
    g.output("y", Elem::I32, &[Dim::Fixed(d), Dim::Fixed(d)]);
    g.to_bytes("int8 matmul peak")
}

/// Best single-pass time: the machine may be shared, and interference only ever slows a pass,
/// so the fastest one is the closest to what the hardware attains.
fn best_pass(g: &mut Graph, x: &ort::value::Tensor<f32>, opts: &PeakOptions) -> Result<f64, SessionError> {
    let name = g.name.clone();
    let err = |e: ort::Error| SessionError::Run { graph: name.clone(), reason: e.to_string() };
    for _ in 0..opts.warmup {
        g.session.run(ort::inputs![x]).map_err(err)?;
    }
    let (start, mut best, mut passes) = (Instant::now(), f64::INFINITY, 0);
    while passes < 3 || start.elapsed() < opts.min_time {
        let t = Instant::now();
        let out = g.session.run(ort::inputs![x]).map_err(err)?;
        best = best.min(t.elapsed().as_secs_f64());
        drop(out);
        passes += 1;
    }
    Ok(best)
}

/// Measures the fp32 and int8 matmul peaks with sessions opened by `session`.
pub fn measure(session: &SessionOptions, opts: &PeakOptions) -> Result<Peak, PeakError> {
    let n = opts.n;
    if n == 0 {
        return Err(PeakError::Size(n));
    }
    let w: Vec<f32> = pattern(n * n, 1).collect();
    let wq: Vec<i8> = w.iter().map(|v| (v * 127.0).round() as i8).collect();
    // Tensors need the library loaded; open_graph would load it only later.
    super::session::environment(session.ort_lib.as_deref())?;
    let input = ndarray::Array2::from_shape_vec((n, n), pattern(n * n, 2).collect()).expect("n×n values");
    let x = ort::value::Tensor::from_array(input)
        .map_err(|e| SessionError::Run { graph: "peak input".into(), reason: e.to_string() })?;
    let ops = 2.0 * (n as f64).powi(3);

    let mut fp32 = open_graph("peak_fp32", &fp32_graph(n, &w), session)?;
    let fp32_s = best_pass(&mut fp32, &x, opts)?;
    let provider = fp32.provider;
    drop(fp32);
    let mut int8 = open_graph("peak_int8", &int8_graph(n, &wq, 1.0 / 127.0, 128), session)?;
    let int8_s = best_pass(&mut int8, &x, opts)?;

    let threads = match session.threads {
        0 => std::thread::available_parallelism().map_or(1, |p| p.get()),
        t => t,
    };
    Ok(Peak { fp32_gflops: ops / fp32_s / 1e9, int8_gops: ops / int8_s / 1e9, n, threads, provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(threads: usize) -> SessionOptions {
        SessionOptions { providers: vec![Provider::Cpu], strict: true, threads, ..Default::default() }
    }

    #[test]
    fn int8_graph_matches_integer_product() {
        let n = 4;
        // Integers with scale 1 quantize exactly: q = x + zp, and MatMulInteger subtracts zp.
        let x: Vec<f32> = (0..16).map(|i| ((i * 7) % 23) as f32 - 5.0).collect();
        let w: Vec<i8> = (0..16).map(|i| ((i * 37) % 255 - 127) as i8).collect();
        let mut g = open_graph("int8", &int8_graph(n, &w, 1.0, 5), &cpu(1)).unwrap();
        let y: ndarray::ArrayD<i32> = g.run_one(ndarray::ArrayD::from_shape_vec(vec![n, n], x.clone()).unwrap()).unwrap();
        for i in 0..n {
            for j in 0..n {
                let want: i32 = (0..n).map(|k| x[i * n + k] as i32 * w[k * n + j] as i32).sum();
                assert_eq!(y[[i, j]], want, "y[{i},{j}]");
            }
        }
        // The float graph computes the same product.
        let wf: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let mut g = open_graph("fp32", &fp32_graph(n, &wf), &cpu(1)).unwrap();
        let yf: ndarray::ArrayD<f32> = g.run_one(ndarray::ArrayD::from_shape_vec(vec![n, n], x).unwrap()).unwrap();
        assert_eq!(yf.mapv(|v| v as i32), y);
    }

    #[test]
    fn cost_model_counts_2n3() {
        let n = 8;
        let c = crate::onnx::flops::count(&fp32_graph(n, &[0.0; 64]), 1).unwrap();
        assert_eq!((c.flops(), c.elementwise), (2 * 512, 0));
        let c = crate::onnx::flops::count(&int8_graph(n, &[0; 64], 1.0, 0), 1).unwrap();
        assert_eq!((c.by_op["MatMulInteger"].macs, c.by_op["QuantizeLinear"].elementwise), (512, 64));
    }

    #[test]
    fn measures_finite_positive_rates() {
        let opts = PeakOptions { n: 128, min_time: Duration::from_millis(50), warmup: 1 };
        let p = measure(&cpu(1), &opts).unwrap();
        eprintln!("peak n={} threads={}: fp32 {:.1} GFLOP/s, int8 {:.1} GOP/s", p.n, p.threads, p.fp32_gflops, p.int8_gops);
        assert!(p.fp32_gflops.is_finite() && p.fp32_gflops > 0.0, "{p:?}");
        assert!(p.int8_gops.is_finite() && p.int8_gops > 0.0, "{p:?}");
        assert_eq!((p.n, p.threads, p.provider), (128, 1, Provider::Cpu));
        assert!(matches!(measure(&cpu(1), &PeakOptions { n: 0, ..opts }), Err(PeakError::Size(0))));
    }

    /// Full-size numbers for reports: `cargo test -p vqad --lib peak_report -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark; seconds of full-core load"]
    fn peak_report() {
        for threads in [1, 2] {
            let p = measure(&cpu(threads), &PeakOptions::default()).unwrap();
            eprintln!("peak n={} threads={}: fp32 {:.1} GFLOP/s, int8 {:.1} GOP/s", p.n, p.threads, p.fp32_gflops, p.int8_gops);
        }
    }
}
