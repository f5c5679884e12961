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
                let config = config.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    let mut reader = BufReader::new(&mut tls);
                    let Ok(Some(_request)) = read_request(&mut reader) else {
                        return;
                    };
                    drop(reader);
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Type: text/plain\r\n\r\n1");
                    let _ = tls.flush();
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

/// A loopback port with nothing listening (bound, then released).
pub fn refused_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = l.local_addr().expect("local addr");
    drop(l);
    addr
}
