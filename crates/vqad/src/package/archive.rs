//! Building, verifying, inspecting and unpacking `.vqad` archives.

use super::dsse::{self, SignedStatement};
use super::intoto::{self, Statement, SLSA_PROVENANCE_V1};
use super::keys::{SigningKey, TrustedKey};
use super::manifest::Manifest;
use super::zipfmt::{self, Entry};
use super::{
    entry_order, sha256_hex, Limits, PackageError, EXTENSION, GRAPH_FILES, MANIFEST_FILE, MAX_SIGNATURE_SIZE,
    PROVENANCE_FILE, PROVENANCE_FORMAT, SIGNATURE_FILE, SIGNED_FILES, VARIANT_FILES,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `<name>-<version>.vqad`.
pub fn package_file_name(manifest: &Manifest) -> String {
    format!("{}.{EXTENSION}", manifest.id())
}

/// Where a package went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    pub path: PathBuf,
    /// Hex sha256 of the whole archive.
    pub sha256: String,
    pub size: u64,
}

/// Options for [`build_package_with`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Replace an existing package file of the same name.
    pub overwrite: bool,
}

/// Builds and signs a package. `files` holds the four payload files (the three graphs and
/// `codebook.npy`); `manifest.json` is written from `manifest`. `out` is the destination
/// folder (created if needed), or a path ending in `.vqad` that must be the canonical
/// `<name>-<version>.vqad`. Never overwrites an existing file.
pub fn build_package(
    manifest: &Manifest,
    files: &BTreeMap<String, Vec<u8>>,
    key: &SigningKey,
    out: &Path,
) -> Result<PackageInfo, PackageError> {
    build_package_with(manifest, files, key, out, &BuildOptions::default())
}

/// [`build_package`] with options.
pub fn build_package_with(
    manifest: &Manifest,
    files: &BTreeMap<String, Vec<u8>>,
    key: &SigningKey,
    out: &Path,
    opts: &BuildOptions,
) -> Result<PackageInfo, PackageError> {
    manifest.validate()?;
    let bytes = package_bytes(manifest, files, key)?;
    let file_name = package_file_name(manifest);
    let (dir, path) = if out.extension().is_some_and(|e| e == EXTENSION) && !out.is_dir() {
        let found = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if found != file_name {
            return Err(PackageError::FileNameMismatch { expected: file_name, found });
        }
        let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        (dir, out.to_path_buf())
    } else {
        (out.to_path_buf(), out.join(&file_name))
    };
    std::fs::create_dir_all(&dir).map_err(|e| PackageError::io(&dir, e))?;
    write_atomic(&path, &bytes, opts.overwrite)?;
    Ok(PackageInfo { path, sha256: sha256_hex(&bytes), size: bytes.len() as u64 })
}

