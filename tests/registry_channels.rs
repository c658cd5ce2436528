//! Registry channels: signed assignments of versions to channels, rollback as a new record,
//! and the refusals TUF asks for (replayed older records, expired records, bad signatures,
//! other keys, digests that do not match). Small signed packages with dummy payloads; no
//! model is run here (tests/pipeline.rs runs `vqad detect NAME@production`).

#![allow(clippy::result_large_err)] // RegistryError is large on purpose (see src/registry/mod.rs)

mod common_pkg;

use common_pkg::*;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use vqad::package::{build_package, Manifest, SigningKey};
use vqad::registry::{
    self, promote, resolve, rollback, Action, ChannelOptions, ChannelRecord, RegistryError, Reference, ResolveOptions,
};

const T0: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z

fn at(days: f64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(T0 + (days * 86400.0) as i64).unwrap()
}

fn opts(days: f64) -> ChannelOptions {
    ChannelOptions { now: Some(at(days)), expires_in_days: 30, ..Default::default() }
}

fn ropts(days: f64) -> ResolveOptions {
    ResolveOptions { now: Some(at(days)), trust_state: None }
}

/// A registry with bottle 1.0.0, 1.1.0 and 1.2.0 published.
fn registry_with_versions() -> (Fixture, PathBuf) {
    let f = fixture();
    let reg = f.dir.path().join("registry");
    registry::publish(&f.package, &reg, &f.trusted).unwrap();
    for v in ["1.1.0", "1.2.0"] {
        let mut files = payload_files();
        files.get_mut("encoder.onnx").unwrap()[0] = v.as_bytes()[2]; // distinct archives
        let info = build_package(&Manifest::example("bottle", v), &files, &f.key, &f.dir.path().join("more")).unwrap();
        registry::publish(&info.path, &reg, &f.trusted).unwrap();
    }
    (f, reg)
}

fn chan(reg: &Path) -> PathBuf {
    reg.join("bottle/channels/production")
}

fn version_of(reg: &Path, reference: &str, f: &Fixture, days: f64) -> String {
    resolve(reg, reference, &f.trusted, &ropts(days)).unwrap().version
}

#[test]
fn references_parse_into_versions_channels_and_latest() {
    let p = registry::parse_reference;
    assert_eq!(p("bottle").unwrap(), Reference::Latest { name: "bottle".into() });
    assert_eq!(p("bottle@1.2.0").unwrap(), Reference::Version { name: "bottle".into(), version: "1.2.0".into() });
    assert_eq!(p("bottle@production").unwrap(), Reference::Channel { name: "bottle".into(), channel: "production".into() });
    for bad in ["", "Bottle", "bottle@", "bottle@Prod", "bottle@1.2", "../x@production", "bottle@prod@x"] {
        let e = p(bad).unwrap_err();
        assert!(matches!(e, RegistryError::BadReference { .. }), "{bad}: {e}");
        assert!(e.to_string().contains("NAME@CHANNEL"), "{e}");
    }
    // A channel can never be a version, so the two readings of NAME@X cannot collide.
    assert!(registry::check_channel("1.0.0").is_err());
}

