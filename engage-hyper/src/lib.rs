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

#![cfg_attr(docsrs, feature(doc_cfg))]

mod proxy;

use std::sync::Arc;
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

pub use engage_core::delivery::{Proxy, TransportOptions};
pub use engage_tls::BuildError;

/// How long an idle keep-alive connection stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// A pooled HTTP/1.1 keep-alive client over rustls. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct HyperTransport {
    client: PooledClient<HttpsConnector<proxy::ProxyConnector>, Full<Bytes>>,
    proxies: Arc<engage_proxy::Proxies>,
    options: TransportOptions,
}

impl HyperTransport {
    /// Default options: webpki roots, 10 s connect and 30 s request timeouts, the
    /// environment's proxy.
    pub fn new() -> Result<Self, BuildError> {
        Self::with_options(TransportOptions::default())
    }

    /// A transport with these options (timeouts, extra roots, the answer cap, the
    /// proxy). Must be used within a tokio runtime; built anywhere.
    pub fn with_options(options: TransportOptions) -> Result<Self, BuildError> {
        let tls = engage_tls::client_config(&options)?;
        let proxies = Arc::new(engage_proxy::Proxies::new(&options.proxy)?);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(options.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(proxy::ProxyConnector {
                http,
                proxies: proxies.clone(),
            });
        let client = PooledClient::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(https);
        Ok(HyperTransport {
            client,
            proxies,
            options,
        })
    }

    /// Sends one request; returns the response of any status, every header and the whole
    /// body, or a transport error.
    pub async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, TransportError> {
        let mut request = request.map(Full::new);
        // Through a proxy, a plain-HTTP request names its credentials itself; an HTTPS
        // one gave them to CONNECT.
        if let Some(route) = self.proxies.route(request.uri())
            && !route.tunnel()
        {
            route.authorize(&mut request);
        }
        // Tells, on a timeout, whether a connection was ever obtained (and so whether the
        // request may have gone out).
        let connection = hyper_util::client::legacy::connect::capture_connection(&mut request);
        let exchange = async {
            let response = self.client.request(request).await.map_err(classify)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.options.max_response_bytes)
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
        match tokio::time::timeout(self.options.request_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::new(
                TransportErrorKind::Timeout,
                connection.connection_metadata().is_some(),
                format!(
                    "no complete answer within {:?}",
                    self.options.request_timeout
                ),
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
    // A proxy's refusal is already classified by engage-proxy.
    if let Some(own) = find::<TransportError>(&e) {
        return own.clone();
    }
    if e.is_connect() {
        // Nothing was sent. TLS failures while connecting (an untrusted certificate) will
        // not heal; others (refused, unreachable, timed out) may.
        let kind = if engage_tls::is_tls_error(&e) {
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

/// The first error of type `E` in `e`'s chain.
fn find<'a, E: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(found) = c.downcast_ref::<E>() {
            return Some(found);
        }
        cur = c.source();
    }
    None
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

/// This crate's README examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
