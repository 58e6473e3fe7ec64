//! Connection discipline for the HTTP server: hyper serves each connection (HTTP/1.1, no
//! hand-rolled parsing); this module decides which connections live and for how long.
//!
//! - **Phases and timeouts**: a connection is *waiting for headers* from its first byte (or its
//!   accept) until hyper hands the request to the router, *busy* while a request is served, and
//!   *idle* between keep-alive requests. Headers not complete within `header_timeout` (10 s),
//!   or idle longer than `idle_timeout` (60 s), close the connection; a body that does not
//!   arrive within `body_timeout` (30 s) is answered 408 by the route. Each is counted in
//!   `hipinfer_connection_timeouts_total{phase}`.
//! - **A cap** (`max_connections`, by default three quarters of the file-descriptor limit, so the
//!   engine keeps descriptors of its own): at the cap, a new connection takes the place of the
//!   connection idle (or waiting for headers) the longest — a flood of idle or half-sent
//!   connections cannot lock `/health` or `/embed` out — and is refused at once only when every
//!   connection is busy serving a request. Counted: `hipinfer_connections_open`,
//!   `hipinfer_connections_evicted_total`, `hipinfer_connections_refused_total`.
//! - **A graceful stop**: on shutdown every connection finishes the request it serves and closes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Why a connection was closed by a timeout: the `phase` label.
pub const TIMEOUT_PHASES: [&str; 3] = ["header", "body", "idle"];

/// The limits of connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Bytes all request bodies being received may hold together (256 MiB): a body that would
    /// pass it is answered 429 at once, so slow senders cannot fill memory.
    pub body_memory: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(),
            body_memory: 256 << 20,
        }
    }
}

/// Three quarters of this process's file-descriptor limit (at least 64): the rest stays for the
/// engine (model files, worker sockets, threads) and for the listener.
pub fn default_max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1024);
    (limit.saturating_mul(3) / 4).clamp(64, 1 << 20) as usize
}

/// The memory all request bodies being received hold together, against a limit.
#[derive(Debug, Clone)]
pub struct BodyMemory {
    held: Arc<AtomicUsize>,
    limit: usize,
}

/// Bytes of a body in memory, given back when dropped.
#[derive(Debug)]
pub struct BodyBytes {
    held: Arc<AtomicUsize>,
    bytes: usize,
}

impl BodyMemory {
    pub fn new(limit: usize) -> Self {
        BodyMemory {
            held: Arc::default(),
            limit,
        }
    }

    /// Takes `bytes` more for `body`, or says there is no room.
    pub fn grow(&self, body: &mut BodyBytes, bytes: usize) -> bool {
        let taken = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                let next = held.checked_add(bytes)?;
                (next <= self.limit).then_some(next)
            })
            .is_ok();
        if taken {
            body.bytes += bytes;
        }
        taken
    }

    /// An empty account.
    pub fn account(&self) -> BodyBytes {
        BodyBytes {
            held: self.held.clone(),
            bytes: 0,
        }
    }
}

impl Drop for BodyBytes {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The connection metrics.
#[derive(Clone)]
pub struct ConnectionMetrics {
    open: IntGauge,
    refused: IntCounter,
    evicted: IntCounter,
    timeouts: IntCounterVec,
}

impl std::fmt::Debug for ConnectionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionMetrics").finish_non_exhaustive()
    }
}

impl ConnectionMetrics {
    /// Registers them in `registry` (a second server on the same registry shares them).
    pub fn register(registry: &Registry) -> ConnectionMetrics {
        let open = IntGauge::new("hipinfer_connections_open", "HTTP connections open")
            .expect("valid metric");
        let refused = IntCounter::new(
            "hipinfer_connections_refused_total",
            "HTTP connections refused at once: the cap was reached and every connection was busy",
        )
        .expect("valid metric");
        let evicted = IntCounter::new(
            "hipinfer_connections_evicted_total",
            "Idle (or half-sent) HTTP connections closed to make room at the cap",
        )
        .expect("valid metric");
        let timeouts = IntCounterVec::new(
            Opts::new(
                "hipinfer_connection_timeouts_total",
                "HTTP connections or requests ended by a timeout, by phase (header, body, idle)",
            ),
            &["phase"],
        )
        .expect("valid metric");
        for phase in TIMEOUT_PHASES {
            timeouts.with_label_values(&[phase]);
        }
        let metrics = ConnectionMetrics {
            open,
            refused,
            evicted,
            timeouts,
        };
        for collector in [
            Box::new(metrics.open.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.refused.clone()),
            Box::new(metrics.evicted.clone()),
            Box::new(metrics.timeouts.clone()),
        ] {
            if let Err(error) = registry.register(collector) {
                tracing::debug!("connection metrics not registered again: {error}");
            }
        }
        metrics
    }

    /// Metrics registered nowhere (to describe the routes without serving them).
    pub fn register_nowhere() -> ConnectionMetrics {
        Self::register(&Registry::new())
    }

    /// Counts a timeout in `phase` (`header`, `body`, `idle`).
    pub fn timed_out(&self, phase: &str) {
        self.timeouts.with_label_values(&[phase]).inc();
    }
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request's headers, since then.
    Headers(Instant),
    /// Serving this many requests.
    Busy(u32),
    /// Between requests, since then.
    Idle(Instant),
}

/// One connection's state, shared by its reader, its service and its watchdog.
struct Connection {
    phase: Mutex<Phase>,
    changed: Notify,
    /// Set to make the connection close (eviction, shutdown).
    close: Mutex<Option<Close>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    Evict,
    Graceful,
}

