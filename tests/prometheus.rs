//! A real Prometheus against the real pipeline, and the alert rules under `promtool`.
//!
//! - `prometheus_scrapes_the_pipeline`: the pipeline runs in-process on the local broker (as in
//!   tests/e2e.rs) with its metrics endpoint on a free port; Debian's `/usr/bin/prometheus`
//!   scrapes it every second with deploy/prometheus/rules.yml loaded. Asserted through
//!   Prometheus' query API: the target is up, the consumed-events sum equals what the test
//!   produced, DLQ records equal the malformed events sent, `churn_model_info` carries the
//!   model version, `churn_model_feature_psi` has a series per model feature, and every rule of rules.yml is loaded and evaluates without error.
//! - `promtool_checks_the_rules` / `promtool_unit_tests_pass` / `promtool_checks_the_config`:
//!   `promtool check rules`, `promtool test rules` (deploy/prometheus/rules_test.yml) and
//!   `promtool check config` (deploy/prometheus/prometheus.yml) succeed.
//!
//! Prometheus and promtool come from the Debian package `prometheus`, which `.ci/run` installs.
//! When they are missing the tests fail (never skip) and say so.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use churn_pipeline::{kafka, Config};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The path of a Debian `prometheus` package binary; fails the test when it is missing.
fn require(bin: &str) -> &str {
    assert!(
        Path::new(bin).is_file(),
        "{bin} is missing: install the Debian package `prometheus` (`.ci/run` installs it: \
         apt-get install -y prometheus); these tests never skip"
    );
    bin
}

