//! Training both stages on libtorch: the VQ-VAE on normal images, then PixelSNAIL on the index
//! tables the trained VQ-VAE gives them. Checkpoints every epoch; `resume` picks up after the
//! last complete one.

pub mod bench;
pub mod device;
pub mod run;

use vqad::config::{CategoryKind, Config};
use vqad::data::{self, Augmenter, Category};
use crate::nn::{PixelSnail, VqVae};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array3;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use run::{RunDir, RunInfo, StageState};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

/// Training failures, each naming what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Config(#[from] vqad::config::ConfigError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: unreadable or inconsistent: {1}")]
    Corrupt(String, String),
    #[error("{0}: missing (train that stage first)")]
    Missing(String),
    #[error("device: {0}")]
    Device(String),
    #[error("libtorch: {0}")]
    Torch(String),
    #[error("{0}")]
    Refused(String),
}

pub use vqad::config::Stage;

/// Everything `vqad train` takes.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub category_dir: PathBuf,
    pub out: PathBuf,
    pub config: Config,
    pub stage: Stage,
    pub device: String,
    pub seed: u64,
    pub resume: bool,
    /// Show progress bars (they hide themselves anyway when stderr is not a terminal).
    pub progress: bool,
}

/// Final figures of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub vqvae: StageState,
    pub prior: StageState,
}

/// The data of one category as tensors, split into train and validation.
pub struct Dataset {
    pub name: String,
    pub kind: CategoryKind,
    pub train: Vec<Array3<f32>>,
    pub val: Vec<Array3<f32>>,
    pub digest: String,
    pub train_files: Vec<PathBuf>,
    /// The category folder, and the validation images within it.
    pub root: PathBuf,
    pub val_files: Vec<PathBuf>,
}

/// Loads train/good of a category: deterministic validation split, images at model size.
/// Unreadable files are reported and skipped; none left is an error.
pub fn load_dataset(dir: &Path, cfg: &Config) -> Result<Dataset, TrainError> {
    let cat = Category::open_train_only(dir)?;
    let kind = cat.kind(cfg.kind);
    let (train_p, val_p) = data::split_validation(&cat.train_good, cfg.train.val_fraction);
    let (c, s) = (cfg.model.channels as usize, cfg.model.image_size as usize);
    let (train, bad_t) = data::load_many(&train_p, c, s);
    let (val, bad_v) = data::load_many(&val_p, c, s);
    for (p, e) in bad_t.iter().chain(bad_v.iter()) {
        tracing::warn!("skipping {}: {e}", p.display());
        eprintln!("warning: skipping {}: {e}", p.display());
    }
    if train.is_empty() {
        return Err(TrainError::Refused(format!("{}: no readable training images", dir.display())));
    }
    let digest = data::dataset_digest(&cat.root, &cat.train_good)?;
    Ok(Dataset {
        name: cat.name.clone(),
        kind,
        train: train.into_iter().map(|(_, a)| a).collect(),
        val: val.into_iter().map(|(_, a)| a).collect(),
        digest,
        train_files: cat.train_good.clone(),
        root: cat.root.clone(),
        val_files: val_p,
    })
}

/// Stacks [C, H, W] arrays into a [B, C, H, W] tensor on `dev`.
pub fn stack(images: &[&Array3<f32>], dev: Device) -> Tensor {
    let (c, h, w) = images[0].dim();
    let mut flat = Vec::with_capacity(images.len() * c * h * w);
    for a in images {
        flat.extend(a.iter().copied());
    }
    Tensor::from_slice(&flat).view([images.len() as i64, c as i64, h as i64, w as i64]).to_device(dev)
}

fn progress(total: u64, show: bool, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>7} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

