//! Connections of both front ends: a cap on how many are open per port, and timeouts for
//! clients that are slow or silent.
//!
//! Each connection knows whether a request is in progress on it. With none, the client must
//! start its next request within the idle timeout, and (HTTP/1) once its first byte has
//! arrived, finish the headers within the header timeout. A response write that makes no
//! progress for the write timeout closes the connection. How long a request's body may take
//! is bounded in the handlers (`--body-timeout-secs`), so a client that sends headers and a
//! byte of its body, then nothing, is answered and closed then.
//!
//! Why here, on the socket: hyper's own header timer starts when a connection goes idle, so
//! it cannot tell a silent client from one between requests, and HTTP/2 (tonic) has no idle
//! or header timeout at all; without these, 900 connections that sent headers and one byte
//! were all still open 35 s later (issue 25).
//!
//! The cap holds back `accept` while the port has `max_connections` open, so further clients
//! wait in the kernel's backlog instead of costing a file descriptor and buffers each.

use prometheus::{IntCounterVec, IntGauge};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Limits on one port's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    /// With no request in progress, a connection is closed after this long.
    pub idle: Duration,
    /// HTTP/1: from a request's first byte to the end of its headers.
    pub header: Duration,
    /// A response write that makes no progress for this long closes the connection.
    pub write: Duration,
}

/// What the connections of one port report.
#[derive(Clone)]
pub struct ConnMetrics {
    pub open: IntGauge,
    /// Connections closed by a timeout, by reason (idle, header, write).
    pub timeouts: IntCounterVec,
    pub protocol: &'static str,
}

const IDLE: u8 = 0;
const HEADER: u8 = 1;

/// Whether a request is in progress on a connection, and when it must close if none starts.
pub struct ConnState {
    epoch: Instant,
    active: AtomicUsize,
    /// Milliseconds after `epoch` plus one; 0 while a request is in progress.
    deadline: AtomicU64,
    reason: AtomicU8,
    idle: Duration,
    /// `None` for HTTP/2, where bytes between streams (pings, settings) start no request.
    header: Option<Duration>,
    /// The reader to wake when the deadline moves.
    waker: Mutex<Option<Waker>>,
}

impl ConnState {
    fn new(limits: &ConnLimits, http1: bool) -> Arc<Self> {
        let s = ConnState {
            epoch: Instant::now(),
            active: AtomicUsize::new(0),
            deadline: AtomicU64::new(0),
            reason: AtomicU8::new(IDLE),
            idle: limits.idle,
            header: http1.then_some(limits.header),
            waker: Mutex::new(None),
        };
        s.set_deadline(s.idle, IDLE);
        Arc::new(s)
    }

    fn set_deadline(&self, after: Duration, reason: u8) {
        let ms = (self.epoch.elapsed() + after).as_millis() as u64 + 1;
        self.reason.store(reason, Ordering::SeqCst);
        self.deadline.store(ms, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.wake();
        }
    }

    /// A request starts: no connection deadline until it (and any other) has been answered.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.deadline.store(0, Ordering::SeqCst);
        ActiveGuard(self.clone())
    }

    fn end(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.set_deadline(self.idle, IDLE);
        }
    }

    /// Bytes arrived: between requests on HTTP/1 they start one, whose headers must be
    /// complete within the header timeout.
    fn read_some(&self) {
        if let Some(h) = self.header {
            if self.active.load(Ordering::SeqCst) == 0 && self.reason.load(Ordering::SeqCst) == IDLE && self.deadline.load(Ordering::SeqCst) != 0 {
                self.set_deadline(h, HEADER);
            }
        }
    }
}

