//! HTTP delivery of one alert with retries: [`Forwarder::deliver`].

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use churn_metrics::prometheus::{Histogram, IntCounter};
use churn_metrics::Metrics;
use churn_pipeline::config::CrmConfig;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::retry::{classify_status, classify_transport_error, Backoff, Verdict};
use crate::sign::{sign, signing_key, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::Error;

/// `Content-Type` of every request: a CloudEvents 1.0 structured-mode JSON event.
pub const CONTENT_TYPE_CLOUDEVENTS: &str = "application/cloudevents+json";
/// Header carrying the alert's CloudEvents `id` (idempotency key for the CRM).
pub const CE_ID_HEADER: &str = "ce-id";

/// Response bytes kept for the dead-letter reason of a refused alert.
const REASON_BODY_BYTES: usize = 256;
/// Response bytes read (and dropped) from a successful response so the connection is reused.
const DRAIN_BODY_BYTES: usize = 64 * 1024;

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

/// Where and how alerts are POSTed (from the `[crm]` configuration section).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `http://` or (with the default `tls` feature) `https://` URL. Never logged whole: see
    /// [`redacted_url`].
    pub url: String,
    /// Signing secret as configured (`whsec_<base64>` or plain, see [`crate::sign`]); `None` =
    /// requests are not signed.
    pub secret: Option<Vec<u8>>,
    /// Extra trusted certificate authorities (PEM file) for `https://`; `None` = system roots.
    pub ca_location: Option<std::path::PathBuf>,
    /// Timeout of one attempt (connect, send, response head and body).
    pub timeout: Duration,
    /// Attempts per alert, the first included; `None` (`crm.max_attempts = 0`) = no limit.
    pub max_attempts: Option<u32>,
    /// No attempt starts later than this after the first; `None` (`crm.max_elapsed_ms = 0`) = no
    /// limit. With both `None` a retriable failure is retried until delivered (or shutdown).
    pub max_elapsed: Option<Duration>,
    /// Waits between attempts.
    pub backoff: Backoff,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redacted_url(&self.url))
            .field("signed", &self.secret.is_some())
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("max_elapsed", &self.max_elapsed)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl WebhookConfig {
    /// The webhook settings of `[crm]`, or `None` when `webhook_url` is empty (disabled).
    pub fn from_config(c: &CrmConfig) -> Option<Self> {
        let url = c.webhook_url.trim();
        if url.is_empty() {
            return None;
        }
        Some(WebhookConfig {
            url: url.to_string(),
            secret: (!c.secret.is_empty()).then(|| c.secret.expose().as_bytes().to_vec()),
            ca_location: (!c.ca_location.trim().is_empty())
                .then(|| std::path::PathBuf::from(c.ca_location.trim())),
            timeout: Duration::from_millis(c.timeout_ms),
            max_attempts: (c.max_attempts > 0).then_some(c.max_attempts),
            max_elapsed: (c.max_elapsed_ms > 0).then(|| Duration::from_millis(c.max_elapsed_ms)),
            backoff: Backoff {
                initial: Duration::from_millis(c.backoff_initial_ms),
                max: Duration::from_millis(c.backoff_max_ms),
                max_retry_after: Duration::from_millis(c.max_retry_after_ms),
            },
        })
    }
}

/// The final outcome of one alert's delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The CRM answered 2xx.
    Delivered { attempts: u32 },
    /// Refused permanently or out of retries: dead-letter it. `reason` starts with a code:
    /// `rejected`, `retries_exhausted` or `invalid_alert`.
    Failed { reason: String, attempts: u32 },
    /// Shutdown interrupted the retries: the alert is neither delivered nor failed (its offset
    /// must not be stored; it is delivered again after a restart).
    Cancelled { attempts: u32 },
}

/// What one HTTP attempt returned.
enum Attempt {
    Status {
        status: u16,
        retry_after: Option<String>,
        body: String,
    },
    Transport(String),
}

