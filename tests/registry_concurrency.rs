//! Parallel releases into one registry (issue 23, item 6): `vqad publish` and `vqad promote`
//! started together wait for each other's lock instead of failing, nothing is lost, every
//! record verifies; a publisher killed (SIGKILL) while it holds the lock does not block the
//! next one, and its half-done publish is completed rather than left behind.

mod common_pkg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use vqad::package::{build_package, Manifest, TrustedKey};

fn vqad() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vqad"))
}

/// Packages bottle-<v> for each version, signed with the fixture's key.
fn packages(f: &common_pkg::Fixture, versions: &[String]) -> Vec<PathBuf> {
    versions
        .iter()
        .map(|v| build_package(&Manifest::example("bottle", v), &common_pkg::payload_files(), &f.key, &f.dir.path().join("many")).unwrap().path)
        .collect()
}

fn publish(pkg: &Path, reg: &Path, public: &Path) -> Command {
    let mut c = vqad();
    c.arg("publish").arg(pkg).arg("--registry").arg(reg).arg("--pubkey").arg(public);
    c
}

fn finish(c: Child, what: &str) -> String {
    let o = c.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn eight_publishes_and_four_promotes_at_once_all_land_and_verify() {
    let f = common_pkg::fixture();
    let reg = f.dir.path().join("registry");
    let versions: Vec<String> = (0..8).map(|i| format!("1.{i}.0")).collect();
    let pkgs = packages(&f, &versions);
    let t0 = std::time::Instant::now();
    let children: Vec<Child> = pkgs.iter().map(|p| publish(p, &reg, &f.pub_path).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()).collect();
    for (c, v) in children.into_iter().zip(&versions) {
        finish(c, &format!("publish {v}"));
    }
    println!("8 concurrent publishes: {:.2} s", t0.elapsed().as_secs_f64());
    let listed: Vec<String> = vqad::registry::list(&reg, Some("bottle")).unwrap().into_iter().map(|e| e.version).collect();
    assert_eq!(listed, versions);
    for v in &versions {
        let p = reg.join("bottle").join(v).join(format!("bottle-{v}.vqad"));
        vqad::registry::verify_in_registry(&p, &reg, &f.trusted).unwrap();
    }
    assert!(!reg.join("index.json.lock").exists(), "the owner record is removed on release");

    let t0 = std::time::Instant::now();
    let promotes: Vec<Child> = versions[..4]
        .iter()
        .map(|v| {
            vqad().arg("promote").arg(&reg).args(["bottle", v, "--channel", "staging", "--key"]).arg(&f.key_path).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for (c, v) in promotes.into_iter().zip(&versions) {
        finish(c, &format!("promote {v}"));
    }
    println!("4 concurrent promotes: {:.2} s", t0.elapsed().as_secs_f64());
    let h = vqad::registry::read_channel(&reg, "bottle", "staging", Some(&f.trusted)).unwrap().unwrap();
    let seqs: Vec<u64> = h.records.iter().map(|r| r.record.sequence).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    let mut promoted: Vec<String> = h.records.iter().map(|r| r.record.version.clone()).collect();
    promoted.sort();
    assert_eq!(promoted, versions[..4]);
    // `vqad history` verifies every record too.
    let o = vqad().arg("history").arg(&reg).arg("bottle").arg("--pubkey").arg(&f.pub_path).arg("--json").output().unwrap();
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j[0]["records"].as_array().unwrap().len(), 4);
    assert_eq!(j[0]["verified"], true);
}

/// Starts a publisher that pauses while holding the lock (after writing the archive, before
/// the index), and returns once it says so.
fn paused_publisher(pkg: &Path, reg: &Path, public: &Path, ms: u64) -> Child {
    let mut c = publish(pkg, reg, public).env("VQAD_TEST_PAUSE_MID_PUBLISH_MS", ms.to_string()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(c.stderr.take().unwrap()).lines();
    loop {
        let l = lines.next().expect("the publisher said it paused").unwrap();
        if l.contains("paused mid-publish") {
            break;
        }
    }
    // Keep draining its stderr so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    c
}

#[test]
fn a_publisher_killed_mid_publish_does_not_block_the_next_and_is_completed() {
    let f = common_pkg::fixture();
    let reg = f.dir.path().join("registry");
    let versions: Vec<String> = ["2.0.0", "2.1.0"].map(String::from).to_vec();
    let pkgs = packages(&f, &versions);
    let mut killed = paused_publisher(&pkgs[0], &reg, &f.pub_path, 120_000);
    let pid = killed.id();
    // Child::kill is SIGKILL on Unix: no destructor, no cleanup runs.
    killed.kill().unwrap();
    killed.wait().unwrap();
    let owner = std::fs::read_to_string(reg.join("index.json.lock")).unwrap();
    assert!(owner.contains(&format!("\"pid\": {pid}")), "the dead publisher's lock is left behind: {owner}");
    let t0 = std::time::Instant::now();
    let text = finish(publish(&pkgs[1], &reg, &f.pub_path).args(["--lock-timeout", "10"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), "publish after the kill");
    assert!(t0.elapsed().as_secs_f64() < 5.0, "the next publish waited {:?}", t0.elapsed());
    assert!(text.contains(&format!("recovered the registry lock left by pid {pid}")) && text.contains("publish bottle 2.0.0"), "{text}");
    // The killed publish wrote its archive but not the index: publishing it again completes it.
    assert_eq!(vqad::registry::list(&reg, None).unwrap().len(), 1);
    let text = finish(publish(&pkgs[0], &reg, &f.pub_path).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), "publish again");
    assert!(text.contains("completed an interrupted publish"), "{text}");
    for v in &versions {
        vqad::registry::verify_in_registry(&reg.join("bottle").join(v).join(format!("bottle-{v}.vqad")), &reg, &f.trusted).unwrap();
    }
}

#[test]
fn a_waiting_writer_shows_progress_and_a_bounded_wait_names_the_holder() {
    let f = common_pkg::fixture();
    let reg = f.dir.path().join("registry");
    let versions: Vec<String> = ["3.0.0", "3.1.0", "3.2.0"].map(String::from).to_vec();
    let pkgs = packages(&f, &versions);
    let holder = paused_publisher(&pkgs[0], &reg, &f.pub_path, 6_500);
    let pid = holder.id();
    let waiter = publish(&pkgs[1], &reg, &f.pub_path).args(["--lock-timeout", "60"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let o = publish(&pkgs[2], &reg, &f.pub_path).args(["--lock-timeout", "1"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "a lock timeout is an error, not a refusal: {err}");
    assert!(err.contains("still held after 1 s") && err.contains(&format!("pid {pid}")) && err.contains("publish bottle 3.0.0"), "{err}");
    let text = finish(waiter, "the waiting publish");
    assert!(text.contains("waiting for the registry lock (5 s of 60 s): held by pid"), "{text}");
    finish(holder, "the paused publish");
    let listed: Vec<String> = vqad::registry::list(&reg, None).unwrap().into_iter().map(|e| e.version).collect();
    assert_eq!(listed, versions[..2]);
    let _ = TrustedKey::load(&f.pub_path).unwrap();
}
