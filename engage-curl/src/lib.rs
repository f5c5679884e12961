//! [engage](https://docs.rs/engage-core) transport over libcurl (the `curl` crate): a
//! blocking client that reuses its handle (keep-alive), and a concurrent importer on a
//! `Multi` handle, many batches in flight on one thread.
//!
//! In an application: a client sends from many threads, one background thread batches
//! and sends, and a shutdown gives an exact account.
//!
//! ```
//! use engage_core::client::ClientConfig;
//! use engage_core::{Target, Token, Update};
//! use engage_curl::CurlTransport;
//! use std::time::Duration;
//!
//! # let emulator = engage_emulator::Emulator::start(Default::default()).unwrap();
//! # let base_url = emulator.base_url();
//! // For Mixpanel itself: Target::region(Region::Us).
//! let config = ClientConfig::new(Token::new("my-project-token")?, Target::base_url(&base_url)?);
//! let client = CurlTransport::new()?.client(config);
//! let threads: Vec<_> = (0..4)
//!     .map(|_| {
//!         let client = client.clone();
//!         std::thread::spawn(move || {
//!             for i in 0..250 {
//!                 let update = Update::user(format!("user-{}", i % 50)).add([("logins", 1)]);
//!                 client.send_blocking(update).expect("the client is running");
//!             }
//!         })
//!     })
//!     .collect();
//! for t in threads {
//!     t.join().unwrap();
//! }
//! let summary = client.shutdown_blocking(Duration::from_secs(10));
//! assert_eq!((summary.sent, summary.accepted), (1000, 1000));
//! # assert_eq!(emulator.profile("user-7").unwrap()["logins"], 20);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A bulk import of an iterator that ends:
//!
//! ```
//! use engage_core::{BatchConfig, Endpoint, ImportConfig, Target, Token, Update};
//! use engage_curl::CurlTransport;
//!
//! # let emulator = engage_emulator::Emulator::start(Default::default()).unwrap();
//! # let base_url = emulator.base_url();
//! // For Mixpanel itself: Target::region(Region::Us).
//! let config = ImportConfig::new(
//!     BatchConfig::new(Token::new("my-project-token")?, Endpoint::Engage),
//!     Target::base_url(&base_url)?,
//! );
//! let updates = (0..5_000).map(|i| Update::user(format!("user-{}", i % 100)).add([("logins", 1)]));
//! let summary = CurlTransport::new()?.import(config, updates, |_event| {});
//! assert!(summary.all_accepted());
//! # assert_eq!(emulator.profile("user-7").unwrap()["logins"], 50);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Without libcurl's development headers the `curl` crate builds its bundled libcurl;
//! features `static-curl`, `static-ssl` and `rustls` pass through to it.

#![cfg_attr(docsrs, feature(doc_cfg))]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use curl::easy::{Easy2, Handler, HttpVersion, List, ReadError, SeekResult};
use curl::multi::{Easy2Handle, Multi};
use engage_core::batch::Batch;
use engage_core::client::{ChannelFeed, Client, ClientConfig};
use engage_core::delivery::{ImportAction, ImportItem, Importer, Report, TransportErrorKind};
/// The options this transport takes (re-exported from engage-core).
pub use engage_core::delivery::{Proxy, TransportOptions};
use engage_core::driver::SystemClock;
use engage_core::{ImportConfig, ImportEvent, ImportSummary, RetryPolicy, Target, TransportError};
use engage_proxy::Proxies;
/// Why a proxy setting cannot be used (re-exported from engage-proxy).
pub use engage_proxy::ProxyError;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use std::sync::Arc;

/// Collects one exchange: the request body going out, the final response's headers and
/// body coming in.
#[derive(Debug, Default)]
struct Exchange {
    upload: Bytes,
    sent: usize,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
    /// The proxy this exchange goes through, if any.
    route: Option<engage_proxy::Route>,
    /// Largest body read ([`TransportOptions::max_response_bytes`]).
    max_body: usize,
    too_large: bool,
    /// Whether the blank line ending the final response's head arrived: without it the
    /// answer was cut off, whatever libcurl makes of the status line.
    head_complete: bool,
}

