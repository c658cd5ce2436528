//! Convolution layers and residual blocks shared by the VQ-VAE and PixelSNAIL.

use vqad::onnx::{Attr, GraphBuilder};
use tch::{nn, Tensor};

/// Copies a tensor's shape and f32 values out of libtorch (for ONNX initializers).
pub fn tensor_data(t: &Tensor) -> (Vec<i64>, Vec<f32>) {
    let t = t.detach().to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous();
    let dims = t.size();
    let data = Vec::<f32>::try_from(t.flatten(0, -1)).expect("float tensor converts to Vec<f32>");
    (dims, data)
}

/// Writes a tensor as a float initializer.
pub fn init_from(g: &mut GraphBuilder, hint: &str, t: &Tensor) -> String {
    let (dims, data) = tensor_data(t);
    g.init_f32(hint, &dims, &data)
}

/// Which positions a PixelCNN-style masked convolution may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// Rows above, and the current row left of the centre: the first layer, so the output at
    /// (m, n) never sees z_mn itself.
    A,
    /// As A plus the centre: later layers, whose inputs are already strictly causal.
    B,
}

/// A 2-D convolution, optionally masked for causality.
#[derive(Debug)]
pub struct Conv {
    ws: Tensor,
    bs: Tensor,
    stride: i64,
    pad: i64,
    mask: Option<Tensor>,
}

impl Conv {
    pub fn new(vs: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, pad: i64) -> Self {
        let c = nn::conv2d(vs, cin, cout, k, nn::ConvConfig { stride, padding: pad, ..Default::default() });
        Conv { ws: c.ws, bs: c.bs.expect("conv has bias"), stride, pad, mask: None }
    }

    /// A k×k "same" convolution that only reads earlier positions in raster order.
    pub fn masked(vs: nn::Path, cin: i64, cout: i64, k: i64, mask: Mask) -> Self {
        assert!(k % 2 == 1, "masked convolutions need an odd kernel");
        let mut conv = Self::new(vs, cin, cout, k, 1, k / 2);
        let mut m = vec![0f32; (k * k) as usize];
        let c = k / 2;
        for i in 0..k {
            for j in 0..k {
                let allowed = i < c || (i == c && (j < c || (j == c && mask == Mask::B)));
                m[(i * k + j) as usize] = if allowed { 1.0 } else { 0.0 };
            }
        }
        let mask = Tensor::from_slice(&m).view([1, 1, k, k]).to_device(conv.ws.device());
        conv.mask = Some(mask);
        conv
    }

    /// The weight as applied (masked where masked).
    fn weight(&self) -> Tensor {
        match &self.mask {
            Some(m) => &self.ws * m,
            None => self.ws.shallow_clone(),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(&self.weight(), Some(&self.bs), [self.stride], [self.pad], [1], 1)
    }

    pub fn emit(&self, g: &mut GraphBuilder, x: &str) -> String {
        let k = self.ws.size()[2];
        let w = init_from(g, "conv_w", &self.weight());
        let b = init_from(g, "conv_b", &self.bs);
        g.node(
            "Conv",
            &[x, &w, &b],
            &[
                Attr::Ints("kernel_shape", vec![k, k]),
                Attr::Ints("pads", vec![self.pad; 4]),
                Attr::Ints("strides", vec![self.stride; 2]),
            ],
        )
    }
}

/// A 4×4 stride-2 transposed convolution: doubles the spatial size.
#[derive(Debug)]
pub struct ConvT {
    ws: Tensor,
    bs: Tensor,
}

impl ConvT {
    pub fn up(vs: nn::Path, cin: i64, cout: i64) -> Self {
        let c = nn::conv_transpose2d(vs, cin, cout, 4, nn::ConvTransposeConfig { stride: 2, padding: 1, ..Default::default() });
        ConvT { ws: c.ws, bs: c.bs.expect("conv has bias") }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv_transpose2d(&self.ws, Some(&self.bs), [2], [1], [0], 1, [1])
    }

    pub fn emit(&self, g: &mut GraphBuilder, x: &str) -> String {
        let w = init_from(g, "convt_w", &self.ws);
        let b = init_from(g, "convt_b", &self.bs);
        g.node(
            "ConvTranspose",
            &[x, &w, &b],
            &[Attr::Ints("kernel_shape", vec![4, 4]), Attr::Ints("pads", vec![1; 4]), Attr::Ints("strides", vec![2, 2])],
        )
    }
}

/// The VQ-VAE residual block of §4.3.2: x + conv1×1(relu(conv3×3(relu(x)))).
#[derive(Debug)]
pub struct ResBlock {
    c1: Conv,
    c2: Conv,
}

impl ResBlock {
    pub fn new(vs: nn::Path, ch: i64, inner: i64) -> Self {
        ResBlock { c1: Conv::new(&vs / "c1", ch, inner, 3, 1, 1), c2: Conv::new(&vs / "c2", inner, ch, 1, 1, 0) }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x + self.c2.forward(&self.c1.forward(&x.relu()).relu())
    }

    pub fn emit(&self, g: &mut GraphBuilder, x: &str) -> String {
        let h = g.node("Relu", &[x], &[]);
        let h = self.c1.emit(g, &h);
        let h = g.node("Relu", &[&h], &[]);
        let h = self.c2.emit(g, &h);
        g.node("Add", &[x, &h], &[])
    }
}

/// The codebook as a little-endian float32 `.npy` ([K, D]).
pub fn codebook_npy(codebook: &tch::Tensor) -> Vec<u8> {
    let (dims, data) = tensor_data(codebook);
    let arr = ndarray::Array2::from_shape_vec((dims[0] as usize, dims[1] as usize), data).expect("codebook is 2-D");
    let mut out = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(&arr, &mut out).expect("writing to memory");
    out
}
