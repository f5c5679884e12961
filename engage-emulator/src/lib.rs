//! A local stand-in for Mixpanel's `/engage` and `/groups` ingestion endpoints: it
//! accepts what real clients send, validates with [`engage_core`]'s rules, answers the way
//! Mixpanel does, keeps the resulting profiles for tests to inspect, and injects faults on
//! demand.
//!
//! ```
//! use engage_emulator::{Emulator, EmulatorConfig};
//!
//! let emulator = Emulator::start(EmulatorConfig::default()).unwrap();
//! // Point any client at emulator.base_url(), e.g. "http://127.0.0.1:41234".
//! assert!(emulator.base_url().starts_with("http://127.0.0.1:"));
//! # let body = r#"[{"$token":"t","$distinct_id":"u1","$set":{"plan":"pro"}}]"#;
//! # use std::io::{Read, Write};
//! # let mut s = std::net::TcpStream::connect(emulator.addr()).unwrap();
//! # write!(s, "POST /engage?verbose=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
//! # let mut answer = String::new();
//! # s.read_to_string(&mut answer).unwrap();
//! # assert!(answer.ends_with(r#"{"error":null,"status":1}"#), "{answer}");
//! // … after sending `[{"$token":"t","$distinct_id":"u1","$set":{"plan":"pro"}}]` to /engage:
//! let profile = emulator.profile("u1").unwrap();
//! assert_eq!(profile["plan"], "pro");
//! assert_eq!(emulator.stats().accepted, 1);
//! // Dropping the handle shuts the server down.
//! ```
//!
//! The binary, `engage-emulator` (or `engage serve`), prints `listening on
//! http://HOST:PORT` as its first line and serves until SIGINT or SIGTERM. See the README
//! for the inspection API (`/_emulator/...`) and fault injection.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod cli;
mod faults;
pub mod logs;
mod server;
mod state;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

pub use cli::{EmulatorArgs, KindsArg, ScriptArg, run_cli};
pub use faults::{FaultConfig, FaultKind, MAX_SLOW_MS, ScriptStep, UnknownFault, parse_script};

/// Default most connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 512;
/// Default most bytes of request bodies held at once (256 MiB).
pub const DEFAULT_BODY_BUDGET: u64 = 256 * 1024 * 1024;
/// Largest read buffer of one connection (hyper's default is ~400 KiB); it also caps a
/// request head.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// How long in-flight requests may finish after SIGTERM, SIGINT or a drop of the handle.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
pub use state::{EMULATOR_PROPERTIES, Profile, Stats};

use server::{Settings, Shared, lock};

/// How to run the emulator.
#[derive(Clone)]
#[non_exhaustive]
pub struct EmulatorConfig {
    /// Address to listen on; the default `127.0.0.1:0` picks a free loopback port.
    pub addr: SocketAddr,
    /// When set, a record with a different `$token` makes the request fail with 401.
    pub token: Option<String>,
    /// Larger request bodies are answered 413 (default 2 MiB).
    pub max_body_bytes: usize,
    /// A request whose head or body takes longer than this is answered 408 and its
    /// connection closed (default 10 s).
    pub body_timeout: Duration,
    /// Most connections served at once; more wait in the listen queue (default 512).
    pub max_connections: usize,
    /// Most bytes of request bodies held at once, all connections together; over it a
    /// request is answered 503 with `Retry-After: 1` (default 256 MiB).
    pub body_budget: usize,
    /// Every `/engage` and `/groups` answer waits this long (a round trip; not a fault).
    pub latency: Duration,
    /// And this much more per megabyte (10^6 bytes) of body.
    pub latency_per_mb: Duration,
    /// Bytes of bodies per minute each project token may send (a token bucket holding one
    /// second's worth); over it, 429 with Mixpanel's body and no `Retry-After`.
    pub rate_limit_bytes_per_min: Option<u64>,
    /// Fault injection.
    pub faults: FaultConfig,
}

impl std::fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("body_timeout", &self.body_timeout)
            .field("max_connections", &self.max_connections)
            .field("body_budget", &self.body_budget)
            .field("latency", &self.latency)
            .field("latency_per_mb", &self.latency_per_mb)
            .field("rate_limit_bytes_per_min", &self.rate_limit_bytes_per_min)
            .field("faults", &self.faults)
            .finish()
    }
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            max_body_bytes: engage_core::batch::DEFAULT_MAX_BODY_BYTES,
            body_timeout: Duration::from_secs(10),
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            body_budget: DEFAULT_BODY_BUDGET as usize,
            latency: Duration::ZERO,
            latency_per_mb: Duration::ZERO,
            rate_limit_bytes_per_min: None,
            faults: FaultConfig::default(),
        }
    }
}

