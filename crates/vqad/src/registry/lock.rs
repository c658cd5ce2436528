//! The registry's writer lock: one writer at a time (publish, promote, rollback), others wait
//! with a bounded timeout and say whom they wait for, and a lock left by a crashed writer is
//! recovered without a human.
//!
//! Two files:
//! - `REGISTRY/.registry.lock`, never removed, on which a writer holds an exclusive `flock`
//!   while it writes. The kernel releases it when the process ends, however it ends
//!   (SIGKILL included), and on NFS the server's lease does the same for a client that died:
//!   the lock is freed exactly when its owner is provably gone, never by a guess.
//! - `REGISTRY/index.json.lock`, created exclusively (O_EXCL) by the holder and removed on
//!   release, naming its owner: pid, host, boot id, start time, lease and command. It is what
//!   older vqad versions lock on (they are excluded too) and what waiters show. One found
//!   while we hold the `flock` was left by a writer that died (a live vqad writer would still
//!   hold the `flock`), so it is replaced and reported. One without owner record was made by
//!   an older vqad: it is waited for, never broken.
//!
//! A record naming a process of this host that is still alive is never replaced, even with
//! the `flock` held (it would mean `.registry.lock` was deleted under a writer). The lease in
//! the record only words the waiting message; taking over is always decided by the kernel.

use crate::package::PackageError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `flock` file.
pub const FLOCK_FILE: &str = ".registry.lock";
/// The owner record (also older vqad's lock).
pub const OWNER_FILE: &str = "index.json.lock";
/// How long a writer waits for the lock unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Environment variable setting the wait in seconds for every registry writer.
pub const TIMEOUT_ENV: &str = "VQAD_LOCK_TIMEOUT";

/// Who holds the lock, as written in [`OWNER_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub pid: u32,
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`: a pid means nothing across a reboot.
    pub boot_id: String,
    /// The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22): a
    /// reused pid has another.
    pub start_ticks: u64,
    /// RFC 3339.
    pub since: String,
    /// RFC 3339: when a waiter may call the holder slow (it is never broken for it).
    pub lease_until: String,
    /// What it is doing, e.g. `publish bottle 1.2.0`.
    pub command: String,
}

impl Owner {
    fn me(command: &str) -> Self {
        let now = time::OffsetDateTime::now_utc();
        let fmt = |t: time::OffsetDateTime| super::channels::format_time(t);
        let pid = std::process::id();
        Owner {
            pid,
            host: crate::provenance::builder::hostname(),
            boot_id: boot_id(),
            start_ticks: start_ticks(pid).unwrap_or(0),
            since: fmt(now),
            lease_until: fmt(now + time::Duration::seconds(30)),
            command: command.into(),
        }
    }

    /// Whether this owner is provably gone: same host and boot, and no process with its pid
    /// and start time; or same host, another boot.
    pub fn gone(&self) -> bool {
        if self.host != crate::provenance::builder::hostname() {
            return false;
        }
        if self.boot_id != boot_id() {
            return true;
        }
        start_ticks(self.pid) != Some(self.start_ticks)
    }

    fn describe(&self) -> String {
        format!("pid {} on {} since {} (`{}`)", self.pid, self.host, self.since, self.command)
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat` (after the parenthesised command name).
fn start_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Options of a wait.
#[derive(Debug, Clone)]
pub struct LockOptions {
    pub timeout: Duration,
    /// Called about every 5 s while waiting, with a line saying whom we wait for.
    pub progress: Option<fn(&str)>,
}

impl Default for LockOptions {
    /// [`DEFAULT_TIMEOUT`], or `$VQAD_LOCK_TIMEOUT` seconds; progress on standard error.
    fn default() -> Self {
        let timeout = std::env::var(TIMEOUT_ENV).ok().and_then(|s| s.trim().parse::<u64>().ok()).map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
        LockOptions { timeout, progress: Some(|s| eprintln!("{s}")) }
    }
}

/// A held registry lock; released on drop.
pub struct RegistryLock {
    file: std::fs::File,
    owner_path: PathBuf,
    /// A stale owner record that was replaced on taking the lock, if any.
    pub recovered: Option<String>,
}

