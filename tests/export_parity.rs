//! The exported graphs compute what the trained networks compute: tch vs ONNX Runtime (CPU),
//! for a tiny and a paper-shaped model, batch 1 and > 1; plus onnx.checker and determinism.
#![cfg(feature = "train")]

mod common;

use ndarray::{ArrayD, IxDyn};
use prost::Message;
use tch::{nn, Device, Kind, Tensor};
use vqad::config::Config;
use vqad_train::nn::{PixelSnail, VqVae};
use vqad::runtime::session::open_graph;

fn to_nd_f32(t: &Tensor) -> ArrayD<f32> {
    let dims: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    ArrayD::from_shape_vec(IxDyn(&dims), Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()).unwrap()
}

fn to_nd_i64(t: &Tensor) -> ArrayD<i64> {
    let dims: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    ArrayD::from_shape_vec(IxDyn(&dims), Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()).unwrap()
}

fn max_abs(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

struct Models {
    cfg: Config,
    _vs: nn::VarStore,
    vq: VqVae,
    prior: PixelSnail,
}

fn models(cfg: Config, seed: i64) -> Models {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let vq = VqVae::new(&(vs.root() / "vq"), &cfg.model);
    let prior = PixelSnail::new(&(vs.root() / "prior"), &cfg.prior, cfg.model.num_codes, cfg.model.grid());
    Models { cfg, _vs: vs, vq, prior }
}

/// Encoder indices equal tch's, except where the two codes are at (float-)equal distance.
fn check_encoder(m: &Models, x: &Tensor) {
    let mut g = open_graph("encoder.onnx", &m.vq.encoder_graph(), &common::cpu_sessions()).unwrap();
    let got: ArrayD<i64> = g.run_one(to_nd_f32(x)).unwrap();
    let z_e = tch::no_grad(|| m.vq.encode(x));
    let want = m.vq.nearest(&z_e);
    assert_eq!(got.shape(), want.size().iter().map(|&d| d as usize).collect::<Vec<_>>().as_slice());
    let want = to_nd_i64(&want);
    let z = z_e.permute([0, 2, 3, 1]).reshape([-1, m.cfg.model.code_dim]).to_kind(Kind::Double);
    let e = m.vq.codebook.detach().to_kind(Kind::Double);
    let dist = (z.unsqueeze(1) - e.unsqueeze(0)).square().sum_dim_intlist([2i64].as_slice(), false, Kind::Double);
    let mut ties = 0;
    for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
        if a != b {
            let (da, db) = (dist.double_value(&[i as i64, *a]), dist.double_value(&[i as i64, *b]));
            assert!((da - db).abs() <= 1e-5 * (1.0 + da.abs()), "position {i}: ORT chose {a} (d={da}), tch {b} (d={db})");
            ties += 1;
        }
    }
    assert!(ties * 100 <= got.len(), "{ties} of {} positions differ", got.len());
}

fn check_decoder(m: &Models, idx: &Tensor) {
    let mut g = open_graph("decoder.onnx", &m.vq.decoder_graph(), &common::cpu_sessions()).unwrap();
    let got: ArrayD<f32> = g.run_one(to_nd_i64(idx)).unwrap();
    let want = to_nd_f32(&tch::no_grad(|| m.vq.decode_indices(idx)));
    let d = max_abs(&got, &want);
    assert!(d <= 1e-4, "decoder max |Δ| = {d}");
}

fn check_prior(m: &Models, idx: &Tensor) -> ArrayD<f32> {
    let mut g = open_graph("pixelsnail.onnx", &m.prior.graph(), &common::cpu_sessions()).unwrap();
    let got: ArrayD<f32> = g.run_one(to_nd_i64(idx)).unwrap();
    let want = to_nd_f32(&m.prior.log_probs(idx));
    let d = max_abs(&got, &want);
    assert!(d <= 1e-4, "pixelsnail max |Δ| = {d}");
    got
}

fn parity(cfg: Config, batches: &[i64]) {
    let m = models(cfg, 7);
    let (s, c, g, k) = (m.cfg.model.image_size, m.cfg.model.channels, m.cfg.model.grid(), m.cfg.model.num_codes);
    for &b in batches {
        let x = Tensor::rand([b, c, s, s], (Kind::Float, Device::Cpu));
        check_encoder(&m, &x);
        let idx = Tensor::randint(k, [b, g, g], (Kind::Int64, Device::Cpu));
        check_decoder(&m, &idx);
        check_prior(&m, &idx);
        // The encoder's own tables too (what the detector decodes).
        let own = m.vq.indices(&x);
        check_decoder(&m, &own);
        check_prior(&m, &own);
    }
}

