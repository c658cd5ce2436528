#!/usr/bin/env python3
"""Real-photo development set for vqad, in MVTec AD layout, from photographs that ship inside
PyPI packages (scikit-image, PyWavelets): three textures and one object category, each with
painted defects and exact masks (a mask is 255 exactly where the painted defect replaced the
photograph's pixels).

    python tools/make-devset.py OUT_DIR [--size 128] [--train 200] [--seed 0]

Textures (crops at native scale; the test crops come from a region of the photograph that no
training crop touches):
  ihc    scikit-image immunohistochemistry (RGB, stained tissue)
  moon   scikit-image moon (grayscale lunar surface, stored as RGB)
  aero   PyWavelets aero (grayscale aerial photograph, stored as RGB)
Object:
  coins  the 24 coins of scikit-image's coins, each centred in its own image; 18 coins make the
         training images (small shifts, rotations, brightness changes), the other 6 the test.
Stochastic and fibrous textures (in the default set since issue 21):
  hubble  scikit-image hubble_deep_field (RGB, stochastic: galaxies on a dark sky)
  fur     the raccoon's body fur of SciPy's `face` photograph (grayscale, stored as RGB;
          fibrous: long thin strands, like grass); SciPy stopped shipping the photograph in its
          wheel after 1.11, so tools/setup-devset.sh takes face.dat out of the scipy 1.11.4
          wheel from PyPI (pinned by sha256) and passes its path in VQAD_DEVSET_FACE
Extra textures (not in the default set; a check that the defaults carry over to textures they
were not chosen on):
  retina  the central 800² of scikit-image retina (RGB fundus photograph: fibrous vessels)
  hubble_gray, retina_gray   hubble and retina in grayscale (stored as RGB, like moon and aero)

scikit-image's brick, gravel and grass are held out for acceptance: refused unless
--allow-held-out is given, which is for that acceptance check alone (the development sessions
never ran it).
Defect types: hole (dark ellipse), stain (tinted blob), scratch (thin bright or dark polyline),
foreign (a blob of another photograph's texture). Deterministic for a given seed.
"""
import argparse
import os
import shutil
import sys

import numpy as np
from PIL import Image, ImageDraw

HELD_OUT = {"brick", "gravel", "grass"}

# Each category's random stream is seeded by a fixed number, so a category's images do not
# depend on which others are generated with it (these reproduce the earlier runs' data).
SEED_INDEX = {"ihc": 0, "moon": 1, "aero": 2, "coins": 3, "hubble": 0, "retina": 1, "hubble_gray": 2, "retina_gray": 3,
              "fur": 4}


def rgb(a):
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return a[..., :3].astype(np.uint8)


def texture_loaders():
    """Each texture category's photograph, as a loader (nothing is read until it is called)."""
    import pywt.data
    import skimage.data as d

    def retina():
        a = d.retina()
        c = a.shape[0] // 2
        return rgb(a[c - 400:c + 400, c - 400:c + 400])

    def gray(a):
        g = np.asarray(a, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return rgb(np.clip(np.round(g), 0, 255).astype(np.uint8))

    def fur():
        # SciPy's raccoon (768×1024 RGB, bz2-compressed raw bytes). Its body fur fills the top
        # left 290×430 (a leaf starts below row 280); mirrored, so the lighter fur by the head
        # falls in the training region and the test crops (right-hand part) are body fur.
        import bz2
        path = os.environ.get("VQAD_DEVSET_FACE")
        if not path:
            sys.exit("make-devset: 'fur' needs SciPy's face.dat; run it through tools/devset-eval.sh, or set VQAD_DEVSET_FACE to the path tools/setup-devset.sh --face prints")
        a = np.frombuffer(bz2.decompress(open(path, "rb").read()), np.uint8).reshape(768, 1024, 3)
        return gray(a[0:280, 0:430][:, ::-1])

    return {
        "ihc": lambda: rgb(d.immunohistochemistry()),
        "moon": lambda: rgb(d.moon()),
        "aero": lambda: rgb(pywt.data.aero()),
        "hubble": lambda: rgb(d.hubble_deep_field()),
        "retina": retina,
        "hubble_gray": lambda: gray(d.hubble_deep_field()),
        "retina_gray": lambda: gray(retina()),
        "fur": fur,
        "brick": lambda: rgb(d.brick()),
        "gravel": lambda: rgb(d.gravel()),
        "grass": lambda: rgb(d.grass()),
    }


def save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".partial.png"
    Image.fromarray(arr).save(tmp)
    os.replace(tmp, path)


def blob_mask(rng, size, area_frac):
    """A random closed blob (polygon around a centre) covering about area_frac of the image."""
    r = np.sqrt(area_frac * size * size / np.pi)
    cx, cy = rng.uniform(r + 2, size - r - 2, 2)
    n = 12
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.6, 1.4, n)
    pts = [(cx + a * np.cos(t), cy + a * np.sin(t)) for a, t in zip(rad, ang)]
    m = Image.new("L", (size, size), 0)
    ImageDraw.Draw(m).polygon(pts, fill=255)
    return np.array(m) > 0


