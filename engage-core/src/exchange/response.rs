//! Reading Mixpanel's answers: every documented shape, and the undocumented ones safely.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{DATE, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use serde_json::Value as Json;

/// One record Mixpanel rejected, as it said so.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordFailure {
    /// Position in the batch (`failed_records[].index`); `None` if Mixpanel gave none
    /// usable.
    pub position: Option<usize>,
    /// The field Mixpanel named, if any.
    pub field: Option<String>,
    /// Mixpanel's message.
    pub message: String,
    /// The id Mixpanel echoed (`$distinct_id`, or `$group_key`/`$group_id`), if any.
    pub echoed_id: Option<String>,
}

/// Why an answer ends delivery without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FatalKind {
    /// 401: the token is not accepted.
    Unauthorized,
    /// 403: the project or token is not allowed.
    Forbidden,
    /// 407: a proxy on the way wants credentials (Mixpanel never answers it): nothing
    /// reached Mixpanel, and nothing will until the proxy's credentials are given.
    ProxyAuthenticationRequired,
    /// 400 without per-record failures: the request as a whole was refused.
    BadRequest,
    /// A status this protocol does not use (3xx, 404, 501, …).
    UnexpectedStatus,
    /// A success status with a body of no known shape: whether anything was applied is
    /// unknown, so it is neither success nor retried.
    UnrecognizedBody,
}

/// What one answer means for the batch it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// Every record was accepted.
    Accepted {
        /// `num_records_imported`, when the answer says.
        imported: Option<u64>,
    },
    /// Some records were rejected; the others were applied.
    SomeRejected {
        /// The rejected records.
        failures: Vec<RecordFailure>,
        /// `num_records_imported`, when the answer says.
        imported: Option<u64>,
    },
    /// No record was valid (`0`, `status: 0`): none was applied. Never success.
    NoneAccepted {
        /// Mixpanel's reason, if it gave one.
        error: Option<String>,
    },
    /// Transient: send again later.
    RetryLater {
        /// The status (429, 5xx, 408).
        status: StatusCode,
        /// The `Retry-After` delay, capped, if the answer carried a usable one.
        retry_after: Option<Duration>,
        /// 429: the project is throttled, so every sender should pause.
        throttled: bool,
        /// The records may have been applied anyway (5xx).
        ambiguous: bool,
        /// The raw body.
        body: Bytes,
    },
    /// 413: the body was too large; split and resend.
    TooLarge {
        /// The raw body.
        body: Bytes,
    },
    /// Give up on this batch.
    Fatal {
        /// What kind of failure.
        kind: FatalKind,
        /// The status.
        status: StatusCode,
        /// The raw body.
        body: Bytes,
    },
}

/// Options for reading answers.
#[derive(Debug, Clone, Copy)]
pub struct ParseOptions {
    /// Longest `Retry-After` honoured; longer ones are cut to this.
    pub max_retry_after: Duration,
    /// The wall-clock time now, to turn an HTTP-date `Retry-After` into a delay when the
    /// answer has no `Date` header.
    pub wall_now: SystemTime,
}

