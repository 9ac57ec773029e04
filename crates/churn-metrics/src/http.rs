//! A minimal HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz`.
//!
//! One request per connection: read the request head (at most [`MAX_HEAD`] bytes within
//! [`IO_TIMEOUT`]), route on method and path, write a response with `Content-Length` and
//! `Connection: close`, close. Request bodies are never read. Good enough for Prometheus,
//! curl and orchestrator probes, and small enough to audit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{Error, Health, Metrics, Result};

/// Largest accepted request head (request line + headers).
const MAX_HEAD: usize = 8 * 1024;
/// Time allowed to receive the request head, and separately to send the response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Time spent discarding unread request bytes after responding, so the close does not turn
/// into a TCP reset that would destroy the response on the client side.
const LINGER: Duration = Duration::from_secs(1);
/// Connections handled at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 128;
/// Consecutive accept failures (with back-off capped at one second) before giving up.
const MAX_ACCEPT_FAILURES: u32 = 60;

/// Binds the metrics endpoint; the error names the address.
///
/// Bind with port 0 to get an ephemeral port, and read it with
/// [`TcpListener::local_addr`] before handing the listener to [`serve`].
pub async fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        addr: addr.to_owned(),
        source,
    })
}

/// Serves `GET`/`HEAD` `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`
/// is cancelled.
///
/// - `/metrics`: 200, `text/plain; version=0.0.4`, [`Metrics::render`] output (500 if
///   encoding fails).
/// - `/healthz`: 200 `ok` while [`Health::is_live`], else 503 `not live`.
/// - `/readyz`: 200 `ok` while [`Health::is_ready`], else 503 `not ready`.
/// - Other methods on these paths: 405 with `Allow: GET, HEAD`; other paths: 404.
///
/// Each connection runs on its own task. On cancellation the listener is closed and
/// in-flight requests get up to 5 s to finish. Returns an error only if accepting
/// keeps failing for about a minute.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<()> {
    let local = listener
        .local_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    tracing::info!(addr = %local, "metrics endpoint listening");

    let mut conns = JoinSet::new();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(joined) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = joined {
                    tracing::warn!(error = %e, "metrics connection task failed");
                }
            }
            accepted = listener.accept(), if conns.len() < MAX_CONNECTIONS => match accepted {
                Ok((stream, peer)) => {
                    failures = 0;
                    conns.spawn(handle(stream, peer, metrics.clone(), health.clone()));
                }
                Err(source) => {
                    failures += 1;
                    if failures >= MAX_ACCEPT_FAILURES {
                        return Err(Error::Accept { addr: local, source });
                    }
                    let backoff = Duration::from_millis(10u64 << failures.min(7)).min(Duration::from_secs(1));
                    tracing::warn!(error = %source, ?backoff, "metrics endpoint accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            },
        }
    }

    drop(listener);
    let drained = tokio::time::timeout(IO_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
    }
    tracing::info!(addr = %local, "metrics endpoint stopped");
    Ok(())
}

/// Why no request head could be read.
enum HeadError {
    /// The peer closed (or reset) before sending a complete head.
    Closed,
    /// The head exceeds [`MAX_HEAD`].
    TooLarge,
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, metrics: Arc<Metrics>, health: Health) {
    let response = match tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream)).await {
        Err(_elapsed) => Response::text(408, "request timeout\n"),
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::TooLarge)) => Response::text(431, "request head too large\n"),
        Ok(Ok(head)) => respond(&head, &metrics, &health),
    };
    tracing::trace!(%peer, status = response.status, "metrics endpoint request");

    let bytes = response.into_bytes();
    let write = async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(IO_TIMEOUT, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "metrics endpoint write failed");
            return;
        }
        Err(_elapsed) => {
            tracing::debug!(%peer, "metrics endpoint write timed out");
            return;
        }
    }

    // Drain whatever the client still sends (a body we ignored) until it closes.
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 1024];
        let mut total = 0usize;
        while let Ok(n @ 1..) = stream.read(&mut sink).await {
            total += n;
            if total > 64 * 1024 {
                break;
            }
        }
    })
    .await;
}

