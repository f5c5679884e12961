//! The proxy rules every engage transport shares: which proxy a target goes through
//! ([`Proxies`], on hyper-util's matcher: curl's rules for `HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY` and `NO_PROXY`), and the CONNECT handshake as bytes in and out
//! ([`connect_request`], [`read_connect_reply`]), so that a transport only moves them.
//!
//! ```
//! use engage_core::delivery::Proxy;
//! use engage_proxy::{Proxies, connect_request, read_connect_reply};
//!
//! let proxies = Proxies::new(&Proxy::url("http://ann:secret@127.0.0.1:3128"))?;
//! let target: http::Uri = "https://api.mixpanel.com/engage".parse()?;
//! let route = proxies.route(&target).expect("every target goes through it");
//! assert!(route.tunnel());
//! assert_eq!((route.host(), route.port()), ("127.0.0.1", 3128));
//! assert_eq!(route.to_string(), "http://127.0.0.1:3128"); // no credentials
//!
//! let hello = connect_request(&target, &route);
//! assert!(hello.starts_with(b"CONNECT api.mixpanel.com:443 HTTP/1.1\r\n"));
//! // The proxy's answer, as it arrives:
//! assert_eq!(read_connect_reply(b"HTTP/1.1 200 Connection est", &route)?, None);
//! assert_eq!(read_connect_reply(b"HTTP/1.1 200 Connection established\r\n\r\n", &route)?, Some(39));
//! let refused = read_connect_reply(b"HTTP/1.1 403 Forbidden\r\n\r\n", &route).unwrap_err();
//! assert_eq!(refused.kind(), engage_core::delivery::TransportErrorKind::Proxy);
//! assert!(!refused.to_string().contains("secret"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;

use base64::Engine as _;
use engage_core::TransportError;
use engage_core::delivery::{Proxy, TransportErrorKind};
use engage_core::text::{escape_controls, hide_userinfo};
use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::Matcher;

/// The port of a proxy URL that names none: curl's default, so every transport agrees.
pub const DEFAULT_PROXY_PORT: u16 = 1080;

/// Longest CONNECT answer head read before giving up on the proxy.
pub const MAX_REPLY_HEAD: usize = 16 * 1024;

/// A proxy setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The URL is not one of an HTTP proxy.
    #[error("{origin} is not a usable proxy: {shown:?} ({reason})")]
    Unusable {
        /// Where it came from: `HTTPS_PROXY`, `the proxy option`, …
        origin: String,
        /// The value, credentials hidden.
        shown: String,
        /// Why.
        reason: &'static str,
    },
}

/// Which proxy each target goes through.
#[derive(Debug)]
pub struct Proxies {
    /// `None`: always direct.
    matcher: Option<Matcher>,
}

/// Environment variables read, by pairs: the first set of each pair counts.
const VARIABLES: [[&str; 2]; 3] = [
    ["HTTPS_PROXY", "https_proxy"],
    ["HTTP_PROXY", "http_proxy"],
    ["ALL_PROXY", "all_proxy"],
];

/// A target only used to ask the matcher what it makes of a proxy URL; never contacted.
const PROBE: &str = "http://probe.invalid/";

impl Proxies {
    /// The proxies `choice` describes. An environment variable or URL that is set but
    /// names no usable HTTP proxy is an error (it would otherwise send everything direct
    /// without a word).
    pub fn new(choice: &Proxy) -> Result<Proxies, ProxyError> {
        let matcher = match choice {
            Proxy::Direct => None,
            Proxy::Url(url) => {
                check(url, "the proxy option")?;
                Some(Matcher::builder().all(url.clone()).build())
            }
            Proxy::FromEnvironment => {
                // The matcher ignores them all under CGI, where HTTP_PROXY is a header.
                if std::env::var_os("REQUEST_METHOD").is_none() {
                    for pair in VARIABLES {
                        let found = pair
                            .iter()
                            .find_map(|name| std::env::var(name).ok().map(|v| (name, v)));
                        if let Some((name, value)) = found
                            && !value.trim().is_empty()
                        {
                            check(&value, name)?;
                        }
                    }
                }
                Some(Matcher::from_env())
            }
            _ => None,
        };
        Ok(Proxies { matcher })
    }

    /// No proxy at all.
    pub fn direct() -> Proxies {
        Proxies { matcher: None }
    }

    /// The proxy `target` goes through, if any.
    pub fn route(&self, target: &Uri) -> Option<Route> {
        let intercept = self.matcher.as_ref()?.intercept(target)?;
        let uri = intercept.uri();
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        Some(Route {
            host: host.to_owned(),
            port: uri.port_u16().unwrap_or(DEFAULT_PROXY_PORT),
            authorization: intercept.basic_auth().cloned(),
            tunnel: target.scheme_str() == Some("https"),
        })
    }
}

