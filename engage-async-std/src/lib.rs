//! [engage](https://docs.rs/engage-core) transport on futures-io: hyper 1's HTTP/1.1 client
//! connection over any `AsyncRead + AsyncWrite` stream, TLS through futures-rustls (ring,
//! webpki roots), with an injected [`Runtime`] for connecting, spawning and sleeping.
//!
//! async-std is discontinued upstream (RUSTSEC-2025-0052). This crate is written against
//! futures-io and runs the same on [`AsyncStd`] and on [`Smol`], its maintained successor;
//! implement [`Runtime`] for anything else.
//!
//! In an application: a client sends from many tasks, batches in the background, and
//! shuts down with an exact account (the same on smol with `Smol` and `smol::block_on`).
//!
//! ```
//! use engage_async_std::{AsyncStd, AsyncStdTransport};
//! use engage_core::client::ClientConfig;
//! use engage_core::{Target, Token, Update};
//! use std::time::Duration;
//!
//! # let emulator = engage_emulator::Emulator::start(Default::default()).unwrap();
//! # let base_url = emulator.base_url();
//! async_std::task::block_on(async {
//!     // For Mixpanel itself: Target::region(Region::Us).
//!     let config = ClientConfig::new(Token::new("my-project-token")?, Target::base_url(&base_url)?);
//!     let client = AsyncStdTransport::new(AsyncStd)?.client(config);
//!     let tasks: Vec<_> = (0..4)
//!         .map(|_| {
//!             let client = client.clone();
//!             async_std::task::spawn(async move {
//!                 for i in 0..250 {
//!                     let update = Update::user(format!("user-{}", i % 50)).add([("logins", 1)]);
//!                     client.send(update).await.expect("the client is running");
//!                 }
//!             })
//!         })
//!         .collect();
//!     for task in tasks {
//!         task.await;
//!     }
//!     let summary = client.shutdown(Duration::from_secs(10)).await;
//!     assert_eq!((summary.sent, summary.accepted), (1000, 1000));
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # assert_eq!(emulator.profile("user-7").unwrap()["logins"], 20);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A bulk import of an iterator that ends:
//!
//! ```
//! use engage_async_std::{AsyncStd, AsyncStdTransport};
//! use engage_core::{BatchConfig, Endpoint, ImportConfig, Target, Token, Update};
//!
//! # let emulator = engage_emulator::Emulator::start(Default::default()).unwrap();
//! # let base_url = emulator.base_url();
//! // For Mixpanel itself: Target::region(Region::Us).
//! let config = ImportConfig::new(
//!     BatchConfig::new(Token::new("my-project-token")?, Endpoint::Engage),
//!     Target::base_url(&base_url)?,
//! );
//! let updates = (0..5_000).map(|i| Update::user(format!("user-{}", i % 100)).add([("logins", 1)]));
//! let transport = AsyncStdTransport::new(AsyncStd)?;
//! // The same on smol: AsyncStdTransport::new(Smol) and smol::block_on.
//! let summary = async_std::task::block_on(transport.import(config, updates, |_event| {}));
//! assert!(summary.all_accepted());
//! # assert_eq!(emulator.profile("user-7").unwrap()["logins"], 50);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod io;
mod runtime;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use engage_core::batch::Batch;
use engage_core::client::{Client, ClientConfig};
use engage_core::delivery::{ImportItem, Report, TransportErrorKind};
use engage_core::driver::SystemClock;
use engage_core::{ImportConfig, ImportEvent, ImportSummary, RetryPolicy, Target, TransportError};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, Response, Uri};

pub use io::FuturesIo;
#[cfg(feature = "async-std")]
pub use runtime::AsyncStd;
#[cfg(feature = "smol")]
pub use runtime::Smol;
pub use runtime::{BoxFuture, Runtime};

pub use engage_core::delivery::{Proxy, TransportOptions};
pub use engage_tls::BuildError;

type PoolKey = (bool, String, u16);
type Pool = Arc<Mutex<HashMap<PoolKey, Vec<SendRequest<Full<Bytes>>>>>>;

/// An HTTP/1.1 keep-alive client on futures-io. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct AsyncStdTransport<R: Runtime> {
    runtime: R,
    tls: futures_rustls::TlsConnector,
    proxies: Arc<engage_proxy::Proxies>,
    options: TransportOptions,
    pool: Pool,
}

impl<R: Runtime> std::fmt::Debug for AsyncStdTransport<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncStdTransport")
            .field("options", &self.options)
            .finish()
    }
}

