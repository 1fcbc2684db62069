//! The TCP listener the server accepts connections on. It gives every connection one fix: when
//! the HTTP layer (hyper) refuses a request it cannot parse before the application sees it (a
//! request line over 65,534 characters: 414; headers over its buffer: 431; a malformed request:
//! 400), hyper answers with a bare status line and an empty body. The connection rewrites that
//! answer into the same status with an OperationOutcome saying what was wrong and what to do (for
//! a long search: `POST [type]/_search` with the parameters in the body), so every error the
//! server sends is an OperationOutcome.
//!
//! hyper's own answers are recognised by their shape: a 4xx status line at the start of a write
//! whose header block has no `x-request-id` (every answer of the application carries one).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::error::FhirError;

/// The listener: accepted connections are [`Conn`]s.
pub struct Listener(pub TcpListener);

/// The peer's address of a connection (the `ConnectInfo` handlers and middleware read).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::serve::Listener for Listener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (
            Conn {
                io,
                replacing: None,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// One accepted connection.
pub struct Conn {
    io: TcpStream,
    /// A replacement being written: its bytes, how many are written, and the length of the
    /// write it stands for (reported to hyper once all of it is out).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

/// The OperationOutcome answer standing in for hyper's bare one, if `head` is one.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 4")?;
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let block = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    if block.contains("\r\nx-request-id:") || !block.contains("\r\ncontent-length: 0") {
        return None;
    }
    let error = match rest.get(..2)? {
        b"14" => FhirError::UriTooLong(
            "the request line (method and URL) is longer than the HTTP layer's limit of 65,534 characters; send a long search as POST [base]/[type]/_search with its parameters in an application/x-www-form-urlencoded body".into(),
        ),
        b"31" => FhirError::HeadersTooLarge(
            "the request's header fields (or its URL) exceed the HTTP layer's buffer; send a long search as POST [base]/[type]/_search with its parameters in an application/x-www-form-urlencoded body".into(),
        ),
        b"00" => FhirError::BadRequest(
            "the request is not valid HTTP/1.1 (request line, method, version or a header could not be parsed)".into(),
        ),
        _ => return None,
    };
    let body = serde_json::to_vec(&error.outcome()).ok()?;
    let status = error.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/fhir+json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl Conn {
    /// Write the pending replacement; Ready(n) with the replaced write's length when done.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<usize>>> {
        let Some((bytes, off, report)) = &mut self.replacing else {
            return Poll::Ready(Ok(None));
        };
        while *off < bytes.len() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*off..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => *off += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let n = *report;
        self.replacing = None;
        Poll::Ready(Ok(Some(n)))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            if let Some(r) = replacement(buf) {
                self.replacing = Some((r, 0, buf.len()));
            }
        }
        if let Some(n) = ready!(self.drain(cx))? {
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                if let Some(r) = replacement(first) {
                    let total = bufs.iter().map(|b| b.len()).sum();
                    self.replacing = Some((r, 0, total));
                }
            }
        }
        if let Some(n) = ready!(self.drain(cx))? {
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_http_layers_bare_answers_are_replaced() {
        let bare = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 05:00:00 GMT\r\n\r\n";
        let r = String::from_utf8(replacement(bare).expect("replaced")).expect("utf8");
        assert!(r.starts_with("HTTP/1.1 414 URI Too Long\r\n"));
        assert!(r.contains("OperationOutcome") && r.contains("_search"));
        let len: usize = r
            .split("content-length: ")
            .nth(1)
            .and_then(|x| x.split("\r\n").next())
            .and_then(|x| x.parse().ok())
            .expect("length");
        assert_eq!(len, r.split("\r\n\r\n").nth(1).map_or(0, str::len));
        assert!(replacement(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"
        )
        .is_some());
        // the application's own answers carry a request id, or a body
        assert!(replacement(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nx-request-id: a\r\n\r\n"
        )
        .is_none());
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 120\r\n\r\n{").is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"{\"resourceType\"").is_none());
    }
}