/// Reads a response to a batch of `records` records into an [`Answer`]. Never panics,
/// whatever the bytes and headers.
///
/// ```
/// use engage_core::exchange::{parse_response, Answer, ParseOptions};
/// use std::time::{Duration, SystemTime};
/// let opts = ParseOptions { max_retry_after: Duration::from_secs(300), wall_now: SystemTime::now() };
/// let ok = http::Response::new(bytes::Bytes::from_static(b"{\"status\":1,\"error\":null}"));
/// assert_eq!(parse_response(&ok, opts), Answer::Accepted { imported: None });
/// let zero = http::Response::new(bytes::Bytes::from_static(b"0"));
/// assert!(matches!(parse_response(&zero, opts), Answer::NoneAccepted { .. }));
/// ```
pub fn parse_response(response: &Response<Bytes>, opts: ParseOptions) -> Answer {
    let status = response.status();
    let body = response.body();
    let parsed = parse_body(body);
    match status.as_u16() {
        200..=299 => match parsed {
            Some(Body::Failures {
                failures, imported, ..
            }) => Answer::SomeRejected { failures, imported },
            Some(Body::Ok { imported }) => Answer::Accepted { imported },
            Some(Body::Zero { error }) => Answer::NoneAccepted { error },
            None => fatal(FatalKind::UnrecognizedBody, status, body),
        },
        400 => match parsed {
            Some(Body::Failures {
                failures, imported, ..
            }) => Answer::SomeRejected { failures, imported },
            _ => fatal(FatalKind::BadRequest, status, body),
        },
        401 => fatal(FatalKind::Unauthorized, status, body),
        403 => fatal(FatalKind::Forbidden, status, body),
        407 => fatal(FatalKind::ProxyAuthenticationRequired, status, body),
        413 => Answer::TooLarge { body: body.clone() },
        408 | 429 => Answer::RetryLater {
            status,
            retry_after: retry_after(response.headers(), opts),
            throttled: status.as_u16() == 429,
            ambiguous: false,
            body: body.clone(),
        },
        501 | 505 => fatal(FatalKind::UnexpectedStatus, status, body),
        500..=599 => Answer::RetryLater {
            status,
            retry_after: retry_after(response.headers(), opts),
            throttled: false,
            ambiguous: true,
            body: body.clone(),
        },
        _ => fatal(FatalKind::UnexpectedStatus, status, body),
    }
}

fn fatal(kind: FatalKind, status: StatusCode, body: &Bytes) -> Answer {
    Answer::Fatal {
        kind,
        status,
        body: body.clone(),
    }
}

enum Body {
    Ok {
        imported: Option<u64>,
    },
    Zero {
        error: Option<String>,
    },
    Failures {
        failures: Vec<RecordFailure>,
        imported: Option<u64>,
    },
}

/// Strips a JSONP wrapper `name(...)` (optionally `;`-terminated) if there is one.
fn unwrap_jsonp(s: &[u8]) -> &[u8] {
    let Some(open) = s.iter().position(|&b| b == b'(') else {
        return s;
    };
    let name = &s[..open];
    let name_ok = !name.is_empty()
        && name
            .trim_ascii()
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.'));
    if !name_ok {
        return s;
    }
    let mut rest = s[open + 1..].trim_ascii_end();
    if let Some(r) = rest.strip_suffix(b";") {
        rest = r.trim_ascii_end();
    }
    match rest.strip_suffix(b")") {
        Some(inner) => inner.trim_ascii(),
        None => s,
    }
}