/// Runs `promtool <args>` in the repository root; returns its combined output, failing the test
/// on a non-zero exit.
fn promtool(args: &[&str]) -> String {
    let out = Command::new(require(PROMTOOL))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("spawn promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

#[test]
fn promtool_checks_the_rules() {
    let text = promtool(&["check", "rules", "deploy/prometheus/rules.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn promtool_unit_tests_pass() {
    let text = promtool(&["test", "rules", "deploy/prometheus/rules_test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn promtool_checks_the_config() {
    // Also checks that the rule files the production config names exist and parse.
    let text = promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
    assert!(
        text.contains("rules.yml"),
        "config loads rules.yml:\n{text}"
    );
}

/// Names of the alerting rules in deploy/prometheus/rules.yml.
fn alert_names() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("deploy/prometheus/rules.yml"))
        .expect("read rules.yml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules.yml is YAML");
    let groups = doc["groups"].as_sequence().expect("groups list");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect()
}

/// A running Prometheus, killed (and reaped) when dropped.
struct PromGuard {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    // Keeps config, TSDB and log until Prometheus is gone (dropped after `child` is killed).
    _dir: tempfile::TempDir,
}

impl PromGuard {
    /// Starts Prometheus scraping `target` every second as job `churnstream`, with the rules of
    /// deploy/prometheus/rules.yml, and waits until it is ready.
    async fn start(target: SocketAddr) -> PromGuard {
        let bin = require(PROMETHEUS);
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = repo_root()
            .join("deploy/prometheus/rules.yml")
            .canonicalize()
            .expect("rules.yml exists");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: churnstream\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log).expect("create log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .spawn()
            .expect("spawn prometheus");
        let mut guard = PromGuard {
            child,
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = guard.child.try_wait().expect("try_wait") {
                panic!("prometheus exited with {status}:\n{}", guard.log_tail());
            }
            if let Some((200, _)) = http_get(addr, "/-/ready").await {
                return guard;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 60 s:\n{}",
                guard.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `GET /api/v1/query?query=<q>`: the result vector (each `{metric, value: [t, "v"]}`).
    async fn query(&self, q: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", urlencode(q));
        let (status, body) = http_get(self.addr, &path)
            .await
            .unwrap_or_else(|| panic!("prometheus unreachable:\n{}", self.log_tail()));
        assert_eq!(status, 200, "query {q}: {body}");
        let v: Value = serde_json::from_str(&body).expect("query answer is JSON");
        assert_eq!(v["status"], "success", "query {q}: {body}");
        v["data"]["result"]
            .as_array()
            .cloned()
            .expect("result vector")
    }

    /// The single value of an instant query returning one series, if it returns one.
    async fn scalar(&self, q: &str) -> Option<f64> {
        match self.query(q).await.as_slice() {
            [one] => one["value"][1].as_str().and_then(|s| s.parse().ok()),
            _ => None,
        }
    }
}

impl Drop for PromGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// HTTP/1.0 GET (so the answer is never chunked); `None` when the server is unreachable.
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

async fn setup_topics(name: &str) -> Config {
    let mut cfg = common::pipeline_config(name, 2).await;
    cfg.pipeline.batch_max_wait_ms = 100;
    cfg.pipeline.sweep_interval_s = 1;
    cfg.metrics.listen = "127.0.0.1:0".into();
    cfg
}

/// Polls `q` until it returns one series with value `want`; returns the last value seen.
async fn wait_for_value(prom: &PromGuard, q: &str, want: f64, within: Duration) -> Option<f64> {
    let deadline = Instant::now() + within;
    loop {
        let v = prom.scalar(q).await;
        if v == Some(want) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_pipeline() {
    // Fail before any expensive setup when the binary is missing.
    require(PROMETHEUS);
    let cfg = setup_topics("prom").await;

    let (pop, model, _) = common::population_and_model(200, 120, 11, common::default_warmup());

    let model_version = model.model_version.clone();
    let n_features = model.feature_names.len();
    let served = common::serve(&cfg, model).await;
    let (metrics, metrics_addr) = (served.metrics.clone(), served.addr);

    let prom = PromGuard::start(metrics_addr).await;

    // Every generated event, plus one malformed event per 50 (they count as consumed and go to
    // the DLQ).
    let mut publisher = kafka::Publisher::new(&cfg).expect("publisher");
    let mut malformed = 0usize;
    for (i, ev) in pop.events.iter().enumerate() {
        publisher.send_event(ev).await.expect("send");
        if i % 50 == 49 {
            publisher
                .send_raw(&cfg.topics.feedback, Some(b"bad"), b"{\"event_id\":")
                .await
                .expect("send malformed");
            malformed += 1;
        }
    }
    let produced = publisher.flush().await.expect("flush");
    assert_eq!(produced, pop.events.len() + malformed);

    let up = wait_for_value(
        &prom,
        "up{job=\"churnstream\"}",
        1.0,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        up,
        Some(1.0),
        "up{{job=\"churnstream\"}} (target {metrics_addr}):\n{}",
        prom.log_tail()
    );

    let consumed = wait_for_value(
        &prom,
        "sum(churn_ingest_events_consumed_total{job=\"churnstream\"})",
        produced as f64,
        Duration::from_secs(240),
    )
    .await;
    assert_eq!(
        consumed,
        Some(produced as f64),
        "events consumed as seen by Prometheus vs produced; /metrics says {:?}",
        common::metric(&metrics.render(), "churn_ingest_events_consumed_total")
    );

    let dlq = wait_for_value(
        &prom,
        "sum(churn_ingest_dlq_published_total{job=\"churnstream\"})",
        malformed as f64,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        dlq,
        Some(malformed as f64),
        "DLQ records as seen by Prometheus"
    );

    let info = prom.query("churn_model_info{job=\"churnstream\"}").await;
    assert_eq!(info.len(), 1, "one loaded model: {info:?}");
    assert_eq!(
        info[0]["metric"]["version"].as_str(),
        Some(model_version.as_str()),
        "{info:?}"
    );
    assert_eq!(info[0]["value"][1].as_str(), Some("1"), "{info:?}");

    // Live feature drift: one PSI series per model feature, once a day has closed.
    let drift = wait_for_value(
        &prom,
        "count(churn_model_feature_psi{job=\"churnstream\"})",
        n_features as f64,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        drift,
        Some(n_features as f64),
        "churn_model_feature_psi series; /metrics has {}",
        metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("churn_model_feature_psi{"))
            .count()
    );

    let ready = prom
        .scalar("churn_pipeline_ready{job=\"churnstream\"}")
        .await;
    assert_eq!(ready, Some(1.0), "churn_pipeline_ready");

    // Every alerting rule is loaded and has been evaluated without error.
    let want = alert_names();
    assert!(want.len() >= 7, "rules.yml alerts: {want:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(prom.addr, "/api/v1/rules")
            .await
            .expect("prometheus reachable");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("rules answer is JSON");
        let rules: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let broken: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] == "err")
            .map(|r| format!("{}: {}", r["name"], r["lastError"]))
            .collect();
        assert!(broken.is_empty(), "rules failing in Prometheus: {broken:?}");
        let loaded: Vec<&str> = rules
            .iter()
            .filter(|r| r["type"] == "alerting")
            .filter_map(|r| r["name"].as_str())
            .collect();
        for name in &want {
            assert!(
                loaded.contains(&name.as_str()),
                "{name} not loaded: {loaded:?}"
            );
        }
        if rules.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules not all evaluated within 30 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    served.stop().await;
    drop(prom);
}