fn f(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// Validation figures of the VQ-VAE: reconstruction MSE, the same as a share of the images' own
/// variance (a blurred texture leaves most of its variance in the residual, and a residual map
/// cannot tell a defect from that; see DESIGN.md), codebook usage and perplexity.
pub fn vqvae_metrics(model: &VqVae, images: &[Array3<f32>], dev: Device, batch: usize) -> serde_json::Map<String, serde_json::Value> {
    let k = model.cfg.num_codes;
    let mut counts = Tensor::zeros([k], (Kind::Int64, dev));
    let (mut se, mut n, mut var_sum) = (0.0, 0usize, 0.0);
    tch::no_grad(|| {
        for chunk in images.chunks(batch.max(1)) {
            let refs: Vec<&Array3<f32>> = chunk.iter().collect();
            let x = stack(&refs, dev);
            let idx = model.nearest(&model.encode(&x));
            let rec = model.decode_indices(&idx);
            se += f(&(&rec - &x).square().sum(Kind::Double));
            n += x.numel();
            // Each image's variance over its pixels and channels, summed over the batch.
            var_sum += f(&x.flatten(1, -1).var_dim([1i64].as_slice(), false, false).sum(Kind::Double));
            counts += idx.flatten(0, -1).bincount::<Tensor>(None, k);
        }
    });
    let total = f(&counts.sum(Kind::Double)).max(1.0);
    let p = counts.to_kind(Kind::Double) / total;
    let entropy = -f(&(&p * (&p + 1e-12).log()).sum(Kind::Double));
    let used = f(&counts.gt(0).sum(Kind::Int64));
    let mut m = serde_json::Map::new();
    let mse = if n > 0 { se / n as f64 } else { f64::NAN };
    let variance = if images.is_empty() { f64::NAN } else { var_sum / images.len() as f64 };
    m.insert("val_recon_mse".into(), json!(mse));
    m.insert("val_image_variance".into(), json!(variance));
    m.insert("val_recon_ratio".into(), json!(mse / variance));
    m.insert("codebook_used".into(), json!(used as i64));
    m.insert("codebook_usage".into(), json!(used / k as f64));
    m.insert("perplexity".into(), json!(entropy.exp()));
    m
}

/// Index tables of images, [B, M, N] on the CPU.
pub fn tables(model: &VqVae, images: &[Array3<f32>], dev: Device, batch: usize) -> Tensor {
    let parts: Vec<Tensor> = images
        .chunks(batch.max(1))
        .map(|chunk| {
            let refs: Vec<&Array3<f32>> = chunk.iter().collect();
            model.indices(&stack(&refs, dev)).to_device(Device::Cpu)
        })
        .collect();
    Tensor::cat(&parts, 0)
}

/// Mean validation NLL (nats per position) of the prior on index tables.
pub fn prior_nll(prior: &PixelSnail, tables: &Tensor, dev: Device, batch: i64) -> f64 {
    let n = tables.size()[0];
    if n == 0 {
        return f64::NAN;
    }
    let mut total = 0.0;
    tch::no_grad(|| {
        let mut i = 0;
        while i < n {
            let len = batch.min(n - i);
            let t = tables.narrow(0, i, len).to_device(dev);
            total += f(&prior.loss(&t, false)) * len as f64;
            i += len;
        }
    });
    total / n as f64
}

fn seeded(seed: u64, epoch: i64, salt: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt)
}

