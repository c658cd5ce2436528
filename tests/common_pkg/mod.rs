//! Shared helpers for the package tests: a fixture package, and a raw zip writer that gives
//! full control over local headers, the central directory, names, sizes and attributes, so
//! hostile archives are written byte by byte rather than by the code under test.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use vqad::package::{build_package, keygen, Manifest, SigningKey, TrustedKey, VerifiedPackage, ENTRY_ORDER};

/// Dummy payloads: the package layer never parses ONNX or npy.
pub fn payload_files() -> BTreeMap<String, Vec<u8>> {
    let mut f = BTreeMap::new();
    for (i, n) in ["encoder.onnx", "decoder.onnx", "pixelsnail.onnx", "codebook.npy"].iter().enumerate() {
        let bytes: Vec<u8> = (0..4000u32).map(|j| ((j * 31 + i as u32 * 7) % 251) as u8).collect();
        f.insert(n.to_string(), bytes);
    }
    f
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
    pub trusted: TrustedKey,
    pub key_path: PathBuf,
    pub pub_path: PathBuf,
    pub manifest: Manifest,
    pub package: PathBuf,
}

/// A temp folder with a key pair (from our keygen) and a built `bottle-1.0.0.vqad`.
pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, pub_path) = keygen(&dir.path().join("signer")).unwrap();
    let key = SigningKey::load(&key_path).unwrap();
    let trusted = TrustedKey::load(&pub_path).unwrap();
    let manifest = Manifest::example("bottle", "1.0.0");
    let out = dir.path().join("out");
    let info = build_package(&manifest, &payload_files(), &key, &out).unwrap();
    Fixture { dir, key, trusted, key_path, pub_path, manifest, package: info.path }
}

impl Fixture {
    /// The genuine package's entries, in archive order (from a verified open).
    pub fn entries(&self) -> Vec<RawEntry> {
        let p = VerifiedPackage::open(&self.package, &self.trusted).unwrap();
        ENTRY_ORDER
            .iter()
            .map(|n| {
                let data = if *n == "model.sig" { p.signature.clone() } else { p.files[*n].clone() };
                RawEntry::new(n, &data)
            })
            .collect()
    }

    /// Writes `bytes` as `name` in a fresh folder and returns the path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let d = tempfile::tempdir_in(self.dir.path()).unwrap().keep();
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Writes hostile `entries` as `bottle-1.0.0.vqad` (the name the signed manifest expects).
    pub fn write_zip(&self, entries: &[RawEntry]) -> PathBuf {
        self.write("bottle-1.0.0.vqad", &raw_zip(entries))
    }
}

/// One entry as a hostile writer might lay it out. Defaults are an honest deflated file.
#[derive(Clone, Debug)]
pub struct RawEntry {
    pub name: Vec<u8>,
    /// Name in the local header (defaults to `name`).
    pub local_name: Option<Vec<u8>>,
    /// Uncompressed bytes.
    pub data: Vec<u8>,
    /// 0 stored, 8 deflate, or anything else (the data is then stored as is).
    pub method: u16,
    /// Method in the local header (defaults to `method`).
    pub local_method: Option<u16>,
    /// Uncompressed size written in both headers (defaults to the real one).
    pub declared_size: Option<u32>,
    /// Compressed size written in both headers (defaults to the real one).
    pub declared_compressed: Option<u32>,
    pub external_attr: u32,
    pub flags: u16,
}

impl RawEntry {
    pub fn new(name: &str, data: &[u8]) -> Self {
        RawEntry {
            name: name.as_bytes().to_vec(),
            local_name: None,
            data: data.to_vec(),
            method: 8,
            local_method: None,
            declared_size: None,
            declared_compressed: None,
            external_attr: 0o100644 << 16,
            flags: 0,
        }
    }
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Writes entries as a zip exactly as described, with no checks.
pub fn raw_zip(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let comp = if e.method == 8 { deflate(&e.data) } else { e.data.clone() };
        let crc = crc32fast::hash(&e.data);
        let size = e.declared_size.unwrap_or(e.data.len() as u32);
        let offset = out.len() as u32;
        let local_name = e.local_name.clone().unwrap_or_else(|| e.name.clone());
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&e.flags.to_le_bytes());
        out.extend_from_slice(&e.local_method.unwrap_or(e.method).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&0x21u16.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&e.declared_compressed.unwrap_or(comp.len() as u32).to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&(local_name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&local_name);
        out.extend_from_slice(&comp);

        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&0x0314u16.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&e.flags.to_le_bytes());
        central.extend_from_slice(&e.method.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0x21u16.to_le_bytes());
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&e.declared_compressed.unwrap_or(comp.len() as u32).to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&e.external_attr.to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(&e.name);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// Replaces the data of entry `name`.
pub fn with_data(mut entries: Vec<RawEntry>, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> Vec<RawEntry> {
    let e = entries.iter_mut().find(|e| e.name == name.as_bytes()).unwrap();
    f(&mut e.data);
    entries
}

/// The reference Python (set-up venv). CI always installs it; a missing one is a failure
/// with the fix, never a silent skip.
pub fn python() -> PathBuf {
    let p = vqad::native::setup_python().unwrap_or_else(|| {
        panic!("the Python reference venv is not installed; run `bash tools/setup-native.sh` (or set VQAD_PYTHON)")
    });
    assert!(p.exists(), "{} does not exist; run `bash tools/setup-native.sh` (or set VQAD_PYTHON)", p.display());
    p
}

/// Runs the reference Python with `args`; returns (exit ok, stdout+stderr).
pub fn run_python(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = std::process::Command::new(python()).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Is `p` a file with exactly `mode` permission bits?
#[cfg(unix)]
pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}
