//! What a transport reports when it gets no HTTP response.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// The kind of transport failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// No connection could be made (refused, DNS, unreachable, connect timeout).
    Connect,
    /// The request or the answer took too long.
    Timeout,
    /// TLS failed (certificate not trusted, handshake). Not retried: it will not heal.
    Tls,
    /// Reading or writing the connection failed (reset, closed early).
    Io,
    /// The peer broke HTTP (malformed answer).
    Protocol,
    /// The proxy refused to open a tunnel (its status, e.g. 403 or 407, is in the
    /// message). Not retried: it will not heal. A proxy that could not reach the server
    /// (502, 503, 504) is a [`Connect`](Self::Connect) error instead, retried.
    Proxy,
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportErrorKind::Connect => "connect",
            TransportErrorKind::Timeout => "timeout",
            TransportErrorKind::Tls => "TLS",
            TransportErrorKind::Io => "I/O",
            TransportErrorKind::Protocol => "protocol",
            TransportErrorKind::Proxy => "proxy",
        })
    }
}

/// A request that got no HTTP response: its kind, whether the server may have received
/// it (and so applied it), and the underlying error.
///
/// ```
/// use engage_core::TransportError;
/// use engage_core::delivery::TransportErrorKind;
/// let e = TransportError::new(TransportErrorKind::Timeout, true, "no answer within 10 s");
/// assert!(e.may_have_reached_server());
/// assert_eq!(e.to_string(), "timeout error (request may have reached the server): no answer within 10 s");
/// ```
#[derive(Debug, Clone)]
pub struct TransportError {
    kind: TransportErrorKind,
    may_have_reached_server: bool,
    message: String,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl TransportError {
    /// A transport error with a message.
    pub fn new(
        kind: TransportErrorKind,
        may_have_reached_server: bool,
        message: impl Into<String>,
    ) -> Self {
        TransportError {
            kind,
            may_have_reached_server,
            message: message.into(),
            source: None,
        }
    }

    /// A transport error wrapping the client's own error (its text becomes the message).
    pub fn with_source<E>(
        kind: TransportErrorKind,
        may_have_reached_server: bool,
        source: E,
    ) -> Self
    where
        E: StdError + Send + Sync + 'static,
    {
        TransportError {
            kind,
            may_have_reached_server,
            message: error_chain(&source),
            source: Some(Arc::new(source)),
        }
    }

    /// The kind.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// Whether the server may have received the request (and applied it).
    pub fn may_have_reached_server(&self) -> bool {
        self.may_have_reached_server
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// `error: cause: cause…` on one line.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error", self.kind)?;
        if self.may_have_reached_server {
            f.write_str(" (request may have reached the server)")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl StdError for TransportError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl PartialEq for TransportError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.may_have_reached_server == other.may_have_reached_server
            && self.message == other.message
    }
}
