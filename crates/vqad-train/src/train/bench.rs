//! `vqad bench-train`: images per second of each training stage, for a preset and device.

use super::{new_prior, new_vqvae, TrainError};
use vqad::config::Config;
use std::time::Instant;
use tch::{nn::OptimizerConfig, Device, Kind, Tensor};

/// Throughput of a few optimiser steps on random data.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainBench {
    pub preset: String,
    pub device: String,
    pub vqvae_batch: i64,
    pub vqvae_images_per_s: f64,
    pub prior_batch: i64,
    pub prior_tables_per_s: f64,
    pub steps: usize,
}

/// Runs `steps` timed steps (after one warm-up step) of each stage.
pub fn bench_train(cfg: &Config, dev: Device, steps: usize, batch_cap: i64) -> Result<TrainBench, TrainError> {
    let m = &cfg.model;
    let vb = cfg.train.vqvae_batch.min(batch_cap).max(1);
    let pbatch = cfg.train.prior_batch.min(batch_cap).max(1);
    tch::manual_seed(0);
    let (vs, vq) = new_vqvae(cfg, dev);
    let mut opt = tch::nn::Adam::default().build(&vs, cfg.train.lr).map_err(|e| TrainError::Torch(e.to_string()))?;
    let x = Tensor::rand([vb, m.channels, m.image_size, m.image_size], (Kind::Float, dev));
    let mut timed = |steps: usize| {
        for _ in 0..steps {
            let out = vq.forward_train(&x, cfg.train.beta);
            opt.backward_step(&out.loss);
        }
        if let Device::Cuda(_) = dev {
            tch::Cuda::synchronize(0);
        }
    };
    timed(1);
    let t0 = Instant::now();
    timed(steps);
    let vq_rate = (steps as i64 * vb) as f64 / t0.elapsed().as_secs_f64();

    let (pvs, prior) = new_prior(cfg, dev);
    let mut popt = tch::nn::Adam::default().build(&pvs, cfg.train.lr).map_err(|e| TrainError::Torch(e.to_string()))?;
    let g = m.grid();
    let z = Tensor::randint(m.num_codes, [pbatch, g, g], (Kind::Int64, dev));
    let mut ptimed = |steps: usize| {
        for _ in 0..steps {
            let loss = prior.loss(&z, true);
            popt.backward_step(&loss);
        }
        if let Device::Cuda(_) = dev {
            tch::Cuda::synchronize(0);
        }
    };
    ptimed(1);
    let t1 = Instant::now();
    ptimed(steps);
    let p_rate = (steps as i64 * pbatch) as f64 / t1.elapsed().as_secs_f64();
    Ok(TrainBench {
        preset: cfg.preset.clone(),
        device: super::device::device_name(dev),
        vqvae_batch: vb,
        vqvae_images_per_s: vq_rate,
        prior_batch: pbatch,
        prior_tables_per_s: p_rate,
        steps,
    })
}
