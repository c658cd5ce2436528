//! Build → verify → inspect → unpack, determinism, and the no-overwrite rules.

mod common_pkg;

use common_pkg::*;
use vqad::package::{
    build_package, build_package_with, inspect, inspect_with_key, keygen, BuildOptions, Manifest, PackageError,
    SigningKey, TrustedKey, VerifiedPackage, ENTRY_ORDER,
};

#[test]
fn build_verify_inspect_round_trip() {
    let f = fixture();
    assert_eq!(f.package.file_name().unwrap(), "bottle-1.0.0.vqad");
    let p = VerifiedPackage::open(&f.package, &f.trusted).unwrap();
    assert_eq!(p.manifest, f.manifest);
    let files = payload_files();
    for (n, b) in &files {
        assert_eq!(&p.files[n], b, "{n}");
    }
    assert_eq!(p.files.len(), 5);
    assert_eq!(p.graph("encoder.onnx"), Some(files["encoder.onnx"].as_slice()));
    assert_eq!(p.graph("codebook.npy"), None);
    assert_eq!(p.key_fingerprint, f.trusted.fingerprint());
    assert_eq!(p.statement.subject_name, "bottle-1.0.0");
    let s = p.summary();
    assert!(s.starts_with("valid: bottle 1.0.0, 5 files, key "), "{s}");

    // Inspect without a key says so, and shows what the file claims.
    let r = inspect(&f.package).unwrap();
    let text = r.to_string();
    assert!(text.starts_with("NOT VERIFIED"), "{text}");
    assert_eq!(r.manifest.as_ref().unwrap(), &f.manifest);
    assert_eq!(r.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ENTRY_ORDER);
    assert!(r.entries.iter().filter(|e| e.name != "model.sig").all(|e| e.signed_sha256.as_deref() == Some(e.sha256.as_str())));
    assert_eq!(r.signature.as_ref().unwrap().key_hint.as_deref(), Some(f.trusted.model_signing_hint().as_str()));
    assert_eq!(r.archive_sha256, p.archive_sha256);
    // With the key it verifies; with another it says it failed.
    let text = inspect_with_key(&f.package, Some(&f.trusted)).unwrap().to_string();
    assert!(text.starts_with("VERIFIED"), "{text}");
    let other = SigningKey::generate().public();
    let text = inspect_with_key(&f.package, Some(&other)).unwrap().to_string();
    assert!(text.starts_with("VERIFICATION FAILED"), "{text}");

    // Unpack writes all six files, and refuses a non-empty folder.
    let out = f.dir.path().join("unpacked");
    p.unpack(&out).unwrap();
    for n in ENTRY_ORDER {
        assert!(out.join(n).is_file(), "{n}");
    }
    assert_eq!(std::fs::read(out.join("model.sig")).unwrap(), p.signature);
    assert!(matches!(p.unpack(&out), Err(PackageError::OutputDirNotEmpty { .. })));
}

#[test]
fn two_packagings_are_byte_identical() {
    let f = fixture();
    let a = std::fs::read(&f.package).unwrap();
    let out2 = f.dir.path().join("again");
    let info = build_package(&f.manifest, &payload_files(), &f.key, &out2).unwrap();
    let b = std::fs::read(&info.path).unwrap();
    assert_eq!(a, b, "same inputs must give the same bytes");
    assert_eq!(info.size, b.len() as u64);
    assert_eq!(info.sha256, vqad::package::dsse::file_digest(&b));
    // And a different input changes them.
    let mut files = payload_files();
    files.get_mut("codebook.npy").unwrap()[0] ^= 1;
    let c = vqad::package::package_bytes(&f.manifest, &files, &f.key).unwrap();
    assert_ne!(a, c);
}

#[test]
fn archive_layout_is_fixed_and_standard() {
    // Python's zipfile (an independent reader) sees the fixed order, 1980 timestamps,
    // mode 0644, deflate, and good CRCs.
    let f = fixture();
    let script = r#"
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None
for i in z.infolist():
    assert i.date_time == (1980, 1, 1, 0, 0, 0), i.date_time
    assert (i.external_attr >> 16) == 0o100644, oct(i.external_attr >> 16)
    assert i.compress_type == zipfile.ZIP_DEFLATED
print(",".join(i.filename for i in z.infolist()))
"#;
    let (ok, out) = run_python(&["-c".as_ref(), script.as_ref(), f.package.as_os_str()]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), ENTRY_ORDER.join(","));
}

