//! The server's in-flight memory budget: every request holds a [`Reservation`] of the bytes
//! it may have in memory — its body as it arrives, then its images' decoding, then its
//! model-ready arrays while it waits in the queue and is computed — and a reservation that
//! would take the total over the budget is refused (429 / `RESOURCE_EXHAUSTED`) instead of
//! allocated. So a burst of large requests is turned away, never an OOM kill of the pod.
//!
//! The budget is counted, not waited on: a refused request gets its answer at once, and the
//! client's retry policy decides. The default comes from the container's memory limit when
//! one is visible ([`default_budget`]).

use super::ApiError;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes in use and the limit, shared by every request.
pub struct Budget {
    limit: u64,
    used: AtomicU64,
    gauge: prometheus::IntGauge,
    refused: prometheus::IntCounter,
}

impl Budget {
    /// A budget of `limit` bytes whose use `gauge` shows and whose refusals `refused` counts
    /// (wherever they happen: a body or message as it arrives, or images before decoding,
    /// when no model may be known yet).
    pub fn new(limit: u64, gauge: prometheus::IntGauge, refused: prometheus::IntCounter) -> Arc<Self> {
        Arc::new(Budget { limit, used: AtomicU64::new(0), gauge, refused })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// An empty reservation, grown as the request's needs become known.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation { budget: self.clone(), held: AtomicU64::new(0) }
    }

    fn take(&self, n: u64) -> Result<(), ApiError> {
        let mut cur = self.used.load(Ordering::SeqCst);
        loop {
            let next = cur.saturating_add(n);
            if next > self.limit {
                self.refused.inc();
                return Err(ApiError::busy(format!(
                    "server memory budget exhausted: this request needs {} more, {} of {} are in use by requests in flight (--max-inflight-mb); retry later",
                    mib(n),
                    mib(cur),
                    mib(self.limit)
                )));
            }
            match self.used.compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    self.gauge.set(next as i64);
                    return Ok(());
                }
                Err(now) => cur = now,
            }
        }
    }

    fn give(&self, n: u64) {
        let after = self.used.fetch_sub(n, Ordering::SeqCst) - n;
        self.gauge.set(after as i64);
    }
}

/// What one request holds of the budget; released when dropped (whichever way the request
/// ends, a dropped connection included).
pub struct Reservation {
    budget: Arc<Budget>,
    held: AtomicU64,
}

impl Reservation {
    /// Bytes held.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// Holds `n` more bytes. A request that alone needs more than the whole budget can never
    /// be admitted: that is 413 (too large), not 429 (busy, retry).
    pub fn grow(&self, n: u64) -> Result<(), ApiError> {
        let total = self.held().saturating_add(n);
        if total > self.budget.limit {
            self.budget.refused.inc();
            return Err(ApiError::too_large(format!(
                "this request needs {} in memory, more than the server's whole in-flight budget of {} (--max-inflight-mb)",
                mib(total),
                mib(self.budget.limit)
            )));
        }
        self.budget.take(n)?;
        self.held.fetch_add(n, Ordering::SeqCst);
        Ok(())
    }

    /// Holds exactly `n` bytes: gives back what is no longer needed, or grows.
    pub fn set(&self, n: u64) -> Result<(), ApiError> {
        let held = self.held();
        if n >= held {
            return self.grow(n - held);
        }
        self.held.fetch_sub(held - n, Ordering::SeqCst);
        self.budget.give(held - n);
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let n = *self.held.get_mut();
        if n > 0 {
            self.budget.give(n);
        }
    }
}

