//! The node's accepted connections, bounded: at most `max_connections` open
//! at once (more are closed as soon as they are accepted, and counted), and
//! a new connection that sends nothing within the handshake timeout is
//! closed. An idle or slow peer therefore holds at most one slot, for at
//! most that long before its TLS handshake (or first plaintext byte); after
//! it, HTTP/2 keepalives notice dead peers.
//!
//! With TLS, the handshakes run here (each in its own task, bounded by the
//! same timeout, so a slow one holds back no other connection) with the
//! node's rustls configuration, which a reload may swap for new
//! certificates, keys and revocation lists; connections already open keep
//! theirs.
//!
//! Invariant: a connection's slot is released exactly when its socket is
//! dropped (the permit lives in the stream).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Figures of the listener, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ConnectionFigures {
    /// Connections closed on accept because `max_connections` were open.
    pub(crate) refused: AtomicU64,
    /// Connections closed because they sent nothing in time.
    pub(crate) timed_out: AtomicU64,
    /// Connections accepted.
    pub(crate) accepted: AtomicU64,
    /// Connections open now.
    pub(crate) open: AtomicU64,
    /// The most connections open at once since start.
    pub(crate) open_peak: AtomicU64,
    /// TLS handshakes that failed (no or a refused client certificate, a
    /// plaintext client, a wrong protocol) or timed out.
    pub(crate) tls_failed: AtomicU64,
}

/// The TLS configuration new connections get; swapped by a reload.
#[derive(Clone)]
pub(crate) struct TlsConfigCell(Arc<parking_lot::RwLock<Arc<rustls::ServerConfig>>>);

impl TlsConfigCell {
    pub(crate) fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self(Arc::new(parking_lot::RwLock::new(config)))
    }

    /// New connections get `config` from now on.
    pub(crate) fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.0.write() = config;
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.0.read()))
    }
}

/// The accepted connections of `listener` after their TLS handshakes,
/// bounded as the module says.
pub(crate) fn incoming_tls(
    listener: TcpListener,
    max_connections: usize,
    handshake_timeout: Duration,
    figures: Arc<ConnectionFigures>,
    tls: TlsConfigCell,
) -> impl Stream<Item = io::Result<tokio_rustls::server::TlsStream<Limited>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut accepted = Box::pin(incoming(
        listener,
        max_connections,
        handshake_timeout,
        Arc::clone(&figures),
    ));
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                next = accepted.next() => next,
            };
            let conn = match next {
                Some(Ok(conn)) => conn,
                Some(Err(e)) => {
                    // Out of descriptors or a reset before accept: pause a
                    // moment rather than spin.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                None => return,
            };
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            let figures = Arc::clone(&figures);
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(conn)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        figures.tls_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        figures.tls_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("TLS handshake timed out");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The accepted connections of `listener`, bounded as the module says.
pub(crate) fn incoming(
    listener: TcpListener,
    max_connections: usize,
    first_byte_timeout: Duration,
    figures: Arc<ConnectionFigures>,
) -> impl Stream<Item = io::Result<Limited>> {
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |accepted| {
        let stream = match accepted {
            Ok(stream) => stream,
            // Accept errors (EMFILE, a reset before accept) are the
            // server's to log; they do not end the stream.
            Err(e) => return Some(Err(e)),
        };
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => {
                figures.accepted.fetch_add(1, Ordering::Relaxed);
                let open = figures.open.fetch_add(1, Ordering::Relaxed) + 1;
                figures.open_peak.fetch_max(open, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                Some(Ok(Limited {
                    stream,
                    _permit: permit,
                    deadline: Some(Box::pin(tokio::time::sleep(first_byte_timeout))),
                    figures: Arc::clone(&figures),
                }))
            }
            Err(_) => {
                figures.refused.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                None
            }
        }
    })
}

/// An accepted connection holding its slot.
#[derive(Debug)]
pub(crate) struct Limited {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// Until the first byte arrives.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    figures: Arc<ConnectionFigures>,
}

impl Drop for Limited {
    fn drop(&mut self) {
        self.figures.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if let Some(deadline) = &mut this.deadline
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    this.deadline = None;
                    this.figures.timed_out.fetch_add(1, Ordering::Relaxed);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer sent nothing in time",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn slots_are_bounded_and_silent_peers_time_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let figures = Arc::new(ConnectionFigures::default());
        let mut incoming = Box::pin(incoming(
            listener,
            2,
            Duration::from_millis(200),
            Arc::clone(&figures),
        ));
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let mut first = incoming.next().await.unwrap().unwrap();
        let _second = incoming.next().await.unwrap().unwrap();
        // A third is closed on accept while two are open.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let pending = tokio::time::timeout(Duration::from_millis(300), incoming.next()).await;
        assert!(pending.is_err(), "the third was not handed on");
        assert_eq!(figures.refused.load(Ordering::Relaxed), 1);
        let mut byte = [0u8; 1];
        assert_eq!(c.read(&mut byte).await.unwrap(), 0, "closed by the node");
        // A silent peer times out.
        let err = first.read(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(figures.timed_out.load(Ordering::Relaxed), 1);
        assert_eq!(figures.open_peak.load(Ordering::Relaxed), 2);
        drop(first);
        assert_eq!(figures.open.load(Ordering::Relaxed), 1);
    }
}