fn parse_body(body: &[u8]) -> Option<Body> {
    let text = unwrap_jsonp(body.trim_ascii());
    match text {
        b"1" => return Some(Body::Ok { imported: None }),
        b"0" => return Some(Body::Zero { error: None }),
        _ => {}
    }
    let Ok(Json::Object(obj)) = serde_json::from_slice::<Json>(text) else {
        return None;
    };
    let error = match obj.get("error") {
        Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let imported = obj.get("num_records_imported").and_then(Json::as_u64);
    if let Some(Json::Array(items)) = obj.get("failed_records")
        && !items.is_empty()
    {
        let failures = items.iter().map(|f| failure(f, error.as_deref())).collect();
        return Some(Body::Failures { failures, imported });
    }
    let status_ok = match obj.get("status") {
        Some(Json::Number(n)) => n.as_i64().map(|n| n == 1),
        Some(Json::String(s)) => match s.to_ascii_lowercase().as_str() {
            "1" | "ok" | "success" => Some(true),
            "0" | "error" | "fail" | "failure" | "bad request" => Some(false),
            _ => None,
        },
        Some(Json::Bool(b)) => Some(*b),
        _ => None,
    };
    let code_ok = obj
        .get("code")
        .and_then(Json::as_u64)
        .map(|c| (200..300).contains(&c));
    match (status_ok, code_ok) {
        (Some(true), None | Some(true)) | (None, Some(true)) if error.is_none() => {
            Some(Body::Ok { imported })
        }
        (Some(false), _) | (_, Some(false)) => Some(Body::Zero { error }),
        (None, None) if error.is_some() => Some(Body::Zero { error }),
        _ => None,
    }
}

fn failure(item: &Json, fallback: Option<&str>) -> RecordFailure {
    let s = |k: &str| item.get(k).and_then(Json::as_str).map(str::to_owned);
    let position = item
        .get("index")
        .and_then(Json::as_u64)
        .and_then(|i| usize::try_from(i).ok());
    let echoed_id = s("$distinct_id").or_else(|| match (s("$group_key"), s("$group_id")) {
        (Some(k), Some(i)) => Some(format!("{k}/{i}")),
        (None, Some(i)) => Some(i),
        _ => None,
    });
    RecordFailure {
        position,
        field: s("field"),
        message: s("message")
            .or_else(|| fallback.map(str::to_owned))
            .unwrap_or_else(|| "rejected without a message".to_owned()),
        echoed_id,
    }
}

/// The `Retry-After` delay of an answer: delay-seconds, or an HTTP-date measured against
/// the answer's `Date` header (else `opts.wall_now`); capped at `opts.max_retry_after`.
pub fn retry_after(headers: &HeaderMap, opts: ParseOptions) -> Option<Duration> {
    requested_retry_after(headers, opts.wall_now).map(|d| d.min(opts.max_retry_after))
}

/// The `Retry-After` delay an answer asks for, uncapped (`Duration::MAX` for one too long
/// to represent).
pub(crate) fn requested_retry_after(headers: &HeaderMap, wall_now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        Some(Duration::from_secs(secs))
    } else if let Ok(secs) = value.parse::<f64>() {
        if !(secs.is_finite() && secs >= 0.0) {
            return None;
        }
        Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        let now = headers
            .get(DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
            .unwrap_or(wall_now);
        Some(at.duration_since(now).unwrap_or(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ParseOptions {
        ParseOptions {
            max_retry_after: Duration::from_secs(120),
            wall_now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    fn resp(
        status: u16,
        body: &'static [u8],
        headers: &[(&'static str, &'static str)],
    ) -> Response<Bytes> {
        let mut r = Response::new(Bytes::from_static(body));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            r.headers_mut()
                .append(*k, http::HeaderValue::from_static(v));
        }
        r
    }

    #[test]
    fn every_documented_shape() {
        let p = |s, b, h| parse_response(&resp(s, b, h), opts());
        assert_eq!(p(200, b"1", &[]), Answer::Accepted { imported: None });
        assert_eq!(p(200, b" 1\n", &[]), Answer::Accepted { imported: None });
        assert_eq!(p(200, b"0", &[]), Answer::NoneAccepted { error: None });
        assert_eq!(
            p(200, br#"{"status":1,"error":null}"#, &[]),
            Answer::Accepted { imported: None }
        );
        assert_eq!(
            p(200, br#"{"status":0,"error":"bad token"}"#, &[]),
            Answer::NoneAccepted {
                error: Some("bad token".into())
            }
        );
        assert_eq!(p(200, b"cb(1)", &[]), Answer::Accepted { imported: None });
        assert_eq!(
            p(200, b"my.cb( {\"status\":0,\"error\":\"x\"} );", &[]),
            Answer::NoneAccepted {
                error: Some("x".into())
            }
        );
        assert_eq!(p(200, b"cb(0)", &[]), Answer::NoneAccepted { error: None });
        let strict = br#"{"code":400,"error":"some data points in the request failed validation","status":"Bad Request","num_records_imported":1,"failed_records":[{"index":1,"$distinct_id":"u2","field":"$add","message":"must be a number"}]}"#;
        for status in [200, 400] {
            assert_eq!(
                p(status, strict, &[]),
                Answer::SomeRejected {
                    failures: vec![RecordFailure {
                        position: Some(1),
                        field: Some("$add".into()),
                        message: "must be a number".into(),
                        echoed_id: Some("u2".into())
                    }],
                    imported: Some(1)
                }
            );
        }
        assert_eq!(
            p(
                200,
                br#"{"code":200,"status":"OK","num_records_imported":3}"#,
                &[]
            ),
            Answer::Accepted { imported: Some(3) }
        );
        assert!(matches!(
            p(401, br#"{"error":"Invalid token","status":"error"}"#, &[]),
            Answer::Fatal { kind: FatalKind::Unauthorized, ref body, .. } if body.as_ref() == br#"{"error":"Invalid token","status":"error"}"#
        ));
        assert!(matches!(
            p(403, b"", &[]),
            Answer::Fatal {
                kind: FatalKind::Forbidden,
                ..
            }
        ));
        assert!(matches!(p(413, b"{}", &[]), Answer::TooLarge { .. }));
        let throttled = br#"{"code":429,"error":"Project exceeded rate limits. Please retry the request with exponential backoff.","status":"Too Many Requests"}"#;
        assert_eq!(
            p(429, throttled, &[("retry-after", "7")]),
            Answer::RetryLater {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(Duration::from_secs(7)),
                throttled: true,
                ambiguous: false,
                body: Bytes::from_static(throttled),
            }
        );
        for s in [500, 502, 503, 504, 599] {
            assert!(matches!(
                p(s, b"<html>oops</html>", &[]),
                Answer::RetryLater {
                    ambiguous: true,
                    throttled: false,
                    retry_after: None,
                    ..
                }
            ));
        }
        assert!(matches!(
            p(400, b"{\"error\":\"invalid json\"}", &[]),
            Answer::Fatal {
                kind: FatalKind::BadRequest,
                ..
            }
        ));
    }

    #[test]
    fn undocumented_shapes_are_never_success() {
        for body in [
            &b""[..],
            b"2",
            b"true",
            b"[]",
            b"{}",
            b"<html>",
            b"{\"status\":\"weird\"}",
            b"{\"status\":1,\"error\":\"but also an error\"}",
            b"cb(",
            b"\xff\xfe",
        ] {
            let a = parse_response(&resp(200, body, &[]), opts());
            assert!(
                !matches!(a, Answer::Accepted { .. } | Answer::SomeRejected { .. }),
                "{body:?} gave {a:?}"
            );
        }
        for s in [301, 302, 404, 405, 501] {
            assert!(matches!(
                parse_response(&resp(s, b"1", &[]), opts()),
                Answer::Fatal {
                    kind: FatalKind::UnexpectedStatus,
                    ..
                }
            ));
        }
    }

    #[test]
    fn retry_after_forms() {
        let h = |pairs: &[(&'static str, &'static str)]| resp(429, b"", pairs).headers().clone();
        assert_eq!(
            retry_after(&h(&[("retry-after", "3")]), opts()),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&h(&[("retry-after", "1.5")]), opts()),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&h(&[("retry-after", "100000")]), opts()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_after(&h(&[("retry-after", "-1")]), opts()), None);
        assert_eq!(retry_after(&h(&[("retry-after", "soon")]), opts()), None);
        assert_eq!(retry_after(&h(&[("retry-after", "NaN")]), opts()), None);
        // HTTP-date against the answer's own Date header.
        assert_eq!(
            retry_after(
                &h(&[
                    ("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT"),
                    ("date", "Wed, 21 Oct 2015 07:28:00 GMT")
                ]),
                opts()
            ),
            Some(Duration::from_secs(30))
        );
        // Without Date, against the caller's wall clock (here 2023: a past date means now).
        assert_eq!(
            retry_after(
                &h(&[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")]),
                opts()
            ),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(opts().wall_now + Duration::from_secs(9));
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, later.parse().unwrap());
        assert_eq!(retry_after(&headers, opts()), Some(Duration::from_secs(9)));
    }
}