/// Trains the requested stages into `opts.out`.
pub fn train(opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let rd = RunDir::new(&opts.out);
    let dev = device::select_device(&opts.device)?;
    opts.config.validate()?;
    // Read the data before touching the run folder, so a wrong path leaves nothing behind;
    // a run being continued is read with the config it was started with.
    let data_cfg = if rd.config_path().exists() { rd.config()? } else { opts.config.clone() };
    let ds = load_dataset(&opts.category_dir, &data_cfg)?;
    prepare_run_dir(opts, &rd)?;
    let cfg = rd.config()?;
    let source = vqad::source::source_state();
    if let Some(note) = &source.note {
        eprintln!("note: the run records {}: {note}", if source.commit.is_some() { "the declared commit" } else { "no source commit" });
    }
    let info = RunInfo {
        category: ds.name.clone(),
        category_dir: opts.category_dir.display().to_string(),
        seed: opts.seed,
        dataset_digest: ds.digest.clone(),
        train_images: ds.train.len(),
        val_images: ds.val.len(),
        vqad_version: vqad::VERSION.into(),
        git_commit: source.commit.clone().unwrap_or_default(),
        source_clean: source.clean,
        rustc: vqad::RUSTC_VERSION.into(),
        tch_version: "0.26".into(),
        libtorch_version: env!("VQAD_LIBTORCH_VERSION").into(),
        device: device::device_name(dev),
        dataset_dir_hash: Some(data::dir_hash(&ds.root, &[vqad::provenance::build::TRAIN_PATH])?),
        validation_files: Some(ds.val_files.iter().map(|p| p.strip_prefix(&ds.root).unwrap_or(p).to_string_lossy().replace('\\', "/")).collect()),
        kind: serde_json::to_value(ds.kind).ok().and_then(|v| v.as_str().map(str::to_string)),
        run_id: Some(vqad::provenance::builder::random_id()),
        started: Some(vqad::package::manifest::format_rfc3339(time::OffsetDateTime::now_utc().unix_timestamp()).map_err(|e| TrainError::Refused(e.to_string()))?),
        platform: Some(platform(dev)?),
    };
    let mut info = info;
    if let Ok(old) = rd.info() {
        // A continued run started when it first started, on the platform it started on.
        if old.started.is_some() {
            (info.started, info.platform) = (old.started.clone(), old.platform.clone().or(info.platform));
            info.run_id = old.run_id.clone().or(info.run_id);
        }
    }
    if opts.resume {
        if let Ok(old) = rd.info() {
            if old.dataset_digest != info.dataset_digest {
                return Err(TrainError::Refused(format!(
                    "{}: --resume with different training data (digest {} was {})",
                    opts.out.display(),
                    info.dataset_digest,
                    old.dataset_digest
                )));
            }
        }
    }
    rd.save_info(&info)?;
    eprintln!(
        "training '{}' ({:?}): {} train / {} val images, preset {}, device {}, run {}",
        ds.name, ds.kind, info.train_images, info.val_images, cfg.preset, info.device, opts.out.display()
    );
    if matches!(opts.stage, Stage::VqVae | Stage::All) {
        train_vqvae(&rd, &cfg, &ds, dev, opts.seed, opts.progress)?;
    }
    if matches!(opts.stage, Stage::Prior | Stage::All) {
        train_prior(&rd, &cfg, &ds, dev, opts.seed, opts.progress)?;
    }
    Ok(TrainSummary { run_dir: opts.out.clone(), vqvae: rd.state("vqvae")?, prior: rd.state("prior")? })
}

/// The settings of this process that decide whether training is bit-reproducible (recorded in
/// the run, then in the package's provenance; `vqad audit --rebuild` trains with them).
pub fn platform(dev: Device) -> Result<vqad::provenance::build::InternalParameters, TrainError> {
    let backends = [("openmp", tch::utils::has_openmp()), ("mkl", tch::utils::has_mkl()), ("mkldnn", tch::utils::has_mkldnn())]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| n.to_string())
        .collect();
    Ok(vqad::provenance::build::InternalParameters {
        device: device::device_name(dev),
        torch_threads: tch::utils::get_num_threads() as i64,
        torch_interop_threads: tch::utils::get_num_interop_threads() as i64,
        backends,
        environment: vqad::provenance::build::determinism_environment(),
        cpu: vqad::provenance::build::cpu_model(),
        training_builder: Some(vqad::provenance::builder::Builder::from_env().map_err(|e| TrainError::Refused(e.to_string()))?.id),
    })
}

