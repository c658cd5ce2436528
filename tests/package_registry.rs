//! Publishing into a folder registry, listing it, and refusing swapped or rolled-back files.

mod common_pkg;

use common_pkg::*;
use vqad::package::{build_package, list, publish, verify_in_registry, Manifest, PackageError, SigningKey};

#[test]
fn publish_list_and_verify_in_registry() {
    let f = fixture();
    let reg = f.dir.path().join("registry");
    let dest = publish(&f.package, &reg, &f.trusted).unwrap();
    assert_eq!(dest, reg.join("bottle/1.0.0/bottle-1.0.0.vqad"));
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&f.package).unwrap());

    // Two more versions and another category; the list is sorted by semver, not text.
    for (name, version) in [("bottle", "1.10.0"), ("bottle", "1.2.0"), ("screw", "0.1.0")] {
        let info = build_package(&Manifest::example(name, version), &payload_files(), &f.key, &f.dir.path().join("more")).unwrap();
        publish(&info.path, &reg, &f.trusted).unwrap();
    }
    let all = list(&reg, None).unwrap();
    let ids: Vec<String> = all.iter().map(|e| format!("{}-{}", e.name, e.version)).collect();
    assert_eq!(ids, ["bottle-1.0.0", "bottle-1.2.0", "bottle-1.10.0", "screw-0.1.0"]);
    let e = &all[0];
    assert_eq!(e.key_fingerprint, f.trusted.fingerprint());
    assert_eq!(e.archive_sha256, vqad::package::dsse::file_digest(&std::fs::read(&dest).unwrap()));
    assert_eq!(e.created, f.manifest.provenance.created);
    assert_eq!(e.path, "bottle/1.0.0/bottle-1.0.0.vqad");
    assert_eq!(list(&reg, Some("screw")).unwrap().len(), 1);
    assert!(list(&reg, Some("cable")).unwrap().is_empty());

    let p = verify_in_registry(&dest, &reg, &f.trusted).unwrap();
    assert_eq!(p.manifest.version, "1.0.0");
    // No owner record or temp file is left behind; only the file writers flock stays.
    let names: Vec<_> = std::fs::read_dir(&reg).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| n == vqad::registry::lock::FLOCK_FILE || (!n.starts_with('.') && !n.ends_with(".lock"))), "{names:?}");
}

#[test]
fn publish_refuses_an_existing_version() {
    let f = fixture();
    let reg = f.dir.path().join("registry");
    let dest = publish(&f.package, &reg, &f.trusted).unwrap();
    let before = std::fs::read(&dest).unwrap();
    let index_before = std::fs::read(reg.join("index.json")).unwrap();
    // Same version rebuilt with a different graph: refused, nothing changes.
    let mut files = payload_files();
    files.get_mut("encoder.onnx").unwrap()[7] ^= 1;
    let info = build_package(&f.manifest, &files, &f.key, &f.dir.path().join("rebuilt")).unwrap();
    let e = publish(&info.path, &reg, &f.trusted).unwrap_err();
    assert!(matches!(e, PackageError::VersionExists { .. }), "{e}");
    assert!(e.to_string().contains("already published"), "{e}");
    assert_eq!(std::fs::read(&dest).unwrap(), before);
    assert_eq!(std::fs::read(reg.join("index.json")).unwrap(), index_before);
}

#[test]
fn publish_verifies_first() {
    let f = fixture();
    let reg = f.dir.path().join("registry");
    let other = SigningKey::generate().public();
    assert!(matches!(publish(&f.package, &reg, &other), Err(PackageError::WrongKey { .. })));
    assert!(!reg.join("bottle").exists());
    // A renamed file is refused too.
    let renamed = f.write("bottle-2.0.0.vqad", &std::fs::read(&f.package).unwrap());
    assert!(matches!(publish(&renamed, &reg, &f.trusted), Err(PackageError::FileNameMismatch { .. })));
}

#[test]
fn registry_folder_must_match_the_signed_name_and_version() {
    let f = fixture();
    let reg = f.dir.path().join("registry");
    publish(&f.package, &reg, &f.trusted).unwrap();
    let bytes = std::fs::read(&f.package).unwrap();
    // Rollback: the 1.0.0 archive placed where 1.1.0 should be (file name kept genuine).
    for folder in ["bottle/1.1.0", "screw/1.0.0"] {
        let d = reg.join(folder);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("bottle-1.0.0.vqad");
        std::fs::write(&p, &bytes).unwrap();
        let e = verify_in_registry(&p, &reg, &f.trusted).unwrap_err();
        assert!(matches!(e, PackageError::RegistryPathMismatch { .. }), "{folder}: {e}");
        assert!(e.to_string().contains("bottle/1.0.0") && e.to_string().contains(folder), "{e}");
    }
    // Renamed to the folder's version: the file name check refuses it first.
    let p = reg.join("bottle/1.1.0/bottle-1.1.0.vqad");
    std::fs::write(&p, &bytes).unwrap();
    assert!(matches!(verify_in_registry(&p, &reg, &f.trusted), Err(PackageError::FileNameMismatch { .. })));
}

#[test]
fn registry_index_must_agree() {
    let f = fixture();
    let reg = f.dir.path().join("registry");
    let dest = publish(&f.package, &reg, &f.trusted).unwrap();
    // Swap in another validly signed build of the same version behind the index's back.
    let mut files = payload_files();
    files.get_mut("decoder.onnx").unwrap()[3] ^= 1;
    let info = build_package(&f.manifest, &files, &f.key, &f.dir.path().join("swap")).unwrap();
    std::fs::copy(&info.path, &dest).unwrap();
    let e = verify_in_registry(&dest, &reg, &f.trusted).unwrap_err();
    assert!(matches!(e, PackageError::IndexMismatch { .. }), "{e}");
    // Not in the index at all.
    std::fs::write(reg.join("index.json"), "").unwrap();
    let e = verify_in_registry(&dest, &reg, &f.trusted).unwrap_err();
    assert!(matches!(e, PackageError::NotInIndex { .. }), "{e}");
}
