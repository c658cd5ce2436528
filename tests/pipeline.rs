//! The whole workflow through the `vqad` binary, at a small size: demo (synth → train →
//! export → keygen → package → publish → verify → detect → eval), then what a user does with
//! the results. One demo run is shared by the tests of this file.
#![cfg(feature = "train")]

mod common;
mod common_audit;

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

struct Demo {
    _dir: tempfile::TempDir,
    summary: serde_json::Value,
}

/// Runs the demo once, with the real tiny preset on fewer images than the README's demo.
fn demo() -> &'static Demo {
    static D: OnceLock<Demo> = OnceLock::new();
    D.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("demo");
        let o = run(vqad().args(["demo", "--json", "--train", "100", "--test-bad", "3"]).arg("--out").arg(&out));
        assert!(o.status.success(), "demo failed");
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("demo --json prints JSON");
        Demo { _dir: dir, summary }
    })
}

fn path(v: &serde_json::Value) -> PathBuf {
    PathBuf::from(v.as_str().expect("a path"))
}

#[test]
fn demo_leaves_a_signed_package_a_registry_entry_results_and_a_report() {
    let d = demo();
    let s = &d.summary;
    for k in ["package", "public_key", "published", "report_json", "report_md"] {
        assert!(path(&s[k]).is_file(), "{k} missing: {}", s[k]);
    }
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(path(&s["registry"]).join("index.json")).unwrap()).unwrap();
    assert_eq!(index["packages"][0]["name"], "synth_texture");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(path(&s["detections"]).join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["images"].as_u64().unwrap(), 10 + 5 * 3);
    assert!(summary["failed"].as_array().unwrap().is_empty());
    // Training did something: reconstruction error fell, the prior beats a uniform guess.
    let t = &s["training"];
    assert!(t["vqvae_val_recon_mse"].as_f64().unwrap() < 0.5 * t["vqvae_val_recon_mse_untrained"].as_f64().unwrap(), "{t}");
    assert!(t["prior_val_nll"].as_f64().unwrap() < t["log_k"].as_f64().unwrap(), "{t}");
    // Every metric of the report is there.
    let m = &s["metrics"];
    for k in ["image_accuracy", "pro", "pixel_auroc", "image_f1", "pixel_f1", "image_auroc", "aupro_30"] {
        assert!(m[k].is_number(), "metric {k} missing: {m}");
    }
    // The package verifies from the command line.
    let o = run(vqad().arg("verify").arg(path(&s["published"])).arg("--pubkey").arg(path(&s["public_key"])).arg("--registry").arg(path(&s["registry"])));
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("valid: synth_texture 1.0.0"));
}

#[test]
fn detection_and_report_json_match_their_schemas() {
    let d = demo();
    let det_dir = path(&d.summary["detections"]);
    let mut det_files: Vec<String> = std::fs::read_dir(&det_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("summary.json"))
        .map(|p| p.display().to_string())
        .collect();
    det_files.sort();
    assert_eq!(det_files.len(), 25);
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let code = "import json, sys, jsonschema\nschema = json.load(open(sys.argv[1]))\njsonschema.Draft202012Validator.check_schema(schema)\nfor p in sys.argv[2:]:\n    jsonschema.validate(json.load(open(p)), schema)\nprint('ok', len(sys.argv) - 2)";
    let mut args = vec![schemas.join("detection.schema.json").display().to_string()];
    args.extend(det_files.iter().cloned());
    let out = common::run_python(code, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("ok 25"), "{out}");
    let report = path(&d.summary["report_json"]).display().to_string();
    let out = common::run_python(code, &[&schemas.join("report.schema.json").display().to_string(), &report]);
    assert!(out.contains("ok 1"), "{out}");
    // A record with a wrong type is refused by the schema (so the check can fail).
    let mut bad: serde_json::Value = serde_json::from_slice(&std::fs::read(&det_files[0]).unwrap()).unwrap();
    bad["anomalous"] = serde_json::json!("yes");
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), serde_json::to_vec(&bad).unwrap()).unwrap();
    let status = Command::new(common::python())
        .args(["-c", code, &schemas.join("detection.schema.json").display().to_string(), &tmp.path().display().to_string()])
        .output()
        .unwrap();
    assert!(!status.status.success());
}

