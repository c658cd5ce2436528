//! VQ-VAE (§3.1, eq. 1–3): encoder of stride-2 4×4 convolutions, a 3×3 convolution and
//! residual blocks; a K×D codebook; a decoder mirroring the encoder with transposed
//! convolutions. Images enter in [0, 1] and leave in [0, 1] (sigmoid), both in tch and ONNX.

use super::layers::{init_from, Conv, ConvT, ResBlock};
use vqad::config::ModelConfig;
use vqad::onnx::{Attr, Dim, Elem, GraphBuilder};
use tch::{nn, Kind, Tensor};

#[derive(Debug)]
pub struct VqVae {
    pub cfg: ModelConfig,
    down: Vec<Conv>,
    enc_mid: Conv,
    enc_res: Vec<ResBlock>,
    enc_out: Conv,
    /// e ∈ R^{K×D}, initialised from N(0, 1) as in the paper.
    pub codebook: Tensor,
    dec_in: Conv,
    dec_res: Vec<ResBlock>,
    up: Vec<ConvT>,
}

/// What one training forward pass yields.
#[derive(Debug)]
pub struct VqOutput {
    pub recon: Tensor,
    /// The decoder's output before the sigmoid.
    pub logits: Tensor,
    /// Total loss of eq. 3.
    pub loss: Tensor,
    pub rec_loss: Tensor,
    pub codebook_loss: Tensor,
    pub commit_loss: Tensor,
    pub indices: Tensor,
    /// Encoder outputs flattened to [B·M·N, D] (for re-seeding dead codes).
    pub z_e_flat: Tensor,
}

/// Eq. 3 with mean squared errors: ‖x − x_d‖² + ‖sg[z_e] − z_q‖² + β‖z_e − sg[z_q]‖².
/// Returns (total, reconstruction, codebook, commitment).
pub fn eq3_loss(x: &Tensor, recon: &Tensor, z_e: &Tensor, z_q: &Tensor, beta: f64) -> (Tensor, Tensor, Tensor, Tensor) {
    let rec = recon.mse_loss(x, tch::Reduction::Mean);
    let codebook = z_q.mse_loss(&z_e.detach(), tch::Reduction::Mean);
    let commit = z_e.mse_loss(&z_q.detach(), tch::Reduction::Mean);
    let total = &rec + &codebook + &commit * beta;
    (total, rec, codebook, commit)
}

impl VqVae {
    pub fn new(vs: &nn::Path, cfg: &ModelConfig) -> Self {
        let h = cfg.hidden;
        let down = (0..cfg.downsamples)
            .map(|i| Conv::new(vs / "enc" / format!("down{i}"), if i == 0 { cfg.channels } else { h }, h, 4, 2, 1))
            .collect();
        let enc_mid = Conv::new(vs / "enc" / "mid", h, h, 3, 1, 1);
        let enc_res = (0..cfg.res_blocks).map(|i| ResBlock::new(vs / "enc" / format!("res{i}"), h, cfg.res_channels)).collect();
        let enc_out = Conv::new(vs / "enc" / "out", h, cfg.code_dim, 1, 1, 0);
        let codebook = vs.randn("codebook", &[cfg.num_codes, cfg.code_dim], 0.0, 1.0);
        let dec_in = Conv::new(vs / "dec" / "in", cfg.code_dim, h, 3, 1, 1);
        let dec_res = (0..cfg.res_blocks).map(|i| ResBlock::new(vs / "dec" / format!("res{i}"), h, cfg.res_channels)).collect();
        let up = (0..cfg.downsamples)
            .map(|i| ConvT::up(vs / "dec" / format!("up{i}"), h, if i == cfg.downsamples - 1 { cfg.channels } else { h }))
            .collect();
        VqVae { cfg: cfg.clone(), down, enc_mid, enc_res, enc_out, codebook, dec_in, dec_res, up }
    }

    /// z_e [B, D, M, N] from images [B, C, H, W] in [0, 1].
    pub fn encode(&self, x: &Tensor) -> Tensor {
        let mut h = x * 2.0 - 1.0;
        for c in &self.down {
            h = c.forward(&h).relu();
        }
        h = self.enc_mid.forward(&h);
        for r in &self.enc_res {
            h = r.forward(&h);
        }
        self.enc_out.forward(&h.relu())
    }

    /// Nearest code per position (eq. 1): [B, M, N] int64. Computed as argmin_k(|e_k|² − 2 z·e_k)
    /// (|z|² is constant per position) with the same operations as the ONNX graph.
    pub fn nearest(&self, z_e: &Tensor) -> Tensor {
        let z = z_e.permute([0, 2, 3, 1]);
        let e2 = (&self.codebook * &self.codebook).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        let d = z.matmul(&self.codebook.tr()) * -2.0 + e2;
        d.argmin(3, false)
    }

    /// z_q [B, D, M, N] for an index table (eq. 2).
    pub fn lookup(&self, indices: &Tensor) -> Tensor {
        self.codebook.index_select(0, &indices.flatten(0, -1)).view([indices.size()[0], indices.size()[1], indices.size()[2], -1]).permute([0, 3, 1, 2])
    }

    /// Images in [0, 1] from z_q.
    pub fn decode_latent(&self, z_q: &Tensor) -> Tensor {
        self.decode_logits(z_q).sigmoid()
    }

