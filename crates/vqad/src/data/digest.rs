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

/// The in-toto `dirHash` (Go's dirhash `Hash1` in lower-case hex) of the files under `parts`
/// of `root` (e.g. `["train/good"]`, or `["test", "ground_truth"]`), with paths relative to
/// `root`: the value anyone can recompute without vqad, in `root`, with
///
/// ```text
/// find train/good -type f | LC_ALL=C sort | xargs -r sha256sum | sha256sum | cut -f1 -d' '
/// ```
///
/// that is sha256 over one line `<hex sha256>  <relative path>\n` per regular file, in byte
/// order of path. Like `find -type f`, symbolic links are not followed and only regular files
/// count (every file, not only images: it is a digest of the folder as it is). Parts that do
/// not exist are skipped; none existing gives sha256 of nothing. A path the one-liner would
/// print differently (a backslash or a control character, which `sha256sum` escapes) or that
/// is not UTF-8 is refused, naming the file.
pub fn dir_hash(root: &Path, parts: &[&str]) -> Result<String, DataError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), DataError> {
        for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
            let e = e.map_err(|e| DataError::io(dir, e))?;
            let p = e.path();
            let t = e.file_type().map_err(|e| DataError::io(&p, e))?;
            if t.is_dir() {
                walk(root, &p, out)?;
            } else if t.is_file() {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                let rel = rel.to_str().ok_or_else(|| DataError::BadPath { path: p.clone(), reason: "file name is not UTF-8".into() })?;
                if rel.chars().any(|c| c == '\\' || c.is_control()) {
                    return Err(DataError::BadPath {
                        path: p.clone(),
                        reason: "a file name with a backslash or control character cannot be digested as dirHash (sha256sum escapes it); rename it".into(),
                    });
                }
                out.push((rel.to_string(), p));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for part in parts {
        let dir = root.join(part);
        if dir.is_dir() {
            walk(root, &dir, &mut files)?;
        }
    }
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut summary = Sha256::new();
    for (rel, path) in &files {
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        std::io::copy(&mut f, &mut h).map_err(|e| DataError::io(path, e))?;
        summary.update(format!("{}  {rel}\n", hex::encode(h.finalize())).as_bytes());
    }
    Ok(hex::encode(summary.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_hash_is_the_coreutils_one_liner() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        for (p, body) in [("train/good/b.png", "b"), ("train/good/a.png", "a"), ("train/good/sub/c.png", "c"), ("test/x.png", "x")] {
            std::fs::create_dir_all(d.join(p).parent().unwrap()).unwrap();
            std::fs::write(d.join(p), body).unwrap();
        }
        let ours = dir_hash(d, &["train/good"]).unwrap();
        let sh = std::process::Command::new("sh")
            .arg("-c")
            .arg("find train/good -type f | LC_ALL=C sort | xargs -r sha256sum | sha256sum | cut -f1 -d' '")
            .current_dir(d)
            .output()
            .unwrap();
        assert_eq!(ours, String::from_utf8(sh.stdout).unwrap().trim());
        // The test folders are outside it; a missing part is skipped; a change is seen.
        assert_ne!(dir_hash(d, &["train/good", "test"]).unwrap(), ours);
        assert_eq!(dir_hash(d, &["train/good", "ground_truth"]).unwrap(), ours);
        std::fs::write(d.join("train/good/a.png"), "A").unwrap();
        assert_ne!(dir_hash(d, &["train/good"]).unwrap(), ours);
        std::fs::write(d.join("train/good/bad\\name.png"), "z").unwrap();
        assert!(dir_hash(d, &["train/good"]).unwrap_err().to_string().contains("backslash"));
    }
}