#[test]
fn defective_images_score_higher_and_masks_overlap_the_defects() {
    let d = demo();
    let det_dir = path(&d.summary["detections"]);
    let data = path(&d.summary["data"]);
    let (mut good, mut bad, mut overlaps, mut bad_n) = (vec![], vec![], 0, 0);
    for e in std::fs::read_dir(&det_dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|e| e != "json") || p.ends_with("summary.json") {
            continue;
        }
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        let score = r["image_score"].as_f64().unwrap();
        if stem.starts_with("good__") {
            good.push(score);
            continue;
        }
        bad.push(score);
        bad_n += 1;
        // test__<defect>__<n> → ground_truth/<defect>/<n>_mask.png
        let parts: Vec<&str> = stem.split("__").collect();
        let gt = vqad::data::load_mask(&data.join("ground_truth").join(parts[0]).join(format!("{}_mask.png", parts[1])), 64).unwrap();
        let mask = vqad::data::load_mask(&det_dir.join(r["outputs"]["mask"].as_str().unwrap()), 64).unwrap();
        if gt.iter().zip(mask.iter()).any(|(&g, &m)| g > 0 && m > 0) {
            overlaps += 1;
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    eprintln!("mean image score: defective {:.3e}, good {:.3e}; {overlaps} of {bad_n} masks overlap their defect", mean(&bad), mean(&good));
    assert!(mean(&bad) > mean(&good), "defective mean score {} ≤ good {}", mean(&bad), mean(&good));
    assert!(overlaps * 2 >= bad_n, "only {overlaps} of {bad_n} masks overlap their defect");
}

/// Flips one byte in the middle of `entry`'s stored data inside a copy of the package.
fn tampered_copy(pkg: &Path, dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(pkg).unwrap();
    let name = b"pixelsnail.onnx";
    let at = bytes.windows(name.len()).position(|w| w == name).expect("entry name in the archive");
    let target = at + name.len() + 5000;
    bytes[target] ^= 0x40;
    let out = dir.join(pkg.file_name().unwrap());
    std::fs::write(&out, bytes).unwrap();
    out
}

#[test]
fn detect_refuses_a_tampered_package_and_writes_nothing() {
    let d = demo();
    let tmp = tempfile::tempdir().unwrap();
    let bad = tampered_copy(&path(&d.summary["package"]), tmp.path());
    let out_dir = tmp.path().join("results");
    let o = run(vqad().arg("detect").arg(&bad).arg("--pubkey").arg(path(&d.summary["public_key"])).arg(path(&d.summary["data"]).join("test/good")).arg("--out").arg(&out_dir));
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refusing to run") && err.contains("pixelsnail.onnx"), "{err}");
    assert!(!err.contains("panicked"));
    assert!(!out_dir.exists(), "results were written for an unverified package");
    // A wrong key is refused the same way.
    let k = tmp.path().join("other");
    assert!(run(vqad().arg("keygen").arg("--out").arg(&k)).status.success());
    let o = run(vqad().arg("verify").arg(path(&d.summary["package"])).arg("--pubkey").arg(k.with_extension("pub")));
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn detect_reports_a_bad_file_and_goes_on() {
    let d = demo();
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let good = path(&d.summary["data"]).join("test/good");
    for f in ["000.png", "001.png"] {
        std::fs::copy(good.join(f), inputs.join(f)).unwrap();
    }
    std::fs::write(inputs.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let out_dir = tmp.path().join("out");
    let o = run(vqad()
        .arg("detect")
        .arg(path(&d.summary["package"]))
        .arg("--pubkey")
        .arg(path(&d.summary["public_key"]))
        .arg(&inputs)
        .arg("--out")
        .arg(&out_dir)
        .args(["--ep", "cpu", "--save-maps"]));
    assert_eq!(o.status.code(), Some(4), "a failed input must show in the exit code");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["images"], 2);
    assert!(summary["failed"][0]["path"].as_str().unwrap().ends_with("broken.png"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("broken.png"));
    let raw: ndarray::Array2<f32> = ndarray_npy::read_npy(out_dir.join("000_raw.npy")).unwrap();
    assert_eq!(raw.dim(), (64, 64));
    // The saved images reproduce the raw map: the package's residual (input vs restored,
    // measured in its residual metric), recomputed here from the .npy arrays alone.
    let load3 = |n: &str| -> ndarray::Array3<f32> { ndarray_npy::read_npy(out_dir.join(n)).unwrap() };
    let (x, xd, xr) = (load3("000_input.npy"), load3("000_direct.npy"), load3("000_restored.npy"));
    assert_eq!((x.dim(), xd.dim(), xr.dim()), ((3, 64, 64), (3, 64, 64), (3, 64, 64)));
    assert!(x.iter().chain(xd.iter()).chain(xr.iter()).all(|v| (0.0..=1.0).contains(v)));
    let o = run(vqad().arg("inspect").arg(path(&d.summary["package"])).arg("--pubkey").arg(path(&d.summary["public_key"])).arg("--json"));
    let det = &serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["manifest"]["detection"];
    assert_eq!(det["score"], "restored_input", "{det}");
    let m: Vec<Vec<f64>> = serde_json::from_value(det["residual_metric"].clone()).expect("the demo package whitens");
    // The metric is over k×k×3 patches (absent: k = 1), reflected at the border without
    // repeating the edge pixel, ordered channel, row, column; the pixel's value is pᵀMp / k².
    let k = det["residual_patch"].as_u64().unwrap_or(1) as isize;
    assert_eq!(m.len(), 3 * (k * k) as usize);
    let refl = |p: isize, n: isize| (if p < 0 { -p } else if p >= n { 2 * n - 2 - p } else { p }) as usize;
    let mut worst = 0f64;
    for ((i, j), &v) in raw.indexed_iter() {
        let mut r = Vec::new();
        for c in 0..3 {
            for di in -(k / 2)..=k / 2 {
                for dj in -(k / 2)..=k / 2 {
                    let (y, xx) = (refl(i as isize + di, 64), refl(j as isize + dj, 64));
                    r.push((x[[c, y, xx]] - xr[[c, y, xx]]) as f64);
                }
            }
        }
        let want: f64 = (0..r.len()).map(|p| (0..r.len()).map(|q| r[p] * m[p][q] * r[q]).sum::<f64>()).sum::<f64>() / (k * k) as f64;
        worst = worst.max((want - v as f64).abs());
    }
    assert!(worst < 1e-5, "raw map differs from the saved arrays' residual by {worst}");
}

#[test]
fn packaging_a_trained_run_twice_gives_identical_bytes_and_inspect_shows_provenance() {
    let d = demo();
    let tmp = tempfile::tempdir().unwrap();
    let key = path(&d.summary["public_key"]).with_extension("key");
    let mut shas = vec![];
    for i in 0..2 {
        let out = tmp.path().join(format!("p{i}"));
        let o = run(vqad()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("package")
            .arg(path(&d.summary["run"]))
            .args(["--name", "synth_texture", "--version", "2.0.0", "--key"])
            .arg(&key)
            .arg("--out")
            .arg(&out));
        assert!(o.status.success());
        shas.push(std::fs::read(out.join("synth_texture-2.0.0.vqad")).unwrap());
    }
    assert_eq!(shas[0], shas[1], "two packagings of the same run differ");
    let pkg = tmp.path().join("p0/synth_texture-2.0.0.vqad");
    let o = run(vqad().arg("inspect").arg(&pkg).arg("--pubkey").arg(path(&d.summary["public_key"])).arg("--json"));
    assert!(o.status.success());
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["verified"]["valid"], true, "{r}");
    let m = &r["manifest"];
    assert_eq!(m["provenance"]["created"], "2023-11-14T22:13:20Z");
    assert_eq!(m["provenance"]["dataset"]["digest"].as_str().unwrap().len(), 64);
    assert!(m["provenance"]["software"]["libtorch"].as_str().unwrap().starts_with("2.13"));
    assert_eq!(m["provenance"]["software"]["onnxruntime"], "1.31.1");
    assert!(m["detection"]["pixel_threshold"].as_f64().unwrap() > 0.0);
    // The five files, the build provenance (the same for both packagings) and model.sig.
    assert_eq!(r["entries"].as_array().unwrap().len(), 7);
    assert_eq!(r["provenance"]["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(r["provenance"]["predicate"]["runDetails"]["metadata"]["finishedOn"], "2023-11-14T22:13:20Z");
    // Unverified inspection says so.
    let o = run(vqad().arg("inspect").arg(&pkg));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("NOT VERIFIED"));
}

#[test]
fn publish_refuses_to_replace_a_version() {
    let d = demo();
    let o = run(vqad().arg("publish").arg(path(&d.summary["package"])).arg("--registry").arg(path(&d.summary["registry"])).arg("--pubkey").arg(path(&d.summary["public_key"])));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("1.0.0"));
    let o = run(vqad().arg("list").arg("--registry").arg(path(&d.summary["registry"])).arg("--json"));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[test]
fn the_demo_package_bom_is_valid_cyclonedx_1_6() {
    let d = demo();
    let out = tempfile::tempdir().unwrap();
    let bom = out.path().join("demo.cdx.json");
    let o = run(vqad().arg("bom").arg(path(&d.summary["package"])).arg("--pubkey").arg(path(&d.summary["public_key"])).args(["--format", "cyclonedx", "--out"]).arg(&bom));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ok, text) = common_audit::validate_bom(&bom);
    assert!(ok, "the demo package's BOM fails the CycloneDX 1.6 schema: {text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&bom).unwrap()).unwrap();
    assert_eq!(v["metadata"]["component"]["type"], "machine-learning-model");
}

#[test]
fn incremental_and_naive_resampling_agree_on_the_real_model() {
    let d = demo();
    let key = vqad::package::TrustedKey::load(&path(&d.summary["public_key"])).unwrap();
    let pkg = path(&d.summary["package"]);
    let cat = vqad::data::Category::open(&path(&d.summary["data"])).unwrap();
    let imgs: Vec<_> = cat.test.iter().step_by(4).take(4).map(|t| vqad::data::load_image(&t.path, 3, 64).unwrap()).collect();
    let open = |mode| {
        let opts = vqad::runtime::DetectorOptions { session: common::cpu_sessions(), eta: Some(0.05), mode, batch: 3, ..Default::default() };
        vqad::runtime::Detector::open(&pkg, &key, opts).unwrap()
    };
    let inc = open(vqad::runtime::ResampleMode::Incremental).detect_arrays(&imgs).unwrap();
    let naive = open(vqad::runtime::ResampleMode::Naive).detect_arrays(&imgs).unwrap();
    let mut changed = 0;
    for (a, b) in inc.iter().zip(naive.iter()) {
        assert_eq!(a.resampled, b.resampled);
        assert_eq!(a.restored, b.restored);
        assert_eq!(a.smoothed, b.smoothed);
        assert_eq!(b.prior_passes, 16 * 16);
        assert!(a.prior_passes <= 1 + a.resampled.len());
        changed += a.resampled.len();
    }
    assert!(changed > 0, "η = 0.05 should resample something, or the comparison shows nothing");
}

#[test]
fn bench_compares_the_naive_loop_with_the_incremental_one_on_the_same_images() {
    let d = demo();
    let (pkg, key) = (path(&d.summary["package"]), path(&d.summary["public_key"]));
    // η = 0.05 fires on the demo model (see the test above), so the comparison has changes to compare.
    let o = run(vqad().arg("bench").arg(&pkg).arg("--pubkey").arg(&key).args(["--ep", "cpu", "--eta", "0.05", "--count", "3", "--naive-count", "2", "--batches", "2", "--json"]));
    assert!(o.status.success(), "bench failed");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("bench --json prints JSON");
    let rows = v["rows"].as_array().expect("rows");
    let inc = rows.iter().find(|r| r["mode"] == "incremental").expect("an incremental row");
    let naive = rows.iter().find(|r| r["mode"] == "naive").expect("a naive row");
    assert_eq!((inc["images"].as_u64(), naive["images"].as_u64()), (Some(3), Some(2)));
    assert_eq!(naive["agrees_with_incremental"], true);
    assert_eq!(naive["incremental_resampled_same_images"], naive["resampled_per_image"]);
    assert!(naive["resampled_per_image"].as_f64().unwrap() > 0.0, "nothing resampled: the agreement shows nothing");
    assert!(inc["agrees_with_incremental"].is_null());
    assert_eq!(naive["prior_passes_per_image"].as_f64(), Some(16.0 * 16.0));
}

#[test]
fn exported_graphs_match_the_trained_model_on_real_images() {
    let d = demo();
    let run_dir = path(&d.summary["run"]);
    let rd = vqad_train::train::run::RunDir::new(&run_dir);
    let cfg = rd.config().unwrap();
    let (_vs, vq) = vqad_train::train::load_vqvae(&rd, &cfg, tch::Device::Cpu).unwrap();
    let (_ps, prior) = vqad_train::train::load_prior(&rd, &cfg, tch::Device::Cpu).unwrap();
    let export = path(&d.summary["export"]);
    let cat = vqad::data::Category::open(&path(&d.summary["data"])).unwrap();
    let imgs: Vec<_> = cat.test.iter().take(5).map(|t| vqad::data::load_image(&t.path, 3, 64).unwrap()).collect();
    let x = vqad_train::train::stack(&imgs.iter().collect::<Vec<_>>(), tch::Device::Cpu);
    let want_idx = vq.indices(&x);
    let opts = common::cpu_sessions();
    let mut enc = vqad::runtime::session::open_graph("encoder.onnx", &std::fs::read(export.join("encoder.onnx")).unwrap(), &opts).unwrap();
    let views: Vec<_> = imgs.iter().map(|a| a.view()).collect();
    let got: ndarray::ArrayD<i64> = enc.run_one(ndarray::stack(ndarray::Axis(0), &views).unwrap().into_dyn()).unwrap();
    let want: Vec<i64> = Vec::<i64>::try_from(want_idx.flatten(0, -1)).unwrap();
    let same = got.iter().zip(want.iter()).filter(|(a, b)| a == b).count();
    assert!(same * 1000 >= want.len() * 999, "{same} of {} indices agree", want.len());
    let mut dec = vqad::runtime::session::open_graph("decoder.onnx", &std::fs::read(export.join("decoder.onnx")).unwrap(), &opts).unwrap();
    let idx_nd = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[5, 16, 16]), want).unwrap();
    let img: ndarray::ArrayD<f32> = dec.run_one(idx_nd.clone()).unwrap();
    let want_img = Vec::<f32>::try_from(tch::no_grad(|| vq.decode_indices(&want_idx)).flatten(0, -1)).unwrap();
    let dmax = img.iter().zip(want_img.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(dmax <= 1e-4, "decoder max |Δ| = {dmax}");
    let mut ps = vqad::runtime::session::open_graph("pixelsnail.onnx", &std::fs::read(export.join("pixelsnail.onnx")).unwrap(), &opts).unwrap();
    let lp: ndarray::ArrayD<f32> = ps.run_one(idx_nd).unwrap();
    let want_lp = Vec::<f32>::try_from(prior.log_probs(&want_idx).flatten(0, -1)).unwrap();
    let dmax = lp.iter().zip(want_lp.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(dmax <= 1e-4, "pixelsnail max |Δ| = {dmax}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

#[test]
fn detect_runs_what_the_channel_assigns_and_follows_a_rollback() {
    let d = demo();
    let tmp = tempfile::tempdir().unwrap();
    // A private copy of the demo's registry: the other tests read the original.
    let reg = tmp.path().join("registry");
    copy_dir(&path(&d.summary["registry"]), &reg);
    let pubkey = path(&d.summary["public_key"]);
    let key = pubkey.with_extension("key");
    // A second version of the same trained run, published beside 1.0.0.
    let out = tmp.path().join("p");
    assert!(run(vqad().arg("package").arg(path(&d.summary["run"])).args(["--name", "synth_texture", "--version", "1.1.0", "--key"]).arg(&key).arg("--out").arg(&out)).status.success());
    assert!(run(vqad().arg("publish").arg(out.join("synth_texture-1.1.0.vqad")).arg("--registry").arg(&reg).arg("--pubkey").arg(&pubkey)).status.success());
    for v in ["1.0.0", "1.1.0"] {
        let o = run(vqad().arg("promote").arg(&reg).args(["synth_texture", v, "--channel", "production", "--key"]).arg(&key));
        assert!(o.status.success());
        assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("synth_texture@production → {v}")));
    }
    let inputs = tmp.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    for f in ["000.png", "001.png"] {
        std::fs::copy(path(&d.summary["data"]).join("test/good").join(f), inputs.join(f)).unwrap();
    }
    let detect = |reference: &str, out: &Path| {
        run(vqad().arg("detect").arg(reference).arg("--registry").arg(&reg).arg("--pubkey").arg(&pubkey).arg(&inputs).arg("--out").arg(out).args(["--ep", "cpu"]))
    };
    let summary = |out: &Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap() };
    let o1 = tmp.path().join("r1");
    assert!(detect("synth_texture@production", &o1).status.success());
    let s = summary(&o1);
    assert_eq!(s["version"], "1.1.0", "{s}");
    assert_eq!(s["resolved"]["sequence"], 2, "{s}");
    assert!(s["package"].as_str().unwrap().ends_with("synth_texture/1.1.0/synth_texture-1.1.0.vqad"), "{s}");
    assert_eq!(s["images"], 2);

    // Roll back: a new record (sequence 3) sends production back to 1.0.0.
    let o = run(vqad().arg("rollback").arg(&reg).args(["synth_texture", "--channel", "production", "--key"]).arg(&key));
    assert!(o.status.success());
    let o2 = tmp.path().join("r2");
    assert!(detect("synth_texture@production", &o2).status.success());
    let s = summary(&o2);
    assert_eq!((s["version"].as_str(), s["resolved"]["sequence"].as_u64()), (Some("1.0.0"), Some(3)), "{s}");
    // eval takes `@CHANNEL` for <category>@CHANNEL of every category folder.
    let ev = tmp.path().join("eval");
    let o = run(vqad().arg("eval").arg("@production").arg("--registry").arg(&reg).arg("--pubkey").arg(&pubkey).arg(path(&d.summary["data"])).arg("--out").arg(&ev).args(["--ep", "cpu"]));
    assert!(o.status.success());
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(ev.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["categories"][0]["version"], "1.0.0", "{}", report["categories"][0]["package"]);
    // An exact version ignores the channel.
    let o3 = tmp.path().join("r3");
    assert!(detect("synth_texture@1.1.0", &o3).status.success());
    assert_eq!(summary(&o3)["version"], "1.1.0");

    // list marks what production runs; history prints every record and matches its schema.
    let o = run(vqad().arg("list").arg("--registry").arg(&reg).arg("--pubkey").arg(&pubkey));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.lines().any(|l| l.contains("1.0.0") && l.contains("← production")), "{text}");
    assert!(text.contains("synth_texture@production") && text.contains("sequence 3"), "{text}");
    let o = run(vqad().arg("history").arg(&reg).arg("synth_texture").arg("--pubkey").arg(&pubkey).arg("--json"));
    assert!(o.status.success());
    let hist_file = tmp.path().join("history.json");
    std::fs::write(&hist_file, &o.stdout).unwrap();
    let h: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(h[0]["records"].as_array().unwrap().len(), 3);
    assert_eq!(h[0]["deployment_stack"], serde_json::json!(["1.0.0"]));
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let code = "import json, sys, jsonschema\nfrom referencing import Registry, Resource\nrec = json.load(open(sys.argv[1] + '/channel-record.schema.json'))\nhist = json.load(open(sys.argv[1] + '/channel-history.schema.json'))\nreg = Registry().with_resource(rec['$id'], Resource.from_contents(rec))\njsonschema.Draft202012Validator.check_schema(hist)\njsonschema.Draft202012Validator(hist, registry=reg).validate(json.load(open(sys.argv[2])))\nprint('ok')";
    assert!(common::run_python(code, &[&schemas.display().to_string(), &hist_file.display().to_string()]).contains("ok"));

    // A replayed older record in current.json: detect refuses (exit 3) and writes nothing.
    let ch = reg.join("synth_texture/channels/production");
    std::fs::copy(ch.join("00000002.json"), ch.join("current.json")).unwrap();
    let o4 = tmp.path().join("r4");
    let o = detect("synth_texture@production", &o4);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refusing to run") && err.contains("replayed older record") && err.contains("sequence 2"), "{err}");
    assert!(!o4.exists(), "results were written for a refused channel");
}

/// ONNX Runtime's Python API, independent of vqad's Rust side, recomputes the per-graph parity
/// figures on the same images; onnx.checker checks every variant; ORT's own optimizer shows the
/// INT8 convolutions become integer `QLinearConv` kernels.
const PARITY_PY: &str = r#"
import json, os, sys
import numpy as np, onnx, onnxruntime as ort
d, images, out = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
m = json.load(open(os.path.join(d, "manifest.json")))
so = ort.SessionOptions()
def sess(f, opt=None):
    o = ort.SessionOptions()
    if opt: o.optimized_model_filepath = opt
    return ort.InferenceSession(os.path.join(d, f), o, providers=["CPUExecutionProvider"])
res = {"checked": [], "qlinearconv": {}, "convs": {}}
for p, v in m["variants"].items():
    for g, f in v["files"].items():
        if f != g:
            onnx.checker.check_model(onnx.load(os.path.join(d, f)), full_check=True)
            res["checked"].append(f)
            if p == "int8":
                opt = os.path.join(out, f + ".opt.onnx")
                sess(f, opt)
                res["qlinearconv"][f] = sum(n.op_type == "QLinearConv" for n in onnx.load(opt).graph.node)
                res["convs"][f] = sum(n.op_type == "Conv" for n in onnx.load(os.path.join(d, g)).graph.node)
    e_ref, e_var = sess("encoder.onnx"), sess(v["files"]["encoder.onnx"])
    p_ref, p_var = sess("pixelsnail.onnx"), sess(v["files"]["pixelsnail.onnx"])
    d_ref, d_var = sess("decoder.onnx"), sess(v["files"]["decoder.onnx"])
    same = n = 0; s = e = 0.0; am = an = 0; dmax = 0.0; dsq = 0.0; dn = 0
    for i in range(0, len(images), 8):
        x = images[i:i+8]
        z = e_ref.run(None, {"image": x})[0]; zv = e_var.run(None, {"image": x})[0]
        same += int((z == zv).sum()); n += z.size
        a = p_ref.run(None, {"indices": z})[0].astype(np.float64); b = p_var.run(None, {"indices": z})[0].astype(np.float64)
        s += (a ** 2).sum(); e += ((a - b) ** 2).sum()
        am += int((a.argmax(1) == b.argmax(1)).sum()); an += a.argmax(1).size
        xa = d_ref.run(None, {"indices": z})[0].astype(np.float64); xb = d_var.run(None, {"indices": z})[0].astype(np.float64)
        dmax = max(dmax, float(np.abs(xa - xb).max())); dsq += float(((xa - xb) ** 2).sum()); dn += xa.size
    res[p] = {"encoder_code_agreement": same / n, "prior_logprob_sqnr_db": min(200.0, 10 * np.log10(s / e)) if e > 0 else 200.0,
              "prior_argmax_agreement": am / an, "decoder_max_error": dmax, "decoder_rms_error": (dsq / dn) ** 0.5}
print(json.dumps(res))
"#;

#[test]
fn packaged_variants_carry_signed_parity_that_python_onnxruntime_reproduces() {
    let d = demo();
    let tmp = tempfile::tempdir().unwrap();
    let (run_dir, pubkey) = (path(&d.summary["run"]), path(&d.summary["public_key"]));
    let key = pubkey.with_extension("key");
    let package = |precisions: &str, extra: &[&str], out: &Path| {
        run(vqad().arg("package").arg(&run_dir).args(["--name", "synth_texture", "--version", "4.0.0", "--precisions", precisions]).args(extra).arg("--key").arg(&key).arg("--out").arg(out))
    };
    // Without an override, a variant outside its bound is refused by name, or packaged when within.
    let o = package("fp32,int8,fp16", &["--parity-override", "test: tiny demo model"], &tmp.path().join("p"));
    assert!(o.status.success());
    let pkg = tmp.path().join("p/synth_texture-4.0.0.vqad");
    let o = run(vqad().arg("inspect").arg(&pkg).arg("--pubkey").arg(&pubkey).arg("--json"));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["verified"]["valid"], true, "{r}");
    let m = &r["manifest"];
    assert_eq!(m["format_version"], 7);
    assert_eq!(m["variants"]["int8"]["files"]["encoder.onnx"], "encoder.onnx", "INT8 keeps the FP32 encoder");
    assert_eq!(m["variants"]["int8"]["files"]["decoder.onnx"], "decoder.onnx", "INT8 keeps the FP32 decoder");
    assert_eq!(m["variants"]["int8"]["files"]["pixelsnail.onnx"], "pixelsnail.int8.onnx");
    // Accuracy control may have kept some graphs (fp16) or convolutions (int8) in float32.
    let entries: std::collections::BTreeSet<&str> = ["fp16", "int8"].iter().flat_map(|p| m["variants"][*p]["files"].as_object().unwrap().iter().filter(|(g, f)| f.as_str() != Some(g.as_str())).map(|(_, f)| f.as_str().unwrap())).collect();
    assert!(entries.contains("pixelsnail.int8.onnx"), "{entries:?}");
    assert_eq!(r["entries"].as_array().unwrap().len(), 7 + entries.len(), "{}", r["entries"]);
    let kept_int8 = m["variants"]["int8"].get("float32").and_then(|v| v.as_array()).map_or(0, |v| v.len());
    for p in ["fp16", "int8"] {
        let q = &m["variants"][p]["parity"];
        let violates = q["decision_agreement"].as_f64().unwrap() < 0.99 || q["mask_iou"].as_f64().is_some_and(|v| v < 0.95);
        assert_eq!(q["within_bound"], !violates, "{q}");
        assert_eq!(q["override_reason"].is_string(), violates, "{q}");
        let o = package(&format!("fp32,{p}"), &[], &tmp.path().join(format!("strict-{p}")));
        assert_eq!(o.status.success(), !violates, "a variant {} its bound must be {}", if violates { "outside" } else { "within" }, if violates { "refused" } else { "packaged" });
        if violates {
            assert!(String::from_utf8_lossy(&o.stderr).contains("outside its parity bound"));
        }
    }
    let text = run(vqad().arg("inspect").arg(&pkg).arg("--pubkey").arg(&pubkey));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("  int8: decisions") && text.contains("  fp16: decisions"), "{text}");

    // The same images the packager compared on: its validation normals plus painted defects.
    let rd = vqad_train::train::run::RunDir::new(&run_dir);
    let (cfg, info) = (rd.config().unwrap(), rd.info().unwrap());
    let ds = vqad_train::train::load_dataset(Path::new(&info.category_dir), &cfg).unwrap();
    let (images, _) = vqad::eval::parity::parity_images(&ds.val, info.seed);
    let views: Vec<_> = images.iter().map(|a| a.view()).collect();
    let stacked = ndarray::stack(ndarray::Axis(0), &views).unwrap();
    let npy = tmp.path().join("images.npy");
    ndarray_npy::write_npy(&npy, &stacked).unwrap();
    let unpacked = tmp.path().join("unpacked");
    assert!(run(vqad().arg("unpack").arg(&pkg).arg("--pubkey").arg(&pubkey).arg("--out").arg(&unpacked)).status.success());
    let out = common::run_python(PARITY_PY, &[&unpacked.display().to_string(), &npy.display().to_string(), &tmp.path().display().to_string()]);
    let py: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(py["checked"].as_array().unwrap().len(), entries.len(), "{py}");
    for (f, n) in py["qlinearconv"].as_object().unwrap() {
        let convs = py["convs"][f].as_u64().unwrap() as usize;
        assert!(n.as_u64().unwrap() > 0 && n.as_u64().unwrap() as usize == convs - kept_int8, "{f}: ONNX Runtime fused {n} of {convs} convolutions into QLinearConv ({kept_int8} kept in float32)");
    }
    for p in ["fp16", "int8"] {
        let q = &m["variants"][p]["parity"];
        for (k, tol) in [("encoder_code_agreement", 2e-3), ("prior_argmax_agreement", 2e-3), ("prior_logprob_sqnr_db", 0.5), ("decoder_max_error", 1e-4), ("decoder_rms_error", 1e-5)] {
            let (ours, theirs) = (q[k].as_f64().unwrap(), py[p][k].as_f64().unwrap());
            assert!((ours - theirs).abs() <= tol, "{p} {k}: manifest {ours}, Python ONNX Runtime {theirs}");
        }
    }
    // model_signing, the reference verifier, accepts the unpacked package with its variants.
    let sig = unpacked.join("model.sig");
    let o = std::process::Command::new(common::python())
        .args(["-m", "model_signing", "verify", "key"])
        .arg(&unpacked)
        .arg("--signature")
        .arg(&sig)
        .arg("--public_key")
        .arg(&pubkey)
        .output()
        .unwrap();
    assert!(o.status.success(), "model_signing refused the package with variants: {}", String::from_utf8_lossy(&o.stderr));

    // An edited parity record (a better prior SQNR) breaks the signature: refused.
    let manifest = std::fs::read_to_string(unpacked.join("manifest.json")).unwrap();
    let q = &m["variants"]["int8"]["parity"]["prior_logprob_sqnr_db"];
    let edited = manifest.replacen(&format!("\"prior_logprob_sqnr_db\": {q}"), "\"prior_logprob_sqnr_db\": 99.0", 1);
    assert_ne!(edited, manifest);
    let edited_pkg = tmp.path().join("edited/synth_texture-4.0.0.vqad");
    std::fs::create_dir_all(edited_pkg.parent().unwrap()).unwrap();
    common::run_python(
        "import sys, zipfile\nsrc, dst, text = sys.argv[1:4]\nwith zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, 'w', zipfile.ZIP_DEFLATED) as b:\n    for i in a.infolist():\n        b.writestr(i.filename, open(text).read() if i.filename == 'manifest.json' else a.read(i.filename))",
        &[&pkg.display().to_string(), &edited_pkg.display().to_string(), &{
            let f = tmp.path().join("edited.json");
            std::fs::write(&f, &edited).unwrap();
            f.display().to_string()
        }],
    );
    let o = run(vqad().arg("verify").arg(&edited_pkg).arg("--pubkey").arg(&pubkey));
    assert_eq!(o.status.code(), Some(3), "an edited parity record must be refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("manifest.json"), "{}", String::from_utf8_lossy(&o.stderr));

    // Detect names the precision that ran; a precision the package lacks is a clear error.
    let imgs = path(&d.summary["data"]).join("test/good");
    let det_out = tmp.path().join("det");
    let o = run(vqad().arg("detect").arg(&pkg).arg("--pubkey").arg(&pubkey).arg(&imgs).arg("--out").arg(&det_out).args(["--ep", "cpu", "--precision", "int8"]));
    assert!(o.status.success());
    let rec = std::fs::read_dir(&det_out).unwrap().filter_map(|e| e.ok()).find(|e| e.path().extension().is_some_and(|x| x == "json") && !e.file_name().to_string_lossy().starts_with("summary")).unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(rec.path()).unwrap()).unwrap();
    assert_eq!(rec["precision"], "int8", "{rec}");
    let o = run(vqad().arg("detect").arg(path(&d.summary["package"])).arg("--pubkey").arg(&pubkey).arg(&imgs).arg("--out").arg(tmp.path().join("det2")).args(["--ep", "cpu", "--precision", "fp16"]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no fp16 variant"), "{}", String::from_utf8_lossy(&o.stderr));
    // ONNX Runtime's profile of the INT8 prior: its convolutions run as integer QLinearConv.
    let o = run(vqad().arg("compat").arg(&pkg).arg("--pubkey").arg(&pubkey).args(["--ep", "cpu", "--precision", "int8", "--json"]));
    assert!(o.status.success());
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let prior = r["graphs"].as_array().unwrap().iter().find(|g| g["graph"] == "pixelsnail.onnx").unwrap();
    assert_eq!(prior["file"], "pixelsnail.int8.onnx");
    assert_eq!(prior["ops"]["QLinearConv"].as_u64().unwrap() as usize, py["convs"]["pixelsnail.int8.onnx"].as_u64().unwrap() as usize - kept_int8, "{prior}");
    assert_eq!(prior["ops"].get("Conv").and_then(|v| v.as_u64()).unwrap_or(0) as usize, kept_int8, "float Convs in the INT8 prior other than those accuracy control kept: {prior}");

    // Accuracy control: under a bound of exactly fp32's decisions and masks, the same INT8
    // variant (same calibration) keeps its costliest convolutions in float32 (at most
    // MAX_INT8_KEPT) unless it already met that bound; the kept ones stay float Convs.
    let q = &m["variants"]["int8"]["parity"];
    let exact = q["decision_agreement"].as_f64() == Some(1.0) && q["mask_iou"].as_f64().is_none_or(|v| v == 1.0);
    let tight = tmp.path().join("tight");
    let o = package("fp32,int8", &["--parity-bound", "1,1", "--parity-override", "test: exact bound"], &tight);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(vqad().arg("inspect").arg(tight.join("synth_texture-4.0.0.vqad")).arg("--pubkey").arg(&pubkey).arg("--json"));
    let t: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let v = &t["manifest"]["variants"]["int8"];
    let kept: Vec<String> = v.get("float32").and_then(|k| k.as_array()).map_or(vec![], |k| k.iter().map(|c| c.as_str().unwrap().to_string()).collect());
    eprintln!("accuracy control under the exact bound kept {kept:?} (plain int8 exact: {exact})");
    assert_eq!(kept.is_empty(), exact, "{v}");
    assert!(kept.len() <= vqad::eval::accuracy::MAX_INT8_KEPT, "{kept:?}");
    assert_eq!(v["parity"]["bound"]["min_mask_iou"], 1.0);
    if !kept.is_empty() {
        assert!(v["method"].as_str().unwrap().contains(&kept.join(", ")), "{v}");
        assert!(v["parity"]["prior_logprob_sqnr_db"].as_f64().unwrap() > q["prior_logprob_sqnr_db"].as_f64().unwrap(), "keeping {kept:?} in float32 did not raise the SQNR: {v}");
        let un = tmp.path().join("tight-unpacked");
        assert!(run(vqad().arg("unpack").arg(tight.join("synth_texture-4.0.0.vqad")).arg("--pubkey").arg(&pubkey).arg("--out").arg(&un)).status.success());
        let code = "import onnx, sys, json\ng = onnx.load(sys.argv[1]).graph\ninits = {t.name for t in g.initializer}\nprint(json.dumps({n.name: n.input[1] in inits for n in g.node if n.op_type == 'Conv'}))";
        let out = common::run_python(code, &[&un.join("pixelsnail.int8.onnx").display().to_string()]);
        let convs: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        let float: Vec<&String> = convs.as_object().unwrap().iter().filter(|(_, f)| f.as_bool() == Some(true)).map(|(n, _)| n).collect();
        assert_eq!(float.len(), kept.len(), "float-weight Convs {float:?}, kept {kept:?}");
        assert!(kept.iter().all(|k| float.contains(&k)), "float-weight Convs {float:?}, kept {kept:?}");
    }
}

#[test]
fn compat_places_every_node_on_cpu_and_refuses_a_missing_cuda_with_its_own_exit_code() {
    let d = demo();
    let (pkg, pubkey) = (path(&d.summary["package"]), path(&d.summary["public_key"]));
    let o = run(vqad().arg("compat").arg(&pkg).arg("--pubkey").arg(&pubkey).args(["--ep", "cpu", "--strict-ep", "--json"]));
    assert!(o.status.success());
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["verdict"], "every node on cpu", "{r}");
    let graphs = r["graphs"].as_array().unwrap();
    assert_eq!(graphs.len(), 3);
    for g in graphs {
        let by = g["nodes_by_provider"].as_object().unwrap();
        assert_eq!(by.keys().collect::<Vec<_>>(), ["CPUExecutionProvider"], "{g}");
        assert!(by["CPUExecutionProvider"].as_u64().unwrap() > 3, "{g}");
        assert_eq!(g["opset"], 17);
    }
    // This host's ONNX Runtime has no CUDA: strict placement says so, with exit code 7.
    let o = run(vqad().arg("compat").arg(&pkg).arg("--pubkey").arg(&pubkey).args(["--ep", "cuda", "--strict-ep"]));
    assert_eq!(o.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&o.stderr).contains("CUDA provider unavailable"), "{}", String::from_utf8_lossy(&o.stderr));
    // Without --strict-ep the graphs fall back to the CPU provider, and the verdict names it.
    let o = run(vqad().arg("compat").arg(&pkg).arg("--pubkey").arg(&pubkey).args(["--ep", "cuda,cpu", "--json"]));
    assert!(o.status.success());
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["verdict"].as_str().unwrap().contains("later provider than cuda"), "{r}");
}

