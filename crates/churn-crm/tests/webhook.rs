//! `Forwarder::deliver` against a real local HTTP(S) server (no broker): Standard Webhooks
//! signing, retries, backoff, `Retry-After`, permanent failures, timeouts, connect errors,
//! cancellation, https with a private CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use churn_crm::{signing_key, verify, Backoff, Delivery, Forwarder, WebhookConfig};
use churn_metrics::Metrics;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    ce_id: String,
    webhook_id: String,
    content_type: String,
    body: Vec<u8>,
    signature_ok: bool,
}

/// The server's answer to the n-th request (0-based): status, Retry-After, delay, body.
type Script = dyn Fn(usize) -> (u16, Option<&'static str>, Duration, &'static str) + Send + Sync;

/// A Standard Webhooks secret: base64 of `test-secret` (the forwarder must decode it).
const SECRET: &str = "whsec_dGVzdC1zZWNyZXQ=";

async fn server(script: Arc<Script>) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    server_with(script, None).await
}

/// [`server`], speaking TLS with `tls` when given.
async fn server_with(
    script: Arc<Script>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (script, log) = (script.clone(), log.clone());
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            serve(s, script, log).await;
                        }
                    }
                    None => serve(stream, script, log).await,
                }
            });
        }
    });
    (addr, seen)
}