/// Refuses what the matcher would take but no engage transport can use the same way.
fn check(url: &str, origin: &str) -> Result<(), ProxyError> {
    let unusable = |reason| ProxyError::Unusable {
        origin: origin.to_owned(),
        shown: shown(url),
        reason,
    };
    let probe: Uri = PROBE.parse().expect("a valid URI");
    let matcher = Matcher::builder().all(url.to_owned()).build();
    let Some(intercept) = matcher.intercept(&probe) else {
        return Err(unusable("not a proxy URL: http://host:port expected"));
    };
    match intercept.uri().scheme_str() {
        Some("http") => Ok(()),
        Some("https") => Err(unusable(
            "https:// proxies (TLS to the proxy) are not supported: use http://",
        )),
        _ => Err(unusable(
            "SOCKS proxies are not supported: use an HTTP proxy",
        )),
    }
}

/// A proxy URL as it may be shown: credentials hidden, even without a scheme.
fn shown(url: &str) -> String {
    let text = escape_controls(url);
    if text.contains("://") {
        hide_userinfo(&text).into_owned()
    } else {
        let full = hide_userinfo(&format!("http://{text}")).into_owned();
        full["http://".len()..].to_owned()
    }
}

/// The way to one target through a proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct Route {
    host: String,
    port: u16,
    authorization: Option<HeaderValue>,
    tunnel: bool,
}

impl Route {
    /// The proxy's host (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port ([`DEFAULT_PROXY_PORT`] when its URL names none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether to open a CONNECT tunnel (an `https://` target) rather than send the
    /// request to the proxy in absolute form (an `http://` target).
    pub fn tunnel(&self) -> bool {
        self.tunnel
    }

    /// The `Proxy-Authorization` value (basic, from the proxy URL's user info), marked
    /// sensitive.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// The user and password, for clients that take them apart (libcurl).
    pub fn credentials(&self) -> Option<(String, String)> {
        let value = self.authorization.as_ref()?.to_str().ok()?;
        let encoded = value.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        Some((user.to_owned(), password.to_owned()))
    }

    /// Adds `Proxy-Authorization` to a request sent to the proxy in absolute form.
    pub fn authorize<B>(&self, request: &mut http::Request<B>) {
        if let Some(value) = &self.authorization {
            request
                .headers_mut()
                .insert(http::header::PROXY_AUTHORIZATION, value.clone());
        }
    }
}

/// `http://host:port`, without credentials.
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("proxy", &self.to_string())
            .field("authorization", &self.authorization.as_ref().map(|_| "…"))
            .field("tunnel", &self.tunnel)
            .finish()
    }
}