/// PyPI's OpenVINO plugin execution provider, installed once (tools/setup-ep-openvino.sh).
fn openvino_plugin() -> PathBuf {
    let o = Command::new("bash").arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/setup-ep-openvino.sh")).output().unwrap();
    assert!(o.status.success(), "setup-ep-openvino failed: {}", String::from_utf8_lossy(&o.stderr));
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

#[test]
fn a_plugin_provider_without_a_device_is_named_and_falls_back_only_when_allowed() {
    let d = demo();
    let (pkg, pubkey) = (path(&d.summary["package"]), path(&d.summary["public_key"]));
    let lib = format!("openvino={}", openvino_plugin().display());
    // This host has no Intel device: the plugin registers and offers none; CPU runs every node.
    let o = run(vqad().arg("compat").arg(&pkg).arg("--pubkey").arg(&pubkey).args(["--ep", "cpu", "--ep-library", &lib, "--json"]));
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("registered, and offered no device on this host"), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["plugins"][0]["name"], "openvino", "{r}");
    assert_eq!(r["plugins"][0]["devices"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(r["verdict"], "every node on cpu", "{r}");
    // Not allowed to fall back: refused with the distinct exit code, naming the plugin.
    let o = run(vqad().arg("compat").arg(&pkg).arg("--pubkey").arg(&pubkey).args(["--ep", "cpu", "--strict-ep", "--ep-library", &lib]));
    assert_eq!(o.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&o.stderr).contains("offered no device"), "{}", String::from_utf8_lossy(&o.stderr));
    // detect with the plugin named falls back (allowed) and runs on CPU.
    let tmp = tempfile::tempdir().unwrap();
    let o = run(vqad().arg("detect").arg(&pkg).arg("--pubkey").arg(&pubkey).arg(path(&d.summary["data"]).join("test/good")).arg("--out").arg(tmp.path()).args(["--ep", "cpu", "--ep-library", &lib]));
    assert!(o.status.success());
    // A malformed library flag is a usage error naming the expected form.
    let o = run(vqad().arg("compat").arg(&pkg).arg("--pubkey").arg(&pubkey).args(["--ep-library", "openvino"]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("NAME=PATH"));
}
