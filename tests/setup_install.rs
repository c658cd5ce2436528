//! The cached-venv installer (`tools/pyvenv.sh`, behind every `tools/setup-*.sh`) on a new
//! user's machine: an empty cache, several tests starting the same installer at once, and an
//! installer killed halfway. Each test gets its own empty `VQAD_CACHE` and installs one small
//! pinned wheel through the same `pyvenv_install` the set-up scripts call.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `pyvenv_install locktest …` into `cache`, as the set-up scripts run it.
fn installer(cache: &Path) -> Command {
    let script = r#"set -euo pipefail
. "$1/tools/pyvenv.sh"
pyvenv_install locktest "six (installer test)" --check '"$VENV/bin/python" -c "import six"' 'six==1.16.0'"#;
    let mut c = Command::new("bash");
    c.arg("-c").arg(script).arg("bash").arg(env!("CARGO_MANIFEST_DIR"));
    c.env("VQAD_CACHE", cache).env("VQAD_LOCK_WAIT", "300");
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn python_of(o: &Output) -> PathBuf {
    assert!(
        o.status.success(),
        "installer failed ({}):\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

fn assert_works(python: &Path) {
    let o = Command::new(python).args(["-c", "import six; print(six.__version__)"]).output().unwrap();
    assert!(o.status.success(), "{} cannot import six: {}", python.display(), String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1.16.0");
}

#[test]
fn installers_started_at_once_into_an_empty_cache_all_succeed_with_one_venv() {
    let cache = tempfile::tempdir().unwrap();
    let children: Vec<Child> = (0..4).map(|_| installer(cache.path()).spawn().unwrap()).collect();
    let pythons: Vec<PathBuf> = children.into_iter().map(|c| python_of(&c.wait_with_output().unwrap())).collect();
    for p in &pythons {
        assert_eq!(p, &pythons[0], "callers printed different pythons: {pythons:?}");
    }
    assert_eq!(pythons[0], cache.path().join("venv-locktest/bin/python"));
    assert_works(&pythons[0]);
    assert!(!cache.path().join("venv-locktest.partial").exists(), "a half-built venv was left behind");
    // A later caller finds the stamp and reinstalls nothing.
    let again = installer(cache.path()).output().unwrap();
    assert_eq!(python_of(&again), pythons[0]);
    assert!(!String::from_utf8_lossy(&again.stderr).contains("installing"), "reinstalled: {}", String::from_utf8_lossy(&again.stderr));
}

#[test]
fn an_installer_killed_halfway_leaves_nothing_that_blocks_or_looks_done() {
    let cache = tempfile::tempdir().unwrap();
    let partial = cache.path().join("venv-locktest.partial");
    // Its own process group, so the kill takes pip and the venv module with it.
    let mut first = {
        use std::os::unix::process::CommandExt;
        let mut c = installer(cache.path());
        c.process_group(0);
        c.spawn().unwrap()
    };
    let start = Instant::now();
    while !partial.join("bin/python").exists() {
        assert!(first.try_wait().unwrap().is_none(), "the installer finished before it could be killed");
        assert!(start.elapsed() < Duration::from_secs(120), "no half-built venv appeared within 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pgid = first.id() as i32;
    // SAFETY: kill(2) on the process group this test created.
    assert_eq!(unsafe { libc::kill(-pgid, libc::SIGKILL) }, 0);
    let _ = first.wait();
    assert!(!cache.path().join("venv-locktest/.vqad-locktest-v1").exists(), "a killed install looks done");

    // The kernel released the dead installer's lock: the next one gets it at once (a lock that
    // outlived its holder would make this call give up after VQAD_LOCK_WAIT seconds).
    let next = installer(cache.path()).env("VQAD_LOCK_WAIT", "60").output().unwrap();
    let python = python_of(&next);
    assert_works(&python);
    assert!(!partial.exists(), "the killed installer's half-built venv was left behind");
}
