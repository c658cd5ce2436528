//! The MVTec AD folder layout and the deterministic validation split.
//!
//! ```text
//! CATEGORY/train/good/*.png
//! CATEGORY/test/<defect>/*.png            (<defect> = "good" for normal test images)
//! CATEGORY/ground_truth/<defect>/<stem>_mask.png   (none for "good")
//! ```

use super::image_io::{is_image_path, list_images, IMAGE_EXTENSIONS};
use super::synth::SYNTH_META;
use super::DataError;
use crate::config::CategoryKind;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The five MVTec AD texture categories.
pub const MVTEC_TEXTURES: [&str; 5] = ["carpet", "grid", "leather", "tile", "wood"];
/// The ten MVTec AD object categories.
pub const MVTEC_OBJECTS: [&str; 10] = [
    "bottle",
    "cable",
    "capsule",
    "hazelnut",
    "metal_nut",
    "pill",
    "screw",
    "toothbrush",
    "transistor",
    "zipper",
];

/// One test image with its defect type (`"good"` for normals) and its mask (None for normals).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestItem {
    pub path: PathBuf,
    pub defect: String,
    pub mask: Option<PathBuf>,
}

/// An MVTec-style category on disk; all lists are sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Category {
    pub root: PathBuf,
    pub name: String,
    pub train_good: Vec<PathBuf>,
    pub test: Vec<TestItem>,
}

/// Texture or object for an MVTec category name (case-insensitive; `metal nut`/`metal-nut`
/// accepted), `None` for names MVTec does not have.
pub fn kind_from_name(name: &str) -> Option<CategoryKind> {
    let n = name.trim().to_ascii_lowercase().replace([' ', '-'], "_");
    if MVTEC_TEXTURES.contains(&n.as_str()) {
        Some(CategoryKind::Texture)
    } else if MVTEC_OBJECTS.contains(&n.as_str()) {
        Some(CategoryKind::Object)
    } else {
        None
    }
}

fn category_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_owned())
        .or_else(|| {
            dir.canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_owned()))
        })
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "category".into())
}

/// The mask MVTec would have for `image` of `defect`: `<stem>_mask.png`, or the same stem with
/// another image extension if a dataset was re-encoded.
pub(crate) fn find_mask(root: &Path, defect: &str, image: &Path) -> Result<PathBuf, DataError> {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = root.join("ground_truth").join(defect);
    let expected = dir.join(format!("{stem}_mask.png"));
    if expected.is_file() {
        return Ok(expected);
    }
    for ext in IMAGE_EXTENSIONS {
        for e in [ext.to_string(), ext.to_ascii_uppercase()] {
            let p = dir.join(format!("{stem}_mask.{e}"));
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(DataError::MissingMask {
        image: image.to_path_buf(),
        expected,
    })
}

impl Category {
    /// Opens a full category: train/good must hold images, test/ must exist, and every
    /// defective test image must have its mask (the error names the image that lacks one).
    pub fn open(dir: &Path) -> Result<Category, DataError> {
        let mut c = Self::open_train_only(dir)?;
        let test_dir = dir.join("test");
        if !test_dir.is_dir() {
            return Err(DataError::Layout {
                dir: dir.to_path_buf(),
                reason: "no test/ folder".into(),
            });
        }
        let mut defects = Vec::new();
        for e in std::fs::read_dir(&test_dir).map_err(|e| DataError::io(&test_dir, e))? {
            let p = e.map_err(|e| DataError::io(&test_dir, e))?.path();
            if p.is_dir() {
                defects.push(p);
            }
        }
        defects.sort();
        for d in defects {
            let defect = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for path in list_images(&d)? {
                let mask = if defect == "good" {
                    None
                } else {
                    Some(find_mask(dir, &defect, &path)?)
                };
                c.test.push(TestItem {
                    path,
                    defect: defect.clone(),
                    mask,
                });
            }
        }
        Ok(c)
    }

    /// Opens only what training needs (train/good), so a training set without test data works.
    pub fn open_train_only(dir: &Path) -> Result<Category, DataError> {
        let md = std::fs::metadata(dir).map_err(|e| DataError::io(dir, e))?;
        if !md.is_dir() {
            return Err(DataError::Layout {
                dir: dir.to_path_buf(),
                reason: "not a folder".into(),
            });
        }
        let good = dir.join("train").join("good");
        if !good.is_dir() {
            return Err(DataError::Layout {
                dir: dir.to_path_buf(),
                reason: "no train/good/ folder".into(),
            });
        }
        let train_good = list_images(&good)?;
        if train_good.is_empty() {
            return Err(DataError::EmptyTrain { dir: good });
        }
        Ok(Category {
            root: dir.to_path_buf(),
            name: category_name(dir),
            train_good,
            test: Vec::new(),
        })
    }

    /// Texture or object, in order of authority: the configured kind, the MVTec name, the
    /// kind recorded by the synthetic generator in `synth.json`, else `Object` — the safe
    /// default, since ±10° rotation does not harm a texture while 90° turns and flips would
    /// teach an oriented object false normals.
    pub fn kind(&self, configured: Option<CategoryKind>) -> CategoryKind {
        configured
            .or_else(|| kind_from_name(&self.name))
            .or_else(|| synth_kind(&self.root))
            .unwrap_or_else(|| {
                tracing::warn!(
                    "category '{}': kind unknown (not an MVTec name), training it as an object; pass --kind texture or --kind object",
                    self.name
                );
                CategoryKind::Object
            })
    }

    /// Defect types present in the test split (without "good"), sorted.
    pub fn defect_types(&self) -> Vec<String> {
        let mut d: Vec<String> = self
            .test
            .iter()
            .filter(|t| t.defect != "good")
            .map(|t| t.defect.clone())
            .collect();
        d.dedup();
        d
    }
}

fn synth_kind(root: &Path) -> Option<CategoryKind> {
    let text = std::fs::read_to_string(root.join(SYNTH_META)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(v.get("kind")?.clone()).ok()
}

/// Splits normal training images into (train, validation), both sorted by path.
///
/// Each file is ranked by sha256 of its file name (ties by full path) and the lowest ranks go
/// to validation, so the split does not depend on input order or on where the dataset lives,
/// and adding images moves few others. Validation size is `round(len × fraction)`, at least 1
/// when `fraction > 0` and `len ≥ 2`, and never all of them (training keeps one).
pub fn split_validation(paths: &[PathBuf], fraction: f64) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let n = paths.len();
    let mut n_val = if fraction.is_finite() && fraction > 0.0 && n >= 2 {
        ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
    } else {
        0
    };
    n_val = n_val.min(n);
    let mut ranked: Vec<([u8; 32], &PathBuf)> = paths
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|s| s.as_encoded_bytes())
                .unwrap_or_default();
            (Sha256::digest(name).into(), p)
        })
        .collect();
    ranked.sort();
    let mut val: Vec<PathBuf> = ranked[..n_val].iter().map(|(_, p)| (*p).clone()).collect();
    let mut train: Vec<PathBuf> = ranked[n_val..].iter().map(|(_, p)| (*p).clone()).collect();
    val.sort();
    train.sort();
    (train, val)
}

/// Whether a path looks like an MVTec mask file (`*_mask.<image ext>`).
pub(crate) fn is_mask_name(p: &Path) -> bool {
    is_image_path(p)
        && p.file_stem()
            .and_then(|s| s.to_str())
            .is_some_and(|s| s.ends_with("_mask"))
}