/// The archive bytes; pure function of its inputs (RFC 6979 signatures, fixed zip layout).
/// `files` may also hold [`PROVENANCE_FILE`] (made with [`subject_digests`] and signed with
/// the same key); it is checked as the verifier will check it.
pub fn package_bytes(
    manifest: &Manifest,
    files: &BTreeMap<String, Vec<u8>>,
    key: &SigningKey,
) -> Result<Vec<u8>, PackageError> {
    manifest.validate()?;
    if files.contains_key(MANIFEST_FILE) {
        return Err(PackageError::BadInput(format!("{MANIFEST_FILE} is written from the Manifest; do not pass it")));
    }
    for name in files.keys() {
        if !SIGNED_FILES.contains(&name.as_str()) && name != PROVENANCE_FILE && !VARIANT_FILES.contains(&name.as_str()) {
            return Err(PackageError::BadInput(format!(
                "unexpected file '{name}'; a package holds {}, optionally {PROVENANCE_FILE} and the variants {}",
                SIGNED_FILES[1..].join(", "),
                VARIANT_FILES.join(", ")
            )));
        }
    }
    check_variant_entries(manifest, files.keys().map(String::as_str))?;
    let manifest_bytes = manifest.to_json_bytes()?;
    let mut all: BTreeMap<&str, &[u8]> = BTreeMap::from([(MANIFEST_FILE, manifest_bytes.as_slice())]);
    for name in &SIGNED_FILES[1..] {
        let data = files.get(*name).ok_or_else(|| PackageError::BadInput(format!("missing file '{name}'")))?;
        all.insert(name, data.as_slice());
    }
    for name in VARIANT_FILES.iter().filter(|n| files.contains_key(**n)) {
        all.insert(name, files[*name].as_slice());
    }
    let provenance = files.get(PROVENANCE_FILE);
    if let Some(p) = provenance {
        let subjects: BTreeMap<String, String> = all.iter().map(|(n, d)| (n.to_string(), sha256_hex(d))).collect();
        check_provenance(p, manifest, &subjects, &key.public())?;
        all.insert(PROVENANCE_FILE, p.as_slice());
    }
    let digests: BTreeMap<String, String> = all.iter().map(|(n, d)| (n.to_string(), sha256_hex(d))).collect();
    let sig = dsse::sign(&manifest.id(), &digests, key)?;
    let mut entries: Vec<(&str, &[u8])> = Vec::new();
    for name in entry_order(provenance.is_some()) {
        if name == SIGNATURE_FILE {
            entries.push((name, &sig));
        } else if let Some(data) = all.get(name) {
            entries.push((name, data));
        }
    }
    zipfmt::write_zip(&entries)
}

/// The subjects a package's provenance must name: every signed file but the provenance itself
/// (`manifest.json` as [`Manifest::to_json_bytes`] writes it, the graphs, the codebook), name →
/// sha256 hex. `files` as given to [`package_bytes`].
pub fn subject_digests(manifest: &Manifest, files: &BTreeMap<String, Vec<u8>>) -> Result<BTreeMap<String, String>, PackageError> {
    let mut out = BTreeMap::from([(MANIFEST_FILE.to_string(), sha256_hex(&manifest.to_json_bytes()?))]);
    for name in &SIGNED_FILES[1..] {
        let data = files.get(*name).ok_or_else(|| PackageError::BadInput(format!("missing file '{name}'")))?;
        out.insert(name.to_string(), sha256_hex(data));
    }
    for name in VARIANT_FILES.iter().filter(|n| files.contains_key(**n)) {
        out.insert(name.to_string(), sha256_hex(&files[*name]));
    }
    Ok(out)
}

/// The variant entries present must be exactly those the manifest's `variants` name: a graph
/// nobody measured never rides along, and a listed variant is never missing.
fn check_variant_entries<'a>(manifest: &Manifest, present: impl Iterator<Item = &'a str>) -> Result<(), PackageError> {
    let present: std::collections::BTreeSet<&str> = present.filter(|n| VARIANT_FILES.contains(n)).collect();
    let listed: std::collections::BTreeSet<&str> =
        manifest.variants.iter().flat_map(|v| v.values()).flat_map(|v| v.files.values()).map(String::as_str).filter(|n| VARIANT_FILES.contains(n)).collect();
    if let Some(n) = present.difference(&listed).next() {
        return Err(PackageError::InvalidManifest(format!("the archive holds {n} but the manifest's variants do not list it")));
    }
    if let Some(n) = listed.difference(&present).next() {
        return Err(PackageError::MissingFile(n.to_string()));
    }
    Ok(())
}

