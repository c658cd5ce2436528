//! Resampling of planar images and masks.
//!
//! Images: per axis, area averaging when shrinking (every source pixel contributes in
//! proportion to its overlap, so fine texture does not alias — OpenCV's `INTER_AREA`) and
//! bilinear with pixel-centre alignment when enlarging (`INTER_LINEAR`). Masks: nearest
//! neighbour, so they stay binary and defects do not grow or shrink by a blur threshold.

use ndarray::{Array2, Array3, ArrayView2, ArrayView3};

/// Taps `(source index, weight)` for each destination index along one axis.
fn axis_taps(src: usize, dst: usize) -> Vec<Vec<(usize, f32)>> {
    let mut taps = Vec::with_capacity(dst);
    if src == 0 || dst == 0 {
        return vec![Vec::new(); dst];
    }
    if dst == src {
        return (0..dst).map(|i| vec![(i, 1.0)]).collect();
    }
    let scale = src as f64 / dst as f64;
    if dst < src {
        for i in 0..dst {
            let (a, b) = (i as f64 * scale, (i + 1) as f64 * scale);
            let mut t = Vec::new();
            let mut j = a.floor() as usize;
            while (j as f64) < b && j < src {
                let overlap = (b.min(j as f64 + 1.0) - a.max(j as f64)).max(0.0);
                if overlap > 1e-12 {
                    t.push((j, (overlap / scale) as f32));
                }
                j += 1;
            }
            taps.push(t);
        }
    } else {
        for i in 0..dst {
            let x = ((i as f64 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f64);
            let x0 = x.floor() as usize;
            let x1 = (x0 + 1).min(src - 1);
            let w = (x - x0 as f64) as f32;
            if x1 == x0 || w == 0.0 {
                taps.push(vec![(x0, 1.0)]);
            } else {
                taps.push(vec![(x0, 1.0 - w), (x1, w)]);
            }
        }
    }
    taps
}

/// Resizes a `[C, H, W]` array to `[C, out_h, out_w]` (area when shrinking, bilinear when
/// enlarging, chosen per axis). An empty input gives zeros.
pub fn resize_planar(a: &ArrayView3<f32>, out_h: usize, out_w: usize) -> Array3<f32> {
    let (c, h, w) = a.dim();
    if (h, w) == (out_h, out_w) {
        return a.to_owned();
    }
    let mut r = RowResizer::new(c, h, w, out_h, out_w);
    for y in 0..h {
        r.push_row(y, |ch, j| a[[ch, y, j]]);
    }
    r.finish()
}

/// [`resize_planar`] fed one source row at a time, with the same arithmetic in the same
/// order (so the same floats). The horizontal pass runs as rows arrive, so a large decoded
/// image is never held as a full-resolution float array: memory is `C × H × out_w` floats
/// instead of `C × H × W` (what lets a 16-Mpx image be converted in a few MiB beside its
/// pixel buffer; see `data::decode`).
pub(crate) struct RowResizer {
    c: usize,
    out_h: usize,
    out_w: usize,
    tx: Vec<Vec<(usize, f32)>>,
    ty: Vec<Vec<(usize, f32)>>,
    mid: Array3<f32>,
}

impl RowResizer {
    pub(crate) fn new(c: usize, h: usize, w: usize, out_h: usize, out_w: usize) -> Self {
        RowResizer { c, out_h, out_w, tx: axis_taps(w, out_w), ty: axis_taps(h, out_h), mid: Array3::zeros((c, h, out_w)) }
    }

    /// Source row `y`; `px(channel, x)` gives its samples.
    pub(crate) fn push_row(&mut self, y: usize, px: impl Fn(usize, usize) -> f32) {
        for ch in 0..self.c {
            for (x, taps) in self.tx.iter().enumerate() {
                self.mid[[ch, y, x]] = taps.iter().map(|&(j, wt)| px(ch, j) * wt).sum();
            }
        }
    }

    /// The vertical pass, once every row was pushed.
    pub(crate) fn finish(self) -> Array3<f32> {
        let mut out = Array3::<f32>::zeros((self.c, self.out_h, self.out_w));
        for ch in 0..self.c {
            for (y, taps) in self.ty.iter().enumerate() {
                for x in 0..self.out_w {
                    out[[ch, y, x]] = taps.iter().map(|&(j, wt)| self.mid[[ch, j, x]] * wt).sum();
                }
            }
        }
        out
    }
}

/// Nearest-neighbour resize of a mask: destination pixel centre → the source pixel that
/// contains it. Values are copied, never mixed.
pub fn resize_mask_nearest(m: &ArrayView2<u8>, out_h: usize, out_w: usize) -> Array2<u8> {
    let (h, w) = m.dim();
    if (h, w) == (out_h, out_w) {
        return m.to_owned();
    }
    if h == 0 || w == 0 {
        return Array2::zeros((out_h, out_w));
    }
    let src = |i: usize, s: usize, d: usize| {
        (((i as f64 + 0.5) * s as f64 / d as f64) as usize).min(s - 1)
    };
    Array2::from_shape_fn((out_h, out_w), |(y, x)| {
        m[[src(y, h, out_h), src(x, w, out_w)]]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_shrink_averages_blocks_and_keeps_the_mean() {
        // 4×4 checkerboard of 2×2 blocks → 2×2 gives the block values exactly.
        let a = Array3::from_shape_fn((1, 4, 4), |(_, y, x)| ((y / 2 + x / 2) % 2) as f32);
        let r = resize_planar(&a.view(), 2, 2);
        assert_eq!(r.as_slice().unwrap(), &[0.0, 1.0, 1.0, 0.0]);
        // Non-integer factor: 1-pixel checkerboard 6×6 → 4×4 keeps values in [0,1] and the mean.
        let a = Array3::from_shape_fn((1, 6, 6), |(_, y, x)| ((y + x) % 2) as f32);
        let r = resize_planar(&a.view(), 4, 4);
        let mean = r.mean().unwrap();
        assert!((mean - 0.5).abs() < 1e-5, "{mean}");
        assert!(r.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn bilinear_enlarge_interpolates_between_centres() {
        let a = Array3::from_shape_vec((1, 1, 2), vec![0.0, 1.0]).unwrap();
        let r = resize_planar(&a.view(), 1, 4);
        // Centres of the 4 outputs map to source x = -0.25, 0.25, 0.75, 1.25 (clamped).
        let got: Vec<f32> = r.iter().copied().collect();
        assert_eq!(got, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn nearest_mask_resize_keeps_blocks_in_place() {
        let m = Array2::from_shape_fn((4, 4), |(y, x)| u8::from(y >= 2 && x < 2));
        let up = resize_mask_nearest(&m.view(), 8, 8);
        for ((y, x), &v) in up.indexed_iter() {
            assert_eq!(v, u8::from(y >= 4 && x < 4), "({y},{x})");
        }
        let down = resize_mask_nearest(&up.view(), 2, 2);
        assert_eq!(down.as_slice().unwrap(), &[0, 0, 1, 0]);
    }
}
