//! The HTTP side: decoding what real clients send, validating, answering as Mixpanel does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use engage_core::validate::{GroupOperations, ParsedRecord, check_record};
use engage_core::{Endpoint, Update};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value as Json, json};

use crate::faults::{FaultConfig, FaultKind, Injector};
use crate::state::{Geo, Stats, Store, Target, Valid, time_ms};

/// Most records in one request.
const MAX_RECORDS: usize = 2000;

/// What the server is configured with.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) token: Option<String>,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) body_budget: usize,
    pub(crate) latency: Latency,
    /// Bytes per minute each project token may send; `None`: no limit.
    pub(crate) rate_limit: Option<u64>,
}

/// A simulated round trip: every `/engage` and `/groups` answer waits this long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Latency {
    /// Per request.
    pub(crate) base: Duration,
    /// Per megabyte (10^6 bytes) of body.
    pub(crate) per_mb: Duration,
}

impl Latency {
    fn of(&self, body_bytes: usize) -> Duration {
        self.base + self.per_mb.mul_f64(body_bytes as f64 / 1e6)
    }
}

/// A project's allowance: a token bucket refilled at the per-minute rate, holding one
/// second's worth or the largest body accepted, whichever is more (full at the start).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("body_timeout", &self.body_timeout)
            .field("max_connections", &self.max_connections)
            .field("body_budget", &self.body_budget)
            .field("latency", &self.latency)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