/// Checks a provenance envelope against the package it sits in: signed by the package key, an
/// in-toto Statement v1 of SLSA provenance v1 whose subjects are exactly the other signed
/// files, and a manifest format that announces it. The predicate itself is read (strictly)
/// by [`crate::provenance`].
fn check_provenance(
    envelope: &[u8],
    manifest: &Manifest,
    subjects: &BTreeMap<String, String>,
    key: &TrustedKey,
) -> Result<Statement<serde_json::Value>, PackageError> {
    if manifest.format_version < PROVENANCE_FORMAT {
        return Err(PackageError::InvalidManifest(format!(
            "a package with {PROVENANCE_FILE} needs format_version {PROVENANCE_FORMAT}, the manifest says {}",
            manifest.format_version
        )));
    }
    let st = intoto::open_statement(envelope, key, Some(SLSA_PROVENANCE_V1)).map_err(|e| PackageError::BadProvenance(e.to_string()))?;
    intoto::check_subjects(&st.subject, subjects).map_err(|e| PackageError::BadProvenance(e.to_string()))?;
    Ok(st)
}

/// Writes `bytes` through a synced temp file renamed to `path` ([`crate::fsutil::write_file`]), so a reader
/// never sees half a package. Without `overwrite` the final step refuses an existing file
/// (no-clobber rename where the OS has one).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], overwrite: bool) -> Result<(), PackageError> {
    crate::fsutil::write_file(path, bytes, overwrite).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            PackageError::OutputExists { path: path.to_path_buf() }
        } else {
            PackageError::io(path, e)
        }
    })
}

/// A package whose signature, file list and every file's bytes have been checked against a
/// trusted key. The only way to reach package contents.
#[derive(Debug, Clone)]
pub struct VerifiedPackage {
    pub manifest: Manifest,
    /// The signed files by name: `manifest.json`, the three graphs, `codebook.npy` and, from
    /// format 6, `provenance.intoto.json`.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The `model.sig` bytes (written back by [`VerifiedPackage::unpack`]).
    pub signature: Vec<u8>,
    /// The signed statement (subject, root digest, file digests).
    pub statement: SignedStatement,
    /// The build provenance (`provenance.intoto.json`), verified with the same key and naming
    /// exactly the other files; `None` for packages made without one (formats 1–5).
    pub provenance: Option<Statement<serde_json::Value>>,
    /// Hex sha256 of the whole archive.
    pub archive_sha256: String,
    /// Fingerprint of the key that verified it (hex sha256 of SPKI DER).
    pub key_fingerprint: String,
    /// Where it was read from.
    pub path: PathBuf,
}

impl VerifiedPackage {
    /// Verifies with default [`Limits`]; the file name must be `<name>-<version>.vqad`.
    pub fn open(path: &Path, key: &TrustedKey) -> Result<Self, PackageError> {
        Self::open_with(path, key, &Limits::default())
    }

    /// Verifies with the given limits; the file name must be `<name>-<version>.vqad`.
    pub fn open_with(path: &Path, key: &TrustedKey, limits: &Limits) -> Result<Self, PackageError> {
        let bytes = read_limited(path, limits)?;
        let mut p = verify_bytes(&bytes, key, limits)?;
        p.path = path.to_path_buf();
        let expected = package_file_name(&p.manifest);
        let found = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if found != expected {
            return Err(PackageError::FileNameMismatch { expected, found });
        }
        Ok(p)
    }

    /// Graph bytes by name (one of [`GRAPH_FILES`]).
    pub fn graph(&self, name: &str) -> Option<&[u8]> {
        GRAPH_FILES.contains(&name).then(|| self.files.get(name).map(Vec::as_slice)).flatten()
    }

