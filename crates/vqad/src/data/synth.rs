//! A synthetic MVTec-style category, for tests and demos where MVTec AD is not at hand.
//!
//! Normal images are deliberately low in degrees of freedom, because they train a tiny
//! VQ-VAE + PixelSNAIL in a few CPU minutes at 64² (a 16×16 code grid):
//! - `Regular` texture: a smooth periodic weave with a fixed period (1/8 of the side) and
//!   colour, a random phase, and mild pixel noise;
//! - `Irregular` texture: low-contrast smooth value noise on a leather-brown base plus grain;
//! - `Object`: one flange-like disc (inner hole, four bolt holes) centred on a plain light
//!   background, with ±2 % position and ±8° rotation jitter.
//!
//! Defect images are a normal image with one structural defect: scratch, hole, stain,
//! contamination or missing part, covering 0.6–4.5 % of the image. Defects are painted only
//! with colours that occur in the normal image itself (its darkest / lightest / mean colour,
//! the object's bolt-hole or background colour, or the texture copied with a half-period
//! phase shift), so a VQ-VAE trained on normal images can reconstruct them: they are wrong
//! arrangements, not unseen colours.
//! The mask is computed from the pixels, not the shape: 255 exactly where the written defect
//! image differs from its normal image, 0 elsewhere.
//!
//! Every image has its own random stream derived from (seed, split, defect, index), so the
//! same spec gives byte-identical files (on one platform: rendering uses `f64::sin`/`cos`
//! from the platform's maths library), and changing a count does not change other images.

use super::DataError;
use crate::config::CategoryKind;
use image::{GrayImage, Luma, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::f64::consts::PI;
use std::path::{Path, PathBuf};

/// Metadata file the generator writes into the category (its spec, for provenance and so
/// [`super::Category::kind`] knows a synthetic category's kind).
pub const SYNTH_META: &str = "synth.json";

/// Version of the rendering code; bump when output pixels change.
const GENERATOR_VERSION: u32 = 2;

/// What a generated category looks like when normal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Regular,
    Irregular,
    Object,
}

/// Texture categories whose MVTec counterparts are irregular (or whose name says so) get
/// smooth noise; other textures the periodic weave; objects the disc.
pub fn pattern_for(kind: CategoryKind, name: &str) -> Pattern {
    let n = name.to_ascii_lowercase();
    match kind {
        CategoryKind::Object => Pattern::Object,
        CategoryKind::Texture
            if ["leather", "wood", "grain", "noise", "irregular", "marble"]
                .iter()
                .any(|k| n.contains(k)) =>
        {
            Pattern::Irregular
        }
        CategoryKind::Texture => Pattern::Regular,
    }
}

/// Defect types the generator paints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Defect {
    Scratch,
    Hole,
    Stain,
    Contamination,
    MissingPart,
}

impl Defect {
    pub const ALL: [Defect; 5] = [
        Defect::Scratch,
        Defect::Hole,
        Defect::Stain,
        Defect::Contamination,
        Defect::MissingPart,
    ];

    /// Folder name under `test/` and `ground_truth/`.
    pub fn name(self) -> &'static str {
        match self {
            Defect::Scratch => "scratch",
            Defect::Hole => "hole",
            Defect::Stain => "stain",
            Defect::Contamination => "contamination",
            Defect::MissingPart => "missing_part",
        }
    }
}

/// What to generate. `test_bad` is per defect type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthSpec {
    pub category: String,
    pub kind: CategoryKind,
    /// Square side in pixels (16..=4096).
    pub size: u32,
    pub seed: u64,
    pub train: usize,
    pub test_good: usize,
    pub test_bad: usize,
}

impl SynthSpec {
    /// Defaults: 128 px, seed 0, 64 train, 10 good and 4 per defect type in test.
    pub fn new(category: &str, kind: CategoryKind) -> Self {
        SynthSpec {
            category: category.into(),
            kind,
            size: 128,
            seed: 0,
            train: 64,
            test_good: 10,
            test_bad: 4,
        }
    }

    pub fn pattern(&self) -> Pattern {
        pattern_for(self.kind, &self.category)
    }