/// Reads until the blank line ending the request head; returns the head without it.
async fn read_head(stream: &mut TcpStream) -> std::result::Result<Vec<u8>, HeadError> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Err(HeadError::TooLarge);
        }
        let n = match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(n) => n,
        };
        let searched_from = len.saturating_sub(3);
        len += n;
        if let Some(end) = head_end(&buf[searched_from..len]) {
            buf.truncate(searched_from + end);
            return Ok(buf);
        }
    }
}

/// Offset of the end-of-head marker (`\r\n\r\n`, or a lenient `\n\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find(|&i| buf[i..].starts_with(b"\r\n\r\n") || buf[i..].starts_with(b"\n\n"))
}

fn respond(head: &[u8], metrics: &Metrics, health: &Health) -> Response {
    let Some((method, path)) = parse_request_line(head) else {
        return Response::text(400, "bad request\n");
    };
    let is_head = method == "HEAD";
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return Response::text(404, "not found\n").head_only(is_head);
    }
    if !matches!(method, "GET" | "HEAD") {
        let mut r = Response::text(405, "method not allowed\n");
        r.allow = true;
        return r;
    }
    let response = match path {
        "/metrics" => match metrics.try_render() {
            Ok(body) => Response {
                status: 200,
                content_type: prometheus::TEXT_FORMAT,
                body: body.into_bytes(),
                allow: false,
                head_only: false,
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot encode metrics");
                Response::text(500, "cannot encode metrics\n")
            }
        },
        "/healthz" if health.is_live() => Response::text(200, "ok\n"),
        "/healthz" => Response::text(503, "not live\n"),
        _ if health.is_ready() => Response::text(200, "ok\n"),
        _ => Response::text(503, "not ready\n"),
    };
    response.head_only(is_head)
}

/// `(method, path)` from `METHOD SP request-target SP HTTP/1.x`; the query is dropped and an
/// absolute-form target (`http://host/path`) is reduced to its path.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let head = std::str::from_utf8(head).ok()?;
    // Tolerate empty lines before the request line (RFC 9112 §2.2).
    let line = head
        .lines()
        .find(|l| !l.trim().is_empty())?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let target = match target.split_once("://") {
        Some((_scheme, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let path = target.split(['?', '#']).next().unwrap_or_default();
    path.starts_with('/').then_some((method, path))
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Add `Allow: GET, HEAD` (405 responses).
    allow: bool,
    /// Answering `HEAD`: headers as for `GET`, no body.
    head_only: bool,
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            allow: false,
            head_only: false,
        }
    }

    fn head_only(mut self, head_only: bool) -> Self {
        self.head_only = head_only;
        self
    }

    fn into_bytes(self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if self.allow {
            out.extend_from_slice(b"Allow: GET, HEAD\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_lines() {
        fn ok(s: &str) -> Option<(&str, &str)> {
            parse_request_line(s.as_bytes())
        }
        assert_eq!(
            ok("GET /metrics HTTP/1.1\r\nHost: x"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            ok("HEAD /readyz?verbose=1 HTTP/1.0"),
            Some(("HEAD", "/readyz"))
        );
        assert_eq!(ok("\r\nGET /healthz HTTP/1.1"), Some(("GET", "/healthz")));
        assert_eq!(
            ok("GET http://host:9464/metrics HTTP/1.1"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(ok("GET /metrics"), None);
        assert_eq!(ok("GET /metrics HTTP/2.0"), None);
        assert_eq!(ok("GET  /metrics HTTP/1.1"), None);
        assert_eq!(ok("GET * HTTP/1.1"), None);
        assert_eq!(parse_request_line(b"GET /\xff HTTP/1.1"), None);
    }

    #[test]
    fn finds_head_end() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }

    #[test]
    fn head_responses_have_length_but_no_body() {
        let bytes = Response::text(200, "ok\n").head_only(true).into_bytes();
        let text = String::from_utf8(bytes).expect("ascii");
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
