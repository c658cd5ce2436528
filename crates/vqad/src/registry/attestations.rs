//! Attestations stored beside a published version: `REGISTRY/<name>/<version>/attestations/`,
//! listed in the index. The registry takes any in-toto statement in a DSSE envelope that the
//! trusted key signed and whose one subject is exactly that version's archive (name and
//! sha256); what the predicate says is for `vqad audit` to check.

use super::ATTESTATIONS_DIR;
use crate::package::intoto::{open_statement, Statement};
use crate::package::{PackageError, TrustedKey};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One stored attestation, as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationEntry {
    /// File name under the version's `attestations/` folder.
    pub file: String,
    pub predicate_type: String,
    /// Hex sha256 of the envelope file.
    pub sha256: String,
}

/// A checked attestation waiting to be stored.
#[derive(Debug, Clone)]
pub struct Checked {
    pub entry: AttestationEntry,
    pub bytes: Vec<u8>,
}

/// Verifies `path` with `key` and checks its subject is the archive `file_name` / `sha256`.
pub fn check(path: &Path, key: &TrustedKey, file_name: &str, sha256: &str) -> Result<Checked, PackageError> {
    let bad = |why: String| PackageError::BadInput(format!("attestation {}: {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| PackageError::io(path, e))?;
    let st: Statement<serde_json::Value> = open_statement(&bytes, key, None).map_err(|e| bad(e.to_string()))?;
    let ok = st.subject.len() == 1
        && st.subject[0].name.as_deref() == Some(file_name)
        && st.subject[0].digest.get("sha256").map(String::as_str) == Some(sha256);
    if !ok {
        return Err(bad(format!("its subject is not {file_name} (sha256 {sha256}); it is about another archive")));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !name.ends_with(".intoto.json") || name.starts_with('.') || name.contains(['/', '\\']) {
        return Err(bad("the file name must end in .intoto.json".into()));
    }
    Ok(Checked { entry: AttestationEntry { file: name, predicate_type: st.predicate_type, sha256: crate::fsutil::sha256_hex(&bytes) }, bytes })
}

/// Writes `new` into `dir/attestations/` (an existing file must hold the same bytes) and
/// returns every attestation stored there, sorted by file name.
pub fn store(dir: &Path, new: &[Checked]) -> Result<Vec<AttestationEntry>, PackageError> {
    let adir = dir.join(ATTESTATIONS_DIR);
    for c in new {
        let p = adir.join(&c.entry.file);
        match std::fs::read(&p) {
            Ok(b) if b == c.bytes => {}
            Ok(_) => return Err(PackageError::BadInput(format!("{} already holds another attestation; attestations are never replaced", p.display()))),
            Err(_) => crate::fsutil::write_file(&p, &c.bytes, false).map_err(|e| PackageError::io(&p, e))?,
        }
    }
    let mut out = vec![];
    if adir.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&adir)
            .map_err(|e| PackageError::io(&adir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".intoto.json") && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        files.sort();
        for p in files {
            let bytes = std::fs::read(&p).map_err(|e| PackageError::io(&p, e))?;
            let ty = crate::package::dsse::read_envelope_unverified(&bytes)
                .ok()
                .and_then(|(_, payload)| serde_json::from_slice::<serde_json::Value>(&payload).ok())
                .and_then(|v| v.get("predicateType").and_then(|t| t.as_str()).map(str::to_string))
                .unwrap_or_default();
            out.push(AttestationEntry {
                file: p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                predicate_type: ty,
                sha256: crate::fsutil::sha256_hex(&bytes),
            });
        }
    }
    Ok(out)
}
