//! Channels: signed records saying which version of a category a channel (e.g. `production`)
//! runs, kept as an append-only history an auditor can read.
//!
//! Layout: `REGISTRY/<name>/channels/<channel>/<seq>.json` (zero-padded to 8 digits), one DSSE
//! envelope per assignment (payload type [`CHANNEL_PAYLOAD_TYPE`], ECDSA P-256), never
//! rewritten; `current.json` beside them is a copy of the newest, for people and tools.
//!
//! The rules follow the TUF specification (§5 client workflow): a record carries a version
//! number (`sequence`) that must never decrease — a lower one than already seen is a rollback
//! attack and is refused; and an expiry — an expired head is refused, so a mirror that keeps
//! serving an old assignment (freeze attack) is noticed. Rolling back a channel writes a *new*
//! record with a higher sequence pointing at the previous version; old records are never
//! reused.
//!
//! What is checked, and from where:
//! - every record in the history verifies with the trusted key, sits in the file named for
//!   its signed sequence and in the folder of its signed name and channel, and the sequences
//!   run 1, 2, … n with no gap and non-decreasing issue times;
//! - the head is the highest sequence in the history folder — not `current.json`, which must
//!   equal it byte for byte when present (an older record copied there is refused as a replay);
//! - the head has not expired, and the version it names is published with exactly the
//!   archive sha256 it signs.
//!
//! What is not protected by the registry alone: someone who can write to it can delete the
//! newest records (the history then ends lower and still verifies). A client that keeps a
//! [`TrustState`] file (TUF's "trusted metadata") refuses that too, because it remembers the
//! highest sequence it has accepted for each channel. Expiry bounds how long any such
//! truncation or freeze can go unnoticed by clients without trust state.

use super::{LockOptions, RegistryError, RegistryLock};
use crate::package::dsse::{read_envelope_unverified, sign_envelope, verify_envelope};
use crate::package::{SigningKey, TrustedKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// DSSE payload type of a channel record; bound into the signature.
pub const CHANNEL_PAYLOAD_TYPE: &str = "application/vnd.vqad.channel+json";
/// Folder under `REGISTRY/<name>/` holding one folder per channel.
pub const CHANNELS_DIR: &str = "channels";
/// The copy of the newest record in a channel folder.
pub const CURRENT_FILE: &str = "current.json";
/// How long a record stays valid unless `--expires-in` says otherwise.
pub const DEFAULT_EXPIRY_DAYS: u32 = 30;
/// The record layout this build writes and reads.
pub const RECORD_FORMAT: u32 = 1;

/// Why a record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A version was assigned (or an assignment renewed).
    Promote,
    /// The channel went back to the version it ran before the current one.
    Rollback,
}

/// The signed payload: one assignment of a version to a channel (schema:
/// `schemas/channel-record.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRecord {
    pub format_version: u32,
    pub name: String,
    pub channel: String,
    pub version: String,
    /// Hex sha256 of the archive file of that version, as published.
    pub archive_sha256: String,
    /// 1 for the first record of the channel, then +1 per record; never decreases.
    pub sequence: u64,
    pub action: Action,
    /// RFC 3339 UTC.
    pub issued: String,
    /// RFC 3339 UTC; the record is refused after this.
    pub expires: String,
}

