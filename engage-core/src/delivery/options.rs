//! What every transport is configured with, in one type: timeouts, the roots it trusts
//! beyond the usual ones, how much of an answer it reads, and the proxy it goes through.

use std::time::Duration;

/// Largest answer body a transport reads by default (Mixpanel's are tiny; this guards
/// against a broken peer).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Options every engage transport takes (engage-hyper, engage-curl, engage-async-std).
///
/// ```
/// use engage_core::delivery::TransportOptions;
/// use std::time::Duration;
/// let options = TransportOptions::default()
///     .connect_timeout(Duration::from_secs(5))
///     .request_timeout(Duration::from_secs(20));
/// assert_eq!(options.request_timeout, Duration::from_secs(20));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportOptions {
    /// Time allowed to open a connection, TLS included (default 10 s).
    pub connect_timeout: Duration,
    /// Time allowed for a whole exchange, connection included (default 30 s).
    pub request_timeout: Duration,
    /// Root certificates (DER) trusted besides the usual ones: a private proxy's, a test's.
    pub extra_roots: Vec<Vec<u8>>,
    /// Trust only `extra_roots`.
    pub only_added_roots: bool,
    /// Largest answer body read (default 16 MiB).
    pub max_response_bytes: usize,
    /// The proxy to go through (default: the environment's, as curl reads it).
    pub proxy: Proxy,
}

/// Which proxy a transport sends through. Every engage transport applies the same rules
/// (engage-proxy, on hyper-util's matcher): `http://` proxies, CONNECT tunnels for
/// `https://` targets, absolute-form requests for `http://` ones, basic authentication
/// from the URL's user info.
///
/// ```
/// use engage_core::delivery::{Proxy, TransportOptions};
/// let options = TransportOptions::default().proxy(Proxy::url("http://user:secret@proxy.corp:3128"));
/// // Credentials never show.
/// assert_eq!(format!("{:?}", options.proxy), r#"Url("http://***@proxy.corp:3128")"#);
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Proxy {
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, upper or lower case, by
    /// curl's rules (`HTTP_PROXY` is not read when `REQUEST_METHOD` says this is CGI).
    #[default]
    FromEnvironment,
    /// No proxy, whatever the environment says.
    Direct,
    /// This proxy for every target (`http://[user:password@]host:port`), whatever the
    /// environment says.
    Url(String),
}

impl Proxy {
    /// [`Proxy::Url`].
    pub fn url(url: impl Into<String>) -> Proxy {
        Proxy::Url(url.into())
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proxy::FromEnvironment => f.write_str("FromEnvironment"),
            Proxy::Direct => f.write_str("Direct"),
            Proxy::Url(url) => {
                let shown = match url.contains("://") {
                    true => crate::text::hide_userinfo(url).into_owned(),
                    false => {
                        let full =
                            crate::text::hide_userinfo(&format!("http://{url}")).into_owned();
                        full["http://".len()..].to_owned()
                    }
                };
                f.debug_tuple("Url").field(&shown).finish()
            }
        }
    }
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            extra_roots: Vec::new(),
            only_added_roots: false,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            proxy: Proxy::FromEnvironment,
        }
    }
}

impl std::fmt::Debug for TransportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("extra_roots", &self.extra_roots.len())
            .field("only_added_roots", &self.only_added_roots)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("proxy", &self.proxy)
            .finish()
    }
}

impl TransportOptions {
    /// Sets the time allowed to open a connection.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Sets the time allowed for a whole exchange.
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// Also trusts this root certificate (DER).
    pub fn add_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.extra_roots.push(der.into());
        self
    }

    /// Trusts only the roots added with [`add_root_certificate`](Self::add_root_certificate).
    pub fn only_added_roots(mut self, yes: bool) -> Self {
        self.only_added_roots = yes;
        self
    }

    /// Sets the largest answer body read.
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    /// Sets the proxy.
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = proxy;
        self
    }
}