fn mib(n: u64) -> String {
    if n < 1 << 20 {
        format!("{:.0} KiB", (n as f64 / 1024.0).ceil())
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

/// The budget when `--max-inflight-mb` is not given: a quarter of the container's memory
/// limit when one is visible (the rest holds the loaded models — each CPU instance of a
/// paper-size package takes 340–580 MiB — and the process), else 1 GiB. Returns the bytes
/// and where they came from, for the start-up line.
pub fn default_budget() -> (u64, String) {
    match memory_limit(Path::new("/")) {
        Some((limit, source)) => (limit / 4, format!("a quarter of the memory limit {} ({source})", mib(limit))),
        None => (DEFAULT_WITHOUT_LIMIT, "no container memory limit visible".into()),
    }
}

/// The budget when no memory limit is visible.
pub const DEFAULT_WITHOUT_LIMIT: u64 = 1 << 30;

/// The memory limit of this process's cgroup, from under `root` (`/` outside tests): cgroup
/// v2 `memory.max` of the process's cgroup or, inside a container (cgroup namespace), of the
/// mount root; cgroup v1 `memory.limit_in_bytes`. The smallest limit found counts. "max" and
/// v1's near-2^63 "unlimited" are no limit.
pub fn memory_limit(root: &Path) -> Option<(u64, String)> {
    let read = |p: &Path| std::fs::read_to_string(root.join(p.strip_prefix("/").unwrap_or(p))).ok();
    let cgroup = read(Path::new("/proc/self/cgroup")).unwrap_or_default();
    let mut candidates: Vec<String> = vec![];
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let path = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            candidates.push(format!("/sys/fs/cgroup/{path}/memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push(format!("/sys/fs/cgroup/memory/{path}/memory.limit_in_bytes"));
        }
    }
    candidates.push("/sys/fs/cgroup/memory.max".into());
    candidates.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".into());
    candidates
        .into_iter()
        .filter_map(|c| {
            let text = read(Path::new(&c))?;
            let v = text.trim().parse::<u64>().ok().filter(|&v| v < 1 << 60)?;
            Some((v, c.replace("//", "/")))
        })
        .min_by_key(|(v, _)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: u64) -> Arc<Budget> {
        Budget::new(limit, prometheus::IntGauge::new("g", "g").unwrap(), prometheus::IntCounter::new("r", "r").unwrap())
    }

    #[test]
    fn reservations_add_up_refuse_past_the_limit_and_release_on_drop() {
        let b = budget(100);
        let r1 = b.reservation();
        r1.grow(60).unwrap();
        let r2 = b.reservation();
        let e = r2.grow(50).unwrap_err();
        assert_eq!(e.kind, super::super::ErrorKind::Busy, "{e:?}");
        assert!(e.message.contains("memory budget exhausted"), "{}", e.message);
        r2.grow(40).unwrap();
        assert_eq!(b.used(), 100);
        r1.set(10).unwrap();
        assert_eq!((b.used(), r1.held()), (50, 10));
        drop(r1);
        drop(r2);
        assert_eq!(b.used(), 0);
        assert_eq!(b.gauge.get(), 0);
        assert_eq!(b.refused.get(), 1);
    }

    #[test]
    fn a_request_larger_than_the_whole_budget_is_too_large_not_busy() {
        let b = budget(100);
        let e = b.reservation().grow(101).unwrap_err();
        assert_eq!(e.kind, super::super::ErrorKind::TooLarge);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn the_limit_is_read_from_cgroup_v2_and_v1_files() {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, s: &str| {
            let f = d.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, s).unwrap();
        };
        assert_eq!(memory_limit(d.path()), None);
        // cgroup v2, unlimited at the root, limited in the process's own group.
        w("proc/self/cgroup", "0::/kubepods/pod1/c1\n");
        w("sys/fs/cgroup/memory.max", "max\n");
        assert_eq!(memory_limit(d.path()), None);
        w("sys/fs/cgroup/kubepods/pod1/c1/memory.max", "2147483648\n");
        assert_eq!(memory_limit(d.path()).unwrap().0, 2 << 30);
        // cgroup v1: the "unlimited" value is no limit; a real one counts.
        let d1 = tempfile::tempdir().unwrap();
        let w1 = |p: &str, s: &str| {
            let f = d1.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, s).unwrap();
        };
        w1("proc/self/cgroup", "4:memory:/process_api/x\n1:cpu:/\n");
        w1("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
        assert_eq!(memory_limit(d1.path()), None);
        w1("sys/fs/cgroup/memory/process_api/x/memory.limit_in_bytes", "1073741824\n");
        let (v, src) = memory_limit(d1.path()).unwrap();
        assert_eq!(v, 1 << 30);
        assert!(src.ends_with("process_api/x/memory.limit_in_bytes"), "{src}");
    }
}
