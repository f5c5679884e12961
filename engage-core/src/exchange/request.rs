//! Building `http::Request<Bytes>` for a batch.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue, USER_AGENT};
use http::{Method, Request, Uri};

use crate::batch::Batch;
use crate::model::Endpoint;

/// The `User-Agent` this crate sends: `engage/<version>`.
pub const USER_AGENT_VALUE: &str = concat!("engage/", env!("CARGO_PKG_VERSION"));

/// Mixpanel's data residency regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Region {
    /// `https://api.mixpanel.com` (the default).
    #[default]
    Us,
    /// `https://api-eu.mixpanel.com`.
    Eu,
    /// `https://api-in.mixpanel.com`.
    India,
}

impl Region {
    /// The region's base URL.
    pub fn base_url(self) -> &'static str {
        match self {
            Region::Us => "https://api.mixpanel.com",
            Region::Eu => "https://api-eu.mixpanel.com",
            Region::India => "https://api-in.mixpanel.com",
        }
    }
}

/// Why a base URL or callback name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The base URL does not parse, or is not `http`/`https` with a host.
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A JSONP callback name must be a JavaScript identifier path (`[A-Za-z0-9_$.]`).
    #[error("invalid JSONP callback name {0:?}")]
    InvalidCallback(String),
}

#[derive(Debug, PartialEq, Eq)]
struct TargetInner {
    base: String,
    geolocate: bool,
    verbose: bool,
    strict: bool,
    callback: Option<String>,
    engage: Uri,
    groups: Uri,
}

/// Where and how requests go: base URL and the `ip`, `verbose`, `strict` and `callback`
/// query parameters. Cheap to clone.
///
/// Defaults: `ip=0` (do not geolocate every profile to the sending server),
/// `verbose=1`, `strict=1` (per-record errors).
///
/// ```
/// use engage_core::{Region, Target};
/// let target = Target::region(Region::Eu);
/// assert_eq!(
///     target.uri(engage_core::Endpoint::Engage).to_string(),
///     "https://api-eu.mixpanel.com/engage?ip=0&verbose=1&strict=1"
/// );
/// let local = Target::base_url("http://127.0.0.1:8080").unwrap().strict(false);
/// assert_eq!(
///     local.uri(engage_core::Endpoint::Groups).to_string(),
///     "http://127.0.0.1:8080/groups?ip=0&verbose=1&strict=0"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target(Arc<TargetInner>);

impl Default for Target {
    fn default() -> Self {
        Target::region(Region::Us)
    }
}

impl Target {
    /// A Mixpanel region.
    pub fn region(region: Region) -> Target {
        Target::build(region.base_url().to_owned(), false, true, true, None)
            .expect("region URLs are valid")
    }

    /// Any base URL: a proxy, the emulator (`http://127.0.0.1:PORT`), possibly with a path
    /// prefix. `/engage` or `/groups` is appended.
    pub fn base_url(url: &str) -> Result<Target, TargetError> {
        let invalid = |reason| TargetError::InvalidBaseUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(invalid("the scheme must be http or https")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if uri.query().is_some() {
            return Err(invalid("a base URL takes no query string"));
        }
        let base = url.trim_end_matches('/').to_owned();
        Target::build(base, false, true, true, None)
    }

    fn build(
        base: String,
        geolocate: bool,
        verbose: bool,
        strict: bool,
        callback: Option<String>,
    ) -> Result<Target, TargetError> {
        let flag = |b: bool| if b { '1' } else { '0' };
        let uri = |endpoint: Endpoint| -> Result<Uri, TargetError> {
            let mut s = format!(
                "{base}{}?ip={}&verbose={}&strict={}",
                endpoint.path(),
                flag(geolocate),
                flag(verbose),
                flag(strict)
            );
            if let Some(cb) = &callback {
                s.push_str("&callback=");
                s.push_str(cb);
            }
            s.parse().map_err(|_| TargetError::InvalidBaseUrl {
                url: base.clone(),
                reason: "not a URL",
            })
        };
        Ok(Target(Arc::new(TargetInner {
            engage: uri(Endpoint::Engage)?,
            groups: uri(Endpoint::Groups)?,
            base,
            geolocate,
            verbose,
            strict,
            callback,
        })))
    }

    fn rebuild(
        &self,
        geolocate: bool,
        verbose: bool,
        strict: bool,
        callback: Option<String>,
    ) -> Result<Target, TargetError> {
        Target::build(self.0.base.clone(), geolocate, verbose, strict, callback)
    }

    /// `ip=1`: let Mixpanel geolocate profiles from the request's address (off by default,
    /// since that is the sending server's address).
    pub fn geolocate(self, yes: bool) -> Target {
        let t = &self.0;
        self.rebuild(yes, t.verbose, t.strict, t.callback.clone())
            .unwrap_or(self)
    }

    /// `verbose=1` (default on): JSON answers with a reason.
    pub fn verbose(self, yes: bool) -> Target {
        let t = &self.0;
        self.rebuild(t.geolocate, yes, t.strict, t.callback.clone())
            .unwrap_or(self)
    }

    /// `strict=1` (default on): per-record validation errors.
    pub fn strict(self, yes: bool) -> Target {
        let t = &self.0;
        self.rebuild(t.geolocate, t.verbose, yes, t.callback.clone())
            .unwrap_or(self)
    }

    /// `callback=NAME`: ask for JSONP answers (the parser unwraps them).
    pub fn callback(self, name: &str) -> Result<Target, TargetError> {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.'));
        if !ok {
            return Err(TargetError::InvalidCallback(name.to_owned()));
        }
        let t = &self.0;
        self.rebuild(t.geolocate, t.verbose, t.strict, Some(name.to_owned()))
    }

    /// The base URL, without trailing slash.
    pub fn base(&self) -> &str {
        &self.0.base
    }

    /// Whether strict mode is on.
    pub fn is_strict(&self) -> bool {
        self.0.strict
    }

    /// The full URI for `endpoint`, query included.
    pub fn uri(&self, endpoint: Endpoint) -> &Uri {
        match endpoint {
            Endpoint::Engage => &self.0.engage,
            Endpoint::Groups => &self.0.groups,
        }
    }

    /// The request for `batch`: `POST` to its endpoint, JSON body, `Accept`,
    /// `Content-Type` and `User-Agent` set. The body is the batch's own [`Bytes`], shared,
    /// not copied.
    pub fn request(&self, batch: &Batch) -> Request<Bytes> {
        let mut req = Request::new(batch.body().clone());
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri(batch.endpoint()).clone();
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/plain;q=0.9, */*;q=0.1"),
        );
        h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        req
    }
}