/// `host:port` of a target, as CONNECT names it.
fn authority(target: &Uri) -> String {
    let host = target.host().unwrap_or_default();
    let port = target.port_u16().unwrap_or(match target.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    format!("{host}:{port}")
}

/// The CONNECT request that opens a tunnel to `target` through `route`.
pub fn connect_request(target: &Uri, route: &Route) -> Vec<u8> {
    let authority = authority(target);
    let mut out = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    if let Some(value) = &route.authorization {
        out.extend_from_slice(b"Proxy-Authorization: ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Reads the proxy's answer to CONNECT from what has arrived so far: `Ok(None)` while its
/// head is incomplete, `Ok(Some(n))` once a 2xx head of `n` bytes is in (the tunnel is
/// open; bytes after it belong to the target), or the error the answer means.
pub fn read_connect_reply(buf: &[u8], route: &Route) -> Result<Option<usize>, TransportError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_REPLY_HEAD {
            return Err(TransportError::new(
                TransportErrorKind::Protocol,
                false,
                format!("proxy {route} answered CONNECT with a head over {MAX_REPLY_HEAD} bytes"),
            ));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let reason = parts.next().unwrap_or_default();
    match status {
        Some(200..=299) if version.starts_with("HTTP/1.") => Ok(Some(end + 4)),
        Some(status) if version.starts_with("HTTP/1.") => Err(refused(route, status, reason)),
        _ => Err(TransportError::new(
            TransportErrorKind::Protocol,
            false,
            format!(
                "proxy {route} did not answer CONNECT in HTTP: {:?}",
                escape_controls(&status_line.chars().take(80).collect::<String>())
            ),
        )),
    }
}

/// What a proxy's non-2xx answer to CONNECT means. A proxy that could not reach the
/// server (502, 503, 504) is a connect error, retried; any other refusal (403, 407, …) is
/// a [`TransportErrorKind::Proxy`] error, not retried.
pub fn refused(route: &Route, status: u16, reason: &str) -> TransportError {
    let reason: String = escape_controls(reason.trim()).chars().take(100).collect();
    let said = if reason.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} {reason}")
    };
    match status {
        502..=504 => TransportError::new(
            TransportErrorKind::Connect,
            false,
            format!("proxy {route} could not reach the server ({said})"),
        ),
        407 if route.authorization.is_some() => TransportError::new(
            TransportErrorKind::Proxy,
            false,
            format!("proxy {route} refused the credentials given ({said})"),
        ),
        407 => TransportError::new(
            TransportErrorKind::Proxy,
            false,
            format!(
                "proxy {route} requires credentials ({said}): give them as http://user:password@host:port"
            ),
        ),
        _ => TransportError::new(
            TransportErrorKind::Proxy,
            false,
            format!("proxy {route} refused the tunnel ({said})"),
        ),
    }
}

/// The proxy closed the connection before its answer to CONNECT was complete.
pub fn closed_before_reply(route: &Route) -> TransportError {
    TransportError::new(
        TransportErrorKind::Connect,
        false,
        format!("proxy {route} closed the connection before answering CONNECT"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(auth: bool) -> Route {
        let url = if auth {
            "http://u:p@127.0.0.1:3128"
        } else {
            "http://127.0.0.1:3128"
        };
        Proxies::new(&Proxy::url(url))
            .unwrap()
            .route(&"https://t.invalid/".parse().unwrap())
            .unwrap()
    }

    #[test]
    fn unusable_proxies_are_refused_with_their_origin_and_no_credentials() {
        for (url, why) in [
            ("socks5://u:pw@127.0.0.1:1080", "SOCKS"),
            ("https://u:pw@127.0.0.1:443", "https://"),
            ("http://", "not a proxy URL"),
        ] {
            let e = Proxies::new(&Proxy::url(url)).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(why), "{text}");
            assert!(text.contains("the proxy option"), "{text}");
            assert!(!text.contains("pw"), "{text}");
        }
    }

    #[test]
    fn a_route_has_the_port_the_credentials_and_the_tunnel_choice() {
        let r = route(true);
        assert_eq!(r.credentials(), Some(("u".into(), "p".into())));
        assert_eq!(r.authorization().unwrap(), "Basic dTpw");
        assert!(r.authorization().unwrap().is_sensitive());
        let plain = Proxies::new(&Proxy::url("127.0.0.1"))
            .unwrap()
            .route(&"http://t.invalid/".parse().unwrap())
            .unwrap();
        assert_eq!(plain.port(), DEFAULT_PROXY_PORT);
        assert!(!plain.tunnel());
        assert!(
            Proxies::direct()
                .route(&"https://t.invalid/".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn connect_carries_the_credentials_and_replies_are_read_as_they_come() {
        let target: Uri = "https://api.example.invalid/engage".parse().unwrap();
        let text = String::from_utf8(connect_request(&target, &route(true))).unwrap();
        assert_eq!(
            text,
            "CONNECT api.example.invalid:443 HTTP/1.1\r\nHost: api.example.invalid:443\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
        );
        let r = route(false);
        assert_eq!(
            read_connect_reply(b"HTTP/1.1 200 OK\r\n", &r).unwrap(),
            None
        );
        let open = b"HTTP/1.0 200 OK\r\nVia: x\r\n\r\nTLS";
        assert_eq!(read_connect_reply(open, &r).unwrap(), Some(open.len() - 3));
        let e = read_connect_reply(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", &r)
            .unwrap_err();
        assert_eq!(e.kind(), TransportErrorKind::Proxy);
        assert!(e.message().contains("requires credentials"), "{e}");
        let e = read_connect_reply(b"HTTP/1.1 407 Nope\r\n\r\n", &route(true)).unwrap_err();
        assert!(e.message().contains("refused the credentials"), "{e}");
        let e = read_connect_reply(b"HTTP/1.1 502 Bad Gateway\r\n\r\n", &r).unwrap_err();
        assert_eq!(e.kind(), TransportErrorKind::Connect);
        let e = read_connect_reply(b"SSH-2.0-x\r\n\r\n", &r).unwrap_err();
        assert_eq!(e.kind(), TransportErrorKind::Protocol);
        let e = read_connect_reply(&vec![b'x'; MAX_REPLY_HEAD + 1], &r).unwrap_err();
        assert_eq!(e.kind(), TransportErrorKind::Protocol);
        let e = read_connect_reply(b"HTTP/1.1 403 \x1b[2Jgone\r\n\r\n", &r).unwrap_err();
        assert!(!e.message().contains('\x1b'), "{e}");
    }
}