def ellipse_mask(rng, size, area_frac):
    r = np.sqrt(area_frac * size * size / np.pi)
    ar = rng.uniform(0.6, 1.6)
    rx, ry = r * ar, r / ar
    cx, cy = rng.uniform(max(rx, ry) + 2, size - max(rx, ry) - 2, 2)
    m = Image.new("L", (size, size), 0)
    ImageDraw.Draw(m).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    return np.array(m) > 0


def scratch_mask(rng, size):
    m = Image.new("L", (size, size), 0)
    x, y = rng.uniform(0.2 * size, 0.8 * size, 2)
    ang = rng.uniform(0, np.pi)
    pts = [(x, y)]
    for _ in range(3):
        ang += rng.uniform(-0.4, 0.4)
        step = rng.uniform(0.1, 0.2) * size
        x, y = x + step * np.cos(ang), y + step * np.sin(ang)
        pts.append((x, y))
    ImageDraw.Draw(m).line(pts, fill=255, width=int(rng.integers(2, 4)))
    return np.array(m) > 0


def paint(img, kind, rng, foreign_src, region=None):
    """Returns (defective image, mask). `region` (bool array) limits where the defect may lie
    (the coin itself for the object category)."""
    s = img.shape[0]
    for _ in range(50):
        if kind == "hole":
            m = ellipse_mask(rng, s, rng.uniform(0.006, 0.02))
        elif kind == "stain":
            m = blob_mask(rng, s, rng.uniform(0.01, 0.03))
        elif kind == "scratch":
            m = scratch_mask(rng, s)
        else:
            m = blob_mask(rng, s, rng.uniform(0.01, 0.03))
        if region is None or (m & ~region).sum() == 0:
            break
    out = img.astype(np.float32).copy()
    if kind == "hole":
        shade = rng.uniform(10, 40)
        out[m] = shade + rng.normal(0, 3, (m.sum(), 1))
    elif kind == "stain":
        tint = rng.uniform(-1, 1, 3)
        tint = tint / (np.abs(tint).max() + 1e-6) * rng.uniform(40, 70)
        out[m] = out[m] * rng.uniform(0.7, 0.9) + tint
    elif kind == "scratch":
        out[m] = rng.choice([rng.uniform(220, 250), rng.uniform(5, 30)])
    else:
        fh, fw = foreign_src.shape[:2]
        y, x = rng.integers(0, fh - s), rng.integers(0, fw - s)
        out[m] = foreign_src[y:y + s, x:x + s][m]
    out = np.clip(out, 0, 255).astype(np.uint8)
    changed = (out != img).any(axis=-1)
    return out, (m & changed)


DEFECTS = ["hole", "stain", "scratch", "foreign"]


def write_category(out, name, train_imgs, test_good, test_bases, rng, foreign_src, regions=None):
    root = os.path.join(out, name)
    for i, a in enumerate(train_imgs):
        save(os.path.join(root, "train", "good", f"{i:03d}.png"), a)
    for i, a in enumerate(test_good):
        save(os.path.join(root, "test", "good", f"{i:03d}.png"), a)
    per = len(test_bases) // len(DEFECTS)
    for di, kind in enumerate(DEFECTS):
        for j in range(per):
            idx = di * per + j
            base = test_bases[idx]
            region = None if regions is None else regions[idx]
            img, m = paint(base, kind, rng, foreign_src, region)
            save(os.path.join(root, "test", kind, f"{j:03d}.png"), img)
            save(os.path.join(root, "ground_truth", kind, f"{j:03d}_mask.png"), (m * 255).astype(np.uint8))


