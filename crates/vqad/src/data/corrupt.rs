//! Synthetic corruptions for denoising training (an option beyond the paper).
//!
//! Why: a VQ-VAE trained only to reproduce its input also reproduces a foreign patch or a
//! stain well enough that neither the reconstruction error nor the prior flags it (issue 11's
//! finding on real photographs). Trained to map a corrupted input back to the clean image, the
//! encoder learns to give such regions normal codes, so the restored image differs from the
//! input exactly where something does not belong.

use ndarray::Array3;
use rand::Rng;

/// Pastes one random blob into `img` [C, H, W] and returns the corrupted copy: an ellipse of
/// 1/16 to 1/4 of the side, filled with a patch of `donor` taken elsewhere (contrast possibly
/// inverted), a flat random colour, or the image's own pixels darkened or brightened. Values
/// stay in [0, 1]; the blob's edge is feathered over one pixel so it is not a hard step.
pub fn paste_blob<R: Rng>(img: &Array3<f32>, donor: &Array3<f32>, rng: &mut R) -> Array3<f32> {
    let (c, h, w) = img.dim();
    let mut out = img.clone();
    if h < 8 || w < 8 || donor.dim() != img.dim() {
        return out;
    }
    let side = h.min(w) as f32;
    let ry = rng.random_range(side / 32.0..side / 8.0).max(2.0);
    let rx = (ry * rng.random_range(0.5f32..2.0)).clamp(2.0, side / 4.0);
    let cy = rng.random_range(0.0..h as f32);
    let cx = rng.random_range(0.0..w as f32);
    // Where the donor patch comes from (same shape, another place).
    let (dy, dx) = (rng.random_range(0.0..h as f32) - cy, rng.random_range(0.0..w as f32) - cx);
    let kind = rng.random_range(0..3u8);
    let invert = rng.random_bool(0.5);
    let colour: Vec<f32> = (0..c).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let gain = if rng.random_bool(0.5) { rng.random_range(0.2f32..0.6) } else { rng.random_range(1.5f32..2.5) };
    for y in 0..h {
        for x in 0..w {
            let (ny, nx) = ((y as f32 - cy) / ry, (x as f32 - cx) / rx);
            let r = (ny * ny + nx * nx).sqrt();
            // 1 inside, 0 outside, linear over the last pixel of the radius.
            let a = ((1.0 - r) * ry.min(rx)).clamp(0.0, 1.0);
            if a == 0.0 {
                continue;
            }
            let sy = ((y as f32 + dy).rem_euclid(h as f32) as usize).min(h - 1);
            let sx = ((x as f32 + dx).rem_euclid(w as f32) as usize).min(w - 1);
            for ch in 0..c {
                let v = img[[ch, y, x]];
                let fill = match kind {
                    0 => {
                        let d = donor[[ch, sy, sx]];
                        if invert {
                            1.0 - d
                        } else {
                            d
                        }
                    }
                    1 => colour[ch],
                    _ => (v * gain).clamp(0.0, 1.0),
                };
                out[[ch, y, x]] = v + a * (fill - v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn a_blob_changes_a_bounded_connected_region_and_stays_in_range() {
        let img = Array3::from_elem((3, 64, 64), 0.5f32);
        let donor = Array3::from_shape_fn((3, 64, 64), |(c, y, x)| ((c + y * 3 + x * 7) % 17) as f32 / 16.0);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut changed_any = 0;
        for _ in 0..200 {
            let out = paste_blob(&img, &donor, &mut rng);
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
            let changed = out.iter().zip(img.iter()).filter(|(a, b)| (*a - *b).abs() > 1e-6).count() / 3;
            // At most an ellipse of radius side/8 by side/4 (π·8·16 ≈ 402 px), wrapped or not.
            assert!(changed <= 420, "{changed}");
            changed_any += (changed > 0) as usize;
        }
        // A flat colour equal to 0.5 or a gain on 0.5 clamped to itself can leave it unchanged,
        // but nearly every draw must change something.
        assert!(changed_any > 180, "{changed_any}");
        // Same seed, same corruption.
        let a = paste_blob(&img, &donor, &mut ChaCha8Rng::seed_from_u64(9));
        let b = paste_blob(&img, &donor, &mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(a, b);
    }

    #[test]
    fn tiny_or_mismatched_images_are_returned_unchanged() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let small = Array3::from_elem((1, 4, 4), 0.3f32);
        assert_eq!(paste_blob(&small, &small, &mut rng), small);
        let img = Array3::from_elem((3, 16, 16), 0.3f32);
        let other = Array3::from_elem((1, 16, 16), 0.9f32);
        assert_eq!(paste_blob(&img, &other, &mut rng), img);
    }
}
