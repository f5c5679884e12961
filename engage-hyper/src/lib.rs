//! [engage](https://docs.rs/engage-core) transport over hyper-util's pooled client and
//! hyper-rustls (ring, webpki roots), on tokio.
//!
//! In an application: a client sends from many tasks, batches in the background, and
//! shuts down with an exact account.
//!
//! ```
//! use engage_core::client::ClientConfig;
//! use engage_core::{Target, Token, Update};
//! use engage_hyper::HyperTransport;
//! use std::time::Duration;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     # let emulator = engage_emulator::Emulator::start(Default::default()).unwrap();
//!     # let base_url = emulator.base_url();
//!     // For Mixpanel itself: Target::region(Region::Us).
//!     let config = ClientConfig::new(Token::new("my-project-token")?, Target::base_url(&base_url)?)
//!         .linger(Duration::from_millis(500));
//!     let client = HyperTransport::new()?.client(config);
//!     let mut tasks = Vec::new();
//!     for t in 0..4 {
//!         let client = client.clone();
//!         tasks.push(tokio::spawn(async move {
//!             for i in 0..250 {
//!                 let update = Update::user(format!("user-{}", i % 50)).add([("logins", 1)]);
//!                 client.send(update).await.expect("the client is running");
//!             }
//!             let _ = t;
//!         }));
//!     }
//!     for task in tasks {
//!         task.await?;
//!     }
//!     let summary = client.shutdown(Duration::from_secs(10)).await;
//!     assert_eq!((summary.sent, summary.accepted), (1000, 1000));
//!     # assert_eq!(emulator.profile("user-7").unwrap()["logins"], 20);
//!     Ok(())
//! }
//! ```
//!
//! A bulk import of an iterator that ends:
//!
//! ```
//! use engage_core::{BatchConfig, Endpoint, ImportConfig, Target, Token, Update};
//! use engage_hyper::HyperTransport;
//!
//! # let emulator = engage_emulator::Emulator::start(Default::default()).unwrap();
//! # let base_url = emulator.base_url();
//! // For Mixpanel itself: Target::region(Region::Us).
//! let target = Target::base_url(&base_url)?;
//! let config = ImportConfig::new(
//!     BatchConfig::new(Token::new("my-project-token")?, Endpoint::Engage),
//!     target,
//! );
//! let updates = (0..5_000).map(|i| Update::user(format!("user-{}", i % 100)).add([("logins", 1)]));
//! let runtime = tokio::runtime::Runtime::new()?;
//! let summary = runtime.block_on(async {
//!     let transport = HyperTransport::new()?;
//!     Ok::<_, engage_hyper::BuildError>(transport.import(config, updates, |_event| {}).await)
//! })?;
//! assert!(summary.all_accepted());
//! # assert_eq!(emulator.profile("user-7").unwrap()["logins"], 50);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The transport only moves bytes: it sends an `http::Request<Bytes>` and returns the
//! `http::Response<Bytes>` of any status with every header, or a [`TransportError`] with
//! its kind and whether the request may have reached the server. Batching, retries,
//! `Retry-After`, 413 splits and accounting are engage-core's.

use std::time::Duration;

use bytes::Bytes;
use engage_core::batch::Batch;
use engage_core::client::{Client, ClientConfig};
use engage_core::delivery::{ImportItem, Report, TransportErrorKind};
use engage_core::driver::SystemClock;
use engage_core::{ImportConfig, ImportEvent, ImportSummary, RetryPolicy, Target, TransportError};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as PooledClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest response body read (Mixpanel's are tiny; this guards against a broken peer).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

pub use engage_tls::BuildError;

/// Options of a [`HyperTransport`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Builder {
    connect_timeout: Duration,
    request_timeout: Duration,
    pool_idle_timeout: Duration,
    roots: engage_tls::Roots,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(60),
            roots: engage_tls::Roots::default(),
        }
    }
}

impl Builder {
    /// Time allowed to open a connection (default 10 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Time allowed for a whole exchange, connection included (default 30 s).
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// How long an idle keep-alive connection is kept (default 60 s).
    pub fn pool_idle_timeout(mut self, t: Duration) -> Self {
        self.pool_idle_timeout = t;
        self
    }

    /// Also trusts this root certificate (DER), e.g. a private proxy's or a test's.
    pub fn add_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.roots.add(der);
        self
    }

    /// Trusts only the roots added with [`add_root_certificate`](Self::add_root_certificate).
    pub fn only_added_roots(mut self, yes: bool) -> Self {
        self.roots.only_added(yes);
        self
    }

    /// Builds the transport. Must be called within a tokio runtime only when used, not here.
    pub fn build(self) -> Result<HyperTransport, BuildError> {
        let tls = engage_tls::client_config(&self.roots)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = PooledClient::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .build(https);
        Ok(HyperTransport {
            client,
            request_timeout: self.request_timeout,
        })
    }
}

