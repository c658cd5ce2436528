//! The networks as trained: causality, quantisation, gradients, eq. 3, checkpoints.
#![cfg(feature = "train")]

use tch::{nn, Device, Kind, Tensor};
use vqad::config::Config;
use vqad_train::nn::vqvae::eq3_loss;
use vqad_train::nn::{PixelSnail, VqVae};

fn tiny() -> Config {
    Config::tiny()
}

/// Raster index of the first position whose value differs by more than `tol`, if any.
fn first_change(a: &Tensor, b: &Tensor, tol: f64) -> Option<i64> {
    // [K, M, N] -> max |Δ| per position, in raster order.
    let d = (a - b).abs().amax([0i64].as_slice(), false).flatten(0, -1);
    let v = Vec::<f32>::try_from(&d).unwrap();
    v.iter().position(|&x| x as f64 > tol).map(|p| p as i64)
}

#[test]
fn pixelsnail_is_exactly_causal() {
    tch::manual_seed(1);
    let cfg = tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let g = cfg.model.grid();
    let prior = PixelSnail::new(&vs.root(), &cfg.prior, cfg.model.num_codes, g);
    let z = Tensor::randint(cfg.model.num_codes, [1, g, g], (Kind::Int64, Device::Cpu));
    let base = prior.log_probs(&z).get(0);
    for &pos in &[0i64, 1, g - 1, g, g * g / 2 + 3, g * g - 2, g * g - 1] {
        let z2 = z.copy();
        let (m, n) = (pos / g, pos % g);
        let old = z.int64_value(&[0, m, n]);
        let _ = z2.get(0).get(m).get(n).fill_((old + 1) % cfg.model.num_codes);
        let out = prior.log_probs(&z2).get(0);
        let changed = first_change(&base, &out, 0.0);
        // No output at or before the changed position may move...
        if let Some(c) = changed {
            assert!(c > pos, "changing position {pos} changed the output at {c}");
        }
        // ...and the change must reach some later position (so the test can fail).
        if pos < g * g - 1 {
            assert!(changed.is_some(), "changing position {pos} changed nothing after it");
        }
    }
}

#[test]
fn quantisation_picks_the_nearest_code() {
    tch::manual_seed(2);
    let cfg = tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let vq = VqVae::new(&vs.root(), &cfg.model);
    let (d, k) = (cfg.model.code_dim, cfg.model.num_codes);
    let z_e = Tensor::randn([3, d, 5, 4], (Kind::Float, Device::Cpu));
    let got = vq.nearest(&z_e);
    assert_eq!(got.size(), vec![3, 5, 4]);
    // Brute force: full squared distances in double precision.
    let z = z_e.permute([0, 2, 3, 1]).reshape([-1, d]).to_kind(Kind::Double);
    let e = vq.codebook.detach().to_kind(Kind::Double);
    let dist = (z.unsqueeze(1) - e.unsqueeze(0)).square().sum_dim_intlist([2i64].as_slice(), false, Kind::Double);
    let want = dist.argmin(1, false);
    let got = got.flatten(0, -1);
    let n = got.size()[0];
    let mut mismatches = 0;
    for i in 0..n {
        let (a, b) = (got.int64_value(&[i]), want.int64_value(&[i]));
        if a != b {
            let (da, db) = (dist.double_value(&[i, a]), dist.double_value(&[i, b]));
            assert!((da - db).abs() < 1e-4 * (1.0 + db), "position {i}: picked {a} ({da}) but {b} is nearer ({db})");
            mismatches += 1;
        }
    }
    assert!(mismatches <= 1, "{mismatches} near-ties out of {n} is implausible");
    assert!(k > 1);
}

#[test]
fn straight_through_gradient_reaches_the_encoder() {
    tch::manual_seed(3);
    let cfg = tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let vq = VqVae::new(&vs.root(), &cfg.model);
    let s = cfg.model.image_size;
    let x = Tensor::rand([2, 3, s, s], (Kind::Float, Device::Cpu));
    let out = vq.forward_train(&x, 0.25);
    out.rec_loss.backward();
    let vars = vs.variables();
    let enc_grad = vars["enc.down0.weight"].grad();
    assert!(enc_grad.defined() && enc_grad.abs().sum(Kind::Double).double_value(&[]) > 0.0, "no reconstruction gradient in the encoder");
    // The reconstruction term reaches the codebook only through eq. 3's second term.
    let cb = vars["codebook"].grad();
    assert!(!cb.defined() || cb.abs().sum(Kind::Double).double_value(&[]) == 0.0, "reconstruction loss leaked into the codebook");
}