/// Creates the run folder, or checks that resuming/continuing uses the same config.
fn prepare_run_dir(opts: &TrainOptions, rd: &RunDir) -> Result<(), TrainError> {
    opts.config.validate()?;
    let exists = rd.config_path().exists();
    if exists {
        let old = rd.config()?;
        let continuing = opts.resume || opts.stage == Stage::Prior;
        if !continuing {
            return Err(TrainError::Refused(format!(
                "{} already holds a run; pass --resume to continue it, or choose another --out",
                opts.out.display()
            )));
        }
        if old != opts.config && opts.resume {
            return Err(TrainError::Refused(format!(
                "{}: --resume with a different config than the run was started with (see its config.json)",
                opts.out.display()
            )));
        }
        return Ok(());
    }
    if opts.out.exists() && std::fs::read_dir(&opts.out).map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Err(TrainError::Refused(format!("{} exists and is not a vqad run folder; refusing to write into it", opts.out.display())));
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| TrainError::Io(opts.out.display().to_string(), e))?;
    rd.save_config(&opts.config)
}

/// Builds the VQ-VAE for a config on a device, with a fresh VarStore.
pub fn new_vqvae(cfg: &Config, dev: Device) -> (nn::VarStore, VqVae) {
    let vs = nn::VarStore::new(dev);
    let m = VqVae::new(&vs.root(), &cfg.model);
    (vs, m)
}

/// Builds PixelSNAIL for a config on a device, with a fresh VarStore.
pub fn new_prior(cfg: &Config, dev: Device) -> (nn::VarStore, PixelSnail) {
    let vs = nn::VarStore::new(dev);
    let m = PixelSnail::new(&vs.root(), &cfg.prior, cfg.model.num_codes, cfg.model.grid());
    (vs, m)
}

/// Weight of the decoder-logit bound's penalty (`TrainConfig::vqvae_logit_bound`).
const LOGIT_PENALTY: f64 = 0.01;

/// Starts the codebook on the untrained encoder's own outputs (random vectors of up to 64
/// training images, plus a little noise), as the dead-code restarts do later, instead of the
/// paper's N(0, 1): with N(0, 1) codes far from every encoder output, the first epochs are
/// spent pulling the two together (the `small` VQ-VAE's first-epoch loss on the Hubble field:
/// 2.2, against 0.49 started this way).
fn init_codebook(model: &VqVae, ds: &Dataset, dev: Device, seed: u64) {
    let take: Vec<&Array3<f32>> = ds.train.iter().take(64).collect();
    if take.is_empty() {
        return;
    }
    tch::no_grad(|| {
        tch::manual_seed(seed as i64 ^ 0x5eed);
        let z = model.encode(&stack(&take, dev)).permute([0, 2, 3, 1]).reshape([-1, model.cfg.code_dim]);
        let pick = Tensor::randint(z.size()[0], [model.cfg.num_codes], (Kind::Int64, dev));
        let fresh = z.index_select(0, &pick) + Tensor::randn([model.cfg.num_codes, model.cfg.code_dim], (Kind::Float, dev)) * 0.01;
        let mut cb = model.codebook.shallow_clone();
        cb.copy_(&fresh);
    });
}

