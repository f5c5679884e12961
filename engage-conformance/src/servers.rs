//! Scripted loopback servers for what the emulator cannot produce: exact request capture,
//! silence, and TLS with a self-signed certificate.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A request as the server read it off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    /// `POST`, `GET`, …
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The first header of that name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the scripted server does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Writes these bytes (a whole HTTP response).
    Raw(Vec<u8>),
    /// Writes these bytes, then closes the connection (a cut-off answer).
    RawThenClose(Vec<u8>),
    /// Closes the connection without answering.
    Close,
    /// Never answers (holds the connection until the server is dropped).
    Silent,
}

impl Reply {
    /// A response with this status, extra headers and body.
    pub fn http(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut s = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.push_str(body);
        Reply::Raw(s.into_bytes())
    }
}

/// Reads one HTTP/1.1 request with a Content-Length body; `None` at end of stream.
pub fn read_request(reader: &mut impl BufRead) -> io::Result<Option<RawRequest>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Some(RawRequest {
        method,
        target,
        headers,
        body,
    }))
}

/// A loopback server answering each request with the next scripted reply (the last one
/// repeats), recording what it received.
pub struct ScriptedServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<RawRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ScriptedServer {
    /// Starts on a free loopback port.
    pub fn start(script: Vec<Reply>) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(Mutex::new((script, 0usize)));
        let (rec, st) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (rec, st, script) = (rec.clone(), st.clone(), script.clone());
                std::thread::spawn(move || serve_connection(stream, rec, st, script));
            }
        });
        ScriptedServer {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn received(&self) -> Vec<RawRequest> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

type Script = Arc<Mutex<(Vec<Reply>, usize)>>;

fn serve_connection(
    stream: TcpStream,
    received: Arc<Mutex<Vec<RawRequest>>>,
    stop: Arc<AtomicBool>,
    script: Script,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Ok(Some(request)) = read_request(&mut reader) {
        received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request);
        let reply = {
            let mut s = script.lock().unwrap_or_else(|e| e.into_inner());
            let (steps, i) = &mut *s;
            let r = steps
                .get(*i)
                .or(steps.last())
                .cloned()
                .unwrap_or(Reply::Close);
            *i += 1;
            r
        };
        match reply {
            Reply::Raw(bytes) => {
                if writer.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::RawThenClose(bytes) => {
                let _ = writer.write_all(&bytes);
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return;
            }
            Reply::Close => return,
            Reply::Silent => {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
        }
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a [`TlsServer`] answers to a request: a whole HTTP response.
type Answerer = Arc<dyn Fn(&RawRequest) -> Vec<u8> + Send + Sync>;

/// A loopback HTTPS server with a fresh self-signed certificate for `127.0.0.1` and
/// `localhost`, answering every request `200` with body `1`.
pub struct TlsServer {
    addr: SocketAddr,
    cert_der: Vec<u8>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TlsServer {
    /// Starts on a free loopback port.
    pub fn start() -> TlsServer {
        Self::serving(Arc::new(|_request: &RawRequest| {
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Type: text/plain\r\n\r\n1".to_vec()
        }))
    }

    /// Starts on a free loopback port, passing each request on to the plain-HTTP server
    /// at `backend` (the emulator) and its answer back: HTTPS in front of it.
    pub fn in_front_of(backend: SocketAddr) -> TlsServer {
        Self::serving(Arc::new(move |request: &RawRequest| {
            forward(backend, request).unwrap_or_else(|e| {
                format!(
                    "HTTP/1.1 502 Bad Gateway\r\nContent-Length: {}\r\n\r\n{e}",
                    e.to_string().len()
                )
                .into_bytes()
            })
        }))
    }

    fn serving(answer: Answerer) -> TlsServer {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("self-signed certificate");
        let cert_der = certified.cert.der().to_vec();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(cert_der.clone())],
            key,
        )
        .expect("server config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (config, answer) = (config.clone(), answer.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    loop {
                        let mut reader = BufReader::new(&mut tls);
                        let Ok(Some(request)) = read_request(&mut reader) else {
                            break;
                        };
                        drop(reader);
                        let reply = answer(&request);
                        if tls.write_all(&reply).and_then(|()| tls.flush()).is_err() {
                            break;
                        }
                    }
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        TlsServer {
            addr,
            cert_der,
            stop,
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The certificate, DER: the root a client must trust.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `request` to `backend` on a fresh connection and reads the whole answer (the
/// connection closes after it).
fn forward(backend: SocketAddr, request: &RawRequest) -> io::Result<Vec<u8>> {
    let mut out = TcpStream::connect(backend)?;
    out.set_read_timeout(Some(Duration::from_secs(10)))?;
    out.write_all(&serialize(
        request,
        &["connection", "proxy-authorization"],
        true,
    ))?;
    let mut reply = Vec::new();
    io::Read::read_to_end(&mut out, &mut reply)?;
    Ok(reply)
}

/// `request` as bytes, without the headers named in `drop`, with `Connection: close`
/// when `close`.
fn serialize(request: &RawRequest, drop: &[&str], close: bool) -> Vec<u8> {
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
    for (k, v) in &request.headers {
        if !drop.contains(&k.as_str()) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&request.body);
    bytes
}

/// How a [`ConnectProxy`] treats what it is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyMode {
    /// Opens every tunnel and forwards every request.
    Open,
    /// Asks for these credentials (`Proxy-Authorization: Basic base64(user:password)`)
    /// and answers 407 without them.
    RequireBasic(String, String),
    /// Answers every request with this status (403: a policy refusal).
    Refuse(u16),
}

/// What a [`ConnectProxy`] was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    /// `CONNECT`, or the method of an absolute-form request.
    pub method: String,
    /// `host:port` for CONNECT, the absolute URL otherwise.
    pub target: String,
    /// The `Proxy-Authorization` header, if any.
    pub authorization: Option<String>,
    /// What the proxy answered: 200 for an open tunnel or a forwarded request.
    pub answered: u16,
}

/// A forward proxy on loopback: CONNECT tunnels (for HTTPS) and absolute-form requests
/// (for HTTP), with optional basic authentication or a refusal, recording what it was
/// asked.
pub struct ConnectProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<ProxyRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ConnectProxy {
    /// Starts on a free loopback port.
    pub fn start(mode: ProxyMode) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sn, st) = (seen.clone(), stop.clone());
        let mode = Arc::new(mode);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (sn, mode) = (sn.clone(), mode.clone());
                std::thread::spawn(move || {
                    let _ = proxy_connection(stream, &mode, &sn);
                });
            }
        });
        ConnectProxy {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:password@127.0.0.1:PORT`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// What it was asked, in order.
    pub fn seen(&self) -> Vec<ProxyRequest> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxy_connection(
    stream: TcpStream,
    mode: &ProxyMode,
    seen: &Mutex<Vec<ProxyRequest>>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut client = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let Some(request) = read_request(&mut reader)? else {
        return Ok(());
    };
    let authorization = request.header("proxy-authorization").map(str::to_owned);
    let answered = match mode {
        ProxyMode::Open => 200,
        ProxyMode::Refuse(status) => *status,
        ProxyMode::RequireBasic(user, password) => {
            use base64::Engine as _;
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            );
            if authorization.as_deref() == Some(expected.as_str()) {
                200
            } else {
                407
            }
        }
    };
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(ProxyRequest {
            method: request.method.clone(),
            target: request.target.clone(),
            authorization,
            answered,
        });
    if answered != 200 {
        let extra = if answered == 407 {
            "Proxy-Authenticate: Basic realm=\"test\"\r\n"
        } else {
            ""
        };
        client.write_all(
            format!("HTTP/1.1 {answered} Refused\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )?;
        return Ok(());
    }
    let (upstream_addr, first) = if request.method == "CONNECT" {
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
        (request.target.clone(), Vec::new())
    } else {
        // http://host:port/path: forward to host:port as it came, minus the credentials.
        let rest = request.target.trim_start_matches("http://");
        let authority = rest.split('/').next().unwrap_or_default().to_owned();
        (
            authority,
            serialize(&request, &["proxy-authorization"], false),
        )
    };
    let mut upstream = TcpStream::connect(upstream_addr)?;
    upstream.write_all(&first)?;
    // Whatever the reader already holds belongs upstream too.
    upstream.write_all(reader.buffer())?;
    let mut from_upstream = upstream.try_clone()?;
    let mut to_client = client.try_clone()?;
    let back = std::thread::spawn(move || {
        let _ = io::copy(&mut from_upstream, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Write);
    });
    let mut from_client = reader.into_inner();
    let _ = io::copy(&mut from_client, &mut upstream);
    let _ = upstream.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
    Ok(())
}

/// A loopback port with nothing listening (bound, then released).
pub fn refused_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = l.local_addr().expect("local addr");
    drop(l);
    addr
}