    /// Writes every file, `model.sig` included, into `out_dir` (created if missing; must be
    /// empty), so `model_signing verify key out_dir …` can check it.
    pub fn unpack(&self, out_dir: &Path) -> Result<(), PackageError> {
        if out_dir.exists() {
            let mut rd = std::fs::read_dir(out_dir).map_err(|e| PackageError::io(out_dir, e))?;
            if rd.next().is_some() {
                return Err(PackageError::OutputDirNotEmpty { path: out_dir.to_path_buf() });
            }
        } else {
            std::fs::create_dir_all(out_dir).map_err(|e| PackageError::io(out_dir, e))?;
        }
        let all = self.files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).chain([(SIGNATURE_FILE, &self.signature[..])]);
        for (name, bytes) in all {
            // Names were checked flat and safe at verification; create_new refuses anything
            // that appeared meanwhile.
            let p = out_dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .map_err(|e| PackageError::io(&p, e))?;
            f.write_all(bytes).map_err(|e| PackageError::io(&p, e))?;
        }
        Ok(())
    }

    /// One line for logs and the CLI.
    pub fn summary(&self) -> String {
        format!(
            "valid: {} {}, {} files, key {}…, archive sha256 {}…",
            self.manifest.name,
            self.manifest.version,
            self.files.len(),
            &self.key_fingerprint[..16],
            &self.archive_sha256[..16]
        )
    }
}

/// Reads a package file, refusing one bigger than the limits could ever allow.
pub(crate) fn read_limited(path: &Path, limits: &Limits) -> Result<Vec<u8>, PackageError> {
    let meta = std::fs::metadata(path).map_err(|e| PackageError::io(path, e))?;
    // Deflate never grows data by more than ~0.1%; headers are small.
    let cap = limits.max_total.saturating_add(limits.max_total / 64).saturating_add(1 << 20);
    if meta.len() > cap {
        return Err(PackageError::ArchiveTooLarge { size: meta.len(), limit: cap });
    }
    std::fs::read(path).map_err(|e| PackageError::io(path, e))
}

/// Verifies archive bytes: structure, then signature, then file list, then every file's
/// digest and the root digest, then the manifest. Does not check the file name.
pub fn verify_bytes(bytes: &[u8], key: &TrustedKey, limits: &Limits) -> Result<VerifiedPackage, PackageError> {
    let entries = zipfmt::read_directory(bytes, limits)?;
    let by_name: BTreeMap<&str, &Entry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut total = 0u64;

    // 1. The signature, before any payload byte is inflated.
    let sig_entry = by_name.get(SIGNATURE_FILE).ok_or(PackageError::MissingSignature)?;
    let signature = zipfmt::read_entry(bytes, sig_entry, limits, MAX_SIGNATURE_SIZE, &mut total)?;
    let statement = dsse::verify_signature(&signature, key)?;

    // 2. The signed list against the archive's entries.
    let listed: BTreeMap<&str, &str> = statement.resources.iter().map(|(n, d)| (n.as_str(), d.as_str())).collect();
    for e in &entries {
        if e.name != SIGNATURE_FILE && !listed.contains_key(e.name.as_str()) {
            return Err(PackageError::UnlistedEntry(e.name.clone()));
        }
    }
    for name in listed.keys() {
        if !by_name.contains_key(name) {
            return Err(PackageError::MissingFile(name.to_string()));
        }
    }
    for name in SIGNED_FILES {
        if !listed.contains_key(name) {
            return Err(PackageError::MissingRequiredFile(name.into()));
        }
    }
    if let Some(name) = listed.keys().find(|n| !SIGNED_FILES.contains(n) && **n != PROVENANCE_FILE && !VARIANT_FILES.contains(n)) {
        return Err(PackageError::UnknownFile(name.to_string()));
    }

    // 3. Re-hash every file; recompute the root from what was hashed.
    let mut files = BTreeMap::new();
    let mut actual_digests = Vec::new();
    for (name, expected) in &statement.resources {
        let data = zipfmt::read_entry(bytes, by_name[name.as_str()], limits, u64::MAX, &mut total)?;
        let actual = sha256_hex(&data);
        if &actual != expected {
            return Err(PackageError::DigestMismatch { name: name.clone(), expected: expected.clone(), actual });
        }
        actual_digests.push(actual);
        files.insert(name.clone(), data);
    }
    let root = dsse::root_digest(actual_digests.iter().map(String::as_str))?;
    if root != statement.root_digest {
        return Err(PackageError::RootDigestMismatch { expected: statement.root_digest.clone(), actual: root });
    }

    // 4. Only now is the manifest read, and its version checked.
    let manifest = Manifest::from_json_bytes(&files[MANIFEST_FILE])?;
    if statement.subject_name != manifest.id() {
        return Err(PackageError::SubjectMismatch { expected: manifest.id(), found: statement.subject_name.clone() });
    }
    check_variant_entries(&manifest, files.keys().map(String::as_str))?;
    let provenance = match files.get(PROVENANCE_FILE) {
        Some(p) => {
            let subjects: BTreeMap<String, String> = statement
                .resources
                .iter()
                .filter(|(n, _)| n != PROVENANCE_FILE)
                .map(|(n, d)| (n.clone(), d.clone()))
                .collect();
            Some(check_provenance(p, &manifest, &subjects, key)?)
        }
        None => None,
    };
    // 5. Nothing rides along outside the signed files: the archive is exactly vqad's layout
    //    of these entries, and model.sig exactly the bundle vqad writes.
    let mut order: Vec<&Entry> = entries.iter().collect();
    let layout = entry_order(provenance.is_some());
    order.sort_by_key(|e| (layout.iter().position(|n| *n == e.name).unwrap_or(layout.len()), e.name.clone()));
    zipfmt::check_canonical(bytes, &order)?;
    dsse::check_bundle_form(&signature, key)?;
    Ok(VerifiedPackage {
        manifest,
        files,
        signature,
        statement,
        provenance,
        archive_sha256: sha256_hex(bytes),
        key_fingerprint: key.fingerprint(),
        path: PathBuf::new(),
    })
}