#[test]
fn promote_assigns_a_verified_version_and_resolve_follows_it() {
    let (f, reg) = registry_with_versions();
    let r1 = promote(&reg, "bottle", "1.0.0", "production", &f.key, &opts(0.0)).unwrap();
    assert_eq!(r1.path, chan(&reg).join("00000001.json"));
    assert_eq!(r1.record.sequence, 1);
    assert_eq!(r1.record.action, Action::Promote);
    assert_eq!(r1.record.issued, "2027-01-15T08:00:00Z");
    assert_eq!(r1.record.expires, "2027-02-14T08:00:00Z");
    let idx = registry::list(&reg, Some("bottle")).unwrap();
    assert_eq!(r1.record.archive_sha256, idx[0].archive_sha256);
    assert_eq!(std::fs::read(chan(&reg).join("current.json")).unwrap(), r1.envelope);

    let got = resolve(&reg, "bottle@production", &f.trusted, &ropts(1.0)).unwrap();
    assert_eq!((got.version.as_str(), got.channel.as_deref(), got.sequence), ("1.0.0", Some("production"), Some(1)));
    assert_eq!(got.path, reg.join("bottle/1.0.0/bottle-1.0.0.vqad"));
    assert_eq!(got.package.manifest.version, "1.0.0");
    // Plain NAME is the newest version; NAME@VERSION that version; both ignore channels.
    assert_eq!(version_of(&reg, "bottle", &f, 1.0), "1.2.0");
    assert_eq!(version_of(&reg, "bottle@1.1.0", &f, 1.0), "1.1.0");

    // Promote a newer version and a second channel; each channel has its own sequence.
    let r2 = promote(&reg, "bottle", "1.2.0", "production", &f.key, &opts(2.0)).unwrap();
    assert_eq!(r2.record.sequence, 2);
    promote(&reg, "bottle", "1.1.0", "staging", &f.key, &opts(2.0)).unwrap();
    assert_eq!(version_of(&reg, "bottle@production", &f, 3.0), "1.2.0");
    assert_eq!(version_of(&reg, "bottle@staging", &f, 3.0), "1.1.0");
    let heads = registry::list_channels(&reg, None, Some(&f.trusted)).unwrap();
    let hs: Vec<(String, String, u64, bool)> = heads.iter().map(|h| (h.channel.clone(), h.version.clone(), h.sequence, h.verified)).collect();
    assert_eq!(hs, [("production".into(), "1.2.0".into(), 2, true), ("staging".into(), "1.1.0".into(), 1, true)]);
    // The history records are immutable: r1 is byte for byte what it was.
    assert_eq!(std::fs::read(&r1.path).unwrap(), r1.envelope);

    // Unknown channel, unpublished version: clear errors, nothing written.
    let e = resolve(&reg, "bottle@canary", &f.trusted, &ropts(3.0)).unwrap_err();
    assert!(matches!(e, RegistryError::UnknownChannel { .. }), "{e}");
    assert!(e.to_string().contains("canary") && e.to_string().contains("production, staging"), "{e}");
    let e = resolve(&reg, "bottle@9.9.9", &f.trusted, &ropts(3.0)).unwrap_err();
    assert!(e.to_string().contains("9.9.9 is not published") && e.to_string().contains("1.0.0, 1.1.0, 1.2.0"), "{e}");
    let e = promote(&reg, "bottle", "2.0.0", "production", &f.key, &opts(3.0)).unwrap_err();
    assert!(matches!(e, RegistryError::NotPublished { .. }), "{e}");
    assert!(!chan(&reg).join("00000003.json").exists());
    // Nothing left behind: no temp files, no lock.
    let names: Vec<String> = std::fs::read_dir(chan(&reg)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    assert!(!reg.join("index.json.lock").exists());
}

#[test]
fn promote_refuses_a_version_whose_archive_was_swapped() {
    let (f, reg) = registry_with_versions();
    // Another validly signed 1.1.0 placed behind the index's back: publishing verified the
    // original; promote verifies again and the index digest no longer matches.
    let mut files = payload_files();
    files.get_mut("decoder.onnx").unwrap()[1] ^= 1;
    let info = build_package(&Manifest::example("bottle", "1.1.0"), &files, &f.key, &f.dir.path().join("swap")).unwrap();
    std::fs::copy(&info.path, reg.join("bottle/1.1.0/bottle-1.1.0.vqad")).unwrap();
    let e = promote(&reg, "bottle", "1.1.0", "production", &f.key, &opts(0.0)).unwrap_err();
    assert!(matches!(e, RegistryError::Package(vqad::package::PackageError::IndexMismatch { .. })), "{e}");
    assert!(!chan(&reg).exists());
}

#[test]
fn rollback_writes_a_new_record_pointing_at_the_previous_version() {
    let (f, reg) = registry_with_versions();
    let e = rollback(&reg, "bottle", "production", &f.key, &opts(0.0)).unwrap_err();
    assert!(matches!(e, RegistryError::UnknownChannel { .. }), "{e}");
    let mut written = vec![];
    for (i, v) in ["1.0.0", "1.1.0", "1.1.0", "1.2.0"].iter().enumerate() {
        written.push(promote(&reg, "bottle", v, "production", &f.key, &opts(i as f64)).unwrap());
    }
    // The 1.1.0 renewal (sequence 3) did not push a second 1.1.0.
    let rb = rollback(&reg, "bottle", "production", &f.key, &opts(5.0)).unwrap();
    assert_eq!((rb.record.sequence, rb.record.action, rb.record.version.as_str()), (5, Action::Rollback, "1.1.0"));
    assert_eq!(rb.record.archive_sha256, written[1].record.archive_sha256);
    assert_ne!(rb.envelope, written[1].envelope, "a rollback is a new record, not the old one again");
    assert_eq!(version_of(&reg, "bottle@production", &f, 5.5), "1.1.0");
    let rb2 = rollback(&reg, "bottle", "production", &f.key, &opts(6.0)).unwrap();
    assert_eq!((rb2.record.sequence, rb2.record.version.as_str()), (6, "1.0.0"));
    assert_eq!(version_of(&reg, "bottle@production", &f, 6.5), "1.0.0");
    let e = rollback(&reg, "bottle", "production", &f.key, &opts(7.0)).unwrap_err();
    assert!(matches!(e, RegistryError::NothingToRollBack { .. }), "{e}");
    assert!(e.to_string().contains("only ever run 1.0.0"), "{e}");
    // The whole history is there, oldest first, every old record untouched.
    let h = registry::history(&reg, "bottle", Some("production"), Some(&f.trusted)).unwrap();
    let seq: Vec<(u64, &str)> = h[0].records.iter().map(|r| (r.record.sequence, r.record.version.as_str())).collect();
    assert_eq!(seq, [(1, "1.0.0"), (2, "1.1.0"), (3, "1.1.0"), (4, "1.2.0"), (5, "1.1.0"), (6, "1.0.0")]);
    for w in &written {
        assert_eq!(std::fs::read(&w.path).unwrap(), w.envelope);
    }
    // Promoting forward again works on top of the rollbacks.
    let r = promote(&reg, "bottle", "1.2.0", "production", &f.key, &opts(8.0)).unwrap();
    assert_eq!(r.record.sequence, 7);
}

#[test]
fn an_expired_record_is_refused_naming_channel_sequence_and_dates() {
    let (f, reg) = registry_with_versions();
    promote(&reg, "bottle", "1.0.0", "production", &f.key, &ChannelOptions { now: Some(at(0.0)), expires_in_days: 7, ..Default::default() }).unwrap();
    assert_eq!(version_of(&reg, "bottle@production", &f, 6.9), "1.0.0");
    let e = resolve(&reg, "bottle@production", &f.trusted, &ropts(7.0)).unwrap_err();
    assert!(matches!(e, RegistryError::Expired { sequence: 1, .. }), "{e}");
    let msg = e.to_string();
    for want in ["bottle@production", "sequence 1", "expired at 2027-01-22T08:00:00Z", "issued 2027-01-15T08:00:00Z", "now 2027-01-22T08:00:00Z", "freeze"] {
        assert!(msg.contains(want), "missing '{want}' in: {msg}");
    }
    // Exact versions do not depend on channels and keep resolving.
    assert_eq!(version_of(&reg, "bottle@1.0.0", &f, 40.0), "1.0.0");
    // Renewal: promoting the same version again gives a fresh record.
    let r = promote(&reg, "bottle", "1.0.0", "production", &f.key, &opts(8.0)).unwrap();
    assert_eq!(r.record.sequence, 2);
    assert_eq!(version_of(&reg, "bottle@production", &f, 9.0), "1.0.0");
    // Zero-day expiry is refused up front.
    let e = promote(&reg, "bottle", "1.0.0", "production", &f.key, &ChannelOptions { now: Some(at(9.0)), expires_in_days: 0, ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("at least 1 day"), "{e}");
}

#[test]
fn a_replayed_older_record_is_refused() {
    let (f, reg) = registry_with_versions();
    let r1 = promote(&reg, "bottle", "1.0.0", "production", &f.key, &opts(0.0)).unwrap();
    let r2 = promote(&reg, "bottle", "1.2.0", "production", &f.key, &opts(1.0)).unwrap();
    let state = f.dir.path().join("client-trust.json");
    let with_state = ResolveOptions { now: Some(at(2.0)), trust_state: Some(state.clone()) };
    assert_eq!(resolve(&reg, "bottle@production", &f.trusted, &with_state).unwrap().version, "1.2.0");
    assert!(state.is_file(), "the client remembers the sequence it accepted");

    // 1. The old, validly signed record copied over current.json.
    std::fs::write(chan(&reg).join("current.json"), &r1.envelope).unwrap();
    let e = resolve(&reg, "bottle@production", &f.trusted, &ropts(2.0)).unwrap_err();
    assert!(matches!(e, RegistryError::Replayed { offered: 1, seen: 2, .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("replayed older record") && msg.contains("sequence 1") && msg.contains("sequence 2") && msg.contains("bottle@production"), "{msg}");
    // Writers refuse it too rather than build on it.
    let e = promote(&reg, "bottle", "1.1.0", "production", &f.key, &opts(2.0)).unwrap_err();
    assert!(matches!(e, RegistryError::Replayed { .. }), "{e}");
    std::fs::write(chan(&reg).join("current.json"), &r2.envelope).unwrap();

    // 2. The old record dropped in under the next file name.
    std::fs::write(chan(&reg).join("00000003.json"), &r1.envelope).unwrap();
    let e = resolve(&reg, "bottle@production", &f.trusted, &ropts(2.0)).unwrap_err();
    assert!(matches!(e, RegistryError::Misplaced { signed: 1, .. }), "{e}");
    std::fs::remove_file(chan(&reg).join("00000003.json")).unwrap();

    // 3. The newest record deleted: the shorter history still verifies on its own (the
    //    registry alone cannot tell, as documented), but a client with trust state refuses.
    std::fs::remove_file(&r2.path).unwrap();
    std::fs::write(chan(&reg).join("current.json"), &r1.envelope).unwrap();
    assert_eq!(version_of(&reg, "bottle@production", &f, 2.0), "1.0.0");
    let e = resolve(&reg, "bottle@production", &f.trusted, &with_state).unwrap_err();
    assert!(matches!(e, RegistryError::Replayed { offered: 1, seen: 2, .. }), "{e}");
    assert!(e.to_string().contains("accepted by this client"), "{e}");

    // 4. A record deleted from the middle leaves a gap.
    std::fs::write(&r2.path, &r2.envelope).unwrap();
    std::fs::write(chan(&reg).join("current.json"), &r2.envelope).unwrap();
    std::fs::remove_file(&r1.path).unwrap();
    let e = resolve(&reg, "bottle@production", &f.trusted, &ropts(2.0)).unwrap_err();
    assert!(matches!(e, RegistryError::HistoryGap { missing: 1, .. }), "{e}");
}

#[test]
fn a_record_moved_to_another_channel_or_category_is_refused() {
    let (f, reg) = registry_with_versions();
    let r = promote(&reg, "bottle", "1.0.0", "staging", &f.key, &opts(0.0)).unwrap();
    let d = chan(&reg);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("00000001.json"), &r.envelope).unwrap();
    let e = resolve(&reg, "bottle@production", &f.trusted, &ropts(1.0)).unwrap_err();
    assert!(matches!(e, RegistryError::Misplaced { .. }), "{e}");
    assert!(e.to_string().contains("staging"), "{e}");
}

#[test]
fn tampered_records_and_other_keys_are_refused() {
    let (f, reg) = registry_with_versions();
    let r = promote(&reg, "bottle", "1.0.0", "production", &f.key, &opts(0.0)).unwrap();
    let original = r.envelope.clone();

    // The payload edited to name another version, signature kept.
    let mut env: serde_json::Value = serde_json::from_slice(&original).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut payload: serde_json::Value = serde_json::from_slice(&b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    payload["version"] = "1.2.0".into();
    env["payload"] = b64.encode(serde_json::to_vec(&payload).unwrap()).into();
    for file in ["00000001.json", "current.json"] {
        std::fs::write(chan(&reg).join(file), serde_json::to_vec(&env).unwrap()).unwrap();
    }
    let e = resolve(&reg, "bottle@production", &f.trusted, &ropts(1.0)).unwrap_err();
    assert!(matches!(e, RegistryError::Signature { source: vqad::package::dsse::EnvelopeError::BadSignature, .. }), "{e}");
    assert!(e.to_string().contains("00000001.json") && e.to_string().contains("does not verify"), "{e}");

    // The payload type changed (it is bound by the signature, and checked first).
    let mut env2: serde_json::Value = serde_json::from_slice(&original).unwrap();
    env2["payloadType"] = "application/vnd.in-toto+json".into();
    std::fs::write(chan(&reg).join("00000001.json"), serde_json::to_vec(&env2).unwrap()).unwrap();
    let e = resolve(&reg, "bottle@production", &f.trusted, &ropts(1.0)).unwrap_err();
    assert!(e.to_string().contains("expected application/vnd.vqad.channel+json"), "{e}");

    // A well-formed record signed by another key, written in by someone who has write
    // access to the registry but not the release key.
    let other = SigningKey::generate();
    let forged = r.record.sign(&other);
    for file in ["00000001.json", "current.json"] {
        std::fs::write(chan(&reg).join(file), &forged).unwrap();
    }
    let e = resolve(&reg, "bottle@production", &f.trusted, &ropts(1.0)).unwrap_err();
    assert!(matches!(e, RegistryError::Signature { source: vqad::package::dsse::EnvelopeError::WrongKey { .. }, .. }), "{e}");
    assert!(e.to_string().contains("another key"), "{e}");
    // And the other key cannot append to the genuine history either.
    for file in ["00000001.json", "current.json"] {
        std::fs::write(chan(&reg).join(file), &original).unwrap();
    }
    // (It is stopped at the package already: the release key, not this one, signed 1.2.0.)
    let e = promote(&reg, "bottle", "1.2.0", "production", &other, &opts(1.0)).unwrap_err();
    assert!(e.to_string().contains("different key"), "{e}");
    assert_eq!(version_of(&reg, "bottle@production", &f, 1.0), "1.0.0");
}

#[test]
fn a_signed_record_whose_digest_does_not_match_the_archive_is_refused() {
    let (f, reg) = registry_with_versions();
    let r = promote(&reg, "bottle", "1.0.0", "production", &f.key, &opts(0.0)).unwrap();
    // Genuinely signed by the release key, but naming the wrong bytes for 1.2.0 (e.g. a
    // record made for an earlier build of that version).
    let rec = ChannelRecord { version: "1.2.0".into(), sequence: 2, issued: "2027-01-16T08:00:00Z".into(), ..r.record.clone() };
    let env = rec.sign(&f.key);
    std::fs::write(chan(&reg).join("00000002.json"), &env).unwrap();
    std::fs::write(chan(&reg).join("current.json"), &env).unwrap();
    let e = resolve(&reg, "bottle@production", &f.trusted, &ropts(2.0)).unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { sequence: 2, .. }), "{e}");
    assert!(e.to_string().contains("1.2.0") && e.to_string().contains(&r.record.archive_sha256), "{e}");
}

#[test]
fn writers_share_the_registry_lock() {
    let (f, reg) = registry_with_versions();
    // An older vqad's lock (an empty index.json.lock) is waited for, never broken.
    std::fs::write(reg.join("index.json.lock"), b"").unwrap();
    let quick = ChannelOptions { lock: registry::LockOptions { timeout: std::time::Duration::from_millis(500), progress: None }, ..opts(0.0) };
    let e = promote(&reg, "bottle", "1.0.0", "production", &f.key, &quick).unwrap_err();
    assert!(e.to_string().contains("still held") && e.to_string().contains("older vqad"), "{e}");
    assert!(!chan(&reg).exists());
    std::fs::remove_file(reg.join("index.json.lock")).unwrap();
    // Concurrent promotions wait for each other: each gets its own sequence, the history
    // stays contiguous and verifies.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (reg, key) = (reg.clone(), SigningKey::from_pem(&f.key.to_pkcs8_pem().unwrap()).unwrap());
            std::thread::spawn(move || promote(&reg, "bottle", ["1.0.0", "1.1.0"][i % 2], "production", &key, &opts(0.0)))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &results {
        assert!(r.is_ok(), "{:?}", r.as_ref().err());
    }
    let h = registry::history(&reg, "bottle", Some("production"), Some(&f.trusted)).unwrap();
    let seqs: Vec<u64> = h[0].records.iter().map(|r| r.record.sequence).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
}

/// The record files are plain DSSE envelopes: the `cryptography` package (independent of
/// vqad's p256 code) verifies the ECDSA signature over the DSSE PAE, and the payload
/// validates against the published JSON schema.
#[test]
fn records_verify_with_an_independent_dsse_check_and_match_the_schema() {
    let (f, reg) = registry_with_versions();
    let r = promote(&reg, "bottle", "1.1.0", "production", &f.key, &opts(0.0)).unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/channel-record.schema.json");
    let code = r#"
import base64, json, sys, jsonschema
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
env = json.load(open(sys.argv[1]))
key = serialization.load_pem_public_key(open(sys.argv[2], 'rb').read())
payload = base64.b64decode(env['payload'])
t = env['payloadType'].encode()
pae = b'DSSEv1 %d %s %d %s' % (len(t), t, len(payload), payload)
assert len(env['signatures']) == 1
key.verify(base64.b64decode(env['signatures'][0]['sig']), pae, ec.ECDSA(hashes.SHA256()))
schema = json.load(open(sys.argv[3]))
jsonschema.Draft202012Validator.check_schema(schema)
rec = json.loads(payload)
jsonschema.validate(rec, schema)
bad = dict(rec, sequence=0)
try:
    jsonschema.validate(bad, schema)
    print('schema accepted sequence 0')
except jsonschema.ValidationError:
    print('ok', env['payloadType'], rec['version'], rec['sequence'])
"#;
    let (ok, out) = run_python(&[
        "-c".as_ref(),
        code.as_ref(),
        r.path.as_os_str(),
        f.pub_path.as_os_str(),
        schema.as_os_str(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("ok application/vnd.vqad.channel+json 1.1.0 1"), "{out}");
    // And a tampered signature fails the same independent check (so it can fail).
    let mut env: serde_json::Value = serde_json::from_slice(&r.envelope).unwrap();
    let sig = env["signatures"][0]["sig"].as_str().unwrap().to_string();
    let flipped = if sig.starts_with('M') { sig.replacen('M', "N", 1) } else { format!("M{}", &sig[1..]) };
    env["signatures"][0]["sig"] = flipped.into();
    let bad = f.dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&env).unwrap()).unwrap();
    let (ok, _) = run_python(&["-c".as_ref(), code.as_ref(), bad.as_os_str(), f.pub_path.as_os_str(), schema.as_os_str()]);
    assert!(!ok, "a tampered signature verified in Python");
}

/// The command line over the same registry: promote, rollback, history, list, and the exit
/// codes of refusals (3) and mistakes (1).
#[test]
fn promote_rollback_history_and_list_from_the_command_line() {
    let (f, reg) = registry_with_versions();
    let vqad = || std::process::Command::new(env!("CARGO_BIN_EXE_vqad"));
    let text = |o: &std::process::Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    for v in ["1.0.0", "1.2.0"] {
        let o = vqad().arg("promote").arg(&reg).args(["bottle", v, "--channel", "production", "--expires-in", "7", "--key"]).arg(&f.key_path).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = vqad().arg("rollback").arg(&reg).args(["bottle", "--channel", "production", "--json", "--key"]).arg(&f.key_path).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((j["record"]["version"].as_str(), j["record"]["sequence"].as_u64(), j["record"]["action"].as_str()), (Some("1.0.0"), Some(3), Some("rollback")));
    let o = vqad().arg("rollback").arg(&reg).args(["bottle", "--channel", "production", "--key"]).arg(&f.key_path).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("nothing to roll back"), "{}", text(&o));

    let o = vqad().arg("history").arg(&reg).arg("bottle").arg("--pubkey").arg(&f.pub_path).output().unwrap();
    let t = text(&o);
    assert!(o.status.success() && t.contains("bottle@production: runs 1.0.0 (every record verified)"), "{t}");
    let lines: Vec<&str> = t.lines().filter(|l| l.trim_start().starts_with('#')).collect();
    assert_eq!(lines.len(), 3, "{t}");
    assert!(lines[0].contains("#3") && lines[0].contains("rollback") && lines[2].contains("#1"), "{t}");
    let o = vqad().arg("history").arg(&reg).arg("bottle").output().unwrap();
    assert!(text(&o).contains("NOT VERIFIED"), "{}", text(&o));
    let o = vqad().args(["list", "--registry"]).arg(&reg).output().unwrap();
    let t = text(&o);
    assert!(t.lines().any(|l| l.starts_with("bottle") && l.contains("1.0.0") && l.contains("← production")), "{t}");

    // A record signed by another key: history with the trusted key refuses it (exit 3).
    let ch = reg.join("bottle/channels/production");
    let rec: serde_json::Value = serde_json::from_slice(&std::process::Command::new(env!("CARGO_BIN_EXE_vqad")).arg("history").arg(&reg).arg("bottle").arg("--json").output().unwrap().stdout).unwrap();
    let first: ChannelRecord = serde_json::from_value(rec[0]["records"][0]["record"].clone()).unwrap();
    std::fs::write(ch.join("00000001.json"), first.sign(&SigningKey::generate())).unwrap();
    let o = vqad().arg("history").arg(&reg).arg("bottle").arg("--pubkey").arg(&f.pub_path).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("00000001.json") && text(&o).contains("another key"), "{}", text(&o));
    // Mistakes are plain errors (exit 1), with the path in the message.
    let o = vqad().arg("promote").arg(f.dir.path().join("nowhere")).args(["bottle", "1.0.0", "--channel", "production", "--key"]).arg(&f.key_path).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nowhere") && text(&o).contains("not a registry"), "{}", text(&o));
    let o = vqad().arg("promote").arg(&reg).args(["bottle", "1.0.0", "--channel", "1.0.0", "--key"]).arg(&f.key_path).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not a version"), "{}", text(&o));
}

#[test]
fn a_refused_channel_history_is_reported_without_hiding_the_other_categories() {
    let (f, reg) = registry_with_versions();
    let info = build_package(&Manifest::example("screw", "1.0.0"), &payload_files(), &f.key, &f.dir.path().join("screw")).unwrap();
    registry::publish(&info.path, &reg, &f.trusted).unwrap();
    promote(&reg, "bottle", "1.1.0", "production", &f.key, &opts(0.0)).unwrap();
    promote(&reg, "screw", "1.0.0", "production", &f.key, &opts(0.0)).unwrap();
    // Tamper with bottle's only record (one byte of the signed payload).
    let rec = chan(&reg).join("00000001.json");
    let mut bytes = std::fs::read(&rec).unwrap();
    let i = bytes.iter().position(|&b| b == b'"').unwrap() + 1;
    bytes[i] ^= 0x01;
    std::fs::write(&rec, bytes).unwrap();

    assert!(registry::list_channels(&reg, None, Some(&f.trusted)).is_err());
    let (heads, refused) = registry::list_channels_lenient(&reg, None, Some(&f.trusted)).unwrap();
    let hs: Vec<(&str, &str)> = heads.iter().map(|h| (h.name.as_str(), h.version.as_str())).collect();
    assert_eq!(hs, [("screw", "1.0.0")]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, "bottle");
}