impl ChannelRecord {
    /// The DSSE envelope bytes of this record, signed with `key`.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        // Plain strings and numbers: serialising cannot fail.
        let payload = serde_json::to_vec_pretty(self).expect("record serialises");
        sign_envelope(CHANNEL_PAYLOAD_TYPE, &payload, key)
    }

    /// Parses and checks the record's own fields (not its place in a history).
    fn parse(payload: &[u8], path: &Path) -> Result<Self, RegistryError> {
        let bad = |reason: String| RegistryError::BadRecord { path: path.to_path_buf(), reason };
        let r: ChannelRecord = serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?;
        if r.format_version != RECORD_FORMAT {
            return Err(bad(format!("format_version {} (this vqad reads {RECORD_FORMAT})", r.format_version)));
        }
        crate::package::manifest::check_name(&r.name).map_err(bad)?;
        check_channel(&r.channel)?;
        semver::Version::parse(&r.version).map_err(|e| bad(format!("version '{}': {e}", r.version)))?;
        if r.archive_sha256.len() != 64 || !r.archive_sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad(format!("archive_sha256 '{}' is not 64 lower-case hex digits", r.archive_sha256)));
        }
        if r.sequence == 0 {
            return Err(bad("sequence 0 (sequences start at 1)".into()));
        }
        let issued = parse_time(&r.issued).map_err(|e| bad(format!("issued: {e}")))?;
        let expires = parse_time(&r.expires).map_err(|e| bad(format!("expires: {e}")))?;
        if expires <= issued {
            return Err(bad(format!("expires {} is not after issued {}", r.expires, r.issued)));
        }
        Ok(r)
    }

    pub fn expires_at(&self) -> OffsetDateTime {
        // Checked by `parse`; a record built in this module always has a valid time.
        parse_time(&self.expires).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    pub fn issued_at(&self) -> OffsetDateTime {
        parse_time(&self.issued).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// One record file of a history.
#[derive(Debug, Clone)]
pub struct RecordFile {
    pub path: PathBuf,
    pub record: ChannelRecord,
    /// The envelope's bytes as stored.
    pub envelope: Vec<u8>,
}

/// A channel's whole history, oldest first.
#[derive(Debug, Clone)]
pub struct ChannelHistory {
    pub name: String,
    pub channel: String,
    pub dir: PathBuf,
    pub records: Vec<RecordFile>,
    /// Whether every record was checked against a trusted key.
    pub verified: bool,
}

impl ChannelHistory {
    /// The newest record (highest sequence).
    pub fn head(&self) -> Option<&RecordFile> {
        self.records.last()
    }

    /// Versions the channel ran, as a stack: a promotion of a new version pushes it, a
    /// renewal of the same version changes nothing, a rollback pops the top.
    pub fn deployment_stack(&self) -> Vec<String> {
        let mut stack: Vec<String> = vec![];
        for r in &self.records {
            match r.record.action {
                Action::Promote => {
                    if stack.last() != Some(&r.record.version) {
                        stack.push(r.record.version.clone());
                    }
                }
                Action::Rollback => {
                    stack.pop();
                    // A signed rollback names its target; keep the stack honest if it differs.
                    if stack.last() != Some(&r.record.version) {
                        stack.push(r.record.version.clone());
                    }
                }
            }
        }
        stack
    }
}

/// A channel's current assignment, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelHead {
    pub name: String,
    pub channel: String,
    pub version: String,
    pub sequence: u64,
    pub issued: String,
    pub expires: String,
    pub action: Action,
    /// Whether the history was verified with a trusted key (listings without a key are not).
    pub verified: bool,
}

/// Options of the writing operations.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// Issue time; `None` = now. Tests set it to exercise expiry.
    pub now: Option<OffsetDateTime>,
    /// Validity of the new record, in days (at least 1).
    pub expires_in_days: u32,
    /// How long to wait for the registry lock.
    pub lock: LockOptions,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions { now: None, expires_in_days: DEFAULT_EXPIRY_DAYS, lock: LockOptions::default() }
    }
}

/// A channel name: like a category name, but it must not parse as a version, so that
/// `NAME@1.2.0` and `NAME@production` can never be confused.
pub fn check_channel(channel: &str) -> Result<(), RegistryError> {
    let ok = channel.len() <= 64
        && channel.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && channel.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok || semver::Version::parse(channel).is_ok() {
        return Err(RegistryError::BadChannelName(channel.to_string()));
    }
    Ok(())
}

/// `REGISTRY/<name>/channels/<channel>`.
pub fn channel_dir(registry: &Path, name: &str, channel: &str) -> PathBuf {
    registry.join(name).join(CHANNELS_DIR).join(channel)
}

fn record_file_name(seq: u64) -> String {
    format!("{seq:08}.json")
}