/// One archive entry as seen by [`inspect`].
#[derive(Debug, Clone)]
pub struct EntryInfo {
    pub name: String,
    pub size: u64,
    pub compressed: u64,
    /// sha256 of the inflated bytes.
    pub sha256: String,
    /// The digest the signature claims for it (`None`: unlisted, or no readable signature).
    pub signed_sha256: Option<String>,
}

/// What [`inspect`] saw. Unless `verified` is `Some`, nothing in it is trustworthy.
#[derive(Debug, Clone)]
pub struct InspectReport {
    pub path: PathBuf,
    pub archive_sha256: String,
    pub size: u64,
    pub entries: Vec<EntryInfo>,
    /// The manifest as the archive claims it (unverified), or why it could not be read.
    pub manifest: Result<Manifest, String>,
    /// Claimed signature: subject, root digest, key hint, signature count; or why unreadable.
    pub signature: Result<SignatureClaims, String>,
    /// `Some(summary)` when a key was given and the package verified; `Some(Err)` when it
    /// was given and verification failed.
    pub verified: Option<Result<String, String>>,
    /// The build provenance statement as the archive claims it (unverified unless `verified`
    /// is `Some(Ok)`): `None` when the package carries none.
    pub provenance: Option<Result<Statement<serde_json::Value>, String>>,
}

/// What `model.sig` claims, unverified.
#[derive(Debug, Clone)]
pub struct SignatureClaims {
    pub subject_name: String,
    pub root_digest: String,
    pub key_hint: Option<String>,
    pub signatures: usize,
}

impl InspectReport {
    /// Machine-readable form (`vqad inspect --json`); `verified` is `null` when no key was given.
    pub fn to_json(&self) -> serde_json::Value {
        let either = |r: Result<serde_json::Value, &String>| match r {
            Ok(v) => v,
            Err(e) => serde_json::json!({ "error": e }),
        };
        serde_json::json!({
            "path": self.path,
            "archive_sha256": self.archive_sha256,
            "size": self.size,
            "entries": self.entries.iter().map(|e| serde_json::json!({
                "name": e.name, "size": e.size, "compressed": e.compressed,
                "sha256": e.sha256, "signed_sha256": e.signed_sha256,
            })).collect::<Vec<_>>(),
            "manifest": either(self.manifest.as_ref().map(|m| serde_json::to_value(m).unwrap_or_default())),
            "signature": either(self.signature.as_ref().map(|s| serde_json::json!({
                "subject_name": s.subject_name, "root_digest": s.root_digest,
                "key_hint": s.key_hint, "signatures": s.signatures,
            }))),
            "verified": self.verified.as_ref().map(|v| match v {
                Ok(s) => serde_json::json!({ "valid": true, "summary": s }),
                Err(e) => serde_json::json!({ "valid": false, "reason": e }),
            }),
            "provenance": self.provenance.as_ref().map(|p| either(p.as_ref().map(|st| serde_json::to_value(st).unwrap_or_default()))),
        })
    }
}

