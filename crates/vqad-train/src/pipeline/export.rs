//! `vqad export`: the three ONNX graphs, `codebook.npy` and `shapes.json` from a run folder.
//! Everything is derived from the checkpoint alone, so the same checkpoint gives the same bytes.
//! It lives in the pipeline because it joins a training run (`train`) with the networks' graph
//! definitions (`nn`); `nn` itself knows nothing of run folders.

use vqad::config::Config;
use vqad::fsutil::write_atomic;
use crate::train::run::RunDir;
use crate::train::{load_prior, load_vqvae, TrainError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Shapes of the exported graphs (`shapes.json`), for people and for the packager.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExportShapes {
    pub image_size: i64,
    pub channels: i64,
    pub grid: i64,
    pub num_codes: i64,
    pub code_dim: i64,
    pub opset: i64,
    pub ir_version: i64,
    /// Graph file → (input name, output name).
    pub graphs: BTreeMap<String, (String, String)>,
}

/// The exported files, by name.
pub struct Exported {
    pub files: BTreeMap<String, Vec<u8>>,
    pub shapes: ExportShapes,
}

/// Builds the graphs for a config and trained run, in memory.
pub fn export_run(run: &Path) -> Result<Exported, TrainError> {
    let rd = RunDir::new(run);
    let cfg: Config = rd.config()?;
    let dev = tch::Device::Cpu;
    let (_v1, vq) = load_vqvae(&rd, &cfg, dev)?;
    let (_v2, prior) = load_prior(&rd, &cfg, dev)?;
    let mut files = BTreeMap::new();
    files.insert("encoder.onnx".to_string(), vq.encoder_graph());
    files.insert("decoder.onnx".to_string(), vq.decoder_graph());
    files.insert("pixelsnail.onnx".to_string(), prior.graph());
    files.insert("codebook.npy".to_string(), crate::nn::layers::codebook_npy(&vq.codebook));
    let shapes = ExportShapes {
        image_size: cfg.model.image_size,
        channels: cfg.model.channels,
        grid: cfg.model.grid(),
        num_codes: cfg.model.num_codes,
        code_dim: cfg.model.code_dim,
        opset: vqad::onnx::OPSET,
        ir_version: vqad::onnx::IR_VERSION,
        graphs: [
            ("encoder.onnx", ("image", "indices")),
            ("decoder.onnx", ("indices", "image")),
            ("pixelsnail.onnx", ("indices", "log_probs")),
        ]
        .into_iter()
        .map(|(k, (a, b))| (k.to_string(), (a.to_string(), b.to_string())))
        .collect(),
    };
    Ok(Exported { files, shapes })
}

/// Writes an export into `out` (each file atomically).
pub fn write_export(e: &Exported, out: &Path) -> Result<(), TrainError> {
    std::fs::create_dir_all(out).map_err(|er| TrainError::Io(out.display().to_string(), er))?;
    for (name, bytes) in &e.files {
        let p = out.join(name);
        write_atomic(&p, bytes).map_err(|er| TrainError::Io(p.display().to_string(), er))?;
    }
    let p = out.join("shapes.json");
    let mut s = serde_json::to_vec_pretty(&e.shapes).expect("serialisable");
    s.push(b'\n');
    write_atomic(&p, &s).map_err(|er| TrainError::Io(p.display().to_string(), er))
}