    fn validate(&self) -> Result<(), DataError> {
        let c = &self.category;
        if c.is_empty() || c == "." || c == ".." || c.contains(['/', '\\', '\0']) {
            return Err(DataError::Invalid(format!(
                "category name '{c}' is not a plain folder name"
            )));
        }
        if !(16..=4096).contains(&self.size) {
            return Err(DataError::Invalid(format!(
                "synthetic image size must be 16..=4096, got {}",
                self.size
            )));
        }
        if self.train == 0 {
            return Err(DataError::Invalid(
                "synthetic category needs at least one training image".into(),
            ));
        }
        Ok(())
    }
}

/// One generated test or train sample: the normal image, the written image (equal to
/// `normal` for normals) and its mask (255 exactly where they differ).
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSample {
    pub normal: RgbImage,
    pub image: RgbImage,
    pub mask: GrayImage,
}

type Buf = Vec<[f64; 3]>;

/// The normal image and object-body mask for one random stream.
struct Scene {
    n: usize,
    img: Buf,
    /// Where a defect may go (the object's material; everything for textures).
    body: Vec<bool>,
    /// What shows where material is missing (background for objects, backing for textures).
    behind: Buf,
    pattern: Pattern,
    centre: (f64, f64),
}

fn stream_seed(seed: u64, split: &str, defect: &str, index: usize) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(split.as_bytes());
    h.update([0]);
    h.update(defect.as_bytes());
    h.update([0]);
    h.update((index as u64).to_le_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]))
}

/// Triangular noise in [−a, a] (sum of two uniforms), cheap and bounded.
fn noise(rng: &mut ChaCha8Rng, a: f64) -> f64 {
    (rng.random::<f64>() + rng.random::<f64>() - 1.0) * a
}

