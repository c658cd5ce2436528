//! PixelSNAIL prior over index tables (§3.2): p(z_mn = k | z_<mn) for every position at once.
//!
//! Exactly causal by construction: the first convolution is masked to exclude the current
//! position (mask A), later ones may include it (mask B, their inputs are already strictly
//! causal), 1×1 convolutions mix channels only, and self-attention lets position i attend to
//! positions j ≤ i in raster order. Positional information is a learned embedding added to the
//! keys and queries. Gated residual blocks use a GLU: a · σ(b). Attention inputs and the
//! output head see channel-RMS-normalised features (see [`rms_norm`]).

use super::layers::{init_from, Conv, Mask};
use vqad::config::PriorConfig;
use vqad::onnx::{Attr, Dim, Elem, GraphBuilder};
use tch::{nn, Kind, Tensor};

/// Channel RMS normalisation, x / sqrt(mean_c(x²) + ε): keeps attention scores and logits at a
/// scale where float32 rounding stays far below the 1e-4 export tolerance however deep the
/// trunk grows (without it, random and trained models alike amplify rounding through sharp
/// softmaxes).
const RMS_EPS: f64 = 1e-5;

fn rms_norm(x: &Tensor) -> Tensor {
    x / (x.square().mean_dim([1i64].as_slice(), true, Kind::Float) + RMS_EPS).sqrt()
}

fn emit_rms_norm(g: &mut GraphBuilder, x: &str) -> String {
    let sq = g.node("Mul", &[x, x], &[]);
    let mean = g.node("ReduceMean", &[&sq], &[Attr::Ints("axes", vec![1]), Attr::Int("keepdims", 1)]);
    let eps = g.scalar("rms_eps", RMS_EPS as f32);
    let v = g.node("Add", &[&mean, &eps], &[]);
    let r = g.node("Sqrt", &[&v], &[]);
    g.node("Div", &[x, &r], &[])
}

/// Large negative added to future positions before the softmax; exp underflows to exactly 0
/// in both libtorch and ONNX Runtime.
const MASKED: f32 = -1e9;

#[derive(Debug)]
struct GatedRes {
    c1: Conv,
    c2: Conv,
    channels: i64,
}

impl GatedRes {
    fn new(vs: nn::Path, ch: i64) -> Self {
        GatedRes { c1: Conv::masked(&vs / "c1", ch, ch, 3, Mask::B), c2: Conv::masked(&vs / "c2", ch, 2 * ch, 3, Mask::B), channels: ch }
    }

    fn forward(&self, x: &Tensor, dropout: f64, train: bool) -> Tensor {
        let h = self.c1.forward(&x.elu()).elu().dropout(dropout, train);
        let h = self.c2.forward(&h);
        let parts = h.chunk(2, 1);
        x + &parts[0] * parts[1].sigmoid()
    }

    fn emit(&self, g: &mut GraphBuilder, x: &str) -> String {
        let h = g.node("Elu", &[x], &[]);
        let h = self.c1.emit(g, &h);
        let h = g.node("Elu", &[&h], &[]);
        let h = self.c2.emit(g, &h);
        let c = self.channels;
        let axes = g.init_i64("axis1", &[1], &[1]);
        let (s0, s1, s2) = (g.init_i64("start", &[1], &[0]), g.init_i64("mid", &[1], &[c]), g.init_i64("end", &[1], &[2 * c]));
        let a = g.node("Slice", &[&h, &s0, &s1, &axes], &[]);
        let b = g.node("Slice", &[&h, &s1, &s2, &axes], &[]);
        let b = g.node("Sigmoid", &[&b], &[]);
        let gated = g.node("Mul", &[&a, &b], &[]);
        g.node("Add", &[x, &gated], &[])
    }
}

#[derive(Debug)]
struct CausalAttention {
    pos: Tensor,
    q: Conv,
    k: Conv,
    v: Conv,
    o: Conv,
    heads: i64,
    attn_dim: i64,
    channels: i64,
    grid: i64,
    mask: Tensor,
}