impl std::fmt::Display for InspectReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.verified {
            None => writeln!(f, "NOT VERIFIED (no key given): everything below is what the file claims")?,
            Some(Ok(s)) => writeln!(f, "VERIFIED — {s}")?,
            Some(Err(e)) => writeln!(f, "VERIFICATION FAILED: {e}\neverything below is what the file claims")?,
        }
        writeln!(f, "file: {} ({} bytes, sha256 {})", self.path.display(), self.size, self.archive_sha256)?;
        match &self.manifest {
            Ok(m) => {
                writeln!(
                    f,
                    "manifest: {} {} (format {}), {}², {} ch, grid {}×{}, K={}, D={}, opset {}; η={}, threshold {}, min area {}; created {}",
                    m.name, m.version, m.format_version, m.model.image_size, m.model.channels, m.model.grid_m,
                    m.model.grid_n, m.model.num_codes, m.model.code_dim, m.model.opset, m.detection.eta,
                    m.detection.pixel_threshold, m.detection.min_area, m.provenance.created
                )?;
                let d = &m.detection;
                let whiten = match (&d.residual_metric, d.residual_patch.unwrap_or(1)) {
                    (None, _) => "plain ℓ2".to_string(),
                    (Some(_), 1) => "whitened per pixel".to_string(),
                    (Some(_), k) => format!("whitened over {k}×{k} patches"),
                };
                let texture = match &d.texture_map {
                    None => "no texture map".to_string(),
                    Some(t) => format!(
                        "plus texture statistics ({}, {w}×{w} windows, weight {})",
                        t.summary(),
                        t.weight,
                        w = t.window
                    ),
                };
                writeln!(
                    f,
                    "map: {} score, {} restoration, residual {}, {}, {}",
                    d.score.unwrap_or_default().name(),
                    d.restore.unwrap_or_default().name(),
                    whiten,
                    if d.border_profile.is_some() { "border profile" } else { "no border profile" },
                    texture
                )?;
                writeln!(f, "precisions: fp32 (reference){}", if m.variants.is_none() { "; no variants" } else { "" })?;
                for (p, v) in m.variants.iter().flatten() {
                    let q = &v.parity;
                    let bound = match (&q.override_reason, q.within_bound) {
                        (_, true) => "within bound".to_string(),
                        (Some(r), false) => format!("OUTSIDE bound, packaged under override: {r}"),
                        (None, false) => "OUTSIDE bound".to_string(),
                    };
                    let bound = if v.float32.is_empty() { bound } else { format!("{bound}; kept in fp32 by accuracy control: {}", v.float32.join(", ")) };
                    writeln!(
                        f,
                        "  {p}: decisions {:.2}% agree (≥ {:.0}%), mask IoU {} (≥ {}), resampled {:.2}%, codes {:.2}%, prior SQNR {:.1} dB / argmax {:.2}%, decoder max {:.2e}, pixel AUROC {:+.4} on {} normals + {} synthetic defects; {bound}",
                        q.decision_agreement * 100.0,
                        q.bound.min_decision_agreement * 100.0,
                        q.mask_iou.map_or("-".to_string(), |v| format!("{v:.3}")),
                        q.bound.min_mask_iou,
                        q.resampled_agreement * 100.0,
                        q.encoder_code_agreement * 100.0,
                        q.prior_logprob_sqnr_db,
                        q.prior_argmax_agreement * 100.0,
                        q.decoder_max_error,
                        q.auroc_difference,
                        q.normals,
                        q.defects
                    )?;
                }
            }
            Err(e) => writeln!(f, "manifest: unreadable: {e}")?,
        }
        match &self.signature {
            Ok(s) => writeln!(
                f,
                "signature: subject {} root {} key hint {} ({} signature(s))",
                s.subject_name,
                s.root_digest,
                s.key_hint.as_deref().unwrap_or("none"),
                s.signatures
            )?,
            Err(e) => writeln!(f, "signature: unreadable: {e}")?,
        }
        for e in &self.entries {
            let mark = match &e.signed_sha256 {
                Some(d) if *d == e.sha256 => "matches signed digest",
                Some(_) => "DIFFERS from signed digest",
                None if e.name == SIGNATURE_FILE => "signature",
                None => "not in signed list",
            };
            writeln!(f, "  {:<22} {:>10} bytes  sha256 {}  {}", e.name, e.size, e.sha256, mark)?;
        }
        Ok(())
    }
}