fn render_normal(pattern: Pattern, n: usize, rng: &mut ChaCha8Rng) -> Scene {
    let nf = n as f64;
    let mut img = vec![[0.0; 3]; n * n];
    let mut body = vec![true; n * n];
    let mut behind = vec![[0.12, 0.14, 0.20]; n * n];
    let mut centre = (nf / 2.0, nf / 2.0);
    match pattern {
        Pattern::Regular => {
            let period = nf / 8.0;
            let (px, py) = (rng.random::<f64>() * period, rng.random::<f64>() * period);
            let gain = 1.0 + noise(rng, 0.02);
            let base = [0.80, 0.71, 0.55];
            for y in 0..n {
                for x in 0..n {
                    let u = 2.0 * PI * (x as f64 + px) / period;
                    let v = 2.0 * PI * (y as f64 + py) / period;
                    let f = 0.80 + 0.09 * (u.cos() + v.cos()) + 0.06 * u.cos() * v.cos();
                    let mut p = [0.0; 3];
                    for (c, b) in base.iter().enumerate() {
                        p[c] = b * f * gain + noise(rng, 0.025);
                    }
                    img[y * n + x] = p;
                }
            }
        }
        Pattern::Irregular => {
            let cell = (nf / 8.0).max(2.0);
            let g = (nf / cell).ceil() as usize + 2;
            let lattice: Vec<f64> = (0..g * g)
                .map(|_| rng.random::<f64>() * 2.0 - 1.0)
                .collect();
            let fine_cell = cell / 2.0;
            let gf = (nf / fine_cell).ceil() as usize + 2;
            let fine: Vec<f64> = (0..gf * gf)
                .map(|_| rng.random::<f64>() * 2.0 - 1.0)
                .collect();
            let value = |lat: &[f64], g: usize, cell: f64, x: f64, y: f64| {
                let (fx, fy) = (x / cell, y / cell);
                let (ix, iy) = (fx.floor() as usize, fy.floor() as usize);
                let s = |t: f64| t * t * (3.0 - 2.0 * t);
                let (tx, ty) = (s(fx - fx.floor()), s(fy - fy.floor()));
                let at = |i: usize, j: usize| lat[(j.min(g - 1)) * g + i.min(g - 1)];
                let top = at(ix, iy) * (1.0 - tx) + at(ix + 1, iy) * tx;
                let bot = at(ix, iy + 1) * (1.0 - tx) + at(ix + 1, iy + 1) * tx;
                top * (1.0 - ty) + bot * ty
            };
            let base = [0.56, 0.39, 0.26];
            for y in 0..n {
                for x in 0..n {
                    let (xf, yf) = (x as f64, y as f64);
                    let v = value(&lattice, g, cell, xf, yf)
                        + 0.5 * value(&fine, gf, fine_cell, xf, yf);
                    let f = 1.0 + 0.10 * v;
                    let mut p = [0.0; 3];
                    for (c, b) in base.iter().enumerate() {
                        p[c] = b * f + noise(rng, 0.03);
                    }
                    img[y * n + x] = p;
                }
            }
        }
        Pattern::Object => {
            let bg = [0.86, 0.86, 0.84];
            let metal = [0.42, 0.46, 0.54];
            let (cx, cy) = (
                nf / 2.0 + noise(rng, 0.02 * nf),
                nf / 2.0 + noise(rng, 0.02 * nf),
            );
            centre = (cx, cy);
            let radius = 0.30 * nf * (1.0 + noise(rng, 0.01));
            let inner = 0.10 * nf;
            let (bolt_r, bolt_d) = (0.035 * nf, 0.20 * nf);
            let theta = noise(rng, 8.0f64.to_radians());
            let bolts: Vec<(f64, f64)> = (0..4)
                .map(|k| {
                    let a = theta + k as f64 * PI / 2.0;
                    (cx + bolt_d * a.cos(), cy + bolt_d * a.sin())
                })
                .collect();
            for y in 0..n {
                for x in 0..n {
                    let (xf, yf) = (x as f64 + 0.5, y as f64 + 0.5);
                    let r = ((xf - cx).powi(2) + (yf - cy).powi(2)).sqrt();
                    let bolt = bolts
                        .iter()
                        .any(|&(bx, by)| (xf - bx).powi(2) + (yf - by).powi(2) <= bolt_r * bolt_r);
                    let i = y * n + x;
                    let background: [f64; 3] = std::array::from_fn(|c| bg[c] + noise(rng, 0.012));
                    behind[i] = background;
                    if r <= radius && r > inner && !bolt {
                        // Brighter towards the rim, like a turned metal face under a ring light.
                        let f = 0.85 + 0.3 * (r - inner) / (radius - inner);
                        img[i] = std::array::from_fn(|c| metal[c] * f + noise(rng, 0.02));
                    } else if bolt && r <= radius {
                        // Bolt holes count as material: a defect over one still changes it.
                        img[i] = std::array::from_fn(|_| 0.18 + noise(rng, 0.01));
                    } else {
                        img[i] = background;
                        body[i] = false;
                    }
                }
            }
        }
    }
    Scene {
        n,
        img,
        body,
        behind,
        pattern,
        centre,
    }
}

/// The background colour behind pixel `i` (for objects, the plain backdrop).
fn pal_bg(s: &Scene, i: usize) -> [f64; 3] {
    s.behind[i]
}

fn lum(p: [f64; 3]) -> f64 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

fn quantize(buf: &Buf, n: usize) -> RgbImage {
    let q = |v: f64| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    RgbImage::from_fn(n as u32, n as u32, |x, y| {
        let p = buf[y as usize * n + x as usize];
        Rgb([q(p[0]), q(p[1]), q(p[2])])
    })
}

/// The material's own feature colours: the mean of its darkest and lightest 3 % of pixels
/// (by luminance) and its mean colour. Defects are painted with these (or with pixels copied
/// from the image itself), so they are anomalous in arrangement, not in colour.
struct Palette {
    dark: [f64; 3],
    light: [f64; 3],
    mean: [f64; 3],
}

fn palette(s: &Scene) -> Palette {
    let mut px: Vec<[f64; 3]> = s
        .img
        .iter()
        .zip(&s.body)
        .filter(|(_, &b)| b)
        .map(|(p, _)| *p)
        .collect();
    if px.is_empty() {
        px.push([0.5; 3]);
    }
    px.sort_by(|a, b| lum(*a).total_cmp(&lum(*b)));
    let avg = |q: &[[f64; 3]]| -> [f64; 3] {
        let k = q.len().max(1) as f64;
        std::array::from_fn(|c| q.iter().map(|p| p[c]).sum::<f64>() / k)
    };
    let k = (px.len() * 3 / 100).max(1);
    Palette {
        dark: avg(&px[..k]),
        light: avg(&px[px.len() - k..]),
        mean: avg(&px),
    }
}

