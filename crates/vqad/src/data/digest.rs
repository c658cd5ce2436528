//! A content digest of a dataset, recorded in run and package provenance.

use super::DataError;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Hex sha256 identifying a set of files under `root`, independent of where `root` lives and
/// of the order `files` are given in.
///
/// Each file's relative path is `file` with `root` stripped (a relative `file` not starting
/// with `root` is taken as relative to it; an absolute one is compared after resolving
/// links), written with `/` separators; it must be UTF-8 and must not leave `root`.
/// Duplicates count once. The digest is sha256 over, for each file in ascending
/// byte order of relative path:
///
/// ```text
/// relative path (UTF-8 bytes) ‖ 0x00 ‖ content length (u64 little-endian) ‖ content
/// ```
///
/// The NUL and the length make the encoding unambiguous (no path contains NUL, and the
/// length says where the content ends). An empty list gives sha256 of nothing.
pub fn dataset_digest(root: &Path, files: &[PathBuf]) -> Result<String, DataError> {
    let mut entries: Vec<(String, PathBuf)> = Vec::with_capacity(files.len());
    for f in files {
        let outside = || DataError::BadPath {
            path: f.clone(),
            reason: format!("not under the dataset root {}", root.display()),
        };
        let rel: PathBuf = if let Ok(r) = f.strip_prefix(root) {
            r.to_path_buf()
        } else if f.is_absolute() {
            // An absolute file under a relative (or symlinked) root: compare real paths.
            let (rf, rr) = (f.canonicalize(), root.canonicalize());
            match (rf, rr) {
                (Ok(rf), Ok(rr)) => rf.strip_prefix(&rr).map_err(|_| outside())?.to_path_buf(),
                _ => return Err(outside()),
            }
        } else {
            f.clone()
        };
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(s) => {
                    parts.push(s.to_str().ok_or_else(|| DataError::BadPath {
                        path: f.clone(),
                        reason: "file name is not UTF-8".into(),
                    })?)
                }
                Component::CurDir => {}
                _ => {
                    return Err(DataError::BadPath {
                        path: f.clone(),
                        reason: "path leaves the dataset root".into(),
                    })
                }
            }
        }
        if parts.is_empty() {
            return Err(DataError::BadPath {
                path: f.clone(),
                reason: "names the root, not a file".into(),
            });
        }
        entries.push((parts.join("/"), root.join(rel)));
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    entries.dedup_by(|a, b| a.0 == b.0);

    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    for (rel, path) in &entries {
        let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
        h.update(rel.as_bytes());
        h.update([0u8]);
        h.update(len.to_le_bytes());
        let mut seen = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| DataError::io(path, e))?;
            if n == 0 {
                break;
            }
            seen += n as u64;
            h.update(&buf[..n]);
        }
        if seen != len {
            return Err(DataError::io(
                path,
                std::io::Error::other("file changed while it was hashed"),
            ));
        }
    }
    Ok(hex::encode(h.finalize()))
}
