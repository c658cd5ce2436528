//! Signed, versioned model packages (`.vqad`).
//!
//! A package is a deterministic zip holding `manifest.json`, the three ONNX graphs,
//! `codebook.npy` and `model.sig`. `model.sig` is an OpenSSF model-signing v1.0 signature
//! (Sigstore bundle → DSSE envelope → in-toto Statement v1 listing every file's sha256) made
//! with an ECDSA P-256 key, so an auditor can check an unpacked package with the PyPI
//! `model_signing verify key` tool as well as with vqad.
//!
//! [`VerifiedPackage::open`] is the only way to get at a package's bytes: it parses the zip
//! structure itself (the `zip` crate collapses duplicate names and has no bomb guard), checks
//! the signature with the trusted key, then re-hashes every file while inflating it under
//! [`Limits`], recomputes the root digest, and only then reads the manifest.
//!
//! Layout of the code: [`manifest`] (the signed description), [`keys`] (P-256 keys),
//! [`dsse`] (bundle, envelope, statement), `zipfmt` (our zip writer and strict reader),
//! [`archive`] (build, verify, inspect, unpack). The folder registry lives one layer up in
//! [`crate::registry`]; its main items are re-exported here for older callers.

pub mod archive;
pub mod dsse;
pub mod intoto;
pub mod keys;
pub mod manifest;
mod deflate_end;
mod zipfmt;

pub use archive::{
    build_package, build_package_with, inspect, inspect_with_key, package_bytes, package_file_name, subject_digests,
    verify_bytes, BuildOptions, EntryInfo, InspectReport, PackageInfo, SignatureClaims, VerifiedPackage,
};
pub use dsse::{verify_signature, SignedStatement};
pub use intoto::{ResourceDescriptor, Statement};
pub use keys::{keygen, SigningKey, TrustedKey};
pub use manifest::{
    created_timestamp, CodebookUsage, DatasetInfo, DetectionSettings, Epochs, Manifest,
    ModelShape, Parity, ParityBound, Provenance, Software, TuningData, Variant, VARIANTS_FORMAT,
};
/// Compatibility re-exports: the registry moved to [`crate::registry`].
pub use crate::registry::{list, publish, verify_in_registry, IndexEntry, RegistryIndex, INDEX_FILE};

use std::path::PathBuf;

/// The manifest layout this build writes and reads. Graph names and I/O contracts are part
/// of it (see DESIGN.md): changing them needs a bump.
/// Version 2 adds the optional detection fields `score`, `surprise_weight` and `restore`; a
/// package that uses none of them is still written as version 1, so older vqad builds keep
/// reading it, while one that does is refused by them as too new rather than misread.
/// Version 3 adds `residual_metric` (the whitened residual), by the same rule; version 4
/// `residual_patch` (that metric over k×k patches); version 5 `texture_map` (the
/// texture-statistics half of the map). Version 6 adds the optional archive entry
/// [`PROVENANCE_FILE`] (see [`PROVENANCE_FORMAT`]). Version 7 adds `variants`: FP16/INT8
/// graph sets as the optional entries [`VARIANT_FILES`], each with its signed parity record.
/// Version 8 lets `texture_map` carry a Gaussian mixture (`components`) and the chroma
/// feature (`chroma`) in place of its single Gaussian.
pub const FORMAT_VERSION: u32 = 8;
/// The first format whose packages may carry [`PROVENANCE_FILE`]: a package with it says at
/// least 6, so an older vqad refuses it as too new instead of misreading its layout; one
/// without it keeps the format its detection settings need.
pub const PROVENANCE_FORMAT: u32 = 6;
/// The build provenance: a DSSE envelope (signed with the package key) around an in-toto
/// Statement v1 with predicate SLSA provenance v1, whose subjects are every other signed file
/// with its sha256. Listed in `model.sig` like any file, so `model_signing verify` covers it.
pub const PROVENANCE_FILE: &str = "provenance.intoto.json";
/// The ONNX graphs every package carries.
pub const GRAPH_FILES: [&str; 3] = ["encoder.onnx", "decoder.onnx", "pixelsnail.onnx"];
/// The signed manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The codebook, so a package can be inspected without ONNX tooling.
pub const CODEBOOK_FILE: &str = "codebook.npy";
/// The OpenSSF model-signing signature (a Sigstore bundle).
pub const SIGNATURE_FILE: &str = "model.sig";
/// Entry order inside an archive without provenance; fixed so the same inputs give the same
/// bytes. [`entry_order`] gives the order with it.
pub const ENTRY_ORDER: [&str; 6] =
    [MANIFEST_FILE, "encoder.onnx", "decoder.onnx", "pixelsnail.onnx", CODEBOOK_FILE, SIGNATURE_FILE];

/// Entries a package may add for its reduced-precision variants (format 7), in archive order
/// after the codebook; each is listed by the manifest's `variants` (see
/// [`crate::onnx::Precision::file_name`]).
pub const VARIANT_FILES: [&str; 6] =
    ["encoder.fp16.onnx", "decoder.fp16.onnx", "pixelsnail.fp16.onnx", "encoder.int8.onnx", "decoder.int8.onnx", "pixelsnail.int8.onnx"];

