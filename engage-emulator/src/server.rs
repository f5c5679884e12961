//! The HTTP side: decoding what real clients send, validating, answering as Mixpanel does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use engage_core::{Endpoint, GroupOperations, check_record};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value as Json, json};

use crate::faults::{FaultConfig, FaultKind, Injector};
use crate::state::{Geo, Stats, Store, Valid, time_ms};

/// Most records in one request.
const MAX_RECORDS: usize = 2000;

/// What the server is configured with.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) token: Option<String>,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("body_timeout", &self.body_timeout)
            .finish()
    }
}

/// State shared by every connection and the library handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) store: Mutex<Store>,
    pub(crate) faults: Mutex<Injector>,
}

/// Locks, recovering from a poisoned lock (a panic elsewhere must not stop the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(settings: Settings, faults: FaultConfig) -> Self {
        Shared {
            settings,
            store: Mutex::new(Store::default()),
            faults: Mutex::new(Injector::new(faults)),
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        lock(&self.store).stats
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

type Answer = Result<Response<Full<Bytes>>, CloseConnection>;

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response(status: StatusCode, v: &Json) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error_response(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json_response(status, &json!({"error": message.into(), "status": 0}))
}

/// Routes one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Answer {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (_, "/engage" | "/engage/") => ingest(&shared, remote, req, Endpoint::Engage).await,
        (_, "/groups" | "/groups/") => ingest(&shared, remote, req, Endpoint::Groups).await,
        (&Method::GET, "/_emulator/profiles") => {
            let profiles = lock(&shared.store).profiles();
            Ok(json_response(StatusCode::OK, &json!(profiles)))
        }
        (&Method::GET, p) if p.starts_with("/_emulator/profiles/") => {
            let raw = &p["/_emulator/profiles/".len()..];
            let id: String = percent_decode(raw);
            match lock(&shared.store).profile(&id) {
                Some(profile) => Ok(json_response(StatusCode::OK, &Json::Object(profile))),
                None => Ok(error_response(
                    StatusCode::NOT_FOUND,
                    format!("no profile {id:?}"),
                )),
            }
        }
        (&Method::GET, "/_emulator/groups") => {
            let groups = lock(&shared.store).groups();
            Ok(json_response(StatusCode::OK, &json!(groups)))
        }
        (&Method::GET, "/_emulator/stats") => {
            Ok(json_response(StatusCode::OK, &json!(shared.stats())))
        }
        (&Method::POST, "/_emulator/reset") => {
            lock(&shared.store).reset();
            Ok(json_response(StatusCode::OK, &json!({"status": 1})))
        }
        (&Method::GET, "/_emulator/faults") => {
            let config = lock(&shared.faults).config().clone();
            Ok(json_response(StatusCode::OK, &json!(config)))
        }
        (&Method::POST, "/_emulator/faults") => {
            let body = match read_body(&shared, req).await {
                Ok(b) => b,
                Err(r) => return Ok(r),
            };
            match serde_json::from_slice::<FaultConfig>(&body) {
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

fn percent_decode(s: &str) -> String {
    // form_urlencoded also turns '+' into ' '; a path keeps '+' as is.
    let protected = s.replace('+', "%2B");
    form_urlencoded::parse(format!("x={protected}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Reads the whole body within the size cap and the body timeout.
async fn read_body(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Bytes, Response<Full<Bytes>>> {
    let cap = shared.settings.max_body_bytes;
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the {cap}-byte limit"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let limited = Limited::new(req.into_body(), cap);
    match tokio::time::timeout(shared.settings.body_timeout, limited.collect()).await {
        Err(_) => Err(error_response(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(error_response(
            StatusCode::BAD_REQUEST,
            format!("could not read the body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn truthy(v: Option<&String>) -> Option<bool> {
    v.map(|s| matches!(s.trim(), "1" | "true"))
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

/// Splits the JSON data into records: an array, or one object standing for one.
fn split_records(data: &[u8]) -> Result<Vec<Result<Json, String>>, String> {
    let text = std::str::from_utf8(data).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.starts_with('{') {
        return Ok(vec![parse_record(trimmed)]);
    }
    if !trimmed.starts_with('[') {
        return Err("the body is not a JSON array or object".into());
    }
    // Raw values first, so one bad record (1e999) fails alone rather than the batch.
    let raws: Vec<Box<serde_json::value::RawValue>> =
        serde_json::from_str(trimmed).map_err(|e| format!("invalid JSON: {e}"))?;
    if raws.len() > MAX_RECORDS {
        return Err(format!(
            "{} records in one request; the limit is {MAX_RECORDS}",
            raws.len()
        ));
    }
    Ok(raws.iter().map(|r| parse_record(r.get())).collect())
}

fn parse_record(text: &str) -> Result<Json, String> {
    serde_json::from_str(text).map_err(|e| {
        if e.to_string().contains("number out of range") {
            "number out of range: NaN and Infinity have no JSON form".to_owned()
        } else {
            format!("invalid JSON: {e}")
        }
    })
}

struct Params(HashMap<String, String>);

impl Params {
    fn from_query(q: Option<&str>) -> Self {
        Params(
            q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }
}

async fn ingest(
    shared: &Arc<Shared>,
    remote: SocketAddr,
    req: Request<Incoming>,
    endpoint: Endpoint,
) -> Answer {
    lock(&shared.store).stats.requests += 1;
    let method = req.method().clone();
    if method != Method::POST && method != Method::GET {
        return Ok(error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST (or GET with data=)",
        ));
    }
    let mut params = Params::from_query(req.uri().query());
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
    let body = match read_body(shared, req).await {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    // Faults are drawn for requests that got this far, so a script stays in step with
    // the requests a client meant to make.
    let (fault, slow) = {
        let mut faults = lock(&shared.faults);
        (faults.next(), faults.slow_delay())
    };
    if fault.is_some() {
        lock(&shared.store).stats.faults_injected += 1;
    }
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
    let data: Vec<u8> = if method == Method::GET {
        match params.0.get("data") {
            Some(d) => match decode_data(d) {
                Ok(d) => d,
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
        let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        let data = form.get("data").cloned();
        for (k, v) in form {
            if k != "data" {
                params.0.insert(k, v);
            }
        }
        match data {
            Some(d) => match decode_data(&d) {
                Ok(d) => d,
                Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, e)),
            },
            // `curl -d '[...]'` labels raw JSON as a form: take it as JSON.
            None if body
                .trim_ascii_start()
                .first()
                .is_some_and(|b| matches!(b, b'[' | b'{')) =>
            {
                body.to_vec()
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
        body.to_vec()
    } else {
        return Ok(error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {content_type:?} is not accepted; send application/json or a form with data="
            ),
        ));
    };
    let records = match split_records(&data) {
        Ok(r) => r,
        Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, e)),
    };
    let geolocate = truthy(params.0.get("ip")).unwrap_or(true);
    let verbose = truthy(params.0.get("verbose")).unwrap_or(false);
    let strict = truthy(params.0.get("strict")).unwrap_or(false);
    let callback = params.0.get("callback").filter(|c| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.'))
    });

    let mut valid = Vec::new();
    let mut failed = Vec::new();
    let mut non_idempotent = false;
    let n = records.len();
    for (index, record) in records.into_iter().enumerate() {
        let value = match record {
            Ok(v) => v,
            Err(message) => {
                failed.push(json!({"index": index, "field": Json::Null, "message": message}));
                continue;
            }
        };
        let ids = failure_ids(&value, endpoint);
        let checked = match check_record(&value, endpoint, GroupOperations::Documented) {
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
            Some(ip) => Geo::Record(ip.to_owned()),
            None if geolocate => Geo::Request(remote.ip().to_string()),
            None => Geo::None,
        };
        non_idempotent |= matches!(checked.operation, "$add" | "$append");
        valid.push(Valid {
            distinct_id: checked.distinct_id.map(str::to_owned),
            group: checked.group.map(|(k, i)| (k.to_owned(), i.to_owned())),
            op: checked.operation,
            payload: checked.payload.clone(),
            time_ms: checked.object.get("$time").and_then(time_ms),
            ignore_time: checked.object.get("$ignore_time") == Some(&Json::Bool(true)),
            geo,
        });
    }
    let accepted = valid.len();
    {
        let mut store = lock(&shared.store);
        store.stats.records_received += n as u64;
        store.stats.rejected += failed.len() as u64;
        // The decoded data, not the raw body: GET requests have none, and a form body and a
        // JSON body with the same records are the same batch.
        store.apply(&data, valid, non_idempotent);
    }
    if fault == Some(FaultKind::AppliedThen500) {
        return Ok(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
        ));
    }
    let (status, text) = if strict && !failed.is_empty() {
        (
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "error": "some data points in the request failed validation", "status": "Bad Request", "num_records_imported": accepted, "failed_records": failed}).to_string(),
        )
    } else if strict {
        (
            StatusCode::OK,
            json!({"code": 200, "status": "OK", "num_records_imported": accepted}).to_string(),
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
        (StatusCode::OK, v.to_string())
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
