//! Finding the native libraries that `tools/setup-native.sh` installs.
//!
//! ONNX Runtime is loaded at run time (`ort`'s `load-dynamic`), so the binary must find the
//! library itself: `--ort-lib`, then `$VQAD_ORT_LIB`, then beside the executable, then the
//! set-up cache (GPU flavour first). Anything else is an error that says what to run.

use std::path::{Path, PathBuf};

/// Where ONNX Runtime could not be found, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("ONNX Runtime library not found at {0} (given by {1})")]
    Missing(PathBuf, &'static str),
    #[error(
        "ONNX Runtime library not found. Looked in: {0}.\n  Run `bash tools/setup-native.sh` \
         (or `--gpu` on a CUDA host), or pass --ort-lib /path/to/libonnxruntime.so.1.31.1, \
         or set VQAD_ORT_LIB"
    )]
    NotFound(String),
}

/// The set-up cache folder: `$VQAD_CACHE`, else `${XDG_CACHE_HOME:-$HOME/.cache}/vqad`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VQAD_CACHE") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("vqad"))
}

/// The real ONNX Runtime file inside `dir` (never a symlink: ORT looks for provider
/// libraries beside the path it was given).
fn ort_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so") || n == "onnxruntime.dll" || n.starts_with("libonnxruntime.") && n.ends_with(".dylib"))
        })
        .collect();
    found.sort();
    // Prefer the fully versioned name, which is the real file in the wheel.
    found.into_iter().rev().find(|p| p.is_file())
}

/// Site-packages folders of the set-up venvs, GPU flavour first.
pub fn setup_site_packages() -> Vec<PathBuf> {
    let Some(cache) = cache_dir() else { return vec![] };
    let mut out = vec![];
    for flavour in ["venv-gpu", "venv-cpu"] {
        let lib = cache.join(flavour).join("lib");
        if let Ok(rd) = std::fs::read_dir(&lib) {
            let mut pys: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path().join("site-packages"))).collect();
            pys.sort();
            out.extend(pys.into_iter().filter(|p| p.is_dir()));
        }
    }
    out
}

/// Resolves the ONNX Runtime library by the documented search order.
pub fn find_ort_library(flag: Option<&Path>) -> Result<PathBuf, NativeError> {
    if let Some(p) = flag {
        return resolve_given(p, "--ort-lib");
    }
    if let Some(p) = std::env::var_os("VQAD_ORT_LIB") {
        return resolve_given(Path::new(&p), "VQAD_ORT_LIB");
    }
    let mut looked = vec![];
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        if let Some(p) = ort_in(&dir) {
            return Ok(p);
        }
        looked.push(dir.display().to_string());
    }
    for site in setup_site_packages() {
        let capi = site.join("onnxruntime").join("capi");
        if let Some(p) = ort_in(&capi) {
            return Ok(p);
        }
        looked.push(capi.display().to_string());
    }
    if looked.len() < 2 {
        looked.push(format!(
            "{} (set-up cache, not present)",
            cache_dir().map(|c| c.display().to_string()).unwrap_or_else(|| "$HOME/.cache/vqad".into())
        ));
    }
    Err(NativeError::NotFound(looked.join(", ")))
}

fn resolve_given(p: &Path, by: &'static str) -> Result<PathBuf, NativeError> {
    if p.is_dir() {
        return ort_in(p).ok_or_else(|| NativeError::Missing(p.to_path_buf(), by));
    }
    if !p.is_file() {
        return Err(NativeError::Missing(p.to_path_buf(), by));
    }
    Ok(std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
}

/// The Python interpreter of the set-up venv (tests use it for independent references).
pub fn setup_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VQAD_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let cache = cache_dir()?;
    ["venv-gpu", "venv-cpu"]
        .iter()
        .map(|f| cache.join(f).join("bin").join("python"))
        .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_flag_names_the_path_and_the_source() {
        let e = find_ort_library(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("/nonexistent/libonnxruntime.so") && s.contains("--ort-lib"), "{s}");
    }

    #[test]
    fn a_folder_flag_finds_the_versioned_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("libonnxruntime.so.1.31.1"), b"x").unwrap();
        let p = find_ort_library(Some(d.path())).unwrap();
        assert!(p.ends_with("libonnxruntime.so.1.31.1"));
    }
}