/// POSTs alerts to the CRM webhook: signing, timeouts, retries. Cheap to share (`Arc`); the
/// HTTP client pools keep-alive connections.
pub struct Forwarder {
    client: Client<Connector, Full<Bytes>>,
    uri: Uri,
    /// HMAC key derived from the secret ([`signing_key`]).
    key: Option<Vec<u8>>,
    cfg: WebhookConfig,
    delivered: IntCounter,
    retried: IntCounter,
    duration: Histogram,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder for `cfg`, counting into `metrics` (handles resolved once here).
    pub fn new(cfg: WebhookConfig, metrics: &Metrics) -> Result<Self, Error> {
        // Errors name the URL only as [`redacted_url`] does: webhook URLs often carry a token.
        let uri: Uri = cfg.url.parse().map_err(|e| {
            Error::Config(format!("crm.webhook_url `{}`: {e}", redacted_url(&cfg.url)))
        })?;
        let scheme_ok = match uri.scheme_str() {
            Some("http") => Ok(()),
            Some("https") if cfg!(feature = "tls") => Ok(()),
            Some("https") => Err("https needs churn-crm's `tls` feature (on by default), \
                 or an http:// egress proxy"),
            _ => Err("expected http:// or https://"),
        };
        if let Err(why) = scheme_ok {
            return Err(Error::Config(format!(
                "crm.webhook_url `{}`: {why}",
                redacted_url(&cfg.url)
            )));
        }
        if uri.host().is_none() {
            return Err(Error::Config(format!(
                "crm.webhook_url `{}`: no host",
                redacted_url(&cfg.url)
            )));
        }
        let key = match &cfg.secret {
            Some(s) => {
                let s = std::str::from_utf8(s)
                    .map_err(|_| Error::Config("crm.secret is not UTF-8".into()))?;
                Some(signing_key(s).map_err(Error::Config)?)
            }
            None => None,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector(cfg.timeout, cfg.ca_location.as_deref())?);
        Ok(Forwarder {
            client,
            uri,
            key,
            delivered: metrics.crm_delivery("delivered"),
            retried: metrics.crm_delivery("retried"),
            duration: metrics.crm_delivery_duration.clone(),
            cfg,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &WebhookConfig {
        &self.cfg
    }

    /// POST `body` (the alert exactly as on the topic) with `ce-id: id`, retrying transient
    /// failures (see [`crate::retry`]) until delivered, refused, out of retries (never, when both
    /// limits are `None`) or `cancel`led.
    /// Counts `delivered` and `retried` and observes the duration of finished deliveries;
    /// dead-lettering (and its count) is the caller's job.
    pub async fn deliver(&self, id: &str, body: &[u8], cancel: &CancellationToken) -> Delivery {
        let Ok(ce_id) = HeaderValue::from_str(id) else {
            return Delivery::Failed {
                reason: "invalid_alert: id is not a valid HTTP header value".into(),
                attempts: 0,
            };
        };
        let body = Bytes::copy_from_slice(body);
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts = attempts.saturating_add(1);
            let t0 = Instant::now();
            let (verdict, what) = match self.attempt(&ce_id, body.clone()).await {
                Attempt::Status {
                    status,
                    retry_after,
                    body,
                } => {
                    let what = if body.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        format!("HTTP {status}: {body}")
                    };
                    (classify_status(status, retry_after.as_deref()), what)
                }
                Attempt::Transport(e) => (classify_transport_error(), e),
            };
            match verdict {
                Verdict::Delivered => {
                    self.delivered.inc();
                    self.duration.observe(started.elapsed().as_secs_f64());
                    debug!(
                        id,
                        attempts,
                        seconds = t0.elapsed().as_secs_f64(),
                        "alert delivered to the CRM"
                    );
                    return Delivery::Delivered { attempts };
                }
                Verdict::Permanent => {
                    self.duration.observe(started.elapsed().as_secs_f64());
                    return Delivery::Failed {
                        reason: format!("rejected: {what}"),
                        attempts,
                    };
                }
                Verdict::Retry { after } => {
                    let exhausted = |why: String| {
                        self.duration.observe(started.elapsed().as_secs_f64());
                        Delivery::Failed {
                            reason: format!(
                                "retries_exhausted: {attempts} attempts in {:.1} s ({why}), last: {what}",
                                started.elapsed().as_secs_f64()
                            ),
                            attempts,
                        }
                    };
                    if self.cfg.max_attempts.is_some_and(|max| attempts >= max) {
                        return exhausted("crm.max_attempts".into());
                    }
                    let wait = self.cfg.backoff.next(attempts, after);
                    // Saturating: `wait` is capped, but `elapsed + wait` must not be able to
                    // overflow whatever the settings.
                    let too_late = self
                        .cfg
                        .max_elapsed
                        .is_some_and(|max| started.elapsed().saturating_add(wait) > max);
                    if too_late {
                        return exhausted(format!(
                            "next wait {:.1} s passes crm.max_elapsed_ms",
                            wait.as_secs_f64()
                        ));
                    }
                    self.retried.inc();
                    warn!(id, attempt = attempts, wait_s = wait.as_secs_f64(), error = %what, "CRM delivery failed, retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return Delivery::Cancelled { attempts },
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// One signed POST, bounded by the timeout.
    async fn attempt(&self, ce_id: &HeaderValue, body: Bytes) -> Attempt {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut req = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, CONTENT_TYPE_CLOUDEVENTS)
            .header(
                USER_AGENT,
                concat!("churnstream/", env!("CARGO_PKG_VERSION")),
            )
            .header(CE_ID_HEADER, ce_id.clone())
            .header(ID_HEADER, ce_id.clone())
            .header(TIMESTAMP_HEADER, timestamp);
        if let Some(key) = &self.key {
            // ce_id came from a &str (HeaderValue::from_str), so to_str cannot fail.
            let id = ce_id.to_str().unwrap_or_default();
            req = req.header(SIGNATURE_HEADER, sign(key, id, timestamp, &body));
        }
        let req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Attempt::Transport(format!("building request: {e}")),
        };
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| transport_error(&e))?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let success = resp.status().is_success();
            let limit = if success {
                DRAIN_BODY_BYTES
            } else {
                REASON_BODY_BYTES
            };
            let mut body = resp.into_body();
            let mut buf = Vec::new();
            while buf.len() < limit {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            buf.extend_from_slice(&data);
                        }
                    }
                    // The status is what counts; a broken body of an answer is not retried.
                    Some(Err(_)) | None => break,
                }
            }
            Ok::<_, String>(Attempt::Status {
                status,
                retry_after,
                body: if success {
                    String::new()
                } else {
                    snippet(&buf)
                },
            })
        };
        match tokio::time::timeout(self.cfg.timeout, exchange).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => Attempt::Transport(e),
            Err(_) => {
                Attempt::Transport(format!("timeout after {} ms", self.cfg.timeout.as_millis()))
            }
        }
    }
}