/// State shared by every connection and the library handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) store: Store,
    pub(crate) faults: Mutex<Injector>,
    /// Bytes of request bodies held right now, all connections together.
    pub(crate) buffered: std::sync::atomic::AtomicUsize,
    /// Rate-limit buckets per project token.
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Locks, recovering from a poisoned lock (a panic elsewhere must not stop the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(settings: Settings, faults: FaultConfig) -> Self {
        Shared {
            settings,
            store: Store::default(),
            faults: Mutex::new(Injector::new(faults)),
            buffered: std::sync::atomic::AtomicUsize::new(0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        self.store.stats()
    }

    /// Takes `bytes` from `token`'s allowance; `false` when it is spent.
    fn within_rate(&self, token: &str, bytes: usize) -> bool {
        let Some(per_minute) = self.settings.rate_limit else {
            return true;
        };
        let rate = per_minute as f64 / 60.0;
        // One second's worth, but never less than the largest body accepted.
        let capacity = rate.max(self.settings.max_body_bytes as f64);
        let now = std::time::Instant::now();
        let mut buckets = lock(&self.buckets);
        let b = buckets.entry(token.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        b.tokens = (b.tokens + rate * now.duration_since(b.at).as_secs_f64()).min(capacity);
        b.at = now;
        if b.tokens >= bytes as f64 {
            b.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

/// The service returns this to close the connection without an answer.
#[derive(Debug)]
pub(crate) struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed by fault injection")
    }
}

impl std::error::Error for CloseConnection {}

/// Every answer's body: whole, or streamed (the profile listing).
pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

type Answer = Result<Response<Body>, CloseConnection>;

/// A body fed from a channel, chunk by chunk.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// `GET /_emulator/profiles`: `{distinct_id: properties, …}` written one shard at a time.
/// Each shard's logs are copied under its lock (briefly); profiles are computed and written
/// outside it, on a blocking thread, and the channel holds a few chunks at most, so neither
/// ingestion nor memory suffers at a million profiles. Profiles that change meanwhile may
/// show before or after the change.
fn stream_profiles(shared: Arc<Shared>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    tokio::task::spawn_blocking(move || {
        let mut first = true;
        let mut chunk = Vec::with_capacity(256 * 1024);
        chunk.push(b'{');
        for i in 0..shared.store.shard_count() {
            let copy = shared.store.copy_shard(i);
            for (id, profile) in copy.profiles() {
                if !first {
                    chunk.push(b',');
                }
                first = false;
                let _ = serde_json::to_writer(&mut chunk, id);
                chunk.push(b':');
                let _ = serde_json::to_writer(&mut chunk, &profile);
                if chunk.len() >= 256 * 1024 {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(256 * 1024));
                    if tx.blocking_send(Bytes::from(full)).is_err() {
                        return; // the client went away
                    }
                }
            }
        }
        chunk.push(b'}');
        let _ = tx.blocking_send(Bytes::from(chunk));
    });
    let mut r = Response::new(BodyExt::boxed(ChannelBody(rx)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed(Full::new(body.into())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response(status: StatusCode, v: &Json) -> Response<Body> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error_response(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(status, &json!({"error": message.into(), "status": 0}))
}

/// Counts a request to `/engage` or `/groups` while it is served.
struct Serving<'a>(&'a Shared);

impl<'a> Serving<'a> {
    fn start(shared: &'a Shared) -> Self {
        let mut stats = lock(&shared.store.stats);
        stats.requests += 1;
        stats.serving += 1;
        stats.peak_serving = stats.peak_serving.max(stats.serving);
        Serving(shared)
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        let mut stats = lock(&self.0.store.stats);
        stats.serving = stats.serving.saturating_sub(1);
    }
}

/// Serves one request, with an access line (target `engage_emulator::access`) when
/// logging is on: method, path (never the query, which may carry data), status, records,
/// milliseconds, the fault injected.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Answer {
    if !tracing::enabled!(target: "engage_emulator::access", tracing::Level::INFO) {
        return route(shared, remote, req).await;
    }
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = engage_core::text::escape_controls(req.uri().path()).into_owned();
    let answer = route(shared, remote, req).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match &answer {
        Ok(response) => {
            let note = response
                .extensions()
                .get::<AccessNote>()
                .copied()
                .unwrap_or_default();
            tracing::info!(
                target: "engage_emulator::access",
                %method,
                path,
                status = response.status().as_u16(),
                records = note.records,
                ms = format_args!("{ms:.1}"),
                fault = note.fault.map(tracing::field::debug),
            );
        }
        Err(CloseConnection) => tracing::info!(
            target: "engage_emulator::access",
            %method,
            path,
            status = "closed without an answer",
            ms = format_args!("{ms:.1}"),
            fault = "Close",
        ),
    }
    answer
}

/// Routes one request.
async fn route(shared: Arc<Shared>, remote: SocketAddr, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (_, "/engage" | "/engage/") => ingest(&shared, remote, req, Endpoint::Engage).await,
        (_, "/groups" | "/groups/") => ingest(&shared, remote, req, Endpoint::Groups).await,
        (&Method::GET, "/_emulator/profiles") => Ok(stream_profiles(shared)),
        (&Method::GET, p) if p.starts_with("/_emulator/profiles/") => {
            let raw = &p["/_emulator/profiles/".len()..];
            let id: String = percent_decode(raw);
            match shared.store.profile(&id) {
                Some(profile) => Ok(json_response(StatusCode::OK, &Json::Object(profile))),
                None => Ok(error_response(
                    StatusCode::NOT_FOUND,
                    format!("no profile {id:?}"),
                )),
            }
        }
        (&Method::GET, "/_emulator/groups") => {
            let groups = shared.store.groups();
            Ok(json_response(StatusCode::OK, &json!(groups)))
        }
        (&Method::GET, "/_emulator/stats") => {
            Ok(json_response(StatusCode::OK, &json!(shared.stats())))
        }
        (&Method::POST, "/_emulator/reset") => {
            shared.store.reset();
            Ok(json_response(StatusCode::OK, &json!({"status": 1})))
        }
        (&Method::GET, "/_emulator/faults") => {
            let config = lock(&shared.faults).config().clone();
            Ok(json_response(StatusCode::OK, &json!(config)))
        }
        (&Method::POST, "/_emulator/faults") => {
            let body = match read_body(&shared, req).await {
                Ok((b, _reservation)) => b,
                Err(r) => return Ok(r),
            };
            match serde_json::from_slice::<FaultConfig>(&body)
                .map_err(|e| e.to_string())
                .and_then(|c| c.validate().map(|()| c))
            {
                Ok(config) => {
                    *lock(&shared.faults) = Injector::new(config.clone());
                    Ok(json_response(StatusCode::OK, &json!(config)))
                }
                Err(e) => Ok(error_response(
                    StatusCode::BAD_REQUEST,
                    format!("bad fault config: {e}"),
                )),
            }
        }
        _ => Ok(error_response(
            StatusCode::NOT_FOUND,
            format!("no route for {path}"),
        )),
    }
}

/// Decodes `%XX` in a path segment (a path keeps `+` as is).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Bytes held against the shared body budget, given back when dropped.
struct Reservation<'a> {
    shared: &'a Shared,
    bytes: usize,
}

impl Reservation<'_> {
    /// Takes `more` bytes from the budget; `false` (and nothing taken) if it would go over.
    fn grow(&mut self, more: usize) -> bool {
        use std::sync::atomic::Ordering;
        let budget = self.shared.settings.body_budget;
        let taken = self
            .shared
            .buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(more).filter(|&n| n <= budget)
            })
            .is_ok();
        if taken {
            self.bytes += more;
        }
        taken
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.shared
            .buffered
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Reads (and throws away) up to `limit` bytes of a body the server will not use, so that
/// a client that writes its whole body before reading (Python's urllib) reads the answer
/// instead of a broken pipe.
async fn drain(body: &mut Incoming, limit: usize, timeout: Duration) {
    let draining = async {
        let mut seen = 0usize;
        while seen < limit {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(timeout, draining).await;
}

/// Bytes of each body read without counting against the shared budget: small requests are
/// always served, and `max_connections` × this bounds what escapes the budget.
const FREE_BODY_BYTES: usize = 64 * 1024;

/// Most of a refused body read before answering: 4× the cap, at least 8 MiB.
fn drain_limit(cap: usize) -> usize {
    cap.saturating_mul(4).max(8 << 20)
}

/// Reads the whole body within the size cap, the shared body budget and the body
/// timeout. The answer is handed back with the bytes reserved against the budget, which
/// the caller holds until it has finished with the body.
async fn read_body(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<(Bytes, Reservation<'_>), Response<Body>> {
    let cap = shared.settings.max_body_bytes;
    let timeout = shared.settings.body_timeout;
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the {cap}-byte limit"),
        )
    };
    let busy = || {
        let mut r = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many request bodies in flight; retry shortly",
        );
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        r
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = req.into_body();
    let mut reservation = Reservation { shared, bytes: 0 };
    if let Some(n) = declared
        && n > cap as u64
    {
        if n <= drain_limit(cap) as u64 {
            drain(&mut body, drain_limit(cap), timeout).await;
        }
        return Err(too_large());
    }
    let reading = async {
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                error_response(
                    StatusCode::BAD_REQUEST,
                    format!("could not read the body: {e}"),
                )
            })?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            let len = buf.len() + data.len();
            if len > cap {
                drain(&mut body, drain_limit(cap), timeout).await;
                return Err(too_large());
            }
            // Beyond the free allowance, every byte held counts against the budget.
            let counted = len.saturating_sub(FREE_BODY_BYTES);
            if counted > reservation.bytes && !reservation.grow(counted - reservation.bytes) {
                drop(buf);
                drain(&mut body, cap, timeout).await;
                return Err(busy());
            }
            if buf.capacity() < len {
                // Grow toward the declared size, or by doubling when none was declared
                // (a chunked body of many small frames is not copied again at each one);
                // never beyond the cap nor twice what arrived.
                let want = (len * 2).min(declared.map_or(cap, |d| d as usize)).max(len);
                buf.reserve_exact(want - buf.len());
            }
            buf.extend_from_slice(data);
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(timeout, reading).await {
        Err(_) => Err(error_response(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )),
        Ok(Err(r)) => Err(r),
        Ok(Ok(bytes)) => Ok((bytes, reservation)),
    }
}

/// Reads a `0`/`1` (or `false`/`true`) parameter; anything else is a client error, as
/// for other bad input.
fn flag(params: &Params, name: &str) -> Result<Option<bool>, String> {
    match params.0.get(name).map(|v| v.trim()) {
        None => Ok(None),
        Some("1" | "true") => Ok(Some(true)),
        Some("0" | "false") => Ok(Some(false)),
        Some(other) => Err(format!(
            "the parameter {name} must be 0 or 1, not {:?}",
            other.chars().take(40).collect::<String>()
        )),
    }
}

/// Parses `application/x-www-form-urlencoded` bytes (a query string or a form body):
/// `+` is a space, `%XX` a byte, and the decoded bytes must be UTF-8, the rule JSON bodies
/// follow too.
fn form_pairs(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let decode = |part: &[u8]| -> Result<String, String> {
        let spaced: Vec<u8> = part
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let raw: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
        String::from_utf8(raw).map_err(|e| format!("a form field is not UTF-8 once decoded: {e}"))
    };
    bytes
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Turns `data=` (JSON, or base64 of JSON, with `+` possibly read as a space) into JSON bytes.
fn decode_data(data: &str) -> Result<Vec<u8>, String> {
    let t = data.trim();
    if t.starts_with('[') || t.starts_with('{') {
        return Ok(t.as_bytes().to_vec());
    }
    let fixed: String = t
        .chars()
        .filter(|c| *c != '\n' && *c != '\r')
        .map(|c| if c == ' ' { '+' } else { c })
        .collect();
    let engines = [
        base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        ),
        base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        ),
    ];
    for engine in &engines {
        if let Ok(bytes) = engine.decode(fixed.as_bytes()) {
            return Ok(bytes);
        }
    }
    Err("data is neither JSON nor base64 of JSON".into())
}

/// One record of a request.
enum Record {
    /// Read in one pass by engage-core's reader: valid for this endpoint (by the rules
    /// this server enforces), carrying a token, drawing no note. Nothing to parse again.
    Read(Update),
    /// Everything else, parsed whole (or why it could not be).
    Parsed(Result<ParsedRecord, String>),
}

impl Record {
    /// The record's own `$token`, if it has one.
    fn token(&self) -> Option<&str> {
        match self {
            Record::Read(update) => update.json_parts().and_then(|p| p.token()),
            Record::Parsed(Ok(parsed)) => parsed.value.get("$token").and_then(Json::as_str),
            Record::Parsed(Err(_)) => None,
        }
    }
}

/// Splits the JSON data into records: an array, or one object standing for one.
fn split_records(data: &[u8], endpoint: Endpoint) -> Result<Vec<Record>, String> {
    // The usual body, an array of records engage-core's reader takes whole, is not walked
    // again to check it is UTF-8: the reader checks every string of what it takes, and
    // takes nothing else but ASCII. Any other body goes the way below, whose answers are
    // the ones given for it.
    let unwrapped = data.strip_prefix("\u{feff}".as_bytes()).unwrap_or(data);
    if unwrapped.trim_ascii_start().first() == Some(&b'[')
        && let Some(items) = Update::from_json_array(unwrapped.trim_ascii())
        && items.len() <= MAX_RECORDS
        && items.iter().all(Result::is_ok)
    {
        return Ok(array_records(items, endpoint));
    }
    let text = std::str::from_utf8(data).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.starts_with('{') {
        return Ok(vec![read_record(trimmed, endpoint)]);
    }
    if !trimmed.starts_with('[') {
        return Err("the body is not a JSON array or object".into());
    }
    let too_many = |n: usize| format!("{n} records in one request; the limit is {MAX_RECORDS}");
    // engage-core splits the array and reads the ordinary records in the same pass.
    if let Some(items) = Update::from_json_array(trimmed) {
        if items.len() > MAX_RECORDS {
            return Err(too_many(items.len()));
        }
        return Ok(array_records(items, endpoint));
    }
    // Not a well-formed array: serde_json names the problem. Raw values first (borrowed:
    // no copy), so one bad record (1e999) fails alone rather than the batch.
    let raws: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(trimmed).map_err(|e| format!("invalid JSON: {e}"))?;
    if raws.len() > MAX_RECORDS {
        return Err(too_many(raws.len()));
    }
    Ok(raws
        .iter()
        .map(|r| read_record(r.get(), endpoint))
        .collect())
}

/// The records of an array engage-core split. Collected in place: the vector of elements
/// becomes the vector of records (a body's worth of them, too large to allocate and free
/// per request without the allocator handing pages back and faulting them in again).
fn array_records(items: Vec<Result<Update, &str>>, endpoint: Endpoint) -> Vec<Record> {
    items
        .into_iter()
        .map(|item| match item {
            Ok(update) => read_update(update, endpoint),
            Err(text) => Record::Parsed(parse_record(text)),
        })
        .collect()
}

/// A record engage-core read in one pass: kept as read if it is valid here as it is, else
/// parsed again by the full path, which names what is wrong with it.
fn read_update(update: Update, endpoint: Endpoint) -> Record {
    if readable(&update, endpoint) {
        return Record::Read(update);
    }
    let text = update.json_text().map(|t| t.as_ref()).unwrap_or_default();
    Record::Parsed(parse_record(std::str::from_utf8(text).unwrap_or_default()))
}

/// Whether a record engage-core read in one pass is valid here as it is: for this
/// endpoint, an operation `/groups` documents, a token of its own.
fn readable(update: &Update, endpoint: Endpoint) -> bool {
    update.json_parts().is_some_and(|parts| {
        parts.endpoint() == endpoint
            && (endpoint == Endpoint::Engage || parts.operation().on_groups())
            && parts.token().is_some()
    })
}

/// One record: engage-core's one-pass reader takes the ordinary valid ones; the rest
/// (invalid, for the other endpoint, `$add`/`$append` on groups, without a token,
/// repeating a key, anything unusual) go through the full parser and `check_record`, so
/// every error and note comes from one place.
fn read_record(text: &str, endpoint: Endpoint) -> Record {
    if let Some(update) = Update::from_json_fast(text)
        && readable(&update, endpoint)
    {
        return Record::Read(update);
    }
    Record::Parsed(parse_record(text))
}

/// A JSON string's text (`$ip`'s value), decoded only if it holds an escape.
fn json_str(value: &[u8]) -> Option<Box<str>> {
    if value.contains(&b'\\') {
        serde_json::from_slice::<String>(value).ok().map(Into::into)
    } else {
        std::str::from_utf8(value.get(1..value.len().checked_sub(1)?)?)
            .ok()
            .map(Into::into)
    }
}

/// One record, noting the keys its text repeats (only the last of each is applied).
fn parse_record(text: &str) -> Result<ParsedRecord, String> {
    engage_core::validate::parse_record(text.as_bytes()).map_err(|e| {
        if e.to_string().contains("number out of range") {
            "number out of range: NaN and Infinity have no JSON form".to_owned()
        } else {
            format!("invalid JSON: {e}")
        }
    })
}

struct Params(HashMap<String, String>);

impl Params {
    fn from_query(q: Option<&str>) -> Result<Self, String> {
        Ok(Params(
            form_pairs(q.unwrap_or_default().as_bytes())?
                .into_iter()
                .collect(),
        ))
    }
}

/// What the access log says of an ingest request besides its status.
#[derive(Debug, Clone, Copy, Default)]
struct AccessNote {
    records: Option<usize>,
    fault: Option<FaultKind>,
}

async fn ingest(
    shared: &Arc<Shared>,
    remote: SocketAddr,
    req: Request<Incoming>,
    endpoint: Endpoint,
) -> Answer {
    let mut note = AccessNote::default();
    let mut answer = ingest_records(shared, remote, req, endpoint, &mut note).await;
    if let Ok(response) = &mut answer {
        response.extensions_mut().insert(note);
    }
    answer
}

async fn ingest_records(
    shared: &Arc<Shared>,
    remote: SocketAddr,
    req: Request<Incoming>,
    endpoint: Endpoint,
    note: &mut AccessNote,
) -> Answer {
    let _serving = Serving::start(shared);
    let method = req.method().clone();
    if method != Method::POST && method != Method::GET {
        return Ok(error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST (or GET with data=)",
        ));
    }
    let mut params = match Params::from_query(req.uri().query()) {
        Ok(p) => p,
        Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, e)),
    };
    let encoding = req.headers().get(CONTENT_ENCODING).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim()
            .to_ascii_lowercase()
    });
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
        .unwrap_or_default();
    let (body, _reservation) = match read_body(shared, req).await {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    // The round trip a real server is away, more for bigger bodies; not a fault.
    let latency = shared.settings.latency.of(body.len());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    // Faults are drawn for requests that got this far, so a script stays in step with
    // the requests a client meant to make.
    let (fault, slow) = {
        let mut faults = lock(&shared.faults);
        (faults.next(), faults.slow_delay())
    };
    if fault.is_some() {
        lock(&shared.store.stats).faults_injected += 1;
    }
    note.fault = fault;
    match fault {
        Some(FaultKind::Close) => return Err(CloseConnection),
        Some(FaultKind::TooManyRequests) | Some(FaultKind::TooManyRequestsRetryAfter) => {
            let mut r = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"code": 429, "error": "Project exceeded rate limits. Please retry the request with exponential backoff.", "status": "Too Many Requests"}),
            );
            if fault == Some(FaultKind::TooManyRequestsRetryAfter) {
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return Ok(r);
        }
        Some(FaultKind::InternalError) => {
            return Ok(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
            ));
        }
        Some(FaultKind::BadGateway) => {
            return Ok(respond(
                StatusCode::BAD_GATEWAY,
                "text/html",
                "<html><body>502 Bad Gateway</body></html>",
            ));
        }
        Some(FaultKind::Unavailable) => {
            return Ok(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
            ));
        }
        Some(FaultKind::Slow) => tokio::time::sleep(slow).await,
        Some(FaultKind::AppliedThen500) | None => {}
    }
    if let Some(enc) = encoding.filter(|e| !e.is_empty() && e != "identity") {
        return Ok(error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Encoding {enc} is not accepted on {}; send the JSON uncompressed",
                endpoint.path()
            ),
        ));
    }
    // Find the data: a query parameter (GET), a form field, or the JSON body itself.
    // The JSON body is read where it lies; decoded data is new.
    let data: Bytes = if method == Method::GET {
        match params.0.get("data") {
            Some(d) => match decode_data(d) {
                Ok(d) => Bytes::from(d),
                Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, e)),
            },
            None => {
                return Ok(error_response(
                    StatusCode::BAD_REQUEST,
                    "no data: send data=<base64 JSON> or POST a JSON body",
                ));
            }
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let form: HashMap<String, String> = match form_pairs(&body) {
            Ok(pairs) => pairs.into_iter().collect(),
            Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, e)),
        };
        let data = form.get("data").cloned();
        for (k, v) in form {
            if k != "data" {
                params.0.insert(k, v);
            }
        }
        match data {
            Some(d) => match decode_data(&d) {
                Ok(d) => Bytes::from(d),
                Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, e)),
            },
            // `curl -d '[...]'` labels raw JSON as a form: take it as JSON.
            None if body
                .trim_ascii_start()
                .first()
                .is_some_and(|b| matches!(b, b'[' | b'{')) =>
            {
                body.clone()
            }
            None => {
                return Ok(error_response(
                    StatusCode::BAD_REQUEST,
                    "no data field in the form",
                ));
            }
        }
    } else if content_type.is_empty()
        || content_type.starts_with("application/json")
        || content_type.starts_with("text/plain")
    {
        body.clone()
    } else {
        return Ok(error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {content_type:?} is not accepted; send application/json or a form with data="
            ),
        ));
    };
    let records = match split_records(&data, endpoint) {
        Ok(r) => r,
        Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, e)),
    };
    // The project's rate limit, by the token of its first record that names one.
    let project = records.iter().find_map(Record::token).unwrap_or_default();
    if !shared.within_rate(project, data.len()) {
        lock(&shared.store.stats).rate_limited += 1;
        // Mixpanel's documented answer; it carries no Retry-After.
        return Ok(json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"code": 429, "error": "Project exceeded rate limits. Please retry the request with exponential backoff.", "status": "Too Many Requests"}),
        ));
    }
    let flags = (|| {
        Ok::<_, String>((
            flag(&params, "ip")?,
            flag(&params, "verbose")?,
            flag(&params, "strict")?,
        ))
    })();
    let (geolocate, verbose, strict) = match flags {
        Ok((ip, verbose, strict)) => (
            ip.unwrap_or(true),
            verbose.unwrap_or(false),
            strict.unwrap_or(false),
        ),
        Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, e)),
    };
    let callback = params.0.get("callback").filter(|c| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.'))
    });

    let mut valid = Vec::with_capacity(records.len());
    let mut failed = Vec::new();
    // Emulator extension: what was applied other than as written, per record.
    let mut notes = Vec::new();
    let mut non_idempotent = false;
    let n = records.len();
    note.records = Some(n);
    for (index, record) in records.iter().enumerate() {
        let record = match record {
            Record::Read(update) => {
                let Some(parts) = update.json_parts() else {
                    // A read record always has its parts; were that ever not so, say it.
                    failed.push(json!({"index": index, "field": Json::Null, "message": "emulator: record lost its parts"}));
                    continue;
                };
                let token = parts.token().unwrap_or_default();
                if let Some(expected) = &shared.settings.token
                    && token != expected
                {
                    return Ok(json_response(
                        StatusCode::UNAUTHORIZED,
                        &json!({"error": format!("Invalid token in record {index}: this project's token does not match"), "status": "error"}),
                    ));
                }
                let geo = match parts.modifier("$ip").and_then(json_str).as_deref() {
                    Some("0") => Geo::None,
                    Some(ip) => Geo::Record(ip.into()),
                    None if geolocate => Geo::Request(remote.ip()),
                    None => Geo::None,
                };
                let op = parts.operation();
                non_idempotent |= !op.is_idempotent();
                let target = match (parts.group(), parts.distinct_id()) {
                    (Some((k, i)), _) => Target::Group(k, i),
                    (None, Some(d)) => Target::User(d),
                    (None, None) => continue,
                };
                valid.push(Valid {
                    index,
                    target,
                    op,
                    payload: parts.payload().to_vec(),
                    time_ms: parts
                        .modifier("$time")
                        .and_then(|v| serde_json::from_slice::<Json>(v).ok())
                        .and_then(|v| time_ms(&v)),
                    ignore_time: parts.modifier("$ignore_time") == Some(b"true"),
                    geo,
                });
                continue;
            }
            Record::Parsed(record) => record,
        };
        let value = match record {
            Ok(parsed) => &parsed.value,
            Err(message) => {
                failed.push(json!({"index": index, "field": Json::Null, "message": message}));
                continue;
            }
        };
        let ids = failure_ids(value, endpoint);
        let checked = match check_record(value, endpoint, GroupOperations::Documented) {
            Ok(c) => c,
            Err(problem) => {
                let mut f = json!({"index": index, "field": problem.property, "message": problem.problem.to_string()});
                merge(&mut f, ids);
                failed.push(f);
                continue;
            }
        };
        let Some(token) = checked.token else {
            let mut f = json!({"index": index, "field": "$token", "message": "missing $token"});
            merge(&mut f, ids);
            failed.push(f);
            continue;
        };
        if let Some(expected) = &shared.settings.token
            && token != expected
        {
            return Ok(json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": format!("Invalid token in record {index}: this project's token does not match"), "status": "error"}),
            ));
        }
        let geo = match checked.object.get("$ip").and_then(Json::as_str) {
            Some("0") => Geo::None,
            Some(ip) => Geo::Record(ip.into()),
            None if geolocate => Geo::Request(remote.ip()),
            None => Geo::None,
        };
        let op = checked.operation;
        non_idempotent |= !op.is_idempotent();
        let target = match (checked.group, checked.distinct_id) {
            (Some((k, i)), _) => Target::Group(k, i),
            (None, Some(d)) => Target::User(d),
            (None, None) => continue,
        };
        if let Ok(parsed) = record {
            for property in &parsed.repeated {
                notes.push(json!({"index": index, "field": property, "message": "key repeated in one object: only the last value was applied"}));
            }
            if !parsed.repeated.is_empty() {
                lock(&shared.store.stats).records_with_repeated_keys += 1;
            }
        }
        valid.push(Valid {
            index,
            target,
            op,
            payload: serde_json::to_vec(checked.payload).unwrap_or_default(),
            time_ms: checked.object.get("$time").and_then(time_ms),
            ignore_time: checked.object.get("$ignore_time") == Some(&Json::Bool(true)),
            geo,
        });
    }
    {
        let mut stats = lock(&shared.store.stats);
        stats.records_received += n as u64;
        stats.bytes_received += data.len() as u64;
    }
    lock(&shared.store.stats).rejected += failed.len() as u64;
    // The decoded data, not the raw body: GET requests have none, and a form body and a
    // JSON body with the same records are the same batch.
    let targets: Vec<(usize, Target<'_>)> = valid.iter().map(|v| (v.index, v.target)).collect();
    let refused = shared.store.apply(&data, valid, non_idempotent);
    for (index, field, message) in refused {
        let mut f = json!({"index": index, "field": field, "message": message});
        if let Some((_, target)) = targets.iter().find(|(p, _)| *p == index) {
            merge(
                &mut f,
                match *target {
                    Target::User(d) => json!({"$distinct_id": d}),
                    Target::Group(k, i) => json!({"$group_key": k, "$group_id": i}),
                },
            );
        }
        failed.push(f);
    }
    failed.sort_by_key(|f| f["index"].as_u64());
    let accepted = n - failed.len();
    if fault == Some(FaultKind::AppliedThen500) {
        return Ok(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
        ));
    }
    let (status, text) = if strict && !failed.is_empty() {
        (
            StatusCode::BAD_REQUEST,
            with_notes(json!({"code": 400, "error": "some data points in the request failed validation", "status": "Bad Request", "num_records_imported": accepted, "failed_records": failed}), notes).to_string(),
        )
    } else if strict {
        (
            StatusCode::OK,
            with_notes(
                json!({"code": 200, "status": "OK", "num_records_imported": accepted}),
                notes,
            )
            .to_string(),
        )
    } else if verbose {
        let v = if accepted > 0 || n == 0 {
            json!({"status": 1, "error": Json::Null})
        } else {
            let reason = failed
                .first()
                .and_then(|f| f["message"].as_str())
                .unwrap_or("no valid record")
                .to_owned();
            json!({"status": 0, "error": reason})
        };
        (StatusCode::OK, with_notes(v, notes).to_string())
    } else {
        (
            StatusCode::OK,
            if accepted > 0 || n == 0 { "1" } else { "0" }.to_owned(),
        )
    };
    Ok(match callback {
        Some(cb) => respond(status, "application/javascript", format!("{cb}({text})")),
        None if text.starts_with('{') => respond(status, "application/json", text),
        None => respond(status, "text/plain", text),
    })
}