/// Opens a CONNECT tunnel to `target` on `tcp`, a connection to the proxy of `route`.
async fn tunnel<S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin>(
    tcp: &mut S,
    target: &Uri,
    route: &engage_proxy::Route,
) -> Result<(), TransportError> {
    let io_error = |e| TransportError::with_source(TransportErrorKind::Connect, false, e);
    let request = engage_proxy::connect_request(target, route);
    let mut written = 0;
    while written < request.len() {
        let n = std::future::poll_fn(|cx| {
            std::pin::Pin::new(&mut *tcp).poll_write(cx, &request[written..])
        })
        .await
        .map_err(io_error)?;
        if n == 0 {
            return Err(engage_proxy::closed_before_reply(route));
        }
        written += n;
    }
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *tcp).poll_flush(cx))
        .await
        .map_err(io_error)?;
    let mut reply = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let n = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *tcp).poll_read(cx, &mut chunk))
            .await
            .map_err(io_error)?;
        if n == 0 {
            return Err(engage_proxy::closed_before_reply(route));
        }
        reply.extend_from_slice(&chunk[..n]);
        if let Some(end) = engage_proxy::read_connect_reply(&reply, route)? {
            if end != reply.len() {
                // Nothing may come from the target before the client's TLS hello.
                return Err(TransportError::new(
                    TransportErrorKind::Protocol,
                    false,
                    format!("proxy {route} sent bytes after its answer to CONNECT"),
                ));
            }
            return Ok(());
        }
    }
}

