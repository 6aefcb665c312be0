//! The guarded stream: [`GuardedIo`] ends a connection that idles, and
//! [`refuse_http`] turns one away with a fast 503.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::{Conn, Refusal};

/// A connection's stream. While no request is in flight and none has
/// ended for the idle timeout, reads end (as if the client had closed), so
/// hyper closes the connection. This covers a connection that never sends
/// a request, keep-alive connections between requests (HTTP/2 pings
/// included), and the TLS handshake. A connection that has not
/// authenticated keeps the deadline of its accept whatever it sends, so
/// requests with a wrong key cannot hold an unauthenticated slot; past half
/// of that period, the server's HTTP/1 responses on it say
/// `Connection: close` ([`Conn::closing_soon`]), so that the close does
/// not come under a client's next request.
pub struct GuardedIo<T> {
    io: T,
    conn: Conn,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> std::fmt::Debug for GuardedIo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedIo")
            .field("conn", &self.conn)
            .finish()
    }
}

impl<T> GuardedIo<T> {
    pub fn new(io: T, conn: Conn) -> Self {
        GuardedIo {
            io,
            conn,
            timer: None,
        }
    }

    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Whether the idle timeout has passed; otherwise the timer is armed to
    /// wake the reader when it might have.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let deadline = self.conn.idle_deadline();
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            // Moved only when it would fire too late, or has fired: every
            // request's end moves the deadline later, and a timer that
            // fires early is set again on the loop's next pass (or the
            // next read), once, not at every request.
            if timer.deadline() > deadline || (timer.is_elapsed() && timer.deadline() < deadline) {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.conn.active() > 0 {
                // Busy (a long response): look again an idle period later.
                self.conn.touch();
                continue;
            }
            if Instant::now() >= self.conn.idle_deadline() {
                return true;
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Bytes read are not activity: an HTTP/2 client answering the
        // server's keep-alive pings, or a TLS peer, would otherwise hold an
        // idle connection open forever. Only the end of a request (see
        // `RequestGuard`) moves the idle deadline; a request in flight
        // holds it off.
        if let Poll::Ready(r) = Pin::new(&mut this.io).poll_read(cx, buf) {
            return Poll::Ready(r);
        }
        if this.idle_expired(cx) {
            this.conn.closed_idle();
            tracing::debug!("closing an idle connection");
            // End of stream: hyper closes the connection quietly.
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Turns a connection away on a plain-HTTP port: reads what the client has
/// already sent (so closing does not reset the connection under the
/// answer), writes a 503 with `Connection: close` if the socket takes it
/// at once, and closes. Never waits.
pub fn refuse_http(stream: TcpStream, why: Refusal) {
    let mut scratch = [0u8; 8192];
    for _ in 0..8 {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let (message, code) = match why {
        Refusal::Full => (
            "the gateway has too many open connections; try again shortly",
            "too_many_connections",
        ),
        Refusal::Unauthenticated => (
            "the gateway has too many connections that have not sent a valid key; try again shortly",
            "too_many_unauthenticated_connections",
        ),
    };
    let body =
        format!(r#"{{"error":{{"message":"{message}","type":"server_error","code":"{code}"}}}}"#);
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Best effort: a full socket buffer or a reset just means a plain close.
    let _ = stream.try_write(response.as_bytes());
    drop(stream);
}

#[cfg(feature = "tonic")]
mod grpc {
    use std::net::SocketAddr;

    use tokio::net::TcpStream;
    use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

    use super::GuardedIo;
    use crate::Conn;

    /// What tonic puts in each request's extensions for a guarded stream.
    #[derive(Debug, Clone)]
    pub struct ConnInfo {
        pub tcp: TcpConnectInfo,
        pub conn: Conn,
    }

    impl Connected for GuardedIo<TcpStream> {
        type ConnectInfo = ConnInfo;

        fn connect_info(&self) -> ConnInfo {
            ConnInfo {
                tcp: self.get_ref().connect_info(),
                conn: self.conn().clone(),
            }
        }
    }

    fn info(ext: &http::Extensions) -> Option<&ConnInfo> {
        ext.get::<ConnInfo>()
            .or_else(|| ext.get::<TlsConnectInfo<ConnInfo>>().map(|t| t.get_ref()))
    }

    /// The connection a request came on (plain or TLS).
    pub fn conn_of(ext: &http::Extensions) -> Option<&Conn> {
        info(ext).map(|i| &i.conn)
    }

    /// The client's address, where tonic's `Request::remote_addr` no longer
    /// finds it (it looks for a bare `TcpConnectInfo`).
    pub fn remote_addr(ext: &http::Extensions) -> Option<SocketAddr> {
        info(ext).and_then(|i| i.tcp.remote_addr())
    }
}

#[cfg(feature = "tonic")]
pub use grpc::{conn_of, remote_addr, ConnInfo};

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{Gate, Limits};

    fn guarded() -> (
        GuardedIo<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Gate,
    ) {
        let gate = Gate::new(
            "test",
            Limits {
                idle_timeout: Duration::from_secs(1),
                ..Limits::default()
            },
        );
        let (server, client) = tokio::io::duplex(64);
        (GuardedIo::new(server, gate.admit().unwrap()), client, gate)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_ends_after_the_idle_timeout() {
        let (mut io, _client, gate) = guarded();
        let t0 = Instant::now();
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        assert_eq!(gate.idle_closed(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_alone_do_not_keep_it_open() {
        // Say HTTP/2 ping acknowledgements, with no request ever made.
        let (mut io, mut client, gate) = guarded();
        let t0 = Instant::now();
        let mut buf = [0u8; 8];
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            client.write_all(b"p").await.unwrap();
            assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        }
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        assert_eq!(gate.idle_closed(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unauthenticated_requests_do_not_move_the_deadline() {
        let (mut io, _client, gate) = guarded();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(600)).await;
        drop(io.conn().request()); // a request answered 401
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        assert_eq!(gate.idle_closed(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_keep_it_open() {
        let (mut io, mut client, gate) = guarded();
        let t0 = Instant::now();
        let mut buf = [0u8; 8];
        tokio::time::sleep(Duration::from_millis(800)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        // A request in flight for three idle periods: not idle.
        io.conn().authenticated();
        let guard = io.conn().request();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(guard);
        });
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
        // Closed one idle period after the request ended.
        assert_eq!(t0.elapsed(), Duration::from_millis(800 + 3000 + 1000));
        release.await.unwrap();
        assert_eq!(gate.idle_closed(), 1);
    }
}