fn train_vqvae(rd: &RunDir, cfg: &Config, ds: &Dataset, dev: Device, seed: u64, show: bool) -> Result<(), TrainError> {
    let t = &cfg.train;
    tch::manual_seed(seed as i64);
    let (mut vs, model) = new_vqvae(cfg, dev);
    let mut state = rd.state("vqvae")?;
    if state.epochs_done > 0 {
        rd.load_weights("vqvae", &mut vs)?;
        eprintln!("vqvae: resuming after epoch {}/{}", state.epochs_done, t.vqvae_epochs);
    } else {
        init_codebook(&model, ds, dev, seed);
        state.initial = vqvae_metrics(&model, &ds.val, dev, 16);
    }
    state.epochs_total = t.vqvae_epochs;
    if state.complete() {
        eprintln!("vqvae: already trained ({} epochs)", state.epochs_done);
        return Ok(());
    }
    let mut opt = nn::Adam::default().build(&vs, t.lr).map_err(|e| TrainError::Torch(e.to_string()))?;
    let n = ds.train.len();
    let batch = (t.vqvae_batch as usize).clamp(1, n);
    let mut steps = n.div_ceil(batch);
    if t.max_steps_per_epoch > 0 {
        steps = steps.min(t.max_steps_per_epoch as usize);
    }
    let remaining = (t.vqvae_epochs - state.epochs_done) as u64;
    let pb = progress(remaining * steps as u64, show, "vqvae");
    let k = cfg.model.num_codes;
    for epoch in state.epochs_done..t.vqvae_epochs {
        let start = Instant::now();
        opt.set_lr(t.lr_schedule.at(t.lr, epoch as f64 / t.vqvae_epochs.max(1) as f64));
        tch::manual_seed(seed as i64 + epoch);
        let mut rng = seeded(seed, epoch, 1);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut aug = Augmenter::new(ds.kind, &ds.name, rand::Rng::random(&mut rng));
        let mut counts = Tensor::zeros([k], (Kind::Int64, dev));
        let mut last_z: Option<Tensor> = None;
        let (mut sum_loss, mut sum_rec, mut seen) = (0.0, 0.0, 0usize);
        for s in 0..steps {
            let ids: Vec<usize> = order.iter().cycle().skip(s * batch).take(batch).copied().collect();
            let imgs: Vec<Array3<f32>> = ids.iter().map(|&i| if t.augment { aug.apply(&ds.train[i], None).0 } else { ds.train[i].clone() }).collect();
            let refs: Vec<&Array3<f32>> = imgs.iter().collect();
            let x = stack(&refs, dev);
            let out = if t.denoise_fraction > 0.0 {
                // Corrupt some inputs; the loss still targets the clean images.
                let noisy: Vec<Array3<f32>> = imgs
                    .iter()
                    .map(|im| {
                        if rand::Rng::random_bool(&mut rng, t.denoise_fraction) {
                            let donor = &imgs[rand::Rng::random_range(&mut rng, 0..imgs.len())];
                            vqad::data::paste_blob(im, donor, &mut rng)
                        } else {
                            im.clone()
                        }
                    })
                    .collect();
                let nrefs: Vec<&Array3<f32>> = noisy.iter().collect();
                model.forward_train_to(&stack(&nrefs, dev), &x, t.beta)
            } else {
                model.forward_train(&x, t.beta)
            };
            if t.vqvae_logit_bound > 0.0 {
                let excess = (out.logits.abs() - t.vqvae_logit_bound).relu().square().mean(Kind::Float);
                opt.backward_step(&(&out.loss + excess * LOGIT_PENALTY));
            } else {
                opt.backward_step(&out.loss);
            }
            counts += out.indices.flatten(0, -1).bincount::<Tensor>(None, k);
            sum_loss += f(&out.loss) * ids.len() as f64;
            sum_rec += f(&out.rec_loss) * ids.len() as f64;
            seen += ids.len();
            last_z = Some(out.z_e_flat);
            pb.set_message(format!("epoch {}/{} loss {:.4}", epoch + 1, t.vqvae_epochs, sum_loss / seen as f64));
            pb.inc(1);
        }
        // Codebook collapse: codes (almost) never chosen this epoch move onto random encoder
        // outputs of the last batch, as in common VQ-VAE trainers (e.g. Jukebox's restarts).
        let mut reseeded = 0i64;
        if t.dead_code_fraction > 0.0 {
            if let Some(z) = &last_z {
                let total = f(&counts.sum(Kind::Double));
                let dead = counts.to_kind(Kind::Double).lt(t.dead_code_fraction * total).nonzero().flatten(0, -1);
                reseeded = dead.size()[0];
                if reseeded > 0 {
                    let pick = Tensor::randint(z.size()[0], [reseeded], (Kind::Int64, dev));
                    let noise = Tensor::randn([reseeded, cfg.model.code_dim], (Kind::Float, dev)) * 0.01;
                    let fresh = z.index_select(0, &pick) + noise;
                    tch::no_grad(|| {
                        let mut cb = model.codebook.shallow_clone();
                        let _ = cb.index_copy_(0, &dead, &fresh);
                    });
                }
            }
        }
        let mut m = vqvae_metrics(&model, if ds.val.is_empty() { &ds.train } else { &ds.val }, dev, 16);
        m.insert("train_loss".into(), json!(sum_loss / seen as f64));
        m.insert("train_recon_mse".into(), json!(sum_rec / seen as f64));
        m.insert("reseeded_codes".into(), json!(reseeded));
        let secs = start.elapsed().as_secs_f64();
        m.insert("seconds".into(), json!(secs));
        m.insert("images_per_s".into(), json!(seen as f64 / secs));
        state.epochs_done = epoch + 1;
        state.metrics = m.clone();
        // Log first: a kill between the two leaves a logged epoch that is re-run (and logged
        // again) on resume, never a completed epoch missing from the log.
        let mut ev = json!({"stage": "vqvae", "epoch": epoch + 1});
        ev.as_object_mut().expect("object").extend(m.clone());
        rd.log(ev)?;
        rd.save_weights("vqvae", &vs)?;
        rd.save_state("vqvae", &state)?;
        pb.suspend(|| {
            eprintln!(
                "vqvae epoch {:>3}/{}: loss {:.4} val mse {:.5} ({:.2} of the variance) codes used {} perplexity {:.1} reseeded {} ({:.1}s)",
                epoch + 1,
                t.vqvae_epochs,
                sum_loss / seen as f64,
                m["val_recon_mse"].as_f64().unwrap_or(f64::NAN),
                m["val_recon_ratio"].as_f64().unwrap_or(f64::NAN),
                m["codebook_used"],
                m["perplexity"].as_f64().unwrap_or(0.0),
                reseeded,
                secs
            )
        });
    }
    pb.finish_and_clear();
    Ok(())
}