impl CausalAttention {
    fn new(vs: nn::Path, ch: i64, attn_dim: i64, heads: i64, grid: i64) -> Self {
        let l = grid * grid;
        let mut m = vec![0f32; (l * l) as usize];
        for i in 0..l {
            for j in (i + 1)..l {
                m[(i * l + j) as usize] = MASKED;
            }
        }
        let mask = Tensor::from_slice(&m).view([l, l]).to_device(vs.device());
        CausalAttention {
            pos: vs.randn("pos", &[1, ch, grid, grid], 0.0, 0.02),
            q: Conv::new(&vs / "q", ch, attn_dim, 1, 1, 0),
            k: Conv::new(&vs / "k", ch, attn_dim, 1, 1, 0),
            v: Conv::new(&vs / "v", ch, ch, 1, 1, 0),
            o: Conv::new(&vs / "o", ch, ch, 1, 1, 0),
            heads,
            attn_dim,
            channels: ch,
            grid,
            mask,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let b = x.size()[0];
        let (h, l) = (self.heads, self.grid * self.grid);
        let dh = self.attn_dim / h;
        let dv = self.channels / h;
        let xn = rms_norm(x);
        let xp = &xn + &self.pos;
        let q = self.q.forward(&xp).view([b, h, dh, l]).transpose(2, 3);
        let k = self.k.forward(&xp).view([b, h, dh, l]);
        let v = self.v.forward(&xn).view([b, h, dv, l]).transpose(2, 3);
        let scores = q.matmul(&k) * (1.0 / (dh as f64).sqrt()) + &self.mask;
        let att = scores.softmax(-1, Kind::Float);
        let out = att.matmul(&v).transpose(2, 3).reshape([b, self.channels, self.grid, self.grid]);
        x + self.o.forward(&out)
    }

    fn emit(&self, g: &mut GraphBuilder, x: &str) -> String {
        let (h, l) = (self.heads, self.grid * self.grid);
        let dh = self.attn_dim / h;
        let dv = self.channels / h;
        let pos = init_from(g, "pos", &self.pos);
        let xn = emit_rms_norm(g, x);
        let xp = g.node("Add", &[&xn, &pos], &[]);
        let shape_qk = g.init_i64("shape_qk", &[4], &[0, h, dh, l]);
        let shape_v = g.init_i64("shape_v", &[4], &[0, h, dv, l]);
        let shape_out = g.init_i64("shape_out", &[4], &[0, self.channels, self.grid, self.grid]);
        let q = self.q.emit(g, &xp);
        let q = g.node("Reshape", &[&q, &shape_qk], &[]);
        let q = g.node("Transpose", &[&q], &[Attr::Ints("perm", vec![0, 1, 3, 2])]);
        let k = self.k.emit(g, &xp);
        let k = g.node("Reshape", &[&k, &shape_qk], &[]);
        let v = self.v.emit(g, &xn);
        let v = g.node("Reshape", &[&v, &shape_v], &[]);
        let v = g.node("Transpose", &[&v], &[Attr::Ints("perm", vec![0, 1, 3, 2])]);
        let scale = g.scalar("scale", (1.0 / (dh as f64).sqrt()) as f32);
        let s = g.node("MatMul", &[&q, &k], &[]);
        let s = g.node("Mul", &[&s, &scale], &[]);
        let mask = init_from(g, "causal_mask", &self.mask);
        let s = g.node("Add", &[&s, &mask], &[]);
        let att = g.node("Softmax", &[&s], &[Attr::Int("axis", -1)]);
        let out = g.node("MatMul", &[&att, &v], &[]);
        let out = g.node("Transpose", &[&out], &[Attr::Ints("perm", vec![0, 1, 3, 2])]);
        let out = g.node("Reshape", &[&out, &shape_out], &[]);
        let out = self.o.emit(g, &out);
        g.node("Add", &[x, &out], &[])
    }
}

#[derive(Debug)]
pub struct PixelSnail {
    pub cfg: PriorConfig,
    pub num_codes: i64,
    pub grid: i64,
    embed: Tensor,
    conv_in: Conv,
    blocks: Vec<(Vec<GatedRes>, CausalAttention)>,
    out: Conv,
}

impl PixelSnail {
    pub fn new(vs: &nn::Path, cfg: &PriorConfig, num_codes: i64, grid: i64) -> Self {
        let c = cfg.channels;
        let embed = vs.randn("embed", &[num_codes, cfg.embed_dim], 0.0, 1.0);
        let conv_in = Conv::masked(vs / "in", cfg.embed_dim, c, 5, Mask::A);
        let blocks = (0..cfg.blocks)
            .map(|b| {
                let p = vs / format!("block{b}");
                let res = (0..cfg.res_per_block).map(|r| GatedRes::new(&p / format!("res{r}"), c)).collect();
                (res, CausalAttention::new(&p / "attn", c, cfg.attn_dim, cfg.heads, grid))
            })
            .collect();
        let out = Conv::new(vs / "out", c, num_codes, 1, 1, 0);
        PixelSnail { cfg: cfg.clone(), num_codes, grid, embed, conv_in, blocks, out }
    }

