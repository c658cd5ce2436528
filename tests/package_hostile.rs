//! Every refusal the verifier owes (DESIGN.md, Packages), each by its own error variant.
//! Hostile archives are written by hand (tests/common_pkg) from a genuine package's entries.

mod common_pkg;

use common_pkg::*;
use std::collections::BTreeMap;
use vqad::package::dsse::{bundle_for_payload, sign, PAYLOAD_TYPE};
use vqad::package::{Limits, Manifest, PackageError, SigningKey, VerifiedPackage};

fn open(f: &Fixture, p: &std::path::Path) -> PackageError {
    VerifiedPackage::open(p, &f.trusted).expect_err("hostile package must be refused")
}

/// Shows the message is clear: printed on failure of the variant check.
macro_rules! refused {
    ($err:expr, $pat:pat) => {{
        let e = $err;
        assert!(matches!(e, $pat), "wrong refusal: {e:?} / {e}");
        assert!(!e.to_string().is_empty());
        e
    }};
}

#[test]
fn genuine_rezip_is_accepted() {
    // The raw writer itself produces valid packages: the refusals below are the changes.
    let f = fixture();
    let p = f.write_zip(&f.entries());
    VerifiedPackage::open(&p, &f.trusted).unwrap();
}

#[test]
fn wrong_key() {
    let f = fixture();
    let other = SigningKey::generate().public();
    let e = refused!(VerifiedPackage::open(&f.package, &other).unwrap_err(), PackageError::WrongKey { .. });
    assert!(e.to_string().contains("different key"), "{e}");
}

#[test]
fn flipped_byte_in_a_graph() {
    let f = fixture();
    let p = f.write_zip(&with_data(f.entries(), "pixelsnail.onnx", |d| d[100] ^= 1));
    let e = refused!(open(&f, &p), PackageError::DigestMismatch { .. });
    assert!(e.to_string().contains("pixelsnail.onnx"), "{e}");
}

#[test]
fn flipped_byte_in_the_codebook() {
    let f = fixture();
    let p = f.write_zip(&with_data(f.entries(), "codebook.npy", |d| d[0] ^= 0x80));
    let e = refused!(open(&f, &p), PackageError::DigestMismatch { .. });
    assert!(e.to_string().contains("codebook.npy"), "{e}");
}

#[test]
fn flipped_byte_in_the_manifest() {
    let f = fixture();
    // Raise the threshold a little: exactly what an attacker would want to change.
    let p = f.write_zip(&with_data(f.entries(), "manifest.json", |d| {
        let s = String::from_utf8(d.clone()).unwrap().replace("0.0125", "0.0126");
        *d = s.into_bytes();
    }));
    let e = refused!(open(&f, &p), PackageError::DigestMismatch { .. });
    assert!(e.to_string().contains("manifest.json"), "{e}");
}