#[test]
fn tiny_model_parity_batch_1_and_4() {
    parity(Config::tiny(), &[1, 4]);
}

#[test]
fn paper_shaped_model_parity_batch_1_and_2() {
    parity(Config::paper(), &[1, 2]);
}

#[test]
fn exported_pixelsnail_is_causal_under_onnx_runtime() {
    let m = models(Config::tiny(), 11);
    let (g, k) = (m.cfg.model.grid(), m.cfg.model.num_codes);
    let mut sess = open_graph("pixelsnail.onnx", &m.prior.graph(), &common::cpu_sessions()).unwrap();
    let z = Tensor::randint(k, [1, g, g], (Kind::Int64, Device::Cpu));
    let base: ArrayD<f32> = sess.run_one(to_nd_i64(&z)).unwrap();
    for &pos in &[0i64, g - 1, g + 2, g * g / 2, g * g - 2] {
        let z2 = z.copy();
        let (mm, nn_) = (pos / g, pos % g);
        let _ = z2.get(0).get(mm).get(nn_).fill_((z.int64_value(&[0, mm, nn_]) + 1) % k);
        let out: ArrayD<f32> = sess.run_one(to_nd_i64(&z2)).unwrap();
        let mut later_changed = false;
        for q in 0..g * g {
            let (qm, qn) = ((q / g) as usize, (q % g) as usize);
            let delta = (0..k as usize).map(|kk| (base[[0, kk, qm, qn]] - out[[0, kk, qm, qn]]).abs()).fold(0.0, f32::max);
            if q <= pos {
                assert!(delta == 0.0, "changing position {pos} moved the output at {q} by {delta}");
            } else if delta > 1e-4 {
                later_changed = true;
            }
        }
        assert!(later_changed, "changing position {pos} changed nothing after it");
    }
}

#[test]
fn graphs_pass_the_onnx_checker_and_are_deterministic() {
    let m = models(Config::tiny(), 5);
    let dir = tempfile::tempdir().unwrap();
    let graphs = [("encoder.onnx", m.vq.encoder_graph()), ("decoder.onnx", m.vq.decoder_graph()), ("pixelsnail.onnx", m.prior.graph())];
    let mut paths = vec![];
    for (name, bytes) in &graphs {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        paths.push(p.display().to_string());
    }
    let out = common::run_python(
        "import sys, onnx\nfor p in sys.argv[1:]:\n    onnx.checker.check_model(onnx.load(p), full_check=True)\n    print('ok', p)",
        &paths.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), 3, "{out}");
    // Same weights → same bytes.
    assert_eq!(graphs[0].1, m.vq.encoder_graph());
    assert_eq!(graphs[1].1, m.vq.decoder_graph());
    assert_eq!(graphs[2].1, m.prior.graph());
    // A corrupted graph is rejected by the checker too (so the check can fail).
    let mut bad = graphs[0].1.clone();
    let mid = bad.len() / 2;
    bad.truncate(mid);
    let p = dir.path().join("bad.onnx");
    std::fs::write(&p, &bad).unwrap();
    let status = std::process::Command::new(common::python())
        .args(["-c", "import sys, onnx; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)", &p.display().to_string()])
        .output()
        .unwrap();
    assert!(!status.status.success());
}

#[test]
fn codebook_npy_equals_the_decoder_codebook() {
    let m = models(Config::tiny(), 6);
    let npy = vqad_train::nn::layers::codebook_npy(&m.vq.codebook);
    let arr: ndarray::Array2<f32> = ndarray_npy::ReadNpyExt::read_npy(npy.as_slice()).unwrap();
    let model = vqad::onnx::proto::ModelProto::decode(m.vq.decoder_graph().as_slice()).unwrap();
    let graph = model.graph.unwrap();
    let gather = graph.node.iter().find(|n| n.op_type.as_deref() == Some("Gather")).expect("decoder looks codes up with Gather");
    let init = graph.initializer.iter().find(|t| t.name.as_deref() == Some(gather.input[0].as_str())).expect("codebook initializer");
    assert_eq!(init.dims, vec![m.cfg.model.num_codes, m.cfg.model.code_dim]);
    let raw = init.raw_data.as_ref().unwrap();
    let vals: Vec<f32> = raw.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(arr.shape(), &[m.cfg.model.num_codes as usize, m.cfg.model.code_dim as usize]);
    assert_eq!(arr.iter().copied().collect::<Vec<_>>(), vals);
}
