//! End-to-end tests of the metrics endpoint over raw TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use churn_metrics::{bind, serve, Error, Health, Metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Server {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), Error>>,
}

async fn start() -> Server {
    let listener = bind("127.0.0.1:0").await.expect("bind ephemeral port");
    let addr = listener.local_addr().expect("local addr");
    let metrics = Arc::new(Metrics::new());
    let health = Health::default();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    Server {
        addr,
        metrics,
        health,
        shutdown,
        task,
    }
}

impl Server {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve stops after cancel")
            .expect("serve task did not panic")
            .expect("serve returns Ok");
    }
}

struct Reply {
    status_line: String,
    headers: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends raw bytes and reads the whole response (the server closes the connection).
async fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("response within timeout")
        .expect("read response");
    let text = String::from_utf8(buf).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("complete response head");
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Reply {
        status_line: status_line.to_owned(),
        headers: headers.to_owned(),
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n");
    raw(addr, req.as_bytes()).await
}

#[tokio::test]
async fn metrics_endpoint_serves_current_values() {
    let s = start().await;
    s.metrics.scores.inc_by(41);
    s.metrics.scores.inc();
    s.metrics.consumed("purchases").inc_by(7);

    let r = get(s.addr, "GET", "/metrics").await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.header("Content-Type"), Some("text/plain; version=0.0.4"));
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(
        r.header("Content-Length"),
        Some(r.body.len().to_string().as_str())
    );
    assert!(
        r.body.contains("churn_score_scores_total 42\n"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("churn_ingest_events_consumed_total{topic=\"purchases\"} 7\n"),
        "{}",
        r.body
    );

    // Prometheus-style request: query string, Accept negotiation, gzip offer.
    let prom = format!(
        "GET /metrics?x=1 HTTP/1.1\r\nHost: {}\r\nUser-Agent: Prometheus/3.0.0\r\n\
         Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1\r\n\
         Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n",
        s.addr
    );
    let r = raw(s.addr, prom.as_bytes()).await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert!(r.body.contains("churn_score_scores_total 42\n"));
    s.stop().await;
}

#[tokio::test]
async fn head_has_headers_only() {
    let s = start().await;
    let r = get(s.addr, "HEAD", "/metrics").await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    let len: usize = r
        .header("Content-Length")
        .expect("content-length")
        .parse()
        .expect("numeric length");
    assert!(len > 0);
    assert!(r.body.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn readyz_flips_after_set_ready() {
    let s = start().await;
    let r = get(s.addr, "GET", "/readyz").await;
    assert_eq!(r.status_line, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(r.body, "not ready\n");

    s.health.set_ready(true);
    let r = get(s.addr, "GET", "/readyz").await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.body, "ok\n");
    s.stop().await;
}

#[tokio::test]
async fn healthz_follows_live_flag() {
    let s = start().await;
    let r = get(s.addr, "GET", "/healthz").await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.body, "ok\n");

    s.health.set_live(false);
    let r = get(s.addr, "GET", "/healthz").await;
    assert_eq!(r.status_line, "HTTP/1.1 503 Service Unavailable");
    s.stop().await;
}

#[tokio::test]
async fn unknown_path_and_method() {
    let s = start().await;
    let r = get(s.addr, "GET", "/nope").await;
    assert_eq!(r.status_line, "HTTP/1.1 404 Not Found");

    let r = raw(
        s.addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(r.status_line, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));

    let r = get(s.addr, "DELETE", "/readyz").await;
    assert_eq!(r.status_line, "HTTP/1.1 405 Method Not Allowed");
    s.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_requests() {
    let s = start().await;
    let r = raw(s.addr, b"hello there\r\n\r\n").await;
    assert_eq!(r.status_line, "HTTP/1.1 400 Bad Request");

    let mut big = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 10 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let r = raw(s.addr, &big).await;
    assert_eq!(
        r.status_line,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    s.stop().await;
}

#[tokio::test]
async fn slow_client_times_out() {
    let s = start().await;
    let started = std::time::Instant::now();
    // Head never completed: the server answers 408 after its 5 s read timeout.
    let r = raw(s.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(r.status_line, "HTTP/1.1 408 Request Timeout");
    assert!(started.elapsed() >= Duration::from_secs(4));
    s.stop().await;
}

#[tokio::test]
async fn shutdown_closes_listener() {
    let s = start().await;
    let addr = s.addr;
    assert_eq!(
        get(addr, "GET", "/healthz").await.status_line,
        "HTTP/1.1 200 OK"
    );
    s.stop().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn concurrent_scrapes() {
    let s = start().await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let addr = s.addr;
        tasks.push(tokio::spawn(
            async move { get(addr, "GET", "/metrics").await },
        ));
    }
    for t in tasks {
        let r = t.await.expect("request task");
        assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    }
    s.stop().await;
}

#[tokio::test]
async fn bind_error_names_the_address() {
    let taken = bind("127.0.0.1:0").await.expect("bind ephemeral port");
    let addr = taken.local_addr().expect("local addr").to_string();
    let err = bind(&addr).await.expect_err("port already in use");
    assert!(matches!(err, Error::Bind { .. }));
    assert!(err.to_string().contains(&addr), "{err}");

    let err = bind("not-an-address").await.expect_err("invalid address");
    assert!(err.to_string().contains("not-an-address"), "{err}");
}