async fn serve<IO>(io: IO, script: Arc<Script>, log: Arc<Mutex<Vec<Seen>>>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let (script, log) = (script.clone(), log.clone());
        async move {
            let h = req.headers().clone();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            let get = |k: &str| {
                h.get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let ts: i64 = get("webhook-timestamp").parse().unwrap_or(0);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let key = signing_key(SECRET).expect("key");
            let id = get("webhook-id");
            let signature = get("webhook-signature");
            let signature_ok = verify(&key, &id, ts, &body, &signature, now, 300).is_ok();
            let n = {
                let mut l = log.lock().expect("lock");
                l.push(Seen {
                    ce_id: get("ce-id"),
                    webhook_id: id,
                    content_type: get("content-type"),
                    body,
                    signature_ok,
                });
                l.len() - 1
            };
            let (status, retry_after, delay, text) = script(n);
            tokio::time::sleep(delay).await;
            let mut resp = Response::builder().status(status);
            if let Some(r) = retry_after {
                resp = resp.header("retry-after", r);
            }
            Ok::<_, Infallible>(
                resp.body(Full::new(Bytes::from_static(text.as_bytes())))
                    .expect("response"),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

fn config(url: String) -> WebhookConfig {
    WebhookConfig {
        url,
        secret: Some(SECRET.as_bytes().to_vec()),
        ca_location: None,
        timeout: Duration::from_millis(500),
        max_attempts: Some(4),
        max_elapsed: Some(Duration::from_secs(20)),
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(80),
            max_retry_after: Duration::from_secs(60),
        },
    }
}

const BODY: &[u8] = br#"{"specversion":"1.0","id":"a1","type":"com.churnstream.customer.at_risk","data":{"customer_id":"c1"}}"#;

fn counter(m: &Metrics, outcome: &str) -> u64 {
    m.crm_delivery(outcome).get()
}

#[tokio::test]
async fn transient_failures_are_retried_with_the_same_id_and_fresh_signatures() {
    let (addr, seen) = server(Arc::new(|n| match n {
        0 => (503, None, Duration::ZERO, "busy"),
        1 => (500, None, Duration::ZERO, ""),
        _ => (202, None, Duration::ZERO, "ok"),
    }))
    .await;
    let m = Metrics::new();
    let f = Forwarder::new(config(format!("http://{addr}/hook")), &m).expect("forwarder");
    let d = f.deliver("a1", BODY, &CancellationToken::new()).await;
    assert_eq!(d, Delivery::Delivered { attempts: 3 });
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.ce_id, "a1");
        assert_eq!(s.webhook_id, "a1", "webhook-id = ce-id");
        assert_eq!(s.content_type, "application/cloudevents+json");
        assert_eq!(s.body, BODY, "body is the alert's bytes exactly");
        assert!(s.signature_ok, "signature verifies");
    }
    assert_eq!(counter(&m, "delivered"), 1);
    assert_eq!(counter(&m, "retried"), 2);
    assert_eq!(m.crm_delivery_duration.get_sample_count(), 1);
}

#[tokio::test]
async fn client_errors_are_permanent_but_408_and_429_are_retried() {
    let (addr, seen) = server(Arc::new(|n| match n {
        0 => (408, None, Duration::ZERO, ""),
        1 => (429, Some("1"), Duration::ZERO, ""),
        _ => (
            422,
            None,
            Duration::ZERO,
            "{\"error\":\"unknown customer\"}\n",
        ),
    }))
    .await;
    let m = Metrics::new();
    let f = Forwarder::new(config(format!("http://{addr}/hook")), &m).expect("forwarder");
    let t0 = Instant::now();
    let d = f.deliver("a1", BODY, &CancellationToken::new()).await;
    let Delivery::Failed { reason, attempts } = d else {
        panic!("{d:?}");
    };
    assert_eq!(attempts, 3);
    assert!(
        reason.starts_with("rejected: HTTP 422: {\"error\":\"unknown customer\"}"),
        "{reason}"
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 honoured"
    );
    assert_eq!(seen.lock().expect("lock").len(), 3);
    assert_eq!(counter(&m, "retried"), 2);
    assert_eq!(counter(&m, "delivered"), 0);
}

#[tokio::test]
async fn retries_stop_at_max_attempts_and_max_elapsed() {
    let (addr, seen) = server(Arc::new(|_| (503, None, Duration::ZERO, ""))).await;
    let m = Metrics::new();
    let f = Forwarder::new(config(format!("http://{addr}/hook")), &m).expect("forwarder");
    let d = f.deliver("a1", BODY, &CancellationToken::new()).await;
    let Delivery::Failed { reason, attempts } = d else {
        panic!("{d:?}");
    };
    assert_eq!(attempts, 4);
    assert!(
        reason.starts_with("retries_exhausted: 4 attempts"),
        "{reason}"
    );
    assert!(reason.contains("crm.max_attempts"), "{reason}");
    assert_eq!(seen.lock().expect("lock").len(), 4);

    // A Retry-After beyond the elapsed budget ends the retries at once.
    let (addr, _) = server(Arc::new(|_| (503, Some("3600"), Duration::ZERO, ""))).await;
    let f = Forwarder::new(config(format!("http://{addr}/hook")), &m).expect("forwarder");
    let t0 = Instant::now();
    let d = f.deliver("a1", BODY, &CancellationToken::new()).await;
    assert!(
        matches!(&d, Delivery::Failed { reason, attempts: 1 } if reason.contains("crm.max_elapsed_ms")),
        "{d:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_retried() {
    // The first answer comes after the 500 ms timeout, the second in time.
    let (addr, seen) = server(Arc::new(|n| match n {
        0 => (200, None, Duration::from_secs(2), ""),
        _ => (200, None, Duration::ZERO, ""),
    }))
    .await;
    let m = Metrics::new();
    let f = Forwarder::new(config(format!("http://{addr}/hook")), &m).expect("forwarder");
    let d = f.deliver("a1", BODY, &CancellationToken::new()).await;
    assert_eq!(d, Delivery::Delivered { attempts: 2 });
    assert_eq!(seen.lock().expect("lock").len(), 2);

    // Nothing listens on a port that was just released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let f = Forwarder::new(config(format!("http://127.0.0.1:{port}/hook")), &m).expect("fwd");
    let d = f.deliver("a1", BODY, &CancellationToken::new()).await;
    let Delivery::Failed { reason, attempts } = d else {
        panic!("{d:?}");
    };
    assert_eq!(attempts, 4);
    assert!(reason.contains("connect error"), "{reason}");
}

#[tokio::test]
async fn cancellation_interrupts_the_backoff() {
    let (addr, _) = server(Arc::new(|_| (503, Some("30"), Duration::ZERO, ""))).await;
    let m = Metrics::new();
    let mut cfg = config(format!("http://{addr}/hook"));
    cfg.max_elapsed = Some(Duration::from_secs(120));
    let f = Forwarder::new(cfg, &m).expect("forwarder");
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.cancel();
    });
    let t0 = Instant::now();
    let d = f.deliver("a1", BODY, &cancel).await;
    assert_eq!(d, Delivery::Cancelled { attempts: 1 });
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn ids_that_are_not_header_values_are_invalid_alerts() {
    let m = Metrics::new();
    let f = Forwarder::new(config("http://127.0.0.1:9/hook".into()), &m).expect("forwarder");
    let d = f.deliver("a\nb", BODY, &CancellationToken::new()).await;
    assert!(
        matches!(&d, Delivery::Failed { reason, attempts: 0 } if reason.starts_with("invalid_alert")),
        "{d:?}"
    );
}

#[tokio::test]
async fn huge_retry_after_values_are_capped_instead_of_panicking() {
    // u64::MAX seconds, and a value past u64::MAX: both are "wait very long", neither may
    // overflow the elapsed-time arithmetic (a full second has passed when they arrive).
    let (addr, seen) = server(Arc::new(|n| match n {
        0 => (503, Some("1"), Duration::ZERO, ""),
        1 => (503, Some("18446744073709551615"), Duration::ZERO, ""),
        2 => (429, Some("99999999999999999999999"), Duration::ZERO, ""),
        _ => (200, None, Duration::ZERO, ""),
    }))
    .await;
    let m = Metrics::new();
    let mut cfg = config(format!("http://{addr}/hook"));
    cfg.backoff.max_retry_after = Duration::from_secs(1);
    let f = Forwarder::new(cfg, &m).expect("forwarder");
    let t0 = Instant::now();
    let d = f.deliver("a1", BODY, &CancellationToken::new()).await;
    assert_eq!(d, Delivery::Delivered { attempts: 4 });
    assert_eq!(seen.lock().expect("lock").len(), 4);
    // Retry-After 1 s is honoured; the two huge ones wait the 1 s cap each (the backoff alone
    // would be at most 80 ms).
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

#[tokio::test]
async fn zero_limits_retry_retriable_failures_until_delivered() {
    // 12 failures: more than the default crm.max_attempts (8) and than this test's 4.
    let (addr, seen) = server(Arc::new(|n| match n {
        0..=5 => (503, None, Duration::ZERO, ""),
        6..=11 => (429, Some("0"), Duration::ZERO, ""),
        _ => (202, None, Duration::ZERO, ""),
    }))
    .await;
    let crm = churn_pipeline::config::CrmConfig {
        webhook_url: format!("http://{addr}/hook"),
        secret: churn_pipeline::config::Secret("test-secret".into()),
        max_attempts: 0,
        max_elapsed_ms: 0,
        backoff_initial_ms: 10,
        backoff_max_ms: 40,
        ..Default::default()
    };
    crm.validate().expect("0 = no limit is a valid setting");
    let cfg = WebhookConfig::from_config(&crm).expect("enabled");
    let m = Metrics::new();
    let f = Forwarder::new(cfg, &m).expect("forwarder");
    let d = f.deliver("a1", BODY, &CancellationToken::new()).await;
    assert_eq!(d, Delivery::Delivered { attempts: 13 });
    assert_eq!(seen.lock().expect("lock").len(), 13);
    assert_eq!(counter(&m, "retried"), 12);
}

/// A private CA and a server certificate for 127.0.0.1 signed by it (openssl), and a TLS
/// acceptor serving the latter. Returns the CA's PEM file (what `crm.ca_location` names).
fn tls_server_parts(dir: &std::path::Path) -> (std::path::PathBuf, tokio_rustls::TlsAcceptor) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (scripts/setup.sh installs it)");
        assert!(status.success(), "openssl {args:?} failed");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=churnstream test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "crm-key.pem",
        "-out",
        "crm.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "crm.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-out",
        "crm.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("crm.pem"),
        dir.join("crm-key.pem"),
    );
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .expect("cert file")
        .collect::<Result<_, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(&key).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    (ca, tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

#[tokio::test]
async fn https_works_in_the_default_build_with_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("churn-crm-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (ca, acceptor) = tls_server_parts(&dir);
    let (addr, seen) = server_with(
        Arc::new(|_| (202, None, Duration::ZERO, "")),
        Some(acceptor),
    )
    .await;
    let m = Metrics::new();
    let mut cfg = config(format!("https://{addr}/hook?token=SECRET-TOKEN"));
    cfg.ca_location = Some(ca.clone());
    let f = Forwarder::new(cfg, &m).expect("forwarder");
    assert!(
        !format!("{f:?}").contains("SECRET-TOKEN"),
        "the URL's token is not in Debug: {f:?}"
    );
    let d = f.deliver("a1", BODY, &CancellationToken::new()).await;
    assert_eq!(d, Delivery::Delivered { attempts: 1 });
    let first = seen.lock().expect("lock").clone();
    assert_eq!(first.len(), 1);
    assert!(first[0].signature_ok, "signed over TLS too");
    assert_eq!(first[0].body, BODY);

    // Without the CA the server's certificate is not trusted: a clear transport error (it is
    // retried like any connect error, then dead-lettered), never a plaintext fallback.
    let mut cfg = config(format!("https://{addr}/hook"));
    cfg.max_attempts = Some(1);
    let f = Forwarder::new(cfg, &m).expect("forwarder");
    match f.deliver("a2", BODY, &CancellationToken::new()).await {
        Delivery::Failed { reason, .. } => {
            assert!(reason.contains("certificate"), "{reason}");
        }
        other => panic!("untrusted certificate delivered: {other:?}"),
    }
    assert_eq!(
        seen.lock().expect("lock").len(),
        1,
        "the refused handshake never reached the HTTP layer"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