    /// The decoder's output before the sigmoid (training bounds it, see
    /// `TrainConfig::vqvae_logit_bound`).
    pub fn decode_logits(&self, z_q: &Tensor) -> Tensor {
        let mut h = self.dec_in.forward(z_q);
        for r in &self.dec_res {
            h = r.forward(&h);
        }
        h = h.relu();
        let last = self.up.len() - 1;
        for (i, u) in self.up.iter().enumerate() {
            h = u.forward(&h);
            if i < last {
                h = h.relu();
            }
        }
        h
    }

    /// Images in [0, 1] from index tables [B, M, N].
    pub fn decode_indices(&self, indices: &Tensor) -> Tensor {
        self.decode_latent(&self.lookup(indices))
    }

    /// Index tables of images (inference; no gradient).
    pub fn indices(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| self.nearest(&self.encode(x)))
    }

    /// Training pass: eq. 3 with the straight-through gradient from z_q to z_e.
    pub fn forward_train(&self, x: &Tensor, beta: f64) -> VqOutput {
        self.forward_train_to(x, x, beta)
    }

    /// [`Self::forward_train`] with a reconstruction target other than the input (denoising:
    /// `x` corrupted, `target` clean).
    pub fn forward_train_to(&self, x: &Tensor, target: &Tensor, beta: f64) -> VqOutput {
        let z_e = self.encode(x);
        let indices = tch::no_grad(|| self.nearest(&z_e));
        let z_q = self.lookup(&indices);
        let z_st = &z_e + (&z_q - &z_e).detach();
        let logits = self.decode_logits(&z_st);
        let recon = logits.sigmoid();
        let (loss, rec_loss, codebook_loss, commit_loss) = eq3_loss(target, &recon, &z_e, &z_q, beta);
        let z_e_flat = z_e.detach().permute([0, 2, 3, 1]).reshape([-1, self.cfg.code_dim]);
        VqOutput { recon, logits, loss, rec_loss, codebook_loss, commit_loss, indices, z_e_flat }
    }

    /// `encoder.onnx`: `image` f32 [B, C, H, W] in [0, 1] → `indices` i64 [B, M, N].
    pub fn encoder_graph(&self) -> Vec<u8> {
        let (s, c, m) = (self.cfg.image_size, self.cfg.channels, self.cfg.grid());
        let mut g = GraphBuilder::new("vqad_encoder");
        let x = g.input("image", Elem::F32, &[Dim::Dynamic("batch"), Dim::Fixed(c), Dim::Fixed(s), Dim::Fixed(s)]);
        let two = g.scalar("two", 2.0);
        let one = g.scalar("one", 1.0);
        let h = g.node("Mul", &[&x, &two], &[]);
        let mut h = g.node("Sub", &[&h, &one], &[]);
        for conv in &self.down {
            h = conv.emit(&mut g, &h);
            h = g.node("Relu", &[&h], &[]);
        }
        h = self.enc_mid.emit(&mut g, &h);
        for r in &self.enc_res {
            h = r.emit(&mut g, &h);
        }
        h = g.node("Relu", &[&h], &[]);
        let z_e = self.enc_out.emit(&mut g, &h);
        let z = g.node("Transpose", &[&z_e], &[Attr::Ints("perm", vec![0, 2, 3, 1])]);
        let e_t = init_from(&mut g, "codebook_t", &self.codebook.tr().contiguous());
        let e2 = init_from(&mut g, "codebook_sq", &tch::no_grad(|| (&self.codebook * &self.codebook).sum_dim_intlist([1i64].as_slice(), false, Kind::Float)));
        let minus_two = g.scalar("minus_two", -2.0);
        let dot = g.node("MatMul", &[&z, &e_t], &[]);
        let dot = g.node("Mul", &[&dot, &minus_two], &[]);
        let d = g.node("Add", &[&dot, &e2], &[]);
        g.node_as("ArgMin", &[&d], &[Attr::Int("axis", 3), Attr::Int("keepdims", 0)], "indices");
        g.output("indices", Elem::I64, &[Dim::Dynamic("batch"), Dim::Fixed(m), Dim::Fixed(m)]);
        g.to_bytes("VQ-VAE encoder and nearest-code quantisation (eq. 1)")
    }

    /// `decoder.onnx`: `indices` i64 [B, M, N] → `image` f32 [B, C, H, W] in [0, 1].
    pub fn decoder_graph(&self) -> Vec<u8> {
        let (s, c, m) = (self.cfg.image_size, self.cfg.channels, self.cfg.grid());
        let mut g = GraphBuilder::new("vqad_decoder");
        let idx = g.input("indices", Elem::I64, &[Dim::Dynamic("batch"), Dim::Fixed(m), Dim::Fixed(m)]);
        let e = init_from(&mut g, "codebook", &self.codebook);
        let zq = g.node("Gather", &[&e, &idx], &[Attr::Int("axis", 0)]);
        let mut h = g.node("Transpose", &[&zq], &[Attr::Ints("perm", vec![0, 3, 1, 2])]);
        h = self.dec_in.emit(&mut g, &h);
        for r in &self.dec_res {
            h = r.emit(&mut g, &h);
        }
        h = g.node("Relu", &[&h], &[]);
        let last = self.up.len() - 1;
        for (i, u) in self.up.iter().enumerate() {
            h = u.emit(&mut g, &h);
            if i < last {
                h = g.node("Relu", &[&h], &[]);
            }
        }
        g.node_as("Sigmoid", &[&h], &[], "image");
        g.output("image", Elem::F32, &[Dim::Dynamic("batch"), Dim::Fixed(c), Dim::Fixed(s), Dim::Fixed(s)]);
        g.to_bytes("VQ-VAE codebook lookup (eq. 2) and decoder")
    }
}
