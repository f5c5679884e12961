//! What the transport needs from an async runtime: connect, spawn, sleep.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A byte stream the transport can speak HTTP over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// The runtime services the transport uses. Implemented for [`AsyncStd`] and [`Smol`];
/// implement it to run on another futures-io runtime.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The TCP stream type.
    type Tcp: Stream;
    /// Opens a TCP connection to `host:port` (resolving the name).
    fn connect(&self, host: &str, port: u16) -> BoxFuture<io::Result<Self::Tcp>>;
    /// Runs `future` in the background (hyper's connection task).
    fn spawn(&self, future: BoxFuture<()>);
    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<()>;
}

/// async-std: its `TcpStream`, `task::spawn` and `task::sleep`.
#[cfg(feature = "async-std")]
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

#[cfg(feature = "async-std")]
impl Runtime for AsyncStd {
    type Tcp = async_std::net::TcpStream;

    fn connect(&self, host: &str, port: u16) -> BoxFuture<io::Result<Self::Tcp>> {
        let host = host.to_owned();
        Box::pin(async move {
            let stream = async_std::net::TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }

    fn spawn(&self, future: BoxFuture<()>) {
        async_std::task::spawn(future);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(async_std::task::sleep(duration))
    }
}

/// smol: its `TcpStream`, global executor and `Timer`.
#[cfg(feature = "smol")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

#[cfg(feature = "smol")]
impl Runtime for Smol {
    type Tcp = smol::net::TcpStream;

    fn connect(&self, host: &str, port: u16) -> BoxFuture<io::Result<Self::Tcp>> {
        let host = host.to_owned();
        Box::pin(async move {
            let stream = smol::net::TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }

    fn spawn(&self, future: BoxFuture<()>) {
        smol::spawn(future).detach();
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(async move {
            smol::Timer::after(duration).await;
        })
    }
}
