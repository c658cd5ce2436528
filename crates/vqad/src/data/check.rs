//! `check`: inspect a category folder and list everything wrong with it at once, instead of
//! failing on the first bad file halfway through a training run.

use super::decode::DecodeLimits;
use super::image_io::{decode, is_image_path};
use super::mvtec::{find_mask, is_mask_name, kind_from_name};
use super::synth::SYNTH_META;
use super::DataError;
use crate::config::CategoryKind;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// What kind of problem a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// `train/good` or `test` is missing.
    MissingFolder,
    /// `train/good` holds no image.
    EmptyTrain,
    /// A file with an image extension that does not decode.
    Unreadable,
    /// An image over the decode limits (refused from its header, never decoded).
    TooLarge,
    /// A defective test image without `ground_truth/<defect>/<stem>_mask.png`.
    MissingMask,
    /// A mask whose width × height differ from its image's.
    MaskSizeMismatch,
    /// A mask with values other than 0 and full scale.
    MaskNotBinary,
    /// A mask with no test image it belongs to.
    OrphanMask,
    /// A file or folder that has no place in the layout.
    UnknownFile,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ProblemKind::MissingFolder => "missing folder",
            ProblemKind::EmptyTrain => "empty train/good",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::TooLarge => "too large",
            ProblemKind::MissingMask => "missing mask",
            ProblemKind::MaskSizeMismatch => "mask size differs",
            ProblemKind::MaskNotBinary => "mask not binary",
            ProblemKind::OrphanMask => "orphan mask",
            ProblemKind::UnknownFile => "unknown file",
        };
        f.write_str(s)
    }
}

/// One problem, with the path it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub path: PathBuf,
    pub detail: String,
}

/// What [`check_category`] found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub root: PathBuf,
    pub name: String,
    /// Kind implied by an MVTec name (None for other names).
    pub kind: Option<CategoryKind>,
    /// Image files in train/good.
    pub train_good: usize,
    /// Image files per test folder ("good" and each defect type).
    pub test: BTreeMap<String, usize>,
    /// Mask files found for defective test images.
    pub masks: usize,
    /// Decoded images (train and test, not masks) per "WIDTHxHEIGHT".
    pub image_sizes: BTreeMap<String, usize>,
    /// Decoded images per channel count (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA).
    pub channels: BTreeMap<String, usize>,
    /// Decoded images per sample layout as the decoder reports it ("Rgb8", "L16", …).
    pub color_types: BTreeMap<String, usize>,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    /// Test images that are not "good".
    pub fn test_defective(&self) -> usize {
        self.test
            .iter()
            .filter(|(k, _)| *k != "good")
            .map(|(_, v)| v)
            .sum()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Some(CategoryKind::Texture) => " (MVTec texture)",
            Some(CategoryKind::Object) => " (MVTec object)",
            None => "",
        };
        let join = |m: &BTreeMap<String, usize>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        writeln!(f, "category {}{kind} at {}", self.name, self.root.display())?;
        writeln!(f, "  train/good: {} images", self.train_good)?;
        writeln!(
            f,
            "  test: {} (defective: {}, masks: {})",
            join(&self.test),
            self.test_defective(),
            self.masks
        )?;
        writeln!(f, "  sizes: {}", join(&self.image_sizes))?;
        writeln!(
            f,
            "  channels: {}  ({})",
            join(&self.channels),
            join(&self.color_types)
        )?;
        if self.problems.is_empty() {
            writeln!(f, "  problems: none")
        } else {
            writeln!(f, "  problems: {}", self.problems.len())?;
            for p in &self.problems {
                writeln!(f, "    - {}: {}: {}", p.kind, p.path.display(), p.detail)?;
            }
            Ok(())
        }
    }
}

struct Info {
    w: u32,
    h: u32,
    channels: u8,
    color: String,
    /// For masks: whether every sample is 0 or full scale.
    binary: bool,
}

fn probe(path: &Path, limits: &DecodeLimits) -> Result<Info, DataError> {
    let img = decode(path, limits)?;
    let binary = match &img {
        image::DynamicImage::ImageLuma8(b) => b.as_raw().iter().all(|&v| v == 0 || v == 255),
        image::DynamicImage::ImageLuma16(b) => b.as_raw().iter().all(|&v| v == 0 || v == 65535),
        other => other
            .to_luma8()
            .as_raw()
            .iter()
            .all(|&v| v == 0 || v == 255),
    };
    let color = img.color();
    Ok(Info {
        w: img.width(),
        h: img.height(),
        channels: color.channel_count(),
        color: format!("{color:?}"),
        binary,
    })
}

