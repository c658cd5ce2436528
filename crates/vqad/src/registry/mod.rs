//! A folder registry of published packages: `DIR/<name>/<version>/<name>-<version>.vqad`
//! plus `DIR/index.json`, and the signed channel records that say which version a channel
//! (e.g. `production`) runs ([`channels`]), and resolution of `NAME`, `NAME@VERSION` and
//! `NAME@CHANNEL` references to verified packages ([`resolve`]).
//!
//! This layer sits above [`crate::package`] (the archive format and its verifier) and uses
//! only it. `vqad::package::{publish, list, verify_in_registry, …}` are kept as re-exports so
//! older callers still compile.
//!
//! The index is a convenience listing and is not signed; every package is verified on its
//! own, and [`verify_in_registry`] also checks the folder names against the signed manifest
//! and the archive sha256 against the index, so a package moved to another name or version
//! folder (swap, rollback) is refused.

// Registry errors carry the paths and names a user needs to act on; they are returned on
// cold paths only, so their size costs nothing that matters.
#![allow(clippy::result_large_err)]

pub mod attestations;
pub mod channels;
pub mod lock;
pub mod resolve;

pub use channels::{
    channel_dir, check_channel, history, list_channels, list_channels_lenient, promote, read_channel, rollback, Action, ChannelHead, ChannelHistory, ChannelOptions,
    ChannelRecord, RecordFile, TrustState, CHANNELS_DIR, CHANNEL_PAYLOAD_TYPE, CURRENT_FILE, DEFAULT_EXPIRY_DAYS,
};
pub use attestations::AttestationEntry;
pub use lock::{LockOptions, RegistryLock};
pub use resolve::{channel_head, parse_reference, resolve, Reference, Resolved, ResolveOptions};

use crate::package::archive::{package_file_name, read_limited, write_atomic};
use crate::package::{verify_bytes, Limits, PackageError, TrustedKey, VerifiedPackage};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Every way a channel operation or a reference resolution can fail. Package verification
/// failures keep their own [`PackageError`] inside [`RegistryError::Package`].
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("'{reference}' is not a package reference: {reason} (use NAME, NAME@VERSION or NAME@CHANNEL)")]
    BadReference { reference: String, reason: String },
    #[error("channel name '{0}' must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter, and not a version")]
    BadChannelName(String),
    #[error("{name} has no channel '{channel}' in {registry} (known: {known})")]
    UnknownChannel { name: String, channel: String, registry: PathBuf, known: String },
    #[error("{name} {version} is not published in {registry} (published: {published})")]
    NotPublished { name: String, version: String, registry: PathBuf, published: String },
    #[error("{path}: channel record refused: {reason}")]
    BadRecord { path: PathBuf, reason: String },
    #[error("{path}: channel record refused: {source}")]
    Signature { path: PathBuf, source: crate::package::dsse::EnvelopeError },
    #[error("{path}: the file is named for sequence {file} but the signed record says {name}@{channel} sequence {signed} (moved or replayed record)")]
    Misplaced { path: PathBuf, file: String, name: String, channel: String, signed: u64 },
    #[error("{name}@{channel}: channel history {dir} is not contiguous: sequence {missing} is missing (deleted record?)")]
    HistoryGap { name: String, channel: String, dir: PathBuf, missing: u64 },
    #[error("{name}@{channel}: replayed older record refused (rollback attack): {source_desc} offers sequence {offered}, but sequence {seen} has already been {seen_where}")]
    Replayed { name: String, channel: String, offered: u64, seen: u64, source_desc: String, seen_where: String },
    #[error("{name}@{channel}: record sequence {sequence} expired at {expires} (issued {issued}, now {now}); refusing a frozen channel (freeze attack?) — renew it with `vqad promote`")]
    Expired { name: String, channel: String, sequence: u64, issued: String, expires: String, now: String },
    #[error("{name}@{channel} sequence {sequence} assigns {version} with archive sha256 {signed}, but the registry's {version} is {actual}")]
    DigestMismatch { name: String, channel: String, sequence: u64, version: String, signed: String, actual: String },
    #[error("{name}@{channel}: nothing to roll back to (the channel has only ever run {current})")]
    NothingToRollBack { name: String, channel: String, current: String },
    #[error("{path}: trust state is invalid: {reason}")]
    BadTrustState { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl RegistryError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RegistryError::Io { path: path.into(), source }
    }
}

