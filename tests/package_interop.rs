//! Interop with the reference tools in the set-up venv: the PyPI `model_signing` 1.1.1 CLI
//! (an auditor's check of an unpacked package) and `jsonschema` (the manifest schema).
//! A missing venv fails with the command to install it; it is never skipped.

mod common_pkg;

use common_pkg::*;
use std::path::Path;
use vqad::package::{verify_signature, Manifest, PackageError, VerifiedPackage};

/// `python -m model_signing verify key DIR --signature DIR/model.sig --public_key KEY`:
/// the same as the `model_signing verify key …` command an auditor types.
fn model_signing_verify(dir: &Path, public_key: &Path) -> (bool, String) {
    let sig = dir.join("model.sig");
    run_python(&[
        "-m".as_ref(),
        "model_signing".as_ref(),
        "verify".as_ref(),
        "key".as_ref(),
        dir.as_os_str(),
        "--signature".as_ref(),
        sig.as_os_str(),
        "--public_key".as_ref(),
        public_key.as_os_str(),
    ])
}

#[test]
fn model_signing_cli_verifies_an_unpacked_package() {
    let f = fixture();
    let p = VerifiedPackage::open(&f.package, &f.trusted).unwrap();
    let dir = f.dir.path().join("bottle-1.0.0");
    p.unpack(&dir).unwrap();
    let (ok, out) = model_signing_verify(&dir, &f.pub_path);
    assert!(ok, "model_signing refused a genuine vqad package:\n{out}");
    assert!(out.contains("Verification succeeded"), "{out}");

    // One byte of a graph changed: model_signing must refuse it.
    let g = dir.join("decoder.onnx");
    let mut bytes = std::fs::read(&g).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&g, &bytes).unwrap();
    let (ok, out) = model_signing_verify(&dir, &f.pub_path);
    assert!(!ok, "model_signing accepted a changed graph:\n{out}");
    assert!(out.contains("decoder.onnx"), "{out}");
}

#[test]
fn model_signing_cli_refuses_the_wrong_key_and_an_extra_file() {
    let f = fixture();
    let p = VerifiedPackage::open(&f.package, &f.trusted).unwrap();
    let dir = f.dir.path().join("unpacked");
    p.unpack(&dir).unwrap();
    let (_, other_pub) = vqad::package::keygen(&f.dir.path().join("other")).unwrap();
    let (ok, out) = model_signing_verify(&dir, &other_pub);
    assert!(!ok, "{out}");
    std::fs::write(dir.join("extra.onnx"), b"x").unwrap();
    let (ok, out) = model_signing_verify(&dir, &f.pub_path);
    assert!(!ok, "{out}");
}

#[test]
fn our_verifier_accepts_model_signings_own_signature() {
    // model_signing signs a folder with a key from our keygen; vqad's signature and
    // statement code accepts the bundle, and its digests are the files' sha256.
    let f = fixture();
    let dir = f.dir.path().join("folder-model");
    std::fs::create_dir(&dir).unwrap();
    let files = payload_files();
    for (n, b) in &files {
        std::fs::write(dir.join(n), b).unwrap();
    }
    let sig = dir.join("model.sig");
    let (ok, out) = run_python(&[
        "-m".as_ref(),
        "model_signing".as_ref(),
        "sign".as_ref(),
        "key".as_ref(),
        dir.as_os_str(),
        "--private_key".as_ref(),
        f.key_path.as_os_str(),
        "--signature".as_ref(),
        sig.as_os_str(),
    ]);
    assert!(ok, "model_signing sign failed:\n{out}");
    let bundle = std::fs::read(&sig).unwrap();
    let st = verify_signature(&bundle, &f.trusted).unwrap();
    assert_eq!(st.subject_name, "folder-model");
    let listed: Vec<(String, String)> =
        files.iter().map(|(n, b)| (n.clone(), vqad::package::dsse::file_digest(b))).collect();
    assert_eq!(st.resources, listed);
    assert!(st.ignore_paths.iter().any(|p| p == "model.sig"), "{:?}", st.ignore_paths);
    // Same hint model_signing computes for our key (sha256 of the PEM text).
    let v: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
    assert_eq!(v["verificationMaterial"]["publicKey"]["hint"], f.trusted.model_signing_hint().as_str());
    // And another key is refused.
    let other = vqad::package::SigningKey::generate().public();
    assert!(matches!(verify_signature(&bundle, &other), Err(PackageError::WrongKey { .. })));
}

#[test]
fn our_bundle_has_model_signings_shape() {
    let f = fixture();
    let p = VerifiedPackage::open(&f.package, &f.trusted).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&p.signature).unwrap();
    assert_eq!(v["mediaType"], "application/vnd.dev.sigstore.bundle.v0.3+json");
    assert_eq!(v["verificationMaterial"]["publicKey"]["hint"], f.trusted.model_signing_hint().as_str());
    assert_eq!(v["verificationMaterial"]["tlogEntries"], serde_json::json!([]));
    assert_eq!(v["dsseEnvelope"]["payloadType"], "application/vnd.in-toto+json");
    assert_eq!(v["dsseEnvelope"]["signatures"].as_array().unwrap().len(), 1);
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD.decode(v["dsseEnvelope"]["payload"].as_str().unwrap()).unwrap();
    let st: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://model_signing/signature/v1.0");
    let ser = &st["predicate"]["serialization"];
    assert_eq!((ser["method"].as_str(), ser["hash_type"].as_str(), ser["allow_symlinks"].as_bool()), (Some("files"), Some("sha256"), Some(false)));
    let names: Vec<&str> = st["predicate"]["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["codebook.npy", "decoder.onnx", "encoder.onnx", "manifest.json", "pixelsnail.onnx"]);
    assert_eq!(st["subject"][0]["name"], "bottle-1.0.0");
}

