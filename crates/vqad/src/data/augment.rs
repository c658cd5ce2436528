//! Training-time augmentation of §4.3.1, applied to an image and its mask together.
//!
//! Textures and the rotation-symmetric objects (bottle, hazelnut, metal nut, screw) get a
//! random element of the dihedral group (0/90/180/270° turn and a random flip) — exact pixel
//! permutations, so no interpolation blur enters the training set. Other objects have a
//! canonical pose and get a small rotation in [−10°, 10°]. Textures are also randomly
//! cropped and rescaled to the input size, as the paper does to reach 256².

use super::resize::{resize_mask_nearest, resize_planar};
use crate::config::CategoryKind;
use ndarray::{s, Array2, Array3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Objects whose appearance does not depend on orientation (paper §4.3.1).
pub const DIHEDRAL_OBJECTS: [&str; 4] = ["bottle", "hazelnut", "metal_nut", "screw"];

/// What [`Augmenter::apply`] does.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentPolicy {
    /// Random 0/90/180/270° turn and random horizontal flip (turns limited to 0/180° for
    /// non-square inputs, so the shape never changes).
    pub dihedral: bool,
    /// Uniform random rotation in [−max, max] degrees about the centre, bilinear, borders
    /// replicated; 0 disables.
    pub max_rotation_deg: f32,
    /// Random square crop whose side is a uniform fraction in [crop_min, 1] of the shorter
    /// side, rescaled back to the input size; `None` disables. Kept mild (default 7/8) so
    /// the texture's scale at test time stays within what training saw.
    pub crop_min: Option<f32>,
}

impl AugmentPolicy {
    /// The paper's policy for a category of this kind and name.
    pub fn for_category(kind: CategoryKind, category_name: &str) -> Self {
        let n = category_name
            .trim()
            .to_ascii_lowercase()
            .replace([' ', '-'], "_");
        match kind {
            CategoryKind::Texture => AugmentPolicy {
                dihedral: true,
                max_rotation_deg: 0.0,
                crop_min: Some(0.875),
            },
            CategoryKind::Object if DIHEDRAL_OBJECTS.contains(&n.as_str()) => AugmentPolicy {
                dihedral: true,
                max_rotation_deg: 0.0,
                crop_min: None,
            },
            CategoryKind::Object => AugmentPolicy {
                dihedral: false,
                max_rotation_deg: 10.0,
                crop_min: None,
            },
        }
    }

    /// Leaves images unchanged.
    pub fn none() -> Self {
        AugmentPolicy {
            dihedral: false,
            max_rotation_deg: 0.0,
            crop_min: None,
        }
    }
}

/// A seeded augmenter: the same seed and the same sequence of calls give the same outputs.
#[derive(Debug, Clone)]
pub struct Augmenter {
    policy: AugmentPolicy,
    rng: ChaCha8Rng,
}

impl Augmenter {
    /// The §4.3.1 policy for the category (see [`AugmentPolicy::for_category`]).
    pub fn new(kind: CategoryKind, category_name: &str, seed: u64) -> Self {
        Self::with_policy(AugmentPolicy::for_category(kind, category_name), seed)
    }