pub(crate) fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("'{s}' is not an RFC 3339 time: {e}"))
}

pub(crate) fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC).replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Channels of `name` that have a folder, sorted.
fn channel_names(registry: &Path, name: &str) -> Result<Vec<String>, RegistryError> {
    let dir = registry.join(name).join(CHANNELS_DIR);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(RegistryError::io(&dir, e)),
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| check_channel(n).is_ok())
        .collect();
    v.sort();
    Ok(v)
}

/// Reads a channel's history, verifying every record with `key` (or, with `None`, only its
/// structure — for listings that say they are unverified). `Ok(None)` if the channel has no
/// folder or no records.
pub fn read_channel(
    registry: &Path,
    name: &str,
    channel: &str,
    key: Option<&TrustedKey>,
) -> Result<Option<ChannelHistory>, RegistryError> {
    crate::package::manifest::check_name(name).map_err(RegistryError::Invalid)?;
    check_channel(channel)?;
    let dir = channel_dir(registry, name, channel);
    // A writer appends the record before it refreshes current.json; a reader landing in
    // between sees them disagree. Read once more before calling it a replay.
    match read_channel_once(&dir, name, channel, key) {
        Err(RegistryError::Replayed { .. }) => {
            std::thread::sleep(std::time::Duration::from_millis(200));
            read_channel_once(&dir, name, channel, key)
        }
        other => other,
    }
}

