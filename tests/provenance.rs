//! Provenance an auditor can check (issue 23): a package trained here carries SLSA build
//! provenance, `vqad eval --attest` signs its evaluation, and `vqad audit` holds every claim
//! against the data, test set and source; each wrong input fails exactly its check. The
//! statements are also checked with tools that are not vqad: securesystemslib (DSSE),
//! in-toto's protobuf bindings, the JSON schemas, openssl, model_signing and coreutils.

mod common_pkg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn vqad() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vqad"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("vqad runs");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The independent checkers' python (tools/setup-attest.sh).
fn attest_python() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let o = Command::new("bash").arg(repo().join("tools/setup-attest.sh")).output().unwrap();
        assert!(o.status.success(), "tools/setup-attest.sh failed: {}", String::from_utf8_lossy(&o.stderr));
        PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
    })
}

fn python(py: &Path, code: &str, args: &[&std::ffi::OsStr]) -> (bool, String) {
    let o = Command::new(py).arg("-c").arg(code).args(args).output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git").arg("-C").arg(dir).args(["-c", "user.name=t", "-c", "user.email=t@t"]).args(args).output().unwrap();
    assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

/// Format-4 packages (no provenance) still verify, and audit says "no provenance".
#[test]
fn a_package_without_provenance_verifies_and_audit_says_no_provenance() {
    let f = common_pkg::fixture();
    let mut m = vqad::package::Manifest::example("bottle", "2.0.0");
    m.format_version = 4;
    let info = vqad::package::build_package(&m, &common_pkg::payload_files(), &f.key, &f.dir.path().join("f4")).unwrap();
    let o = run(vqad().arg("verify").arg(&info.path).arg("--pubkey").arg(&f.pub_path));
    assert!(o.status.success());
    let o = run(vqad().arg("audit").arg(&info.path).arg("--pubkey").arg(&f.pub_path));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(6), "{text}");
    assert!(text.contains("PASS     signature") && text.contains("FAIL     provenance") && text.contains("no provenance"), "{text}");
    assert!(text.contains("NOT RUN  parameters"), "{text}");
    let o = run(vqad().arg("inspect").arg(&info.path).arg("--pubkey").arg(&f.pub_path));
    assert!(String::from_utf8_lossy(&o.stdout).contains("provenance:   none (format 4 package)"));
}

#[cfg(feature = "train")]
mod trained {
    use super::*;

    pub struct World {
        pub dir: tempfile::TempDir,
        pub data: PathBuf,
        pub source: PathBuf,
        pub key: PathBuf,
        pub public: PathBuf,
        pub other_key: PathBuf,
        pub package: PathBuf,
        pub attestations: Vec<PathBuf>,
        /// The same category and version trained with seed 2.
        pub seed2: PathBuf,
    }

    /// Trains and packages `seed` with the quick config, from `source` (VQAD_SOURCE_DIR).
    pub fn train_package(w: &Path, data: &Path, source: &Path, seed: u64, out: &str) -> PathBuf {
        let run_dir = w.join(format!("run-{out}"));
        let ok = |o: Output, what: &str| assert!(o.status.success(), "{what} failed");
        ok(run(vqad()
            .arg("train")
            .arg(data)
            .arg("--out")
            .arg(&run_dir)
            .args(["--preset", "tiny", "--device", "cpu", "--seed", &seed.to_string(), "--config"])
            .arg(w.join("quick.toml"))
            .env("OMP_NUM_THREADS", "1")
            .env("VQAD_SOURCE_DIR", source)), "train");
        ok(run(vqad().arg("package").arg(&run_dir).args(["--name", "synth_texture", "--version", "1.0.0", "--key"]).arg(w.join("k.key")).arg("--out").arg(w.join(out))), "package");
        w.join(out).join("synth_texture-1.0.0.vqad")
    }