/// Adds the emulator's `notes` (records applied other than as written) to a JSON answer,
/// when there are any.
fn with_notes(mut answer: Json, notes: Vec<Json>) -> Json {
    if !notes.is_empty()
        && let Json::Object(m) = &mut answer
    {
        m.insert("notes".into(), Json::Array(notes));
    }
    answer
}

/// The ids Mixpanel echoes in `failed_records`.
fn failure_ids(v: &Json, endpoint: Endpoint) -> Json {
    let keys: &[&str] = match endpoint {
        Endpoint::Engage => &["$distinct_id"],
        Endpoint::Groups => &["$group_key", "$group_id"],
    };
    let mut m = serde_json::Map::new();
    for k in keys {
        if let Some(x) = v.get(*k).filter(|x| x.is_string()) {
            m.insert((*k).to_owned(), x.clone());
        }
    }
    Json::Object(m)
}

fn merge(into: &mut Json, from: Json) {
    if let (Json::Object(a), Json::Object(b)) = (into, from) {
        a.extend(b);
    }
}

/// A connection's stream that answers `408 Request Timeout` (then ends the connection)
/// when a request head starts arriving and is not complete within the timeout: hyper's
/// own header timeout closes without a word.
pub(crate) struct HeadDeadline<S> {
    inner: S,
    timeout: Duration,
    state: HeadState,
    /// Trailing bytes of the head read so far, to find its end across reads.
    tail: [u8; 3],
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// The 408 still to write, once the deadline passed.
    answer: Option<(&'static [u8], usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadState {
    /// Between requests: nothing of the next one read yet.
    Idle,
    /// A head is arriving.
    Head,
    /// The head is complete; the body (if any) and the answer follow.
    Done,
    /// The 408 went out: the stream reads as ended.
    TimedOut,
}

const HEAD_TIMEOUT_ANSWER: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: 62\r\nconnection: close\r\n\r\n{\"error\":\"the request head did not arrive in time\",\"status\":0}";

impl<S> HeadDeadline<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        HeadDeadline {
            inner,
            timeout,
            state: HeadState::Idle,
            tail: [0; 3],
            timer: None,
            answer: None,
        }
    }