/// A random point on the material (for objects, on the disc's face; for textures, away from
/// the border so the defect lies wholly inside).
fn defect_centre(s: &Scene, rng: &mut ChaCha8Rng) -> (f64, f64) {
    let nf = s.n as f64;
    match s.pattern {
        Pattern::Object => {
            let r = rng.random_range(0.14..0.26) * nf;
            let a = rng.random::<f64>() * 2.0 * PI;
            (s.centre.0 + r * a.cos(), s.centre.1 + r * a.sin())
        }
        _ => (
            rng.random_range(0.2..0.8) * nf,
            rng.random_range(0.2..0.8) * nf,
        ),
    }
}

/// Paints one defect into a copy of the scene's image; the region is clipped to the material.
fn paint(s: &Scene, defect: Defect, rng: &mut ChaCha8Rng) -> Buf {
    let n = s.n;
    let nf = n as f64;
    let mut out = s.img.clone();
    let pal = palette(s);
    let (cx, cy) = defect_centre(s, rng);
    let mut region = vec![false; n * n];
    let mut set = |f: &dyn Fn(f64, f64) -> bool| {
        for y in 0..n {
            for x in 0..n {
                if f(x as f64 + 0.5, y as f64 + 0.5) {
                    region[y * n + x] = true;
                }
            }
        }
    };
    let disc = |x0: f64, y0: f64, r: f64| {
        move |x: f64, y: f64| (x - x0).powi(2) + (y - y0).powi(2) <= r * r
    };
    match defect {
        Defect::Scratch => {
            let len = rng.random_range(0.22..0.36) * nf;
            let ang = rng.random::<f64>() * PI;
            // At least ~2.5 px wide so the scratch survives at 64 px (a 16×16 code grid).
            let half_w = (1.5 * nf / 128.0).max(1.25);
            let (dx, dy) = (ang.cos(), ang.sin());
            set(&|x, y| {
                let (rx, ry) = (x - cx, y - cy);
                let t = (rx * dx + ry * dy).clamp(-len / 2.0, len / 2.0);
                (rx - t * dx).powi(2) + (ry - t * dy).powi(2) <= half_w * half_w
            });
        }
        Defect::Hole => {
            let r = rng.random_range(0.055..0.08) * nf;
            set(&disc(cx, cy, r));
        }
        Defect::Stain => {
            let blobs: Vec<(f64, f64, f64)> = (0..rng.random_range(3..6))
                .map(|_| {
                    (
                        cx + noise(rng, 0.04 * nf),
                        cy + noise(rng, 0.04 * nf),
                        rng.random_range(0.025..0.05) * nf,
                    )
                })
                .collect();
            set(&|x, y| blobs.iter().any(|&(bx, by, r)| disc(bx, by, r)(x, y)));
        }
        Defect::Contamination => {
            let parts: Vec<(f64, f64, f64)> = (0..rng.random_range(4..8))
                .map(|_| {
                    (
                        cx + noise(rng, 0.06 * nf),
                        cy + noise(rng, 0.06 * nf),
                        (rng.random_range(0.02..0.032) * nf).max(1.2),
                    )
                })
                .collect();
            set(&|x, y| parts.iter().any(|&(bx, by, r)| disc(bx, by, r)(x, y)));
        }
        Defect::MissingPart => match s.pattern {
            Pattern::Object => {
                let (ox, oy) = s.centre;
                let r_cut = rng.random_range(0.19..0.24) * nf;
                let a0 = rng.random::<f64>() * 2.0 * PI;
                let span = rng.random_range(25.0f64..45.0).to_radians();
                set(&|x, y| {
                    let (rx, ry) = (x - ox, y - oy);
                    let d = (ry.atan2(rx) - a0).rem_euclid(2.0 * PI);
                    (rx * rx + ry * ry).sqrt() >= r_cut && d <= span
                });
            }
            _ => {
                let (w, h) = (
                    rng.random_range(0.12..0.19) * nf,
                    rng.random_range(0.12..0.19) * nf,
                );
                set(&|x, y| (x - cx).abs() <= w / 2.0 && (y - cy).abs() <= h / 2.0);
            }
        },
    }
    // Colours taken from the normal image itself: the defect is a wrong arrangement of
    // in-distribution colours, which a reconstruction alone does not erase.
    let period = (n / 8).max(2);
    let jitter = |c: [f64; 3], rng: &mut ChaCha8Rng| -> [f64; 3] {
        std::array::from_fn(|k| c[k] + noise(rng, 0.015))
    };
    // Stain source offset: half a weave period (a lattice break) for the regular texture,
    // far away for the irregular one.
    let (sx, sy) = match s.pattern {
        Pattern::Regular => (period / 2, period / 2),
        _ => (n / 3, n / 5),
    };
    for i in 0..n * n {
        if !region[i] || !s.body[i] {
            continue;
        }
        let (x, y) = (i % n, i / n);
        out[i] = match (defect, s.pattern) {
            // A bright scratch (background colour / weave highlight), or the darkest grain.
            (Defect::Scratch, Pattern::Object) => jitter(pal_bg(s, i), rng),
            (Defect::Scratch, Pattern::Regular) => jitter(pal.light, rng),
            (Defect::Scratch, Pattern::Irregular) => jitter(pal.dark, rng),
            // An extra hole in the bolt-hole / darkest texture colour.
            (Defect::Hole, _) => jitter(pal.dark, rng),
            (Defect::Stain, Pattern::Object) => jitter(pal_bg(s, i), rng),
            (Defect::Stain, Pattern::Regular) => s.img[((y + sy) % n) * n + (x + sx) % n],
            (Defect::Stain, Pattern::Irregular) => jitter(pal.dark, rng),
            (Defect::Contamination, Pattern::Object) => jitter(pal.dark, rng),
            (Defect::Contamination, _) => jitter(pal.light, rng),
            (Defect::MissingPart, Pattern::Object) => s.behind[i],
            // Textures: the lattice / grain is gone, leaving a flat patch of the material.
            (Defect::MissingPart, Pattern::Regular) => jitter(pal.mean, rng),
            (Defect::MissingPart, Pattern::Irregular) => jitter(pal.light, rng),
        };
    }
    out
}

