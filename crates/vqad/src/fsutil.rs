//! File writing that never leaves a half-written or clobbered file behind.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a synced temp file in the same folder, then renames it
/// into place: readers see the old file or the new one, never a prefix. Without `overwrite`
/// the rename refuses an existing file (`ErrorKind::AlreadyExists`).
pub fn write_file(path: &Path, bytes: &[u8], overwrite: bool) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    if !overwrite && (path.exists() || path.is_symlink()) {
        return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "file exists"));
    }
    let mut tmp = tempfile::Builder::new().prefix(".vqad-tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    let res = if overwrite { tmp.persist(path).map(|_| ()) } else { tmp.persist_noclobber(path).map(|_| ()) };
    res.map_err(|e| e.error)
}

/// [`write_file`], replacing any existing file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_file(path, bytes, true)
}

/// Hex sha256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