impl Handler for Exchange {
    fn read(&mut self, into: &mut [u8]) -> Result<usize, ReadError> {
        let rest = &self.upload[self.sent..];
        let n = rest.len().min(into.len());
        into[..n].copy_from_slice(&rest[..n]);
        self.sent += n;
        Ok(n)
    }

    /// libcurl rewinds the body to resend it on a fresh connection when a reused one
    /// turns out dead before anything was answered.
    fn seek(&mut self, whence: std::io::SeekFrom) -> SeekResult {
        match whence {
            std::io::SeekFrom::Start(at) if at <= self.upload.len() as u64 => {
                self.sent = at as usize;
                SeekResult::Ok
            }
            _ => SeekResult::CantSeek,
        }
    }

    fn header(&mut self, line: &[u8]) -> bool {
        if line.starts_with(b"HTTP/") {
            // A new status line: a 100 Continue (or a redirect) came first; keep only the
            // final response's headers.
            self.headers.clear();
            self.head_complete = false;
        } else if line.trim_ascii().is_empty() {
            self.head_complete = true;
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = HeaderName::from_bytes(line[..colon].trim_ascii());
            let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
            if let (Ok(name), Ok(value)) = (name, value) {
                self.headers.push((name, value));
            }
        }
        true
    }

    fn write(&mut self, data: &[u8]) -> Result<usize, curl::easy::WriteError> {
        if self.body.len() + data.len() > self.max_body {
            self.too_large = true;
            return Ok(0); // aborts the transfer
        }
        self.body.extend_from_slice(data);
        Ok(data.len())
    }
}

/// The libcurl form of [`TransportOptions`]: roots as one PEM blob, proxies resolved.
#[derive(Debug, Clone)]
struct Settings {
    options: TransportOptions,
    roots_pem: Vec<u8>,
    proxies: Arc<Proxies>,
}

impl Settings {
    fn new(options: TransportOptions) -> Result<Settings, ProxyError> {
        let proxies = Arc::new(Proxies::new(&options.proxy)?);
        let mut roots_pem = Vec::new();
        for der in &options.extra_roots {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            roots_pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                roots_pem.extend_from_slice(line);
                roots_pem.push(b'\n');
            }
            roots_pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
        }
        Ok(Settings {
            options,
            roots_pem,
            proxies,
        })
    }
}

/// A blocking libcurl client: one reused handle (keep-alive) for [`send`](Self::send) and
/// [`deliver`](Self::deliver); a `Multi` handle for [`import`](Self::import).
#[derive(Debug)]
pub struct CurlTransport {
    easy: Mutex<Easy2<Exchange>>,
    settings: Settings,
}

/// Sets up `easy` for `request`.
fn prepare(
    easy: &mut Easy2<Exchange>,
    request: Request<Bytes>,
    settings: &Settings,
) -> Result<(), curl::Error> {
    let (parts, body) = request.into_parts();
    // Options left by an earlier request (a proxy's credentials, a method) must not
    // carry over; live connections do.
    easy.reset();
    let route = settings.proxies.route(&parts.uri);
    match &route {
        Some(route) => {
            easy.proxy(&route.to_string())?;
            if let Some((user, password)) = route.credentials() {
                easy.proxy_username(&user)?;
                easy.proxy_password(&password)?;
                easy.proxy_auth(curl::easy::Auth::new().basic(true))?;
            }
        }
        // Otherwise libcurl would read the environment by its own, different rules.
        None => easy.proxy("")?,
    }
    *easy.get_mut() = Exchange {
        upload: body.clone(),
        max_body: settings.options.max_response_bytes,
        route,
        ..Exchange::default()
    };
    easy.url(&parts.uri.to_string())?;
    easy.http_version(HttpVersion::V11)?;
    if parts.method == http::Method::POST {
        easy.post(true)?;
        easy.post_field_size(body.len() as u64)?;
    } else {
        easy.custom_request(parts.method.as_str())?;
        if !body.is_empty() {
            easy.upload(true)?;
            easy.in_filesize(body.len() as u64)?;
        }
    }
    let mut headers = List::new();
    for (name, value) in &parts.headers {
        let mut line = name.as_str().as_bytes().to_vec();
        line.extend_from_slice(b": ");
        line.extend_from_slice(value.as_bytes());
        headers.append(&String::from_utf8_lossy(&line))?;
    }
    // No `Expect: 100-continue` round trip before the body.
    headers.append("Expect:")?;
    easy.http_headers(headers)?;
    let options = &settings.options;
    easy.connect_timeout(options.connect_timeout)?;
    easy.timeout(options.request_timeout)?;
    easy.follow_location(false)?;
    easy.signal(false)?;
    if !settings.roots_pem.is_empty() {
        // libcurl reads these instead of its default CA file.
        easy.ssl_cainfo_blob(&settings.roots_pem)?;
    }
    Ok(())
}