/// The archive's entry order: [`ENTRY_ORDER`], then the [`VARIANT_FILES`] a package carries
/// (a writer skips those it lacks), with [`PROVENANCE_FILE`] just before `model.sig` when the
/// package carries it.
pub fn entry_order(with_provenance: bool) -> Vec<&'static str> {
    let mut v = ENTRY_ORDER.to_vec();
    for (i, f) in VARIANT_FILES.iter().enumerate() {
        v.insert(5 + i, f);
    }
    if with_provenance {
        v.insert(v.len() - 1, PROVENANCE_FILE);
    }
    v
}
/// The five signed files a format-1 package must list.
pub const SIGNED_FILES: [&str; 5] =
    [MANIFEST_FILE, "encoder.onnx", "decoder.onnx", "pixelsnail.onnx", CODEBOOK_FILE];
/// Package file extension.
pub const EXTENSION: &str = "vqad";

/// Caps applied while reading an archive, so a hostile zip cannot exhaust memory or disk.
///
/// Declared sizes are checked from the central directory before anything is inflated, and
/// the real sizes again while inflating (an entry may lie about its size). The compression
/// ratio is only enforced once an entry passes [`RATIO_FLOOR`] bytes, so small, very
/// compressible files (a JSON manifest, a zero-filled test blob) are not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest uncompressed size of one entry, in bytes.
    pub max_entry: u64,
    /// Largest uncompressed size of all entries together, in bytes.
    pub max_total: u64,
    /// Largest uncompressed/compressed ratio of one entry.
    pub max_ratio: u64,
    /// Most entries an archive may have.
    pub max_entries: usize,
}

/// Entries smaller than this are exempt from the ratio cap (see [`Limits`]).
pub const RATIO_FLOOR: u64 = 1 << 20;
/// `model.sig` is a small JSON file; anything bigger is hostile.
pub const MAX_SIGNATURE_SIZE: u64 = 4 << 20;

impl Default for Limits {
    /// Sized for the paper's model (graphs of tens of MB) with a wide margin: 2 GiB per
    /// entry, 4 GiB in all (no Zip64), ratio 100 (deflate's ceiling is ~1032; float weights
    /// compress ~1.1×), 16 entries (a package has 6).
    fn default() -> Self {
        Limits { max_entry: 2 << 30, max_total: 4 << 30, max_ratio: 100, max_entries: 16 }
    }
}