/// Decodes all paths on all cores, results in input order.
fn probe_all(paths: &[PathBuf], limits: &DecodeLimits) -> Vec<Result<Info, DataError>> {
    super::image_io::par_map_paths(paths, |p| probe(p, limits))
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        v.push(e.map_err(|e| DataError::io(dir, e))?.path());
    }
    v.sort();
    Ok(v)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Checks an MVTec-style category folder. Only an unreadable `dir` itself is an `Err`;
/// everything wrong inside it is listed in [`CheckReport::problems`].
pub fn check_category(dir: &Path) -> Result<CheckReport, DataError> {
    check_category_within(dir, &DecodeLimits::default())
}

/// [`check_category`] within `limits`: an image over them is a [`ProblemKind::TooLarge`]
/// problem, found from its header without decoding it.
pub fn check_category_within(dir: &Path, limits: &DecodeLimits) -> Result<CheckReport, DataError> {
    let top = entries(dir)?;
    let name = {
        let n = file_name(dir);
        if n.is_empty() {
            dir.canonicalize()
                .ok()
                .map(|p| file_name(&p))
                .unwrap_or_default()
        } else {
            n
        }
    };
    let mut r = CheckReport {
        root: dir.to_path_buf(),
        kind: kind_from_name(&name),
        name,
        train_good: 0,
        test: BTreeMap::new(),
        masks: 0,
        image_sizes: BTreeMap::new(),
        channels: BTreeMap::new(),
        color_types: BTreeMap::new(),
        problems: Vec::new(),
    };
    let problem = |r: &mut CheckReport, kind, path: &Path, detail: String| {
        r.problems.push(Problem {
            kind,
            path: path.to_path_buf(),
            detail,
        })
    };
    const ROOT_FILES: [&str; 3] = [SYNTH_META, "license.txt", "readme.txt"];
    for p in &top {
        let n = file_name(p);
        let known = if p.is_dir() {
            ["train", "test", "ground_truth"].contains(&n.as_str())
        } else {
            ROOT_FILES.contains(&n.as_str())
        };
        if !known {
            problem(
                &mut r,
                ProblemKind::UnknownFile,
                p,
                "not part of the MVTec layout".into(),
            );
        }
    }

    // Images to decode, with what they are: (path, Some((defect, mask path)) for defective).
    let mut images: Vec<PathBuf> = Vec::new();
    let mut pairs: Vec<(PathBuf, PathBuf)> = Vec::new(); // (image, mask) to compare sizes

    let train = dir.join("train");
    let good = train.join("good");
    if train.is_dir() {
        for p in entries(&train)? {
            if p != good {
                problem(
                    &mut r,
                    ProblemKind::UnknownFile,
                    &p,
                    "train/ should hold only good/".into(),
                );
            }
        }
    }
    if good.is_dir() {
        for p in entries(&good)? {
            if p.is_file() && is_image_path(&p) {
                r.train_good += 1;
                images.push(p);
            } else {
                problem(
                    &mut r,
                    ProblemKind::UnknownFile,
                    &p,
                    "not an image file".into(),
                );
            }
        }
        if r.train_good == 0 {
            problem(
                &mut r,
                ProblemKind::EmptyTrain,
                &good,
                "no training images".into(),
            );
        }
    } else {
        problem(
            &mut r,
            ProblemKind::MissingFolder,
            &good,
            "training images are required".into(),
        );
    }

    let test = dir.join("test");
    let gt = dir.join("ground_truth");
    // Stems of test images per defect, to find orphan masks.
    let mut stems: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if test.is_dir() {
        for d in entries(&test)? {
            if !d.is_dir() {
                problem(
                    &mut r,
                    ProblemKind::UnknownFile,
                    &d,
                    "test/ should hold only folders".into(),
                );
                continue;
            }
            let defect = file_name(&d);
            let mut count = 0;
            for p in entries(&d)? {
                if !(p.is_file() && is_image_path(&p)) {
                    problem(
                        &mut r,
                        ProblemKind::UnknownFile,
                        &p,
                        "not an image file".into(),
                    );
                    continue;
                }
                count += 1;
                let stem = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                stems.entry(defect.clone()).or_default().push(stem.clone());
                if defect != "good" {
                    let gdir = gt.join(&defect);
                    // The same lookup as Category::open, so check and training agree.
                    let found = find_mask(dir, &defect, &p).ok();
                    match found {
                        Some(m) => {
                            r.masks += 1;
                            pairs.push((p.clone(), m));
                        }
                        None => problem(
                            &mut r,
                            ProblemKind::MissingMask,
                            &p,
                            format!(
                                "expected {}",
                                gdir.join(format!("{stem}_mask.png")).display()
                            ),
                        ),
                    }
                }
                images.push(p);
            }
            r.test.insert(defect, count);
        }
    } else {
        problem(
            &mut r,
            ProblemKind::MissingFolder,
            &test,
            "no test images".into(),
        );
    }

    if gt.is_dir() {
        for d in entries(&gt)? {
            if !d.is_dir() {
                problem(
                    &mut r,
                    ProblemKind::UnknownFile,
                    &d,
                    "ground_truth/ should hold only folders".into(),
                );
                continue;
            }
            let defect = file_name(&d);
            let known = stems.get(&defect);
            for m in entries(&d)? {
                if !(m.is_file() && is_mask_name(&m)) {
                    problem(
                        &mut r,
                        ProblemKind::UnknownFile,
                        &m,
                        "not a <stem>_mask image".into(),
                    );
                    continue;
                }
                let stem = m
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let stem = stem.trim_end_matches("_mask").to_string();
                if defect == "good" || !known.is_some_and(|k| k.contains(&stem)) {
                    problem(
                        &mut r,
                        ProblemKind::OrphanMask,
                        &m,
                        format!("no test image test/{defect}/{stem}.*"),
                    );
                }
            }
        }
    }

    // Decode everything once: images, then masks.
    let masks: Vec<PathBuf> = pairs.iter().map(|(_, m)| m.clone()).collect();
    let img_info = probe_all(&images, limits);
    let mask_info = probe_all(&masks, limits);
    let mut dims: BTreeMap<PathBuf, (u32, u32)> = BTreeMap::new();
    for (p, info) in images.iter().zip(img_info) {
        match info {
            Ok(i) => {
                *r.image_sizes.entry(format!("{}x{}", i.w, i.h)).or_default() += 1;
                *r.channels.entry(i.channels.to_string()).or_default() += 1;
                *r.color_types.entry(i.color).or_default() += 1;
                dims.insert(p.clone(), (i.w, i.h));
            }
            Err(e) => problem(&mut r, unreadable_kind(&e), p, error_reason(&e)),
        }
    }
    for ((img, m), info) in pairs.iter().zip(mask_info) {
        match info {
            Ok(i) => {
                if let Some(&(w, h)) = dims.get(img) {
                    if (w, h) != (i.w, i.h) {
                        problem(
                            &mut r,
                            ProblemKind::MaskSizeMismatch,
                            m,
                            format!(
                                "mask is {}x{}, image {} is {w}x{h}",
                                i.w,
                                i.h,
                                img.display()
                            ),
                        );
                    }
                }
                if !i.binary {
                    problem(
                        &mut r,
                        ProblemKind::MaskNotBinary,
                        m,
                        "values other than 0 and 255".into(),
                    );
                }
            }
            Err(e) => problem(&mut r, unreadable_kind(&e), m, error_reason(&e)),
        }
    }
    r.problems.sort_by(|a, b| {
        a.path
            .cmp(&b.path)
            .then((a.kind as u8).cmp(&(b.kind as u8)))
    });
    Ok(r)
}

fn unreadable_kind(e: &DataError) -> ProblemKind {
    match e {
        DataError::TooLarge { .. } | DataError::FileTooLarge { .. } => ProblemKind::TooLarge,
        _ => ProblemKind::Unreadable,
    }
}

/// The error without its leading path (the problem already carries it).
fn error_reason(e: &DataError) -> String {
    match e {
        DataError::Decode { reason, .. } => format!("cannot decode image: {reason}"),
        DataError::Io { source, .. } => source.to_string(),
        DataError::TooLarge { path, .. } | DataError::FileTooLarge { path, .. } => {
            let s = e.to_string();
            s.strip_prefix(&format!("{}: ", path.display())).map(str::to_string).unwrap_or(s)
        }
        other => other.to_string(),
    }
}