/// Reads a package for humans without verifying it (structure and size limits still apply,
/// so inspecting a hostile file is safe). The report says loudly that it is unverified.
pub fn inspect(path: &Path) -> Result<InspectReport, PackageError> {
    inspect_with_key(path, None)
}

/// [`inspect`], plus a full verification when a key is given.
pub fn inspect_with_key(path: &Path, key: Option<&TrustedKey>) -> Result<InspectReport, PackageError> {
    let limits = Limits::default();
    let bytes = read_limited(path, &limits)?;
    let entries = zipfmt::read_directory(&bytes, &limits)?;
    let mut total = 0;
    let mut signature: Result<(SignedStatement, Option<String>, usize), String> = Err("no model.sig".into());
    let mut manifest: Result<Manifest, String> = Err(format!("no {MANIFEST_FILE}"));
    let mut provenance = None;
    let mut infos = Vec::new();
    let mut datas = Vec::new();
    for e in &entries {
        let cap = if e.name == SIGNATURE_FILE { MAX_SIGNATURE_SIZE } else { u64::MAX };
        let data = zipfmt::read_entry(&bytes, e, &limits, cap, &mut total)?;
        if e.name == SIGNATURE_FILE {
            signature = dsse::read_unverified(&data).map_err(|e| e.to_string());
        }
        if e.name == MANIFEST_FILE {
            manifest = Manifest::from_json_bytes(&data).map_err(|e| e.to_string());
        }
        if e.name == PROVENANCE_FILE {
            provenance = Some(
                dsse::read_envelope_unverified(&data)
                    .map_err(|e| e.to_string())
                    .and_then(|(_, payload)| intoto::parse_statement(&payload, Some(SLSA_PROVENANCE_V1)).map_err(|e| e.to_string())),
            );
        }
        datas.push(sha256_hex(&data));
    }
    for (e, sha) in entries.iter().zip(datas) {
        let signed = signature.as_ref().ok().and_then(|(st, _, _)| st.digest_of(&e.name).map(str::to_string));
        infos.push(EntryInfo { name: e.name.clone(), size: e.size, compressed: e.compressed, sha256: sha, signed_sha256: signed });
    }
    let verified = key.map(|k| VerifiedPackage::open(path, k).map(|p| p.summary()).map_err(|e| e.to_string()));
    Ok(InspectReport {
        path: path.to_path_buf(),
        archive_sha256: sha256_hex(&bytes),
        size: bytes.len() as u64,
        entries: infos,
        manifest,
        signature: signature.map(|(st, hint, n)| SignatureClaims {
            subject_name: st.subject_name,
            root_digest: st.root_digest,
            key_hint: hint,
            signatures: n,
        }),
        verified,
        provenance,
    })
}