impl RegistryLock {
    /// Waits up to `opts.timeout` for the registry's lock. `command` says what we will do.
    pub fn take(registry: &Path, command: &str, opts: &LockOptions) -> Result<Self, PackageError> {
        let flock_path = registry.join(FLOCK_FILE);
        let owner_path = registry.join(OWNER_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&flock_path)
            .map_err(|e| PackageError::io(&flock_path, e))?;
        let start = Instant::now();
        let mut next_note = Duration::from_secs(5);
        let mut delay = Duration::from_millis(20);
        let holder_text = |owner_path: &Path| match read_owner(owner_path) {
            Some(Ok(o)) => o.describe(),
            Some(Err(_)) => format!("a writer that left no owner record in {} (an older vqad?)", owner_path.display()),
            None => "another writer".into(),
        };
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is involved.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                // The flock is ours. An owner record now is either an older vqad's live lock
                // (wait for it) or one left by a dead vqad writer (replace it).
                match create_owner(&owner_path, command) {
                    Ok(()) => return Ok(RegistryLock { file, owner_path, recovered: None }),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match read_owner(&owner_path) {
                        // A record naming a live process of this host cannot be stale, even
                        // though we hold the flock (was .registry.lock deleted under it?).
                        Some(Ok(stale)) if !stale.gone() && stale.host == crate::provenance::builder::hostname() => unsafe {
                            libc::flock(file.as_raw_fd(), libc::LOCK_UN);
                        },
                        Some(Ok(stale)) => {
                            let text = format!("recovered the registry lock left by {} (that writer is gone)", stale.describe());
                            let _ = std::fs::remove_file(&owner_path);
                            create_owner(&owner_path, command).map_err(|e| PackageError::io(&owner_path, e))?;
                            if let Some(p) = opts.progress {
                                p(&format!("note: {text}"));
                            }
                            return Ok(RegistryLock { file, owner_path, recovered: Some(text) });
                        }
                        // Gone meanwhile, or an older vqad's: let go and wait.
                        _ => unsafe {
                            libc::flock(file.as_raw_fd(), libc::LOCK_UN);
                        },
                    },
                    Err(e) => {
                        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
                        return Err(PackageError::io(&owner_path, e));
                    }
                }
            } else {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EWOULDBLOCK) && err.raw_os_error() != Some(libc::EINTR) {
                    return Err(PackageError::Io {
                        path: flock_path.clone(),
                        source: std::io::Error::new(err.kind(), format!("cannot lock the registry (does its file system support locks?): {err}")),
                    });
                }
            }
            let waited = start.elapsed();
            if waited >= opts.timeout {
                return Err(PackageError::RegistryLocked { path: owner_path.clone(), waited_s: waited.as_secs(), holder: holder_text(&owner_path) });
            }
            if waited >= next_note {
                if let Some(p) = opts.progress {
                    p(&format!(
                        "waiting for the registry lock ({} s of {} s): held by {}",
                        waited.as_secs(),
                        opts.timeout.as_secs(),
                        holder_text(&owner_path)
                    ));
                }
                next_note += Duration::from_secs(5);
            }
            std::thread::sleep(delay.min(opts.timeout.saturating_sub(waited)));
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }
}

impl Drop for RegistryLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.owner_path);
        // SAFETY: as in take; closing the file would release it too.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn read_owner(p: &Path) -> Option<Result<Owner, String>> {
    match std::fs::read(p) {
        Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| e.to_string())),
        Err(_) => None,
    }
}

/// Writes the owner record complete before it appears under its name (hard link of a temp
/// file: atomic and exclusive, also on NFS), so nobody reads half of one.
fn create_owner(p: &Path, command: &str) -> std::io::Result<()> {
    let dir = p.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".vqad-lock-").tempfile_in(dir)?;
    let mut json = serde_json::to_vec_pretty(&Owner::me(command)).map_err(std::io::Error::other)?;
    json.push(b'\n');
    tmp.write_all(&json)?;
    tmp.as_file().sync_all()?;
    std::fs::hard_link(tmp.path(), p)
}

/// For crash tests: `VQAD_TEST_PAUSE_MID_PUBLISH_MS` makes `publish` print
/// `paused mid-publish` and sleep that long while holding the lock, after the archive is
/// written and before the index is, so a test can kill it at the worst moment.
pub(crate) fn test_pause(point: &str) {
    if let Some(ms) = std::env::var("VQAD_TEST_PAUSE_MID_PUBLISH_MS").ok().and_then(|s| s.parse::<u64>().ok()) {
        eprintln!("paused {point}");
        std::thread::sleep(Duration::from_millis(ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_waits_then_times_out_naming_the_holder() {
        let t = tempfile::tempdir().unwrap();
        let a = RegistryLock::take(t.path(), "publish a 1.0.0", &LockOptions::default()).unwrap();
        assert!(t.path().join(OWNER_FILE).exists());
        let quick = LockOptions { timeout: Duration::from_millis(300), progress: None };
        let e = RegistryLock::take(t.path(), "publish b", &quick).err().unwrap().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())) && e.contains("publish a 1.0.0"), "{e}");
        drop(a);
        assert!(!t.path().join(OWNER_FILE).exists());
        RegistryLock::take(t.path(), "publish b", &quick).unwrap();
    }

    #[test]
    fn an_owner_record_left_by_a_dead_writer_is_replaced_and_an_older_vqads_is_not() {
        let t = tempfile::tempdir().unwrap();
        // A process of this host that does not exist (beyond any pid_max).
        let mut dead = Owner::me("publish x 9.9.9");
        dead.pid = 999_999_999;
        assert!(dead.gone());
        std::fs::write(t.path().join(OWNER_FILE), serde_json::to_vec(&dead).unwrap()).unwrap();
        let quick = LockOptions { timeout: Duration::from_millis(500), progress: None };
        let l = RegistryLock::take(t.path(), "publish y", &quick).unwrap();
        assert!(l.recovered.as_deref().unwrap().contains("publish x 9.9.9"), "{:?}", l.recovered);
        drop(l);
        // An empty lock file (what older vqad wrote) is never broken.
        std::fs::write(t.path().join(OWNER_FILE), b"").unwrap();
        let e = RegistryLock::take(t.path(), "publish z", &quick).err().unwrap().to_string();
        assert!(e.contains("no owner record"), "{e}");
        assert!(!Owner::me("x").gone());
    }
}