/// Races `fut` against `timer`: `None` if the timer wins.
async fn with_timeout<T>(timer: BoxFuture<()>, fut: impl Future<Output = T>) -> Option<T> {
    let mut fut = std::pin::pin!(fut);
    let mut timer = timer;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

impl<R: Runtime> AsyncStdTransport<R> {
    /// Default options on `runtime`.
    pub fn new(runtime: R) -> Result<Self, BuildError> {
        Self::with_options(runtime, TransportOptions::default())
    }

    /// A transport on `runtime` with these options (timeouts, extra roots, the answer cap,
    /// the proxy).
    pub fn with_options(runtime: R, options: TransportOptions) -> Result<Self, BuildError> {
        let tls = engage_tls::client_config(&options)?;
        Ok(AsyncStdTransport {
            runtime,
            tls: futures_rustls::TlsConnector::from(Arc::new(tls)),
            proxies: Arc::new(engage_proxy::Proxies::new(&options.proxy)?),
            options,
            pool: Arc::default(),
        })
    }

    /// A fresh connection: TCP (to the target, or to its proxy and through a CONNECT
    /// tunnel for https), TLS for https, then the HTTP/1.1 handshake; the connection task
    /// goes to the runtime's spawner.
    async fn connect(
        &self,
        target: &Uri,
        route: Option<&engage_proxy::Route>,
        https: bool,
        host: &str,
        port: u16,
    ) -> Result<SendRequest<Full<Bytes>>, TransportError> {
        let connecting = async {
            let (to_host, to_port) = match route {
                Some(r) => (r.host(), r.port()),
                None => (host, port),
            };
            let mut tcp =
                self.runtime.connect(to_host, to_port).await.map_err(|e| {
                    TransportError::with_source(TransportErrorKind::Connect, false, e)
                })?;
            if let Some(route) = route.filter(|r| r.tunnel()) {
                tunnel(&mut tcp, target, route).await?;
            }
            let io: Box<dyn runtime::Stream> = if https {
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
                        TransportError::new(
                            TransportErrorKind::Tls,
                            false,
                            format!("invalid server name {host:?}: {e}"),
                        )
                    })?;
                let tls = self.tls.connect(name, tcp).await.map_err(|e| {
                    let kind = if engage_tls::is_tls_error(&e) {
                        TransportErrorKind::Tls
                    } else {
                        TransportErrorKind::Connect
                    };
                    TransportError::with_source(kind, false, e)
                })?;
                Box::new(tls)
            } else {
                Box::new(tcp)
            };
            let (sender, connection) = hyper::client::conn::http1::handshake(FuturesIo::new(io))
                .await
                .map_err(|e| TransportError::with_source(TransportErrorKind::Connect, false, e))?;
            self.runtime.spawn(Box::pin(async move {
                let _ = connection.await;
            }));
            Ok(sender)
        };
        match with_timeout(self.runtime.sleep(self.options.connect_timeout), connecting).await {
            Some(result) => result,
            None => Err(TransportError::new(
                TransportErrorKind::Timeout,
                false,
                format!("no connection within {:?}", self.options.connect_timeout),
            )),
        }
    }

    fn pooled(&self, key: &PoolKey) -> Option<SendRequest<Full<Bytes>>> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.get_mut(key)?;
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn give_back(&self, key: PoolKey, sender: SendRequest<Full<Bytes>>) {
        if !sender.is_closed() {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.entry(key).or_default().push(sender);
        }
    }

    /// Sends one request; returns the response of any status, every header and the whole
    /// body, or a transport error.
    pub async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, TransportError> {
        let uri = request.uri().clone();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => {
                return Err(TransportError::new(
                    TransportErrorKind::Connect,
                    false,
                    format!("unsupported scheme {other:?}"),
                ));
            }
        };
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let key: PoolKey = (https, host.clone(), port);
        let route = self.proxies.route(&uri);
        let (mut parts, body) = request.into_parts();
        if !parts.headers.contains_key(HOST) {
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
            if let Ok(v) = HeaderValue::from_str(authority) {
                parts.headers.insert(HOST, v);
            }
        }
        match &route {
            // To a proxy, a plain-HTTP request goes in absolute form with its credentials.
            Some(r) if !r.tunnel() => {
                if let Some(v) = r.authorization() {
                    parts
                        .headers
                        .insert(hyper::header::PROXY_AUTHORIZATION, v.clone());
                }
            }
            // To the server (or through a tunnel): origin-form, path and query only.
            _ => {
                parts.uri = uri
                    .path_and_query()
                    .map(|pq| pq.as_str())
                    .unwrap_or("/")
                    .parse::<Uri>()
                    .unwrap_or_default();
            }
        }
        // Set once a connection is in hand: a timeout before that never sent anything.
        let connected = std::sync::atomic::AtomicBool::new(false);
        let exchange = async {
            let mut sender = match self.pooled(&key) {
                Some(s) => s,
                None => {
                    self.connect(&uri, route.as_ref(), https, &host, port)
                        .await?
                }
            };
            connected.store(true, std::sync::atomic::Ordering::Relaxed);
            let request = Request::from_parts(parts.clone(), Full::new(body.clone()));
            let response = match sender.send_request(request).await {
                Ok(r) => r,
                // A pooled connection the server had closed before the request went out:
                // nothing was sent, so try once on a fresh connection.
                Err(e) if e.is_canceled() => {
                    sender = self
                        .connect(&uri, route.as_ref(), https, &host, port)
                        .await?;
                    sender
                        .send_request(Request::from_parts(parts, Full::new(body)))
                        .await
                        .map_err(classify)?
                }
                Err(e) => return Err(classify(e)),
            };
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.options.max_response_bytes)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(e) => classify(*e),
                    Err(e) => {
                        TransportError::new(TransportErrorKind::Protocol, true, e.to_string())
                    }
                })?
                .to_bytes();
            self.give_back(key.clone(), sender);
            Ok(Response::from_parts(parts, body))
        };
        match with_timeout(self.runtime.sleep(self.options.request_timeout), exchange).await {
            Some(result) => result,
            None => Err(TransportError::new(
                TransportErrorKind::Timeout,
                connected.load(std::sync::atomic::Ordering::Relaxed),
                format!(
                    "no complete answer within {:?}",
                    self.options.request_timeout
                ),
            )),
        }
    }

    /// Delivers one batch with engage-core's retry machine and the runtime's sleep.
    pub async fn deliver(&self, batch: Batch, target: &Target, policy: RetryPolicy) -> Report {
        let delivery = engage_core::delivery::Delivery::new(batch, target.clone(), policy);
        engage_core::driver::deliver(
            delivery,
            &SystemClock,
            |r| self.send(r),
            |d| self.runtime.sleep(d),
        )
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
    /// the background on this transport's runtime (async-std or smol), flushed on demand,
    /// shut down with an exact account. See [`engage_core::client`].
    pub fn client(&self, config: ClientConfig) -> Client {
        let (client, worker) = Client::new(config);
        let transport = self.clone();
        let sleeper = self.runtime.clone();
        self.runtime.spawn(Box::pin(async move {
            worker
                .run(
                    &SystemClock,
                    move |request| {
                        let transport = transport.clone();
                        async move { transport.send(request).await }
                    },
                    move |d| sleeper.sleep(d),
                )
                .await;
        }));
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
            |d| self.runtime.sleep(d),
        )
        .await
    }
}

fn classify(e: hyper::Error) -> TransportError {
    let kind = if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        TransportErrorKind::Protocol
    } else {
        TransportErrorKind::Io
    };
    TransportError::with_source(kind, !e.is_canceled(), e)
}

/// This crate's README examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
