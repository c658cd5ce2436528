//! The data layer: MVTec AD folders, bounded image decoding and resizing, the §4.3.1 augmentation,
//! a synthetic category generator, a folder checker and a dataset digest for provenance.
//!
//! Everything here returns [`DataError`] rather than panicking, and every error names the
//! file it is about, because the usual failure is one bad file among thousands.

mod augment;
mod check;
mod corrupt;
mod decode;
mod digest;
mod image_io;
mod mvtec;
mod resize;
mod synth;
mod tiff_check;

pub use augment::{AugmentPolicy, Augmenter, DIHEDRAL_OBJECTS};
pub use corrupt::paste_blob;
pub use check::{check_category, check_category_within, CheckReport, Problem, ProblemKind};
pub use decode::{probe_image_bytes, DecodeLimits, ImageInfo};
pub use digest::{dataset_digest, dir_hash};
pub use image_io::{
    array_to_image, decode_image_bytes, decode_image_bytes_within, image_to_array, is_image_path, list_images, load_image,
    load_image_within, load_many, load_many_within, load_mask, load_mask_within, mask_to_image, IMAGE_EXTENSIONS,
};
pub use mvtec::{
    kind_from_name, split_validation, Category, TestItem, MVTEC_OBJECTS, MVTEC_TEXTURES,
};
pub use resize::{resize_mask_nearest, resize_planar};
pub use synth::{
    pattern_for, synth_category, synth_sample, Defect, Pattern, SynthSample, SynthSpec, SYNTH_META,
};

use std::path::{Path, PathBuf};

/// Errors of the data layer. Each message starts with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The bytes are not an image the decoders understand (reason from the decoder).
    #[error("{}: cannot decode image: {reason}", path.display())]
    Decode { path: PathBuf, reason: String },
    /// The header declares more pixels than [`DecodeLimits::max_pixels`]; nothing was decoded.
    #[error("{}: image is {width}×{height} ({} pixels), over the limit of {max_pixels} pixels (--max-image-pixels)", path.display(), *width as u64 * *height as u64)]
    TooLarge { path: PathBuf, width: u32, height: u32, max_pixels: u64 },
    /// The file is larger than any image within the limits needs; it was not read.
    #[error("{}: file is {bytes} bytes, over the {max_bytes} bytes an image within the pixel limit can need (--max-image-pixels)", path.display())]
    FileTooLarge { path: PathBuf, bytes: u64, max_bytes: u64 },
    /// An image could not be encoded or written.
    #[error("{}: cannot encode image: {reason}", path.display())]
    Encode { path: PathBuf, reason: String },
    /// A defective test image has no ground-truth mask.
    #[error("{}: no ground-truth mask (expected {})", image.display(), expected.display())]
    MissingMask { image: PathBuf, expected: PathBuf },
    /// `train/good` exists but holds no image.
    #[error("{}: no training images (train/good is empty)", dir.display())]
    EmptyTrain { dir: PathBuf },
    /// The folder does not have the MVTec layout.
    #[error("{}: not an MVTec category: {reason}", dir.display())]
    Layout { dir: PathBuf, reason: String },
    /// The generator refuses to overwrite a category.
    #[error("{}: already exists and is not empty; refusing to overwrite", dir.display())]
    Exists { dir: PathBuf },
    /// A file given to the digest lies outside its root or has a non-UTF-8 name.
    #[error("{}: {reason}", path.display())]
    BadPath { path: PathBuf, reason: String },
    /// A parameter is out of range (channel count, image size, generator spec).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