impl EmulatorConfig {
    /// Requires every record to carry this token (else 401).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Caps request bodies (413 above).
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// Times out slow request headers or bodies.
    pub fn body_timeout(mut self, t: Duration) -> Self {
        self.body_timeout = t;
        self
    }

    /// Caps the connections served at once (at least 1).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Caps the bytes of request bodies held at once.
    pub fn body_budget(mut self, bytes: usize) -> Self {
        self.body_budget = bytes;
        self
    }

    /// A round trip: each answer waits `base`, plus `per_mb` per megabyte of body.
    pub fn latency(mut self, base: Duration, per_mb: Duration) -> Self {
        self.latency = base;
        self.latency_per_mb = per_mb;
        self
    }

    /// Caps each project token at `bytes` of bodies per minute.
    pub fn rate_limit(mut self, bytes_per_minute: u64) -> Self {
        self.rate_limit_bytes_per_min = Some(bytes_per_minute);
        self
    }

    /// Injects faults.
    pub fn faults(mut self, faults: FaultConfig) -> Self {
        self.faults = faults;
        self
    }

    /// Listens on `addr`.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }
}

/// A running emulator. It serves on its own thread (with its own small tokio runtime), so
/// it works from synchronous tests and from any async runtime. Dropping it shuts it down.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Emulator {
    /// Binds `config.addr` and starts serving.
    pub fn start(config: EmulatorConfig) -> io::Result<Emulator> {
        let listener = std::net::TcpListener::bind(config.addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(
            Settings {
                token: config.token,
                max_body_bytes: config.max_body_bytes,
                body_timeout: config.body_timeout,
                max_connections: config.max_connections.max(1),
                body_budget: config.body_budget,
                latency: server::Latency {
                    base: config.latency,
                    per_mb: config.latency_per_mb,
                },
                rate_limit: config.rate_limit_bytes_per_min,
            },
            config.faults,
        ));
        let (tx, rx) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("engage-emulator")
            .enable_all()
            .build()?;
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("engage-emulator".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, serving, rx).await,
                        Err(e) => eprintln!("engage-emulator: {e}"),
                    }
                });
                // Dropping the runtime here ends every open connection.
            })?;
        Ok(Emulator {
            addr,
            shared,
            shutdown: tx,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`, to give a client as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every user profile, by distinct_id.
    pub fn profiles(&self) -> BTreeMap<String, Profile> {
        self.shared.store.profiles()
    }

    /// One user profile.
    pub fn profile(&self, distinct_id: &str) -> Option<Profile> {
        self.shared.store.profile(distinct_id)
    }

    /// Every group profile: `{group_key: {group_id: properties}}`.
    pub fn groups(&self) -> BTreeMap<String, BTreeMap<String, Profile>> {
        self.shared.store.groups()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Forgets every profile and zeroes the counters.
    pub fn reset(&self) {
        self.shared.store.reset();
    }

    /// Replaces the fault configuration (the script starts over).
    pub fn set_faults(&self, faults: FaultConfig) {
        *lock(&self.shared.faults) = faults::Injector::new(faults);
    }

    /// Stops serving and waits for the server thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts connections until `shutdown` turns true, at most `max_connections` at once;
/// then lets the requests in flight finish for up to [`SHUTDOWN_GRACE`].
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(shared.settings.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        // Over the limit, connections wait in the kernel's listen queue.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (stream, remote) = match accepted {
            Ok(x) => x,
            Err(_) => {
                // Out of file descriptors or similar: back off briefly, keep serving.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let timeout = shared.settings.body_timeout;
        let service_shared = shared.clone();
        let service = service_fn(move |req| server::handle(service_shared.clone(), remote, req));
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            // A backstop: the head deadline (which answers 408) fires first.
            .header_read_timeout(timeout + Duration::from_secs(1))
            .keep_alive(true)
            // Per-connection read buffer: small, so connections × buffer stays bounded.
            .max_buf_size(READ_BUFFER_BYTES)
            .serve_connection(
                TokioIo::new(server::HeadDeadline::new(stream, timeout)),
                service,
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}