def texture(out, name, photo, foreign_src, size, n_train, n_good, n_bad, rng):
    h, w = photo.shape[:2]
    # The right-hand quarter (at least one crop wide) is the test region; training crops stay
    # strictly left of it, so no test pixel was ever seen in training.
    cut = w - max(size + size // 4, w // 4)
    def crops(x0, x1, n):
        res = []
        for _ in range(n):
            y = rng.integers(0, h - size + 1)
            x = rng.integers(x0, x1 - size + 1)
            res.append(photo[y:y + size, x:x + size].copy())
        return res
    train = crops(0, cut, n_train)
    good = crops(cut, w, n_good)
    bases = crops(cut, w, n_bad)
    write_category(out, name, train, good, bases, rng, foreign_src)


def coin_crops(size):
    """The 24 coins of skimage's coins, each as a square crop centred on the coin, plus its
    disc mask, in reading order."""
    import skimage.data as d
    from skimage import filters, measure, morphology, segmentation

    img = d.coins()
    edges = filters.sobel(img)
    markers = np.zeros_like(img)
    markers[img < 30] = 1
    markers[img > 150] = 2
    seg = segmentation.watershed(edges, markers) == 2
    from scipy import ndimage as ndi

    seg = ndi.binary_fill_holes(seg)
    seg = ndi.binary_opening(seg, iterations=1)
    lab = measure.label(seg)
    props = [p for p in measure.regionprops(lab) if p.area > 150]
    props.sort(key=lambda p: (round(p.centroid[0] / 60), p.centroid[1]))
    return img, props


def coins(out, size, n_train, rng, foreign_src, n_good, n_bad):
    img, props = coin_crops(size)
    if len(props) < 20:
        sys.exit(f"make-devset: found only {len(props)} coins in skimage's coins image")
    padded = np.pad(img, 64, mode="edge")
    def coin(p, dx=0, dy=0, rot=0.0, gain=1.0):
        cy, cx = p.centroid
        r = max(p.bbox[2] - p.bbox[0], p.bbox[3] - p.bbox[1]) / 2
        half = int(np.ceil(r * 1.35))
        y0, x0 = int(round(cy)) + 64 - half + dy, int(round(cx)) + 64 - half + dx
        c = padded[y0:y0 + 2 * half, x0:x0 + 2 * half]
        im = Image.fromarray(c).rotate(rot, resample=Image.BILINEAR).resize((size, size), Image.BILINEAR)
        a = np.clip(np.asarray(im, np.float32) * gain, 0, 255).astype(np.uint8)
        # The coin's disc at the output scale, for keeping defects on the coin.
        yy, xx = np.mgrid[0:size, 0:size]
        rr = r / (2 * half) * size * 0.9
        region = (yy - size / 2 + dy * size / (2 * half)) ** 2 + (xx - size / 2 + dx * size / (2 * half)) ** 2 < rr ** 2
        return rgb(a), region
    order = rng.permutation(len(props))
    test_ids, train_ids = order[:6], order[6:]
    def variant(p):
        return coin(p, int(rng.integers(-3, 4)), int(rng.integers(-3, 4)), float(rng.uniform(-10, 10)), float(rng.uniform(0.9, 1.1)))
    train = [variant(props[train_ids[i % len(train_ids)]])[0] for i in range(n_train)]
    good = [variant(props[test_ids[i % len(test_ids)]])[0] for i in range(n_good)]
    bases, regions = [], []
    for i in range(n_bad):
        a, r = variant(props[test_ids[i % len(test_ids)]])
        bases.append(a)
        regions.append(r)
    write_category(out, "coins", train, good, bases, rng, foreign_src, regions)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--train", type=int, default=200)
    # 64 + 128 test images: with 16 + 32, image accuracy moved by up to 0.1 between two trainings
    # of the same preset (one good image is 1/32 of it); the training images do not depend on these.
    ap.add_argument("--test-good", type=int, default=64, help="good test images")
    ap.add_argument("--test-bad", type=int, default=128, help="defective test images, split over the four defect types")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--categories", default="ihc,moon,aero,coins,hubble,fur")
    ap.add_argument("--allow-held-out", action="store_true", help="allow brick, gravel, grass (the acceptance check only)")
    a = ap.parse_args()
    cats = a.categories.split(",")
    loaders = texture_loaders()
    known = set(loaders) | {"coins"}
    for c in cats:
        if c not in known:
            sys.exit(f"make-devset: unknown category '{c}' (choose from {', '.join(sorted(known - HELD_OUT))})")
        if c in HELD_OUT and not a.allow_held_out:
            sys.exit(f"make-devset: '{c}' is held out for acceptance and is not part of the development set")
    # ihc and aero give the foreign patches, so they are always loaded.
    src = {n: load() for n, load in loaders.items() if n in cats or n in ("ihc", "aero")}
    for ci, c in enumerate(cats):
        rng = np.random.default_rng(a.seed * 1000 + SEED_INDEX.get(c, 100 + ci))
        if os.path.exists(os.path.join(a.out, c)):
            print(f"make-devset: {a.out}/{c} exists, keeping it", file=sys.stderr)
            continue
        # Foreign patches come from a different photograph than the category's own.
        foreign = src["ihc" if c != "ihc" else "aero"]
        # Written under a temporary name and renamed when complete, so an interrupted run never
        # leaves a half category that the next run would keep.
        tmp = os.path.join(a.out, f".{c}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        if c == "coins":
            coins(tmp, a.size, a.train, rng, foreign, a.test_good, a.test_bad)
            os.rename(os.path.join(tmp, "coins"), os.path.join(a.out, c))
        else:
            texture(tmp, c, src[c], foreign, a.size, a.train, a.test_good, a.test_bad, rng)
            os.rename(os.path.join(tmp, c), os.path.join(a.out, c))
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"make-devset: wrote {a.out}/{c}", file=sys.stderr)


if __name__ == "__main__":
    main()
