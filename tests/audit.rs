//! `vqad diff` and `vqad bom` on real trained packages: two minimal runs on the same data with
//! different seeds (seconds each), diffed field by field; their CycloneDX 1.6 BOMs checked by
//! PyPI's cyclonedx-python-lib strict validator (tools/setup-audit.sh installs it once).

mod common_pkg;
mod common_audit;
use common_audit::{audit_python, validate_bom};

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

#[test]
fn bom_with_metrics_is_valid_and_lists_them() {
    // The fixture's manifest records metrics (trained packages from `vqad package` do not yet).
    let f = common_pkg::fixture();
    let p = vqad::package::VerifiedPackage::open(&f.package, &f.trusted).unwrap();
    let bom = vqad::audit::cyclonedx(&p);
    let metrics = bom["metadata"]["component"]["modelCard"]["quantitativeAnalysis"]["performanceMetrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 2);
    assert!(metrics.iter().any(|m| m["type"] == "image_auroc" && m["value"] == "0.97"), "{metrics:?}");
    let path = f.dir.path().join("bom.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&bom).unwrap()).unwrap();
    let (ok, out) = validate_bom(&path);
    assert!(ok, "{out}");
}

#[cfg(feature = "train")]
mod trained {
    use super::*;

    struct Runs {
        dir: tempfile::TempDir,
        a: PathBuf,
        b: PathBuf,
        public: PathBuf,
    }

    /// Two packages of one synthetic category, trained for two epochs of two steps per stage
    /// with seeds 1 and 2, packaged as 1.0.0 and 1.1.0 a day apart (SOURCE_DATE_EPOCH).
    fn runs() -> &'static Runs {
        static R: OnceLock<Runs> = OnceLock::new();
        R.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let ok = |o: Output, what: &str| assert!(o.status.success(), "{what} failed");
            ok(run(vqad().args(["synth", "--category", "synth_texture", "--size", "64", "--train", "24", "--test-good", "1", "--test-bad", "1", "--out"]).arg(d.join("data"))), "synth");
            std::fs::write(d.join("quick.toml"), "[train]\nvqvae_epochs = 2\nprior_epochs = 2\nmax_steps_per_epoch = 2\n").unwrap();
            ok(run(vqad().arg("keygen").arg("--out").arg(d.join("k"))), "keygen");
            let mut pkgs = vec![];
            for (seed, version, epoch) in [(1, "1.0.0", "1700000000"), (2, "1.1.0", "1700086400")] {
                let run_dir = d.join(format!("run{seed}"));
                ok(run(vqad()
                    .arg("train")
                    .arg(d.join("data/synth_texture"))
                    .arg("--out")
                    .arg(&run_dir)
                    .args(["--preset", "tiny", "--device", "cpu", "--seed", &seed.to_string(), "--config"])
                    .arg(d.join("quick.toml"))
                    .env("OMP_NUM_THREADS", "1")), "train");
                let out = d.join(format!("pkg{seed}"));
                ok(run(vqad()
                    .arg("package")
                    .arg(&run_dir)
                    .args(["--name", "synth_texture", "--version", version, "--key"])
                    .arg(d.join("k.key"))
                    .arg("--out")
                    .arg(&out)
                    .env("SOURCE_DATE_EPOCH", epoch)), "package");
                pkgs.push(out.join(format!("synth_texture-{version}.vqad")));
            }
            Runs { a: pkgs[0].clone(), b: pkgs[1].clone(), public: d.join("k.pub"), dir }
        })
    }

    fn diff_json(a: &Path, b: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
        let r = runs();
        let o = run(vqad().arg("diff").arg(a).arg(b).arg("--pubkey").arg(&r.public).arg("--json").args(extra));
        (o.status.code().unwrap(), serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null))
    }

    #[test]
    fn diff_of_two_seeds_lists_exactly_what_differs() {
        let r = runs();
        let (code, j) = diff_json(&r.a, &r.b, &[]);
        assert_eq!(code, 5, "differing packages exit 5: {j}");
        assert_eq!(j["identical"], false);
        let differing: std::collections::BTreeSet<String> =
            j["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap().to_string()).collect();
        assert_eq!(j["differences"].as_u64().unwrap() as usize, differing.len());
        // What must differ: the seed, the version and creation time we set, every trained file.
        let mut must: Vec<String> = ["version", "provenance.seed", "provenance.created"].map(String::from).to_vec();
        // The provenance names the seed and the trained files' digests, so it differs too.
        for f in ["encoder.onnx", "decoder.onnx", "pixelsnail.onnx", "codebook.npy", "provenance.intoto.json"] {
            must.push(format!("files[\"{f}\"].sha256"));
        }
        for m in &must {
            assert!(differing.contains(m), "{m} should differ: {differing:?}");
        }
        // What may differ with the weights: tuned η, threshold, residual metric and border
        // profile, losses, codebook usage.
        let may = |f: &str| {
            f == "detection.eta"
                || f == "detection.pixel_threshold"
                || f.starts_with("detection.residual_metric[")
                || f.starts_with("detection.border_profile[")
                || f.starts_with("provenance.final_losses.")
                || f.starts_with("provenance.codebook_usage.")
                || f == "files[\"provenance.intoto.json\"].size"
        };
        for f in &differing {
            assert!(must.contains(f) || may(f), "{f} should not differ between seeds: {j}");
        }
        for f in j["fields"].as_array().unwrap() {
            assert_ne!(f["a"], f["b"], "{f}");
            assert!(!["dataset", "model", "software", "training config"].contains(&f["group"].as_str().unwrap()), "{f}");
        }

        // --all keeps the equal fields: same data, shape and code on both sides.
        let (code, all) = diff_json(&r.a, &r.b, &["--all"]);
        assert_eq!(code, 5);
        let same = |name: &str| {
            let f = all["fields"].as_array().unwrap().iter().find(|f| f["field"] == name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(f["change"], "same", "{f}");
        };
        for f in ["provenance.dataset.digest", "provenance.dataset.images", "model.num_codes", "model.image_size", "provenance.software.vqad_version", "provenance.software.git_commit", "provenance.training_config.train.lr", "detection.min_area"] {
            same(f);
        }
        assert!(all["fields"].as_array().unwrap().len() > 60, "every manifest leaf is compared");

        // The JSON matches its schema (and the schema can refuse).
        let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/diff.schema.json");
        let p = r.dir.path().join("diff.json");
        std::fs::write(&p, serde_json::to_vec(&all).unwrap()).unwrap();
        let bad = r.dir.path().join("diff-bad.json");
        let mut b = all.clone();
        b["fields"][0]["change"] = "moved".into();
        std::fs::write(&bad, serde_json::to_vec(&b).unwrap()).unwrap();
        let code = "import sys, json, jsonschema\ns = json.load(open(sys.argv[1]))\njsonschema.Draft202012Validator.check_schema(s)\njsonschema.Draft202012Validator(s).validate(json.load(open(sys.argv[2])))";
        let o = Command::new(audit_python()).args(["-c", code]).arg(&schema).arg(&p).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let o = Command::new(audit_python()).args(["-c", code]).arg(&schema).arg(&bad).output().unwrap();
        assert!(!o.status.success());

        // The table shows only the differing fields.
        let o = run(vqad().arg("diff").arg(&r.a).arg(&r.b).arg("--pubkey").arg(&r.public));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("provenance.seed") && text.contains("files[\"codebook.npy\"].sha256"), "{text}");
        assert!(!text.contains("provenance.dataset.digest"), "{text}");
        assert!(text.contains(&format!("{} field(s) differ", differing.len())), "{text}");
    }

    #[test]
    fn diff_of_a_package_with_itself_is_empty_and_a_tampered_one_is_refused() {
        let r = runs();
        let (code, j) = diff_json(&r.a, &r.a, &[]);
        assert_eq!(code, 0, "{j}");
        assert_eq!(j["identical"], true);
        assert!(j["fields"].as_array().unwrap().is_empty());
        // A flipped byte in B: no diff is printed, exit 3 (refused), and the message names it.
        let mut bytes = std::fs::read(&r.b).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 1;
        let dir = r.dir.path().join("tampered");
        std::fs::create_dir_all(&dir).unwrap();
        let t = dir.join(r.b.file_name().unwrap());
        std::fs::write(&t, &bytes).unwrap();
        let o = run(vqad().arg("diff").arg(&r.a).arg(&t).arg("--pubkey").arg(&r.public));
        assert_eq!(o.status.code(), Some(3));
        assert!(o.stdout.is_empty());
        assert!(String::from_utf8_lossy(&o.stderr).contains("verification failed"));
    }

    #[test]
    fn bom_of_a_trained_package_is_valid_cyclonedx_and_deterministic() {
        let r = runs();
        let out = r.dir.path().join("bom-a.json");
        let o = run(vqad().arg("bom").arg(&r.a).arg("--pubkey").arg(&r.public).args(["--format", "cyclonedx", "--out"]).arg(&out));
        assert!(o.status.success());
        let (ok, text) = validate_bom(&out);
        assert!(ok, "{text}");

        // Same package, same BOM; the other package gets another serial number.
        let again = run(vqad().arg("bom").arg(&r.a).arg("--pubkey").arg(&r.public));
        assert_eq!(again.stdout, std::fs::read(&out).unwrap());
        let other = run(vqad().arg("bom").arg(&r.b).arg("--pubkey").arg(&r.public));
        let (ba, bb): (serde_json::Value, serde_json::Value) =
            (serde_json::from_slice(&again.stdout).unwrap(), serde_json::from_slice(&other.stdout).unwrap());
        assert_ne!(ba["serialNumber"], bb["serialNumber"]);
        // --out never overwrites.
        let o = run(vqad().arg("bom").arg(&r.a).arg("--pubkey").arg(&r.public).arg("--out").arg(&out));
        assert!(!o.status.success());

        // Content: the model card, the data set by digest, each file by its real sha256.
        let p = vqad::package::VerifiedPackage::open(&r.a, &vqad::package::TrustedKey::load(&r.public).unwrap()).unwrap();
        let model = &ba["metadata"]["component"];
        assert_eq!(model["type"], "machine-learning-model");
        assert_eq!(model["modelCard"]["modelParameters"]["approach"]["type"], "unsupervised");
        assert_eq!(model["hashes"][0]["content"], p.archive_sha256.as_str());
        assert_eq!(ba["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
        let comps = ba["components"].as_array().unwrap();
        let data = comps.iter().find(|c| c["type"] == "data").unwrap();
        assert_eq!(data["hashes"][0]["content"], p.manifest.provenance.dataset.digest.as_str());
        assert_eq!(model["modelCard"]["modelParameters"]["datasets"][0]["ref"], data["bom-ref"]);
        for (name, bytes) in p.files.iter().filter(|(n, _)| n.as_str() != "manifest.json") {
            let c = comps.iter().find(|c| c["type"] == "file" && c["name"] == name.as_str()).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(c["hashes"][0]["content"], vqad::fsutil::sha256_hex(bytes).as_str());
        }
        let tools: Vec<&str> =
            ba["metadata"]["tools"]["components"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert!(tools.contains(&"vqad") && tools.contains(&"onnxruntime") && tools.contains(&"libtorch"), "{tools:?}");
        let deps = &ba["dependencies"][0];
        assert_eq!(deps["ref"], model["bom-ref"]);
        // The data set and every file (graphs, codebook, manifest, provenance, model.sig).
        assert_eq!(deps["dependsOn"].as_array().unwrap().len(), 1 + 7);

        // The validator can fail: a wrong enum value and a malformed hash are refused.
        for corrupt in [
            |b: &mut serde_json::Value| b["metadata"]["component"]["modelCard"]["modelParameters"]["approach"]["type"] = "guessing".into(),
            |b: &mut serde_json::Value| b["components"][1]["hashes"][0]["content"] = "not-a-digest".into(),
        ] {
            let mut b = ba.clone();
            corrupt(&mut b);
            let bad = r.dir.path().join("bom-bad.json");
            std::fs::write(&bad, serde_json::to_vec(&b).unwrap()).unwrap();
            let (ok, text) = validate_bom(&bad);
            assert!(!ok, "a corrupted BOM passed: {text}");
        }
    }
}