#[test]
fn eq3_matches_a_hand_computation() {
    let x = Tensor::from_slice(&[0.0f32, 1.0, 0.5, 0.25]);
    let recon = Tensor::from_slice(&[0.5f32, 1.0, 0.0, 0.25]);
    let z_e = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
    let z_q = Tensor::from_slice(&[0.0f32, 4.0]).set_requires_grad(true);
    let (total, rec, cb, commit) = eq3_loss(&x, &recon, &z_e, &z_q, 0.25);
    // rec = (0.25 + 0 + 0.25 + 0) / 4; cb = commit = (1 + 4) / 2; total = rec + cb + 0.25·commit.
    assert!((rec.double_value(&[]) - 0.125).abs() < 1e-7);
    assert!((cb.double_value(&[]) - 2.5).abs() < 1e-7);
    assert!((commit.double_value(&[]) - 2.5).abs() < 1e-7);
    assert!((total.double_value(&[]) - (0.125 + 2.5 + 0.625)).abs() < 1e-6);
    // sg[·]: the codebook term moves only z_q, the commitment term only z_e (scaled by β).
    total.backward();
    let ge = Vec::<f32>::try_from(z_e.grad()).unwrap();
    let gq = Vec::<f32>::try_from(z_q.grad()).unwrap();
    // d/dz_e of 0.25·mean((z_e − z_q)²) = 0.25·2(z_e − z_q)/2.
    assert!((ge[0] - 0.25).abs() < 1e-6 && (ge[1] + 0.5).abs() < 1e-6, "{ge:?}");
    // d/dz_q of mean((z_q − z_e)²) = (z_q − z_e).
    assert!((gq[0] + 1.0).abs() < 1e-6 && (gq[1] - 2.0).abs() < 1e-6, "{gq:?}");
}

#[test]
fn checkpoints_round_trip() {
    tch::manual_seed(4);
    let cfg = tiny();
    let dir = tempfile::tempdir().unwrap();
    let rd = vqad_train::train::run::RunDir::new(dir.path());
    let (vs, vq) = vqad_train::train::new_vqvae(&cfg, Device::Cpu);
    let (pvs, prior) = vqad_train::train::new_prior(&cfg, Device::Cpu);
    rd.save_weights("vqvae", &vs).unwrap();
    rd.save_weights("prior", &pvs).unwrap();
    tch::manual_seed(99);
    let (mut vs2, vq2) = vqad_train::train::new_vqvae(&cfg, Device::Cpu);
    let (mut pvs2, prior2) = vqad_train::train::new_prior(&cfg, Device::Cpu);
    let s = cfg.model.image_size;
    let x = Tensor::rand([2, 3, s, s], (Kind::Float, Device::Cpu));
    assert!(!vq.indices(&x).equal(&vq2.indices(&x)) || !vq.codebook.equal(&vq2.codebook), "fresh models should differ");
    rd.load_weights("vqvae", &mut vs2).unwrap();
    rd.load_weights("prior", &mut pvs2).unwrap();
    assert!(vq.codebook.equal(&vq2.codebook));
    let idx = vq.indices(&x);
    assert!(idx.equal(&vq2.indices(&x)));
    assert!(tch::no_grad(|| vq.decode_indices(&idx)).equal(&tch::no_grad(|| vq2.decode_indices(&idx))));
    assert!(prior.log_probs(&idx).equal(&prior2.log_probs(&idx)));
    // A corrupted file is an error that names it, not a panic.
    std::fs::write(rd.weights("prior"), b"not safetensors").unwrap();
    let e = rd.load_weights("prior", &mut pvs2).unwrap_err().to_string();
    assert!(e.contains("prior.safetensors"), "{e}");
}

#[test]
fn denoising_training_encodes_the_corrupted_input_and_scores_against_the_clean_target() {
    tch::manual_seed(4);
    let cfg = tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let m = VqVae::new(&vs.root(), &cfg.model);
    let s = cfg.model.image_size;
    let clean = Tensor::rand([2, cfg.model.channels, s, s], (Kind::Float, Device::Cpu));
    let noisy = clean.ones_like() - &clean;
    let plain = m.forward_train(&clean, 0.25);
    let same = m.forward_train_to(&clean, &clean, 0.25);
    assert_eq!(f64::try_from(&plain.loss).unwrap(), f64::try_from(&same.loss).unwrap());
    let dn = m.forward_train_to(&noisy, &clean, 0.25);
    // The codes come from the noisy input; the reconstruction error is measured to the clean one.
    assert!(dn.indices.equal(&m.forward_train(&noisy, 0.25).indices));
    let want = f64::try_from(&dn.recon.mse_loss(&clean, tch::Reduction::Mean)).unwrap();
    assert!((f64::try_from(&dn.rec_loss).unwrap() - want).abs() < 1e-9);
    let to_noisy = f64::try_from(&dn.recon.mse_loss(&noisy, tch::Reduction::Mean)).unwrap();
    assert!((want - to_noisy).abs() > 1e-6, "target ignored");
}