/// Generates one sample. `split` names the random stream ("train" or "test"); `defect`
/// `None` gives a normal image. Used by [`synth_category`] for every file it writes.
pub fn synth_sample(
    spec: &SynthSpec,
    split: &str,
    defect: Option<Defect>,
    index: usize,
) -> SynthSample {
    let n = spec.size.clamp(16, 4096) as usize;
    let dname = defect.map(Defect::name).unwrap_or("good");
    let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(spec.seed, split, dname, index));
    let scene = render_normal(spec.pattern(), n, &mut rng);
    let normal = quantize(&scene.img, n);
    let Some(defect) = defect else {
        return SynthSample {
            image: normal.clone(),
            mask: GrayImage::new(n as u32, n as u32),
            normal,
        };
    };
    // Redraw until the defect covers 0.6–4.5 % of the image (inside the promised 0.5–5 %).
    let (lo, hi) = (
        (0.006 * (n * n) as f64).ceil() as usize,
        (0.045 * (n * n) as f64) as usize,
    );
    let mut best: Option<(RgbImage, GrayImage, usize)> = None;
    for _ in 0..32 {
        let image = quantize(&paint(&scene, defect, &mut rng), n);
        let mut count = 0;
        let mask = GrayImage::from_fn(n as u32, n as u32, |x, y| {
            let changed = image.get_pixel(x, y) != normal.get_pixel(x, y);
            count += usize::from(changed);
            Luma([if changed { 255 } else { 0 }])
        });
        let dist = |c: usize| if c < lo { lo - c } else { c.saturating_sub(hi) };
        if best.as_ref().is_none_or(|b| dist(count) < dist(b.2)) {
            best = Some((image, mask, count));
        }
        if (lo..=hi).contains(&count) {
            break;
        }
    }
    let (image, mask, _) =
        best.unwrap_or_else(|| (normal.clone(), GrayImage::new(n as u32, n as u32), 0));
    SynthSample {
        normal,
        image,
        mask,
    }
}