    /// `vqad eval --attest` of `package` on `data`: the two statement files.
    pub fn attest(w: &Path, package: &Path, data: &Path, out: &str) -> Vec<PathBuf> {
        let o = run(vqad()
            .arg("eval")
            .arg(package)
            .arg("--pubkey")
            .arg(w.join("k.pub"))
            .arg(data)
            .arg("--out")
            .arg(w.join(out))
            .args(["--ep", "cpu", "--attest"])
            .arg(w.join("k.key"))
            .args(["--require", "image_auroc>=0", "--require", "pixel_auroc>=0.01"]));
        assert!(o.status.success(), "eval --attest failed");
        let d = w.join(out).join("attestations/synth_texture");
        vec![d.join("synth_texture-1.0.0.test-result.intoto.json"), d.join("synth_texture-1.0.0.evaluation.intoto.json")]
    }

    pub fn world() -> &'static World {
        static W: OnceLock<World> = OnceLock::new();
        W.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let ok = |o: Output, what: &str| assert!(o.status.success(), "{what} failed");
            ok(run(vqad().args(["synth", "--category", "synth_texture", "--size", "64", "--train", "24", "--test-good", "3", "--test-bad", "2", "--out"]).arg(d.join("data"))), "synth");
            std::fs::write(d.join("quick.toml"), "[train]\nvqvae_epochs = 2\nprior_epochs = 2\nmax_steps_per_epoch = 2\n").unwrap();
            ok(run(vqad().arg("keygen").arg("--out").arg(d.join("k"))), "keygen");
            ok(run(vqad().arg("keygen").arg("--out").arg(d.join("other"))), "keygen");
            // The source: a commit holding exactly the build inputs of the binaries under test
            // (VQAD_SOURCE_DIR lets them prove it), whatever state this checkout is in.
            let source = d.join("source");
            for f in vqad::source::inputs::ROOTS {
                let from = repo().join(f);
                if from.is_dir() {
                    copy_dir(&from, &source.join(f));
                } else {
                    std::fs::create_dir_all(&source).unwrap();
                    std::fs::copy(&from, source.join(f)).unwrap();
                }
            }
            git(&source, &["init", "-q"]);
            git(&source, &["add", "-A"]);
            git(&source, &["commit", "-qm", "release"]);
            let data = d.join("data/synth_texture");
            let package = train_package(d, &data, &source, 1, "pkg");
            let attestations = attest(d, &package, &data, "eval");
            let seed2 = train_package(d, &data, &source, 2, "pkg-seed2");
            World { data, source, key: d.join("k.key"), public: d.join("k.pub"), other_key: d.join("other.key"), package, attestations, seed2, dir }
        })
    }

    /// `vqad audit --json` with the given inputs: (exit code, check → (status, reason)).
    pub fn audit(package: &Path, data: &Path, test: &Path, source: &Path, attestations: &[PathBuf], extra: &[&str]) -> (i32, BTreeMap<String, (String, String)>, serde_json::Value) {
        let w = world();
        let mut c = vqad();
        c.arg("audit").arg(package).arg("--pubkey").arg(&w.public).arg("--data").arg(data).arg("--test").arg(test).arg("--source").arg(source).arg("--json").args(extra);
        for a in attestations {
            c.arg("--attestation").arg(a);
        }
        let o = run(&mut c);
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
        let checks = j["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["check"].as_str().unwrap().to_string(), (c["status"].as_str().unwrap().to_string(), c["reason"].as_str().unwrap().to_string())))
            .collect();
        (o.status.code().unwrap(), checks, j)
    }

    /// Asserts that exactly `name` failed, naming `why`, with a non-zero exit; every other check
    /// passed except `not_run`, which were not run.
    fn fails_exactly(r: &(i32, BTreeMap<String, (String, String)>, serde_json::Value), name: &str, why: &str, not_run: &[&str]) {
        let (code, checks, j) = r;
        assert_eq!(*code, 6, "{name}: exit code {code}: {j:#}");
        for (c, (status, reason)) in checks {
            let want = if c == name {
                "fail"
            } else if not_run.contains(&c.as_str()) || c == "rebuild" {
                "not_run"
            } else {
                "pass"
            };
            assert_eq!(status, want, "{name}: check {c} is {status} ({reason}), expected {want}");
        }
        let reason = &checks[name].1;
        assert!(reason.contains(why), "{name}: the reason does not say {why:?}: {reason}");
    }

    #[test]
    fn audit_passes_on_the_real_inputs_and_each_wrong_input_fails_exactly_its_check() {
        let w = world();
        let d = w.dir.path();
        let all = audit(&w.package, &w.data, &w.data, &w.source, &w.attestations, &[]);
        let (code, checks, j) = &all;
        assert_eq!(*code, 0, "{j:#}");
        for (c, (status, reason)) in checks {
            assert_eq!(status, if c == "rebuild" { "not_run" } else { "pass" }, "{c}: {reason}");
        }
        assert_eq!(j["passed"], true);
        // The human table says the same.
        let o = run(vqad().arg("audit").arg(&w.package).arg("--pubkey").arg(&w.public).arg("--data").arg(&w.data).arg("--source").arg(&w.source));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && text.contains("PASS     training-data") && text.contains("result: PASS"), "{text}");

        // One training image changed.
        let changed = d.join("data-changed/synth_texture");
        copy_dir(&w.data, &changed);
        let img = changed.join("train/good").read_dir().unwrap().map(|e| e.unwrap().path()).min().unwrap();
        let mut b = std::fs::read(&img).unwrap();
        b.push(0);
        std::fs::write(&img, b).unwrap();
        fails_exactly(&audit(&w.package, &changed, &w.data, &w.source, &w.attestations, &[]), "training-data", "dataset digest", &[]);

        // One training image added.
        let added = d.join("data-added/synth_texture");
        copy_dir(&w.data, &added);
        std::fs::copy(&img, added.join("train/good/zz_extra.png")).unwrap();
        fails_exactly(&audit(&w.package, &added, &w.data, &w.source, &w.attestations, &[]), "training-data", "25 images, the provenance records 24", &[]);

        // One test image changed: the test set check fails; the rerun is not run on it.
        let test = d.join("test-changed/synth_texture");
        copy_dir(&w.data, &test);
        let timg = test.join("test/good").read_dir().unwrap().map(|e| e.unwrap().path()).min().unwrap();
        let mut b = std::fs::read(&timg).unwrap();
        b.push(0);
        std::fs::write(&timg, b).unwrap();
        fails_exactly(&audit(&w.package, &w.data, &test, &w.source, &w.attestations, &[]), "test-data", "dirHash of test/ and ground_truth/", &["evaluation"]);

        // An attested figure edited and re-signed with another key.
        let other = vqad::package::SigningKey::load(&w.other_key).unwrap();
        let env: serde_json::Value = serde_json::from_slice(&std::fs::read(&w.attestations[1]).unwrap()).unwrap();
        let payload = base64_decode(env["payload"].as_str().unwrap());
        let mut st: vqad::package::Statement<serde_json::Value> = serde_json::from_slice(&payload).unwrap();
        let v = st.predicate["figures"]["overall"]["image_auroc"].as_f64().unwrap();
        st.predicate["figures"]["overall"]["image_auroc"] = serde_json::json!(if v > 0.5 { v - 0.1 } else { v + 0.1 });
        let forged = d.join("forged.evaluation.intoto.json");
        std::fs::write(&forged, st.sign(&other)).unwrap();
        fails_exactly(&audit(&w.package, &w.data, &w.data, &w.source, &[w.attestations[0].clone(), forged], &[]), "attestation", "another key", &["test-data", "evaluation"]);

        // The provenance's config edited and re-signed with the right key (the package and its
        // attestations re-signed too, as whoever holds the key could).
        let key = vqad::package::SigningKey::load(&w.key).unwrap();
        let trusted = vqad::package::TrustedKey::load(&w.public).unwrap();
        let p = vqad::package::VerifiedPackage::open(&w.package, &trusted).unwrap();
        let mut prov = p.provenance.clone().unwrap();
        prov.predicate["buildDefinition"]["externalParameters"]["config"]["train"]["lr"] = serde_json::json!(0.5);
        let mut files = p.files.clone();
        files.remove("manifest.json");
        files.insert("provenance.intoto.json".into(), prov.sign(&key));
        let edited = d.join("edited");
        vqad::package::build_package(&p.manifest, &files, &key, &edited).unwrap();
        let edited = edited.join("synth_texture-1.0.0.vqad");
        let edited_att = attest(d, &edited, &w.data, "eval-edited");
        fails_exactly(&audit(&edited, &w.data, &w.data, &w.source, &edited_att, &[]), "parameters", "config.train.lr", &[]);

        // The source at another commit.
        let moved = d.join("source-moved");
        git(d, &["clone", "-q", w.source.to_str().unwrap(), moved.to_str().unwrap()]);
        std::fs::write(moved.join("NOTES"), "later").unwrap();
        git(&moved, &["add", "NOTES"]);
        git(&moved, &["commit", "-qm", "later"]);
        fails_exactly(&audit(&w.package, &w.data, &w.data, &moved, &w.attestations, &[]), "source-commit", "the provenance records", &[]);

        // The source tree dirty.
        let dirty = d.join("source-dirty");
        git(d, &["clone", "-q", w.source.to_str().unwrap(), dirty.to_str().unwrap()]);
        std::fs::write(dirty.join("Cargo.toml"), "# edited\n").unwrap();
        fails_exactly(&audit(&w.package, &w.data, &w.data, &dirty, &w.attestations, &[]), "source-clean", "uncommitted change", &[]);

        // A package rebuilt with another seed, offered with the original's attestations.
        fails_exactly(&audit(&w.seed2, &w.data, &w.data, &w.source, &w.attestations, &[]), "attestation", "not this package", &["test-data", "evaluation"]);
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    #[test]
    fn rebuild_gives_bit_identical_graphs_and_codebook_twice() {
        let w = world();
        let mut digests = vec![];
        for i in 0..2 {
            let t0 = std::time::Instant::now();
            let (code, checks, j) = audit(&w.package, &w.data, &w.data, &w.source, &w.attestations, &["--rebuild"]);
            let secs = t0.elapsed().as_secs_f64();
            assert_eq!(code, 0, "{j:#}");
            assert_eq!(checks["rebuild"].0, "pass", "{}", checks["rebuild"].1);
            let r = &j["rebuild"];
            assert_eq!(r["identical"], true);
            let files: BTreeMap<String, (String, String)> = serde_json::from_value(r["files"].clone()).unwrap();
            assert_eq!(files.len(), 4);
            for (name, (packaged, rebuilt)) in &files {
                assert_eq!(packaged, rebuilt, "{name}");
            }
            println!("rebuild {}: bit-identical, {:.1} s of training+export ({secs:.1} s for the whole audit): {}", i + 1, r["seconds"].as_f64().unwrap(), checks["rebuild"].1);
            digests.push(files);
        }
        assert_eq!(digests[0], digests[1]);
        // Another seed's package rebuilds to itself, and differs from seed 1 in every file.
        let (code, checks, j) = audit(&w.seed2, &w.data, &w.data, &w.source, &[], &["--rebuild"]);
        assert_eq!(code, 0, "{j:#}");
        assert_eq!(checks["rebuild"].0, "pass");
        let f2: BTreeMap<String, (String, String)> = serde_json::from_value(j["rebuild"]["files"].clone()).unwrap();
        for (name, (d2, _)) in &f2 {
            assert_ne!(d2, &digests[0][name].0, "{name} equal across seeds");
        }
    }

    #[test]
    fn weight_differences_are_measured_not_hidden() {
        let w = world();
        let trusted = vqad::package::TrustedKey::load(&w.public).unwrap();
        let a = vqad::package::VerifiedPackage::open(&w.package, &trusted).unwrap();
        let b = vqad::package::VerifiedPackage::open(&w.seed2, &trusted).unwrap();
        for name in ["encoder.onnx", "codebook.npy"] {
            assert_eq!(vqad::provenance::rebuild::max_weight_difference(name, &a.files[name], &a.files[name]), 0.0);
            let d = vqad::provenance::rebuild::max_weight_difference(name, &a.files[name], &b.files[name]);
            assert!(d > 0.0 && d.is_finite(), "{name}: {d}");
        }
    }

    /// The statements checked by tools that are not vqad.
    #[test]
    fn independent_tools_verify_every_statement() {
        let w = world();
        let d = w.dir.path();
        let trusted = vqad::package::TrustedKey::load(&w.public).unwrap();
        let p = vqad::package::VerifiedPackage::open(&w.package, &trusted).unwrap();
        let unpacked = d.join("unpacked");
        if !unpacked.exists() {
            p.unpack(&unpacked).unwrap();
        }
        let prov = unpacked.join("provenance.intoto.json");
        let py = attest_python();

        // securesystemslib: every DSSE envelope verifies with the P-256 public key (keyid =
        // sha256 of the key's DER, computed here), and a changed payload does not.
        let sslib = r#"
import sys, json, hashlib, base64
from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import SSlibKey
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
pub = serialization.load_pem_public_key(open(sys.argv[1], 'rb').read())
keyid = hashlib.sha256(pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
key = SSlibKey.from_crypto(pub, keyid=keyid, scheme='ecdsa-sha2-nistp256')
for f in sys.argv[2:]:
    env = Envelope.from_dict(json.load(open(f)))
    assert env.payload_type == 'application/vnd.in-toto+json', env.payload_type
    env.verify([key], 1)
    env.payload = env.payload.replace(b'sha256', b'sha257', 1)
    try:
        env.verify([key], 1)
        sys.exit('a changed payload verified: ' + f)
    except VerificationError:
        pass
    print('verified', f)
"#;
        let (ok, out) = python(py, sslib, &[w.public.as_os_str(), prov.as_os_str(), w.attestations[0].as_os_str(), w.attestations[1].as_os_str()]);
        assert!(ok && out.matches("verified").count() == 3, "{out}");
        let (ok, out) = python(py, sslib, &[d.join("other.pub").as_os_str(), prov.as_os_str()]);
        assert!(!ok, "another key verified the provenance: {out}");

        // in-toto's protobuf bindings parse each Statement and its predicate, refusing unknown
        // fields (and would refuse one added to ours).
        let intoto = r#"
import sys, json, base64
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.predicates.test_result.v0 import test_result_pb2
kinds = {'https://slsa.dev/provenance/v1': provenance_pb2.Provenance, 'https://in-toto.io/attestation/test-result/v0.1': test_result_pb2.TestResult}
for f in sys.argv[1:]:
    st = json.loads(base64.b64decode(json.load(open(f))['payload']))
    msg = json_format.Parse(json.dumps(st), statement_pb2.Statement())
    Statement.copy_from_pb(msg).validate()
    pred = kinds.get(st['predicateType'])
    if pred:
        json_format.Parse(json.dumps(st['predicate']), pred())
    try:
        json_format.Parse(json.dumps(dict(st, extraTopLevel=1)), statement_pb2.Statement())
        sys.exit('an unknown statement field was accepted')
    except json_format.ParseError:
        pass
    if pred:
        try:
            json_format.Parse(json.dumps(dict(st['predicate'], unknownField=1)), pred())
            sys.exit('an unknown predicate field was accepted')
        except json_format.ParseError:
            pass
    print('parsed', st['predicateType'])
"#;
        let (ok, out) = python(py, intoto, &[prov.as_os_str(), w.attestations[0].as_os_str(), w.attestations[1].as_os_str()]);
        assert!(ok && out.contains("parsed https://slsa.dev/provenance/v1") && out.contains("parsed https://in-toto.io/attestation/test-result/v0.1"), "{out}");

        // The JSON schemas: each statement, and the audit report; a broken one is refused.
        let schemas = r#"
import sys, json, base64, jsonschema
from referencing import Registry, Resource
d = sys.argv[1]
names = ['provenance', 'test-result', 'evaluation', 'audit']
docs = {n: json.load(open(f'{d}/{n}.schema.json')) for n in names}
reg = Registry().with_resources([(s['$id'], Resource.from_contents(s)) for s in docs.values()])
def check(name, doc):
    jsonschema.Draft202012Validator.check_schema(docs[name])
    v = jsonschema.Draft202012Validator(docs[name], registry=reg, format_checker=jsonschema.FormatChecker())
    errs = list(v.iter_errors(doc))
    return [e.message for e in errs]
for name, f in zip(['provenance', 'test-result', 'evaluation'], sys.argv[2:5]):
    st = json.loads(base64.b64decode(json.load(open(f))['payload']))
    assert not check(name, st), (name, check(name, st))
    st['predicate']['surprise'] = 1
    assert check(name, st), name + ': an unknown field passed'
audit = json.load(open(sys.argv[5]))
assert not check('audit', audit), check('audit', audit)
audit['checks'][0]['status'] = 'maybe'
assert check('audit', audit)
print('schemas ok')
"#;
        let (_, _, report) = audit(&w.package, &w.data, &w.data, &w.source, &w.attestations, &[]);
        let report_path = d.join("audit.json");
        std::fs::write(&report_path, serde_json::to_vec(&report).unwrap()).unwrap();
        let sdir = repo().join("schemas");
        let (ok, out) = python(py, schemas, &[sdir.as_os_str(), prov.as_os_str(), w.attestations[0].as_os_str(), w.attestations[1].as_os_str(), report_path.as_os_str()]);
        assert!(ok && out.contains("schemas ok"), "{out}");

        // openssl verifies one signature over the DSSE PAE bytes, built here from the spec.
        let env: serde_json::Value = serde_json::from_slice(&std::fs::read(&prov).unwrap()).unwrap();
        let payload = base64_decode(env["payload"].as_str().unwrap());
        let ty = env["payloadType"].as_str().unwrap();
        let mut pae = format!("DSSEv1 {} {} {} ", ty.len(), ty, payload.len()).into_bytes();
        pae.extend_from_slice(&payload);
        std::fs::write(d.join("pae.bin"), &pae).unwrap();
        std::fs::write(d.join("sig.der"), base64_decode(env["signatures"][0]["sig"].as_str().unwrap())).unwrap();
        let o = Command::new("openssl").args(["dgst", "-sha256", "-verify"]).arg(&w.public).arg("-signature").arg(d.join("sig.der")).arg(d.join("pae.bin")).output().unwrap();
        assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Verified OK"), "{}", String::from_utf8_lossy(&o.stderr));
        pae.push(b' ');
        std::fs::write(d.join("pae2.bin"), &pae).unwrap();
        let o = Command::new("openssl").args(["dgst", "-sha256", "-verify"]).arg(&w.public).arg("-signature").arg(d.join("sig.der")).arg(d.join("pae2.bin")).output().unwrap();
        assert!(!o.status.success());

        // model_signing still verifies the unpacked package, provenance included.
        let sig = unpacked.join("model.sig");
        let (ok, out) = common_pkg::run_python(&["-m".as_ref(), "model_signing".as_ref(), "verify".as_ref(), "key".as_ref(), unpacked.as_os_str(), "--signature".as_ref(), sig.as_os_str(), "--public_key".as_ref(), w.public.as_os_str()]);
        assert!(ok && out.contains("Verification succeeded"), "{out}");

        // The coreutils one-liners reproduce the recorded dirHashes (README "Audit").
        let st: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
        let data = deps.iter().find(|d| d["name"] == "training-data").unwrap();
        let sh = |cmd: &str| {
            let o = Command::new("sh").arg("-c").arg(cmd).current_dir(&w.data).output().unwrap();
            String::from_utf8(o.stdout).unwrap().trim().to_string()
        };
        assert_eq!(sh("find train/good -type f | LC_ALL=C sort | xargs -r sha256sum | sha256sum | cut -f1 -d' '"), data["digest"]["dirHash"].as_str().unwrap());
        let ev: serde_json::Value = serde_json::from_slice(&base64_decode(
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(&w.attestations[1]).unwrap()).unwrap()["payload"].as_str().unwrap(),
        ))
        .unwrap();
        assert_eq!(
            sh("find test ground_truth -type f | LC_ALL=C sort | xargs -r sha256sum | sha256sum | cut -f1 -d' '"),
            ev["predicate"]["testSet"]["dirHash"].as_str().unwrap()
        );
    }

    #[test]
    fn provenance_records_the_build() {
        let w = world();
        let trusted = vqad::package::TrustedKey::load(&w.public).unwrap();
        let p = vqad::package::VerifiedPackage::open(&w.package, &trusted).unwrap();
        assert_eq!(p.manifest.format_version, 6);
        let b = vqad::provenance::BuildProvenance::of(&p).unwrap().unwrap();
        let ext = b.external();
        assert_eq!((ext.seed, ext.preset.as_str(), ext.kind.as_str(), ext.category.as_str()), (1, "tiny", "texture", "synth_texture"));
        assert_eq!(vqad::provenance::canonical_json(&ext.config), vqad::provenance::canonical_json(&p.manifest.provenance.training_config));
        let (commit, ann) = b.source().unwrap();
        let head = Command::new("git").arg("-C").arg(&w.source).args(["rev-parse", "HEAD"]).output().unwrap();
        assert_eq!(commit.as_deref(), Some(String::from_utf8_lossy(&head.stdout).trim()));
        assert_eq!(ann.clean, Some(true));
        let int = b.internal();
        assert_eq!(int.environment.get("OMP_NUM_THREADS").map(String::as_str), Some("1"));
        assert_eq!(int.torch_threads, 1);
        assert!(b.predicate().run_details.builder.id.starts_with("https://vqad.invalid/builders/local?host="));
        let (_, dirhash, split) = b.data().unwrap();
        assert!(dirhash.is_some());
        assert_eq!((split.images, split.train_images + split.validation_images, split.validation_files.len() as u64), (24, 24, split.validation_images));
        for tool in ["libtorch", "onnxruntime", "rustc"] {
            assert!(b.tool(tool).is_some(), "{tool}");
        }
        // inspect shows what an auditor asks first.
        let o = run(vqad().arg("inspect").arg(&w.package).arg("--pubkey").arg(&w.public).arg("--attestation").arg(&w.attestations[0]));
        let text = String::from_utf8_lossy(&o.stdout);
        for want in ["dataset:      digest", "split:        22 train / 2 validation", "preset tiny, kind texture, seed 1", "(clean tree)", "libtorch 2.13", "fingerprint ", "test-result PASSED (verified, about this archive)"] {
            assert!(text.contains(want), "inspect lacks {want:?}:\n{text}");
        }
    }

    #[test]
    fn publish_stores_attestations_and_list_shows_them() {
        let w = world();
        let reg = w.dir.path().join("registry-att");
        let mut c = vqad();
        c.arg("publish").arg(&w.package).arg("--registry").arg(&reg).arg("--pubkey").arg(&w.public);
        for a in &w.attestations {
            c.arg("--attestation").arg(a);
        }
        assert!(run(&mut c).status.success());
        let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(reg.join("index.json")).unwrap()).unwrap();
        assert_eq!(idx["format_version"], 2);
        assert_eq!(idx["packages"][0]["attestations"].as_array().unwrap().len(), 2);
        let o = run(vqad().arg("list").arg("--registry").arg(&reg));
        assert!(String::from_utf8_lossy(&o.stdout).contains("attested: evaluation, test-result"), "{}", String::from_utf8_lossy(&o.stdout));
        // audit finds them beside the published package.
        let published = reg.join("synth_texture/1.0.0/synth_texture-1.0.0.vqad");
        let (code, checks, j) = audit(&published, &w.data, &w.data, &w.source, &[], &[]);
        assert_eq!(code, 0, "{j:#}");
        assert_eq!(checks["evaluation"].0, "pass");
        // Another archive's attestation is refused by publish.
        let o = run(vqad().arg("publish").arg(&w.seed2).arg("--registry").arg(w.dir.path().join("registry-x")).arg("--pubkey").arg(&w.public).arg("--attestation").arg(&w.attestations[0]));
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("about another archive"));
    }
}