#[test]
fn flipped_byte_in_the_signature() {
    let f = fixture();
    // In the signature value itself.
    let p = f.write_zip(&with_data(f.entries(), "model.sig", |d| {
        let mut v: serde_json::Value = serde_json::from_slice(d).unwrap();
        let sig = v["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap().to_string();
        let mut raw = base64_decode(&sig);
        let last = raw.len() - 1;
        raw[last] ^= 1;
        v["dsseEnvelope"]["signatures"][0]["sig"] = base64_encode(&raw).into();
        *d = serde_json::to_vec(&v).unwrap();
    }));
    refused!(open(&f, &p), PackageError::BadSignature);
    // In the signed statement (one digest changed to match a tampered graph).
    let p = f.write_zip(&with_data(f.entries(), "model.sig", |d| {
        let mut v: serde_json::Value = serde_json::from_slice(d).unwrap();
        let mut payload = base64_decode(v["dsseEnvelope"]["payload"].as_str().unwrap());
        let i = payload.iter().position(|&b| b == b'"').unwrap() + 3;
        payload[i] ^= 1;
        v["dsseEnvelope"]["payload"] = base64_encode(&payload).into();
        *d = serde_json::to_vec(&v).unwrap();
    }));
    refused!(open(&f, &p), PackageError::BadSignature);
    // A raw flipped byte in the middle of model.sig (re-zipped, so the CRC is honest).
    let mut entries = f.entries();
    let sig = entries.iter_mut().find(|e| e.name == b"model.sig").unwrap();
    let pos = sig.data.len() / 2;
    sig.data[pos] ^= 0x01;
    let e = open(&f, &f.write_zip(&entries));
    assert!(
        matches!(e, PackageError::BadSignature | PackageError::MalformedSignature(_) | PackageError::WrongKey { .. }),
        "{e:?}"
    );
}

#[test]
fn raw_corruption_of_the_archive_is_refused() {
    let f = fixture();
    let mut bytes = std::fs::read(&f.package).unwrap();
    bytes[200] ^= 0xff; // inside encoder.onnx's deflate stream
    let p = f.write("bottle-1.0.0.vqad", &bytes);
    let e = open(&f, &p);
    assert!(
        matches!(e, PackageError::CrcMismatch { .. } | PackageError::CorruptData { .. } | PackageError::SizeMismatch { .. }),
        "{e:?}"
    );
}

#[test]
fn listed_file_missing() {
    let f = fixture();
    let entries: Vec<_> = f.entries().into_iter().filter(|e| e.name != b"decoder.onnx").collect();
    let e = refused!(open(&f, &f.write_zip(&entries)), PackageError::MissingFile(_));
    assert!(e.to_string().contains("decoder.onnx"), "{e}");
}

#[test]
fn missing_signature() {
    let f = fixture();
    let entries: Vec<_> = f.entries().into_iter().filter(|e| e.name != b"model.sig").collect();
    refused!(open(&f, &f.write_zip(&entries)), PackageError::MissingSignature);
}

#[test]
fn extra_unlisted_entry() {
    let f = fixture();
    let mut entries = f.entries();
    entries.push(RawEntry::new("evil.onnx", b"not signed"));
    let e = refused!(open(&f, &f.write_zip(&entries)), PackageError::UnlistedEntry(_));
    assert!(e.to_string().contains("evil.onnx"), "{e}");
}

#[test]
fn duplicate_names() {
    let f = fixture();
    // A second encoder.onnx after the genuine one: the zip crate's map would keep one.
    let mut entries = f.entries();
    entries.push(RawEntry::new("encoder.onnx", b"evil graph"));
    refused!(open(&f, &f.write_zip(&entries)), PackageError::DuplicateEntry { .. });
    let mut entries = f.entries();
    entries.insert(0, RawEntry::new("encoder.onnx", b"evil graph"));
    refused!(open(&f, &f.write_zip(&entries)), PackageError::DuplicateEntry { .. });
}

#[test]
fn duplicate_names_differing_in_case() {
    let f = fixture();
    let mut entries = f.entries();
    entries.push(RawEntry::new("Encoder.ONNX", b"evil graph"));
    let e = refused!(open(&f, &f.write_zip(&entries)), PackageError::DuplicateEntryCaseFolded { .. });
    assert!(e.to_string().contains("Encoder.ONNX"), "{e}");
}

#[test]
#[allow(clippy::type_complexity)]
fn path_traversal_absolute_backslash_non_utf8() {
    let f = fixture();
    let cases: [(&[u8], fn(&PackageError) -> bool); 5] = [
        (b"../../etc/cron.d/x", |e| matches!(e, PackageError::PathTraversal { .. })),
        (b"sub/../x", |e| matches!(e, PackageError::PathTraversal { .. })),
        (b"/etc/passwd", |e| matches!(e, PackageError::AbsolutePath { .. })),
        (b"..\\..\\x.onnx", |e| matches!(e, PackageError::Backslash { .. })),
        (b"enc\xffoder.onnx", |e| matches!(e, PackageError::NonUtf8Name { .. })),
    ];
    for (name, ok) in cases {
        let mut entries = f.entries();
        let mut evil = RawEntry::new("x", b"payload");
        evil.name = name.to_vec();
        entries.push(evil);
        let e = open(&f, &f.write_zip(&entries));
        assert!(ok(&e), "{}: {e:?}", String::from_utf8_lossy(name));
    }
}

#[test]
fn symlink_entry() {
    let f = fixture();
    // A listed name made a symlink (mode 0120777), pointing anywhere.
    let mut entries = f.entries();
    let e = entries.iter_mut().find(|e| e.name == b"codebook.npy").unwrap();
    e.external_attr = 0o120777 << 16;
    let err = refused!(open(&f, &f.write_zip(&entries)), PackageError::SymlinkEntry { .. });
    assert!(err.to_string().contains("codebook.npy"), "{err}");
}

#[test]
fn local_header_disagrees_with_central_directory() {
    let f = fixture();
    let mut entries = f.entries();
    entries[1].local_name = Some(b"../evil.onnx".to_vec());
    let e = refused!(open(&f, &f.write_zip(&entries)), PackageError::LocalHeaderMismatch { .. });
    assert!(e.to_string().contains("name"), "{e}");
    let mut entries = f.entries();
    entries[2].local_method = Some(0);
    let e = refused!(open(&f, &f.write_zip(&entries)), PackageError::LocalHeaderMismatch { .. });
    assert!(e.to_string().contains("method"), "{e}");
}

#[test]
fn overlapping_entries() {
    let f = fixture();
    let mut entries = f.entries();
    // Claim encoder.onnx's data runs on over decoder.onnx's local header.
    let real = {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        std::io::Write::write_all(&mut e, &entries[1].data).unwrap();
        e.finish().unwrap().len() as u32
    };
    entries[1].declared_compressed = Some(real + 40);
    refused!(open(&f, &f.write_zip(&entries)), PackageError::OverlappingEntries { .. });
}

#[test]
fn other_compression_methods_and_encryption() {
    let f = fixture();
    for method in [12u16, 14, 93, 99] {
        let mut entries = f.entries();
        entries[1].method = method;
        let e = refused!(open(&f, &f.write_zip(&entries)), PackageError::UnsupportedMethod { .. });
        assert!(e.to_string().contains(&method.to_string()), "{e}");
    }
    let mut entries = f.entries();
    entries[1].flags = 1;
    refused!(open(&f, &f.write_zip(&entries)), PackageError::EncryptedEntry { .. });
}

#[test]
fn declared_size_past_the_limit() {
    let f = fixture();
    // Default limits: a 3.5 GB declared entry is refused before anything is inflated.
    let mut entries = f.entries();
    entries[1].declared_size = Some(3_500_000_000);
    let e = refused!(open(&f, &f.write_zip(&entries)), PackageError::EntryTooLarge { .. });
    assert!(e.to_string().contains("zip bomb"), "{e}");
    // Custom limits: the genuine package is refused when an entry passes max_entry.
    let limits = Limits { max_entry: 1000, ..Limits::default() };
    let e = VerifiedPackage::open_with(&f.package, &f.trusted, &limits).unwrap_err();
    refused!(e, PackageError::EntryTooLarge { .. });
    let limits = Limits { max_total: 10_000, ..Limits::default() };
    let e = VerifiedPackage::open_with(&f.package, &f.trusted, &limits).unwrap_err();
    refused!(e, PackageError::TotalTooLarge { .. });
    let limits = Limits { max_entries: 5, ..Limits::default() };
    let e = VerifiedPackage::open_with(&f.package, &f.trusted, &limits).unwrap_err();
    refused!(e, PackageError::TooManyEntries { .. });
}

#[test]
fn real_size_past_the_declared_size_zip_bomb() {
    let f = fixture();
    // 64 MiB of zeros that declares 4000 bytes: refused while streaming, after at most one
    // buffer past the declared size, never allocating the whole.
    let mut entries = f.entries();
    entries[1].data = vec![0u8; 64 << 20];
    entries[1].declared_size = Some(4000);
    let e = refused!(open(&f, &f.write_zip(&entries)), PackageError::SizeMismatch { .. });
    assert!(e.to_string().contains("zip bomb"), "{e}");
}

#[test]
fn compression_ratio_past_the_limit() {
    let f = fixture();
    // Honest sizes, but 64 MiB from ~64 KiB: ratio ~1000, refused from the directory.
    let mut entries = f.entries();
    entries[1].data = vec![0u8; 64 << 20];
    refused!(open(&f, &f.write_zip(&entries)), PackageError::RatioTooHigh { .. });
}

#[test]
fn truncated_archive() {
    let f = fixture();
    let bytes = std::fs::read(&f.package).unwrap();
    for cut in [bytes.len() - 1, bytes.len() - 30, bytes.len() / 2, 100] {
        let p = f.write("bottle-1.0.0.vqad", &bytes[..cut]);
        let e = open(&f, &p);
        assert!(matches!(e, PackageError::Truncated(_)), "cut at {cut}: {e:?}");
    }
    let p = f.write("bottle-1.0.0.vqad", b"");
    assert!(matches!(open(&f, &p), PackageError::NotAZip(_)));
}

/// Signs `files` (with a manifest given as raw JSON) properly and zips them.
fn signed_zip(f: &Fixture, manifest_json: &[u8], subject: &str) -> std::path::PathBuf {
    let mut files = payload_files();
    files.insert("manifest.json".into(), manifest_json.to_vec());
    let digests: BTreeMap<String, String> =
        files.iter().map(|(n, d)| (n.clone(), vqad::package::dsse::file_digest(d))).collect();
    let sig = sign(subject, &digests, &f.key).unwrap();
    // In the order vqad writes (the verifier refuses any other layout).
    let mut entries: Vec<RawEntry> =
        vqad::package::SIGNED_FILES.iter().map(|n| RawEntry::new(n, &files[*n])).collect();
    entries.push(RawEntry::new("model.sig", &sig));
    f.write_zip(&entries)
}

#[test]
fn unknown_format_version_signed_properly() {
    let f = fixture();
    let mut v = serde_json::to_value(Manifest::example("bottle", "1.0.0")).unwrap();
    let next = vqad::package::FORMAT_VERSION + 1;
    v["format_version"] = next.into();
    let p = signed_zip(&f, &serde_json::to_vec_pretty(&v).unwrap(), "bottle-1.0.0");
    let e = refused!(open(&f, &p), PackageError::UnsupportedFormatVersion { .. });
    assert!(e.to_string().contains(&format!("format_version {next}")), "{e}");
    // And the control: the same path with format_version 1 verifies.
    let good = serde_json::to_vec_pretty(&Manifest::example("bottle", "1.0.0")).unwrap();
    VerifiedPackage::open(&signed_zip(&f, &good, "bottle-1.0.0"), &f.trusted).unwrap();
}

#[test]
fn subject_must_name_the_package() {
    let f = fixture();
    let good = serde_json::to_vec_pretty(&Manifest::example("bottle", "1.0.0")).unwrap();
    refused!(open(&f, &signed_zip(&f, &good, "bottle-0.9.0")), PackageError::SubjectMismatch { .. });
}

#[test]
fn empty_and_incomplete_signed_lists() {
    let f = fixture();
    let statement = |resources: serde_json::Value| {
        let digests: Vec<String> =
            resources.as_array().unwrap().iter().map(|r| r["digest"].as_str().unwrap().to_string()).collect();
        let root = vqad::package::dsse::root_digest(digests.iter().map(String::as_str)).unwrap();
        serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "bottle-1.0.0", "digest": {"sha256": root}}],
            "predicateType": "https://model_signing/signature/v1.0",
            "predicate": {"serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": false},
                          "resources": resources}
        })
    };
    // Empty list, with only model.sig in the archive.
    let sig = bundle_for_payload(PAYLOAD_TYPE, &serde_json::to_vec(&statement(serde_json::json!([]))).unwrap(), &f.key).unwrap();
    let p = f.write_zip(&[RawEntry::new("model.sig", &sig)]);
    refused!(open(&f, &p), PackageError::EmptyFileList);
    // A list without the codebook, and no codebook entry: still not a package.
    let entries: Vec<RawEntry> = f.entries().into_iter().filter(|e| e.name != b"codebook.npy" && e.name != b"model.sig").collect();
    let res: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({"name": String::from_utf8(e.name.clone()).unwrap(), "algorithm": "sha256",
                               "digest": vqad::package::dsse::file_digest(&e.data)})
        })
        .collect();
    let mut res_sorted = res.clone();
    res_sorted.sort_by_key(|r| r["name"].as_str().unwrap().to_string());
    let payload = serde_json::to_vec(&statement(serde_json::Value::Array(res_sorted))).unwrap();
    let sig = bundle_for_payload(PAYLOAD_TYPE, &payload, &f.key).unwrap();
    let mut entries = entries;
    entries.push(RawEntry::new("model.sig", &sig));
    let e = refused!(open(&f, &f.write_zip(&entries)), PackageError::MissingRequiredFile(_));
    assert!(e.to_string().contains("codebook.npy"), "{e}");
}