#[test]
fn build_refuses_to_overwrite_unless_told() {
    let f = fixture();
    let out = f.package.parent().unwrap();
    let e = build_package(&f.manifest, &payload_files(), &f.key, out).unwrap_err();
    assert!(matches!(e, PackageError::OutputExists { .. }), "{e}");
    build_package_with(&f.manifest, &payload_files(), &f.key, out, &BuildOptions { overwrite: true }).unwrap();
    // An explicit .vqad path must be the canonical name.
    let e = build_package(&f.manifest, &payload_files(), &f.key, &f.dir.path().join("x.vqad")).unwrap_err();
    assert!(matches!(e, PackageError::FileNameMismatch { .. }), "{e}");
    build_package(&f.manifest, &payload_files(), &f.key, &f.dir.path().join("bottle-1.0.0.vqad")).unwrap();
    // No temp files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(out).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn build_checks_its_inputs() {
    let f = fixture();
    let mut files = payload_files();
    files.remove("decoder.onnx");
    assert!(matches!(build_package(&f.manifest, &files, &f.key, f.dir.path()), Err(PackageError::BadInput(_))));
    let mut files = payload_files();
    files.insert("manifest.json".into(), b"{}".to_vec());
    assert!(matches!(build_package(&f.manifest, &files, &f.key, f.dir.path()), Err(PackageError::BadInput(_))));
    let mut files = payload_files();
    files.insert("notes.txt".into(), b"hi".to_vec());
    assert!(matches!(build_package(&f.manifest, &files, &f.key, f.dir.path()), Err(PackageError::BadInput(_))));
    let bad = Manifest::example("Bottle", "1.0.0");
    assert!(matches!(build_package(&bad, &payload_files(), &f.key, f.dir.path()), Err(PackageError::InvalidManifest(_))));
}

#[test]
fn keygen_refuses_to_overwrite_and_protects_the_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("release");
    let (k, p) = keygen(&prefix).unwrap();
    assert_eq!(k, dir.path().join("release.key"));
    assert_eq!(p, dir.path().join("release.pub"));
    #[cfg(unix)]
    assert_eq!(mode_of(&k), 0o600);
    let before = std::fs::read(&k).unwrap();
    assert!(matches!(keygen(&prefix), Err(PackageError::KeyExists { .. })));
    assert_eq!(std::fs::read(&k).unwrap(), before, "existing key untouched");
    // Either file existing is enough to refuse, and nothing is written.
    std::fs::remove_file(&k).unwrap();
    assert!(matches!(keygen(&prefix), Err(PackageError::KeyExists { .. })));
    assert!(!k.exists());
    // The pair matches and has the PEM forms openssl/model_signing read.
    let (k2, p2) = keygen(&dir.path().join("b")).unwrap();
    let sk = SigningKey::load(&k2).unwrap();
    assert_eq!(sk.public(), TrustedKey::load(&p2).unwrap());
    assert!(std::fs::read_to_string(&k2).unwrap().starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(std::fs::read_to_string(&p2).unwrap().starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert!(matches!(TrustedKey::load(&k2), Err(PackageError::KeyParse { .. })));
}

#[test]
fn keys_interoperate_with_pythons_cryptography() {
    // The reference library reads our PEMs as P-256 and agrees on the SPKI fingerprint.
    let dir = tempfile::tempdir().unwrap();
    let (k, p) = keygen(&dir.path().join("k")).unwrap();
    let script = r#"
import sys, hashlib
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
sk = serialization.load_pem_private_key(open(sys.argv[1], 'rb').read(), None)
pk = serialization.load_pem_public_key(open(sys.argv[2], 'rb').read())
assert isinstance(pk, ec.EllipticCurvePublicKey) and pk.curve.name == 'secp256r1'
der = pk.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
assert sk.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == der
print(hashlib.sha256(der).hexdigest())
# And an openssl-style SEC1 key that vqad must read too.
sec1 = ec.generate_private_key(ec.SECP256R1()).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
open(sys.argv[3], 'wb').write(sec1)
"#;
    let sec1 = dir.path().join("sec1.pem");
    let (ok, out) = run_python(&["-c".as_ref(), script.as_ref(), k.as_os_str(), p.as_os_str(), sec1.as_os_str()]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), TrustedKey::load(&p).unwrap().fingerprint());
    SigningKey::load(&sec1).unwrap();
}

#[test]
fn created_honours_source_date_epoch() {
    // The only test in this binary that touches the variable.
    std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
    let t = vqad::package::created_timestamp();
    std::env::set_var("SOURCE_DATE_EPOCH", "not a number");
    let bad = vqad::package::created_timestamp();
    std::env::remove_var("SOURCE_DATE_EPOCH");
    assert_eq!(t.unwrap(), "2023-11-14T22:13:20Z");
    assert!(bad.is_err());
    let now = vqad::package::created_timestamp().unwrap();
    assert!(now.ends_with('Z') && now.len() == 20, "{now}");
}