    pub fn with_policy(policy: AugmentPolicy, seed: u64) -> Self {
        Augmenter {
            policy,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn policy(&self) -> AugmentPolicy {
        self.policy
    }

    /// Draws one random transform and applies it to `img` (`[C, H, W]`) and, identically, to
    /// `mask` (`[H, W]`, 0/1; resized to the image first if its size differs). Outputs have
    /// the input's shape; the mask stays binary (nearest sampling).
    pub fn apply(
        &mut self,
        img: &Array3<f32>,
        mask: Option<&Array2<u8>>,
    ) -> (Array3<f32>, Option<Array2<u8>>) {
        let (_, h, w) = img.dim();
        let mut img = img.clone();
        let mut mask = mask.map(|m| {
            if m.dim() == (h, w) {
                m.clone()
            } else {
                resize_mask_nearest(&m.view(), h, w)
            }
        });
        if h == 0 || w == 0 {
            return (img, mask);
        }
        let p = self.policy;
        if p.dihedral {
            let turns = if h == w {
                self.rng.random_range(0..4u8)
            } else {
                2 * self.rng.random_range(0..2u8)
            };
            let flip = self.rng.random_bool(0.5);
            img = dihedral3(&img, turns, flip);
            mask = mask.map(|m| dihedral2(&m, turns, flip));
        }
        if p.max_rotation_deg > 0.0 && p.max_rotation_deg.is_finite() {
            let deg = self
                .rng
                .random_range(-p.max_rotation_deg..=p.max_rotation_deg);
            let (img2, mask2) = rotate(&img, mask.as_ref(), deg.to_radians());
            img = img2;
            mask = mask2;
        }
        if let Some(min) = p.crop_min {
            let min = if min.is_finite() {
                min.clamp(0.05, 1.0)
            } else {
                1.0
            };
            let frac = if min < 1.0 {
                self.rng.random_range(min..=1.0)
            } else {
                1.0
            };
            let side = ((frac * h.min(w) as f32).round() as usize).clamp(1, h.min(w));
            let y0 = self.rng.random_range(0..=h - side);
            let x0 = self.rng.random_range(0..=w - side);
            img = resize_planar(&img.slice(s![.., y0..y0 + side, x0..x0 + side]), h, w);
            mask =
                mask.map(|m| resize_mask_nearest(&m.slice(s![y0..y0 + side, x0..x0 + side]), h, w));
        }
        (img, mask)
    }
}

/// Source pixel of output `(y, x)` for: flip horizontally, then turn `turns`×90°
/// counter-clockwise. `h`, `w` are the input's dimensions.
fn dihedral_src(y: usize, x: usize, h: usize, w: usize, turns: u8, flip: bool) -> (usize, usize) {
    let (sy, sx) = match turns % 4 {
        0 => (y, x),
        1 => (x, w - 1 - y),
        2 => (h - 1 - y, w - 1 - x),
        _ => (h - 1 - x, y),
    };
    if flip {
        (sy, w - 1 - sx)
    } else {
        (sy, sx)
    }
}

fn dihedral3(a: &Array3<f32>, turns: u8, flip: bool) -> Array3<f32> {
    let (c, h, w) = a.dim();
    let (oh, ow) = if turns % 2 == 1 { (w, h) } else { (h, w) };
    Array3::from_shape_fn((c, oh, ow), |(ch, y, x)| {
        let (sy, sx) = dihedral_src(y, x, h, w, turns, flip);
        a[[ch, sy, sx]]
    })
}

fn dihedral2(m: &Array2<u8>, turns: u8, flip: bool) -> Array2<u8> {
    let (h, w) = m.dim();
    let (oh, ow) = if turns % 2 == 1 { (w, h) } else { (h, w) };
    Array2::from_shape_fn((oh, ow), |(y, x)| {
        let (sy, sx) = dihedral_src(y, x, h, w, turns, flip);
        m[[sy, sx]]
    })
}

/// Rotates about the image centre by `theta` radians (counter-clockwise on screen): the
/// image bilinearly, the mask by nearest sample at the same source point, both with
/// replicated borders so image and mask agree pixel for pixel away from edges.
fn rotate(
    a: &Array3<f32>,
    m: Option<&Array2<u8>>,
    theta: f32,
) -> (Array3<f32>, Option<Array2<u8>>) {
    let (c, h, w) = a.dim();
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let (sin, cos) = theta.sin_cos();
    // Output (y, x) samples the input at the inverse rotation of its offset from the centre.
    let src = |y: usize, x: usize| {
        let (dy, dx) = (y as f32 - cy, x as f32 - cx);
        let sx = cos * dx - sin * dy + cx;
        let sy = sin * dx + cos * dy + cy;
        (sy.clamp(0.0, (h - 1) as f32), sx.clamp(0.0, (w - 1) as f32))
    };
    let mut out = Array3::<f32>::zeros((c, h, w));
    for y in 0..h {
        for x in 0..w {
            let (sy, sx) = src(y, x);
            let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
            let (fy, fx) = (sy - y0 as f32, sx - x0 as f32);
            for ch in 0..c {
                let top = a[[ch, y0, x0]] * (1.0 - fx) + a[[ch, y0, x1]] * fx;
                let bot = a[[ch, y1, x0]] * (1.0 - fx) + a[[ch, y1, x1]] * fx;
                out[[ch, y, x]] = top * (1.0 - fy) + bot * fy;
            }
        }
    }
    let mask = m.map(|m| {
        Array2::from_shape_fn((h, w), |(y, x)| {
            let (sy, sx) = src(y, x);
            m[[
                (sy.round() as usize).min(h - 1),
                (sx.round() as usize).min(w - 1),
            ]]
        })
    });
    (out, mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dihedral_turn_moves_top_right_to_top_left() {
        let a = Array3::from_shape_fn((1, 3, 3), |(_, y, x)| (y * 3 + x) as f32);
        let r = dihedral3(&a, 1, false);
        assert_eq!(r[[0, 0, 0]], 2.0); // counter-clockwise quarter turn
        let f = dihedral3(&a, 0, true);
        assert_eq!(f[[0, 0, 0]], 2.0);
        assert_eq!(f[[0, 2, 2]], 6.0);
        // All 8 elements are distinct permutations.
        let mut seen = std::collections::HashSet::new();
        for t in 0..4 {
            for fl in [false, true] {
                let r = dihedral3(&a, t, fl);
                seen.insert(r.iter().map(|v| *v as u8).collect::<Vec<_>>());
            }
        }
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn policies_follow_the_paper() {
        let t = AugmentPolicy::for_category(CategoryKind::Texture, "carpet");
        assert!(t.dihedral && t.crop_min.is_some() && t.max_rotation_deg == 0.0);
        let b = AugmentPolicy::for_category(CategoryKind::Object, "Metal-Nut");
        assert!(b.dihedral && b.crop_min.is_none());
        let c = AugmentPolicy::for_category(CategoryKind::Object, "cable");
        assert!(!c.dihedral && c.max_rotation_deg == 10.0 && c.crop_min.is_none());
    }
}