/// The registry's index file name.
pub const INDEX_FILE: &str = "index.json";
/// Folder beside a published archive (`REGISTRY/<name>/<version>/attestations/`) holding its
/// evaluation attestations (`vqad publish --attestation`).
pub const ATTESTATIONS_DIR: &str = "attestations";

/// One published package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    /// Hex sha256 of the archive file.
    pub archive_sha256: String,
    /// Fingerprint of the key it verified with at publish time.
    pub key_fingerprint: String,
    /// The manifest's creation time.
    pub created: String,
    /// Path of the archive relative to the registry, with `/` separators.
    pub path: String,
    /// Attestations stored beside the archive (index format 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<AttestationEntry>,
}

/// `index.json`. Format 1 lists packages; format 2 (written only once some version carries
/// attestations, so older vqad keeps reading the others) adds `attestations` to entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryIndex {
    pub format_version: u32,
    /// Sorted by name, then semver.
    pub packages: Vec<IndexEntry>,
}

impl Default for RegistryIndex {
    fn default() -> Self {
        RegistryIndex { format_version: 1, packages: vec![] }
    }
}

pub(crate) fn read_index(registry: &Path) -> Result<RegistryIndex, PackageError> {
    let path = registry.join(INDEX_FILE);
    match std::fs::read(&path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(RegistryIndex::default()),
        Ok(b) => {
            let idx: RegistryIndex =
                serde_json::from_slice(&b).map_err(|e| PackageError::BadIndex { path: path.clone(), reason: e.to_string() })?;
            if !(1..=2).contains(&idx.format_version) {
                return Err(PackageError::BadIndex { path, reason: format!("format_version {}", idx.format_version) });
            }
            Ok(idx)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if registry.is_dir() {
                Ok(RegistryIndex::default())
            } else {
                Err(PackageError::io(registry, e))
            }
        }
        Err(e) => Err(PackageError::io(&path, e)),
    }
}

pub(crate) fn sort_key(e: &IndexEntry) -> (String, Option<semver::Version>, String) {
    (e.name.clone(), semver::Version::parse(&e.version).ok(), e.version.clone())
}

/// Options of [`publish_with`].
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Attestations about this archive (DSSE envelopes of in-toto statements signed with the
    /// trusted key, e.g. from `vqad eval --attest`), stored in `<version>/attestations/`.
    pub attestations: Vec<PathBuf>,
    pub lock: LockOptions,
}

/// What [`publish_with`] did.
#[derive(Debug, Clone)]
pub struct Published {
    pub path: PathBuf,
    /// The attestations now stored beside it (new and old).
    pub attestations: Vec<AttestationEntry>,
    /// The version was already published with these bytes; only attestations were added.
    pub attestations_only: bool,
    /// The archive was already in place from a publish that was interrupted before it
    /// updated the index; this publish completed it.
    pub completed_interrupted: bool,
    /// A lock left by a writer that died, which this publish took over.
    pub recovered_lock: Option<String>,
}

/// Verifies `package`, copies the verified bytes to `registry/<name>/<version>/` and adds it
/// to `index.json` (rewritten atomically). A version already published is refused: a
/// registry version is immutable, so a deployment can pin it.
pub fn publish(package: &Path, registry: &Path, key: &TrustedKey) -> Result<PathBuf, PackageError> {
    publish_with(package, registry, key, &PublishOptions::default()).map(|p| p.path)
}

