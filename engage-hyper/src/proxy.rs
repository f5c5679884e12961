//! The connector under hyper-rustls: straight to the target, or through the proxy
//! engage-proxy names for it (a CONNECT tunnel for `https://`, the proxy itself for
//! `http://`, whose requests then go out in absolute form).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use engage_proxy::{Proxies, Route, closed_before_reply, connect_request, read_connect_reply};
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects to the target, or through its proxy.
#[derive(Clone, Debug)]
pub(crate) struct ProxyConnector {
    pub(crate) http: HttpConnector,
    pub(crate) proxies: Arc<Proxies>,
}

/// A connection, remembering whether requests on it go to a proxy in absolute form.
#[derive(Debug)]
pub(crate) struct ProxyStream {
    io: TokioIo<TcpStream>,
    via_proxy: bool,
}

impl Service<Uri> for ProxyConnector {
    type Response = ProxyStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        let route = self.proxies.route(&target);
        let mut http = self.http.clone();
        Box::pin(async move {
            let Some(route) = route else {
                let io = http.call(target).await?;
                return Ok(ProxyStream {
                    io,
                    via_proxy: false,
                });
            };
            let proxy: Uri = route.to_string().parse()?;
            let io = http.call(proxy).await?;
            if !route.tunnel() {
                return Ok(ProxyStream {
                    io,
                    via_proxy: true,
                });
            }
            let tcp = tunnel(io.into_inner(), &target, &route).await?;
            Ok(ProxyStream {
                io: TokioIo::new(tcp),
                via_proxy: false,
            })
        })
    }
}

/// Opens a CONNECT tunnel to `target` on `tcp`, a connection to the proxy.
async fn tunnel(mut tcp: TcpStream, target: &Uri, route: &Route) -> Result<TcpStream, BoxError> {
    tcp.write_all(&connect_request(target, route)).await?;
    let mut reply = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(closed_before_reply(route).into());
        }
        reply.extend_from_slice(&chunk[..n]);
        if let Some(end) = read_connect_reply(&reply, route)? {
            if end != reply.len() {
                // Nothing may come from the target before the client's TLS hello.
                return Err(engage_core::TransportError::new(
                    engage_core::delivery::TransportErrorKind::Protocol,
                    false,
                    format!("proxy {route} sent bytes after its answer to CONNECT"),
                )
                .into());
            }
            return Ok(tcp);
        }
    }
}

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.via_proxy)
    }
}

impl Read for ProxyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for ProxyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