fn read_channel_once(
    dir: &Path,
    name: &str,
    channel: &str,
    key: Option<&TrustedKey>,
) -> Result<Option<ChannelHistory>, RegistryError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RegistryError::io(dir, e)),
    };
    let mut files: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for e in rd {
        let e = e.map_err(|e| RegistryError::io(dir, e))?;
        let fname = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if fname == CURRENT_FILE || fname.starts_with('.') {
            continue;
        }
        let seq = fname.strip_suffix(".json").filter(|s| s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit())).and_then(|s| s.parse::<u64>().ok());
        match seq {
            Some(seq) => {
                files.insert(seq, path);
            }
            None => {
                return Err(RegistryError::BadRecord {
                    path,
                    reason: "unexpected file in a channel folder (records are named NNNNNNNN.json)".into(),
                })
            }
        }
    }
    let mut records: Vec<RecordFile> = Vec::with_capacity(files.len());
    for (i, (seq, path)) in files.into_iter().enumerate() {
        let expected = i as u64 + 1;
        if seq != expected {
            return Err(RegistryError::HistoryGap { name: name.into(), channel: channel.into(), dir: dir.to_path_buf(), missing: expected });
        }
        let envelope = std::fs::read(&path).map_err(|e| RegistryError::io(&path, e))?;
        let record = open_record(&envelope, &path, key)?;
        if record.sequence != seq || record.name != name || record.channel != channel {
            return Err(RegistryError::Misplaced {
                path,
                file: format!("{seq} of {name}@{channel}"),
                name: record.name,
                channel: record.channel,
                signed: record.sequence,
            });
        }
        if let Some(prev) = records.last() {
            if record.issued_at() < prev.record.issued_at() {
                return Err(RegistryError::BadRecord {
                    path,
                    reason: format!("issued {} is before sequence {}'s {}", record.issued, prev.record.sequence, prev.record.issued),
                });
            }
        }
        records.push(RecordFile { path, record, envelope });
    }
    let Some(head) = records.last() else { return Ok(None) };
    let current = dir.join(CURRENT_FILE);
    match std::fs::read(&current) {
        Ok(bytes) if bytes == head.envelope => {}
        Ok(bytes) => {
            // Name the sequence it claims if it verifies; otherwise it is simply not ours.
            let claimed = open_record(&bytes, &current, key)?;
            if claimed.sequence < head.record.sequence {
                return Err(RegistryError::Replayed {
                    name: name.into(),
                    channel: channel.into(),
                    offered: claimed.sequence,
                    seen: head.record.sequence,
                    source_desc: current.display().to_string(),
                    seen_where: format!("recorded in the channel history ({})", head.path.display()),
                });
            }
            return Err(RegistryError::BadRecord {
                path: current,
                reason: format!(
                    "holds sequence {} but the newest record in the history is {} (edited or copied in?)",
                    claimed.sequence, head.record.sequence
                ),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(RegistryError::io(&current, e)),
    }
    Ok(Some(ChannelHistory { name: name.into(), channel: channel.into(), dir: dir.to_path_buf(), records, verified: key.is_some() }))
}

fn open_record(envelope: &[u8], path: &Path, key: Option<&TrustedKey>) -> Result<ChannelRecord, RegistryError> {
    let payload = match key {
        Some(k) => verify_envelope(envelope, CHANNEL_PAYLOAD_TYPE, k)
            .map_err(|source| RegistryError::Signature { path: path.to_path_buf(), source })?,
        None => {
            let (ty, payload) = read_envelope_unverified(envelope)
                .map_err(|source| RegistryError::Signature { path: path.to_path_buf(), source })?;
            if ty != CHANNEL_PAYLOAD_TYPE {
                return Err(RegistryError::BadRecord { path: path.to_path_buf(), reason: format!("payload type '{ty}'") });
            }
            payload
        }
    };
    ChannelRecord::parse(&payload, path)
}

/// Every channel of `name` (or of every category) with its history; `channel` narrows it.
pub fn history(
    registry: &Path,
    name: &str,
    channel: Option<&str>,
    key: Option<&TrustedKey>,
) -> Result<Vec<ChannelHistory>, RegistryError> {
    let names = match channel {
        Some(c) => {
            check_channel(c)?;
            vec![c.to_string()]
        }
        None => channel_names(registry, name)?,
    };
    let mut out = vec![];
    for c in names {
        match read_channel(registry, name, &c, key)? {
            Some(h) => out.push(h),
            None if channel.is_some() => return Err(unknown_channel(registry, name, &c)?),
            None => {}
        }
    }
    Ok(out)
}

/// The head of every channel of every category (or of `name`), verified when `key` is given.
pub fn list_channels(registry: &Path, name: Option<&str>, key: Option<&TrustedKey>) -> Result<Vec<ChannelHead>, RegistryError> {
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => channel_categories(registry)?,
    };
    let mut out = vec![];
    for n in names {
        for h in history(registry, &n, None, key)? {
            if let Some(r) = h.head() {
                let r = &r.record;
                out.push(ChannelHead {
                    name: r.name.clone(),
                    channel: r.channel.clone(),
                    version: r.version.clone(),
                    sequence: r.sequence,
                    issued: r.issued.clone(),
                    expires: r.expires.clone(),
                    action: r.action,
                    verified: h.verified,
                });
            }
        }
    }
    Ok(out)
}

/// A category whose channel records were refused, and why.
pub type RefusedCategory = (String, RegistryError);

/// [`list_channels`] per category: one whose channel records are refused (tampered, replayed,
/// another key) is returned with its error instead of failing the whole listing, so one bad
/// category does not hide the others.
pub fn list_channels_lenient(registry: &Path, name: Option<&str>, key: Option<&TrustedKey>) -> Result<(Vec<ChannelHead>, Vec<RefusedCategory>), RegistryError> {
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => channel_categories(registry)?,
    };
    let (mut heads, mut refused) = (vec![], vec![]);
    for n in names {
        match list_channels(registry, Some(&n), key) {
            Ok(h) => heads.extend(h),
            Err(e) => refused.push((n, e)),
        }
    }
    Ok((heads, refused))
}

