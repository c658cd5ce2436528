//! The digest of the files a build of vqad compiles (at the workspace root: build.rs,
//! Cargo.toml, Cargo.lock, and everything under src/ and crates/), shared by the executables'
//! build.rs (which embeds it) and [`super`] (which recomputes it from the checkout): sha256
//! over, per file in byte order of its relative path, `path NUL length NUL contents`.
//! Only std and sha2, so build.rs can include this file as it is.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Top-level files and folders of the build inputs.
pub const ROOTS: [&str; 5] = ["build.rs", "Cargo.toml", "Cargo.lock", "src", "crates"];

/// The build inputs under `root`, as sorted '/'-separated relative paths.
pub fn build_inputs(root: &Path) -> std::io::Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p: PathBuf = e.path();
            if e.file_type()?.is_dir() {
                walk(root, &p, out)?;
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
        Ok(())
    }
    let mut out = vec![];
    for r in ROOTS {
        let p = root.join(r);
        if p.is_dir() {
            walk(root, &p, &mut out)?;
        } else if p.exists() {
            out.push(r.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Hex sha256 of the build inputs under `root` (see the module doc).
pub fn build_inputs_digest(root: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    for rel in build_inputs(root)? {
        let bytes = std::fs::read(root.join(&rel))?;
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(bytes.len().to_string().as_bytes());
        h.update([0]);
        h.update(&bytes);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