/// Loads a trained VQ-VAE from a run folder.
pub fn load_vqvae(rd: &RunDir, cfg: &Config, dev: Device) -> Result<(nn::VarStore, VqVae), TrainError> {
    let (mut vs, m) = new_vqvae(cfg, dev);
    rd.load_weights("vqvae", &mut vs)?;
    Ok((vs, m))
}

/// Loads a trained PixelSNAIL from a run folder.
pub fn load_prior(rd: &RunDir, cfg: &Config, dev: Device) -> Result<(nn::VarStore, PixelSnail), TrainError> {
    let (mut vs, m) = new_prior(cfg, dev);
    rd.load_weights("prior", &mut vs)?;
    Ok((vs, m))
}

fn train_prior(rd: &RunDir, cfg: &Config, ds: &Dataset, dev: Device, seed: u64, show: bool) -> Result<(), TrainError> {
    let t = &cfg.train;
    if !rd.state("vqvae")?.complete() {
        return Err(TrainError::Refused(format!("{}: the VQ-VAE stage is not complete; train it first (--stage vqvae)", rd.root.display())));
    }
    let (_vq_vs, vq) = load_vqvae(rd, cfg, dev)?;
    // The index tables of all normal training images (§3.2), plus augmented copies where the
    // VQ-VAE was trained on augmented data, so the prior sees what the encoder was taught.
    let augmented_tables = |salt: i64| -> Tensor {
        let mut rng = seeded(seed, salt, 2);
        let mut imgs = ds.train.clone();
        if t.augment {
            let mut aug = Augmenter::new(ds.kind, &ds.name, rand::Rng::random(&mut rng));
            for _ in 0..t.prior_augment_copies {
                imgs.extend(ds.train.iter().map(|a| aug.apply(a, None).0));
            }
        }
        tables(&vq, &imgs, dev, 32)
    };
    let mut train_tables = augmented_tables(-1);
    let val_tables = if ds.val.is_empty() { train_tables.narrow(0, 0, 1) } else { tables(&vq, &ds.val, dev, 32) };
    tch::manual_seed(seed as i64 + 1000);
    let (mut vs, prior) = new_prior(cfg, dev);
    let mut state = rd.state("prior")?;
    if state.epochs_done > 0 {
        rd.load_weights("prior", &mut vs)?;
        eprintln!("prior: resuming after epoch {}/{}", state.epochs_done, t.prior_epochs);
    } else {
        let mut m = serde_json::Map::new();
        m.insert("val_nll".into(), json!(prior_nll(&prior, &val_tables, dev, 64)));
        m.insert("log_k".into(), json!((cfg.model.num_codes as f64).ln()));
        state.initial = m;
    }
    state.epochs_total = t.prior_epochs;
    if state.complete() {
        eprintln!("prior: already trained ({} epochs)", state.epochs_done);
        return Ok(());
    }
    let mut opt = nn::Adam::default().build(&vs, t.lr).map_err(|e| TrainError::Torch(e.to_string()))?;
    let n = train_tables.size()[0] as usize;
    let batch = (t.prior_batch as usize).clamp(1, n);
    let mut steps = n.div_ceil(batch);
    if t.max_steps_per_epoch > 0 {
        steps = steps.min(t.max_steps_per_epoch as usize);
    }
    let pb = progress((t.prior_epochs - state.epochs_done) as u64 * steps as u64, show, "prior");
    for epoch in state.epochs_done..t.prior_epochs {
        let start = Instant::now();
        opt.set_lr(t.lr_schedule.at(t.lr, epoch as f64 / t.prior_epochs.max(1) as f64));
        if t.prior_fresh_augment && t.augment && t.prior_augment_copies > 0 && epoch > 0 {
            // Same seed per epoch, so a resumed run sees the same tables.
            train_tables = augmented_tables(epoch);
        }
        tch::manual_seed(seed as i64 + 1000 + epoch);
        let mut rng = seeded(seed, epoch, 3);
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut rng);
        let (mut sum, mut seen) = (0.0, 0usize);
        for s in 0..steps {
            let ids: Vec<i64> = order.iter().cycle().skip(s * batch).take(batch).copied().collect();
            let x = train_tables.index_select(0, &Tensor::from_slice(&ids)).to_device(dev);
            let loss = prior.loss(&x, true);
            opt.backward_step(&loss);
            sum += f(&loss) * ids.len() as f64;
            seen += ids.len();
            pb.set_message(format!("epoch {}/{} nll {:.3}", epoch + 1, t.prior_epochs, sum / seen as f64));
            pb.inc(1);
        }
        let secs = start.elapsed().as_secs_f64();
        let val = prior_nll(&prior, &val_tables, dev, 64);
        let mut m = serde_json::Map::new();
        m.insert("train_nll".into(), json!(sum / seen as f64));
        m.insert("val_nll".into(), json!(val));
        m.insert("log_k".into(), json!((cfg.model.num_codes as f64).ln()));
        m.insert("seconds".into(), json!(secs));
        m.insert("tables_per_s".into(), json!(seen as f64 / secs));
        state.epochs_done = epoch + 1;
        state.metrics = m.clone();
        let mut ev = json!({"stage": "prior", "epoch": epoch + 1});
        ev.as_object_mut().expect("object").extend(m);
        rd.log(ev)?;
        rd.save_weights("prior", &vs)?;
        rd.save_state("prior", &state)?;
        pb.suspend(|| eprintln!("prior epoch {:>3}/{}: train nll {:.3} val nll {:.3} (log K {:.3}) ({:.1}s)", epoch + 1, t.prior_epochs, sum / seen as f64, val, (cfg.model.num_codes as f64).ln(), secs));
    }
    pb.finish_and_clear();
    Ok(())
}