fn schema_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/manifest.schema.json")
}

/// Validates `manifest` JSON against the schema with Python's jsonschema (draft 2020-12).
fn schema_check(json: &[u8], dir: &Path) -> (bool, String) {
    let m = dir.join("m.json");
    std::fs::write(&m, json).unwrap();
    let script = r#"
import sys, json, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
jsonschema.Draft202012Validator(schema).validate(json.load(open(sys.argv[2])))
print("valid")
"#;
    run_python(&["-c".as_ref(), script.as_ref(), schema_path().as_os_str(), m.as_os_str()])
}

#[test]
#[allow(clippy::type_complexity)]
fn manifests_validate_against_the_schema() {
    let f = fixture();
    // The manifest.json actually stored in a package.
    let p = VerifiedPackage::open(&f.package, &f.trusted).unwrap();
    let (ok, out) = schema_check(&p.files["manifest.json"], f.dir.path());
    assert!(ok, "{out}");
    // Without metrics and with nulls where values are unknown.
    let mut m = Manifest::example("metal_nut", "0.1.0-rc.1");
    m.metrics = None;
    m.provenance.software.git_commit = None;
    m.detection.tuned_on.images = None;
    m.validate().unwrap();
    let (ok, out) = schema_check(&m.to_json_bytes().unwrap(), f.dir.path());
    assert!(ok, "{out}");
    // Format 4: a metric over 5×5×3 patches (75×75) with its patch side.
    let mut m4 = Manifest::example("bottle", "1.0.0");
    m4.format_version = 4;
    m4.detection.residual_patch = Some(5);
    m4.detection.residual_metric = Some((0..75).map(|i| (0..75).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect());
    m4.validate().unwrap();
    let (ok, out) = schema_check(&m4.to_json_bytes().unwrap(), f.dir.path());
    assert!(ok, "{out}");
    // Format 8: a texture map as a two-Gaussian mixture over 7 features (colour and chroma).
    let mut m8 = Manifest::example("carpet", "1.0.0");
    m8.format_version = 8;
    let eye = |v: f64| -> Vec<Vec<f64>> { (0..7).map(|i| (0..7).map(|j| if i == j { v } else { 0.0 }).collect()).collect() };
    m8.detection.texture_map = Some(vqad::config::TextureMap {
        colour: true,
        chroma: true,
        window: 9,
        sigma: 2.0,
        mean: vec![],
        precision: vec![],
        components: vec![
            vqad::config::MixtureComponent { weight: 0.6, mean: vec![0.1; 7], precision: eye(3.0) },
            vqad::config::MixtureComponent { weight: 0.4, mean: vec![-0.2; 7], precision: eye(0.5) },
        ],
        residual_scale: 0.02,
        texture_scale: 4.0,
        weight: 1.0,
    });
    m8.validate().unwrap();
    let bytes8 = m8.to_json_bytes().unwrap();
    let (ok, out) = schema_check(&bytes8, f.dir.path());
    assert!(ok, "{out}");
    // Both densities at once, or the mixture in a format-7 manifest: refused by both sides.
    let mut v8: serde_json::Value = serde_json::from_slice(&bytes8).unwrap();
    v8["detection"]["texture_map"]["mean"] = serde_json::to_value(vec![0.0; 7]).unwrap();
    v8["detection"]["texture_map"]["precision"] = serde_json::to_value(eye(1.0)).unwrap();
    let both = serde_json::to_vec(&v8).unwrap();
    assert!(!schema_check(&both, f.dir.path()).0, "schema accepted mean/precision beside components");
    assert!(Manifest::from_json_bytes(&both).is_err());
    m8.format_version = 7;
    assert!(m8.validate().unwrap_err().to_string().contains("(8 as a mixture or with chroma)"));
    // The schema is not vacuous: what the Rust side refuses, it refuses too.
    let good: serde_json::Value = serde_json::to_value(Manifest::example("bottle", "1.0.0")).unwrap();
    let mutations: [(&str, fn(&mut serde_json::Value)); 6] = [
        ("format_version 9", |v| v["format_version"] = 9.into()),
        ("no pixel threshold", |v| {
            v["detection"].as_object_mut().unwrap().remove("pixel_threshold");
        }),
        ("unknown field", |v| v["surprise"] = true.into()),
        ("bad name", |v| v["name"] = "../x".into()),
        ("non-semver version", |v| v["version"] = "1.0".into()),
        ("bad created", |v| v["provenance"]["created"] = "yesterday".into()),
    ];
    for (what, mutate) in mutations {
        let mut v = good.clone();
        mutate(&mut v);
        let bytes = serde_json::to_vec(&v).unwrap();
        let (ok, _) = schema_check(&bytes, f.dir.path());
        assert!(!ok, "schema accepted a manifest with {what}");
        assert!(Manifest::from_json_bytes(&bytes).is_err(), "Rust accepted a manifest with {what}");
    }
}
