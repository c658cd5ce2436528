//! `vqad serve` driven by NVIDIA's own Open Inference Protocol clients (`tritonclient[http,grpc]`
//! from PyPI, in a venv of its own set up by `tools/setup-serve-client.sh`), against a tiny
//! package trained once by this file: inference with BYTES and FP32 inputs over HTTP and gRPC
//! equals `vqad detect`; the repository extension; a tampered package refused while the good
//! one serves; every bad request gets the protocol's error and the server keeps serving; a new
//! version published under load takes over without losing a request; SIGTERM drains.
#![cfg(feature = "train")]

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn vqad() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vqad"))
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(out.status.success(), "{:?} failed:\n{}\n{}", cmd, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The client venv's python (installed once, by the project's own script).
fn client_python() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/setup-serve-client.sh");
        let out = ok(Command::new("bash").arg(script));
        PathBuf::from(out.lines().last().expect("the script prints its python").trim())
    })
}

fn client(args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/client.py");
    let out = ok(Command::new(client_python()).arg(script).args(args));
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("client output is not JSON ({e}): {out}"))
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    registry: PathBuf,
    pubkey: PathBuf,
    key: PathBuf,
    run: PathBuf,
    /// good, hole, scratch test images, and `vqad detect`'s records of them.
    images: Vec<PathBuf>,
    detect: PathBuf,
    /// The same images as FP32 [3, 3, 64, 64], loaded as `vqad detect` loads them.
    npy: PathBuf,
}

/// Trains and publishes the tiny demo package once; adds a second model whose published
/// archive has one byte flipped; runs `vqad detect` on three test images.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let out = ok(vqad().args(["demo", "--json", "--train", "100", "--test-bad", "1"]).arg("--out").arg(root.join("demo")));
        let s: Value = serde_json::from_str(&out).expect("demo --json");
        let p = |k: &str| PathBuf::from(s[k].as_str().unwrap());
        let (registry, pubkey, run, data) = (p("registry"), p("public_key"), p("run"), p("data"));
        let key = pubkey.with_extension("key");
        // A second model, published, then tampered with in the registry.
        let dist = root.join("dist");
        ok(vqad().arg("package").arg(&run).args(["--name", "tampered", "--version", "1.0.0", "--key"]).arg(&key).arg("--out").arg(&dist));
        ok(vqad().arg("publish").arg(dist.join("tampered-1.0.0.vqad")).arg("--registry").arg(&registry).arg("--pubkey").arg(&pubkey));
        let victim = registry.join("tampered/1.0.0/tampered-1.0.0.vqad");
        let mut bytes = std::fs::read(&victim).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&victim, bytes).unwrap();

        let pick = |sub: &str| {
            let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("test").join(sub)).unwrap().map(|e| e.unwrap().path()).collect();
            v.sort();
            v.into_iter().next().unwrap()
        };
        let images = vec![pick("good"), pick("hole"), pick("scratch")];
        let detect = root.join("detect");
        ok(vqad()
            .arg("detect")
            .arg(registry.join("synth_texture/1.0.0/synth_texture-1.0.0.vqad"))
            .arg("--pubkey")
            .arg(&pubkey)
            .args(["--ep", "cpu"])
            .args(&images)
            .arg("--out")
            .arg(&detect));
        let arrays: Vec<_> = images.iter().map(|i| vqad::data::load_image(i, 3, 64).unwrap()).collect();
        let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
        let x = ndarray::stack(ndarray::Axis(0), &views).unwrap();
        let npy = root.join("x.npy");
        ndarray_npy::WriteNpyExt::write_npy(&x, std::fs::File::create(&npy).unwrap()).unwrap();
        Fixture { _dir: dir, root, registry, pubkey, key, run, images, detect, npy }
    })
}

impl Fixture {
    /// A copy of the published registry for one test to change.
    fn registry_copy(&self, tag: &str) -> PathBuf {
        let registry = self.root.join(format!("registry-{tag}"));
        ok(Command::new("cp").arg("-r").arg(&self.registry).arg(&registry));
        registry
    }

    /// Packages the trained run as NAME VERSION and publishes it into `registry`.
    fn publish(&self, registry: &Path, name: &str, version: &str) {
        let dist = self.root.join(format!("dist-{}", registry.file_name().unwrap().to_string_lossy()));
        ok(vqad().arg("package").arg(&self.run).args(["--name", name, "--version", version, "--key"]).arg(&self.key).arg("--out").arg(&dist));
        let pkg = dist.join(format!("{name}-{version}.vqad"));
        ok(vqad().arg("publish").arg(&pkg).arg("--registry").arg(registry).arg("--pubkey").arg(&self.pubkey));
    }
}

/// A running `vqad serve` on loopback ports chosen by the OS; killed on drop.
struct Server {
    child: Child,
    http: String,
    grpc: String,
}

impl Server {
    fn start(registry: &Path, extra: &[&str]) -> Server {
        Self::start_with(registry, extra, true)
    }