/// Categories of the registry that have a channels folder, sorted.
fn channel_categories(registry: &Path) -> Result<Vec<String>, RegistryError> {
    let rd = std::fs::read_dir(registry).map_err(|e| RegistryError::io(registry, e))?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(CHANNELS_DIR).is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| crate::package::manifest::check_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

pub(crate) fn unknown_channel(registry: &Path, name: &str, channel: &str) -> Result<RegistryError, RegistryError> {
    let known = channel_names(registry, name)?;
    Ok(RegistryError::UnknownChannel {
        name: name.into(),
        channel: channel.into(),
        registry: registry.to_path_buf(),
        known: if known.is_empty() { "none; create one with `vqad promote`".into() } else { known.join(", ") },
    })
}

/// The published archive of `name` `version`, verified in the registry with `key`: its
/// archive sha256.
fn verified_sha(registry: &Path, name: &str, version: &str, key: &TrustedKey) -> Result<String, RegistryError> {
    let path = super::resolve::published_path(registry, name, version)?;
    Ok(super::verify_in_registry(&path, registry, key)?.archive_sha256)
}

fn ensure_registry(registry: &Path) -> Result<(), RegistryError> {
    if !registry.join(super::INDEX_FILE).is_file() {
        return Err(RegistryError::Invalid(format!("{} is not a registry (no {}); publish a package there first", registry.display(), super::INDEX_FILE)));
    }
    Ok(())
}

/// Assigns `version` (published, and verified now) to `channel` with a new record of the next
/// sequence, signed with `key`; the previous history must verify with the same key. Promoting
/// the version the channel already runs renews its expiry.
pub fn promote(
    registry: &Path,
    name: &str,
    version: &str,
    channel: &str,
    key: &SigningKey,
    opts: &ChannelOptions,
) -> Result<RecordFile, RegistryError> {
    crate::package::manifest::check_name(name).map_err(RegistryError::Invalid)?;
    check_channel(channel)?;
    ensure_registry(registry)?;
    let _lock = RegistryLock::take(registry, &format!("promote {name} {version} to {channel}"), &opts.lock)?;
    let trusted = key.public();
    let sha = verified_sha(registry, name, version, &trusted)?;
    let hist = read_channel(registry, name, channel, Some(&trusted))?;
    append(registry, name, channel, hist.as_ref(), version, sha, Action::Promote, key, opts)
}

/// Points `channel` back at the version it ran before the current one, with a *new* record
/// (higher sequence). Refused when the channel has only ever run one version.
pub fn rollback(registry: &Path, name: &str, channel: &str, key: &SigningKey, opts: &ChannelOptions) -> Result<RecordFile, RegistryError> {
    crate::package::manifest::check_name(name).map_err(RegistryError::Invalid)?;
    check_channel(channel)?;
    ensure_registry(registry)?;
    let _lock = RegistryLock::take(registry, &format!("rollback {name} {channel}"), &opts.lock)?;
    let trusted = key.public();
    let Some(hist) = read_channel(registry, name, channel, Some(&trusted))? else {
        return Err(unknown_channel(registry, name, channel)?);
    };
    let stack = hist.deployment_stack();
    if stack.len() < 2 {
        let current = hist.head().map(|h| h.record.version.clone()).unwrap_or_default();
        return Err(RegistryError::NothingToRollBack { name: name.into(), channel: channel.into(), current });
    }
    let target = stack[stack.len() - 2].clone();
    let sha = verified_sha(registry, name, &target, &trusted)?;
    append(registry, name, channel, Some(&hist), &target, sha, Action::Rollback, key, opts)
}

#[allow(clippy::too_many_arguments)]
fn append(
    registry: &Path,
    name: &str,
    channel: &str,
    hist: Option<&ChannelHistory>,
    version: &str,
    archive_sha256: String,
    action: Action,
    key: &SigningKey,
    opts: &ChannelOptions,
) -> Result<RecordFile, RegistryError> {
    if opts.expires_in_days == 0 {
        return Err(RegistryError::Invalid("--expires-in must be at least 1 day".into()));
    }
    let now = opts.now.unwrap_or_else(OffsetDateTime::now_utc);
    let head = hist.and_then(|h| h.head());
    if let Some(h) = head {
        if now < h.record.issued_at() {
            return Err(RegistryError::Invalid(format!(
                "{name}@{channel}: the clock says {} but sequence {} was issued at {}; fix the clock first",
                format_time(now),
                h.record.sequence,
                h.record.issued
            )));
        }
    }
    let record = ChannelRecord {
        format_version: RECORD_FORMAT,
        name: name.into(),
        channel: channel.into(),
        version: version.into(),
        archive_sha256,
        sequence: head.map_or(1, |h| h.record.sequence + 1),
        action,
        issued: format_time(now),
        expires: format_time(now + time::Duration::days(opts.expires_in_days as i64)),
    };
    let envelope = record.sign(key);
    let dir = channel_dir(registry, name, channel);
    std::fs::create_dir_all(&dir).map_err(|e| RegistryError::io(&dir, e))?;
    let path = dir.join(record_file_name(record.sequence));
    // History files are never replaced: create-only, then the convenience copy.
    crate::fsutil::write_file(&path, &envelope, false).map_err(|e| RegistryError::io(&path, e))?;
    let current = dir.join(CURRENT_FILE);
    crate::fsutil::write_file(&current, &envelope, true).map_err(|e| RegistryError::io(&current, e))?;
    Ok(RecordFile { path, record, envelope })
}

/// What a client remembers between runs, as a TUF client keeps its trusted metadata: the
/// highest record sequence it has accepted per registry and channel. With it, a registry
/// whose newest records were deleted (the history ends lower and still verifies) is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustState {
    pub format_version: u32,
    /// `<canonical registry path>#<name>@<channel>` → highest accepted sequence.
    pub channels: BTreeMap<String, TrustedSequence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedSequence {
    pub sequence: u64,
    pub version: String,
    pub archive_sha256: String,
}

impl TrustState {
    /// Reads the state, or an empty one if the file does not exist yet.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        match std::fs::read(path) {
            Ok(b) => {
                let s: TrustState = serde_json::from_slice(&b)
                    .map_err(|e| RegistryError::BadTrustState { path: path.into(), reason: e.to_string() })?;
                if s.format_version != 1 {
                    return Err(RegistryError::BadTrustState { path: path.into(), reason: format!("format_version {}", s.format_version) });
                }
                Ok(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrustState { format_version: 1, channels: BTreeMap::new() }),
            Err(e) => Err(RegistryError::io(path, e)),
        }
    }

    pub(crate) fn key(registry: &Path, name: &str, channel: &str) -> Result<String, RegistryError> {
        let reg = std::fs::canonicalize(registry).map_err(|e| RegistryError::io(registry, e))?;
        Ok(format!("{}#{name}@{channel}", reg.display()))
    }

    /// Refuses `head` if this client has already accepted a higher sequence for the channel.
    pub(crate) fn check(&self, registry: &Path, head: &RecordFile, path: &Path) -> Result<(), RegistryError> {
        let r = &head.record;
        if let Some(seen) = self.channels.get(&Self::key(registry, &r.name, &r.channel)?) {
            if r.sequence < seen.sequence {
                return Err(RegistryError::Replayed {
                    name: r.name.clone(),
                    channel: r.channel.clone(),
                    offered: r.sequence,
                    seen: seen.sequence,
                    source_desc: format!("the registry's history ({})", head.path.display()),
                    seen_where: format!("accepted by this client (trust state {}; newer records deleted?)", path.display()),
                });
            }
        }
        Ok(())
    }

    /// Remembers `head` (never lowers a sequence) and writes the file atomically.
    pub(crate) fn accept(path: &Path, registry: &Path, head: &ChannelRecord) -> Result<(), RegistryError> {
        let mut s = Self::load(path)?;
        let k = Self::key(registry, &head.name, &head.channel)?;
        if s.channels.get(&k).is_some_and(|t| t.sequence >= head.sequence) {
            return Ok(());
        }
        s.channels.insert(
            k,
            TrustedSequence { sequence: head.sequence, version: head.version.clone(), archive_sha256: head.archive_sha256.clone() },
        );
        let mut json = serde_json::to_vec_pretty(&s).map_err(|e| RegistryError::BadTrustState { path: path.into(), reason: e.to_string() })?;
        json.push(b'\n');
        crate::fsutil::write_file(path, &json, true).map_err(|e| RegistryError::io(path, e))
    }
}