/// Marks a request in progress until dropped (kept inside the response body, so the whole
/// response, not only the handler, counts).
pub struct ActiveGuard(Arc<ConnState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The connection's state, for the services that run on it (tonic hands it over as connect
/// info in the request's extensions).
#[derive(Clone)]
pub struct ConnHandle(pub Arc<ConnState>);

/// An accepted connection with its timeouts; holds its slot of the port's cap.
pub struct GuardedIo {
    inner: TcpStream,
    state: Arc<ConnState>,
    read_sleep: Pin<Box<Sleep>>,
    read_armed: u64,
    write_sleep: Pin<Box<Sleep>>,
    write_armed: bool,
    write_timeout: Duration,
    metrics: ConnMetrics,
    _slot: OwnedSemaphorePermit,
}

impl GuardedIo {
    pub fn state(&self) -> Arc<ConnState> {
        self.state.clone()
    }

    fn timed_out(&self, reason: &'static str) -> io::Error {
        self.metrics.timeouts.with_label_values(&[self.metrics.protocol, reason]).inc();
        tracing::debug!(protocol = self.metrics.protocol, reason, "closing a connection: timeout");
        io::Error::new(io::ErrorKind::TimedOut, format!("{reason} timeout"))
    }

    fn poll_write_with<T>(&mut self, cx: &mut Context<'_>, f: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match f(Pin::new(&mut self.inner), cx) {
            Poll::Ready(r) => {
                self.write_armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !self.write_armed {
                    self.write_sleep.as_mut().reset(tokio::time::Instant::now() + self.write_timeout);
                    self.write_armed = true;
                }
                if self.write_sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(self.timed_out("write")));
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for GuardedIo {
    fn drop(&mut self) {
        self.metrics.open.dec();
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.state.read_some();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                *this.state.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
                let d = this.state.deadline.load(Ordering::SeqCst);
                if d == 0 {
                    return Poll::Pending;
                }
                if d != this.read_armed {
                    let at = this.state.epoch + Duration::from_millis(d - 1);
                    this.read_sleep.as_mut().reset(at.into());
                    this.read_armed = d;
                }
                if this.read_sleep.as_mut().poll(cx).is_ready() {
                    let reason = if this.state.reason.load(Ordering::SeqCst) == HEADER { "header" } else { "idle" };
                    return Poll::Ready(Err(this.timed_out(reason)));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |s, cx| s.poll_write(cx, buf))
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_write_with(cx, |s, cx| s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for GuardedIo {
    type ConnectInfo = ConnHandle;
    fn connect_info(&self) -> ConnHandle {
        ConnHandle(self.state.clone())
    }
}

/// A port's listener with its connection cap.
pub struct Listener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    limits: ConnLimits,
    http1: bool,
    metrics: ConnMetrics,
}

impl Listener {
    /// `http1`: the port speaks HTTP/1 (the header timeout applies between requests).
    pub fn new(inner: TcpListener, limits: ConnLimits, http1: bool, metrics: ConnMetrics) -> Self {
        Listener { inner, slots: Arc::new(Semaphore::new(limits.max_connections.max(1))), limits, http1, metrics }
    }

    /// The next connection, once the port has a free slot.
    pub async fn accept(&self) -> GuardedIo {
        let slot = self.slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    self.metrics.open.inc();
                    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
                    return GuardedIo {
                        inner: tcp,
                        state: ConnState::new(&self.limits, self.http1),
                        read_sleep: Box::pin(tokio::time::sleep_until(far)),
                        read_armed: 0,
                        write_sleep: Box::pin(tokio::time::sleep_until(far)),
                        write_armed: false,
                        write_timeout: self.limits.write,
                        metrics: self.metrics.clone(),
                        _slot: slot,
                    };
                }
                // Out of file descriptors or a connection reset before it was accepted:
                // wait a little rather than spin.
                Err(e) => {
                    tracing::warn!(protocol = self.metrics.protocol, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Resolves once every connection of this port has closed.
    pub fn drained(&self) -> impl Future<Output = ()> + 'static {
        let slots = self.slots.clone();
        let n = self.limits.max_connections.max(1) as u32;
        async move {
            let _ = slots.acquire_many(n).await;
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit (as Go does), so the
/// connection caps, not the descriptor limit, decide; returns the soft limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
                return None;
            }
            if r.rlim_cur < r.rlim_max {
                let want = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                    r.rlim_cur = r.rlim_max;
                }
            }
        }
        Some(r.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}