    /// Follows the bytes just read: the start of a head arms the timer, its blank line
    /// disarms it.
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.state == HeadState::Idle {
            self.state = HeadState::Head;
            self.tail = [0; 3];
            self.timer = Some(Box::pin(tokio::time::sleep(self.timeout)));
        }
        if self.state != HeadState::Head {
            return;
        }
        let mut window: Vec<u8> = self.tail.to_vec();
        window.extend_from_slice(&bytes[..bytes.len().min(64 * 1024)]);
        if window.windows(4).any(|w| w == b"\r\n\r\n") || bytes.windows(4).any(|w| w == b"\r\n\r\n")
        {
            self.state = HeadState::Done;
            self.timer = None;
        } else {
            let n = window.len();
            self.tail.copy_from_slice(&window[n - 3..]);
        }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncRead
    for HeadDeadline<S>
{
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.state == HeadState::TimedOut {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled()[before..].to_vec();
                this.saw(&filled);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let expired = this
                    .timer
                    .as_mut()
                    .is_some_and(|t| t.as_mut().poll(cx).is_ready());
                if !expired {
                    return Poll::Pending;
                }
                this.timer = None;
                this.answer.get_or_insert((HEAD_TIMEOUT_ANSWER, 0));
                // Write the 408 straight to the socket, then read as ended.
                while let Some((bytes, sent)) = this.answer {
                    match std::pin::Pin::new(&mut this.inner).poll_write(cx, &bytes[sent..]) {
                        Poll::Ready(Ok(n)) if n > 0 && sent + n < bytes.len() => {
                            this.answer = Some((bytes, sent + n));
                        }
                        Poll::Ready(_) => this.answer = None,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                this.state = HeadState::TimedOut;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for HeadDeadline<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        // An answer going out ends the request: the next bytes start a new head.
        if self.state == HeadState::Done {
            self.state = HeadState::Idle;
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