impl Connection {
    fn new() -> Arc<Self> {
        Arc::new(Connection {
            phase: Mutex::new(Phase::Headers(Instant::now())),
            changed: Notify::new(),
            close: Mutex::new(None),
        })
    }

    /// Bytes arrived: an idle connection starts a request.
    fn read_some(&self) {
        let mut phase = self.phase.lock();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Headers(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        let mut phase = self.phase.lock();
        *phase = match *phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        };
        drop(phase);
        self.changed.notify_one();
    }

    fn request_ended(&self) {
        let mut phase = self.phase.lock();
        *phase = match *phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        };
        drop(phase);
        self.changed.notify_one();
    }

    /// Since when it has served nothing (`None` while busy).
    fn unbusy_since(&self) -> Option<Instant> {
        match *self.phase.lock() {
            Phase::Headers(at) | Phase::Idle(at) => Some(at),
            Phase::Busy(_) => None,
        }
    }

    fn ask_to_close(&self, how: Close) {
        let mut close = self.close.lock();
        if close.is_none() || how == Close::Evict {
            *close = Some(how);
        }
        drop(close);
        self.changed.notify_one();
    }

    /// Resolves when the connection must end: a timeout (its phase) or a request to close.
    async fn ended(&self, limits: &ConnectionLimits) -> Result<Close, &'static str> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(close) = *self.close.lock() {
                return Ok(close);
            }
            let due = match *self.phase.lock() {
                Phase::Headers(at) => Some((at + limits.header_timeout, "header")),
                Phase::Idle(at) => Some((at + limits.idle_timeout, "idle")),
                Phase::Busy(_) => None,
            };
            match due {
                Some((at, phase)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => return Err(phase),
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// The TCP stream, telling its connection when bytes arrive.
struct Watched {
    stream: TcpStream,
    connection: Arc<Connection>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.connection.read_some();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Marks its connection busy while alive (a request being served, its future not dropped).
struct Serving(Arc<Connection>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// Every open connection.
struct OpenConnections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    all_closed: Notify,
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes; then stops accepting,
/// asks every connection to finish its request and close, and returns a future that resolves
/// when they have (or `linger` passed).
pub(crate) async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()>,
) -> ConnectionsDraining {
    let registry = Arc::new(OpenConnections {
        next: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
        all_closed: Notify::new(),
    });
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors or a transient error: do not spin on it.
                tracing::warn!("accepting a connection failed: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if !make_room(&registry, &limits, &metrics) {
            metrics.refused.inc();
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = registry.next.fetch_add(1, Ordering::Relaxed);
        let connection = Connection::new();
        registry.open.lock().insert(id, connection.clone());
        metrics.open.inc();
        tokio::spawn(serve_one(
            stream,
            connection,
            app.clone(),
            limits.clone(),
            metrics.clone(),
            registry.clone(),
            id,
        ));
    }
    drop(listener);
    for connection in registry.open.lock().values() {
        connection.ask_to_close(Close::Graceful);
    }
    ConnectionsDraining { registry }
}

/// The connections still finishing after the listener closed.
pub(crate) struct ConnectionsDraining {
    registry: Arc<OpenConnections>,
}

impl ConnectionsDraining {
    /// Waits until every connection closed, or `linger` passed (then they are dropped).
    pub async fn wait(self, linger: Duration) {
        let wait = async {
            loop {
                let notified = self.registry.all_closed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.registry.open.lock().is_empty() {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(linger, wait).await;
    }
}

/// Below the cap, or made so by evicting the connection unbusy the longest.
fn make_room(
    registry: &OpenConnections,
    limits: &ConnectionLimits,
    metrics: &ConnectionMetrics,
) -> bool {
    let open = registry.open.lock();
    if open.len() < limits.max_connections {
        return true;
    }
    let oldest = open
        .values()
        .filter(|c| c.close.lock().is_none())
        .filter_map(|c| c.unbusy_since().map(|at| (at, c)))
        .min_by_key(|(at, _)| *at)
        .map(|(_, c)| c.clone());
    drop(open);
    match oldest {
        Some(connection) => {
            connection.ask_to_close(Close::Evict);
            metrics.evicted.inc();
            true
        }
        None => false,
    }
}

async fn serve_one(
    stream: TcpStream,
    connection: Arc<Connection>,
    app: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    registry: Arc<OpenConnections>,
    id: u64,
) {
    let io = TokioIo::new(Watched {
        stream,
        connection: connection.clone(),
    });
    let service_connection = connection.clone();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            service_connection.request_started();
            let serving = Serving(service_connection.clone());
            let app = app.clone();
            async move {
                let response = tower::ServiceExt::oneshot(app, request).await;
                drop(serving);
                response
            }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut graceful = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!("connection ended: {error}");
                }
                break;
            }
            ended = connection.ended(&limits) => match ended {
                Err(phase) => {
                    metrics.timed_out(phase);
                    break;
                }
                Ok(Close::Evict) => break,
                Ok(Close::Graceful) => {
                    // Finish the request in flight, then close; timeouts still hold.
                    *connection.close.lock() = None;
                    if !graceful {
                        graceful = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            },
        }
    }
    metrics.open.dec();
    let mut open = registry.open.lock();
    open.remove(&id);
    if open.is_empty() {
        registry.all_closed.notify_waiters();
    }
}