/// The response of a finished transfer, or the classified error.
fn finish(
    easy: &mut Easy2<Exchange>,
    result: Result<(), curl::Error>,
) -> Result<Response<Bytes>, TransportError> {
    if let Err(e) = result {
        if easy.get_ref().too_large {
            return Err(TransportError::new(
                TransportErrorKind::Protocol,
                true,
                format!("response body over {} bytes", easy.get_ref().max_body),
            ));
        }
        // The proxy's answer to CONNECT, when it refused the tunnel.
        let tunnel_status = easy.http_connectcode().unwrap_or(0);
        if let Some(route) = &easy.get_ref().route
            && tunnel_status != 0
            && !(200..300).contains(&tunnel_status)
        {
            return Err(engage_proxy::refused(
                route,
                u16::try_from(tunnel_status).unwrap_or(0),
                "",
            ));
        }
        let connected = easy
            .connect_time()
            .map(|t| t > Duration::ZERO)
            .unwrap_or(false);
        return Err(classify(e, connected));
    }
    let code = easy
        .response_code()
        .map_err(|e| TransportError::with_source(TransportErrorKind::Protocol, true, e))?;
    let status = u16::try_from(code)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| {
            TransportError::new(TransportErrorKind::Protocol, true, format!("status {code}"))
        })?;
    let exchange = std::mem::take(easy.get_mut());
    if !exchange.head_complete {
        return Err(TransportError::new(
            TransportErrorKind::Io,
            true,
            "the connection closed in the middle of the answer's head",
        ));
    }
    let mut response = Response::new(Bytes::from(exchange.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in exchange.headers {
        headers.append(name, value);
    }
    Ok(response)
}

/// `CURLE_WEIRD_SERVER_REPLY`: the peer did not speak HTTP.
const WEIRD_SERVER_REPLY: u32 = 8;

fn classify(e: curl::Error, sent: bool) -> TransportError {
    let kind = if e.is_couldnt_resolve_host()
        || e.is_couldnt_resolve_proxy()
        || e.is_couldnt_connect()
        || e.is_ssl_connect_error()
    {
        // `is_ssl_connect_error` also covers a connection reset during the handshake:
        // retryable, unlike the certificate failures below.
        TransportErrorKind::Connect
    } else if e.is_operation_timedout() {
        TransportErrorKind::Timeout
    } else if e.is_peer_failed_verification()
        || e.is_ssl_certproblem()
        || e.is_ssl_cacert()
        || e.is_ssl_cipher()
        || e.is_ssl_issuer_error()
        || e.is_ssl_cacert_badfile()
    {
        TransportErrorKind::Tls
    } else if e.code() == WEIRD_SERVER_REPLY || e.is_http2_error() || e.is_bad_content_encoding() {
        TransportErrorKind::Protocol
    } else {
        TransportErrorKind::Io
    };
    let reached = sent && !matches!(kind, TransportErrorKind::Connect | TransportErrorKind::Tls);
    TransportError::with_source(kind, reached, e)
}

impl CurlTransport {
    /// Default options: libcurl's CA store, 10 s connect and 30 s request timeouts, the
    /// environment's proxy (an unusable proxy variable is an error).
    pub fn new() -> Result<Self, ProxyError> {
        Self::with_options(TransportOptions::default())
    }

    /// A transport with these options. Roots added with
    /// [`TransportOptions::add_root_certificate`] replace libcurl's default CA file (so
    /// [`TransportOptions::only_added_roots`] is always in effect once a root is added).
    /// The proxy follows engage-proxy's rules, the same as every engage transport, not
    /// libcurl's own reading of the environment.
    pub fn with_options(options: TransportOptions) -> Result<Self, ProxyError> {
        Ok(Self::from_settings(Settings::new(options)?))
    }

    fn from_settings(settings: Settings) -> Self {
        CurlTransport {
            easy: Mutex::new(Easy2::new(Exchange::default())),
            settings,
        }
    }

    /// Sends one request on the reused handle; returns the response of any status with
    /// every header of the final response and the whole body, or a transport error.
    pub fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, TransportError> {
        let mut easy = self.easy.lock().unwrap_or_else(|e| e.into_inner());
        prepare(&mut easy, request, &self.settings)
            .map_err(|e| TransportError::with_source(TransportErrorKind::Protocol, false, e))?;
        let result = easy.perform();
        finish(&mut easy, result)
    }

    /// Delivers one batch with engage-core's retry machine, sleeping the thread between
    /// attempts.
    pub fn deliver(&self, batch: Batch, target: &Target, policy: RetryPolicy) -> Report {
        let delivery = engage_core::delivery::Delivery::new(batch, target.clone(), policy);
        engage_core::driver::deliver_blocking(
            delivery,
            &SystemClock,
            |r| self.send(r),
            std::thread::sleep,
        )
    }

    /// Imports a stream of updates with up to `config.concurrency` transfers in flight on
    /// one `Multi` handle (no threads), keeping each profile's updates in order (see
    /// [`engage_core::delivery::Importer`]).
    pub fn import<U, T>(
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
        self.run(config, &mut feed)
    }

    /// A long-running client for an application: updates sent from any thread, batched
    /// and sent by one background thread driving a `Multi` handle, flushed on demand, shut
    /// down with an exact account. The thread waits in `Multi::poll`, and a send wakes it
    /// (curl's `Multi` waker); while senders keep it busy it looks at its queue every
    /// millisecond instead. See [`engage_core::client`].
    pub fn client(&self, config: ClientConfig) -> Client {
        let (client, worker) = Client::new(config);
        let settings = self.settings.clone();
        let spawned = std::thread::Builder::new()
            .name("engage-curl-client".into())
            .spawn(move || {
                let (config, mut feed) = worker.into_parts();
                let multi = Multi::new();
                let waker = multi.waker();
                feed.wake_with(move || {
                    // A failure (the Multi gone, a libcurl without wake-ups) leaves the
                    // thread to its own deadline, at most 100 ms away.
                    let _ = waker.wakeup();
                });
                let summary = CurlTransport::from_settings(settings).run_on(
                    &multi,
                    config,
                    &mut feed,
                    ChannelFeed::arm_wake,
                );
                feed.finish(&summary);
            });
        if let Err(e) = spawned {
            // No thread: the client cannot run. Its handle says so as it is used.
            #[cfg(feature = "tracing")]
            tracing::error!("engage-curl: cannot start the client thread: {e}");
            let _ = e;
        }
        client
    }

    /// Imports from a [`Feed`](engage_core::delivery::Feed): the updates come from it, the
    /// events go to it, and it may ask to stop (see [`engage_core::delivery::Importer::stop`]).
    pub fn run<F: engage_core::delivery::Feed>(
        &self,
        config: ImportConfig,
        feed: &mut F,
    ) -> ImportSummary {
        self.run_on(&Multi::new(), config, feed, |_| true)
    }

    /// [`run`](Self::run) on a given `Multi` handle; `may_wait` is asked before each wait
    /// (`false`: step again at once, input came in).
    fn run_on<F: engage_core::delivery::Feed>(
        &self,
        multi: &Multi,
        config: ImportConfig,
        feed: &mut F,
        mut may_wait: impl FnMut(&mut F) -> bool,
    ) -> ImportSummary {
        let mut importer = Importer::new(config);
        let mut running: HashMap<usize, (engage_core::delivery::RequestId, Easy2Handle<Exchange>)> =
            HashMap::new();
        let mut idle: Vec<Easy2<Exchange>> = Vec::new();
        let mut next_token = 0usize;
        loop {
            match importer.step(Instant::now(), feed) {
                ImportAction::Send { id, request } => {
                    let mut easy = idle
                        .pop()
                        .unwrap_or_else(|| Easy2::new(Exchange::default()));
                    let started = prepare(&mut easy, request, &self.settings).map_err(|e| {
                        TransportError::with_source(TransportErrorKind::Protocol, false, e)
                    });
                    let added = started.and_then(|()| {
                        multi.add2(easy).map_err(|e| {
                            TransportError::with_source(TransportErrorKind::Io, false, e)
                        })
                    });
                    match added {
                        Ok(mut handle) => {
                            next_token += 1;
                            match handle.set_token(next_token) {
                                Ok(()) => {
                                    running.insert(next_token, (id, handle));
                                }
                                Err(e) => {
                                    // Its completion could not be matched: never start it.
                                    let _ = multi.remove2(handle);
                                    let err = TransportError::with_source(
                                        TransportErrorKind::Io,
                                        false,
                                        e,
                                    );
                                    importer.on_result(
                                        id,
                                        Instant::now(),
                                        SystemTime::now(),
                                        Err(err),
                                    );
                                }
                            }
                        }
                        Err(e) => importer.on_result(id, Instant::now(), SystemTime::now(), Err(e)),
                    }
                }
                ImportAction::NeedInput => {}
                ImportAction::Done => break,
                ImportAction::Wait { until } => {
                    if let Err(e) = multi.perform() {
                        // The Multi handle itself failed: no transfer will complete.
                        for (_, (id, handle)) in running.drain() {
                            let _ = multi.remove2(handle);
                            let err = TransportError::with_source(
                                TransportErrorKind::Io,
                                true,
                                e.clone(),
                            );
                            importer.on_result(id, Instant::now(), SystemTime::now(), Err(err));
                        }
                        continue;
                    }
                    let mut finished = Vec::new();
                    multi.messages(|m| {
                        if let (Ok(token), Some(result)) = (m.token(), m.result()) {
                            finished.push((token, result));
                        }
                    });
                    let progressed = !finished.is_empty();
                    for (token, result) in finished {
                        let Some((id, handle)) = running.remove(&token) else {
                            continue;
                        };
                        let outcome = match multi.remove2(handle) {
                            Ok(mut easy) => {
                                let r = finish(&mut easy, result);
                                idle.push(easy);
                                r
                            }
                            Err(e) => {
                                Err(TransportError::with_source(TransportErrorKind::Io, true, e))
                            }
                        };
                        importer.on_result(id, Instant::now(), SystemTime::now(), outcome);
                    }
                    // A feed is asked only while the importer takes input: otherwise what
                    // it last saw of its queue is stale, and a message could not be taken.
                    if !progressed && (!importer.wants_input() || may_wait(feed)) {
                        let cap = Duration::from_millis(100);
                        let wait = until.map_or(cap, |u| {
                            u.saturating_duration_since(Instant::now()).min(cap)
                        });
                        // Waits for a transfer, the timeout or a waker, with or without
                        // transfers running. libcurl counts whole milliseconds: rounded
                        // up, or a wait of 0.9 ms would not wait at all.
                        let millis = wait.as_micros().div_ceil(1000);
                        let _ = multi.poll(
                            &mut [],
                            Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX)),
                        );
                    }
                }
            }
        }
        while let Some(e) = importer.next_event() {
            feed.on_event(e);
        }
        importer.summary().clone()
    }
}

/// This crate's README examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
