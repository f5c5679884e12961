//! What every transport is configured with, in one type: timeouts, the roots it trusts
//! beyond the usual ones, and how much of an answer it reads.

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
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            extra_roots: Vec::new(),
            only_added_roots: false,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
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
}