/// Every way building, verifying or publishing a package can fail. Each refusal of a
/// hostile or damaged package has its own variant, so callers and tests can tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    // ---- files and keys ----
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot read key: {reason}")]
    KeyParse { path: PathBuf, reason: String },
    #[error("{path}: the private key is encrypted; vqad needs an unencrypted PKCS#8 P-256 key")]
    KeyEncrypted { path: PathBuf },
    #[error("{path} already exists; refusing to overwrite a key")]
    KeyExists { path: PathBuf },

    // ---- building ----
    #[error("invalid package input: {0}")]
    BadInput(String),
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    #[error("detection settings have no pixel threshold; run `vqad tune` before packaging")]
    MissingThreshold,
    #[error("{path} already exists; refusing to overwrite it")]
    OutputExists { path: PathBuf },
    #[error("{path} is not empty; unpack into a new or empty folder")]
    OutputDirNotEmpty { path: PathBuf },

    // ---- zip structure ----
    #[error("archive is {size} bytes, more than the limit of {limit}")]
    ArchiveTooLarge { size: u64, limit: u64 },
    #[error("not a zip archive: {0}")]
    NotAZip(String),
    #[error("truncated archive: {0}")]
    Truncated(String),
    #[error("malformed zip: {0}")]
    MalformedZip(String),
    #[error("Zip64 archives are not supported ({0})")]
    Zip64Unsupported(String),
    #[error("archive has {count} entries, more than the limit of {limit}")]
    TooManyEntries { count: u64, limit: usize },
    #[error("entry name is not UTF-8 (bytes {hex})")]
    NonUtf8Name { hex: String },
    #[error("entry '{name}' has an absolute path")]
    AbsolutePath { name: String },
    #[error("entry '{name}' contains '..' (path traversal)")]
    PathTraversal { name: String },
    #[error("entry '{name}' contains a backslash")]
    Backslash { name: String },
    #[error("entry name '{name}' is not allowed: {reason}")]
    BadName { name: String, reason: String },
    #[error("entry '{name}' appears more than once in the archive")]
    DuplicateEntry { name: String },
    #[error("entries '{name}' and '{other}' differ only in case")]
    DuplicateEntryCaseFolded { name: String, other: String },
    #[error("entry '{name}' is a symbolic link")]
    SymlinkEntry { name: String },
    #[error("entry '{name}' is not a regular file (unix mode {mode:o})")]
    SpecialEntry { name: String, mode: u32 },
    #[error("entry '{name}' uses compression method {method}; only stored (0) and deflate (8) are allowed")]
    UnsupportedMethod { name: String, method: u16 },
    #[error("entry '{name}' is encrypted")]
    EncryptedEntry { name: String },
    #[error("entry '{name}' has unsupported general-purpose flags {flags:#06x}")]
    UnsupportedFlags { name: String, flags: u16 },
    #[error("entry '{name}': local header disagrees with the central directory ({field})")]
    LocalHeaderMismatch { name: String, field: String },
    #[error("entries '{first}' and '{second}' overlap in the archive")]
    OverlappingEntries { first: String, second: String },
    #[error("entry '{name}' is {size} bytes uncompressed, more than the limit of {limit} (zip bomb?)")]
    EntryTooLarge { name: String, size: u64, limit: u64 },
    #[error("entries total more than {limit} bytes uncompressed (zip bomb?)")]
    TotalTooLarge { limit: u64 },
    #[error("entry '{name}' expands more than {limit}× (zip bomb?)")]
    RatioTooHigh { name: String, limit: u64 },
    #[error("entry '{name}' inflates to {actual} bytes but declares {declared} (zip bomb or corruption)")]
    SizeMismatch { name: String, declared: u64, actual: String },
    #[error("archive is not laid out as vqad writes packages: {0}")]
    NonCanonical(String),
    #[error("entry '{name}': CRC-32 does not match (corrupted archive)")]
    CrcMismatch { name: String },
    #[error("entry '{name}': corrupt compressed data: {reason}")]
    CorruptData { name: String, reason: String },

    // ---- signature ----
    #[error("package has no {SIGNATURE_FILE}: it is not signed")]
    MissingSignature,
    #[error("malformed signature bundle: {0}")]
    MalformedSignature(String),
    #[error("signature bundle media type is '{0}', expected application/vnd.dev.sigstore.bundle.v0.3+json")]
    WrongMediaType(String),
    #[error("DSSE payload type is '{0}', expected application/vnd.in-toto+json")]
    WrongPayloadType(String),
    #[error("DSSE envelope has {0} signatures; exactly one is required")]
    SignatureCount(usize),
    #[error("signed by a different key: the bundle names key {found}, the trusted key is {expected}")]
    WrongKey { found: String, expected: String },
    #[error("signature does not verify with the trusted key (tampered signature or statement)")]
    BadSignature,

    // ---- statement ----
    #[error("malformed in-toto statement: {0}")]
    MalformedStatement(String),
    #[error("statement type is '{0}', expected https://in-toto.io/Statement/v1")]
    WrongStatementType(String),
    #[error("predicate type is '{0}', expected https://model_signing/signature/v1.0")]
    WrongPredicateType(String),
    #[error("unsupported serialization in the signature: {0}")]
    UnsupportedSerialization(String),
    #[error("root digest mismatch: subject says {expected}, files hash to {actual}")]
    RootDigestMismatch { expected: String, actual: String },
    #[error("signed subject is '{found}', expected '{expected}'")]
    SubjectMismatch { expected: String, found: String },
    #[error("the signature lists no files")]
    EmptyFileList,
    #[error("the signature lists '{0}' twice")]
    DuplicateSignedName(String),
    #[error("'{0}' is listed in the signature but missing from the archive")]
    MissingFile(String),
    #[error("entry '{0}' is in the archive but not in the signed file list")]
    UnlistedEntry(String),
    #[error("the signature lists '{0}', which is no file of a vqad package")]
    UnknownFile(String),
    #[error("the signature does not list '{0}', which every package must carry")]
    MissingRequiredFile(String),
    #[error("'{name}' does not match its signed digest (expected {expected}, got {actual})")]
    DigestMismatch { name: String, expected: String, actual: String },

    // ---- manifest and naming ----
    #[error("manifest format_version {found} is not supported (this vqad reads 1 to {supported}); upgrade vqad")]
    UnsupportedFormatVersion { found: String, supported: u32 },
    #[error("manifest.json is invalid: {0}")]
    BadManifest(String),
    #[error("package file is named '{found}' but the signed manifest says '{expected}' (renamed, swapped or rolled back?)")]
    FileNameMismatch { expected: String, found: String },
    #[error("{PROVENANCE_FILE} refused: {0}")]
    BadProvenance(String),
    #[error("package sits in registry folder '{found}' but the signed manifest says '{expected}' (swapped or rolled back?)")]
    RegistryPathMismatch { expected: String, found: String },

    // ---- registry ----
    #[error("{name} {version} is already published at {path}; publish a new version instead")]
    VersionExists { name: String, version: String, path: PathBuf },
    #[error("registry index {path} is invalid: {reason}")]
    BadIndex { path: PathBuf, reason: String },
    #[error("{name} {version} is not in the registry index")]
    NotInIndex { name: String, version: String },
    #[error("registry index records sha256 {indexed} for {name} {version}, the file is {actual}")]
    IndexMismatch { name: String, version: String, indexed: String, actual: String },
    #[error("registry lock {path} is still held after {waited_s} s by {holder}; it is released when that writer ends (raise --lock-timeout to wait longer)")]
    RegistryLocked { path: PathBuf, waited_s: u64, holder: String },
}

impl PackageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PackageError::Io { path: path.into(), source }
    }
}

pub(crate) use crate::fsutil::sha256_hex;
