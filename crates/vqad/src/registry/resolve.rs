//! Package references against a registry: `NAME` (newest published version), `NAME@1.2.0`
//! (that version) and `NAME@production` (what the channel's signed head assigns).
//!
//! [`resolve`] is the one entry point for everything that runs a package from a registry
//! (`vqad detect`, `vqad eval`, a server): it checks the channel history and head (see
//! [`super::channels`]), then the package with [`super::verify_in_registry`], and returns the
//! verified package itself so the caller runs exactly the bytes that were checked.

use super::channels::{self, format_time, RecordFile, TrustState};
use super::{read_index, sort_key, verify_in_registry, RegistryError};
use crate::package::{TrustedKey, VerifiedPackage};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `NAME`: the newest published version (semver order).
    Latest { name: String },
    /// `NAME@1.2.0`.
    Version { name: String, version: String },
    /// `NAME@production`.
    Channel { name: String, channel: String },
}

impl Reference {
    pub fn name(&self) -> &str {
        match self {
            Reference::Latest { name } | Reference::Version { name, .. } | Reference::Channel { name, .. } => name,
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Latest { name } => write!(f, "{name}"),
            Reference::Version { name, version } => write!(f, "{name}@{version}"),
            Reference::Channel { name, channel } => write!(f, "{name}@{channel}"),
        }
    }
}

/// Parses `NAME`, `NAME@VERSION` or `NAME@CHANNEL`. What follows `@` is a version when it
/// parses as semver; channel names are never valid versions, so the two cannot collide.
pub fn parse_reference(reference: &str) -> Result<Reference, RegistryError> {
    let bad = |reason: String| RegistryError::BadReference { reference: reference.into(), reason };
    let (name, tail) = match reference.split_once('@') {
        Some((n, t)) => (n, Some(t)),
        None => (reference, None),
    };
    crate::package::manifest::check_name(name).map_err(bad)?;
    match tail {
        None => Ok(Reference::Latest { name: name.into() }),
        Some(t) if semver::Version::parse(t).is_ok() => Ok(Reference::Version { name: name.into(), version: t.into() }),
        Some(t) => {
            channels::check_channel(t).map_err(|_| {
                bad(format!("'{t}' is neither a semver version nor a channel name (a-z, 0-9, '_', '-', starting with a letter)"))
            })?;
            Ok(Reference::Channel { name: name.into(), channel: t.into() })
        }
    }
}

/// Options of [`resolve`].
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// The time expiry is judged at; `None` = now.
    pub now: Option<OffsetDateTime>,
    /// A client-side trust state file (see [`TrustState`]): channel heads older than one it
    /// already accepted are refused, and accepted heads are recorded in it.
    pub trust_state: Option<PathBuf>,
}

/// A reference resolved to a verified package.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub reference: Reference,
    pub name: String,
    pub version: String,
    /// The channel, for `NAME@CHANNEL`.
    pub channel: Option<String>,
    /// The channel record's sequence and expiry, for `NAME@CHANNEL`.
    pub sequence: Option<u64>,
    pub expires: Option<String>,
    /// The archive inside the registry.
    pub path: PathBuf,
    /// The verified package (signature, every file, folder names, index digest and, for a
    /// channel, the signed record's digest).
    pub package: VerifiedPackage,
}

/// `REGISTRY/<name>/<version>/<name>-<version>.vqad` of a version listed in the index, or a
/// "not published" error listing what is.
pub(crate) fn published_path(registry: &Path, name: &str, version: &str) -> Result<PathBuf, RegistryError> {
    let index = read_index(registry)?;
    let mut versions: Vec<_> = index.packages.iter().filter(|e| e.name == name).collect();
    if let Some(e) = versions.iter().find(|e| e.version == version) {
        return Ok(registry.join(&e.path));
    }
    versions.sort_by_key(|e| sort_key(e));
    let published = versions.iter().map(|e| e.version.as_str()).collect::<Vec<_>>().join(", ");
    Err(RegistryError::NotPublished {
        name: name.into(),
        version: version.into(),
        registry: registry.to_path_buf(),
        published: if published.is_empty() { "none".into() } else { published },
    })
}

/// The verified head record of `name@channel`: every record of its history verified with
/// `key`, not older than the client's trust state, not expired. Reads only the small record
/// files, so a server can poll it; the package it names is verified by [`resolve`].
pub fn channel_head(registry: &Path, name: &str, channel: &str, key: &TrustedKey, opts: &ResolveOptions) -> Result<RecordFile, RegistryError> {
    let now = opts.now.unwrap_or_else(OffsetDateTime::now_utc);
    let hist = channels::read_channel(registry, name, channel, Some(key))?
        .ok_or_else(|| channels::unknown_channel(registry, name, channel).unwrap_or_else(|e| e))?;
    let head = hist.head().cloned().expect("read_channel returns no empty history");
    if let Some(state_path) = &opts.trust_state {
        TrustState::load(state_path)?.check(registry, &head, state_path)?;
    }
    let r = &head.record;
    if now >= r.expires_at() {
        return Err(RegistryError::Expired {
            name: r.name.clone(),
            channel: r.channel.clone(),
            sequence: r.sequence,
            issued: r.issued.clone(),
            expires: r.expires.clone(),
            now: format_time(now),
        });
    }
    Ok(head)
}

/// Resolves `reference` in `registry` and verifies everything on the way with `key`.
///
/// For `NAME@CHANNEL`: the channel's whole history must verify (see [`super::channels`]); its
/// head must not be older than the trust state's, nor expired at `opts.now`; the version it
/// names must be published with the archive sha256 it signs. In every case the package is
/// then verified with [`verify_in_registry`]. Only after all of that is the trust state
/// advanced.
pub fn resolve(registry: &Path, reference: &str, key: &TrustedKey, opts: &ResolveOptions) -> Result<Resolved, RegistryError> {
    let parsed = parse_reference(reference)?;
    let (version, head) = match &parsed {
        Reference::Latest { name } => {
            let index = read_index(registry)?;
            let newest = index.packages.iter().filter(|e| &e.name == name).max_by_key(|e| sort_key(e)).ok_or_else(|| {
                RegistryError::NotPublished {
                    name: name.clone(),
                    version: "(any)".into(),
                    registry: registry.to_path_buf(),
                    published: "none".into(),
                }
            })?;
            (newest.version.clone(), None)
        }
        Reference::Version { version, .. } => (version.clone(), None),
        Reference::Channel { name, channel } => {
            let head = channel_head(registry, name, channel, key, opts)?;
            (head.record.version.clone(), Some(head))
        }
    };
    let name = parsed.name().to_string();
    let path = published_path(registry, &name, &version)?;
    let package = verify_in_registry(&path, registry, key)?;
    if let Some(h) = &head {
        if h.record.archive_sha256 != package.archive_sha256 {
            return Err(RegistryError::DigestMismatch {
                name: name.clone(),
                channel: h.record.channel.clone(),
                sequence: h.record.sequence,
                version: version.clone(),
                signed: h.record.archive_sha256.clone(),
                actual: package.archive_sha256.clone(),
            });
        }
        if let Some(state_path) = &opts.trust_state {
            TrustState::accept(state_path, registry, &h.record)?;
        }
    }
    Ok(Resolved {
        channel: head.as_ref().map(|h| h.record.channel.clone()),
        sequence: head.as_ref().map(|h| h.record.sequence),
        expires: head.as_ref().map(|h| h.record.expires.clone()),
        reference: parsed,
        name,
        version,
        path,
        package,
    })
}