/// [`publish`] with attestations and lock options. Publishing a version that is already
/// published with the same bytes adds the given attestations (and fails without any).
pub fn publish_with(package: &Path, registry: &Path, key: &TrustedKey, opts: &PublishOptions) -> Result<Published, PackageError> {
    // Verify the bytes we will copy, not the file again later (no check-then-use gap).
    let limits = Limits::default();
    let bytes = read_limited(package, &limits)?;
    let verified = verify_bytes(&bytes, key, &limits)?;
    let m = &verified.manifest;
    let file_name = package_file_name(m);
    let found = package.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if found != file_name {
        return Err(PackageError::FileNameMismatch { expected: file_name, found });
    }
    let new_attestations = opts
        .attestations
        .iter()
        .map(|p| attestations::check(p, key, &file_name, &verified.archive_sha256))
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::create_dir_all(registry).map_err(|e| PackageError::io(registry, e))?;
    let lock = RegistryLock::take(registry, &format!("publish {} {}", m.name, m.version), &opts.lock)?;
    let mut index = read_index(registry)?;
    let dir = registry.join(&m.name).join(&m.version);
    let dest = dir.join(&file_name);
    let mut out = Published { path: dest.clone(), attestations: vec![], attestations_only: false, completed_interrupted: false, recovered_lock: lock.recovered.clone() };
    let exists = || PackageError::VersionExists { name: m.name.clone(), version: m.version.clone(), path: dest.clone() };
    match index.packages.iter().position(|e| e.name == m.name && e.version == m.version) {
        Some(i) => {
            if index.packages[i].archive_sha256 != verified.archive_sha256 || new_attestations.is_empty() {
                return Err(exists());
            }
            out.attestations_only = true;
        }
        None if dir.exists() => {
            // Left by a publish that died between writing the archive and the index.
            match std::fs::read(&dest) {
                Ok(b) if b == bytes => out.completed_interrupted = true,
                _ => {
                    return Err(PackageError::BadInput(format!(
                        "{} exists but {} {} is not in the index: left by an interrupted publish of other bytes; remove that folder, then publish again",
                        dir.display(),
                        m.name,
                        m.version
                    )))
                }
            }
        }
        None => {
            std::fs::create_dir_all(&dir).map_err(|e| PackageError::io(&dir, e))?;
            write_atomic(&dest, &bytes, false)?;
            lock::test_pause("mid-publish");
        }
    }
    let stored = attestations::store(&dir, &new_attestations)?;
    let entry = IndexEntry {
        name: m.name.clone(),
        version: m.version.clone(),
        archive_sha256: verified.archive_sha256.clone(),
        key_fingerprint: verified.key_fingerprint.clone(),
        created: m.provenance.created.clone(),
        path: format!("{}/{}/{}", m.name, m.version, file_name),
        attestations: stored.clone(),
    };
    index.packages.retain(|e| !(e.name == m.name && e.version == m.version));
    index.packages.push(entry);
    index.packages.sort_by_key(sort_key);
    index.format_version = if index.packages.iter().any(|e| !e.attestations.is_empty()) { 2 } else { 1 };
    let mut json = serde_json::to_vec_pretty(&index).map_err(|e| PackageError::BadIndex {
        path: registry.join(INDEX_FILE),
        reason: e.to_string(),
    })?;
    json.push(b'\n');
    write_atomic(&registry.join(INDEX_FILE), &json, true)?;
    out.attestations = stored;
    drop(lock);
    Ok(out)
}

/// Published packages, optionally of one category, sorted by name then version.
pub fn list(registry: &Path, category: Option<&str>) -> Result<Vec<IndexEntry>, PackageError> {
    let mut v: Vec<IndexEntry> =
        read_index(registry)?.packages.into_iter().filter(|e| category.is_none_or(|c| e.name == c)).collect();
    v.sort_by_key(sort_key);
    Ok(v)
}

/// Verifies a package inside a registry: the signature and files as [`VerifiedPackage::open`],
/// the folder `registry/<name>/<version>/` and file name against the signed manifest, and
/// the archive sha256 against the index entry for that name and version.
pub fn verify_in_registry(path: &Path, registry: &Path, key: &TrustedKey) -> Result<VerifiedPackage, PackageError> {
    let p = VerifiedPackage::open(path, key)?;
    let m = &p.manifest;
    let canon = |x: &Path| std::fs::canonicalize(x).map_err(|e| PackageError::io(x, e));
    let reg = canon(registry)?;
    let dir = canon(path.parent().unwrap_or(Path::new(".")))?;
    let expected = reg.join(&m.name).join(&m.version);
    if dir != expected {
        let shown = dir.strip_prefix(&reg).map(|d| d.display().to_string()).unwrap_or_else(|_| dir.display().to_string());
        return Err(PackageError::RegistryPathMismatch { expected: format!("{}/{}", m.name, m.version), found: shown });
    }
    let index = read_index(registry)?;
    let entry = index
        .packages
        .iter()
        .find(|e| e.name == m.name && e.version == m.version)
        .ok_or_else(|| PackageError::NotInIndex { name: m.name.clone(), version: m.version.clone() })?;
    if entry.archive_sha256 != p.archive_sha256 {
        return Err(PackageError::IndexMismatch {
            name: m.name.clone(),
            version: m.version.clone(),
            indexed: entry.archive_sha256.clone(),
            actual: p.archive_sha256.clone(),
        });
    }
    Ok(p)
}