    /// Logits [B, K, M, N] for index tables [B, M, N].
    pub fn logits(&self, indices: &Tensor, train: bool) -> Tensor {
        let e = self.embed.index_select(0, &indices.flatten(0, -1));
        let s = indices.size();
        let mut h = e.view([s[0], s[1], s[2], -1]).permute([0, 3, 1, 2]);
        h = self.conv_in.forward(&h);
        for (res, attn) in &self.blocks {
            for r in res {
                h = r.forward(&h, self.cfg.dropout, train);
            }
            h = attn.forward(&h);
        }
        self.out.forward(&rms_norm(&h).elu())
    }

    /// log p(z_mn = k | z_<mn), [B, K, M, N] (inference).
    pub fn log_probs(&self, indices: &Tensor) -> Tensor {
        tch::no_grad(|| self.logits(indices, false).log_softmax(1, Kind::Float))
    }

    /// Mean cross-entropy (nats per position) of the tables under the prior.
    pub fn loss(&self, indices: &Tensor, train: bool) -> Tensor {
        self.logits(indices, train).cross_entropy_loss::<Tensor>(indices, None, tch::Reduction::Mean, -100, 0.0)
    }

    /// `pixelsnail.onnx`: `indices` i64 [B, M, N] → `log_probs` f32 [B, K, M, N].
    pub fn graph(&self) -> Vec<u8> {
        let m = self.grid;
        let mut g = GraphBuilder::new("vqad_pixelsnail");
        let idx = g.input("indices", Elem::I64, &[Dim::Dynamic("batch"), Dim::Fixed(m), Dim::Fixed(m)]);
        let e = init_from(&mut g, "embed", &self.embed);
        let h = g.node("Gather", &[&e, &idx], &[Attr::Int("axis", 0)]);
        let mut h = g.node("Transpose", &[&h], &[Attr::Ints("perm", vec![0, 3, 1, 2])]);
        h = self.conv_in.emit(&mut g, &h);
        for (res, attn) in &self.blocks {
            for r in res {
                h = r.emit(&mut g, &h);
            }
            h = attn.emit(&mut g, &h);
        }
        h = emit_rms_norm(&mut g, &h);
        h = g.node("Elu", &[&h], &[]);
        h = self.out.emit(&mut g, &h);
        g.node_as("LogSoftmax", &[&h], &[Attr::Int("axis", 1)], "log_probs");
        g.output("log_probs", Elem::F32, &[Dim::Dynamic("batch"), Dim::Fixed(self.num_codes), Dim::Fixed(m), Dim::Fixed(m)]);
        g.to_bytes("PixelSNAIL prior: log p(z_mn = k | z_<mn)")
    }
}