/// A pooled HTTP/1.1 keep-alive client over rustls. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct HyperTransport {
    client: PooledClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    request_timeout: Duration,
}

impl HyperTransport {
    /// Default options: webpki roots, 10 s connect and 30 s request timeouts.
    pub fn new() -> Result<Self, BuildError> {
        Builder::default().build()
    }

    /// Options.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Sends one request; returns the response of any status, every header and the whole
    /// body, or a transport error.
    pub async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, TransportError> {
        let mut request = request.map(Full::new);
        // Tells, on a timeout, whether a connection was ever obtained (and so whether the
        // request may have gone out).
        let connection = hyper_util::client::legacy::connect::capture_connection(&mut request);
        let exchange = async {
            let response = self.client.request(request).await.map_err(classify)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(e) => TransportError::with_source(TransportErrorKind::Io, true, *e),
                    Err(e) => {
                        TransportError::new(TransportErrorKind::Protocol, true, e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Response::from_parts(parts, body))
        };
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::new(
                TransportErrorKind::Timeout,
                connection.connection_metadata().is_some(),
                format!("no complete answer within {:?}", self.request_timeout),
            )),
        }
    }

    /// Delivers one batch with engage-core's retry machine and tokio's sleep.
    pub async fn deliver(&self, batch: Batch, target: &Target, policy: RetryPolicy) -> Report {
        let delivery = engage_core::delivery::Delivery::new(batch, target.clone(), policy);
        engage_core::driver::deliver(delivery, &SystemClock, |r| self.send(r), tokio::time::sleep)
            .await
    }

    /// Imports a stream of updates with `config.concurrency` requests in flight, keeping
    /// each profile's updates in order (see [`engage_core::delivery::Importer`]).
    pub async fn import<U, T>(
        &self,
        config: ImportConfig,
        updates: U,
        on_event: impl FnMut(ImportEvent),
    ) -> ImportSummary
    where
        U: IntoIterator<Item = T>,
        T: ImportItem,
    {
        let mut feed = engage_core::delivery::FeedFrom {
            source: updates.into_iter(),
            on_event,
        };
        self.run(config, &mut feed).await
    }

    /// A long-running client for an application: updates sent from any task, batched in
    /// the background on the current tokio runtime (it must be called within one), flushed
    /// on demand, shut down with an exact account. See [`engage_core::client`].
    pub fn client(&self, config: ClientConfig) -> Client {
        let (client, worker) = Client::new(config);
        let transport = self.clone();
        tokio::spawn(async move {
            worker
                .run(
                    &SystemClock,
                    move |request| {
                        let transport = transport.clone();
                        async move { transport.send(request).await }
                    },
                    tokio::time::sleep,
                )
                .await
        });
        client
    }

    /// Imports from a [`Feed`](engage_core::delivery::Feed): the updates come from it, the
    /// events go to it, and it may ask to stop (see [`engage_core::delivery::Importer::stop`]).
    pub async fn run<F: engage_core::delivery::Feed>(
        &self,
        config: ImportConfig,
        feed: &mut F,
    ) -> ImportSummary {
        engage_core::driver::run(
            config,
            feed,
            &SystemClock,
            |r| self.send(r),
            tokio::time::sleep,
        )
        .await
    }
}

/// Maps hyper-util's error to a kind, and whether the request may have reached the server.
fn classify(e: hyper_util::client::legacy::Error) -> TransportError {
    if e.is_connect() {
        // Nothing was sent. TLS failures while connecting (an untrusted certificate) will
        // not heal; others (refused, unreachable, timed out) may.
        let kind = if is_tls(&e) {
            TransportErrorKind::Tls
        } else if chain_has_timeout(&e) {
            TransportErrorKind::Timeout
        } else {
            TransportErrorKind::Connect
        };
        return TransportError::with_source(kind, false, e);
    }
    let hyper_error = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<hyper::Error>());
    let kind = match hyper_error {
        Some(h) if h.is_parse() || h.is_parse_status() => TransportErrorKind::Protocol,
        _ => TransportErrorKind::Io,
    };
    TransportError::with_source(kind, true, e)
}

/// Whether a connect error comes from TLS. rustls errors can arrive type-erased inside
/// `io::Error`, so besides the type, the debug form is read for rustls's variant names.
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        source = s.source();
    }
    let debug = format!("{e:?}");
    [
        "InvalidCertificate",
        "AlertReceived",
        "PeerIncompatible",
        "PeerMisbehaved",
        "NoCertificatesPresented",
    ]
    .iter()
    .any(|v| debug.contains(v))
}

fn chain_has_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || c.to_string().contains("timed out")
        {
            return true;
        }
        cur = c.source();
    }
    false
}