/// `url` with only its scheme, host and port: the user info, path and query are cut (webhook
/// URLs often carry a token in any of them). What cannot be parsed is not shown at all.
pub fn redacted_url(url: &str) -> String {
    match url.trim().parse::<Uri>() {
        Ok(u) => match (u.scheme_str(), u.host()) {
            (Some(scheme), Some(host)) => {
                let port = u.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
                let more = u.path_and_query().is_some_and(|p| p.as_str() != "/");
                format!("{scheme}://{host}{port}{}", if more { "/…" } else { "" })
            }
            _ => "<not shown>".into(),
        },
        Err(_) => "<not shown>".into(),
    }
}

fn connector(timeout: Duration, ca: Option<&std::path::Path>) -> Result<Connector, Error> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(timeout));
    http.set_nodelay(true);
    #[cfg(feature = "tls")]
    {
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(ca)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(https)
    }
    #[cfg(not(feature = "tls"))]
    {
        if let Some(ca) = ca {
            return Err(Error::Config(format!(
                "crm.ca_location = {}: https needs churn-crm's `tls` feature",
                ca.display()
            )));
        }
        Ok(http)
    }
}

/// rustls (ring) trusting the system's roots and the certificates of `ca`.
#[cfg(feature = "tls")]
fn tls_config(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca {
        let bad = |e: String| Error::Config(format!("crm.ca_location = {}: {e}", path.display()));
        let mut n = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
            n += 1;
        }
        if n == 0 {
            return Err(bad("no PEM certificate in the file".into()));
        }
    } else if added == 0 {
        // Only an https:// URL needs them; its connect errors will say the issuer is unknown.
        warn!(
            errors = native.errors.len(),
            "no usable system root certificate: https:// webhooks fail until ca-certificates is installed or crm.ca_location is set"
        );
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

/// A transport error with its cause chain (hyper's top-level message alone is vague).
fn transport_error(e: &hyper_util::client::legacy::Error) -> String {
    let kind = if e.is_connect() { "connect" } else { "request" };
    let mut s = format!("{kind} error: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// The start of a response body, printable, for a dead-letter reason.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(REASON_BODY_BYTES)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_mapping_and_disabled_when_url_empty() {
        let mut c = CrmConfig::default();
        assert_eq!(WebhookConfig::from_config(&c), None);
        c.webhook_url = " http://127.0.0.1:9/hook ".into();
        let w = WebhookConfig::from_config(&c).expect("enabled");
        assert_eq!(w.url, "http://127.0.0.1:9/hook");
        assert_eq!(w.secret, None);
        assert_eq!(w.timeout, Duration::from_millis(c.timeout_ms));
        assert_eq!(w.max_attempts, Some(8), "default");
        assert_eq!(w.max_elapsed, Some(Duration::from_secs(300)), "default");
        let unlimited = CrmConfig {
            max_attempts: 0,
            max_elapsed_ms: 0,
            ..c.clone()
        };
        let u = WebhookConfig::from_config(&unlimited).expect("enabled");
        assert_eq!((u.max_attempts, u.max_elapsed), (None, None));
        c.secret = churn_pipeline::config::Secret("k".into());
        let w = WebhookConfig::from_config(&c).expect("enabled");
        assert_eq!(w.secret.as_deref(), Some(&b"k"[..]));
        assert!(!format!("{w:?}").contains("\"k\""));
    }

    #[test]
    fn bad_urls_are_config_errors() {
        let m = Metrics::new();
        let mut c = CrmConfig {
            webhook_url: "ftp://crm/hook".into(),
            ..CrmConfig::default()
        };
        let w = WebhookConfig::from_config(&c).expect("enabled");
        assert!(matches!(Forwarder::new(w, &m), Err(Error::Config(_))));
        c.webhook_url = "http://".into();
        let w = WebhookConfig::from_config(&c).expect("enabled");
        assert!(matches!(Forwarder::new(w, &m), Err(Error::Config(_))));
    }

    #[test]
    fn urls_are_logged_without_user_info_path_or_query() {
        assert_eq!(
            redacted_url("https://user:pw@crm.example.com:8443/hooks/T0/B0/XYZ?token=abc"),
            "https://crm.example.com:8443/…"
        );
        assert_eq!(redacted_url("http://127.0.0.1:9"), "http://127.0.0.1:9");
        assert_eq!(redacted_url("http://crm/"), "http://crm");
        assert_eq!(redacted_url("not a url with a token"), "<not shown>");
        let m = Metrics::new();
        let c = CrmConfig {
            webhook_url: "ftp://crm/hook?token=abc".into(),
            secret: churn_pipeline::config::Secret("whsec_!!".into()),
            ..CrmConfig::default()
        };
        let w = WebhookConfig::from_config(&c).expect("enabled");
        assert!(!format!("{w:?}").contains("token"), "{w:?}");
        match Forwarder::new(w, &m) {
            Err(Error::Config(e)) => assert!(!e.contains("token=abc"), "{e}"),
            other => panic!("ftp accepted: {other:?}"),
        }
        // A whsec_ secret that is not base64 is a config error that does not show the secret.
        let c = CrmConfig {
            webhook_url: "http://crm/hook".into(),
            secret: churn_pipeline::config::Secret("whsec_!!".into()),
            ..CrmConfig::default()
        };
        let w = WebhookConfig::from_config(&c).expect("enabled");
        match Forwarder::new(w, &m) {
            Err(Error::Config(e)) => assert!(e.contains("base64") && !e.contains("!!"), "{e}"),
            other => panic!("bad secret accepted: {other:?}"),
        }
    }

    #[test]
    fn snippets_are_short_and_printable() {
        assert_eq!(snippet(b"  bad\r\nrequest \x00"), "bad  request");
        assert_eq!(snippet(&[b'x'; 1000]).len(), REASON_BODY_BYTES);
    }
}