    /// `one_thread`: pass `--threads 1` (every test but the one of the automatic choice).
    fn start_with(registry: &Path, extra: &[&str], one_thread: bool) -> Server {
        let f = fixture();
        let mut child = vqad()
            .arg("serve")
            .arg("--registry")
            .arg(registry)
            .arg("--pubkey")
            .arg(&f.pubkey)
            .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--providers", "cpu"])
            .args(if one_thread { &["--threads", "1"][..] } else { &[] })
            .args(extra)
            .env("VQAD_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("vqad serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let b: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve's first line is not JSON ({e}): {line:?}"));
        let s = Server { child, http: b["http"].as_str().unwrap().into(), grpc: b["grpc"].as_str().unwrap().into() };
        let t = Instant::now();
        while get(&s.http, "/v2/health/ready").0 != 200 {
            assert!(t.elapsed() < Duration::from_secs(120), "server never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn sigterm(&self) {
        ok(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return (0, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    (status, body)
}

/// A plain HTTP/1.1 POST of a JSON body: (status, body).
fn post(addr: &str, path: &str, json: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return (0, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}", json.len()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    (status, body)
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn bytes_and_fp32_inference_over_http_and_grpc_equals_vqad_detect() {
    let f = fixture();
    let s = Server::start(&f.registry, &["--instances", "2"]);
    let mut args: Vec<String> = vec!["infer".into(), s.http.clone(), s.grpc.clone(), "synth_texture".into(), f.npy.display().to_string()];
    args.extend(f.images.iter().map(|p| p.display().to_string()));
    let r = client(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r["live"], serde_json::json!([true, true]));
    assert_eq!(r["ready"], serde_json::json!([true, true]));
    assert_eq!(r["model_ready"], serde_json::json!([true, true]));
    assert_eq!(r["server_metadata"]["name"], "vqad");
    assert_eq!(r["model_metadata"]["inputs"][0]["name"], "image");
    assert_eq!(r["grpc_model_metadata"]["outputs"][2]["shape"], serde_json::json!(["-1", "64", "64"]));

    // What `vqad detect` wrote for the same images.
    let all: Vec<Value> = std::fs::read_dir(&f.detect)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("summary.json"))
        .map(|p| serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap())
        .collect();
    let records: Vec<Value> = f
        .images
        .iter()
        .map(|img| {
            let mut rec = all.iter().find(|r| r["image"] == img.display().to_string()).cloned().unwrap_or_else(|| panic!("no detect record for {}", img.display()));
            let mask = image::open(f.detect.join(rec["outputs"]["mask"].as_str().unwrap())).unwrap().to_luma8();
            rec["mask_bits"] = serde_json::json!(mask.pixels().map(|p| (p.0[0] > 0) as u8).collect::<Vec<u8>>());
            rec
        })
        .collect();
    let scores: Vec<f64> = records.iter().map(|r| r["image_score"].as_f64().unwrap()).collect();
    eprintln!("vqad detect scores {scores:?}");
    assert!(scores[1] > scores[0], "the defective image should score above the good one: {scores:?}");
    for way in ["http_bytes", "grpc_bytes", "http_fp32", "grpc_fp32"] {
        let o = &r[way];
        let got = f64s(&o["score"]);
        eprintln!("{way}: {got:?}");
        assert_eq!(got.len(), 3, "{way}");
        for (i, rec) in records.iter().enumerate() {
            let want = scores[i];
            assert!((got[i] - want).abs() <= 1e-5 + 1e-4 * want.abs(), "{way} image {i}: score {} vs vqad detect {want}", got[i]);
            assert_eq!(o["anomalous"][i], rec["anomalous"], "{way} image {i}");
            let mask: Vec<u8> = o["mask"][i].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
            let want_mask: Vec<u8> = rec["mask_bits"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
            let same = mask.iter().zip(&want_mask).filter(|(a, b)| a == b).count();
            assert!(same as f64 >= 0.999 * want_mask.len() as f64, "{way} image {i}: mask agrees on {same}/{}", want_mask.len());
            // The score is where the filtered map first holds a component of the minimum
            // area: never above the map's maximum.
            assert!(got[i] <= o["map_max"][i].as_f64().unwrap() + 1e-6, "{way} image {i}: score {} above the map's maximum {}", got[i], o["map_max"][i]);
        }
        assert_eq!(o["mask_shape"], serde_json::json!([3, 64, 64]), "{way}");
        let p = &o["params"];
        assert!((p["eta"].as_f64().unwrap() - records[0]["eta"].as_f64().unwrap()).abs() < 1e-12, "{way}: {p}");
        assert!((p["pixel_threshold"].as_f64().unwrap() - records[0]["pixel_threshold"].as_f64().unwrap()).abs() < 1e-12, "{way}: {p}");
        for g in ["encoder", "decoder", "pixelsnail"] {
            assert_eq!(p[format!("provider_{g}")], "cpu", "{way}: {p}");
        }
        assert_eq!(p["precision"], "fp32", "{way}: {p}");
    }
    assert_eq!(r["http_fp32"]["restored_shape"], serde_json::json!([3, 3, 64, 64]));
    let plain = f64s(&r["http_fp32_json"]["score"]);
    assert!(plain.iter().zip(&scores).all(|(a, b)| (a - b).abs() <= 1e-5 + 1e-4 * b.abs()), "{plain:?}");

    // Prometheus saw it all.
    let (code, m) = get(&s.http, "/metrics");
    assert_eq!(code, 200);
    for needle in [
        r#"vqad_requests_total{model="synth_texture",protocol="grpc",version="1.0.0"} 2"#,
        r#"vqad_requests_total{model="synth_texture",protocol="http",version="1.0.0"} 3"#,
        r#"vqad_images_total{model="synth_texture",version="1.0.0"} 15"#,
        r#"vqad_stage_duration_seconds_count{model="synth_texture",stage="prior",version="1.0.0"}"#,
        r#"vqad_stage_duration_seconds_count{model="synth_texture",stage="queue",version="1.0.0"} 5"#,
        r#"vqad_batch_size_count{model="synth_texture",version="1.0.0"} 5"#,
        r#"vqad_prior_passes_count{model="synth_texture",version="1.0.0"} 15"#,
        r#"vqad_resampled_positions_bucket"#,
        r#"vqad_anomalies_total{model="synth_texture",version="1.0.0"}"#,
        r#"vqad_model_ready{model="synth_texture",version="1.0.0"} 1"#,
        r#"vqad_model_precision{model="synth_texture",precision="fp32",version="1.0.0"} 1"#,
    ] {
        assert!(m.contains(needle), "metrics lack {needle}:\n{m}");
    }
}

#[test]
fn repository_index_load_unload_and_a_tampered_package_is_refused_while_the_good_one_serves() {
    let f = fixture();
    let s = Server::start(&f.registry, &[]);
    let r = client(&["repo", &s.http, &s.grpc]);
    let row = |idx: &Value, name: &str| idx.as_array().unwrap().iter().find(|m| m["name"] == name).cloned().unwrap_or_else(|| panic!("{name} not in {idx}"));
    for idx in [&r["index"], &r["grpc_index"]] {
        assert_eq!(row(idx, "synth_texture")["state"], "READY", "{idx}");
        let t = row(idx, "tampered");
        assert_eq!(t["state"], "UNAVAILABLE", "{idx}");
        assert!(t["reason"].as_str().unwrap().contains("verification failed"), "{t}");
    }
    assert!(r["load_tampered_http"].as_str().unwrap().starts_with("400: failed to load 'tampered'"), "{}", r["load_tampered_http"]);
    assert!(r["load_tampered_grpc"].as_str().unwrap().starts_with("StatusCode.INVALID_ARGUMENT"), "{}", r["load_tampered_grpc"]);
    assert_eq!(r["tampered_ready"], false);
    assert!(r["infer_tampered"].as_str().unwrap().starts_with("503:"), "{}", r["infer_tampered"]);
    assert_eq!(r["unload_http"], "ok");
    assert_eq!(r["ready_after_unload"], false);
    assert_eq!(row(&r["index_after_unload"], "synth_texture")["reason"], "unloaded");
    assert_eq!(r["load_grpc"], "ok");
    assert_eq!(r["ready_after_load"], serde_json::json!([true, true]));
    assert_eq!(r["unload_grpc"], "ok");
    assert_eq!(r["ready_after_grpc_unload"], false);
    assert_eq!(r["load_http"], "ok");
    assert_eq!(r["ready_after_http_load"], true);
    assert!(r["load_unknown"].as_str().unwrap().starts_with("404:"), "{}", r["load_unknown"]);
}

#[test]
fn bad_requests_get_the_protocol_errors_and_the_server_keeps_serving() {
    let f = fixture();
    let s = Server::start(&f.registry, &["--max-body-mb", "1"]);
    let img = f.images[0].display().to_string();
    let r = client(&["bad", &s.http, &s.grpc, "synth_texture", &img, &(1 << 20).to_string()]);
    eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
    for k in [
        "malformed_json",
        "not_an_object",
        "no_inputs",
        "wrong_input_name",
        "wrong_datatype",
        "wrong_shape",
        "shape_data_mismatch",
        "out_of_range",
        "unknown_output",
        "bad_binary_header",
    ] {
        assert_eq!(r[k][0], 400, "{k}: {}", r[k]);
        assert!(!r[k][1].as_str().unwrap().is_empty(), "{k} has no error message");
    }
    assert_eq!(r["too_large"][0], 413, "{}", r["too_large"]);
    for k in ["unknown_model", "unknown_version", "unknown_endpoint"] {
        assert_eq!(r[k][0], 404, "{k}: {}", r[k]);
    }
    for k in ["undecodable_image", "truncated_png"] {
        assert!(r[k].as_str().unwrap().starts_with("400: input 'image' element 0: cannot decode image"), "{k}: {}", r[k]);
    }
    for k in ["grpc_undecodable", "grpc_wrong_datatype", "grpc_wrong_shape", "grpc_malformed_protobuf"] {
        assert!(r[k].as_str().unwrap().starts_with("StatusCode.INVALID_ARGUMENT"), "{k}: {}", r[k]);
    }
    assert!(r["grpc_unknown_model"].as_str().unwrap().starts_with("StatusCode.NOT_FOUND"), "{}", r["grpc_unknown_model"]);
    assert!(r["grpc_too_large"].as_str().unwrap().starts_with("StatusCode.RESOURCE_EXHAUSTED"), "{}", r["grpc_too_large"]);
    let a = &r["after"];
    assert_eq!(a["live"], serde_json::json!([true, true]));
    assert_eq!(a["ready"], serde_json::json!([true, true]));
    assert_eq!(a["http_infer"], a["grpc_infer"]);
    let (_, m) = get(&s.http, "/metrics");
    assert!(m.contains(r#"vqad_request_failures_total{model="synth_texture",reason="bad_request",version=""}"#), "{m}");
    assert!(m.contains(r#"vqad_request_failures_total{model="<unknown>",reason="not_found",version=""}"#), "{m}");
}

#[test]
fn a_version_published_under_load_takes_over_without_losing_a_request_and_sigterm_drains() {
    let f = fixture();
    // A registry of its own: this test publishes into it.
    let registry = f.registry_copy("swap");
    std::fs::remove_dir_all(registry.join("tampered")).unwrap();
    let index = registry.join("index.json");
    let mut idx: Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    idx["packages"].as_array_mut().unwrap().retain(|p| p["name"] != "tampered");
    std::fs::write(&index, serde_json::to_vec_pretty(&idx).unwrap()).unwrap();

    // Two instances share the queue: both must take batches, and both must drain.
    let mut s = Server::start(&registry, &["--poll-secs", "1", "--max-batch", "8", "--instances", "2"]);
    let img = f.images[0].display().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/client.py");
    let load = Command::new(client_python())
        .arg(&script)
        .args(["load", &s.http, "synth_texture", &img, "3000", "8", "1.0.1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // The gauge appears with the model's first request; on a loaded machine the clients may
    // take a while to start.
    let inflight = |http: &str| -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, m) = get(http, "/metrics");
            match metric_value(&m, r#"vqad_inflight_requests{model="synth_texture"}"#) {
                Some(v) => return v,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                None => panic!("no in-flight gauge after 20 s of load: {m}"),
            }
        }
    };
    // Eight clients wait on the server nearly all the time.
    let busy = (0..20).map(|_| inflight(&s.http)).max().unwrap();
    assert!((1..=8).contains(&busy), "in-flight requests under 8-way load: {busy}");
    f.publish(&registry, "synth_texture", "1.0.1");
    let out = load.wait_with_output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    eprintln!("hot swap under load: {r}");
    assert_eq!(r["error_count"], 0, "{r}");
    assert!(r["versions"]["1.0.0"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(r["versions"]["1.0.1"].as_u64().unwrap_or(0) >= 16, "{r}");
    assert_eq!(inflight(&s.http), 0, "requests still counted in flight after the load ended");
    let (_, m) = get(&s.http, "/metrics");
    assert!(m.contains(r#"vqad_model_ready{model="synth_texture",version="1.0.0"} 0"#), "{m}");
    assert!(m.contains(r#"vqad_model_ready{model="synth_texture",version="1.0.1"} 1"#), "{m}");
    for instance in ["0", "1"] {
        let series = format!(r#"vqad_instance_batches_total{{instance="{instance}",model="synth_texture",version="1.0.0"}}"#);
        let n = metric_value(&m, &series).unwrap_or(0);
        assert!(n > 0, "instance {instance} of 1.0.0 ran no batch under 8-way load: {m}");
    }

    // SIGTERM with requests in flight: every one is answered, then the process exits 0.
    let before = requests_seen(&s.http);
    let burst = Command::new(client_python())
        .arg(&script)
        .args(["load", &s.http, "synth_texture", &img, "16", "16"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while requests_seen(&s.http) < before + 16 {
        assert!(t.elapsed() < Duration::from_secs(60), "the burst never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.sigterm();
    let out = burst.wait_with_output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], 16, "in-flight requests lost at SIGTERM: {r}");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
    assert_ne!(get(&s.http, "/v2/health/live").0, 200, "still listening after SIGTERM");
}

#[test]
fn serve_with_a_channel_follows_promotion_and_rollback() {
    let f = fixture();
    let registry = f.registry_copy("channel");
    f.publish(&registry, "synth_texture", "1.0.1");
    let channel = |args: &[&str]| {
        ok(vqad().args(args).arg("--key").arg(&f.key));
    };
    let reg = registry.display().to_string();
    // production names the older version: without --channel the newest would serve.
    channel(&["promote", &reg, "synth_texture", "1.0.0", "--channel", "production"]);
    let s = Server::start(&registry, &["--poll-secs", "1", "--channel", "production"]);
    let serving = |v: &str| get(&s.http, "/metrics").1.contains(&format!(r#"vqad_model_ready{{model="synth_texture",version="{v}"}} 1"#));
    let wait_for = |v: &str| {
        let t = Instant::now();
        while !serving(v) {
            assert!(t.elapsed() < Duration::from_secs(60), "version {v} never took over: {}", get(&s.http, "/metrics").1);
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for("1.0.0");
    assert!(!serving("1.0.1"), "1.0.1 serves although production names 1.0.0");
    let img = f.images[0].display().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/client.py");
    let infer_version = || {
        let out = Command::new(client_python()).arg(&script).args(["load", &s.http, "synth_texture", &img, "2", "1"]).output().unwrap();
        let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_eq!(r["error_count"], 0, "{r}");
        r["versions"].as_object().unwrap().keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(infer_version(), vec!["1.0.0".to_string()]);
    channel(&["promote", &reg, "synth_texture", "1.0.1", "--channel", "production"]);
    wait_for("1.0.1");
    assert_eq!(infer_version(), vec!["1.0.1".to_string()]);
    channel(&["rollback", &reg, "synth_texture", "--channel", "production"]);
    wait_for("1.0.0");
    assert_eq!(infer_version(), vec!["1.0.0".to_string()]);
    // A model without that channel is never served, and says why.
    let (_, idx) = post(&s.http, "/v2/repository/index", "{}");
    assert!(idx.contains("channel 'production' refused"), "{idx}");
}

/// The value of one series (name and labels exactly as rendered) in a Prometheus text page.
fn metric_value(page: &str, series: &str) -> Option<u64> {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Inference requests the server has received so far (all models, versions, protocols).
fn requests_seen(http: &str) -> u64 {
    get(http, "/metrics")
        .1
        .lines()
        .filter(|l| l.starts_with("vqad_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

#[test]
fn without_instances_a_cpu_model_gets_one_single_threaded_instance_per_core_and_explicit_counts_stay() {
    let f = fixture();
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let gauge = |s: &Server, model: &str| {
        let (_, m) = get(&s.http, "/metrics");
        metric_value(&m, &format!(r#"vqad_model_instances{{model="{model}",version="1.0.0"}}"#))
            .unwrap_or_else(|| panic!("no instance gauge for {model}: {m}"))
    };
    // `cuda,cpu` lands on the CPU provider on this machine (no GPU), so it counts as CPU too:
    // the choice follows what runs, not the names in the list.
    let s = Server::start_with(&f.registry, &["--model-providers", "synth_texture=cuda,cpu"], false);
    assert_eq!(gauge(&s, "synth_texture"), cores, "automatic instances on a CPU-only model");
    let x: Vec<f32> = vec![0.5; 3 * 64 * 64];
    let req = serde_json::json!({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": x}]}).to_string();
    let (st, body) = post(&s.http, "/v2/models/synth_texture/infer", &req);
    assert_eq!(st, 200, "{body}");
    drop(s);
    let s = Server::start(&f.registry, &["--instances", "1"]);
    assert_eq!(gauge(&s, "synth_texture"), 1, "--instances 1 is kept");
}

#[test]
fn per_model_provider_lists_apply_to_their_model_only() {
    let f = fixture();
    let registry = f.registry_copy("providers");
    f.publish(&registry, "gpu_only", "1.0.0");

    // Malformed lists are refused before anything listens, naming the flag.
    for bad in ["gpu_only", "=cpu", "gpu_only=quantum", "gpu_only=cpu,gpu_only=cpu"] {
        let mut args = vec!["--model-providers", bad];
        if bad.contains(",gpu_only") {
            args = vec!["--model-providers", "gpu_only=cpu", "--model-providers", "gpu_only=cuda"];
        }
        let out = vqad().arg("serve").arg("--registry").arg(&registry).arg("--pubkey").arg(&f.pubkey).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("--model-providers"), "{bad}: {err}");
    }

    // The server's list is CPU only; gpu_only may run on CUDA alone.
    let s = Server::start(&registry, &["--model-providers", "gpu_only=cuda"]);
    let t = Instant::now();
    let row = loop {
        let (_, body) = post(&s.http, "/v2/repository/index", "{}");
        let idx: Value = serde_json::from_str(&body).unwrap();
        let row = idx.as_array().unwrap().iter().find(|m| m["name"] == "gpu_only").cloned();
        if let Some(r) = row.filter(|r| r["state"] != "LOADING" && r["reason"] != "not loaded") {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "gpu_only never finished loading: {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let x: Vec<f32> = vec![0.5; 3 * 64 * 64];
    let req = serde_json::json!({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": x}]}).to_string();
    let provider = |model: &str| {
        let (code, body) = post(&s.http, &format!("/v2/models/{model}/infer"), &req);
        assert_eq!(code, 200, "{model}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["parameters"]["provider_pixelsnail"].as_str().unwrap().to_string()
    };
    assert_eq!(provider("synth_texture"), "cpu");
    if row["state"] == "READY" {
        // A machine with CUDA: the model's own list took it there.
        assert_eq!(provider("gpu_only"), "cuda");
    } else {
        // No CUDA here: the model is refused with the provider named, never run on the CPU.
        assert_eq!(row["state"], "UNAVAILABLE", "{row}");
        assert!(row["reason"].as_str().unwrap().contains("cuda"), "{row}");
        let (code, body) = post(&s.http, "/v2/models/gpu_only/infer", &req);
        assert_eq!(code, 503, "{body}");
    }
}

#[test]
fn with_versions_2_the_two_newest_serve_side_by_side_and_a_third_supersedes_the_oldest() {
    let f = fixture();
    let registry = f.registry_copy("versions");
    let publish = |version: &str| f.publish(&registry, "synth_texture", version);
    publish("1.1.0");
    let s = Server::start(&registry, &["--versions", "2", "--poll-secs", "1"]);
    let states = || -> BTreeMap<String, String> {
        let (_, body) = post(&s.http, "/v2/repository/index", "{}");
        let idx: Value = serde_json::from_str(&body).unwrap();
        idx.as_array().unwrap().iter().filter(|m| m["name"] == "synth_texture").map(|m| (m["version"].as_str().unwrap().to_string(), m["state"].as_str().unwrap().to_string())).collect()
    };
    let wait_for = |want: &[(&str, &str)]| {
        let t = Instant::now();
        loop {
            let now = states();
            if want.iter().all(|(v, st)| now.get(*v).map(String::as_str) == Some(*st)) {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(120), "never reached {want:?}: {now:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&[("1.0.0", "READY"), ("1.1.0", "READY")]);
    let x: Vec<f32> = vec![0.5; 3 * 64 * 64];
    let req = serde_json::json!({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": x}]}).to_string();
    let answered_by = |path: &str| {
        let (code, body) = post(&s.http, path, &req);
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str::<Value>(&body).unwrap()["model_version"].as_str().unwrap().to_string()
    };
    assert_eq!(answered_by("/v2/models/synth_texture/infer"), "1.1.0");
    assert_eq!(answered_by("/v2/models/synth_texture/versions/1.0.0/infer"), "1.0.0");
    assert_eq!(answered_by("/v2/models/synth_texture/versions/1.1.0/infer"), "1.1.0");

    publish("1.2.0");
    wait_for(&[("1.0.0", "UNAVAILABLE"), ("1.1.0", "READY"), ("1.2.0", "READY")]);
    assert_eq!(answered_by("/v2/models/synth_texture/infer"), "1.2.0");
    assert_eq!(answered_by("/v2/models/synth_texture/versions/1.1.0/infer"), "1.1.0");
    let (code, body) = post(&s.http, "/v2/models/synth_texture/versions/1.0.0/infer", &req);
    assert!(code == 503 && body.contains("superseded by version 1.2.0"), "{code}: {body}");
}

// ---------------------------------------------------------------- hostile clients (issue 25)

#[path = "common_bombs/mod.rs"]
mod common_bombs;

/// 20000 × 20000 images in PNG (388 KB), JPEG, BMP and TIFF, written once.
fn bombs() -> &'static Vec<PathBuf> {
    static B: OnceLock<Vec<PathBuf>> = OnceLock::new();
    B.get_or_init(|| {
        let dir = fixture().root.join("bombs");
        std::fs::create_dir_all(&dir).unwrap();
        common_bombs::FORMATS
            .iter()
            .map(|f| {
                let p = dir.join(format!("bomb.{f}"));
                std::fs::write(&p, common_bombs::bomb(f, 20000, 20000)).unwrap();
                p
            })
            .collect()
    })
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap();
    kb << 10
}

/// A server warmed up by a few requests (sessions and their arenas at their working size),
/// and its peak memory then: what the loaded models take.
fn warm_server(extra: &[&str]) -> (Server, u64) {
    let f = fixture();
    let s = Server::start(&f.registry, extra);
    let img = f.images[0].display().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/client.py");
    let out = Command::new(client_python()).arg(&script).args(["load", &s.http, "synth_texture", &img, "24", "8"]).output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["error_count"], 0, "{r}");
    let rss = peak_rss(s.child.id());
    (s, rss)
}

#[test]
fn image_bombs_get_invalid_argument_over_http_and_grpc_naming_size_and_limit_and_cost_no_memory() {
    let f = fixture();
    let (s, before) = warm_server(&[]);
    let mut args = vec!["hostile".to_string(), s.http.clone(), s.grpc.clone(), "synth_texture".into()];
    args.extend(bombs().iter().map(|p| p.display().to_string()));
    args.push(f.images[0].display().to_string());
    let r = client(&args.iter().map(String::as_str).collect::<Vec<_>>());
    eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
    let want = "input 'image' element 0: image is 20000×20000 (400000000 pixels), over the limit of 16777216 pixels";
    for p in bombs() {
        let row = &r[p.display().to_string()];
        assert!(row["http"].as_str().unwrap().starts_with(&format!("400: {want}")), "{}: {row}", p.display());
        assert!(row["grpc"].as_str().unwrap().starts_with(&format!("StatusCode.INVALID_ARGUMENT: {want}")), "{}: {row}", p.display());
    }
    assert_eq!(r[f.images[0].display().to_string()]["http"], "ok");
    assert_eq!(r["after"]["ready"], serde_json::json!([true, true]));
    let grew = peak_rss(s.child.id()).saturating_sub(before);
    eprintln!("peak RSS grew by {:.1} MiB over the bombs", grew as f64 / 1048576.0);
    assert!(grew < 100 << 20, "peak RSS grew by {grew} bytes");
    let (_, m) = get(&s.http, "/metrics");
    assert_eq!(metric_value(&m, r#"vqad_request_failures_total{model="synth_texture",reason="bad_request",version="1.0.0"}"#), Some(8), "{m}");
    assert_eq!(metric_value(&m, "vqad_inflight_bytes"), Some(0), "{m}");
}

#[test]
fn bombs_mixed_with_normal_requests_leave_every_normal_one_answered_and_memory_under_budget() {
    let f = fixture();
    // Sixteen bombs in flight hold their bodies (the 4.7 MB JPEG is charged 14 MiB while it
    // is received and its header read): the budget must hold them beside the normal requests,
    // as deploy/'s 512 MiB does.
    let budget_mb = 256u64;
    let (mut s, models) = warm_server(&["--max-inflight-mb", &budget_mb.to_string()]);
    let mut args = vec!["mixed".to_string(), s.http.clone(), s.grpc.clone(), "synth_texture".into(), f.images[1].display().to_string(), "200".into()];
    args.extend(bombs().iter().map(|p| p.display().to_string()));
    let r = client(&args.iter().map(String::as_str).collect::<Vec<_>>());
    eprintln!("{r}");
    assert_eq!(r["ok"], 200, "{r}");
    assert_eq!(r["error_count"], 0, "{r}");
    assert!(r["bomb_other"].as_array().unwrap().is_empty(), "bombs got something other than invalid-argument: {r}");
    let refused: u64 = r["bomb_refusals"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert!(refused >= 16, "{r}");
    assert!(s.child.try_wait().unwrap().is_none(), "the server exited");
    let peak = peak_rss(s.child.id());
    eprintln!("peak RSS {:.1} MiB; models (warm) {:.1} MiB + budget {budget_mb} MiB", peak as f64 / 1048576.0, models as f64 / 1048576.0);
    assert!(peak < models + (budget_mb << 20), "peak RSS {peak} over models {models} + budget");
    assert_eq!(get(&s.http, "/v2/health/ready").0, 200);
}

#[test]
fn over_the_memory_budget_requests_get_429_or_resource_exhausted_and_the_server_recovers() {
    let f = fixture();
    // A legal 1500 × 1500 camera frame of noise (6.8 MB as PNG): one decodes within the
    // budget, several at once do not.
    let frame = f.root.join("frame.png");
    if !frame.exists() {
        std::fs::write(&frame, common_bombs::noise_png(1500, 1500, 5)).unwrap();
    }
    let (s, models) = warm_server(&["--max-inflight-mb", "48", "--max-body-mb", "12"]);
    let r = client(&["burst", &s.http, &s.grpc, "synth_texture", &frame.display().to_string(), "24", "6"]);
    eprintln!("{r}");
    let c = &r["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    assert!(n("ok") > 0, "no request fit the budget: {r}");
    assert!(n("429") + n("StatusCode.RESOURCE_EXHAUSTED") > 0, "six at once should not all fit 48 MiB: {r}");
    assert_eq!(n("ok") + n("429") + n("StatusCode.RESOURCE_EXHAUSTED"), 24, "{r}");
    for k in ["429", "StatusCode.RESOURCE_EXHAUSTED"] {
        if let Some(e) = r["examples"][k].as_str() {
            assert!(e.contains("memory budget exhausted") && e.contains("--max-inflight-mb"), "{e}");
        }
    }
    let (_, m) = get(&s.http, "/metrics");
    assert_eq!(metric_value(&m, "vqad_inflight_bytes"), Some(0), "budget not released: {m}");
    assert_eq!(metric_value(&m, "vqad_inflight_budget_bytes"), Some(48 << 20), "{m}");
    assert!(metric_value(&m, r#"vqad_request_failures_total{model="synth_texture",reason="over_budget",version="1.0.0"}"#).unwrap_or(0) > 0, "{m}");
    // Every refusal counts, also those made while a gRPC message was still arriving.
    assert_eq!(metric_value(&m, "vqad_inflight_refusals_total"), Some(n("429") + n("StatusCode.RESOURCE_EXHAUSTED")), "{m}");
    let peak = peak_rss(s.child.id());
    eprintln!("peak RSS {:.1} MiB; models (warm) {:.1} MiB", peak as f64 / 1048576.0, models as f64 / 1048576.0);
    // The budget bounds what requests hold; the allocator's own slack on top stays small.
    assert!(peak < models + (48 << 20) + (64 << 20), "peak RSS {peak} with models at {models}");
    // Once the burst is over, the same frame is answered.
    let r = client(&["burst", &s.http, &s.grpc, "synth_texture", &frame.display().to_string(), "2", "1"]);
    assert_eq!(r["counts"]["ok"], 2, "{r}");
}

/// Seconds until the server closes `s` (reads until EOF or an error), at most `limit`.
fn seconds_until_closed(mut s: std::net::TcpStream, limit: f64) -> f64 {
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs_f64(limit))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return t.elapsed().as_secs_f64(),
            Ok(_) => {}
        }
    }
}

#[test]
fn slow_and_idle_connections_are_closed_within_their_timeouts_while_requests_are_answered() {
    let f = fixture();
    let s = Server::start(&f.registry, &["--body-timeout-secs", "2", "--header-timeout-secs", "2", "--idle-timeout-secs", "4"]);
    // 300 clients that send headers and one byte of a 100 kB body, then nothing, while normal
    // requests go on.
    let r = client(&["slow", &s.http, "synth_texture", &f.images[0].display().to_string(), "300", "100000", "20"]);
    eprintln!("{r}");
    assert_eq!(r["still_open"], 0, "{r}");
    assert_eq!(r["answers"]["HTTP/1.1 408 Request Timeout"], 300, "{r}");
    let (first, last) = (r["closed_first_s"].as_f64().unwrap(), r["closed_last_s"].as_f64().unwrap());
    assert!(first >= 1.5 && last < 2.0 + 4.0, "closed between {first} and {last} s with a 2 s body timeout: {r}");
    assert!(r["normal_ok"].as_u64().unwrap() > 0 && r["normal_error_count"] == 0, "{r}");

    // Silent (idle) connections on both ports, and one stuck inside its headers.
    let idle_http = std::net::TcpStream::connect(&s.http).unwrap();
    let idle_grpc = std::net::TcpStream::connect(&s.grpc).unwrap();
    let mut partial = std::net::TcpStream::connect(&s.http).unwrap();
    partial.write_all(b"POST /v2/models/synth_texture/infer HTTP/1.1\r\nHost: x\r\n").unwrap();
    let waits: Vec<f64> = std::thread::scope(|sc| {
        let hs = [idle_http, idle_grpc, partial].map(|c| sc.spawn(move || seconds_until_closed(c, 30.0)));
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("idle HTTP closed after {:.2} s, idle gRPC {:.2} s, partial headers {:.2} s", waits[0], waits[1], waits[2]);
    for (what, w, timeout) in [("idle HTTP", waits[0], 4.0), ("idle gRPC", waits[1], 4.0), ("partial headers", waits[2], 2.0)] {
        assert!(w >= timeout - 0.5 && w < timeout + 4.0, "{what} closed after {w} s, timeout {timeout} s");
    }
    let (_, m) = get(&s.http, "/metrics");
    for (proto, reason) in [("http", "idle"), ("grpc", "idle"), ("http", "header")] {
        let series = format!(r#"vqad_connection_timeouts_total{{protocol="{proto}",reason="{reason}"}}"#);
        assert!(metric_value(&m, &series).unwrap_or(0) >= 1, "{series}: {m}");
    }
    assert!(m.contains(r#"vqad_request_failures_total{model="synth_texture",reason="timeout",version=""} 300"#), "{m}");
}

#[test]
fn a_port_holds_at_most_max_connections_and_the_next_client_waits_for_a_free_slot() {
    let f = fixture();
    let s = Server::start(&f.registry, &["--max-connections", "4", "--idle-timeout-secs", "3"]);
    // Server::start's readiness polls closed their connections; four silent ones take every slot.
    std::thread::sleep(Duration::from_millis(300));
    let held: Vec<_> = (0..4).map(|_| std::net::TcpStream::connect(&s.http).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (code, _) = get(&s.http, "/v2/health/live");
    let waited = t.elapsed().as_secs_f64();
    eprintln!("the fifth client was answered after {waited:.2} s");
    assert_eq!(code, 200);
    assert!(waited >= 2.0, "answered after {waited} s while four idle connections held the four slots");
    drop(held);
}

#[test]
fn detect_eval_and_data_check_name_each_bomb_skip_it_and_process_the_rest() {
    let f = fixture();
    let dir = f.root.join("bomb-inputs");
    std::fs::create_dir_all(&dir).unwrap();
    for p in bombs() {
        std::fs::copy(p, dir.join(p.file_name().unwrap())).unwrap();
    }
    // The test images share a file name (000.png in good/, hole/, scratch/).
    for (i, p) in f.images.iter().enumerate() {
        std::fs::copy(p, dir.join(format!("normal{i}.png"))).unwrap();
    }
    let pkg = f.registry.join("synth_texture/1.0.0/synth_texture-1.0.0.vqad");
    let out = f.root.join("bomb-detect");
    let o = vqad().arg("detect").arg(&pkg).arg("--pubkey").arg(&f.pubkey).args(["--ep", "cpu"]).arg(&dir).arg("--out").arg(&out).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    let summary: Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["images"], 3, "{summary}");
    let failed = summary["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 4, "{summary}");
    for b in bombs() {
        let name = b.file_name().unwrap().to_string_lossy().to_string();
        let row = failed.iter().find(|r| r["path"].as_str().unwrap().ends_with(&name)).unwrap_or_else(|| panic!("{name} not in {summary}"));
        assert!(row["error"].as_str().unwrap().contains("image is 20000×20000 (400000000 pixels), over the limit of 16777216 pixels"), "{row}");
        assert!(err.contains(&name), "stderr does not name {name}: {err}");
    }

    // data check and eval on a category with a bomb among its test images.
    let cat = f.root.join("bomb-category");
    if !cat.exists() {
        let data = f.images[0].parent().unwrap().parent().unwrap().parent().unwrap();
        ok(Command::new("cp").arg("-r").arg(data).arg(&cat));
        std::fs::copy(&bombs()[0], cat.join("test/good/zz_bomb.png")).unwrap();
    }
    let o = vqad().args(["data", "check", "--json"]).arg(&cat).output().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = report["problems"].as_array().unwrap().iter().find(|p| p["kind"] == "too_large").unwrap_or_else(|| panic!("{report}"));
    assert!(p["path"].as_str().unwrap().ends_with("zz_bomb.png") && p["detail"].as_str().unwrap().contains("20000×20000"), "{p}");

    let eval_out = f.root.join("bomb-eval");
    let o = vqad().arg("eval").arg(&pkg).arg("--pubkey").arg(&f.pubkey).arg(&cat).arg("--out").arg(&eval_out).args(["--ep", "cpu"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("zz_bomb.png") && err.contains("over the limit"), "{err}");
    assert!(eval_out.join("report.json").exists());
}