#[test]
fn payload_type_is_bound_and_algorithm_pinned() {
    let f = fixture();
    let entries = f.entries();
    let sig = &entries.iter().find(|e| e.name == b"model.sig").unwrap().data;
    let v: serde_json::Value = serde_json::from_slice(sig).unwrap();
    let payload = base64_decode(v["dsseEnvelope"]["payload"].as_str().unwrap());
    // Signed over a different payload type, then relabelled as in-toto: PAE binds the type.
    let mut other: serde_json::Value =
        serde_json::from_slice(&bundle_for_payload("text/plain", &payload, &f.key).unwrap()).unwrap();
    other["dsseEnvelope"]["payloadType"] = PAYLOAD_TYPE.into();
    let p = f.write_zip(&with_data(entries.clone(), "model.sig", |d| *d = serde_json::to_vec(&other).unwrap()));
    refused!(open(&f, &p), PackageError::BadSignature);
    // Not relabelled: refused by type.
    let bundle = bundle_for_payload("text/plain", &payload, &f.key).unwrap();
    let p = f.write_zip(&with_data(entries.clone(), "model.sig", |d| *d = bundle));
    refused!(open(&f, &p), PackageError::WrongPayloadType(_));
    // A keyid naming the trusted key changes nothing; a second signature is refused.
    let mut two = v.clone();
    let s = v["dsseEnvelope"]["signatures"][0].clone();
    two["dsseEnvelope"]["signatures"] = serde_json::json!([s.clone(), s]);
    let p = f.write_zip(&with_data(entries, "model.sig", |d| *d = serde_json::to_vec(&two).unwrap()));
    refused!(open(&f, &p), PackageError::SignatureCount(2));
}

#[test]
fn file_name_disagrees_with_signed_name_or_version() {
    let f = fixture();
    let bytes = std::fs::read(&f.package).unwrap();
    for name in ["bottle-0.9.0.vqad", "screw-1.0.0.vqad", "bottle.vqad"] {
        let p = f.write(name, &bytes);
        let e = refused!(open(&f, &p), PackageError::FileNameMismatch { .. });
        assert!(e.to_string().contains("bottle-1.0.0.vqad"), "{e}");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