#[derive(Serialize)]
struct Meta<'a> {
    generator: &'static str,
    generator_version: u32,
    category: &'a str,
    kind: CategoryKind,
    pattern: Pattern,
    size: u32,
    seed: u64,
    train: usize,
    test_good: usize,
    test_bad: usize,
    defects: Vec<&'static str>,
}

/// Removes a half-written folder unless disarmed.
struct Cleanup(Option<PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn write_png(path: &Path, img: &image::DynamicImage) -> Result<(), DataError> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| DataError::Encode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    std::fs::write(path, bytes).map_err(|e| DataError::io(path, e))
}

/// Writes `out_dir/<category>` in MVTec layout (`train/good`, `test/<defect>`,
/// `ground_truth/<defect>/NNN_mask.png`, plus [`SYNTH_META`]) and returns its path.
///
/// Everything is written into a hidden sibling folder first and renamed into place at the
/// end, so a crash never leaves a half category under the real name. Refuses (before any
/// work) if the category folder exists and is not empty.
pub fn synth_category(spec: &SynthSpec, out_dir: &Path) -> Result<PathBuf, DataError> {
    spec.validate()?;
    let target = out_dir.join(&spec.category);
    let target_exists = match std::fs::read_dir(&target) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(DataError::Exists { dir: target });
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) if target.exists() => return Err(DataError::Exists { dir: target }),
        Err(e) => return Err(DataError::io(&target, e)),
    };
    std::fs::create_dir_all(out_dir).map_err(|e| DataError::io(out_dir, e))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = out_dir.join(format!(
        ".{}.tmp-{}-{nanos}",
        spec.category,
        std::process::id()
    ));
    std::fs::create_dir(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let mut guard = Cleanup(Some(tmp.clone()));

    let mkdir = |p: &Path| std::fs::create_dir_all(p).map_err(|e| DataError::io(p, e));
    let train_dir = tmp.join("train").join("good");
    mkdir(&train_dir)?;
    for i in 0..spec.train {
        let s = synth_sample(spec, "train", None, i);
        write_png(&train_dir.join(format!("{i:03}.png")), &s.image.into())?;
    }
    let good_dir = tmp.join("test").join("good");
    mkdir(&good_dir)?;
    for i in 0..spec.test_good {
        let s = synth_sample(spec, "test", None, i);
        write_png(&good_dir.join(format!("{i:03}.png")), &s.image.into())?;
    }
    if spec.test_bad > 0 {
        for d in Defect::ALL {
            let (img_dir, gt_dir) = (
                tmp.join("test").join(d.name()),
                tmp.join("ground_truth").join(d.name()),
            );
            mkdir(&img_dir)?;
            mkdir(&gt_dir)?;
            for i in 0..spec.test_bad {
                let s = synth_sample(spec, "test", Some(d), i);
                write_png(&img_dir.join(format!("{i:03}.png")), &s.image.into())?;
                write_png(&gt_dir.join(format!("{i:03}_mask.png")), &s.mask.into())?;
            }
        }
    }
    let meta = Meta {
        generator: "vqad-synth",
        generator_version: GENERATOR_VERSION,
        category: &spec.category,
        kind: spec.kind,
        pattern: spec.pattern(),
        size: spec.size,
        seed: spec.seed,
        train: spec.train,
        test_good: spec.test_good,
        test_bad: spec.test_bad,
        defects: if spec.test_bad > 0 {
            Defect::ALL.iter().map(|d| d.name()).collect()
        } else {
            vec![]
        },
    };
    let meta_path = tmp.join(SYNTH_META);
    let json =
        serde_json::to_string_pretty(&meta).map_err(|e| DataError::Invalid(e.to_string()))?;
    std::fs::write(&meta_path, json + "\n").map_err(|e| DataError::io(&meta_path, e))?;

    if target_exists {
        // Empty (checked above); rename cannot replace a folder on every platform.
        std::fs::remove_dir(&target).map_err(|e| DataError::io(&target, e))?;
    }
    std::fs::rename(&tmp, &target).map_err(|e| match e.kind() {
        std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists => {
            DataError::Exists {
                dir: target.clone(),
            }
        }
        _ => DataError::io(&target, e),
    })?;
    guard.0 = None;
    Ok(target)
}
